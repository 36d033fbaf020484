//! The kernels' factorisation of a Rosenbrock method's W = si·I − sj·J (slot `W` of
//! `shaders/integrate.wgsl` and `kernels/integrate.cu`).
//!
//! Models with fewer than [`MIN_DIM`] states, or whose factors would be more than half full,
//! get the dense LU with partial pivoting (`shaders/w_dense.wgsl`, `kernels/w_dense.cu`),
//! as the CPU reference factorises them. Larger sparse ones get the CPU reference's plan
//! ([`LuPlan`], made from the structure of the model's symbolic Jacobian) as straight-line
//! code: W assembled from the Jacobian's structurally nonzero entries alone (`model_jac`
//! computes only those: [`kernel_programs`]), every elimination and substitution an operation
//! on a fixed entry, so the factors are the plan's entries (fill-in included) in registers or
//! a short array instead of NS² of them, and no pivot row is searched or swapped. A pivot
//! below [`PIVOT_THRESHOLD`] of its column makes `w_factor` fail, which rejects the step as a
//! singular W does: a smaller step makes W = I/(hγ) − J more diagonally dominant. (The CPU
//! reference factorises such a W densely with row exchanges instead; both reach the tolerance.)

use std::borrow::Cow;
use std::fmt::Write;

use super::stepgen::Lang;
use crate::model::lower::ModelPrograms;
use crate::solver::sparse_lu::{LuPlan, MIN_DIM, PIVOT_THRESHOLD};

/// The dense factorisation (WGSL), after its header comment.
pub const W_DENSE_WGSL: &str = include_str!("../../shaders/w_dense.wgsl");
/// The dense factorisation (CUDA C), after its header comment.
pub const W_DENSE_CU: &str = include_str!("../../kernels/w_dense.cu");

/// The dense version's text (after its header comment).
fn dense(lang: Lang) -> &'static str {
    let file = match lang {
        Lang::Wgsl => W_DENSE_WGSL,
        Lang::Cuda => W_DENSE_CU,
    };
    file.split_once("\n\n").map_or(file, |(_, body)| body)
}

/// The part of the dense version from the line starting with `from` through the line ending
/// with `to` (the last such `from` where `last`).
fn dense_part(lang: Lang, from: &str, to: &str, last: bool) -> &'static str {
    let d = dense(lang);
    let start = if last { d.rfind(from) } else { d.find(from) };
    let start = start.unwrap_or_else(|| panic!("the dense W has no `{from}`"));
    let end = d[start..]
        .find(to)
        .map(|e| start + e + to.len())
        .unwrap_or_else(|| panic!("the dense W has no `{to}` after `{from}`"));
    &d[start..end]
}

/// `w_factor` up to W's assembly, as the dense version has it (the Jacobian, ∂f/∂t, the
/// outputs' gradient for the AUC rows, the scales w_solve reads), with a Jacobian of `n_jm`
/// values: its structurally nonzero entries.
fn factor_head(lang: Lang, n_jm: usize) -> String {
    match lang {
        Lang::Cuda => dense_part(lang, "    FI bool w_factor", "w_sj = sj;\n", false)
            .replace("real jm[NS * NS]", &format!("real jm[{n_jm}]")),
        Lang::Wgsl => dense_part(lang, "fn w_factor", "w_sj = sj;\n", false).to_string(),
    }
}

/// `w_solve` before and after the substitutions, as the dense version has it: the AUC rows
/// are solved after the model block.
fn solve_head_tail(lang: Lang) -> (&'static str, &'static str) {
    let (head, tail) = match lang {
        Lang::Cuda => (
            ("    FI void w_solve", "b[a] = x[NS + a];\n"),
            "        #pragma unroll\n        for (int a = 0; a < NA; a++) {",
        ),
        Lang::Wgsl => (
            ("fn w_solve", "var x = b;\n"),
            "    for (var a = 0u; a < NA; a++) {",
        ),
    };
    let d = dense(lang);
    let at = d.rfind(tail).expect("the dense W solves the AUC rows");
    (
        dense_part(lang, head.0, head.1, false),
        d[at..].trim_end_matches('\n'),
    )
}

/// The plan of the model block's W where the kernels factorise it sparsely.
pub fn plan(m: &ModelPrograms) -> Option<LuPlan> {
    let n = m.n_states;
    if n < MIN_DIM {
        return None;
    }
    let plan = LuPlan::new(n, &m.jacobian.nonzero_results());
    plan.is_sparse().then_some(plan)
}

/// The programs the kernels are generated from: the model's own, but where W is factorised
/// sparsely, a Jacobian program with the structurally nonzero results alone (row-major), so
/// that `model_jac` neither computes nor returns NS² values.
pub fn kernel_programs(m: &ModelPrograms) -> Cow<'_, ModelPrograms> {
    match plan(m) {
        Some(_) => Cow::Owned(pruned_jacobian(m)),
        None => Cow::Borrowed(m),
    }
}

/// `m` with a Jacobian program of the structurally nonzero results alone.
fn pruned_jacobian(m: &ModelPrograms) -> ModelPrograms {
    let keep: Vec<usize> = m
        .jacobian
        .nonzero_results()
        .iter()
        .enumerate()
        .filter(|(_, nz)| **nz)
        .map(|(k, _)| k)
        .collect();
    let mut p = m.clone();
    p.jacobian = m.jacobian.keep_results(&keep);
    p
}

/// What a kernel for `lang` is generated with: the programs ([`kernel_programs`]), the
/// functions `w_factor` and `w_solve`, and the length of the kernel's array `lu`. `m` is the
/// model's own programs.
pub fn kernel_w(m: &ModelPrograms, lang: Lang) -> (Cow<'_, ModelPrograms>, String, usize) {
    let Some(plan) = plan(m) else {
        let n = m.n_states.max(1);
        let code = dense(lang).trim_end_matches('\n').to_string();
        return (Cow::Borrowed(m), code, n * n);
    };
    let code = sparse_code(m, &plan, lang);
    (Cow::Owned(pruned_jacobian(m)), code, plan.nnz().max(1))
}

fn sparse_code(m: &ModelPrograms, plan: &LuPlan, lang: Lang) -> String {
    let n = plan.dim();
    // Index of each structurally nonzero Jacobian entry among model_jac's results.
    let nz = m.jacobian.nonzero_results();
    let mut jm_index = vec![None; n * n];
    for (r, ij) in nz
        .iter()
        .enumerate()
        .filter(|(_, z)| **z)
        .map(|(ij, _)| ij)
        .enumerate()
    {
        jm_index[ij] = Some(r);
    }
    let n_jm = jm_index.iter().flatten().count().max(1);
    let cuda = lang == Lang::Cuda;
    // Member functions of the CUDA per-subject struct are indented one level more.
    let ind = if cuda { "        " } else { "    " };
    let lit = |x: f64| -> String {
        if cuda {
            format!("(real){x:?}")
        } else {
            format!("{x:?}")
        }
    };
    let mut s = String::new();
    let head = if cuda { "    // " } else { "// " };
    for line in [
        "W = si·I − sj·J of the extended system, factorised: the model block along the structure"
            .to_string(),
        format!(
            "of its Jacobian ({} entries of the factors, fill-in included, in place of {}; pivots",
            plan.nnz(),
            n * n
        ),
        "on the diagonal in the elimination order of src/solver/sparse_lu.rs, each refused below"
            .into(),
        format!(
            "{PIVOT_THRESHOLD} of its column); the AUC rows (J = [G 0]) by substitution in w_solve."
        ),
    ] {
        let _ = writeln!(s, "{head}{line}");
    }
    // w_factor: the Jacobian and ∂f/∂t as the dense version gets them.
    s.push_str(&factor_head(lang, n_jm));
    // Assembly: every slot written (fill-in zero), the Jacobian's entries as the CPU's.
    let zero = lit(0.0);
    let mut value = vec![zero.clone(); plan.nnz()];
    for &(ij, slot, on_diag) in plan.entries() {
        let id = if on_diag { "si" } else { zero.as_str() };
        value[slot as usize] = match jm_index[ij as usize] {
            Some(r) => format!("{id} - sj * finite_or_0(jm[{r}])"),
            None => id.to_string(),
        };
    }
    for (slot, v) in value.iter().enumerate() {
        let _ = writeln!(s, "{ind}lu[{slot}] = {v};");
    }
    // Elimination: per pivot, the threshold test, its reciprocal in its place, the
    // multipliers and their updates.
    let fin = if cuda { "isfinite" } else { "finite" };
    for k in 0..n {
        let d = plan.pivot(k);
        let below = plan.below(k);
        let big = below
            .iter()
            .map(|e| format!("abs(lu[{}])", e.slot))
            .reduce(|a, b| format!("max({a}, {b})"))
            .unwrap_or_else(|| zero.clone());
        let big = if cuda {
            big.replace("abs(", "fabs(").replace("max(", "fmax(")
        } else {
            big
        };
        let abs = if cuda { "fabs" } else { "abs" };
        let comp = plan.order()[k];
        let _ = writeln!(s, "{ind}// pivot {k}: state {comp}");
        let _ = writeln!(
            s,
            "{ind}if (!({abs}(lu[{d}]) >= {} * {big}) || lu[{d}] == {zero} || !{fin}(lu[{d}])) {{ return false; }}",
            lit(PIVOT_THRESHOLD)
        );
        let _ = writeln!(s, "{ind}lu[{d}] = {} / lu[{d}];", lit(1.0));
        for e in below {
            let _ = writeln!(s, "{ind}lu[{}] = lu[{}] * lu[{d}];", e.slot, e.slot);
            for &[t, src] in plan.updates(e) {
                let _ = writeln!(s, "{ind}lu[{t}] = lu[{t}] - lu[{}] * lu[{src}];", e.slot);
            }
        }
    }
    let _ = writeln!(s, "{ind}return true;");
    let _ = writeln!(s, "{}}}", if cuda { "    " } else { "" });
    s.push('\n');
    // w_solve: the permuted forward and backward substitutions, then the AUC rows.
    let order = plan.order();
    let mut fwd = String::new();
    for k in 0..n {
        let mut e = if cuda {
            format!("x[{}]", order[k])
        } else {
            format!("b[{}]", order[k])
        };
        for &[c, sl] in plan.l_row(k) {
            let _ = write!(e, " - lu[{sl}] * z{c}");
        }
        let decl = if cuda { "const real" } else { "let" };
        let _ = writeln!(fwd, "{ind}{decl} z{k} = {e};");
    }
    let mut bwd = String::new();
    for k in (0..n).rev() {
        let mut e = format!("z{k}");
        for &[c, sl] in plan.u_row(k) {
            let _ = write!(e, " - lu[{sl}] * u{c}");
        }
        let decl = if cuda { "const real" } else { "let" };
        let _ = writeln!(bwd, "{ind}{decl} u{k} = ({e}) * lu[{}];", plan.pivot(k));
    }
    let mut put = String::new();
    for (k, c) in order.iter().enumerate() {
        let _ = writeln!(put, "{ind}x[{c}] = u{k};");
    }
    let (head, tail) = solve_head_tail(lang);
    s.push_str(head);
    s.push_str(&fwd);
    s.push_str(&bwd);
    s.push_str(&put);
    s.push_str(tail);
    s.trim_end_matches('\n').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Precision;
    use crate::metrics::{Metric, MetricSpec};
    use crate::model::{library, Model};
    use crate::solver::Method;

    fn programs(name: &str, source: &str) -> ModelPrograms {
        ModelPrograms::new(&Model::parse(name, source).unwrap())
    }

    /// A large sparse model's kernels factorise W along its plan: `model_jac` returns the
    /// structurally nonzero entries alone, `lu` holds the factors' entries, each step of the
    /// elimination is written out; the WGSL passes naga's validator in both precisions. Library
    /// models keep the dense factorisation, their kernels' source unchanged.
    #[test]
    fn large_sparse_models_get_the_plan_as_code() {
        let m = programs(
            "sparse_qsp",
            include_str!("../../tests/data/sparse_qsp.vpm"),
        );
        assert_eq!(m.n_states, 14);
        let nz = m.jacobian.nonzero_results().iter().filter(|z| **z).count();
        assert_eq!(nz, 33, "structurally nonzero Jacobian entries");
        let lu = plan(&m).expect("a sparse plan");
        assert!(lu.nnz() < 14 * 14 / 2, "{} entries", lu.nnz());
        let k = kernel_programs(&m);
        assert_eq!(k.jacobian.results.len(), nz);
        assert_eq!(k.rhs, m.rhs);
        let metrics = [
            MetricSpec::new(0, "cp", Metric::parse("auc").unwrap()),
            MetricSpec::new(1, "signal", Metric::parse("cmax").unwrap()),
        ];
        for method in [Method::Rodas4, Method::Rosenbrock23] {
            for p in [Precision::F32, Precision::F64] {
                let w = crate::backend::wgpu::kernel::integrate_source(&m, method, &metrics, p)
                    .unwrap();
                assert!(w.contains(&format!(
                    "var<private> lu: array<{}, {}>;",
                    p.name(),
                    lu.nnz()
                )));
                assert!(w.contains(&format!("// pivot {}: state", 13)));
                assert!(
                    !w.contains("piv[k] = p;"),
                    "the dense factorisation is gone"
                );
                #[cfg(feature = "wgpu")]
                crate::backend::wgpu::check_source(&w, p, &k, "test kernel").unwrap();
                let c = crate::backend::cuda::kernel::integrate_source(&m, method, &metrics, p)
                    .unwrap();
                assert!(c.contains(&format!("#define NLU {}\n", lu.nnz())));
                assert!(c.contains("    FI bool w_factor(real t, real si, real sj) {"));
                assert!(!c.contains("piv[k] = p;"));
            }
        }
        for lm in library::MODELS {
            let m = programs(lm.name, lm.source);
            assert!(plan(&m).is_none(), "{}", lm.name);
            assert!(matches!(kernel_programs(&m), Cow::Borrowed(_)));
            let (_, code, len) = kernel_w(&m, Lang::Wgsl);
            assert!(code.starts_with("// W = si·I − sj·J") && code.contains("piv[k] = p;"));
            assert_eq!(len, m.n_states * m.n_states);
        }
    }
}
