//! What the GPU kernels (WGSL and CUDA) share on the host side: their sizes and the arm data
//! they read (administrations, stopping points, sample times, metric specs).

use crate::backend::records::{Program, RecordsOutcome};
use crate::backend::{ArmPlan, ChunkInput, ChunkOutput, Precision};
use crate::dosing::Administration;
use crate::metrics::{quadrature_outputs, resolve_window, MetricKind, MetricSpec};
use crate::model::ModelPrograms;
use crate::solver::{Stats, Status};

/// Values per administration and per metric spec in the arm buffer.
pub const ADMIN_STRIDE: usize = 5;
pub const SPEC_STRIDE: usize = 6;

/// Sizes of one kernel instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSizes {
    pub ns: usize,
    pub np: usize,
    /// Outputs (at least 1: a model without outputs gets a zero one).
    pub no: usize,
    pub nm: usize,
    /// AUC quadrature states ([`crate::metrics::quadrature_outputs`] of the metrics).
    pub na: usize,
}

impl KernelSizes {
    pub fn new(m: &ModelPrograms, metrics: &[MetricSpec]) -> KernelSizes {
        KernelSizes {
            ns: m.n_states.max(1),
            np: m.n_params,
            no: m.n_outputs.max(1),
            nm: metrics.len(),
            na: quadrature_outputs(metrics).len(),
        }
    }
    /// Integrated components: the model states, then the AUC quadratures.
    pub fn ny(&self) -> usize {
        self.ns + self.na
    }
    /// Floating-point values carried per subject between segments.
    pub fn carry_f(&self) -> usize {
        self.ny() + self.ns + 2 * self.nm + self.na + 4
    }
}

/// An arm as the kernel reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmData {
    /// Administrations (5 values each), the index one past the last administration of each
    /// line (a dose line, or consecutive lines of the same dose, of one occasion: `n_lines`
    /// values), fixed stopping points, sample times and metric specs, in that order; then, for
    /// an arm with occasions, their table (see [`occasion_table`]).
    pub data: Vec<f64>,
    pub n_admin: usize,
    pub n_lines: usize,
    pub n_fixed: usize,
    pub n_times: usize,
    pub off_fixed: usize,
    pub off_times: usize,
    pub off_metrics: usize,
    /// Later occasions (the arm's `occasions`: each switches every parameter).
    pub n_occ: usize,
    /// Time of the last administration when there are several (ctrough), else −1.
    pub trough: f64,
    pub wants_extrema: bool,
}

/// `values[i]` as a kernel expression: a balanced tree of two-way choices on the index, log2
/// deep (1 000 values: 10 levels), so that hundreds of metrics or outputs stay within what the
/// compilers nest. `choice(lo, hi, m)` writes the choice between `lo` (indices below `m`) and
/// `hi`; the values are unsigned literals (`7u`): 0 without values, the last one past the end.
pub fn index_tree(values: &[usize], choice: &dyn Fn(&str, &str, usize) -> String) -> String {
    fn tree(
        values: &[usize],
        first: usize,
        choice: &dyn Fn(&str, &str, usize) -> String,
    ) -> String {
        match values.len() {
            0 => "0u".to_string(),
            1 => format!("{}u", values[0]),
            n => {
                let mid = n / 2;
                let lo = tree(&values[..mid], first, choice);
                let hi = tree(&values[mid..], first + mid, choice);
                choice(&lo, &hi, first + mid)
            }
        }
    }
    tree(values, 0, choice)
}

/// Each metric's kind code ([`metric_code`], as in the arm data) and output, as the kernels
/// compile them in (`metric_kind`, `metric_output`).
pub fn metric_kinds_and_outputs(metrics: &[MetricSpec]) -> (Vec<usize>, Vec<usize>) {
    metrics
        .iter()
        .map(|x| (metric_code(x.metric.kind).0 as usize, x.output))
        .unzip()
}

/// Kind codes shared with the templates, and a metric's threshold or time.
pub fn metric_code(kind: MetricKind) -> (f64, f64) {
    match kind {
        MetricKind::Auc => (0.0, 0.0),
        MetricKind::Cmax => (1.0, 0.0),
        MetricKind::Tmax => (2.0, 0.0),
        MetricKind::Cmin => (3.0, 0.0),
        MetricKind::Cavg => (4.0, 0.0),
        MetricKind::Ctrough => (5.0, 0.0),
        MetricKind::TimeAbove(x) => (6.0, x),
        MetricKind::At(x) => (7.0, x),
    }
}

/// Packs an arm: administrations expanded from the dose lines (per-subject lag, F and modelled
/// rates are applied in the kernel), the stopping points every subject shares (0, the end,
/// nominal dose times, metric window edges, the model's jumps in time `jumps`: [`arm_jumps`]),
/// the sample times and the metric specs.
pub fn arm_data(arm: &ArmPlan, jumps: &[f64]) -> ArmData {
    let mut data = Vec::new();
    let mut n_admin = 0;
    // Where each run of administrations ends. Within a dose line they are due in order (same
    // state, amount and kind, nominal times increasing), so their start and end times do not
    // decrease for any subject, which lets the kernels search them instead of scanning; a line
    // that goes on where the previous one stopped (the same dose given later, as a dataset's
    // dose records are) continues its run.
    // With occasions, a run is also of one occasion (the one the nominal times fall in: its
    // lag, bioavailability and modelled rate hold for the whole run), and of one lag: a line
    // that keeps the lag of the occasion it starts in (`DoseLine::keeps_lag`, a dataset
    // record's additional doses) has that occasion o' in its administrations' kind where it is
    // not theirs, 16·(o' + 1) added.
    let mut line_ends: Vec<f64> = Vec::new();
    let mut run_occasions: Vec<f64> = Vec::new();
    let occasion_of = |t: f64| arm.occasions.iter().take_while(|s| **s <= t).count();
    let mut last: Option<(&crate::dosing::DoseLine, f64)> = None;
    // The kind of the administration before, as written.
    let mut last_kind: Option<f64> = None;
    for line in &arm.regimen.lines {
        let (kind, value) = match line.administration {
            Administration::Bolus => (0.0, 0.0),
            Administration::InfusionRate(r) => (1.0, r),
            Administration::InfusionDuration(d) => (2.0, d),
            Administration::Modelled => (3.0, 0.0),
            Administration::Reset => (4.0, 0.0),
        };
        // A dose the subject's scale multiplies (`per`) has 8 added to its kind.
        let kind = if line.scaled && line.administration != Administration::Reset {
            kind + 8.0
        } else {
            kind
        };
        let continues = last.is_some_and(|(prev, prev_last)| {
            prev.state == line.state
                && prev.amount == line.amount
                && prev.administration == line.administration
                && prev.scaled == line.scaled
                && line.start >= prev_last
        });
        let lag_occasion = occasion_of(line.start);
        for k in 0..line.count {
            let nominal = line.start + k as f64 * line.interval;
            let occasion = occasion_of(nominal);
            let kind = if line.keeps_lag
                && line.administration != Administration::Reset
                && lag_occasion != occasion
            {
                kind + 16.0 * (lag_occasion + 1) as f64
            } else {
                kind
            };
            data.extend_from_slice(&[nominal, line.state as f64, line.amount, kind, value]);
            n_admin += 1;
            let occasion = occasion as f64;
            let same_run = (k > 0 || continues)
                && run_occasions.last() == Some(&occasion)
                && last_kind == Some(kind);
            match line_ends.last_mut() {
                Some(end) if same_run => *end = n_admin as f64,
                _ => {
                    line_ends.push(n_admin as f64);
                    run_occasions.push(occasion);
                }
            }
            last_kind = Some(kind);
        }
        if line.count > 0 {
            last = Some((line, line.start + (line.count - 1) as f64 * line.interval));
        }
    }
    let n_lines = line_ends.len();
    data.extend_from_slice(&line_ends);
    let end = arm.end;
    let doses = arm.regimen.doses_until(end);
    let windows: Vec<Option<(f64, f64)>> = arm
        .metrics
        .iter()
        .map(|s| resolve_window(s.metric.window, end, &doses))
        .collect();
    let mut stops = shared_stops(arm);
    stops.extend_from_slice(jumps);
    stops.sort_by(f64::total_cmp);
    stops.dedup();
    let off_fixed = data.len();
    data.extend_from_slice(&stops);
    let off_times = data.len();
    data.extend_from_slice(&arm.sample_times);
    let off_metrics = data.len();
    for (s, w) in arm.metrics.iter().zip(&windows) {
        let (kind, x) = metric_code(s.metric.kind);
        let (win, a, b) = match w {
            Some((a, b)) => (1.0, *a, *b),
            None => (0.0, 0.0, 0.0),
        };
        data.extend_from_slice(&[kind, s.output as f64, win, a, b, x]);
    }
    let n_occ = arm.occasions.len();
    if n_occ > 0 {
        data.push(n_occ as f64);
        data.extend_from_slice(&arm.occasions);
        data.extend_from_slice(&run_occasions);
    }
    let trough = doses.trough().unwrap_or(-1.0);
    // Output slopes find interior extrema, and thresholds crossed twice inside one step.
    let wants_extrema = arm.metrics.iter().any(|s| {
        matches!(
            s.metric.kind,
            MetricKind::Cmax | MetricKind::Tmax | MetricKind::Cmin | MetricKind::TimeAbove(_)
        )
    });
    if data.is_empty() {
        data.push(0.0);
    }
    ArmData {
        data,
        n_admin,
        n_lines,
        n_fixed: stops.len(),
        n_times: arm.sample_times.len(),
        off_fixed,
        off_times,
        off_metrics,
        n_occ,
        trough,
        wants_extrema,
    }
}

/// Where an arm's occasion table starts in [`arm_data`]'s `data`: after the metric specs, so
/// that the kernels find it without a field of their own. It holds the number K of later
/// occasions, their start times (K values, increasing) and, for each run of administrations,
/// the occasion its nominal times fall in (0 the first); an arm of one occasion has none.
pub fn occasion_table(ad: &ArmData, n_metrics: usize) -> usize {
    ad.off_metrics + n_metrics * SPEC_STRIDE
}

/// The subjects of a chunk that one launch integrates, thread by thread: a range of them, or
/// subjects in an order of their own (`crate::backend::order`), thread j integrating subject
/// `list[j]`. A subject's results do not depend on which thread integrates it.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    Range(std::ops::Range<usize>),
    List(Vec<u32>),
}

impl Rows {
    pub fn len(&self) -> usize {
        match self {
            Rows::Range(r) => r.len(),
            Rows::List(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subject thread `j` integrates.
    pub fn at(&self, j: usize) -> usize {
        match self {
            Rows::Range(r) => r.start + j,
            Rows::List(l) => l[j] as usize,
        }
    }

    /// `col`'s values of these subjects, thread by thread, into `d`.
    fn gather<T>(&self, col: &[f64], d: &mut [T], of: impl Fn(f64) -> T) {
        match self {
            Rows::Range(r) => {
                for (d, v) in d.iter_mut().zip(&col[r.clone()]) {
                    *d = of(*v);
                }
            }
            Rows::List(l) => {
                for (d, &i) in d.iter_mut().zip(l) {
                    *d = of(col[i as usize]);
                }
            }
        }
    }
}

/// Parameters of subjects `rows` as the kernels read them, `[(o * np + p) * len + j]` for
/// occasion o of the arm (0 the first: `input.params`; then `input.occasion_params`) and
/// thread j, in the kernel's type; then, where `own` has them ([`own_stops`], by subject of
/// the chunk), each subject's own stopping points: their count at
/// `[sets * np * len + j]`, stop k at `[(sets * np + 1 + k) * len + j]`. At least one value.
pub fn pack_params<T: Copy + Default>(
    input: &ChunkInput<'_>,
    arm: &ArmPlan,
    np: usize,
    rows: &Rows,
    own: &[OwnStops],
    of: impl Fn(f64) -> T,
) -> Vec<T> {
    let len = rows.len();
    let own_cols = own_columns(own, rows);
    let base = param_sets(arm) * np;
    let sets = std::iter::once(input.params).chain(
        input.occasion_params[..arm.occasions.len()]
            .iter()
            .map(|o| o.as_slice()),
    );
    let mut params = vec![T::default(); ((base + own_cols) * len).max(1)];
    for (o, set) in sets.enumerate() {
        for (p, col) in set.iter().enumerate().take(np) {
            rows.gather(
                col,
                &mut params[(o * np + p) * len..(o * np + p + 1) * len],
                &of,
            );
        }
    }
    if own_cols > 0 {
        for j in 0..len {
            let own = &own[rows.at(j)];
            let mut col = base;
            for list in [&own.arm, &own.ss] {
                params[col * len + j] = of(list.len() as f64);
                for (k, v) in list.iter().enumerate() {
                    params[(col + 1 + k) * len + j] = of(*v);
                }
                col += 1 + list.len();
            }
        }
    }
    params
}

/// The columns [`pack_params`] gives the own stopping points of subjects `rows`: none without
/// them, else as many as the subject with the most needs (each list's count, then its times).
pub fn own_columns(own: &[OwnStops], rows: &Rows) -> usize {
    if own.is_empty() {
        return 0;
    }
    (0..rows.len())
        .map(|j| {
            let o = &own[rows.at(j)];
            2 + o.arm.len() + o.ss.len()
        })
        .max()
        .unwrap_or(2)
}

/// A subject's own stopping points in an arm, where the model jumps in time at times that move
/// with the parameters ([`own_stops`]), packed after its parameters ([`pack_params`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnStops {
    /// In the arm, from 0 to its end.
    pub arm: Vec<f64>,
    /// In a steady-state start's iterations: local times of the interval before 0, with the
    /// parameters of the first occasion ([`ss_window_stops`] has those of the jumps that do
    /// not move); none past [`MAX_SS_STOPS`].
    pub ss: Vec<f64>,
}

/// Each subject's own stopping points in an arm, in `precision`, by subject of the chunk:
/// where the model jumps in time at times that move with the parameters
/// (`ModelPrograms::subject_jump_stops`, with each occasion's parameters; the shared stops
/// [`shared_stops`] cover some), and inside the interval before 0 of a steady-state start.
/// Empty where the model has no such jumps: its arm kernels are built without them
/// (`OWN_STOPS`). The CPU reference stops at the same times.
pub fn own_stops(
    progs: &ModelPrograms,
    arm: &ArmPlan,
    input: &ChunkInput<'_>,
    precision: super::Precision,
) -> Result<Vec<OwnStops>, String> {
    use rayon::prelude::*;
    if !progs.time_jumps.moves_with_params() {
        return Ok(Vec::new());
    }
    let shared = shared_stops(arm);
    let n_later = arm.occasions.len().min(input.occasion_params.len());
    let ss_ii = steady_state_admin(arm).map(|(_, ii)| ii);
    (0..input.n)
        .into_par_iter()
        .map(|i| {
            let p: Vec<f64> = input.params.iter().map(|c| c[i]).collect();
            let later: Vec<Vec<f64>> = input.occasion_params[..n_later]
                .iter()
                .map(|o| o.iter().map(|c| c[i]).collect())
                .collect();
            let which = crate::model::jumps::Which::Moving;
            let arm = progs.subject_jump_stops(
                &p,
                &later,
                &arm.occasions[..n_later],
                arm.end,
                which,
                precision,
                &shared,
            )?;
            let ss = match ss_ii {
                Some(ii) => ss_interval_stops(progs, &p, ii, which, precision),
                None => Vec::new(),
            };
            Ok(OwnStops { arm, ss })
        })
        .collect()
}

/// Dose scaling of subjects `rows`, thread by thread, in the kernel's type (1 without one).
pub fn pack_scale<T: Copy + Default>(
    input: &ChunkInput<'_>,
    rows: &Rows,
    of: impl Fn(f64) -> T,
) -> Vec<T> {
    let mut scale = vec![T::default(); rows.len()];
    match input.amount_scale {
        Some(s) => rows.gather(s, &mut scale, of),
        None => scale.fill(of(1.0)),
    }
    scale
}

/// The stopping points every subject of an arm shares but for the model's jumps in time: 0,
/// the end, nominal dose times, occasion starts and metric window edges; sorted and unique,
/// within [0, end].
pub fn shared_stops(arm: &ArmPlan) -> Vec<f64> {
    let end = arm.end;
    let doses = arm.regimen.doses_until(end);
    let mut stops = vec![0.0, end];
    stops.extend(doses.times.iter().copied());
    stops.extend(arm.occasions.iter().copied());
    super::cpu::with_window_edges(stops, &arm.metrics, end, &doses)
}

/// Where the model jumps in time within an arm, as stopping points in `precision`: those that
/// do not move with the parameters, which every subject of the arm shares
/// (`ModelPrograms::jump_stops`; the CPU reference stops at the same ones).
pub fn arm_jumps(
    progs: &crate::model::ModelPrograms,
    arm: &ArmPlan,
    precision: super::Precision,
) -> Result<Vec<f64>, String> {
    if progs.time_jumps.is_empty() {
        return Ok(Vec::new());
    }
    // Constant jumps alone: the parameters' values do not matter.
    let params = vec![0.0; progs.n_params];
    progs.jump_stops(
        &params,
        0.0,
        arm.end,
        crate::model::jumps::Which::Constant,
        precision,
        &shared_stops(arm),
    )
}

/// Parameter sets per subject the kernels read for an arm: one per occasion.
pub fn param_sets(arm: &ArmPlan) -> usize {
    1 + arm.occasions.len()
}

/// The arm's steady-state line, if any, as the kernels see it: the index of its first
/// administration in [`arm_data`]'s order (nominal time the line's start, within its first
/// interval) and its interval.
pub fn steady_state_admin(arm: &ArmPlan) -> Option<(usize, f64)> {
    let mut first = 0;
    for line in &arm.regimen.lines {
        if line.steady_state {
            return Some((first, line.interval));
        }
        first += line.count as usize;
    }
    None
}

/// At most this many jumps in time inside an arm's steady-state interval are stopping points
/// of the arm kernels' iterations (compiled into them, or a subject's own for jumps that move
/// with the parameters); beyond, the kernels cross them with the step control, where the CPU
/// reference still stops at every one.
pub const MAX_SS_STOPS: usize = 256;

/// The stopping points of an arm kernel's steady-state iterations (`a`: its steady-state
/// start, over the interval before 0): the model's jumps in time that do not move with the
/// parameters, in the interval's local time from 0 to the dosing interval, in the kernel's
/// precision `p` ([`crate::model::ModelPrograms::shifted_jump_stops`]), sorted; none past
/// [`MAX_SS_STOPS`]. The CPU reference stops at the same ones (those that move with the
/// parameters are each subject's own: [`OwnStops::ss`]).
pub fn ss_window_stops(
    m: &crate::model::ModelPrograms,
    a: &ArmSettings,
    p: super::Precision,
) -> Vec<f64> {
    if !a.ss_start || m.time_jumps.is_empty() {
        return Vec::new();
    }
    // Constant jumps alone: the parameters' values do not matter.
    let params = vec![0.0; m.n_params];
    ss_interval_stops(m, &params, a.ss_ii, crate::model::jumps::Which::Constant, p)
}

/// The stops of the jumps `which` picks, with the parameters `params`, inside the interval
/// before 0 of a steady-state start with dosing interval `ii`, in its local time, in
/// precision `p`; none where there are more than [`MAX_SS_STOPS`] (the kernels cross them).
fn ss_interval_stops(
    m: &ModelPrograms,
    params: &[f64],
    ii: f64,
    which: crate::model::jumps::Which,
    p: super::Precision,
) -> Vec<f64> {
    match m.shifted_jump_stops(params, -ii, ii, which, &[p]) {
        Ok(v) if v.len() <= MAX_SS_STOPS => v,
        _ => Vec::new(),
    }
}

/// Whether the arm has resets (the kernels then cancel what earlier doses still had to give).
pub fn has_resets(arm: &ArmPlan) -> bool {
    arm.regimen
        .lines
        .iter()
        .any(|l| l.administration == Administration::Reset)
}

/// The switches whose changes a kernel locates (`events = "locate"`, see
/// [`crate::model::switches`]): the model's, with an adaptive method; `None` where there are
/// none to locate (`events = "cross"`, a model without switches, RK4's fixed steps).
pub fn located_switches<'a>(
    model: &'a crate::model::CompiledModel,
    solver: &crate::solver::SolverOptions,
) -> Option<&'a crate::model::switches::Switches> {
    kernel_switches(
        (solver.events == crate::solver::Events::Locate).then(|| model.switches()),
        solver.method,
    )
}

/// `switches` as a kernel for `method` locates them: none where empty or where `method` has
/// fixed steps.
pub fn kernel_switches(
    switches: Option<&crate::model::switches::Switches>,
    method: crate::solver::Method,
) -> Option<&crate::model::switches::Switches> {
    switches.filter(|s| !s.is_empty() && method.is_adaptive())
}

/// Whether program `p` reads the model's time itself (`t`).
fn program_reads_time(p: &crate::model::Program) -> bool {
    p.instrs
        .iter()
        .any(|op| matches!(op, crate::model::Op::Time))
}

/// Whether any program a kernel evaluates reads the model's time itself (`t`).
pub fn reads_time(m: &ModelPrograms, sw: Option<&crate::model::switches::Switches>) -> bool {
    [
        &m.rhs,
        &m.jacobian,
        &m.dfdt,
        &m.outputs,
        &m.output_jacobian,
        &m.output_dfdt,
    ]
    .into_iter()
    .chain(sw.into_iter().flat_map(|s| [&s.values, &s.args]))
    .any(program_reads_time)
}

/// `p` reading the model's time as `t + q[MODE_BASE + slot]` (`Op::Slot(slot)`): the time
/// shift of a steady state's iterations, which integrate an interval from 0 that is, to the
/// model, the one before the dose (the CPU reference's `WithQuadrature::t_shift`). The sum is
/// the CPU's, so that f64 kernels keep its bits.
pub fn time_shifted(p: &crate::model::Program, slot: u32) -> crate::model::Program {
    if !program_reads_time(p) {
        return p.clone();
    }
    let with_origins = p.origins.len() == p.instrs.len();
    let mut out = crate::model::Program::default();
    let mut map: Vec<u32> = Vec::with_capacity(p.instrs.len());
    for (i, op) in p.instrs.iter().enumerate() {
        let mut push = |op: crate::model::Op| {
            out.instrs.push(op);
            if with_origins {
                out.origins.push(p.origins[i]);
            }
            (out.instrs.len() - 1) as u32
        };
        let r = if matches!(op, crate::model::Op::Time) {
            let t = push(crate::model::Op::Time);
            let shift = push(crate::model::Op::Slot(slot));
            push(crate::model::Op::Add(t, shift))
        } else {
            push(op.map_args(|a| map[a as usize]))
        };
        map.push(r);
    }
    out.results = p.results.iter().map(|r| map[*r as usize]).collect();
    out
}

/// `m` with every program a kernel evaluates reading the time shifted ([`time_shifted`]).
pub fn time_shifted_programs(m: &ModelPrograms, slot: u32) -> ModelPrograms {
    m.map_integrated(|p| time_shifted(p, slot))
}

/// The programs a kernel's model functions are generated from: the model's, with the switches
/// it locates read from their modes ([`modal_programs`]) and, in a kernel that finds steady
/// states (`driver`: a records kernel, or an arm's steady-state start) of a model that reads
/// its time, that time shifted ([`time_shifted`]).
pub struct KernelPrograms<'a> {
    pub programs: std::borrow::Cow<'a, ModelPrograms>,
    /// The located switches' values and arguments (`model_switches`, `model_switch_args`).
    pub switches: Option<(crate::model::Program, crate::model::Program)>,
    /// How many switches are located.
    pub nsw: usize,
    /// Whether the programs read `t + q[T_SLOT]` ([`QSlots`]).
    pub time_shift: bool,
}

impl<'a> KernelPrograms<'a> {
    pub fn new(
        m: &'a ModelPrograms,
        switches: Option<&crate::model::switches::Switches>,
        driver: Driver,
    ) -> KernelPrograms<'a> {
        use std::borrow::Cow;
        let nsw = switches.map_or(0, |s| s.len());
        let steady = driver == Driver::Records || driver.arm_settings().ss_start;
        let time_shift = steady && reads_time(m, switches);
        let slot = QSlots::new(0, nsw, time_shift).time;
        let shift = |p: &crate::model::Program| match slot {
            Some(k) => time_shifted(p, k),
            None => p.clone(),
        };
        let mut programs = match switches {
            Some(sw) => Cow::Owned(modal_programs(m, sw)),
            None => Cow::Borrowed(m),
        };
        if let Some(k) = slot {
            programs = Cow::Owned(time_shifted_programs(&programs, k));
        }
        KernelPrograms {
            programs,
            switches: switches.map(|sw| (shift(&sw.values), shift(&sw.args))),
            nsw,
            time_shift,
        }
    }
}

/// Where a kernel keeps, after the parameters and what `model_prepare` computes from them
/// (`q_len` values), its further values of `q`: the switches' modes and whether they are held
/// (`nsw` + 1 with switches), then the time shift of steady states where the kernel needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QSlots {
    /// The first further value (MODE_BASE); 0 where there are none, so that code that reads
    /// them, never run, indexes within q.
    pub base: usize,
    /// How many further values.
    pub extra: usize,
    /// The time shift's slot from `base` (`Op::Slot`), where there is one.
    pub time: Option<u32>,
}

impl QSlots {
    pub fn new(q_len: usize, nsw: usize, time_shift: bool) -> QSlots {
        let modes = if nsw > 0 { nsw + 1 } else { 0 };
        let extra = modes + usize::from(time_shift);
        QSlots {
            base: if extra > 0 { q_len } else { 0 },
            extra,
            time: time_shift.then_some(modes as u32),
        }
    }

    /// The time shift's index in q (0 where there is none: never written then).
    pub fn time_index(&self) -> usize {
        self.time.map_or(0, |k| self.base + k as usize)
    }
}

/// `m` with every program the integration evaluates reading `sw`'s switches from their modes
/// (`Switches::modal`), the outputs included: the kernels' `outs` evaluates them with the
/// modes let go, for the metrics, as the CPU reference's outputs.
pub fn modal_programs(m: &ModelPrograms, sw: &crate::model::switches::Switches) -> ModelPrograms {
    m.map_integrated(|p| sw.modal(p))
}

/// Checks a chunk against the model and the kernel's precision, and sizes `out` for it.
/// `precision_hint` completes the message when the tolerance is too tight for f32.
pub fn prepare_chunk(
    progs: &ModelPrograms,
    arm: &ArmPlan,
    input: &ChunkInput<'_>,
    f32_kernel: bool,
    precision_hint: &str,
    out: &mut ChunkOutput,
) -> Result<(), String> {
    let n = input.n;
    if input.params.len() != progs.n_params || input.params.iter().any(|p| p.len() < n) {
        return Err(format!(
            "chunk has {} parameter columns for a model with {}",
            input.params.len(),
            progs.n_params
        ));
    }
    input.check_occasions(arm, progs.n_params)?;
    let precision = if f32_kernel {
        Precision::F32
    } else {
        Precision::F64
    };
    precision
        .check_rtol(&arm.solver)
        .map_err(|e| format!("{e}; {precision_hint}"))?;
    out.reset(
        n,
        arm.metrics.len(),
        progs.n_outputs,
        arm.sample_times.len(),
    );
    Ok(())
}

/// Per-subject counters as the kernels write them: status, accepted steps, rejected steps,
/// right-hand-side evaluations, Jacobians (one LU each); thread j's are subject `rows.at(j)`'s.
pub fn take_counters(out: &mut ChunkOutput, counters: &[u32], stride: usize, rows: &Rows) {
    use rayon::prelude::*;
    // Blocks of subjects in parallel: a GPU call of a million subjects has five million
    // counters, a few milliseconds for one thread.
    const BLOCK: usize = 1 << 14;
    let sum_of = |counters: &[u32]| {
        let mut sum = [0u64; 4];
        for c in counters.chunks_exact(stride) {
            for (s, v) in sum.iter_mut().zip(&c[1..5]) {
                *s += u64::from(*v);
            }
        }
        sum
    };
    let status = |c: &[u32]| c[0].min(255) as u8;
    let n = rows.len();
    let sums = match rows {
        Rows::Range(r) => out.status[r.clone()]
            .par_chunks_mut(BLOCK)
            .zip(counters[..n * stride].par_chunks(BLOCK * stride))
            .map(|(st, counters)| {
                for (st, c) in st.iter_mut().zip(counters.chunks_exact(stride)) {
                    *st = status(c);
                }
                sum_of(counters)
            })
            .reduce(|| [0; 4], |a, b| std::array::from_fn(|k| a[k] + b[k])),
        Rows::List(l) => {
            for (&i, c) in l.iter().zip(counters.chunks_exact(stride)) {
                out.status[i as usize] = status(c);
            }
            counters[..n * stride]
                .par_chunks(BLOCK * stride)
                .map(sum_of)
                .reduce(|| [0; 4], |a, b| std::array::from_fn(|k| a[k] + b[k]))
        }
    };
    out.stats.accepted += sums[0];
    out.stats.rejected += sums[1];
    out.stats.rhs_evals += sums[2];
    out.stats.jac_evals += sums[3];
    out.stats.lu_decomps += sums[3];
}

/// Every `every`-th thread's subject and steps (accepted plus rejected, from the counters as
/// [`take_counters`] reads them), for the subject order (`crate::backend::order`).
pub fn step_samples(counters: &[u32], stride: usize, rows: &Rows, every: usize) -> Vec<(u32, u32)> {
    (0..rows.len())
        .step_by(every.max(1))
        .map(|j| {
            let c = &counters[j * stride..(j + 1) * stride];
            (rows.at(j) as u32, c[1].saturating_add(c[2]))
        })
        .collect()
}

/// Metrics (`[m * n + j]`) and profiles (`[(k * n + j) * n_times + s]`) of the `n` threads of
/// `rows` as the kernels write them, into the rows of their subjects in `out`.
pub fn take_values<T: Copy + Sync>(
    out: &mut ChunkOutput,
    metrics: &[T],
    profiles: &[T],
    rows: &Rows,
    to_f64: impl Fn(T) -> f64 + Sync,
) {
    use rayon::prelude::*;
    let n = rows.len();
    // Column by column in parallel: for a GPU call of a million subjects this is tens of
    // millions of values, which one thread would take longer to convert than the kernel ran.
    out.metrics.par_iter_mut().enumerate().for_each(|(m, col)| {
        let from = &metrics[m * n..(m + 1) * n];
        match rows {
            Rows::Range(r) => {
                for (d, v) in col[r.clone()].iter_mut().zip(from) {
                    *d = to_f64(*v);
                }
            }
            Rows::List(l) => {
                for (&i, v) in l.iter().zip(from) {
                    col[i as usize] = to_f64(*v);
                }
            }
        }
    });
    let n_times = out
        .profiles
        .first()
        .map_or(0, |p| p.len() / out.status.len().max(1));
    out.profiles
        .par_iter_mut()
        .enumerate()
        .for_each(|(k, col)| {
            for j in 0..n {
                let i = rows.at(j);
                let from = &profiles[(k * n + j) * n_times..(k * n + j + 1) * n_times];
                for (d, v) in col[i * n_times..(i + 1) * n_times].iter_mut().zip(from) {
                    *d = to_f64(*v);
                }
            }
        });
}

/// The driver a kernel source is built around.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Driver {
    /// An arm's regimen for a chunk of subjects: a steady-state start (the steady-state
    /// dose's administration and interval, see [`steady_state_admin`]) and resets compiled in
    /// or not.
    Arm {
        ss: Option<(usize, f64)>,
        resets: bool,
        /// Parameters switch between occasions.
        occasions: bool,
    },
    /// A dataset subject's record program (`crate::backend::records::Program`).
    Records,
}

impl Driver {
    /// The driver of an arm's kernel: its steady-state start, resets and occasions.
    pub fn of_arm(arm: &ArmPlan) -> Driver {
        Driver::Arm {
            ss: steady_state_admin(arm),
            resets: has_resets(arm),
            occasions: !arm.occasions.is_empty(),
        }
    }

    /// What an arm driver compiles in; nothing for records.
    pub fn arm_settings(self) -> ArmSettings {
        match self {
            Driver::Arm {
                ss,
                resets,
                occasions,
            } => {
                let (ss_admin, ss_ii) = ss.unwrap_or((0, 1.0));
                ArmSettings {
                    ss_start: ss.is_some(),
                    ss_admin,
                    ss_ii,
                    resets,
                    occasions,
                }
            }
            Driver::Records => ArmSettings {
                ss_start: false,
                ss_admin: 0,
                ss_ii: 1.0,
                resets: false,
                occasions: false,
            },
        }
    }
}

/// The switches of an arm driver's source (`SS_START`, `SS_ADMIN`, `SS_II`, `HAS_RESETS`,
/// `HAS_OCCASIONS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmSettings {
    pub ss_start: bool,
    pub ss_admin: usize,
    pub ss_ii: f64,
    pub resets: bool,
    pub occasions: bool,
}

/// The in-step searches of the kernels for a precision: the fraction of the step to which an
/// extremum is located and the iteration cap of that search, the iteration cap and the bracket
/// fraction for a threshold crossing. In f64 they are the CPU reference's; in f32 they stop
/// where f32 stops resolving.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    /// The extremum search's golden-section fraction, as the CPU reference's.
    pub extremum_cgold: f64,
    pub extremum_xtol: f64,
    pub extremum_iters: usize,
    pub root_iters: usize,
    pub root_rtol: f64,
}

pub fn search_settings(p: crate::backend::Precision) -> SearchSettings {
    use crate::metrics::accumulate::{CGOLD, EXTREMUM_ITERS, EXTREMUM_XTOL, ROOT_ITERS, ROOT_RTOL};
    let (extremum_xtol, root_rtol) = match p {
        crate::backend::Precision::F32 => (1e-6, 1e-6),
        crate::backend::Precision::F64 => (EXTREMUM_XTOL, ROOT_RTOL),
    };
    SearchSettings {
        extremum_cgold: CGOLD,
        extremum_xtol,
        extremum_iters: EXTREMUM_ITERS,
        root_iters: ROOT_ITERS,
        root_rtol,
    }
}

/// The body of both kernels' `output_affine(k)`: whether output k is affine in the states
/// (`ModelPrograms::affine_outputs`, searched on its step's quartic), a condition on `k` with
/// the model's outputs compiled in (`k == 0u || k == 2u`, or `false`). WGSL and CUDA C read it
/// alike.
pub fn affine_condition(m: &crate::model::ModelPrograms) -> String {
    let ks: Vec<String> = (0..m.n_outputs)
        .filter(|&k| m.affine_outputs[k])
        .map(|k| format!("k == {k}u"))
        .collect();
    if ks.is_empty() {
        "false".to_string()
    } else {
        ks.join(" || ")
    }
}

/// Whether some output depends on time directly (`ModelPrograms::time_outputs`): then the
/// kernels add ∂g/∂t (`model_output_dfdt`) to the outputs' slopes at a step's ends.
pub fn outputs_use_time(m: &crate::model::ModelPrograms) -> bool {
    m.time_outputs.iter().any(|&u| u)
}

/// Values per instruction of a record program as the kernels read it, and per subject in the
/// records kernels' index.
pub const INSTR_STRIDE: usize = 4;
pub const INDEX_STRIDE: usize = 5;

/// Record programs of several subjects as the records kernels read them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordsData {
    /// Instructions, [`INSTR_STRIDE`] values each (see shaders/records_driver.wgsl).
    pub prog: Vec<f64>,
    /// Parameter sets, `np` values each.
    pub params: Vec<f64>,
    /// Per subject: first instruction, instructions, first parameter set, first output row,
    /// records.
    pub index: Vec<u32>,
    /// Output rows (records) of all subjects.
    pub rows: usize,
}

/// Packs programs for the records kernels; an error when one does not fit the kernels' u32
/// offsets or their values' exact integers. `time` rounds a time as the kernels hold it (f32
/// or f64): an infusion's rate is the one whose rounded span delivers its amount, as the arm
/// kernels' `admin_event` makes it.
pub fn records_data(
    programs: &[&Program],
    np: usize,
    time: &dyn Fn(f64) -> f64,
) -> Result<RecordsData, String> {
    use crate::backend::records::{Input, Op};
    let mut d = RecordsData::default();
    let (mut sets, mut instrs) = (0usize, 0usize);
    for prog in programs {
        let first = instrs;
        // The time of the program's inputs, and its infusions running: (where their rate is
        // in `d.prog`, state, rate, start).
        let mut now = 0.0;
        let mut running: Vec<(usize, usize, f64, f64)> = Vec::new();
        let input = |(at, s, i): &(f64, usize, Input)| match i {
            Input::Bolus(a) => [2.0, *s as f64, *a, *at],
            Input::Rate(r) => [3.0, *s as f64, *r, *at],
        };
        for op in &prog.ops {
            match op {
                Op::Start(t) | Op::Advance(_, t) => now = *t,
                Op::Reset => running.clear(),
                Op::Apply(s, Input::Rate(r)) if *r > 0.0 => {
                    running.push((d.prog.len() + 2, *s, *r, now));
                }
                Op::Apply(s, Input::Rate(r)) => {
                    // Its end: the rate of both ends scaled by span / rounded span.
                    let same = |x: &(usize, usize, f64, f64)| x.1 == *s && x.2 == -*r;
                    if let Some(k) = running.iter().position(same) {
                        let (at, _, rate, start) = running.remove(k);
                        let (span, held) = (now - start, time(now) - time(start));
                        let end = match crate::dosing::rate_over_span(rate, span, held) {
                            Ok(r) if r == rate => None,
                            Ok(r) => {
                                d.prog[at] = r;
                                Some([3.0, *s as f64, -r, 0.0])
                            }
                            // Shorter than the kernels hold time: a bolus of its amount at its
                            // start, and its end nothing (a bolus of 0).
                            Err(amount) => {
                                d.prog[at - 2] = 2.0;
                                d.prog[at] = amount;
                                Some([2.0, *s as f64, 0.0, 0.0])
                            }
                        };
                        if let Some(w) = end {
                            d.prog.extend_from_slice(&w);
                            instrs += 1;
                            continue;
                        }
                    }
                }
                _ => {}
            }
            let w = match op {
                Op::Start(t) => [0.0, *t, 0.0, 0.0],
                Op::Advance(t0, t1) => [1.0, *t0, *t1, 0.0],
                Op::Apply(s, i) => input(&(0.0, *s, *i)),
                Op::Reset => [4.0, 0.0, 0.0, 0.0],
                Op::Params(k) => [5.0, *k as f64, 0.0, 0.0],
                Op::Output(j, t) => [6.0, *j as f64, *t, 0.0],
                Op::SteadyState(mode, t, ii, window, stops) => {
                    // The time first (a start): the steady state's iterations are, to the
                    // model, the interval before it. Then the window's inputs and the stops
                    // of the jumps in time in the order of their times, a stop ([1, 0, 0,
                    // local time]) after the inputs at its time.
                    let n = window.len() + stops.len();
                    d.prog.extend_from_slice(&[0.0, *t, 0.0, 0.0]);
                    d.prog
                        .extend_from_slice(&[7.0, f64::from(*mode), *ii, n as f64]);
                    for item in super::records::inputs_and_stops(window, stops) {
                        d.prog.extend_from_slice(&match item {
                            super::records::Timed::Input(w) => input(w),
                            super::records::Timed::Stop(s) => [1.0, 0.0, 0.0, s],
                        });
                    }
                    instrs += op.kernel_instructions();
                    continue;
                }
                Op::SteadyInfusion(s, t, rate, stops) => {
                    // The time first, as above: each span ends, to the model, there. Then
                    // the stops of the jumps in time in the spans, (span, local time).
                    d.prog.extend_from_slice(&[0.0, *t, 0.0, 0.0]);
                    d.prog
                        .extend_from_slice(&[8.0, *s as f64, *rate, stops.len() as f64]);
                    for (span, at) in stops {
                        d.prog.extend_from_slice(&[*span, *at, 0.0, 0.0]);
                    }
                    instrs += op.kernel_instructions();
                    continue;
                }
                Op::Fail(st) => [9.0, f64::from(*st as u8), 0.0, 0.0],
            };
            d.prog.extend_from_slice(&w);
            instrs += 1;
        }
        for set in &prog.params {
            d.params.extend_from_slice(&set[..np]);
        }
        // Values the kernels read as integers are exact in f32 below 2^24.
        if prog.params.len() >= 1 << 24 || prog.n_records >= 1 << 24 {
            return Err("a subject has more than 2^24 records or parameter changes".into());
        }
        d.index.extend_from_slice(&[
            u32::try_from(first).map_err(|_| "record programs too long for one batch")?,
            (instrs - first) as u32,
            u32::try_from(sets).map_err(|_| "too many parameter sets for one batch")?,
            u32::try_from(d.rows).map_err(|_| "too many records for one batch")?,
            prog.n_records as u32,
        ]);
        sets += prog.params.len();
        d.rows += prog.n_records;
    }
    if u32::try_from(instrs * INSTR_STRIDE).is_err() || u32::try_from(sets * np.max(1)).is_err() {
        return Err("record programs too long for one batch".into());
    }
    for v in [&mut d.prog, &mut d.params] {
        if v.is_empty() {
            v.push(0.0);
        }
    }
    Ok(d)
}

/// Subjects' outcomes from what the records kernels wrote: outputs (`no` per row) and
/// counters (status, accepted, rejected, right-hand sides, Jacobians: the first five of
/// `stride` per subject).
pub fn take_records<T: Copy>(
    programs: &[&Program],
    data: &RecordsData,
    outputs: &[T],
    counters: &[u32],
    stride: usize,
    n_outputs: usize,
    to_f64: impl Fn(T) -> f64,
) -> Vec<RecordsOutcome> {
    let no = n_outputs.max(1);
    programs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = &counters[i * stride..i * stride + 5];
            let row = data.index[i * INDEX_STRIDE + 3] as usize;
            RecordsOutcome {
                status: Status::from_code(c[0].min(255) as u8).unwrap_or(Status::NonFinite),
                stats: Stats {
                    accepted: u64::from(c[1]),
                    rejected: u64::from(c[2]),
                    rhs_evals: u64::from(c[3]),
                    jac_evals: u64::from(c[4]),
                    lu_decomps: u64::from(c[4]),
                },
                outputs: (0..n_outputs)
                    .map(|k| {
                        (0..p.n_records)
                            .map(|j| to_f64(outputs[(row + j) * no + k]))
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dosing::{DoseLine, Regimen};
    use crate::metrics::{Metric, MetricSpec};
    use crate::solver::SolverOptions;

    /// Counters taken in parallel blocks give each subject its status and the sums of one
    /// subject after another, from any first subject and for any stride.
    #[test]
    fn counters_are_taken_subject_by_subject() {
        for (n, stride, s0) in [
            (40_000usize, 5usize, 3usize),
            (16_384, 7, 0),
            (1, 5, 9),
            (0, 5, 2),
        ] {
            let counters: Vec<u32> = (0..n * stride)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) % 300)
                .collect();
            // The threads' subjects in order, and scrambled (thread j: subject s0 + 7j mod n).
            let scrambled = Rows::List((0..n).map(|j| (s0 + (7 * j) % n.max(1)) as u32).collect());
            assert!(n % 7 != 0 || n == 0, "7 j mod n must cover every subject");
            for rows in [Rows::Range(s0..s0 + n), scrambled] {
                let mut out = ChunkOutput::default();
                out.reset(s0 + n + 4, 1, 1, 0);
                out.stats.accepted = 11;
                take_counters(&mut out, &counters, stride, &rows);
                let mut want = crate::solver::Stats {
                    accepted: 11,
                    ..Default::default()
                };
                for (j, c) in counters.chunks_exact(stride).enumerate() {
                    let i = rows.at(j);
                    assert_eq!(out.status[i], c[0].min(255) as u8, "thread {j}");
                    want.accepted += u64::from(c[1]);
                    want.rejected += u64::from(c[2]);
                    want.rhs_evals += u64::from(c[3]);
                    want.jac_evals += u64::from(c[4]);
                    want.lu_decomps += u64::from(c[4]);
                }
                assert_eq!(out.stats, want);
                // Every third thread's subject and steps, for the subject order.
                let samples = step_samples(&counters, stride, &rows, 3);
                assert_eq!(samples.len(), n.div_ceil(3));
                for (k, &(i, steps)) in samples.iter().enumerate() {
                    let c = &counters[3 * k * stride..];
                    assert_eq!((i as usize, steps), (rows.at(3 * k), c[1] + c[2]));
                }
                assert!(out.status[..s0]
                    .iter()
                    .chain(&out.status[s0 + n..])
                    .all(|s| *s == 0));
            }
        }
    }

    /// Values of threads that integrate subjects in an order of their own land in their
    /// subjects' rows, metrics and profiles alike, and parameters are packed in that order.
    #[test]
    fn values_follow_the_threads_subjects() {
        let (n, nm, no, nt) = (50usize, 2usize, 2usize, 3usize);
        let list: Vec<u32> = (0..n as u32).map(|j| (j * 13 + 5) % n as u32).collect();
        let rows = Rows::List(list.clone());
        let metrics: Vec<f64> = (0..nm * n).map(|v| v as f64).collect();
        let profiles: Vec<f64> = (0..no * n * nt).map(|v| v as f64).collect();
        let mut out = ChunkOutput::default();
        out.reset(n, nm, no, nt);
        take_values(&mut out, &metrics, &profiles, &rows, |v| v);
        for (j, &i) in list.iter().enumerate() {
            let i = i as usize;
            for m in 0..nm {
                assert_eq!(out.metrics[m][i], metrics[m * n + j]);
            }
            for k in 0..no {
                for s in 0..nt {
                    assert_eq!(out.profiles[k][i * nt + s], profiles[(k * n + j) * nt + s]);
                }
            }
        }
        let cols: Vec<Vec<f64>> = (0..3)
            .map(|p| (0..n).map(|i| (100 * p + i) as f64).collect())
            .collect();
        let scale: Vec<f64> = (0..n).map(|i| i as f64 / 2.0).collect();
        let input = ChunkInput {
            first_subject: 0,
            n,
            params: &cols,
            amount_scale: Some(&scale),
            occasion_params: &[],
        };
        let a = arm();
        let packed = pack_params(&input, &a, 3, &rows, &[], |v| v);
        let scales = pack_scale(&input, &rows, |v| v);
        for (j, &i) in list.iter().enumerate() {
            for p in 0..3 {
                assert_eq!(packed[p * n + j], cols[p][i as usize]);
            }
            assert_eq!(scales[j], scale[i as usize]);
        }
        let natural = pack_params(&input, &a, 3, &Rows::Range(10..20), &[], |v| v);
        assert_eq!(&natural[..10], &cols[0][10..20]);
    }

    fn arm() -> ArmPlan {
        ArmPlan {
            name: "a".into(),
            regimen: Regimen {
                lines: vec![DoseLine {
                    steady_state: false,
                    scaled: false,
                    keeps_lag: false,
                    state: 1,
                    amount: 100.0,
                    start: 0.0,
                    interval: 12.0,
                    count: 3,
                    administration: Administration::InfusionDuration(1.0),
                }],
            },
            metrics: ["auc", "cmax", "ctrough", "auc_last_interval"]
                .iter()
                .map(|m| MetricSpec::new(0, "cp", Metric::parse(m).unwrap()))
                .collect(),
            end: 48.0,
            sample_times: vec![1.0, 2.0],
            solver: SolverOptions::default(),
            occasions: Vec::new(),
        }
    }

    #[test]
    fn lines_of_the_same_dose_given_later_make_one_run() {
        use crate::dosing::{Administration, DoseLine, Regimen};
        let line = |state, amount, start, count, administration| DoseLine {
            steady_state: false,
            scaled: false,
            keeps_lag: false,
            state,
            amount,
            start,
            interval: 12.0,
            count,
            administration,
        };
        let mut a = arm();
        let bolus = Administration::Bolus;
        // Dose records: one line each, the same dose; then a larger one; an earlier one again;
        // an infusion of the same amount; an empty line.
        a.regimen = Regimen {
            lines: vec![
                line(0, 100.0, 0.0, 1, bolus),
                line(0, 100.0, 12.0, 1, bolus),
                line(0, 100.0, 24.0, 3, bolus),
                line(0, 200.0, 60.0, 1, bolus),
                line(0, 200.0, 30.0, 1, bolus),
                line(0, 200.0, 72.0, 0, bolus),
                line(0, 200.0, 84.0, 2, Administration::InfusionRate(50.0)),
            ],
        };
        let d = arm_data(&a, &[]);
        assert_eq!(d.n_admin, 9);
        assert_eq!(d.n_lines, 4);
        assert_eq!(&d.data[45..49], &[5.0, 6.0, 7.0, 9.0]);
        assert_eq!(d.off_fixed, 49);
    }

    #[test]
    fn runs_are_cut_at_occasions_and_their_table_follows_the_specs() {
        let line = |amount, start, count| DoseLine {
            steady_state: false,
            scaled: false,
            keeps_lag: false,
            state: 0,
            amount,
            start,
            interval: 12.0,
            count,
            administration: Administration::Bolus,
        };
        let mut a = arm();
        // Doses at 0, 12, 24, 36 and a record at 48 going on from them; occasions from 20 and
        // from 36 (a dose on a start is of the new occasion) and one after the end.
        a.regimen = Regimen {
            lines: vec![line(100.0, 0.0, 4), line(100.0, 48.0, 1)],
        };
        a.occasions = vec![20.0, 36.0, 100.0];
        let d = arm_data(&a, &[]);
        assert_eq!((d.n_admin, d.n_lines, d.n_occ), (5, 3, 3));
        assert_eq!(&d.data[25..28], &[2.0, 3.0, 5.0]);
        // The occasions' starts within the arm are stopping points.
        assert_eq!(
            &d.data[d.off_fixed..d.off_times],
            &[0.0, 12.0, 20.0, 24.0, 36.0, 48.0]
        );
        let t = occasion_table(&d, a.metrics.len());
        assert_eq!(t, d.off_metrics + 4 * SPEC_STRIDE);
        assert_eq!(&d.data[t..], &[3.0, 20.0, 36.0, 100.0, 0.0, 1.0, 2.0]);
        // Lines that keep the lag of the occasion they start in: the doses at 24 and 36 have
        // occasion 0's (16 added to their kind), each a run of its own; the record at 48 has
        // its own occasion's, a run apart from the dose at 36 of the same occasion.
        for l in &mut a.regimen.lines {
            l.keeps_lag = true;
        }
        let d = arm_data(&a, &[]);
        assert_eq!((d.n_admin, d.n_lines), (5, 4));
        let kinds: Vec<f64> = (0..5).map(|i| d.data[i * 5 + 3]).collect();
        assert_eq!(kinds, [0.0, 0.0, 16.0, 16.0, 0.0]);
        assert_eq!(&d.data[25..29], &[2.0, 3.0, 4.0, 5.0]);
        let t = occasion_table(&d, a.metrics.len());
        assert_eq!(&d.data[t + 4..], &[0.0, 1.0, 2.0, 2.0]);
        // Without occasions the arm data end with the specs.
        let plain = arm_data(&arm(), &[]);
        assert_eq!(plain.n_occ, 0);
        assert_eq!(occasion_table(&plain, 4), plain.data.len());
    }

    #[test]
    fn arm_packing_lists_administrations_stops_and_specs() {
        let d = arm_data(&arm(), &[]);
        assert_eq!(d.n_admin, 3);
        assert_eq!(&d.data[..5], &[0.0, 1.0, 100.0, 2.0, 1.0]);
        // One dose line: its administrations end at index 3.
        assert_eq!((d.n_lines, d.data[15]), (1, 3.0));
        assert_eq!(d.off_fixed, 16);
        assert_eq!(d.n_fixed, 5);
        assert_eq!(
            &d.data[d.off_fixed..d.off_times],
            &[0.0, 12.0, 24.0, 36.0, 48.0]
        );
        assert_eq!(d.off_times, 16 + 5);
        assert_eq!(&d.data[d.off_times..d.off_metrics], &[1.0, 2.0]);
        // ctrough: the last administration; auc_last_interval: [24, 36].
        assert_eq!(d.trough, 24.0);
        let last = &d.data[d.off_metrics + 18..d.off_metrics + 24];
        assert_eq!(last, &[0.0, 0.0, 1.0, 24.0, 36.0, 0.0]);
        assert!(d.wants_extrema);
        // Ending at 20 h, the dose at 24 is never given: the trough and the last interval
        // are those of the dose at 12 (as on the CPU: `Schedule::doses_until`).
        let mut a = arm();
        a.end = 20.0;
        let d = arm_data(&a, &[]);
        assert_eq!(d.trough, 12.0);
        let last = &d.data[d.off_metrics + 18..d.off_metrics + 24];
        assert_eq!(last, &[0.0, 0.0, 1.0, 12.0, 20.0, 0.0]);
    }
}
