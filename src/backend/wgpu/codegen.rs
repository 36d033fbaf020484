//! Model programs → WGSL functions.
//!
//! Every lowered [`Program`] of a model becomes one WGSL function whose body is one
//! `let rN: T = …;` per instruction. Numbers are re-printed from their parsed `f64` values and
//! names appear nowhere, so no text of a model file reaches a shader.

use std::fmt::Write;

use crate::backend::Precision;
use crate::model::{ModelPrograms, Op, Program};

/// The WGSL scalar type name.
pub fn scalar(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F64 => "f64",
    }
}

/// A WGSL literal for `v` in precision `p` (NaN and infinities through bit patterns).
pub fn literal(v: f64, p: Precision) -> String {
    let special = |bits: &str| match p {
        Precision::F32 => format!("bitcast<f32>({bits})"),
        Precision::F64 => format!("f64(bitcast<f32>({bits}))"),
    };
    if v.is_nan() {
        return special("0x7fc00000u");
    }
    let v32 = v as f32;
    if v.is_infinite() || (p == Precision::F32 && v32.is_infinite()) {
        return if v > 0.0 {
            special("0x7f800000u")
        } else {
            special("0xff800000u")
        };
    }
    let mut s = match p {
        Precision::F32 => format!("{v32:?}"),
        Precision::F64 => format!("{v:?}"),
    };
    if !s.contains('.') && !s.contains('e') {
        s.push_str(".0");
    }
    if !s.contains('.') {
        // 1e-5 → 1.0e-5: WGSL wants a digit sequence with a point before an exponent here.
        if let Some(i) = s.find('e') {
            s.insert_str(i, ".0");
        }
    }
    match p {
        Precision::F32 => format!("{s}f"),
        Precision::F64 => format!("{s}lf"),
    }
}

fn reg(r: u32) -> String {
    format!("r{r}")
}

/// One instruction's right-hand side.
fn expr(op: &Op, p: Precision) -> String {
    let t = scalar(p);
    let b = |x: String| format!("select({t}(0), {t}(1), {x})");
    let r = |x: u32| reg(x);
    match *op {
        Op::Const(v) => literal(v, p),
        Op::Time => "t".into(),
        Op::State(i) => format!("y[{i}]"),
        Op::Param(i) => format!("q[{i}]"),
        Op::Slot(i) => format!("s[{i}]"),
        Op::Neg(a) => format!("-{}", r(a)),
        Op::Not(a) => b(format!("{} == {t}(0)", r(a))),
        Op::Add(a, c) => format!("{} + {}", r(a), r(c)),
        Op::Sub(a, c) => format!("{} - {}", r(a), r(c)),
        Op::Mul(a, c) => format!("{} * {}", r(a), r(c)),
        Op::Div(a, c) => format!("{} / {}", r(a), r(c)),
        Op::Pow(a, c) => format!("pow({}, {})", r(a), r(c)),
        Op::Powi(a, n) => {
            let m = n.unsigned_abs().max(1);
            let prod = vec![r(a); m as usize].join(" * ");
            match n {
                0 => format!("{t}(1)"),
                n if n > 0 => format!("({prod})"),
                _ => format!("{t}(1) / ({prod})"),
            }
        }
        Op::Lt(a, c) => b(format!("{} < {}", r(a), r(c))),
        Op::Le(a, c) => b(format!("{} <= {}", r(a), r(c))),
        Op::Gt(a, c) => b(format!("{} > {}", r(a), r(c))),
        Op::Ge(a, c) => b(format!("{} >= {}", r(a), r(c))),
        Op::Eq(a, c) => b(format!("{} == {}", r(a), r(c))),
        Op::Ne(a, c) => b(format!("{} != {}", r(a), r(c))),
        Op::And(a, c) => b(format!("({} != {t}(0)) && ({} != {t}(0))", r(a), r(c))),
        Op::Or(a, c) => b(format!("({} != {t}(0)) || ({} != {t}(0))", r(a), r(c))),
        Op::Select(c, a, e) => format!("select({}, {}, {} != {t}(0))", r(e), r(a), r(c)),
        Op::Exp(a) => format!("exp({})", r(a)),
        Op::Log(a) => format!("log({})", r(a)),
        Op::Log10(a) => format!("log({}) * {}", r(a), literal(std::f64::consts::LOG10_E, p)),
        Op::Sqrt(a) => format!("sqrt({})", r(a)),
        Op::Abs(a) => format!("abs({})", r(a)),
        Op::Min(a, c) => format!("min({}, {})", r(a), r(c)),
        Op::Max(a, c) => format!("max({}, {})", r(a), r(c)),
    }
}

/// A WGSL function `fn NAME(t: T, y: array<T, ns>, q: array<T, np>) -> array<T, results>`.
/// Array sizes are integer literals, as in the kernels' declarations, so that the types match.
pub fn function(name: &str, prog: &Program, ns: usize, np: usize, p: Precision) -> String {
    let t = scalar(p);
    let nr = prog.results.len().max(1);
    let (ns, np) = (ns.max(1), np.max(1));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fn {name}(t: {t}, y: array<{t}, {ns}>, q: array<{t}, {np}>) -> array<{t}, {nr}> {{"
    );
    for (i, op) in prog.instrs.iter().enumerate() {
        let _ = writeln!(s, "    let r{i}: {t} = {};", expr(op, p));
    }
    let _ = writeln!(s, "    var out: array<{t}, {nr}>;");
    for (k, r) in prog.results.iter().enumerate() {
        let _ = writeln!(s, "    out[{k}] = r{r};");
    }
    // Unused arguments are fine in WGSL; keep every function's signature uniform.
    let _ = writeln!(s, "    return out;\n}}");
    s
}

/// Sizes a shader needs as constants.
pub fn sizes(m: &ModelPrograms) -> String {
    let ns = m.n_states.max(1);
    format!(
        "const NS: u32 = {}u;\nconst NP: u32 = {}u;\nconst NO: u32 = {}u;\n",
        ns,
        m.n_params.max(1),
        m.n_outputs.max(1)
    )
}

/// All model functions: `model_rhs`, `model_jac` (row-major), `model_dfdt`, `model_outputs`,
/// `model_output_jac`, `model_init`, `model_dosing` (lag, F, rate, dur per state).
pub fn model_functions(m: &ModelPrograms, p: Precision) -> String {
    let (ns, np) = (m.n_states, m.n_params);
    [
        function("model_rhs", &m.rhs, ns, np, p),
        function("model_jac", &m.jacobian, ns, np, p),
        function("model_dfdt", &m.dfdt, ns, np, p),
        function("model_outputs", &m.outputs, ns, np, p),
        function("model_output_jac", &m.output_jacobian, ns, np, p),
        function("model_output_dfdt", &m.output_dfdt, ns, np, p),
        function("model_init", &m.init, ns, np, p),
        function("model_dosing", &m.dosing, ns, np, p),
    ]
    .join("\n")
}

/// Fills `{{NAME}}` slots of a template; every slot must be filled and every value used.
pub fn fill(template: &str, slots: &[(&str, &str)]) -> Result<String, String> {
    let mut out = template.to_string();
    for (name, value) in slots {
        let key = format!("{{{{{name}}}}}");
        if !out.contains(&key) {
            return Err(format!("template has no slot {key}"));
        }
        out = out.replace(&key, value);
    }
    if let Some(i) = out.find("{{") {
        let end = out[i..].find("}}").map(|e| i + e + 2).unwrap_or(out.len());
        return Err(format!("unfilled template slot {}", &out[i..end]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_valid_wgsl_numbers() {
        assert_eq!(literal(1.0, Precision::F32), "1.0f");
        assert_eq!(literal(0.1, Precision::F64), "0.1lf");
        assert_eq!(literal(1e-5, Precision::F32), "1.0e-5f");
        assert_eq!(literal(1e300, Precision::F32), "bitcast<f32>(0x7f800000u)");
        assert!(literal(f64::NAN, Precision::F64).contains("0x7fc00000u"));
        assert_eq!(literal(-2.5, Precision::F32), "-2.5f");
    }

    #[test]
    fn templates_report_missing_and_unknown_slots() {
        assert_eq!(fill("a {{X}} b", &[("X", "1")]).unwrap(), "a 1 b");
        assert!(fill("a {{X}} {{Y}}", &[("X", "1")])
            .unwrap_err()
            .contains("{{Y}}"));
        assert!(fill("a", &[("X", "1")]).unwrap_err().contains("no slot"));
    }
}
