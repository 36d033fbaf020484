//! One integration step of every method as GPU source, for WGSL and CUDA C alike.
//!
//! The kernels' drivers (stopping points, events, step control, metrics) are hand-written
//! templates under `shaders/` and `kernels/`; what differs between methods — the stages, the
//! error estimate and the dense output — is generated here from the one tableau table
//! (`src/solver/tableau_data.rs`): coefficients are referred to by the names that build.rs gives
//! them (`TSIT5_A_7`, …) and terms with a zero coefficient are left out. Both languages share
//! the bodies; only declarations, loops and calls are spelled per language.
//!
//! The generated functions work on the kernel's per-subject variables: `y` (state at the step
//! start, model states then the AUC states of the outputs with an area metric), `y1`, `f0`, `f1`, `err`, `tmp`, the
//! stage vectors `k0…`, the dense-output vectors `dn0`, `dn1`, the step `st_t0`/`st_h`, and
//! `dfdt_v` (∂f/∂t, filled by `w_factor`).

use crate::solver::tableau_data::*;
use crate::solver::Method;

/// Target language of generated code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Wgsl,
    Cuda,
}

impl Lang {
    /// The scalar type's name: `real` in both languages (a `typedef` in CUDA C; in WGSL a word
    /// that `crate::backend::wgpu::kernel` replaces by `f32` or `f64`).
    fn real(self) -> &'static str {
        "real"
    }

    /// `for j in 0..NY { body }`.
    fn for_j(self, body: &str) -> String {
        match self {
            Lang::Wgsl => format!("    for (var j = 0u; j < NY; j++) {{ {body} }}\n"),
            Lang::Cuda => {
                format!("    #pragma unroll\n    for (int j = 0; j < NY; j++) {{ {body} }}\n")
            }
        }
    }

    fn copy(self, dst: &str, src: &str) -> String {
        match self {
            Lang::Wgsl => format!("    {dst} = {src};\n"),
            Lang::Cuda => self.for_j(&format!("{dst}[j] = {src}[j];")),
        }
    }

    /// The system at time `t` of the step, at most `tl`: the left limit of the segment's end,
    /// which the stages of its last step that fall on the end take (`crate::solver::left_limit`).
    fn rhs(self, t: &str, src: &str, dst: &str) -> String {
        match self {
            Lang::Wgsl => format!("    {dst} = sys_rhs(min({t}, tl), {src});\n"),
            Lang::Cuda => format!("    sys_rhs(fmin({t}, tl), {src}, {dst});\n"),
        }
    }

    fn solve(self, b: &str) -> String {
        match self {
            Lang::Wgsl => format!("    {b} = w_solve({b});\n"),
            Lang::Cuda => format!("    w_solve({b});\n"),
        }
    }

    fn let_(self, name: &str, value: &str) -> String {
        match self {
            Lang::Wgsl => format!("    let {name}: {} = {value};\n", self.real()),
            Lang::Cuda => format!("    const real {name} = {value};\n"),
        }
    }

    fn head(self, name: &str, args: &[&str], ret: &str) -> String {
        match self {
            Lang::Wgsl => {
                let a: Vec<String> = args
                    .iter()
                    .map(|a| format!("{a}: {}", self.real()))
                    .collect();
                let r = if ret == "void" {
                    String::new()
                } else {
                    format!(" -> {ret}")
                };
                format!("fn {name}({}){r} {{\n", a.join(", "))
            }
            Lang::Cuda => {
                let a: Vec<String> = args.iter().map(|a| format!("real {a}")).collect();
                format!(
                    "__device__ __forceinline__ {ret} {name}({}) {{\n",
                    a.join(", ")
                )
            }
        }
    }

    /// Declarations of the per-subject vectors `names`, NY values each: WGSL private arrays;
    /// in CUDA the list `STAGE_ARRAYS`, whose pointers `Sub` holds and whose storage the kernel
    /// declares with the rest of Sub's arrays (kernels/integrate.cu, SUB_ARRAYS).
    fn vectors(self, names: &[String], ny: usize) -> String {
        match self {
            Lang::Wgsl => names
                .iter()
                .map(|n| format!("var<private> {n}: array<{}, {ny}>;\n", self.real()))
                .collect(),
            Lang::Cuda => {
                let list: String = names.iter().map(|n| format!(" X(real, {n}, NY)")).collect();
                format!("#define STAGE_ARRAYS(X){list}\n    STAGE_ARRAYS(SUB_POINTER)\n")
            }
        }
    }
}

/// Σ coef·k_r[j] over the nonzero coefficients, as source text (`None` when all are zero).
fn combo(terms: &[(String, f64, String)]) -> Option<String> {
    let parts: Vec<String> = terms
        .iter()
        .filter(|(_, c, _)| *c != 0.0)
        .map(|(name, _, v)| format!("{name} * {v}[j]"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(" + "))
}

/// Generated method code.
#[derive(Debug, Clone)]
pub struct StepCode {
    /// Declarations of the stage and dense-output vectors.
    pub decls: String,
    /// Constants (`Q_ORDER`, `BETA`, `FIXED_STEP`, `NEEDS_F1`) and the functions `do_step(t, h, tl)
    /// -> bool` (tl: the left limit of the segment's end), `prepare_dense(h)` and `dense_into(ts)` (writes `dense_v`).
    pub code: String,
}

/// Number of stage vectors a method keeps.
pub fn stages(method: Method) -> usize {
    match method {
        Method::Rk4 => 4,
        Method::Dopri5 | Method::Tsit5 => 7,
        Method::Rosenbrock23 => 3,
        Method::Rodas4 => 6,
    }
}

/// The step, its error estimate and its dense output for `method`, with `ny` values per
/// vector.
pub fn step_code(method: Method, lang: Lang, ny: usize) -> StepCode {
    let names: Vec<String> = (0..stages(method))
        .map(|s| format!("k{s}"))
        .chain(["dn0".to_string(), "dn1".to_string()])
        .collect();
    let decls = lang.vectors(&names, ny);
    let (q, beta) = match method {
        Method::Rk4 => (4.0, 0.0),
        Method::Dopri5 | Method::Tsit5 => (5.0, STEP_BETA_EXPLICIT),
        Method::Rosenbrock23 => (3.0, 0.0),
        Method::Rodas4 => (4.0, 0.0),
    };
    let consts = match lang {
        Lang::Wgsl => format!(
            "const Q_ORDER: real = {q:?};\nconst BETA: real = {};\nconst FIXED_STEP: bool = {};\nconst NEEDS_F1: bool = {};\n",
            if beta == 0.0 { "0.0".to_string() } else { "STEP_BETA_EXPLICIT".to_string() },
            method == Method::Rk4,
            method == Method::Rodas4
        ),
        Lang::Cuda => format!(
            "#define Q_ORDER ((real){q:?})\n#define BETA ({})\n#define FIXED_STEP {}\n#define NEEDS_F1 {}\n",
            if beta == 0.0 { "((real)0)".to_string() } else { "STEP_BETA_EXPLICIT".to_string() },
            (method == Method::Rk4) as u8,
            (method == Method::Rodas4) as u8
        ),
    };
    let body = match method {
        Method::Dopri5 => explicit(lang, "DOPRI5", &DOPRI5_A, &DOPRI5_E),
        Method::Tsit5 => explicit(lang, "TSIT5", &TSIT5_A, &TSIT5_E),
        Method::Rk4 => rk4(lang),
        Method::Rosenbrock23 => ros23(lang),
        Method::Rodas4 => rodas4(lang),
    };
    let prep = prepare_dense(method, lang);
    let dense = dense(method, lang);
    // The same over the first SW_REACH components alone: those the located switches read
    // (`crate::model::switches::Switches::reach`), where a change is looked for.
    let reach = dense
        .replace("dense_into(", "dense_reach(")
        .replace("j < NY;", "j < SW_REACH;");
    StepCode {
        decls,
        code: format!("{consts}\n{body}\n{prep}\n{dense}\n{reach}"),
    }
}

fn explicit(lang: Lang, p: &str, a: &[[f64; 6]; 7], e: &[f64; 7]) -> String {
    let mut s = lang.head("do_step", &["t", "h", "tl"], "bool");
    s.push_str(&lang.copy("k0", "f0"));
    for st in 1..7 {
        let terms: Vec<(String, f64, String)> = (0..st)
            .map(|r| (format!("{p}_A_{}", st * 6 + r), a[st][r], format!("k{r}")))
            .collect();
        let sum = combo(&terms).unwrap_or_else(|| "0.0".into());
        s.push_str(&lang.for_j(&format!("tmp[j] = y[j] + h * ({sum});")));
        if st == 6 {
            s.push_str(&lang.copy("y1", "tmp"));
        }
        s.push_str(&lang.rhs(&format!("t + {p}_C_{st} * h"), "tmp", &format!("k{st}")));
    }
    s.push_str(&lang.copy("f1", "k6"));
    let terms: Vec<(String, f64, String)> = (0..7)
        .map(|r| (format!("{p}_E_{r}"), e[r], format!("k{r}")))
        .collect();
    let sum = combo(&terms).unwrap_or_else(|| "0.0".into());
    s.push_str(&lang.for_j(&format!("err[j] = h * ({sum});")));
    s.push_str("    return true;\n}\n");
    s
}

fn rk4(lang: Lang) -> String {
    let mut s = lang.head("do_step", &["t", "h", "tl"], "bool");
    s.push_str(&lang.copy("k0", "f0"));
    for st in 1..4 {
        s.push_str(&lang.for_j(&format!("tmp[j] = y[j] + h * RK4_C_{st} * k{}[j];", st - 1)));
        s.push_str(&lang.rhs(&format!("t + RK4_C_{st} * h"), "tmp", &format!("k{st}")));
    }
    s.push_str(&lang.for_j(
        "y1[j] = y[j] + h * (RK4_B_0 * k0[j] + RK4_B_1 * k1[j] + RK4_B_2 * k2[j] + RK4_B_3 * k3[j]);",
    ));
    s.push_str(&lang.rhs("t + h", "y1", "f1"));
    s.push_str(&lang.for_j("err[j] = 0.0;"));
    s.push_str("    return true;\n}\n");
    s
}

fn ros23(lang: Lang) -> String {
    let mut s = lang.head("do_step", &["t", "h", "tl"], "bool");
    s.push_str("    if (!w_factor(t, 1.0, h * ROS23_D)) { return false; }\n");
    // k1 = W⁻¹ (F0 + h d T)
    s.push_str(&lang.for_j("k0[j] = f0[j] + h * ROS23_D * dfdt_v[j];"));
    s.push_str(&lang.solve("k0"));
    // F1 = f(t + h/2, y + h/2 k1), kept in err.
    s.push_str(&lang.for_j("tmp[j] = y[j] + 0.5 * h * k0[j];"));
    s.push_str(&lang.rhs("t + 0.5 * h", "tmp", "err"));
    // k2 = W⁻¹ (F1 − k1) + k1
    s.push_str(&lang.for_j("k1[j] = err[j] - k0[j];"));
    s.push_str(&lang.solve("k1"));
    s.push_str(&lang.for_j("k1[j] = k1[j] + k0[j]; y1[j] = y[j] + h * k1[j];"));
    s.push_str(&lang.rhs("t + h", "y1", "f1"));
    // k3 = W⁻¹ (F2 − e32 (k2 − F1) − 2 (k1 − F0) + h d T)
    s.push_str(&lang.for_j(
        "k2[j] = f1[j] - ROS23_E32 * (k1[j] - err[j]) - 2.0 * (k0[j] - f0[j]) + h * ROS23_D * dfdt_v[j];",
    ));
    s.push_str(&lang.solve("k2"));
    s.push_str(&lang.let_("h6", "h / 6.0"));
    s.push_str(&lang.for_j("err[j] = h6 * (k0[j] - 2.0 * k1[j] + k2[j]);"));
    s.push_str("    return true;\n}\n");
    s
}

fn rodas4(lang: Lang) -> String {
    let mut s = lang.head("do_step", &["t", "h", "tl"], "bool");
    s.push_str("    if (!w_factor(t, 1.0 / (h * RODAS4_GAMMA), 1.0)) { return false; }\n");
    for st in 0..6 {
        if st == 0 {
            s.push_str(&lang.copy("tmp", "f0"));
        } else {
            let terms: Vec<(String, f64, String)> = (0..st.min(5))
                .map(|r| {
                    (
                        format!("RODAS4_A_{}", st * 5 + r),
                        RODAS4_A[st][r],
                        format!("k{r}"),
                    )
                })
                .collect();
            let sum = combo(&terms).map(|x| format!(" + {x}")).unwrap_or_default();
            s.push_str(&lang.for_j(&format!("y1[j] = y[j]{sum};")));
            s.push_str(&lang.rhs(&format!("t + RODAS4_C_{st} * h"), "y1", "tmp"));
        }
        let mut terms: Vec<String> = Vec::new();
        if RODAS4_D[st] != 0.0 {
            terms.push(format!("h * RODAS4_D_{st} * dfdt_v[j]"));
        }
        for r in 0..st {
            if RODAS4_CC[st][r] != 0.0 {
                // c/h once per stage (the same value in every component), not per component.
                let name = format!("cch_{}", st * 5 + r);
                s.push_str(&lang.let_(&name, &format!("RODAS4_CC_{} / h", st * 5 + r)));
                terms.push(format!("{name} * k{r}[j]"));
            }
        }
        let extra = terms.iter().map(|x| format!(" + {x}")).collect::<String>();
        s.push_str(&lang.for_j(&format!("k{st}[j] = tmp[j]{extra};")));
        s.push_str(&lang.solve(&format!("k{st}")));
    }
    // y1 = u_6 + k_6 where u_6 (in y1) = y0 + Σ a_6j k_j.
    s.push_str(&lang.for_j("y1[j] = y1[j] + k5[j];"));
    // The dense output's error at θ = ¼ and ¾ (src/solver/integrator.rs `rodas4_step`): its
    // defect there filtered by W⁻¹; the step's error is the largest of these and k_6,
    // component by component (a non-finite one taken). f1 (computed afresh once a step is
    // accepted) holds u(θ).
    s.push_str("    rodas4_dense();\n");
    s.push_str(&lang.for_j("err[j] = k5[j];"));
    // One loop over the points, not unrolled: one copy of the right-hand side's code, and
    // fewer registers held across it (the f64 kernels of 5–6 states are at the limit).
    let [p0, p1] = &RODAS4_DENSE_CHECK;
    let pick = |a: f64, b: f64| format!("(q == 0 ? (real){a:?} : (real){b:?})");
    let pick_wgsl = |a: f64, b: f64| format!("select(real({b:?}), real({a:?}), q == 0u)");
    let c = |a: f64, b: f64| match lang {
        Lang::Cuda => pick(a, b),
        Lang::Wgsl => pick_wgsl(a, b),
    };
    s.push_str(match lang {
        Lang::Cuda => "    #pragma unroll 1\n    for (int q = 0; q < 2; q++) {\n",
        Lang::Wgsl => "    for (var q = 0u; q < 2u; q++) {\n",
    });
    for (name, a, b) in [
        ("ck_th", p0.theta, p1.theta),
        ("ck_u0", p0.u[0], p1.u[0]),
        ("ck_u1", p0.u[1], p1.u[1]),
        ("ck_u2", p0.u[2], p1.u[2]),
        ("ck_u3", p0.u[3], p1.u[3]),
        ("ck_d0", p0.du[0], p1.du[0]),
        ("ck_d1", p0.du[1], p1.du[1]),
    ] {
        s.push_str(&lang.let_(name, &c(a, b)));
    }
    s.push_str(
        &lang.for_j("f1[j] = (ck_u0 * y[j] + ck_u1 * y1[j]) + (ck_u2 * dn0[j] + ck_u3 * dn1[j]);"),
    );
    s.push_str(&lang.rhs("t + ck_th * h", "f1", "tmp"));
    s.push_str(
        &lang.for_j("tmp[j] = (y1[j] - y[j] + (ck_d0 * dn0[j] + ck_d1 * dn1[j])) / h - tmp[j];"),
    );
    s.push_str(&lang.solve("tmp"));
    s.push_str(&lang.for_j(match lang {
        Lang::Wgsl => "err[j] = select(tmp[j], err[j], abs(tmp[j]) <= abs(err[j]));",
        Lang::Cuda => "err[j] = fabs(tmp[j]) <= fabs(err[j]) ? err[j] : tmp[j];",
    }));
    s.push_str("    }\n");
    s.push_str("    return true;\n}\n");
    s
}

fn prepare_dense(method: Method, lang: Lang) -> String {
    let mut s = lang.head("prepare_dense", &["h"], "void");
    match method {
        Method::Dopri5 => {
            let terms: Vec<(String, f64, String)> = (0..7)
                .map(|r| (format!("DOPRI5_D_{r}"), DOPRI5_D[r], format!("k{r}")))
                .collect();
            let sum = combo(&terms).unwrap_or_else(|| "0.0".into());
            s.push_str(&lang.for_j(&format!("dn0[j] = h * ({sum});")));
        }
        Method::Rodas4 => {
            // The step prepared it (`rodas4_dense`, for its own check), from the stages alone.
            if lang == Lang::Cuda {
                s.push_str("    (void)h;\n");
            }
        }
        _ => {
            if lang == Lang::Cuda {
                s.push_str("    (void)h;\n");
            }
        }
    }
    s.push_str("}\n");
    if method == Method::Rodas4 {
        s.push_str(&rodas4_dense(lang));
    }
    s
}

/// `rodas4_dense()`: Rodas4's dense-output vectors Σ_s H[row][s]·k_s, which do not depend on
/// the step's length: computed once per step, by the step (its dense-output check reads them),
/// and kept for the observer once the step is accepted.
fn rodas4_dense(lang: Lang) -> String {
    let mut s = lang.head("rodas4_dense", &[], "void");
    for row in 0..2 {
        let terms: Vec<(String, f64, String)> = (0..5)
            .map(|r| {
                (
                    format!("RODAS4_H_{}", row * 5 + r),
                    RODAS4_H[row][r],
                    format!("k{r}"),
                )
            })
            .collect();
        let sum = combo(&terms).unwrap_or_else(|| "0.0".into());
        s.push_str(&lang.for_j(&format!("dn{row}[j] = {sum};")));
    }
    s.push_str("}\n");
    s
}

/// `dense_into(ts)`: the dense output at `ts` of the step [st_t0, st_t0 + st_h] into `dense_v`.
fn dense(method: Method, lang: Lang) -> String {
    let mut s = lang.head("dense_into", &["ts"], "void");
    s.push_str(&lang.let_("h", "st_h"));
    s.push_str(&lang.let_("th", "clamp((ts - st_t0) / h, 0.0, 1.0)"));
    s.push_str(&lang.let_("th1", "1.0 - th"));
    match method {
        Method::Rk4 => {
            s.push_str(&lang.let_("h00", "(2.0 * th - 3.0) * th * th + 1.0"));
            s.push_str(&lang.let_("h10", "((th - 2.0) * th + 1.0) * th"));
            s.push_str(&lang.let_("h01", "(3.0 - 2.0 * th) * th * th"));
            s.push_str(&lang.let_("h11", "(th - 1.0) * th * th"));
            s.push_str(&lang.for_j(
                "dense_v[j] = h00 * y[j] + h10 * h * f0[j] + h01 * y1[j] + h11 * h * f1[j];",
            ));
        }
        Method::Dopri5 => {
            s.push_str(&lang.for_j(
                "let_r2 = y1[j] - y[j]; let_r3 = h * k0[j] - r2; let_r4 = r2 - h * k6[j] - r3; \
                 dense_v[j] = y[j] + th * (r2 + th1 * (r3 + th * (r4 + th1 * dn0[j])));",
            ));
        }
        Method::Tsit5 => {
            for st in 0..7 {
                let r = |i: usize| format!("TSIT5_R_{}", st * 4 + i);
                s.push_str(&lang.let_(
                    &format!("b{st}"),
                    &format!(
                        "th * ({} + th * ({} + th * ({} + th * {})))",
                        r(0),
                        r(1),
                        r(2),
                        r(3)
                    ),
                ));
            }
            s.push_str(&lang.for_j(
                "dense_v[j] = y[j] + h * (b0 * k0[j] + b1 * k1[j] + b2 * k2[j] + b3 * k3[j] + b4 * k4[j] + b5 * k5[j] + b6 * k6[j]);",
            ));
        }
        Method::Rosenbrock23 => {
            s.push_str(&lang.let_("c1", "th * th1 / (1.0 - 2.0 * ROS23_D)"));
            s.push_str(&lang.let_("c2", "th * (th - 2.0 * ROS23_D) / (1.0 - 2.0 * ROS23_D)"));
            s.push_str(&lang.for_j("dense_v[j] = y[j] + h * (c1 * k0[j] + c2 * k1[j]);"));
        }
        Method::Rodas4 => {
            s.push_str(
                &lang.for_j(
                    "dense_v[j] = th1 * y[j] + th * (y1[j] + th1 * (dn0[j] + th * dn1[j]));",
                ),
            );
        }
    }
    s.push_str("    if (th == 1.0) {\n");
    s.push_str(&lang.copy("dense_v", "y1"));
    s.push_str("    }\n}\n");
    // Loop-local values: `let_x = …` becomes a typed local of the language.
    let local = match lang {
        Lang::Wgsl => "let ",
        Lang::Cuda => "const real ",
    };
    let mut out = s.replace("let_r2 =", &format!("{local}r2 ="));
    out = out.replace("let_r3 =", &format!("{local}r3 ="));
    out.replace("let_r4 =", &format!("{local}r4 ="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_coefficients_are_left_out() {
        let c = step_code(Method::Dopri5, Lang::Wgsl, 4);
        // a_{2,1} of DOPRI5 is nonzero, a_{6,1} (index 37) is zero.
        assert!(c.code.contains("DOPRI5_A_13 * k1[j]"));
        assert!(!c.code.contains("DOPRI5_A_37"));
        assert!(c.decls.contains("var<private> k6: array<real, 4>;"));
    }

    #[test]
    fn every_method_has_a_step_and_a_dense_output_in_both_languages() {
        for m in Method::ALL {
            for lang in [Lang::Wgsl, Lang::Cuda] {
                let c = step_code(m, lang, 3);
                for f in ["do_step", "prepare_dense", "dense_into"] {
                    assert!(c.code.contains(f), "{m} {lang:?} lacks {f}");
                }
                assert!(!c.code.contains("let_"), "{m} {lang:?}");
            }
        }
    }
}
