//! The expression AST shared by the model DSL, population files and every backend's codegen.
//!
//! The parser produces [`Var::Name`] references; name resolution (model IR, population files)
//! replaces them by indexed references. Codegen (CPU tape, WGSL, CUDA C) only ever sees resolved
//! expressions and re-prints numbers from their parsed `f64` values, never user text.

use crate::diag::Span;

/// A reference to a quantity.
#[derive(Debug, Clone, PartialEq)]
pub enum Var {
    /// Unresolved identifier as written, with its location.
    Name { name: String, span: Span },
    /// Time `t`.
    Time,
    /// The i-th state of the model.
    State(usize),
    /// The i-th parameter (per-subject value).
    Param(usize),
    /// The i-th derived quantity (evaluated in order before the right-hand side).
    Derived(usize),
    /// The i-th slot of an external table (covariates in population files).
    Slot(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

/// Built-in functions. `If` is not here: it is [`Expr::If`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Log,
    Log10,
    Sqrt,
    Pow,
    Abs,
    Min,
    Max,
    Sin,
    Cos,
    Tanh,
    Atan,
    Erf,
    Erfc,
    /// The standard normal distribution function, 0.5 · erfc(−x / √2) (NONMEM's PHI).
    Phi,
    Floor,
    Ceil,
    /// Rounding toward zero (NONMEM's INT), lowered to `floor` or `ceil` by the sign.
    Trunc,
    /// The floored remainder a − b·floor(a / b), which has the sign of b (R's `%%`, numpy's
    /// `mod`), lowered to those operations.
    Mod,
    /// The logistic function 1 / (1 + exp(-x)), lowered to those operations.
    Expit,
    /// log(x / (1 - x)), lowered to those operations.
    Logit,
}

impl Func {
    /// Every function, in the order the documentation and error messages list them.
    pub const ALL: [Func; 21] = [
        Func::Exp,
        Func::Log,
        Func::Log10,
        Func::Sqrt,
        Func::Pow,
        Func::Abs,
        Func::Min,
        Func::Max,
        Func::Sin,
        Func::Cos,
        Func::Tanh,
        Func::Atan,
        Func::Erf,
        Func::Erfc,
        Func::Phi,
        Func::Floor,
        Func::Ceil,
        Func::Trunc,
        Func::Mod,
        Func::Expit,
        Func::Logit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Log10 => "log10",
            Func::Sqrt => "sqrt",
            Func::Pow => "pow",
            Func::Abs => "abs",
            Func::Min => "min",
            Func::Max => "max",
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tanh => "tanh",
            Func::Atan => "atan",
            Func::Erf => "erf",
            Func::Erfc => "erfc",
            Func::Phi => "phi",
            Func::Floor => "floor",
            Func::Ceil => "ceil",
            Func::Trunc => "trunc",
            Func::Mod => "mod",
            Func::Expit => "expit",
            Func::Logit => "logit",
        }
    }
    pub fn arity(self) -> usize {
        match self {
            Func::Pow | Func::Min | Func::Max | Func::Mod => 2,
            _ => 1,
        }
    }
    pub fn from_name(s: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// An expression. Booleans are represented as 1.0 / 0.0 wherever a number is needed.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Num(f64),
    Var(Var),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// `if(cond, then, else)`
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}
