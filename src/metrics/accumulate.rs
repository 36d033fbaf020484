//! Per-subject metric accumulation, driven by the CPU reference integrator.
//!
//! The simulator calls, in time order: [`MetricAccumulator::at_stop_pre`] before the events of a
//! stopping point, [`MetricAccumulator::at_stop_post`] after them, and (through
//! [`StepObserver`]) every accepted step between stopping points. Window edges, nominal dose
//! times and the end of the simulation must all be stopping points.

use super::{resolve_window, MetricKind, MetricSpec};
use crate::dosing::Schedule;
use crate::solver::{DenseOutput, StepObserver};

/// Evaluates a model's outputs and their gradient with respect to the model states.
pub trait OutputEval {
    fn n_outputs(&self) -> usize;
    /// `y` holds the model states (quadrature states excluded).
    fn outputs(&mut self, t: f64, y: &[f64], out: &mut [f64]);
    /// The right-hand side into `dy[..n]` and the outputs into `dy[n..]`, `n = y.len()` (a
    /// model that evaluates both at once overrides this).
    fn rhs_and_outputs(&mut self, t: f64, y: &[f64], dy: &mut [f64])
    where
        Self: crate::solver::OdeSystem,
    {
        let (f, g) = dy.split_at_mut(y.len());
        self.rhs(t, y, f);
        self.outputs(t, y, g);
    }
    /// Row-major `n_outputs × y.len()` gradient ∂g_k/∂y_j.
    fn output_jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]);
    /// ∂g_k/∂t at fixed states. The default is a central difference, exact for outputs that
    /// do not depend on t explicitly.
    fn output_dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let n = self.n_outputs();
        let dt = 1e-6 * t.abs().max(1.0);
        let (mut plus, mut minus) = (vec![0.0; n], vec![0.0; n]);
        self.outputs(t + dt, y, &mut plus);
        self.outputs(t - dt, y, &mut minus);
        for k in 0..n {
            out[k] = (plus[k] - minus[k]) / (2.0 * dt);
        }
    }
}

/// Golden-section iterations when refining an extremum inside a step: the bracket shrinks to
/// 0.618^48 ≈ 1e-10 of the step, far below what affects Cmax (error ∝ bracket²).
pub const GOLDEN_ITERS: usize = 48;
/// Iteration cap for locating a threshold crossing (Illinois method).
pub const ROOT_ITERS: usize = 60;
/// A threshold crossing is located to this fraction of its bracket (plus round-off of t).
pub const ROOT_RTOL: f64 = 1e-13;

/// Accumulates one subject's metrics (and optional profile samples).
pub struct MetricAccumulator<'a, E: OutputEval> {
    eval: E,
    specs: &'a [MetricSpec],
    n_states: usize,
    /// Index in the integrated vector of output k's AUC state is `n_states + k`.
    windows: Vec<Option<(f64, f64)>>,
    trough_time: Option<f64>,
    values: Vec<f64>,
    aux: Vec<f64>,
    sample_times: &'a [f64],
    next_sample: usize,
    profile: Vec<f64>,
    wants_extrema: bool,
    // scratch
    c0: Vec<f64>,
    c1: Vec<f64>,
    dc0: Vec<f64>,
    dc1: Vec<f64>,
    jac: Vec<f64>,
    ybuf: Vec<f64>,
    cbuf: Vec<f64>,
    interior_max: Vec<Option<(f64, f64)>>,
    interior_min: Vec<Option<(f64, f64)>>,
}

impl<'a, E: OutputEval> MetricAccumulator<'a, E> {
    /// `n_states` counts the model states; the integrated vector continues with one AUC state
    /// per output. `sample_times` must be sorted; profile values are stored time-major per
    /// output (`profile[k * n_times + i]`).
    pub fn new(
        eval: E,
        specs: &'a [MetricSpec],
        n_states: usize,
        schedule: &Schedule,
        end: f64,
        sample_times: &'a [f64],
    ) -> Self {
        let n_out = eval.n_outputs();
        let windows = specs
            .iter()
            .map(|s| {
                resolve_window(
                    s.metric.window,
                    end,
                    &schedule.dose_times,
                    schedule.last_interval,
                )
            })
            .collect();
        let trough_time = if schedule.dose_times.len() > 1 {
            schedule.last_dose_time()
        } else {
            None
        };
        let values = specs
            .iter()
            .map(|s| match s.metric.kind {
                MetricKind::Cmax | MetricKind::Tmax => f64::NEG_INFINITY,
                MetricKind::Cmin => f64::INFINITY,
                MetricKind::TimeAbove(_) => 0.0,
                _ => f64::NAN,
            })
            .collect();
        // Output slopes are also what reveals a threshold crossed twice inside one step.
        let wants_extrema = specs.iter().any(|s| {
            matches!(
                s.metric.kind,
                MetricKind::Cmax | MetricKind::Tmax | MetricKind::Cmin | MetricKind::TimeAbove(_)
            )
        });
        MetricAccumulator {
            eval,
            specs,
            n_states,
            windows,
            trough_time,
            values,
            aux: vec![f64::NAN; specs.len()],
            sample_times,
            next_sample: 0,
            profile: vec![f64::NAN; n_out * sample_times.len()],
            wants_extrema,
            c0: vec![0.0; n_out],
            c1: vec![0.0; n_out],
            dc0: vec![0.0; n_out],
            dc1: vec![0.0; n_out],
            jac: vec![0.0; n_out * n_states],
            ybuf: vec![0.0; n_states + n_out],
            cbuf: vec![0.0; n_out],
            interior_max: vec![None; n_out],
            interior_min: vec![None; n_out],
        }
    }

    fn n_out(&self) -> usize {
        self.c0.len()
    }

    /// Before the events at stopping point `t` (left limit). `y` is the integrated vector.
    /// Evaluates the outputs with `eval` from now on (parameters that change between
    /// occasions); call it at a stop, between [`Self::at_stop_pre`] and [`Self::at_stop_post`].
    pub fn set_outputs(&mut self, eval: E) {
        self.eval = eval;
    }

    pub fn at_stop_pre(&mut self, t: f64, y: &[f64]) {
        let n = self.n_states;
        self.eval.outputs(t, &y[..n], &mut self.c0);
        if t == 0.0 {
            // Samples at time 0 see the initial state.
            while self.next_sample < self.sample_times.len()
                && self.sample_times[self.next_sample] <= 0.0
            {
                let i = self.next_sample;
                for k in 0..self.n_out() {
                    self.profile[k * self.sample_times.len() + i] = self.c0[k];
                }
                self.next_sample += 1;
            }
        }
        for (i, s) in self.specs.iter().enumerate() {
            let k = s.output;
            let c = self.c0[k];
            match s.metric.kind {
                MetricKind::Ctrough if self.trough_time == Some(t) => self.values[i] = c,
                MetricKind::At(ta) if ta == 0.0 && t == 0.0 => self.values[i] = c,
                MetricKind::Auc | MetricKind::Cavg => {
                    if let Some((a, b)) = self.windows[i] {
                        let auc = y[n + k];
                        if t == a {
                            self.aux[i] = auc;
                        }
                        if t == b {
                            let area = auc - self.aux[i];
                            self.values[i] = if s.metric.kind == MetricKind::Cavg {
                                area / (b - a)
                            } else {
                                area
                            };
                        }
                    }
                }
                MetricKind::Cmax | MetricKind::Tmax | MetricKind::Cmin => {
                    if let Some((a, b)) = self.windows[i] {
                        if a < t && t <= b {
                            self.update_extreme(i, t, c);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// After the events at stopping point `t` (right limit).
    pub fn at_stop_post(&mut self, t: f64, y: &[f64]) {
        if !self.wants_extrema {
            return;
        }
        let n = self.n_states;
        self.eval.outputs(t, &y[..n], &mut self.c0);
        for i in 0..self.specs.len() {
            let s = &self.specs[i];
            if matches!(
                s.metric.kind,
                MetricKind::Cmax | MetricKind::Tmax | MetricKind::Cmin
            ) {
                if let Some((a, b)) = self.windows[i] {
                    if a <= t && t < b {
                        let c = self.c0[s.output];
                        self.update_extreme(i, t, c);
                    }
                }
            }
        }
    }

    fn update_extreme(&mut self, i: usize, t: f64, c: f64) {
        match self.specs[i].metric.kind {
            MetricKind::Cmax | MetricKind::Tmax => {
                // `aux` holds the running maximum for Tmax, whose value is the time.
                let best = if self.specs[i].metric.kind == MetricKind::Tmax {
                    self.aux[i]
                } else {
                    self.values[i]
                };
                if c > best || best.is_nan() {
                    if self.specs[i].metric.kind == MetricKind::Tmax {
                        self.aux[i] = c;
                        self.values[i] = t;
                    } else {
                        self.values[i] = c;
                    }
                }
            }
            MetricKind::Cmin if c < self.values[i] => self.values[i] = c,
            _ => {}
        }
    }

    /// Output k of the dense output at time t.
    fn output_at(&mut self, step: &dyn DenseOutput, t: f64, k: usize) -> f64 {
        step.eval(t, &mut self.ybuf);
        self.eval
            .outputs(t, &self.ybuf[..self.n_states], &mut self.cbuf);
        self.cbuf[k]
    }

    /// Golden-section search for the extremum of output k inside the step.
    fn refine_extremum(&mut self, step: &dyn DenseOutput, k: usize, maximize: bool) -> (f64, f64) {
        let sign = if maximize { 1.0 } else { -1.0 };
        let inv_phi = (5f64.sqrt() - 1.0) / 2.0;
        let (mut a, mut b) = (step.t0(), step.t1());
        let mut x1 = b - inv_phi * (b - a);
        let mut x2 = a + inv_phi * (b - a);
        let mut f1 = sign * self.output_at(step, x1, k);
        let mut f2 = sign * self.output_at(step, x2, k);
        for _ in 0..GOLDEN_ITERS {
            if f1 < f2 {
                a = x1;
                x1 = x2;
                f1 = f2;
                x2 = a + inv_phi * (b - a);
                f2 = sign * self.output_at(step, x2, k);
            } else {
                b = x2;
                x2 = x1;
                f2 = f1;
                x1 = b - inv_phi * (b - a);
                f1 = sign * self.output_at(step, x1, k);
            }
        }
        if f1 > f2 {
            (x1, sign * f1)
        } else {
            (x2, sign * f2)
        }
    }

    /// The time in the step where output k crosses `thr` (a sign change of c − thr between the
    /// step ends is assumed), by the Illinois variant of regula falsi.
    /// The time in [a, b] (inside the step) where output k crosses `thr`, given the signs of
    /// c − thr at a and b differ.
    #[allow(clippy::too_many_arguments)]
    fn crossing(
        &mut self,
        step: &dyn DenseOutput,
        k: usize,
        thr: f64,
        a: f64,
        b: f64,
        g0: f64,
        g1: f64,
    ) -> f64 {
        let (mut a, mut b) = (a, b);
        let (mut ga, mut gb) = (g0, g1);
        let mut side = 0i8;
        let tol = ROOT_RTOL * (b - a).abs().max(f64::MIN_POSITIVE) + 4.0 * f64::EPSILON * b.abs();
        let mut x = a;
        for _ in 0..ROOT_ITERS {
            x = (a * gb - b * ga) / (gb - ga);
            if !x.is_finite() || x <= a || x >= b {
                x = 0.5 * (a + b);
            }
            let gx = self.output_at(step, x, k) - thr;
            if gx == 0.0 || (b - a) < tol {
                break;
            }
            if (gx > 0.0) == (gb > 0.0) {
                b = x;
                gb = gx;
                if side == -1 {
                    ga *= 0.5;
                }
                side = -1;
            } else {
                a = x;
                ga = gx;
                if side == 1 {
                    gb *= 0.5;
                }
                side = 1;
            }
        }
        x
    }

    /// The interior maximum (or minimum) of output k in the step, refined once per step.
    fn interior(&mut self, step: &dyn DenseOutput, k: usize, maximize: bool) -> (f64, f64) {
        let cached = if maximize {
            self.interior_max[k]
        } else {
            self.interior_min[k]
        };
        if let Some(v) = cached {
            return v;
        }
        let v = self.refine_extremum(step, k, maximize);
        if maximize {
            self.interior_max[k] = Some(v);
        } else {
            self.interior_min[k] = Some(v);
        }
        v
    }

    /// The metric values, in the order of the specs. Extremes never seen are NaN.
    pub fn finish(&mut self) -> Vec<f64> {
        self.values
            .iter()
            .map(|v| if v.is_finite() { *v } else { f64::NAN })
            .collect()
    }

    /// Metric values written into `out` (same order as the specs).
    pub fn finish_into(&self, out: &mut [f64]) {
        for (o, v) in out.iter_mut().zip(&self.values) {
            *o = if v.is_finite() { *v } else { f64::NAN };
        }
    }

    /// Profile samples, `profile[k * n_times + i]` for output k at sample time i.
    pub fn profile(&self) -> &[f64] {
        &self.profile
    }
}

impl<E: OutputEval> StepObserver for MetricAccumulator<'_, E> {
    fn on_step(&mut self, step: &dyn DenseOutput) {
        let (t0, t1) = (step.t0(), step.t1());
        let n = self.n_states;
        let n_out = self.n_out();
        self.eval.outputs(t0, &step.y0()[..n], &mut self.c0);
        self.eval.outputs(t1, &step.y1()[..n], &mut self.c1);

        // Profile samples in (t0, t1].
        let nt = self.sample_times.len();
        while self.next_sample < nt && self.sample_times[self.next_sample] <= t1 {
            let ts = self.sample_times[self.next_sample];
            if ts > t0 {
                step.eval(ts, &mut self.ybuf);
                self.eval.outputs(ts, &self.ybuf[..n], &mut self.cbuf);
                for k in 0..n_out {
                    self.profile[k * nt + self.next_sample] = self.cbuf[k];
                }
            }
            self.next_sample += 1;
        }

        if self.wants_extrema {
            // Time derivatives of the outputs at both ends: ∇g · f.
            let ends = [
                (t0, step.y0(), step.f0(), &mut self.dc0),
                (t1, step.y1(), step.f1(), &mut self.dc1),
            ];
            for (t, y, f, dc) in ends {
                self.eval.output_jacobian(t, &y[..n], &mut self.jac);
                for (dck, row) in dc.iter_mut().zip(self.jac.chunks_exact(n)) {
                    *dck = row.iter().zip(&f[..n]).map(|(a, b)| a * b).sum();
                }
            }
        }

        // Interior extrema are refined at most once per output and kind per step.
        self.interior_max.fill(None);
        self.interior_min.fill(None);
        for i in 0..self.specs.len() {
            let spec = &self.specs[i];
            let Some((a, b)) = self.windows[i] else {
                continue;
            };
            if t0 < a || t1 > b {
                continue;
            }
            let k = spec.output;
            let (c0, c1) = (self.c0[k], self.c1[k]);
            match spec.metric.kind {
                MetricKind::Cmax | MetricKind::Tmax => {
                    self.update_extreme(i, t1, c1);
                    if self.dc0[k] > 0.0 && self.dc1[k] < 0.0 {
                        let (tm, cm) = match self.interior_max[k] {
                            Some(v) => v,
                            None => {
                                let v = self.refine_extremum(step, k, true);
                                self.interior_max[k] = Some(v);
                                v
                            }
                        };
                        self.update_extreme(i, tm, cm);
                    }
                }
                MetricKind::Cmin => {
                    self.update_extreme(i, t1, c1);
                    if self.dc0[k] < 0.0 && self.dc1[k] > 0.0 {
                        let (tm, cm) = match self.interior_min[k] {
                            Some(v) => v,
                            None => {
                                let v = self.refine_extremum(step, k, false);
                                self.interior_min[k] = Some(v);
                                v
                            }
                        };
                        self.update_extreme(i, tm, cm);
                    }
                }
                MetricKind::TimeAbove(thr) => {
                    let (g0, g1) = (c0 - thr, c1 - thr);
                    let above = match (g0 >= 0.0, g1 >= 0.0) {
                        // Both ends on one side: the output may still cross twice inside the
                        // step, around an interior extremum on the other side.
                        (true, true) if self.dc0[k] < 0.0 && self.dc1[k] > 0.0 => {
                            let (tm, cm) = self.interior(step, k, false);
                            if cm < thr {
                                let gm = cm - thr;
                                let down = self.crossing(step, k, thr, t0, tm, g0, gm);
                                let up = self.crossing(step, k, thr, tm, t1, gm, g1);
                                (t1 - t0) - (up - down)
                            } else {
                                t1 - t0
                            }
                        }
                        (true, true) => t1 - t0,
                        (false, false) if self.dc0[k] > 0.0 && self.dc1[k] < 0.0 => {
                            let (tm, cm) = self.interior(step, k, true);
                            if cm >= thr {
                                let gm = cm - thr;
                                let up = self.crossing(step, k, thr, t0, tm, g0, gm);
                                let down = self.crossing(step, k, thr, tm, t1, gm, g1);
                                down - up
                            } else {
                                0.0
                            }
                        }
                        (false, false) => 0.0,
                        (true, false) => self.crossing(step, k, thr, t0, t1, g0, g1) - t0,
                        (false, true) => t1 - self.crossing(step, k, thr, t0, t1, g0, g1),
                    };
                    self.values[i] += above;
                }
                MetricKind::At(ta) if ta > t0 && ta <= t1 => {
                    step.eval(ta, &mut self.ybuf);
                    self.eval.outputs(ta, &self.ybuf[..n], &mut self.cbuf);
                    self.values[i] = self.cbuf[k];
                }
                _ => {}
            }
        }
    }
}
