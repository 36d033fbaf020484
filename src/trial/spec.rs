//! The trial spec file (TOML) as written by users, with source spans for every value that can be
//! wrong, and the dose syntax shared with `vpop simulate`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Diagnostic, SourceFile, Span};

/// A whole trial spec, as deserialised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(
    expecting = "a trial spec: [trial], [model], [population] or [data], [[arm]], [simulation] and [output] tables"
)]
pub struct TrialSpecFile {
    pub trial: TrialSection,
    /// Spanned (as `population` and `simulation`): an error of the section as a whole is
    /// located at its header.
    pub model: Spanned<ModelSection>,
    #[serde(default)]
    pub population: Option<Spanned<PopulationSection>>,
    #[serde(rename = "arm", default)]
    pub arms: Option<Spanned<Vec<Spanned<ArmSection>>>>,
    /// A NONMEM-format dataset whose subjects and records replace the arms.
    #[serde(default)]
    pub data: Option<Spanned<DataSection>>,
    pub simulation: Spanned<SimulationSection>,
    pub output: OutputSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [trial] table: name, seed, subjects")]
pub struct TrialSection {
    pub name: String,
    /// Subjects per arm (with `[data]`: the dataset's subjects × replicates instead).
    #[serde(default)]
    pub subjects: Option<Spanned<u64>>,
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [data] table: file, replicates, covariates")]
pub struct DataSection {
    /// A NONMEM-format CSV dataset, relative to the spec file.
    pub file: Spanned<String>,
    /// Virtual subjects per dataset subject (each with its own draws), default 1.
    #[serde(default)]
    pub replicates: Option<Spanned<u64>>,
    /// Which record's covariate values hold between two records' times: `nocb` (default, the
    /// later record's, as in NONMEM) or `locf` (the earlier record's).
    #[serde(default)]
    pub covariates: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [model] table: library = \"NAME\" or file = \"PATH\", and params")]
pub struct ModelSection {
    /// A built-in model name (`vpop models` lists them).
    #[serde(default)]
    pub library: Option<Spanned<String>>,
    /// A model file, relative to the spec file.
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// Overrides of parameter defaults (for parameters the population does not set).
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [population] table: library = \"NAME\" or file = \"PATH\"")]
pub struct PopulationSection {
    /// A built-in population name (`vpop populations` lists them).
    #[serde(default)]
    pub library: Option<Spanned<String>>,
    /// A population file, relative to the spec file (or to the working directory for the
    /// shipped `populations/…` files).
    #[serde(default)]
    pub file: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "an [[arm]] table: name, dose or doses (or records), occasions, resets")]
pub struct ArmSection {
    pub name: Spanned<String>,
    /// One dosing line.
    #[serde(default)]
    pub dose: Option<Spanned<DoseSpec>>,
    /// Several dosing lines (e.g. a loading dose then maintenance).
    #[serde(default)]
    pub doses: Vec<Spanned<DoseSpec>>,
    /// A one-subject NONMEM-format dataset whose dose records are (part of) the regimen.
    #[serde(default)]
    pub records: Option<Spanned<String>>,
    /// Start times of the occasions (the first 0): parameters with inter-occasion
    /// variability take a new value at each.
    #[serde(default)]
    pub occasions: Option<Spanned<Vec<f64>>>,
    /// Times at which every state goes back to its initial value and what earlier doses
    /// still had to give is cancelled (NONMEM's EVID 3; a dose at the same time comes after).
    #[serde(default)]
    pub resets: Option<Spanned<Vec<f64>>>,
}

/// One dosing line: `{ amount = 100, into = "depot", every = 12, count = 14 }`.
// `remote = "Self"`: the derived code is an inherent `DoseSpec::deserialize`, called by the
// trait's implementation below for tables only.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct DoseSpec {
    pub amount: f64,
    /// The receiving state (located, for the error of a state the model lacks).
    pub into: Spanned<String>,
    /// Dosing interval (required when count > 1).
    #[serde(default)]
    pub every: Option<f64>,
    #[serde(default = "one")]
    pub count: u32,
    /// Time of the first dose.
    #[serde(default)]
    pub start: f64,
    /// Zero-order infusion at this rate (amount per time unit).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Zero-order infusion over this duration.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Infusion with rate or duration from the model's `rate(..)`/`dur(..)` declarations.
    #[serde(default)]
    pub modelled: bool,
    /// Scale the amount by this covariate (e.g. "wt" for mg/kg dosing).
    #[serde(default)]
    pub per: Option<String>,
    /// The first dose is given at steady state (the arm starts at steady state; NONMEM SS = 1).
    #[serde(default)]
    pub steady_state: bool,
}

fn one() -> u32 {
    1
}

impl<'de> Deserialize<'de> for DoseSpec {
    /// A dosing line is a table. An array in its place is most often `dose = [{ … }, { … }]`
    /// for `doses`, which serde's own message ("invalid type: map, expected f64", from reading
    /// the array as the struct's fields in order) would not tell.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Line;
        impl<'de> serde::de::Visitor<'de> for Line {
            type Value = DoseSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a dosing line, a table such as { amount = 100, into = \"depot\" }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<DoseSpec, A::Error> {
                DoseSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<DoseSpec, A::Error> {
                Err(serde::de::Error::custom(
                    "a dosing line is a table { amount = …, into = … }, not an array; \
                     several dosing lines go in `doses = [{ … }, { … }]`",
                ))
            }
        }
        d.deserialize_map(Line)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [simulation] table: end, method, rtol, atol, dt, backend, …")]
pub struct SimulationSection {
    /// Required for arms; with `[data]` the records' last time is the end.
    #[serde(default)]
    pub end: Option<Spanned<f64>>,
    #[serde(default = "default_method")]
    pub method: Spanned<String>,
    #[serde(default = "default_rtol")]
    pub rtol: Spanned<f64>,
    #[serde(default = "default_atol")]
    pub atol: Spanned<f64>,
    /// Step for RK4 (and the first step of adaptive methods).
    #[serde(default)]
    pub dt: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_steps: Option<Spanned<u64>>,
    /// At a jump of the right-hand side with the states: `cross` (default) or `locate`
    /// (every backend).
    #[serde(default)]
    pub events: Option<Spanned<String>>,
    #[serde(default = "default_backend")]
    pub backend: Spanned<String>,
    /// `f32` or `f64` for GPU backends (the CPU reference is always f64).
    #[serde(default)]
    pub precision: Option<Spanned<String>>,
    /// Subjects per chunk (bounded memory); default chosen by the engine.
    #[serde(default)]
    pub chunk_size: Option<Spanned<usize>>,
}

fn default_method() -> Spanned<String> {
    Spanned::new(0..0, "tsit5".to_string())
}
fn default_rtol() -> Spanned<f64> {
    Spanned::new(0..0, 1e-6)
}
fn default_atol() -> Spanned<f64> {
    Spanned::new(0..0, 1e-9)
}
fn default_backend() -> Spanned<String> {
    Spanned::new(0..0, "auto".to_string())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "the [output] table: dir, metrics, profile, target, …")]
pub struct OutputSection {
    pub dir: Spanned<String>,
    #[serde(default)]
    pub metrics: Vec<Spanned<String>>,
    /// Which model outputs the metrics apply to (default: all).
    #[serde(default)]
    pub outputs: Option<Spanned<Vec<Spanned<String>>>>,
    /// Write the sampled parameters too.
    #[serde(default)]
    pub parameters: bool,
    /// Write the covariates (default true).
    #[serde(default = "yes")]
    pub covariates: bool,
    #[serde(default)]
    pub profile: Option<Spanned<ProfileSpec>>,
    /// Also write simulated observations (`<output>_obs`): the profile with the population
    /// file's residual error added.
    #[serde(default)]
    pub observations: Option<Spanned<bool>>,
    /// Probability of target attainment, e.g. `{ metric = "cp_ctrough", above = 1.0 }`.
    #[serde(default)]
    pub target: Option<Spanned<TargetSpec>>,
    /// Parquet compression: "lz4" (default), "zstd", "snappy" or "none".
    #[serde(default)]
    pub compression: Option<Spanned<String>>,
    /// zstd's level (default 1; negative levels are its fast modes).
    #[serde(default)]
    pub compression_level: Option<Spanned<i64>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a profile table such as { every = 1 } or { times = [0, 1, 2] }")]
pub struct ProfileSpec {
    /// Explicit sampling times, or `every` with `from`/`to`.
    #[serde(default)]
    pub times: Vec<f64>,
    #[serde(default)]
    pub every: Option<f64>,
    #[serde(default)]
    pub from: Option<f64>,
    #[serde(default)]
    pub to: Option<f64>,
    /// `f32` (default) or `f16`.
    #[serde(default)]
    pub precision: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a target table such as { metric = \"cp_ctrough\", above = 1.0 }")]
pub struct TargetSpec {
    pub metric: String,
    #[serde(default)]
    pub above: Option<f64>,
    #[serde(default)]
    pub below: Option<f64>,
}

/// A span from a toml value.
pub fn span_of<T>(v: &Spanned<T>) -> Span {
    let r = v.span();
    Span::new(r.start, r.end)
}

/// Parses the spec text; syntax and type errors are located.
pub fn parse_spec(src: &SourceFile) -> Result<TrialSpecFile, Diagnostic> {
    toml::from_str::<TrialSpecFile>(&src.text).map_err(|e| toml_error(src, &e))
}

/// A toml deserialisation error as a located diagnostic.
pub fn toml_error(src: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    let span = e
        .span()
        .map(|r| Span::new(r.start, r.end))
        .unwrap_or_default();
    let mut message = toml_message(e);
    // A date or time (TOML reads it as a table of its own) where something else is read.
    let at = src.text.get(span.start..).unwrap_or("");
    let date = at.len() >= 10
        && at.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let time = at.len() >= 8
        && at.as_bytes()[..8].iter().enumerate().all(|(i, b)| {
            if i == 2 || i == 5 {
                *b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
    if (date || time) && message.starts_with("invalid type: map") {
        message = message.replacen("invalid type: map", "invalid type: a date or time", 1);
    }
    // `[arm]` where `[[arm]]` was meant: one table given where a list of them is read.
    if message == "invalid type: map, expected a sequence" {
        let at = src.text.get(span.start..).unwrap_or("");
        let header = at
            .strip_prefix('[')
            .filter(|rest| !rest.starts_with('['))
            .and_then(|rest| rest.split_once(']'))
            .map(|(name, _)| name.trim());
        if let Some(name) = header {
            message = format!(
                "[{name}] is one table, where a list of them is read: write [[{name}]], once \
                 before each entry"
            );
        }
    }
    src.error(span, message)
}

/// A toml deserialisation error's message, with Rust's names of number types in words
/// (`expected f64` is `expected a number`).
pub fn toml_message(e: &toml::de::Error) -> String {
    let mut m = e.message().trim().to_string();
    // A whole number beyond 64 bits, which serde names by the type it was read as.
    if let Some(rest) = m.strip_prefix("invalid type: integer `") {
        if let Some((n, expected)) = rest.split_once("` as i128, ") {
            m = format!("{n} is too large a number, {expected}");
        }
    }
    for (rust, words) in [
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
    ] {
        if let Some(rest) = m.strip_suffix(rust) {
            m = format!("{rest}{words}");
        }
    }
    // `unknown field `evry`, expected one of `amount`, `every`, …`: the one likely meant.
    let unknown = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| m.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'));
    if let Some((word, expected)) = unknown {
        let candidates = expected.split('`').skip(1).step_by(2);
        if let Some(c) = crate::diag::closest(word, candidates) {
            m = format!("{m}; did you mean `{c}`?");
        }
    }
    m
}

/// Parses a dose given on the command line as `key=value` pairs separated by commas, e.g.
/// `amount=100,into=depot,every=12,count=14` — the same keys as a spec's `dose = {…}`.
pub fn parse_dose_arg(text: &str) -> Result<DoseSpec, String> {
    let mut table = toml::Table::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        // Silently keeping the last of two values would hide a typo.
        if table.contains_key(k) {
            return Err(format!(
                "dose '{text}': the key '{k}' is given twice (each key at most once per dose)"
            ));
        }
        let value = if let Ok(i) = v.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(x) = v.parse::<f64>() {
            toml::Value::Float(x)
        } else if let Ok(b) = v.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(v.to_string())
        };
        table.insert(k.to_string(), value);
    }
    // Integers are accepted where floats are expected.
    for key in ["amount", "every", "start", "rate", "duration"] {
        if let Some(toml::Value::Integer(i)) = table.get(key) {
            let x = *i as f64;
            table.insert(key.to_string(), toml::Value::Float(x));
        }
    }
    // Read as a TOML document, whose deserializer gives the locations a spec's doses keep.
    #[derive(Deserialize)]
    struct Line {
        d: DoseSpec,
    }
    let mut doc = toml::Table::new();
    doc.insert("d".into(), toml::Value::Table(table));
    let written = toml::to_string(&doc).map_err(|e| format!("dose '{text}': {e}"))?;
    toml::from_str::<Line>(&written)
        .map(|l| l.d)
        .map_err(|e| format!("dose '{text}': {}", toml_message(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Type errors name what is expected in words, not as Rust's number types.
    #[test]
    fn type_errors_say_what_is_expected_in_words() {
        let err = |t: &str| parse_dose_arg(t).unwrap_err();
        assert_eq!(
            err("amount=abc,into=depot"),
            "dose 'amount=abc,into=depot': invalid type: string \"abc\", expected a number"
        );
        assert_eq!(
            err("amount=1,into=depot,count=-1"),
            "dose 'amount=1,into=depot,count=-1': invalid value: integer `-1`, expected a whole \
             number ≥ 0"
        );
        let src = SourceFile::new("s.toml", "[trial]\nsubjects = -3\n");
        let d = parse_spec(&src).unwrap_err().to_string();
        assert!(
            d.contains("s.toml:2:12") && d.ends_with("expected a whole number ≥ 0"),
            "{d}"
        );
        // Beyond 64 bits, and a date, in words.
        for (text, want) in [
            (
                "[trial]\nsubjects = 99999999999999999999\n",
                "s.toml:2:12: 99999999999999999999 is too large a number, expected a whole number ≥ 0",
            ),
            (
                "[trial]\nname = \"x\"\nsubjects = 3\nseed = 1\n[simulation]\nend = 1979-05-27\n",
                "s.toml:6:7: invalid type: a date or time, expected a number",
            ),
            (
                "[trial]\nname = \"x\"\nsubjects = 3\nseed = 1\n[simulation]\nend = 07:32:00\n",
                "s.toml:6:7: invalid type: a date or time, expected a number",
            ),
        ] {
            let d = parse_spec(&SourceFile::new("s.toml", text))
                .unwrap_err()
                .to_string();
            assert!(d.contains(want), "{d}");
        }
    }

    const QUICKSTART: &str = r#"
[trial]
name = "2-cmt oral: 100 mg q12h vs 200 mg q24h for 7 days"
subjects = 100_000            # per arm
seed = 20261122

[model]
library = "two_cmt_oral"

[population]
file = "populations/adult_healthy.toml"

[[arm]]
name = "100mg_q12h"
dose = { amount = 100, into = "depot", every = 12, count = 14 }

[[arm]]
name = "200mg_q24h"
dose = { amount = 200, into = "depot", every = 24, count = 7 }

[simulation]
end = 168
method = "tsit5"
rtol = 1e-6
atol = 1e-9
backend = "auto"

[output]
dir = "out/quickstart"
metrics = ["auc", "cmax", "tmax", "ctrough", "auc_last_interval", "time_above(1.0)"]
"#;

    #[test]
    fn parses_the_quickstart_spec() {
        let src = SourceFile::new("quickstart.toml", QUICKSTART);
        let spec = parse_spec(&src).unwrap();
        assert_eq!(*spec.trial.subjects.unwrap().get_ref(), 100_000);
        assert_eq!(spec.arms.as_ref().unwrap().get_ref().len(), 2);
        let d = spec.arms.unwrap().get_ref()[1]
            .get_ref()
            .dose
            .as_ref()
            .unwrap()
            .get_ref()
            .clone();
        assert_eq!(
            (d.amount, d.every, d.count, d.into.get_ref().as_str()),
            (200.0, Some(24.0), 7, "depot")
        );
        assert_eq!(
            *spec.simulation.get_ref().end.clone().unwrap().get_ref(),
            168.0
        );
        assert_eq!(spec.output.metrics.len(), 6);
    }

    #[test]
    fn errors_are_located() {
        let text = QUICKSTART.replace("seed = 20261122", "seed = \"x\"");
        let src = SourceFile::new("q.toml", text);
        let e = parse_spec(&src).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("q.toml", 5), "{e}");
        let text = QUICKSTART.replace("method = \"tsit5\"", "methd = \"tsit5\"");
        let e = parse_spec(&SourceFile::new("q.toml", text)).unwrap_err();
        assert!(e.message.contains("methd"), "{e}");
        assert_eq!((e.line, e.col), (23, 1), "{e}");
    }

    #[test]
    fn dosing_lines_in_the_wrong_shape_are_explained() {
        let several = "dose = [{ amount = 100, into = \"depot\" }, { amount = 50, into = \"depot\", start = 24 }]";
        let text = QUICKSTART.replacen(
            "dose = { amount = 100, into = \"depot\", every = 12, count = 14 }",
            several,
            1,
        );
        let e = parse_spec(&SourceFile::new("q.toml", text)).unwrap_err();
        assert_eq!((e.line, e.col), (15, 8), "{e}");
        assert!(e.message.contains("`doses = [{"), "{e}");
        // The same lines under `doses` parse, and a field of a line is still located.
        let text = QUICKSTART.replacen(
            "dose = { amount = 100, into = \"depot\", every = 12, count = 14 }",
            &several.replacen("dose", "doses", 1),
            1,
        );
        let spec = parse_spec(&SourceFile::new("q.toml", text.clone())).unwrap();
        let arm = spec.arms.unwrap().get_ref()[0].get_ref().clone();
        assert_eq!(arm.doses[1].get_ref().start, 24.0);
        let e =
            parse_spec(&SourceFile::new("q.toml", text.replacen("start", "at", 1))).unwrap_err();
        assert_eq!((e.line, e.col), (15, 75), "{e}");
        assert!(e.message.contains("unknown field `at`"), "{e}");
        let text = QUICKSTART.replacen("dose = { amount = 200", "dose = 5 #", 1);
        let e = parse_spec(&SourceFile::new("q.toml", text)).unwrap_err();
        assert!(e.message.contains("expected a dosing line"), "{e}");
    }

    #[test]
    fn dose_arguments_parse_like_the_spec() {
        let d = parse_dose_arg("amount=100,into=depot,every=12,count=14").unwrap();
        assert_eq!(d.amount, 100.0);
        assert_eq!(d.count, 14);
        assert_eq!(d.every, Some(12.0));
        let d = parse_dose_arg("amount=5, into=central, duration=0.5").unwrap();
        assert_eq!(d.duration, Some(0.5));
        assert!(parse_dose_arg("amount=5,into=central,colour=red").is_err());
        assert!(parse_dose_arg("amount").is_err());
        let twice = parse_dose_arg("amount=100,amount=200,into=central").unwrap_err();
        assert!(twice.contains("the key 'amount' is given twice"), "{twice}");
    }
}
