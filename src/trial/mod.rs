//! Trials: the spec file, its resolution against a model and population, and the pipeline.

pub mod encode;
pub mod quantile;
pub mod regimen;
pub mod spec;
pub use regimen::dose_line;
