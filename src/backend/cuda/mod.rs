//! The CUDA backend: model code generation, NVRTC compilation and the cudarc runtime.
//!
//! Kernels are generated per model × method × metric kinds × precision, compiled by NVRTC
//! for the device's own architecture and cached by the SHA-256 of their source. NVRTC needs no
//! GPU, so CI compiles every generated kernel; running them needs libcuda and a device, or the
//! host emulation ([`EmulatedCuda`]), which builds the same source with the system C++ compiler
//! and runs it on the CPU.

pub mod codegen;
pub mod kernel;

use crate::backend::Precision;
use crate::model::ModelPrograms;

/// The model evaluation kernel template.
pub const MODEL_EVAL_CU: &str = include_str!("../../../kernels/model_eval.cu");

/// The full CUDA C source of the model evaluation kernel for a model.
pub fn model_eval_source(m: &ModelPrograms, p: Precision) -> Result<String, String> {
    let real = codegen::real_type(p);
    let (ns, np, no) = (
        m.n_states.max(1).to_string(),
        m.n_params.max(1).to_string(),
        m.n_outputs.max(1).to_string(),
    );
    // The parameters and, after them, what model_prepare computes from them.
    let nq = (m.n_params + codegen::hoisted(m, p).slots)
        .max(1)
        .to_string();
    crate::backend::wgpu::codegen::fill(
        MODEL_EVAL_CU,
        &[
            ("REAL", real),
            ("NS", &ns),
            ("NP", &np),
            ("NQ", &nq),
            ("NO", &no),
            ("TABLEAUS", crate::solver::tableau::TABLEAUS_CUH),
            ("MODEL", &codegen::model_functions(m, p)),
        ],
    )
}

/// Whether NVRTC can be loaded (it is looked up on the library path; compiling needs no GPU).
#[cfg(feature = "cuda")]
pub fn nvrtc_available() -> bool {
    // SAFETY: probes for the shared library without calling into it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
pub fn nvrtc_available() -> bool {
    false
}

/// Compiles CUDA C to PTX for `arch` (e.g. "sm_90"). Errors carry NVRTC's log and the source.
#[cfg(feature = "cuda")]
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<String, String> {
    if !nvrtc_available() {
        return Err("NVRTC (libnvrtc) is not on the library path".into());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => Err(format!("NVRTC: {e:?}\n--- generated source ---\n{src}")),
    }
}

#[cfg(not(feature = "cuda"))]
pub fn compile_ptx(_src: &str, _arch: &'static str) -> Result<String, String> {
    Err("vpop was built without the `cuda` feature".into())
}

/// Operations the integrator kernel performed, by kind (kernels/host_count.h), counted by a
/// counting build of the emulated kernel (`EmulatedCuda::counting`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// Additions and subtractions.
    pub add: u64,
    pub mul: u64,
    pub div: u64,
    /// Fused multiply-adds (two floating-point operations each).
    pub fma: u64,
    pub sqrt: u64,
    /// exp, log, log10 and pow.
    pub transcendental: u64,
    /// Comparisons, fmin and fmax.
    pub compare: u64,
    /// Negations, fabs, ceil, floor and finiteness tests.
    pub other: u64,
}

impl OpCounts {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn from_raw(r: &[u64; 8]) -> OpCounts {
        OpCounts {
            add: r[0],
            mul: r[1],
            div: r[2],
            fma: r[3],
            sqrt: r[4],
            transcendental: r[5],
            compare: r[6],
            other: r[7],
        }
    }

    /// Floating-point operations: additions, multiplications, divisions, square roots, and
    /// two per fused multiply-add (transcendental functions are counted apart).
    pub fn flops(&self) -> u64 {
        self.add + self.mul + self.div + self.sqrt + 2 * self.fma
    }

    /// Each count divided by `n` (per subject), rounded.
    pub fn per(&self, n: u64) -> OpCounts {
        let d = |v: u64| (v as f64 / n.max(1) as f64).round() as u64;
        OpCounts {
            add: d(self.add),
            mul: d(self.mul),
            div: d(self.div),
            fma: d(self.fma),
            sqrt: d(self.sqrt),
            transcendental: d(self.transcendental),
            compare: d(self.compare),
            other: d(self.other),
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn add_raw(&mut self, r: &[u64; 8]) {
        let o = OpCounts::from_raw(r);
        self.add += o.add;
        self.mul += o.mul;
        self.div += o.div;
        self.fma += o.fma;
        self.sqrt += o.sqrt;
        self.transcendental += o.transcendental;
        self.compare += o.compare;
        self.other += o.other;
    }
}

#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod emulate;
#[cfg(feature = "cuda")]
mod host;

#[cfg(feature = "cuda")]
pub use device::{list_devices, CudaBackend, DeviceInfo};
#[cfg(feature = "cuda")]
pub use emulate::EmulatedCuda;
