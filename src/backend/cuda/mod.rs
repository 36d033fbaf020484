//! The CUDA backend: model code generation, NVRTC compilation and the cudarc runtime.
//!
//! Kernels are generated per model × method × number of metrics × precision, compiled by NVRTC
//! for the device's own architecture and cached by the SHA-256 of their source. NVRTC needs no
//! GPU, so CI compiles every generated kernel; running them needs libcuda and a device.

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
mod runtime {
    use std::collections::HashMap;
    use std::sync::Arc;

    use cudarc::driver::{
        CudaContext, CudaFunction, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
        ValidAsZeroBits,
    };
    use sha2::{Digest, Sha256};

    use super::kernel::{integrate_source, COUNTERS};
    use crate::backend::gpu::{arm_data, prepare_chunk, take_counters, take_values, KernelSizes};
    use crate::backend::{
        ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput, Precision,
    };
    use crate::model::CompiledModel;

    /// The kernel's `struct Meta` (kernels/integrate.cu), for `real` = T.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct Meta<T> {
        n: u32,
        n_admin: u32,
        n_fixed: u32,
        n_times: u32,
        wants_extrema: u32,
        max_steps: u32,
        off_fixed: u32,
        off_times: u32,
        off_metrics: u32,
        pad0: u32,
        rtol: T,
        atol: T,
        dt: T,
        h_max: T,
        h_min_rel: T,
        end_time: T,
        trough: T,
        eps: T,
        snap: T,
    }

    // SAFETY: plain `repr(C)` data with the layout of the kernel's struct.
    unsafe impl DeviceRepr for Meta<f32> {}
    unsafe impl DeviceRepr for Meta<f64> {}

    /// A floating-point type the kernels are compiled for.
    trait Real: DeviceRepr + ValidAsZeroBits + Copy + Default + 'static {
        const EPS: f64;
        const SNAP: f64;
        fn of(x: f64) -> Self;
        fn to(self) -> f64;
    }
    impl Real for f32 {
        const EPS: f64 = f32::EPSILON as f64;
        const SNAP: f64 = 1e-6;
        fn of(x: f64) -> f32 {
            x as f32
        }
        fn to(self) -> f64 {
            f64::from(self)
        }
    }
    impl Real for f64 {
        const EPS: f64 = f64::EPSILON;
        const SNAP: f64 = 1e-12;
        fn of(x: f64) -> f64 {
            x
        }
        fn to(self) -> f64 {
            self
        }
    }

    fn failed(m: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!("cuda: {m}"))
    }

    /// The CUDA backend on device 0.
    pub struct CudaBackend {
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        model: Arc<CompiledModel>,
        precision: Precision,
        arch: &'static str,
        name: String,
        functions: HashMap<[u8; 32], CudaFunction>,
    }

    impl CudaBackend {
        /// Opens device 0; a clear error (never a panic) without a driver or a device.
        pub fn new(
            model: Arc<CompiledModel>,
            precision: Precision,
        ) -> Result<CudaBackend, BackendError> {
            let unavailable = |m: String| BackendError::Unavailable("cuda", m);
            // SAFETY: probes for the shared library without calling into it.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err(unavailable(
                    "no CUDA driver (libcuda) on the library path".into(),
                ));
            }
            if !super::nvrtc_available() {
                return Err(unavailable(
                    "no NVRTC (libnvrtc) on the library path".into(),
                ));
            }
            let opened = std::panic::catch_unwind(|| -> Result<_, String> {
                let ctx = CudaContext::new(0).map_err(|e| format!("{e:?}"))?;
                let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
                let name = ctx.name().map_err(|e| format!("{e:?}"))?;
                Ok((ctx, major, minor, name))
            });
            let (ctx, major, minor, name) = match opened {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(unavailable(format!("no CUDA device: {e}"))),
                Err(_) => return Err(unavailable("the CUDA driver could not be loaded".into())),
            };
            let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
            let stream = ctx.default_stream();
            Ok(CudaBackend {
                ctx,
                stream,
                model,
                precision,
                arch,
                name,
                functions: HashMap::new(),
            })
        }

        /// The compiled kernel for a source, cached by the source's SHA-256.
        fn function(&mut self, src: &str) -> Result<CudaFunction, BackendError> {
            let key: [u8; 32] = Sha256::digest(src.as_bytes()).into();
            if let Some(f) = self.functions.get(&key) {
                return Ok(f.clone());
            }
            let ptx = super::compile_ptx(src, self.arch).map_err(failed)?;
            let module = self
                .ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| failed(format!("loading the module: {e:?}")))?;
            let f = module
                .load_function("integrate")
                .map_err(|e| failed(format!("{e:?}")))?;
            self.functions.insert(key, f.clone());
            Ok(f)
        }

        fn run<T: Real>(
            &mut self,
            arm: &ArmPlan,
            input: &ChunkInput<'_>,
            out: &mut ChunkOutput,
        ) -> Result<(), BackendError>
        where
            Meta<T>: DeviceRepr,
        {
            let model = self.model.clone();
            let progs = &model.programs;
            let n = input.n;
            let src = integrate_source(progs, arm.solver.method, arm.metrics.len(), self.precision)
                .map_err(failed)?;
            let f = self.function(&src)?;
            let ad = arm_data(arm);
            let z = KernelSizes::new(progs, arm.metrics.len());
            let nt = ad.n_times;
            let mut params = vec![T::default(); (z.np * n).max(1)];
            for (p, col) in input.params.iter().enumerate() {
                for i in 0..n {
                    params[p * n + i] = T::of(col[i]);
                }
            }
            let scale: Vec<T> = (0..n)
                .map(|i| T::of(input.amount_scale.map_or(1.0, |s| s[i])))
                .collect();
            let arm_v: Vec<T> = ad.data.iter().map(|v| T::of(*v)).collect();
            let s = &arm.solver;
            let meta = Meta::<T> {
                n: n as u32,
                n_admin: ad.n_admin as u32,
                n_fixed: ad.n_fixed as u32,
                n_times: nt as u32,
                wants_extrema: ad.wants_extrema as u32,
                max_steps: s.max_steps.min(u64::from(u32::MAX)) as u32,
                off_fixed: ad.off_fixed as u32,
                off_times: ad.off_times as u32,
                off_metrics: ad.off_metrics as u32,
                pad0: 0,
                rtol: T::of(s.rtol),
                atol: T::of(s.atol),
                dt: T::of(s.dt.unwrap_or(0.0)),
                h_max: T::of(s.h_max.min(1e30)),
                h_min_rel: T::of(s.h_min_rel),
                end_time: T::of(arm.end),
                trough: T::of(ad.trough),
                eps: T::of(T::EPS),
                snap: T::of(T::SNAP),
            };
            let st = &self.stream;
            let e = |x: cudarc::driver::DriverError| failed(format!("{x:?}"));
            let d_params = st.clone_htod(&params).map_err(e)?;
            let d_scale = st.clone_htod(&scale).map_err(e)?;
            let d_arm = st.clone_htod(&arm_v).map_err(e)?;
            let mut d_metrics = st.alloc_zeros::<T>((z.nm * n).max(1)).map_err(e)?;
            let mut d_counters = st.alloc_zeros::<u32>(COUNTERS * n).map_err(e)?;
            let mut d_prof = st.alloc_zeros::<T>((z.no * n * nt).max(1)).map_err(e)?;
            let cfg = LaunchConfig {
                grid_dim: ((n as u32).div_ceil(128), 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = st.launch_builder(&f);
            launch
                .arg(&d_params)
                .arg(&d_scale)
                .arg(&d_arm)
                .arg(&meta)
                .arg(&mut d_metrics)
                .arg(&mut d_counters)
                .arg(&mut d_prof);
            // Uploads finish first, so that the time below is the kernel's alone.
            st.synchronize().map_err(e)?;
            let t0 = std::time::Instant::now();
            // SAFETY: the arguments match the kernel's signature in kernels/integrate.cu and
            // every buffer is sized for n subjects.
            unsafe { launch.launch(cfg) }.map_err(e)?;
            st.synchronize().map_err(e)?;
            out.kernel_time += t0.elapsed();
            let metrics = st.clone_dtoh(&d_metrics).map_err(e)?;
            let counters = st.clone_dtoh(&d_counters).map_err(e)?;
            take_counters(out, &counters, COUNTERS, 0);
            let prof = if nt > 0 {
                st.clone_dtoh(&d_prof).map_err(e)?
            } else {
                Vec::new()
            };
            take_values(out, &metrics, &prof, n, 0, T::to);
            Ok(())
        }
    }

    impl Backend for CudaBackend {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                name: "cuda",
                device: format!("{} ({})", self.name, self.arch),
                precision: self.precision,
            }
        }

        fn run_chunk(
            &mut self,
            arm: &ArmPlan,
            input: &ChunkInput<'_>,
            out: &mut ChunkOutput,
        ) -> Result<(), BackendError> {
            let progs = &self.model.programs;
            let n = input.n;
            let f32_kernel = self.precision == Precision::F32;
            prepare_chunk(
                progs,
                arm,
                input,
                f32_kernel,
                "use precision = \"f64\"",
                out,
            )
            .map_err(failed)?;
            if n == 0 {
                return Ok(());
            }
            match self.precision {
                Precision::F32 => self.run::<f32>(arm, input, out),
                Precision::F64 => self.run::<f64>(arm, input, out),
            }
        }
    }
}

#[cfg(feature = "cuda")]
pub use runtime::CudaBackend;
