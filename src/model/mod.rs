//! The model DSL, its expression language, the IR and the CPU evaluator.

pub mod expr;
