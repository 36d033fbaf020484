//! What the GPU kernels (WGSL and CUDA) share on the host side: their sizes and the arm data
//! they read (administrations, stopping points, sample times, metric specs).

use crate::backend::{ArmPlan, ChunkInput, ChunkOutput};
use crate::dosing::Administration;
use crate::metrics::{resolve_window, MetricKind};
use crate::model::ModelPrograms;

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
}

impl KernelSizes {
    pub fn new(m: &ModelPrograms, n_metrics: usize) -> KernelSizes {
        KernelSizes {
            ns: m.n_states.max(1),
            np: m.n_params,
            no: m.n_outputs.max(1),
            nm: n_metrics,
        }
    }
    pub fn ny(&self) -> usize {
        self.ns + self.no
    }
    /// Floating-point values carried per subject between segments.
    pub fn carry_f(&self) -> usize {
        self.ny() + self.ns + 2 * self.nm + 4
    }
}

/// An arm as the kernel reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmData {
    /// Administrations, fixed stopping points, sample times and metric specs, in that order.
    pub data: Vec<f64>,
    pub n_admin: usize,
    pub n_fixed: usize,
    pub n_times: usize,
    pub off_fixed: usize,
    pub off_times: usize,
    pub off_metrics: usize,
    /// Time of the last administration when there are several (ctrough), else −1.
    pub trough: f64,
    pub wants_extrema: bool,
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
/// nominal dose times, metric window edges), the sample times and the metric specs.
pub fn arm_data(arm: &ArmPlan) -> ArmData {
    let mut data = Vec::new();
    let mut n_admin = 0;
    for line in &arm.regimen.lines {
        let (kind, value) = match line.administration {
            Administration::Bolus => (0.0, 0.0),
            Administration::InfusionRate(r) => (1.0, r),
            Administration::InfusionDuration(d) => (2.0, d),
            Administration::Modelled => (3.0, 0.0),
        };
        for k in 0..line.count {
            let nominal = line.start + k as f64 * line.interval;
            data.extend_from_slice(&[nominal, line.state as f64, line.amount, kind, value]);
            n_admin += 1;
        }
    }
    let (dose_times, last_interval) = arm.regimen.nominal_times();
    let end = arm.end;
    let windows: Vec<Option<(f64, f64)>> = arm
        .metrics
        .iter()
        .map(|s| resolve_window(s.metric.window, end, &dose_times, last_interval))
        .collect();
    let mut stops = vec![0.0, end];
    stops.extend(dose_times.iter().copied());
    for (a, b) in windows.iter().flatten() {
        stops.push(*a);
        stops.push(*b);
    }
    stops.retain(|t| (0.0..=end).contains(t));
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
    let trough = if dose_times.len() > 1 {
        dose_times.last().map_or(-1.0, |t| *t)
    } else {
        -1.0
    };
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
        n_fixed: stops.len(),
        n_times: arm.sample_times.len(),
        off_fixed,
        off_times,
        off_metrics,
        trough,
        wants_extrema,
    }
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
    if !arm.occasions.is_empty() {
        return Err(format!(
            "arm '{}' switches parameters between occasions, which the GPU kernels do not do \
             yet: use backend = \"cpu\"",
            arm.name
        ));
    }
    if f32_kernel && arm.solver.method.is_adaptive() && arm.solver.rtol < 1e-7 {
        return Err(format!(
            "rtol {} is below what f32 resolves; {precision_hint}",
            arm.solver.rtol
        ));
    }
    out.reset(
        n,
        arm.metrics.len(),
        progs.n_outputs,
        arm.sample_times.len(),
    );
    Ok(())
}

/// Per-subject counters as the kernels write them: status, accepted steps, rejected steps,
/// right-hand-side evaluations, Jacobians (one LU each).
pub fn take_counters(out: &mut ChunkOutput, counters: &[u32], stride: usize, s0: usize) {
    for (i, c) in counters.chunks_exact(stride).enumerate() {
        out.status[s0 + i] = c[0].min(255) as u8;
        out.stats.accepted += u64::from(c[1]);
        out.stats.rejected += u64::from(c[2]);
        out.stats.rhs_evals += u64::from(c[3]);
        out.stats.jac_evals += u64::from(c[4]);
        out.stats.lu_decomps += u64::from(c[4]);
    }
}

/// Metrics (`[m * n + i]`) and profiles (`[(k * n + i) * n_times + j]`) of `n` subjects as the
/// kernels write them, into `out` from subject `s0` on.
pub fn take_values<T: Copy>(
    out: &mut ChunkOutput,
    metrics: &[T],
    profiles: &[T],
    n: usize,
    s0: usize,
    to_f64: impl Fn(T) -> f64,
) {
    for (m, col) in out.metrics.iter_mut().enumerate() {
        for i in 0..n {
            col[s0 + i] = to_f64(metrics[m * n + i]);
        }
    }
    let n_times = out
        .profiles
        .first()
        .map_or(0, |p| p.len() / out.status.len().max(1));
    for (k, col) in out.profiles.iter_mut().enumerate() {
        for i in 0..n {
            for j in 0..n_times {
                col[(s0 + i) * n_times + j] = to_f64(profiles[(k * n + i) * n_times + j]);
            }
        }
    }
}

/// The in-step searches of the kernels for a precision: golden-section iterations for an
/// extremum, the iteration cap and the bracket fraction for a threshold crossing. In f64 they
/// are the CPU reference's; in f32 they stop where f32 stops resolving.
pub fn search_settings(p: crate::backend::Precision) -> (usize, usize, f64) {
    use crate::metrics::accumulate::{GOLDEN_ITERS, ROOT_ITERS, ROOT_RTOL};
    match p {
        crate::backend::Precision::F32 => (34, ROOT_ITERS, 1e-6),
        crate::backend::Precision::F64 => (GOLDEN_ITERS, ROOT_ITERS, ROOT_RTOL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dosing::{DoseLine, Regimen};
    use crate::metrics::{Metric, MetricSpec};
    use crate::solver::SolverOptions;

    fn arm() -> ArmPlan {
        ArmPlan {
            name: "a".into(),
            regimen: Regimen {
                lines: vec![DoseLine {
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
    fn arm_packing_lists_administrations_stops_and_specs() {
        let d = arm_data(&arm());
        assert_eq!(d.n_admin, 3);
        assert_eq!(&d.data[..5], &[0.0, 1.0, 100.0, 2.0, 1.0]);
        assert_eq!(d.n_fixed, 5);
        assert_eq!(
            &d.data[d.off_fixed..d.off_times],
            &[0.0, 12.0, 24.0, 36.0, 48.0]
        );
        assert_eq!(d.off_times, 15 + 5);
        assert_eq!(&d.data[d.off_times..d.off_metrics], &[1.0, 2.0]);
        // ctrough: the last administration; auc_last_interval: [24, 36].
        assert_eq!(d.trough, 24.0);
        let last = &d.data[d.off_metrics + 18..d.off_metrics + 24];
        assert_eq!(last, &[0.0, 0.0, 1.0, 24.0, 36.0, 0.0]);
        assert!(d.wants_extrema);
    }
}
