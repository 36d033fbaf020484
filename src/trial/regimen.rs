//! Dose lines of a spec resolved against a model.

use super::spec::DoseSpec;
use crate::dosing::{Administration, DoseLine};
use crate::model::Model;

/// A dosing line of the spec, resolved against the model's states.
pub fn dose_line(model: &Model, d: &DoseSpec) -> Result<DoseLine, String> {
    let state = model.state_index(&d.into).ok_or_else(|| {
        let names: Vec<&str> = model.states.iter().map(|s| s.name.as_str()).collect();
        format!(
            "dose into '{}', which is not a state of the model (states: {})",
            d.into,
            names.join(", ")
        )
    })?;
    let administration = match (d.rate, d.duration, d.modelled) {
        (None, None, false) => Administration::Bolus,
        (Some(r), None, false) => Administration::InfusionRate(r),
        (None, Some(t), false) => Administration::InfusionDuration(t),
        (None, None, true) => Administration::Modelled,
        _ => return Err("give at most one of rate, duration and modelled = true".into()),
    };
    if d.count > 1 && d.every.is_none() {
        return Err(format!("{} doses need an interval: add every = …", d.count));
    }
    let line = DoseLine {
        state,
        amount: d.amount,
        start: d.start,
        interval: d.every.unwrap_or(0.0),
        count: d.count,
        administration,
    };
    crate::dosing::Regimen {
        lines: vec![line.clone()],
    }
    .validate(model.states.len())
    .map_err(|e| e.0.replace("dose line 1: ", ""))?;
    Ok(line)
}
