//! Backends: where subjects are integrated.

pub mod cpu;
