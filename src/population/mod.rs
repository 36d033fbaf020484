//! Virtual populations: population files (covariate DAG, parameter models, OMEGA blocks,
//! residual error) and counter-based reproducible sampling.
//!
//! A population file is TOML whose values are numbers or expressions of the model language (see
//! `docs/populations.md`). Covariates may depend on one another in any order of the file (they
//! are sorted by their dependencies; a cycle is an error); parameters are expressions of
//! covariates and etas. This module never integrates anything and never writes files.

pub mod dist;
pub mod library;
pub mod rng;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::diag::{Diagnostic, SourceFile, Span};
use crate::model::exec::{Exec, Part};
use crate::model::{lower_expr, resolve, Expr, Program, Var};
use dist::{cholesky_psd, interp, level_at_least, level_at_most, truncated_std_normal};
use rng::{subject_rng, Stream};

/// A number or an expression string.
#[derive(Debug, Clone)]
enum Value {
    Num(f64),
    Expr(String),
}

/// What a file that holds neither is told (a table such as `{ typical = 1.5, omega = 0.3 }`
/// included): what is expected, with an example.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a number or an expression in quotes, such as 30 or \"30 * (wt / 70) * \
                     exp(eta_v1)\" (the variability of an eta is given in an [[omega]] block)",
                )
            }
            fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
                Ok(Value::Num(x))
            }
            fn visit_i64<E>(self, x: i64) -> Result<Value, E> {
                Ok(Value::Num(x as f64))
            }
            fn visit_u64<E>(self, x: u64) -> Result<Value, E> {
                Ok(Value::Num(x as f64))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::Expr(s.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a covariate table: dist with its parameters, levels, expr or an empirical table"
)]
struct CovariateSpec {
    #[serde(default)]
    dist: Option<Spanned<String>>,
    #[serde(default)]
    mean: Option<Spanned<Value>>,
    #[serde(default)]
    sd: Option<Spanned<Value>>,
    #[serde(default)]
    median: Option<Spanned<Value>>,
    #[serde(default)]
    cv: Option<Spanned<Value>>,
    #[serde(default)]
    mu: Option<Spanned<Value>>,
    #[serde(default)]
    sigma: Option<Spanned<Value>>,
    #[serde(default)]
    lo: Option<Spanned<Value>>,
    #[serde(default)]
    hi: Option<Spanned<Value>>,
    /// Categorical: label → frequency (number or expression), in file order, each label and
    /// frequency with its location.
    #[serde(default)]
    levels: Option<Spanned<Levels>>,
    /// Empirical quantile table: the covariate it is indexed by.
    #[serde(default)]
    by: Option<Spanned<Value>>,
    #[serde(default)]
    x: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    quantiles: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    values: Option<Spanned<Vec<Vec<f64>>>>,
    /// A derived covariate.
    #[serde(default)]
    expr: Option<Spanned<String>>,
    /// Published targets for `vpop sample --summary`.
    #[serde(default)]
    target: Option<Spanned<Target>>,
    #[serde(default)]
    source: Option<String>,
}

impl CovariateSpec {
    /// The keys of the kinds of draw ([`COVARIATE_KEYS`] but those every covariate takes), each
    /// with its location where this table gives it.
    fn draw_keys(&self) -> [(&'static str, Option<Span>); 14] {
        let value = |v: &Option<Spanned<Value>>| v.as_ref().map(sp);
        [
            ("mean", value(&self.mean)),
            ("sd", value(&self.sd)),
            ("median", value(&self.median)),
            ("cv", value(&self.cv)),
            ("mu", value(&self.mu)),
            ("sigma", value(&self.sigma)),
            ("lo", value(&self.lo)),
            ("hi", value(&self.hi)),
            ("levels", self.levels.as_ref().map(sp)),
            ("by", value(&self.by)),
            ("x", self.x.as_ref().map(sp)),
            ("quantiles", self.quantiles.as_ref().map(sp)),
            ("values", self.values.as_ref().map(sp)),
            ("expr", self.expr.as_ref().map(sp)),
        ]
    }
}

/// What a covariate of a kind of draw is called, and the keys of its draw, by its `dist` and
/// whether it has `expr` or `levels` (`None`: no such kind).
fn keys_taken(
    dist: Option<&str>,
    expr: bool,
    levels: bool,
) -> Option<(&'static str, &'static [&'static str])> {
    Some(match (dist, expr, levels) {
        (None, true, false) => ("a derived covariate (`expr`)", &["expr"]),
        (None | Some("categorical"), false, true) => ("a categorical", &["levels"]),
        (Some("normal"), false, false) => ("a normal", &["mean", "sd", "lo", "hi"]),
        (Some("lognormal"), false, false) => {
            ("a log-normal", &["median", "cv", "mu", "sigma", "lo", "hi"])
        }
        (Some("uniform"), false, false) => ("a uniform", &["lo", "hi"]),
        (Some("empirical"), false, false) => (
            "an empirical table",
            &["by", "x", "quantiles", "values", "lo", "hi"],
        ),
        _ => return None,
    })
}

/// The keys of a covariate table ([`CovariateSpec`]'s fields), those of every kind first, then
/// those of [`CovariateSpec::draw_keys`] (a unit test holds the three lists equal).
const COVARIATE_KEYS: [&str; 17] = [
    "dist",
    "target",
    "source",
    "mean",
    "sd",
    "median",
    "cv",
    "mu",
    "sigma",
    "lo",
    "hi",
    "levels",
    "by",
    "x",
    "quantiles",
    "values",
    "expr",
];

/// The first key of a covariate table that no covariate takes, refused with the keys of that
/// covariate's kind of draw (where it has one) rather than every kind's, and the one likely
/// meant. `None` where there is none, or the text is not TOML (the typed reading says why).
fn unknown_covariate_key(src: &SourceFile) -> Option<Diagnostic> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(&src.text).ok()?;
    fn field<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<&'a DeValue<'i>> {
        t.iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.get_ref())
    }
    let Some(DeValue::Table(covariates)) = field(doc.get_ref(), "covariates") else {
        return None;
    };
    for (name, c) in covariates.iter() {
        let DeValue::Table(t) = c.get_ref() else {
            continue;
        };
        let Some((key, _)) = t
            .iter()
            .find(|(k, _)| !COVARIATE_KEYS.contains(&k.get_ref().as_ref()))
        else {
            continue;
        };
        let dist = field(t, "dist").and_then(DeValue::as_str);
        let kind = keys_taken(
            dist,
            field(t, "expr").is_some(),
            field(t, "levels").is_some(),
        );
        let list = |keys: &[&str]| {
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (every, own) = COVARIATE_KEYS.split_at(3);
        let (expected, takes): (Vec<&str>, String) = match kind {
            Some((what, keys)) => (
                keys.iter().chain(every).copied().collect(),
                format!(
                    "{what} takes {} (and, as every covariate, {})",
                    list(keys),
                    list(every)
                ),
            ),
            None => (
                COVARIATE_KEYS.to_vec(),
                format!(
                    "a covariate takes {} and those of its kind: {}",
                    list(every),
                    list(own)
                ),
            ),
        };
        let hint = crate::diag::closest(key.get_ref(), expected.iter().copied())
            .map_or(String::new(), |k| format!("; did you mean `{k}`?"));
        let span = key.span();
        return Some(src.error(
            Span::new(span.start, span.end),
            format!(
                "covariate '{}': unknown key `{}`; {takes}{hint}",
                name.get_ref(),
                key.get_ref(),
            ),
        ));
    }
    None
}

/// A categorical's levels: label → frequency, in file order.
type Levels = indexmap::IndexMap<Spanned<String>, Spanned<toml::Value>>;

/// Published summary values a covariate should reproduce.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a target table such as { mean = 70, sd = 12 } or { freq = { male = 0.5, female = 0.5 } }"
)]
pub struct Target {
    #[serde(default)]
    pub mean: Option<f64>,
    #[serde(default)]
    pub sd: Option<f64>,
    #[serde(default)]
    pub median: Option<f64>,
    #[serde(default)]
    pub p5: Option<f64>,
    #[serde(default)]
    pub p95: Option<f64>,
    /// Categorical: label → frequency.
    #[serde(default)]
    pub freq: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "an [[omega]] table: etas, with variance, cv, correlation or covariance")]
struct OmegaSpec {
    etas: Spanned<Vec<String>>,
    #[serde(default)]
    variance: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    cv: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    correlation: Option<Spanned<Vec<Vec<f64>>>>,
    #[serde(default)]
    covariance: Option<Spanned<Vec<Vec<f64>>>>,
    /// Inter-occasion variability: one independent draw per occasion.
    #[serde(default)]
    occasion: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a residual model such as { proportional = 0.1 } or { additive = 0.05 }")]
struct ResidualSpec {
    #[serde(default)]
    additive: Option<f64>,
    #[serde(default)]
    proportional: Option<f64>,
    #[serde(default)]
    exponential: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [population] table: name, description")]
struct Header {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a population file: [population], [covariates.NAME], [parameters], [[omega]], [residual]"
)]
struct FileSpec {
    /// Optional: the name is then the file's own (its stem).
    #[serde(default)]
    population: Option<Header>,
    #[serde(default)]
    covariates: indexmap::IndexMap<String, Spanned<CovariateSpec>>,
    #[serde(default)]
    parameters: indexmap::IndexMap<String, Spanned<Value>>,
    #[serde(default)]
    omega: Vec<Spanned<OmegaSpec>>,
    #[serde(default)]
    residual: indexmap::IndexMap<String, Spanned<ResidualSpec>>,
}

/// How a covariate is drawn. Expression arguments are programs over the population's slots.
#[derive(Debug, Clone)]
enum Draw {
    Normal {
        mean: Program,
        sd: Program,
    },
    LogNormal {
        mu: Program,
        sigma: Program,
    },
    Uniform {
        lo: Program,
        hi: Program,
    },
    Categorical {
        freqs: Vec<Program>,
    },
    Empirical {
        by: Program,
        x: Vec<f64>,
        quantiles: Vec<f64>,
        values: Vec<Vec<f64>>,
    },
    Derived(Program),
}

#[derive(Debug, Clone)]
struct Covariate {
    name: String,
    draw: Draw,
    /// Truncation bounds on the covariate's value.
    lo: Option<Program>,
    hi: Option<Program>,
    labels: Option<Vec<String>>,
    target: Option<Target>,
    source: Option<String>,
}

/// A covariate's expressions as parts of [`Population::cov_exec`]: its bounds, and its draw's
/// expressions in [`Draw::programs`] order.
#[derive(Debug, Clone, Default)]
struct CovParts {
    lo: Option<Part>,
    hi: Option<Part>,
    draw: Vec<Part>,
    /// A log-normal covariate's truncation bounds on the log scale, when both are constant
    /// (or absent): computed once rather than per subject.
    log_bounds: Option<(f64, f64)>,
}

/// A log-normal draw's bounds on the log scale.
fn log_bounds(lo: f64, hi: f64) -> (f64, f64) {
    (if lo > 0.0 { lo.ln() } else { f64::NEG_INFINITY }, hi.ln())
}

impl Draw {
    /// The draw's expressions: (mean, sd), (mu, sigma), (lo, hi), the frequencies, the
    /// empirical table's `by`, or the derived expression.
    fn programs(&self) -> Vec<&Program> {
        match self {
            Draw::Normal { mean, sd } => vec![mean, sd],
            Draw::LogNormal { mu, sigma } => vec![mu, sigma],
            Draw::Uniform { lo, hi } => vec![lo, hi],
            Draw::Categorical { freqs } => freqs.iter().collect(),
            Draw::Empirical { by, .. } => vec![by],
            Draw::Derived(p) => vec![p],
        }
    }
}

/// Compiles every covariate expression into one program over the population's slots.
fn compile_covariates(covariates: &[Covariate], n_slots: usize) -> (Exec, Vec<CovParts>) {
    let mut programs: Vec<&Program> = Vec::new();
    for c in covariates {
        programs.extend(c.lo.iter().chain(c.hi.iter()));
        programs.extend(c.draw.programs());
    }
    let inputs = crate::model::exec::Inputs {
        slots: n_slots,
        ..Default::default()
    };
    let (exec, parts) = Exec::parts(&programs, inputs);
    let mut parts = parts.into_iter();
    let cov_parts = covariates
        .iter()
        .map(|c| {
            let lo = c.lo.as_ref().and_then(|_| parts.next());
            let hi = c.hi.as_ref().and_then(|_| parts.next());
            let bound = |p: Option<Part>, none: f64| p.map_or(Some(none), |p| exec.constant(p));
            let log_bounds = match (
                &c.draw,
                bound(lo, f64::NEG_INFINITY),
                bound(hi, f64::INFINITY),
            ) {
                (Draw::LogNormal { .. }, Some(lo), Some(hi)) => Some(log_bounds(lo, hi)),
                _ => None,
            };
            CovParts {
                lo,
                hi,
                draw: c
                    .draw
                    .programs()
                    .iter()
                    .filter_map(|_| parts.next())
                    .collect(),
                log_bounds,
            }
        })
        .collect();
    (exec, cov_parts)
}

/// Residual error model of one output: y = f·(1 + prop·ε₁) + add·ε₂, or y = f·exp(exp·ε₁).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResidualModel {
    pub additive: f64,
    pub proportional: f64,
    pub exponential: f64,
}

impl ResidualModel {
    /// The observation for prediction `f` and standard normal draws `e1`, `e2`.
    pub fn apply(&self, f: f64, e1: f64, e2: f64) -> f64 {
        if self.exponential > 0.0 {
            f * (self.exponential * e1).exp() + self.additive * e2
        } else {
            f * (1.0 + self.proportional * e1) + self.additive * e2
        }
    }
}

/// An OMEGA block: its etas (slot indices) and lower Cholesky factor.
#[derive(Debug, Clone)]
struct Block {
    slots: Vec<usize>,
    chol: Vec<f64>,
    variances: Vec<f64>,
    /// Drawn once per occasion (inter-occasion variability) rather than once per subject.
    occasion: bool,
}

/// Scratch space of a thread evaluating a population's expressions.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    /// The parameter program's environment (see [`crate::model::exec::Exec`]).
    env: Vec<f64>,
    /// The covariate expressions' environment; its slots hold the subject's covariates as
    /// they are drawn.
    cov_env: Vec<f64>,
}

/// A population: covariates, etas and parameters, ready to sample.
#[derive(Debug, Clone)]
pub struct Population {
    pub name: String,
    pub description: String,
    source: SourceFile,
    /// In sampling (dependency) order.
    covariates: Vec<Covariate>,
    /// Every covariate expression compiled into one program, run part by part as the
    /// covariates they read are drawn; `cov_parts[c]` are covariate c's parts.
    cov_exec: Exec,
    cov_parts: Vec<CovParts>,
    eta_names: Vec<String>,
    blocks: Vec<Block>,
    param_names: Vec<String>,
    /// Every parameter in one program (subexpressions shared across parameters), compiled for
    /// the CPU with the covariates and etas as its inputs.
    param_exec: crate::model::exec::Exec,
    /// Per parameter: whether it depends on an inter-occasion eta.
    param_varies: Vec<bool>,
    /// Slots of the inter-occasion etas, in `eta_names` order.
    iov_slots: Vec<usize>,
    residual: Vec<(String, ResidualModel)>,
}

/// A population file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PopulationError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("{0}: {1}")]
    Io(String, String),
}

impl From<Diagnostic> for PopulationError {
    fn from(d: Diagnostic) -> Self {
        PopulationError::Invalid(vec![d])
    }
}

/// Sampled subjects, structure of arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampledChunk {
    pub first: u64,
    pub n: usize,
    /// `covariates[c][i]`, in [`Population::covariate_names`] order (categoricals as codes).
    pub covariates: Vec<Vec<f64>>,
    /// `etas[e][i]`, in [`Population::eta_names`] order.
    pub etas: Vec<Vec<f64>>,
    /// `parameters[p][i]`, in [`Population::parameter_names`] order.
    pub parameters: Vec<Vec<f64>>,
    /// Occasions after the first, when sampled with inter-occasion variability (`etas` and
    /// `parameters` above hold the first occasion).
    pub occasions: Vec<OccasionColumns>,
}

/// One later occasion of a sampled chunk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OccasionColumns {
    /// `etas[j][i]`: the inter-occasion etas ([`Population::iov_eta_indices`] order).
    pub etas: Vec<Vec<f64>>,
    /// `parameters[p][i]`: every parameter at this occasion.
    pub parameters: Vec<Vec<f64>>,
}

trait SpanExt {
    /// The key's span when found, else the value's.
    fn max_by(self, value: Span) -> Span;
}

impl SpanExt for Span {
    fn max_by(self, value: Span) -> Span {
        if self.start == self.end {
            value
        } else {
            self
        }
    }
}

fn sp<T>(v: &Spanned<T>) -> Span {
    Span::new(v.span().start, v.span().end)
}

impl Population {
    pub fn load(path: &Path) -> Result<Population, PopulationError> {
        let text = crate::diag::read_text(path).map_err(|e| match e {
            crate::diag::ReadError::Text(d) => PopulationError::from(d),
            crate::diag::ReadError::Io(e) => {
                PopulationError::Io(path.display().to_string(), e.to_string())
            }
        })?;
        Population::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file_name: &str, text: &str) -> Result<Population, PopulationError> {
        let src = SourceFile::new(file_name, text);
        if let Some(d) = unknown_covariate_key(&src) {
            return Err(PopulationError::Invalid(vec![d]));
        }
        let spec: FileSpec =
            toml::from_str(text).map_err(|e| crate::trial::spec::toml_error(&src, &e))?;
        Builder {
            src: &src,
            errors: Vec::new(),
            names: Vec::new(),
            etas: Vec::new(),
            levels: HashMap::new(),
        }
        .build(spec, &src)
    }

    pub fn covariate_names(&self) -> Vec<&str> {
        self.covariates.iter().map(|c| c.name.as_str()).collect()
    }
    /// Labels of a categorical covariate (by covariate index), `None` for numeric ones.
    pub fn covariate_labels(&self, c: usize) -> Option<&[String]> {
        self.covariates.get(c).and_then(|c| c.labels.as_deref())
    }
    pub fn covariate_target(&self, c: usize) -> Option<&Target> {
        self.covariates.get(c).and_then(|c| c.target.as_ref())
    }
    pub fn covariate_source(&self, c: usize) -> Option<&str> {
        self.covariates.get(c).and_then(|c| c.source.as_deref())
    }
    pub fn eta_names(&self) -> Vec<&str> {
        self.eta_names.iter().map(String::as_str).collect()
    }
    /// The OMEGA variance of each eta (the diagonal).
    pub fn eta_variances(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.eta_names.len()];
        for b in &self.blocks {
            for (k, s) in b.slots.iter().enumerate() {
                v[*s - self.covariates.len()] = b.variances[k];
            }
        }
        v
    }
    /// The OMEGA covariance between two etas (0 across blocks).
    pub fn eta_covariance(&self, a: usize, b: usize) -> f64 {
        let nc = self.covariates.len();
        for blk in &self.blocks {
            let (Some(i), Some(j)) = (
                blk.slots.iter().position(|s| *s == a + nc),
                blk.slots.iter().position(|s| *s == b + nc),
            ) else {
                continue;
            };
            let n = blk.slots.len();
            return (0..n)
                .map(|k| blk.chol[i * n + k] * blk.chol[j * n + k])
                .sum();
        }
        0.0
    }
    /// Re-evaluates one subject's derived covariates (in sampling order) and parameters after
    /// some covariates changed: `slots` holds the subject's covariates then its etas (as
    /// sampled, with the changed values written in); covariates marked in `keep` (e.g. given
    /// by a dataset) and drawn covariates keep their values. `params` receives the parameters
    /// in [`Population::parameter_names`] order.
    pub fn recompute(
        &self,
        slots: &mut [f64],
        keep: &[bool],
        scratch: &mut Scratch,
        params: &mut [f64],
    ) {
        let env = self.cov_env(&mut scratch.cov_env);
        let s0 = self.cov_exec.slots().start;
        let nc = self.covariates.len();
        env[s0..s0 + nc].copy_from_slice(&slots[..nc]);
        for (c, cov) in self.covariates.iter().enumerate() {
            if let (Draw::Derived(_), false) = (&cov.draw, keep.get(c).copied().unwrap_or(false)) {
                slots[c] = self.cov_exec.run_part(env, self.cov_parts[c].draw[0]);
                env[s0 + c] = slots[c];
            }
        }
        self.eval_params(slots, &mut scratch.env, params);
    }

    /// The covariate expressions' environment in `env`, made on first use.
    fn cov_env<'e>(&self, env: &'e mut Vec<f64>) -> &'e mut [f64] {
        if env.is_empty() {
            *env = self.cov_exec.env();
            self.cov_exec.set_params(env, &[]);
        }
        env
    }

    /// Every parameter from the covariates and etas in `slots`.
    fn eval_params(&self, slots: &[f64], env: &mut Vec<f64>, params: &mut [f64]) {
        let e = &self.param_exec;
        if env.is_empty() {
            *env = e.env();
            e.set_params(env, &[]);
        }
        let n = e.slots().len();
        env[e.slots()].copy_from_slice(&slots[..n]);
        e.run(env, params);
    }

    /// The levels of each categorical covariate in their declared order (their codes 0, 1, …),
    /// as a JSON object `{"sex": ["male", "female"]}`; `None` without categorical covariates.
    /// Parquet's dictionaries hold a part's levels in the order they first occur in it, so
    /// outputs record this for readers that order or complete their categories.
    pub fn levels_json(&self) -> Option<String> {
        let levels: serde_json::Map<String, serde_json::Value> = self
            .covariates
            .iter()
            .filter_map(|c| Some((c.name.clone(), serde_json::json!(c.labels.as_ref()?))))
            .collect();
        (!levels.is_empty()).then(|| serde_json::Value::Object(levels).to_string())
    }

    /// The covariates a derived covariate `c` (an expression of others) is computed from, in
    /// their order; empty for a drawn one. Where `c` is given rather than computed (a dataset's
    /// column), these keep their draws.
    pub fn derived_from(&self, c: usize) -> Vec<usize> {
        let nc = self.covariates.len();
        let Some(Draw::Derived(p)) = self.covariates.get(c).map(|cov| &cov.draw) else {
            return Vec::new();
        };
        let mut from: Vec<usize> = p
            .instrs
            .iter()
            .filter_map(|op| match op {
                crate::model::Op::Slot(s) if (*s as usize) < nc => Some(*s as usize),
                _ => None,
            })
            .collect();
        from.sort_unstable();
        from.dedup();
        from
    }

    /// Indices (into [`Population::eta_names`]) of the inter-occasion etas.
    pub fn iov_eta_indices(&self) -> Vec<usize> {
        let nc = self.covariates.len();
        self.iov_slots.iter().map(|s| s - nc).collect()
    }
    /// Per parameter: whether it changes from occasion to occasion.
    pub fn parameter_varies_by_occasion(&self) -> &[bool] {
        &self.param_varies
    }
    pub fn parameter_names(&self) -> Vec<&str> {
        self.param_names.iter().map(String::as_str).collect()
    }
    pub fn residual_models(&self) -> &[(String, ResidualModel)] {
        &self.residual
    }
    pub fn source_text(&self) -> &str {
        &self.source.text
    }
    pub fn file_name(&self) -> &str {
        &self.source.name
    }
    pub fn hash(&self) -> String {
        let d = Sha256::digest(self.source.text.as_bytes());
        format!(
            "sha256:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    /// Samples subjects `first..first + n` into `out`, in parallel. Each subject's values
    /// depend only on (seed, subject index).
    /// Returns the time spent, summed over the worker threads.
    pub fn sample(&self, seed: u64, first: u64, n: usize, out: &mut SampledChunk) -> Duration {
        self.sample_occasions(seed, first, n, 1, out)
    }

    /// Samples subjects with `occasions` occasions (at least one): the inter-occasion etas are
    /// drawn anew for every occasion and the parameters evaluated with them. Occasion k of
    /// subject i depends only on (seed, i, k).
    pub fn sample_occasions(
        &self,
        seed: u64,
        first: u64,
        n: usize,
        occasions: usize,
        out: &mut SampledChunk,
    ) -> Duration {
        self.sample_given(seed, first, n, occasions, &[], out)
    }

    /// [`Population::sample_occasions`] with some covariates given rather than drawn:
    /// `given[j] = (c, values)` sets covariate c of the chunk's subject k to `values[k]` (NaN:
    /// drawn as usual). Covariates that depend on given ones use the given values.
    pub fn sample_given(
        &self,
        seed: u64,
        first: u64,
        n: usize,
        occasions: usize,
        given: &[(usize, Vec<f64>)],
        out: &mut SampledChunk,
    ) -> Duration {
        let (nc, ne, np) = (
            self.covariates.len(),
            self.eta_names.len(),
            self.param_names.len(),
        );
        let occasions = occasions.max(1);
        let niov = self.iov_slots.len();
        let width = nc + ne + np + (occasions - 1) * (niov + np);
        // Blocks of subjects, each sampled on one thread in groups of LANES.
        const BLOCK: usize = 1024;
        out.first = first;
        out.n = n;
        for (cols, count) in [
            (&mut out.covariates, nc),
            (&mut out.etas, ne),
            (&mut out.parameters, np),
        ] {
            cols.resize_with(count, Vec::new);
            for col in cols.iter_mut() {
                // Not cleared: every value is written below (zeroing a reused column first had
                // been a twelfth of sampling's time).
                col.resize(n, 0.0);
            }
        }
        out.occasions.resize_with(occasions - 1, Default::default);
        for occ in out.occasions.iter_mut() {
            for (cols, count) in [(&mut occ.etas, niov), (&mut occ.parameters, np)] {
                cols.resize_with(count, Vec::new);
                for col in cols.iter_mut() {
                    col.resize(n, 0.0);
                }
            }
        }
        // One mutable slice per column and block, regrouped by block.
        let n_blocks = n.div_ceil(BLOCK);
        let mut blocks: Vec<Vec<&mut [f64]>> =
            (0..n_blocks).map(|_| Vec::with_capacity(width)).collect();
        for col in out
            .covariates
            .iter_mut()
            .chain(out.etas.iter_mut())
            .chain(out.parameters.iter_mut())
            .chain(
                out.occasions
                    .iter_mut()
                    .flat_map(|o| o.etas.iter_mut().chain(o.parameters.iter_mut())),
            )
        {
            for (b, part) in col.chunks_mut(BLOCK).enumerate() {
                blocks[b].push(part);
            }
        }
        // Each block's time: the busy time of sampling, which a shared thread pool (the CPU
        // backend integrates in the same one) would hide behind other work in wall time.
        blocks
            .par_iter_mut()
            .enumerate()
            .map(|(b, cols)| {
                let t0 = Instant::now();
                let len = BLOCK.min(n - b * BLOCK);
                let mut scratch = LaneScratch::default();
                for start in (0..len).step_by(LANES) {
                    let group = Group {
                        seed,
                        first: first + (b * BLOCK + start) as u64,
                        m: LANES.min(len - start),
                        occasions,
                        given,
                        at: b * BLOCK + start,
                    };
                    self.sample_lanes(&group, &mut scratch, cols, start);
                }
                t0.elapsed()
            })
            .sum()
    }

    /// Samples a group of subjects, one per lane: each covariate's expressions are evaluated
    /// for all of them at once ([`Exec::run_part_lanes`]), then each subject's draw from its own
    /// stream, in the same order as one subject alone would make them, so that every value is
    /// bit for bit what sampling the subject on its own gives. Writes column `c` of subject
    /// `l` to `cols[c][off + l]` (columns as in [`Population::sample_given`]).
    fn sample_lanes(&self, g: &Group, s: &mut LaneScratch, cols: &mut [&mut [f64]], off: usize) {
        let (nc, ne, np) = (
            self.covariates.len(),
            self.eta_names.len(),
            self.param_names.len(),
        );
        let ns = nc + ne;
        let m = g.m;
        let exec = &self.cov_exec;
        if s.cov_env.is_empty() {
            s.cov_env = exec.env_lanes(LANES);
            s.param_env = self.param_exec.env_lanes(LANES);
        }
        s.slots.resize(LANES * ns, 0.0);
        s.rng.clear();
        s.rng
            .extend((0..m).map(|l| subject_rng(g.seed, g.first + l as u64, Stream::Covariates)));
        for (c, (cov, parts)) in self.covariates.iter().zip(&self.cov_parts).enumerate() {
            let fixed = g.given.iter().find(|(gc, _)| *gc == c).map(|(_, v)| v);
            // The expressions, for every lane.
            let mut lanes_of = |p: Option<Part>, none: f64, out: &mut Vec<f64>| {
                out.clear();
                match p {
                    Some(p) => out.extend_from_slice(exec.run_part_lanes(&mut s.cov_env, LANES, p)),
                    None => out.resize(LANES, none),
                }
            };
            lanes_of(parts.lo, f64::NEG_INFINITY, &mut s.lo);
            lanes_of(parts.hi, f64::INFINITY, &mut s.hi);
            s.ev.resize_with(parts.draw.len(), Vec::new);
            for (k, &p) in parts.draw.iter().enumerate() {
                lanes_of(Some(p), 0.0, &mut s.ev[k]);
            }
            let slot = exec.slot_lanes(LANES, c);
            for l in 0..m {
                let v = match fixed.map(|f| f[g.at + l]).filter(|v| !v.is_nan()) {
                    Some(v) => v,
                    None => {
                        let ev = |k: usize| s.ev[k][l];
                        draw(cov, parts, s.lo[l], s.hi[l], &ev, &mut s.rng[l])
                    }
                };
                s.cov_env[slot + l] = v;
                s.slots[l * ns + c] = v;
                cols[c][off + l] = v;
            }
        }
        // Etas: z ~ N(0, I), eta = L z per block; subject-level blocks from the eta stream.
        for l in 0..m {
            let mut erng = subject_rng(g.seed, g.first + l as u64, Stream::Etas);
            let slots = &mut s.slots[l * ns..(l + 1) * ns];
            for b in self.blocks.iter().filter(|b| !b.occasion) {
                draw_block(b, &mut erng, slots);
            }
        }
        let niov = self.iov_slots.len();
        // Occasion-level blocks from the occasion stream, occasion after occasion: occasion k's
        // values do not depend on how many occasions are sampled.
        s.rng.clear();
        if niov > 0 {
            s.rng
                .extend((0..m).map(|l| subject_rng(g.seed, g.first + l as u64, Stream::Occasions)));
        }
        let pe = &self.param_exec;
        let n_read = pe.slots().len();
        for k in 0..g.occasions.max(1) {
            let out = if k == 0 {
                nc + ne
            } else {
                nc + ne + np + (k - 1) * (niov + np)
            };
            for l in 0..m {
                let slots = &mut s.slots[l * ns..(l + 1) * ns];
                if niov > 0 {
                    for b in self.blocks.iter().filter(|b| b.occasion) {
                        draw_block(b, &mut s.rng[l], slots);
                    }
                }
                if k == 0 {
                    for j in 0..ne {
                        cols[nc + j][off + l] = slots[nc + j];
                    }
                } else {
                    for (j, &sl) in self.iov_slots.iter().enumerate() {
                        cols[out + j][off + l] = slots[sl];
                    }
                }
                for (j, &v) in slots[..n_read].iter().enumerate() {
                    s.param_env[pe.slot_lanes(LANES, j) + l] = v;
                }
            }
            pe.run_lanes(&mut s.param_env, LANES);
            let first_param = if k == 0 { out } else { out + niov };
            for j in 0..np {
                cols[first_param + j][off..off + m]
                    .copy_from_slice(&pe.result_lanes(&s.param_env, LANES, j)[..m]);
            }
        }
    }
}

/// Subjects sampled together, one per lane (see [`Population::sample_lanes`]).
const LANES: usize = 64;

/// A group of subjects to sample: `m` subjects from `first`, the group's first at index `at`
/// of the chunk (for given covariates).
struct Group<'a> {
    seed: u64,
    first: u64,
    m: usize,
    occasions: usize,
    given: &'a [(usize, Vec<f64>)],
    at: usize,
}

/// A thread's scratch space for [`Population::sample_lanes`].
#[derive(Default)]
struct LaneScratch {
    cov_env: Vec<f64>,
    param_env: Vec<f64>,
    /// Each lane's covariates and etas, `slots[l · (covariates + etas) + j]`.
    slots: Vec<f64>,
    rng: Vec<rand::rngs::SmallRng>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    ev: Vec<Vec<f64>>,
}

/// One covariate's draw for one subject, from its bounds and its draw's expressions
/// (`ev(k)`, [`Draw::programs`] order).
fn draw(
    cov: &Covariate,
    parts: &CovParts,
    lo: f64,
    hi: f64,
    ev: &dyn Fn(usize) -> f64,
    rng: &mut rand::rngs::SmallRng,
) -> f64 {
    // A subject whose bounds leave no interval (hi ≤ lo, or NaN) has no value; a draw that
    // would have been made is still made where it always was, so that the subject's later
    // covariates are what they were.
    match &cov.draw {
        Draw::Normal { .. } => {
            let (m, s) = (ev(0), ev(1));
            if s > 0.0 && lo < hi {
                m + s * truncated_std_normal(rng, (lo - m) / s, (hi - m) / s)
            } else {
                f64::NAN
            }
        }
        Draw::LogNormal { .. } => {
            let (m, s) = (ev(0), ev(1));
            if s > 0.0 && lo < hi {
                let (a, b) = parts.log_bounds.unwrap_or_else(|| log_bounds(lo, hi));
                (m + s * truncated_std_normal(rng, (a - m) / s, (b - m) / s)).exp()
            } else {
                f64::NAN
            }
        }
        Draw::Uniform { .. } => {
            let (a, b) = (ev(0).max(lo), ev(1).min(hi));
            let u: f64 = rng.random();
            if a < b {
                let width = b - a;
                if width.is_finite() {
                    a + u * width
                } else {
                    // Bounds wider apart than the largest float: each weighted apart.
                    a * (1.0 - u) + b * u
                }
            } else {
                f64::NAN
            }
        }
        Draw::Categorical { freqs } => {
            // Two passes over the (few) frequencies: no allocation per subject. A subject whose
            // frequencies are not a distribution (one negative or NaN, or a sum away from 1) has
            // no category.
            let mut total = 0.0;
            let mut valid = true;
            for k in 0..freqs.len() {
                let f = ev(k);
                valid &= f >= 0.0;
                total += f.max(0.0);
            }
            let u: f64 = rng.random::<f64>() * total;
            let sums_to_one = (total - 1.0).abs() <= FREQUENCY_SUM_TOLERANCE;
            if !valid || !sums_to_one {
                return f64::NAN;
            }
            let mut acc = 0.0;
            let mut code = freqs.len().saturating_sub(1);
            for k in 0..freqs.len() {
                acc += ev(k).max(0.0);
                if u < acc {
                    code = k;
                    break;
                }
            }
            code as f64
        }
        Draw::Empirical {
            x,
            quantiles,
            values,
            ..
        } => {
            let at = ev(0);
            // Quantile function at this x: interpolate each quantile level across x.
            let qv: Vec<f64> = (0..quantiles.len())
                .map(|q| interp(x, &values.iter().map(|r| r[q]).collect::<Vec<_>>(), at))
                .collect();
            // Truncation to [lo, hi]: u uniform between the least level at which the
            // interpolated quantile function reaches lo and the greatest at which it is at
            // most hi (its point masses at the tails and at tied values kept), so the
            // distribution is truncated rather than piled up at the bounds, and bounds that
            // exclude nothing change nothing.
            let (ulo, uhi) = (
                level_at_least(quantiles, &qv, lo),
                level_at_most(quantiles, &qv, hi),
            );
            let u: f64 = rng.random();
            // No interval, or one that misses the subject's table (whose values lie between
            // its first and last quantiles').
            let (least, most) = (qv[0], qv[qv.len() - 1]);
            let interval = lo < hi;
            if !interval || lo > most || hi < least {
                return f64::NAN;
            }
            interp(quantiles, &qv, ulo + u * (uhi - ulo).max(0.0)).clamp(lo, hi)
        }
        Draw::Derived(_) => ev(0),
    }
}

/// Draws one OMEGA block's etas into their slots: z ~ N(0, I), eta = L z.
fn draw_block(b: &Block, rng: &mut impl rand::Rng, slots: &mut [f64]) {
    let n = b.slots.len();
    // A stack buffer for the usual small blocks.
    let mut stack = [0.0f64; 16];
    let mut heap = Vec::new();
    let z: &mut [f64] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap.resize(n, 0.0);
        &mut heap
    };
    for v in z.iter_mut() {
        *v = StandardNormal.sample(rng);
    }
    for i in 0..n {
        let mut e = 0.0;
        for k in 0..=i {
            e += b.chol[i * n + k] * z[k];
        }
        slots[b.slots[i]] = e;
    }
}

struct Builder<'a> {
    src: &'a SourceFile,
    errors: Vec<Diagnostic>,
    /// The names an expression may read (covariates in file order, labels, etas where its
    /// lookup takes them): what an unknown name is compared with.
    names: Vec<String>,
    etas: Vec<String>,
    /// Each categorical covariate's labels: what a comparison of it with a label is checked
    /// against.
    levels: HashMap<String, Vec<String>>,
}

impl Builder<'_> {
    /// Parses an expression given as a TOML number or string at `span`, resolving names with
    /// `lookup`. Errors point into the file (see [`Builder::parse_str`]).
    fn expr(&mut self, v: &Spanned<Value>, lookup: &dyn Fn(&str) -> Option<Var>) -> Option<Expr> {
        let span = sp(v);
        let mut e = match v.get_ref() {
            Value::Num(x) => return Some(Expr::Num(*x)),
            Value::Expr(s) => self.parse_str(s, span)?,
        };
        self.check_label_comparisons(&e);
        let names = e.free_names();
        match resolve(&mut e, self.src, &lookup) {
            Ok(()) => Some(e),
            Err(d) => {
                // The name it stopped at, and those it may have meant (a covariate later in
                // the file is one that this one's value can read).
                let unknown = names.iter().find(|(n, _)| lookup(n).is_none());
                let etas = self.etas.iter().filter(|e| lookup(e).is_some());
                let known = self.names.iter().chain(etas).map(String::as_str);
                let hint =
                    unknown.map_or(String::new(), |(n, _)| crate::diag::did_you_mean(n, known));
                self.errors.push(Diagnostic {
                    message: format!("{}{hint}", d.message),
                    ..d
                });
                None
            }
        }
    }

    /// Refuses a comparison of a categorical covariate with a label that is not one of its
    /// levels: labels are constants with the code of their position among their own
    /// categorical's levels, so `cyp2d6 == rm` would hold for whichever level of `cyp2d6` has
    /// `rm`'s position in another categorical.
    fn check_label_comparisons(&mut self, e: &Expr) {
        use crate::model::expr::BinOp;
        let mut found = Vec::new();
        e.visit(&mut |e| {
            let Expr::Binary(
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge,
                a,
                b,
            ) = e
            else {
                return;
            };
            let (
                Expr::Var(Var::Name { name: x, span: xs }),
                Expr::Var(Var::Name { name: y, span: ys }),
            ) = (a.as_ref(), b.as_ref())
            else {
                return;
            };
            for ((cov, _), (label, at)) in [((x, xs), (y, ys)), ((y, ys), (x, xs))] {
                let Some(levels) = self.levels.get(cov) else {
                    continue;
                };
                let is_label = self.levels.values().any(|l| l.contains(label));
                if is_label && !levels.contains(label) {
                    found.push(self.src.error(
                        *at,
                        format!(
                            "'{label}' is not a level of '{cov}' (its levels: {}): a label \
                             compares equal to the level at its own position, whichever \
                             categorical that is{}",
                            levels.join(", "),
                            crate::diag::did_you_mean(label, levels.iter().map(String::as_str))
                        ),
                    ));
                }
            }
        });
        self.errors.extend(found);
    }

    /// Parses the expression `s`, the TOML string written at `span` of the file (in any of the
    /// four forms, with escapes and line-ending backslashes): the names of the expression, and
    /// a syntax error, are located at the characters of the file they were decoded from. (Were
    /// the file's text at `span` not to decode to `s`, everything is located at `span`.)
    fn parse_str(&mut self, s: &str, span: Span) -> Option<Expr> {
        let map = match decode_toml_string(&self.src.text, span) {
            Some((decoded, map)) if decoded == s => map,
            _ => vec![span.start; s.len() + 1],
        };
        let at = |offset: usize| map.get(offset).copied().unwrap_or(span.start);
        match crate::model::parse_expr_str(&self.src.name, s) {
            Ok(mut e) => {
                relocate_names(&mut e, &at);
                Some(e)
            }
            Err(d) => {
                let offset = at(offset_of_line_col(s, d.line, d.col));
                self.errors
                    .push(self.src.error(Span::new(offset, offset), d.message));
                None
            }
        }
    }

    /// Every covariate, eta, parameter and category label has a name of its own: they are names
    /// in expressions (a label is a constant there) and columns of the output, beside
    /// [`SUBJECT_COLUMN`]. A clash is an error at the later declaration (a label's: at its
    /// table). Categoricals may share labels (with one code: checked where codes are given).
    fn check_names_unique(&mut self, spec: &FileSpec, specs: &[(String, Span, CovariateSpec)]) {
        let src = self.src;
        let mut kinds: HashMap<&str, &'static str> = HashMap::new();
        let article = |kind: &str| format!("{} {kind}", if kind == "eta" { "an" } else { "a" });
        let clash = |name: &str, kind: &str, other: &str| {
            format!(
                "{kind} '{name}' has the name of {}: every covariate, eta, parameter and \
                 category label needs a name of its own",
                article(other)
            )
        };
        let reserved = |name: &str, kind: &str| {
            format!("{kind} '{name}': '{SUBJECT_COLUMN}' is the output's subject column")
        };
        for (name, span, _) in specs {
            if name == SUBJECT_COLUMN {
                self.errors
                    .push(src.error(*span, reserved(name, "covariate")));
            }
            kinds.insert(name, "covariate");
        }
        for o in &spec.omega {
            let list = &o.get_ref().etas;
            for e in list.get_ref() {
                let at = eta_span(src, sp(list), e);
                match kinds.get(e.as_str()) {
                    Some(&"eta") => self
                        .errors
                        .push(src.error(at, format!("eta '{e}' is declared twice"))),
                    Some(other) => self.errors.push(src.error(at, clash(e, "eta", other))),
                    None if e == SUBJECT_COLUMN => {
                        self.errors.push(src.error(at, reserved(e, "eta")))
                    }
                    None => {
                        kinds.insert(e, "eta");
                    }
                }
            }
        }
        for (name, v) in &spec.parameters {
            let at = find_key_span(src, "parameters", name).max_by(sp(v));
            if let Value::Num(x) = v.get_ref() {
                if !x.is_finite() {
                    self.errors.push(src.error(
                        sp(v),
                        format!("parameter '{name}' must be a finite number, got {x}"),
                    ));
                }
            }
            match kinds.get(name.as_str()) {
                Some(other) => self
                    .errors
                    .push(src.error(at, clash(name, "parameter", other))),
                None if name == SUBJECT_COLUMN => {
                    self.errors.push(src.error(at, reserved(name, "parameter")))
                }
                None => {
                    kinds.insert(name, "parameter");
                }
            }
        }
        for (name, _, c) in specs {
            let Some(levels) = &c.levels else { continue };
            for key in levels.get_ref().keys() {
                let label = key.get_ref();
                if let Some(other) = kinds.get(label.as_str()) {
                    self.errors.push(src.error(
                        sp(key).max_by(sp(levels)),
                        format!(
                            "label '{label}' of '{name}' has the name of {}: a label is a \
                             constant in every expression, so it needs a name of its own",
                            article(other)
                        ),
                    ));
                }
            }
        }
    }

    /// Refuses keys that the covariate's kind of draw does not take, naming those it does.
    fn check_keys_apply(&mut self, name: &str, span: Span, c: &CovariateSpec) {
        let kind = c.dist.as_ref().map(|d| d.get_ref().as_str());
        let Some((what, takes)) = keys_taken(kind, c.expr.is_some(), c.levels.is_some()) else {
            // Refused as a whole where the draw is read.
            return;
        };
        let given = c.draw_keys();
        for (key, at) in given {
            if let (Some(at), false) = (at, takes.contains(&key)) {
                self.errors.push(self.src.error(
                    at.max_by(span),
                    format!(
                        "covariate '{name}': `{key}` does not apply to {what}, which takes {}",
                        takes
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }

    /// A target's `freq` names levels of a categorical only.
    fn check_target(&mut self, name: &str, c: &CovariateSpec) {
        let Some(t) = &c.target else { return };
        let Some(freq) = &t.get_ref().freq else {
            return;
        };
        let levels: Vec<&str> = c.levels.as_ref().map_or(Vec::new(), |l| {
            l.get_ref().keys().map(|k| k.get_ref().as_str()).collect()
        });
        let wrong: Vec<&str> = freq
            .keys()
            .map(String::as_str)
            .filter(|k| !levels.contains(k))
            .collect();
        if wrong.is_empty() {
            return;
        }
        let why = if c.levels.is_none() {
            "a target's `freq` is for a categorical".to_string()
        } else {
            format!(
                "target `freq` names {}, not among its levels ({})",
                wrong
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
                levels.join(", ")
            )
        };
        self.errors
            .push(self.src.error(sp(t), format!("covariate '{name}': {why}")));
    }

    fn build(mut self, spec: FileSpec, src: &SourceFile) -> Result<Population, PopulationError> {
        // Covariate specs with their table spans.
        let mut specs: Vec<(String, Span, CovariateSpec)> = Vec::new();
        for (name, value) in &spec.covariates {
            specs.push((
                name.clone(),
                find_key_span(src, "covariates", name).max_by(sp(value)),
                value.get_ref().clone(),
            ));
        }
        // Labels of categoricals are constants in every expression.
        let mut labels: HashMap<String, (f64, Span)> = HashMap::new();
        for (name, span, c) in &specs {
            if let Some(levels) = &c.levels {
                for (k, key) in levels.get_ref().keys().enumerate() {
                    let (label, at) = (key.get_ref(), sp(key).max_by(sp(levels)));
                    if let Err(msg) = check_label(label) {
                        self.errors
                            .push(src.error(at, format!("label of '{name}': {msg}")));
                    }
                    if let Some((code, _)) = labels.get(label) {
                        if *code != k as f64 {
                            self.errors.push(src.error(at, format!("label '{label}' of '{name}' has a different code in another categorical covariate")));
                        }
                    }
                    labels.insert(label.clone(), (k as f64, *span));
                }
                self.levels.insert(
                    name.clone(),
                    levels
                        .get_ref()
                        .keys()
                        .map(|k| k.get_ref().clone())
                        .collect(),
                );
            }
        }
        let eta_names: Vec<String> = spec
            .omega
            .iter()
            .flat_map(|o| o.get_ref().etas.get_ref().clone())
            .collect();
        let cov_names: Vec<String> = specs.iter().map(|(n, _, _)| n.clone()).collect();
        let mut label_names: Vec<(&String, Span)> =
            labels.iter().map(|(l, (_, at))| (l, *at)).collect();
        label_names.sort_by_key(|(l, at)| (at.start, l.as_str()));
        self.names = cov_names
            .iter()
            .chain(label_names.into_iter().map(|(l, _)| l))
            .cloned()
            .collect();
        self.etas = eta_names.clone();
        for (n, span, _) in &specs {
            if let Err(msg) = check_expression_name(n) {
                self.errors
                    .push(src.error(*span, format!("covariate {msg}")));
            }
        }
        for o in &spec.omega {
            let list = &o.get_ref().etas;
            for n in list.get_ref() {
                if let Err(msg) = check_expression_name(n).map_err(|m| format!("eta {m}")) {
                    self.errors.push(src.error(eta_span(src, sp(list), n), msg));
                }
            }
        }
        self.check_names_unique(&spec, &specs);
        // Dependencies → order. Names a covariate's expressions use:
        let deps_of = |c: &CovariateSpec| -> Vec<String> {
            let mut names = Vec::new();
            let mut add = |v: &Option<Spanned<Value>>| {
                if let Some(Spanned { .. }) = v {
                    if let Some(Value::Expr(s)) = v.as_ref().map(|x| x.get_ref()) {
                        if let Ok(e) = crate::model::parse_expr_str("", s) {
                            names.extend(e.free_names().into_iter().map(|(n, _)| n));
                        }
                    }
                }
            };
            for v in [
                &c.mean, &c.sd, &c.median, &c.cv, &c.mu, &c.sigma, &c.lo, &c.hi, &c.by,
            ] {
                add(v);
            }
            if let Some(e) = &c.expr {
                if let Ok(e) = crate::model::parse_expr_str("", e.get_ref()) {
                    names.extend(e.free_names().into_iter().map(|(n, _)| n));
                }
            }
            if let Some(levels) = &c.levels {
                for v in levels.get_ref().values() {
                    if let toml::Value::String(s) = v.get_ref() {
                        if let Ok(e) = crate::model::parse_expr_str("", s) {
                            names.extend(e.free_names().into_iter().map(|(n, _)| n));
                        }
                    }
                }
            }
            names.retain(|n| cov_names.contains(n));
            names
        };
        let deps: Vec<Vec<usize>> = specs
            .iter()
            .map(|(_, _, c)| {
                deps_of(c)
                    .iter()
                    .filter_map(|d| cov_names.iter().position(|x| x == d))
                    .collect()
            })
            .collect();
        let mut order = Vec::new();
        let mut state = vec![0u8; specs.len()]; // 0 new, 1 visiting, 2 done
        fn visit(
            i: usize,
            deps: &[Vec<usize>],
            state: &mut [u8],
            order: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> Result<(), Vec<usize>> {
            match state[i] {
                2 => return Ok(()),
                1 => {
                    let start = path.iter().position(|p| *p == i).unwrap_or(0);
                    return Err(path[start..].to_vec());
                }
                _ => {}
            }
            state[i] = 1;
            path.push(i);
            for &d in &deps[i] {
                visit(d, deps, state, order, path)?;
            }
            path.pop();
            state[i] = 2;
            order.push(i);
            Ok(())
        }
        for i in 0..specs.len() {
            let mut path = Vec::new();
            if let Err(cycle) = visit(i, &deps, &mut state, &mut order, &mut path) {
                let names: Vec<&str> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|k| specs[*k].0.as_str())
                    .collect();
                self.errors.push(src.error(
                    specs[cycle[0]].1,
                    format!(
                        "covariates depend on each other in a cycle: {}",
                        names.join(" → ")
                    ),
                ));
                return Err(PopulationError::Invalid(self.errors));
            }
        }
        let ordered_names: Vec<String> = order.iter().map(|i| specs[*i].0.clone()).collect();
        let nc = ordered_names.len();
        // Name lookup over slots: covariates, then etas; labels as constants.
        let slot_lookup = |limit_cov: usize, with_etas: bool| {
            let ordered_names = ordered_names.clone();
            let eta_names = eta_names.clone();
            let labels = labels.clone();
            move |s: &str| -> Option<Var> {
                if let Some(i) = ordered_names.iter().position(|n| n == s) {
                    return (i < limit_cov).then_some(Var::Slot(i));
                }
                if with_etas {
                    if let Some(j) = eta_names.iter().position(|n| n == s) {
                        return Some(Var::Slot(nc + j));
                    }
                }
                labels.get(s).map(|_| Var::Slot(usize::MAX))
            }
        };

        let mut covariates = Vec::new();
        for (pos, &i) in order.iter().enumerate() {
            let (name, span, c) = &specs[i];
            let lookup = slot_lookup(pos, false);
            let prog = |b: &mut Self, v: &Option<Spanned<Value>>, what: &str| -> Option<Program> {
                match v {
                    Some(v) => b
                        .expr(v, &lookup)
                        .map(|e| lower_with_labels(&e, v, b.src, &labels)),
                    None => {
                        b.errors.push(
                            b.src
                                .error(*span, format!("covariate '{name}': `{what}` is required")),
                        );
                        None
                    }
                }
            };
            let opt = |b: &mut Self, v: &Option<Spanned<Value>>| -> Option<Program> {
                v.as_ref().and_then(|v| {
                    b.expr(v, &slot_lookup(pos, false))
                        .map(|e| lower_with_labels(&e, v, b.src, &labels))
                })
            };
            let kind = c.dist.as_ref().map(|d| d.get_ref().as_str());
            self.check_keys_apply(name, *span, c);
            self.check_target(name, c);
            for (v, what) in [
                (&c.mean, "mean"),
                (&c.mu, "mu"),
                (&c.lo, "lo"),
                (&c.hi, "hi"),
                (&c.by, "by"),
            ] {
                check_finite(&mut self, v, what);
            }
            let draw = match (kind, &c.expr, &c.levels) {
                (None, Some(e), None) => {
                    let v = Spanned::new(e.span(), Value::Expr(e.get_ref().clone()));
                    prog(&mut self, &Some(v), "expr").map(Draw::Derived)
                }
                (None | Some("categorical"), None, Some(levels)) => {
                    let mut freqs = Vec::new();
                    let mut constant_sum = Some(0.0);
                    for (key, f) in levels.get_ref() {
                        let label = key.get_ref();
                        // The frequency's own location (its label's, or the table's, if none).
                        let at = sp(f).max_by(sp(key).max_by(sp(levels)));
                        // A string that reads nothing is as constant as a number, and checked
                        // as one.
                        let number = match f.get_ref() {
                            toml::Value::Float(x) => Some(*x),
                            toml::Value::Integer(x) => Some(*x as f64),
                            toml::Value::String(s) => constant_value(&Value::Expr(s.clone())),
                            _ => None,
                        };
                        match (f.get_ref(), number) {
                            (_, Some(x)) => {
                                constant_sum = constant_sum.map(|s| s + x);
                                if !x.is_finite() || x < 0.0 {
                                    self.errors.push(src.error(
                                        at,
                                        format!(
                                            "frequency of '{label}' must be a finite number ≥ 0, got {x}"
                                        ),
                                    ));
                                }
                                freqs.push(lower_expr(&Expr::Num(x)));
                            }
                            (toml::Value::String(s), None) => {
                                constant_sum = None;
                                let v = Spanned::new(at.start..at.end, Value::Expr(s.clone()));
                                if let Some(e) = self.expr(&v, &lookup) {
                                    freqs.push(lower_with_labels(&e, &v, src, &labels));
                                }
                            }
                            _ => self.errors.push(src.error(
                                at,
                                format!("frequency of '{label}' must be a number or an expression"),
                            )),
                        }
                    }
                    if let Some(s) = constant_sum.filter(|s| s.is_finite()) {
                        if (s - 1.0).abs() > FREQUENCY_SUM_TOLERANCE {
                            self.errors.push(src.error(
                                sp(levels),
                                format!("the frequencies of '{name}' sum to {s}, not 1"),
                            ));
                        }
                    }
                    Some(Draw::Categorical { freqs })
                }
                (Some("normal"), None, None) => {
                    let (mean, sd) = (
                        prog(&mut self, &c.mean, "mean"),
                        prog(&mut self, &c.sd, "sd"),
                    );
                    check_positive(&mut self, &c.sd, "sd");
                    mean.zip(sd).map(|(mean, sd)| Draw::Normal { mean, sd })
                }
                (Some("lognormal"), None, None) => {
                    let by_median = c.median.is_some() || c.cv.is_some();
                    if by_median && (c.mu.is_some() || c.sigma.is_some()) {
                        let given: Vec<&str> = [
                            (&c.median, "median"),
                            (&c.cv, "cv"),
                            (&c.mu, "mu"),
                            (&c.sigma, "sigma"),
                        ]
                        .iter()
                        .filter(|(v, _)| v.is_some())
                        .map(|(_, k)| *k)
                        .collect();
                        let at = [&c.mu, &c.sigma]
                            .into_iter()
                            .flatten()
                            .map(sp)
                            .next()
                            .unwrap_or(*span);
                        self.errors.push(src.error(
                            at,
                            format!(
                                "covariate '{name}': a log-normal takes median and cv, or mu and \
                                 sigma, not both (given: {})",
                                given.join(", ")
                            ),
                        ));
                        None
                    } else if by_median {
                        check_positive(&mut self, &c.cv, "cv");
                        check_positive(&mut self, &c.median, "median");
                        let (median, cv) = (
                            prog(&mut self, &c.median, "median"),
                            prog(&mut self, &c.cv, "cv"),
                        );
                        // mu = ln(median), sigma = sqrt(ln(1 + cv²)).
                        median.zip(cv).map(|(m, cv)| Draw::LogNormal {
                            mu: compose_ln(&m),
                            sigma: compose_sigma(&cv),
                        })
                    } else {
                        check_positive(&mut self, &c.sigma, "sigma");
                        let (mu, sigma) = (
                            prog(&mut self, &c.mu, "mu"),
                            prog(&mut self, &c.sigma, "sigma"),
                        );
                        mu.zip(sigma)
                            .map(|(mu, sigma)| Draw::LogNormal { mu, sigma })
                    }
                }
                (Some("uniform"), None, None) => {
                    let (lo, hi) = (prog(&mut self, &c.lo, "lo"), prog(&mut self, &c.hi, "hi"));
                    lo.zip(hi).map(|(lo, hi)| Draw::Uniform { lo, hi })
                }
                (Some("empirical"), None, None) => {
                    let by = prog(&mut self, &c.by, "by");
                    match (&c.x, &c.quantiles, &c.values) {
                        (Some(x), Some(q), Some(v)) => {
                            let (x, q) = (x.get_ref(), q.get_ref());
                            let ok_x = x.windows(2).all(|w| w[0] < w[1])
                                && !x.is_empty()
                                && x.iter().all(|a| a.is_finite());
                            let ok_q = q.windows(2).all(|w| w[0] < w[1])
                                && !q.is_empty()
                                && q.iter().all(|p| (0.0..=1.0).contains(p));
                            let ok_v = v.get_ref().len() == x.len()
                                && v.get_ref().iter().all(|r| {
                                    r.len() == q.len()
                                        && r.windows(2).all(|w| w[0] <= w[1])
                                        && r.iter().all(|a| a.is_finite())
                                });
                            // The values any subject's quantile function takes lie between
                            // the table's least and greatest values.
                            let least = v
                                .get_ref()
                                .iter()
                                .filter_map(|r| r.first())
                                .fold(f64::INFINITY, |a, b| a.min(*b));
                            let most = v
                                .get_ref()
                                .iter()
                                .filter_map(|r| r.last())
                                .fold(f64::NEG_INFINITY, |a, b| a.max(*b));
                            let outside =
                                [(&c.lo, "lo"), (&c.hi, "hi")]
                                    .into_iter()
                                    .find_map(|(b, key)| {
                                        match b.as_ref().map(|b| (b, constant_value(b.get_ref()))) {
                                            Some((b, Some(bound)))
                                                if (key == "lo" && bound > most)
                                                    || (key == "hi" && bound < least) =>
                                            {
                                                Some((b, key, bound))
                                            }
                                            _ => None,
                                        }
                                    });
                            if !(ok_x && ok_q && ok_v) {
                                self.errors.push(src.error(sp(v), format!("covariate '{name}': an empirical table needs finite, increasing x, increasing quantile levels in [0, 1], and one finite, non-decreasing row of values per x")));
                                None
                            } else if let Some((b, key, bound)) = outside {
                                self.errors.push(src.error(sp(b), format!("covariate '{name}': {key} ({bound}) leaves nothing of the table, whose values lie within [{least}, {most}]")));
                                None
                            } else {
                                by.map(|by| Draw::Empirical {
                                    by,
                                    x: x.clone(),
                                    quantiles: q.clone(),
                                    values: v.get_ref().clone(),
                                })
                            }
                        }
                        _ => {
                            self.errors.push(src.error(*span, format!("covariate '{name}': an empirical table needs x, quantiles and values")));
                            None
                        }
                    }
                }
                (Some(other), _, _)
                    if !["normal", "lognormal", "uniform", "empirical", "categorical"]
                        .contains(&other) =>
                {
                    self.errors.push(src.error(sp(c.dist.as_ref().unwrap_or(&Spanned::new(0..0, String::new()))), format!("covariate '{name}': unknown distribution '{other}' (normal, lognormal, uniform, categorical, empirical)")));
                    None
                }
                _ => {
                    self.errors.push(src.error(*span, format!("covariate '{name}': give either `dist = …` with its arguments, `levels = {{…}}` for a categorical, or `expr = \"…\"`")));
                    None
                }
            };
            if let (Some("lognormal"), Some(h)) = (kind, &c.hi) {
                if let Some(b) = constant_value(h.get_ref()) {
                    if b <= 0.0 {
                        self.errors.push(src.error(
                            sp(h),
                            format!(
                                "covariate '{name}': hi ({b}) leaves a log-normal nothing: its \
                                 values are > 0"
                            ),
                        ));
                    }
                }
            }
            if let (Some(l), Some(h)) = (&c.lo, &c.hi) {
                if let (Some(a), Some(b)) =
                    (constant_value(l.get_ref()), constant_value(h.get_ref()))
                {
                    if a.partial_cmp(&b) != Some(std::cmp::Ordering::Less) {
                        self.errors.push(src.error(
                            sp(h),
                            format!("covariate '{name}': hi ({b}) must be above lo ({a})"),
                        ));
                    }
                }
            }
            let (lo, hi) = (opt(&mut self, &c.lo), opt(&mut self, &c.hi));
            let is_uniform = matches!(draw, Some(Draw::Uniform { .. }));
            if let Some(draw) = draw {
                covariates.push(Covariate {
                    name: name.clone(),
                    draw,
                    lo: if is_uniform { None } else { lo },
                    hi: if is_uniform { None } else { hi },
                    labels: c
                        .levels
                        .as_ref()
                        .map(|l| l.get_ref().keys().map(|k| k.get_ref().clone()).collect()),
                    target: c.target.as_ref().map(|t| t.get_ref().clone()),
                    source: c.source.clone(),
                });
            }
        }

        // OMEGA blocks.
        let mut blocks = Vec::new();
        for o in &spec.omega {
            let span = sp(o);
            let om = o.get_ref();
            let names = om.etas.get_ref();
            let n = names.len();
            // Where the matrix is given: its errors point there.
            let mut at: Span;
            let var: Option<Vec<f64>> = match (&om.variance, &om.cv, &om.covariance) {
                (Some(v), None, None) => {
                    at = sp(v);
                    Some(v.get_ref().clone())
                }
                (None, Some(cv), None) => {
                    at = sp(cv);
                    if let Some((c, e)) = cv
                        .get_ref()
                        .iter()
                        .zip(names)
                        .find(|(c, _)| !(**c >= 0.0 && c.is_finite()))
                    {
                        self.errors.push(
                            src.error(at, format!("cv {c} of '{e}' must be a finite number ≥ 0")),
                        );
                        continue;
                    }
                    Some(cv.get_ref().iter().map(|c| ln_1_plus_square(*c)).collect())
                }
                (None, None, Some(c)) => {
                    at = sp(c);
                    if let Some(r) = &om.correlation {
                        self.errors.push(src.error(sp(r), "correlation = [[…]] goes with variance = […] or cv = […]; a covariance matrix holds its correlations"));
                        continue;
                    }
                    None
                }
                _ => {
                    self.errors.push(src.error(span, "an [[omega]] block needs exactly one of variance = […], cv = […] or covariance = [[…]]"));
                    continue;
                }
            };
            let matrix: Vec<f64> = match (var, &om.covariance) {
                (Some(v), _) => {
                    if v.len() != n {
                        self.errors
                            .push(src.error(at, format!("{} etas but {} variances", n, v.len())));
                        continue;
                    }
                    if let Some((c, e)) = v
                        .iter()
                        .zip(names)
                        .find(|(x, _)| !x.is_finite() || **x < 0.0)
                    {
                        let msg = if c.is_finite() {
                            format!("variance {c} of '{e}' must be ≥ 0")
                        } else {
                            format!("variance {c} of '{e}' is not a finite number")
                        };
                        self.errors.push(src.error(at, msg));
                        continue;
                    }
                    let corr = match &om.correlation {
                        Some(c) => {
                            at = sp(c);
                            c.get_ref().clone()
                        }
                        None => (0..n)
                            .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
                            .collect(),
                    };
                    if corr.len() != n || corr.iter().any(|r| r.len() != n) {
                        self.errors
                            .push(src.error(at, format!("the correlation matrix must be {n}×{n}")));
                        continue;
                    }
                    if let Some((i, _)) = corr.iter().enumerate().find(|(i, r)| {
                        r[*i] != 1.0 || r.iter().any(|x| x.is_nan() || x.abs() > 1.0)
                    }) {
                        self.errors.push(src.error(at, format!("correlation row {}: the diagonal must be 1 and every entry in [−1, 1]", i + 1)));
                        continue;
                    }
                    // Asymmetry named in the correlations given, not the covariances made of them.
                    if let Some((i, j)) = (0..n)
                        .flat_map(|i| (0..i).map(move |j| (i, j)))
                        .find(|&(i, j)| corr[i][j] != corr[j][i])
                    {
                        self.errors.push(src.error(at, format!(
                            "the correlation matrix is not symmetric: entry ({}, {}) = {} but ({}, {}) = {}",
                            i + 1, j + 1, corr[i][j], j + 1, i + 1, corr[j][i]
                        )));
                        continue;
                    }
                    let sd: Vec<f64> = v.iter().map(|x| x.sqrt()).collect();
                    (0..n * n)
                        .map(|k| corr[k / n][k % n] * sd[k / n] * sd[k % n])
                        .collect()
                }
                (None, Some(c)) => {
                    let c = c.get_ref();
                    if c.len() != n || c.iter().any(|r| r.len() != n) {
                        self.errors
                            .push(src.error(at, format!("the covariance matrix must be {n}×{n}")));
                        continue;
                    }
                    if let Some(x) = c.iter().flatten().find(|x| !x.is_finite()) {
                        self.errors
                            .push(src.error(at, format!("covariance {x} is not a finite number")));
                        continue;
                    }
                    c.concat()
                }
                (None, None) => continue,
            };
            match cholesky_psd(&matrix, n) {
                Ok(chol) => {
                    let slots = names
                        .iter()
                        .map(|e| nc + eta_names.iter().position(|x| x == e).unwrap_or(0))
                        .collect();
                    blocks.push(Block {
                        slots,
                        chol,
                        variances: (0..n).map(|i| matrix[i * n + i]).collect(),
                        occasion: om.occasion,
                    });
                }
                Err(msg) => self
                    .errors
                    .push(src.error(at, format!("OMEGA block {:?}: {msg}", names))),
            }
        }

        // Parameters: expressions of covariates and etas.
        let mut params = Vec::new();
        for (name, v) in &spec.parameters {
            if let Err(msg) = crate::model::parse::check_population_name(name) {
                self.errors.push(src.error(sp(v), msg));
                continue;
            }
            if let Some(e) = self.expr(v, &slot_lookup(nc, true)) {
                params.push((name.clone(), with_labels(&e, v, src, &labels)));
            }
        }
        let mut residual = Vec::new();
        for (output, r) in &spec.residual {
            let rr = r.get_ref();
            let m = ResidualModel {
                additive: rr.additive.unwrap_or(0.0),
                proportional: rr.proportional.unwrap_or(0.0),
                exponential: rr.exponential.unwrap_or(0.0),
            };
            if [m.additive, m.proportional, m.exponential]
                .iter()
                .any(|x| !x.is_finite() || *x < 0.0)
            {
                self.errors.push(src.error(
                    sp(r),
                    format!("residual error of '{output}': standard deviations must be ≥ 0"),
                ));
            }
            // Both would scale the prediction: the model has one multiplicative error.
            if rr.exponential.is_some() && rr.proportional.is_some() {
                self.errors.push(src.error(
                    sp(r),
                    format!(
                        "residual error of '{output}': give `exponential` or `proportional`, \
                         not both (either may go with `additive`)"
                    ),
                ));
            }
            residual.push((output.clone(), m));
        }
        if !self.errors.is_empty() {
            let mut e = self.errors;
            e.sort_by_key(|d| (d.line, d.col));
            e.dedup();
            return Err(PopulationError::Invalid(e));
        }
        let param_program = {
            let mut b = crate::model::lower::Builder::new();
            let regs: Vec<_> = params.iter().map(|(_, e)| b.expr(e, &[])).collect();
            b.finish(regs)
        };
        let mut iov_slots: Vec<usize> = blocks
            .iter()
            .filter(|b| b.occasion)
            .flat_map(|b| b.slots.iter().copied())
            .collect();
        iov_slots.sort_unstable();
        let param_varies = depends_on_slots(&param_program, &iov_slots);
        let nc_slots = covariates.len() + eta_names.len();
        let (cov_exec, cov_parts) = compile_covariates(&covariates, nc_slots);
        let header = spec.population.unwrap_or_else(|| Header {
            name: Path::new(&src.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            description: String::new(),
        });
        Ok(Population {
            name: header.name,
            description: header.description,
            source: src.clone(),
            cov_exec,
            cov_parts,
            covariates,
            eta_names,
            blocks,
            param_names: params.iter().map(|(n, _)| n.clone()).collect(),
            param_exec: crate::model::exec::Exec::new(
                &param_program,
                crate::model::exec::Inputs {
                    slots: nc_slots,
                    ..Default::default()
                },
            ),
            param_varies,
            iov_slots,
            residual,
        })
    }
}

/// Per result of `p`: whether it reads any of `slots`.
fn depends_on_slots(p: &Program, slots: &[usize]) -> Vec<bool> {
    let mut dep = vec![false; p.instrs.len()];
    for (i, op) in p.instrs.iter().enumerate() {
        dep[i] = match op {
            crate::model::Op::Slot(s) => slots.contains(&(*s as usize)),
            _ => op.args().any(|a| dep[a as usize]),
        };
    }
    p.results.iter().map(|r| dep[*r as usize]).collect()
}

/// Replaces category-label placeholders by their codes, then lowers.
fn lower_with_labels(
    e: &Expr,
    v: &Spanned<Value>,
    src: &SourceFile,
    labels: &HashMap<String, (f64, Span)>,
) -> Program {
    lower_expr(&with_labels(e, v, src, labels))
}

/// Replaces category-label placeholders by their codes.
fn with_labels(
    e: &Expr,
    v: &Spanned<Value>,
    src: &SourceFile,
    labels: &HashMap<String, (f64, Span)>,
) -> Expr {
    // Re-parse to recover the names at placeholder positions (placeholders are Slot(usize::MAX)).
    let orig = match v.get_ref() {
        Value::Num(x) => Expr::Num(*x),
        Value::Expr(s) => crate::model::parse_expr_str(&src.name, s).unwrap_or(Expr::Num(f64::NAN)),
    };
    fn walk(e: &mut Expr, orig: &Expr, labels: &HashMap<String, (f64, Span)>) {
        match (e, orig) {
            (e @ Expr::Var(Var::Slot(usize::MAX)), Expr::Var(Var::Name { name, .. })) => {
                *e = Expr::Num(labels.get(name).map(|l| l.0).unwrap_or(f64::NAN));
            }
            (Expr::Unary(_, a), Expr::Unary(_, b)) => walk(a, b, labels),
            (Expr::Binary(_, a, b), Expr::Binary(_, c, d)) => {
                walk(a, c, labels);
                walk(b, d, labels);
            }
            (Expr::Call(_, a), Expr::Call(_, b)) => {
                a.iter_mut().zip(b).for_each(|(x, y)| walk(x, y, labels))
            }
            (Expr::If(a, b, c), Expr::If(d, e, f)) => {
                walk(a, d, labels);
                walk(b, e, labels);
                walk(c, f, labels);
            }
            _ => {}
        }
    }
    let mut e = e.clone();
    walk(&mut e, &orig, labels);
    e
}

/// A constant program's value.
fn constant(p: &Program) -> Option<f64> {
    match p.instrs.as_slice() {
        [crate::model::Op::Const(v)] => Some(*v),
        _ => None,
    }
}

fn compose_ln(p: &Program) -> Program {
    if let Some(v) = constant(p) {
        return lower_expr(&Expr::Num(v.ln()));
    }
    let mut q = p.clone();
    let r = p.results[0];
    q.instrs.push(crate::model::Op::Log(r));
    q.results = vec![(q.instrs.len() - 1) as u32];
    q
}

/// Below it, ln(1 + x) is taken as ln(1 + x) · x / ((1 + x) − 1), which keeps x's digits that
/// 1 + x rounds away (1 + x is 1 for x below 1.1e-16: a CV of 1e-8 would have no spread).
const SMALL_SQUARE: f64 = 1e-4;

/// ln(1 + cv²), the log-normal variance of a CV, to full precision however small the CV; the
/// same bits as ln(1 + cv²) for CVs of 1 % and more.
fn ln_1_plus_square(cv: f64) -> f64 {
    let x = cv * cv;
    if x < SMALL_SQUARE {
        x.ln_1p()
    } else {
        (1.0 + x).ln()
    }
}

/// The log-normal sigma of a CV, √ln(1 + cv²): below 1 %, |cv| · √(ln(1 + x)/x) with x = cv²,
/// which holds the CV's spread where cv² is below the smallest float (a CV of 1e-170); the
/// same bits as √ln(1 + cv²) for CVs of 1 % and more.
fn lognormal_sigma(cv: f64) -> f64 {
    let x = cv * cv;
    if x >= SMALL_SQUARE {
        (1.0 + x).ln().sqrt()
    } else if x > 0.0 {
        cv.abs() * (x.ln_1p() / x).sqrt()
    } else {
        cv.abs()
    }
}

/// [`lognormal_sigma`] of the CV that `p` computes.
fn compose_sigma(p: &Program) -> Program {
    use crate::model::Op;
    if let Some(cv) = constant(p) {
        return lower_expr(&Expr::Num(lognormal_sigma(cv)));
    }
    let mut q = p.clone();
    let cv = p.results[0];
    let b = q.instrs.len() as u32;
    q.instrs.extend([
        Op::Mul(cv, cv),                    // b: x = cv²
        Op::Const(1.0),                     // b + 1
        Op::Add(b, b + 1),                  // b + 2: u = 1 + x
        Op::Log(b + 2),                     // b + 3: ln(u)
        Op::Sub(b + 2, b + 1),              // b + 4: u − 1
        Op::Div(b + 3, b + 4),              // b + 5: ln(u) / (u − 1), which is ln(1 + x)/x
        Op::Eq(b + 2, b + 1),               // b + 6: u = 1
        Op::Select(b + 6, b + 1, b + 5),    // b + 7: ln(1 + x)/x, 1 where u = 1
        Op::Abs(cv),                        // b + 8
        Op::Sqrt(b + 7),                    // b + 9
        Op::Mul(b + 8, b + 9),              // b + 10: |cv| · √(ln(1 + x)/x)
        Op::Const(SMALL_SQUARE),            // b + 11
        Op::Lt(b, b + 11),                  // b + 12: x below it
        Op::Sqrt(b + 3),                    // b + 13: √ln(u)
        Op::Select(b + 12, b + 10, b + 13), // b + 14
    ]);
    q.results = vec![b + 14];
    q
}

/// The value of a number, or of an expression that reads nothing (no covariate, eta or label:
/// `"12 - 13"`, `"2 * pi"`), which is the same for every subject and so checked where it is
/// read, as a number is; `None` for an expression that reads something (checked subject by
/// subject) or does not parse (an error where it is compiled).
fn constant_value(v: &Value) -> Option<f64> {
    let s = match v {
        Value::Num(x) => return Some(*x),
        Value::Expr(s) => s,
    };
    let e = crate::model::parse_expr_str("", s).ok()?;
    let mut reads = false;
    e.visit(&mut |n| reads |= matches!(n, Expr::Var(_)));
    (!reads).then(|| e.eval(&|_| f64::NAN))
}

/// A constant given for `what` ([`constant_value`]) is finite and > 0 (expressions that read
/// something are checked subject by subject).
fn check_positive(b: &mut Builder<'_>, v: &Option<Spanned<Value>>, what: &str) {
    if let Some(v) = v {
        if let Some(x) = constant_value(v.get_ref()) {
            if x.is_infinite() && x > 0.0 {
                b.errors.push(b.src.error(
                    sp(v),
                    format!("{what} must be a finite number > 0, got {x}"),
                ));
            } else if x.is_nan() || x <= 0.0 {
                b.errors
                    .push(b.src.error(sp(v), format!("{what} must be > 0, got {x}")));
            }
        }
    }
}

/// A constant given for `what` ([`constant_value`]) is finite (NaN and infinities are refused;
/// a bound that is not wanted is left out).
fn check_finite(b: &mut Builder<'_>, v: &Option<Spanned<Value>>, what: &str) {
    if let Some(v) = v {
        if let Some(x) = constant_value(v.get_ref()) {
            if !x.is_finite() {
                b.errors.push(
                    b.src
                        .error(sp(v), format!("{what} must be a finite number, got {x}")),
                );
            }
        }
    }
}

/// How far a categorical's frequencies may sum from 1 (constant ones are refused beyond it; a
/// subject whose frequencies, given by expressions, do is NaN).
const FREQUENCY_SUM_TOLERANCE: f64 = 1e-6;

/// The code of a categorical covariate's value among `labels` levels as written to Arrow
/// dictionary keys: none (null) for a subject without a category (NaN).
pub fn category_code(x: f64, labels: usize) -> Option<u16> {
    (x >= 0.0 && (x as usize) < labels).then_some(x as u16)
}

/// The name of the column that numbers the subjects in sampled populations and trial outputs.
pub const SUBJECT_COLUMN: &str = "subject_id";

/// The location of eta `name` in the `etas = [...]` list at `list` (written as a basic or a
/// literal string).
fn eta_span(src: &SourceFile, list: Span, name: &str) -> Span {
    let text = src.text.get(list.start..list.end);
    let at = ['"', '\'']
        .iter()
        .find_map(|q| text.and_then(|t| t.find(&format!("{q}{name}{q}"))))
        .map_or(list.start, |i| list.start + i + 1);
    Span::new(at, at + name.len())
}

/// The functions expressions call by name (and `if`).
fn is_function_name(name: &str) -> bool {
    name == "if" || crate::model::Func::from_name(name).is_some()
}

/// Checks the name of a covariate or an eta, a name in expressions: the name rules of
/// [`crate::model::parse::check_population_name`], and not the name of a function, which
/// `name(…)` would call while `name` alone would read the quantity.
fn check_expression_name(name: &str) -> Result<(), String> {
    crate::model::parse::check_population_name(name)?;
    if is_function_name(name) {
        return Err(format!(
            "'{name}' cannot be a name here: it is the name of a function in expressions"
        ));
    }
    Ok(())
}

/// Checks a category label: a constant in every expression, so written as a name there.
fn check_label(label: &str) -> Result<(), String> {
    check_expression_name(label)
        .map_err(|m| format!("{m} (a label is a constant in expressions, written as a name)"))
}

/// Decodes the TOML string written at `span` of `text` (basic, literal, multi-line basic or
/// multi-line literal): its value, and for each of its bytes, then its end, the offset in `text`
/// of the character it comes from (an escape's bytes: its backslash). The newline right after a
/// multi-line string's opening delimiter is not part of the value, nor is a line-ending
/// backslash with the whitespace and newlines after it. `None` where `span` is not a string.
fn decode_toml_string(text: &str, span: Span) -> Option<(String, Vec<usize>)> {
    let raw = text.get(span.start..span.end)?;
    let (delim, escapes, multi_line) = if raw.starts_with("\"\"\"") {
        ("\"\"\"", true, true)
    } else if raw.starts_with("'''") {
        ("'''", false, true)
    } else if raw.starts_with('"') {
        ("\"", true, false)
    } else if raw.starts_with('\'') {
        ("'", false, false)
    } else {
        return None;
    };
    if raw.len() < 2 * delim.len() || !raw.ends_with(delim) {
        return None;
    }
    let end = raw.len() - delim.len();
    let mut i = delim.len();
    if multi_line {
        let body = raw.get(i..end)?;
        i += if body.starts_with('\n') {
            1
        } else if body.starts_with("\r\n") {
            2
        } else {
            0
        };
    }
    let mut value = String::new();
    let mut map = Vec::new();
    while i < end {
        let c = raw.get(i..end)?.chars().next()?;
        if c != '\\' || !escapes {
            map.extend((0..c.len_utf8()).map(|k| span.start + i + k));
            value.push(c);
            i += c.len_utf8();
            continue;
        }
        let rest = raw.get(i + 1..end)?;
        let hex = |digits: usize| -> Option<char> {
            let h = rest.get(1..1 + digits)?;
            if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            char::from_u32(u32::from_str_radix(h, 16).ok()?)
        };
        let (decoded, len) = match rest.chars().next()? {
            'b' => ('\u{8}', 2),
            'e' => ('\u{1b}', 2),
            'f' => ('\u{c}', 2),
            'n' => ('\n', 2),
            'r' => ('\r', 2),
            't' => ('\t', 2),
            '\\' => ('\\', 2),
            '"' => ('"', 2),
            'x' => (hex(2)?, 4),
            'u' => (hex(4)?, 6),
            'U' => (hex(8)?, 10),
            ' ' | '\t' | '\r' | '\n' if multi_line => {
                // A line-ending backslash: the whitespace and newlines after it go too.
                let kept = rest.trim_start_matches([' ', '\t', '\r', '\n']);
                i += 1 + rest.len() - kept.len();
                continue;
            }
            _ => return None,
        };
        map.extend((0..decoded.len_utf8()).map(|_| span.start + i));
        value.push(decoded);
        i += len;
    }
    map.push(span.start + end);
    Some((value, map))
}

/// The byte offset in `text` of 1-based `line` and `col` (columns counting characters).
fn offset_of_line_col(text: &str, line: usize, col: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = text.get(start..).unwrap_or("");
    start
        + rest
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

/// Moves the location of every name in `e` from an offset in the expression's text to `at` it.
fn relocate_names(e: &mut Expr, at: &dyn Fn(usize) -> usize) {
    match e {
        Expr::Num(_) => {}
        Expr::Var(Var::Name { span, .. }) => *span = Span::new(at(span.start), at(span.end)),
        Expr::Var(_) => {}
        Expr::Unary(_, a) => relocate_names(a, at),
        Expr::Binary(_, a, b) => {
            relocate_names(a, at);
            relocate_names(b, at);
        }
        Expr::Call(_, args) => args.iter_mut().for_each(|a| relocate_names(a, at)),
        Expr::If(c, a, b) => {
            relocate_names(c, at);
            relocate_names(a, at);
            relocate_names(b, at);
        }
    }
}

/// The location of `name = …` inside `[section]` (or anywhere when section is empty), for errors
/// about a whole entry.
fn find_key_span(src: &SourceFile, section: &str, name: &str) -> Span {
    let text = &src.text;
    let start = if section.is_empty() {
        0
    } else {
        text.find(&format!("[{section}")).unwrap_or(0)
    };
    let mut off = start;
    for line in text[start..].split_inclusive('\n') {
        let t = line.trim_start();
        let dotted = format!("{section}.{name}");
        if t.starts_with(name) && t[name.len()..].trim_start().starts_with('=')
            || t.starts_with(&format!("[{dotted}]"))
        {
            let col = line.len() - t.len();
            return Span::new(off + col, off + col + name.len());
        }
        off += line.len();
    }
    Span::new(start, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three lists of a covariate table's keys agree: [`COVARIATE_KEYS`] with the fields
    /// serde reads (as its own message for an unknown key names them), its tail with
    /// [`CovariateSpec::draw_keys`], and every kind's keys in [`keys_taken`] are among them.
    #[test]
    fn covariate_keys_are_the_fields_read() {
        let err = toml::from_str::<CovariateSpec>("zzz = 1\n")
            .unwrap_err()
            .to_string();
        let expected = err
            .split_once("expected one of")
            .unwrap_or_else(|| panic!("no field list in: {err}"))
            .1;
        let mut serde_fields: Vec<&str> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .take_while(|k| !k.contains('\n'))
            .collect();
        let mut listed = COVARIATE_KEYS.to_vec();
        serde_fields.sort_unstable();
        listed.sort_unstable();
        assert_eq!(serde_fields, listed, "{err}");
        let draw: Vec<&str> = CovariateSpec::default()
            .draw_keys()
            .iter()
            .map(|(k, at)| {
                assert!(at.is_none());
                *k
            })
            .collect();
        assert_eq!(draw, COVARIATE_KEYS[3..]);
        for dist in [None, Some("normal"), Some("lognormal"), Some("uniform")]
            .into_iter()
            .chain(["empirical", "categorical", "weibull"].map(Some))
        {
            for (expr, levels) in [(false, false), (true, false), (false, true)] {
                if let Some((_, keys)) = keys_taken(dist, expr, levels) {
                    assert!(keys.iter().all(|k| draw.contains(k)), "{dist:?}: {keys:?}");
                }
            }
        }
    }

    /// `decode_toml_string` decodes every form of TOML string as the toml crate does, and maps
    /// each character that is not an escape to itself in the file.
    #[test]
    fn toml_strings_decode_with_their_locations() {
        #[derive(Deserialize)]
        struct One {
            k: Spanned<String>,
        }
        for raw in [
            r#""a b""#,
            r#""""#,
            r#""x\t\"y\\ \u00e9\U0001F600 \x41 \e\b\f\n\r é""#,
            r"'a \t b'",
            "''",
            "'''\na\nb'''",
            "'''\r\na\r\nb'' '''",
            "'''a''''",
            "\"\"\"\n  a \\\n  \n   b\\t\"\"\"",
            "\"\"\"\r\n  a \\  \r\n\r\n   b\r\nc\"\"\"\"\"",
            "\"\"\"a\\\n\"\"\"",
            "\"\"\"\"\"\"",
        ] {
            let text = format!("k = {raw}\n");
            let one: One = toml::from_str(&text).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let (value, map) = decode_toml_string(&text, sp(&one.k))
                .unwrap_or_else(|| panic!("{raw}: not decoded"));
            assert_eq!(&value, one.k.get_ref(), "{raw}");
            assert_eq!(map.len(), value.len() + 1, "{raw}");
            for (i, c) in value.char_indices() {
                let at = &text[map[i]..];
                assert!(
                    at.starts_with(c) || at.starts_with('\\'),
                    "{raw}: {c:?} at {i}"
                );
            }
            // The end: the closing delimiter.
            let close = &raw[raw.len() - 1..];
            assert!(text[map[value.len()]..].starts_with(close), "{raw}");
        }
        let text = "k = 1";
        assert_eq!(decode_toml_string(text, Span::new(4, 5)), None);
        assert_eq!(decode_toml_string(text, Span::new(4, 9)), None);
    }

    #[test]
    fn the_adult_population_loads_and_samples() {
        let p = Population::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/populations/adult_healthy.toml"
        )))
        .unwrap();
        assert_eq!(p.parameter_names(), ["ka", "cl", "v1", "q", "v2"]);
        let mut c = SampledChunk::default();
        p.sample(1, 0, 1000, &mut c);
        let names = p.covariate_names();
        let wt = &c.covariates[names.iter().position(|n| *n == "wt").unwrap()];
        assert!(wt.iter().all(|w| w.is_finite() && *w > 30.0 && *w < 150.0));
        assert!(c
            .parameters
            .iter()
            .all(|col| col.iter().all(|v| v.is_finite() && *v > 0.0)));
    }
}
