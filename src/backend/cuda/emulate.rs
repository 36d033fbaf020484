//! The CUDA integrator kernel run on the CPU: the very source NVRTC compiles for a device,
//! built by the system C++ compiler between a prelude of host definitions of the CUDA it uses
//! (`kernels/host_prelude.h`) and an entry point that runs the kernel's threads one after
//! another (`kernels/host_entry.h`), loaded as a shared library and called on the same buffers
//! the device would get.
//!
//! This exists to check the kernels where there is no GPU (CI): [`EmulatedCuda`] is a
//! [`Backend`] that computes what the device computes, up to the last bits of the math library
//! and of fused multiply-adds (the emulation contracts none). It is as slow as a
//! single-threaded CPU integrator per core and is not offered to trial specs.
//!
//! The C++ compiler is `$CXX`, else `c++`, `g++` or `clang++` on the PATH. Libraries are cached
//! by the SHA-256 of the compiler, its flags and the source in `$XDG_CACHE_HOME/vpop/cuda-emulation`
//! (or `~/.cache/vpop/cuda-emulation`, or a private directory in the temporary directory), and
//! stay loaded for the life of the process.

use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::host::{Host, Job, Launcher, Meta, Real, Take, Written, BLOCK};
use super::OpCounts;
use crate::backend::order::SubjectOrder;
use crate::backend::records::{Program, RecordsOutcome};
use crate::backend::{
    ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput, Precision,
};
use crate::model::CompiledModel;
use crate::solver::SolverOptions;

/// Host definitions of the CUDA the kernel uses; opens the namespace the kernel goes in.
pub const HOST_PRELUDE: &str = include_str!("../../../kernels/host_prelude.h");
/// The exported entry point; closes the namespace.
pub const HOST_ENTRY: &str = include_str!("../../../kernels/host_entry.h");
/// A number type that counts the operations done with it (counting builds).
pub const HOST_COUNT: &str = include_str!("../../../kernels/host_count.h");

/// The exported entry point's name.
const ENTRY: &CStr = c"vpop_emulate_integrate";
/// A counting build's function that hands over the calling thread's counts.
const TAKE_COUNTS: &CStr = c"vpop_emulate_take_counts";

/// `vpop_emulate_take_counts` of kernels/host_count.h.
type TakeCountsFn = unsafe extern "C" fn(*mut u64);

/// Flags of every build (no fast-math: IEEE arithmetic in the kernel's own precision).
const FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-ffp-contract=off",
    "-w",
];

const NAME: &str = "cuda-emulated";

/// `vpop_emulate_integrate` of kernels/host_entry.h for `real` = T: the kernel's seven
/// arguments (Meta by pointer), then block size, grid size, first block and end block.
pub(super) type EntryFn<T> = unsafe extern "C" fn(
    *const T,
    *const T,
    *const T,
    *const Meta<T>,
    *mut T,
    *mut u32,
    *mut T,
    u32,
    u32,
    u32,
    u32,
);

/// The entry point of a loaded library, for the precision it was built for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Entry {
    F32(EntryFn<f32>),
    F64(EntryFn<f64>),
}

fn failed(m: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{NAME}: {m}"))
}

/// The C++ compiler: a program, arguments from `$CXX`, and the first line of `--version`.
#[derive(Debug, Clone)]
struct Compiler {
    program: String,
    args: Vec<String>,
    version: String,
}

impl Compiler {
    fn find() -> Result<Compiler, String> {
        let from_env: Option<Vec<String>> = std::env::var("CXX")
            .ok()
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .filter(|v: &Vec<String>| !v.is_empty());
        let candidates: Vec<Vec<String>> = match from_env {
            Some(v) => vec![v],
            None => ["c++", "g++", "clang++"]
                .iter()
                .map(|c| vec![c.to_string()])
                .collect(),
        };
        for c in &candidates {
            let Ok(out) = Command::new(&c[0]).args(&c[1..]).arg("--version").output() else {
                continue;
            };
            if out.status.success() {
                let version = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return Ok(Compiler {
                    program: c[0].clone(),
                    args: c[1..].to_vec(),
                    version,
                });
            }
        }
        let tried: Vec<String> = candidates.iter().map(|c| c.join(" ")).collect();
        Err(format!(
            "no C++ compiler to build the emulated kernels (tried {}; install g++ or set CXX)",
            tried.join(", ")
        ))
    }
}

/// The directory of built libraries, private to the user.
fn cache_dir() -> Result<PathBuf, String> {
    super::cache::user_dir("cuda-emulation")
}

/// A loaded library's entry point, and its count function when it is a counting build.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    entry: Entry,
    take_counts: Option<TakeCountsFn>,
}

type Cell = Arc<OnceLock<Result<Loaded, String>>>;

/// Libraries loaded by this process, by key; each is built and loaded once.
fn loaded() -> &'static Mutex<HashMap<String, Cell>> {
    static LOADED: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The last dynamic-linker error.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by the C library, valid
    // until the next dl call on this thread; it is copied at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Loads a library built by [`Emulator::build`] and finds its entry point. The library is never
/// unloaded, so the entry point stays valid for the life of the process.
fn load(path: &Path, precision: Precision, counting: bool) -> Result<Loaded, String> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL byte in the path", path.display()))?;
    // SAFETY: `c` is a NUL-terminated path to a library this module built from the prelude, a
    // generated kernel and the entry point; it defines no initialisers that run on loading.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!("loading {}: {}", path.display(), dl_error()));
    }
    // A symbol of the library, or an error naming what is missing.
    let symbol = |name: &CStr, what: &str| -> Result<*mut c_void, String> {
        // SAFETY: `handle` is a live handle (never closed) and `name` a NUL-terminated name.
        let sym: *mut c_void = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if sym.is_null() {
            Err(format!("{}: no {what}: {}", path.display(), dl_error()))
        } else {
            Ok(sym)
        }
    };
    let sym = symbol(ENTRY, "entry point")?;
    // SAFETY: `sym` is `vpop_emulate_integrate` of kernels/host_entry.h, whose C signature is
    // `EntryFn<real>`, and the library was built from a source whose `real` is the type of
    // `precision` (the precision is part of the generated source, hence of the key), or a
    // counting number of the same size and layout (kernels/host_count.h).
    let entry = unsafe {
        match precision {
            Precision::F32 => Entry::F32(std::mem::transmute::<*mut c_void, EntryFn<f32>>(sym)),
            Precision::F64 => Entry::F64(std::mem::transmute::<*mut c_void, EntryFn<f64>>(sym)),
        }
    };
    let take_counts = if counting {
        let sym = symbol(TAKE_COUNTS, "count function")?;
        // SAFETY: `sym` is `vpop_emulate_take_counts`, of C signature `TakeCountsFn`.
        Some(unsafe { std::mem::transmute::<*mut c_void, TakeCountsFn>(sym) })
    } else {
        None
    };
    Ok(Loaded { entry, take_counts })
}

/// Builds and runs kernels on the host.
pub(super) struct Emulator {
    compiler: Compiler,
    dir: PathBuf,
    /// Parts each launch is split into (as a device's streams would split it).
    lanes: usize,
    /// Counting builds: `real` counts its operations (kernels/host_count.h), launches run on
    /// the calling thread, and the counts add up here.
    counting: Option<Mutex<OpCounts>>,
}

impl Emulator {
    /// The entry point of the library built from a kernel source, built (or taken from the
    /// cache) and loaded on first use.
    fn entry(&self, src: &str, precision: Precision) -> Result<Loaded, String> {
        let counting = self.counting.is_some();
        let cpp = if counting {
            let real = super::codegen::real_type(precision);
            let plain = format!("typedef {real} real;");
            if !src.contains(&plain) {
                return Err(format!("the kernel source does not declare `{plain}`"));
            }
            let src = src.replacen(&plain, &format!("typedef vpop_counted<{real}> real;"), 1);
            format!("{HOST_PRELUDE}\n{HOST_COUNT}\n{src}\n{HOST_ENTRY}")
        } else {
            format!("{HOST_PRELUDE}\n{src}\n{HOST_ENTRY}")
        };
        let flags = FLAGS.join(" ");
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in [&self.compiler.version, &self.compiler.program]
            .into_iter()
            .chain(&self.compiler.args)
        {
            parts.extend([part.as_bytes(), b"\0"]);
        }
        parts.extend([flags.as_bytes(), b"\0", cpp.as_bytes()]);
        let key = super::cache::sha256_hex(&parts);
        let cell = {
            let mut map = loaded().lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        cell.get_or_init(|| {
            let so = self.dir.join(format!("{key}.so"));
            if so.is_file() {
                if let Ok(e) = load(&so, precision, counting) {
                    return Ok(e);
                }
                // A library that does not load is rebuilt.
                let _ = std::fs::remove_file(&so);
            }
            self.build(&cpp, &key, &so)?;
            load(&so, precision, counting)
        })
        .clone()
    }

    /// Compiles `cpp` into the library `so`, through a file of this process that is renamed
    /// into place, so that concurrent builds of the same source never see a partial library.
    fn build(&self, cpp: &str, key: &str, so: &Path) -> Result<(), String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tag = format!(
            "{key}.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let src = self.dir.join(format!("{tag}.cpp"));
        let tmp = self.dir.join(format!("{tag}.so"));
        std::fs::write(&src, cpp).map_err(|e| format!("writing {}: {e}", src.display()))?;
        let out = Command::new(&self.compiler.program)
            .args(&self.compiler.args)
            .args(FLAGS)
            .arg("-o")
            .arg(&tmp)
            .args(["-x", "c++"])
            .arg(&src)
            .args(["-x", "none", "-lm"])
            .output()
            .map_err(|e| format!("running {}: {e}", self.compiler.program))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            let kept = self.dir.join(format!("{key}.cpp"));
            let _ = std::fs::rename(&src, &kept);
            let log = String::from_utf8_lossy(&out.stderr);
            let head: Vec<&str> = log.lines().take(40).collect();
            return Err(format!(
                "{} could not build the emulated kernel {}:\n{}",
                self.compiler.program,
                kept.display(),
                head.join("\n")
            ));
        }
        let _ = std::fs::remove_file(&src);
        std::fs::rename(&tmp, so).map_err(|e| format!("{}: {e}", so.display()))
    }
}

/// Output buffers shared by the host threads of one emulated launch.
struct Outputs<T> {
    metrics: *mut T,
    counters: *mut u32,
    profiles: *mut T,
}

// SAFETY: the pointers are only used by `Outputs::run`, whose calls write disjoint elements
// (the outputs of their own subjects), while the vectors they point into outlive them.
unsafe impl<T: Send> Send for Outputs<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Outputs<T> {}

impl<T: Real> Outputs<T> {
    /// Runs blocks [first, end) of a launch of `grid` blocks.
    fn run(&self, f: EntryFn<T>, job: &Job<'_, T>, grid: u32, first: u32, end: u32) {
        // SAFETY: `f` is the entry point of the kernel built from `job.src` for T. The input
        // slices and the output buffers have the lengths the device would get for `job.n`
        // subjects (the kernel's indexing is bounded by them: metrics `[m * n + i]`, counters
        // `[i * 5 + c]`, profiles `[(k * n + i) * n_times + j]`, subject i < n). Each call
        // writes only the outputs of the subjects of its own blocks, so concurrent calls for
        // disjoint block ranges never write the same element; the kernel's other state is on
        // the stack and in thread-locals.
        unsafe {
            f(
                job.params.as_ptr(),
                job.scale.as_ptr(),
                job.arm.as_ptr(),
                &job.meta,
                self.metrics,
                self.counters,
                self.profiles,
                BLOCK,
                grid,
                first,
                end,
            )
        }
    }
}

impl Emulator {
    /// Runs a job; what it wrote: metrics, counters and profiles (empty when the arm samples
    /// none).
    fn launch<T: Real>(&self, job: &Job<'_, T>) -> Result<Wrote<T>, BackendError> {
        let loaded = self.entry(job.src, T::PRECISION).map_err(failed)?;
        let f =
            T::emulated(&loaded.entry).ok_or_else(|| failed("a library of the other precision"))?;
        let n = u32::try_from(job.n).map_err(|_| failed("too many subjects for one launch"))?;
        let first = if job.metrics_nan {
            T::of(f64::NAN)
        } else {
            T::default()
        };
        let mut metrics = vec![first; job.metrics_len];
        let mut counters = match job.counters_in {
            Some(c) => c.to_vec(),
            None => vec![0u32; job.counters_len],
        };
        let mut profiles = vec![T::default(); job.profiles_len];
        let grid = n.div_ceil(BLOCK);
        // As many parts as threads, each a range of whole blocks.
        let parts = (rayon::current_num_threads() as u32).clamp(1, grid.max(1));
        let per = grid.div_ceil(parts).max(1);
        let outputs = Outputs {
            metrics: metrics.as_mut_ptr(),
            counters: counters.as_mut_ptr(),
            profiles: profiles.as_mut_ptr(),
        };
        match (&self.counting, loaded.take_counts) {
            (Some(total), Some(take)) => {
                // On this thread, whose counters the kernel's operations go to.
                let mut raw = [0u64; 8];
                // SAFETY: `take` writes the 8 counters of kernels/host_count.h into `raw`.
                unsafe { take(raw.as_mut_ptr()) };
                outputs.run(f, job, grid, 0, grid);
                // SAFETY: as above.
                unsafe { take(raw.as_mut_ptr()) };
                total
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add_raw(&raw);
            }
            _ => (0..grid.div_ceil(per)).into_par_iter().for_each(|c| {
                outputs.run(f, job, grid, c * per, ((c + 1) * per).min(grid));
            }),
        }
        if job.meta.n_times == 0 {
            profiles.clear();
        }
        Ok((metrics, counters, profiles))
    }
}

/// What an emulated launch wrote: metrics, counters, profiles.
type Wrote<T> = (Vec<T>, Vec<u32>, Vec<T>);

impl Launcher for Emulator {
    fn lanes(&self) -> (usize, usize) {
        (self.lanes, 1)
    }

    fn launch_all<T: Real>(
        &mut self,
        jobs: &[Job<'_, T>],
        take: &Take<'_, T>,
    ) -> Result<std::time::Duration, BackendError> {
        let mut kernels = std::time::Duration::ZERO;
        for (ix, j) in jobs.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let (metrics, counters, profiles) = self.launch(j)?;
            kernels += t0.elapsed();
            take(
                ix,
                Written {
                    metrics: &metrics,
                    counters: &counters,
                    profiles: &profiles,
                },
            );
        }
        Ok(kernels)
    }
}

/// The CUDA integrator kernel, emulated on the host (see the module documentation).
pub struct EmulatedCuda {
    host: Host<Emulator>,
}

impl EmulatedCuda {
    /// Finds the C++ compiler and the cache directory; `BackendError::Unavailable` without them.
    pub fn new(
        model: Arc<CompiledModel>,
        precision: Precision,
    ) -> Result<EmulatedCuda, BackendError> {
        let unavailable = |m: String| BackendError::Unavailable(NAME, m);
        let compiler = Compiler::find().map_err(unavailable)?;
        let dir = cache_dir().map_err(unavailable)?;
        Ok(EmulatedCuda {
            host: Host {
                model,
                precision,
                launcher: Emulator {
                    compiler,
                    dir,
                    lanes: 1,
                    counting: None,
                },
                label: NAME,
                order: Some(Arc::new(SubjectOrder::new())),
                instance: 0,
                instances: Arc::new(1.into()),
            },
        })
    }

    /// A counting build: the same kernel with a `real` that counts every operation done with
    /// it (kernels/host_count.h), run on one thread; [`EmulatedCuda::op_counts`] gives the
    /// totals. Results are those of the plain build.
    pub fn counting(
        model: Arc<CompiledModel>,
        precision: Precision,
    ) -> Result<EmulatedCuda, BackendError> {
        let mut e = EmulatedCuda::new(model, precision)?;
        e.host.launcher.counting = Some(Mutex::new(OpCounts::default()));
        Ok(e)
    }

    /// The operations of every launch so far (zero unless built by [`EmulatedCuda::counting`]).
    pub fn op_counts(&self) -> OpCounts {
        self.host
            .launcher
            .counting
            .as_ref()
            .map(|c| *c.lock().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_default()
    }

    /// Splits every launch into `lanes` parts run one after another, as a machine's streams
    /// and devices split it (for tests that results do not depend on the split).
    pub fn with_lanes(mut self, lanes: usize) -> EmulatedCuda {
        self.host.launcher.lanes = lanes.max(1);
        self
    }

    /// Subjects handed to threads in the order they were sampled in, as with the tuning
    /// `order=natural` on a device (for tests that results do not depend on the order).
    pub fn in_natural_order(mut self) -> EmulatedCuda {
        self.host.order = None;
        self
    }
}

impl Backend for EmulatedCuda {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: NAME,
            device: format!(
                "CUDA kernels emulated on the host ({})",
                self.host.launcher.compiler.version
            ),
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
    /// 2^20 subjects per device (three streams of ~350 000 threads each). As the device would.
    fn preferred_batch(&self) -> usize {
        1 << 20
    }
    fn op_counts(&self) -> Option<OpCounts> {
        self.host
            .launcher
            .counting
            .is_some()
            .then(|| self.op_counts())
    }
    fn no_sibling(&self) -> &'static str {
        "a counting build counts in one place"
    }
    /// Another emulation with the same lanes (a counting build has none: its counts add up in
    /// one place).
    fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
        let l = &self.host.launcher;
        if l.counting.is_some() {
            return None;
        }
        Some(Ok(Box::new(EmulatedCuda {
            host: Host {
                model: self.host.model.clone(),
                precision: self.host.precision,
                launcher: Emulator {
                    compiler: l.compiler.clone(),
                    dir: l.dir.clone(),
                    lanes: l.lanes,
                    counting: None,
                },
                label: NAME,
                order: self.host.order.clone(),
                instance: self.host.next_instance(),
                instances: self.host.instances.clone(),
            },
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_the_compiler_rejects_is_an_error() {
        let Ok(compiler) = Compiler::find() else {
            println!("SKIPPED: no C++ compiler");
            return;
        };
        let e = Emulator {
            compiler,
            dir: cache_dir().unwrap(),
            lanes: 1,
            counting: None,
        };
        let err = e.entry("not a kernel", Precision::F32).unwrap_err();
        assert!(err.contains("could not build the emulated kernel"), "{err}");
    }
}
