//! The CUDA integrator kernel's source for a model, a method, a number of metrics and a
//! precision (the arm data it reads is built in `crate::backend::gpu`).

use crate::backend::gpu::KernelSizes;
use crate::backend::stepgen::{step_code, Lang};
use crate::backend::Precision;
use crate::model::ModelPrograms;
use crate::solver::tableau::TABLEAUS_CUH;
use crate::solver::Method;

use super::codegen;

/// The integrator template.
pub const INTEGRATE_CU: &str = include_str!("../../../kernels/integrate.cu");

/// Counters written per subject: status, accepted, rejected, rhs evaluations, Jacobians.
pub const COUNTERS: usize = 5;

/// Wraps the bare decimal literals of generated step code in `(real)` casts, so that f32
/// kernels never compute in double (a literal like `0.5` is a double in C).
fn cast_literals(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len() + code.len() / 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if c.is_ascii_digit() && !prev_ident {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let lit = &code[start..i];
            if lit.contains('.') || lit.contains('e') {
                out.push_str(&format!("((real){lit})"));
            } else {
                out.push_str(lit);
            }
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// The full CUDA C source of the integrator kernel `integrate`.
pub fn integrate_source(
    m: &ModelPrograms,
    method: Method,
    n_metrics: usize,
    p: Precision,
) -> Result<String, String> {
    let z = KernelSizes::new(m, n_metrics);
    let ny = z.ny();
    let sizes = format!(
        "#define NS {}\n#define NP {}\n#define NP1 {}\n#define NO {}\n#define NY {}\n#define NM {}\n\
         #define NM1 {}\n#define NS4 {}\n#define NOS {}\n",
        z.ns,
        z.np,
        z.np.max(1),
        z.no,
        ny,
        z.nm,
        z.nm.max(1),
        (4 * m.n_states).max(1),
        (z.no * z.ns).max(1),
    );
    let step = step_code(method, Lang::Cuda, ny);
    let real = match p {
        Precision::F32 => "float",
        Precision::F64 => "double",
    };
    let (golden, root_iters, root_rtol) = crate::backend::gpu::search_settings(p);
    let sizes = format!(
        "{sizes}#define GOLDEN_ITERS {golden}\n#define ROOT_ITERS {root_iters}\n\
         #define ROOT_RTOL {root_rtol:e}\n"
    );
    // Member functions of the per-subject struct: indent them.
    let code = cast_literals(&step.code);
    let (consts, funcs): (Vec<&str>, Vec<&str>) =
        code.lines().partition(|l| l.starts_with("#define"));
    let funcs: String = funcs
        .iter()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    let sizes = format!("{sizes}{}\n", consts.join("\n"));
    codegen_fill(
        INTEGRATE_CU,
        &[
            ("REAL", real),
            ("SIZES", &sizes),
            ("TABLEAUS", TABLEAUS_CUH),
            ("MODEL", &codegen::model_functions(m, p)),
            ("STAGES", &step.decls),
            ("STEP", &funcs),
        ],
    )
}

fn codegen_fill(template: &str, slots: &[(&str, &str)]) -> Result<String, String> {
    crate::backend::wgpu::codegen::fill(template, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_are_cast_and_names_are_not() {
        assert_eq!(
            cast_literals("x = 0.5 * h + RK4_C_1 * k1[j] + 2.0e-3 / 6"),
            "x = ((real)0.5) * h + RK4_C_1 * k1[j] + ((real)2.0e-3) / 6"
        );
    }
}
