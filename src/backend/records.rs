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
//!   lagged doses cancelled (additional doses of earlier records still to come are kept).
//!   EVID 4 resets, then doses. A reset may take time back (the dataset refuses it while
//!   additional doses are still to come): the records after it run from its time.
//! - A dose of AMT into CMT: bioavailability F = `f(state)` scales the amount, the lag
//!   `alag(state)` delays it. RATE > 0 infuses AMT·F at RATE (F changes the duration); RATE −1
//!   takes the rate from `rate(state)` (duration AMT·F/rate), RATE −2 the duration from
//!   `dur(state)` (rate AMT·F/dur). The lag is evaluated with the parameters in force at the
//!   dose record (an additional dose keeps its record's lag); F, rate and duration with those
//!   in force when the dose enters, after its lag.
//! - Covariate columns named like model parameters set those parameters: by default (NONMEM's
//!   rule, next observation carried backward) a record's values hold over the interval that
//!   ends at it, from the previous record's time on, and for its own outputs and doses; with
//!   [`Carry::Forward`] (last observation carried forward) from the record on. A missing value
//!   (`.`) keeps the one in force. Doses, implicit additional ones included, take F, rate and
//!   duration in force when they enter: the next record's under NOCB. A value a column has
//!   set holds over the population's, re-evaluated when covariates the dataset gives change.
//! - SS = 1: reset, and the additional doses earlier records still had to give cancelled; then
//!   the state at the dose time is the steady state of the dose repeated every II forever
//!   before it (found by repeating the dosing interval until the state stops changing: any
//!   model, linear or not); infusions and lagged doses of those repeated doses that are still
//!   running or due after the record's time continue. SS = 2: the same steady state, computed
//!   from a zero state, is added to the current state (superposition: exact for linear
//!   models). A steady-state infusion (SS = 1, AMT = 0, RATE > 0, II = 0) sets the state
//!   to the steady state of that constant input; the record itself gives AMT = 0, so the input
//!   stops there (as in NONMEM).

use crate::backend::cpu::WithQuadrature;
use crate::dosing::nonmem::{Carry, Evid, Record, Subject};
use crate::dosing::StateDosing;
use crate::metrics::OutputEval;
use crate::model::{CompiledModel, Model};
use crate::solver::tableau_data::{
    SAME_TIME, SS_FLAT, SS_FRACTION, SS_INFUSION_DOUBLINGS, SS_INFUSION_SPAN_MAX, SS_JUMP,
    SS_JUMP_ABOVE, SS_JUMP_MAX, SS_JUMP_SLOW, SS_MAX_CYCLES, SS_NOISE, SS_NOISE_CYCLES, SS_NONE,
    SS_RATIO_MAX, SS_SETTLING, SS_STEADY, SS_TRANSLATING, SS_TRANSLATION, SS_ULPS,
};
use crate::solver::{Integrator, NoObserver, SolverOptions, Stats, Status};

/// One subject's simulated records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsOutcome {
    pub status: Status,
    pub stats: Stats,
    /// `outputs[k][j]`: output k after record j (NaN from a failure on).
    pub outputs: Vec<Vec<f64>>,
}

/// How the dataset maps onto a model: covariate columns that set parameters, and which
/// record's values hold between records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordBinding {
    /// Per dataset covariate column: the model parameter it sets, if any.
    pub param_of_covariate: Vec<Option<usize>>,
    /// NONMEM's next observation carried backward unless set otherwise.
    pub carry: Carry,
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
            carry: Carry::default(),
        }
    }

    /// The same binding with `carry` between records.
    pub fn carrying(self, carry: Carry) -> RecordBinding {
        RecordBinding { carry, ..self }
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

/// Checks a subject's records against the model (compartment numbers on every record, modelled
/// rates and durations on dose records); returns (line, column, message) of each record's
/// problem, in order.
pub fn check_subject(
    ir: &Model,
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
) -> Vec<(usize, usize, String)> {
    let n = model.n_states();
    let mut params = base.to_vec();
    let mut set = vec![None; params.len()];
    let mut problems = Vec::new();
    for r in &subject.records {
        set_params(&mut params, binding, r, &mut set);
        // A record that gives no dose reads no compartment (every output is reported), but a
        // number past the model's is a compartment it does not have: a dataset written for
        // another model, whose doses would go elsewhere too.
        if r.cmt > n as i64 {
            problems.push((
                r.line,
                r.cmt_col,
                format!(
                    "CMT {} but the model has {n} {}",
                    r.cmt,
                    if n == 1 {
                        "compartment (state)"
                    } else {
                        "compartments (states)"
                    }
                ),
            ));
            continue;
        }
        if !matches!(r.evid, Evid::Dose | Evid::ResetDose) {
            continue;
        }
        let d = model.bind(&params).state_dosing()[r.cmt as usize - 1];
        let state = &ir.states[r.cmt as usize - 1].name;
        if r.rate == -1.0 && d.rate.is_none() {
            problems.push((
                r.line,
                r.rate_col,
                format!(
                    "RATE = -1 needs a modelled rate: declare rate({state}) = ... in the model"
                ),
            ));
        }
        if r.rate == -2.0 && d.duration.is_none() {
            problems.push((
                r.line,
                r.rate_col,
                format!(
                    "RATE = -2 needs a modelled duration: declare dur({state}) = ... in the model"
                ),
            ));
        }
    }
    problems
}

/// Sets the parameters the dataset's columns give: `set[p]` keeps the last value a column
/// gave parameter p (a missing value keeps it), which holds over any other value of p (the
/// population's, re-evaluated with covariates the dataset gives).
fn set_params(params: &mut [f64], binding: &RecordBinding, r: &Record, set: &mut [Option<f64>]) {
    for (c, p) in binding.param_of_covariate.iter().enumerate() {
        if let Some(p) = *p {
            let v = r.covariates[c];
            if !v.is_nan() {
                set[p] = Some(v);
            }
        }
    }
    for (p, v) in set.iter().enumerate() {
        if let Some(v) = *v {
            params[p] = v;
        }
    }
}

/// A change of the inputs: a bolus into a state, or a change of its zero-order input rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    Bolus(f64),
    Rate(f64),
}

/// An input at a time (relative to a dosing interval's start inside a steady-state window).
pub type TimedInput = (f64, usize, Input);

/// A pending change of the inputs.
#[derive(Debug, Clone, Copy)]
struct Pending {
    time: f64,
    /// Rate decreases (infusion ends) first, then boluses and starts, each in order of creation.
    class: u8,
    seq: u64,
    state: usize,
    kind: Due,
}

/// What a pending change is: an input, or a lagged dose that is resolved when it enters.
#[derive(Debug, Clone, Copy)]
enum Due {
    Input(Input),
    /// A dose record's AMT and RATE, whose F, rate and duration are those in force when it
    /// enters after its lag (NONMEM: the bioavailability "in effect at the time the dose is
    /// actually introduced", the duration "at the dose event time (or lagged time, if the dose
    /// is lagged)").
    Lagged {
        amt: f64,
        rate: f64,
    },
}

/// The additional doses (ADDL) of one dose record still to come: the k-th, for k from `next`
/// to the record's ADDL, is due at the record's time + k·II. The queue of these streams is a
/// min-heap by the time of each one's next dose, then by record, so that the doses of a record
/// with ADDL 10⁶ are made one at a time, when due, not all at once and sorted again at every
/// record.
#[derive(Debug, Clone, Copy)]
struct Additional {
    time: f64,
    record: usize,
    next: u32,
    /// The lag in force at the record, which every one of its additional doses keeps.
    lag: f64,
}

/// What a queue holds in [`Earliest`]: an order of its items (every two distinct).
trait QueueOrder {
    fn order(&self, o: &Self) -> std::cmp::Ordering;
}

/// The order inputs are applied in: time, then class, then creation.
impl QueueOrder for Pending {
    fn order(&self, o: &Pending) -> std::cmp::Ordering {
        self.time
            .total_cmp(&o.time)
            .then(self.class.cmp(&o.class))
            .then(self.seq.cmp(&o.seq))
    }
}

/// The order additional doses are made in: time, then record.
impl QueueOrder for Additional {
    fn order(&self, o: &Additional) -> std::cmp::Ordering {
        self.time
            .total_cmp(&o.time)
            .then(self.record.cmp(&o.record))
    }
}

/// An item of a `BinaryHeap` that is a min-heap in its [`QueueOrder`]: the earliest on top.
#[derive(Debug, Clone, Copy)]
struct Earliest<T>(T);

impl<T: QueueOrder> PartialEq for Earliest<T> {
    fn eq(&self, o: &Self) -> bool {
        self.0.order(&o.0).is_eq()
    }
}

impl<T: QueueOrder> Eq for Earliest<T> {}

impl<T: QueueOrder> PartialOrd for Earliest<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl<T: QueueOrder> Ord for Earliest<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.order(&self.0)
    }
}

fn input_class(kind: Input) -> u8 {
    match kind {
        Input::Rate(r) if r < 0.0 => 0,
        _ => 1,
    }
}

/// Inputs in the order they are applied: by time, rate decreases first, then in order of
/// creation (a stable sort keeps it).
fn sort_inputs(inputs: &mut [TimedInput]) {
    inputs.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(input_class(a.2).cmp(&input_class(b.2)))
    });
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
        Dose::resolve_amount(r.cmt as usize - 1, r.amt, r.rate, d)
    }

    /// A dose of `amt` into `state` with a record's RATE `rate` (0: a bolus; > 0: that rate;
    /// −1, −2: the modelled rate or duration).
    fn resolve_amount(state: usize, amt: f64, rate: f64, d: &StateDosing) -> Result<Dose, Status> {
        let amount = amt * d.bioavailability;
        let (rate, duration) = if rate > 0.0 {
            (rate, amount / rate)
        } else if rate == -1.0 {
            let rate = d.rate.ok_or(Status::NonFinite)?;
            (rate, amount / rate)
        } else if rate == -2.0 {
            // A modelled duration must be > 0, as a dose line's is (a subject whose `dur` is
            // 0 is flagged, not given the dose as a bolus).
            let dur = d.duration.filter(|&x| x > 0.0).ok_or(Status::NonFinite)?;
            (amount / dur, dur)
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
    fn inputs(&self, t: f64) -> Vec<TimedInput> {
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

    /// The inputs of this dose repeated every `ii` forever: those inside one interval
    /// `[0, ii)` that starts at a dose (in the order they are applied), and those of the
    /// doses before a dose time that are due at or after it (relative times ≥ 0; an infusion
    /// already running counts from 0).
    fn steady_state_inputs(&self, ii: f64) -> (Vec<TimedInput>, Vec<TimedInput>) {
        let reach = ((self.lag + self.duration) / ii).ceil() as usize + 1;
        let mut window = Vec::new();
        let mut tail = Vec::new();
        for j in 0..=reach {
            // The dose j intervals before the window's start.
            let a = arrival(self.lag, ii, j, f64::EPSILON);
            if self.duration > 0.0 {
                let b = a + self.duration;
                if b > 0.0 && a < ii {
                    window.push((a.max(0.0), self.state, Input::Rate(self.rate)));
                    if b < ii {
                        window.push((b, self.state, Input::Rate(-self.rate)));
                    }
                }
            } else if (0.0..ii).contains(&a) {
                window.push((a, self.state, Input::Bolus(self.amount)));
            }
            // The dose j + 1 intervals before the dose time.
            let a = arrival(self.lag, ii, j + 1, f64::EPSILON);
            if self.duration > 0.0 {
                let b = a + self.duration;
                if b > 0.0 {
                    tail.push((a.max(0.0), self.state, Input::Rate(self.rate)));
                    tail.push((b, self.state, Input::Rate(-self.rate)));
                }
            } else if a >= 0.0 {
                tail.push((a, self.state, Input::Bolus(self.amount)));
            }
        }
        sort_inputs(&mut window);
        (window, tail)
    }
}

/// When the dose given `j` intervals `ii` before a time arrives, relative to that time, for a
/// lag `lag ≥ 0`: `r + (n − j)·ii` where `lag = n·ii + r` with the phase `r` in [0, ii), and a
/// phase within round-off (`SS_ULPS` units of `eps`) of `ii` taken as 0 of the next interval.
/// Written so (not `lag − j·ii`) because a lag that is a whole number of intervals not exact in
/// binary (9.6 h at 1.2 h) would otherwise put the doses j = 7 and 8 both inside one interval
/// [0, ii), one an ulp before its end and one an ulp after its start. The kernels'
/// `ss_arrival` (kernels/arm_driver.cu, shaders/arm_driver.wgsl) is this function.
pub(crate) fn arrival(lag: f64, ii: f64, j: usize, eps: f64) -> f64 {
    let mut n = (lag / ii).floor();
    let mut r = lag - n * ii;
    if r < 0.0 {
        r = 0.0;
    } else if ii - r <= SS_ULPS * eps * lag.max(ii) {
        n += 1.0;
        r = 0.0;
    }
    r + (n - j as f64) * ii
}

/// The stops of the model's jumps in time inside the span of length `len` that ends at `t`,
/// which a steady state's iterations repeat (the interval before an SS dose, a span of a
/// steady-state infusion): local times from 0 to `len`, standing for the model's times from
/// `t − len` on, in each of `precisions`
/// ([`crate::model::ModelPrograms::shifted_jump_stops`]). The iterations stop there as the
/// integration does elsewhere, on every backend, instead of crossing the jumps with the step
/// control (which took thousands of rejected steps, or failed with Rodas4 at rtol 1e-10, for
/// a light switched on and off every day).
fn stops_before(
    model: &CompiledModel,
    params: &[f64],
    t: f64,
    len: f64,
    precisions: &[super::Precision],
) -> Result<Vec<f64>, Status> {
    model
        .programs
        .shifted_jump_stops(
            params,
            t - len,
            len,
            crate::model::jumps::Which::All,
            precisions,
        )
        .map_err(|_| Status::MaxSteps)
}

/// One thing at a local time of a steady state's interval: an input of the window, or a stop
/// of the model's jumps in time.
pub(crate) enum Timed<'a> {
    Input(&'a TimedInput),
    Stop(f64),
}

/// A steady state's `window` (sorted) and its `stops` (sorted, [`stops_before`]) in the order
/// of their times, a stop after the inputs at its time: the order the CPU reference integrates
/// them in and the kernels' encoding lists them in.
pub(crate) fn inputs_and_stops<'a>(
    window: &'a [TimedInput],
    stops: &'a [f64],
) -> impl Iterator<Item = Timed<'a>> + 'a {
    let mut inputs = window.iter().peekable();
    let mut stops = stops.iter().copied().peekable();
    std::iter::from_fn(move || match (inputs.peek(), stops.peek()) {
        (Some(w), Some(&s)) if s < w.0 => stops.next().map(Timed::Stop),
        (Some(_), _) => inputs.next().map(Timed::Input),
        (None, _) => stops.next().map(Timed::Stop),
    })
}

/// The most stops of the model's jumps in time a record program lists for one steady-state
/// infusion, its spans and both precisions together ([`infusion_stops`]). The kernels cross
/// the jumps of the spans past them with the step control, as every backend did before
/// infusions stopped at them; only jumps that repeat (a daily light) and spans of many of their
/// periods come near it.
pub const SS_INFUSION_MAX_STOPS: usize = 512;

/// The span a steady-state infusion's iterations take after `span`: twice as long, up to
/// [`SS_INFUSION_SPAN_MAX`] (`Cpu::steady_infusion`, the kernels' op 8).
fn next_infusion_span(span: f64) -> f64 {
    (2.0 * span).min(SS_INFUSION_SPAN_MAX)
}

/// The spans of a steady-state infusion's iterations, in the order they may be taken: doubling
/// from 1 up to [`SS_INFUSION_SPAN_MAX`].
fn infusion_spans() -> impl Iterator<Item = f64> {
    std::iter::successors(Some(1.0), |&s: &f64| {
        (s < SS_INFUSION_SPAN_MAX).then(|| next_infusion_span(s))
    })
}

/// A record program's list of the stops of a steady-state infusion at `t`, for the kernels,
/// which cannot search the jumps themselves: (span, local stop) for every span of
/// [`infusion_spans`] in turn, as long as they total at most [`SS_INFUSION_MAX_STOPS`] (the
/// spans past the last listed have none: their jumps are crossed).
pub(crate) fn infusion_stops(
    model: &CompiledModel,
    params: &[f64],
    t: f64,
    precisions: &[super::Precision],
) -> Vec<(f64, f64)> {
    let mut v = Vec::new();
    if model.programs.time_jumps.is_empty() {
        return v;
    }
    for span in infusion_spans() {
        match stops_before(model, params, t, span, precisions) {
            Ok(s) if v.len() + s.len() <= SS_INFUSION_MAX_STOPS => {
                v.extend(s.into_iter().map(|x| (span, x)));
            }
            _ => break,
        }
    }
    v
}

/// What the record semantics ask of the integration: the CPU f64 reference integrates as it
/// goes; [`Recorder`] writes the same requests down as a [`Program`] for the GPU kernels.
trait Engine {
    /// The precisions whose stops of the model's jumps in time the integration stops at: f64
    /// alone on the CPU reference; both in a record program, which runs in either
    /// ([`crate::model::ModelPrograms::record_jump_stops`]).
    fn precisions(&self) -> &'static [super::Precision];
    /// The parameters in force from now on.
    fn set_params(&mut self, params: &[f64]);
    /// Every state back to its initial value (with the parameters in force), no inputs, the
    /// step size forgotten.
    fn reset(&mut self);
    /// The first time.
    fn start(&mut self, t: f64);
    /// Integrates from `t0` to `t1 > t0`.
    fn integrate(&mut self, t0: f64, t1: f64) -> Result<(), Status>;
    fn finite(&self) -> bool;
    fn apply(&mut self, state: usize, input: Input);
    /// The model states become (`mode` 1) or are increased by (`mode` 2) the steady state of
    /// the inputs `window` repeated every `ii`, found from the current model states (mode 1)
    /// or from zero (mode 2), at time `t` (the model's time in the iterations runs over the
    /// interval before it, from `t − ii` to `t`), stopping at the model's jumps in time in the
    /// interval ([`stops_before`], in the engine's precisions). Time, inputs and other
    /// states are left as they are.
    fn steady_state(
        &mut self,
        mode: u8,
        t: f64,
        ii: f64,
        window: &[TimedInput],
    ) -> Result<(), Status>;
    /// The model states become the steady state at time `t` of a constant input `rate` into
    /// `state` (the model's time in each span of the iterations ends at `t`), stopping at the
    /// model's jumps in time in each span: the CPU reference finds them span by span, in f64;
    /// a record program lists them, in both precisions ([`infusion_stops`]).
    fn steady_infusion(&mut self, state: usize, t: f64, rate: f64) -> Result<(), Status>;
    /// The outputs after record `j`, at time `t`.
    fn output(&mut self, j: usize, t: f64);
}

/// Times that differ by round-off only (an infusion end computed as start + AMT/RATE next to
/// a record time) are the same time.
fn same_time(t: f64, t1: f64) -> bool {
    t1 > t && t1 - t <= SAME_TIME * t1.abs().max(1.0)
}

fn integrate_to<E: Engine>(e: &mut E, t: &mut f64, t1: f64) -> Result<(), Status> {
    if same_time(*t, t1) {
        *t = t1;
    }
    if t1 > *t {
        e.integrate(*t, t1)?;
        *t = t1;
    }
    if e.finite() {
        Ok(())
    } else {
        Err(Status::NonFinite)
    }
}

/// The record semantics of one subject: parameters in force, time, pending inputs.
struct Sim<'m, E> {
    model: &'m CompiledModel,
    params: Vec<f64>,
    /// The last value the dataset's columns gave each parameter ([`set_params`]).
    set_by_data: Vec<Option<f64>>,
    dosing: Vec<StateDosing>,
    engine: E,
    t: f64,
    /// Inputs not yet applied, the next one on top.
    pending: std::collections::BinaryHeap<Earliest<Pending>>,
    seq: u64,
}

impl<'m, E: Engine> Sim<'m, E> {
    fn new(model: &'m CompiledModel, params: Vec<f64>, mut engine: E) -> Sim<'m, E> {
        engine.set_params(&params);
        engine.reset();
        Sim {
            model,
            set_by_data: vec![None; params.len()],
            dosing: model.bind(&params).state_dosing(),
            params,
            engine,
            t: f64::NEG_INFINITY,
            pending: std::collections::BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Every state back to its initial value; inputs and pending doses cancelled.
    fn reset(&mut self) {
        self.engine.reset();
        self.pending.clear();
    }

    /// Time back to `t`, before a reset: the engine starts again there.
    fn go_back(&mut self, t: f64) {
        self.t = t;
        self.engine.start(t);
    }

    fn push(&mut self, time: f64, state: usize, kind: Input) {
        self.push_due(time, state, input_class(kind), Due::Input(kind));
    }

    fn push_due(&mut self, time: f64, state: usize, class: u8, kind: Due) {
        self.seq += 1;
        self.pending.push(Earliest(Pending {
            time,
            class,
            seq: self.seq,
            state,
            kind,
        }));
    }

    /// The next pending input due at or before `t` (or at `t` but for round-off:
    /// [`same_time`]: an additional dose at TIME + k·II, a lagged dose or an infusion's end that
    /// falls on a record's time in exact arithmetic is due at the record, before it), removed
    /// from the queue.
    fn next_due(&mut self, t: f64) -> Option<Pending> {
        let due = self.pending.peek()?.0.time;
        if due <= t || same_time(t, due) {
            self.pending.pop().map(|Earliest(p)| p)
        } else {
            None
        }
    }

    /// Integrates to `t1`, applying every pending input due up to and including `t1`.
    fn advance(&mut self, t1: f64) -> Result<(), Status> {
        if self.t == f64::NEG_INFINITY {
            self.t = t1;
            self.engine.start(t1);
        }
        while let Some(p) = self.next_due(t1) {
            let to = p.time.min(t1).max(self.t);
            self.integrate_until(to)?;
            match p.kind {
                Due::Input(kind) => self.engine.apply(p.state, kind),
                Due::Lagged { amt, rate } => {
                    // Resolved with what is in force now; its start in its place in the
                    // order, its end (an infusion's) queued.
                    let dosing = StateDosing {
                        lag: 0.0,
                        ..self.dosing[p.state]
                    };
                    let dose = Dose::resolve_amount(p.state, amt, rate, &dosing)?;
                    for (at, state, kind) in dose.inputs(p.time) {
                        if at <= p.time {
                            self.engine.apply(state, kind);
                        } else {
                            self.push(at, state, kind);
                        }
                    }
                }
            }
        }
        self.integrate_until(t1)
    }

    /// Integrates to `t1`, stopping on the way where the model jumps in time with the
    /// parameters in force (`ModelPrograms::jump_stops`; those that move with the parameters
    /// too, since each subject's records are resolved on the host for every backend).
    fn integrate_until(&mut self, t1: f64) -> Result<(), Status> {
        let programs = &self.model.programs;
        if t1 > self.t && !programs.time_jumps.is_empty() {
            let stops = programs
                .record_jump_stops(&self.params, self.t, t1, self.engine.precisions())
                .map_err(|_| Status::MaxSteps)?;
            for s in stops {
                integrate_to(&mut self.engine, &mut self.t, s)?;
            }
        }
        integrate_to(&mut self.engine, &mut self.t, t1)
    }

    /// The lag of a dose of record `r` given now: the one its additional doses keep.
    fn lag(&self, r: &Record) -> f64 {
        self.dosing[r.cmt as usize - 1].lag
    }

    /// Gives a dose record's dose at `t` (SS handled), or an implicit additional dose, whose
    /// `lag` is the one in force at its record (NONMEM: "the value of ALAGn in effect at time
    /// T applies to the dose and to all subsequent additional doses").
    fn dose(&mut self, r: &Record, ss: u8, lag: Option<f64>) -> Result<(), Status> {
        let state = r.cmt as usize - 1;
        if ss > 0 && r.ii == 0.0 {
            // A steady-state infusion: AMT 0, RATE > 0.
            return self.engine.steady_infusion(state, self.t, r.rate);
        }
        let mut dosing = self.dosing[state];
        if let Some(lag) = lag {
            dosing.lag = lag;
        }
        if ss == 0 && dosing.lag.is_finite() && dosing.lag > 0.0 {
            // F, rate and duration when it enters, and only then checked.
            self.push_lagged(r, state, dosing.lag);
            return Ok(());
        }
        let dose = Dose::resolve(r, &dosing)?;
        if ss > 0 {
            let (window, tail) = dose.steady_state_inputs(r.ii);
            self.engine.steady_state(ss, self.t, r.ii, &window)?;
            for (at, state, kind) in tail {
                if at <= 0.0 {
                    if let Input::Rate(_) = kind {
                        self.engine.apply(state, kind);
                        continue;
                    }
                }
                self.push(self.t + at, state, kind);
            }
        }
        if dose.lag > 0.0 {
            // A steady state's own dose after its lag (as above).
            self.push_lagged(r, state, dose.lag);
        } else {
            for (at, state, kind) in dose.inputs(self.t) {
                self.push(at, state, kind);
            }
        }
        Ok(())
    }

    /// Record `r`'s dose into `state`, due `lag` after now: its F, rate and duration are
    /// those in force when it enters (a bolus and an infusion's start are in the same class of
    /// the order).
    fn push_lagged(&mut self, r: &Record, state: usize, lag: f64) {
        let due = Due::Lagged {
            amt: r.amt,
            rate: r.rate,
        };
        self.push_due(self.t + lag, state, input_class(Input::Bolus(0.0)), due);
    }

    fn params_from_record(
        &mut self,
        binding: &RecordBinding,
        r: &Record,
        update: &mut dyn FnMut(&Record, &mut [f64]),
    ) {
        let before = self.params.clone();
        update(r, &mut self.params);
        set_params(&mut self.params, binding, r, &mut self.set_by_data);
        if self.params != before {
            self.engine.set_params(&self.params);
            self.dosing = self.model.bind(&self.params).state_dosing();
        }
    }
}

/// Runs one subject's records on `engine`; the status of the first failure, if any.
fn run_records<E: Engine>(
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
    engine: E,
    update: &mut dyn FnMut(&Record, &mut [f64]),
) -> (E, Status) {
    let mut params = base.to_vec();
    let mut set_by_data = vec![None; params.len()];
    if let Some(r) = subject.records.first() {
        update(r, &mut params);
        set_params(&mut params, binding, r, &mut set_by_data);
    }
    let mut sim = Sim::new(model, params, engine);
    sim.set_by_data = set_by_data;
    // Implicit additional doses, processed before the dataset's records at the same time (of
    // several at one time, in the order of their records).
    let mut implicit: std::collections::BinaryHeap<Earliest<Additional>> =
        std::collections::BinaryHeap::new();
    let mut status = Status::Ok;
    'records: for (j, r) in subject.records.iter().enumerate() {
        // Next observation carried backward: this record's values hold from the time of the
        // record before it (its implicit doses included); its outputs were taken already.
        if binding.carry == Carry::Backward {
            sim.params_from_record(binding, r, update);
        }
        // Implicit doses due up to this record's time.
        while let Some(Earliest(a)) = implicit
            .peek()
            .copied()
            .filter(|a| a.0.time <= r.time || same_time(r.time, a.0.time))
        {
            implicit.pop();
            let src = &subject.records[a.record];
            if a.next < src.addl {
                let next = a.next + 1;
                implicit.push(Earliest(Additional {
                    time: src.time + f64::from(next) * src.ii,
                    next,
                    ..a
                }));
            }
            let step = sim
                .advance(a.time.min(r.time))
                .and_then(|_| sim.dose(src, 0, Some(a.lag)));
            if let Err(e) = step {
                status = e;
                break 'records;
            }
        }
        if r.time < sim.t {
            // A reset that takes time back (the dataset's check: no additional dose is still
            // to come); the reset itself follows.
            debug_assert!(matches!(r.evid, Evid::Reset | Evid::ResetDose) && implicit.is_empty());
            sim.go_back(r.time);
        } else if let Err(e) = sim.advance(r.time) {
            status = e;
            break;
        }
        if binding.carry == Carry::Forward {
            sim.params_from_record(binding, r, update);
        }
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
                // SS = 1 also cancels the additional doses earlier records still had to give
                // (NONMEM: "infusions in progress or pending additional doses are cancelled");
                // a reset (EVID 3 or 4) alone keeps them.
                if r.ss == 1 {
                    implicit.clear();
                }
                if r.addl > 0 {
                    implicit.push(Earliest(Additional {
                        time: r.time + r.ii,
                        record: j,
                        next: 1,
                        lag: sim.lag(r),
                    }));
                }
                sim.dose(r, r.ss, None)
            }
        };
        // Inputs due now (a bolus without lag) count for this record's outputs.
        if let Err(e) = step.and_then(|_| sim.advance(r.time)) {
            status = e;
            break;
        }
        sim.engine.output(j, r.time);
    }
    (sim.engine, status)
}

/// The CPU f64 reference: integrates as the semantics ask.
struct Cpu<'m> {
    model: &'m CompiledModel,
    /// The parameters in force.
    params: Vec<f64>,
    sys: WithQuadrature<crate::model::BoundModel<'m>>,
    integrator: Integrator,
    solver: SolverOptions,
    y: Vec<f64>,
    h: f64,
    stats: Stats,
    outputs: Vec<Vec<f64>>,
    out: Vec<f64>,
}

impl<'m> Cpu<'m> {
    fn new(model: &'m CompiledModel, solver: &SolverOptions, n_records: usize) -> Cpu<'m> {
        // Records read outputs at their times, never an area: no quadrature states.
        let dim = model.n_states();
        let params = vec![0.0; model.programs.n_params];
        Cpu {
            model,
            sys: WithQuadrature::new(model.bind(&params), Vec::new()),
            params,
            integrator: Integrator::new(solver.method, dim),
            solver: solver.clone(),
            y: vec![0.0; dim],
            h: 0.0,
            stats: Stats::default(),
            outputs: vec![vec![f64::NAN; n_records]; model.n_outputs()],
            out: vec![0.0; model.n_outputs()],
        }
    }

    /// Runs `f` on a scratch use of the state; the state and the inputs are restored
    /// afterwards.
    fn isolated<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let rates = self.sys.rates.clone();
        let y = self.y.clone();
        let r = f(self);
        self.sys.rates = rates;
        self.sys.t_shift = 0.0;
        self.y = y;
        r
    }

    /// Starts from model states `x` with no inputs.
    fn restart(&mut self, x: &[f64]) {
        self.sys.rates.fill(0.0);
        self.y.fill(0.0);
        self.y[..x.len()].copy_from_slice(x);
    }

    /// The largest change of the model states from the iterate `x` over an interval, in units
    /// of the tolerance at the states (and in units of the tolerance at `x`), and whether
    /// every state changed by round-off only.
    fn change_from(&self, x: &[f64]) -> (f64, f64, bool) {
        let (mut change, mut change_at_x) = (0.0f64, 0.0f64);
        let mut still = true;
        for (i, xi) in x.iter().enumerate() {
            let w = self.solver.atol + self.solver.rtol * self.y[i].abs();
            let wx = self.solver.atol + self.solver.rtol * xi.abs();
            let d = (self.y[i] - *xi).abs();
            change = change.max(d / w);
            change_at_x = change_at_x.max(d / wx);
            still &= d <= SS_ULPS * f64::EPSILON * self.y[i].abs();
        }
        (change, change_at_x, still)
    }

    /// The next iterate: the states, or with `g` > 0 the states extrapolated along their last
    /// change, y + (y − x)·g, where that changes no state's sign (whether it did).
    fn advance(&self, x: &mut [f64], g: f64) -> bool {
        let jumped = |i: usize, xi: f64| self.y[i] + (self.y[i] - xi) * g;
        let jump = g > 0.0
            && x.iter()
                .enumerate()
                .all(|(i, xi)| jumped(i, *xi) * self.y[i] >= 0.0);
        for (i, xi) in x.iter_mut().enumerate() {
            *xi = if jump { jumped(i, *xi) } else { self.y[i] };
        }
        jump
    }

    /// [`Cpu::change_from`], and `x` takes the states.
    fn take_change(&mut self, x: &mut [f64]) -> (f64, bool) {
        let (change, _, still) = self.change_from(x);
        self.advance(x, 0.0);
        (change, still)
    }
}

impl Engine for Cpu<'_> {
    fn precisions(&self) -> &'static [super::Precision] {
        &[super::Precision::F64]
    }
    fn set_params(&mut self, params: &[f64]) {
        self.sys.model = self.model.bind(params);
        self.params.clear();
        self.params.extend_from_slice(params);
    }

    fn reset(&mut self) {
        let n = self.model.n_states();
        self.y.fill(0.0);
        self.sys.model.initial_state(&mut self.y[..n]);
        self.sys.rates.fill(0.0);
        self.h = 0.0;
    }

    fn start(&mut self, _t: f64) {}

    fn integrate(&mut self, t0: f64, t1: f64) -> Result<(), Status> {
        match self.integrator.integrate(
            &mut self.sys,
            t0,
            t1,
            &mut self.y,
            &mut self.h,
            &self.solver,
            &mut NoObserver,
            &mut self.stats,
        ) {
            Status::Ok => Ok(()),
            st => Err(st),
        }
    }

    fn finite(&self) -> bool {
        self.y.iter().all(|v| v.is_finite())
    }

    fn apply(&mut self, state: usize, input: Input) {
        match input {
            Input::Bolus(a) => self.y[state] += a,
            Input::Rate(r) => {
                let x = &mut self.sys.rates[state];
                *x += r;
                if x.abs() <= super::Precision::F64.rate_cancel() * r.abs() {
                    *x = 0.0;
                }
            }
        }
    }

    fn steady_state(
        &mut self,
        mode: u8,
        t: f64,
        ii: f64,
        window: &[TimedInput],
    ) -> Result<(), Status> {
        let n = self.model.n_states();
        let mut x = if mode == 1 {
            self.y[..n].to_vec()
        } else {
            vec![0.0; n]
        };
        let stops = stops_before(self.model, &self.params, t, ii, self.precisions())?;
        self.isolated(|cpu| {
            // Each interval from 0 to ii is, to the model, the one from t − ii to t.
            cpu.sys.t_shift = t - ii;
            let mut iterations = SsIterations::new(false, n);
            for _ in 0..SS_MAX_CYCLES as usize {
                cpu.restart(&x);
                let mut t = 0.0;
                for item in inputs_and_stops(window, &stops) {
                    match item {
                        Timed::Input(&(at, state, input)) => {
                            let to = at.max(t);
                            integrate_to(cpu, &mut t, to)?;
                            cpu.apply(state, input);
                        }
                        Timed::Stop(s) => integrate_to(cpu, &mut t, s)?,
                    }
                }
                integrate_to(cpu, &mut t, ii)?;
                if iterations.next(cpu, &mut x) {
                    return Ok(());
                }
            }
            Err(Status::NoSteadyState)
        })?;
        for (i, xi) in x.iter().enumerate() {
            if mode == 1 {
                self.y[i] = *xi;
            } else {
                self.y[i] += *xi;
            }
        }
        Ok(())
    }

    fn steady_infusion(&mut self, state: usize, t: f64, rate: f64) -> Result<(), Status> {
        let n = self.model.n_states();
        let mut x = self.y[..n].to_vec();
        self.isolated(|cpu| {
            // The stops of the span last taken (rounds over one span follow each other).
            let mut stops: (f64, Vec<f64>) = (f64::NAN, Vec::new());
            let mut run = |cpu: &mut Self, x: &[f64], span: f64| {
                cpu.restart(x);
                cpu.sys.rates[state] = rate;
                // The span from 0 is, to the model, the one that ends at t; it stops where
                // the model jumps in time.
                cpu.sys.t_shift = t - span;
                if stops.0 != span {
                    let p = cpu.precisions();
                    stops = (span, stops_before(cpu.model, &cpu.params, t, span, p)?);
                }
                let mut at = 0.0;
                for &s in &stops.1 {
                    integrate_to(cpu, &mut at, s)?;
                }
                integrate_to(cpu, &mut at, span)
            };
            // Spans doubling from 1 until one changes the state by no more than the noise
            // level: the fast modes are settled.
            let (mut span, mut doublings) = (1.0, 0);
            loop {
                run(cpu, &x, span)?;
                let (change, still) = cpu.take_change(&mut x);
                if still {
                    return Ok(());
                }
                if change <= SS_NOISE {
                    break;
                }
                span = next_infusion_span(span);
                doublings += 1;
                if doublings >= SS_INFUSION_DOUBLINGS {
                    return Err(Status::NoSteadyState);
                }
            }
            // Then iterations over a fixed span (the last) as over a dosing interval: a
            // mode slower than the span shows in their ratio, and a steady one is extrapolated.
            let mut iterations = SsIterations::new(true, n);
            let mut cycle = 0;
            loop {
                run(cpu, &x, span)?;
                let done = iterations.next(cpu, &mut x);
                if iterations.drifting {
                    // A mode too slow to tell from noise over this span: a span twice as long.
                    if span >= SS_INFUSION_SPAN_MAX {
                        return Err(Status::NoSteadyState);
                    }
                    span = next_infusion_span(span);
                    iterations = SsIterations::new(true, n);
                    cycle = 0;
                } else if done {
                    return Ok(());
                } else {
                    cycle += 1;
                    if cycle >= SS_MAX_CYCLES as usize {
                        return Err(Status::NoSteadyState);
                    }
                }
            }
        })?;
        self.y[..n].copy_from_slice(&x);
        Ok(())
    }

    fn output(&mut self, j: usize, t: f64) {
        let n = self.model.n_states();
        self.sys.model.outputs(t, &self.y[..n], &mut self.out);
        for (k, v) in self.out.iter().enumerate() {
            self.outputs[k][j] = *v;
        }
    }
}

/// The iterations toward a steady state over a fixed interval (a dosing interval, or a span of a
/// constant infusion), as the kernels' `ss_converged` and `ss_next`: the previous change
/// ([`SS_NONE`]: none since the start or a jump), the previous ratio of changes (−1: none),
/// how many intervals in a row the change has been at the noise level ([`SS_NOISE`]) and the
/// ratio of the last jump.
struct SsIterations {
    prev_change: f64,
    prev_rho: f64,
    stalled: u32,
    /// The last two ratios were at least [`SS_FLAT`] and below [`SS_JUMP_MAX`]: a change that
    /// shrinks too slowly over this interval to tell a slow mode from noise, or to extrapolate
    /// reliably (the integration's own error biases ratios this close to 1).
    drifting: bool,
    /// The ratio of the last jump (0: none).
    rho_jump: f64,
    /// The interval can be lengthened (a steady-state infusion's span): a slow mode whose
    /// jump would amplify the integration's own error (about a tolerance unit per interval)
    /// by more than the change is not extrapolated but sets `drifting`.
    lengthens: bool,
    /// Each state's change over the previous interval (NaN: none since the start or a jump).
    prev_d: Vec<f64>,
    /// How many intervals in a row some state changed by what it changed over the one before
    /// ([`SS_TRANSLATION`]).
    translating: u32,
}

impl SsIterations {
    fn new(lengthens: bool, n: usize) -> SsIterations {
        SsIterations {
            prev_d: vec![f64::NAN; n],
            translating: 0,
            prev_change: SS_NONE,
            prev_rho: -1.0,
            stalled: 0,
            drifting: false,
            rho_jump: 0.0,
            lengthens,
        }
    }

    /// After an interval took the states from the iterate `x` to `cpu.y`: `x` takes the next
    /// iterate (extrapolated where the approach is slow and steady); whether the steady state
    /// is reached.
    fn next(&mut self, cpu: &Cpu, x: &mut [f64]) -> bool {
        let (change, change_at_x, still) = cpu.change_from(x);
        // A state that moves by the same amount every interval (by more than SS_FRACTION of its
        // tolerance, measured to better than SS_TRANSLATION of it) has no steady state.
        let mut translates = false;
        for (i, (p, xi)) in self.prev_d.iter_mut().zip(x.iter()).enumerate() {
            let y = cpu.y[i];
            let d = y - xi;
            let w = cpu.solver.atol + cpu.solver.rtol * y.abs();
            translates |= d.abs() >= SS_FRACTION * w
                && 2.0 * SS_ULPS * f64::EPSILON * y.abs() <= SS_TRANSLATION * d.abs()
                && (d - *p).abs() <= SS_TRANSLATION * d.abs();
            *p = d;
        }
        self.translating = if translates {
            (self.translating + 1).min(SS_TRANSLATING)
        } else {
            0
        };
        let growing = self.translating >= SS_TRANSLATING;
        // Geometric convergence: the change still to come is about change·ρ/(1−ρ). The ratio
        // compares two changes in the same units: the tolerance at `x`, the states the previous
        // change was measured at (the tolerance follows the states, and where they move by a
        // fraction comparable to 1 − ρ per interval, as from a start at zero, the ratio of
        // changes each in its own units is off by as much).
        let first = self.prev_change >= SS_NONE;
        let raw = change_at_x / self.prev_change;
        let rho = raw.min(SS_RATIO_MAX);
        // After a jump, what is left of the mode it extrapolated shrinks by its ratio: the
        // faster modes the jump stirred can hide it until they have decayed.
        let slow = rho.max(self.rho_jump);
        let remaining = if first {
            SS_NONE
        } else {
            change * slow / (1.0 - slow)
        };
        self.prev_change = change;
        self.stalled = if change <= SS_NOISE {
            self.stalled + 1
        } else {
            0
        };
        // The estimate is trusted from the third change since the start or a jump on (a jump
        // stirs the fast modes, whose decay the change after it shows).
        let converged = still || (self.prev_rho >= 0.0 && remaining <= SS_FRACTION);
        // At the integration's own noise floor the change stops shrinking (a slow approach
        // keeps shrinking it, by ratios below SS_FLAT), or wanders without settling.
        let flat = rho >= SS_FLAT && self.prev_rho >= SS_FLAT;
        // A slow mode: a ratio that holds steady (noise makes ratios close to 1 jitter by far
        // more than a tenth of 1 − ρ).
        let drho = (rho - self.prev_rho).abs();
        let steady = drho <= SS_STEADY * (1.0 - rho);
        let slow_mode = steady && (SS_JUMP..SS_JUMP_MAX).contains(&rho);
        // Or one still settling: not noise yet.
        let settling = drho <= SS_SETTLING * (1.0 - rho) && rho < SS_JUMP_MAX;
        // A jump lands off its fixed point by about change·Δρ/(1−ρ)² (Δρ: how much the last two
        // ratios differ); one that lands within the tolerance of the end is worth taking however
        // little is left (a plain iteration gains a factor ρ per interval).
        let accurate = change * drho <= SS_FRACTION * (1.0 - rho) * (1.0 - rho);
        let noise = flat && change <= SS_NOISE && !settling;
        // What is left of a mode the last jump extrapolated, 0.999 or slower, shrinks by too
        // little per interval to be measured again at the noise level, yet can be thousands of
        // tolerance units: where the changes hold steady (within 1 − SS_FLAT of the last),
        // they are that mode's, and it is extrapolated again with the jump's ratio.
        let left = change * self.rho_jump / (1.0 - self.rho_jump);
        let rejump =
            noise && self.rho_jump >= SS_FLAT && raw <= 2.0 - SS_FLAT && left > SS_JUMP_ABOVE;
        let done = converged || !growing && (noise && !rejump || self.stalled >= SS_NOISE_CYCLES);
        // Over a longer interval the mode shrinks by a smaller ratio, its change outgrows the
        // integration's error, and a jump amplifies that error less.
        let lengthen = self.lengthens && slow_mode && rho / (1.0 - rho) > change;
        self.drifting = !converged && (flat && rho < SS_JUMP_MAX || lengthen);
        self.prev_rho = if first { -1.0 } else { rho };
        let jump = !done
            && !lengthen
            && (rejump
                || slow_mode && (remaining > SS_JUMP_ABOVE || rho >= SS_JUMP_SLOW || accurate));
        let ratio = if rejump { self.rho_jump } else { rho };
        if cpu.advance(x, if jump { ratio / (1.0 - ratio) } else { 0.0 }) {
            self.prev_d.fill(f64::NAN);
            self.prev_change = SS_NONE;
            self.prev_rho = -1.0;
            self.rho_jump = ratio;
        }
        done
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
    let cpu = Cpu::new(model, solver, subject.records.len());
    let (cpu, status) = run_records(model, base, binding, subject, cpu, update);
    RecordsOutcome {
        status,
        stats: cpu.stats,
        outputs: cpu.outputs,
    }
}

/// One step of a subject's [`Program`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The first time.
    Start(f64),
    /// Integrate from the first time to the second (later) one.
    Advance(f64, f64),
    Apply(usize, Input),
    /// Every state back to its initial value, no inputs, step size forgotten.
    Reset,
    /// The parameters in force from now on: [`Program::params`]`[k]`.
    Params(usize),
    /// Record j's outputs, at time t.
    Output(usize, f64),
    /// See the engine's `steady_state`: mode, time, interval, inputs of one interval, and the
    /// stops of the model's jumps in time in the interval, local times in both precisions
    /// ([`stops_before`]).
    SteadyState(u8, f64, f64, Vec<TimedInput>, Vec<f64>),
    /// A constant input into a state to steady state: state, time, rate, and the stops of the
    /// model's jumps in time in its spans, (span, local time) ([`infusion_stops`]).
    SteadyInfusion(usize, f64, f64, Vec<(f64, f64)>),
    /// The subject fails here with this status.
    Fail(Status),
}

impl Op {
    /// The instructions the kernels' encoding of this op takes (src/backend/gpu.rs): a steady
    /// state's start (its time), the instruction itself, and its window's inputs and stops or
    /// its infusion's stops.
    pub fn kernel_instructions(&self) -> usize {
        match self {
            Op::SteadyState(_, _, _, w, stops) => 2 + w.len() + stops.len(),
            Op::SteadyInfusion(_, _, _, stops) => 2 + stops.len(),
            _ => 1,
        }
    }
}

/// One subject's records as the integration steps they ask for, with every event time,
/// amount, rate, lag and bioavailability resolved: what the GPU kernels run (their
/// interpreters do the integration and the steady-state iterations; the semantics are all
/// here, shared with the CPU reference).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    pub ops: Vec<Op>,
    /// The parameter sets the program switches to.
    pub params: Vec<Vec<f64>>,
    /// Records (output rows).
    pub n_records: usize,
}

/// Writes the semantics' requests down, with the stops of the model's jumps in time its
/// steady states need (for both precisions: a program runs in either).
struct Recorder<'m> {
    model: &'m CompiledModel,
    program: Program,
}

impl Recorder<'_> {
    /// The parameters in force.
    fn params(&self) -> &[f64] {
        self.program.params.last().map_or(&[], Vec::as_slice)
    }
}

impl Engine for Recorder<'_> {
    fn precisions(&self) -> &'static [super::Precision] {
        &[super::Precision::F64, super::Precision::F32]
    }
    fn set_params(&mut self, params: &[f64]) {
        let k = self.program.params.len();
        self.program.params.push(params.to_vec());
        self.program.ops.push(Op::Params(k));
    }
    fn reset(&mut self) {
        self.program.ops.push(Op::Reset);
    }
    fn start(&mut self, t: f64) {
        self.program.ops.push(Op::Start(t));
    }
    fn integrate(&mut self, t0: f64, t1: f64) -> Result<(), Status> {
        self.program.ops.push(Op::Advance(t0, t1));
        Ok(())
    }
    fn finite(&self) -> bool {
        true
    }
    fn apply(&mut self, state: usize, input: Input) {
        self.program.ops.push(Op::Apply(state, input));
    }
    fn steady_state(
        &mut self,
        mode: u8,
        t: f64,
        ii: f64,
        window: &[TimedInput],
    ) -> Result<(), Status> {
        let stops = stops_before(self.model, self.params(), t, ii, self.precisions())?;
        self.program
            .ops
            .push(Op::SteadyState(mode, t, ii, window.to_vec(), stops));
        Ok(())
    }
    fn steady_infusion(&mut self, state: usize, t: f64, rate: f64) -> Result<(), Status> {
        let stops = infusion_stops(self.model, self.params(), t, self.precisions());
        self.program
            .ops
            .push(Op::SteadyInfusion(state, t, rate, stops));
        Ok(())
    }
    fn output(&mut self, j: usize, t: f64) {
        self.program.ops.push(Op::Output(j, t));
    }
}

/// The program of one subject's records (see [`simulate_records_with`] for `update`).
pub fn record_program(
    model: &CompiledModel,
    base: &[f64],
    binding: &RecordBinding,
    subject: &Subject,
    update: &mut dyn FnMut(&Record, &mut [f64]),
) -> Program {
    let rec = Recorder {
        model,
        program: Program {
            n_records: subject.records.len(),
            ..Program::default()
        },
    };
    let (mut rec, status) = run_records(model, base, binding, subject, rec, update);
    if status != Status::Ok {
        rec.program.ops.push(Op::Fail(status));
    }
    rec.program
}

/// Runs a program on the CPU f64 reference (what the GPU kernels do, in f64 on the host): the
/// same outcome as simulating the records directly.
pub fn run_program(
    model: &CompiledModel,
    program: &Program,
    solver: &SolverOptions,
) -> RecordsOutcome {
    let mut cpu = Cpu::new(model, solver, program.n_records);
    let mut status = Status::Ok;
    for op in &program.ops {
        let r = match op {
            Op::Start(_) => Ok(()),
            Op::Advance(t0, t1) => integrate_to(&mut cpu, &mut t0.clone(), *t1),
            Op::Apply(s, input) => {
                cpu.apply(*s, *input);
                Ok(())
            }
            Op::Reset => {
                cpu.reset();
                Ok(())
            }
            Op::Params(k) => {
                cpu.set_params(&program.params[*k]);
                Ok(())
            }
            Op::Output(j, t) => {
                cpu.output(*j, *t);
                Ok(())
            }
            // The CPU reference finds the listed stops itself, in f64.
            Op::SteadyState(mode, t, ii, window, _) => cpu.steady_state(*mode, *t, *ii, window),
            Op::SteadyInfusion(s, t, rate, _) => cpu.steady_infusion(*s, *t, *rate),
            Op::Fail(st) => Err(*st),
        };
        if let Err(st) = r {
            status = st;
            break;
        }
    }
    RecordsOutcome {
        status,
        stats: cpu.stats,
        outputs: cpu.outputs,
    }
}

/// The steady state an arm starts from when a dose line is at steady state
/// ([`crate::dosing::DoseLine::steady_state`]): from the model's initial state (`params`
/// bound), the state at 0 of `dose` into `state` given at `at` (0 ≤ `at` < `ii`, the line's
/// first dose) and every `ii` before it forever, found by the same iterations as SS = 1 on a
/// record. Returns the model states at 0 (before any input due at 0), the inputs of the doses
/// before `at` still due at or after 0 (times ≥ 0; an infusion already running counts from 0)
/// and the work it took.
pub fn steady_state_start(
    model: &CompiledModel,
    params: &[f64],
    state: usize,
    dose: &crate::dosing::ResolvedDose,
    at: f64,
    ii: f64,
    solver: &SolverOptions,
) -> Result<(Vec<f64>, Vec<TimedInput>, Stats), Status> {
    // As given at `at` (an infusion's span as its start and duration round), as the kernels'
    // administration: the doses every `ii` before `at` are those of a dose at 0 whose lag
    // runs from 0 to the start, `at + lag`.
    let (start, dose) = dose.given_at(at);
    let d = Dose {
        state,
        amount: dose.amount,
        lag: start,
        rate: if dose.bolus { 0.0 } else { dose.rate },
        duration: if dose.bolus { 0.0 } else { dose.duration },
    };
    let (window, tail) = d.steady_state_inputs(ii);
    let mut cpu = Cpu::new(model, solver, 0);
    cpu.set_params(params);
    cpu.reset();
    // The doses before the arm's start at 0: the model's time runs from −ii to 0.
    cpu.steady_state(1, 0.0, ii, &window)?;
    Ok((cpu.y[..model.n_states()].to_vec(), tail, cpu.stats))
}
