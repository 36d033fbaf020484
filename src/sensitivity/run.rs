//! `vpop sensitivity SPEC`: a design over model parameters, evaluated through the same backends
//! as trials (one virtual subject per design row, every arm of the referenced trial), and the
//! indices of the chosen exposure metrics.
//!
//! ```toml
//! [sensitivity]
//! trial = "quickstart.toml"        # model, arms, solver and backend come from this trial spec
//! method = "sobol"                 # sobol | morris | efast
//! samples = 4096                   # Sobol: base samples N (N·(k+2) runs); Morris: trajectories;
//!                                  # eFAST: points per factor
//! outputs = ["cp_auc", "cp_cmax"]  # metric columns (default: all but Tmax and those no run
//!                                  # of an arm defines, such as a single dose's ctrough)
//! out = "out/gsa"
//!
//! [[factor]]
//! name = "ka"
//! range = [0.5, 3.0]               # uniform; scale = "log" for log-uniform
//! [[factor]]
//! name = "cl"
//! lognormal = { median = 4.0, cv = 0.3 }
//! ```
//!
//! Parameters that are not factors keep the trial's fixed value or the model's default. A
//! factor given as `typical = "cl"` instead acts on the population: it multiplies the sampled
//! value of population parameter `cl` of `subjects` virtual subjects (the same subjects at every
//! design point), and the analysed output is a statistic (`statistic`: median by default) of
//! their metric. `subjects` alone runs the population the same way, model-level factors set
//! for every subject. Dose lines per unit of a covariate (`per = "wt"`) scale with each virtual
//! subject's value, as in a trial; design points without the population refuse them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use serde::Deserialize;
use toml::Spanned;

use super::{
    analyse, efast_design, morris_design, sobol_design, Design, DesignError, Indices, Method,
    Resolution, Variation, RESOLVED_SPREAD,
};
use crate::backend::{ArmPlan, ChunkInput, ChunkOutput, Precision};
use crate::diag::{Diagnostic, SourceFile, Span};
use crate::population::dist::norm_ppf;
use crate::population::SampledChunk;
use crate::trial::resolve::{BackendChoice, ParamSource};
use crate::trial::run::select_backend;
use crate::trial::Trial;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a sensitivity file: a [sensitivity] table and [[factor]] tables")]
struct SpecFile {
    sensitivity: Section,
    #[serde(default)]
    factor: Vec<Spanned<FactorSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [sensitivity] table: trial, method, samples, seed, outputs, …")]
struct Section {
    trial: Spanned<String>,
    method: Spanned<String>,
    samples: Spanned<usize>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    outputs: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    arms: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    bootstrap: Option<Spanned<usize>>,
    #[serde(default)]
    confidence: Option<Spanned<f64>>,
    #[serde(default)]
    levels: Option<Spanned<usize>>,
    #[serde(default)]
    interference: Option<Spanned<usize>>,
    #[serde(default)]
    out: Option<Spanned<String>>,
    /// Virtual subjects per design point when a factor acts on the population.
    #[serde(default)]
    subjects: Option<Spanned<usize>>,
    /// Statistic of a design point's subjects: mean, median, p5, p95.
    #[serde(default)]
    statistic: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a [[factor]] table: name or typical, with range (and scale), normal or lognormal"
)]
struct FactorSpec {
    /// A model parameter set to the factor's value.
    #[serde(default)]
    name: Option<Spanned<String>>,
    /// A population parameter whose typical value the factor multiplies.
    #[serde(default)]
    typical: Option<Spanned<String>>,
    #[serde(default)]
    range: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    scale: Option<Spanned<String>>,
    #[serde(default)]
    normal: Option<Spanned<NormalSpec>>,
    #[serde(default)]
    lognormal: Option<Spanned<LognormalSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a normal distribution such as { mean = 1, sd = 0.1 }")]
struct NormalSpec {
    mean: f64,
    sd: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a log-normal distribution such as { median = 1, cv = 0.3 }")]
struct LognormalSpec {
    median: f64,
    cv: f64,
}

/// How a factor's unit-cube coordinate becomes a parameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Normal(f64, f64),
    /// median, σ of the log.
    Lognormal(f64, f64),
}

impl Transform {
    pub fn apply(self, u: f64) -> f64 {
        let q = || norm_ppf(u.clamp(1e-12, 1.0 - 1e-12));
        match self {
            Transform::Uniform(a, b) => a + u * (b - a),
            Transform::LogUniform(a, b) => (a.ln() + u * (b.ln() - a.ln())).exp(),
            Transform::Normal(m, s) => m + s * q(),
            Transform::Lognormal(med, s) => med * (s * q()).exp(),
        }
    }

    fn bounded(self) -> bool {
        matches!(self, Transform::Uniform(..) | Transform::LogUniform(..))
    }
}

/// A factor: a model parameter and its distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub name: String,
    pub param: usize,
    pub transform: Transform,
    /// The factor multiplies the population-sampled value of the parameter (a typical-value
    /// factor) instead of setting it.
    pub typical: bool,
}

/// The statistic of a design point's virtual subjects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Mean,
    Quantile(f64),
}

impl Statistic {
    fn parse(s: &str) -> Option<Statistic> {
        Some(match s {
            "mean" => Statistic::Mean,
            "median" => Statistic::Quantile(0.5),
            "p5" => Statistic::Quantile(0.05),
            "p95" => Statistic::Quantile(0.95),
            _ => return None,
        })
    }

    /// The statistic as the spec names it.
    fn name(self) -> String {
        match self {
            Statistic::Mean => "mean".into(),
            Statistic::Quantile(0.5) => "median".into(),
            Statistic::Quantile(p) => format!("p{}", (100.0 * p).round()),
        }
    }

    /// Over the finite values; NaN when fewer than half of them are finite.
    fn of(self, v: &mut [f64]) -> f64 {
        let n = v.len();
        let mut ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if ok.is_empty() || 2 * ok.len() < n {
            return f64::NAN;
        }
        match self {
            Statistic::Mean => ok.iter().sum::<f64>() / ok.len() as f64,
            Statistic::Quantile(p) => {
                ok.sort_by(f64::total_cmp);
                let x = p * (ok.len() - 1) as f64;
                let (i, f) = (x.floor() as usize, x.fract());
                if i + 1 < ok.len() {
                    ok[i] * (1.0 - f) + ok[i + 1] * f
                } else {
                    ok[i]
                }
            }
        }
    }
}

/// A loaded sensitivity spec.
pub struct Analysis {
    pub trial: Trial,
    pub method: Method,
    pub factors: Vec<Factor>,
    pub samples: usize,
    pub seed: u64,
    /// (arm index, metric index) of every analysed output.
    pub outputs: Vec<(usize, usize)>,
    pub bootstrap: usize,
    pub confidence: f64,
    pub levels: usize,
    pub interference: usize,
    pub out: PathBuf,
    /// Whether design points run virtual subjects of the trial's population (typical-value
    /// factors, or `subjects` given) rather than one run at the model's values.
    pub population: bool,
    /// Virtual subjects per design point (1 without the population).
    pub subjects: usize,
    pub statistic: Statistic,
    /// What the spec leaves out or sets that its author should know (metrics left out of the
    /// default outputs, and why).
    pub notes: Vec<String>,
}

fn invalid(d: Diagnostic) -> String {
    d.to_string()
}

impl Analysis {
    pub fn load(path: &Path) -> Result<Analysis, String> {
        let name = path.display().to_string();
        let text = crate::diag::read_text(path).map_err(|e| match e {
            crate::diag::ReadError::Text(d) => d.to_string(),
            crate::diag::ReadError::Io(e) => format!("{name}: cannot read: {e}"),
        })?;
        let src = SourceFile::new(name, text.as_str());
        let at = |r: std::ops::Range<usize>| Span::new(r.start, r.end);
        let f: SpecFile =
            toml::from_str(&text).map_err(|e| invalid(crate::trial::spec::toml_error(&src, &e)))?;
        let s = &f.sensitivity;
        let base = path.parent().unwrap_or(Path::new("."));
        let trial_path = base.join(s.trial.get_ref());
        if !trial_path.is_file() {
            return Err(invalid(src.error(
                at(s.trial.span()),
                format!("trial: no file {}", trial_path.display()),
            )));
        }
        let trial = Trial::load(&trial_path).map_err(|e| e.to_string())?;
        if trial.data.is_some() {
            return Err(format!(
                "{}: sensitivity analyses take arm trials, not [data] trials",
                trial_path.display()
            ));
        }
        let method = Method::parse(s.method.get_ref()).ok_or_else(|| {
            invalid(src.error(
                at(s.method.span()),
                format!(
                    "unknown method '{}' (sobol, morris, efast){}",
                    s.method.get_ref(),
                    crate::diag::did_you_mean(s.method.get_ref(), ["sobol", "morris", "efast"])
                ),
            ))
        })?;
        if f.factor.is_empty() {
            return Err(invalid(src.error(
                Span::default(),
                "no [[factor]]: name at least one model parameter to vary",
            )));
        }
        let mut factors = Vec::new();
        for fs in &f.factor {
            let fsp = fs.get_ref();
            let (pname_sp, typical) = match (&fsp.name, &fsp.typical) {
                (Some(n), None) => (n, false),
                (None, Some(t)) => (t, true),
                _ => {
                    return Err(invalid(src.error(
                        at(fs.span()),
                        "a factor needs either name = \"<model parameter>\" or typical = \"<population parameter>\"",
                    )))
                }
            };
            let pname = pname_sp.get_ref();
            let Some(param) = trial.model.param_index(pname) else {
                let names: Vec<&str> = trial.model.params.iter().map(|p| p.name.as_str()).collect();
                return Err(invalid(src.error(
                    at(pname_sp.span()),
                    format!(
                        "the model has no parameter '{pname}' (parameters: {}){}",
                        names.join(", "),
                        crate::diag::did_you_mean(pname, names.iter().copied())
                    ),
                )));
            };
            if typical && !matches!(trial.params[param], ParamSource::Population(_)) {
                return Err(invalid(src.error(
                    at(pname_sp.span()),
                    format!(
                        "'{pname}' is not a parameter of the trial's population: a typical-value factor scales a population parameter (use name = \"{pname}\" to set it directly)"
                    ),
                )));
            }
            if factors.iter().any(|x: &Factor| x.param == param) {
                return Err(invalid(src.error(
                    at(pname_sp.span()),
                    format!("parameter '{pname}' is a factor twice"),
                )));
            }
            let given = [
                fsp.range.is_some(),
                fsp.normal.is_some(),
                fsp.lognormal.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if given != 1 {
                return Err(invalid(src.error(
                    at(fs.span()),
                    format!("factor '{pname}' needs exactly one of range, normal, lognormal"),
                )));
            }
            if let (Some(sc), None) = (&fsp.scale, &fsp.range) {
                return Err(invalid(src.error(
                    at(sc.span()),
                    format!(
                        "factor '{pname}': scale applies to a range (uniform or log-uniform); a \
                         normal or log-normal factor is drawn on its own scale"
                    ),
                )));
            }
            let transform = if let Some(r) = &fsp.range {
                let (a, b) = match r.get_ref()[..] {
                    [a, b] => (a, b),
                    // Refused below, as any range that is not [low, high].
                    _ => (f64::NAN, f64::NAN),
                };
                let log = match &fsp.scale {
                    None => false,
                    Some(sc) => match sc.get_ref().as_str() {
                        "linear" => false,
                        "log" => true,
                        other => {
                            return Err(invalid(src.error(
                                at(sc.span()),
                                format!("scale must be \"linear\" or \"log\", not \"{other}\""),
                            )))
                        }
                    },
                };
                if !(a.is_finite() && b.is_finite() && a < b) || (log && a <= 0.0) {
                    return Err(invalid(src.error(
                        at(r.span()),
                        format!(
                            "range must be [low, high] with low < high{}",
                            if log {
                                " and low > 0 on a log scale"
                            } else {
                                ""
                            }
                        ),
                    )));
                }
                if log {
                    Transform::LogUniform(a, b)
                } else {
                    Transform::Uniform(a, b)
                }
            } else if let Some(n) = &fsp.normal {
                let v = n.get_ref();
                if !(v.mean.is_finite() && v.sd.is_finite() && v.sd > 0.0) {
                    return Err(invalid(
                        src.error(at(n.span()), "normal needs a finite mean and sd > 0"),
                    ));
                }
                Transform::Normal(v.mean, v.sd)
            } else {
                let l = fsp.lognormal.as_ref().expect("one of the three is given");
                let v = l.get_ref();
                if !(v.median > 0.0 && v.median.is_finite() && v.cv > 0.0 && v.cv.is_finite()) {
                    return Err(invalid(
                        src.error(at(l.span()), "lognormal needs median > 0 and cv > 0"),
                    ));
                }
                Transform::Lognormal(v.median, (1.0 + v.cv * v.cv).ln().sqrt())
            };
            // A typical-value factor multiplies a parameter: a multiplier ≤ 0 makes it zero or
            // negative. (A normal factor's draws reach 7.03 SD either side: see `apply`.)
            let least = match transform {
                Transform::Uniform(a, _) => a,
                Transform::Normal(..) => transform.apply(0.0),
                Transform::LogUniform(..) | Transform::Lognormal(..) => f64::INFINITY,
            };
            if typical && least <= 0.0 {
                let span = fsp
                    .range
                    .as_ref()
                    .map(|r| r.span())
                    .or(fsp.normal.as_ref().map(|n| n.span()))
                    .unwrap_or(fs.span());
                return Err(invalid(src.error(
                    at(span),
                    format!(
                        "factor '{pname}' multiplies the population's value, so it must stay \
                         above 0; it reaches {least} (a range from above 0, or a log-normal)"
                    ),
                )));
            }
            if method == Method::Morris && !transform.bounded() {
                return Err(invalid(src.error(
                    at(fs.span()),
                    format!("Morris grids need bounded factors: give '{pname}' a range"),
                )));
            }
            factors.push(Factor {
                name: if typical {
                    format!("typical_{pname}")
                } else {
                    pname.clone()
                },
                param,
                transform,
                typical,
            });
        }
        // An empty list leaves nothing to analyse: an error where it is written, as an unknown
        // name in it is.
        for (list, what) in [(&s.arms, "arm"), (&s.outputs, "metric column")] {
            if let Some(l) = list.as_ref().filter(|l| l.get_ref().is_empty()) {
                let key = if what == "arm" { "arms" } else { "outputs" };
                return Err(invalid(src.error(
                    at(l.span()),
                    format!(
                        "{key} = []: nothing to analyse; name at least one {what}, or leave \
                         `{key}` out for {}",
                        if what == "arm" {
                            "every arm of the trial"
                        } else {
                            "every metric but Tmax"
                        }
                    ),
                )));
            }
        }
        let arms: Vec<usize> = match &s.arms {
            None => (0..trial.arms.len()).collect(),
            Some(names) => names
                .get_ref()
                .iter()
                .map(|n| {
                    trial
                        .arms
                        .iter()
                        .position(|a| &a.plan.name == n.get_ref())
                        .ok_or_else(|| {
                            invalid(src.error(
                                at(n.span()),
                                format!(
                                    "the trial has no arm '{}' (its arms: {})",
                                    n.get_ref(),
                                    trial
                                        .arms
                                        .iter()
                                        .map(|a| a.plan.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        // An arm or an output named twice would be analysed twice.
        for list in [&s.arms, &s.outputs].into_iter().flatten() {
            let list = list.get_ref();
            for (k, n) in list.iter().enumerate() {
                if list[..k].iter().any(|o| o.get_ref() == n.get_ref()) {
                    return Err(invalid(
                        src.error(at(n.span()), format!("'{}' is named twice", n.get_ref())),
                    ));
                }
            }
        }
        let mut outputs = Vec::new();
        let mut notes = Vec::new();
        for &a in &arms {
            let plan = &trial.arms[a].plan;
            let cols: Vec<&str> = plan.metrics.iter().map(|m| m.column.as_str()).collect();
            match &s.outputs {
                None => {
                    // Every run would leave a metric undefined by construction without a
                    // value, and the analysis would stop after running them all.
                    let mut left_out = Vec::new();
                    for (m, c) in cols.iter().enumerate() {
                        // Every Tmax, over a window too.
                        if plan.metrics[m].metric.kind == crate::metrics::MetricKind::Tmax {
                            continue;
                        }
                        match crate::trial::resolve::undefined_by_construction(plan, m) {
                            None => outputs.push((a, m)),
                            Some(why) => left_out.push(format!("{c} ({why})")),
                        }
                    }
                    if !left_out.is_empty() {
                        notes.push(format!(
                            "arm '{}': the default outputs leave out {}: undefined for every \
                             run of the arm",
                            plan.name,
                            left_out.join(", ")
                        ));
                    }
                }
                Some(list) => {
                    for o in list.get_ref() {
                        let m = cols.iter().position(|c| c == o.get_ref()).ok_or_else(|| {
                            invalid(src.error(
                                at(o.span()),
                                format!(
                                    "no metric column '{}' (the trial's: {})",
                                    o.get_ref(),
                                    cols.join(", ")
                                ),
                            ))
                        })?;
                        if let Some(why) = crate::trial::resolve::undefined_by_construction(plan, m)
                        {
                            return Err(invalid(src.error(
                                at(o.span()),
                                format!(
                                    "'{}' is undefined for every run of arm '{}': {why}; \
                                     leave it out of `outputs`{}",
                                    o.get_ref(),
                                    plan.name,
                                    if arms.len() > 1 {
                                        ", or the arm out of `arms`"
                                    } else {
                                        ""
                                    }
                                ),
                            )));
                        }
                        outputs.push((a, m));
                    }
                }
            }
        }
        if outputs.is_empty() {
            // Only where the defaults left every metric out (an empty list is refused above).
            return Err(invalid(src.error(
                at(s.trial.span()),
                format!(
                    "nothing to analyse: the trial's metrics are Tmax or undefined for every \
                     run of the analysed arms{}",
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join("; "))
                    }
                ),
            )));
        }
        let positive = |v: &Option<Spanned<usize>>, default: usize, what: &str| {
            v.as_ref().map_or(Ok(default), |x| {
                if *x.get_ref() >= 1 {
                    Ok(*x.get_ref())
                } else {
                    Err(invalid(
                        src.error(at(x.span()), format!("{what} must be ≥ 1")),
                    ))
                }
            })
        };
        let confidence = match &s.confidence {
            None => 0.95,
            Some(c) if *c.get_ref() > 0.0 && *c.get_ref() < 1.0 => *c.get_ref(),
            Some(c) => {
                return Err(invalid(
                    src.error(at(c.span()), "confidence must be in (0, 1)"),
                ))
            }
        };
        // Relative to the working directory, like a trial's output directory.
        let out = PathBuf::from(s.out.as_ref().map_or("out/sensitivity", |o| o.get_ref()));
        if let (Some(o), true) = (&s.out, out.exists() && !out.is_dir()) {
            return Err(invalid(src.error(
                at(o.span()),
                format!("out: {} is a file, not a directory", out.display()),
            )));
        }
        // Design points run virtual subjects of the trial's population with typical-value
        // factors, or when `subjects` asks for them; else one run at the model's values.
        let any_typical = factors.iter().any(|f| f.typical);
        let population = any_typical || s.subjects.is_some();
        let subjects = match &s.subjects {
            Some(n) if *n.get_ref() == 0 => {
                return Err(invalid(src.error(at(n.span()), "subjects must be ≥ 1")))
            }
            Some(n) if trial.population.is_none() => {
                return Err(invalid(src.error(
                    at(n.span()),
                    "subjects: the trial has no [population] to draw virtual subjects from",
                )))
            }
            Some(n) => *n.get_ref(),
            None if any_typical => 100,
            None => 1,
        };
        // A dose line per unit of a covariate (`per = "wt"`: mg/kg) scales with each virtual
        // subject's covariate; a design point without the population has none to scale by.
        if !population {
            for &(arm, _) in &outputs {
                if let Some(why) = dose_per_covariate(&trial, arm) {
                    let named = s.arms.as_ref().and_then(|l| {
                        l.get_ref()
                            .iter()
                            .find(|n| n.get_ref() == &trial.arms[arm].plan.name)
                    });
                    let span = named.map_or(s.trial.span(), |n| n.span());
                    return Err(invalid(src.error(at(span), why)));
                }
            }
        }
        let statistic = match &s.statistic {
            None => Statistic::Quantile(0.5),
            Some(st) if !population => {
                return Err(invalid(src.error(
                    at(st.span()),
                    "statistic applies where design points run virtual subjects of the \
                     population: give `subjects = N` or a typical-value factor",
                )))
            }
            Some(st) => Statistic::parse(st.get_ref()).ok_or_else(|| {
                invalid(src.error(
                    at(st.span()),
                    format!(
                        "unknown statistic '{}' (mean, median, p5, p95)",
                        st.get_ref()
                    ),
                ))
            })?,
        };
        let a = Analysis {
            subjects,
            population,
            statistic,
            method,
            factors,
            samples: *s.samples.get_ref(),
            seed: s.seed.unwrap_or(1),
            outputs,
            bootstrap: match &s.bootstrap {
                Some(b) if *b.get_ref() > super::MAX_RESAMPLES => {
                    return Err(invalid(src.error(
                        at(b.span()),
                        format!(
                            "bootstrap takes at most {} resamples, not {}",
                            super::MAX_RESAMPLES,
                            b.get_ref()
                        ),
                    )))
                }
                Some(b) => *b.get_ref(),
                None => 200,
            },
            confidence,
            levels: positive(&s.levels, 4, "levels")?,
            interference: positive(&s.interference, 4, "interference")?,
            out,
            notes,
            trial,
        };
        // The design's own checks, each at the key it is about (a default setting that a
        // check refuses cannot be: it points at `samples` then).
        if let Err(e) = a.unit_design() {
            let span = match &e {
                DesignError::Samples(_) => s.samples.span(),
                DesignError::Levels(_) => s.levels.as_ref().map_or(s.samples.span(), |l| l.span()),
                DesignError::Interference(_) => s
                    .interference
                    .as_ref()
                    .map_or(s.samples.span(), |m| m.span()),
                // Too many factors: the first one beyond what the design takes.
                DesignError::Factors(_) => f
                    .factor
                    .get(super::SOBOL_MAX_FACTORS)
                    .or(f.factor.last())
                    .map_or(s.method.span(), |x| x.span()),
            };
            return Err(invalid(src.error(at(span), e.to_string())));
        }
        Ok(a)
    }

    /// The design in the unit hypercube.
    pub fn design(&self) -> Result<Design, String> {
        self.unit_design().map_err(|e| e.to_string())
    }

    fn unit_design(&self) -> Result<Design, DesignError> {
        let k = self.factors.len();
        match self.method {
            Method::Sobol => sobol_design(k, self.samples, self.seed),
            Method::Morris => morris_design(k, self.samples, self.levels, self.seed),
            Method::Efast => efast_design(k, self.samples, self.interference, self.seed),
        }
    }

    /// Every model parameter for every evaluation: design row r's subject i is evaluation
    /// `r · subjects + i` (`params[p][evaluation]`). With the population the same `subjects`
    /// virtual subjects (subjects 0 … subjects − 1 of the trial's seed) are used at every
    /// design point, their sampled parameters scaled by the typical-value factors and set by
    /// the others; without it, the population's parameters take the model's defaults.
    pub fn parameters(&self, d: &Design) -> Vec<Vec<f64>> {
        let base = self.base_parameters(self.virtual_subjects().as_ref());
        self.parameters_of(d, &base, 0..d.rows * self.subjects)
    }

    /// The virtual subjects of every design point, subjects 0 … subjects − 1 of the trial's
    /// seed; none where design points run no population.
    fn virtual_subjects(&self) -> Option<SampledChunk> {
        match (&self.trial.population, self.population) {
            (Some(pop), true) => {
                let mut chunk = SampledChunk::default();
                pop.sample(self.trial.seed, 0, self.subjects, &mut chunk);
                Some(chunk)
            }
            _ => None,
        }
    }

    /// Every model parameter of the virtual subjects before the factors (`base[p][i]`).
    fn base_parameters(&self, sampled: Option<&SampledChunk>) -> Vec<Vec<f64>> {
        let m = self.subjects;
        self.trial
            .params
            .iter()
            .zip(&self.trial.model.params)
            .map(|(src, p)| match (src, sampled) {
                (ParamSource::Fixed(v), _) => vec![*v; m],
                (ParamSource::Population(j), Some(s)) => s.parameters[*j].clone(),
                (ParamSource::Population(_), None) => vec![p.default; m],
            })
            .collect()
    }

    /// [`Analysis::parameters`] of the evaluations in `range` only (`params[p][e - start]`),
    /// from the virtual subjects' [`Analysis::base_parameters`]: a run holds one chunk's.
    fn parameters_of(
        &self,
        d: &Design,
        base: &[Vec<f64>],
        range: std::ops::Range<usize>,
    ) -> Vec<Vec<f64>> {
        let m = self.subjects;
        let mut params: Vec<Vec<f64>> = base
            .iter()
            .map(|b| range.clone().map(|e| b[e % m]).collect())
            .collect();
        for (j, f) in self.factors.iter().enumerate() {
            for (e, v) in range.clone().zip(params[f.param].iter_mut()) {
                let x = f.transform.apply(d.x[(e / m) * d.k + j]);
                if f.typical {
                    *v *= x;
                } else {
                    *v = x;
                }
            }
        }
        params
    }
}

/// Why arm `arm` cannot run without virtual subjects: a dose line per unit of a covariate
/// (mg/kg), which only a sampled subject has.
fn dose_per_covariate(trial: &Trial, arm: usize) -> Option<String> {
    let c = trial.arms[arm].amount_per?;
    let cov = trial
        .population
        .as_ref()
        .map_or(String::new(), |p| p.covariate_names()[c].to_string());
    Some(format!(
        "arm '{}' doses per unit of covariate '{cov}' (`per = \"{cov}\"`), which only virtual \
         subjects of the population have: give `subjects = N` to run N of them at every \
         design point",
        trial.arms[arm].plan.name
    ))
}

/// The resolution of an arm's metrics on a backend: an adaptive solver's tolerances, which
/// hold each component to atol + rtol·|y|, the relative one no finer than the precision the
/// backend computes in (f32 kernels). A fixed-step method's error does not change with
/// anything that leaves the solution unchanged, so it adds nothing to an output's spread.
fn resolution(plan: &ArmPlan, precision: Precision) -> Resolution {
    let solver = if plan.solver.method.is_adaptive() {
        Resolution {
            relative: plan.solver.rtol,
            absolute: plan.solver.atol,
        }
    } else {
        Resolution::EXACT
    };
    match precision {
        Precision::F32 => Resolution {
            relative: solver.relative.max(f64::from(f32::EPSILON)),
            ..solver
        },
        Precision::F64 => solver,
    }
}

/// The indices of one output.
#[derive(Debug, Clone)]
pub struct OutputIndices {
    pub arm: String,
    pub output: String,
    pub indices: Indices,
    /// How the output varies across the design; indices are estimated only where it varies
    /// beyond what the evaluations resolve.
    pub variation: Variation,
}

/// What an analysis produced.
pub struct Report {
    pub backend: String,
    pub evaluations: u64,
    pub results: Vec<OutputIndices>,
    pub files: Vec<PathBuf>,
    /// What the indices rest on that the user should know: subjects of design points that
    /// failed to integrate, whose statistic then comes from the others.
    pub notes: Vec<String>,
}

/// Runs the design through the backend and estimates the indices; writes
/// `indices.parquet` and `evaluations.parquet` (factor values and outputs per row).
pub fn run(a: &Analysis, backend: Option<BackendChoice>) -> Result<Report, String> {
    let d = a.design()?;
    let sampled = a.virtual_subjects();
    let base = a.base_parameters(sampled.as_ref());
    let choice = backend.unwrap_or(a.trial.backend);
    let (mut b, reason) = select_backend(&a.trial, choice)?;
    let info = b.info();
    let chunk = a.trial.chunk_size.unwrap_or(65_536).max(1);
    let mut values: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    // Per analysed arm, how many of its runs ended with each solver status.
    let mut status: BTreeMap<usize, BTreeMap<u8, u64>> = BTreeMap::new();
    // Each analysed arm once, in the order first named.
    let arms: Vec<usize> = {
        let mut v: Vec<usize> = Vec::new();
        for &(arm, _) in &a.outputs {
            if !v.contains(&arm) {
                v.push(arm);
            }
        }
        v
    };
    for &arm in &arms {
        let plan = &a.trial.arms[arm].plan;
        if !plan.occasions.is_empty() {
            return Err(format!(
                "arm '{}' has occasions; sensitivity analyses take arms of one occasion",
                plan.name
            ));
        }
        if let (None, Some(why)) = (&sampled, dose_per_covariate(&a.trial, arm)) {
            return Err(why);
        }
        let total = d.rows * a.subjects;
        // The analysed metrics' values of every evaluation (the others are not kept).
        let analysed: Vec<bool> = (0..plan.metrics.len())
            .map(|m| a.outputs.contains(&(arm, m)))
            .collect();
        let mut cols: Vec<Vec<f64>> = analysed
            .iter()
            .map(|&k| Vec::with_capacity(if k { total } else { 0 }))
            .collect();
        let mut s0 = 0;
        while s0 < total {
            let n = chunk.min(total - s0);
            let slice = a.parameters_of(&d, &base, s0..s0 + n);
            // The covariate that scales the arm's `per` dose lines, for each evaluation
            // (evaluation e is virtual subject e mod `subjects`).
            let scale: Option<Vec<f64>> = a.trial.arms[arm].amount_per.and_then(|c| {
                let col = &sampled.as_ref()?.covariates[c];
                Some((s0..s0 + n).map(|e| col[e % a.subjects]).collect())
            });
            let input = ChunkInput {
                first_subject: s0 as u64,
                n,
                params: &slice,
                amount_scale: scale.as_deref(),
                occasion_params: &[],
            };
            let mut out = ChunkOutput::default();
            b.run_chunk(plan, &input, &mut out)
                .map_err(|e| e.to_string())?;
            let counts = status.entry(arm).or_default();
            for &st in &out.status[..n] {
                *counts.entry(st).or_default() += 1;
            }
            for (m, col) in cols.iter_mut().enumerate() {
                if analysed[m] {
                    col.extend_from_slice(&out.metrics[m]);
                }
            }
            s0 += n;
        }
        for &(oa, m) in &a.outputs {
            if oa == arm {
                let mut all = std::mem::take(&mut cols[m]);
                let per_row: Vec<f64> = if a.subjects == 1 {
                    all
                } else {
                    all.chunks_mut(a.subjects)
                        .map(|c| a.statistic.of(c))
                        .collect()
                };
                values.insert((arm, m), per_row);
            }
        }
    }
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for &(arm, m) in &a.outputs {
        let y = &values[&(arm, m)];
        let plan = &a.trial.arms[arm].plan;
        let res = resolution(plan, info.precision);
        match analyse(&d, y, res, a.bootstrap, a.confidence, a.seed ^ 0x5eed) {
            Ok((idx, variation)) => results.push(OutputIndices {
                arm: plan.name.clone(),
                output: plan.metrics[m].column.clone(),
                indices: idx,
                variation,
            }),
            Err(e) => failed.push(format!(
                "{} {}: {e} ({})",
                plan.name,
                plan.metrics[m].column,
                describe_status(status.get(&arm).unwrap_or(&BTreeMap::new()))
            )),
        }
    }
    // Design points whose statistic is over fewer subjects than were run: the failed ones'
    // values are unknown, so a quantile or mean of the others leans the way they would not.
    let mut notes = Vec::new();
    if a.subjects > 1 {
        for &arm in &arms {
            let counts = status.get(&arm).cloned().unwrap_or_default();
            let runs: u64 = counts.values().sum();
            let ok = counts
                .get(&(crate::solver::Status::Ok as u8))
                .copied()
                .unwrap_or(0);
            if ok < runs {
                notes.push(format!(
                    "arm {}: {}; each design point's {} is over its subjects that integrated \
                     (a point where fewer than half did has none, and stops the analysis), so \
                     where failures cluster at some design points their statistic leans away \
                     from the failed subjects' values",
                    a.trial.arms[arm].plan.name,
                    describe_status(&counts),
                    a.statistic.name(),
                ));
            }
        }
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let meta = provenance(a, info.name, &info.device, &reason);
    let (f1, f2, f3) = (
        a.out.join("indices.parquet"),
        a.out.join("evaluations.parquet"),
        a.out.join("indices.png"),
    );
    // Indices and their chart belong to the evaluations beside them. An earlier analysis's
    // go before this one's evaluations replace its own, and this one's follow them: at every
    // moment, indices in the directory were estimated from the evaluations there, and an
    // analysis that stops leaves its evaluations without any.
    for f in [&f1, &f3] {
        match std::fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{}: cannot remove the indices of an earlier analysis: {e}",
                    f.display()
                ))
            }
            _ => {}
        }
    }
    // The runs are what tells why a value is missing: they are written in any case.
    write_batch(&f2, &evaluations_batch(a, &d, &values)?, &meta)?;
    if !failed.is_empty() {
        return Err(format!(
            "{}\nno indices were estimated; every design point's factor values and outputs \
             (null where not finite) are in {}",
            failed.join("\n"),
            f2.display()
        ));
    }
    write_batch(&f1, &indices_batch(a, &results)?, &meta)?;
    crate::output::plot::bar_panels(&f3, &panels(a, &results))?;
    Ok(Report {
        backend: format!("backend {} ({}; {reason})", info.name, info.device),
        evaluations: (d.rows * a.subjects * arms.len()) as u64,
        results,
        files: vec![f1, f2, f3],
        notes,
    })
}

/// How an arm's runs ended, for an error about its missing values: whether the integrations
/// failed or the metric itself is undefined where they did not.
fn describe_status(counts: &BTreeMap<u8, u64>) -> String {
    let runs: u64 = counts.values().sum();
    let ok = counts
        .get(&(crate::solver::Status::Ok as u8))
        .copied()
        .unwrap_or(0);
    if ok == runs {
        return format!("every one of the arm's {runs} runs integrated with status ok");
    }
    let failed: Vec<String> = counts
        .iter()
        .filter(|(st, _)| **st != crate::solver::Status::Ok as u8)
        .map(|(st, n)| {
            let name = crate::solver::Status::from_code(*st).map_or("unknown", |s| s.name());
            format!("{n} {name}")
        })
        .collect();
    format!(
        "of the arm's {runs} runs, {} failed to integrate: {}",
        runs - ok,
        failed.join(", ")
    )
}

/// One chart panel per output: per factor, S1 and ST (Sobol, eFAST) or μ* and σ (Morris).
fn panels(a: &Analysis, results: &[OutputIndices]) -> Vec<crate::output::plot::BarPanel> {
    results
        .iter()
        .map(|r| crate::output::plot::BarPanel {
            title: format!("{} / {} — {}", r.arm, r.output, a.method.name()),
            categories: a.factors.iter().map(|f| f.name.clone()).collect(),
            bars: r
                .indices
                .values
                .iter()
                .map(|vals| {
                    vals.iter()
                        .filter(|(n, ..)| *n != "mu")
                        .map(|(n, v, c)| (n.to_string(), *v, *c))
                        .collect()
                })
                .collect(),
        })
        .collect()
}

fn provenance(a: &Analysis, backend: &str, device: &str, reason: &str) -> Vec<(String, String)> {
    let s = &a.trial.arms[0].plan.solver;
    vec![
        (
            "vpop.engine".into(),
            format!("vpop {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "vpop.results_revision".into(),
            crate::trial::run::RESULTS_REVISION.to_string(),
        ),
        ("vpop.sensitivity.method".into(), a.method.name().into()),
        ("vpop.sensitivity.samples".into(), a.samples.to_string()),
        ("vpop.sensitivity.subjects".into(), a.subjects.to_string()),
        (
            "vpop.sensitivity.statistic".into(),
            format!("{:?}", a.statistic),
        ),
        ("vpop.seed".into(), a.seed.to_string()),
        ("vpop.trial_spec".into(), a.trial.spec_text.clone()),
        ("vpop.model".into(), a.trial.model.name.clone()),
        ("vpop.model_hash".into(), a.trial.model.hash()),
        ("vpop.backend".into(), backend.into()),
        ("vpop.device".into(), device.into()),
        ("vpop.backend_reason".into(), reason.into()),
        ("vpop.method".into(), s.method.name().into()),
        ("vpop.rtol".into(), s.rtol.to_string()),
        ("vpop.atol".into(), s.atol.to_string()),
        ("vpop.events".into(), s.events.name().into()),
        (
            "vpop.factors".into(),
            a.factors
                .iter()
                .map(|f| format!("{}: {:?}", f.name, f.transform))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ]
}

fn indices_batch(a: &Analysis, results: &[OutputIndices]) -> Result<RecordBatch, String> {
    let (mut arm, mut output, mut factor, mut index, mut value, mut conf) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in results {
        for (j, f) in a.factors.iter().enumerate() {
            for (name, v, c) in &r.indices.values[j] {
                arm.push(r.arm.clone());
                output.push(r.output.clone());
                factor.push(f.name.clone());
                index.push(name.to_string());
                value.push(*v);
                conf.push(*c);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("arm", DataType::Utf8, false),
        Field::new("output", DataType::Utf8, false),
        Field::new("factor", DataType::Utf8, false),
        Field::new("index", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("conf", DataType::Float64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(arm)),
        Arc::new(StringArray::from(output)),
        Arc::new(StringArray::from(factor)),
        Arc::new(StringArray::from(index)),
        Arc::new(Float64Array::from(value)),
        Arc::new(Float64Array::from(conf)),
    ];
    RecordBatch::try_new(schema, cols).map_err(|e| e.to_string())
}

fn evaluations_batch(
    a: &Analysis,
    d: &Design,
    values: &BTreeMap<(usize, usize), Vec<f64>>,
) -> Result<RecordBatch, String> {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (j, f) in a.factors.iter().enumerate() {
        // The factor's own value per design row (a multiplier for typical-value factors).
        let col: Vec<f64> = (0..d.rows)
            .map(|r| f.transform.apply(d.x[r * d.k + j]))
            .collect();
        fields.push(Field::new(&f.name, DataType::Float64, false));
        cols.push(Arc::new(Float64Array::from(col)));
    }
    for ((arm, m), y) in values {
        let plan = &a.trial.arms[*arm].plan;
        let name = if a.trial.arms.len() > 1 {
            format!("{}.{}", plan.name, plan.metrics[*m].column)
        } else {
            plan.metrics[*m].column.clone()
        };
        fields.push(Field::new(name, DataType::Float64, true));
        // Undefined values are null, as in a trial's metric columns.
        let y: Vec<Option<f64>> = y.iter().map(|v| v.is_finite().then_some(*v)).collect();
        cols.push(Arc::new(Float64Array::from(y)));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(|e| e.to_string())
}

fn write_batch(path: &Path, batch: &RecordBatch, meta: &[(String, String)]) -> Result<(), String> {
    use crate::output::{writer_properties, AtomicFile, Codec};
    let mut tmp = AtomicFile::create(path).map_err(|e| e.to_string())?;
    let props = writer_properties(&batch.schema(), meta.to_vec(), 1 << 20, Codec::default());
    let mut w = parquet::arrow::ArrowWriter::try_new(tmp.take_file(), batch.schema(), Some(props))
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    let f = w.into_inner().map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())?;
    drop(f);
    tmp.commit_path().map_err(|e| e.to_string())?;
    Ok(())
}

/// What the table says under an output that does not vary beyond what the runs resolve.
fn variation_note(method: Method, output: &str, v: Variation) -> Option<String> {
    let indices = if method == Method::Morris {
        "its elementary effects are 0"
    } else {
        "its indices are undefined (NaN)"
    };
    match v {
        Variation::Resolved => None,
        Variation::Constant => Some(format!(
            "{output} is the same at every design point: with no variance to share out, \
             {indices}"
        )),
        Variation::WithinTolerance {
            relative_sd,
            resolution,
        } => Some(format!(
            "{output} varies only within the solver's tolerance: its standard deviation over \
             the design, {relative_sd:.1e} of its magnitude (the mean of |{output}|), is within \
             {RESOLVED_SPREAD} × (rtol × magnitude + atol) (rtol {:e}, atol {:e}), the spread \
             that the solver's error alone can leave, so {indices}; smaller tolerances in the \
             trial spec would resolve a weaker response",
            resolution.relative, resolution.absolute
        )),
    }
}

/// A table cell's number: four decimals, or four significant digits in scientific notation
/// for a number of a million or more (a Morris effect of a large output, which fixed decimals
/// would show with hundreds of digits) and, with `small`, for one below 1e-4 (a Morris effect
/// of a small output, which they would show as 0). Indices (Sobol, eFAST) keep four decimals.
fn cell_number(v: f64, small: bool) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 || (a < 1e6 && (a >= 1e-4 || !small)) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// The indices as a console table.
pub fn format_report(a: &Analysis, rep: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} — {} design, {} factors, {} evaluations, {}",
        a.trial.name,
        a.method.name(),
        a.factors.len(),
        rep.evaluations,
        rep.backend
    );
    for r in &rep.results {
        let _ = writeln!(s, "\n{} / {}", r.arm, r.output);
        let names: Vec<&str> = r.indices.values[0].iter().map(|v| v.0).collect();
        let _ = write!(s, "  {:<16}", "factor");
        for n in &names {
            let _ = write!(s, " {n:>22}");
        }
        let _ = writeln!(s);
        for (j, f) in a.factors.iter().enumerate() {
            let _ = write!(s, "  {:<16}", f.name);
            for (_, v, c) in &r.indices.values[j] {
                let small = a.method == Method::Morris;
                let cell = if c.is_nan() {
                    cell_number(*v, small)
                } else {
                    format!("{} ± {}", cell_number(*v, small), cell_number(*c, small))
                };
                let _ = write!(s, " {cell:>22}");
            }
            let _ = writeln!(s);
        }
        if let Some(note) = variation_note(a.method, &r.output, r.variation) {
            let _ = writeln!(s, "  {note}");
        }
    }
    // The level as set (99.9 %, not a rounded 100 %).
    let level = format!("{} %", (1e6 * 100.0 * a.confidence).round() / 1e6);
    let _ = match a.method {
        _ if a.bootstrap < 2 => write!(
            s,
            "\nNo confidence half-widths: bootstrap = {} resamples (at least 2 give them).",
            a.bootstrap
        ),
        Method::Efast => write!(
            s,
            "\n± : the spread of the indices between half search curves, scaled as a {level} \
             interval would be; indicative only, not a confidence interval (docs/sensitivity.md)."
        ),
        Method::Sobol | Method::Morris => {
            write!(s, "\n± : {level} bootstrap confidence half-width.")
        }
    };
    s
}
