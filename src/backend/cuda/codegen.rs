//! Model programs → CUDA C device functions.
//!
//! The same lowered [`Program`]s as the WGSL generator, printed as one `const real rN = …;` per
//! instruction, where `real` is `float` or `double` (one template serves both precisions).
//! Numbers are re-printed from their parsed values; no text of a model file reaches a kernel.

use std::fmt::Write;

use crate::backend::Precision;
use crate::model::{ModelPrograms, Op, Program};

/// A C literal of type `real`.
pub fn literal(v: f64, p: Precision) -> String {
    match p {
        Precision::F32 => {
            let x = v as f32;
            if x.is_nan() {
                "__int_as_float(0x7fc00000)".into()
            } else if x.is_infinite() {
                if x > 0.0 {
                    "__int_as_float(0x7f800000)".into()
                } else {
                    "__int_as_float(0xff800000)".into()
                }
            } else {
                let s = format!("{x:?}");
                let s = if s.contains('.') || s.contains('e') {
                    s
                } else {
                    format!("{s}.0")
                };
                format!("{s}f")
            }
        }
        Precision::F64 => {
            if v.is_nan() {
                "__longlong_as_double(0x7ff8000000000000ULL)".into()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "__longlong_as_double(0x7ff0000000000000ULL)".into()
                } else {
                    "__longlong_as_double(0xfff0000000000000ULL)".into()
                }
            } else {
                let s = format!("{v:?}");
                if s.contains('.') || s.contains('e') {
                    s
                } else {
                    format!("{s}.0")
                }
            }
        }
    }
}

fn expr(op: &Op, p: Precision) -> String {
    let r = |x: u32| format!("r{x}");
    let b = |c: String| format!("(({c}) ? (real)1 : (real)0)");
    match *op {
        Op::Const(v) => literal(v, p),
        Op::Time => "t".into(),
        Op::State(i) => format!("y[{i}]"),
        Op::Param(i) => format!("q[{i}]"),
        Op::Slot(i) => format!("s[{i}]"),
        Op::Neg(a) => format!("-{}", r(a)),
        Op::Not(a) => b(format!("{} == (real)0", r(a))),
        Op::Add(a, c) => format!("{} + {}", r(a), r(c)),
        Op::Sub(a, c) => format!("{} - {}", r(a), r(c)),
        Op::Mul(a, c) => format!("{} * {}", r(a), r(c)),
        Op::Div(a, c) => format!("{} / {}", r(a), r(c)),
        Op::Pow(a, c) => format!("pow({}, {})", r(a), r(c)),
        Op::Powi(a, n) => {
            let prod = vec![r(a); n.unsigned_abs().max(1) as usize].join(" * ");
            match n {
                0 => "(real)1".into(),
                n if n > 0 => format!("({prod})"),
                _ => format!("(real)1 / ({prod})"),
            }
        }
        Op::Lt(a, c) => b(format!("{} < {}", r(a), r(c))),
        Op::Le(a, c) => b(format!("{} <= {}", r(a), r(c))),
        Op::Gt(a, c) => b(format!("{} > {}", r(a), r(c))),
        Op::Ge(a, c) => b(format!("{} >= {}", r(a), r(c))),
        Op::Eq(a, c) => b(format!("{} == {}", r(a), r(c))),
        Op::Ne(a, c) => b(format!("{} != {}", r(a), r(c))),
        Op::And(a, c) => b(format!("({} != (real)0) && ({} != (real)0)", r(a), r(c))),
        Op::Or(a, c) => b(format!("({} != (real)0) || ({} != (real)0)", r(a), r(c))),
        Op::Select(c, a, e) => format!("({} != (real)0) ? {} : {}", r(c), r(a), r(e)),
        Op::Exp(a) => format!("exp({})", r(a)),
        Op::Log(a) => format!("log({})", r(a)),
        Op::Log10(a) => format!("log10({})", r(a)),
        Op::Sqrt(a) => format!("sqrt({})", r(a)),
        Op::Abs(a) => format!("fabs({})", r(a)),
        Op::Min(a, c) => format!("fmin({}, {})", r(a), r(c)),
        Op::Max(a, c) => format!("fmax({}, {})", r(a), r(c)),
    }
}

/// `__device__ void NAME(real t, const real* y, const real* q, real* out)`.
pub fn function(name: &str, prog: &Program, p: Precision) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "__device__ __forceinline__ void {name}(real t, const real* __restrict__ y, const real* __restrict__ q, real* __restrict__ out) {{");
    let _ = writeln!(s, "    (void)t; (void)y; (void)q;");
    for (i, op) in prog.instrs.iter().enumerate() {
        let _ = writeln!(s, "    const real r{i} = {};", expr(op, p));
    }
    for (k, r) in prog.results.iter().enumerate() {
        let _ = writeln!(s, "    out[{k}] = r{r};");
    }
    s.push_str("}\n");
    s
}

/// Every model function, as for WGSL.
pub fn model_functions(m: &ModelPrograms, p: Precision) -> String {
    [
        function("model_rhs", &m.rhs, p),
        function("model_jac", &m.jacobian, p),
        function("model_dfdt", &m.dfdt, p),
        function("model_outputs", &m.outputs, p),
        function("model_output_jac", &m.output_jacobian, p),
        function("model_output_dfdt", &m.output_dfdt, p),
        function("model_init", &m.init, p),
        function("model_dosing", &m.dosing, p),
    ]
    .join("\n")
}
