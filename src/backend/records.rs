//! NONMEM record semantics on the CPU f64 reference: one subject's dataset records
//! ([`crate::dosing::nonmem`]) simulated event by event, with the model's outputs on every record.
//!
//! Semantics, as NONMEM:
//! - Records are processed in dataset order; additional doses (ADDL every II) are implicit dose
//!   records processed before the dataset's records at the same time. Lagged doses and infusion
//!   ends due at a record's time happen before that record.
//! - The outputs reported on a record are those after the record is processed (a reset record
//!   reports the reset state; a dose record reports the state after a bolus without lag).
//! - EVID 3 resets: every state back to its initial value, running infusions and pending
//!   lagged doses cancelled. EVID 4 resets, then doses.
//! - A dose of AMT into CMT: bioavailability F = `f(state)` scales the amount, the lag
//!   `alag(state)` delays it. RATE > 0 infuses AMT·F at RATE (F changes the duration); RATE −1
//!   takes the rate from `rate(state)` (duration AMT·F/rate), RATE −2 the duration from
//!   `dur(state)` (rate AMT·F/dur). Lag, F, rate and duration are evaluated with the parameters
//!   in force at the dose record.
//! - Covariate columns named like model parameters set those parameters from their record on
//!   (last observation carried forward); a missing value (`.`) keeps the previous one.
//! - SS = 1: reset, then the state at the dose time is the steady state of the dose repeated
//!   every II forever before it (found by repeating the dosing interval until the state stops
//!   changing: any model, linear or not); infusions and lagged doses of those earlier doses
//!   that are still running or due after the record's time continue. SS = 2: the same steady
//!   state, computed from a zero state, is added to the current state (superposition: exact for
//!   linear models). A steady-state infusion (SS = 1, AMT = 0, RATE > 0, II = 0) sets the state
//!   to the steady state of that constant input; the record itself gives AMT = 0, so the input
//!   stops there (as in NONMEM).

use crate::backend::cpu::WithQuadrature;
use crate::dosing::nonmem::{Evid, Record, Subject};
use crate::dosing::StateDosing;
use crate::metrics::OutputEval;
use crate::model::{CompiledModel, Model};
use crate::solver::{Integrator, NoObserver, SolverOptions, Stats, Status};

/// One subject's simulated records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsOutcome {
    pub status: Status,
    pub stats: Stats,
    /// `outputs[k][j]`: output k after record j (NaN from a failure on).
    pub outputs: Vec<Vec<f64>>,
}

/// Steady state: cycles are repeated until the estimated remaining change is below this
/// fraction of the solver's tolerance (atol + rtol·|x|).
const SS_FRACTION: f64 = 0.01;
/// A change of the state over a whole interval this small (in units of the solver's tolerance)
/// is the integration's own error: the steady state is reached.
const SS_NOISE: f64 = 10.0;
/// At most this many dosing intervals when looking for a steady state.
const SS_MAX_CYCLES: usize = 100_000;

/// How the dataset maps onto a model: covariate columns that set parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordBinding {
    /// Per dataset covariate column: the model parameter it sets, if any.
    pub param_of_covariate: Vec<Option<usize>>,
}

impl RecordBinding {
    /// Matches covariate columns to model parameters by name (case-insensitive).
    pub fn new(model: &Model, covariates: &[String]) -> RecordBinding {
        let names: Vec<String> = model
            .params
            .iter()
            .map(|p| p.name.to_ascii_lowercase())
            .collect();
        RecordBinding {
            param_of_covariate: covariates
                .iter()
                .map(|c| names.iter().position(|n| n == &c.to_ascii_lowercase()))
                .collect(),
        }
    }

    /// The names of the covariate columns that set parameters.
    pub fn bound<'a>(&self, covariates: &'a [String]) -> Vec<&'a str> {
        covariates
            .iter()
            .zip(&self.param_of_covariate)
            .filter(|(_, p)| p.is_some())
            .map(|(c, _)| c.as_str())
            .collect()
    }
}

/// Checks a subject's dose records against the model (compartment numbers, modelled rates and
/// durations declared); returns (line, message) of the first problem.
pub fn check_subject(
    ir: &Model,
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
) -> Result<(), (usize, String)> {
    let n = model.n_states();
    let mut params = base.to_vec();
    for r in &subject.records {
        set_params(&mut params, binding, r);
        if !matches!(r.evid, Evid::Dose | Evid::ResetDose) {
            continue;
        }
        if r.cmt as usize > n {
            return Err((
                r.line,
                format!("CMT {} but the model has {n} compartments (states)", r.cmt),
            ));
        }
        let d = model.bind(&params).state_dosing()[r.cmt as usize - 1];
        let state = &ir.states[r.cmt as usize - 1].name;
        if r.rate == -1.0 && d.rate.is_none() {
            return Err((
                r.line,
                format!(
                    "RATE = -1 needs a modelled rate: declare rate({state}) = ... in the model"
                ),
            ));
        }
        if r.rate == -2.0 && d.duration.is_none() {
            return Err((
                r.line,
                format!(
                    "RATE = -2 needs a modelled duration: declare dur({state}) = ... in the model"
                ),
            ));
        }
    }
    Ok(())
}

fn set_params(params: &mut [f64], binding: &RecordBinding, r: &Record) {
    for (c, p) in binding.param_of_covariate.iter().enumerate() {
        if let Some(p) = *p {
            let v = r.covariates[c];
            if !v.is_nan() {
                params[p] = v;
            }
        }
    }
}

/// A pending change of the inputs.
#[derive(Debug, Clone, Copy)]
struct Pending {
    time: f64,
    /// Rate decreases (infusion ends) first, then boluses and starts, each in order of creation.
    class: u8,
    seq: u64,
    state: usize,
    kind: Input,
}

#[derive(Debug, Clone, Copy)]
enum Input {
    Bolus(f64),
    Rate(f64),
}

/// A dose resolved against the model: into `state`, `amount` after F, after `lag`, as a bolus
/// (`duration` 0) or an infusion at `rate` for `duration`.
#[derive(Debug, Clone, Copy)]
struct Dose {
    state: usize,
    amount: f64,
    lag: f64,
    rate: f64,
    duration: f64,
}

impl Dose {
    fn resolve(r: &Record, d: &StateDosing) -> Result<Dose, Status> {
        let state = r.cmt as usize - 1;
        let amount = r.amt * d.bioavailability;
        let (rate, duration) = if r.rate > 0.0 {
            (r.rate, amount / r.rate)
        } else if r.rate == -1.0 {
            let rate = d.rate.ok_or(Status::NonFinite)?;
            (rate, amount / rate)
        } else if r.rate == -2.0 {
            let dur = d.duration.ok_or(Status::NonFinite)?;
            (if dur > 0.0 { amount / dur } else { 0.0 }, dur)
        } else {
            (0.0, 0.0)
        };
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !(ok(amount) && ok(d.lag) && ok(rate) && ok(duration)) {
            return Err(Status::NonFinite);
        }
        Ok(Dose {
            state,
            amount,
            lag: d.lag,
            rate,
            duration: if rate > 0.0 { duration } else { 0.0 },
        })
    }

    /// This dose's inputs when given at `t`.
    fn inputs(&self, t: f64) -> Vec<(f64, usize, Input)> {
        let start = t + self.lag;
        if self.duration > 0.0 {
            vec![
                (start, self.state, Input::Rate(self.rate)),
                (start + self.duration, self.state, Input::Rate(-self.rate)),
            ]
        } else {
            vec![(start, self.state, Input::Bolus(self.amount))]
        }
    }
}

/// The simulation state of one subject.
struct Sim<'m> {
    model: &'m CompiledModel,
    params: Vec<f64>,
    sys: WithQuadrature<crate::model::BoundModel<'m>>,
    integrator: Integrator,
    solver: SolverOptions,
    y: Vec<f64>,
    t: f64,
    h: f64,
    pending: Vec<Pending>,
    seq: u64,
    stats: Stats,
}

impl<'m> Sim<'m> {
    fn new(model: &'m CompiledModel, params: Vec<f64>, solver: &SolverOptions) -> Sim<'m> {
        let sys = WithQuadrature::new(model.bind(&params));
        let dim = model.n_states() + model.n_outputs();
        let mut s = Sim {
            model,
            params,
            sys,
            integrator: Integrator::new(solver.method, dim),
            solver: solver.clone(),
            y: vec![0.0; dim],
            t: f64::NEG_INFINITY,
            h: 0.0,
            pending: Vec::new(),
            seq: 0,
            stats: Stats::default(),
        };
        s.reset();
        s
    }

    fn rebind(&mut self) {
        self.sys.model = self.model.bind(&self.params);
    }

    /// Every state back to its initial value; inputs and pending doses cancelled.
    fn reset(&mut self) {
        let n = self.model.n_states();
        self.y.fill(0.0);
        self.sys.model.initial_state(&mut self.y[..n]);
        self.sys.rates.fill(0.0);
        self.pending.clear();
        self.h = 0.0;
    }

    fn push(&mut self, time: f64, state: usize, kind: Input) {
        let class = match kind {
            Input::Rate(r) if r < 0.0 => 0,
            _ => 1,
        };
        self.seq += 1;
        self.pending.push(Pending {
            time,
            class,
            seq: self.seq,
            state,
            kind,
        });
    }

    fn apply(&mut self, p: Pending) {
        match p.kind {
            Input::Bolus(a) => self.y[p.state] += a,
            Input::Rate(r) => {
                let x = &mut self.sys.rates[p.state];
                *x += r;
                if x.abs() <= 1e-12 * r.abs() {
                    *x = 0.0;
                }
            }
        }
    }

    /// The next pending input due at or before `t`, removed from the queue.
    fn next_due(&mut self, t: f64) -> Option<Pending> {
        let i = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.time <= t)
            .min_by(|(_, a), (_, b)| {
                a.time
                    .total_cmp(&b.time)
                    .then(a.class.cmp(&b.class))
                    .then(a.seq.cmp(&b.seq))
            })
            .map(|(i, _)| i)?;
        Some(self.pending.swap_remove(i))
    }

    /// Integrates to `t1`, applying every pending input due up to and including `t1`.
    fn advance(&mut self, t1: f64) -> Result<(), Status> {
        if self.t == f64::NEG_INFINITY {
            self.t = t1;
        }
        while let Some(p) = self.next_due(t1) {
            self.integrate_to(p.time.max(self.t))?;
            self.apply(p);
        }
        self.integrate_to(t1)
    }

    fn integrate_to(&mut self, t1: f64) -> Result<(), Status> {
        // Times that differ by round-off only (an infusion end computed as start + AMT/RATE
        // next to a record time) are the same time.
        if t1 > self.t && t1 - self.t <= 1e-13 * t1.abs().max(1.0) {
            self.t = t1;
        }
        if t1 > self.t {
            let st = self.integrator.integrate(
                &mut self.sys,
                self.t,
                t1,
                &mut self.y,
                &mut self.h,
                &self.solver,
                &mut NoObserver,
                &mut self.stats,
            );
            if st != Status::Ok {
                return Err(st);
            }
            self.t = t1;
        }
        if self.y.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Status::NonFinite)
        }
    }

    /// The steady state, at the time of a dose, of `dose` repeated every `ii` forever before
    /// it, from the state `x` (model states only), with the inputs of those earlier doses that
    /// are still due after the dose time (relative times ≥ 0).
    fn steady_state(
        &mut self,
        dose: &Dose,
        ii: f64,
        x: &mut [f64],
    ) -> Result<Vec<(f64, usize, Input)>, Status> {
        // Inputs within one interval [0, ii) that starts at an earlier dose: those of every
        // earlier dose j intervals before it (j ≥ 0) that fall inside the window.
        let reach = ((dose.lag + dose.duration) / ii).ceil() as usize + 1;
        let mut window = Vec::new();
        let mut tail = Vec::new();
        for j in 0..=reach {
            // The dose j intervals before the window's start.
            let t0 = -(j as f64) * ii;
            let a = t0 + dose.lag;
            if dose.duration > 0.0 {
                let b = a + dose.duration;
                if b > 0.0 && a < ii {
                    window.push((a.max(0.0), dose.state, Input::Rate(dose.rate)));
                    if b < ii {
                        window.push((b, dose.state, Input::Rate(-dose.rate)));
                    }
                }
            } else if (0.0..ii).contains(&a) {
                window.push((a, dose.state, Input::Bolus(dose.amount)));
            }
            // The dose j + 1 intervals before the dose time: its inputs due at or after it
            // (relative time 0), an infusion already running counting from 0.
            let a = a - ii;
            if dose.duration > 0.0 {
                let b = a + dose.duration;
                if b > 0.0 {
                    tail.push((a.max(0.0), dose.state, Input::Rate(dose.rate)));
                    tail.push((b, dose.state, Input::Rate(-dose.rate)));
                }
            } else if a >= 0.0 {
                tail.push((a, dose.state, Input::Bolus(dose.amount)));
            }
        }
        self.isolated(|sim| {
            let mut prev_change = f64::INFINITY;
            let mut stalled = 0;
            for cycle in 0..SS_MAX_CYCLES {
                sim.restart(x);
                for &(at, state, kind) in &window {
                    sim.push(at, state, kind);
                }
                // Window-end inputs are not part of this interval.
                sim.advance_exclusive(ii)?;
                let change = sim.take_change(x);
                // Geometric convergence: the change still to come is about change·ρ/(1−ρ).
                let rho = (change / prev_change).min(0.999_999);
                let remaining = if cycle == 0 {
                    f64::INFINITY
                } else {
                    change * rho / (1.0 - rho)
                };
                prev_change = change;
                // At the integration's own noise floor the change stops shrinking.
                stalled = if change <= SS_NOISE && rho >= 0.9 {
                    stalled + 1
                } else {
                    0
                };
                if change == 0.0 || (cycle >= 2 && remaining <= SS_FRACTION) || stalled >= 3 {
                    return Ok(tail.clone());
                }
            }
            Err(Status::MaxSteps)
        })
    }

    /// The steady state of a constant input `rate` into `state`, from `x`.
    fn steady_infusion(&mut self, state: usize, rate: f64, x: &mut [f64]) -> Result<(), Status> {
        self.isolated(|sim| {
            let mut span = 1.0;
            for _ in 0..80 {
                sim.restart(x);
                sim.sys.rates[state] = rate;
                sim.integrate_to(span)?;
                if sim.take_change(x) <= SS_NOISE {
                    return Ok(());
                }
                span = (2.0 * span).min(1e12);
            }
            Err(Status::MaxSteps)
        })
    }

    /// Runs `f` on a scratch use of the simulation; the state, time, inputs and pending
    /// inputs are restored afterwards.
    fn isolated<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let pending = std::mem::take(&mut self.pending);
        let rates = self.sys.rates.clone();
        let y = self.y.clone();
        let t = self.t;
        let r = f(self);
        self.pending = pending;
        self.sys.rates = rates;
        self.y = y;
        self.t = t;
        r
    }

    /// Starts from model states `x` at time 0 with no inputs.
    fn restart(&mut self, x: &[f64]) {
        self.sys.rates.fill(0.0);
        self.pending.clear();
        self.y.fill(0.0);
        self.y[..x.len()].copy_from_slice(x);
        self.t = 0.0;
    }

    /// The largest change of the model states from `x` (in units of the solver's tolerance);
    /// `x` takes the new states.
    fn take_change(&mut self, x: &mut [f64]) -> f64 {
        let mut change = 0.0f64;
        for (i, xi) in x.iter_mut().enumerate() {
            let w = self.solver.atol + self.solver.rtol * self.y[i].abs();
            change = change.max((self.y[i] - *xi).abs() / w);
            *xi = self.y[i];
        }
        change
    }

    /// Like [`Sim::advance`] but inputs due exactly at `t1` stay pending.
    fn advance_exclusive(&mut self, t1: f64) -> Result<(), Status> {
        loop {
            let next = self
                .pending
                .iter()
                .filter(|p| p.time < t1)
                .map(|p| p.time)
                .fold(f64::INFINITY, f64::min);
            if next == f64::INFINITY {
                break;
            }
            self.integrate_to(next.max(self.t))?;
            while let Some(p) = self.next_due(next) {
                self.apply(p);
            }
        }
        self.integrate_to(t1)
    }

    /// Gives a dose record's dose at `t` (SS handled), or an implicit additional dose.
    fn dose(&mut self, r: &Record, ss: u8) -> Result<(), Status> {
        let state = r.cmt as usize - 1;
        let d = self.sys.model.state_dosing()[state];
        let n = self.model.n_states();
        if ss > 0 && r.ii == 0.0 {
            // A steady-state infusion: AMT 0, RATE > 0.
            let mut x = self.y[..n].to_vec();
            self.steady_infusion(state, r.rate, &mut x)?;
            self.y[..n].copy_from_slice(&x);
            return Ok(());
        }
        let dose = Dose::resolve(r, &d)?;
        if ss > 0 {
            let mut x = if ss == 1 {
                self.y[..n].to_vec()
            } else {
                vec![0.0; n]
            };
            let tail = self.steady_state(&dose, r.ii, &mut x)?;
            for i in 0..n {
                if ss == 1 {
                    self.y[i] = x[i];
                } else {
                    self.y[i] += x[i];
                }
            }
            for (at, state, kind) in tail {
                if at <= 0.0 {
                    if let Input::Rate(rate) = kind {
                        self.sys.rates[state] += rate;
                        continue;
                    }
                }
                self.push(self.t + at, state, kind);
            }
        }
        for (at, state, kind) in dose.inputs(self.t) {
            self.push(at, state, kind);
        }
        Ok(())
    }
}

/// Simulates one subject's records: `base` holds the model parameters before any covariate
/// column sets them.
pub fn simulate_records(
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
    solver: &SolverOptions,
) -> RecordsOutcome {
    simulate_records_with(model, base, binding, subject, solver, &mut |_, _| {})
}

/// [`simulate_records`] with `update(record, params)` called on every record before the
/// binding's columns set parameters (e.g. a population's parameter model re-evaluated with
/// the record's time-varying covariates); parameters it changes take effect from that record.
pub fn simulate_records_with(
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
    solver: &SolverOptions,
    update: &mut dyn FnMut(&Record, &mut [f64]),
) -> RecordsOutcome {
    let n_out = model.n_outputs();
    let nr = subject.records.len();
    let mut outputs = vec![vec![f64::NAN; nr]; n_out];
    let mut params = base.to_vec();
    if let Some(r) = subject.records.first() {
        update(r, &mut params);
        set_params(&mut params, binding, r);
    }
    let mut sim = Sim::new(model, params, solver);
    // Implicit additional doses: (time, record index), processed before the dataset's records
    // at the same time.
    let mut implicit: Vec<(f64, usize)> = Vec::new();
    let mut next_implicit = 0;
    let mut status = Status::Ok;
    let mut out = vec![0.0; n_out];
    'records: for (j, r) in subject.records.iter().enumerate() {
        // Implicit doses due up to this record's time.
        implicit[next_implicit..].sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        while next_implicit < implicit.len() && implicit[next_implicit].0 <= r.time {
            let (t, k) = implicit[next_implicit];
            next_implicit += 1;
            let src = &subject.records[k];
            let step = sim.advance(t).and_then(|_| sim.dose(src, 0));
            if let Err(e) = step {
                status = e;
                break 'records;
            }
        }
        if let Err(e) = sim.advance(r.time) {
            status = e;
            break;
        }
        sim.params_from_record(binding, r, update);
        let step = match r.evid {
            Evid::Observation | Evid::Other => Ok(()),
            Evid::Reset => {
                sim.reset();
                Ok(())
            }
            Evid::Dose | Evid::ResetDose => {
                if r.evid == Evid::ResetDose || r.ss == 1 {
                    sim.reset();
                }
                for k in 1..=r.addl {
                    implicit.push((r.time + f64::from(k) * r.ii, j));
                }
                sim.dose(r, r.ss)
            }
        };
        // Inputs due now (a bolus without lag) count for this record's outputs.
        if let Err(e) = step.and_then(|_| sim.advance(r.time)) {
            status = e;
            break;
        }
        let n = model.n_states();
        sim.sys.model.outputs(r.time, &sim.y[..n], &mut out);
        for (k, v) in out.iter().enumerate() {
            outputs[k][j] = *v;
        }
    }
    RecordsOutcome {
        status,
        stats: sim.stats,
        outputs,
    }
}

impl Sim<'_> {
    fn params_from_record(
        &mut self,
        binding: &RecordBinding,
        r: &Record,
        update: &mut dyn FnMut(&Record, &mut [f64]),
    ) {
        let before = self.params.clone();
        update(r, &mut self.params);
        set_params(&mut self.params, binding, r);
        if self.params != before {
            self.rebind();
        }
    }
}
