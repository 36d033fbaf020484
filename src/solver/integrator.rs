//! The CPU f64 reference integrators: RK4, DOPRI5, Tsit5, Rosenbrock23 and Rodas4.
//!
//! Step control (shared by every adaptive method and mirrored by the GPU kernels): error norm
//! ‖e‖ = sqrt(mean((e_i / (atol + rtol·max(|y0_i|, |y1_i|)))²)); a step is accepted when ‖e‖ ≤ 1;
//! the next step is h·clamp(safety·‖e‖^(−α)·‖e_prev‖^β, fac_min, fac_max) with α = 1/q − 0.75β
//! (q = the order of the error estimate plus one), β = 0.04 for the explicit pairs and 0 for
//! the Rosenbrock methods; after a rejection the step may not grow (the CPU takes the powers
//! as exp(β·ln‖e_prev‖ − α·ln‖e‖), one logarithm per step). The initial step follows
//! Hairer, Nørsett & Wanner (Solving ODEs I, §II.4).

use super::sparse_lu::SharedPlan;
use super::tableau_data::*;
use super::{
    DenseOutput, Events, Method, OdeSystem, SolverOptions, Stats, Status, StepObserver, MAX_EVENTS,
};

/// Interior points of an accepted step, besides its end, where the switches are compared
/// with their modes (a change and its reversal inside one step shows only there); the
/// kernels' alike (`N_PROBES`, `EVENT_PROBE(i)` in CUDA, `event_probe(i)` in WGSL).
pub const EVENT_PROBES: [f64; 3] = [0.25, 0.5, 0.75];

/// A located change's narrowing bisects after this many steps in a row that did not halve
/// its bracket (`locate_change`; the kernels' alike, `SLOW_STEPS`).
pub const SLOW_STEPS: u32 = 3;

/// Evaluates `$body` with `$n` bound to `$dim`, in a copy where it is a constant for systems of
/// up to 8 components (most PK models with their AUC states), so that the compiler unrolls and
/// vectorises the loops over components of a function inlined into `$body`.
macro_rules! by_dim {
    ($dim:expr, |$n:ident| $body:expr) => {
        by_dim!(@sizes $dim, $n, $body, 1 2 3 4 5 6 7 8)
    };
    (@sizes $dim:expr, $n:ident, $body:expr, $($k:literal)*) => {
        match $dim {
            $($k => {
                let $n = $k;
                $body
            })*
            $n => $body,
        }
    };
}

/// ln([`STEP_ERR_PREV_MIN`]): the controller's memory of the previous error at the start, and
/// its floor (the logarithm taken as the kernels take it, so that the emulated kernels stay
/// bit-identical).
fn ln_err_floor() -> f64 {
    std::hint::black_box(STEP_ERR_PREV_MIN).ln()
}

/// Per-thread workspace for one method and system size; allocation-free after construction.
pub struct Integrator {
    method: Method,
    dim: usize,
    /// Stage derivatives, stage-major: stage s is `k[s * dim..(s + 1) * dim]`.
    k: Vec<f64>,
    y1: Vec<f64>,
    tmp: Vec<f64>,
    f0: Vec<f64>,
    f1: Vec<f64>,
    err: Vec<f64>,
    dfdt: Vec<f64>,
    jac: Vec<f64>,
    /// The factors of W.
    w: Factors,
    dense: Vec<Vec<f64>>,
    /// Per component: what its size is measured from in the error norm and the starting step
    /// (`scale_base[j] + y[j]`). Zero for the model states; an AUC quadrature that its caller
    /// restarts from 0 at each stopping point keeps its running total here, so that the step
    /// control sees the whole area while the integrated value stays small.
    scale_base: Vec<f64>,
    /// ln of the previous accepted step's error norm (at least 1e-4), for the PI controller.
    ln_err_prev: f64,
    /// [`ln_err_floor`], computed once.
    ln_err_floor: f64,
    /// The switches' modes, where they are held (`events = "locate"`).
    modes: Vec<f64>,
    /// The switches' values just past a located change.
    past: Vec<f64>,
    /// Scratch: switch values, a state on the dense output, the switches' arguments at the
    /// ends of a change's bracket and at a point inside it.
    probe: Vec<f64>,
    y_probe: Vec<f64>,
    args: [Vec<f64>; 3],
}

impl Integrator {
    pub fn new(method: Method, dim: usize) -> Self {
        let stages = match method {
            Method::Rk4 => 4,
            Method::Dopri5 | Method::Tsit5 => 7,
            Method::Rosenbrock23 => 3,
            Method::Rodas4 => 6,
        };
        let v = || vec![0.0; dim];
        let stiff = method.is_rosenbrock();
        Integrator {
            method,
            dim,
            k: vec![0.0; stages * dim],
            y1: v(),
            tmp: v(),
            f0: v(),
            f1: v(),
            err: v(),
            dfdt: v(),
            jac: if stiff {
                vec![0.0; dim * dim]
            } else {
                Vec::new()
            },
            w: Factors {
                lu: if stiff {
                    vec![0.0; dim * dim]
                } else {
                    Vec::new()
                },
                piv: vec![0; dim],
                pattern: LuPattern::default(),
                plan: None,
                sparse: false,
                inv: vec![0.0; dim],
                x: vec![0.0; dim],
            },
            dense: (0..5).map(|_| v()).collect(),
            scale_base: v(),
            ln_err_prev: ln_err_floor(),
            ln_err_floor: ln_err_floor(),
            modes: Vec::new(),
            past: Vec::new(),
            probe: Vec::new(),
            y_probe: v(),
            args: Default::default(),
        }
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Makes the workspace fit a system of `dim` components (reallocated only when the size
    /// changes).
    pub fn fit(&mut self, dim: usize) {
        if dim != self.dim {
            *self = Integrator::new(self.method, dim);
        }
    }

    /// Forgets the step-size controller's memory of the previous error: call it before each
    /// new subject, so that a subject's result never depends on which subjects the same
    /// workspace integrated before (threads take subjects in no fixed order).
    pub fn reset(&mut self) {
        self.ln_err_prev = self.ln_err_floor;
        self.scale_base.fill(0.0);
    }

    /// The components' scale bases (see the field `scale_base`), zero after [`Self::reset`].
    pub fn scale_base_mut(&mut self) -> &mut [f64] {
        &mut self.scale_base
    }

    /// Integrates one segment [t0, t1] between stopping points (see the module docs of
    /// [`crate::solver`]). `h` carries the step proposal across segments (0 = choose).
    #[allow(clippy::too_many_arguments)]
    pub fn integrate<S: OdeSystem + ?Sized, O: StepObserver + ?Sized>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        y: &mut [f64],
        h: &mut f64,
        opts: &SolverOptions,
        obs: &mut O,
        stats: &mut Stats,
    ) -> Status {
        debug_assert_eq!(y.len(), self.dim);
        if t1 <= t0 {
            return Status::Ok;
        }
        // Switches held at their values over each step, each change located and made a step's
        // end (`events = "locate"`; the adaptive methods).
        let held = if opts.events == Events::Locate && self.method != Method::Rk4 {
            sys.switches()
        } else {
            0
        };
        if held == 0 {
            return self.integrate_held(sys, t0, t1, y, h, opts, obs, stats, false);
        }
        self.modes.resize(held, 0.0);
        self.past.resize(held, 0.0);
        self.probe.resize(held, 0.0);
        for a in &mut self.args {
            a.resize(held, 0.0);
        }
        sys.switch_values(t0, y, &mut self.modes);
        sys.set_modes(Some(&self.modes));
        let status = self.integrate_held(sys, t0, t1, y, h, opts, obs, stats, true);
        sys.set_modes(None);
        status
    }

    /// [`Integrator::integrate`], with the switches held at [`Integrator::modes`] where
    /// `held`.
    #[allow(clippy::too_many_arguments)]
    fn integrate_held<S: OdeSystem + ?Sized, O: StepObserver + ?Sized>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        y: &mut [f64],
        h: &mut f64,
        opts: &SolverOptions,
        obs: &mut O,
        stats: &mut Stats,
        mut held: bool,
    ) -> Status {
        sys.rhs(t0, y, &mut self.f0);
        stats.rhs_evals += 1;
        if !all_finite(y) || !all_finite(&self.f0) {
            return Status::NonFinite;
        }
        // Every later evaluation of the segment is at most the left limit of its end.
        let t_left = super::left_limit_shifted(t0, t1, sys.time_shift());
        let sys = &mut LeftLimited { sys, t_left };
        if self.method == Method::Rk4 {
            return self.integrate_rk4(sys, t0, t1, y, opts, obs, stats, t_left);
        }
        if self.method.is_rosenbrock() {
            self.w.adopt(sys.jacobian_pattern(), self.dim);
        }
        let q = match self.method {
            Method::Dopri5 | Method::Tsit5 => 5.0,
            Method::Rodas4 => 4.0,
            Method::Rosenbrock23 => 3.0,
            Method::Rk4 => unreachable!(),
        };
        let beta = if self.method.is_rosenbrock() {
            0.0
        } else {
            STEP_BETA_EXPLICIT
        };
        let alpha = 1.0 / q - 0.75 * beta;
        let span = t1 - t0;
        if !(*h > 0.0 && h.is_finite()) {
            // At least STEP_START least steps (as in the kernels, kernels/integrate.cu).
            *h = opts.dt.unwrap_or_else(|| {
                let least =
                    (opts.h_min_rel * t0.abs().max(span)).max(STEP_ULPS * f64::EPSILON * t0.abs());
                self.initial_step(sys, t0, y, q, opts, stats)
                    .max(STEP_START * least)
            });
        }
        let mut t = t0;
        let mut rejected_last = false;
        let mut saw_non_finite = false;
        // A step retaken to end at a located change of the switches; the changes located.
        let mut retaken = false;
        let mut events = 0u32;
        loop {
            if stats.accepted + stats.rejected >= opts.max_steps {
                return Status::MaxSteps;
            }
            // The kernels' rule (kernels/integrate.cu): at least STEP_ULPS of t's round-off,
            // and a step within the snap and STEP_ULPS of t1 ends at t1.
            let h_min = (opts.h_min_rel * t.abs().max(span))
                .max(STEP_ULPS * f64::EPSILON * t.abs())
                .max(f64::MIN_POSITIVE);
            let mut step = h.min(opts.h_max);
            let last = t + step >= t1 - (SNAP_F64 * span + STEP_ULPS * f64::EPSILON * t1.abs());
            // The step is what t moves by (as in the kernels, where f32 rounds t + step at
            // large t): the states advance by the step t takes, rounded down, never up (a step
            // rounded up to the one just rejected would be rejected forever).
            step = if last {
                t1 - t
            } else {
                let t_new = t + step;
                if t_new - t > step {
                    t_new.next_down() - t
                } else {
                    t_new - t
                }
            };
            if step < h_min && !last {
                return if saw_non_finite {
                    Status::NonFinite
                } else {
                    Status::StepTooSmall
                };
            }
            let ok_stages = match self.method {
                Method::Dopri5 | Method::Tsit5 => {
                    let (c, a, e) = if self.method == Method::Dopri5 {
                        (&DOPRI5_C, &DOPRI5_A, &DOPRI5_E)
                    } else {
                        (&TSIT5_C, &TSIT5_A, &TSIT5_E)
                    };
                    by_dim!(self.dim, |n| self
                        .explicit_step(n, sys, t, step, y, c, a, e));
                    stats.rhs_evals += 6;
                    true
                }
                Method::Rosenbrock23 => self.ros23_step(sys, t, step, y, stats),
                Method::Rodas4 => self.rodas4_step(sys, t, step, y, stats),
                Method::Rk4 => unreachable!(),
            };
            let e = if ok_stages {
                self.error_norm(y, opts)
            } else {
                f64::INFINITY
            };
            if !e.is_finite() {
                saw_non_finite = true;
            }
            if e <= 1.0 {
                // Accept.
                let t_new = if last { t1 } else { t + step };
                if self.method == Method::Rodas4 {
                    sys.rhs(t_new, &self.y1, &mut self.f1);
                    stats.rhs_evals += 1;
                }
                if !all_finite(&self.f1) {
                    saw_non_finite = true;
                    *h = step * STEP_FAC_MIN;
                    stats.rejected += 1;
                    rejected_last = true;
                    retaken = false;
                    continue;
                }
                // Rodas4's step prepared its dense output (for its own check).
                if self.method != Method::Rodas4 {
                    self.prepare_dense(step);
                }
                // A switch that changes inside the step: the step is taken again to end just
                // past the change (located on its dense output), and the switches take their
                // new values there. A step retaken so ends at the change.
                let mut flip = std::mem::take(&mut retaken);
                if held && !flip {
                    if let Some(past) = self.locate_change(sys, t, t_new, step, y) {
                        events += 1;
                        if past < t_new && past - t >= h_min {
                            stats.rejected += 1;
                            *h = past - t;
                            retaken = true;
                            continue;
                        }
                        if past < t_new {
                            // At the step's start: the switches change there.
                            stats.rejected += 1;
                            self.modes.copy_from_slice(&self.past);
                            sys.set_modes(Some(&self.modes));
                            sys.rhs(t, y, &mut self.f0);
                            stats.rhs_evals += 1;
                            if events >= MAX_EVENTS {
                                held = false;
                                sys.set_modes(None);
                                sys.rhs(t, y, &mut self.f0);
                                stats.rhs_evals += 1;
                            }
                            continue;
                        }
                        // At its end.
                        flip = true;
                    }
                }
                stats.accepted += 1;
                let view = StepView {
                    it: self,
                    t0: t,
                    t1: t_new,
                    h: step,
                    y0: y,
                    t_left,
                };
                obs.on_step(&view);
                super::copy_short(y, &self.y1);
                std::mem::swap(&mut self.f0, &mut self.f1);
                // safety · e^(−α) · e_prev^β, with one logarithm per step (e_prev's is kept).
                let ln_e = e.max(STEP_ERR_MIN).ln();
                let mut fac = STEP_SAFETY * (beta * self.ln_err_prev - alpha * ln_e).exp();
                fac = fac.clamp(STEP_FAC_MIN, STEP_FAC_MAX);
                if rejected_last {
                    fac = fac.min(1.0);
                }
                self.ln_err_prev = ln_e.max(self.ln_err_floor);
                rejected_last = false;
                saw_non_finite = false;
                if !last {
                    *h = step * fac;
                }
                t = t_new;
                if last {
                    return Status::Ok;
                }
                if flip && held {
                    if events >= MAX_EVENTS {
                        held = false;
                        sys.set_modes(None);
                    } else {
                        self.modes.copy_from_slice(&self.past);
                        sys.set_modes(Some(&self.modes));
                    }
                    sys.rhs(t, y, &mut self.f0);
                    stats.rhs_evals += 1;
                }
            } else {
                stats.rejected += 1;
                rejected_last = true;
                retaken = false;
                let fac = if e.is_finite() {
                    (STEP_SAFETY * (-alpha * e.ln()).exp()).clamp(STEP_FAC_MIN, 1.0)
                } else {
                    STEP_FAC_MIN
                };
                *h = step * fac;
            }
        }
    }

    /// Where a held switch changes inside the accepted step from `t` to `t_new` (states `y`
    /// to [`Integrator::y1`], its dense output prepared): `None` where none does (compared at
    /// [`EVENT_PROBES`] and the end); else the first time found at which one has changed,
    /// narrowed on the dense output to the neighbouring floating-point time before which none
    /// has, with the switches' values there in [`Integrator::past`]. The narrowing follows the
    /// argument of the switch that changed ([`OdeSystem::switch_args`]) by the Illinois
    /// method, its points kept inside the bracket, and bisects where the argument is not
    /// finite or does not change sign across the bracket, and after [`SLOW_STEPS`] steps in a
    /// row that did not halve it; the kernels' alike. On examples/threshold_kill.toml, 17.6
    /// evaluations per change against 53 bisecting.
    fn locate_change<S: OdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t: f64,
        t_new: f64,
        step: f64,
        y: &[f64],
    ) -> Option<f64> {
        let first_changed = |v: &[f64], modes: &[f64]| {
            v.iter()
                .zip(modes)
                .position(|(a, b)| a != b && !(a.is_nan() && b.is_nan()))
        };
        let changed = |v: &[f64], modes: &[f64]| first_changed(v, modes).is_some();
        let mut probe = std::mem::take(&mut self.probe);
        let mut past = std::mem::take(&mut self.past);
        let mut yp = std::mem::take(&mut self.y_probe);
        let [mut a_lo, mut a_hi, mut a_x] = std::mem::take(&mut self.args);
        let view = StepView {
            it: self,
            t0: t,
            t1: t_new,
            h: step,
            y0: y,
            // Not observed: the switches are evaluated at their own times (at most the left
            // limit, by `sys`).
            t_left: t_new,
        };
        // Only the components the switches read are interpolated (those after them keep
        // whatever they held: the switches do not read them).
        let reach = sys.switch_reach().min(yp.len());
        let mut found = None;
        let mut lo = t;
        for (i, theta) in EVENT_PROBES.iter().chain(&[1.0]).enumerate() {
            let at = if i == EVENT_PROBES.len() {
                t_new
            } else {
                t + theta * step
            };
            if i == EVENT_PROBES.len() {
                sys.switch_values(at, &self.y1, &mut probe);
            } else {
                view.eval(at, &mut yp[..reach]);
                sys.switch_values(at, &yp, &mut probe);
            }
            if changed(&probe, &self.modes) {
                found = Some(at);
                past.copy_from_slice(&probe);
                break;
            }
            lo = at;
        }
        if let Some(mut hi) = found {
            view.eval(lo, &mut yp[..reach]);
            sys.switch_args(lo, &yp, &mut a_lo);
            view.eval(hi, &mut yp[..reach]);
            sys.switch_args(hi, &yp, &mut a_hi);
            let mut k = first_changed(&past, &self.modes).unwrap_or(0);
            let (mut fa, mut fb) = (a_lo[k], a_hi[k]);
            // +1: hi moved last, -1: lo did (Illinois halves the value kept twice).
            let mut side = 0i8;
            // Steps in a row that did not halve the bracket: a bisection after SLOW_STEPS.
            let mut slow = 0u32;
            let mut bisect = false;
            loop {
                let mid = lo + 0.5 * (hi - lo);
                if mid <= lo || mid >= hi {
                    break;
                }
                let width = hi - lo;
                let mut x = mid;
                if !bisect && fa.is_finite() && fb.is_finite() && fa * fb < 0.0 {
                    let s = lo + (hi - lo) * (fa / (fa - fb));
                    if s > lo && s < hi {
                        x = s;
                    }
                }
                view.eval(x, &mut yp[..reach]);
                sys.switch_values_and_args(x, &yp, &mut probe, &mut a_x);
                match first_changed(&probe, &self.modes) {
                    Some(j) => {
                        hi = x;
                        past.copy_from_slice(&probe);
                        a_hi.copy_from_slice(&a_x);
                        if j != k {
                            // Another switch changes before: its argument from here on.
                            k = j;
                            (fa, fb, side) = (a_lo[k], a_hi[k], 0);
                        } else {
                            fb = a_hi[k];
                            if side == 1 {
                                fa *= 0.5;
                            }
                            side = 1;
                        }
                    }
                    None => {
                        lo = x;
                        a_lo.copy_from_slice(&a_x);
                        fa = a_lo[k];
                        if side == -1 {
                            fb *= 0.5;
                        }
                        side = -1;
                    }
                }
                slow = if hi - lo > 0.5 * width { slow + 1 } else { 0 };
                bisect = slow >= SLOW_STEPS;
            }
            found = Some(hi);
        }
        self.args = [a_lo, a_hi, a_x];
        self.probe = probe;
        self.past = past;
        self.y_probe = yp;
        found
    }

    #[allow(clippy::too_many_arguments)]
    fn integrate_rk4<S: OdeSystem + ?Sized, O: StepObserver + ?Sized>(
        &mut self,
        sys: &mut S,
        t0: f64,
        t1: f64,
        y: &mut [f64],
        opts: &SolverOptions,
        obs: &mut O,
        stats: &mut Stats,
        t_left: f64,
    ) -> Status {
        let Some(dt) = opts.dt.filter(|d| *d > 0.0 && d.is_finite()) else {
            return Status::StepTooSmall;
        };
        let span = t1 - t0;
        let n_steps = ((span / dt) - 1e-9).ceil().max(1.0) as u64;
        let n = self.dim;
        for i in 0..n_steps {
            if stats.accepted + stats.rejected >= opts.max_steps {
                return Status::MaxSteps;
            }
            let t = t0 + i as f64 * dt;
            let t_new = if i + 1 == n_steps {
                t1
            } else {
                t0 + (i + 1) as f64 * dt
            };
            let h = t_new - t;
            // k1 = f0 (from the previous step or the segment start).
            super::copy_short(&mut self.k[..n], &self.f0);
            for s in 1..4 {
                for j in 0..n {
                    self.tmp[j] = y[j] + h * RK4_C[s] * self.k[(s - 1) * n + j];
                }
                let (ks, tmp) = (&mut self.k[s * n..(s + 1) * n], &self.tmp);
                sys.rhs(t + RK4_C[s] * h, tmp, ks);
            }
            for j in 0..n {
                self.y1[j] = y[j] + h * (0..4).map(|s| RK4_B[s] * self.k[s * n + j]).sum::<f64>();
            }
            sys.rhs(t_new, &self.y1, &mut self.f1);
            stats.rhs_evals += 4;
            if !all_finite(&self.y1) || !all_finite(&self.f1) {
                return Status::NonFinite;
            }
            stats.accepted += 1;
            let view = StepView {
                it: self,
                t0: t,
                t1: t_new,
                h,
                y0: y,
                t_left,
            };
            obs.on_step(&view);
            super::copy_short(y, &self.y1);
            std::mem::swap(&mut self.f0, &mut self.f1);
        }
        Status::Ok
    }

    /// Hairer's starting step: h0 from the size of y and f, refined by a second-derivative
    /// estimate so that the first step's error is near the tolerance.
    fn initial_step<S: OdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t0: f64,
        y: &[f64],
        q: f64,
        opts: &SolverOptions,
        stats: &mut Stats,
    ) -> f64 {
        let n = self.dim as f64;
        let sc = |v: f64| opts.atol + opts.rtol * v.abs();
        // Each component's size from its scale base.
        let base = &self.scale_base;
        let size = |j: usize| base[j] + y[j];
        let d0 = ((0..self.dim)
            .map(|j| (size(j) / sc(size(j))).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let d1 = ((0..self.dim)
            .map(|j| (self.f0[j] / sc(size(j))).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        for j in 0..self.dim {
            self.tmp[j] = y[j] + h0 * self.f0[j];
        }
        sys.rhs(t0 + h0, &self.tmp, &mut self.f1);
        stats.rhs_evals += 1;
        let d2 = ((0..self.dim)
            .map(|j| ((self.f1[j] - self.f0[j]) / sc(size(j))).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
            / h0;
        let dm = d1.max(d2);
        let h1 = if dm <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / dm).powf(1.0 / q)
        };
        let h = (100.0 * h0).min(h1);
        if h.is_finite() && h > 0.0 {
            h
        } else {
            1e-6
        }
    }

    fn error_norm(&self, y: &[f64], opts: &SolverOptions) -> f64 {
        by_dim!(self.dim, |n| self.error_norm_n(n, y, opts))
    }

    #[inline(always)]
    fn error_norm_n(&self, n: usize, y: &[f64], opts: &SolverOptions) -> f64 {
        let (y, y1, err) = (&y[..n], &self.y1[..n], &self.err[..n]);
        let base = &self.scale_base[..n];
        let mut s = 0.0;
        for j in 0..n {
            let sc = opts.atol + opts.rtol * (base[j] + y[j]).abs().max((base[j] + y1[j]).abs());
            s += (err[j] / sc).powi(2);
        }
        // A multiplication by 1/n, as the GPU kernels do (a division there is several
        // instructions).
        let e = (s * (1.0 / n as f64)).sqrt();
        if e.is_nan() || !all_finite(y1) {
            f64::INFINITY
        } else {
            e
        }
    }

    /// One explicit FSAL step of a system of `n = self.dim` components: stages k1 (= f0) …
    /// k7 (= f(t+h, y1)), solution y1, error e. Each stage sum adds its terms in stage order,
    /// as written in the tableau. Called through [`by_dim!`].
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn explicit_step<S: OdeSystem + ?Sized>(
        &mut self,
        n: usize,
        sys: &mut S,
        t: f64,
        h: f64,
        y: &[f64],
        c: &[f64; 7],
        a: &[[f64; 6]; 7],
        e: &[f64; 7],
    ) {
        let y = &y[..n];
        let k = &mut self.k[..7 * n];
        let tmp = &mut self.tmp[..n];
        k[..n].copy_from_slice(&self.f0[..n]);
        for s in 1..7 {
            let (done, rest) = k.split_at_mut(s * n);
            tmp.fill(0.0);
            // (n.max(1): a system of no components has no chunks.)
            for (ar, kr) in a[s][..s].iter().zip(done.chunks_exact(n.max(1))) {
                for (acc, kj) in tmp.iter_mut().zip(kr) {
                    *acc += ar * kj;
                }
            }
            for (v, yj) in tmp.iter_mut().zip(y) {
                *v = yj + h * *v;
            }
            sys.rhs(t + c[s] * h, tmp, &mut rest[..n]);
        }
        self.y1[..n].copy_from_slice(tmp);
        self.f1[..n].copy_from_slice(&k[6 * n..]);
        let err = &mut self.err[..n];
        err.fill(0.0);
        for (es, ks) in e.iter().zip(k.chunks_exact(n.max(1))) {
            for (ej, kj) in err.iter_mut().zip(ks) {
                *ej += es * kj;
            }
        }
        for ej in err.iter_mut() {
            *ej *= h;
        }
    }

    /// Builds W = I − h·γ·J (Rosenbrock23) or I/(hγ) − J (Rodas4) and factorises it.
    fn factorise<S: OdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t: f64,
        y: &[f64],
        scale_i: f64,
        scale_j: f64,
        stats: &mut Stats,
    ) -> bool {
        let n = self.dim;
        // Along a sparse plan, the Jacobian's structural nonzeros alone where the system
        // computes them so.
        let values = self.w.is_sparse() && sys.jacobian_nonzeros(t, y, &mut self.jac);
        if !values {
            sys.jacobian(t, y, &mut self.jac);
        }
        sys.dfdt(t, y, &mut self.dfdt);
        // A derivative that is not finite at this point (a power below 1 of a state at 0) is
        // taken as 0: W is then an approximation, which the step's error control judges. (The
        // GPU kernels do the same.)
        for v in self.jac.iter_mut().chain(self.dfdt.iter_mut()) {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        stats.jac_evals += 1;
        stats.lu_decomps += 1;
        self.w.factor(&self.jac, values, n, scale_i, scale_j)
    }

    /// Shampine & Reichelt's Rosenbrock 2(3) step (ode23s).
    fn ros23_step<S: OdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t: f64,
        h: f64,
        y: &[f64],
        stats: &mut Stats,
    ) -> bool {
        let n = self.dim;
        let d = ROS23_D;
        if !self.factorise(sys, t, y, 1.0, h * d, stats) {
            return false;
        }
        // k1 = W⁻¹ (F0 + h d T)
        for j in 0..n {
            self.k[j] = self.f0[j] + h * d * self.dfdt[j];
        }
        self.w.solve(n, &mut self.k[..n]);
        // F1 = f(t + h/2, y + h/2 k1)
        for j in 0..n {
            self.tmp[j] = y[j] + 0.5 * h * self.k[j];
        }
        // F1 kept in `err` until needed.
        sys.rhs(t + 0.5 * h, &self.tmp, &mut self.err);
        // k2 = W⁻¹ (F1 − k1) + k1
        for j in 0..n {
            self.k[n + j] = self.err[j] - self.k[j];
        }
        self.w.solve(n, &mut self.k[n..2 * n]);
        for j in 0..n {
            self.k[n + j] += self.k[j];
            self.y1[j] = y[j] + h * self.k[n + j];
        }
        sys.rhs(t + h, &self.y1, &mut self.f1);
        stats.rhs_evals += 2;
        // k3 = W⁻¹ (F2 − e32 (k2 − F1) − 2 (k1 − F0) + h d T)
        for j in 0..n {
            self.k[2 * n + j] = self.f1[j]
                - ROS23_E32 * (self.k[n + j] - self.err[j])
                - 2.0 * (self.k[j] - self.f0[j])
                + h * d * self.dfdt[j];
        }
        self.w.solve(n, &mut self.k[2 * n..3 * n]);
        for j in 0..n {
            self.err[j] = h / 6.0 * (self.k[j] - 2.0 * self.k[n + j] + self.k[2 * n + j]);
        }
        true
    }

    /// Rodas4 step in the transformed form of tableau_data.rs.
    fn rodas4_step<S: OdeSystem + ?Sized>(
        &mut self,
        sys: &mut S,
        t: f64,
        h: f64,
        y: &[f64],
        stats: &mut Stats,
    ) -> bool {
        let n = self.dim;
        if !self.factorise(sys, t, y, 1.0 / (h * RODAS4_GAMMA), 1.0, stats) {
            return false;
        }
        for s in 0..6 {
            let mut terms: [(f64, &[f64]); 5] = [(0.0, &[]); 5];
            let (done, rest) = self.k.split_at_mut(s * n);
            let ks = &mut rest[..n];
            // Stage point u_s and its derivative.
            if s == 0 {
                self.tmp.copy_from_slice(&self.f0);
            } else {
                let y1 = &mut self.y1[..n];
                for (r, kr) in done.chunks_exact(n).enumerate().take(s.min(5)) {
                    terms[r] = (RODAS4_A[s][r], kr);
                }
                combination(y1, |j| y[j], &terms[..s.min(5)]);
                sys.rhs(t + RODAS4_C[s] * h, y1, &mut self.tmp);
                stats.rhs_evals += 1;
            }
            let hd = h * RODAS4_D[s];
            for (r, kr) in done.chunks_exact(n).enumerate() {
                terms[r] = (RODAS4_CC[s][r] / h, kr);
            }
            let (tmp, dfdt) = (&self.tmp[..n], &self.dfdt[..n]);
            combination(ks, |j| tmp[j] + hd * dfdt[j], &terms[..s]);
            self.w.solve(n, ks);
        }
        // y1 = u_6 + k_6, where u_6 (in y1) = y0 + Σ a_6j k_j.
        for j in 0..n {
            self.y1[j] += self.k[5 * n + j];
        }
        // The dense output's error inside the step, at θ = ¼ and ¾: its defect there,
        // δ = u′(θ)/h − f(t + θh, u(θ)), filtered by W⁻¹ (the interpolant's error itself in
        // stiff components, where a fast transient inside the step leaves the interpolant
        // wrong while the step's end is right; small in the others). Two points, as one at
        // the midpoint misses an error antisymmetric about it. The step's error is the
        // largest of these and the embedded estimate k_6, component by component (a
        // non-finite one taken). f1, computed afresh once a step is accepted, holds u(θ).
        self.prepare_dense(h);
        for j in 0..n {
            self.err[j] = self.k[5 * n + j];
        }
        for p in &RODAS4_DENSE_CHECK {
            for j in 0..n {
                let (d0, d1) = (self.dense[0][j], self.dense[1][j]);
                self.f1[j] = (p.u[0] * y[j] + p.u[1] * self.y1[j]) + (p.u[2] * d0 + p.u[3] * d1);
            }
            sys.rhs(t + p.theta * h, &self.f1[..n], &mut self.tmp[..n]);
            stats.rhs_evals += 1;
            for j in 0..n {
                let (d0, d1) = (self.dense[0][j], self.dense[1][j]);
                let slope = (self.y1[j] - y[j] + (p.du[0] * d0 + p.du[1] * d1)) / h;
                self.tmp[j] = slope - self.tmp[j];
            }
            self.w.solve(n, &mut self.tmp[..n]);
            for j in 0..n {
                let (e, dense) = (self.err[j], self.tmp[j]);
                self.err[j] = if dense.abs() <= e.abs() { e } else { dense };
            }
        }
        true
    }

    /// Precomputes the dense-output vectors of the accepted step.
    fn prepare_dense(&mut self, h: f64) {
        let n = self.dim;
        match self.method {
            Method::Dopri5 => {
                // Hairer's CONTD5 form: r1 = y0 (not stored), r2 = y1 − y0, r3 = h k1 − r2,
                // r4 = r2 − h k7 − r3, r5 = h Σ d_i k_i.
                for j in 0..n {
                    let r5 = h * (0..7).map(|s| DOPRI5_D[s] * self.k[s * n + j]).sum::<f64>();
                    self.dense[3][j] = r5;
                }
            }
            Method::Rodas4 => {
                // Σ_s H[row][s]·k_s (from −0, as `Iterator::sum` starts).
                for row in 0..2 {
                    let mut terms: [(f64, &[f64]); 5] = [(0.0, &[]); 5];
                    for (s, ks) in self.k.chunks_exact(n).take(5).enumerate() {
                        terms[s] = (RODAS4_H[row][s], ks);
                    }
                    combination(&mut self.dense[row][..n], |_| -0.0, &terms);
                }
            }
            _ => {}
        }
    }
}

/// out[j] = base(j) + Σ c·k[j] over `terms` in order: component by component for small
/// systems (one pass, the sum in a register), one term at a time over the whole vector for
/// larger ones (loops the compiler vectorises). The same additions in the same order either
/// way, so the same values.
#[inline(always)]
fn combination(out: &mut [f64], base: impl Fn(usize) -> f64, terms: &[(f64, &[f64])]) {
    let n = out.len();
    if n < super::sparse_lu::MIN_DIM {
        for (j, o) in out.iter_mut().enumerate() {
            let mut u = base(j);
            for &(c, k) in terms {
                u += c * k[j];
            }
            *o = u;
        }
    } else {
        for (j, o) in out.iter_mut().enumerate() {
            *o = base(j);
        }
        for &(c, k) in terms {
            for (o, x) in out.iter_mut().zip(&k[..n]) {
                *o += c * x;
            }
        }
    }
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// In-place LU factorisation with partial pivoting of a row-major n×n matrix. Returns false if
/// the matrix is singular or not finite.
pub fn lu_factor(a: &mut [f64], piv: &mut [usize], n: usize) -> bool {
    by_dim!(n, |n| lu_factor_n(a, piv, n))
}

#[inline(always)]
fn lu_factor_n(a: &mut [f64], piv: &mut [usize], n: usize) -> bool {
    let (a, piv) = (&mut a[..n * n], &mut piv[..n]);
    for k in 0..n {
        let mut p = k;
        let mut best = a[k * n + k].abs();
        for i in k + 1..n {
            let v = a[i * n + k].abs();
            if v > best {
                best = v;
                p = i;
            }
        }
        if best == 0.0 || !best.is_finite() {
            return false;
        }
        piv[k] = p;
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
        }
        let inv = 1.0 / a[k * n + k];
        for i in k + 1..n {
            let f = a[i * n + k] * inv;
            a[i * n + k] = f;
            if f != 0.0 {
                for j in k + 1..n {
                    a[i * n + j] -= f * a[k * n + j];
                }
            }
        }
    }
    true
}

/// Solves LU x = b in place (b becomes x).
pub fn lu_solve(lu: &[f64], piv: &[usize], n: usize, b: &mut [f64]) {
    by_dim!(n, |n| lu_solve_n(lu, piv, n, b))
}

#[inline(always)]
fn lu_solve_n(lu: &[f64], piv: &[usize], n: usize, b: &mut [f64]) {
    let (lu, piv, b) = (&lu[..n * n], &piv[..n], &mut b[..n]);
    for k in 0..n {
        b.swap(k, piv[k]);
    }
    for i in 1..n {
        let mut s = b[i];
        for j in 0..i {
            s -= lu[i * n + j] * b[j];
        }
        b[i] = s;
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for j in i + 1..n {
            s -= lu[i * n + j] * b[j];
        }
        // The reciprocal does not wait for s: the rows' divisions overlap instead of chaining.
        b[i] = s * (1.0 / lu[i * n + i]);
    }
}

/// The factors of a Rosenbrock method's W: along the plan made from the Jacobian's pattern where
/// the system gives one and the factors are sparse, densely with partial pivoting otherwise
/// (and where a pivot of the plan fails its threshold).
#[derive(Debug, Clone)]
struct Factors {
    /// Dense factors (n×n), or the plan's values.
    lu: Vec<f64>,
    piv: Vec<usize>,
    /// Where the dense factors' off-diagonal entries are not zero.
    pattern: LuPattern,
    plan: Option<std::sync::Arc<SharedPlan>>,
    /// Whether the current factors are the plan's.
    sparse: bool,
    /// The plan's pivots' reciprocals, and scratch for its solves.
    inv: Vec<f64>,
    x: Vec<f64>,
}

impl Factors {
    /// Takes the plan of the system's Jacobian pattern (made when the pattern changes), or none.
    fn adopt(&mut self, pattern: Option<&[bool]>, n: usize) {
        match pattern {
            Some(p) if n >= super::sparse_lu::MIN_DIM && p.len() == n * n => {
                if self.plan.as_ref().is_none_or(|q| q.pattern() != p) {
                    self.plan = Some(SharedPlan::get(n, p));
                }
            }
            _ => self.plan = None,
        }
    }

    /// Whether W is factorised along a sparse plan (where its pivots pass).
    fn is_sparse(&self) -> bool {
        self.plan.as_deref().is_some_and(|p| p.is_sparse())
    }

    /// Builds W = si·I − sj·J from J (dense, or with `values` the plan's pattern's entries
    /// alone, [`super::sparse_lu::LuPlan::assemble_values`]) and factorises it.
    fn factor(&mut self, jac: &[f64], values: bool, n: usize, si: f64, sj: f64) -> bool {
        if let Some(plan) = self.plan.as_deref().filter(|p| p.is_sparse()) {
            if values {
                plan.assemble_values(jac, si, sj, &mut self.lu);
            } else {
                plan.assemble(jac, si, sj, &mut self.lu);
            }
            self.sparse = plan.factor(&mut self.lu, &mut self.inv);
            if self.sparse {
                return true;
            }
            if values {
                plan.dense_from_values(jac, si, sj, &mut self.lu);
            }
        }
        self.sparse = false;
        if !values {
            for i in 0..n {
                for j in 0..n {
                    let id = if i == j { si } else { 0.0 };
                    self.lu[i * n + j] = id - sj * jac[i * n + j];
                }
            }
        }
        if !lu_factor(&mut self.lu, &mut self.piv, n) {
            return false;
        }
        self.pattern.find(&self.lu, n);
        true
    }

    /// Solves W x = b in place.
    fn solve(&mut self, n: usize, b: &mut [f64]) {
        match self.plan.as_deref() {
            Some(plan) if self.sparse => plan.solve(&self.lu, &self.inv, b, &mut self.x),
            _ => self.pattern.solve(&self.lu, &self.piv, n, b),
        }
    }
}

/// The off-diagonal entries of an LU factorisation that are not zero, row by row, in column
/// order: a large model's Jacobian is mostly zeros (a transit chain's is banded), and so are
/// its factors (the factorisation skips rows whose multiplier is zero). Found after each
/// factorisation for systems of more than 8 components whose factors are at most half full;
/// smaller or fuller ones are solved densely.
#[derive(Debug, Default, Clone)]
struct LuPattern {
    /// Whether `rows` and `cols` describe the current factors.
    sparse: bool,
    /// Per row: where its entries left of the diagonal start in `cols`, where those right of
    /// it start, and where they end.
    rows: Vec<[u32; 3]>,
    cols: Vec<u32>,
}

impl LuPattern {
    /// Systems up to this size have a constant-size dense solve.
    const DENSE_UP_TO: usize = 8;

    /// Records the pattern of `lu` (n×n, factored), or that it is to be solved densely.
    fn find(&mut self, lu: &[f64], n: usize) {
        self.sparse = false;
        if n <= Self::DENSE_UP_TO {
            return;
        }
        self.rows.clear();
        self.cols.clear();
        for (i, row) in lu.chunks_exact(n).take(n).enumerate() {
            let start = self.cols.len() as u32;
            for (j, v) in row[..i].iter().enumerate() {
                if *v != 0.0 {
                    self.cols.push(j as u32);
                }
            }
            let upper = self.cols.len() as u32;
            for (j, v) in row[i + 1..].iter().enumerate() {
                if *v != 0.0 {
                    self.cols.push((i + 1 + j) as u32);
                }
            }
            self.rows.push([start, upper, self.cols.len() as u32]);
            if 2 * self.cols.len() > n * n {
                return;
            }
        }
        self.sparse = true;
    }

    /// Solves LU x = b in place, as [`lu_solve`] does; with a pattern, only the entries that
    /// are not zero are multiplied, the others in the same order, so the results are the dense
    /// solve's (up to the sign of a zero result, and for a non-finite b, whose product with a
    /// zero entry the dense solve makes NaN).
    fn solve(&self, lu: &[f64], piv: &[usize], n: usize, b: &mut [f64]) {
        if !self.sparse {
            return lu_solve(lu, piv, n, b);
        }
        let (lu, piv, b) = (&lu[..n * n], &piv[..n], &mut b[..n]);
        for k in 0..n {
            b.swap(k, piv[k]);
        }
        let cols = |from: u32, to: u32| &self.cols[from as usize..to as usize];
        for (i, &[lo, up, _]) in self.rows.iter().enumerate() {
            let row = &lu[i * n..(i + 1) * n];
            let mut s = b[i];
            for &j in cols(lo, up) {
                s -= row[j as usize] * b[j as usize];
            }
            b[i] = s;
        }
        for (i, &[_, up, end]) in self.rows.iter().enumerate().rev() {
            let row = &lu[i * n..(i + 1) * n];
            let mut s = b[i];
            for &j in cols(up, end) {
                s -= row[j as usize] * b[j as usize];
            }
            b[i] = s * (1.0 / row[i]);
        }
    }
}

/// An accepted step as seen by observers.
struct StepView<'a> {
    it: &'a Integrator,
    t0: f64,
    t1: f64,
    h: f64,
    y0: &'a [f64],
    /// The left limit of the segment's end.
    t_left: f64,
}

impl DenseOutput for StepView<'_> {
    fn t_left(&self) -> f64 {
        self.t_left
    }
    fn t0(&self) -> f64 {
        self.t0
    }
    fn t1(&self) -> f64 {
        self.t1
    }
    fn y0(&self) -> &[f64] {
        self.y0
    }
    fn y1(&self) -> &[f64] {
        &self.it.y1
    }
    fn f0(&self) -> &[f64] {
        &self.it.f0
    }
    fn f1(&self) -> &[f64] {
        &self.it.f1
    }
    fn eval(&self, t: f64, out: &mut [f64]) {
        let it = self.it;
        let h = self.h;
        let th = ((t - self.t0) / h).clamp(0.0, 1.0);
        let (y0, y1) = (self.y0, &it.y1);
        match it.method {
            Method::Rk4 => {
                let (t2, t3) = (th * th, th * th * th);
                let (h00, h10, h01, h11) = (
                    2.0 * t3 - 3.0 * t2 + 1.0,
                    t3 - 2.0 * t2 + th,
                    -2.0 * t3 + 3.0 * t2,
                    t3 - t2,
                );
                for j in 0..out.len() {
                    out[j] = h00 * y0[j] + h10 * h * it.f0[j] + h01 * y1[j] + h11 * h * it.f1[j];
                }
            }
            Method::Dopri5 => {
                let th1 = 1.0 - th;
                for j in 0..out.len() {
                    let r2 = y1[j] - y0[j];
                    let r3 = h * it.k[j] - r2;
                    let r4 = r2 - h * it.k[6 * it.dim + j] - r3;
                    let r5 = it.dense[3][j];
                    out[j] = y0[j] + th * (r2 + th1 * (r3 + th * (r4 + th1 * r5)));
                }
            }
            Method::Tsit5 => {
                let mut b = [0.0; 7];
                for (s, r) in TSIT5_R.iter().enumerate() {
                    b[s] = th * (r[0] + th * (r[1] + th * (r[2] + th * r[3])));
                }
                by_dim!(it.dim, |n| {
                    for j in 0..out.len() {
                        out[j] = y0[j] + h * (0..7).map(|s| b[s] * it.k[s * n + j]).sum::<f64>();
                    }
                })
            }
            Method::Rosenbrock23 => {
                let d = ROS23_D;
                let c1 = th * (1.0 - th) / (1.0 - 2.0 * d);
                let c2 = th * (th - 2.0 * d) / (1.0 - 2.0 * d);
                for j in 0..out.len() {
                    out[j] = y0[j] + h * (c1 * it.k[j] + c2 * it.k[it.dim + j]);
                }
            }
            Method::Rodas4 => {
                let th1 = 1.0 - th;
                for j in 0..out.len() {
                    out[j] =
                        th1 * y0[j] + th * (y1[j] + th1 * (it.dense[0][j] + th * it.dense[1][j]));
                }
            }
        }
        if th == 1.0 {
            let n = out.len();
            out.copy_from_slice(&y1[..n]);
        }
    }
}

/// The system as a segment's steps see it: the right-hand side is evaluated at no time later
/// than `t_left`, the left limit of the segment's end ([`super::left_limit`]), so that a jump at a
/// stopping point belongs to the next segment (as in the kernels' `do_step`, whose stages
/// take `min(t, tl)`). The Jacobian and ∂f/∂t are taken at a step's start, inside the segment.
struct LeftLimited<'a, S: ?Sized> {
    sys: &'a mut S,
    t_left: f64,
}

impl<S: OdeSystem + ?Sized> OdeSystem for LeftLimited<'_, S> {
    #[inline(always)]
    fn dim(&self) -> usize {
        self.sys.dim()
    }
    #[inline(always)]
    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]) {
        self.sys.rhs(t.min(self.t_left), y, dy)
    }
    #[inline(always)]
    fn jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.sys.jacobian(t, y, jac)
    }
    #[inline(always)]
    fn dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.sys.dfdt(t, y, out)
    }
    #[inline(always)]
    fn jacobian_pattern(&self) -> Option<&[bool]> {
        self.sys.jacobian_pattern()
    }
    #[inline(always)]
    fn jacobian_nonzeros(&mut self, t: f64, y: &[f64], vals: &mut [f64]) -> bool {
        self.sys.jacobian_nonzeros(t, y, vals)
    }
    fn switches(&self) -> usize {
        self.sys.switches()
    }
    fn switch_values(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.sys.switch_values(t.min(self.t_left), y, out)
    }
    fn switch_reach(&self) -> usize {
        self.sys.switch_reach()
    }
    fn switch_args(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.sys.switch_args(t.min(self.t_left), y, out)
    }
    fn switch_values_and_args(&mut self, t: f64, y: &[f64], values: &mut [f64], args: &mut [f64]) {
        self.sys
            .switch_values_and_args(t.min(self.t_left), y, values, args)
    }
    fn set_modes(&mut self, modes: Option<&[f64]>) {
        self.sys.set_modes(modes)
    }
    fn time_shift(&self) -> f64 {
        self.sys.time_shift()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10-component system whose first state has a derivative of its own far below its
    /// coupling (y0' = −0.001·y0 − 1000·y1, y1' = 1000·(y0 − y1), a transit chain after them):
    /// the plan eliminates it first (its diagonal is structurally nonzero), and once the
    /// transient has passed, Rodas4's steps make that pivot 1/(hγ) + 0.001 fail the threshold
    /// against the coupling; those factorisations fall back to the dense pivoted LU. With the
    /// pattern or without it (dense throughout), the end state agrees to round-off.
    #[test]
    fn refused_pivots_fall_back_to_the_dense_factorisation() {
        struct Sys(bool, Vec<bool>);
        const N: usize = 10;
        impl OdeSystem for Sys {
            fn dim(&self) -> usize {
                N
            }
            fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
                dy[0] = -1e-3 * y[0] - 1000.0 * y[1];
                dy[1] = 1000.0 * (y[0] - y[1]);
                for k in 2..N {
                    dy[k] = 0.5 * y[k - 1] - 0.5 * y[k];
                }
            }
            fn jacobian(&mut self, _t: f64, _y: &[f64], jac: &mut [f64]) {
                jac.fill(0.0);
                jac[0] = -1e-3;
                jac[1] = -1000.0;
                jac[N] = 1000.0;
                jac[N + 1] = -1000.0;
                for k in 2..N {
                    jac[k * N + k - 1] = 0.5;
                    jac[k * N + k] = -0.5;
                }
            }
            fn dfdt(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
                out.fill(0.0);
            }
            fn jacobian_pattern(&self) -> Option<&[bool]> {
                self.0.then_some(&self.1[..])
            }
        }
        let mut pattern = vec![false; N * N];
        for (ij, p) in pattern.iter_mut().enumerate() {
            let (i, j) = (ij / N, ij % N);
            *p = matches!((i, j), (0, 0) | (0, 1) | (1, 0) | (1, 1))
                || (i >= 2 && (j == i || j + 1 == i));
        }
        let opts = SolverOptions {
            method: Method::Rodas4,
            rtol: 1e-8,
            atol: 1e-10,
            ..SolverOptions::default()
        };
        let mut ends = Vec::new();
        for sparse in [true, false] {
            let mut it = Integrator::new(Method::Rodas4, N);
            let mut sys = Sys(sparse, pattern.clone());
            let mut y = vec![1.0; N];
            let (mut h, mut stats) = (0.0, Stats::default());
            let mut refused = 0;
            let mut t = 0.0;
            while t < 20.0 {
                let status = it.integrate(
                    &mut sys,
                    t,
                    t + 1.0,
                    &mut y,
                    &mut h,
                    &opts,
                    &mut crate::solver::NoObserver,
                    &mut stats,
                );
                assert_eq!(status, Status::Ok);
                t += 1.0;
                refused += usize::from(sparse && !it.w.sparse);
            }
            assert_eq!(it.w.plan.is_some(), sparse);
            if sparse {
                assert!(
                    refused > 10,
                    "{refused} segments ended on the dense fallback"
                );
            }
            ends.push(y);
        }
        for (a, b) in ends[0].iter().zip(&ends[1]) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    /// A x = b solved through the factorisation, for sizes with a constant-size copy (1–8) and
    /// without (9–30): dense and banded matrices whose first row was swapped with the last, so
    /// that pivoting is needed (a banded one then has a zero on the diagonal); the solution
    /// within 1e-13 of the exact one, and the sparse solve's bit for bit the dense one's;
    /// singular and non-finite matrices refused.
    #[test]
    fn lu_solves_dense_and_banded_systems() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in 1..=30 {
            for banded in [false, true] {
                // Diagonally dominant after one row swap: row 0 and row n−1 exchanged.
                let mut a = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        let near = i.abs_diff(j) <= 1;
                        if !banded || near {
                            a[i * n + j] = uniform();
                        }
                    }
                    a[i * n + i] += 2.0 * n as f64;
                }
                if n > 1 {
                    for j in 0..n {
                        a.swap(j, (n - 1) * n + j);
                    }
                }
                let x: Vec<f64> = (0..n).map(|_| uniform() * 10.0).collect();
                let b: Vec<f64> = (0..n)
                    .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
                    .collect();
                let (mut lu, mut piv, mut got) = (a.clone(), vec![0; n], b.clone());
                assert!(lu_factor(&mut lu, &mut piv, n), "n {n}");
                lu_solve(&lu, &piv, n, &mut got);
                // Through the pattern of the factors: sparse for banded systems above 8
                // components, the same results bit for bit.
                let mut pattern = LuPattern::default();
                pattern.find(&lu, n);
                assert_eq!(pattern.sparse, banded && n > 8, "n {n}");
                let mut by_pattern = b.clone();
                pattern.solve(&lu, &piv, n, &mut by_pattern);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&by_pattern), bits(&got), "n {n}");
                for (g, w) in got.iter().zip(&x) {
                    assert!(
                        (g - w).abs() <= 1e-13 * (1.0 + w.abs()),
                        "n {n}: {g} vs {w}"
                    );
                }
            }
        }
        let mut singular = vec![1.0, 2.0, 2.0, 4.0];
        assert!(!lu_factor(&mut singular, &mut [0; 2], 2));
        let mut inf = vec![f64::INFINITY, 0.0, 0.0, 1.0];
        assert!(!lu_factor(&mut inf, &mut [0; 2], 2));
    }
}
