//! The WGSL integrator kernel's source for a model, a method and a number of metrics (the arm
//! data it reads is built in `crate::backend::gpu`); the wgpu runtime in `mod.rs` uploads and
//! dispatches.

pub use crate::backend::gpu::{arm_data, ArmData, KernelSizes};
use crate::backend::stepgen::{step_code, Lang};
use crate::backend::Precision;
use crate::model::ModelPrograms;
use crate::solver::tableau::TABLEAUS_WGSL;
use crate::solver::Method;

use super::codegen;

/// The integrator template.
pub const INTEGRATE_WGSL: &str = include_str!("../../../shaders/integrate.wgsl");

/// Counters kept per subject between segments.
pub const CARRY_U: usize = 8;

/// The full WGSL source of the integrator kernel (f32).
pub fn integrate_source(
    m: &ModelPrograms,
    method: Method,
    n_metrics: usize,
) -> Result<String, String> {
    let z = KernelSizes::new(m, n_metrics);
    let ny = z.ny();
    let sizes = format!(
        "const NS: u32 = {}u;\nconst NP: u32 = {}u;\nconst NO: u32 = {}u;\nconst NY: u32 = {}u;\n\
         const NM: u32 = {}u;\nconst CW: u32 = {}u;\nconst CU: u32 = {}u;\n",
        z.ns,
        z.np,
        z.no,
        ny,
        z.nm,
        z.carry_f(),
        CARRY_U
    );
    let step = step_code(method, Lang::Wgsl, ny);
    let funcs = codegen::model_functions(m, Precision::F32);
    let lit = |v: usize| v.max(1).to_string();
    let (golden, root_iters, root_rtol) = crate::backend::gpu::search_settings(Precision::F32);
    let search = format!(
        "const GOLDEN_ITERS: u32 = {golden}u;\nconst ROOT_ITERS: u32 = {root_iters}u;\n\
         const ROOT_RTOL: f32 = {};",
        codegen::literal(root_rtol, Precision::F32)
    );
    codegen::fill(
        INTEGRATE_WGSL,
        &[
            ("SIZES", &sizes),
            ("SEARCH", &search),
            ("TABLEAUS", TABLEAUS_WGSL),
            ("MODEL", &funcs),
            ("STAGES", &step.decls),
            ("STEP", &step.code),
            ("N_NP", &lit(z.np)),
            ("N_NS4", &lit(4 * m.n_states)),
            ("N_NS", &lit(z.ns)),
            ("N_NY", &lit(ny)),
            ("N_NSS", &lit(z.ns * z.ns)),
            ("N_NOS", &lit(m.n_outputs * z.ns)),
            ("N_NM", &lit(z.nm)),
            ("N_NO", &lit(z.no)),
        ],
    )
}
