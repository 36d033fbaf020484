//! The CUDA backend on a device: NVRTC compiles the kernel for the device's architecture,
//! cudarc uploads the buffers, launches and downloads.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use sha2::{Digest, Sha256};

use super::host::{Host, Job, Launcher, Real, Written, BLOCK};
use crate::backend::records::{Program, RecordsOutcome};
use crate::backend::Precision;
use crate::backend::{ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput};
use crate::model::CompiledModel;
use crate::solver::SolverOptions;

fn failed(m: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("cuda: {m}"))
}

/// Device 0, its stream and the kernels compiled for it.
pub(super) struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    name: String,
    functions: HashMap<[u8; 32], CudaFunction>,
}

impl Device {
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
}

impl Launcher for Device {
    fn launch<T: Real>(&mut self, job: &Job<'_, T>) -> Result<Written<T>, BackendError> {
        let f = self.function(job.src)?;
        let st = &self.stream;
        let e = |x: cudarc::driver::DriverError| failed(format!("{x:?}"));
        let d_params = st.clone_htod(job.params).map_err(e)?;
        let d_scale = st.clone_htod(job.scale).map_err(e)?;
        let d_arm = st.clone_htod(job.arm).map_err(e)?;
        let mut d_metrics = st.alloc_zeros::<T>(job.metrics_len).map_err(e)?;
        let mut d_counters = match job.counters_in {
            Some(c) => st.clone_htod(c).map_err(e)?,
            None => st.alloc_zeros::<u32>(job.counters_len).map_err(e)?,
        };
        let mut d_prof = st.alloc_zeros::<T>(job.profiles_len).map_err(e)?;
        let cfg = LaunchConfig {
            grid_dim: ((job.n as u32).div_ceil(BLOCK), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = st.launch_builder(&f);
        launch
            .arg(&d_params)
            .arg(&d_scale)
            .arg(&d_arm)
            .arg(&job.meta)
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
        let kernel_time = t0.elapsed();
        let metrics = st.clone_dtoh(&d_metrics).map_err(e)?;
        let counters = st.clone_dtoh(&d_counters).map_err(e)?;
        let profiles = if job.meta.n_times > 0 {
            st.clone_dtoh(&d_prof).map_err(e)?
        } else {
            Vec::new()
        };
        Ok(Written {
            metrics,
            counters,
            profiles,
            kernel_time,
        })
    }
}

/// The CUDA backend on device 0.
pub struct CudaBackend {
    host: Host<Device>,
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
            host: Host {
                model,
                precision,
                launcher: Device {
                    ctx,
                    stream,
                    arch,
                    name,
                    functions: HashMap::new(),
                },
                label: "cuda",
            },
        })
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> BackendInfo {
        let d = &self.host.launcher;
        BackendInfo {
            name: "cuda",
            device: format!("{} ({})", d.name, d.arch),
            precision: self.host.precision,
        }
    }

    fn run_chunk(
        &mut self,
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        out: &mut ChunkOutput,
    ) -> Result<(), BackendError> {
        self.host.run_chunk(arm, input, out)
    }

    fn run_records(
        &mut self,
        programs: &[&Program],
        solver: &SolverOptions,
    ) -> Result<Vec<RecordsOutcome>, BackendError> {
        self.host.run_records(programs, solver)
    }
}
