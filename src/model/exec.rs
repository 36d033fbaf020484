//! Fast evaluation of a lowered [`Program`] on the CPU.
//!
//! A program's loads (time, states, parameters, slots) and constants are not executed: they
//! become places in one flat environment,
//! `[t | y | p | slots | constants | parameter-only results | other results]`, which the caller
//! fills (time and states per call, parameters once per subject, constants once). Only the
//! arithmetic remains, each instruction reading its operands straight from the environment and
//! appending its result; what depends on parameters and constants alone (a model's rate
//! constants, `cl / v1`) runs once per subject, in [`Exec::set_params`]. The operations are the
//! program's own, so results are bit for bit those of [`Program::run`].

use super::lower::{Op, Program};

#[cfg(feature = "jit")]
pub(crate) mod jit;

/// The kind of an executed instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Neg,
    Not,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Powi,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
    Select,
    Exp,
    Log,
    Log10,
    Sqrt,
    Abs,
    Min,
    Max,
    Sin,
    Cos,
    Tanh,
    Atan,
    Erf,
    Erfc,
    Floor,
    Ceil,
    /// Fused (see [`fuse`]): a·b + c.
    MulAdd,
    /// a·b − c.
    MulSub,
    /// c − a·b.
    NegMulAdd,
    /// a·b + c·d.
    MulMulAdd,
    /// a·b − c·d.
    MulMulSub,
}

/// One instruction: its operands are environment indices (`b` holds the exponent of `Powi`).
#[derive(Debug, Clone, Copy)]
struct Ins {
    code: Code,
    a: u32,
    b: u32,
    c: u32,
    d: u32,
}

impl Ins {
    /// The environment indices it reads.
    fn operands(&self) -> &'static [usize] {
        use Code::*;
        match self.code {
            Neg | Not | Powi | Exp | Log | Log10 | Sqrt | Abs | Sin | Cos | Tanh | Atan | Erf
            | Erfc | Floor | Ceil => &[0],
            Select | MulAdd | MulSub | NegMulAdd => &[0, 1, 2],
            MulMulAdd | MulMulSub => &[0, 1, 2, 3],
            _ => &[0, 1],
        }
    }

    fn operand_mut(&mut self, i: usize) -> &mut u32 {
        match i {
            0 => &mut self.a,
            1 => &mut self.b,
            2 => &mut self.c,
            _ => &mut self.d,
        }
    }

    fn operand(&self, i: usize) -> u32 {
        [self.a, self.b, self.c, self.d][i]
    }
}

/// The sizes of a program's inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inputs {
    pub states: usize,
    pub params: usize,
    pub slots: usize,
}

/// One program of several compiled together by [`Exec::parts`]: its executed instructions
/// and where its result lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    start: u32,
    end: u32,
    result: u32,
}

/// A program compiled for [`Exec::run`].
#[derive(Debug, Clone)]
pub struct Exec {
    /// Instructions of parameters and constants only, results from `pre_base` on.
    pre: Vec<Ins>,
    /// The others, results from `base` on.
    ins: Vec<Ins>,
    results: Vec<u32>,
    inputs: Inputs,
    consts: Vec<f64>,
    pre_base: usize,
    base: usize,
    /// The per-call instructions as native code, where they could be compiled.
    #[cfg(feature = "jit")]
    native: Option<std::sync::Arc<jit::Native>>,
}

fn b2f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// NaN-propagating min/max, as [`super::lower::apply`].
fn nan_or(x: f64, z: f64, f: fn(f64, f64) -> f64) -> f64 {
    if x.is_nan() || z.is_nan() {
        f64::NAN
    } else {
        f(x, z)
    }
}

/// Runs `ins`, the k-th writing `env[base + k]`.
#[inline]
fn step(ins: &[Ins], base: usize, env: &mut [f64]) {
    for (k, i) in ins.iter().enumerate() {
        let x = env[i.a as usize];
        let v = match i.code {
            Code::Add => x + env[i.b as usize],
            Code::Sub => x - env[i.b as usize],
            Code::Mul => x * env[i.b as usize],
            Code::Div => x / env[i.b as usize],
            Code::Neg => -x,
            Code::Not => b2f(x == 0.0),
            Code::Pow => x.powf(env[i.b as usize]),
            Code::Powi => x.powi(i.b as i32),
            Code::Lt => b2f(x < env[i.b as usize]),
            Code::Le => b2f(x <= env[i.b as usize]),
            Code::Gt => b2f(x > env[i.b as usize]),
            Code::Ge => b2f(x >= env[i.b as usize]),
            Code::Eq => b2f(x == env[i.b as usize]),
            Code::Ne => b2f(x != env[i.b as usize]),
            Code::And => b2f(x != 0.0 && env[i.b as usize] != 0.0),
            Code::Or => b2f(x != 0.0 || env[i.b as usize] != 0.0),
            Code::Select => {
                if x != 0.0 {
                    env[i.b as usize]
                } else {
                    env[i.c as usize]
                }
            }
            Code::Exp => x.exp(),
            Code::Log => x.ln(),
            Code::Log10 => x.log10(),
            Code::Sqrt => x.sqrt(),
            Code::Abs => x.abs(),
            Code::Sin => x.sin(),
            Code::Cos => x.cos(),
            Code::Tanh => x.tanh(),
            Code::Atan => x.atan(),
            Code::Erf => libm::erf(x),
            Code::Erfc => libm::erfc(x),
            Code::Floor => x.floor(),
            Code::Ceil => x.ceil(),
            Code::Min => nan_or(x, env[i.b as usize], f64::min),
            Code::Max => nan_or(x, env[i.b as usize], f64::max),
            Code::MulAdd => x * env[i.b as usize] + env[i.c as usize],
            Code::MulSub => x * env[i.b as usize] - env[i.c as usize],
            Code::NegMulAdd => env[i.c as usize] - x * env[i.b as usize],
            Code::MulMulAdd => x * env[i.b as usize] + env[i.c as usize] * env[i.d as usize],
            Code::MulMulSub => x * env[i.b as usize] - env[i.c as usize] * env[i.d as usize],
        };
        env[base + k] = v;
    }
}

/// `out[l] = f(operands at lane l)` for every lane.
#[inline(always)]
fn lanes<const N: usize>(out: &mut [f64], ops: [&[f64]; N], f: impl Fn([f64; N]) -> f64) {
    for (l, o) in out.iter_mut().enumerate() {
        *o = f(ops.map(|x| x[l]));
    }
}

/// [`step`] on an environment of `n` lanes (subjects), entry `i` of lane `l` at `i·n + l`:
/// each instruction runs over all lanes before the next, so it is dispatched once per
/// instruction instead of once per subject. The same operations, lane by lane.
fn step_lanes(ins: &[Ins], base: usize, env: &mut [f64], n: usize) {
    for (k, i) in ins.iter().enumerate() {
        let (src, rest) = env.split_at_mut((base + k) * n);
        let out = &mut rest[..n];
        let at = |j: u32| &src[j as usize * n..(j as usize + 1) * n];
        let a = at(i.a);
        match i.code {
            Code::Add => lanes(out, [a, at(i.b)], |[x, y]| x + y),
            Code::Sub => lanes(out, [a, at(i.b)], |[x, y]| x - y),
            Code::Mul => lanes(out, [a, at(i.b)], |[x, y]| x * y),
            Code::Div => lanes(out, [a, at(i.b)], |[x, y]| x / y),
            Code::Neg => lanes(out, [a], |[x]| -x),
            Code::Not => lanes(out, [a], |[x]| b2f(x == 0.0)),
            Code::Pow => lanes(out, [a, at(i.b)], |[x, y]| x.powf(y)),
            Code::Powi => lanes(out, [a], |[x]| x.powi(i.b as i32)),
            Code::Lt => lanes(out, [a, at(i.b)], |[x, y]| b2f(x < y)),
            Code::Le => lanes(out, [a, at(i.b)], |[x, y]| b2f(x <= y)),
            Code::Gt => lanes(out, [a, at(i.b)], |[x, y]| b2f(x > y)),
            Code::Ge => lanes(out, [a, at(i.b)], |[x, y]| b2f(x >= y)),
            Code::Eq => lanes(out, [a, at(i.b)], |[x, y]| b2f(x == y)),
            Code::Ne => lanes(out, [a, at(i.b)], |[x, y]| b2f(x != y)),
            Code::And => lanes(out, [a, at(i.b)], |[x, y]| b2f(x != 0.0 && y != 0.0)),
            Code::Or => lanes(out, [a, at(i.b)], |[x, y]| b2f(x != 0.0 || y != 0.0)),
            Code::Select => lanes(
                out,
                [a, at(i.b), at(i.c)],
                |[x, y, z]| {
                    if x != 0.0 {
                        y
                    } else {
                        z
                    }
                },
            ),
            Code::Exp => lanes(out, [a], |[x]| x.exp()),
            Code::Log => lanes(out, [a], |[x]| x.ln()),
            Code::Log10 => lanes(out, [a], |[x]| x.log10()),
            Code::Sqrt => lanes(out, [a], |[x]| x.sqrt()),
            Code::Abs => lanes(out, [a], |[x]| x.abs()),
            Code::Sin => lanes(out, [a], |[x]| x.sin()),
            Code::Cos => lanes(out, [a], |[x]| x.cos()),
            Code::Tanh => lanes(out, [a], |[x]| x.tanh()),
            Code::Atan => lanes(out, [a], |[x]| x.atan()),
            Code::Erf => lanes(out, [a], |[x]| libm::erf(x)),
            Code::Erfc => lanes(out, [a], |[x]| libm::erfc(x)),
            Code::Floor => lanes(out, [a], |[x]| x.floor()),
            Code::Ceil => lanes(out, [a], |[x]| x.ceil()),
            Code::Min => lanes(out, [a, at(i.b)], |[x, y]| nan_or(x, y, f64::min)),
            Code::Max => lanes(out, [a, at(i.b)], |[x, y]| nan_or(x, y, f64::max)),
            Code::MulAdd => lanes(out, [a, at(i.b), at(i.c)], |[x, y, z]| x * y + z),
            Code::MulSub => lanes(out, [a, at(i.b), at(i.c)], |[x, y, z]| x * y - z),
            Code::NegMulAdd => lanes(out, [a, at(i.b), at(i.c)], |[x, y, z]| z - x * y),
            Code::MulMulAdd => lanes(out, [a, at(i.b), at(i.c), at(i.d)], |[x, y, z, w]| {
                x * y + z * w
            }),
            Code::MulMulSub => lanes(out, [a, at(i.b), at(i.c), at(i.d)], |[x, y, z, w]| {
                x * y - z * w
            }),
        }
    }
}

/// Folds each product whose only reader is a sum or difference into it (`x·y ± z`,
/// `z − x·y`, `x·y ± z·w`), so that fewer instructions are dispatched; the arithmetic is the
/// same, operation for operation (no fused multiply-add), so results are bit for bit those of
/// the unfused program. `ins[k]` writes `env[base + k]`; returns the instructions, renumbered
/// in the same scheme, and `results` renumbered.
fn fuse(ins: &[Ins], base: usize, results: &[u32]) -> (Vec<Ins>, Vec<u32>) {
    // How many instructions and results read each instruction's value.
    let mut uses = vec![0u32; ins.len()];
    let read = ins
        .iter()
        .flat_map(|i| i.operands().iter().map(|&o| i.operand(o)))
        .chain(results.iter().copied());
    for slot in read {
        if let Some(k) = (slot as usize).checked_sub(base) {
            uses[k] += 1;
        }
    }
    // A product that this one instruction alone reads.
    let product = |slot: u32, uses: &[u32]| -> Option<(u32, u32)> {
        let k = (slot as usize).checked_sub(base)?;
        (ins[k].code == Code::Mul && uses[k] == 1).then_some((ins[k].a, ins[k].b))
    };
    let mut folded = vec![false; ins.len()];
    let mut out: Vec<Ins> = ins.to_vec();
    for (k, i) in ins.iter().enumerate() {
        let (p, q) = match i.code {
            Code::Add | Code::Sub => (product(i.a, &uses), product(i.b, &uses)),
            _ => continue,
        };
        let add = i.code == Code::Add;
        let fused = match (p, q) {
            (Some((a, b)), Some((c, d))) => Ins {
                code: if add {
                    Code::MulMulAdd
                } else {
                    Code::MulMulSub
                },
                a,
                b,
                c,
                d,
            },
            // z + x·y = x·y + z exactly (floating-point addition commutes).
            (Some((a, b)), None) => Ins {
                code: if add { Code::MulAdd } else { Code::MulSub },
                a,
                b,
                c: i.b,
                d: 0,
            },
            (None, Some((a, b))) => Ins {
                code: if add { Code::MulAdd } else { Code::NegMulAdd },
                a,
                b,
                c: i.a,
                d: 0,
            },
            (None, None) => continue,
        };
        for (slot, hit) in [(i.a, p.is_some()), (i.b, q.is_some())] {
            if hit {
                folded[slot as usize - base] = true;
            }
        }
        out[k] = fused;
    }
    // Drop the folded products and renumber what follows them.
    let mut at = vec![u32::MAX; ins.len()];
    let mut kept = Vec::with_capacity(ins.len());
    let map = |slot: u32, at: &[u32]| -> u32 {
        match (slot as usize).checked_sub(base) {
            Some(k) => at[k],
            None => slot,
        }
    };
    for (k, mut i) in out.into_iter().enumerate() {
        if folded[k] {
            continue;
        }
        for &o in i.operands() {
            let v = map(i.operand(o), &at);
            *i.operand_mut(o) = v;
        }
        at[k] = (base + kept.len()) as u32;
        kept.push(i);
    }
    let results = results.iter().map(|&r| map(r, &at)).collect();
    (kept, results)
}

impl Exec {
    /// Compiles `p`, whose loads are within `inputs`.
    ///
    /// # Panics
    /// If an instruction loads a state, parameter or slot beyond `inputs` (a lowering bug: the
    /// model's programs load only what the model declares).
    pub fn new(p: &Program, inputs: Inputs) -> Exec {
        let mut e = Exec::interpreted(p, inputs);
        if native_code() {
            e.compile();
        }
        e
    }

    /// [`Exec::new`] without native code: every call interpreted.
    pub fn interpreted(p: &Program, inputs: Inputs) -> Exec {
        let mut e = Exec::build(p, inputs).0;
        let (ins, results) = fuse(&e.ins, e.base, &e.results);
        (e.ins, e.results) = (ins, results);
        e
    }

    /// Whether calls run native code (see [`native_code`]).
    pub fn is_native(&self) -> bool {
        #[cfg(feature = "jit")]
        return self.native.is_some();
        #[cfg(not(feature = "jit"))]
        false
    }

    /// Compiles the per-call instructions to native code; where that fails, says why once per
    /// process and keeps interpreting (the same results, slower).
    #[cfg(feature = "jit")]
    fn compile(&mut self) {
        match jit::compile(self) {
            Ok(n) => self.native = Some(std::sync::Arc::new(n)),
            Err(why) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    eprintln!("vpop: model programs interpreted on the CPU (no native code: {why})")
                });
            }
        }
    }
    #[cfg(not(feature = "jit"))]
    fn compile(&mut self) {}

    /// Compiles single-result programs that read only slots and constants into one
    /// environment, each to be run on its own with [`Exec::run_part`] (in any order, as often as
    /// needed, after the slots it reads were written). A population's covariate expressions
    /// are compiled this way: each reads the covariates drawn before it.
    ///
    /// # Panics
    /// As [`Exec::new`], or if a program has other than one result.
    pub fn parts(programs: &[&Program], inputs: Inputs) -> (Exec, Vec<Part>) {
        let mut all = Program::default();
        let mut offsets = Vec::with_capacity(programs.len());
        for p in programs {
            assert_eq!(p.results.len(), 1, "a part has one result");
            offsets.push(all.instrs.len());
            all = all.concat(p);
        }
        let (exec, ins_before, at) = Exec::build(&all, inputs);
        let parts = programs
            .iter()
            .zip(offsets)
            .map(|(p, off)| Part {
                start: ins_before[off],
                end: ins_before[off + p.instrs.len()],
                result: at[off + p.results[0] as usize],
            })
            .collect();
        (exec, parts)
    }

    /// The value of a part that is a constant (no instructions, its result a constant).
    pub fn constant(&self, part: Part) -> Option<f64> {
        let c0 = self.pre_base - self.consts.len();
        let r = part.result as usize;
        (part.start == part.end && (c0..self.pre_base).contains(&r)).then(|| self.consts[r - c0])
    }

    /// Runs one part (see [`Exec::parts`]) on `env` and returns its result.
    #[inline]
    pub fn run_part(&self, env: &mut [f64], part: Part) -> f64 {
        let (s, e) = (part.start as usize, part.end as usize);
        step(&self.ins[s..e], self.base + s, &mut env[..self.base + e]);
        env[part.result as usize]
    }

    /// A fresh environment of `n` lanes (see [`step_lanes`]) for a program without
    /// parameters (a population's): constants in place and what depends on them alone
    /// evaluated, the rest zero.
    pub fn env_lanes(&self, n: usize) -> Vec<f64> {
        assert_eq!(
            self.inputs.params, 0,
            "lanes are for programs without parameters"
        );
        let mut e = vec![0.0; (self.base + self.ins.len()) * n];
        let c0 = self.pre_base - self.consts.len();
        for (j, &c) in self.consts.iter().enumerate() {
            e[(c0 + j) * n..(c0 + j + 1) * n].fill(c);
        }
        step_lanes(&self.pre, self.pre_base, &mut e[..self.base * n], n);
        e
    }

    /// [`Exec::run_part`] on every lane of `env` (from [`Exec::env_lanes`]); returns the
    /// result's lanes.
    pub fn run_part_lanes<'e>(&self, env: &'e mut [f64], n: usize, part: Part) -> &'e [f64] {
        let (s, e) = (part.start as usize, part.end as usize);
        step_lanes(
            &self.ins[s..e],
            self.base + s,
            &mut env[..(self.base + e) * n],
            n,
        );
        let r = part.result as usize;
        &env[r * n..(r + 1) * n]
    }

    /// Runs the instructions on every lane of `env` (from [`Exec::env_lanes`], slots filled
    /// in); the results are then at [`Exec::result_lanes`].
    pub fn run_lanes(&self, env: &mut [f64], n: usize) {
        step_lanes(
            &self.ins,
            self.base,
            &mut env[..(self.base + self.ins.len()) * n],
            n,
        );
    }

    /// Result `j`'s lanes after [`Exec::run_lanes`].
    pub fn result_lanes<'e>(&self, env: &'e [f64], n: usize, j: usize) -> &'e [f64] {
        let r = self.results[j] as usize;
        &env[r * n..(r + 1) * n]
    }

    /// Where slot `j` of lane 0 is in an environment of `n` lanes (lane `l` follows at `+ l`).
    pub fn slot_lanes(&self, n: usize, j: usize) -> usize {
        (self.slots().start + j) * n
    }

    /// The compiled program; per instruction of `p` (and one past the last) how many executed
    /// instructions precede it; per instruction, where its value lives in the environment.
    fn build(p: &Program, inputs: Inputs) -> (Exec, Vec<u32>, Vec<u32>) {
        let y0 = 1;
        let p0 = y0 + inputs.states;
        let s0 = p0 + inputs.params;
        let c0 = s0 + inputs.slots;
        let n_consts = p
            .instrs
            .iter()
            .filter(|o| matches!(o, Op::Const(_)))
            .count();
        // Which instructions depend on parameters and constants only.
        let fixed = p.on_parameters_alone();
        let is_load = |op: &Op| {
            matches!(
                op,
                Op::Const(_) | Op::Time | Op::State(_) | Op::Param(_) | Op::Slot(_)
            )
        };
        let n_pre = p
            .instrs
            .iter()
            .zip(&fixed)
            .filter(|(op, f)| **f && !is_load(op))
            .count();
        let pre_base = c0 + n_consts;
        let base = pre_base + n_pre;
        let mut consts = Vec::with_capacity(n_consts);
        let mut at: Vec<usize> = Vec::with_capacity(p.instrs.len());
        let (mut pre, mut ins) = (Vec::new(), Vec::new());
        let check = |i: u32, n: usize, what: &str| {
            assert!((i as usize) < n, "a program loads {what} {i} of {n}");
            i as usize
        };
        let mut ins_before = Vec::with_capacity(p.instrs.len() + 1);
        for (op, f) in p.instrs.iter().zip(&fixed) {
            ins_before.push(ins.len() as u32);
            let g = |r: u32| at[r as usize] as u32;
            let (code, a, b, c) = match *op {
                Op::Const(v) => {
                    at.push(c0 + consts.len());
                    consts.push(v);
                    continue;
                }
                Op::Time => {
                    at.push(0);
                    continue;
                }
                Op::State(i) => {
                    at.push(y0 + check(i, inputs.states, "state"));
                    continue;
                }
                Op::Param(i) => {
                    at.push(p0 + check(i, inputs.params, "parameter"));
                    continue;
                }
                Op::Slot(i) => {
                    at.push(s0 + check(i, inputs.slots, "slot"));
                    continue;
                }
                Op::Neg(a) => (Code::Neg, g(a), 0, 0),
                Op::Not(a) => (Code::Not, g(a), 0, 0),
                Op::Add(a, b) => (Code::Add, g(a), g(b), 0),
                Op::Sub(a, b) => (Code::Sub, g(a), g(b), 0),
                Op::Mul(a, b) => (Code::Mul, g(a), g(b), 0),
                Op::Div(a, b) => (Code::Div, g(a), g(b), 0),
                Op::Pow(a, b) => (Code::Pow, g(a), g(b), 0),
                Op::Powi(a, n) => (Code::Powi, g(a), n as u32, 0),
                Op::Lt(a, b) => (Code::Lt, g(a), g(b), 0),
                Op::Le(a, b) => (Code::Le, g(a), g(b), 0),
                Op::Gt(a, b) => (Code::Gt, g(a), g(b), 0),
                Op::Ge(a, b) => (Code::Ge, g(a), g(b), 0),
                Op::Eq(a, b) => (Code::Eq, g(a), g(b), 0),
                Op::Ne(a, b) => (Code::Ne, g(a), g(b), 0),
                Op::And(a, b) => (Code::And, g(a), g(b), 0),
                Op::Or(a, b) => (Code::Or, g(a), g(b), 0),
                Op::Select(c, a, b) => (Code::Select, g(c), g(a), g(b)),
                Op::Exp(a) => (Code::Exp, g(a), 0, 0),
                Op::Log(a) => (Code::Log, g(a), 0, 0),
                Op::Log10(a) => (Code::Log10, g(a), 0, 0),
                Op::Sqrt(a) => (Code::Sqrt, g(a), 0, 0),
                Op::Abs(a) => (Code::Abs, g(a), 0, 0),
                Op::Sin(a) => (Code::Sin, g(a), 0, 0),
                Op::Cos(a) => (Code::Cos, g(a), 0, 0),
                Op::Tanh(a) => (Code::Tanh, g(a), 0, 0),
                Op::Atan(a) => (Code::Atan, g(a), 0, 0),
                Op::Erf(a) => (Code::Erf, g(a), 0, 0),
                Op::Erfc(a) => (Code::Erfc, g(a), 0, 0),
                Op::Floor(a) => (Code::Floor, g(a), 0, 0),
                Op::Ceil(a) => (Code::Ceil, g(a), 0, 0),
                Op::Min(a, b) => (Code::Min, g(a), g(b), 0),
                Op::Max(a, b) => (Code::Max, g(a), g(b), 0),
            };
            let i = Ins {
                code,
                a,
                b,
                c,
                d: 0,
            };
            if *f {
                at.push(pre_base + pre.len());
                pre.push(i);
            } else {
                at.push(base + ins.len());
                ins.push(i);
            }
        }
        ins_before.push(ins.len() as u32);
        let exec = Exec {
            results: p.results.iter().map(|r| at[*r as usize] as u32).collect(),
            pre,
            ins,
            inputs,
            consts,
            pre_base,
            base,
            #[cfg(feature = "jit")]
            native: None,
        };
        (exec, ins_before, at.into_iter().map(|a| a as u32).collect())
    }

    /// A fresh environment: constants in place, the rest zero; give it parameters with
    /// [`Exec::set_params`] (also when the program has none) before running it.
    pub fn env(&self) -> Vec<f64> {
        let mut e = vec![0.0; self.base + self.ins.len()];
        let c0 = self.pre_base - self.consts.len();
        e[c0..self.pre_base].copy_from_slice(&self.consts);
        e
    }

    /// Writes the parameters into `env` and evaluates what depends on them alone.
    pub fn set_params(&self, env: &mut [f64], params: &[f64]) {
        env[self.params()].copy_from_slice(&params[..self.inputs.params]);
        step(&self.pre, self.pre_base, &mut env[..self.base]);
    }

    /// Where the states go in the environment (time is at 0).
    pub fn states(&self) -> std::ops::Range<usize> {
        1..1 + self.inputs.states
    }

    /// Where the parameters go.
    pub fn params(&self) -> std::ops::Range<usize> {
        let p0 = 1 + self.inputs.states;
        p0..p0 + self.inputs.params
    }

    /// Where the slots go.
    pub fn slots(&self) -> std::ops::Range<usize> {
        let s0 = 1 + self.inputs.states + self.inputs.params;
        s0..s0 + self.inputs.slots
    }

    /// Runs the instructions on `env` (from [`Exec::env`], parameters set, time, states and
    /// slots filled in) and writes the results to `out`.
    #[inline]
    pub fn run(&self, env: &mut [f64], out: &mut [f64]) {
        #[cfg(feature = "jit")]
        if let Some(n) = &self.native {
            if env.len() >= self.base && out.len() >= self.results.len() {
                let e = env.as_ptr();
                // SAFETY: as in `Exec::call`; the states are `env[1..1 + states]`, within
                // `env[..base]`.
                unsafe { (n.f)(e, env[0], e.add(1), out.as_mut_ptr()) };
                return;
            }
        }
        self.run_interpreted(env, out);
    }

    /// [`Exec::run`] by the interpreter.
    #[inline]
    fn run_interpreted(&self, env: &mut [f64], out: &mut [f64]) {
        let env = &mut env[..self.base + self.ins.len()];
        step(&self.ins, self.base, env);
        for (o, r) in out.iter_mut().zip(&self.results) {
            *o = env[*r as usize];
        }
    }

    /// Sets time and states, runs, writes the results.
    #[inline]
    pub fn eval(&self, env: &mut [f64], t: f64, y: &[f64], out: &mut [f64]) {
        #[cfg(feature = "jit")]
        if let Some(n) = &self.native {
            return self.call(n, env, t, y, out);
        }
        env[0] = t;
        let n = self.inputs.states;
        crate::solver::copy_short(&mut env[1..1 + n], &y[..n]);
        self.run(env, out);
    }

    /// Runs the native code on `env` (parameters set), time `t` and states `y`, results into
    /// `out`; where `out` is shorter than the results, the interpreter runs instead (it writes
    /// as many as `out` holds).
    #[cfg(feature = "jit")]
    #[inline]
    fn call(&self, n: &jit::Native, env: &mut [f64], t: f64, y: &[f64], out: &mut [f64]) {
        let fits = env.len() >= self.base && y.len() >= self.inputs.states;
        if !fits || out.len() < self.results.len() {
            return self.interpret(env, t, y, out);
        }
        // SAFETY: the code reads `env[..base]`, `y[..states]` and writes
        // `out[..results.len()]`, all checked above; `jit::compile` made it from this `Exec`.
        unsafe { (n.f)(env.as_ptr(), t, y.as_ptr(), out.as_mut_ptr()) }
    }

    /// [`Exec::eval`] by the interpreter, where the native code cannot run on these slices;
    /// kept out of line so that the native call stays small.
    #[cfg(feature = "jit")]
    #[cold]
    #[inline(never)]
    fn interpret(&self, env: &mut [f64], t: f64, y: &[f64], out: &mut [f64]) {
        env[0] = t;
        let k = self.inputs.states;
        crate::solver::copy_short(&mut env[1..1 + k], &y[..k]);
        self.run_interpreted(env, out);
    }
}

/// Whether [`Exec::new`] compiles programs to native code: yes, unless built without the
/// `jit` feature or `VPOP_CPU_JIT=0` is set (the interpreter then runs every call, with the same
/// results).
pub fn native_code() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cfg!(feature = "jit")
        && *ON.get_or_init(|| std::env::var(CPU_JIT_ENV).map_or(true, |v| v.trim() != "0"))
}

/// The variable that turns native code off (`0`).
pub const CPU_JIT_ENV: &str = "VPOP_CPU_JIT";

/// Refuses a value of `VPOP_CPU_JIT` other than `0`, `1` or empty, which would otherwise mean
/// native code without a word.
pub fn check_cpu_jit_env() -> Result<(), String> {
    match std::env::var(CPU_JIT_ENV) {
        Ok(v) if !["", "0", "1"].contains(&v.trim()) => Err(format!(
            "{CPU_JIT_ENV}={v:?}: expected 0 (the model's programs interpreted) or 1 (compiled to \
             native code, the default)"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelPrograms;

    fn program(instrs: Vec<Op>) -> Program {
        let results = vec![instrs.len() as u32 - 1];
        Program {
            instrs,
            results,
            origins: Vec::new(),
        }
    }

    /// Programs compiled together as parts, run one at a time as their slots are written,
    /// give what each gives alone in the reference interpreter.
    #[test]
    fn parts_run_one_at_a_time_match_the_interpreter() {
        use Op::*;
        let progs = [
            // A constant, a constant expression, then expressions of earlier slots.
            program(vec![Const(35.0)]),
            program(vec![Const(2.0), Const(3.0), Pow(0, 1)]),
            program(vec![
                Slot(0),
                Const(1.0),
                Eq(0, 1),
                Const(161.3),
                Const(175.3),
                Select(2, 3, 4),
            ]),
            program(vec![
                Slot(1),
                Slot(0),
                Const(100.0),
                Div(1, 2),
                Powi(3, 2),
                Mul(0, 4),
            ]),
            program(vec![
                Slot(2),
                Slot(1),
                Mul(0, 1),
                Const(3600.0),
                Div(2, 3),
                Sqrt(4),
            ]),
        ];
        let refs: Vec<&Program> = progs.iter().collect();
        let inputs = Inputs {
            slots: 4,
            ..Default::default()
        };
        let (e, parts) = Exec::parts(&refs, inputs);
        // Only a bare constant is known without running: a constant expression is computed
        // (once, with the parameters), slot reads per run.
        let constants: Vec<Option<f64>> = parts.iter().map(|p| e.constant(*p)).collect();
        assert_eq!(constants, [Some(35.0), None, None, None, None]);
        let mut env = e.env();
        e.set_params(&mut env, &[]);
        let mut regs = Vec::new();
        for subject in 0..5 {
            let mut slots = [0.0; 4];
            slots[0] = (subject % 2) as f64;
            slots[1] = 150.0 + subject as f64 * 7.3;
            for (k, (p, part)) in progs.iter().zip(&parts).enumerate() {
                if k >= 3 {
                    // The slot this program reads last was "drawn" just now.
                    slots[k - 1] = 60.0 + subject as f64 * 1.7 + k as f64;
                }
                env[e.slots()].copy_from_slice(&slots);
                let mut want = [0.0];
                p.eval_slots(&slots, &mut regs, &mut want);
                let got = e.run_part(&mut env, *part);
                assert_eq!(
                    got.to_bits(),
                    want[0].to_bits(),
                    "program {k}, subject {subject}"
                );
            }
        }
    }

    /// Every operation, the fused ones included, run over lanes gives bit for bit what it
    /// gives run one subject at a time and in the reference interpreter, at values that
    /// exercise its branches (zeros, negatives, NaN, infinity).
    #[test]
    fn lanes_match_one_subject_at_a_time() {
        use Op::*;
        let mut instrs = vec![Slot(0), Slot(1), Slot(2), Const(0.5)];
        let (x, y, z, h) = (0, 1, 2, 3);
        let ops = [
            Neg(x),
            Not(y),
            Add(x, y),
            Sub(x, z),
            Div(y, z),
            Pow(y, h),
            Powi(x, 3),
            Lt(x, y),
            Le(x, y),
            Gt(y, z),
            Ge(y, z),
            Eq(x, y),
            Ne(x, z),
            And(x, y),
            Or(y, z),
            Select(x, y, z),
            Exp(x),
            Log(y),
            Log10(z),
            Sqrt(y),
            Abs(z),
            Min(x, z),
            Max(y, z),
            Sin(x),
            Cos(z),
            Tanh(x),
            Atan(z),
            Erf(y),
            Erfc(x),
            Floor(z),
            Ceil(x),
        ];
        instrs.extend(ops);
        let mut results: Vec<u32> = (4..instrs.len() as u32).collect();
        // Products read by one sum or difference only: fused.
        let mut push = |op: Op, result: bool| {
            instrs.push(op);
            if result {
                results.push(instrs.len() as u32 - 1);
            }
            instrs.len() as u32 - 1
        };
        let (p1, p2) = (push(Mul(x, y), false), push(Mul(z, h), false));
        push(Add(p1, z), true);
        let p3 = push(Mul(x, z), false);
        push(Sub(p3, y), true);
        let p4 = push(Mul(y, y), false);
        push(Sub(h, p4), true);
        let p5 = push(Mul(x, x), false);
        push(Add(p2, p5), true);
        let (p6, p7) = (push(Mul(x, h), false), push(Mul(y, z), false));
        push(Sub(p6, p7), true);
        let prog = Program {
            instrs,
            results,
            origins: Vec::new(),
        };
        let inputs = Inputs {
            slots: 3,
            ..Default::default()
        };
        let e = Exec::new(&prog, inputs);
        let codes: Vec<Code> = e.ins.iter().map(|i| i.code).collect();
        for fused in [
            Code::MulAdd,
            Code::MulSub,
            Code::NegMulAdd,
            Code::MulMulAdd,
            Code::MulMulSub,
        ] {
            assert!(codes.contains(&fused), "{fused:?} not in {codes:?}");
        }
        const N: usize = 37;
        let special = [0.0, -0.0, -1.5, 2.0, f64::NAN, f64::INFINITY, 1e-300, 3.25];
        let lane = |l: usize| -> [f64; 3] {
            std::array::from_fn(|j| special[(l * (j + 2) + j) % special.len()] * (1 + l % 3) as f64)
        };
        let mut env = e.env_lanes(N);
        for l in 0..N {
            for (j, v) in lane(l).iter().enumerate() {
                env[e.slot_lanes(N, j) + l] = *v;
            }
        }
        e.run_lanes(&mut env, N);
        let mut one = e.env();
        e.set_params(&mut one, &[]);
        let mut regs = Vec::new();
        let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for l in 0..N {
            let slots = lane(l);
            one[e.slots()].copy_from_slice(&slots);
            let mut want = vec![0.0; prog.results.len()];
            e.run(&mut one, &mut want);
            let mut reference = vec![0.0; prog.results.len()];
            prog.eval_slots(&slots, &mut regs, &mut reference);
            for (j, (w, r)) in want.iter().zip(&reference).enumerate() {
                let got = e.result_lanes(&env, N, j)[l];
                assert!(
                    same(got, *w) && same(*w, *r),
                    "lane {l}, result {j}: {got} {w} {r}"
                );
            }
        }
    }

    /// A library model, its programs and their inputs.
    fn compiled(
        lm: &crate::model::library::LibraryModel,
    ) -> (crate::model::Model, ModelPrograms, Inputs) {
        let m = crate::model::Model::parse(lm.name, lm.source).unwrap();
        let p = ModelPrograms::new(&m);
        let inputs = Inputs {
            states: p.n_states,
            params: p.n_params,
            slots: 0,
        };
        (m, p, inputs)
    }

    /// Products read by one sum or difference are folded into it: two_cmt_oral's right-hand
    /// side and output run in 6 instructions instead of 9 (its `ka·depot − k·central` and
    /// `q/v1·central − q/v2·periph` each become one).
    #[test]
    fn products_fold_into_sums() {
        let lm = crate::model::library::get("two_cmt_oral").unwrap();
        let (_, p, inputs) = compiled(lm);
        let both = p.rhs.concat(&p.outputs);
        let unfused = Exec::build(&both, inputs).0;
        let fused = Exec::new(&both, inputs);
        let codes = |e: &Exec| e.ins.iter().map(|i| i.code).collect::<Vec<_>>();
        assert_eq!(
            (unfused.ins.len(), fused.ins.len()),
            (9, 6),
            "{:?}",
            codes(&fused)
        );
        assert!(codes(&fused).contains(&Code::MulMulSub));
    }

    /// Every library model's programs give bit for bit what the reference interpreter gives,
    /// at states and parameters that exercise their branches (the fused instructions
    /// included).
    #[test]
    fn matches_the_interpreter_bit_for_bit() {
        for lm in crate::model::library::MODELS {
            let name = lm.name;
            let (m, p, inputs) = compiled(lm);
            let both = p.rhs.concat(&p.outputs);
            for prog in [
                &both,
                &p.rhs,
                &p.jacobian,
                &p.dfdt,
                &p.outputs,
                &p.output_jacobian,
                &p.output_dfdt,
                &p.init,
                &p.dosing,
            ] {
                let e = Exec::new(prog, inputs);
                assert_eq!(e.is_native(), native_code(), "{name}");
                let mut env = e.env();
                let mut regs = Vec::new();
                for k in 0..20 {
                    let y: Vec<f64> = (0..p.n_states)
                        .map(|i| ((i * 7 + k * 3) % 11) as f64 * 0.37 - 0.8)
                        .collect();
                    let par: Vec<f64> = m
                        .params
                        .iter()
                        .enumerate()
                        .map(|(i, q)| q.default * (1.0 + 0.1 * ((i + k) % 5) as f64))
                        .collect();
                    let t = k as f64 * 0.9;
                    let mut want = vec![0.0; prog.results.len()];
                    prog.run(t, &y, &par, &[], &mut regs, &mut want);
                    let mut got = vec![0.0; prog.results.len()];
                    e.set_params(&mut env, &par);
                    e.eval(&mut env, t, &y, &mut got);
                    // Through `run` (time and states in the environment) too.
                    let mut by_run = vec![0.0; prog.results.len()];
                    env[0] = t;
                    env[e.states()].copy_from_slice(&y);
                    e.run(&mut env, &mut by_run);
                    for (g, w) in got.iter().chain(&by_run).zip(want.iter().cycle()) {
                        assert!(
                            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                            "{name}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// Native code computes what the interpreter computes, bit for bit, for every operation
    /// (the fused ones included) at zeros of both signs, infinities, NaN, integers, tiny and
    /// huge values; results that are inputs or constants too. Checked only where the host has
    /// native code (`is_native`), which every host CI and the developers use does.
    #[test]
    fn native_code_matches_the_interpreter_on_every_operation() {
        use Op::*;
        let mut ins = vec![Time, State(0), State(1), Param(0), Const(0.75)];
        let (t, a, b, p, c) = (0, 1, 2, 3, 4);
        let mut results = vec![t, a, p, c];
        let push = |ins: &mut Vec<Op>, op: Op| {
            ins.push(op);
            ins.len() as u32 - 1
        };
        for (x, z) in [(a, b), (a, p), (t, b), (b, c)] {
            for op in [
                Add(x, z),
                Sub(x, z),
                Mul(x, z),
                Div(x, z),
                Pow(x, z),
                Lt(x, z),
                Le(x, z),
                Gt(x, z),
                Ge(x, z),
                Eq(x, z),
                Ne(x, z),
                And(x, z),
                Or(x, z),
                Min(x, z),
                Max(x, z),
                Select(x, z, p),
            ] {
                results.push(push(&mut ins, op));
            }
        }
        for x in [a, b] {
            for op in [
                Neg(x),
                Not(x),
                Exp(x),
                Log(x),
                Log10(x),
                Sqrt(x),
                Abs(x),
                Sin(x),
                Cos(x),
                Tanh(x),
                Atan(x),
                Erf(x),
                Erfc(x),
                Floor(x),
                Ceil(x),
                Powi(x, -3),
                Powi(x, -1),
                Powi(x, 0),
                Powi(x, 2),
                Powi(x, 7),
            ] {
                results.push(push(&mut ins, op));
            }
        }
        // Products read once by a sum or difference: fused.
        let m1 = push(&mut ins, Mul(a, b));
        results.push(push(&mut ins, Add(m1, p)));
        let m2 = push(&mut ins, Mul(a, p));
        results.push(push(&mut ins, Sub(m2, b)));
        let m3 = push(&mut ins, Mul(b, t));
        results.push(push(&mut ins, Sub(c, m3)));
        let (m4, m5) = (push(&mut ins, Mul(a, b)), push(&mut ins, Mul(p, t)));
        results.push(push(&mut ins, Add(m4, m5)));
        let (m6, m7) = (push(&mut ins, Mul(a, t)), push(&mut ins, Mul(b, p)));
        results.push(push(&mut ins, Sub(m6, m7)));
        // A value of the parameter alone, read by the per-call instructions.
        let q = push(&mut ins, Exp(p));
        results.push(push(&mut ins, Mul(q, a)));
        let prog = Program {
            instrs: ins,
            results,
            origins: Vec::new(),
        };
        let inputs = Inputs {
            states: 2,
            params: 1,
            slots: 0,
        };
        let native = Exec::new(&prog, inputs);
        let plain = Exec::interpreted(&prog, inputs);
        assert!(!plain.is_native());
        if !native.is_native() {
            eprintln!("SKIPPED: no native code on this host");
            return;
        }
        assert!(native.ins.iter().any(|i| i.code == Code::MulMulSub));
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            3.0,
            -2.5,
            1e-310,
            -7.3e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        let (mut en, mut ep) = (native.env(), plain.env());
        let n = prog.results.len();
        let (mut got, mut want) = (vec![0.0; n], vec![0.0; n]);
        let mut checked = 0;
        for &pv in &values {
            native.set_params(&mut en, &[pv]);
            plain.set_params(&mut ep, &[pv]);
            for &tv in &values {
                for &y0 in &values {
                    for &y1 in &values {
                        native.eval(&mut en, tv, &[y0, y1], &mut got);
                        plain.eval(&mut ep, tv, &[y0, y1], &mut want);
                        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                                "result {k} at t {tv} y ({y0}, {y1}) p {pv}: {g} vs {w}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, values.len().pow(4) * n);
    }
}
