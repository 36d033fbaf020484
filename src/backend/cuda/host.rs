//! What a run of the CUDA integrator kernel needs on the host, wherever the kernel runs: the
//! kernel's source, its parameter, scale and arm buffers, its `Meta` struct, the sizes of the
//! buffers it writes, and the unpacking of what it wrote into a [`ChunkOutput`]. A
//! [`Launcher`] does the rest — the devices through cudarc ([`super::CudaBackend`]) or the
//! host emulation ([`super::EmulatedCuda`]) — so both run the same source on the same buffers.
//!
//! A chunk is split into parts of whole subjects, one per lane of the launcher (every stream
//! of every device), so that the parts' transfers overlap each other's kernels and every GPU
//! of the machine takes a share. Each subject's result does not depend on the split.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

use super::kernel::{arm_source_located, records_source_located, COUNTERS};
use crate::backend::gpu::{
    arm_data, pack_params, pack_scale, prepare_chunk, records_data, step_samples, take_counters,
    take_records, take_values, Driver, KernelSizes, RecordsData, Rows, INDEX_STRIDE,
};
#[cfg(test)]
use crate::backend::order::WINDOW;
use crate::backend::order::{records_in_order, sample_every, Round, SubjectOrder};
use crate::backend::records::{Op, Program, RecordsOutcome};
use crate::backend::{ArmPlan, BackendError, ChunkInput, ChunkOutput, Precision};
use crate::model::CompiledModel;
use crate::solver::SolverOptions;

/// Threads per block of every launch.
pub(super) const BLOCK: u32 = 128;

/// Whether `VPOP_CUDA_TRACE` asks for the time of each backend call's stages on standard
/// error (set, and not `0`): what the host prepares, what the launcher takes (the kernels'
/// span within it) and the unpacking of the results; the devices add their staging copies and
/// waits. For finding where a call's time goes beside its kernels (docs/gpu.md).
pub(super) fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("VPOP_CUDA_TRACE").is_some_and(|v| v != "0"))
}

/// Milliseconds, for the trace.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The kernel's `struct Meta` (kernels/integrate.cu), for `real` = T.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta<T> {
    pub n: u32,
    pub n_admin: u32,
    pub n_fixed: u32,
    pub n_times: u32,
    pub wants_extrema: u32,
    pub max_steps: u32,
    pub off_fixed: u32,
    pub off_times: u32,
    pub off_metrics: u32,
    /// Dose lines; their administrations' end indices follow the administrations.
    pub n_lines: u32,
    pub rtol: T,
    pub atol: T,
    pub dt: T,
    pub h_max: T,
    pub h_min_rel: T,
    pub end_time: T,
    pub trough: T,
    pub eps: T,
    pub snap: T,
}

impl<T: Real> Meta<T> {
    /// The solver's settings for `n` subjects, with no arm (the records kernel's).
    pub fn new(n: usize, s: &SolverOptions) -> Meta<T> {
        Meta {
            n: n as u32,
            n_admin: 0,
            n_fixed: 0,
            n_times: 0,
            wants_extrema: 0,
            max_steps: s.max_steps.min(u64::from(u32::MAX)) as u32,
            off_fixed: 0,
            off_times: 0,
            off_metrics: 0,
            n_lines: 0,
            rtol: T::of(s.rtol),
            atol: T::of(s.atol),
            dt: T::of(s.dt.unwrap_or(0.0)),
            h_max: T::of(s.h_max.min(1e30)),
            h_min_rel: T::of(s.h_min_rel),
            end_time: T::of(0.0),
            trough: T::of(-1.0),
            eps: T::of(T::EPS),
            snap: T::of(T::SNAP),
        }
    }
}

// SAFETY: plain `repr(C)` data with the layout of the kernel's struct (ten 32-bit unsigned
// integers, then nine `real`s, which start 8-byte aligned at byte 40).
unsafe impl<T: Real> DeviceRepr for Meta<T> {}

/// A floating-point type the kernels are compiled for.
pub(super) trait Real:
    DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Default + Send + Sync + 'static
{
    const PRECISION: Precision;
    const EPS: f64;
    const SNAP: f64;
    fn of(x: f64) -> Self;
    fn to(self) -> f64;
    /// The host emulation's entry point for this type, if `e` was built for it.
    fn emulated(e: &super::emulate::Entry) -> Option<super::emulate::EntryFn<Self>>;
}

impl Real for f32 {
    const PRECISION: Precision = Precision::F32;
    const EPS: f64 = f32::EPSILON as f64;
    const SNAP: f64 = crate::solver::tableau_data::SNAP_F32;
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn to(self) -> f64 {
        f64::from(self)
    }
    fn emulated(e: &super::emulate::Entry) -> Option<super::emulate::EntryFn<f32>> {
        match e {
            super::emulate::Entry::F32(f) => Some(*f),
            super::emulate::Entry::F64(_) => None,
        }
    }
}

impl Real for f64 {
    const PRECISION: Precision = Precision::F64;
    const EPS: f64 = f64::EPSILON;
    const SNAP: f64 = crate::solver::tableau_data::SNAP_F64;
    fn of(x: f64) -> f64 {
        x
    }
    fn to(self) -> f64 {
        self
    }
    fn emulated(e: &super::emulate::Entry) -> Option<super::emulate::EntryFn<f64>> {
        match e {
            super::emulate::Entry::F64(f) => Some(*f),
            super::emulate::Entry::F32(_) => None,
        }
    }
}

/// One launch of `integrate`: its source and its inputs, as the kernel reads them.
pub(super) struct Job<'a, T> {
    pub src: &'a str,
    /// Subjects (threads that do work).
    pub n: usize,
    /// `params[(o * np + p) * n + i]`: parameter p of subject i at occasion o.
    pub params: &'a [T],
    /// Dose scaling per subject.
    pub scale: &'a [T],
    pub arm: &'a [T],
    pub meta: Meta<T>,
    /// Lengths of the buffers the kernel writes (each at least 1).
    pub metrics_len: usize,
    /// `metrics` starts as NaN (else zeros): the records kernel writes only the records a
    /// subject reaches, and those after a failure keep NaN.
    pub metrics_nan: bool,
    pub counters_len: usize,
    /// What the counters buffer holds before the launch (zeros when `None`): the records
    /// kernel reads each subject's index there.
    pub counters_in: Option<&'a [u32]>,
    pub profiles_len: usize,
}

/// What a job's launch wrote, where it lies: in a device's page-locked staging buffer (taken
/// from there with no copy) or in the emulation's vectors.
pub(super) struct Written<'a, T> {
    pub metrics: &'a [T],
    pub counters: &'a [u32],
    /// Empty when the arm samples no profile.
    pub profiles: &'a [T],
}

/// Takes job `ix`'s results as soon as its launch is done, on whichever thread drives its
/// device, while other jobs may still run.
pub(super) type Take<'t, T> = dyn Fn(usize, Written<'_, T>) + Sync + 't;

/// Runs the kernels of jobs somewhere.
pub(super) trait Launcher {
    /// Lanes (parts run at once: streams × devices), and the smallest part worth a lane.
    fn lanes(&self) -> (usize, usize);
    /// Runs independent jobs, in any order and possibly at once, handing each job's results to
    /// `take` exactly once; the kernels' time, from the first kernel's start to the last one's
    /// end (transfers before and after excluded; on several devices, the longest device).
    fn launch_all<T: Real>(
        &mut self,
        jobs: &[Job<'_, T>],
        take: &Take<'_, T>,
    ) -> Result<Duration, BackendError>;
}

/// Splits `n` subjects into at most `lanes` parts of whole blocks, none smaller than `min`
/// subjects (except a last, shorter one, or when there are fewer subjects than that).
pub(super) fn split(n: usize, (lanes, min): (usize, usize)) -> Vec<Range<usize>> {
    let block = BLOCK as usize;
    let k = lanes.max(1).min(n / min.max(1)).max(1);
    let per = n.div_ceil(k).div_ceil(block) * block;
    (0..n)
        .step_by(per.max(1))
        .map(|a| a..(a + per).min(n))
        .collect()
}

/// A backend running the CUDA integrator kernel through a launcher.
pub(super) struct Host<L> {
    pub model: Arc<CompiledModel>,
    pub precision: Precision,
    pub launcher: L,
    /// Prefix of error messages.
    pub label: &'static str,
    /// The order subjects are handed to threads in (shared with the siblings); `None`: the
    /// order they were sampled in.
    pub order: Option<Arc<SubjectOrder>>,
    /// Which instance this is (0 the first; siblings count on), for the trace, and how many
    /// this one and its siblings have opened.
    pub instance: usize,
    pub instances: Arc<std::sync::atomic::AtomicUsize>,
}

impl<L: Launcher> Host<L> {
    pub fn failed(&self, m: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!("{}: {m}", self.label))
    }

    /// The number of a sibling about to be opened.
    pub fn next_instance(&self) -> usize {
        self.instances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `jobs` on the launcher, `each` taking job `ix`'s results as they arrive; what
    /// `each` returned for every job, in job order, and the kernels' time. A job whose results
    /// were never handed over fails the call (its subjects' rows would otherwise keep what
    /// they were reset to).
    fn launch_each<T: Real, R: Send>(
        &mut self,
        jobs: &[Job<'_, T>],
        each: impl Fn(usize, Written<'_, T>) -> R + Sync,
    ) -> Result<(Vec<R>, Duration), BackendError> {
        let slots: Vec<std::sync::Mutex<Option<R>>> =
            jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let kernel_time = self.launcher.launch_all(jobs, &|ix, w: Written<'_, T>| {
            let r = each(ix, w);
            *slots[ix].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        })?;
        let taken = slots
            .into_iter()
            .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect::<Option<Vec<R>>>()
            .ok_or_else(|| self.failed("a part's results were not taken"))?;
        Ok((taken, kernel_time))
    }

    pub fn run_chunk(
        &mut self,
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        out: &mut ChunkOutput,
    ) -> Result<(), BackendError> {
        let progs = &self.model.programs;
        let f32_kernel = self.precision == Precision::F32;
        prepare_chunk(
            progs,
            arm,
            input,
            f32_kernel,
            "use precision = \"f64\"",
            out,
        )
        .map_err(|e| self.failed(e))?;
        if input.n == 0 {
            return Ok(());
        }
        match self.precision {
            Precision::F32 => self.run::<f32>(arm, input, out),
            Precision::F64 => self.run::<f64>(arm, input, out),
        }
    }

    fn run<T: Real>(
        &mut self,
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        out: &mut ChunkOutput,
    ) -> Result<(), BackendError> {
        let progs = &self.model.programs;
        let n = input.n;
        if u32::try_from(n).is_err() {
            return Err(self.failed(format!("a chunk of {n} subjects is too large")));
        }
        let t_prepare = Instant::now();
        let src = arm_source_located(
            progs,
            arm.solver.method,
            &arm.metrics,
            Driver::of_arm(arm),
            T::PRECISION,
            crate::backend::gpu::located_switches(&self.model, &arm.solver),
        )
        .map_err(|e| self.failed(e))?;
        let jumps =
            crate::backend::gpu::arm_jumps(progs, arm, T::PRECISION).map_err(|e| self.failed(e))?;
        let ad = arm_data(arm, &jumps);
        let own = crate::backend::gpu::own_stops(progs, arm, input, T::PRECISION)
            .map_err(|e| self.failed(e))?;
        let z = KernelSizes::new(progs, &arm.metrics);
        let nt = ad.n_times;
        let arm_v: Vec<T> = ad.data.iter().map(|v| T::of(*v)).collect();
        let meta = Meta::<T> {
            n_admin: ad.n_admin as u32,
            n_lines: ad.n_lines as u32,
            n_fixed: ad.n_fixed as u32,
            n_times: nt as u32,
            wants_extrema: ad.wants_extrema as u32,
            off_fixed: ad.off_fixed as u32,
            off_times: ad.off_times as u32,
            off_metrics: ad.off_metrics as u32,
            end_time: T::of(arm.end),
            trough: T::of(ad.trough),
            ..Meta::new(n, &arm.solver)
        };
        let lanes = self.launcher.lanes();
        let prepared = t_prepare.elapsed();
        // Rounds of launches: the subjects in the order learnt for the arm; or, with nothing
        // learnt yet, a pilot of the first subjects in sampling order, then the rest ordered.
        let mut start = 0;
        let mut piloted = false;
        while start < n {
            let t_plan = Instant::now();
            let round = match &self.order {
                Some(o) => o.round(&arm.name, input, start..n, !piloted),
                None => Round::AsSampled {
                    rows: start..n,
                    pilot: false,
                },
            };
            let (end, what, parts) = match round {
                Round::Ordered(order) => {
                    let parts = split(order.len(), lanes)
                        .into_iter()
                        .map(|r| Rows::List(order[r].to_vec()))
                        .collect();
                    (n, "ordered", parts)
                }
                Round::AsSampled { rows, pilot } => {
                    piloted |= pilot;
                    let parts: Vec<Rows> = split(rows.len(), lanes)
                        .into_iter()
                        .map(|r| Rows::Range(rows.start + r.start..rows.start + r.end))
                        .collect();
                    (rows.end, if pilot { "pilot" } else { "as sampled" }, parts)
                }
            };
            let planned = t_plan.elapsed();
            let samples = self.launch_rows(
                &src,
                meta,
                &arm_v,
                (z.nm, z.no, nt),
                arm,
                input,
                &own,
                &parts,
                out,
            )?;
            let t_learn = Instant::now();
            if let Some(o) = &self.order {
                o.learn(&arm.name, input, &samples);
            }
            if trace() {
                eprintln!(
                    "{}#{}: {} subjects {what}: plan {:.2} ms, learn {:.2} ms ({} samples)",
                    self.label,
                    self.instance,
                    end - start,
                    ms(planned + if start == 0 { prepared } else { Duration::ZERO }),
                    ms(t_learn.elapsed()),
                    samples.len()
                );
            }
            start = end;
        }
        Ok(())
    }

    /// One round of launches, a part per lane: packs each part's parameters and dose scaling
    /// (in parallel), launches, and takes each part's results into its subjects' rows as soon
    /// as its launch is done (from the device's staging buffer, with no copy; parts of several
    /// devices take turns). With a subject order, samples of the parts' step counts for it:
    /// `(subject, accepted + rejected steps)`.
    #[allow(clippy::too_many_arguments)]
    fn launch_rows<T: Real>(
        &mut self,
        src: &str,
        meta: Meta<T>,
        arm_v: &[T],
        (nm, no, nt): (usize, usize, usize),
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        own: &[crate::backend::gpu::OwnStops],
        parts: &[Rows],
        out: &mut ChunkOutput,
    ) -> Result<Vec<(u32, u32)>, BackendError> {
        let t_pack = Instant::now();
        let np = self.model.programs.n_params;
        let packed: Vec<(Vec<T>, Vec<T>)> = parts
            .par_iter()
            .map(|r| {
                (
                    pack_params(input, arm, np, r, own, T::of),
                    pack_scale(input, r, T::of),
                )
            })
            .collect();
        let jobs: Vec<Job<'_, T>> = parts
            .iter()
            .zip(&packed)
            .map(|(r, (params, scale))| Job {
                src,
                n: r.len(),
                params,
                scale,
                arm: arm_v,
                meta: Meta {
                    n: r.len() as u32,
                    ..meta
                },
                metrics_len: (nm * r.len()).max(1),
                counters_len: COUNTERS * r.len(),
                metrics_nan: false,
                counters_in: None,
                profiles_len: (no * r.len() * nt).max(1),
            })
            .collect();
        let packing = t_pack.elapsed();
        let t_launch = Instant::now();
        let total: usize = parts.iter().map(Rows::len).sum();
        // Some threads' steps, for the subject order (none without one).
        let every = self.order.as_ref().map(|_| sample_every(total));
        let taking = std::sync::Mutex::new(&mut *out);
        let (took, kernel_time) = self.launch_each(&jobs, |ix, w| {
            let mut o = taking.lock().unwrap_or_else(|e| e.into_inner());
            let t0 = Instant::now();
            let r = &parts[ix];
            take_counters(&mut o, w.counters, COUNTERS, r);
            take_values(&mut o, w.metrics, w.profiles, r, T::to);
            let samples = every.map_or_else(Vec::new, |e| step_samples(w.counters, COUNTERS, r, e));
            (t0.elapsed(), samples)
        })?;
        let mut taken = Duration::ZERO;
        let mut samples = Vec::new();
        for (t, s) in took {
            taken += t;
            samples.extend(s);
        }
        out.kernel_time += kernel_time;
        if trace() {
            eprintln!(
                "{}#{}: {total} subjects in {} parts: pack {:.2} ms, launch {:.2} ms (kernels {:.2} ms; results taken within it {:.2} ms)",
                self.label,
                self.instance,
                parts.len(),
                ms(packing),
                ms(t_launch.elapsed()),
                ms(kernel_time),
                ms(taken)
            );
        }
        Ok(samples)
    }
}

impl<L: Launcher> Host<L> {
    /// Runs record programs on the records kernel, in batches that keep every offset and
    /// every integer the kernel reads from its values exact.
    pub fn run_records(
        &mut self,
        programs: &[&Program],
        solver: &SolverOptions,
    ) -> Result<Vec<RecordsOutcome>, BackendError> {
        if programs.is_empty() {
            return Ok(Vec::new());
        }
        self.precision
            .check_rtol(solver)
            .map_err(|e| self.failed(format!("{e}; use precision = \"f64\"")))?;
        // In the order of the programs' cost (`order=natural`: as given).
        match self.order.clone() {
            Some(o) => records_in_order(&o, programs, |p| self.records_batched(p, solver)),
            None => self.records_batched(programs, solver),
        }
    }

    /// Record programs integrated in batches, their outcomes in the programs' order.
    fn records_batched(
        &mut self,
        programs: &[&Program],
        solver: &SolverOptions,
    ) -> Result<Vec<RecordsOutcome>, BackendError> {
        // Batches that keep every offset and integer exact: at most 2^20 subjects and 2^22
        // instructions, records and parameter sets each (a subject larger than that gets a
        // batch of its own), and no more subjects than a lane's share.
        let (lanes, min) = self.launcher.lanes();
        let share = programs.len().div_ceil(lanes.max(1)).max(min).min(1 << 20);
        let mut batches: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        while start < programs.len() {
            let mut end = start;
            let (mut instrs, mut rows, mut sets) = (0usize, 0usize, 0usize);
            while end < programs.len() && end - start < share {
                let p = programs[end];
                let i: usize = p.ops.iter().map(Op::kernel_instructions).sum();
                if end > start
                    && (instrs + i > 1 << 22
                        || rows + p.n_records > 1 << 22
                        || sets + p.params.len() > 1 << 22)
                {
                    break;
                }
                instrs += i;
                rows += p.n_records;
                sets += p.params.len();
                end += 1;
            }
            batches.push(start..end);
            start = end;
        }
        match self.precision {
            Precision::F32 => self.run_records_batches::<f32>(programs, &batches, solver),
            Precision::F64 => self.run_records_batches::<f64>(programs, &batches, solver),
        }
    }

    fn run_records_batches<T: Real>(
        &mut self,
        programs: &[&Program],
        batches: &[Range<usize>],
        solver: &SolverOptions,
    ) -> Result<Vec<RecordsOutcome>, BackendError> {
        let progs = &self.model.programs;
        let z = KernelSizes::new(progs, &[]);
        let src = records_source_located(
            progs,
            solver.method,
            T::PRECISION,
            crate::backend::gpu::located_switches(&self.model, solver),
        )
        .map_err(|e| self.failed(e))?;
        let cast = |v: &[f64]| -> Vec<T> { v.iter().map(|x| T::of(*x)).collect() };
        type Packed<T> = (RecordsData, Vec<T>, Vec<T>);
        let packed: Vec<Packed<T>> = batches
            .par_iter()
            .map(|b| {
                let data = records_data(&programs[b.clone()], z.np, &|t| T::of(t).to())?;
                let (params, prog) = (cast(&data.params), cast(&data.prog));
                Ok((data, params, prog))
            })
            .collect::<Result<_, String>>()
            .map_err(|e| self.failed(e))?;
        let no_scale = [T::default()];
        let jobs: Vec<Job<'_, T>> = batches
            .iter()
            .zip(&packed)
            .map(|(b, (data, params, prog))| Job {
                src: &src,
                n: b.len(),
                params,
                scale: &no_scale,
                arm: prog,
                meta: Meta::<T>::new(b.len(), solver),
                metrics_len: (z.no * data.rows).max(1),
                counters_len: COUNTERS * b.len(),
                metrics_nan: true,
                counters_in: Some(&data.index),
                // Steady-state scratch (kernels/records_driver.cu SCRATCH).
                profiles_len: (z.ny() + 3 * z.ns) * b.len(),
            })
            .collect();
        let n_outputs = progs.n_outputs;
        let (taken, _) = self.launch_each(&jobs, |ix, w| {
            let (b, (data, _, _)) = (&batches[ix], &packed[ix]);
            take_records(
                &programs[b.clone()],
                data,
                w.metrics,
                w.counters,
                COUNTERS,
                n_outputs,
                T::to,
            )
        })?;
        Ok(taken.into_iter().flatten().collect())
    }
}

// The records kernel reads its index where it writes its counters.
const _: () = assert!(INDEX_STRIDE == COUNTERS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::order::{PILOT, PILOT_CALL};

    fn one_cmt_iv() -> crate::model::Model {
        let lm = crate::model::library::get("one_cmt_iv").unwrap();
        crate::model::Model::parse(lm.name, lm.source).unwrap()
    }

    /// Two boluses, the AUC of the first output.
    fn auc_arm() -> ArmPlan {
        use crate::dosing::{DoseLine, Regimen};
        ArmPlan {
            name: "a".into(),
            regimen: Regimen {
                lines: vec![DoseLine::boluses(0, 100.0, 12.0, 2)],
            },
            metrics: vec![crate::metrics::MetricSpec::new(
                0,
                "cp",
                crate::metrics::Metric::parse("auc").unwrap(),
            )],
            end: 24.0,
            sample_times: Vec::new(),
            solver: SolverOptions::default(),
            occasions: Vec::new(),
        }
    }

    /// A launcher that writes zeros for every job but `skip`, whose results it never hands
    /// over (a device thread that lost a part).
    struct Zeros {
        skip: Option<usize>,
    }

    impl Launcher for Zeros {
        fn lanes(&self) -> (usize, usize) {
            (3, 1)
        }
        fn launch_all<T: Real>(
            &mut self,
            jobs: &[Job<'_, T>],
            take: &Take<'_, T>,
        ) -> Result<Duration, BackendError> {
            for (ix, j) in jobs.iter().enumerate().rev() {
                if Some(ix) == self.skip {
                    continue;
                }
                let counters: Vec<u32> = (0..j.counters_len as u32).collect();
                let metrics = vec![T::default(); j.metrics_len];
                take(
                    ix,
                    Written {
                        metrics: &metrics,
                        counters: &counters,
                        profiles: &[],
                    },
                );
            }
            Ok(Duration::from_millis(1))
        }
    }

    /// Parts taken in any order land in their subjects' rows; a part whose results are never
    /// taken fails the call instead of leaving its subjects' rows as they were reset.
    #[test]
    fn every_part_is_taken_or_the_call_fails() {
        let model = Arc::new(CompiledModel::new(&one_cmt_iv()));
        let arm = auc_arm();
        let n = 1000;
        let params: Vec<Vec<f64>> = (0..model.programs.n_params).map(|_| vec![1.0; n]).collect();
        let input = ChunkInput {
            first_subject: 0,
            n,
            params: &params,
            amount_scale: None,
            occasion_params: &[],
        };
        for precision in [Precision::F32, Precision::F64] {
            let mut host = Host {
                model: model.clone(),
                precision,
                launcher: Zeros { skip: None },
                label: "test",
                order: None,
                instance: 0,
                instances: Arc::new(1.into()),
            };
            let mut out = ChunkOutput::default();
            host.run_chunk(&arm, &input, &mut out).unwrap();
            assert_eq!(out.metrics[0], vec![0.0; n]);
            // Each subject's status is the first of its five counters, 5 i (at most 255).
            let parts = split(n, (3, 1));
            assert_eq!(parts.len(), 3);
            for r in &parts {
                for i in r.clone() {
                    let want = (5 * (i - r.start)).min(255) as u8;
                    assert_eq!(out.status[i], want, "subject {i}");
                }
            }
            host.launcher.skip = Some(1);
            let err = host.run_chunk(&arm, &input, &mut out).unwrap_err();
            assert!(err.to_string().contains("not taken"), "{err}");
        }
    }

    /// A launcher that reads each thread's subject from parameter 1 (the subject's index) and
    /// reports a cost that grows with parameter 0 as its steps; it writes the index as the
    /// first metric and records the subjects of every job of every call.
    struct Costs {
        calls: Vec<Vec<Vec<u32>>>,
    }

    impl Launcher for Costs {
        fn lanes(&self) -> (usize, usize) {
            (3, 1)
        }
        fn launch_all<T: Real>(
            &mut self,
            jobs: &[Job<'_, T>],
            take: &Take<'_, T>,
        ) -> Result<Duration, BackendError> {
            let mut call = Vec::new();
            for (ix, j) in jobs.iter().enumerate() {
                let (cost, id) = (&j.params[..j.n], &j.params[j.n..2 * j.n]);
                let ids: Vec<u32> = id.iter().map(|v| v.to() as u32).collect();
                let mut counters = vec![0u32; j.counters_len];
                for (t, c) in cost.iter().enumerate() {
                    counters[t * COUNTERS + 1] = (100.0 * c.to().sqrt()) as u32;
                    counters[t * COUNTERS + 2] = 3;
                }
                let mut metrics = vec![T::default(); j.metrics_len];
                metrics[..j.n].copy_from_slice(id);
                take(
                    ix,
                    Written {
                        metrics: &metrics,
                        counters: &counters,
                        profiles: &[],
                    },
                );
                call.push(ids);
            }
            self.calls.push(call);
            Ok(Duration::from_millis(1))
        }
    }

    /// The first large call of an arm integrates a pilot of its first subjects as sampled, then
    /// the rest ordered, window by window the costliest first, in a part per lane; later calls
    /// are ordered whole. Every subject is integrated once and its results land in its own row.
    #[test]
    fn subjects_are_ordered_by_the_cost_learnt_from_earlier_ones() {
        let model = Arc::new(CompiledModel::new(&one_cmt_iv()));
        let n = PILOT_CALL + 1000;
        // A cost driver spread over two decades, in a scrambled order.
        let cost: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(((i as u64 * 2_654_435_761) % 1000) as f64 / 500.0))
            .collect();
        let id: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let params = vec![cost.clone(), id];
        let input = ChunkInput {
            first_subject: 0,
            n,
            params: &params,
            amount_scale: None,
            occasion_params: &[],
        };
        let arm = auc_arm();
        let mut host = Host {
            model,
            precision: Precision::F64,
            launcher: Costs { calls: Vec::new() },
            label: "test",
            order: Some(Arc::new(SubjectOrder::new())),
            instance: 0,
            instances: Arc::new(1.into()),
        };
        let mut out = ChunkOutput::default();
        for call in 0..2 {
            host.run_chunk(&arm, &input, &mut out).unwrap();
            let rows: Vec<f64> = (0..n).map(|i| i as f64).collect();
            assert_eq!(out.metrics[0], rows, "call {call}: rows");
            // Steps: 100 sqrt(cost) accepted and 3 rejected per subject.
            let steps: u64 = cost.iter().map(|c| (100.0 * c.sqrt()) as u64 + 3).sum();
            assert_eq!(out.stats.accepted + out.stats.rejected, steps);
        }
        let calls = &host.launcher.calls;
        assert_eq!(calls.len(), 3, "pilot, the rest of call 1, call 2");
        let pilot: Vec<u32> = calls[0].concat();
        assert_eq!(pilot, (0..PILOT as u32).collect::<Vec<_>>());
        for (c, want) in [(1, PILOT..n), (2, 0..n)] {
            let jobs = &calls[c];
            assert_eq!(jobs.len(), 3, "one part per lane");
            let all: Vec<u32> = jobs.concat();
            for (w, window) in all.chunks(WINDOW).enumerate() {
                let first = (want.start + w * WINDOW) as u32;
                let mut seen = window.to_vec();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (first..first + window.len() as u32).collect::<Vec<_>>()
                );
                // Costliest first within each window, up to a bucket's width.
                for p in window.windows(2) {
                    let (a, b) = (cost[p[0] as usize], cost[p[1] as usize]);
                    assert!(b <= a * 1.01, "call {c}: cost {b} after {a}");
                }
                assert!(cost[window[0] as usize] > 80.0);
                assert!(cost[window[window.len() - 1] as usize] < 1.2);
            }
        }
        // Without an order, subjects go as sampled.
        host.order = None;
        host.launcher.calls.clear();
        host.run_chunk(&arm, &input, &mut out).unwrap();
        let calls = &host.launcher.calls;
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].concat(), (0..n as u32).collect::<Vec<_>>());
    }

    #[test]
    fn parts_cover_every_subject_once_in_whole_blocks() {
        let b = BLOCK as usize;
        for (n, lanes, min) in [
            (1, 3, 1),
            (1000, 3, 1),
            (1000, 3, 32_768),
            (1 << 20, 6, 32_768),
            (100_000, 12, 32_768),
            (129, 2, 1),
        ] {
            let parts = split(n, (lanes, min));
            assert!(
                !parts.is_empty() && parts.len() <= lanes,
                "{n} {lanes} {min}"
            );
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts.last().unwrap().end, n);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].len() % b, 0, "{n} {lanes} {min}: {parts:?}");
                assert!(w[0].len() >= min.min(n));
            }
        }
        assert_eq!(split(1000, (3, 32_768)), vec![0..1000]);
        assert_eq!(split(100_000, (12, 32_768)).len(), 3);
    }
}
