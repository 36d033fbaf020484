//! `vpop bench`: one trial on every available backend, timed and checked against the CPU f64
//! reference in the same run.
//!
//! The CPU reference integrates the first `cpu_subjects` subjects twice: at the trial's
//! settings (its time gives the CPU row) and at a tight tolerance (the accuracy reference).
//! Each GPU backend integrates all `subjects` subjects per arm in chunks; sampling is done
//! before the clock starts, so the figures are integration only: `seconds` is the backend's
//! whole call (uploads, kernel, downloads), `kernel_seconds` the kernel alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{cuda_backend_tuned, sample_chunk, wgpu_backend};
use super::Trial;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::CudaTuning;
use crate::backend::{ArmPlan, Backend, ChunkInput, ChunkOutput, Precision};
use crate::population::SampledChunk;
use crate::solver::{Method, SolverOptions};

/// A backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Wgpu(Precision),
    Cuda(Precision),
    /// The CUDA kernels run on the host (accuracy checks without a GPU).
    CudaEmulated(Precision),
}

impl Target {
    /// The default targets, in the order `vpop bench` runs them (`wgpu-f64`, opt-in as in
    /// trials, only when named).
    pub const ALL: [Target; 4] = [
        Target::Cpu,
        Target::Wgpu(Precision::F32),
        Target::Cuda(Precision::F32),
        Target::Cuda(Precision::F64),
    ];

    pub fn parse(s: &str) -> Option<Target> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Target::Cpu,
            "wgpu" | "wgpu-f32" => Target::Wgpu(Precision::F32),
            "wgpu-f64" => Target::Wgpu(Precision::F64),
            "cuda" | "cuda-f32" => Target::Cuda(Precision::F32),
            "cuda-f64" => Target::Cuda(Precision::F64),
            "cuda-emulated" | "cuda-emulated-f32" => Target::CudaEmulated(Precision::F32),
            "cuda-emulated-f64" => Target::CudaEmulated(Precision::F64),
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Target::Cpu => "cpu",
            Target::Wgpu(Precision::F32) => "wgpu",
            Target::Wgpu(Precision::F64) => "wgpu-f64",
            Target::Cuda(Precision::F32) => "cuda-f32",
            Target::Cuda(Precision::F64) => "cuda-f64",
            Target::CudaEmulated(Precision::F32) => "cuda-emulated-f32",
            Target::CudaEmulated(Precision::F64) => "cuda-emulated-f64",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Subjects per arm on each GPU backend.
    pub subjects: u64,
    /// Subjects per arm on the CPU (timed) and in the comparison.
    pub cpu_subjects: u64,
    pub targets: Vec<Target>,
    /// Overrides the spec's tolerances for the backends under test (atol follows rtol).
    pub rtol: Option<f64>,
    /// Relative tolerance of the CPU f64 accuracy reference.
    pub reference_rtol: f64,
    /// Subjects per backend call.
    pub chunk: usize,
    /// Also time the CPU on the first `cpu_subjects` subjects.
    pub time_cpu: bool,
    /// Count the CUDA kernel's operations per subject-arm (f32 and f64) on this many subjects
    /// per arm, with the counting build of the emulated kernel; 0: not counted.
    pub count_ops: usize,
    /// Each CUDA target runs once per tuning listed here (rows labelled with the tuning);
    /// empty: once, with `VPOP_CUDA_TUNING`'s tuning (the default).
    pub cuda_variants: Vec<CudaTuning>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            subjects: 1_000_000,
            cpu_subjects: 20_000,
            targets: Target::ALL.to_vec(),
            rtol: None,
            reference_rtol: 1e-10,
            chunk: 1 << 20,
            time_cpu: true,
            count_ops: 0,
            cuda_variants: Vec::new(),
        }
    }
}

/// One backend's figures, over all arms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub backend: String,
    pub device: String,
    /// Subject-arms integrated.
    pub subjects: u64,
    /// Wall time of the backend calls.
    pub seconds: f64,
    /// Kernel time alone (GPU backends).
    pub kernel_seconds: Option<f64>,
    pub failed: u64,
    /// Subjects whose status differs from the CPU reference's at the same settings.
    pub status_mismatches: u64,
    /// Subject-arms of the comparison (the first `cpu_subjects` of each arm) whose errors were
    /// measured: both the backend and the tight reference integrated them.
    pub compared: u64,
    /// Subject-arms of the comparison not compared because the tight reference failed on them
    /// (`max_steps` at its tolerance, for one): their errors are unknown.
    pub not_compared_reference_failed: u64,
    /// Subject-arms of the comparison not compared because the backend failed on them (and
    /// the reference did not).
    pub not_compared_backend_failed: u64,
    /// Largest relative difference of AUC and Cmax columns from the tight reference; NaN (null
    /// in JSON, `n/a` in the text) where none was measured: no subject-arm compared, or no
    /// AUC or Cmax column.
    pub max_rel_auc_cmax: f64,
    /// Largest difference of any metric but Tmax from the tight reference, relative to
    /// `|reference| + 1e-6 · max |column|`; NaN (null in JSON, `n/a`) where no subject-arm
    /// was compared.
    pub max_rel_metrics: f64,
    /// Mean accepted + rejected steps per subject-arm.
    pub steps_per_subject: f64,
    /// Mean right-hand-side evaluations per subject-arm (each with the outputs that have an
    /// AUC quadrature).
    pub rhs_per_subject: f64,
}

impl BenchRow {
    pub fn subjects_per_s(&self) -> f64 {
        self.subjects as f64 / self.seconds.max(1e-12)
    }

    pub fn kernel_subjects_per_s(&self) -> Option<f64> {
        self.kernel_seconds
            .map(|k| self.subjects as f64 / k.max(1e-12))
    }
}

/// Backends that could not be run, with the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub backend: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub trial: String,
    pub arms: Vec<String>,
    pub method: String,
    pub rtol: f64,
    pub atol: f64,
    pub reference: String,
    pub rows: Vec<BenchRow>,
    pub skipped: Vec<Skipped>,
    /// Floating-point operations of one right-hand side plus outputs evaluation of the model
    /// (the transcendental functions among them counted once each), without the values of
    /// the parameters alone, which the backends compute once per subject.
    pub model_flops_per_rhs: u64,
    pub model_transcendentals_per_rhs: u64,
    /// A `[data]` trial: both error columns are of the outputs on every record.
    pub records: bool,
    /// The CUDA kernel's operations per subject-arm, counted on the host (`count_ops`).
    pub kernel_ops: Vec<KernelOps>,
}

/// Operations of the CUDA integrator kernel per subject-arm, in one precision: the generated
/// kernel built on the host with a number type that counts them, run on the bench's first
/// subjects (kernels/host_count.h).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelOps {
    pub precision: String,
    /// Subject-arms counted.
    pub subject_arms: u64,
    /// Mean accepted + rejected steps per subject-arm in the counted run.
    pub steps_per_subject: f64,
    /// Per subject-arm (rounded).
    pub per_subject: crate::backend::cuda::OpCounts,
    /// Floating-point operations per subject-arm, unrounded (fused multiply-adds count two,
    /// transcendental functions apart).
    pub flops_per_subject: f64,
}

impl BenchReport {
    fn new(
        trial: &Trial,
        arms: Vec<String>,
        solver: &crate::solver::SolverOptions,
        reference: String,
        rows: Vec<BenchRow>,
        skipped: Vec<Skipped>,
        records: bool,
    ) -> BenchReport {
        let p = &trial.compiled.programs;
        let (rhs, outputs) = (p.rhs.per_evaluation(), p.outputs.per_evaluation());
        BenchReport {
            trial: trial.name.clone(),
            arms,
            method: solver.method.name().into(),
            rtol: solver.rtol,
            atol: solver.atol,
            reference,
            rows,
            skipped,
            model_flops_per_rhs: rhs.0 + outputs.0,
            model_transcendentals_per_rhs: rhs.1 + outputs.1,
            records,
            kernel_ops: Vec::new(),
        }
    }
}

/// The settings of the accuracy reference: the trial's at `rtol` (atol scaled alike), with a
/// method that can reach it: RK4 is a fixed-step method, whose tolerance means nothing (its
/// reference at the same `dt` would be the run itself), so Tsit5 stands in; Rosenbrock23, of
/// order 2 and 3, would take millions of steps at rtol 1e-10, so Rodas4 (stiff as well) does.
pub fn reference_solver(s: &SolverOptions, rtol: f64) -> SolverOptions {
    let mut r = s.clone();
    r.atol *= rtol / r.rtol;
    r.rtol = rtol;
    match r.method {
        Method::Rk4 => {
            r.method = Method::Tsit5;
            r.dt = None;
        }
        Method::Rosenbrock23 => r.method = Method::Rodas4,
        Method::Dopri5 | Method::Tsit5 | Method::Rodas4 => {}
    }
    r
}

/// Runs the benchmark; `progress` receives a line as each backend finishes.
pub fn run_bench(
    trial: &Trial,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, String> {
    if let Some(data) = &trial.data {
        return run_bench_data(trial, data, opts, progress);
    }
    let mut plans: Vec<ArmPlan> = trial.arms.iter().map(|a| a.plan.clone()).collect();
    if let Some(rtol) = opts.rtol {
        for p in &mut plans {
            let ratio = rtol / p.solver.rtol;
            p.solver.rtol = rtol;
            p.solver.atol *= ratio;
        }
    }
    let reference_plans: Vec<ArmPlan> = plans
        .iter()
        .map(|p| {
            let mut r = p.clone();
            r.solver = reference_solver(&p.solver, opts.reference_rtol);
            r
        })
        .collect();
    let n_ref = opts.cpu_subjects.min(opts.subjects).max(1) as usize;
    let chunk = opts.chunk.max(n_ref);
    let model = Arc::new(trial.compiled.clone());
    let mut scratch = SampledChunk::default();
    let (first, _) = sample_chunk(trial, 0, 0, n_ref, &mut scratch);
    let run_arms = |b: &mut dyn Backend, plans: &[ArmPlan], s: &super::run::Sampled| {
        let mut outs = Vec::new();
        let mut wall = Duration::ZERO;
        for (a, plan) in plans.iter().enumerate() {
            let input = ChunkInput {
                first_subject: s.first,
                n: s.n,
                params: &s.params,
                amount_scale: trial.arms[a].amount_scale(&s.covariates),
                occasion_params: &s.occasion_params,
            };
            let mut out = ChunkOutput::default();
            let t0 = Instant::now();
            b.run_chunk(plan, &input, &mut out)
                .map_err(|e| e.to_string())?;
            wall += t0.elapsed();
            outs.push(out);
        }
        Ok::<_, String>((outs, wall))
    };

    let mut cpu = CpuBackend::new(model.clone());
    let cpu_device = cpu.info().device;
    progress(&format!(
        "reference: CPU f64 at rtol {:e} on {n_ref} subjects per arm",
        opts.reference_rtol
    ));
    let (reference, _) = run_arms(&mut cpu, &reference_plans, &first)?;
    let (same, cpu_wall) = run_arms(&mut cpu, &plans, &first)?;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for run in TargetRun::all(opts) {
        if run.target == Target::Cpu {
            if opts.time_cpu {
                let row = compare(
                    "cpu (f64)",
                    &cpu_device,
                    &plans,
                    &same,
                    &same,
                    &reference,
                    n_ref,
                    cpu_wall,
                    None,
                );
                progress(&format_row(&row));
                rows.push(row);
            }
            continue;
        }
        let solvers: Vec<&SolverOptions> = plans.iter().map(|p| &p.solver).collect();
        let Some(mut b) = open_target(&run, &model, progress, &mut skipped, &solvers) else {
            continue;
        };
        let info = b.info();
        // Warm-up: kernels are compiled on first use.
        let (warm, _) = sample_chunk(trial, 0, 0, n_ref.min(256), &mut scratch);
        run_arms(b.as_mut(), &plans, &warm)?;
        let mut wall = Duration::ZERO;
        let mut kernel = Duration::ZERO;
        let mut failed = 0u64;
        let mut head = Vec::new();
        let mut c0 = 0u64;
        while c0 < opts.subjects {
            let n = (opts.subjects - c0).min(chunk as u64) as usize;
            let (s, _) = sample_chunk(trial, c0 / chunk as u64, c0, n, &mut scratch);
            let (outs, w) = run_arms(b.as_mut(), &plans, &s)?;
            wall += w;
            for o in &outs {
                kernel += o.kernel_time;
                failed += o.status.iter().filter(|s| **s != 0).count() as u64;
            }
            if c0 == 0 {
                head = outs;
            }
            c0 += n as u64;
        }
        let label = run.row_label(info.precision);
        let mut row = compare(
            &label,
            &info.device,
            &plans,
            &head,
            &same,
            &reference,
            n_ref,
            wall,
            Some(kernel),
        );
        row.subjects = opts.subjects * plans.len() as u64;
        row.failed = failed;
        progress(&format_row(&row));
        rows.push(row);
    }
    let mut kernel_ops = Vec::new();
    if opts.count_ops > 0 {
        let n = opts.count_ops.min(opts.subjects as usize).max(1);
        let (s, _) = sample_chunk(trial, 0, 0, n, &mut scratch);
        for p in [Precision::F32, Precision::F64] {
            match emulated_cuda(model.clone(), p, true) {
                Ok((mut b, _)) => {
                    let (outs, _) = run_arms(b.as_mut(), &plans, &s)?;
                    let arms = (n * plans.len()) as u64;
                    let steps: u64 = outs
                        .iter()
                        .map(|o| o.stats.accepted + o.stats.rejected)
                        .sum();
                    let total = b.op_counts().unwrap_or_default();
                    let k = KernelOps {
                        precision: p.name().into(),
                        subject_arms: arms,
                        steps_per_subject: steps as f64 / arms as f64,
                        per_subject: total.per(arms),
                        flops_per_subject: total.flops() as f64 / arms as f64,
                    };
                    progress(&format_kernel_ops(&k));
                    kernel_ops.push(k);
                }
                Err(e) => {
                    progress(&format!(
                        "kernel operations ({}): not counted ({e})",
                        p.name()
                    ));
                }
            }
        }
    }
    let s = &plans[0].solver;
    let mut report = BenchReport::new(
        trial,
        plans.iter().map(|p| p.name.clone()).collect(),
        s,
        format!(
            "CPU f64, {} at rtol {:e}, first {n_ref} subjects of each arm",
            reference_solver(s, opts.reference_rtol).method.name(),
            opts.reference_rtol
        ),
        rows,
        skipped,
        false,
    );
    report.kernel_ops = kernel_ops;
    Ok(report)
}

/// One line of kernel operation counts.
pub fn format_kernel_ops(k: &KernelOps) -> String {
    let o = &k.per_subject;
    format!(
        "CUDA kernel {} per subject-arm (counted on the host, {} subject-arms, {:.1} steps each): \
         {:.0} FLOPs ({} add/sub, {} mul, {} div, {} fma, {} sqrt), {} exp/log/pow, {} comparisons, {} other",
        k.precision,
        k.subject_arms,
        k.steps_per_subject,
        k.flops_per_subject,
        o.add,
        o.mul,
        o.div,
        o.fma,
        o.sqrt,
        o.transcendental,
        o.compare,
        o.other
    )
}

/// `vpop bench` on a `[data]` trial: the virtual subjects' record programs (built before the
/// clock starts, like sampling) on every backend, and the outputs on every record compared
/// with the CPU f64 reference (both error columns of a row then describe those outputs).
fn run_bench_data(
    trial: &Trial,
    data: &super::resolve::DataDesign,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, String> {
    use super::dataset::chunk_programs;
    use crate::backend::records::{Program, RecordsOutcome};
    if opts.count_ops > 0 {
        progress("kernel operations: counted for trials with arms, not for [data] trials");
    }
    let mut solver = trial.arms[0].plan.solver.clone();
    if let Some(rtol) = opts.rtol {
        solver.atol *= rtol / solver.rtol;
        solver.rtol = rtol;
    }
    let tight = reference_solver(&solver, opts.reference_rtol);
    let n_ref = opts.cpu_subjects.min(opts.subjects).max(1) as usize;
    let chunk = opts.chunk.max(n_ref);
    let model = Arc::new(trial.compiled.clone());
    let head = chunk_programs(trial, data, 0, n_ref).programs;
    let head: Vec<&Program> = head.iter().collect();
    let mut cpu = CpuBackend::new(model.clone());
    let cpu_device = cpu.info().device;
    progress(&format!(
        "reference: CPU f64 at rtol {:e} on {n_ref} virtual subjects",
        opts.reference_rtol
    ));
    let fail = |e: crate::backend::BackendError| e.to_string();
    let reference = cpu.run_records(&head, &tight).map_err(fail)?;
    let t0 = Instant::now();
    let same = cpu.run_records(&head, &solver).map_err(fail)?;
    let cpu_wall = t0.elapsed();
    let row_of = |label: &str, device: &str, got: &[RecordsOutcome], wall: Duration| {
        let mut row = BenchRow {
            backend: label.into(),
            device: device.into(),
            subjects: got.len() as u64,
            seconds: wall.as_secs_f64(),
            kernel_seconds: None,
            failed: got.iter().filter(|o| o.status as u8 != 0).count() as u64,
            status_mismatches: 0,
            compared: 0,
            not_compared_reference_failed: 0,
            not_compared_backend_failed: 0,
            max_rel_auc_cmax: f64::NAN,
            max_rel_metrics: f64::NAN,
            steps_per_subject: 0.0,
            rhs_per_subject: 0.0,
        };
        let (mut steps, mut rhs) = (0u64, 0u64);
        for o in got {
            steps += o.stats.accepted + o.stats.rejected;
            rhs += o.stats.rhs_evals;
        }
        row.steps_per_subject = steps as f64 / got.len().max(1) as f64;
        row.rhs_per_subject = rhs as f64 / got.len().max(1) as f64;
        // Which subjects are compared: those both the backend and the reference integrated.
        let mut tally = Tally::default();
        let ok: Vec<bool> = got
            .iter()
            .zip(&reference)
            .map(|(g, r)| tally.subject(g.status as u8, r.status as u8))
            .collect();
        for (i, g) in got.iter().enumerate() {
            if same.get(i).is_some_and(|s| g.status != s.status) {
                row.status_mismatches += 1;
            }
        }
        let mut max = None;
        let n_out = trial.compiled.n_outputs();
        for k in 0..n_out {
            let scale = reference
                .iter()
                .flat_map(|r| r.outputs[k].iter())
                .filter(|v| v.is_finite())
                .map(|v| v.abs())
                .fold(0.0, f64::max);
            for ((g, r), _) in got.iter().zip(&reference).zip(&ok).filter(|(_, ok)| **ok) {
                for (gv, rv) in g.outputs[k].iter().zip(&r.outputs[k]) {
                    max = max_err(max, floored_error(*gv, *rv, scale));
                }
            }
        }
        tally.fill(&mut row);
        row.max_rel_metrics = max.unwrap_or(f64::NAN);
        row.max_rel_auc_cmax = row.max_rel_metrics;
        row
    };
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for run in TargetRun::all(opts) {
        if run.target == Target::Cpu {
            if opts.time_cpu {
                let row = row_of("cpu (f64)", &cpu_device, &same, cpu_wall);
                progress(&format_row(&row));
                rows.push(row);
            }
            continue;
        }
        let Some(mut b) = open_target(&run, &model, progress, &mut skipped, &[&solver]) else {
            continue;
        };
        let info = b.info();
        // Warm-up: kernels are compiled on first use.
        b.run_records(&head[..head.len().min(256)], &solver)
            .map_err(fail)?;
        let mut wall = Duration::ZERO;
        let (mut failed, mut first) = (0u64, Vec::new());
        let mut c0 = 0u64;
        while c0 < opts.subjects {
            let n = (opts.subjects - c0).min(chunk as u64) as usize;
            let programs = chunk_programs(trial, data, c0, n).programs;
            let programs: Vec<&Program> = programs.iter().collect();
            let t0 = Instant::now();
            let outs = b.run_records(&programs, &solver).map_err(fail)?;
            wall += t0.elapsed();
            failed += outs.iter().filter(|o| o.status as u8 != 0).count() as u64;
            if c0 == 0 {
                first = outs;
            }
            c0 += n as u64;
        }
        first.truncate(n_ref);
        let label = run.row_label(info.precision);
        let mut row = row_of(&label, &info.device, &first, wall);
        row.subjects = opts.subjects;
        row.failed = failed;
        progress(&format_row(&row));
        rows.push(row);
    }
    Ok(BenchReport::new(
        trial,
        vec![trial.arms[0].plan.name.clone()],
        &solver,
        format!(
            "CPU f64, {} at rtol {:e}, first {n_ref} virtual subjects; errors are of the \
             outputs on every record",
            tight.method.name(),
            opts.reference_rtol
        ),
        rows,
        skipped,
        true,
    ))
}

/// The CUDA kernels emulated on the host (the same generated source, built by the system C++
/// compiler): their accuracy at a tolerance, without a GPU. Not a speed figure. `counting`:
/// the build that counts the kernel's operations.
#[cfg(feature = "cuda")]
fn emulated_cuda(
    model: Arc<crate::model::CompiledModel>,
    p: Precision,
    counting: bool,
) -> Result<(Box<dyn Backend>, String), String> {
    use crate::backend::cuda::EmulatedCuda;
    let b = if counting {
        EmulatedCuda::counting(model, p)
    } else {
        EmulatedCuda::new(model, p)
    };
    b.map(|b| (Box::new(b) as Box<dyn Backend>, String::new()))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn emulated_cuda(
    _model: Arc<crate::model::CompiledModel>,
    _p: Precision,
    _counting: bool,
) -> Result<(Box<dyn Backend>, String), String> {
    Err("this build of vpop has no CUDA support (cargo feature `cuda`)".into())
}

/// A GPU target's backend, or `None` with the reason in `skipped` (and in `progress`): one
/// that is not available, or whose precision does not resolve a tolerance of `solvers` (an
/// f32 backend at rtol below 1e-7, which the others are still run at).
fn open_target(
    run: &TargetRun,
    model: &Arc<crate::model::CompiledModel>,
    progress: &mut dyn FnMut(&str),
    skipped: &mut Vec<Skipped>,
    solvers: &[&SolverOptions],
) -> Option<Box<dyn Backend>> {
    let precision = match run.target {
        Target::Cpu => return None,
        Target::Wgpu(p) | Target::Cuda(p) | Target::CudaEmulated(p) => p,
    };
    let made = match solvers.iter().find_map(|s| precision.check_rtol(s).err()) {
        Some(e) => Err(format!(
            "{e}; an f64 backend, or --rtol 1e-7 or more, runs at this tolerance"
        )),
        None => match run.target {
            Target::Cpu => return None,
            Target::Wgpu(p) => wgpu_backend(model.clone(), p),
            Target::Cuda(p) => cuda_backend_tuned(model.clone(), p, run.tuning.as_ref()),
            Target::CudaEmulated(p) => emulated_cuda(model.clone(), p, false),
        },
    };
    match made {
        Ok((b, _)) => Some(b),
        Err(e) => {
            let name = run.name();
            progress(&format!("{name}: skipped ({e})"));
            skipped.push(Skipped {
                backend: name,
                reason: e,
            });
            None
        }
    }
}

/// One backend run of the bench: a target, and for CUDA the tuning it is run with.
struct TargetRun {
    target: Target,
    tuning: Option<CudaTuning>,
}

impl TargetRun {
    /// The targets in order, each CUDA target once per variant.
    fn all(opts: &BenchOptions) -> Vec<TargetRun> {
        let mut runs = Vec::new();
        for &target in &opts.targets {
            match target {
                Target::Cuda(_) if !opts.cuda_variants.is_empty() => {
                    runs.extend(opts.cuda_variants.iter().map(|t| TargetRun {
                        target,
                        tuning: Some(t.clone()),
                    }))
                }
                _ => runs.push(TargetRun {
                    target,
                    tuning: None,
                }),
            }
        }
        runs
    }

    /// The target's label, with the tuning where one was asked for.
    fn name(&self) -> String {
        match &self.tuning {
            Some(t) => format!("{} [{}]", self.target.label(), t.label()),
            None => self.target.label().to_string(),
        }
    }

    /// The label of the run's row.
    fn row_label(&self, precision: Precision) -> String {
        format!("{} ({})", self.name(), precision.name())
    }
}

/// Which subject-arms of a comparison were compared, and why the others were not.
#[derive(Debug, Default)]
struct Tally {
    compared: u64,
    reference_failed: u64,
    backend_failed: u64,
}

impl Tally {
    /// Counts one subject-arm by the backend's and the reference's status codes (0: ok);
    /// whether its errors can be measured. One the reference failed on counts as that, whatever
    /// the backend did.
    fn subject(&mut self, got: u8, reference: u8) -> bool {
        if reference != 0 {
            self.reference_failed += 1;
            false
        } else if got != 0 {
            self.backend_failed += 1;
            false
        } else {
            self.compared += 1;
            true
        }
    }

    fn fill(&self, row: &mut BenchRow) {
        row.compared = self.compared;
        row.not_compared_reference_failed = self.reference_failed;
        row.not_compared_backend_failed = self.backend_failed;
    }
}

/// A row from the first `n` subjects of each arm, against the CPU at the same settings and
/// the tight reference. Only subject-arms that both the backend and the reference integrated
/// are compared; the row counts them, and the others by why not. The errors are NaN where
/// nothing was measured, never 0.
#[allow(clippy::too_many_arguments)]
fn compare(
    label: &str,
    device: &str,
    plans: &[ArmPlan],
    got: &[ChunkOutput],
    same: &[ChunkOutput],
    reference: &[ChunkOutput],
    n: usize,
    wall: Duration,
    kernel: Option<Duration>,
) -> BenchRow {
    let mut row = BenchRow {
        backend: label.into(),
        device: device.into(),
        subjects: (n * plans.len()) as u64,
        seconds: wall.as_secs_f64(),
        kernel_seconds: kernel.map(|k| k.as_secs_f64()),
        failed: 0,
        status_mismatches: 0,
        compared: 0,
        not_compared_reference_failed: 0,
        not_compared_backend_failed: 0,
        max_rel_auc_cmax: f64::NAN,
        max_rel_metrics: f64::NAN,
        steps_per_subject: 0.0,
        rhs_per_subject: 0.0,
    };
    let (mut steps, mut rhs) = (0u64, 0u64);
    for g in got {
        steps += g.stats.accepted + g.stats.rejected;
        rhs += g.stats.rhs_evals;
    }
    let count = got.iter().map(|g| g.status.len()).sum::<usize>().max(1) as f64;
    row.steps_per_subject = steps as f64 / count;
    row.rhs_per_subject = rhs as f64 / count;
    let mut tally = Tally::default();
    let (mut auc_cmax, mut metrics) = (None, None);
    for (a, plan) in plans.iter().enumerate() {
        let (g, s, r) = (&got[a], &same[a], &reference[a]);
        row.failed += g.status[..n].iter().filter(|x| **x != 0).count() as u64;
        row.status_mismatches += (0..n).filter(|&i| g.status[i] != s.status[i]).count() as u64;
        let ok: Vec<usize> = (0..n)
            .filter(|&i| tally.subject(g.status[i], r.status[i]))
            .collect();
        for (k, spec) in plan.metrics.iter().enumerate() {
            // Every Tmax (over a window, of the last interval): a time, which a tie within
            // rtol may put on another interval's peak at another tolerance.
            if spec.metric.kind == crate::metrics::MetricKind::Tmax {
                continue;
            }
            let (gv, rv) = (&g.metrics[k][..n], &r.metrics[k][..n]);
            let scale = rv
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| v.abs())
                .fold(0.0, f64::max);
            for &i in &ok {
                metrics = max_err(metrics, floored_error(gv[i], rv[i], scale));
                // Every AUC and Cmax, over any window.
                if matches!(
                    spec.metric.kind,
                    crate::metrics::MetricKind::Auc | crate::metrics::MetricKind::Cmax
                ) {
                    auc_cmax = max_err(auc_cmax, floored_error(gv[i], rv[i], 0.0));
                }
            }
        }
    }
    tally.fill(&mut row);
    row.max_rel_auc_cmax = auc_cmax.unwrap_or(f64::NAN);
    row.max_rel_metrics = metrics.unwrap_or(f64::NAN);
    row
}

/// `|got − reference|` relative to `|reference| + 1e-6 · scale`: 0 where both are the same
/// value (an undefined metric on both sides among them), NaN where one side only is undefined.
fn floored_error(got: f64, reference: f64, scale: f64) -> f64 {
    if got == reference || (got.is_nan() && reference.is_nan()) {
        return 0.0;
    }
    (got - reference).abs() / (reference.abs() + 1e-6 * scale).max(f64::MIN_POSITIVE)
}

/// The larger of the largest error so far (`None`: none measured yet) and `b`; NaN (a metric
/// missing on one side only) counts as infinite.
fn max_err(a: Option<f64>, b: f64) -> Option<f64> {
    let b = if b.is_nan() { f64::INFINITY } else { b };
    Some(a.map_or(b, |a| a.max(b)))
}

/// An error figure as the text prints it: `n/a` where none was measured, `inf` where a metric
/// is defined on one side only.
fn error_text(e: f64) -> String {
    if e.is_nan() {
        "n/a".into()
    } else if e.is_infinite() {
        "inf".into()
    } else {
        format!("{e:.2e}")
    }
}

/// What a row's comparison covered, where it did not cover every subject-arm: `compared on 3
/// of 4 subject-arms (the reference failed on 1)`; empty where it did.
fn coverage_text(r: &BenchRow) -> String {
    let (refs, own) = (
        r.not_compared_reference_failed,
        r.not_compared_backend_failed,
    );
    if refs == 0 && own == 0 {
        return String::new();
    }
    let mut why = Vec::new();
    if refs > 0 {
        why.push(format!("the reference failed on {refs}"));
    }
    if own > 0 {
        why.push(format!("this backend on {own}"));
    }
    format!(
        "compared on {} of {} subject-arms ({})",
        r.compared,
        r.compared + refs + own,
        why.join(", ")
    )
}

fn format_row(r: &BenchRow) -> String {
    let kernel = r
        .kernel_subjects_per_s()
        .map_or("-".to_string(), |k| format!("{k:.3e}"));
    let coverage = match coverage_text(r) {
        c if c.is_empty() => c,
        c => format!(", {c}"),
    };
    format!(
        "{}: {} subject-arms in {:.3} s: {:.3e} subjects/s (kernel only: {kernel}), {} failed, \
         max rel. error AUC/Cmax {}, all metrics but Tmax {}{coverage}",
        r.backend,
        r.subjects,
        r.seconds,
        r.subjects_per_s(),
        r.failed,
        error_text(r.max_rel_auc_cmax),
        error_text(r.max_rel_metrics)
    )
}

/// The report as a plain-text table.
pub fn format_report(rep: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} — arms: {}; {} rtol {:e} atol {:e}",
        rep.trial,
        rep.arms.join(", "),
        rep.method,
        rep.rtol,
        rep.atol
    );
    let _ = writeln!(s, "accuracy reference: {}", rep.reference);
    let cpu = rep
        .rows
        .iter()
        .find(|r| r.backend.starts_with("cpu"))
        .map(|r| r.subjects_per_s());
    // The backend column fits the longest label (tuned CUDA rows name their tuning).
    let w = rep
        .rows
        .iter()
        .map(|r| r.backend.chars().count())
        .chain(rep.skipped.iter().map(|k| k.backend.chars().count()))
        .fold(16, usize::max);
    let _ = writeln!(
        s,
        "{:<w$} {:>12} {:>10} {:>12} {:>14} {:>9} {:>7} {:>13} {:>10} {:>10}  device",
        "backend",
        "subject-arms",
        "seconds",
        "subjects/s",
        "kernel subj/s",
        "x CPU",
        "failed",
        "compared",
        "AUC/Cmax",
        "all"
    );
    for r in &rep.rows {
        let ratio = cpu.map_or("-".to_string(), |c| {
            format!("{:.1}", r.subjects_per_s() / c)
        });
        let kernel = r
            .kernel_subjects_per_s()
            .map_or("-".to_string(), |k| format!("{k:.3e}"));
        let compared = format!(
            "{}/{}",
            r.compared,
            r.compared + r.not_compared_reference_failed + r.not_compared_backend_failed
        );
        let _ = writeln!(
            s,
            "{:<w$} {:>12} {:>10.3} {:>12.3e} {:>14} {:>9} {:>7} {:>13} {:>10} {:>10}  {}",
            r.backend,
            r.subjects,
            r.seconds,
            r.subjects_per_s(),
            kernel,
            ratio,
            r.failed,
            compared,
            error_text(r.max_rel_auc_cmax),
            error_text(r.max_rel_metrics),
            r.device
        );
    }
    for k in &rep.skipped {
        let _ = writeln!(s, "{:<w$} not run: {}", k.backend, k.reason);
    }
    // The reference is the same for every row: where it failed, no row's error is known for
    // those subject-arms.
    if let Some(r) = rep
        .rows
        .iter()
        .filter(|r| r.not_compared_reference_failed > 0)
        .max_by_key(|r| r.not_compared_reference_failed)
    {
        let of = r.compared + r.not_compared_reference_failed + r.not_compared_backend_failed;
        let _ = writeln!(
            s,
            "note: the accuracy reference failed on {} of the {of} subject-arms of the comparison \
             (its status was not ok at its tolerance): their errors are unknown{}; a looser \
             --reference-rtol, or a larger `max_steps` in [simulation], may let it finish",
            r.not_compared_reference_failed,
            if r.not_compared_reference_failed == of {
                ", and no error could be measured (n/a)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "work per subject-arm (first subjects): model RHS + outputs = {} flops per evaluation ({} transcendental; values of the parameters alone once per subject)",
        rep.model_flops_per_rhs, rep.model_transcendentals_per_rhs
    );
    for r in &rep.rows {
        let _ = writeln!(
            s,
            "  {:<w$} {:>10.1} steps {:>10.1} RHS evaluations",
            r.backend, r.steps_per_subject, r.rhs_per_subject
        );
    }
    for k in &rep.kernel_ops {
        let _ = writeln!(s, "{}", format_kernel_ops(k));
        // The rate of floating-point work of the CUDA rows in this precision.
        for r in rep.rows.iter().filter(|r| {
            r.backend.starts_with("cuda") && r.backend.ends_with(&format!("({})", k.precision))
        }) {
            if let Some(rate) = r.kernel_subjects_per_s() {
                let _ = writeln!(
                    s,
                    "  {:<w$} {:.3e} FLOP/s and {:.3e} exp/log/pow per second in the kernel",
                    r.backend,
                    rate * k.flops_per_subject,
                    rate * k.per_subject.transcendental as f64
                );
            }
        }
    }
    let _ = if rep.records {
        write!(
            s,
            "compared: subject-arms compared against the reference, of those in the \
             comparison (others failed there, on the reference or this backend); AUC/Cmax and \
             all: largest error of the outputs on every record against the reference, relative \
             to |reference| + 1e-6·max|output| (n/a: nothing compared)."
        )
    } else {
        write!(
            s,
            "compared: subject-arms compared against the reference, of those in the \
             comparison (others failed there, on the reference or this backend); AUC/Cmax: \
             largest relative error of AUC and Cmax columns against the reference; all: of every \
             metric but Tmax, relative to |reference| + 1e-6·max|column| (n/a: nothing \
             compared, or no such column)."
        )
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_label_parses_back() {
        for t in [
            Target::Cpu,
            Target::Wgpu(Precision::F32),
            Target::Wgpu(Precision::F64),
            Target::Cuda(Precision::F32),
            Target::Cuda(Precision::F64),
            Target::CudaEmulated(Precision::F32),
            Target::CudaEmulated(Precision::F64),
        ] {
            assert_eq!(Target::parse(t.label()), Some(t), "{}", t.label());
        }
        assert_eq!(
            Target::parse("cuda-emulated"),
            Some(Target::CudaEmulated(Precision::F32))
        );
        assert_eq!(Target::parse("tpu"), None);
    }

    /// A trial whose tight reference fails on every subject (the step cap is enough for rtol
    /// 1e-6, about 900 steps, not for 1e-10, about 5 400): nothing is compared, and no error
    /// figure is given, rather than an error of 0.
    #[test]
    fn no_error_is_reported_where_the_reference_failed() {
        let spec = "[trial]\nname = \"ref fails\"\nsubjects = 4\nseed = 1\n\
            [model]\nlibrary = \"one_cmt_oral\"\nparams = { ka = 1.0, cl = 5.0, v = 50.0 }\n\
            [[arm]]\nname = \"q12h\"\n\
            dose = { amount = 100, into = \"depot\", every = 12, count = 20 }\n\
            [simulation]\nend = 240\nrtol = 1e-6\natol = 1e-9\nbackend = \"cpu\"\n\
            max_steps = 2000\n\
            [output]\ndir = \"out\"\nmetrics = [\"auc\", \"cmax\", \"ctrough\"]\n";
        let path = std::env::temp_dir().join("vpop-bench-ref-fails.toml");
        let trial = Trial::from_text(&path, spec).unwrap();
        let opts = BenchOptions {
            subjects: 4,
            cpu_subjects: 4,
            targets: vec![Target::Cpu],
            ..Default::default()
        };
        let mut lines = Vec::new();
        let rep = run_bench(&trial, &opts, &mut |l| lines.push(l.to_string())).unwrap();
        let row = &rep.rows[0];
        assert_eq!(row.failed, 0, "the trial's own settings succeed");
        assert_eq!(
            (
                row.compared,
                row.not_compared_reference_failed,
                row.not_compared_backend_failed
            ),
            (0, 4, 0)
        );
        assert!(row.max_rel_auc_cmax.is_nan() && row.max_rel_metrics.is_nan());
        let line = lines.last().unwrap();
        assert!(
            line.contains("AUC/Cmax n/a, all metrics but Tmax n/a")
                && line.contains("compared on 0 of 4 subject-arms (the reference failed on 4)"),
            "{line}"
        );
        let text = format_report(&rep);
        assert!(!text.contains("0.00e0"), "{text}");
        assert!(text.contains("0/4"), "{text}");
        assert!(
            text.contains("note: the accuracy reference failed on 4 of the 4 subject-arms"),
            "{text}"
        );
        // JSON: the counts, and null for the errors.
        let json = serde_json::to_value(&rep).unwrap();
        let r = &json["rows"][0];
        assert_eq!(r["compared"], 0);
        assert_eq!(r["not_compared_reference_failed"], 4);
        assert!(r["max_rel_auc_cmax"].is_null() && r["max_rel_metrics"].is_null());

        // Without the cap every subject is compared, and the error is a real one.
        let trial = Trial::from_text(&path, &spec.replace("max_steps = 2000\n", "")).unwrap();
        let rep = run_bench(&trial, &opts, &mut |_| {}).unwrap();
        let row = &rep.rows[0];
        assert_eq!((row.compared, row.not_compared_reference_failed), (4, 0));
        assert!(row.max_rel_auc_cmax > 0.0 && row.max_rel_auc_cmax < 1e-4);
        let text = format_report(&rep);
        assert!(text.contains("4/4") && !text.contains("note:"), "{text}");
        assert!(!format_row(row).contains("compared on"));
    }

    /// A backend whose precision does not resolve the tolerance is skipped with the reason,
    /// and the others still run (the whole bench had stopped at it); AUC and Cmax columns over
    /// a window (the last interval) count as AUC and Cmax.
    #[test]
    fn an_f32_backend_below_its_tolerance_is_skipped_and_windowed_aucs_count() {
        let spec = "[trial]\nname = \"windows\"\nsubjects = 4\nseed = 1\n\
            [model]\nlibrary = \"one_cmt_oral\"\nparams = { ka = 1.0, cl = 5.0, v = 50.0 }\n\
            [[arm]]\nname = \"q12h\"\n\
            dose = { amount = 100, into = \"depot\", every = 12, count = 4 }\n\
            [simulation]\nend = 48\nrtol = 1e-6\natol = 1e-9\nbackend = \"cpu\"\n\
            [output]\ndir = \"out\"\n\
            metrics = [\"auc_last_interval\", \"cmax_last_interval\", \"ctrough\"]\n";
        let path = std::env::temp_dir().join("vpop-bench-windows.toml");
        let trial = Trial::from_text(&path, spec).unwrap();
        let opts = BenchOptions {
            subjects: 4,
            cpu_subjects: 4,
            rtol: Some(1e-9),
            targets: vec![
                Target::Cpu,
                Target::CudaEmulated(Precision::F32),
                Target::Wgpu(Precision::F32),
            ],
            ..Default::default()
        };
        let rep = run_bench(&trial, &opts, &mut |_| {}).unwrap();
        assert_eq!(rep.rows.len(), 1, "the CPU row");
        assert_eq!(rep.skipped.len(), 2);
        for k in &rep.skipped {
            assert!(
                k.reason.contains("rtol 1e-9 is below what f32 resolves")
                    && k.reason.contains("an f64 backend"),
                "{}: {}",
                k.backend,
                k.reason
            );
        }
        let row = &rep.rows[0];
        assert!(
            row.max_rel_auc_cmax > 0.0 && row.max_rel_auc_cmax < 1e-6,
            "{}",
            row.max_rel_auc_cmax
        );
    }

    /// Which subject-arms are compared, and the errors of those only: a metric undefined on
    /// both sides agrees, on one side only it is infinitely off.
    #[test]
    fn comparisons_count_their_subjects_and_measure_only_those() {
        let mut t = Tally::default();
        let ok: Vec<bool> = [(0, 0), (0, 1), (2, 0), (3, 3), (0, 0)]
            .into_iter()
            .map(|(g, r)| t.subject(g, r))
            .collect();
        assert_eq!(ok, [true, false, false, false, true]);
        assert_eq!(
            (t.compared, t.reference_failed, t.backend_failed),
            (2, 2, 1)
        );
        assert_eq!(floored_error(f64::NAN, f64::NAN, 1.0), 0.0);
        assert_eq!(floored_error(f64::INFINITY, f64::INFINITY, 1.0), 0.0);
        assert!(floored_error(1.0, f64::NAN, 1.0).is_nan());
        assert_eq!(floored_error(1.5, 1.0, 0.0), 0.5);
        assert_eq!(max_err(None, f64::NAN), Some(f64::INFINITY));
        assert_eq!(max_err(Some(1e-3), 1e-5), Some(1e-3));
        assert_eq!(max_err(None, 0.0), Some(0.0));
        assert_eq!(error_text(f64::NAN), "n/a");
        assert_eq!(error_text(f64::INFINITY), "inf");
        assert_eq!(error_text(2.5e-6), "2.50e-6");
    }
}
