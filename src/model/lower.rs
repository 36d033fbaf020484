//! Lowering: the IR → straight-line programs, the one form every backend consumes.
//!
//! A [`Program`] is a list of single operations on earlier registers (static single
//! assignment), built with hash-consing (common subexpressions are shared), constant folding
//! and algebraic simplification, then pruned to what its results need. The CPU evaluator runs
//! programs; the WGSL and CUDA code generators print them one `let rN = …;` per instruction.
//!
//! Derivatives (∂f/∂y, ∂f/∂t, ∂g/∂y) are taken symbolically on the program itself, by forward
//! differentiation of each instruction, so derived quantities are differentiated once and
//! shared — no expression swell.
//!
//! Every instruction remembers the model statement it was lowered from (the derivative of an
//! instruction, that of the instruction), so that a problem with code generated from a
//! program can be reported at a line of the model file ([`ModelPrograms::statements`]).

use std::collections::HashMap;

use super::expr::{BinOp, Expr, Func, UnOp, Var};
use super::ir::Model;
use crate::diag::{Diagnostic, Span};

/// The origin of an instruction that no model statement produced.
pub const NO_ORIGIN: u32 = u32::MAX;

/// A register index.
pub type Reg = u32;

/// One instruction. Booleans are 1.0 / 0.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Const(f64),
    Time,
    State(u32),
    Param(u32),
    Slot(u32),
    Neg(Reg),
    Not(Reg),
    Add(Reg, Reg),
    Sub(Reg, Reg),
    Mul(Reg, Reg),
    Div(Reg, Reg),
    /// x^y for a general exponent.
    Pow(Reg, Reg),
    /// x^n for a small integer n (printed as repeated multiplication where it pays).
    Powi(Reg, i32),
    Lt(Reg, Reg),
    Le(Reg, Reg),
    Gt(Reg, Reg),
    Ge(Reg, Reg),
    Eq(Reg, Reg),
    Ne(Reg, Reg),
    And(Reg, Reg),
    Or(Reg, Reg),
    /// `cond != 0 ? a : b`
    Select(Reg, Reg, Reg),
    Exp(Reg),
    Log(Reg),
    Log10(Reg),
    Sqrt(Reg),
    Abs(Reg),
    Min(Reg, Reg),
    Max(Reg, Reg),
    Sin(Reg),
    Cos(Reg),
    Tanh(Reg),
    Atan(Reg),
    Erf(Reg),
    Erfc(Reg),
    Floor(Reg),
    Ceil(Reg),
}

/// Hashable identity of an instruction (constants by their bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Const(u64),
    Op(u8, u32, u32, u32),
}

pub(crate) fn key(op: &Op) -> Key {
    use Op::*;
    let k = |tag: u8, a: u32, b: u32, c: u32| Key::Op(tag, a, b, c);
    match *op {
        Const(v) => Key::Const(if v == 0.0 { 0 } else { v.to_bits() }),
        Time => k(1, 0, 0, 0),
        State(i) => k(2, i, 0, 0),
        Param(i) => k(3, i, 0, 0),
        Slot(i) => k(4, i, 0, 0),
        Neg(a) => k(5, a, 0, 0),
        Not(a) => k(6, a, 0, 0),
        Add(a, b) => k(7, a.min(b), a.max(b), 0),
        Sub(a, b) => k(8, a, b, 0),
        Mul(a, b) => k(9, a.min(b), a.max(b), 0),
        Div(a, b) => k(10, a, b, 0),
        Pow(a, b) => k(11, a, b, 0),
        Powi(a, n) => k(12, a, n as u32, 0),
        Lt(a, b) => k(13, a, b, 0),
        Le(a, b) => k(14, a, b, 0),
        Gt(a, b) => k(15, a, b, 0),
        Ge(a, b) => k(16, a, b, 0),
        Eq(a, b) => k(17, a.min(b), a.max(b), 0),
        Ne(a, b) => k(18, a.min(b), a.max(b), 0),
        And(a, b) => k(19, a.min(b), a.max(b), 0),
        Or(a, b) => k(20, a.min(b), a.max(b), 0),
        Select(c, a, b) => k(21, c, a, b),
        Exp(a) => k(22, a, 0, 0),
        Log(a) => k(23, a, 0, 0),
        Log10(a) => k(24, a, 0, 0),
        Sqrt(a) => k(25, a, 0, 0),
        Abs(a) => k(26, a, 0, 0),
        Min(a, b) => k(27, a.min(b), a.max(b), 0),
        Max(a, b) => k(28, a.min(b), a.max(b), 0),
        Sin(a) => k(29, a, 0, 0),
        Cos(a) => k(30, a, 0, 0),
        Tanh(a) => k(31, a, 0, 0),
        Atan(a) => k(32, a, 0, 0),
        Erf(a) => k(33, a, 0, 0),
        Erfc(a) => k(34, a, 0, 0),
        Floor(a) => k(35, a, 0, 0),
        Ceil(a) => k(36, a, 0, 0),
    }
}

impl Op {
    /// Whether this instruction is a step function (`floor`, `ceil`, a comparison, a logical
    /// operation): constant between the places where its argument crosses a whole number or
    /// a bound.
    pub fn is_step(&self) -> bool {
        use Op::*;
        matches!(
            self,
            Floor(_)
                | Ceil(_)
                | Lt(..)
                | Le(..)
                | Gt(..)
                | Ge(..)
                | Eq(..)
                | Ne(..)
                | Not(_)
                | And(..)
                | Or(..)
        )
    }

    /// Whether this instruction's value depends on parameters and constants alone, given
    /// which earlier values do (`alone`, by register).
    pub fn on_parameters_alone(&self, alone: &[bool]) -> bool {
        match self {
            Op::Const(_) | Op::Param(_) => true,
            Op::Time | Op::State(_) | Op::Slot(_) => false,
            _ => self.args().all(|a| alone[a as usize]),
        }
    }

    /// The registers this instruction reads.
    pub fn args(&self) -> impl Iterator<Item = Reg> {
        use Op::*;
        let v: [Option<Reg>; 3] = match *self {
            Const(_) | Time | State(_) | Param(_) | Slot(_) => [None, None, None],
            Neg(a)
            | Not(a)
            | Exp(a)
            | Log(a)
            | Log10(a)
            | Sqrt(a)
            | Abs(a)
            | Sin(a)
            | Cos(a)
            | Tanh(a)
            | Atan(a)
            | Erf(a)
            | Erfc(a)
            | Floor(a)
            | Ceil(a)
            | Powi(a, _) => [Some(a), None, None],
            Add(a, b)
            | Sub(a, b)
            | Mul(a, b)
            | Div(a, b)
            | Pow(a, b)
            | Lt(a, b)
            | Le(a, b)
            | Gt(a, b)
            | Ge(a, b)
            | Eq(a, b)
            | Ne(a, b)
            | And(a, b)
            | Or(a, b)
            | Min(a, b)
            | Max(a, b) => [Some(a), Some(b), None],
            Select(c, a, b) => [Some(c), Some(a), Some(b)],
        };
        v.into_iter().flatten()
    }

    pub(crate) fn map_args(&self, f: impl Fn(Reg) -> Reg) -> Op {
        use Op::*;
        match *self {
            Neg(a) => Neg(f(a)),
            Not(a) => Not(f(a)),
            Exp(a) => Exp(f(a)),
            Log(a) => Log(f(a)),
            Log10(a) => Log10(f(a)),
            Sqrt(a) => Sqrt(f(a)),
            Abs(a) => Abs(f(a)),
            Sin(a) => Sin(f(a)),
            Cos(a) => Cos(f(a)),
            Tanh(a) => Tanh(f(a)),
            Atan(a) => Atan(f(a)),
            Erf(a) => Erf(f(a)),
            Erfc(a) => Erfc(f(a)),
            Floor(a) => Floor(f(a)),
            Ceil(a) => Ceil(f(a)),
            Powi(a, n) => Powi(f(a), n),
            Add(a, b) => Add(f(a), f(b)),
            Sub(a, b) => Sub(f(a), f(b)),
            Mul(a, b) => Mul(f(a), f(b)),
            Div(a, b) => Div(f(a), f(b)),
            Pow(a, b) => Pow(f(a), f(b)),
            Lt(a, b) => Lt(f(a), f(b)),
            Le(a, b) => Le(f(a), f(b)),
            Gt(a, b) => Gt(f(a), f(b)),
            Ge(a, b) => Ge(f(a), f(b)),
            Eq(a, b) => Eq(f(a), f(b)),
            Ne(a, b) => Ne(f(a), f(b)),
            And(a, b) => And(f(a), f(b)),
            Or(a, b) => Or(f(a), f(b)),
            Min(a, b) => Min(f(a), f(b)),
            Max(a, b) => Max(f(a), f(b)),
            Select(c, a, b) => Select(f(c), f(a), f(b)),
            other => other,
        }
    }
}

/// A straight-line program and the registers holding its results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    pub instrs: Vec<Op>,
    pub results: Vec<Reg>,
    /// Per instruction, the index of the model statement it comes from in
    /// [`ModelPrograms::statements`], or [`NO_ORIGIN`].
    pub origins: Vec<u32>,
}

impl Program {
    /// One program computing this program's results, then `other`'s (instructions appended,
    /// nothing shared; for evaluating both with one call).
    pub fn concat(&self, other: &Program) -> Program {
        let off = self.instrs.len() as Reg;
        let mut p = self.clone();
        p.instrs
            .extend(other.instrs.iter().map(|op| op.map_args(|r| r + off)));
        p.origins.extend_from_slice(&other.origins);
        p.results.extend(other.results.iter().map(|r| r + off));
        p
    }

    /// The program of results `keep` (in that order) alone: the instructions no kept result
    /// needs are dropped.
    pub fn keep_results(&self, keep: &[usize]) -> Program {
        let results: Vec<Reg> = keep.iter().map(|&k| self.results[k]).collect();
        pruned(&self.instrs, &self.origins, &results)
    }

    /// Per result: whether it can be nonzero (false where it is the constant 0: a derivative
    /// that is zero by the model's structure).
    pub fn nonzero_results(&self) -> Vec<bool> {
        self.results
            .iter()
            .map(|&r| !matches!(self.instrs[r as usize], Op::Const(c) if c == 0.0))
            .collect()
    }

    /// Per result: whether it depends on an instruction for which `leaf` holds (through the
    /// instructions that compute it).
    pub fn results_depend_on(&self, leaf: impl Fn(&Op) -> bool) -> Vec<bool> {
        self.results_depend_on_instr(|i| leaf(&self.instrs[i]))
    }

    /// Per instruction: whether it is a step function (`floor`, `ceil`, a comparison, a
    /// logical operation) of a value that depends on the states: it jumps where that value
    /// crosses a whole number or a bound, and its derivative is 0 in between.
    pub fn steps_of_states(&self) -> Vec<bool> {
        use Op::*;
        let mut moving = vec![false; self.instrs.len()];
        let mut steps = vec![false; self.instrs.len()];
        for (i, op) in self.instrs.iter().enumerate() {
            moving[i] = matches!(op, State(_)) || op.args().any(|a| moving[a as usize]);
            steps[i] = moving[i] && op.is_step();
        }
        steps
    }

    /// Per result: whether it reads a step function of a value that depends on the states
    /// ([`Program::steps_of_states`]).
    pub fn results_step_with_states(&self) -> Vec<bool> {
        let steps = self.steps_of_states();
        self.results_depend_on_instr(|i| steps[i])
    }

    /// Per result: whether it depends on an instruction for which `leaf(index)` holds.
    fn results_depend_on_instr(&self, leaf: impl Fn(usize) -> bool) -> Vec<bool> {
        let mut dep = vec![false; self.instrs.len()];
        for (i, op) in self.instrs.iter().enumerate() {
            dep[i] = leaf(i) || op.args().any(|a| dep[a as usize]);
        }
        self.results.iter().map(|&r| dep[r as usize]).collect()
    }

    /// The program computing the values of registers `regs` (its results, in that order):
    /// the instructions they need alone, renumbered.
    pub fn keep_registers(&self, regs: &[Reg]) -> Program {
        pruned(&self.instrs, &self.origins, regs)
    }

    /// The statement instruction `i` comes from, if any.
    pub fn origin(&self, i: usize) -> Option<u32> {
        self.origins.get(i).copied().filter(|o| *o != NO_ORIGIN)
    }

    /// The statements of the instructions that take a constant that is not finite (`1 / 0`,
    /// `log(0)`, `exp(1000)` folded, or `mod(x, 0)`). Constants folded on to a finite value
    /// (`expit(-1000)` is 0, `atan(1 / 0)` π/2) and branches not taken (`if(1 > 0, 1, 1 / 0)`)
    /// are gone from the program; a result that is such a constant is its caller's to name.
    pub fn non_finite_constants(&self) -> Vec<u32> {
        let bad: Vec<bool> = self
            .instrs
            .iter()
            .map(|op| matches!(op, Op::Const(v) if !v.is_finite()))
            .collect();
        (0..self.instrs.len())
            .filter(|&j| self.instrs[j].args().any(|a| bad[a as usize]))
            .filter_map(|j| self.origin(j))
            .collect()
    }
}

fn b2f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Evaluates one instruction given its argument values.
#[inline(always)]
pub fn apply(op: &Op, r: &[f64], t: f64, y: &[f64], p: &[f64], slots: &[f64]) -> f64 {
    use Op::*;
    let g = |i: Reg| r[i as usize];
    match *op {
        Const(v) => v,
        Time => t,
        State(i) => y[i as usize],
        Param(i) => p[i as usize],
        Slot(i) => slots[i as usize],
        Neg(a) => -g(a),
        Not(a) => b2f(g(a) == 0.0),
        Add(a, b) => g(a) + g(b),
        Sub(a, b) => g(a) - g(b),
        Mul(a, b) => g(a) * g(b),
        Div(a, b) => g(a) / g(b),
        Pow(a, b) => g(a).powf(g(b)),
        Powi(a, n) => g(a).powi(n),
        Lt(a, b) => b2f(g(a) < g(b)),
        Le(a, b) => b2f(g(a) <= g(b)),
        Gt(a, b) => b2f(g(a) > g(b)),
        Ge(a, b) => b2f(g(a) >= g(b)),
        Eq(a, b) => b2f(g(a) == g(b)),
        Ne(a, b) => b2f(g(a) != g(b)),
        And(a, b) => b2f(g(a) != 0.0 && g(b) != 0.0),
        Or(a, b) => b2f(g(a) != 0.0 || g(b) != 0.0),
        Select(c, a, b) => {
            if g(c) != 0.0 {
                g(a)
            } else {
                g(b)
            }
        }
        Exp(a) => g(a).exp(),
        Log(a) => g(a).ln(),
        Log10(a) => g(a).log10(),
        Sqrt(a) => g(a).sqrt(),
        Abs(a) => g(a).abs(),
        Sin(a) => g(a).sin(),
        Cos(a) => g(a).cos(),
        Tanh(a) => g(a).tanh(),
        Atan(a) => g(a).atan(),
        Erf(a) => libm::erf(g(a)),
        Erfc(a) => libm::erfc(g(a)),
        Floor(a) => g(a).floor(),
        Ceil(a) => g(a).ceil(),
        // NaN-propagating, as the GPU min/max are not guaranteed to be otherwise.
        Min(a, b) => {
            let (x, z) = (g(a), g(b));
            if x.is_nan() || z.is_nan() {
                f64::NAN
            } else {
                x.min(z)
            }
        }
        Max(a, b) => {
            let (x, z) = (g(a), g(b));
            if x.is_nan() || z.is_nan() {
                f64::NAN
            } else {
                x.max(z)
            }
        }
    }
}

impl Program {
    /// Runs the program; `regs` is scratch (resized as needed), results are written to `out`.
    pub fn run(
        &self,
        t: f64,
        y: &[f64],
        p: &[f64],
        slots: &[f64],
        regs: &mut Vec<f64>,
        out: &mut [f64],
    ) {
        let n = self.instrs.len();
        if regs.len() < n {
            regs.resize(n, 0.0);
        }
        let regs = &mut regs[..n];
        for (i, op) in self.instrs.iter().enumerate() {
            let v = apply(op, regs, t, y, p, slots);
            regs[i] = v;
        }
        for (o, r) in out.iter_mut().zip(&self.results) {
            *o = regs[*r as usize];
        }
    }

    /// Evaluates a program over slots only (population expressions).
    pub fn eval_slots(&self, slots: &[f64], regs: &mut Vec<f64>, out: &mut [f64]) {
        self.run(0.0, &[], &[], slots, regs, out)
    }
}

/// Builds programs with hash-consing and simplification.
pub struct Builder {
    instrs: Vec<Op>,
    seen: HashMap<Key, Reg>,
    /// Per instruction, the statement being lowered when it was first made.
    origins: Vec<u32>,
    origin: u32,
    /// Per instruction: its value depends on constants and parameters alone.
    fixed: Vec<bool>,
    /// Divisions by such values become multiplications by their reciprocals
    /// ([`Builder::with_reciprocals`]).
    reciprocals: bool,
    /// Per instruction: its value depends on time, and not on the states or slots.
    timed: Vec<bool>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            instrs: Vec::new(),
            seen: HashMap::new(),
            origins: Vec::new(),
            origin: NO_ORIGIN,
            fixed: Vec::new(),
            reciprocals: false,
            timed: Vec::new(),
        }
    }
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder that writes `a / b`, where `b` depends on constants and parameters alone and
    /// `a` depends on the states, as `a * (1 / b)`: the reciprocal is then a value of the
    /// parameters, which
    /// every backend computes once per subject, and what runs at each evaluation is a
    /// multiplication instead of a division (a division is several times the instructions of a
    /// multiplication on a GPU). The product may differ from the quotient in its last bit, so
    /// values of time (and parameters) are divided exactly: they may land exactly on a whole
    /// number or a bound that `floor`, `ceil` or a comparison steps at (`floor(t / 49)` at
    /// t = 49), where values of the states cross such points rather than land on them. For
    /// the programs evaluated many times per subject; not for values computed once.
    pub fn with_reciprocals() -> Self {
        Builder {
            reciprocals: true,
            ..Self::default()
        }
    }

    /// The statement new instructions come from (an index the caller gives meaning to).
    pub fn set_origin(&mut self, origin: u32) {
        self.origin = origin;
    }

    fn konst(&self, r: Reg) -> Option<f64> {
        match self.instrs[r as usize] {
            Op::Const(v) => Some(v),
            _ => None,
        }
    }

    pub fn c(&mut self, v: f64) -> Reg {
        self.push(Op::Const(v))
    }

    /// Adds an instruction, folding constants and simplifying.
    pub fn push(&mut self, op: Op) -> Reg {
        use Op::*;
        let k = |r: Reg| self.konst(r);
        let simplified = match op {
            Add(a, b) if k(a) == Some(0.0) => Some(b),
            Add(a, b) if k(b) == Some(0.0) => Some(a),
            Sub(a, b) if k(b) == Some(0.0) => Some(a),
            Sub(a, b) if k(a) == Some(0.0) => return self.push(Neg(b)),
            Sub(a, b) if a == b => return self.c(0.0),
            Mul(a, b) if k(a) == Some(0.0) || k(b) == Some(0.0) => return self.c(0.0),
            Mul(a, b) if k(a) == Some(1.0) => Some(b),
            Mul(a, b) if k(b) == Some(1.0) => Some(a),
            Mul(a, b) if k(a) == Some(-1.0) => return self.push(Neg(b)),
            Mul(a, b) if k(b) == Some(-1.0) => return self.push(Neg(a)),
            Div(a, b) if k(b) == Some(1.0) => Some(a),
            Div(a, _) if k(a) == Some(0.0) => return self.c(0.0),
            Neg(a) => match self.instrs[a as usize] {
                Neg(x) => Some(x),
                _ => None,
            },
            Pow(a, b) => match k(b) {
                Some(0.0) => return self.c(1.0),
                Some(1.0) => Some(a),
                Some(0.5) => return self.push(Sqrt(a)),
                Some(e) if e.fract() == 0.0 && e.abs() <= 4.0 => {
                    return self.push(Powi(a, e as i32))
                }
                _ => None,
            },
            Powi(_, 0) => return self.c(1.0),
            Powi(a, 1) => Some(a),
            Select(c, a, b) => match k(c) {
                Some(v) => Some(if v != 0.0 { a } else { b }),
                None if a == b => Some(a),
                None => None,
            },
            _ => None,
        };
        if let Some(r) = simplified {
            return r;
        }
        // Constant folding, after the algebra above (`0 * exp(1000)` is 0, as `0 * x` is for
        // every x).
        let all_const = op.args().all(|a| k(a).is_some())
            && !matches!(op, Time | State(_) | Param(_) | Slot(_) | Const(_));
        if all_const {
            let regs: Vec<f64> = self
                .instrs
                .iter()
                .map(|o| if let Const(v) = o { *v } else { 0.0 })
                .collect();
            let v = apply(&op, &regs, 0.0, &[], &[], &[]);
            return self.push(Const(v));
        }
        if let Div(a, b) = op {
            // Not when 1/b would overflow or lose bits to underflow.
            let fine = k(b).is_none_or(|v| (1.0 / v).is_normal());
            let moving = !self.fixed[a as usize] && !self.timed[a as usize];
            if self.reciprocals && fine && self.fixed[b as usize] && moving {
                let one = self.c(1.0);
                let inverse = self.push(Div(one, b));
                return self.push(Mul(a, inverse));
            }
        }
        let key = key(&op);
        if let Some(r) = self.seen.get(&key) {
            return *r;
        }
        let r = self.instrs.len() as Reg;
        let fixed = op.on_parameters_alone(&self.fixed);
        self.fixed.push(fixed);
        let timed = match op {
            Time => true,
            State(_) | Slot(_) => false,
            _ => {
                op.args().any(|a| self.timed[a as usize])
                    && op
                        .args()
                        .all(|a| self.timed[a as usize] || self.fixed[a as usize])
            }
        };
        self.timed.push(timed);
        self.instrs.push(op);
        self.origins.push(self.origin);
        self.seen.insert(key, r);
        r
    }

    /// Lowers an expression; `derived[k]` holds the register of derived quantity k.
    pub fn expr(&mut self, e: &Expr, derived: &[Reg]) -> Reg {
        match e {
            Expr::Num(v) => self.c(*v),
            Expr::Var(v) => match v {
                Var::Time => self.push(Op::Time),
                Var::State(i) => self.push(Op::State(*i as u32)),
                Var::Param(i) => self.push(Op::Param(*i as u32)),
                Var::Slot(i) => self.push(Op::Slot(*i as u32)),
                Var::Derived(k) => derived.get(*k).copied().unwrap_or_else(|| self.c(f64::NAN)),
                // Unresolved names never reach lowering from a validated model.
                Var::Name { .. } => self.c(f64::NAN),
            },
            Expr::Unary(op, a) => {
                let a = self.expr(a, derived);
                self.push(match op {
                    UnOp::Neg => Op::Neg(a),
                    UnOp::Not => Op::Not(a),
                })
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a, derived), self.expr(b, derived));
                self.push(match op {
                    BinOp::Add => Op::Add(a, b),
                    BinOp::Sub => Op::Sub(a, b),
                    BinOp::Mul => Op::Mul(a, b),
                    BinOp::Div => Op::Div(a, b),
                    BinOp::Pow => Op::Pow(a, b),
                    BinOp::Lt => Op::Lt(a, b),
                    BinOp::Le => Op::Le(a, b),
                    BinOp::Gt => Op::Gt(a, b),
                    BinOp::Ge => Op::Ge(a, b),
                    BinOp::Eq => Op::Eq(a, b),
                    BinOp::Ne => Op::Ne(a, b),
                    BinOp::And => Op::And(a, b),
                    BinOp::Or => Op::Or(a, b),
                })
            }
            Expr::Call(f, args) => {
                let a: Vec<Reg> = args.iter().map(|x| self.expr(x, derived)).collect();
                let x = a.first().copied().unwrap_or_else(|| self.c(f64::NAN));
                let y = a.get(1).copied().unwrap_or_else(|| self.c(f64::NAN));
                let op = match f {
                    Func::Exp => Op::Exp(x),
                    Func::Log => Op::Log(x),
                    Func::Log10 => Op::Log10(x),
                    Func::Sqrt => Op::Sqrt(x),
                    Func::Pow => Op::Pow(x, y),
                    Func::Abs => Op::Abs(x),
                    Func::Sin => Op::Sin(x),
                    Func::Cos => Op::Cos(x),
                    Func::Tanh => Op::Tanh(x),
                    Func::Atan => Op::Atan(x),
                    Func::Erf => Op::Erf(x),
                    Func::Erfc => Op::Erfc(x),
                    Func::Phi => {
                        let scale = self.c(-std::f64::consts::FRAC_1_SQRT_2);
                        let z = self.push(Op::Mul(x, scale));
                        let e = self.push(Op::Erfc(z));
                        let half = self.c(0.5);
                        Op::Mul(half, e)
                    }
                    Func::Floor => Op::Floor(x),
                    Func::Ceil => Op::Ceil(x),
                    Func::Trunc => {
                        // ceil below 0, floor elsewhere (NaN included, which floor keeps).
                        let zero = self.c(0.0);
                        let negative = self.push(Op::Lt(x, zero));
                        let up = self.push(Op::Ceil(x));
                        let down = self.push(Op::Floor(x));
                        Op::Select(negative, up, down)
                    }
                    // The simplification of 0 · floor(a / 0) to 0 below would make it a.
                    Func::Mod if self.konst(y) == Some(0.0) => return self.c(f64::NAN),
                    Func::Mod => {
                        // a − b·floor(a / b): the quotient of a value of time is exact, as
                        // floor(t / 24) is (the division's own rules).
                        let quotient = self.push(Op::Div(x, y));
                        let whole = self.push(Op::Floor(quotient));
                        let multiple = self.push(Op::Mul(y, whole));
                        Op::Sub(x, multiple)
                    }
                    Func::Min => Op::Min(x, y),
                    Func::Max => Op::Max(x, y),
                    Func::Expit => {
                        let one = self.c(1.0);
                        let minus = self.push(Op::Neg(x));
                        let e = self.push(Op::Exp(minus));
                        let denominator = self.push(Op::Add(one, e));
                        Op::Div(one, denominator)
                    }
                    Func::Logit => {
                        let one = self.c(1.0);
                        let rest = self.push(Op::Sub(one, x));
                        let odds = self.push(Op::Div(x, rest));
                        Op::Log(odds)
                    }
                };
                self.push(op)
            }
            Expr::If(c, a, b) => {
                let (c, a, b) = (
                    self.expr(c, derived),
                    self.expr(a, derived),
                    self.expr(b, derived),
                );
                self.push(Op::Select(c, a, b))
            }
        }
    }

    /// Forward derivative of register `r` with respect to `wrt` (a `State(i)` or `Time` leaf);
    /// `memo` caches derivatives (None = identically zero).
    ///
    /// The registers `r` depends on are differentiated first, one by one, in the order a
    /// depth-first walk reaches them, so that each step finds its operands' derivatives in
    /// `memo`: the stack stays shallow for a chain of any length (`a1 = a0 + x`, `a2 = a1 + x`,
    /// … inlined into one expression), and the instructions are pushed in the walk's order.
    pub fn diff(&mut self, r: Reg, wrt: Op, memo: &mut HashMap<Reg, Option<Reg>>) -> Option<Reg> {
        for x in self.diff_order(r, memo) {
            self.diff_one(x, wrt, memo);
        }
        memo.get(&r).copied().flatten()
    }

    /// The operands whose derivatives `diff_one` takes for `op`, in the order it takes them.
    fn diff_operands(op: Op) -> ([Reg; 2], usize) {
        use Op::*;
        match op {
            Neg(a)
            | Powi(a, _)
            | Exp(a)
            | Log(a)
            | Log10(a)
            | Sqrt(a)
            | Sin(a)
            | Cos(a)
            | Tanh(a)
            | Atan(a)
            | Erf(a)
            | Erfc(a)
            | Abs(a) => ([a, a], 1),
            Add(a, b) | Sub(a, b) | Mul(a, b) | Div(a, b) | Min(a, b) | Max(a, b) => ([a, b], 2),
            // The exponent first: whether it is constant picks the rule.
            Pow(a, b) => ([b, a], 2),
            Select(_, a, b) => ([a, b], 2),
            _ => ([0, 0], 0),
        }
    }

    /// The registers not yet in `memo` that `diff_one(r)` would reach, in the order its
    /// recursion finishes them (operands before the register), found without recursion.
    fn diff_order(&self, r: Reg, memo: &HashMap<Reg, Option<Reg>>) -> Vec<Reg> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // (register, operands already pushed)
        let mut stack = vec![(r, false)];
        while let Some((x, expanded)) = stack.pop() {
            if expanded {
                order.push(x);
                continue;
            }
            if memo.contains_key(&x) || !seen.insert(x) {
                continue;
            }
            stack.push((x, true));
            let (ops, n) = Self::diff_operands(self.instrs[x as usize]);
            for &o in ops[..n].iter().rev() {
                stack.push((o, false));
            }
        }
        order
    }

    /// One step of `diff`: the derivative of `r` from those of its operands (taken
    /// recursively where `memo` lacks them).
    fn diff_one(&mut self, r: Reg, wrt: Op, memo: &mut HashMap<Reg, Option<Reg>>) -> Option<Reg> {
        if let Some(d) = memo.get(&r) {
            return *d;
        }
        use Op::*;
        let op = self.instrs[r as usize];
        // The derivative's instructions come from where the instruction came from.
        let outer = self.origin;
        self.origin = self.origins[r as usize];
        let mut d = |b: &mut Builder, x: Reg| b.diff_one(x, wrt, memo);
        let zero_or = |b: &mut Builder, x: Option<Reg>| x.unwrap_or_else(|| b.c(0.0));
        let res: Option<Reg> = match op {
            Const(_) | Param(_) | Slot(_) => None,
            Time => (wrt == Time).then(|| self.c(1.0)),
            State(i) => (wrt == State(i)).then(|| self.c(1.0)),
            Lt(..) | Le(..) | Gt(..) | Ge(..) | Eq(..) | Ne(..) | And(..) | Or(..) | Not(_) => None,
            Neg(a) => d(self, a).map(|x| self.push(Neg(x))),
            Add(a, b) => match (d(self, a), d(self, b)) {
                (None, None) => None,
                (Some(x), None) | (None, Some(x)) => Some(x),
                (Some(x), Some(y)) => Some(self.push(Add(x, y))),
            },
            Sub(a, b) => match (d(self, a), d(self, b)) {
                (None, None) => None,
                (Some(x), None) => Some(x),
                (None, Some(y)) => Some(self.push(Neg(y))),
                (Some(x), Some(y)) => Some(self.push(Sub(x, y))),
            },
            Mul(a, b) => {
                let (da, db) = (d(self, a), d(self, b));
                let t1 = da.map(|x| self.push(Mul(x, b)));
                let t2 = db.map(|y| self.push(Mul(a, y)));
                match (t1, t2) {
                    (None, None) => None,
                    (Some(x), None) | (None, Some(x)) => Some(x),
                    (Some(x), Some(y)) => Some(self.push(Add(x, y))),
                }
            }
            Div(a, b) => {
                // (da − r·db) / b
                let (da, db) = (d(self, a), d(self, b));
                let num = match (da, db) {
                    (None, None) => None,
                    (Some(x), None) => Some(x),
                    (da, Some(y)) => {
                        let ry = self.push(Mul(r, y));
                        Some(match da {
                            Some(x) => self.push(Sub(x, ry)),
                            None => self.push(Neg(ry)),
                        })
                    }
                };
                num.map(|n| self.push(Div(n, b)))
            }
            Pow(a, b) if d(self, b).is_none() => {
                // Constant exponent: b·a^(b−1)·da, finite at a = 0 for b ≥ 1.
                d(self, a).map(|x| {
                    let one = self.c(1.0);
                    let bm1 = self.push(Sub(b, one));
                    let p = self.push(Pow(a, bm1));
                    let bp = self.push(Mul(b, p));
                    self.push(Mul(bp, x))
                })
            }
            Pow(a, b) => {
                // r · (db·ln a + b·da / a)
                let (da, db) = (d(self, a), d(self, b));
                let t1 = db.map(|y| {
                    let l = self.push(Log(a));
                    self.push(Mul(y, l))
                });
                let t2 = da.map(|x| {
                    let q = self.push(Div(x, a));
                    self.push(Mul(b, q))
                });
                let s = match (t1, t2) {
                    (None, None) => None,
                    (Some(x), None) | (None, Some(x)) => Some(x),
                    (Some(x), Some(y)) => Some(self.push(Add(x, y))),
                };
                s.map(|s| self.push(Mul(r, s)))
            }
            Powi(a, n) => d(self, a).map(|x| {
                let p = self.push(Powi(a, n - 1));
                let nc = self.c(n as f64);
                let np = self.push(Mul(nc, p));
                self.push(Mul(np, x))
            }),
            Exp(a) => d(self, a).map(|x| self.push(Mul(r, x))),
            Log(a) => d(self, a).map(|x| self.push(Div(x, a))),
            Log10(a) => d(self, a).map(|x| {
                let l = self.c(std::f64::consts::LN_10);
                let al = self.push(Mul(a, l));
                self.push(Div(x, al))
            }),
            Sqrt(a) => d(self, a).map(|x| {
                let two = self.c(2.0);
                let tr = self.push(Mul(two, r));
                self.push(Div(x, tr))
            }),
            Sin(a) => d(self, a).map(|x| {
                let c = self.push(Cos(a));
                self.push(Mul(c, x))
            }),
            Cos(a) => d(self, a).map(|x| {
                let s = self.push(Sin(a));
                let m = self.push(Mul(s, x));
                self.push(Neg(m))
            }),
            Tanh(a) => d(self, a).map(|x| {
                // (1 − tanh²)·da
                let one = self.c(1.0);
                let sq = self.push(Mul(r, r));
                let s = self.push(Sub(one, sq));
                self.push(Mul(s, x))
            }),
            Atan(a) => d(self, a).map(|x| {
                // da / (1 + a²)
                let one = self.c(1.0);
                let sq = self.push(Mul(a, a));
                let s = self.push(Add(one, sq));
                self.push(Div(x, s))
            }),
            Erf(a) | Erfc(a) => d(self, a).map(|x| {
                // ±2/√π · e^(−a²) · da
                let sign = if matches!(op, Erf(_)) { 1.0 } else { -1.0 };
                let sq = self.push(Mul(a, a));
                let m = self.push(Neg(sq));
                let e = self.push(Exp(m));
                let k = self.c(sign * std::f64::consts::FRAC_2_SQRT_PI);
                let ke = self.push(Mul(k, e));
                self.push(Mul(ke, x))
            }),
            // Piecewise constant: zero wherever it is differentiable.
            Floor(_) | Ceil(_) => None,
            Abs(a) => d(self, a).map(|x| {
                let zero = self.c(0.0);
                let c = self.push(Ge(a, zero));
                let nx = self.push(Neg(x));
                self.push(Select(c, x, nx))
            }),
            Min(a, b) | Max(a, b) => {
                let (da, db) = (d(self, a), d(self, b));
                if da.is_none() && db.is_none() {
                    None
                } else {
                    let c = self.push(if matches!(op, Min(..)) {
                        Le(a, b)
                    } else {
                        Ge(a, b)
                    });
                    let (x, y) = (zero_or(self, da), zero_or(self, db));
                    Some(self.push(Select(c, x, y)))
                }
            }
            Select(c, a, b) => {
                let (da, db) = (d(self, a), d(self, b));
                if da.is_none() && db.is_none() {
                    None
                } else {
                    let (x, y) = (zero_or(self, da), zero_or(self, db));
                    Some(self.push(Select(c, x, y)))
                }
            }
        };
        self.origin = outer;
        memo.insert(r, res);
        res
    }

    /// Finishes a program: keeps only the instructions the results need, in order.
    pub fn finish(self, results: Vec<Reg>) -> Program {
        pruned(&self.instrs, &self.origins, &results)
    }
}

/// The program computing `results` from `instrs`: only the instructions they need, in order,
/// renumbered, each with its origin (where `origins` has one).
fn pruned(instrs: &[Op], origins: &[u32], results: &[Reg]) -> Program {
    let n = instrs.len();
    let mut live = vec![false; n];
    for r in results {
        live[*r as usize] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for a in instrs[i].args() {
                live[a as usize] = true;
            }
        }
    }
    let mut map = vec![0 as Reg; n];
    let mut p = Program::default();
    for i in (0..n).filter(|&i| live[i]) {
        map[i] = p.instrs.len() as Reg;
        p.instrs.push(instrs[i].map_args(|a| map[a as usize]));
        if let Some(o) = origins.get(i) {
            p.origins.push(*o);
        }
    }
    p.results = results.iter().map(|r| map[*r as usize]).collect();
    p
}

/// A statement of a model file, located: what code generated from it is reported against.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The statement as its reader knows it: `d/dt(central)`, `k10 = …`, `output cp`,
    /// `central(0) = …`, `alag(depot) = …`.
    pub what: String,
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl Statement {
    /// A diagnostic at the statement.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: message.into(),
        }
    }
}

/// The lowered programs of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrograms {
    pub n_states: usize,
    pub n_params: usize,
    pub n_outputs: usize,
    /// dy/dt, one result per state.
    pub rhs: Program,
    /// ∂f/∂y row-major (n×n results).
    pub jacobian: Program,
    /// ∂f/∂t (n results).
    pub dfdt: Program,
    /// Outputs (n_out results).
    pub outputs: Program,
    /// ∂g/∂y row-major (n_out×n results).
    pub output_jacobian: Program,
    /// ∂g/∂t (n_out results).
    pub output_dfdt: Program,
    /// Initial states (n results; parameters only).
    pub init: Program,
    /// Per state: lag, bioavailability, rate, duration (4n results; NaN = not declared for
    /// rate and duration; lag defaults to 0 and bioavailability to 1).
    pub dosing: Program,
    /// Per output: affine in the states with constant coefficients (parameters at most) and
    /// not depending on time explicitly. On a step, such an output is the same polynomial in
    /// (t − t0)/h as the dense output of the states (degree 4 at most for every method).
    pub affine_outputs: Vec<bool>,
    /// Per output: whether it depends on time directly (`t` in its expression or in a derived
    /// quantity it reads), so that its slope has a ∂g/∂t term ([`Self::output_dfdt`]).
    pub time_outputs: Vec<bool>,
    /// The model's statements the programs' instructions come from (`Program::origins`):
    /// derived quantities, right-hand sides, outputs, initial values and dosing declarations.
    pub statements: Vec<Statement>,
    /// The statements holding operations on finite constants alone whose value is not finite
    /// (`1 / 0`), each once, in order ([`Self::non_finite_constant_note`]).
    pub non_finite_constants: Vec<u32>,
    /// The steps in time of the right-hand side and the outputs: where the model jumps at
    /// times known before the integration (stopping points; `super::jumps`).
    pub time_jumps: super::jumps::TimeJumps,
}

impl Program {
    /// Where the program jumps with the states: per instruction, whether it is a step function
    /// of values of the states ([`Program::steps_of_states`]) across whose change a result
    /// changes by more than round-off; per result, whether it changes so. Such a change is
    /// looked for numerically, with the parameters `params`: between pairs of points (states
    /// of magnitudes from 1e-5 to 1e5, positive at 64 points, of either sign at 32 more; time
    /// from 0 to 1000) where the step function differs, bisected to neighbours, where the
    /// results are then compared. A step that selects between two forms
    /// of one value (`if(b >= 0, …, …)` for the two forms of a root) is no jump.
    pub fn jumps_with_states(&self, n_states: usize, params: &[f64]) -> (Vec<bool>, Vec<bool>) {
        let prog = self;
        let steps = prog.steps_of_states();
        let (mut found, mut jumping) = (
            vec![false; prog.instrs.len()],
            vec![false; prog.results.len()],
        );
        if !steps.contains(&true) {
            return (found, jumping);
        }
        let n = n_states;
        // Every register's value (the results are read from them).
        let eval =
            |t: f64, y: &[f64], regs: &mut Vec<f64>| prog.run(t, y, params, &[], regs, &mut []);
        // A fixed sequence of points, the same for every call.
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x005e_ed0f);
        let mut uniform = move || rng.random::<f64>();
        // Positive states first (amounts, concentrations), then states of either sign (a
        // deviation from a baseline, `if(x < 0, …)`).
        const POSITIVE: usize = 64;
        const POINTS: usize = POSITIVE + 32;
        let points: Vec<(f64, Vec<f64>)> = (0..POINTS)
            .map(|i| {
                let t = 1000.0 * uniform();
                let y = (0..n)
                    .map(|_| {
                        let v = 10f64.powf(10.0 * uniform() - 5.0);
                        if i >= POSITIVE && uniform() < 0.5 {
                            -v
                        } else {
                            v
                        }
                    })
                    .collect();
                (t, y)
            })
            .collect();
        let values: Vec<Vec<f64>> = points
            .iter()
            .map(|(t, y)| {
                let mut regs = Vec::new();
                eval(*t, y, &mut regs);
                regs
            })
            .collect();
        let (mut regs_a, mut regs_b) = (Vec::new(), Vec::new());
        // Per instruction: a jump found; the changes bisected without finding one (a step
        // that changes nothing after 8 of them is taken for one that never does).
        let mut tries = vec![0u8; prog.instrs.len()];
        let results =
            |regs: &[f64]| -> Vec<f64> { prog.results.iter().map(|&r| regs[r as usize]).collect() };
        for i in 0..POINTS {
            for j in i + 1..POINTS {
                let (ta, ya) = &points[i];
                let (tb, yb) = &points[j];
                let (va, vb) = (&values[i], &values[j]);
                let Some(k) = (0..prog.instrs.len()).find(|&k| {
                    steps[k] && !found[k] && tries[k] < 8 && va[k] != vb[k] && !va[k].is_nan()
                }) else {
                    continue;
                };
                tries[k] += 1;
                // Bisect the segment to neighbouring points on either side of k's change.
                let (mut lo, mut hi) = (0.0f64, 1.0f64);
                let at = |s: f64, y: &mut Vec<f64>| {
                    y.clear();
                    y.extend(ya.iter().zip(yb).map(|(a, b)| a + s * (b - a)));
                    ta + s * (tb - ta)
                };
                let (mut y_lo, mut y_hi) = (ya.clone(), yb.clone());
                let (mut t_lo, mut t_hi) = (*ta, *tb);
                let mut y_mid = Vec::with_capacity(n);
                let mut regs = Vec::new();
                for _ in 0..80 {
                    let mid = 0.5 * (lo + hi);
                    if mid <= lo || mid >= hi {
                        break;
                    }
                    let t = at(mid, &mut y_mid);
                    eval(t, &y_mid, &mut regs);
                    if regs[k] == va[k] {
                        lo = mid;
                        t_lo = t;
                        std::mem::swap(&mut y_lo, &mut y_mid);
                    } else {
                        hi = mid;
                        t_hi = t;
                        std::mem::swap(&mut y_hi, &mut y_mid);
                    }
                }
                eval(t_lo, &y_lo, &mut regs_a);
                let f_lo = results(&regs_a);
                eval(t_hi, &y_hi, &mut regs_b);
                let f_hi = results(&regs_b);
                for (r, (a, b)) in f_lo.iter().zip(&f_hi).enumerate() {
                    if a.is_finite()
                        && b.is_finite()
                        && (a - b).abs() > 1e-6 * (a.abs() + b.abs()) + f64::MIN_POSITIVE
                    {
                        found[k] = true;
                        jumping[r] = true;
                    }
                }
            }
        }
        (found, jumping)
    }
}

impl ModelPrograms {
    /// The statements where the right-hand side jumps with the states, each once, in the
    /// order of the file ([`Program::jumps_with_states`] with the parameters `params`). The
    /// adaptive methods cross a jump by shortening their steps, but their error estimates see
    /// it only in part (docs/model-language.md, "Jumps").
    pub fn rhs_jumps_with_states(&self, params: &[f64]) -> Vec<&Statement> {
        if params.len() != self.n_params {
            return Vec::new();
        }
        let (found, _) = self.rhs.jumps_with_states(self.n_states, params);
        let mut at: Vec<u32> = (0..found.len())
            .filter(|&k| found[k])
            .filter_map(|k| self.rhs.origin(k))
            .collect();
        at.sort_unstable();
        at.dedup();
        at.iter()
            .filter_map(|&o| self.statements.get(o as usize))
            .collect()
    }

    /// Per output: whether it jumps with the states ([`Program::jumps_with_states`] with the
    /// parameters `params`).
    pub fn outputs_jumping_with_states(&self, params: &[f64]) -> Vec<bool> {
        if params.len() != self.n_params {
            return vec![false; self.n_outputs];
        }
        self.outputs.jumps_with_states(self.n_states, params).1
    }

    /// The note for a model whose right-hand side jumps with the states
    /// ([`Self::rhs_jumps_with_states`] with the parameters `params`); `None` where it does
    /// not.
    pub fn rhs_jump_note(&self, params: &[f64]) -> Option<String> {
        let at = located(&self.rhs_jumps_with_states(params))?;
        Some(format!(
            "the right-hand side jumps where values of the states cross a bound ({at}): the \
             adaptive methods shorten their steps across each jump, but their error estimates \
             see a jump only in part, so errors there can be well above rtol, and a tighter \
             rtol does not bring them down; events = \"locate\" (every backend) ends a step \
             at each jump and keeps to the tolerance, as does a smooth switch such as \
             c^n / (c50^n + c^n) (docs/model-language.md, \"Jumps\")"
        ))
    }
}

/// "`what` at file:line:col" of the first statement, with how many more there are (" and 2
/// more statements"); `None` for none. For notes that name where a model does something.
pub fn located(statements: &[&Statement]) -> Option<String> {
    let first = statements.first()?;
    let more = match statements.len() {
        1 => String::new(),
        2 => " and 1 more statement".to_string(),
        n => format!(" and {} more statements", n - 1),
    };
    Some(format!(
        "`{}` at {}:{}:{}{more}",
        first.what, first.file, first.line, first.col
    ))
}

impl Program {
    /// Floating-point operations of one evaluation: additions, subtractions, multiplications,
    /// divisions, negations and comparisons count 1, an integer power its multiplications,
    /// and exp, log, log10, sqrt, sin, cos and a general power count 1 each (they are reported apart
    /// by [`Program::transcendentals`]).
    pub fn flops(&self) -> u64 {
        self.instrs
            .iter()
            .map(|op| match op {
                Op::Const(_) | Op::Time | Op::State(_) | Op::Param(_) | Op::Slot(_) => 0,
                Op::Powi(_, n) => u64::from(n.unsigned_abs().max(2) - 1),
                _ => 1,
            })
            .sum()
    }

    /// Per instruction: whether its value depends on parameters and constants alone (not on
    /// time, the states or slots). Every backend that evaluates a program many times per
    /// subject computes those values once per subject.
    pub fn on_parameters_alone(&self) -> Vec<bool> {
        let mut alone = Vec::with_capacity(self.instrs.len());
        for op in &self.instrs {
            let a = op.on_parameters_alone(&alone);
            alone.push(a);
        }
        alone
    }

    /// [`Program::flops`] and [`Program::transcendentals`] of the instructions run at every
    /// evaluation: those that do not depend on parameters and constants alone
    /// ([`Program::on_parameters_alone`]).
    pub fn per_evaluation(&self) -> (u64, u64) {
        let alone = self.on_parameters_alone();
        let kept: Vec<Op> = self
            .instrs
            .iter()
            .zip(&alone)
            .filter(|(_, a)| !**a)
            .map(|(op, _)| *op)
            .collect();
        let p = Program {
            instrs: kept,
            results: Vec::new(),
            origins: Vec::new(),
        };
        (p.flops(), p.transcendentals())
    }

    /// exp, log, log10, sqrt, sin, cos, tanh, atan, erf, erfc and general powers in one
    /// evaluation.
    pub fn transcendentals(&self) -> u64 {
        self.instrs
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::Exp(_)
                        | Op::Log(_)
                        | Op::Log10(_)
                        | Op::Sqrt(_)
                        | Op::Pow(..)
                        | Op::Sin(_)
                        | Op::Cos(_)
                        | Op::Tanh(_)
                        | Op::Atan(_)
                        | Op::Erf(_)
                        | Op::Erfc(_)
                )
            })
            .count() as u64
    }
}

/// Derived quantity k is statement k.
fn derived_regs(b: &mut Builder, m: &Model) -> Vec<Reg> {
    let mut regs = Vec::with_capacity(m.derived.len());
    for (k, d) in m.derived.iter().enumerate() {
        b.set_origin(k as u32);
        let r = b.expr(&d.expr, &regs);
        regs.push(r);
    }
    regs
}

/// Lowers each expression with its statement as origin.
fn lower_all(b: &mut Builder, exprs: &[(&Expr, u32)], derived: &[Reg]) -> Vec<Reg> {
    exprs
        .iter()
        .map(|(e, origin)| {
            b.set_origin(*origin);
            b.expr(e, derived)
        })
        .collect()
}

impl ModelPrograms {
    /// The same model with `f` applied to each program the integration evaluates: the
    /// right-hand side, the outputs and their derivatives in the states and in time (not the
    /// initial states nor the dosing declarations, which no integration step reads).
    pub fn map_integrated(&self, f: impl Fn(&Program) -> Program) -> ModelPrograms {
        ModelPrograms {
            rhs: f(&self.rhs),
            jacobian: f(&self.jacobian),
            dfdt: f(&self.dfdt),
            outputs: f(&self.outputs),
            output_jacobian: f(&self.output_jacobian),
            output_dfdt: f(&self.output_dfdt),
            ..self.clone()
        }
    }

    pub fn new(m: &Model) -> ModelPrograms {
        let n = m.states.len();
        // Statements: derived quantities, right-hand sides, outputs, then initial values and
        // dosing declarations where given.
        let src = &m.source;
        let mut statements: Vec<Statement> = Vec::new();
        let mut statement = |what: String, span: Span| -> u32 {
            let (line, col) = src.line_col(span.start);
            statements.push(Statement {
                what,
                file: src.name.clone(),
                line,
                col,
            });
            (statements.len() - 1) as u32
        };
        for d in &m.derived {
            statement(format!("{} = …", d.name), d.span);
        }
        let mut odes: Vec<(&Expr, u32)> = Vec::with_capacity(n);
        for (i, e) in m.odes.iter().enumerate() {
            let span = m.ode_spans.get(i).copied().unwrap_or(m.states[i].span);
            odes.push((e, statement(format!("d/dt({})", m.states[i].name), span)));
        }
        let mut outs: Vec<(&Expr, u32)> = Vec::with_capacity(m.outputs.len());
        for o in &m.outputs {
            outs.push((&o.expr, statement(format!("output {}", o.name), o.span)));
        }
        let zero = Expr::Num(0.0);
        let mut inits: Vec<(&Expr, u32)> = Vec::with_capacity(n);
        for s in &m.states {
            inits.push(match (&s.init, s.init_span) {
                (Some(e), Some(span)) => (e, statement(format!("{}(0) = …", s.name), span)),
                (Some(e), None) => (e, NO_ORIGIN),
                (None, _) => (&zero, NO_ORIGIN),
            });
        }
        let (one, nan) = (Expr::Num(1.0), Expr::Num(f64::NAN));
        let mut dose_exprs: Vec<(&Expr, u32)> = Vec::with_capacity(4 * n);
        for (i, d) in m.dosing.iter().enumerate() {
            let decls = [
                (&d.lag, &zero, "alag"),
                (&d.bioavailability, &one, "f"),
                (&d.rate, &nan, "rate"),
                (&d.duration, &nan, "dur"),
            ];
            for (k, (e, default, kind)) in decls.into_iter().enumerate() {
                dose_exprs.push(match (e, d.spans[k]) {
                    (Some(e), Some(span)) => (
                        e,
                        statement(format!("{kind}({}) = …", m.states[i].name), span),
                    ),
                    (Some(e), None) => (e, NO_ORIGIN),
                    (None, _) => (default, NO_ORIGIN),
                });
            }
        }

        // The programs run at every evaluation divide by values of the parameters through
        // reciprocals (Builder::with_reciprocals); initial values and dosing run once.
        let mut non_finite_constants: Vec<u32> = Vec::new();
        let mut lower = |exprs: &[(&Expr, u32)], per_evaluation: bool| {
            let mut b = if per_evaluation {
                Builder::with_reciprocals()
            } else {
                Builder::new()
            };
            let d = derived_regs(&mut b, m);
            let rs = lower_all(&mut b, exprs, &d);
            let p = b.finish(rs);
            // The statements that read such a constant, and those whose value it is (a
            // constant's own origin is the statement that first made it, which may be another).
            non_finite_constants.extend(p.non_finite_constants());
            for (r, (_, origin)) in p.results.iter().zip(exprs) {
                if matches!(p.instrs[*r as usize], Op::Const(v) if !v.is_finite())
                    && *origin != NO_ORIGIN
                {
                    non_finite_constants.push(*origin);
                }
            }
            p
        };
        let rhs = lower(&odes, true);
        let outputs = lower(&outs, true);

        let jac_of = |exprs: &[(&Expr, u32)], wrt: &mut dyn FnMut(usize) -> Op, cols: usize| {
            let mut b = Builder::with_reciprocals();
            let d = derived_regs(&mut b, m);
            let rs = lower_all(&mut b, exprs, &d);
            b.set_origin(NO_ORIGIN);
            let zero = b.c(0.0);
            let mut res = vec![zero; rs.len() * cols];
            // One memo per column: derivatives of shared subexpressions are shared by rows.
            for j in 0..cols {
                let mut memo = HashMap::new();
                let w = wrt(j);
                for (i, &r) in rs.iter().enumerate() {
                    res[i * cols + j] = b.diff(r, w, &mut memo).unwrap_or(zero);
                }
            }
            b.finish(res)
        };
        let jacobian = jac_of(&odes, &mut |j| Op::State(j as u32), n);
        let dfdt = jac_of(&odes, &mut |_| Op::Time, 1);
        let output_jacobian = jac_of(&outs, &mut |j| Op::State(j as u32), n);
        let output_dfdt = jac_of(&outs, &mut |_| Op::Time, 1);

        let init = lower(&inits, false);
        let dosing = lower(&dose_exprs, false);
        // In the order of the file.
        non_finite_constants.sort_by_key(|&o| {
            let s = &statements[o as usize];
            (s.line, s.col)
        });
        non_finite_constants.dedup();
        // Outputs affine in the states, with coefficients that do not change with time, and
        // without explicit time.
        let explicit_time = outputs.results_depend_on(|op| matches!(op, Op::Time));
        let varying_slope =
            output_jacobian.results_depend_on(|op| matches!(op, Op::Time | Op::State(_)));
        // A step of the states (floor(cp), cp > 1) has a zero slope between its jumps.
        let steps = outputs.results_step_with_states();
        let affine_outputs = (0..m.outputs.len())
            .map(|k| {
                !explicit_time[k] && !steps[k] && !varying_slope[k * n..(k + 1) * n].contains(&true)
            })
            .collect();
        let time_jumps = super::jumps::TimeJumps::new(&rhs, &outputs);
        ModelPrograms {
            time_jumps,
            affine_outputs,
            time_outputs: explicit_time,
            n_states: n,
            n_params: m.params.len(),
            n_outputs: m.outputs.len(),
            rhs,
            jacobian,
            dfdt,
            outputs,
            output_jacobian,
            output_dfdt,
            init,
            dosing,
            statements,
            non_finite_constants,
        }
    }

    /// The note for a model with operations on finite constants alone whose value is not
    /// finite (`1 / 0`, `log(0)`, `exp(1000)`): what reads them is NaN or infinite; `None`
    /// where there are none. A note, not an error: such a part may be meant (an output that is
    /// NaN where it is undefined) or sit in a branch of `if` that is never taken.
    pub fn non_finite_constant_note(&self) -> Option<String> {
        let statements: Vec<&Statement> = self
            .non_finite_constants
            .iter()
            .filter_map(|&o| self.statements.get(o as usize))
            .collect();
        let at = located(&statements)?;
        Some(format!(
            "{at} reads a constant that is not finite (such as 1 / 0, log(0), exp(1000) or \
             mod(x, 0)): where a right-hand side or initial value reads it, its subjects \
             fail as non_finite, and an output that reads it leaves its metrics undefined"
        ))
    }
}

/// Lowers a standalone expression over slots (population files).
pub fn lower_expr(e: &Expr) -> Program {
    let mut b = Builder::new();
    let r = b.expr(e, &[]);
    b.finish(vec![r])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::parse_expr_str;

    #[test]
    fn folds_shares_and_prunes() {
        let mut b = Builder::new();
        let x = b.push(Op::Slot(0));
        let two = b.c(2.0);
        let three = b.c(3.0);
        let six = b.push(Op::Mul(two, three));
        assert_eq!(b.konst(six), Some(6.0));
        let a = b.push(Op::Mul(x, six));
        let a2 = b.push(Op::Mul(six, x));
        assert_eq!(a, a2);
        let one = b.c(1.0);
        assert_eq!(b.push(Op::Mul(x, one)), x);
        let p = b.finish(vec![a]);
        assert_eq!(p.instrs.len(), 3);
        let mut regs = Vec::new();
        let mut out = [0.0];
        p.eval_slots(&[1.5], &mut regs, &mut out);
        assert_eq!(out[0], 9.0);
    }

    /// Constants that are not finite are noted at the statements that read them (a
    /// right-hand side, an output, an initial value), each once, in the file's order; not
    /// where they fold on to a finite value or sit in a branch not taken, nor where the algebra
    /// makes 0 of them (`0 * exp(1000)`, `0 / 0`, `x - x`), nor for a division by a parameter.
    #[test]
    fn constants_that_are_not_finite_are_noted() {
        let text = "param k = 0\nstate a\nbad = log(0)\na(0) = exp(1000)\n\
                    d/dt(a) = -k * a / k + bad * a + 1 / k\n\
                    output c = a + log(-1)\noutput big = 1e300 * 1e300 * a\noutput e = a / 2\n\
                    output fine = expit(-1000) + atan(1 / 0) + if(1 > 0, 1, 1 / 0) + 0 / (1 / 0)\n\
                    output zero = 0 * exp(1000) + 0 / 0 + (1 / 0 - 1 / 0) * a\n\
                    output m = mod(a, 0)\n";
        let m = crate::model::Model::parse("nf.vpm", text).unwrap();
        let p = ModelPrograms::new(&m);
        let what: Vec<&str> = p
            .non_finite_constants
            .iter()
            .map(|&o| p.statements[o as usize].what.as_str())
            .collect();
        assert_eq!(
            what,
            ["a(0) = …", "d/dt(a)", "output c", "output big", "output m"]
        );
        let note = p.non_finite_constant_note().unwrap();
        assert!(
            note.starts_with("`a(0) = …` at nf.vpm:4:1 and 4 more statements reads"),
            "{note}"
        );
        let fine = "param k = 0\nstate a\nd/dt(a) = -k * a / k + 1 / k\noutput c = log(a)\n";
        let m = crate::model::Model::parse("fine.vpm", fine).unwrap();
        assert_eq!(ModelPrograms::new(&m).non_finite_constant_note(), None);
    }

    #[test]
    fn affine_outputs_are_recognised() {
        let text = "param v = 30\nparam e = 2\nstate a, b\nk = 1 / v\n\
                    d/dt(a) = -a\nd/dt(b) = a - b\n\
                    output cp = a / v + 2 * b - e\noutput emax = a / (e + a)\n\
                    output late = a * t\noutput clock = b + t\noutput kink = abs(a - b)\n\
                    output scaled = k * (a + b)\noutput level = floor(a / v)\n\
                    output on = (a > e) * 2 + b\noutput fixed = floor(e) * a - ceil(v) * b\n";
        let m = crate::model::Model::parse("affine.vpm", text).unwrap();
        let p = ModelPrograms::new(&m);
        assert_eq!(
            p.affine_outputs,
            [true, false, false, false, false, true, false, false, true]
        );
    }

    /// Values of time are divided exactly, though divisions of values of the states by
    /// constants and parameters are multiplications by reciprocals: k · (1/d) is 1 ulp short of
    /// k at t = k·d for these divisors, which `floor`, `ceil` and comparisons would see.
    #[test]
    fn steps_read_exact_quotients() {
        for d in [49.0, 98.0, 103.0, 107.0] {
            let text = format!(
                "param w = {d}\nstate a\nd/dt(a) = floor(t / {d}) + (t / w >= 3) - a / w\n\
                 output day = floor(t / w)\noutput up = floor(-(2 - t / {d}) * 2) / 2\n\
                 output done = if(t / w == 3, 1, 0)\noutput c = a / w\n\
                 output wrap = mod(t, w) + mod(t, {d}) + trunc(-t / w)\n"
            );
            let m = crate::model::Model::parse("q.vpm", &text).unwrap();
            let p = ModelPrograms::new(&m);
            let t = 3.0 * d;
            assert!(t * (1.0 / d) < 3.0, "{d}: the reciprocal is exact");
            let (mut regs, mut out) = (Vec::new(), vec![0.0; 5]);
            p.outputs.run(t, &[d], &[d], &[], &mut regs, &mut out);
            assert_eq!(out[..3], [3.0, 1.0, 1.0], "{d}");
            // mod and trunc are quotients read by floor (and ceil): exact too.
            assert_eq!(out[4], -3.0, "{d}");
            let mut f = [0.0];
            p.rhs.run(t, &[d], &[d], &[], &mut regs, &mut f);
            assert_eq!(f[0], 3.0 + 1.0 - d * (1.0 / d), "{d}");
            assert!(d * (1.0 / d) < 1.0, "{d}: the reciprocal is exact");
            // Where no step reads it, the quotient is a product.
            assert!(p.outputs.instrs.iter().any(|op| matches!(op, Op::Mul(..))));
            assert!(p.rhs.instrs.iter().any(|op| matches!(op, Op::Mul(..))));
        }
    }

    /// `mod(a, 0)` is NaN, by a constant divisor or a parameter's value of 0, though a product
    /// with the constant 0 simplifies to 0.
    #[test]
    fn a_remainder_by_zero_is_nan() {
        let text = "param z = 0\nstate a\nd/dt(a) = -a\n\
                    output m = mod(t, 0) + a\noutput p = mod(t, z) + a\noutput q = 0 * a\n";
        let m = crate::model::Model::parse("m.vpm", text).unwrap();
        let p = ModelPrograms::new(&m);
        let (mut regs, mut out) = (Vec::new(), vec![0.0; 3]);
        p.outputs.run(1.0, &[0.5], &[0.0], &[], &mut regs, &mut out);
        assert!(out[0].is_nan() && out[1].is_nan(), "{out:?}");
        assert_eq!(out[2], 0.0);
    }

    #[test]
    fn divisions_by_parameters_become_multiplications_by_reciprocals() {
        let text = "param v = 30\nparam k = 0.5\nstate a, b\n\
                    d/dt(a) = -k * a / v + b / a\nd/dt(b) = a / 3 - b / 4 + a / (1e-300 * 1e-10)\n\
                    output c = a / v\na(0) = 1 / v\n";
        // A subnormal divisor, folded from a product (a literal must be a normal number).
        let tiny = 1e-300 * 1e-10;
        assert!(tiny > 0.0 && tiny < f64::MIN_POSITIVE);
        let m = crate::model::Model::parse("r.vpm", text).unwrap();
        let p = ModelPrograms::new(&m);
        let divisions = |prog: &Program| -> Vec<(Op, Op)> {
            let at = |r: Reg| prog.instrs[r as usize];
            prog.instrs
                .iter()
                .filter_map(|op| match *op {
                    Op::Div(a, b) => Some((at(a), at(b))),
                    _ => None,
                })
                .collect()
        };
        // In the right-hand side, 1/v (a value of the parameters, computed once per subject),
        // b / a (a state) and a / tiny (whose reciprocal would overflow) stay divisions;
        // a / 3 and b / 4 become products with 1/3 and 1/4.
        let rhs = divisions(&p.rhs);
        assert_eq!(rhs.len(), 3, "{:?}", p.rhs.instrs);
        assert!(rhs.contains(&(Op::Const(1.0), Op::Param(0))));
        assert!(rhs.contains(&(Op::State(1), Op::State(0))));
        assert!(rhs.contains(&(Op::State(0), Op::Const(tiny))));
        assert!(p.rhs.instrs.contains(&Op::Const(1.0 / 3.0)));
        assert!(p.rhs.instrs.contains(&Op::Const(0.25)));
        // The output and its gradient: 1/v alone.
        assert_eq!(divisions(&p.outputs), [(Op::Const(1.0), Op::Param(0))]);
        assert_eq!(
            divisions(&p.output_jacobian),
            [(Op::Const(1.0), Op::Param(0))]
        );
        // At each evaluation: (−k)·a, its product with 1/v, b/a, their sum; a·(1/3), b·¼,
        // a/tiny, the difference and the sum (−k once per subject). The output: a·(1/v).
        assert_eq!(p.rhs.per_evaluation(), (9, 0));
        assert_eq!(p.outputs.per_evaluation(), (1, 0));
        // Initial values run once per subject: unchanged.
        assert_eq!(divisions(&p.init), [(Op::Const(1.0), Op::Param(0))]);
        // The programs compute what the model says, to the last bit or two.
        // (The second right-hand side overflows, as the division does.)
        let (y, q) = ([0.7, 1.3], [30.0, 0.5]);
        let mut out = [0.0; 2];
        let mut regs = Vec::new();
        p.rhs.run(0.0, &y, &q, &[], &mut regs, &mut out);
        let want = [
            -0.5 * 0.7 / 30.0 + 1.3 / 0.7,
            0.7 / 3.0 - 1.3 / 4.0 + 0.7 / tiny,
        ];
        for (o, w) in out.iter().zip(want) {
            assert!(
                *o == w || (o - w).abs() <= 4.0 * f64::EPSILON * w.abs(),
                "{o} {w}"
            );
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let cases = [
            "x * y + exp(-x) * sqrt(y)",
            "x ^ 3 / (1 + y ^ 2)",
            "log(x + y) - log10(x) * pow(y, x)",
            "abs(x - y) + min(x, y) * max(x, 2 * y)",
            "if(x > y, x * x, y / x) + (x < 1) * 5",
            "x ^ -2 + y ^ 0.5 + x ^ y",
            "sin(x * y) * cos(x) - cos(2 * y + sin(x))",
            "expit(x - 2 * y) * logit(y / (1 + y)) + pi * logit(expit(x))",
            "tanh(x - y) * atan(x * y) + erf(x - y) * erfc(y / x) + phi(x - 2 * y)",
            "floor(x) * tanh(y) + ceil(y) * atan(x) - erfc(-x * y)",
            "trunc(x - 2 * y) * y + mod(x * 7, y) + mod(-x, 0.37) * x",
        ];
        for text in cases {
            let mut e = parse_expr_str("d", text).unwrap();
            let src = crate::diag::SourceFile::new("d", text);
            crate::model::parse::resolve(&mut e, &src, &|n| match n {
                "x" => Some(Var::State(0)),
                "y" => Some(Var::State(1)),
                _ => None,
            })
            .unwrap();
            let mut b = Builder::new();
            let r = b.expr(&e, &[]);
            let mut res = vec![r];
            for j in 0..2 {
                let mut memo = HashMap::new();
                let dr = b.diff(r, Op::State(j), &mut memo);
                res.push(dr.unwrap_or_else(|| b.c(0.0)));
            }
            let p = b.finish(res);
            for (x, y) in [(0.7, 1.3), (2.1, 0.4), (1.9, 2.6)] {
                let mut out = [0.0; 3];
                let mut regs = Vec::new();
                p.run(0.0, &[x, y], &[], &[], &mut regs, &mut out);
                let f = |x: f64, y: f64| e.eval(&|v| if *v == Var::State(0) { x } else { y });
                assert!(
                    (out[0] - f(x, y)).abs() < 1e-12 * f(x, y).abs().max(1.0),
                    "{text}"
                );
                let h = 1e-6;
                let fdx = (f(x + h, y) - f(x - h, y)) / (2.0 * h);
                let fdy = (f(x, y + h) - f(x, y - h)) / (2.0 * h);
                assert!(
                    (out[1] - fdx).abs() < 1e-6 * fdx.abs().max(1.0),
                    "{text}: d/dx {} vs {fdx}",
                    out[1]
                );
                assert!(
                    (out[2] - fdy).abs() < 1e-6 * fdy.abs().max(1.0),
                    "{text}: d/dy {} vs {fdy}",
                    out[2]
                );
            }
        }
    }
}
