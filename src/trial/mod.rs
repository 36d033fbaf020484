//! Trials: the spec file, its resolution against a model and population, and the pipeline.

pub mod quantile;
pub mod spec;
