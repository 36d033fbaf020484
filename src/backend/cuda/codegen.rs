//! Model programs → CUDA C device functions.
//!
//! The same lowered [`Program`]s as the WGSL generator, printed as one `const real rN = …;` per
//! instruction, where `real` is `float` or `double` (one template serves both precisions).
//! Numbers are re-printed from their parsed values; no text of a model file reaches a kernel.
//!
//! What the right-hand side and the outputs compute from parameters and constants alone (a
//! model's rate constants, `(cl + q) / v1`) is computed once per subject, by `model_prepare`,
//! into the parameter array after the parameters (`q[NP + k]`), where those functions read it
//! ([`crate::backend::hoist`], which the WGSL generator shares).

use std::fmt::Write;

use crate::backend::hoist::{hoisted, ProgramHoist};
use crate::backend::Precision;
use crate::model::{ModelPrograms, Op, Program};

/// The C type that `real` stands for.
pub fn real_type(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "float",
        Precision::F64 => "double",
    }
}

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
    expr_named(op, p, &|x| format!("r{x}"))
}

/// [`expr`] with the operands named by `r`.
fn expr_named(op: &Op, p: Precision, r: &dyn Fn(u32) -> String) -> String {
    let b = |c: String| format!("(({c}) ? (real)1 : (real)0)");
    match *op {
        Op::Const(v) => literal(v, p),
        Op::Time => "t".into(),
        Op::State(i) => format!("y[{i}]"),
        Op::Param(i) => format!("q[{i}]"),
        // A switch's mode (`crate::model::switches`), kept after the prepared values in q.
        Op::Slot(i) => format!("q[MODE_BASE + {i}]"),
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
        // The kernels' own (kernels/sincos_f32.cu, kernels/sincos_f64.cu).
        Op::Sin(a) => format!("sin_r({})", r(a)),
        Op::Cos(a) => format!("cos_r({})", r(a)),
        // CUDA's math library (float overloads in f32 kernels).
        Op::Tanh(a) => format!("tanh({})", r(a)),
        Op::Atan(a) => format!("atan({})", r(a)),
        Op::Erf(a) => format!("erf({})", r(a)),
        Op::Erfc(a) => format!("erfc({})", r(a)),
        Op::Floor(a) => format!("floor({})", r(a)),
        Op::Ceil(a) => format!("ceil({})", r(a)),
    }
}

/// `__device__ void NAME(real t, const real* y, const real* q, real* out)`.
pub fn function(name: &str, prog: &Program, p: Precision) -> String {
    function_hoisted(name, prog, p, None)
}

/// [`function`] reading the values `hoist` names from `q` (register → index into `q`), and
/// leaving out the instructions only they read.
fn function_hoisted(
    name: &str,
    prog: &Program,
    p: Precision,
    hoist: Option<&ProgramHoist>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "__device__ __forceinline__ void {name}(real t, const real* __restrict__ y, const real* __restrict__ q, real* __restrict__ out) {{");
    let _ = writeln!(s, "    (void)t; (void)y; (void)q;");
    for (i, op) in prog.instrs.iter().enumerate() {
        if let Some(h) = hoist {
            if let Some(k) = h.read.get(&(i as u32)) {
                let _ = writeln!(s, "    const real r{i} = q[{k}];");
                continue;
            }
            if h.skip[i] {
                continue;
            }
        }
        let _ = writeln!(s, "    const real r{i} = {};", expr(op, p));
    }
    for (k, r) in prog.results.iter().enumerate() {
        let _ = writeln!(s, "    out[{k}] = r{r};");
    }
    s.push_str("}\n");
    s
}

/// The f32 kernels' sin and cos (`sin_r`, `cos_r`), which model code calls.
pub const SINCOS_F32_CU: &str = include_str!("../../../kernels/sincos_f32.cu");
/// The f64 kernels' sin and cos.
pub const SINCOS_F64_CU: &str = include_str!("../../../kernels/sincos_f64.cu");

/// Every model function, as for WGSL, and `model_prepare(real* q)`, which computes the values of
/// the right-hand side and the outputs that depend on parameters alone into `q[NP…]` (call it
/// whenever the parameters change; [`hoisted`] gives their number). They come after the
/// kernels' own sin and cos ([`SINCOS_F32_CU`], [`SINCOS_F64_CU`]).
pub fn model_functions(m: &ModelPrograms, p: Precision) -> String {
    let h = hoisted(m);
    let mut body = String::new();
    for line in &h.prepare {
        let name = |x: u32| line.name(x);
        let _ = writeln!(
            body,
            "    const real {} = {};",
            name(line.instr),
            expr_named(&line.op, p, &name)
        );
        if let Some(k) = line.store {
            let _ = writeln!(body, "    q[{k}] = {};", name(line.instr));
        }
    }
    let prepare = format!(
        "__device__ __forceinline__ void model_prepare(real* __restrict__ q) {{\n    (void)q;\n{body}}}\n"
    );
    let trig = match p {
        Precision::F32 => SINCOS_F32_CU,
        Precision::F64 => SINCOS_F64_CU,
    };
    [
        trig.to_string(),
        prepare,
        function_hoisted("model_rhs", &m.rhs, p, Some(&h.rhs)),
        function_hoisted("model_jac", &m.jacobian, p, Some(&h.jacobian)),
        function_hoisted("model_dfdt", &m.dfdt, p, Some(&h.dfdt)),
        function_hoisted("model_outputs", &m.outputs, p, Some(&h.outputs)),
        function_hoisted(
            "model_output_jac",
            &m.output_jacobian,
            p,
            Some(&h.output_jacobian),
        ),
        function_hoisted("model_output_dfdt", &m.output_dfdt, p, Some(&h.output_dfdt)),
        function("model_init", &m.init, p),
        function("model_dosing", &m.dosing, p),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{library, Model};

    fn programs(src: &str) -> ModelPrograms {
        ModelPrograms::new(&Model::parse("m.vpm", src).unwrap())
    }

    fn body<'a>(code: &'a str, name: &str) -> &'a str {
        let start = code.find(&format!("void {name}(")).unwrap();
        let end = start + code[start..].find("\n}\n").unwrap();
        &code[start..end]
    }

    #[test]
    fn what_depends_on_parameters_alone_is_computed_once_per_subject() {
        let lm = library::get("two_cmt_oral").unwrap();
        let m = programs(lm.source);
        let h = hoisted(&m);
        // -ka, k10 + q/v1 (k10 = cl/v1), q/v1 (read by two right-hand sides), q/v2, and 1/v1
        // (the output central / v1 is central * (1/v1), and 1/v1 is its gradient).
        assert_eq!(h.slots, 5, "{:?}", h.prepare);
        let code = model_functions(&m, Precision::F64);
        let rhs = body(&code, "model_rhs");
        assert!(!rhs.contains(" / "), "{rhs}");
        assert!(rhs.contains("q[5]") && rhs.contains("q[8]"), "{rhs}");
        let prepare = body(&code, "model_prepare");
        assert_eq!(prepare.matches(" / ").count(), 4, "{prepare}");
        // Each value is stored once, though two programs read it.
        assert_eq!(prepare.matches("q[9] =").count(), 1, "{prepare}");
        for f in ["model_outputs", "model_output_jac"] {
            let b = body(&code, f);
            assert!(!b.contains(" / ") && b.contains("q[9]"), "{b}");
        }
        // The Jacobian reads the values the right-hand side stored and stores none of its own.
        let jac = body(&code, "model_jac");
        assert!(!jac.contains(" / ") && jac.contains("q[6]"), "{jac}");
    }

    #[test]
    fn values_that_depend_on_time_or_states_are_not_hoisted() {
        let m = programs(
            "param k = 0.5\nparam v = 10\nstate a\nd/dt(a) = -k / v * a + exp(-t) * k\noutput c = a / v\n",
        );
        let h = hoisted(&m);
        // -k / v (or k / v) and 1/v (the output, a / v, is a * (1/v)): exp(-t) depends on
        // time, the products on the state.
        assert_eq!(h.slots, 2, "{:?}", h.prepare);
        let code = model_functions(&m, Precision::F32);
        assert!(body(&code, "model_rhs").contains("exp("));
        assert!(!body(&code, "model_prepare").contains("exp("));
        // Models without parameters get an empty model_prepare.
        let none = programs("state a\nd/dt(a) = -a\noutput c = a\n");
        assert_eq!(hoisted(&none).slots, 0);
        assert!(model_functions(&none, Precision::F32).contains("void model_prepare("));
    }
}
