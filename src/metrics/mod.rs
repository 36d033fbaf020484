//! Exposure metrics: their definitions, names and semantics, shared by every backend.
//!
//! Metrics are computed during integration, never from a grid afterwards:
//! - AUC comes from a quadrature state (d AUC/dt = output) integrated with the model, read at
//!   window edges, which are stopping points;
//! - Cmax/Tmax/Cmin are checked at every step end and refined inside a step with the method's
//!   dense output when the output's time derivative changes sign within the step;
//! - threshold crossings (time above) are located on the dense output;
//! - values at given times are read from the dense output (left limits: a value at a dose time
//!   is the pre-dose value).
//!
//! Window semantics: a window `[a, b]` sees the output from `a+` (after events at `a`) to `b−`
//! (before events at `b`). `ctrough` is the value just before the last administration.
//!
//! This module owns what a metric means; it never integrates and never touches a GPU.

pub mod accumulate;

pub use accumulate::{MetricAccumulator, OutputEval};

use std::fmt;

/// The time range a metric looks at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// [0, end of simulation].
    Whole,
    /// From the last administration to one dosing interval later (or to the end when the last
    /// dose is not part of a repeated line), clipped to the end of the simulation.
    LastInterval,
    /// An explicit [from, to], clipped to the simulation.
    Range(f64, f64),
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricKind {
    Auc,
    Cmax,
    Tmax,
    Cmin,
    Cavg,
    /// Value just before the last administration.
    Ctrough,
    /// Time during which the output is at or above the threshold.
    TimeAbove(f64),
    /// Value at a time (left limit).
    At(f64),
}

/// A metric of one output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub kind: MetricKind,
    pub window: Window,
}

/// A metric name that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricParseError(pub String);

impl fmt::Display for MetricParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetricParseError {}

/// The metric names understood by [`Metric::parse`], for help texts and error messages.
pub const METRIC_SYNTAX: &str = "auc, cmax, tmax, cmin, cavg (each optionally with _last_interval \
or a window (from, to), e.g. auc(0, 24)), ctrough, time_above(threshold) (also \
time_above_last_interval(threshold) and time_above(threshold, from, to)), at(time)";

fn fmt_num(x: f64) -> String {
    // Column names must be plain identifiers: 1.5 → 1p5, -2 → m2, 1e-3 → 0p001; −0 is 0.
    let s = format!("{}", x + 0.0);
    s.replace('.', "p").replace('-', "m").replace('+', "")
}

impl Metric {
    /// Refuses a window that ends, or a time that falls, after a simulation's `end`: what lies
    /// beyond it is never simulated (the window would be cut at the end, the value missing).
    pub fn within(&self, end: f64) -> Result<(), String> {
        match (self.kind, self.window) {
            (MetricKind::At(t), _) if t > end => Err(format!(
                "at({t}) is after the end of the simulation ({end})"
            )),
            (_, Window::Range(a, b)) if b > end => Err(format!(
                "the window ({a}, {b}) ends after the end of the simulation ({end})"
            )),
            _ => Ok(()),
        }
    }

    /// Parses names like `auc`, `auc_last_interval`, `cmax(0, 24)`, `time_above(1.0)`,
    /// `time_above_last_interval(1.0)`, `at(24)`.
    pub fn parse(text: &str) -> Result<Metric, MetricParseError> {
        let t = text.trim();
        let err = |m: &str| {
            MetricParseError(format!("metric '{t}': {m}; known metrics: {METRIC_SYNTAX}"))
        };
        let (head, args) = match t.find('(') {
            Some(i) => {
                // `cmax(0, 24)_last_interval`: the window's name goes before the arguments.
                if let Some((call, after)) = t.rsplit_once(')') {
                    if ["_last_interval", "_tau"].contains(&after.trim()) {
                        let (name, args) = call.split_at(i);
                        return Err(err(&format!(
                            "the window's name goes before the arguments: {name}{}{args})",
                            after.trim()
                        )));
                    }
                }
                let inner = t[i + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| err("missing ')'"))?;
                let args = inner
                    .split(',')
                    .map(|a| a.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| err("arguments must be numbers"))?;
                (t[..i].trim(), args)
            }
            None => (t, vec![]),
        };
        let (base, window) = if let Some(b) = head.strip_suffix("_last_interval") {
            (b, Window::LastInterval)
        } else if let Some(b) = head.strip_suffix("_tau") {
            (b, Window::LastInterval)
        } else {
            (head, Window::Whole)
        };
        let windowed = |args: &[f64], window: Window| -> Result<Window, MetricParseError> {
            match (args, window) {
                ([], w) => Ok(w),
                ([a, b], Window::Whole) if a < b && *a >= 0.0 => Ok(Window::Range(*a, *b)),
                ([_, _], Window::Whole) => Err(err("a window needs 0 ≤ from < to")),
                _ => Err(err("expected no arguments or a window (from, to)")),
            }
        };
        let kind = match base {
            "auc" => MetricKind::Auc,
            "cmax" => MetricKind::Cmax,
            "tmax" => MetricKind::Tmax,
            "cmin" => MetricKind::Cmin,
            "cavg" => MetricKind::Cavg,
            "ctrough" if args.is_empty() && window == Window::Whole => {
                return Ok(Metric {
                    kind: MetricKind::Ctrough,
                    window,
                })
            }
            // The threshold comes first: `time_above(x)`, `time_above_last_interval(x)`,
            // `time_above(x, a, b)`.
            "time_above" => {
                return match (args.as_slice(), window) {
                    ([thr], _) => Ok(Metric {
                        kind: MetricKind::TimeAbove(*thr),
                        window,
                    }),
                    ([thr, rest @ ..], Window::Whole) => Ok(Metric {
                        kind: MetricKind::TimeAbove(*thr),
                        window: windowed(rest, window)?,
                    }),
                    ([], _) => Err(err("time_above needs a threshold")),
                    (_, _) => Err(err(
                        "time_above_last_interval takes the threshold only; a window of its \
                         own is time_above(threshold, from, to)",
                    )),
                }
            }
            "at" if window == Window::Whole => {
                return match args.as_slice() {
                    [t] if *t >= 0.0 => Ok(Metric {
                        kind: MetricKind::At(*t),
                        window,
                    }),
                    _ => Err(err("at needs one time ≥ 0")),
                }
            }
            _ => {
                let names = [
                    "auc",
                    "cmax",
                    "tmax",
                    "cmin",
                    "cavg",
                    "ctrough",
                    "time_above",
                    "at",
                ];
                let hint = crate::diag::closest(base, names)
                    .map_or(String::new(), |c| format!(" (did you mean '{c}'?)"));
                return Err(err(&format!("unknown metric{hint}")));
            }
        };
        Ok(Metric {
            kind,
            window: windowed(&args, window)?,
        })
    }

    /// The column-name suffix: `auc`, `auc_last_interval`, `auc_0_24`, `time_above_1`,
    /// `time_above_1_last_interval`, `at_24` (the window after the metric and its threshold).
    pub fn suffix(&self) -> String {
        let base = match self.kind {
            MetricKind::Auc => "auc".to_string(),
            MetricKind::Cmax => "cmax".to_string(),
            MetricKind::Tmax => "tmax".to_string(),
            MetricKind::Cmin => "cmin".to_string(),
            MetricKind::Cavg => "cavg".to_string(),
            MetricKind::Ctrough => "ctrough".to_string(),
            MetricKind::TimeAbove(x) => format!("time_above_{}", fmt_num(x)),
            MetricKind::At(x) => format!("at_{}", fmt_num(x)),
        };
        match self.window {
            Window::Whole => base,
            Window::LastInterval => format!("{base}_last_interval"),
            Window::Range(a, b) => format!("{base}_{}_{}", fmt_num(a), fmt_num(b)),
        }
    }

    /// Whether this metric needs the output's AUC quadrature state.
    pub fn needs_auc(&self) -> bool {
        matches!(self.kind, MetricKind::Auc | MetricKind::Cavg)
    }
}

/// A metric as a trial spec or `vpop simulate --metrics` asks for it: `cmax` (of every output)
/// or `effect:time_above(50)` (of the output `effect` only).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRequest {
    /// The output named before a `:`, if any.
    pub output: Option<String>,
    pub metric: Metric,
}

impl MetricRequest {
    pub fn parse(text: &str) -> Result<MetricRequest, MetricParseError> {
        let t = text.trim();
        // A `:` before any parenthesis names the output.
        let colon = t.find(':').filter(|&i| t.find('(').is_none_or(|p| i < p));
        let Some(i) = colon else {
            return Ok(MetricRequest {
                output: None,
                metric: Metric::parse(t)?,
            });
        };
        let name = t[..i].trim();
        if crate::model::parse::check_identifier(name).is_err() {
            return Err(MetricParseError(format!(
                "metric '{t}': '{name}' is not an output name (`output:metric`, e.g. \
                 effect:time_above(50))"
            )));
        }
        Ok(MetricRequest {
            output: Some(name.to_string()),
            metric: Metric::parse(&t[i + 1..])?,
        })
    }

    /// The outputs it is of: its own, or else `all`; an output the model does not have is an
    /// error ([`crate::model::Model::output_named`]).
    pub fn outputs(
        &self,
        model: &crate::model::Model,
        all: &[usize],
    ) -> Result<Vec<usize>, String> {
        match &self.output {
            None => Ok(all.to_vec()),
            Some(name) => Ok(vec![model.output_named(name)?]),
        }
    }
}

/// A metric of a given output, with its column name `<output>_<suffix>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub output: usize,
    pub metric: Metric,
    pub column: String,
    /// The output's integral is carried beside the states (as an area metric's is), so that
    /// the step sizes follow the output as well as the states: set for the extremes and the
    /// time above a threshold of an output that depends on time directly, whose shape inside
    /// a step the states' error control does not see.
    pub follow: bool,
}

impl MetricSpec {
    pub fn new(output: usize, output_name: &str, metric: Metric) -> Self {
        MetricSpec {
            output,
            metric,
            column: format!("{output_name}_{}", metric.suffix()),
            follow: false,
        }
    }

    /// The metric of output `output` of `model`, following the output where it depends on
    /// time directly ([`MetricSpec::follow`]).
    pub fn of_model(output: usize, model: &crate::model::Model, metric: Metric) -> Self {
        let mut s = MetricSpec::new(output, &model.outputs[output].name, metric);
        s.follow = matches!(
            metric.kind,
            MetricKind::Cmax | MetricKind::Tmax | MetricKind::Cmin | MetricKind::TimeAbove(_)
        ) && model.output_uses_time(output);
        s
    }
}

/// The outputs whose area a quadrature state integrates alongside the model (d AUC/dt =
/// output): those of an `auc` or `cavg` metric and those a metric follows
/// ([`MetricSpec::follow`]), each once, in increasing order. Quadrature `a`
/// integrates output `quadrature_outputs(specs)[a]`; an output no such metric reads gets none,
/// so its values never take part in step-size control.
pub fn quadrature_outputs(specs: &[MetricSpec]) -> Vec<usize> {
    let mut outputs: Vec<usize> = specs
        .iter()
        .filter(|s| s.follow || matches!(s.metric.kind, MetricKind::Auc | MetricKind::Cavg))
        .map(|s| s.output)
        .collect();
    outputs.sort_unstable();
    outputs.dedup();
    outputs
}

/// The quadrature state of `output` among `quad` ([`quadrature_outputs`]); 0 for an output
/// without one (never read: only area metrics read quadratures).
pub fn quadrature_slot(quad: &[usize], output: usize) -> usize {
    quad.iter().position(|&k| k == output).unwrap_or(0)
}

/// Absolute window bounds for a subject, given the simulation end and the nominal dose times
/// up to it ([`crate::dosing::Schedule::doses_until`]). Returns `None` when the window is
/// empty.
pub fn resolve_window(
    window: Window,
    end: f64,
    doses: &crate::dosing::DoseTimes,
) -> Option<(f64, f64)> {
    let (a, b) = match window {
        Window::Whole => (0.0, end),
        // A dose at the end itself opens no interval inside the simulation: the last interval
        // is then the one that closes at it.
        Window::LastInterval => match doses.times.iter().rev().find(|&&t| t < end) {
            Some(&t) if doses.last() == Some(end) => (t, end),
            Some(&t) => (t, doses.last_interval.map_or(end, |tau| t + tau)),
            None => (0.0, end),
        },
        Window::Range(a, b) => (a, b),
    };
    let (a, b) = (a.max(0.0), b.min(end));
    (a < b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_quickstart_metrics() {
        let names = [
            "auc",
            "cmax",
            "tmax",
            "ctrough",
            "auc_last_interval",
            "time_above(1.0)",
        ];
        let suffixes: Vec<String> = names
            .iter()
            .map(|n| Metric::parse(n).unwrap().suffix())
            .collect();
        assert_eq!(
            suffixes,
            [
                "auc",
                "cmax",
                "tmax",
                "ctrough",
                "auc_last_interval",
                "time_above_1"
            ]
        );
        assert_eq!(
            Metric::parse("auc(0, 24)").unwrap().window,
            Window::Range(0.0, 24.0)
        );
        assert_eq!(Metric::parse("cavg(0,24)").unwrap().suffix(), "cavg_0_24");
        assert_eq!(
            Metric::parse("time_above(0.5, 0, 24)").unwrap().suffix(),
            "time_above_0p5_0_24"
        );
        assert_eq!(Metric::parse("at(1.5)").unwrap().kind, MetricKind::At(1.5));
        // −0 is 0 in a column's name; a negative threshold keeps its sign.
        assert_eq!(Metric::parse("at(-0)").unwrap().suffix(), "at_0");
        assert_eq!(
            Metric::parse("time_above(-0.0, -0, 24)").unwrap().suffix(),
            "time_above_0_0_24"
        );
        assert_eq!(
            Metric::parse("time_above(-1.5)").unwrap().suffix(),
            "time_above_m1p5"
        );
    }

    /// `time_above` takes the last interval as the other windowed metrics do: the window's
    /// spelling after the name, its column suffix after the threshold.
    #[test]
    fn time_above_has_a_last_interval_form() {
        let m = Metric::parse("time_above_last_interval(0.5)").unwrap();
        assert_eq!(
            (m.kind, m.window),
            (MetricKind::TimeAbove(0.5), Window::LastInterval)
        );
        assert_eq!(m.suffix(), "time_above_0p5_last_interval");
        let r = MetricRequest::parse("effect:time_above_last_interval(50)").unwrap();
        assert_eq!(
            (r.output.as_deref(), r.metric.suffix().as_str()),
            (Some("effect"), "time_above_50_last_interval")
        );
        for bad in [
            "time_above_last_interval",
            "time_above_last_interval()",
            "time_above_last_interval(1, 0, 24)",
            "time_above(1)_last_interval",
        ] {
            assert!(Metric::parse(bad).is_err(), "{bad}");
        }
        let e = Metric::parse("time_above(1)_last_interval")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("goes before the arguments: time_above_last_interval(1)"),
            "{e}"
        );
        let e = Metric::parse("time_above_last_interval(1, 0, 24)")
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_above(threshold, from, to)"), "{e}");
        assert!(e.contains("time_above_last_interval(threshold)"), "{e}");
    }

    #[test]
    fn a_metric_can_name_its_output() {
        let r = MetricRequest::parse(" effect : time_above(50, 0, 24)").unwrap();
        assert_eq!(r.output.as_deref(), Some("effect"));
        assert_eq!(r.metric.suffix(), "time_above_50_0_24");
        let r = MetricRequest::parse("cmax_last_interval").unwrap();
        assert_eq!(
            (r.output, r.metric.suffix()),
            (None, "cmax_last_interval".into())
        );
        for bad in [
            "2x:auc",
            ":auc",
            "a b:auc",
            "e:",
            "e:cmax:auc",
            "e:nonsense",
        ] {
            assert!(MetricRequest::parse(bad).is_err(), "{bad}");
        }
        let e = MetricRequest::parse("c-p:auc").unwrap_err().to_string();
        assert!(e.contains("'c-p' is not an output name"), "{e}");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "aucc",
            "auc(1)",
            "auc(5, 2)",
            "cmax(a, b)",
            "time_above()",
            "at(-1)",
            "ctrough(1,2)",
            "auc(0, 1",
        ] {
            assert!(Metric::parse(bad).is_err(), "{bad}");
            assert!(MetricRequest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_resolve_against_the_schedule() {
        let doses = |last_interval| crate::dosing::DoseTimes {
            times: vec![0.0, 12.0, 24.0],
            last_interval,
            steady_state: false,
        };
        assert_eq!(
            resolve_window(Window::Whole, 48.0, &doses(Some(12.0))),
            Some((0.0, 48.0))
        );
        assert_eq!(
            resolve_window(Window::LastInterval, 48.0, &doses(Some(12.0))),
            Some((24.0, 36.0))
        );
        assert_eq!(
            resolve_window(Window::LastInterval, 30.0, &doses(Some(12.0))),
            Some((24.0, 30.0))
        );
        assert_eq!(
            resolve_window(Window::LastInterval, 48.0, &doses(None)),
            Some((24.0, 48.0))
        );
        assert_eq!(
            resolve_window(Window::Range(50.0, 60.0), 48.0, &doses(None)),
            None
        );
        // A dose at the end: the last interval is the one that closes at it.
        assert_eq!(
            resolve_window(Window::LastInterval, 24.0, &doses(Some(12.0))),
            Some((12.0, 24.0))
        );
        let at_end = |times: Vec<f64>| crate::dosing::DoseTimes {
            times,
            last_interval: None,
            steady_state: false,
        };
        assert_eq!(
            resolve_window(Window::LastInterval, 20.0, &at_end(vec![0.0, 5.0, 20.0])),
            Some((5.0, 20.0))
        );
        assert_eq!(
            resolve_window(Window::LastInterval, 20.0, &at_end(vec![20.0])),
            Some((0.0, 20.0))
        );
    }

    #[test]
    fn quadratures_serve_the_outputs_of_area_metrics_only() {
        let spec = |k: usize, m: &str| MetricSpec::new(k, "c", Metric::parse(m).unwrap());
        let specs = [
            spec(2, "cavg_last_interval"),
            spec(1, "cmax"),
            spec(0, "time_above(3)"),
            spec(2, "auc"),
            spec(0, "auc(0, 24)"),
            spec(3, "at(4)"),
        ];
        assert_eq!(quadrature_outputs(&specs), [0, 2]);
        assert!(quadrature_outputs(&specs[1..3]).is_empty());
        assert!(quadrature_outputs(&[]).is_empty());
    }
}
