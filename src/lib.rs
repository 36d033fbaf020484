//! # vpop — in-silico clinical trials
//!
//! vpop samples virtual populations, integrates a PK/PD/QSP ODE model for every subject under a
//! dosing regimen, computes exposure metrics inside the integrator and writes them to Parquet.
//!
//! - [`model`]: the model DSL, its IR, symbolic derivatives and the CPU evaluator; the built-in
//!   model library.
//! - [`solver`]: the tableau table and the CPU f64 reference integrators.
//! - [`diag`]: file:line:col diagnostics for every kind of user input.

// Numerical loops index several arrays at once, as the generated GPU kernels do.
#![allow(clippy::needless_range_loop)]

pub mod backend;
pub mod cli;
pub mod diag;
pub mod dosing;
pub mod metrics;
pub mod model;
pub mod output;
pub mod population;
pub mod sensitivity;
pub mod solver;
pub mod trial;
