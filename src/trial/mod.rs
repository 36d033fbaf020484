//! Trials: the spec file, its resolution against a model and population, the pipeline that
//! runs it, the encoding of its result rows, and its summaries.

pub mod bench;
pub mod dataset;
pub mod encode;
pub mod quantile;
pub mod regimen;
pub mod report;
pub mod resolve;
pub mod run;
pub mod spec;
pub mod summary;

pub use regimen::dose_line;
pub use resolve::{Trial, TrialError};
pub use run::{run_trial, RunOptions, RunReport};
