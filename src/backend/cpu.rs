//! The CPU f64 reference: one subject at a time per thread, every method, the oracle that every
//! GPU path is checked against.
//!
//! A subject is integrated segment by segment between stopping points (dose and infusion
//! events, nominal dose times, metric window edges, the end). The model is extended with one
//! quadrature state per output whose AUC a metric reads (d AUC/dt = output,
//! [`crate::metrics::quadrature_outputs`]), so AUCs are integrated to the solver's tolerance
//! rather than summed on a grid.

use crate::dosing::{EventKind, Schedule};
use crate::metrics::{resolve_window, MetricAccumulator, MetricSpec, OutputEval};
use crate::solver::{Integrator, OdeSystem, SolverOptions, Stats, Status};

/// A model extended with AUC quadrature states for some of its outputs and piecewise-constant
/// infusion inputs.
pub struct WithQuadrature<M> {
    pub model: M,
    /// Current zero-order input rate into each model state.
    pub rates: Vec<f64>,
    /// What the model's own time is ahead of the integration's (0 but in a steady state's
    /// iterations, which integrate an interval from 0 that ends at the dose's time:
    /// `crate::backend::records`): every evaluation of the model reads `t + t_shift`.
    pub t_shift: f64,
    n: usize,
    n_out: usize,
    /// The output each quadrature state integrates.
    quad: Vec<usize>,
    /// Whether `quad` is every output in order (the outputs go straight into the derivative).
    all: bool,
    jac_model: Vec<f64>,
    jac_out: Vec<f64>,
    /// Every output's time derivative.
    scratch: Vec<f64>,
    /// Every output's value where the Jacobian is taken (with quadratures).
    values: Vec<f64>,
    /// The (t, y) that `values` were taken at, so that ∂f/∂t at the same point (a
    /// Rosenbrock step takes both there) reuses them: t, then y.
    values_at: Vec<f64>,
    /// Where the extended system's Jacobian can be nonzero, for systems large enough to be
    /// factorised along it.
    pattern: Option<Vec<bool>>,
    /// With a pattern: how many of its entries are in the model block, and where the
    /// quadrature rows' entries are in the outputs' gradient (`jac_out`).
    nonzeros: Option<(usize, Vec<u32>)>,
}

impl<M: OdeSystem + OutputEval> WithQuadrature<M> {
    /// `quad`: the outputs that get a quadrature state, in the order of those states.
    pub fn new(model: M, quad: Vec<usize>) -> Self {
        let n = model.dim();
        let n_out = model.n_outputs();
        assert!(
            quad.iter().all(|&k| k < n_out),
            "quadrature of a missing output"
        );
        let all = quad.iter().copied().eq(0..n_out);
        let m = n + quad.len();
        let pattern = match (model.jacobian_pattern(), model.output_jacobian_pattern()) {
            (Some(pf), Some(pg)) if m >= crate::solver::sparse_lu::MIN_DIM => {
                // [∂f/∂y 0; ∂g/∂y 0]: nothing depends on the quadrature states.
                let mut p = vec![false; m * m];
                for i in 0..n {
                    p[i * m..i * m + n].copy_from_slice(&pf[i * n..(i + 1) * n]);
                }
                for (a, &k) in quad.iter().enumerate() {
                    p[(n + a) * m..(n + a) * m + n].copy_from_slice(&pg[k * n..(k + 1) * n]);
                }
                Some(p)
            }
            _ => None,
        };
        let nonzeros = pattern.as_ref().map(|p| {
            let in_model = (0..n).map(|i| p[i * m..i * m + n].iter().filter(|z| **z).count());
            let quad_nz = quad
                .iter()
                .flat_map(|&k| (0..n).map(move |j| k * n + j))
                .filter(|&kj| model.output_jacobian_pattern().is_some_and(|pg| pg[kj]))
                .map(|kj| kj as u32)
                .collect();
            (in_model.sum(), quad_nz)
        });
        WithQuadrature {
            nonzeros,
            pattern,
            model,
            rates: vec![0.0; n],
            t_shift: 0.0,
            n,
            n_out,
            all,
            jac_model: vec![0.0; n * n],
            jac_out: vec![0.0; n_out * n],
            scratch: vec![0.0; if all || quad.is_empty() { 0 } else { n_out }],
            values: vec![0.0; if quad.is_empty() { 0 } else { n_out }],
            values_at: Vec::with_capacity(n + 1),
            quad,
        }
    }
}

impl<M: OdeSystem + OutputEval> WithQuadrature<M> {
    /// The outputs' values at (t, y), and a zero gradient (`jac_out`) for each that is not
    /// finite: its quadrature takes nothing from it (`rhs`), so neither does its row of the
    /// Jacobian (the kernels' w_factor alike). A gradient that is finite where the value is
    /// not (sqrt(−1) + a) would otherwise give the quadrature stages of a Rosenbrock step a
    /// slope its derivative never has, and the step control steps too small to go on.
    fn drop_non_finite_outputs(&mut self, t: f64, y: &[f64]) {
        let n = self.n;
        self.outputs_at(t, y);
        for (k, v) in self.values.iter().enumerate() {
            if !v.is_finite() {
                self.jac_out[k * n..(k + 1) * n].fill(0.0);
            }
        }
    }
}

impl<M: OdeSystem + OutputEval> WithQuadrature<M> {
    /// `values` = the outputs at (t, y): evaluated unless they were taken at the very same
    /// point (bit for bit) since the last right-hand side.
    fn outputs_at(&mut self, t: f64, y: &[f64]) {
        let same = self.values_at.len() == y.len() + 1
            && self.values_at[0].to_bits() == t.to_bits()
            && self.values_at[1..]
                .iter()
                .zip(y)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            self.model.outputs(t, y, &mut self.values);
            self.values_at.clear();
            self.values_at.push(t);
            self.values_at.extend_from_slice(y);
        }
    }
}

impl<M: OdeSystem + OutputEval> OdeSystem for WithQuadrature<M> {
    fn dim(&self) -> usize {
        self.n + self.quad.len()
    }

    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]) {
        let t = t + self.t_shift;
        let n = self.n;
        // The outputs kept from a Jacobian serve only the ∂f/∂t taken next at the same point,
        // never across a change of the model's parameters (a later occasion), which comes
        // before a segment's first evaluation.
        self.values_at.clear();
        if self.quad.is_empty() {
            self.model.rhs(t, &y[..n], &mut dy[..n]);
        } else if self.all {
            self.model.rhs_and_outputs(t, &y[..n], dy);
        } else {
            self.model.rhs_and_some_outputs(t, &y[..n], &self.quad, dy);
        }
        // An output that is not finite adds nothing to its quadrature (the metrics of the
        // output are undefined: MetricAccumulator sees it at the step's ends), so that the
        // states' integration, and the other outputs' metrics, go on.
        for d in &mut dy[n..] {
            if !d.is_finite() {
                *d = 0.0;
            }
        }
        // Most of the time nothing is infused: leave the derivatives alone then.
        if self.rates.iter().any(|r| *r != 0.0) {
            for (d, r) in dy[..n].iter_mut().zip(&self.rates) {
                *d += r;
            }
        }
    }

    fn jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        let t = t + self.t_shift;
        let (n, m) = (self.n, self.dim());
        self.model.jacobian(t, &y[..n], &mut self.jac_model);
        if !self.quad.is_empty() {
            self.model.output_jacobian(t, &y[..n], &mut self.jac_out);
            self.drop_non_finite_outputs(t, &y[..n]);
        }
        jac.fill(0.0);
        for i in 0..n {
            jac[i * m..i * m + n].copy_from_slice(&self.jac_model[i * n..(i + 1) * n]);
        }
        for (a, &k) in self.quad.iter().enumerate() {
            let row = (n + a) * m;
            jac[row..row + n].copy_from_slice(&self.jac_out[k * n..(k + 1) * n]);
        }
    }

    fn jacobian_pattern(&self) -> Option<&[bool]> {
        self.pattern.as_deref()
    }

    fn switches(&self) -> usize {
        self.model.switches()
    }

    fn switch_values(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let t = t + self.t_shift;
        self.model.switch_values(t, &y[..self.n], out)
    }

    fn switch_reach(&self) -> usize {
        self.model.switch_reach()
    }

    fn switch_args(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let t = t + self.t_shift;
        self.model.switch_args(t, &y[..self.n], out)
    }

    fn switch_values_and_args(&mut self, t: f64, y: &[f64], values: &mut [f64], args: &mut [f64]) {
        let t = t + self.t_shift;
        self.model
            .switch_values_and_args(t, &y[..self.n], values, args)
    }

    fn set_modes(&mut self, modes: Option<&[f64]>) {
        self.model.set_modes(modes)
    }

    fn time_shift(&self) -> f64 {
        self.t_shift
    }

    /// The model block's rows are the model's own nonzeros (the quadrature columns are
    /// zero), then each quadrature row's: its output's gradient where it can be nonzero.
    fn jacobian_nonzeros(&mut self, t: f64, y: &[f64], vals: &mut [f64]) -> bool {
        let t = t + self.t_shift;
        let n = self.n;
        let Some((nm, has_quad)) = self.nonzeros.as_ref().map(|(nm, q)| (*nm, !q.is_empty()))
        else {
            return false;
        };
        if !self.model.jacobian_nonzeros(t, &y[..n], &mut vals[..nm]) {
            return false;
        }
        if has_quad {
            self.model.output_jacobian(t, &y[..n], &mut self.jac_out);
            self.drop_non_finite_outputs(t, &y[..n]);
            let quad_nz = self.nonzeros.as_ref().map_or(&[][..], |(_, q)| &q[..]);
            for (v, &k) in vals[nm..].iter_mut().zip(quad_nz) {
                *v = self.jac_out[k as usize];
            }
        }
        true
    }

    fn dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        let t = t + self.t_shift;
        let n = self.n;
        let (out_model, out_auc) = out.split_at_mut(n);
        self.model.dfdt(t, &y[..n], out_model);
        if self.all {
            self.model.output_dfdt(t, &y[..n], out_auc);
        } else if !self.quad.is_empty() {
            let g = &mut self.scratch[..self.n_out];
            self.model.output_dfdt(t, &y[..n], g);
            for (d, &k) in out_auc.iter_mut().zip(&self.quad) {
                *d = g[k];
            }
        }
        if !self.quad.is_empty() {
            // Taken already where the Jacobian was, at the same point.
            self.outputs_at(t, &y[..n]);
            for (d, &k) in out_auc.iter_mut().zip(&self.quad) {
                if !self.values[k].is_finite() {
                    *d = 0.0;
                }
            }
        }
    }
}

/// What to simulate for one subject besides its model.
#[derive(Debug, Clone, Copy)]
pub struct SubjectPlan<'a> {
    pub schedule: &'a Schedule,
    pub end: f64,
    pub metrics: &'a [MetricSpec],
    /// Sorted times at which the outputs are sampled (left limits).
    pub sample_times: &'a [f64],
    pub solver: &'a SolverOptions,
    /// Start times of the second, third, … occasion (sorted; empty: one occasion). At each,
    /// [`simulate_subject_occasions`] rebinds the model to the next occasion's parameters.
    pub occasions: &'a [f64],
    /// Where the model jumps in time, as stopping points
    /// (`ModelPrograms::jump_stops`; empty: none).
    pub jumps: &'a [f64],
}

/// The result of one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectOutcome {
    pub status: Status,
    pub stats: Stats,
    /// One value per metric spec; all NaN when the subject failed.
    pub metrics: Vec<f64>,
    /// `profile[k * n_times + i]`: output k at sample time i (NaN past a failure).
    pub profile: Vec<f64>,
}

/// The stopping points of a subject: 0, every event time, nominal dose times, metric window
/// edges, the model's jumps in time (`jumps`) and the end; sorted and unique, within [0, end].
pub fn stop_times(
    schedule: &Schedule,
    end: f64,
    metrics: &[MetricSpec],
    jumps: &[f64],
) -> Vec<f64> {
    let mut stops = vec![0.0, end];
    stops.extend_from_slice(jumps);
    stops.extend(schedule.events.iter().map(|e| e.time));
    let doses = schedule.doses_until(end);
    stops.extend(doses.times.iter().copied());
    with_window_edges(stops, metrics, end, &doses)
}

/// `stops` with the edges of the metrics' windows (resolved against `doses`), kept within
/// [0, end], sorted and unique.
pub fn with_window_edges(
    mut stops: Vec<f64>,
    metrics: &[MetricSpec],
    end: f64,
    doses: &crate::dosing::DoseTimes,
) -> Vec<f64> {
    for s in metrics {
        if let Some((a, b)) = resolve_window(s.metric.window, end, doses) {
            stops.push(a);
            stops.push(b);
        }
    }
    stops.retain(|t| (0.0..=end).contains(t));
    stops.sort_by(f64::total_cmp);
    stops.dedup();
    stops
}

/// Integrates one subject. `model` drives the integration, `outputs` evaluates outputs for the
/// metrics (two instances of the same bound model: the integrator and the metric observer each
/// hold one). `y0` holds the model's initial states (a reset restores them).
pub fn simulate_subject<M, E>(
    model: M,
    outputs: E,
    y0: &[f64],
    plan: &SubjectPlan<'_>,
    integrator: &mut Integrator,
) -> SubjectOutcome
where
    M: OdeSystem + OutputEval,
    E: OutputEval,
{
    simulate_subject_occasions(model, outputs, y0, y0, plan, integrator, None)
}

/// What [`simulate_subject_occasions`] switches to at the start of an occasion: the model and
/// output evaluator bound to the occasion's parameters, and the model's initial state with
/// them (what a reset in that occasion restores).
pub type Occasion<M, E> = (M, E, Vec<f64>);

/// [`simulate_subject`] with parameters that change between occasions: at the start of
/// occasion k + 2 (`plan.occasions[k]`), `rebind(k)` gives the model, output evaluator and
/// initial state of that occasion. States carry over; the outputs may jump there, like at a
/// bolus. Without `rebind`, the occasions are ignored. `y0` is the state at 0 (a steady state,
/// say), `init` the model's initial state in the first occasion: a reset restores the initial
/// state of the occasion in force, as NONMEM evaluates the initial conditions with the
/// parameters current at the reset.
pub fn simulate_subject_occasions<M, E>(
    model: M,
    outputs: E,
    y0: &[f64],
    init: &[f64],
    plan: &SubjectPlan<'_>,
    integrator: &mut Integrator,
    mut rebind: Option<&mut dyn FnMut(usize) -> Occasion<M, E>>,
) -> SubjectOutcome
where
    M: OdeSystem + OutputEval,
    E: OutputEval,
{
    let n = y0.len();
    let mut sys = WithQuadrature::new(model, crate::metrics::quadrature_outputs(plan.metrics));
    let mut y = vec![0.0; sys.dim()];
    y[..n].copy_from_slice(y0);
    let mut acc = MetricAccumulator::new(
        outputs,
        plan.metrics,
        n,
        plan.schedule,
        plan.end,
        plan.sample_times,
        plan.solver.rtol,
    );
    integrator.fit(sys.dim());
    integrator.reset();
    let mut stats = Stats::default();
    let mut h = plan.solver.dt.unwrap_or(0.0);
    let mut status = if y.iter().all(|v| v.is_finite()) {
        Status::Ok
    } else {
        Status::NonFinite
    };
    let events = &plan.schedule.events;
    let mut next_event = 0;
    let mut t_prev = 0.0;
    let occasions = if rebind.is_some() {
        plan.occasions
    } else {
        &[]
    };
    let mut next_occasion = 0;
    // What a reset restores: `init`, then the initial state of the occasion in force.
    let mut reset_to = std::borrow::Cow::Borrowed(init);
    let mut stops = stop_times(plan.schedule, plan.end, plan.metrics, plan.jumps);
    if !occasions.is_empty() {
        stops.extend(occasions.iter().filter(|t| (0.0..=plan.end).contains(*t)));
        stops.sort_by(f64::total_cmp);
        stops.dedup();
    }
    if status == Status::Ok {
        for ts in stops {
            if ts > t_prev {
                status = integrator.integrate(
                    &mut sys,
                    t_prev,
                    ts,
                    &mut y,
                    &mut h,
                    plan.solver,
                    &mut acc,
                    &mut stats,
                );
                if status != Status::Ok {
                    break;
                }
            }
            acc.at_stop_pre(ts, &y);
            // The AUC quadratures start again from 0, their totals kept as the scale bases of
            // the step control: a value integrated in f32 stays as small as the area since the
            // last stop, and loses nothing to a large running total (the kernels alike).
            for (b, v) in integrator.scale_base_mut()[n..].iter_mut().zip(&mut y[n..]) {
                *b += *v;
                *v = 0.0;
            }
            while next_occasion < occasions.len() && occasions[next_occasion] <= ts {
                if let Some(rebind) = rebind.as_mut() {
                    let (m, e, y_init) = rebind(next_occasion);
                    sys.model = m;
                    acc.set_outputs(e);
                    reset_to = std::borrow::Cow::Owned(y_init);
                }
                next_occasion += 1;
            }
            while next_event < events.len() && events[next_event].time <= ts {
                let e = events[next_event];
                match e.kind {
                    EventKind::Reset => {
                        // Back to the initial state; the AUC quadratures go on.
                        y[..n].copy_from_slice(&reset_to);
                        sys.rates.fill(0.0);
                    }
                    EventKind::Bolus { amount } => y[e.state] += amount,
                    EventKind::InfusionStart { rate } => sys.rates[e.state] += rate,
                    EventKind::InfusionEnd { rate } => {
                        let r = &mut sys.rates[e.state];
                        *r -= rate;
                        // Cancel round-off so that a finished infusion leaves exactly nothing.
                        if r.abs() <= super::Precision::F64.rate_cancel() * rate.abs() {
                            *r = 0.0;
                        }
                    }
                }
                next_event += 1;
            }
            if !y.iter().all(|v| v.is_finite()) {
                status = Status::NonFinite;
                break;
            }
            acc.at_stop_post(ts, &y);
            t_prev = ts;
        }
    }
    let metrics = if status == Status::Ok {
        acc.finish()
    } else {
        vec![f64::NAN; plan.metrics.len()]
    };
    SubjectOutcome {
        status,
        stats,
        metrics,
        profile: acc.profile().to_vec(),
    }
}

/// The CPU f64 reference as a [`Backend`](super::Backend): subjects in parallel on every core
/// (rayon), each with its own integrator workspace.
pub struct CpuBackend {
    model: std::sync::Arc<crate::model::CompiledModel>,
}

impl CpuBackend {
    pub fn new(model: std::sync::Arc<crate::model::CompiledModel>) -> Self {
        CpuBackend { model }
    }
}

/// One subject of an arm on the CPU: schedule from the subject's dosing parameters, initial
/// state from the model, then [`simulate_subject`]. Invalid per-subject dosing (a NaN lag, a
/// negative bioavailability) flags the subject as non-finite.
pub fn simulate_arm_subject(
    model: &crate::model::CompiledModel,
    params: &[f64],
    amount_scale: f64,
    arm: &super::ArmPlan,
    integrator: &mut Integrator,
) -> SubjectOutcome {
    simulate_arm_subject_occasions(model, params, &[], amount_scale, arm, integrator)
}

/// [`simulate_arm_subject`] for an arm with occasions: `later[k]` holds the parameters of
/// occasion k + 2 (at least as many as `arm.occasions`). Doses take the lag, bioavailability
/// and modelled rate of the occasion their nominal time falls in, but for the lag of a line
/// that keeps the one of the occasion it starts in (`DoseLine::keeps_lag`).
pub fn simulate_arm_subject_occasions(
    model: &crate::model::CompiledModel,
    params: &[f64],
    later: &[Vec<f64>],
    amount_scale: f64,
    arm: &super::ArmPlan,
    integrator: &mut Integrator,
) -> SubjectOutcome {
    let shared = arm_shared_stops(model, arm);
    simulate_arm_subject_sharing(model, params, later, amount_scale, arm, &shared, integrator)
}

/// The stopping points an arm's subjects share that cover a jump in time
/// ([`super::gpu::shared_stops`]), once per arm; none where the model has no jumps in time.
fn arm_shared_stops(model: &crate::model::CompiledModel, arm: &super::ArmPlan) -> Vec<f64> {
    if model.programs.time_jumps.is_empty() {
        Vec::new()
    } else {
        super::gpu::shared_stops(arm)
    }
}

/// [`simulate_arm_subject_occasions`] with the arm's [`arm_shared_stops`] given.
fn simulate_arm_subject_sharing(
    model: &crate::model::CompiledModel,
    params: &[f64],
    later: &[Vec<f64>],
    amount_scale: f64,
    arm: &super::ArmPlan,
    shared: &[f64],
    integrator: &mut Integrator,
) -> SubjectOutcome {
    let mut bound = model.bind(params);
    let n_out = model.n_outputs();
    let fail = |status| SubjectOutcome {
        status,
        stats: Stats::default(),
        metrics: vec![f64::NAN; arm.metrics.len()],
        profile: vec![f64::NAN; n_out * arm.sample_times.len()],
    };
    let occasions = &arm.occasions[..arm.occasions.len().min(later.len())];
    let schedule = if occasions.is_empty() {
        arm.regimen.schedule(amount_scale, &bound.state_dosing())
    } else {
        let dosing: Vec<Vec<crate::dosing::StateDosing>> = std::iter::once(bound.state_dosing())
            .chain(later.iter().map(|p| model.bind(p).state_dosing()))
            .collect();
        let dosing: Vec<&[crate::dosing::StateDosing]> =
            dosing.iter().map(|d| d.as_slice()).collect();
        arm.regimen
            .schedule_occasions(amount_scale, occasions, &dosing)
    };
    let Ok(mut schedule) = schedule else {
        return fail(Status::NonFinite);
    };
    let mut init = vec![0.0; model.n_states()];
    bound.initial_state(&mut init);
    let mut y0 = init.clone();
    // A line at steady state: the arm starts from the steady state of its dose, with the
    // inputs of the earlier doses that reach past 0.
    let mut ss_stats = Stats::default();
    if let Some(line) = arm.regimen.lines.iter().find(|l| l.steady_state) {
        // The dosing values of the occasion the line's first dose falls in, as its own.
        let occasion = occasions.iter().take_while(|o| **o <= line.start).count();
        let dosing = match occasion {
            0 => bound.state_dosing(),
            k => model.bind(&later[k - 1]).state_dosing(),
        };
        let Ok(dose) = line.resolve(amount_scale, &dosing[line.state]) else {
            return fail(Status::NonFinite);
        };
        let start = crate::backend::records::steady_state_start(
            model,
            params,
            line.state,
            &dose,
            line.start,
            line.interval,
            &arm.solver,
        );
        let (x, tail, stats) = match start {
            Ok(v) => v,
            Err(status) => return fail(status),
        };
        y0 = x;
        ss_stats = stats;
        // A reset cancels what those doses, the last of them at the line's start less its
        // interval, still had to give from then on (as a dose line's).
        let resets = arm.regimen.reset_times();
        let cut = crate::dosing::cancelling_reset(&resets, line.start - line.interval);
        for (at, state, input) in tail {
            use crate::backend::records::Input;
            if cut.is_some_and(|r| at >= r) {
                continue;
            }
            let kind = match input {
                Input::Bolus(amount) => EventKind::Bolus { amount },
                Input::Rate(rate) if rate > 0.0 => EventKind::InfusionStart { rate },
                Input::Rate(rate) => EventKind::InfusionEnd { rate: -rate },
            };
            schedule.events.push(crate::dosing::DoseEvent {
                time: at,
                state,
                kind,
            });
        }
        crate::dosing::sort_events(&mut schedule.events);
    }
    // The model's jumps in time, with the subject's parameters of each occasion.
    let jumps = if model.programs.time_jumps.is_empty() {
        Ok(Vec::new())
    } else {
        model.programs.subject_jump_stops(
            params,
            later,
            occasions,
            arm.end,
            crate::model::jumps::Which::All,
            super::Precision::F64,
            shared,
        )
    };
    let Ok(jumps) = jumps else {
        return fail(Status::MaxSteps);
    };
    let plan = SubjectPlan {
        schedule: &schedule,
        end: arm.end,
        metrics: &arm.metrics,
        sample_times: &arm.sample_times,
        solver: &arm.solver,
        occasions,
        jumps: &jumps,
    };
    // A reset restores the model's initial state (never the steady state of the start), with
    // the parameters of the occasion in force.
    let mut rebind = |k: usize| {
        let mut b = model.bind(&later[k]);
        let mut y_init = vec![0.0; model.n_states()];
        b.initial_state(&mut y_init);
        (b, model.bind(&later[k]), y_init)
    };
    let rebind: Option<&mut dyn FnMut(usize) -> Occasion<_, _>> = if occasions.is_empty() {
        None
    } else {
        Some(&mut rebind)
    };
    let mut outcome = simulate_subject_occasions(
        bound,
        model.bind(params),
        &y0,
        &init,
        &plan,
        integrator,
        rebind,
    );
    let s = &mut outcome.stats;
    s.rhs_evals += ss_stats.rhs_evals;
    s.jac_evals += ss_stats.jac_evals;
    s.lu_decomps += ss_stats.lu_decomps;
    s.accepted += ss_stats.accepted;
    s.rejected += ss_stats.rejected;
    outcome
}

impl super::Backend for CpuBackend {
    /// One host thread: each call already keeps every core busy.
    fn no_sibling(&self) -> &'static str {
        "each of its calls keeps every core busy"
    }
    fn info(&self) -> super::BackendInfo {
        super::BackendInfo {
            name: "cpu",
            device: "cpu (f64 reference)".into(),
            precision: super::Precision::F64,
        }
    }

    fn run_chunk(
        &mut self,
        arm: &super::ArmPlan,
        input: &super::ChunkInput<'_>,
        out: &mut super::ChunkOutput,
    ) -> Result<(), super::BackendError> {
        use rayon::prelude::*;
        let n = input.n;
        let m = &*self.model;
        let (n_states, n_out) = (m.n_states(), m.n_outputs());
        if input.params.len() != m.n_params() || input.params.iter().any(|p| p.len() < n) {
            return Err(super::BackendError::Failed(format!(
                "chunk has {} parameter columns for a model with {}",
                input.params.len(),
                m.n_params()
            )));
        }
        input
            .check_occasions(arm, m.n_params())
            .map_err(super::BackendError::Failed)?;
        let n_later = arm.occasions.len();
        out.reset(n, arm.metrics.len(), n_out, arm.sample_times.len());
        let method = arm.solver.method;
        let dim = n_states + crate::metrics::quadrature_outputs(&arm.metrics).len();
        let shared = arm_shared_stops(m, arm);
        let results: Vec<SubjectOutcome> = (0..n)
            .into_par_iter()
            .map_init(
                || {
                    (
                        Integrator::new(method, dim),
                        vec![0.0; input.params.len()],
                        vec![vec![0.0; input.params.len()]; n_later],
                    )
                },
                |(integ, p, later), i| {
                    for (k, col) in input.params.iter().enumerate() {
                        p[k] = col[i];
                    }
                    let scale = input.amount_scale.map_or(1.0, |s| s[i]);
                    for (l, occ) in later.iter_mut().zip(input.occasion_params) {
                        for (k, col) in occ.iter().enumerate() {
                            l[k] = col[i];
                        }
                    }
                    simulate_arm_subject_sharing(m, p, later, scale, arm, &shared, integ)
                },
            )
            .collect();
        let nt = arm.sample_times.len();
        for (i, r) in results.into_iter().enumerate() {
            out.status[i] = r.status as u8;
            for (k, v) in r.metrics.iter().enumerate() {
                out.metrics[k][i] = *v;
            }
            for k in 0..out.profiles.len() {
                out.profiles[k][i * nt..(i + 1) * nt]
                    .copy_from_slice(&r.profile[k * nt..(k + 1) * nt]);
            }
            let s = &mut out.stats;
            s.rhs_evals += r.stats.rhs_evals;
            s.jac_evals += r.stats.jac_evals;
            s.lu_decomps += r.stats.lu_decomps;
            s.accepted += r.stats.accepted;
            s.rejected += r.stats.rejected;
        }
        Ok(())
    }

    fn run_records(
        &mut self,
        programs: &[&crate::backend::records::Program],
        solver: &crate::solver::SolverOptions,
    ) -> Result<Vec<crate::backend::records::RecordsOutcome>, super::BackendError> {
        use rayon::prelude::*;
        Ok(programs
            .par_iter()
            .map(|p| crate::backend::records::run_program(&self.model, p, solver))
            .collect())
    }
}
