//! The model DSL, its expression language, the IR, lowering to straight-line programs, and the
//! CPU evaluator. See `docs/model-language.md` for the language.

pub mod eval;
pub mod exec;
pub mod expr;
pub mod ir;
pub mod jumps;
pub mod library;
pub mod lower;
pub mod parse;
pub mod switches;

pub use eval::{BoundModel, CompiledModel};
pub use expr::{BinOp, Expr, Func, UnOp, Var};
pub use ir::{CompartmentDosing, DerivedDecl, Model, ModelError, OutputDecl, ParamDecl, StateDecl};
pub use lower::{lower_expr, ModelPrograms, Op, Program, Reg};
pub use parse::{parse_expr, parse_expr_str, resolve};
