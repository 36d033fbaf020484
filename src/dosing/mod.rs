//! Dosing regimens and the event schedule they produce.
//!
//! A [`Regimen`] is what a trial arm states (doses into named states, repeated every interval,
//! as boluses or zero-order infusions). For one subject it becomes a [`Schedule`]: a time-ordered
//! list of [`DoseEvent`]s with the subject's own amounts, lag times and bioavailability applied,
//! plus the nominal administration times (for troughs and "last dosing interval" windows).
//! Every event time is an integration stopping point.
//!
//! This module owns dosing semantics; it never integrates anything.

pub mod nonmem;

use std::fmt;

/// How a dose is administered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Administration {
    /// Instantaneous input of the amount into the state.
    Bolus,
    /// Zero-order input at a fixed rate (amount/time). Bioavailability changes the duration.
    InfusionRate(f64),
    /// Zero-order input over a fixed duration. Bioavailability changes the rate.
    InfusionDuration(f64),
    /// Zero-order input with rate and/or duration taken from the model's `rate(..)` / `dur(..)`
    /// declarations for the receiving state.
    Modelled,
    /// Not a dose: every state goes back to its initial value (at the arm's start), inputs
    /// stop, and whatever doses given before still had to give (a running infusion, a lagged
    /// dose) is cancelled (NONMEM's EVID 3). Doses at the reset's time come after it (EVID 4).
    /// `state` and `amount` are ignored.
    Reset,
}

/// One dosing line of a regimen: `count` doses of `amount` into `state`, the first at `start`,
/// then every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct DoseLine {
    pub state: usize,
    pub amount: f64,
    pub start: f64,
    pub interval: f64,
    pub count: u32,
    pub administration: Administration,
    /// The arm starts at steady state: this line's dose has been given every `interval`
    /// forever before its first dose at `start`, so the state at 0 is the steady state of
    /// those earlier doses (at `start − interval`, `start − 2·interval`, …; NONMEM's SS = 1
    /// where the line starts at 0), with their inputs that reach past 0 (a long infusion, a
    /// lag longer than the gap) still to come. The line starts within its first interval
    /// (0 ≤ `start` < `interval`), and a regimen has at most one such line.
    pub steady_state: bool,
    /// The amount is per unit of the subject's dose scale (the arm's `per` covariate, e.g.
    /// mg/kg): the scale multiplies it. A line without it gives `amount` as it is, whatever the
    /// subject's scale, so a fixed loading dose and per-kilogram maintenance doses share an arm.
    pub scaled: bool,
    /// In an arm with occasions, every dose of the line has the lag of the occasion the line
    /// starts in, as a dataset record's additional doses keep the lag in force at their record
    /// (NONMEM: "the value of ALAGn in effect at time T applies to the dose and to all
    /// subsequent additional doses"); their bioavailability and modelled rate or duration are
    /// still those of their own occasion. Without it (a spec's dose line), each dose takes all
    /// of them from the occasion its nominal time falls in.
    pub keeps_lag: bool,
}

/// A dose resolved for a subject: the amount after scaling and bioavailability, the lag, and
/// for an infusion its rate and duration (`duration` 0: a bolus, or an infusion of nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedDose {
    pub amount: f64,
    pub lag: f64,
    pub rate: f64,
    pub duration: f64,
    pub bolus: bool,
}

/// An infusion of `rate` for `duration` whose start and end, as rounded, are `span` apart: the
/// rate whose span delivers the amount `rate · duration` (late in a long trial, in f32, the span
/// of a short infusion can differ from its duration by a large fraction of it), or, where the
/// span rounds to 0, a bolus of that amount (`Err`). `Ok(rate)` where the span is the duration.
/// The arm kernels' `admin_event` computes the same.
pub fn rate_over_span(rate: f64, duration: f64, span: f64) -> Result<f64, f64> {
    if span == duration {
        Ok(rate)
    } else if span > 0.0 {
        Ok(rate * duration / span)
    } else {
        Err(rate * duration)
    }
}

impl ResolvedDose {
    /// The dose as given at `nominal`: starting at `nominal + lag`, an infusion ending at
    /// `start + duration` as that sum rounds, at the rate of [`rate_over_span`]. Returns the
    /// start and the dose as given.
    pub fn given_at(&self, nominal: f64) -> (f64, ResolvedDose) {
        let start = nominal + self.lag;
        let mut d = *self;
        if !self.bolus && self.duration > 0.0 {
            let span = (start + self.duration) - start;
            match rate_over_span(self.rate, self.duration, span) {
                Ok(rate) => {
                    d.rate = rate;
                    d.duration = span;
                }
                Err(amount) => {
                    d.amount = amount;
                    d.rate = 0.0;
                    d.duration = 0.0;
                    d.bolus = true;
                }
            }
        }
        (start, d)
    }
}

/// An arm's regimen: several dose lines (e.g. a loading dose then maintenance).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Regimen {
    pub lines: Vec<DoseLine>,
}

/// The most doses of one line (as a dataset's ADDL + 1 is bounded).
pub const MAX_COUNT: u32 = 10_000_000;

/// Per-subject dosing modifiers, one entry per model state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateDosing {
    /// Lag time added to every dose into this state.
    pub lag: f64,
    /// Bioavailable fraction of every dose into this state.
    pub bioavailability: f64,
    /// Modelled infusion rate (`rate(state) = ...`), if declared.
    pub rate: Option<f64>,
    /// Modelled infusion duration (`dur(state) = ...`), if declared.
    pub duration: Option<f64>,
}

impl Default for StateDosing {
    fn default() -> Self {
        StateDosing {
            lag: 0.0,
            bioavailability: 1.0,
            rate: None,
            duration: None,
        }
    }
}

/// What happens at an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventKind {
    /// Add `amount` to the state.
    Bolus { amount: f64 },
    /// Add `rate` to the state's input rate.
    InfusionStart { rate: f64 },
    /// Remove `rate` from the state's input rate.
    InfusionEnd { rate: f64 },
    /// Every state back to its initial value, no inputs.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DoseEvent {
    pub time: f64,
    pub state: usize,
    pub kind: EventKind,
}

/// A subject's dosing schedule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    /// Events sorted by time; events at equal times keep regimen order, and infusion ends come
    /// before starts at the same time so that rates never go transiently negative.
    pub events: Vec<DoseEvent>,
    /// Every administration's nominal time (before lag), in regimen order, with its line's
    /// interval when the line repeats or starts at steady state, and whether it does;
    /// [`Schedule::doses_until`] gives what metrics see.
    pub administrations: Vec<(f64, Option<f64>, bool)>,
}

/// The administrations that the metrics of a simulation ending at `end` see.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DoseTimes {
    /// Nominal administration times (before lag) up to the end, sorted, deduplicated.
    pub times: Vec<f64>,
    /// The dosing interval that follows the last of them (for "last interval" windows), if it
    /// belongs to a repeated line or a steady-state one.
    pub last_interval: Option<f64>,
    /// Whether the last of them is a steady-state dose given alone: the value before it is
    /// the steady state's trough.
    pub steady_state: bool,
}

impl DoseTimes {
    /// The administrations at or before `end`: a dose after the end is never given, so it
    /// neither makes the last interval nor the trough (a regimen longer than the simulation
    /// is cut at its end; one at the end itself still has its trough).
    fn until(
        administrations: impl Iterator<Item = (f64, Option<f64>, bool)>,
        end: f64,
    ) -> DoseTimes {
        let mut times = Vec::new();
        let mut last: Option<(f64, Option<f64>)> = None;
        let mut steady_state = false;
        // Of administrations at the same last time, the interval is a repeated line's (a
        // single dose has none), of several the shortest, whatever the order of the lines.
        let shorter = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            _ => false,
        };
        for (nominal, interval, ss) in administrations.filter(|(t, _, _)| *t <= end) {
            times.push(nominal);
            if last.is_none_or(|(t, i)| nominal > t || (nominal == t && shorter(interval, i))) {
                last = Some((nominal, interval));
            }
            steady_state |= ss;
        }
        times.sort_by(f64::total_cmp);
        times.dedup();
        DoseTimes {
            steady_state: steady_state && times.len() == 1,
            times,
            last_interval: last.and_then(|(_, i)| i),
        }
    }

    /// Time of the last administration, if any.
    pub fn last(&self) -> Option<f64> {
        self.times.last().copied()
    }

    /// The time of the trough (`ctrough`): the last administration, when there are several or
    /// it is a steady-state dose (whose trough is the steady state's).
    pub fn trough(&self) -> Option<f64> {
        (self.times.len() > 1 || self.steady_state)
            .then(|| self.last())
            .flatten()
    }
}

/// A regimen that cannot be turned into a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct DosingError(pub String);

impl fmt::Display for DosingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DosingError {}

/// The reset that cancels what a dose of nominal time `nominal` still has to give from then
/// on: the first of `resets` (sorted) after it. A dose line's doses
/// (`Regimen::schedule_occasions`) and the doses before a steady-state start (the CPU
/// reference's `simulate_arm_subject`) follow this one rule; the kernels apply it as their
/// `cut`.
pub fn cancelling_reset(resets: &[f64], nominal: f64) -> Option<f64> {
    resets
        .get(resets.partition_point(|r| *r <= nominal))
        .copied()
}

impl Regimen {
    /// Checks the parts of a regimen that do not depend on the subject.
    pub fn validate(&self, n_states: usize) -> Result<(), DosingError> {
        for (i, l) in self.lines.iter().enumerate() {
            let err = |m: &str| Err(DosingError(format!("dose line {}: {m}", i + 1)));
            if l.state >= n_states {
                return err("dose into a state the model does not have");
            }
            if !l.amount.is_finite() || l.amount < 0.0 {
                return err("amount must be a finite number ≥ 0");
            }
            if !l.start.is_finite() || l.start < 0.0 {
                return err("start time must be a finite number ≥ 0");
            }
            if l.count == 0 {
                return err("count must be at least 1");
            }
            if l.count > MAX_COUNT {
                return err(&format!("count must be at most {MAX_COUNT}"));
            }
            if l.count > 1 && !(l.interval.is_finite() && l.interval > 0.0) {
                return err("repeated doses need an interval > 0");
            }
            if l.steady_state {
                if l.administration == Administration::Reset {
                    return err("a reset cannot be at steady state");
                }
                if !(l.interval.is_finite() && l.interval > 0.0) {
                    return err("a steady-state line needs an interval > 0 (every = …)");
                }
                if l.start >= l.interval {
                    return err(
                        "a steady-state line starts within its first interval (start < every): \
                         the arm starts at 0 from the steady state of the doses given every \
                         `every` before `start`",
                    );
                }
                if self.lines[..i].iter().any(|o| o.steady_state) {
                    return err("only one dose line can be at steady state");
                }
            }
            match l.administration {
                Administration::InfusionRate(r) if !(r.is_finite() && r > 0.0) => {
                    return err("infusion rate must be > 0")
                }
                Administration::InfusionDuration(d) if !(d.is_finite() && d > 0.0) => {
                    return err("infusion duration must be > 0")
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The subject's schedule. `amount_scale` multiplies the amounts of the `scaled` lines (e.g.
    /// body weight for mg/kg dosing); `dosing` holds the subject's lag, bioavailability and modelled
    /// rate/duration per state. Fails for a non-finite or negative per-subject value, which the
    /// caller reports as a failed subject rather than aborting the batch.
    pub fn schedule(
        &self,
        amount_scale: f64,
        dosing: &[StateDosing],
    ) -> Result<Schedule, DosingError> {
        self.schedule_occasions(amount_scale, &[], &[dosing])
    }

    /// The schedule of a subject whose dosing parameters change between occasions:
    /// `starts[k]` is the start time of occasion k + 2 (the first occasion starts at 0) and
    /// `dosing[k]` holds occasion k + 1's lag, bioavailability, rate and duration per state. A
    /// dose takes the values of the occasion its nominal time falls in, but for the lag of a
    /// line that keeps it ([`DoseLine::keeps_lag`]): the one of the occasion the line starts
    /// in.
    pub fn schedule_occasions(
        &self,
        amount_scale: f64,
        starts: &[f64],
        dosing: &[&[StateDosing]],
    ) -> Result<Schedule, DosingError> {
        let mut events = Vec::new();
        let resets = self.reset_times();
        for line in &self.lines {
            for k in 0..line.count {
                let nominal = line.start + k as f64 * line.interval;
                if line.administration == Administration::Reset {
                    events.push(DoseEvent {
                        time: nominal,
                        state: 0,
                        kind: EventKind::Reset,
                    });
                    continue;
                }
                let from = events.len();
                let of_occasion_at = |t: f64| {
                    let occasion = starts.iter().take_while(|s| **s <= t).count();
                    dosing
                        .get(occasion.min(dosing.len().saturating_sub(1)))
                        .and_then(|d| d.get(line.state))
                        .copied()
                        .unwrap_or_default()
                };
                let mut d = of_occasion_at(nominal);
                if line.keeps_lag && k > 0 {
                    d.lag = of_occasion_at(line.start).lag;
                }
                dose_events(line, nominal, amount_scale, &d, &mut events)?;
                if let Some(reset) = cancelling_reset(&resets, nominal) {
                    let mut i = 0;
                    events.retain(|e| {
                        i += 1;
                        i <= from || e.time < reset
                    });
                }
            }
        }
        sort_events(&mut events);
        Ok(Schedule {
            events,
            administrations: self.administrations().collect(),
        })
    }

    /// The regimen as a simulation ending at `end` gives it: each line's doses after the end
    /// (never given, so they change nothing) dropped, its first one kept whatever its time.
    pub fn until(&self, end: f64) -> Regimen {
        let lines = self
            .lines
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if l.count > 1 {
                    // The last dose at or before the end: near the quotient, then settled by
                    // the schedule's own test (start + k · interval ≤ end).
                    let last = ((end - l.start) / l.interval).floor();
                    let near = if last.is_finite() && last >= 0.0 {
                        last.min(f64::from(l.count - 1)) as u32
                    } else {
                        0
                    };
                    let mut k = near.saturating_sub(1);
                    while k + 1 < l.count && l.start + (k + 1) as f64 * l.interval <= end {
                        k += 1;
                    }
                    while k > 0 && l.start + k as f64 * l.interval > end {
                        k -= 1;
                    }
                    l.count = k + 1;
                }
                l
            })
            .collect();
        Regimen { lines }
    }

    /// How many of the regimen's administrations (resets aside) come after `end`, of how
    /// many: `(after, all)`.
    pub fn doses_after(&self, end: f64) -> (u64, u64) {
        let cut = self.until(end);
        let given = |r: &Regimen| {
            r.lines
                .iter()
                .filter(|l| l.administration != Administration::Reset)
                .map(|l| u64::from(l.count))
                .sum::<u64>()
        };
        let (all, kept) = (given(self), given(&cut));
        // A line wholly after the end keeps its first dose in `until`.
        let first_after = cut
            .lines
            .iter()
            .filter(|l| l.administration != Administration::Reset && l.start > end)
            .count() as u64;
        (all - kept + first_after, all)
    }

    /// The times of the regimen's resets, sorted.
    pub fn reset_times(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .lines
            .iter()
            .filter(|l| l.administration == Administration::Reset)
            .flat_map(|l| (0..l.count).map(move |k| l.start + k as f64 * l.interval))
            .collect();
        t.sort_by(f64::total_cmp);
        t
    }

    /// Every administration's nominal time (lag not applied), in regimen order, with its
    /// line's interval when the line repeats or starts at steady state (a steady-state dose
    /// given alone has its interval: the last interval is the dosing interval at steady
    /// state), and whether the line starts at steady state.
    pub fn administrations(&self) -> impl Iterator<Item = (f64, Option<f64>, bool)> + '_ {
        self.lines
            .iter()
            .filter(|l| l.administration != Administration::Reset)
            .flat_map(|line| {
                let interval = (line.count > 1 || line.steady_state).then_some(line.interval);
                (0..line.count).map(move |k| {
                    (
                        line.start + k as f64 * line.interval,
                        interval,
                        line.steady_state,
                    )
                })
            })
    }

    /// The administrations that the metrics of a simulation ending at `end` see. The same for
    /// every subject of an arm.
    pub fn doses_until(&self, end: f64) -> DoseTimes {
        DoseTimes::until(self.administrations(), end)
    }
}

impl Schedule {
    /// The administrations that the metrics of a simulation ending at `end` see.
    pub fn doses_until(&self, end: f64) -> DoseTimes {
        DoseTimes::until(self.administrations.iter().copied(), end)
    }

    /// Event times (the integration stopping points contributed by dosing), sorted, unique.
    pub fn stop_times(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.events.iter().map(|e| e.time).collect();
        t.dedup();
        t
    }
}

/// The events of one administration of `line` at nominal time `nominal`, with the subject's
/// dosing values `d` for the line's state.
/// Events sorted by time, stably; at equal times resets first, then infusion ends.
pub fn sort_events(events: &mut [DoseEvent]) {
    let rank = |e: &DoseEvent| match e.kind {
        EventKind::Reset => 0u8,
        EventKind::InfusionEnd { .. } => 1,
        _ => 2,
    };
    events.sort_by(|a, b| a.time.total_cmp(&b.time).then(rank(a).cmp(&rank(b))));
}

impl DoseLine {
    /// `count` boluses of `amount` into `state`, one every `interval` from time 0, scaled by
    /// the subject's dose scale (1 where the arm has none).
    pub fn boluses(state: usize, amount: f64, interval: f64, count: u32) -> DoseLine {
        DoseLine {
            state,
            amount,
            start: 0.0,
            interval,
            count,
            administration: Administration::Bolus,
            steady_state: false,
            scaled: true,
            keeps_lag: false,
        }
    }

    /// A reset at `at` (NONMEM's EVID 3): every state back to its initial value, what earlier
    /// doses still had to give cancelled.
    pub fn reset(at: f64) -> DoseLine {
        DoseLine {
            state: 0,
            amount: 0.0,
            start: at,
            interval: 0.0,
            count: 1,
            administration: Administration::Reset,
            steady_state: false,
            scaled: false,
            keeps_lag: false,
        }
    }

    /// This line's dose for a subject: `amount_scale` multiplies the amount of a `scaled` line,
    /// `d` holds the subject's lag, bioavailability and modelled rate/duration for the
    /// receiving state.
    pub fn resolve(&self, amount_scale: f64, d: &StateDosing) -> Result<ResolvedDose, DosingError> {
        if !(d.lag.is_finite() && d.lag >= 0.0) {
            return Err(DosingError(format!(
                "lag time {} is not a finite number ≥ 0",
                d.lag
            )));
        }
        let f = d.bioavailability;
        if !(f.is_finite() && f >= 0.0) {
            return Err(DosingError(format!(
                "bioavailability {f} is not a finite number ≥ 0"
            )));
        }
        let amount = self.amount * if self.scaled { amount_scale } else { 1.0 } * f;
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(DosingError(format!(
                "dose amount {amount} is not a finite number ≥ 0"
            )));
        }
        let infusion = |rate: f64, duration: f64| -> Result<ResolvedDose, DosingError> {
            // An amount of 0 (a placebo, a bioavailability of 0) over a duration: a rate of 0,
            // nothing given, as a bolus of 0 gives nothing.
            let nothing = rate == 0.0 && amount == 0.0;
            if !(rate.is_finite()
                && (rate > 0.0 || nothing)
                && duration.is_finite()
                && duration >= 0.0)
            {
                return Err(DosingError(format!(
                    "infusion with rate {rate} and duration {duration} is not valid"
                )));
            }
            Ok(ResolvedDose {
                amount,
                lag: d.lag,
                rate,
                duration: if nothing { 0.0 } else { duration },
                bolus: false,
            })
        };
        match self.administration {
            Administration::Bolus => Ok(ResolvedDose {
                amount,
                lag: d.lag,
                rate: 0.0,
                duration: 0.0,
                bolus: true,
            }),
            Administration::InfusionRate(rate) => infusion(rate, amount / rate),
            Administration::InfusionDuration(dur) => infusion(amount / dur, dur),
            Administration::Reset => Err(DosingError("a reset is not a dose".into())),
            Administration::Modelled => match (d.rate, d.duration) {
                (Some(rate), _) => infusion(rate, amount / rate),
                (None, Some(dur)) if dur > 0.0 => infusion(amount / dur, dur),
                _ => Err(DosingError(
                    "a modelled infusion needs rate(..) or dur(..) > 0 declared in the model"
                        .into(),
                )),
            },
        }
    }
}

fn dose_events(
    line: &DoseLine,
    nominal: f64,
    amount_scale: f64,
    d: &StateDosing,
    events: &mut Vec<DoseEvent>,
) -> Result<(), DosingError> {
    let (t, r) = line.resolve(amount_scale, d)?.given_at(nominal);
    if r.bolus {
        events.push(DoseEvent {
            time: t,
            state: line.state,
            kind: EventKind::Bolus { amount: r.amount },
        });
    } else if r.duration > 0.0 {
        events.push(DoseEvent {
            time: t,
            state: line.state,
            kind: EventKind::InfusionStart { rate: r.rate },
        });
        events.push(DoseEvent {
            time: t + r.duration,
            state: line.state,
            kind: EventKind::InfusionEnd { rate: r.rate },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(admin: Administration) -> DoseLine {
        DoseLine {
            steady_state: false,
            scaled: true,
            keeps_lag: false,
            state: 0,
            amount: 100.0,
            start: 0.0,
            interval: 12.0,
            count: 3,
            administration: admin,
        }
    }

    #[test]
    fn doses_after_the_end_are_dropped_and_a_huge_count_is_refused() {
        let line = |start, interval, count| DoseLine {
            start,
            ..DoseLine::boluses(0, 1.0, interval, count)
        };
        let r = Regimen {
            lines: vec![
                line(0.0, 12.0, 14),
                line(0.0, 0.1, 4_000_000_000),
                line(30.0, 12.0, 5),
                line(0.0, 12.0, 3),
                DoseLine::reset(50.0),
            ],
        };
        let cut = r.until(24.0);
        let counts: Vec<u32> = cut.lines.iter().map(|l| l.count).collect();
        // 0, 12, 24 | 0.1 steps to 24 (241 doses, 0.1 · 240 rounds to 24 exactly) | after the
        // end: its first dose kept | all three given | a reset after the end, kept.
        assert_eq!(counts, [3, 241, 1, 3, 1]);
        for (a, b) in r.lines.iter().zip(&cut.lines) {
            let given = |l: &DoseLine| {
                (0..l.count.min(1000))
                    .map(|k| l.start + k as f64 * l.interval)
                    .filter(|t| *t <= 24.0)
                    .count()
            };
            assert_eq!(given(a), given(b));
        }
        // 11 + (4e9 − 241) + 5 doses after 24 of 14 + 4e9 + 5 + 3 (the reset is no dose).
        assert_eq!(
            r.doses_after(24.0),
            (11 + 4_000_000_000 - 241 + 5, 14 + 4_000_000_000 + 5 + 3)
        );
        let mut big = r.clone();
        big.lines.truncate(1);
        big.lines[0].count = MAX_COUNT + 1;
        let e = big.validate(1).unwrap_err();
        assert!(e.0.contains("at most 10000000"), "{}", e.0);
    }

    #[test]
    fn repeated_bolus_with_lag_and_f() {
        let r = Regimen {
            lines: vec![line(Administration::Bolus)],
        };
        let d = [StateDosing {
            lag: 0.5,
            bioavailability: 0.8,
            ..Default::default()
        }];
        let s = r.schedule(2.0, &d).unwrap();
        let times: Vec<f64> = s.events.iter().map(|e| e.time).collect();
        assert_eq!(times, vec![0.5, 12.5, 24.5]);
        assert_eq!(s.events[0].kind, EventKind::Bolus { amount: 160.0 });
        let d = s.doses_until(24.0);
        assert_eq!(d.times, vec![0.0, 12.0, 24.0]);
        assert_eq!((d.last_interval, d.trough()), (Some(12.0), Some(24.0)));
        // Doses after the end are not given: the last is the one before it.
        let d = s.doses_until(20.0);
        assert_eq!(d.times, vec![0.0, 12.0]);
        assert_eq!((d.last_interval, d.trough()), (Some(12.0), Some(12.0)));
        let d = s.doses_until(11.0);
        assert_eq!(
            (d.last(), d.last_interval, d.trough()),
            (Some(0.0), Some(12.0), None)
        );
    }

    /// A single dose at the time of a repeated line's last one, a line every 12 h and one
    /// every 8 h ending together: the last interval is the repeated line's, the shortest,
    /// whatever the order the lines are written in.
    #[test]
    fn the_last_interval_does_not_depend_on_the_order_of_the_lines() {
        let q12 = DoseLine {
            count: 4,
            ..line(Administration::Bolus)
        };
        let extra = DoseLine {
            start: 36.0,
            count: 1,
            ..line(Administration::Bolus)
        };
        let q8 = DoseLine {
            start: 12.0,
            interval: 8.0,
            count: 4,
            ..line(Administration::Bolus)
        };
        for (lines, want) in [
            (vec![q12.clone(), extra.clone()], Some(12.0)),
            (vec![extra.clone(), q12.clone()], Some(12.0)),
            (vec![q12.clone(), q8.clone()], Some(8.0)),
            (vec![q8.clone(), q12.clone()], Some(8.0)),
            (vec![extra.clone()], None),
        ] {
            let d = Regimen { lines }.doses_until(60.0);
            assert_eq!((d.last(), d.last_interval), (Some(36.0), want));
        }
    }

    #[test]
    fn fixed_rate_infusion_duration_scales_with_f() {
        let r = Regimen {
            lines: vec![line(Administration::InfusionRate(50.0))],
        };
        let d = [StateDosing {
            bioavailability: 0.5,
            ..Default::default()
        }];
        let s = r.schedule(1.0, &d).unwrap();
        // 100 mg × F 0.5 at 50 mg/h lasts 1 h.
        assert_eq!(
            s.events[0],
            DoseEvent {
                time: 0.0,
                state: 0,
                kind: EventKind::InfusionStart { rate: 50.0 }
            }
        );
        assert_eq!(
            s.events[1],
            DoseEvent {
                time: 1.0,
                state: 0,
                kind: EventKind::InfusionEnd { rate: 50.0 }
            }
        );
    }

    #[test]
    fn back_to_back_infusions_end_before_they_start() {
        let mut l = line(Administration::InfusionDuration(12.0));
        l.count = 2;
        let s = Regimen { lines: vec![l] }
            .schedule(1.0, &[StateDosing::default()])
            .unwrap();
        let kinds: Vec<_> = s.events.iter().map(|e| (e.time, e.kind)).collect();
        assert_eq!(kinds[1].0, 12.0);
        assert!(matches!(kinds[1].1, EventKind::InfusionEnd { .. }));
        assert!(matches!(kinds[2].1, EventKind::InfusionStart { .. }));
    }

    #[test]
    fn bad_subject_values_are_errors_not_panics() {
        let r = Regimen {
            lines: vec![line(Administration::Bolus)],
        };
        let d = [StateDosing {
            lag: f64::NAN,
            ..Default::default()
        }];
        assert!(r.schedule(1.0, &d).is_err());
        assert!(r
            .schedule(f64::INFINITY, &[StateDosing::default()])
            .is_err());
        let m = Regimen {
            lines: vec![line(Administration::Modelled)],
        };
        assert!(m.schedule(1.0, &[StateDosing::default()]).is_err());
    }

    #[test]
    fn validate_rejects_bad_lines() {
        let mut l = line(Administration::Bolus);
        l.interval = 0.0;
        assert!(Regimen {
            lines: vec![l.clone()]
        }
        .validate(1)
        .is_err());
        l.interval = 12.0;
        assert!(Regimen {
            lines: vec![l.clone()]
        }
        .validate(0)
        .is_err());
        assert!(Regimen { lines: vec![l] }.validate(1).is_ok());
    }
}
