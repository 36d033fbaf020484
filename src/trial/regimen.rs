//! Dose lines of a spec resolved against a model.

use super::spec::DoseSpec;
use crate::dosing::{Administration, DoseLine};
use crate::model::Model;

/// Why a dosing line of the spec cannot be given, and where: at its `into` (a state the model
/// lacks), or at the whole line (`None`).
#[derive(Debug)]
pub struct DoseError {
    pub message: String,
    pub at: Option<std::ops::Range<usize>>,
}

impl std::fmt::Display for DoseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl DoseError {
    /// Where to report it: its own place, else `line` (the dosing line's).
    pub fn span(&self, line: crate::diag::Span) -> crate::diag::Span {
        self.at
            .as_ref()
            .map_or(line, |r| crate::diag::Span::new(r.start, r.end))
    }
}

impl From<String> for DoseError {
    fn from(message: String) -> Self {
        DoseError { message, at: None }
    }
}

impl From<&str> for DoseError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// A dosing line of the spec, resolved against the model's states.
pub fn dose_line(model: &Model, d: &DoseSpec) -> Result<DoseLine, DoseError> {
    let state = model.state_index(d.into.get_ref()).ok_or_else(|| {
        let names: Vec<&str> = model.states.iter().map(|s| s.name.as_str()).collect();
        DoseError {
            message: format!(
                "dose into '{}', which is not a state of the model (states: {}){}",
                d.into,
                names.join(", "),
                crate::diag::did_you_mean(d.into.get_ref(), names.iter().copied())
            ),
            at: Some(d.into.span()),
        }
    })?;
    let administration = match (d.rate, d.duration, d.modelled) {
        (None, None, false) => Administration::Bolus,
        (Some(r), None, false) => Administration::InfusionRate(r),
        (None, Some(t), false) => Administration::InfusionDuration(t),
        (None, None, true) => Administration::Modelled,
        _ => return Err("give at most one of rate, duration and modelled = true".into()),
    };
    if administration == Administration::Modelled {
        let decl = &model.dosing[state];
        if decl.rate.is_some() && decl.duration.is_some() {
            return Err(format!(
                "the model declares both rate({0}) and dur({0}): a dataset's RATE (−1 or −2) \
                 chooses between them, but a modelled dose here cannot; declare only one",
                d.into
            )
            .into());
        }
        if decl.rate.is_none() && decl.duration.is_none() {
            return Err(format!(
                "modelled = true: the model declares neither rate({0}) nor dur({0}), which a \
                 modelled infusion takes its rate or duration from",
                d.into
            )
            .into());
        }
    }
    if let Some(e) = d.every.filter(|e| !(e.is_finite() && *e > 0.0)) {
        return Err(format!("every = {e}: the dosing interval must be a number > 0").into());
    }
    if d.count > 1 && d.every.is_none() {
        return Err(format!("{} doses need an interval: add every = …", d.count).into());
    }
    let line = DoseLine {
        steady_state: d.steady_state,
        state,
        amount: d.amount,
        start: d.start,
        interval: d.every.unwrap_or(0.0),
        count: d.count,
        administration,
        scaled: d.per.is_some(),
        keeps_lag: false,
    };
    crate::dosing::Regimen {
        lines: vec![line.clone()],
    }
    .validate(model.states.len())
    .map_err(|e| e.0.replace("dose line 1: ", ""))?;
    Ok(line)
}

/// The dose records of a one-subject NONMEM-format dataset as regimen lines: each dose record
/// (EVID 1) becomes a line of ADDL + 1 doses every II, a bolus (RATE 0), an infusion at RATE
/// (RATE > 0; bioavailability changes its duration) or a modelled infusion (RATE −1 with
/// `rate(state)`, RATE −2 with `dur(state)` declared in the model); a steady-state dose
/// (SS = 1) at time 0 makes its line start the arm at steady state. Observation and
/// other-type records are ignored (the trial's metrics and profile settings apply). Other
/// steady-state doses, doses that a reset or the steady-state dose at their time cancels, and
/// columns that would set model parameters over time are refused with the record's line: they
/// need a `[data]` trial (or `vpop simulate --data`).
pub fn record_lines(
    model: &Model,
    ds: &crate::dosing::nonmem::Dataset,
) -> Result<Vec<DoseLine>, crate::diag::Diagnostic> {
    use crate::dosing::nonmem::Evid;
    let at = |line: usize, message: String| crate::diag::Diagnostic {
        file: ds.name.clone(),
        line,
        col: 1,
        message,
    };
    let [subject] = &ds.subjects[..] else {
        return Err(at(
            1,
            format!(
                "an arm's records must describe one subject (the regimen every virtual subject gets); this dataset has {}",
                ds.subjects.len()
            ),
        ));
    };
    let params: Vec<String> = model
        .params
        .iter()
        .map(|p| p.name.to_ascii_lowercase())
        .collect();
    let mut lines = Vec::new();
    let mut prev = f64::NEG_INFINITY;
    for r in &subject.records {
        if r.time < prev {
            return Err(at(
                r.line,
                format!(
                    "TIME goes back from {prev} to {} at this reset: an arm's regimen runs forward in time; a reset that takes time back needs a [data] trial or `vpop simulate --data`",
                    r.time
                ),
            ));
        }
        prev = r.time;
        for (c, name) in ds.covariates.iter().enumerate() {
            if params.contains(name) && !r.covariates[c].is_nan() {
                return Err(at(
                    r.line,
                    format!(
                        "column {} would set model parameter '{name}': time-varying parameters need a [data] trial or `vpop simulate --data`; in an arm, parameters come from the population",
                        name.to_ascii_uppercase()
                    ),
                ));
            }
        }
        // Records that give no dose are ignored here, but a compartment the model lacks is
        // refused on them too, as in a [data] trial.
        if r.cmt > model.states.len() as i64 {
            return Err(at(
                r.line,
                format!(
                    "CMT {} but the model has {} states",
                    r.cmt,
                    model.states.len()
                ),
            ));
        }
        match r.evid {
            Evid::Observation | Evid::Other => continue,
            Evid::Reset | Evid::ResetDose => {
                if r.time <= 0.0 {
                    return Err(at(
                        r.line,
                        "a reset (EVID 3/4) in an arm's regimen comes after the arm's start (TIME > 0)".into(),
                    ));
                }
                lines.push(DoseLine::reset(r.time));
                if r.evid == Evid::Reset {
                    continue;
                }
            }
            Evid::Dose => {}
        }
        let steady_state = r.ss == 1;
        if r.ss == 2 || (steady_state && (r.time != 0.0 || r.ii <= 0.0)) {
            return Err(at(
                r.line,
                "in an arm's regimen a steady-state dose is SS = 1 at TIME 0 with II > 0 (the arm starts at steady state); other steady-state records need a [data] trial or `vpop simulate --data`".into(),
            ));
        }
        if steady_state && lines.iter().any(|l: &DoseLine| l.steady_state) {
            return Err(at(
                r.line,
                "a second steady-state dose (SS = 1): an arm starts at the steady state of one dose; several need a [data] trial or `vpop simulate --data`".into(),
            ));
        }
        // A dose record's CMT is at least 1 (the dataset's check) and at most the model's
        // states (above).
        let state = r.cmt as usize - 1;
        let st = &model.states[state];
        let decl = model.dosing.get(state);
        let administration = if r.rate > 0.0 {
            Administration::InfusionRate(r.rate)
        } else if r.rate == -1.0 {
            if decl.is_none_or(|d| d.rate.is_none()) {
                return Err(at(
                    r.line,
                    format!("RATE = -1 needs rate({}) = ... in the model", st.name),
                ));
            }
            Administration::Modelled
        } else if r.rate == -2.0 {
            if decl.is_none_or(|d| d.duration.is_none()) {
                return Err(at(
                    r.line,
                    format!("RATE = -2 needs dur({}) = ... in the model", st.name),
                ));
            }
            if decl.is_some_and(|d| d.rate.is_some()) {
                return Err(at(
                    r.line,
                    format!(
                        "RATE = -2 in an arm's regimen needs a model that declares dur({0}) but not rate({0}) (an arm's modelled infusion takes the model's rate where it declares both); a [data] trial or `vpop simulate --data` gives either",
                        st.name
                    ),
                ));
            }
            Administration::Modelled
        } else {
            Administration::Bolus
        };
        lines.push(DoseLine {
            steady_state,
            state,
            amount: r.amt,
            start: r.time,
            interval: if r.addl > 0 || steady_state {
                r.ii
            } else {
                0.0
            },
            count: r.addl + 1,
            administration,
            scaled: false,
            // Its additional doses keep the lag in force at the record (NONMEM), where an
            // arm's occasions change it.
            keeps_lag: true,
        });
    }
    if lines
        .iter()
        .all(|l| l.administration == Administration::Reset)
    {
        return Err(at(1, "the records hold no dose (EVID 1)".into()));
    }
    // A dose before the steady-state dose (both at TIME 0): SS = 1 zeroes what it gave and
    // cancels its additional doses (NONMEM), where the arm would give them on top of the
    // steady state.
    if let Some(ss) = subject
        .records
        .iter()
        .find(|r| r.evid == Evid::Dose && r.ss == 1)
    {
        if let Some(r) = subject
            .records
            .iter()
            .find(|r| r.evid == Evid::Dose && r.line < ss.line)
        {
            return Err(at(
                r.line,
                format!(
                    "a dose before the steady-state dose (SS = 1) on line {}, which zeroes it and \
                     cancels its additional doses (NONMEM's order): leave the dose out, or use a \
                     [data] trial or `vpop simulate --data`",
                    ss.line
                ),
            ));
        }
    }
    // A dose due at a reset's time that NONMEM gives before the reset (a record before it at
    // that time, or an additional dose, which comes before the records at its time), so that
    // the reset cancels it: an arm's lines give doses at a reset's time after it, so refused.
    let resets: Vec<(f64, usize)> = subject
        .records
        .iter()
        .filter(|r| matches!(r.evid, Evid::Reset | Evid::ResetDose))
        .map(|r| (r.time, r.line))
        .collect();
    for r in subject.records.iter().filter(|r| r.evid == Evid::Dose) {
        // Whether one of the record's additional doses, due at TIME + k·II, falls on t: the
        // k nearest (t − TIME) / II and its neighbours, as rounding may have it (not every
        // k, which a record with ADDL 1e6 would make slow).
        let additional_at = |t: f64| {
            let k = ((t - r.time) / r.ii).round();
            r.ii > 0.0
                && k.is_finite()
                && [k - 1.0, k, k + 1.0]
                    .iter()
                    .any(|&k| k >= 1.0 && k <= f64::from(r.addl) && r.time + k * r.ii == t)
        };
        let before = |&(t, line): &(f64, usize)| {
            (t == r.time && line > r.line) || (r.addl > 0 && additional_at(t))
        };
        if let Some((t, line)) = resets.iter().find(|x| before(x)) {
            return Err(at(
                r.line,
                format!(
                    "a dose due at TIME {t}, before the reset on line {line} at that time, which \
                     cancels it (NONMEM's order); in an arm's regimen doses at a reset's time come \
                     after it: leave the dose out, or use a [data] trial or `vpop simulate --data`"
                ),
            ));
        }
    }
    crate::dosing::Regimen {
        lines: lines.clone(),
    }
    .validate(model.states.len())
    .map_err(|e| at(1, e.0))?;
    Ok(lines)
}
