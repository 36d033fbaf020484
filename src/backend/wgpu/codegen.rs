//! Model programs → WGSL functions.
//!
//! Every lowered [`Program`] of a model becomes one WGSL function whose body is one
//! `let rN: T = …;` per instruction. Numbers are re-printed from their parsed `f64` values and
//! names appear nowhere, so no text of a model file reaches a shader.
//!
//! In f64 the exponential, logarithms and general powers call the kernels' own `exp64`,
//! `log64`, `log10_64` and `pow64` (`shaders/real_f64.wgsl`, see [`precision_helpers`]): the
//! WGSL builtins lower to Vulkan instructions that take 32-bit floats only. `sin`, `cos`,
//! `tanh`, `atan`, `erf` and `erfc` call the kernels' own `sin_r`, `cos_r`, `tanh_r`, `atan_r`,
//! `erf_r` and `erfc_r` in both precisions (Vulkan bounds the f32 builtins' error only
//! loosely, and has no erf); `floor` and `ceil` call `floor_r` and `ceil_r`.

use std::fmt::Write;

use crate::backend::hoist::{hoisted, q_len, tagged_program, Hoisted, ProgramHoist};
use crate::backend::Precision;
use crate::model::{ModelPrograms, Op, Program};

/// The WGSL scalar type name.
pub fn scalar(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::F64 => "f64",
    }
}

/// The scalar helpers every shader of precision `p` includes: `finite`, `is_nan`, `nan` and
/// `pow_r`, `sin_r`, `cos_r`, `tanh_r`, `atan_r`, `erf_r`, `erfc_r`, `floor_r` and `ceil_r`,
/// and in f64 the exp, log, log10 and pow that f64 model functions call.
pub fn precision_helpers(p: Precision) -> &'static str {
    match p {
        Precision::F32 => REAL_F32_WGSL,
        Precision::F64 => REAL_F64_WGSL,
    }
}

/// The f32 helpers.
pub const REAL_F32_WGSL: &str = include_str!("../../../shaders/real_f32.wgsl");
/// The f64 helpers, with f64 exp, log, log10, pow, sin, cos, tanh, atan, erf and erfc.
pub const REAL_F64_WGSL: &str = include_str!("../../../shaders/real_f64.wgsl");

/// Replaces the type word `real` of a template by the scalar type of `p`, outside `//`
/// comments.
pub fn retype(template: &str, p: Precision) -> String {
    let t = scalar(p);
    let mut out = String::with_capacity(template.len());
    for line in template.split_inclusive('\n') {
        let (code, comment) = match line.find("//") {
            Some(i) => line.split_at(i),
            None => (line, ""),
        };
        let b = code.as_bytes();
        let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut i = 0;
        while i < code.len() {
            if code[i..].starts_with("real")
                && (i == 0 || !is_ident(b[i - 1]))
                && b.get(i + 4).is_none_or(|c| !is_ident(*c))
            {
                out.push_str(t);
                i += 4;
            } else {
                let c = code[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
        out.push_str(comment);
    }
    out
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
    expr_named(op, p, &reg)
}

/// [`expr`] with the operands named by `r`.
fn expr_named(op: &Op, p: Precision, r: &dyn Fn(u32) -> String) -> String {
    let t = scalar(p);
    let b = |x: String| format!("select({t}(0), {t}(1), {x})");
    let f64 = p == Precision::F64;
    match *op {
        Op::Const(v) => literal(v, p),
        Op::Time => "t".into(),
        Op::State(i) => format!("y[{i}]"),
        Op::Param(i) => format!("q[{i}]"),
        // A switch's mode (`crate::model::switches`), kept after the prepared values in q.
        Op::Slot(i) => format!("q[MODE_BASE + {i}]"),
        Op::Neg(a) => format!("-{}", r(a)),
        Op::Not(a) => b(format!("{} == {t}(0)", r(a))),
        Op::Add(a, c) => format!("{} + {}", r(a), r(c)),
        Op::Sub(a, c) => format!("{} - {}", r(a), r(c)),
        Op::Mul(a, c) => format!("{} * {}", r(a), r(c)),
        Op::Div(a, c) => format!("{} / {}", r(a), r(c)),
        Op::Pow(a, c) if f64 => format!("pow64({}, {})", r(a), r(c)),
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
        Op::Exp(a) if f64 => format!("exp64({})", r(a)),
        Op::Exp(a) => format!("exp({})", r(a)),
        Op::Log(a) if f64 => format!("log64({})", r(a)),
        Op::Log(a) => format!("log({})", r(a)),
        Op::Log10(a) if f64 => format!("log10_64({})", r(a)),
        Op::Log10(a) => format!("log({}) * {}", r(a), literal(std::f64::consts::LOG10_E, p)),
        Op::Sqrt(a) => format!("sqrt({})", r(a)),
        Op::Abs(a) => format!("abs({})", r(a)),
        Op::Min(a, c) => format!("min({}, {})", r(a), r(c)),
        Op::Max(a, c) => format!("max({}, {})", r(a), r(c)),
        Op::Sin(a) => format!("sin_r({})", r(a)),
        Op::Cos(a) => format!("cos_r({})", r(a)),
        Op::Tanh(a) => format!("tanh_r({})", r(a)),
        Op::Atan(a) => format!("atan_r({})", r(a)),
        Op::Erf(a) => format!("erf_r({})", r(a)),
        Op::Erfc(a) => format!("erfc_r({})", r(a)),
        Op::Floor(a) => format!("floor_r({})", r(a)),
        Op::Ceil(a) => format!("ceil_r({})", r(a)),
    }
}

/// A WGSL function `fn NAME(t: T, y: array<T, ns>, q: array<T, nq>) -> array<T, results>`,
/// where `q` holds the parameters and, after them, the values `model_prepare` computes
/// ([`hoist`](crate::backend::hoist)). Array sizes are integer literals, as in the kernels'
/// declarations, so that the types match.
pub fn function(name: &str, prog: &Program, ns: usize, nq: usize, p: Precision) -> String {
    function_hoisted(name, prog, ns, nq, p, None)
}

/// [`function`] reading the values `hoist` names from `q` (register → index into `q`), and
/// leaving out the instructions only they read.
fn function_hoisted(
    name: &str,
    prog: &Program,
    ns: usize,
    nq: usize,
    p: Precision,
    hoist: Option<&ProgramHoist>,
) -> String {
    let t = scalar(p);
    let nr = prog.results.len().max(1);
    let (ns, nq) = (ns.max(1), nq.max(1));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fn {name}(t: {t}, y: array<{t}, {ns}>, q: array<{t}, {nq}>) -> array<{t}, {nr}> {{"
    );
    for (i, op) in prog.instrs.iter().enumerate() {
        if let Some(h) = hoist {
            if let Some(k) = h.read.get(&(i as u32)) {
                let _ = writeln!(s, "    let r{i}: {t} = q[{k}];");
                continue;
            }
            if h.skip[i] {
                continue;
            }
        }
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

/// `fn model_prepare(p: array<T, nq>) -> array<T, nq>`: the parameters `p` with, after them,
/// the values of the model's functions that depend on parameters and constants alone. One
/// line per value, `let {tag}_{instr}: T = …;` (see [`generated_line`]).
fn prepare_function(h: &Hoisted, nq: usize, p: Precision) -> String {
    let t = scalar(p);
    let nq = nq.max(1);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fn model_prepare(p: array<{t}, {nq}>) -> array<{t}, {nq}> {{\n    var q = p;"
    );
    for line in &h.prepare {
        // `f_12`, not `f12`: a name must not be a type's (`f32`, `f64`, `f16`), which the
        // type annotations of the lines below would then mean.
        let name = |x: u32| format!("{}_{x}", line.tag);
        let _ = writeln!(
            s,
            "    let {}: {t} = {};",
            name(line.instr),
            expr_named(&line.op, p, &name)
        );
        if let Some(k) = line.store {
            let _ = writeln!(s, "    q[{k}] = {};", name(line.instr));
        }
    }
    let _ = writeln!(s, "    return q;\n}}");
    s
}

/// Sizes a shader needs as constants.
pub fn sizes(m: &ModelPrograms) -> String {
    let ns = m.n_states.max(1);
    format!(
        "const NS: u32 = {}u;\nconst NP: u32 = {}u;\nconst NQ: u32 = {}u;\nconst NO: u32 = {}u;\n",
        ns,
        m.n_params.max(1),
        q_len(m).max(1),
        m.n_outputs.max(1)
    )
}

/// The model functions: WGSL name, program, and what the program computes.
fn programs(m: &ModelPrograms) -> [(&'static str, &Program, &'static str); 8] {
    [
        ("model_rhs", &m.rhs, "right-hand side"),
        ("model_jac", &m.jacobian, "Jacobian"),
        ("model_dfdt", &m.dfdt, "time derivative"),
        ("model_outputs", &m.outputs, "value"),
        ("model_output_jac", &m.output_jacobian, "gradient"),
        ("model_output_dfdt", &m.output_dfdt, "time derivative"),
        ("model_init", &m.init, "value"),
        ("model_dosing", &m.dosing, "value"),
    ]
}

/// All model functions: `model_prepare` (what the others read from `q` after the parameters;
/// call it whenever the parameters change), `model_rhs`, `model_jac` (row-major),
/// `model_dfdt`, `model_outputs`, `model_output_jac`, `model_output_dfdt`, `model_init`,
/// `model_dosing` (lag, F, rate, dur per state).
pub fn model_functions(m: &ModelPrograms, p: Precision) -> String {
    model_functions_q(m, p, 0)
}

/// [`model_functions`] with `extra` values in `q` after the prepared ones (the switches'
/// modes and whether they are held, `crate::model::switches`), which every function's `q`
/// then has room for.
pub fn model_functions_q(m: &ModelPrograms, p: Precision, extra: usize) -> String {
    let h = hoisted(m);
    let (ns, nq) = (m.n_states, m.n_params + h.slots + extra);
    let reads = |name: &str| match name {
        "model_rhs" => Some(&h.rhs),
        "model_jac" => Some(&h.jacobian),
        "model_dfdt" => Some(&h.dfdt),
        "model_outputs" => Some(&h.outputs),
        "model_output_jac" => Some(&h.output_jacobian),
        "model_output_dfdt" => Some(&h.output_dfdt),
        _ => None,
    };
    std::iter::once(prepare_function(&h, nq, p))
        .chain(
            programs(m)
                .iter()
                .map(|(name, prog, _)| function_hoisted(name, prog, ns, nq, p, reads(name))),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line of a shader that belongs to a generated model function, traced back to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedLine {
    /// The WGSL function, e.g. `model_jac`.
    pub function: &'static str,
    /// The line, trimmed.
    pub text: String,
    /// The instruction the line computes or returns.
    pub instr: Option<usize>,
    /// The model statement that instruction comes from.
    pub statement: Option<crate::model::lower::Statement>,
    /// What the function computes of the statement ("right-hand side", "Jacobian", …).
    pub part: &'static str,
}

impl GeneratedLine {
    /// `file:line:col: …` at the model statement where there is one, else a message naming the
    /// generated function.
    pub fn message(&self, what_failed: &str) -> String {
        match &self.statement {
            Some(s) => s
                .error(format!(
                    "{what_failed} in the code generated for `{}` (its {}, in {}: `{}`)",
                    s.what, self.part, self.function, self.text
                ))
                .to_string(),
            None => format!(
                "{what_failed} in the generated model function {} (`{}`)",
                self.function, self.text
            ),
        }
    }
}

/// The generated model function line at byte `offset` of a shader `src` built from `m`'s
/// [`model_functions`], or `None` when the offset is elsewhere. One line per instruction
/// (`let rN: T = …;`) and per result (`out[k] = rN;`), so the line names the instruction.
pub fn generated_line(src: &str, offset: usize, m: &ModelPrograms) -> Option<GeneratedLine> {
    let offset = offset.min(src.len());
    let start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let text = src[start..end].trim();
    // The enclosing function: the last `fn ` at the start of a line before the offset.
    let head = src[..start]
        .rmatch_indices("\nfn ")
        .next()
        .map(|(i, _)| i + 1)
        .or_else(|| src.starts_with("fn ").then_some(0))?;
    let name_end = src[head + 3..].find('(')? + head + 3;
    let name = &src[head + 3..name_end];
    // The function must still be open at the offset.
    if src[head..start].lines().any(|l| l == "}") {
        return None;
    }
    let reg = |s: &str| -> Option<usize> {
        let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    let statement_of = |prog: &Program, instr: Option<usize>| {
        instr
            .and_then(|i| prog.origin(i))
            .and_then(|o| m.statements.get(o as usize).cloned())
    };
    if name == "model_prepare" {
        // `let {tag}_{instr}: T = …;` and `q[k] = {tag}_{instr};` (a one-letter tag).
        let named = text
            .strip_prefix("let ")
            .or_else(|| text.split("= ").nth(1).filter(|_| text.starts_with("q[")))?;
        let tag = named.get(..1)?;
        let (prog, part) = tagged_program(m, tag)?;
        let instr = named.get(2..).and_then(reg);
        return Some(GeneratedLine {
            function: "model_prepare",
            text: text.to_string(),
            instr,
            statement: statement_of(prog, instr),
            part,
        });
    }
    let (function, prog, part) = programs(m).into_iter().find(|(n, _, _)| *n == name)?;
    let instr = if let Some(rest) = text.strip_prefix("let r") {
        reg(rest)
    } else if text.starts_with("out[") {
        text.split("= r").nth(1).and_then(reg)
    } else {
        None
    };
    Some(GeneratedLine {
        function,
        text: text.to_string(),
        instr,
        statement: statement_of(prog, instr),
        part,
    })
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

/// Loops with more passes than this are left as loops.
pub const UNROLL_MAX_PASSES: u32 = 64;

/// Unrolls the loops of a kernel's source that run over one of `sizes`: every loop
/// `for (var j = 0u; j < N; j++) { … }` (on one line, or with its closing brace alone on a line
/// at the loop's indentation) whose bound `N` is one of `sizes`, declared at module scope as
/// `const N: u32 = Ku;` with K ≤ [`UNROLL_MAX_PASSES`], and whose body neither leaves the
/// loop (`break`, `continue`), assigns `j` nor calls one of the kernel's functions (unless `N`
/// is one of `copies`: there a copy of each call per pass is wanted), becomes K
/// blocks `{ const j = 0u; … }`, `{ const j = 1u; … }`, …; loops nested in such a body are
/// unrolled first, and a loop that still holds a loop after that is kept. Every other line is
/// kept as it is, so a line of generated model code stays findable ([`generated_line`]).
///
/// Why: a kernel's per-subject arrays (the state, the stage vectors) are indexed by these
/// loops' counters. Indexed by constants, a compiler can keep each element in a register;
/// indexed in a loop it does not unroll, the array is kept in memory and every access is a
/// load or a store (on llvmpipe a gather or scatter across the SIMD lanes). llvmpipe unrolls
/// loops of a few passes but not of 20: a 23-state model's Tsit5 kernel ran 2.95× faster
/// unrolled (docs/gpu.md, "Unrolled loops").
pub fn unroll_loops(src: &str, sizes: &[&str], copies: &[&str]) -> String {
    let consts: Vec<(&str, u32)> = src
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("const ")?;
            let (name, value) = rest.split_once(": u32 = ")?;
            let value = value.strip_suffix("u;")?.parse().ok()?;
            Some((name, value))
        })
        .filter(|(n, _)| sizes.contains(n))
        .collect();
    // The kernel's own functions: a body that calls one is kept as a loop (each copy would
    // inline it again).
    let fns: Vec<&str> = src
        .lines()
        .filter_map(|l| {
            l.strip_prefix("fn ")?
                .split_once('(')
                .map(|(n, _)| n.trim())
        })
        .collect();
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut out = String::with_capacity(src.len() * 2);
    unroll_lines(
        &lines,
        &Sizes {
            consts,
            fns,
            copies,
        },
        &mut out,
    );
    out
}

struct Sizes<'a> {
    consts: Vec<(&'a str, u32)>,
    fns: Vec<&'a str>,
    copies: &'a [&'a str],
}

impl Sizes<'_> {
    /// Whether `body`, in a loop over `bound`, calls one of the kernel's functions (and
    /// `bound` is not one of the `copies`).
    fn calls(&self, bound: &str, body: &str) -> bool {
        !self.copies.contains(&bound)
            && self
                .fns
                .iter()
                .any(|f| uses(body, f).any(|after| after.trim_start().starts_with('(')))
    }
}

/// What follows each use of the identifier `name` in `code` (not a part of a longer
/// identifier, nor a member `x.name`).
fn uses<'a>(code: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(name).filter_map(move |(i, _)| {
        let after = &code[i + name.len()..];
        let before = code[..i].chars().next_back();
        (!before.is_some_and(|c| ident(c) || c == '.') && !after.starts_with(ident))
            .then_some(after)
    })
}

/// A loop header `for (var V = 0u; V < N; V++) {` with N a size of `consts`: (indentation,
/// V, N, passes, what follows the opening brace).
fn loop_header<'a>(
    line: &'a str,
    consts: &[(&'a str, u32)],
) -> Option<(&'a str, &'a str, &'a str, u32, &'a str)> {
    let code = line.trim_end_matches(['\n', '\r']);
    let indent = &code[..code.len() - code.trim_start().len()];
    let rest = code.trim_start().strip_prefix("for (var ")?;
    let (var, rest) = rest.split_once(" = 0u; ")?;
    if var.is_empty() || !var.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return None;
    }
    let rest = rest.strip_prefix(var)?.strip_prefix(" < ")?;
    let (bound, rest) = rest.split_once("; ")?;
    let (bound, passes) = *consts.iter().find(|(c, _)| *c == bound)?;
    let rest = rest.strip_prefix(var)?.strip_prefix("++) {")?;
    (passes <= UNROLL_MAX_PASSES).then_some((indent, var, bound, passes, rest.trim()))
}

/// Whether a loop body may be unrolled: it does not leave the loop and does not assign its
/// counter `var`.
fn unrollable(body: &str, var: &str) -> bool {
    if uses(body, "break").next().is_some() || uses(body, "continue").next().is_some() {
        return false;
    }
    // `var` followed by an assignment or an increment.
    !uses(body, var).any(|after| {
        let after = after.trim_start();
        [
            "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "<<=", ">>=",
        ]
        .iter()
        .any(|op| after.starts_with(op))
            || (after.starts_with('=') && !after.starts_with("=="))
    })
}

fn unroll_lines(lines: &[&str], sizes: &Sizes, out: &mut String) {
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some((indent, var, bound, passes, rest)) = loop_header(line, &sizes.consts) else {
            out.push_str(line);
            continue;
        };
        if !rest.is_empty() {
            // One line: `… { body }`.
            let body = rest.strip_suffix('}').map(str::trim);
            match body {
                Some(body)
                    if body.matches('{').count() == body.matches('}').count()
                        && unrollable(body, var)
                        && !sizes.calls(bound, body) =>
                {
                    for k in 0..passes {
                        out.push_str(&format!("{indent}{{ const {var} = {k}u; {body} }}\n"));
                    }
                }
                _ => out.push_str(line),
            }
            continue;
        }
        // Several lines, up to the closing brace at the loop's indentation.
        let close = format!("{indent}}}");
        let Some(end) = lines[i..]
            .iter()
            .position(|l| l.trim_end_matches(['\n', '\r']) == close)
            .map(|e| i + e)
        else {
            out.push_str(line);
            continue;
        };
        let body = &lines[i..end];
        let mut inner = String::new();
        unroll_lines(body, sizes, &mut inner);
        i = end + 1;
        // A loop that still holds a loop stays one: copies of a loop (the elimination of an
        // LU factorisation, over rows after the pivot) would only make the kernel longer.
        let text = body.concat();
        // A body whose braces do not pair up did not end at that line: keep the loop.
        if text.matches('{').count() != text.matches('}').count()
            || !unrollable(&text, var)
            || sizes.calls(bound, &text)
            || inner.lines().any(|l| l.trim_start().starts_with("for ("))
        {
            out.push_str(line);
            out.push_str(&inner);
            out.push_str(lines[end]);
            continue;
        }
        for k in 0..passes {
            out.push_str(&format!("{indent}{{ const {var} = {k}u;\n"));
            out.push_str(&inner);
            out.push_str(&format!("{indent}}}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_over_sizes_are_unrolled() {
        let src = "const NS: u32 = 2u;\nconst NO: u32 = 0u;\nconst BIG: u32 = 65u;\n\
                   fn f() {\n    for (var j = 0u; j < NS; j++) { y[j] = x[j]; }\n\
                   \x20   for (var k = 0u; k < NS; k++) {\n        let a = x[k];\n\
                   \x20       for (var j = 0u; j < NS; j++) { m[k * NS + j] = a; }\n    }\n\
                   \x20   for (var j = 0u; j < NO; j++) { y[j] = 0.0; }\n\
                   \x20   for (var j = 0u; j < BIG; j++) { y[j] = 0.0; }\n\
                   \x20   for (var j = 0u; j < NS; j++) { if (x[j] > 0.0) { break; } }\n\
                   \x20   for (var j = 0u; j < NS; j++) { j += 1u; }\n\
                   \x20   for (var j = 0u; j < n; j++) { y[j] = 1.0; }\n\
                   \x20   for (var j = 1u; j < NS; j++) { y[j] = 1.0; }\n\
                   \x20   for (var j = 0u; j < NS; j++) { y[j] = f (x[j]); }\n\
                   \x20   for (var j = 0u; j < NS; j++) {\n        if (x[j] > 0.0) { continue; }\n    }\n\
                   \x20   for (var k = 0u; k < NS; k++) {\n        for (var j = 0u; j < NS; j++) { y[j] = 0.0; }\n\
                   \x20       for (var i = k + 1u; i < NS; i++) { y[i] = 1.0; }\n    }\n}\n";
        let want = "const NS: u32 = 2u;\nconst NO: u32 = 0u;\nconst BIG: u32 = 65u;\n\
                    fn f() {\n    { const j = 0u; y[j] = x[j]; }\n    { const j = 1u; y[j] = x[j]; }\n\
                    \x20   { const k = 0u;\n        let a = x[k];\n\
                    \x20       { const j = 0u; m[k * NS + j] = a; }\n\
                    \x20       { const j = 1u; m[k * NS + j] = a; }\n    }\n\
                    \x20   { const k = 1u;\n        let a = x[k];\n\
                    \x20       { const j = 0u; m[k * NS + j] = a; }\n\
                    \x20       { const j = 1u; m[k * NS + j] = a; }\n    }\n\
                    \x20   for (var j = 0u; j < BIG; j++) { y[j] = 0.0; }\n\
                    \x20   for (var j = 0u; j < NS; j++) { if (x[j] > 0.0) { break; } }\n\
                    \x20   for (var j = 0u; j < NS; j++) { j += 1u; }\n\
                    \x20   for (var j = 0u; j < n; j++) { y[j] = 1.0; }\n\
                    \x20   for (var j = 1u; j < NS; j++) { y[j] = 1.0; }\n\
                    \x20   for (var j = 0u; j < NS; j++) { y[j] = f (x[j]); }\n\
                    \x20   for (var j = 0u; j < NS; j++) {\n        if (x[j] > 0.0) { continue; }\n    }\n\
                    \x20   for (var k = 0u; k < NS; k++) {\n\
                    \x20       { const j = 0u; y[j] = 0.0; }\n        { const j = 1u; y[j] = 0.0; }\n\
                    \x20       for (var i = k + 1u; i < NS; i++) { y[i] = 1.0; }\n    }\n}\n";
        assert_eq!(unroll_loops(src, &["NS", "NO", "BIG"], &[]), want);
        // A closing brace at the loop's indentation that is not the loop's own, and a
        // multi-line body that calls a kernel function.
        let odd =
            "const NS: u32 = 2u;\nfn g() {\n    if (a) {\n    for (var j = 0u; j < NS; j++) {\n\
                   \x20       y[j] = 0.0;\n        }\n    }\n    for (var j = 0u; j < NS; j++) {\n\
                   \x20       y[j] = g(j);\n    }\n}\n";
        assert_eq!(unroll_loops(odd, &["NS"], &[]), odd);
        // A loop over one of the `copies` is unrolled even where it calls a kernel function.
        let calls = "const NM: u32 = 2u;\nfn g() {\n    for (var m = 0u; m < NM; m++) {\n\
                     \x20       v[m] = g(m);\n    }\n}\n";
        assert_eq!(unroll_loops(calls, &["NM"], &[]), calls);
        assert_eq!(
            unroll_loops(calls, &["NM"], &["NM"]),
            "const NM: u32 = 2u;\nfn g() {\n    { const m = 0u;\n        v[m] = g(m);\n    }\n\
             \x20   { const m = 1u;\n        v[m] = g(m);\n    }\n}\n"
        );
        // A counter read but not assigned; `jj` and `.j` are other names.
        assert!(unrollable("y[j] = x[j] + jj; s.j = 1; t = j == 1u;", "j"));
        assert!(!unrollable("y[j] = 1.0; j = 2u;", "j"));
        assert!(!unrollable("j++;", "j"));
        assert!(unrollable("breakfast[j] = 1.0;", "j"));
    }

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
    fn retyping_replaces_the_word_outside_comments() {
        assert_eq!(
            retype(
                "var x: real = 0.0; // real\nfn f(a: array<real, 2>) -> real {} unreal real_x",
                Precision::F64
            ),
            "var x: f64 = 0.0; // real\nfn f(a: array<f64, 2>) -> f64 {} unreal real_x"
        );
        assert_eq!(retype("real", Precision::F32), "f32");
    }

    #[test]
    fn f64_functions_call_the_kernel_math() {
        use crate::model::{Model, ModelPrograms};
        let m = Model::parse(
            "m.vpm",
            "param a = 2\nstate x\nd/dt(x) = -exp(a) * x + log(a) + log10(x + 1) + pow(x + 1, a)\noutput y = x\n",
        )
        .unwrap();
        let progs = ModelPrograms::new(&m);
        let f = function("model_rhs", &progs.rhs, 1, 1, Precision::F64);
        for call in ["exp64(", "log64(", "log10_64(", "pow64("] {
            assert!(f.contains(call), "{call} in {f}");
        }
        for builtin in [" exp(", " log(", " pow("] {
            assert!(!f.contains(builtin), "{builtin} in {f}");
        }
    }

    #[test]
    fn shader_lines_lead_back_to_model_statements() {
        use crate::model::{Model, ModelPrograms};
        let text = "param k = 2\nparam v = 10\nstate a, b\nc = a / v\nd/dt(a) = -k * a\n\
                    d/dt(b) = k * a - exp(c) * b\noutput cp = b / v\n";
        let m = Model::parse("m.vpm", text).unwrap();
        let progs = ModelPrograms::new(&m);
        let src = format!("// head\n{}", model_functions(&progs, Precision::F32));
        // The line computing exp(c) in the right-hand side: d/dt(b), line 6.
        let at = src.find("exp(").unwrap();
        let g = generated_line(&src, at, &progs).unwrap();
        assert_eq!(g.function, "model_rhs");
        let s = g.statement.as_ref().unwrap();
        assert_eq!((s.what.as_str(), s.line, s.col), ("d/dt(b)", 6, 6));
        assert!(g
            .message("boom")
            .starts_with("m.vpm:6:6: boom in the code generated for `d/dt(b)`"));
        // c = a / v, line 4, used by both equations, is a * (1/v), and 1/v is computed once per
        // subject, in model_prepare (for the right-hand side, the first program there).
        let prepare = src.find("fn model_prepare").unwrap();
        let div = prepare + src[prepare..].find(" / ").unwrap();
        let g = generated_line(&src, div, &progs).unwrap();
        assert_eq!((g.function, g.part), ("model_prepare", "right-hand side"));
        assert_eq!(g.statement.unwrap().line, 4);
        // Where model_prepare stores it, likewise.
        let store = src[prepare..].find("    q[").unwrap() + prepare + 4;
        assert_eq!(
            generated_line(&src, store, &progs)
                .unwrap()
                .statement
                .unwrap()
                .line,
            4
        );
        // exp(c) in the Jacobian: the derivative of d/dt(b).
        let jac = src.find("fn model_jac").unwrap();
        let exp = jac + src[jac..].find("exp(").unwrap();
        let g = generated_line(&src, exp, &progs).unwrap();
        assert_eq!((g.function, g.part), ("model_jac", "Jacobian"));
        assert_eq!(g.statement.unwrap().line, 6);
        // A result line names the instruction it returns; outside any function: nothing.
        let outputs = src.find("fn model_outputs").unwrap();
        let ret = outputs + src[outputs..].find("out[0]").unwrap();
        let g = generated_line(&src, ret, &progs).unwrap();
        assert_eq!(g.statement.unwrap().what, "output cp");
        assert_eq!(generated_line(&src, 2, &progs), None);
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
