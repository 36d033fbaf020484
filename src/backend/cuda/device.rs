//! The CUDA backend on the machine's devices: NVRTC compiles each kernel once per architecture,
//! every device takes a share of each launch, and on each device consecutive parts go to
//! different streams through page-locked staging buffers, so that one part's upload and
//! download overlap another's kernel. The devices are all those the driver shows, or the
//! ordinals listed in `VPOP_CUDA_DEVICES` (e.g. `0,2`; an ordinal listed twice is driven by two
//! threads with streams of their own, which exercises the several-device path on one GPU).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{
    sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use sha2::{Digest, Sha256};

use super::host::{ms, trace, Host, Job, Launcher, Real, Take, Written};
use super::CudaTuning;
use crate::backend::records::{Program, RecordsOutcome};
use crate::backend::Precision;
use crate::backend::{ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput};
use crate::model::CompiledModel;
use crate::solver::SolverOptions;

/// Streams per device: parts dealt to a device go round its streams.
const LANES: usize = 3;

/// The smallest part worth a stream of its own: enough threads to fill most of a device.
const MIN_PART: usize = 32_768;

/// Alignment of the regions of a lane's buffers.
const ALIGN: usize = 256;

fn failed(m: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("cuda: {m}"))
}

fn driver(e: cudarc::driver::DriverError) -> BackendError {
    failed(format!("{e:?}"))
}

/// Where a job's buffers lie in its lane's device buffer, in bytes:
/// `[params | scale | arm | counters | metrics | profiles]`. The upload covers `params` to the
/// end of `counters` (the records kernel's index, or zeros), and of `metrics` where they start
/// as NaN; what follows is zeroed on the device; the download covers `counters` to the end of `metrics`, or of `profiles` when
/// the arm samples profiles.
struct Layout {
    params: Range<usize>,
    scale: Range<usize>,
    arm: Range<usize>,
    counters: Range<usize>,
    metrics: Range<usize>,
    profiles: Range<usize>,
    download_end: usize,
}

impl Layout {
    fn of<T: Real>(job: &Job<'_, T>) -> Layout {
        let t = std::mem::size_of::<T>();
        let mut at = 0;
        let mut region = |bytes: usize| {
            let r = at..at + bytes;
            at = (at + bytes).next_multiple_of(ALIGN);
            r
        };
        let params = region(std::mem::size_of_val(job.params));
        let scale = region(std::mem::size_of_val(job.scale));
        let arm = region(std::mem::size_of_val(job.arm));
        let counters = region(job.counters_len * 4);
        let metrics = region(job.metrics_len * t);
        let profiles = region(job.profiles_len * t);
        let download_end = if job.meta.n_times > 0 {
            profiles.end
        } else {
            metrics.end
        };
        Layout {
            params,
            scale,
            arm,
            counters,
            metrics,
            profiles,
            download_end,
        }
    }

    /// The download's range within the download buffer.
    fn down(&self, r: &Range<usize>) -> Range<usize> {
        r.start - self.counters.start..r.end - self.counters.start
    }
}

/// A device's kernels' span.
type DeviceRun = Result<Duration, BackendError>;

/// PTX by source key and architecture.
type PtxCache = HashMap<([u8; 32], &'static str), Arc<str>>;

/// A job whose kernel and download are queued on a lane.
struct InFlight {
    job: usize,
    layout: Layout,
    start: CudaEvent,
    end: CudaEvent,
}

/// One stream of a device with its staging buffers (page-locked, grown as needed and kept)
/// and its device buffer.
struct Lane {
    stream: Arc<CudaStream>,
    /// Write-combined: the host only writes it.
    up: Option<PinnedHostSlice<u8>>,
    down: Option<PinnedHostSlice<u8>>,
    buf: Option<CudaSlice<u8>>,
    flight: Option<InFlight>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        // Copies to and from the staging buffers must end before they are freed.
        let _ = self.stream.synchronize();
    }
}

/// `slot`, grown to at least `len` bytes (after the lane's stream has finished with it).
fn staging<'a>(
    ctx: &Arc<CudaContext>,
    slot: &'a mut Option<PinnedHostSlice<u8>>,
    len: usize,
    write_combined: bool,
) -> Result<&'a mut [u8], BackendError> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = None;
        let cap = len + len / 8;
        let flags = if write_combined {
            sys::CU_MEMHOSTALLOC_WRITECOMBINED
        } else {
            0
        };
        // SAFETY: the memory is not initialised; every byte of it that is read (uploaded or
        // taken after a download) was written first, by the host or by the download.
        let b = unsafe { ctx.alloc_pinned_with_flags::<u8>(cap, flags) }.map_err(driver)?;
        *slot = Some(b);
    }
    let b = slot.as_mut().ok_or_else(|| failed("no staging buffer"))?;
    b.as_mut_slice().map_err(driver)
}

/// One device, its lanes and the kernels loaded on it.
struct Device {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    lanes: Vec<Lane>,
    arch: &'static str,
    name: String,
    functions: HashMap<[u8; 32], CudaFunction>,
    /// Threads per block of every launch.
    block: u32,
    /// Which backend instance (host thread of `vpop run`) drives it, for the trace.
    instance: usize,
    /// For the trace (`VPOP_CUDA_TRACE`) of one call: time spent staging and queueing parts,
    /// waiting for lanes, and taking results from the staging buffers.
    staged: Duration,
    waited: Duration,
    took: Duration,
}

impl Device {
    fn open(ordinal: usize) -> Result<Device, String> {
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("{e:?}"))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
        let name = ctx.name().map_err(|e| format!("{e:?}"))?;
        let arch: &'static str = Box::leak(format!("sm_{major}{minor}").into_boxed_str());
        let lanes = (0..LANES)
            .map(|_| {
                Ok(Lane {
                    stream: ctx.new_stream().map_err(|e| format!("{e:?}"))?,
                    up: None,
                    down: None,
                    buf: None,
                    flight: None,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Device {
            ordinal,
            ctx,
            lanes,
            arch,
            name,
            functions: HashMap::new(),
            block: super::DEFAULT_BLOCK,
            instance: 0,
            staged: Duration::ZERO,
            waited: Duration::ZERO,
            took: Duration::ZERO,
        })
    }

    /// The kernel of a source whose PTX is `ptx`, loaded once.
    fn function(&mut self, key: [u8; 32], ptx: &str) -> Result<CudaFunction, BackendError> {
        if let Some(f) = self.functions.get(&key) {
            return Ok(f.clone());
        }
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

    /// Queues job `ix`'s upload, kernel and download on lane `l`, which has nothing in flight.
    fn enqueue<T: Real>(
        &mut self,
        l: usize,
        ix: usize,
        job: &Job<'_, T>,
        f: &CudaFunction,
    ) -> Result<(), BackendError> {
        let layout = Layout::of(job);
        let ctx = self.ctx.clone();
        let block = self.block;
        let Lane {
            stream,
            up,
            down,
            buf,
            flight,
        } = &mut self.lanes[l];
        // Counters that start at zero are zeroed on the device with the outputs, not
        // uploaded: a fifth of a subject's bytes less to fill on the host and to send.
        let up_len = match (job.metrics_nan, job.counters_in) {
            (true, _) => layout.metrics.end,
            (false, Some(_)) => layout.counters.end,
            (false, None) => layout.arm.end,
        };
        let host = staging(&ctx, up, up_len, true)?;
        host[layout.params.clone()].copy_from_slice(bytemuck::cast_slice(job.params));
        host[layout.scale.clone()].copy_from_slice(bytemuck::cast_slice(job.scale));
        host[layout.arm.clone()].copy_from_slice(bytemuck::cast_slice(job.arm));
        if let Some(c) = job.counters_in {
            let counters = &mut host[layout.counters.clone()];
            let c: &[u8] = bytemuck::cast_slice(c);
            counters[..c.len()].copy_from_slice(c);
            counters[c.len()..].fill(0);
        }
        if job.metrics_nan {
            if job.counters_in.is_none() {
                host[layout.counters.clone()].fill(0);
            }
            let nan = T::of(f64::NAN);
            let nan = bytemuck::bytes_of(&nan);
            for v in host[layout.metrics.clone()].chunks_exact_mut(nan.len()) {
                v.copy_from_slice(nan);
            }
        }
        if buf.as_ref().is_none_or(|b| b.len() < layout.profiles.end) {
            let cap = layout.profiles.end + layout.profiles.end / 8;
            // SAFETY: uninitialised device memory; the upload and the zeroing below write
            // every byte the kernel reads before it reads it.
            *buf = Some(unsafe { stream.alloc::<u8>(cap) }.map_err(driver)?);
        }
        let dev = buf.as_mut().ok_or_else(|| failed("no device buffer"))?;
        stream
            .memcpy_htod(&host[..up_len], &mut dev.slice_mut(..up_len))
            .map_err(driver)?;
        let zeroed = match (job.metrics_nan, job.counters_in) {
            (true, _) => layout.metrics.end,
            (false, Some(_)) => layout.metrics.start,
            (false, None) => layout.counters.start,
        };
        stream
            .memset_zeros(&mut dev.slice_mut(zeroed..layout.profiles.end))
            .map_err(driver)?;
        let base = dev.device_ptr(stream).0;
        let at = |r: &Range<usize>| base + r.start as u64;
        let (params, scale, arm) = (at(&layout.params), at(&layout.scale), at(&layout.arm));
        let (metrics, counters, profiles) = (
            at(&layout.metrics),
            at(&layout.counters),
            at(&layout.profiles),
        );
        let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = stream.record_event(timed).map_err(driver)?;
        let cfg = LaunchConfig {
            grid_dim: ((job.n as u32).div_ceil(block), 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(f);
        launch
            .arg(&params)
            .arg(&scale)
            .arg(&arm)
            .arg(&job.meta)
            .arg(&metrics)
            .arg(&counters)
            .arg(&profiles);
        // SAFETY: the arguments match the kernel's signature in kernels/integrate.cu (device
        // pointers into this lane's buffer, which holds every region at its size for job.n
        // subjects, and Meta by value); the buffer lives until the lane's stream is done.
        unsafe { launch.launch(cfg) }.map_err(driver)?;
        let end = stream.record_event(timed).map_err(driver)?;
        let d_len = layout.download_end - layout.counters.start;
        let host = staging(&ctx, down, d_len, false)?;
        stream
            .memcpy_dtoh(
                &dev.slice(layout.counters.start..layout.download_end),
                &mut host[..d_len],
            )
            .map_err(driver)?;
        *flight = Some(InFlight {
            job: ix,
            layout,
            start,
            end,
        });
        Ok(())
    }

    /// Waits for lane `l`'s job and hands what it wrote to `take`, read in place from the
    /// lane's page-locked download buffer.
    fn finish<T: Real>(
        &mut self,
        l: usize,
        take: &Take<'_, T>,
    ) -> Result<Option<InFlight>, BackendError> {
        let lane = &mut self.lanes[l];
        let Some(fl) = lane.flight.take() else {
            return Ok(None);
        };
        let t_wait = Instant::now();
        lane.stream.synchronize().map_err(driver)?;
        self.waited += t_wait.elapsed();
        let t_take = Instant::now();
        let host = lane
            .down
            .as_ref()
            .ok_or_else(|| failed("no staging buffer"))?
            .as_slice()
            .map_err(driver)?;
        let lay = &fl.layout;
        let profiles = if lay.download_end == lay.profiles.end {
            &host[lay.down(&lay.profiles)]
        } else {
            &[]
        };
        let (counters, metrics, profiles) = (
            values::<u32>(&host[lay.down(&lay.counters)]),
            values::<T>(&host[lay.down(&lay.metrics)]),
            values::<T>(profiles),
        );
        take(
            fl.job,
            Written {
                metrics: &metrics,
                counters: &counters,
                profiles: &profiles,
            },
        );
        self.took += t_take.elapsed();
        Ok(Some(fl))
    }

    /// Runs this device's jobs round its lanes, handing each one's results to `take`; the span
    /// from the first kernel's start to the last one's end.
    fn run<T: Real>(
        &mut self,
        jobs: &[(usize, &Job<'_, T>)],
        ptx: &PtxCache,
        take: &Take<'_, T>,
    ) -> DeviceRun {
        let result = self.run_lanes(jobs, ptx, take);
        if result.is_err() {
            for lane in &mut self.lanes {
                let _ = lane.stream.synchronize();
                lane.flight = None;
            }
        }
        result
    }

    fn run_lanes<T: Real>(
        &mut self,
        jobs: &[(usize, &Job<'_, T>)],
        ptx: &PtxCache,
        take: &Take<'_, T>,
    ) -> DeviceRun {
        self.staged = Duration::ZERO;
        self.waited = Duration::ZERO;
        self.took = Duration::ZERO;
        let mut events = Vec::with_capacity(jobs.len());
        let mut keep = |fl: Option<InFlight>| {
            if let Some(fl) = fl {
                events.push((fl.start, fl.end));
            }
        };
        for (k, (ix, job)) in jobs.iter().enumerate() {
            let key = source_key(job.src);
            let code = ptx
                .get(&(key, self.arch))
                .ok_or_else(|| failed("a kernel was not compiled"))?;
            let f = self.function(key, code)?;
            let l = k % LANES;
            keep(self.finish(l, take)?);
            let t_stage = Instant::now();
            self.enqueue(l, *ix, job, &f)?;
            self.staged += t_stage.elapsed();
        }
        for l in 0..LANES {
            keep(self.finish(l, take)?);
        }
        if trace() {
            eprintln!(
                "cuda#{} {}: {} parts: staging and queueing {:.2} ms, waiting {:.2} ms, taking results {:.2} ms",
                self.instance,
                self.name,
                jobs.len(),
                ms(self.staged),
                ms(self.waited),
                ms(self.took)
            );
        }
        span(&events)
    }
}

/// The values of type T in `bytes` (a region of a staging buffer): read in place, since the
/// regions are aligned (page-locked buffers are page-aligned, regions ALIGN-aligned); copied
/// out only where a region is not aligned for T.
fn values<T: bytemuck::Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [T]> {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(values) => std::borrow::Cow::Borrowed(values),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

/// From the earliest start to the latest end of kernels bracketed by timed events of one
/// context.
fn span(events: &[(CudaEvent, CudaEvent)]) -> Result<Duration, BackendError> {
    let Some((first, _)) = events.first() else {
        return Ok(Duration::ZERO);
    };
    let (mut lo, mut hi) = (0f32, 0f32);
    for (s, e) in events {
        lo = lo.min(first.elapsed_ms(s).map_err(driver)?);
        hi = hi.max(first.elapsed_ms(e).map_err(driver)?);
    }
    Ok(Duration::from_secs_f64(f64::from(hi - lo).max(0.0) / 1e3))
}

fn source_key(src: &str) -> [u8; 32] {
    Sha256::digest(src.as_bytes()).into()
}

/// All devices, and the PTX of every kernel compiled so far, by source and architecture
/// (shared with the backend's siblings, so that each source is compiled once).
pub(super) struct Devices {
    devices: Vec<Device>,
    ptx: Arc<std::sync::Mutex<PtxCache>>,
    tuning: CudaTuning,
}

impl Launcher for Devices {
    fn lanes(&self) -> (usize, usize) {
        (self.devices.len() * LANES, MIN_PART)
    }

    fn launch_all<T: Real>(
        &mut self,
        jobs: &[Job<'_, T>],
        take: &Take<'_, T>,
    ) -> Result<Duration, BackendError> {
        // NVRTC compiles each source once per architecture, before the devices start (a
        // sibling asking for the same source meanwhile waits for it).
        let mut ptx = PtxCache::new();
        {
            let mut compiled = self.ptx.lock().unwrap_or_else(|e| e.into_inner());
            for d in &self.devices {
                for j in jobs {
                    let key = (source_key(j.src), d.arch);
                    if ptx.contains_key(&key) {
                        continue;
                    }
                    let code = match compiled.get(&key) {
                        Some(code) => code.clone(),
                        None => {
                            // Kept between runs (docs/gpu.md, "Kernels kept between runs").
                            let (code, _) = super::cache::compile_ptx(j.src, d.arch, &self.tuning)
                                .map_err(failed)?;
                            let code: Arc<str> = code.into();
                            compiled.insert(key, code.clone());
                            code
                        }
                    };
                    ptx.insert(key, code);
                }
            }
        }
        // Job k goes to device k mod D, each device driven by a thread of its own.
        let nd = self.devices.len();
        let ptx = &ptx;
        let per_device: Vec<Vec<(usize, &Job<'_, T>)>> = (0..nd)
            .map(|d| jobs.iter().enumerate().skip(d).step_by(nd).collect())
            .collect();
        let results: Vec<DeviceRun> = if nd == 1 {
            vec![self.devices[0].run(&per_device[0], ptx, take)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .devices
                    .iter_mut()
                    .zip(&per_device)
                    .map(|(dev, mine)| s.spawn(move || dev.run(mine, ptx, take)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(failed("a device's thread panicked")))
                    })
                    .collect()
            })
        };
        let mut kernel_time = Duration::ZERO;
        for r in results {
            kernel_time = kernel_time.max(r?);
        }
        Ok(kernel_time)
    }
}

/// Whether the CUDA driver and NVRTC libraries can be loaded (the backend is unavailable
/// without either).
fn libraries() -> Result<(), BackendError> {
    let unavailable = |m: &str| Err(BackendError::Unavailable("cuda", m.into()));
    // SAFETY: probes for the shared library without calling into it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return unavailable("no CUDA driver (libcuda) on the library path");
    }
    if !super::nvrtc_available() {
        return unavailable("no NVRTC (libnvrtc) on the library path");
    }
    Ok(())
}

/// The CUDA backend on every device of the machine.
pub struct CudaBackend {
    host: Host<Devices>,
}

impl CudaBackend {
    /// Opens every device, with the tuning of `VPOP_CUDA_TUNING` (the default where it is
    /// unset); a clear error (never a panic) without a driver or a device.
    pub fn new(
        model: Arc<CompiledModel>,
        precision: Precision,
    ) -> Result<CudaBackend, BackendError> {
        // Without a driver or NVRTC the backend is unavailable whatever the tuning says (so
        // `backend = "auto"` goes on to the others): that first.
        let tuning = CudaTuning::from_env().map_err(|e| match libraries() {
            Err(unavailable) => unavailable,
            Ok(()) => BackendError::Failed(e),
        })?;
        CudaBackend::tuned(model, precision, tuning)
    }

    /// Opens every device, compiling and launching the kernels as `tuning` says.
    pub fn tuned(
        model: Arc<CompiledModel>,
        precision: Precision,
        tuning: CudaTuning,
    ) -> Result<CudaBackend, BackendError> {
        libraries()?;
        let unavailable = |m: String| BackendError::Unavailable("cuda", m);
        let listed = match std::env::var("VPOP_CUDA_DEVICES") {
            Ok(v) if !v.trim().is_empty() => Some(
                v.split(',')
                    .map(|x| x.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        BackendError::Failed(format!(
                            "VPOP_CUDA_DEVICES={v:?}: expected device ordinals such as 0,1"
                        ))
                    })?,
            ),
            _ => None,
        };
        let opened = std::panic::catch_unwind(|| -> Result<Vec<Device>, String> {
            let n = CudaContext::device_count().map_err(|e| format!("{e:?}"))?;
            if n < 1 {
                return Err("the driver shows no device".into());
            }
            let ordinals = listed.unwrap_or_else(|| (0..n as usize).collect());
            if let Some(bad) = ordinals.iter().find(|o| **o >= n as usize) {
                return Err(format!(
                    "VPOP_CUDA_DEVICES names device {bad}, but the driver shows {n}"
                ));
            }
            ordinals.into_iter().map(Device::open).collect()
        });
        let mut devices = match opened {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(unavailable(format!("no CUDA device: {e}"))),
            Err(_) => return Err(unavailable("the CUDA driver could not be loaded".into())),
        };
        for d in &mut devices {
            d.block = tuning.block;
        }
        let order =
            (!tuning.natural_order).then(|| Arc::new(crate::backend::order::SubjectOrder::new()));
        Ok(CudaBackend {
            host: Host {
                model,
                precision,
                launcher: Devices {
                    devices,
                    ptx: Arc::new(std::sync::Mutex::new(HashMap::new())),
                    tuning,
                },
                label: "cuda",
                order,
                instance: 0,
                instances: Arc::new(1.into()),
            },
        })
    }

    /// How many devices take a share of each launch.
    pub fn device_count(&self) -> usize {
        self.host.launcher.devices.len()
    }

    /// Another backend on the same devices, with streams, staging buffers and loaded kernels
    /// of its own, sharing this one's compiled PTX.
    fn open_sibling(&self) -> Result<CudaBackend, BackendError> {
        let l = &self.host.launcher;
        let instance = self.host.next_instance();
        let devices = l
            .devices
            .iter()
            .map(|d| {
                let mut s = Device::open(d.ordinal).map_err(failed)?;
                s.block = d.block;
                s.instance = instance;
                Ok(s)
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(CudaBackend {
            host: Host {
                model: self.host.model.clone(),
                precision: self.host.precision,
                launcher: Devices {
                    devices,
                    ptx: l.ptx.clone(),
                    tuning: l.tuning.clone(),
                },
                label: self.host.label,
                order: self.host.order.clone(),
                instance,
                instances: self.host.instances.clone(),
            },
        })
    }
}

/// A CUDA device as `vpop devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub arch: String,
    pub memory_bytes: usize,
    pub multiprocessors: i32,
}

/// The CUDA devices the driver shows, or why there are none (never a panic).
pub fn list_devices() -> Result<Vec<DeviceInfo>, String> {
    // SAFETY: probes for the shared library without calling into it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda) on the library path".into());
    }
    let listed = std::panic::catch_unwind(|| -> Result<Vec<DeviceInfo>, String> {
        let e = |e: cudarc::driver::DriverError| format!("{e:?}");
        let n = CudaContext::device_count().map_err(e)?;
        (0..n.max(0) as usize)
            .map(|ordinal| {
                let ctx = CudaContext::new(ordinal).map_err(e)?;
                let (major, minor) = ctx.compute_capability().map_err(e)?;
                Ok(DeviceInfo {
                    ordinal,
                    name: ctx.name().map_err(e)?,
                    arch: format!("sm_{major}{minor}"),
                    memory_bytes: ctx.total_mem().map_err(e)?,
                    multiprocessors: ctx
                        .attribute(
                            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                        )
                        .map_err(e)?,
                })
            })
            .collect()
    });
    listed.unwrap_or_else(|_| Err("the CUDA driver could not be loaded".into()))
}

/// "NAME (sm_XX)" for one device, "N × NAME (sm_XX)" for several alike, a list otherwise.
fn describe(devices: &[Device]) -> String {
    let each: Vec<String> = devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.arch))
        .collect();
    match each.as_slice() {
        [one] => one.clone(),
        [first, rest @ ..] if rest.iter().all(|d| d == first) => {
            format!("{} × {first}", each.len())
        }
        _ => each.join(", "),
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "cuda",
            device: match &self.host.launcher.tuning {
                t if *t == CudaTuning::default() => describe(&self.host.launcher.devices),
                t => format!("{} [{}]", describe(&self.host.launcher.devices), t.label()),
            },
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
    /// 2^20 subjects per device (three streams of ~350 000 threads each).
    fn preferred_batch(&self) -> usize {
        (1 << 20) * self.host.launcher.devices.len()
    }

    /// Two: while one host thread packs a call's parameters and unpacks its results, the
    /// other's kernels run (on the H200, a call of 2^20 quickstart subjects ran its kernels in
    /// 13 ms of 39 ms, docs/gpu.md).
    fn integrators(&self) -> usize {
        2
    }

    fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
        Some(self.open_sibling().map(|b| Box::new(b) as Box<dyn Backend>))
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    /// The values of a staging region are those of its bytes, read in place where the region
    /// is aligned for their type and copied out where it is not.
    #[test]
    fn results_are_read_whatever_their_alignment() {
        let want: Vec<f64> = (0..9).map(|i| i as f64 * 0.5 - 1.0).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&want);
        let aligned = values::<f64>(bytes);
        assert!(matches!(aligned, std::borrow::Cow::Borrowed(_)));
        assert_eq!(aligned.as_ref(), &want[..]);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(bytes);
        let unaligned = values::<f64>(&shifted[1..]);
        assert!(matches!(unaligned, std::borrow::Cow::Owned(_)));
        assert_eq!(unaligned.as_ref(), &want[..]);
        let words = values::<u32>(&bytes[..16]);
        assert_eq!(
            words.as_ref(),
            &bytemuck::pod_collect_to_vec::<u8, u32>(&bytes[..16])[..]
        );
        assert!(values::<f32>(&[]).is_empty());
    }
}
