//! `vpop simulate`: one subject, metrics (and optionally its profile) on the terminal.

use anyhow::{bail, Context};
use toml::Spanned;

use crate::backend::cpu::simulate_arm_subject;
use crate::backend::ArmPlan;
use crate::dosing::{Regimen, StateDosing};
use crate::metrics::{MetricRequest, MetricSpec};
use crate::model::CompiledModel;
use crate::solver::{check, Events, Integrator, Method, SolverOptions, Status};
use crate::trial::{dose_line, spec::parse_dose_arg};

pub const EXAMPLES: &str = "Examples:
  vpop simulate two_cmt_oral --dose amount=100,into=depot,every=12,count=14 --end 168
  vpop simulate two_cmt_oral -p cl=4 -p v1=25 --dose amount=100,into=depot --end 48 --times 0:48:2
  vpop simulate one_cmt_iv --dose amount=500,into=central,duration=0.5 --metrics auc,cmax,at(12)
  vpop simulate my_model.vpm --dose amount=10,into=depot --method rodas4 --rtol 1e-10
  vpop simulate examples/one_subject.toml
  vpop simulate one_cmt_oral --data examples/nm_dataset.csv --id 2
  vpop simulate one_cmt_oral --data records.csv --out predictions.csv";

/// What `events` takes.
pub const EVENTS_CHOICES: &str = "events is `cross` (the steps shorten across a jump with the \
     states) or `locate` (each jump located, and a step ends there)";

/// The metrics `vpop simulate` prints unless told otherwise.
const DEFAULT_METRICS: &str = "auc,cmax,tmax,cmin_last_interval,ctrough";

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// A built-in model name (see `vpop models`), a model file (.vpm), or a simulation file
    /// (.toml) holding the model, parameters, doses and settings.
    pub model: String,
    /// Parameter override, NAME=VALUE (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// A dosing line as comma-separated keys, each at most once: amount, into, every, count,
    /// start, rate, duration, modelled, steady_state (repeatable).
    #[arg(short = 'd', long = "dose", value_name = "KEY=VALUE,...")]
    pub doses: Vec<String>,
    /// End of the simulation.
    #[arg(long, default_value_t = 24.0)]
    pub end: f64,
    /// rk4, dopri5, tsit5, rosenbrock23 or rodas4.
    #[arg(long, default_value = "tsit5")]
    pub method: String,
    #[arg(long, default_value_t = 1e-8)]
    pub rtol: f64,
    #[arg(long, default_value_t = 1e-12)]
    pub atol: f64,
    /// Step size (required for rk4).
    #[arg(long)]
    pub dt: Option<f64>,
    /// At a jump of the right-hand side with the states (`if(cp > 2, …)`): `cross` it by
    /// shortening the steps, or `locate` where it happens and end a step there
    /// (docs/model-language.md, "Jumps").
    #[arg(long, default_value = "cross")]
    pub events: String,
    /// Metrics, comma-separated (e.g. auc,cmax,tmax,ctrough,auc_last_interval,time_above(1)),
    /// each of every output, or of one output named before a colon (effect:time_above(50)).
    #[arg(
        long,
        value_delimiter = ';',
        default_value = DEFAULT_METRICS
    )]
    pub metrics: Vec<String>,
    /// Print the outputs at these times: a list `0,1,2.5` or a range `from:to:step`, within
    /// [0, --end].
    #[arg(long)]
    pub times: Option<String>,
    /// A NONMEM-format dataset (CSV: ID, TIME, EVID, AMT, CMT, SS, II, ADDL, RATE, covariates):
    /// simulate its records and print the outputs on every record.
    #[arg(long, value_name = "CSV")]
    pub data: Option<std::path::PathBuf>,
    /// With --data: only this subject (ID).
    #[arg(long)]
    pub id: Option<String>,
    /// With --data: which record's covariate values hold between two records' times: `nocb`
    /// (the later record's, as in NONMEM) or `locf` (the earlier record's).
    #[arg(long, value_name = "RULE", default_value = "nocb",
          value_parser = clap::builder::PossibleValuesParser::new(crate::dosing::nonmem::Carry::NAMES))]
    pub covariates: String,
    /// With --data: also write the rows as CSV to this file.
    #[arg(long, value_name = "CSV")]
    pub out: Option<std::path::PathBuf>,
    /// The flags given on the command line (`--end`, …), at their defaults or not: set by
    /// [`SimulateArgs::given_in`]. Empty for a simulation file's settings.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl SimulateArgs {
    /// The flags `matches` (this subcommand's) holds from the command line, as `--long`
    /// names, in the order of the arguments' declaration.
    pub fn given_in(matches: &clap::ArgMatches) -> Vec<String> {
        use clap::{parser::ValueSource, Args};
        SimulateArgs::augment_args(clap::Command::new("simulate"))
            .get_arguments()
            .filter(|a| a.get_long().is_some())
            .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }
}

/// Why a dose `per` a covariate is refused here.
const PER_REFUSED: &str = "a dose per a covariate (`per`) needs a population's covariate: \
                           give the amount itself here, or run a trial spec";

/// Splits a metric list on commas that are not inside parentheses.
fn split_metrics(items: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for item in items {
        let (mut depth, mut cur) = (0, String::new());
        for ch in item.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        out.push(cur);
    }
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `0,1,2.5` or `from:to:step`.
pub fn parse_times(text: &str) -> anyhow::Result<Vec<f64>> {
    let bad =
        || anyhow::anyhow!("times '{text}': expected a list like 0,1,2.5 or a range from:to:step");
    let mut t: Vec<f64> = if let [a, b, s] = text.split(':').collect::<Vec<_>>()[..] {
        let (a, b, s): (f64, f64, f64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
            s.trim().parse().map_err(|_| bad())?,
        );
        crate::trial::resolve::time_grid(a, b, s, 10_000_001, "the step")
            .map_err(|e| anyhow::anyhow!("times '{text}': {e}"))?
    } else {
        text.split(',')
            .map(|x| x.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    if t.iter().any(|x| !x.is_finite() || *x < 0.0) {
        bail!("times must be finite and ≥ 0");
    }
    t.sort_by(f64::total_cmp);
    Ok(t)
}

/// Refuses sampling times after the simulation's end: nothing is simulated there (the values
/// would be NaN), as a trial's `[output.profile]` and `at(t)` refuse them.
fn times_within(times: &[f64], end: f64) -> Result<(), String> {
    match times.last() {
        Some(&last) if last > end => {
            Err(format!("{last} is after the end of the simulation ({end})"))
        }
        _ => Ok(()),
    }
}

/// A one-subject simulation given as a small TOML file instead of flags (docs/trial-spec.md,
/// "One subject: vpop simulate FILE"):
///
/// ```toml
/// model = "two_cmt_oral"            # or a .vpm file, relative to this file
/// params = { cl = 4.0 }
/// dose = { amount = 100, into = "depot", every = 12, count = 14 }   # and/or doses = [{…}, …]
/// end = 168
/// method = "tsit5"                  # optional; rtol, atol, dt, events too
/// metrics = ["auc", "cmax", "tmax"] # optional
/// times = [0, 1, 2, 4, 8]           # optional profile, within [0, end]; or "0:168:6"
/// ```
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a simulation file: model, params, dose or doses, end, method, rtol, atol, dt, events, metrics, times"
)]
struct SimulationFile {
    model: Spanned<String>,
    #[serde(default)]
    params: Option<Spanned<std::collections::BTreeMap<String, f64>>>,
    /// One dosing line (as an arm's `dose`); it comes before `doses`.
    #[serde(default)]
    dose: Option<Spanned<crate::trial::spec::DoseSpec>>,
    #[serde(default)]
    doses: Vec<Spanned<crate::trial::spec::DoseSpec>>,
    end: Spanned<f64>,
    #[serde(default)]
    method: Option<Spanned<String>>,
    #[serde(default)]
    rtol: Option<Spanned<f64>>,
    #[serde(default)]
    atol: Option<Spanned<f64>>,
    #[serde(default)]
    dt: Option<Spanned<f64>>,
    #[serde(default)]
    events: Option<Spanned<String>>,
    #[serde(default)]
    metrics: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    times: Option<Spanned<SampleTimes>>,
}

/// A simulation file's `times`: an array of times, as a trial's `[output.profile] times`, or
/// a string as `--times` takes it (`"0,1,2.5"`, `"0:24:0.5"`).
#[derive(Debug, Clone, PartialEq)]
enum SampleTimes {
    List(Vec<f64>),
    Text(String),
}

impl SampleTimes {
    /// The times, sorted (the errors of [`parse_times`]).
    fn times(&self) -> anyhow::Result<Vec<f64>> {
        match self {
            SampleTimes::Text(t) => parse_times(t),
            SampleTimes::List(v) => {
                if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                    bail!("times must be finite and ≥ 0");
                }
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                Ok(v)
            }
        }
    }

    /// As written, for messages.
    fn written(&self) -> String {
        match self {
            SampleTimes::Text(t) => format!("'{t}'"),
            SampleTimes::List(v) => {
                let v: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                format!("[{}]", v.join(", "))
            }
        }
    }

    /// As `--times` takes them: the list's numbers print back exactly (shortest round trip).
    fn as_flag(&self) -> String {
        match self {
            SampleTimes::Text(t) => t.clone(),
            SampleTimes::List(v) => {
                let v: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                v.join(",")
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for SampleTimes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Times;
        impl<'de> serde::de::Visitor<'de> for Times {
            type Value = SampleTimes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "sampling times: an array such as [0, 1, 2.5], or a string \"0,1,2.5\" or \
                     \"from:to:step\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SampleTimes, E> {
                Ok(SampleTimes::Text(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SampleTimes, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<f64>()? {
                    v.push(x);
                }
                Ok(SampleTimes::List(v))
            }
        }
        d.deserialize_any(Times)
    }
}

/// Reads a simulation file into the equivalent command-line arguments. Everything is checked
/// here (the model, its parameters, the doses, the metrics, the sampling times, the method and
/// the numbers), so that an error names its place in the file.
pub(crate) fn args_from_file(
    path: &str,
) -> anyhow::Result<(SimulateArgs, Vec<crate::trial::spec::DoseSpec>)> {
    use crate::trial::spec::span_of;
    let text = match crate::diag::read_text(std::path::Path::new(path)) {
        Err(crate::diag::ReadError::Text(d)) => anyhow::bail!("{d}"),
        r => r.with_context(|| format!("reading {path}"))?,
    };
    let src = crate::diag::SourceFile::new(path, text.as_str());
    let f: SimulationFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}", crate::trial::spec::toml_error(&src, &e)))?;
    let name = f.model.get_ref();
    let model = if name.ends_with(".vpm") {
        let beside = std::path::Path::new(path)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(name);
        beside.display().to_string()
    } else {
        name.clone()
    };
    let mut errors = Vec::new();
    match super::load_model(&model) {
        Ok(m) => {
            for (k, v) in f.params.iter().flat_map(|p| p.get_ref()) {
                if !v.is_finite() {
                    errors.push(src.error(
                        span_of(f.params.as_ref().unwrap()),
                        format!("parameter '{k}' must be a finite number, got {v}"),
                    ));
                }
                if m.param_index(k).is_none() {
                    let names: Vec<&str> = m.params.iter().map(|p| p.name.as_str()).collect();
                    errors.push(src.error(
                        span_of(f.params.as_ref().unwrap()),
                        format!(
                            "the model {} has no parameter '{k}' (parameters: {}){}",
                            m.name,
                            names.join(", "),
                            crate::diag::did_you_mean(k, names.iter().copied())
                        ),
                    ));
                }
            }
            for d in f.dose.iter().chain(&f.doses) {
                if let Err(e) = dose_line(&m, d.get_ref()) {
                    errors.push(src.error(e.span(span_of(d)), e.message));
                } else if d.get_ref().per.is_some() {
                    errors.push(src.error(span_of(d), PER_REFUSED));
                }
            }
            let all: Vec<usize> = (0..m.outputs.len()).collect();
            for name in f.metrics.iter().flatten() {
                // (The parser's messages name the metric.)
                let checked = MetricRequest::parse(name.get_ref())
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|r| {
                        r.outputs(&m, &all)
                            .and_then(|_| r.metric.within(*f.end.get_ref()))
                            .map_err(|e| format!("metric '{}': {e}", name.get_ref()))
                    });
                if let Err(e) = checked {
                    errors.push(src.error(span_of(name), e));
                }
            }
        }
        Err(e) => errors.push(src.error(span_of(&f.model), format!("{e:#}"))),
    }
    if let Some(t) = &f.times {
        let within = t.get_ref().times().and_then(|times| {
            times_within(&times, *f.end.get_ref()).map_err(|e| {
                anyhow::anyhow!(
                    "times {}: {e}: sampling times must lie in [0, end]",
                    t.get_ref().written()
                )
            })
        });
        if let Err(e) = within {
            errors.push(src.error(span_of(t), format!("{e:#}")));
        }
    }
    if !(f.end.get_ref().is_finite() && *f.end.get_ref() > 0.0) {
        errors.push(src.error(
            span_of(&f.end),
            "end must be a positive number (in the model's time unit)",
        ));
    }
    if let Some(m) = &f.method {
        match Method::parse(m.get_ref()) {
            Err(e) => errors.push(src.error(span_of(m), e)),
            Ok(Method::Rk4) if f.dt.is_none() => errors.push(src.error(
                span_of(m),
                "rk4 is a fixed-step method: give its step, dt = …",
            )),
            Ok(_) => {}
        }
    }
    if let Some(e) = &f.events {
        if Events::parse(e.get_ref()).is_none() {
            errors.push(src.error(span_of(e), EVENTS_CHOICES));
        }
    }
    for (v, rule) in [
        (&f.rtol, check::rtol as fn(f64) -> Result<(), &'static str>),
        (&f.atol, check::atol),
        (&f.dt, check::dt),
    ] {
        if let Some(v) = v {
            if let Err(e) = rule(*v.get_ref()) {
                errors.push(src.error(span_of(v), e));
            }
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.col));
        let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        bail!("{}", all.join("\n"));
    }
    let d = SimulateArgs {
        model,
        params: f
            .params
            .iter()
            .flat_map(|p| p.get_ref())
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        doses: Vec::new(),
        end: *f.end.get_ref(),
        method: f.method.map_or_else(|| "tsit5".into(), |m| m.into_inner()),
        rtol: f.rtol.map_or(1e-8, |r| *r.get_ref()),
        atol: f.atol.map_or(1e-12, |a| *a.get_ref()),
        dt: f.dt.map(|d| *d.get_ref()),
        events: f.events.map_or_else(|| "cross".into(), |e| e.into_inner()),
        metrics: f
            .metrics
            .map(|m| {
                let names: Vec<&str> = m.iter().map(|n| n.get_ref().as_str()).collect();
                vec![names.join(",")]
            })
            .unwrap_or_else(|| vec![DEFAULT_METRICS.into()]),
        times: f.times.map(|t| t.get_ref().as_flag()),
        data: None,
        id: None,
        covariates: "nocb".into(),
        out: None,
        given: Vec::new(),
    };
    let doses = f.dose.into_iter().chain(f.doses);
    Ok((d, doses.map(|d| d.into_inner()).collect()))
}

/// The flags given on the command line.
fn flags_given(args: &SimulateArgs) -> Vec<&str> {
    args.given.iter().map(String::as_str).collect()
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    if args.model.ends_with(".toml") {
        // The file gives every setting: a flag beside it would be ignored, so it is refused.
        let given = flags_given(args);
        if !given.is_empty() {
            bail!(
                "{}: a simulation file gives the model, doses and settings; leave out {} (or \
                 set them in the file)",
                args.model,
                given.join(", ")
            );
        }
        let (file_args, doses) = args_from_file(&args.model).map_err(|e| {
            super::run::other_kind(
                std::path::Path::new(&args.model),
                super::run::FileKind::Simulate,
                e,
            )
        })?;
        return simulate(&file_args, doses, false).map(|_| ());
    }
    let doses = args
        .doses
        .iter()
        .map(|d| parse_dose_arg(d).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    simulate(args, doses, false).map(|_| ())
}

/// Checks a simulation file as `vpop simulate FILE` would before the subject runs (model,
/// doses, metrics, times, dosing declarations, jumps in time), without running it.
/// The file's settings and the notes the run would print.
pub fn check_file(file: &str) -> anyhow::Result<(SimulateArgs, Vec<String>)> {
    let (file_args, doses) = args_from_file(file)?;
    let notes = simulate(&file_args, doses, true)?;
    Ok((file_args, notes))
}

/// Simulates one subject; with `dry`, only checks everything the run would and returns the
/// notes it would print, before it runs.
fn simulate(
    args: &SimulateArgs,
    doses: Vec<crate::trial::spec::DoseSpec>,
    dry: bool,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut note = |w: String| match dry {
        true => notes.push(w),
        false => eprintln!("note: {w}"),
    };
    let model = super::load_model(&args.model)?;
    let compiled = CompiledModel::new(&model);
    // Where the model jumps with the states, or in time without stopping
    // (docs/model-language.md, "Jumps").
    let events = Events::parse(&args.events)
        .ok_or_else(|| anyhow::anyhow!("--events '{}': {EVENTS_CHOICES}", args.events))?;
    for w in compiled.programs.notes(&model.defaults(), events) {
        note(w);
    }
    let mut params: Vec<f64> = model.defaults();
    for kv in &args.params {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--param '{kv}': expected NAME=VALUE"))?;
        let i = model.param_index(k.trim()).with_context(|| {
            let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
            format!(
                "--param '{kv}': the model has no parameter '{}' (parameters: {}){}",
                k.trim(),
                names.join(", "),
                crate::diag::did_you_mean(k.trim(), names.iter().copied())
            )
        })?;
        params[i] = v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .with_context(|| format!("--param '{kv}': '{}' is not a finite number", v.trim()))?;
    }
    let method = Method::parse(&args.method).map_err(anyhow::Error::msg)?;
    if method == Method::Rk4 && args.dt.is_none() {
        bail!("rk4 is a fixed-step method: give --dt");
    }
    // 1e-9 as written, not as 0.000000001.
    let readable = |x: f64| match x != 0.0 && !(1e-3..1e6).contains(&x.abs()) {
        true => format!("{x:e}"),
        false => format!("{x}"),
    };
    let flag = |e: &str, x: f64| anyhow::anyhow!("--{e}, got {}", readable(x));
    check::rtol(args.rtol).map_err(|e| flag(e, args.rtol))?;
    check::atol(args.atol).map_err(|e| flag(e, args.atol))?;
    if let Some(dt) = args.dt {
        check::dt(dt).map_err(|e| flag(e, dt))?;
    }
    let solver = SolverOptions {
        method,
        rtol: args.rtol,
        atol: args.atol,
        dt: args.dt,
        events,
        ..Default::default()
    };
    if let Some(data) = &args.data {
        if !doses.is_empty() {
            bail!("--data gives the doses: leave out --dose");
        }
        let ignored: Vec<&str> = flags_given(args)
            .into_iter()
            .filter(|f| ["--end", "--metrics", "--times"].contains(f))
            .collect();
        if !ignored.is_empty() {
            bail!(
                "--data prints the outputs on the dataset's records, to its last one: leave out {}",
                ignored.join(", ")
            );
        }
        return simulate_dataset(args, &model, &compiled, &params, data, &solver).map(|_| notes);
    }
    if flags_given(args)
        .iter()
        .any(|f| ["--id", "--out", "--covariates"].contains(f))
    {
        bail!(
            "--id, --out and --covariates go with --data (a dataset's subjects, its rows as \
             CSV, its covariates between records)"
        );
    }
    if !(args.end.is_finite() && args.end > 0.0) {
        bail!("--end must be a positive number");
    }
    if doses.iter().any(|d| d.per.is_some()) {
        bail!("--dose: {PER_REFUSED}");
    }
    let mut regimen = Regimen::default();
    for spec in &doses {
        regimen
            .lines
            .push(dose_line(&model, spec).map_err(|e| match e.at {
                // The message names the state.
                Some(_) => anyhow::anyhow!("{e}"),
                None => anyhow::anyhow!("dose into '{}': {e}", spec.into),
            })?);
    }
    let mut specs = Vec::new();
    for name in split_metrics(&args.metrics) {
        let request = MetricRequest::parse(&name)?;
        request
            .metric
            .within(args.end)
            .map_err(|e| anyhow::anyhow!("metric '{name}': {e}"))?;
        let all: Vec<usize> = (0..model.outputs.len()).collect();
        let of = request
            .outputs(&model, &all)
            .map_err(|e| anyhow::anyhow!("metric '{name}': {e}"))?;
        for k in of {
            let spec = MetricSpec::of_model(k, &model, request.metric);
            // As in a trial spec (docs/metrics.md).
            if specs.iter().any(|s: &MetricSpec| s.column == spec.column) {
                bail!("metric column '{}' is requested twice", spec.column);
            }
            specs.push(spec);
        }
    }
    if let Some(w) = crate::trial::resolve::area_jump_note(
        &compiled.programs,
        &model.defaults(),
        &specs,
        solver.events,
    ) {
        note(w);
    }
    let times = args
        .times
        .as_deref()
        .map(parse_times)
        .transpose()?
        .unwrap_or_default();
    times_within(&times, args.end)
        .map_err(|e| anyhow::anyhow!("--times: {e}: give times in [0, --end], or a later --end"))?;

    regimen
        .validate(model.states.len())
        .map_err(|e| anyhow::anyhow!("dosing: {e}"))?;
    let dosing: Vec<StateDosing> = compiled.bind(&params).state_dosing();
    // A declaration whose value is refused, at its place in the model file.
    for line in &regimen.lines {
        let (Some(d), Some(decl)) = (dosing.get(line.state), model.dosing.get(line.state)) else {
            continue;
        };
        let state = &model.states[line.state].name;
        // A declared rate or duration that is NaN reads as none declared (the model's NaN
        // stands for "not declared"): its value is said as NaN, at its declaration.
        let declared = |v: Option<f64>, at: usize| v.or(decl.spans[at].map(|_| f64::NAN));
        let bad = [
            ("alag", Some(d.lag), 0, "a finite number ≥ 0"),
            ("f", Some(d.bioavailability), 1, "a finite number ≥ 0"),
            ("rate", declared(d.rate, 2), 2, "a finite number > 0"),
            ("dur", declared(d.duration, 3), 3, "a finite number > 0"),
        ]
        .into_iter()
        .filter(|&(kind, ..)| {
            matches!(kind, "alag" | "f")
                || line.administration == crate::dosing::Administration::Modelled
        })
        .find(|&(kind, v, _, _)| {
            v.is_some_and(|v| match kind {
                "alag" | "f" => !(v.is_finite() && v >= 0.0),
                _ => !(v.is_finite() && v > 0.0),
            })
        });
        if let Some((kind, Some(v), at, want)) = bad {
            if let Some(span) = decl.spans[at] {
                bail!(
                    "{}",
                    model.source.error(
                        span,
                        format!("{kind}({state}) is {v} with these parameters; it must be {want}")
                    )
                );
            }
        }
    }
    regimen
        .schedule(1.0, &dosing)
        .map_err(|e| anyhow::anyhow!("dosing: {e}"))?;
    let arm = ArmPlan {
        name: "simulate".into(),
        regimen,
        metrics: specs.clone(),
        end: args.end,
        sample_times: times.clone(),
        solver: solver.clone(),
        occasions: Vec::new(),
    };
    if let Some(w) = super::run::doses_past_the_end(&arm.regimen, arm.end) {
        note(w);
    }
    // Doses after the end are never given: not carried.
    let arm = ArmPlan {
        regimen: arm.regimen.until(arm.end),
        ..arm
    };
    // The model's jumps in time are the subject's stopping points: not more than it can stop
    // at (as a trial spec's check).
    if let Err(e) =
        compiled
            .programs
            .time_jumps
            .jumps(&params, 0.0, arm.end, crate::model::jumps::Which::All)
    {
        bail!("{e} (docs/model-language.md, \"Jumps\")");
    }
    if dry {
        return Ok(notes);
    }
    let mut integrator = Integrator::new(
        method,
        model.states.len() + crate::metrics::quadrature_outputs(&specs).len(),
    );
    // The same path as a trial's subject (a steady-state start included).
    let out = simulate_arm_subject(&compiled, &params, 1.0, &arm, &mut integrator);
    println!(
        "{} — {method}, rtol {:e}, atol {:e} — status {} — {} steps ({} rejected), {} RHS evaluations",
        model.name,
        args.rtol,
        args.atol,
        out.status.name(),
        out.stats.accepted,
        out.stats.rejected,
        out.stats.rhs_evals
    );
    if let Some(line) = compiled.programs.subject_jump_summary(&params, arm.end) {
        println!("jumps in time, stopping points of the integration: {line}");
    }
    println!();
    println!("{:<32} {:>20}", "metric", "value");
    for (s, v) in specs.iter().zip(&out.metrics) {
        println!("{:<32} {:>20.10e}", s.column, v);
    }
    if !times.is_empty() {
        println!();
        print!("{:>12}", "time");
        for o in &model.outputs {
            print!(" {:>20}", o.name);
        }
        println!();
        for (i, t) in times.iter().enumerate() {
            print!("{t:>12.4}");
            for k in 0..model.outputs.len() {
                print!(" {:>20.10e}", out.profile[k * times.len() + i]);
            }
            println!();
        }
    }
    if out.status != Status::Ok {
        let steady_state_dose = arm.regimen.lines.iter().any(|l| l.steady_state);
        let why = match out.status {
            Status::NoSteadyState => Some(
                "no_steady_state: the steady state of the steady-state dose was not found; a \
                 dosed state that nothing eliminates, or a model that grows without bound, has \
                 none",
            ),
            Status::MaxSteps if out.stats.accepted == 0 && steady_state_dose => Some(
                "max_steps in the iterations to the steady state of the steady-state dose \
                 (their steps count against max_steps): the steady state may not exist (a \
                 dosed state that nothing eliminates, a dose rate above a saturable \
                 elimination's capacity), or need more steps",
            ),
            _ => None,
        };
        if let Some(why) = why {
            bail!(
                "the integration failed: {why} (docs/nonmem.md, \"How the steady state is \
                 found\")"
            );
        }
        bail!("the integration failed: {}", out.status.name());
    }
    Ok(Vec::new())
}

/// Simulates the records of a NONMEM-format dataset and prints the outputs on every record.
fn simulate_dataset(
    args: &SimulateArgs,
    model: &crate::model::Model,
    compiled: &CompiledModel,
    params: &[f64],
    data: &std::path::Path,
    solver: &SolverOptions,
) -> anyhow::Result<()> {
    use crate::backend::records::{check_subject, simulate_records, RecordBinding};
    use crate::dosing::nonmem::Dataset;
    let ds = Dataset::load(data)?;
    let subjects: Vec<_> = match &args.id {
        Some(id) => vec![ds
            .subject(id)
            .with_context(|| format!("{}: no subject with ID {id}", ds.name))?],
        None => ds.subjects.iter().collect(),
    };
    let carry = crate::dosing::nonmem::Carry::parse(&args.covariates).unwrap_or_default();
    let binding = RecordBinding::new(model, &ds.covariates).carrying(carry);
    // Every subject's doses against the model before anything is printed: each bad record
    // (up to MAX_ERRORS of them listed).
    let problems: Vec<String> = subjects
        .iter()
        .flat_map(|s| check_subject(model, compiled, params, &binding, s))
        .map(|(line, col, m)| format!("{}:{line}:{col}: {m}", ds.name))
        .collect();
    if !problems.is_empty() {
        anyhow::bail!(crate::dosing::nonmem::first_errors(problems).join("\n"));
    }
    let bound = binding.bound(&ds.covariates);
    if !bound.is_empty() {
        eprintln!(
            "dataset columns setting model parameters: {}",
            bound.join(", ")
        );
    }
    // The rows as a dataset, with --out.
    let columns = match &args.out {
        Some(_) => Some(OutColumns::new(model, &ds, &binding)?),
        None => None,
    };
    let mut csv = columns.as_ref().map(OutColumns::header).unwrap_or_default();
    print!("{:>8} {:>12} {:>5}", "ID", "TIME", "EVID");
    for o in &model.outputs {
        print!(" {:>20}", o.name);
    }
    println!();
    let mut failed = Vec::new();
    for s in subjects {
        let out = simulate_records(compiled, params, &binding, s, solver);
        if out.status != Status::Ok {
            failed.push(format!("{} ({})", s.id, out.status.name()));
        }
        for (j, r) in s.records.iter().enumerate() {
            let evid = match r.evid {
                crate::dosing::nonmem::Evid::Observation => 0,
                crate::dosing::nonmem::Evid::Dose => 1,
                crate::dosing::nonmem::Evid::Other => 2,
                crate::dosing::nonmem::Evid::Reset => 3,
                crate::dosing::nonmem::Evid::ResetDose => 4,
            };
            print!("{:>8} {:>12.4} {evid:>5}", s.id, r.time);
            for col in &out.outputs {
                print!(" {:>20.10e}", col[j]);
            }
            println!();
            if let Some(c) = &columns {
                c.row(&mut csv, &s.id, r, evid, &out.outputs, j);
            }
        }
    }
    if let Some(path) = &args.out {
        crate::output::AtomicFile::write(path, csv.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !failed.is_empty() {
        bail!("the integration failed for subjects {}", failed.join(", "));
    }
    Ok(())
}

/// The columns `--out` writes, a dataset that reads back as the records simulated: the
/// records' columns in NONMEM's capitals (`ID`, `TIME`, `EVID`, `CMT`, `AMT`, `RATE`, `SS`,
/// `II`, `ADDL`, `DV`), every output named as the model declares it (`cp`, as `vpop run` names
/// a `[data]` trial's columns), then the dataset's covariate columns. Read back, the outputs
/// are covariate columns that set nothing; a covariate column that an output takes the name of
/// is left out (said on stderr), unless it sets a model parameter (an error).
struct OutColumns {
    /// The dataset's covariate columns written, by index.
    covariates: Vec<usize>,
    header: Vec<String>,
}

/// The records' columns `--out` writes, in order.
const OUT_RECORD_COLUMNS: [&str; 10] = [
    "ID", "TIME", "EVID", "CMT", "AMT", "RATE", "SS", "II", "ADDL", "DV",
];

impl OutColumns {
    fn new(
        model: &crate::model::Model,
        ds: &crate::dosing::nonmem::Dataset,
        binding: &crate::backend::records::RecordBinding,
    ) -> anyhow::Result<OutColumns> {
        let mut header: Vec<String> = OUT_RECORD_COLUMNS.iter().map(|c| c.to_string()).collect();
        for o in &model.outputs {
            // Column names are read case-insensitively: an output named like one of the
            // records' columns (or MDV, C), or like another output but for case, would be read
            // back as that column.
            let lower = o.name.to_ascii_lowercase();
            if let Some(c) = header
                .iter()
                .chain(&["MDV".to_string(), "C".to_string()])
                .find(|c| c.to_ascii_lowercase() == lower)
            {
                bail!(
                    "--out: the model's output '{}' has the name of the column {c} (column names \
                     are read case-insensitively), which the file cannot hold twice: rename the \
                     output",
                    o.name
                );
            }
            header.push(o.name.clone());
        }
        let mut covariates = Vec::new();
        for (c, name) in ds.covariates.iter().enumerate() {
            let Some(o) = model
                .outputs
                .iter()
                .find(|o| o.name.to_ascii_lowercase() == *name)
            else {
                covariates.push(c);
                header.push(name.to_ascii_uppercase());
                continue;
            };
            if binding.param_of_covariate[c].is_some() {
                bail!(
                    "--out: the dataset's column {} sets a model parameter and the model's \
                     output '{}' has its name: the file cannot hold both",
                    name.to_ascii_uppercase(),
                    o.name
                );
            }
            eprintln!(
                "note: --out leaves out the dataset's column {}: the output '{}' takes its name",
                name.to_ascii_uppercase(),
                o.name
            );
        }
        Ok(OutColumns { covariates, header })
    }

    fn header(&self) -> String {
        let mut h = self.header.join(",");
        h.push('\n');
        h
    }

    /// Record `r` of subject `id` with its outputs `outputs[k][j]`. A missing value, and an
    /// output that is not a finite number (a failed subject's), are written `.`.
    fn row(
        &self,
        csv: &mut String,
        id: &str,
        r: &crate::dosing::nonmem::Record,
        evid: u8,
        outputs: &[Vec<f64>],
        j: usize,
    ) {
        use std::fmt::Write;
        let num = |x: f64| {
            if x.is_finite() {
                x.to_string()
            } else {
                ".".to_string()
            }
        };
        // An ID read from a quoted field can hold a comma or a quote: quoted again, so that
        // the file reads back as written.
        let id = crate::dosing::nonmem::csv_field(id);
        let cmt = if r.cmt == 0 {
            ".".to_string()
        } else {
            r.cmt.to_string()
        };
        // The items of a dose on records that give none are not written (they read as 0).
        let dose = matches!(evid, 1 | 4);
        let of_dose = |x: String| if dose { x } else { ".".to_string() };
        let _ = write!(
            csv,
            "{id},{},{evid},{cmt},{},{},{},{},{},{}",
            r.time,
            of_dose(r.amt.to_string()),
            of_dose(r.rate.to_string()),
            of_dose(r.ss.to_string()),
            of_dose(r.ii.to_string()),
            of_dose(r.addl.to_string()),
            r.dv.map_or(".".to_string(), num),
        );
        for col in outputs {
            let _ = write!(csv, ",{}", num(col[j]));
        }
        for &c in &self.covariates {
            let _ = write!(csv, ",{}", num(r.covariates[c]));
        }
        csv.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lists_split_outside_parentheses() {
        let v = split_metrics(&["auc,time_above(1, 0, 24),cmax".to_string()]);
        assert_eq!(v, ["auc", "time_above(1, 0, 24)", "cmax"]);
    }

    #[test]
    fn times_parse_as_lists_and_ranges() {
        assert_eq!(
            parse_times("0:2:0.5").unwrap(),
            vec![0.0, 0.5, 1.0, 1.5, 2.0]
        );
        assert_eq!(parse_times("3, 1,2").unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(parse_times("1:0:1").is_err());
        assert!(parse_times("a").is_err());
        assert!(parse_times("-1").is_err());
    }
}
