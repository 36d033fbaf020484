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
    let real = match p {
        Precision::F32 => "float",
        Precision::F64 => "double",
    };
    let (ns, np, no) = (
        m.n_states.max(1).to_string(),
        m.n_params.max(1).to_string(),
        m.n_outputs.max(1).to_string(),
    );
    crate::backend::wgpu::codegen::fill(
        MODEL_EVAL_CU,
        &[
            ("REAL", real),
            ("NS", &ns),
            ("NP", &np),
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
