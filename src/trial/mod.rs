//! Trials: the spec file, its resolution against a model and population, and the pipeline.

pub mod encode;
pub mod quantile;
pub mod spec;
