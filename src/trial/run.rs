//! The trial pipeline: chunks of subjects flow through sampling → backend integration →
//! Arrow/Parquet encoding, three stages overlapped through bounded channels, so memory is
//! bounded by the chunk size (a few chunks in flight) whatever the number of subjects.
//!
//! Every virtual subject receives every arm (a paired design): subject i has the same
//! covariates and parameters in all arms, so arm differences are not sampling noise.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::bounded;

use super::encode::{Columns, CovariateColumn, RowLayout};
use super::resolve::{BackendChoice, ParamSource, Trial};
use super::summary::{summarize, Tally};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, BackendInfo, ChunkInput, ChunkOutput, OutputView};
use crate::output::{DatasetWriter, RunIdentity, Shard};
use crate::population::SampledChunk;

/// Options of one `vpop run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub shard: Option<Shard>,
    pub quiet: bool,
    pub overwrite: bool,
    /// Overrides the spec's backend.
    pub backend: Option<BackendChoice>,
    /// Overrides the spec's subjects per arm.
    pub subjects: Option<u64>,
    /// Overrides the chunk size.
    pub chunk_size: Option<usize>,
    /// Overrides the spec's output directory.
    pub output_dir: Option<PathBuf>,
    /// Stop after this many newly written parts (for tests of resumption).
    pub stop_after_parts: Option<u64>,
    /// Host threads driving the backend's calls, each with an instance of its own (default:
    /// the backend's [`Backend::integrators`]; a backend without siblings runs one; at most
    /// [`MAX_INTEGRATORS`]).
    pub integrators: Option<usize>,
}

/// Summary of one metric in one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    pub column: String,
    pub n: u64,
    pub median: f64,
    pub p5: f64,
    pub p95: f64,
}

/// Summary of one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSummary {
    pub name: String,
    pub subjects: u64,
    pub failed: u64,
    /// The failed subjects by status (`non_finite`, `max_steps`, …), in label order.
    pub failures: Vec<(String, u64)>,
    pub metrics: Vec<MetricSummary>,
    /// Probability of target attainment among successful subjects.
    pub target_attainment: Option<f64>,
    /// The subjects that probability is over: those with a value of the target's metric.
    pub target_subjects: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub backend: BackendInfo,
    pub backend_reason: String,
    pub dir: PathBuf,
    pub subjects: u64,
    pub parts_written: u64,
    pub parts_resumed: u64,
    pub wall: Duration,
    /// Time the backend spent integrating (the rest is sampling, encoding and writing that the
    /// pipeline did not hide).
    pub integrate: Duration,
    /// Busy time of the sampling stage (overlapped with integration).
    pub sampling: Duration,
    /// Busy time of the encoding and writing workers, summed (overlapped).
    pub encoding: Duration,
    /// The summary's quantiles after the pipeline (and reading back the parts that need it).
    pub summary: Duration,
    /// Backend calls (consecutive chunks are merged into one call for GPU backends).
    pub calls: u64,
    /// Of `integrate`, the time the device spent in kernels (zero for the CPU backend).
    pub kernel: Duration,
    /// Host threads that drove the backend, each with an instance of its own; `integrate`,
    /// `kernel` and `calls` are summed over them.
    pub integrators: usize,
    /// Why fewer host threads drove the backend than were asked for (`None` when as many did,
    /// or none were asked for).
    pub fewer_integrators: Option<String>,
    /// From the run's start to its pipeline's: choosing and opening the backend (a GPU's
    /// context), its siblings, and the output directory. Kernels are compiled (or taken from
    /// the cache) at their first call, within the pipeline.
    pub startup: Duration,
    /// The pipeline's wall time: sampling, integration, encoding and writing, overlapped.
    pub pipeline: Duration,
    pub arms: Vec<ArmSummary>,
    pub complete: bool,
}

/// The most host threads that drive a backend ([`RunOptions::integrators`]).
pub const MAX_INTEGRATORS: usize = 16;

/// Default subjects per chunk: large enough to amortise per-chunk costs, small enough to keep
/// memory at a few tens of MB.
pub const DEFAULT_CHUNK: usize = 65_536;

/// The most parts (chunks) one run writes: a million files in one folder, 6.6e10 subjects at
/// the default chunk. A run lists its parts before it starts, so a subject count far beyond
/// any machine (a typo of a few zeros) is refused rather than exhausting memory.
pub const MAX_PARTS: u64 = 1_000_000;

/// Why `subjects` in chunks of `chunk` make too many parts, if they do.
pub fn too_many_parts(subjects: u64, chunk: u64) -> Option<String> {
    let parts = subjects.div_ceil(chunk.max(1));
    (parts > MAX_PARTS).then(|| {
        format!(
            "{subjects} subjects in chunks of {chunk} make {parts} parts, and a run writes at most \
             {MAX_PARTS}: lower the subjects, or raise the chunk size ([simulation] chunk_size, \
             --chunk-size)"
        )
    })
}

/// Bytes of sampled parameters one chunk, or one backend call of merged chunks, may hold.
/// Each subject carries the parameters of every occasion of the trial's arms, so with many
/// occasions (up to a thousand) chunks and calls are made smaller to keep memory bounded.
const PARAM_BUDGET: u64 = 256 << 20;

/// Occasions a subject is sampled for: the most of any arm (an arm without `occasions` has
/// one).
fn occasion_count(trial: &Trial) -> usize {
    trial
        .arms
        .iter()
        .map(|a| a.plan.occasions.len() + 1)
        .max()
        .unwrap_or(1)
}

/// Bytes of parameters per subject: every model parameter at every occasion, in f64.
fn param_bytes(trial: &Trial) -> u64 {
    (occasion_count(trial) * trial.params.len().max(1) * 8) as u64
}

/// The default chunk: [`DEFAULT_CHUNK`] subjects, or fewer (a power of two, at least 1024)
/// when their parameters would exceed [`PARAM_BUDGET`].
fn default_chunk(trial: &Trial) -> usize {
    let fit = (PARAM_BUDGET / param_bytes(trial)).max(1024) as usize;
    let pow2 = 1usize << fit.ilog2();
    DEFAULT_CHUNK.min(pow2)
}

/// Encoding-and-writing workers: one per core, at most sixteen (each holds one chunk and its
/// Parquet buffers at a time, ~50 MB at the default chunk size). They share the cores with the
/// sampler's threads and wait while there is nothing to encode; encoding is the host's largest
/// cost (`cargo bench --bench pipeline`), and on 2 cores two workers instead of one took the
/// end-to-end bench from 0.77 to 0.56 s (docs/benchmarks.md).
fn encoders() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.clamp(1, 16)
}

/// Picks a backend and says why.
///
/// `auto` takes CUDA, then a hardware wgpu adapter, then the CPU reference. A software
/// adapter (llvmpipe, WARP, SwiftShader) is never chosen by `auto`: the CPU reference is faster
/// than a rasteriser emulating a GPU on the same cores, and exact in f64.
pub fn select_backend(
    trial: &Trial,
    choice: BackendChoice,
) -> Result<(Box<dyn Backend>, String), String> {
    if matches!(choice, BackendChoice::Cuda | BackendChoice::Auto) {
        // A mistyped tuning is an error, not a reason for `auto` to pass CUDA over.
        crate::backend::cuda::CudaTuning::from_env()?;
    }
    let model = Arc::new(trial.compiled.clone());
    let cpu = || Box::new(CpuBackend::new(model.clone())) as Box<dyn Backend>;
    match choice {
        BackendChoice::Cpu => Ok((cpu(), "requested".into())),
        BackendChoice::Cuda => cuda_backend(model.clone(), trial.precision)
            .map(|(b, name)| (b, format!("requested (device {name})")))
            .map_err(|e| format!("backend 'cuda' is not available: {e}")),
        BackendChoice::Wgpu => wgpu_backend(model.clone(), trial.precision)
            .map(|(b, name)| (b, format!("requested (adapter {name})")))
            .map_err(|e| format!("backend 'wgpu' is not available: {e}")),
        BackendChoice::Auto => {
            let no_cuda = match cuda_backend(model.clone(), trial.precision) {
                Ok((b, name)) => return Ok((b, format!("auto: CUDA device {name} found"))),
                Err(e) => format!("no CUDA ({e})"),
            };
            if trial.precision == crate::backend::Precision::F64 {
                return Ok((
                    cpu(),
                    format!(
                        "auto: {no_cuda}; f64 on wgpu is opt-in (backend = \"wgpu\", on an adapter \
                         with f64 in `vpop devices`): the CPU f64 reference runs on all cores"
                    ),
                ));
            }
            match wgpu_backend(model.clone(), trial.precision) {
                Ok((b, name)) if !is_software(&name) => {
                    Ok((b, format!("auto: {no_cuda}; GPU adapter {name} found")))
                }
                Ok((_, name)) => Ok((
                    cpu(),
                    format!(
                        "auto: {no_cuda}; the only wgpu adapter is a software rasteriser ({name}), \
                         so the CPU f64 reference runs on all cores (backend = \"wgpu\" forces it)"
                    ),
                )),
                Err(e) => Ok((
                    cpu(),
                    format!("auto: {no_cuda}; no wgpu adapter ({e}), so the CPU f64 reference runs on all cores"),
                )),
            }
        }
    }
}

/// The CUDA backend and its device's name.
pub(crate) fn cuda_backend(
    model: Arc<crate::model::CompiledModel>,
    precision: crate::backend::Precision,
) -> Result<(Box<dyn Backend>, String), String> {
    cuda_backend_tuned(model, precision, None)
}

/// The CUDA backend with `tuning`, or with `VPOP_CUDA_TUNING`'s (the default) where `None`.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_backend_tuned(
    model: Arc<crate::model::CompiledModel>,
    precision: crate::backend::Precision,
    tuning: Option<&crate::backend::cuda::CudaTuning>,
) -> Result<(Box<dyn Backend>, String), String> {
    use crate::backend::cuda::CudaBackend;
    let b = match tuning {
        Some(t) => CudaBackend::tuned(model, precision, t.clone()),
        None => CudaBackend::new(model, precision),
    }
    .map_err(why)?;
    let name = format!("'{}'", b.info().device);
    Ok((Box::new(b), name))
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn cuda_backend_tuned(
    _model: Arc<crate::model::CompiledModel>,
    _precision: crate::backend::Precision,
    _tuning: Option<&crate::backend::cuda::CudaTuning>,
) -> Result<(Box<dyn Backend>, String), String> {
    Err("this build of vpop has no CUDA support (cargo feature `cuda`)".into())
}

/// Why a backend is unavailable, without repeating its name.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn why(e: crate::backend::BackendError) -> String {
    match e {
        crate::backend::BackendError::Unavailable(_, m) => m,
        other => other.to_string(),
    }
}

fn is_software(adapter: &str) -> bool {
    adapter.contains("type Cpu")
}

/// The wgpu backend in `precision` and a description of its adapter (name, API and device
/// type).
#[cfg(feature = "wgpu")]
pub(crate) fn wgpu_backend(
    model: Arc<crate::model::CompiledModel>,
    precision: crate::backend::Precision,
) -> Result<(Box<dyn Backend>, String), String> {
    let b = crate::backend::wgpu::WgpuBackend::new(model, precision).map_err(|e| {
        let e = why(e);
        if precision == crate::backend::Precision::F64 {
            format!(
                "{e}; precision = \"f64\" on wgpu needs it: use precision = \"f32\", or \
                 backend = \"cpu\" or \"cuda\" for f64"
            )
        } else {
            e
        }
    })?;
    let a = b.adapter();
    let name = format!("'{}' ({}, type {})", a.name, a.backend, a.device_type);
    Ok((Box::new(b), name))
}

#[cfg(not(feature = "wgpu"))]
pub(crate) fn wgpu_backend(
    _model: Arc<crate::model::CompiledModel>,
    _precision: crate::backend::Precision,
) -> Result<(Box<dyn Backend>, String), String> {
    Err("this build of vpop has no wgpu support (cargo feature `wgpu`)".into())
}

/// The revision of the rules that decide a run's numbers from its inputs (dosing and record
/// semantics, metric definitions, sampling, the solvers' step control), raised with every change
/// that makes the same inputs give other values. Recorded as `vpop.results_revision`: a run is
/// resumed only by a build of the same revision, so one dataset never mixes two rules.
pub const RESULTS_REVISION: u32 = 4;

/// Provenance key-value metadata (deterministic: no times, no thread counts).
pub fn provenance(trial: &Trial, backend: &BackendInfo) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let solver = &trial.arms[0].plan.solver;
    p.insert(
        "vpop.engine".into(),
        format!("vpop {}", env!("CARGO_PKG_VERSION")),
    );
    p.insert("vpop.results_revision".into(), RESULTS_REVISION.to_string());
    p.insert("vpop.trial_name".into(), trial.name.clone());
    p.insert("vpop.trial_spec".into(), trial.spec_text.clone());
    p.insert("vpop.model".into(), trial.model.name.clone());
    p.insert("vpop.model_hash".into(), trial.model.hash());
    p.insert("vpop.model_source".into(), trial.model.source.text.clone());
    if let Some(pop) = &trial.population {
        p.insert("vpop.population".into(), pop.name.clone());
        p.insert("vpop.population_file".into(), pop.file_name().to_string());
        p.insert("vpop.population_hash".into(), pop.hash());
        p.insert(
            "vpop.population_source".into(),
            pop.source_text().to_string(),
        );
        if let Some(levels) = pop.levels_json().filter(|_| trial.write_covariates) {
            p.insert("vpop.levels".into(), levels);
        }
    }
    p.insert("vpop.seed".into(), trial.seed.to_string());
    p.insert("vpop.backend".into(), backend.name.into());
    p.insert("vpop.device".into(), backend.device.clone());
    p.insert("vpop.precision".into(), backend.precision.name().into());
    p.insert("vpop.method".into(), solver.method.name().into());
    p.insert("vpop.rtol".into(), solver.rtol.to_string());
    p.insert("vpop.atol".into(), solver.atol.to_string());
    p.insert("vpop.events".into(), solver.events.name().into());
    // Recorded only where turned off, so that parts written as before keep their bytes.
    if !crate::model::jumps::jump_stops_on() {
        p.insert("vpop.jump_stops".into(), "off".into());
    }
    // The metric columns (`vpop report` draws these; a covariate may be named like one).
    let metrics: Vec<&str> = trial.arms[0]
        .plan
        .metrics
        .iter()
        .map(|m| m.column.as_str())
        .collect();
    p.insert("vpop.metrics".into(), metrics.join(","));
    if !trial.arms[0].plan.sample_times.is_empty() {
        let t: Vec<String> = trial.arms[0]
            .plan
            .sample_times
            .iter()
            .map(|x| x.to_string())
            .collect();
        p.insert("vpop.sample_times".into(), t.join(","));
    }
    p
}

/// Which chunks of a run this invocation writes, where, and the run's identity.
pub(crate) struct RunPlan {
    pub chunk: u64,
    /// This shard's chunks: `c0..c1`.
    pub c0: u64,
    pub c1: u64,
    pub dir: PathBuf,
    pub identity: RunIdentity,
}

/// Refuses, before anything is written, an arm whose tolerance the backend's precision does not
/// resolve (the backends refuse it at their first call too, which would leave a run that
/// cannot be resumed).
pub(crate) fn check_precision(trial: &Trial, info: &BackendInfo) -> Result<(), String> {
    for arm in &trial.arms {
        info.precision.check_rtol(&arm.plan.solver).map_err(|e| {
            format!(
                "arm '{}': {e} on {} in {}; use rtol ≥ 1e-7, or precision = \"f64\"",
                arm.plan.name,
                info.name,
                info.precision.name()
            )
        })?;
    }
    Ok(())
}

/// The chunking (options, then spec, then `default_chunk`), shard and output directory of a
/// run of `subjects` subjects.
pub(crate) fn run_plan(
    trial: &Trial,
    opts: &RunOptions,
    subjects: u64,
    default_chunk: usize,
) -> Result<RunPlan, String> {
    let chunk = opts
        .chunk_size
        .or(trial.chunk_size)
        .unwrap_or(default_chunk)
        .max(1) as u64;
    if let Some(e) = too_many_parts(subjects, chunk) {
        return Err(e);
    }
    let shard = opts.shard.unwrap_or(Shard::WHOLE);
    let (c0, c1) = shard.chunk_range(subjects.div_ceil(chunk));
    Ok(RunPlan {
        chunk,
        c0,
        c1,
        dir: opts
            .output_dir
            .clone()
            .unwrap_or_else(|| trial.output_dir.clone()),
        identity: RunIdentity {
            spec_hash: spec_hash(trial),
            seed: trial.seed,
            subjects,
            chunk_size: chunk,
            shard: shard.label(),
            inputs: inputs(trial),
        },
    })
}

/// Every file a run reads, each with its hash: the spec, the model, the population, and the
/// datasets and records files.
fn inputs(trial: &Trial) -> Vec<crate::output::InputHash> {
    use crate::output::InputHash;
    let mut v = vec![
        InputHash::of_text(
            "trial spec",
            trial.spec_path.display().to_string(),
            &trial.spec_text,
        ),
        InputHash::of_text(
            "model",
            trial.model.source.name.clone(),
            &trial.model.source.text,
        ),
    ];
    if let Some(p) = &trial.population {
        v.push(InputHash::of_text(
            "population",
            p.file_name(),
            p.source_text(),
        ));
    }
    v.extend(trial.input_hashes.iter().cloned());
    v
}

/// The hash of what a run reads: its spec, model and population, and the files it names
/// (dataset, records).
pub(crate) fn spec_hash(trial: &Trial) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(trial.spec_text.as_bytes());
    h.update(trial.model.source.text.as_bytes());
    if let Some(p) = &trial.population {
        h.update(p.source_text().as_bytes());
    }
    // The files the trial reads (dataset, records): a trial without any hashes as before.
    for input in &trial.input_hashes {
        h.update(b"\0input\0");
        h.update(input.blake3.as_bytes());
    }
    format!("sha256:{:x}", h.finalize())
}

/// Row layout of a trial's output.
pub fn layout(trial: &Trial) -> RowLayout {
    let covariates = match (&trial.population, trial.write_covariates) {
        (Some(p), true) => p
            .covariate_names()
            .iter()
            .enumerate()
            .map(|(c, n)| CovariateColumn {
                name: n.to_string(),
                labels: p.covariate_labels(c).map(|l| l.to_vec()),
            })
            .collect(),
        _ => Vec::new(),
    };
    let parameters = if trial.write_parameters {
        trial.model.params.iter().map(|p| p.name.clone()).collect()
    } else {
        Vec::new()
    };
    let arm = &trial.arms[0].plan;
    RowLayout::new(Columns {
        arms: trial.arms.iter().map(|a| a.plan.name.clone()).collect(),
        covariates,
        parameters,
        metrics: arm.metrics.iter().map(|m| m.column.clone()).collect(),
        profile_outputs: trial.model.outputs.iter().map(|o| o.name.clone()).collect(),
        n_times: arm.sample_times.len(),
        times: arm.sample_times.clone(),
        profile_f16: trial.profile_f16,
        observations: trial
            .observations
            .iter()
            .map(|(k, _)| trial.model.outputs[*k].name.clone())
            .collect(),
    })
}

/// A sampled chunk with the model's parameter columns.
pub(crate) struct Sampled {
    pub part: u64,
    pub first: u64,
    pub n: usize,
    pub covariates: Vec<Vec<f64>>,
    pub params: Vec<Vec<f64>>,
    /// `occasion_params[k][p][i]`: the model's parameter p at occasion k + 2.
    pub occasion_params: Vec<Vec<Vec<f64>>>,
}

/// An integration thread's busy time, its device kernels' time and its calls.
#[derive(Default)]
struct Busy {
    integrate: Duration,
    kernel: Duration,
    calls: u64,
}

/// How an integration thread groups sampled chunks into backend calls: at most `per_call`
/// chunks, and no more once the call holds `batch` subjects.
#[derive(Clone, Copy)]
struct Calls {
    per_call: usize,
    batch: usize,
}

/// One integration thread: takes the next sampled chunks as a call on `backend`, every arm,
/// and sends each chunk on with its range of the call's outputs, until the sampler is done,
/// the encoders are gone, or another thread failed (`stop`, which a failure here sets).
fn integrate_calls(
    trial: &Trial,
    backend: &mut dyn Backend,
    calls: Calls,
    amount_per: &[Option<usize>],
    rx: &crossbeam_channel::Receiver<Sampled>,
    tx_done: &crossbeam_channel::Sender<Integrated>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Busy, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let Calls { per_call, batch } = calls;
    let mut busy = Busy::default();
    let min_call = per_call.div_ceil(4);
    while let Ok(first) = rx.recv() {
        if stop.load(Relaxed) {
            break;
        }
        let mut group = vec![first];
        let mut n: usize = group[0].n;
        // Chunks already sampled join the call; the call waits for more only while it has
        // fewer than a quarter of its chunks (at the start, or when sampling falls behind), so
        // that encoding starts early and the stages overlap.
        while group.len() < per_call && n < batch {
            let next = if group.len() < min_call {
                rx.recv().ok()
            } else {
                rx.try_recv().ok()
            };
            match next {
                Some(next) => {
                    n += next.n;
                    group.push(next);
                }
                None => break,
            }
        }
        let merged = (group.len() > 1).then(|| merge(&group, amount_per));
        let input_of = merged.as_ref().unwrap_or(&group[0]);
        let mut outputs: Vec<Arc<ChunkOutput>> = Vec::with_capacity(trial.arms.len());
        let t0 = Instant::now();
        for arm in &trial.arms {
            let input = ChunkInput {
                first_subject: input_of.first,
                n: input_of.n,
                params: &input_of.params,
                amount_scale: arm.amount_scale(&input_of.covariates),
                occasion_params: &input_of.occasion_params,
            };
            let mut out = ChunkOutput::default();
            if let Err(e) = backend.run_chunk(&arm.plan, &input, &mut out) {
                stop.store(true, Relaxed);
                return Err(e.to_string());
            }
            busy.kernel += out.kernel_time;
            outputs.push(Arc::new(out));
        }
        busy.integrate += t0.elapsed();
        busy.calls += 1;
        // Each chunk goes on with its subjects' range of the call's outputs (no copy).
        let mut at = 0;
        for sampled in group {
            let range = at..at + sampled.n;
            at += sampled.n;
            let outputs = outputs.clone();
            if tx_done
                .send(Integrated {
                    sampled,
                    outputs,
                    range,
                })
                .is_err()
            {
                stop.store(true, Relaxed);
                return Ok(busy);
            }
        }
    }
    Ok(busy)
}

/// A chunk with its per-arm results: subjects `range` of each arm's output (the output of the
/// backend call that integrated this chunk, possibly merged with its neighbours).
struct Integrated {
    sampled: Sampled,
    outputs: Vec<Arc<ChunkOutput>>,
    range: std::ops::Range<usize>,
}

pub(crate) fn sample_chunk(
    trial: &Trial,
    part: u64,
    first: u64,
    n: usize,
    scratch: &mut SampledChunk,
) -> (Sampled, Duration) {
    let occasions = occasion_count(trial);
    let busy = if let Some(pop) = &trial.population {
        pop.sample_occasions(trial.seed, first, n, occasions, scratch)
    } else {
        scratch.n = n;
        scratch.covariates.clear();
        scratch.parameters.clear();
        scratch.occasions.clear();
        Duration::ZERO
    };
    let t0 = Instant::now();
    let columns = |pop_params: &[Vec<f64>]| -> Vec<Vec<f64>> {
        trial
            .params
            .iter()
            .map(|src| match src {
                ParamSource::Population(j) => pop_params[*j].clone(),
                ParamSource::Fixed(v) => vec![*v; n],
            })
            .collect()
    };
    let params = columns(&scratch.parameters);
    // Without a population (or without inter-occasion variability) every occasion has the
    // first occasion's parameters.
    let occasion_params = (1..occasions)
        .map(|k| match scratch.occasions.get(k - 1) {
            Some(o) => columns(&o.parameters),
            None => params.clone(),
        })
        .collect();
    let sampled = Sampled {
        part,
        first,
        n,
        covariates: std::mem::take(&mut scratch.covariates),
        params,
        occasion_params,
    };
    // The population's busy time (summed over its workers) and the copies above.
    (sampled, busy + t0.elapsed())
}

/// Consecutive sampled chunks as one input: parameters and the covariates that scale an arm's
/// doses (`amount_per`) concatenated; the other covariates are left empty (backends read none).
fn merge(group: &[Sampled], amount_per: &[Option<usize>]) -> Sampled {
    use rayon::prelude::*;
    // Columns are concatenated in parallel: this runs between backend calls.
    let cat = |col: &(dyn Fn(&Sampled) -> &Vec<f64> + Sync)| -> Vec<f64> {
        let mut v = Vec::with_capacity(group.iter().map(|g| g.n).sum());
        for g in group {
            v.extend_from_slice(col(g));
        }
        v
    };
    let first = &group[0];
    Sampled {
        part: first.part,
        first: first.first,
        n: group.iter().map(|g| g.n).sum(),
        covariates: (0..first.covariates.len())
            .into_par_iter()
            .map(|c| {
                if amount_per.contains(&Some(c)) {
                    cat(&|g: &Sampled| &g.covariates[c])
                } else {
                    Vec::new()
                }
            })
            .collect(),
        params: (0..first.params.len())
            .into_par_iter()
            .map(|p| cat(&|g: &Sampled| &g.params[p]))
            .collect(),
        occasion_params: (0..first.occasion_params.len())
            .map(|k| {
                (0..first.occasion_params[k].len())
                    .into_par_iter()
                    .map(|p| cat(&|g: &Sampled| &g.occasion_params[k][p]))
                    .collect()
            })
            .collect(),
    }
}

/// Simulated observations of one arm's chunk: each profile value with the population's residual
/// error, from the subject's residual stream (keyed by seed, subject and arm).
fn observations(trial: &Trial, arm: usize, first: u64, out: &OutputView<'_>) -> Vec<Vec<f64>> {
    use crate::population::rng::{splitmix64, subject_rng, Stream};
    use rand_distr::{Distribution, StandardNormal};
    let nt = trial.arms[arm].plan.sample_times.len();
    if trial.observations.is_empty() || nt == 0 {
        return Vec::new();
    }
    let n = out.status.len();
    let arm_seed = trial.seed ^ splitmix64(arm as u64 + 1);
    let mut obs: Vec<Vec<f64>> = trial
        .observations
        .iter()
        .map(|_| vec![f64::NAN; n * nt])
        .collect();
    for i in 0..n {
        let mut rng = subject_rng(arm_seed, first + i as u64, Stream::Residual);
        for (o, (k, model)) in trial.observations.iter().enumerate() {
            for j in 0..nt {
                let (e1, e2): (f64, f64) = (
                    StandardNormal.sample(&mut rng),
                    StandardNormal.sample(&mut rng),
                );
                obs[o][i * nt + j] = model.apply(out.profiles[*k][i * nt + j], e1, e2);
            }
        }
    }
    obs
}

/// Runs a trial to its output directory.
pub fn run_trial(trial: &Trial, opts: &RunOptions) -> Result<RunReport, String> {
    if trial.data.is_some() {
        return super::dataset::run_dataset_trial(trial, opts);
    }
    let start = Instant::now();
    let choice = opts.backend.unwrap_or(trial.backend);
    let (backend, reason) = select_backend(trial, choice)?;
    run_trial_on(trial, opts, backend, reason, start)
}

/// Runs a trial's arms on a given backend (`reason` says why it was chosen; `start` is when
/// the run began, for its wall time).
pub fn run_trial_on(
    trial: &Trial,
    opts: &RunOptions,
    backend: Box<dyn Backend>,
    reason: String,
    start: Instant,
) -> Result<RunReport, String> {
    if trial.data.is_some() {
        return Err("a [data] trial runs through run_trial".into());
    }
    let info = backend.info();
    check_precision(trial, &info)?;
    let subjects = opts.subjects.unwrap_or(trial.subjects);
    let RunPlan {
        chunk,
        c0,
        c1,
        dir,
        identity,
    } = run_plan(trial, opts, subjects, default_chunk(trial))?;
    let shard = opts.shard.unwrap_or(Shard::WHOLE);
    let n_chunks = subjects.div_ceil(chunk);
    let layout = layout(trial);
    let arm_names: Vec<String> = trial.arms.iter().map(|a| a.plan.name.clone()).collect();
    // Host threads driving the backend: its default, or as asked; each with an instance of
    // its own, made before anything is written (a run that cannot make them leaves no
    // manifest).
    let wanted = opts
        .integrators
        .unwrap_or_else(|| backend.integrators())
        .clamp(1, MAX_INTEGRATORS);
    let mut backends = vec![backend];
    let mut fewer_integrators = opts
        .integrators
        .filter(|n| *n > MAX_INTEGRATORS)
        .map(|_| format!("at most {MAX_INTEGRATORS}"));
    while backends.len() < wanted {
        match backends[0].sibling() {
            Some(Ok(b)) => backends.push(b),
            Some(Err(e)) if opts.integrators.is_some() => {
                return Err(format!("integration thread {}: {e}", backends.len() + 1))
            }
            Some(Err(_)) => break,
            None => {
                if opts.integrators.is_some() {
                    fewer_integrators = Some(backends[0].no_sibling().to_string());
                }
                break;
            }
        }
    }
    let n_integrators = backends.len();
    let (mut writer, done) = DatasetWriter::open(
        &dir,
        identity,
        arm_names.clone(),
        layout.schema.clone(),
        provenance(trial, &info),
        trial.codec,
        opts.overwrite,
    )
    .map_err(|e| e.to_string())?;
    let done_parts: std::collections::HashSet<u64> = done.iter().map(|p| p.part).collect();
    let todo: Vec<u64> = (c0..c1).filter(|c| !done_parts.contains(c)).collect();
    // Parts this run writes: the summary's counts of them are taken as they are written.
    let tallied: std::collections::HashSet<u64> = todo.iter().copied().collect();
    let todo_subjects: u64 = todo.iter().map(|c| (subjects - c * chunk).min(chunk)).sum();

    let progress = if opts.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(todo_subjects),
            indicatif::ProgressDrawTarget::stderr(),
        );
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} subjects  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    };

    let mut integrate_time = Duration::ZERO;
    let mut kernel_time = Duration::ZERO;
    let mut calls = 0u64;
    let mut sample_time = Duration::ZERO;
    let mut encode_time = Duration::ZERO;
    let mut written = 0u64;
    let stop_after = opts.stop_after_parts.unwrap_or(u64::MAX);
    let todo = &todo[..todo.len().min(stop_after as usize)];
    let amount_per: Vec<Option<usize>> = trial.arms.iter().map(|a| a.amount_per).collect();
    // Consecutive chunks are merged into calls of up to the backend's preferred size; the
    // sampler runs that many chunks ahead.
    let batch = backends[0].preferred_batch().max(1);
    let fit = (PARAM_BUDGET / (chunk * param_bytes(trial))).max(1);
    let per_call = (batch as u64).div_ceil(chunk).min(fit).clamp(1, 256) as usize;
    let mut tally = Tally::new(trial);
    let t_pipeline = Instant::now();
    let startup = t_pipeline.duration_since(start);
    // Set by an integration thread that fails, so that the others stop too.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let result: Result<(), String> = std::thread::scope(|s| {
        let (tx_sampled, rx_sampled) = bounded::<Sampled>(per_call + 1);
        let (tx_done, rx_done) = bounded::<Integrated>(2);
        // Stage 1: sampling.
        let sampler = s.spawn(move || {
            let mut scratch = SampledChunk::default();
            let mut busy = Duration::ZERO;
            for &c in todo {
                let first = c * chunk;
                let n = (subjects - first).min(chunk) as usize;
                let (sampled, took) = sample_chunk(trial, c, first, n, &mut scratch);
                busy += took;
                if tx_sampled.send(sampled).is_err() {
                    break;
                }
            }
            busy
        });
        // Stage 3: encoding and writing, by several workers (each part is its own file); the
        // manifest records the parts as they finish.
        let layout = &layout;
        let part_writer = writer.part_writer();
        let writer_ref = &mut writer;
        let progress_ref = &progress;
        let n_encoders = encoders();
        let (tx_parts, rx_parts) = bounded::<(crate::output::PartEntry, usize)>(n_encoders);
        let workers: Vec<_> = (0..n_encoders)
            .map(|_| {
                let rx_done = rx_done.clone();
                let tx_parts = tx_parts.clone();
                let part_writer = part_writer.clone();
                s.spawn(move || -> Result<(Duration, Tally), String> {
                    let mut busy = Duration::ZERO;
                    // The summary's counts, taken from the batches as they are written.
                    let mut tally = Tally::new(trial);
                    for done in rx_done {
                        let t0 = Instant::now();
                        let mut done = done;
                        let sm = &mut done.sampled;
                        // Shared by the arms' batches, and handed over without a copy.
                        let params_out = match layout.parameters.is_empty() {
                            true => Vec::new(),
                            false => std::mem::take(&mut sm.params),
                        };
                        let subject = layout
                            .subject_columns(std::mem::take(&mut sm.covariates), params_out, sm.n)
                            .map_err(|e| e.to_string())?;
                        let sm = &done.sampled;
                        let batches: Vec<RecordBatch> = done
                            .outputs
                            .iter()
                            .enumerate()
                            .map(|(a, out)| {
                                let nt = trial.arms[a].plan.sample_times.len();
                                let out = out.view(done.range.clone(), nt);
                                let obs = observations(trial, a, sm.first, &out);
                                layout.encode(a, sm.first, &subject, &out, &obs)
                            })
                            .collect::<Result<_, _>>()
                            .map_err(|e| match e {
                                // The encoder's own refusals (a profile value beyond f16)
                                // say what they mean without Arrow's prefix.
                                arrow_schema::ArrowError::InvalidArgumentError(m) => m,
                                e => e.to_string(),
                            })?;
                        let entry = part_writer
                            .write(sm.part, sm.first, sm.n as u64, &batches)
                            .map_err(|e| e.to_string())?;
                        for (a, b) in batches.iter().enumerate() {
                            tally.add_batch(trial, a, b)?;
                        }
                        busy += t0.elapsed();
                        if tx_parts.send((entry, sm.n)).is_err() {
                            break;
                        }
                    }
                    Ok((busy, tally))
                })
            })
            .collect();
        drop(tx_parts);
        drop(rx_done);
        let recorder = s.spawn(move || -> Result<u64, String> {
            let mut n_written = 0;
            for (entry, n) in rx_parts {
                writer_ref.record_part(entry).map_err(|e| e.to_string())?;
                progress_ref.inc(n as u64);
                n_written += 1;
            }
            Ok(n_written)
        });
        // Stage 2: integration, by one host thread per backend instance, each taking the
        // next sampled chunks as its call.
        let stop = &stop;
        let amount_per = &amount_per;
        let integrators: Vec<_> = backends
            .into_iter()
            .map(|mut backend| {
                let rx = rx_sampled.clone();
                let tx_done = tx_done.clone();
                let calls = Calls { per_call, batch };
                s.spawn(move || {
                    integrate_calls(
                        trial,
                        backend.as_mut(),
                        calls,
                        amount_per,
                        &rx,
                        &tx_done,
                        stop,
                    )
                })
            })
            .collect();
        // The receivers are dropped when the integrators end: a sampler blocked on a full
        // channel then stops instead of waiting forever.
        drop(rx_sampled);
        drop(tx_done);
        let mut failure = None;
        for h in integrators {
            match h.join() {
                Ok(Ok(b)) => {
                    integrate_time += b.integrate;
                    kernel_time += b.kernel;
                    calls += b.calls;
                }
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some("an integration thread panicked".to_string())),
            }
        }
        sample_time = sampler.join().unwrap_or_default();
        let mut worker_error = None;
        for w in workers {
            match w.join() {
                Ok(Ok((busy, t))) => {
                    encode_time += busy;
                    tally.merge(&t);
                }
                Ok(Err(e)) => worker_error = Some(e),
                Err(_) => worker_error = Some("an encoder thread panicked".to_string()),
            }
        }
        let w = recorder
            .join()
            .map_err(|_| "the manifest thread panicked".to_string())??;
        if let Some(e) = worker_error {
            return Err(e);
        }
        written = w;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    let pipeline_time = t_pipeline.elapsed();
    progress.finish_and_clear();
    result?;
    let complete = written + done.len() as u64 == c1 - c0;
    if complete {
        writer.finish().map_err(|e| e.to_string())?;
    }
    let t_summary = Instant::now();
    let arms = if complete {
        summarize(trial, &dir, shard, n_chunks, tally, &tallied)?
    } else {
        Vec::new()
    };
    let summary_time = t_summary.elapsed();
    Ok(RunReport {
        backend: info,
        backend_reason: reason,
        dir,
        subjects: (c0..c1).map(|c| (subjects - c * chunk).min(chunk)).sum(),
        parts_written: written,
        parts_resumed: done.len() as u64,
        wall: start.elapsed(),
        integrate: integrate_time,
        sampling: sample_time,
        encoding: encode_time,
        summary: summary_time,
        calls,
        kernel: kernel_time,
        integrators: n_integrators,
        fewer_integrators,
        startup,
        pipeline: pipeline_time,
        arms,
        complete,
    })
}

/// The per-arm summary table as text.
pub fn format_summary(report: &RunReport, target: Option<&super::resolve::Target>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for arm in &report.arms {
        let why: Vec<String> = arm
            .failures
            .iter()
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "\narm {} — {} subjects, {} failed{}",
            arm.name,
            arm.subjects,
            arm.failed,
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({}; each subject's in the status column)", why.join(", "))
            }
        );
        let _ = writeln!(
            s,
            "  {:<28} {:>14} {:>14} {:>14}",
            "metric", "median", "5th pct", "95th pct"
        );
        for m in &arm.metrics {
            let _ = writeln!(
                s,
                "  {:<28} {:>14} {:>14} {:>14}",
                m.column,
                crate::output::table_value(m.median, 6),
                crate::output::table_value(m.p5, 6),
                crate::output::table_value(m.p95, 6)
            );
        }
        if let (Some(p), Some(t)) = (arm.target_attainment, target) {
            let cond = match (t.above, t.below) {
                (Some(a), Some(b)) => format!("{a} < {} < {b}", t.column),
                (Some(a), None) => format!("{} > {a}", t.column),
                (None, Some(b)) => format!("{} < {b}", t.column),
                (None, None) => t.column.clone(),
            };
            if arm.target_subjects == 0 {
                let _ = writeln!(
                    s,
                    "  probability of target attainment ({cond}): undefined, no subject has a \
                     value of {}",
                    t.column
                );
                continue;
            }
            // Over the subjects with a value of the metric: say so where some have none.
            let over = if arm.target_subjects < arm.subjects {
                format!(
                    " of the {} subjects with a value of {}",
                    arm.target_subjects, t.column
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  probability of target attainment ({cond}): {:.1} %{over}",
                100.0 * p
            );
        }
    }
    s
}
