//! Exposure metrics from the CPU reference against closed-form solutions of linear 1- and
#![allow(clippy::needless_range_loop)]
//! 2-compartment models (IV bolus, infusion, oral; single and multiple doses by superposition).
//!
//! The reference concentrations are sums of exponentials (the models' unit impulse responses);
//! reference AUCs integrate those with high-order Gauss–Legendre quadrature between events, and
//! reference Cmax/Tmax/crossings are found on the closed form itself — nothing here comes from
//! the ODE solver.

mod common;

use vpop::backend::cpu::{simulate_subject, SubjectPlan};
use vpop::dosing::{Administration, DoseLine, EventKind, Regimen, Schedule, StateDosing};
use vpop::metrics::{Metric, MetricKind, MetricSpec, OutputEval};
use vpop::solver::{Integrator, Method, OdeSystem, SolverOptions, Status};

/// dy/dt = A·y, output c = y[central] / v.
#[derive(Clone)]
struct LinearModel {
    a: Vec<f64>,
    n: usize,
    central: usize,
    v: f64,
}

impl OdeSystem for LinearModel {
    fn dim(&self) -> usize {
        self.n
    }
    fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
        for i in 0..self.n {
            dy[i] = (0..self.n).map(|j| self.a[i * self.n + j] * y[j]).sum();
        }
    }
    fn jacobian(&mut self, _t: f64, _y: &[f64], jac: &mut [f64]) {
        jac.copy_from_slice(&self.a);
    }
    fn dfdt(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
        out.fill(0.0);
    }
}

impl OutputEval for LinearModel {
    fn n_outputs(&self) -> usize {
        1
    }
    fn outputs(&mut self, _t: f64, y: &[f64], out: &mut [f64]) {
        out[0] = y[self.central] / self.v;
    }
    fn output_jacobian(&mut self, _t: f64, _y: &[f64], jac: &mut [f64]) {
        jac.fill(0.0);
        jac[self.central] = 1.0 / self.v;
    }
}

/// Concentration response to a unit amount put into a state at time 0: Σ c·exp(−λ t).
type Impulse = Vec<(f64, f64)>;

struct Case {
    name: &'static str,
    model: LinearModel,
    /// Impulse response of the concentration, per dosed state.
    impulse: Vec<(usize, Impulse)>,
    regimen: Regimen,
    dosing: Vec<StateDosing>,
    end: f64,
}

fn one_cmt(oral: bool) -> (LinearModel, Vec<(usize, Impulse)>) {
    let (cl, v, ka) = (2.0, 25.0, 1.3);
    let k = cl / v;
    let a = vec![-ka, 0.0, ka, -k];
    let model = LinearModel {
        a,
        n: 2,
        central: 1,
        v,
    };
    let imp = if oral {
        let c = ka / (v * (ka - k));
        vec![(0, vec![(c, k), (-c, ka)])]
    } else {
        vec![(1, vec![(1.0 / v, k)])]
    };
    (model, imp)
}

fn two_cmt(oral: bool) -> (LinearModel, Vec<(usize, Impulse)>) {
    // The two_cmt_oral library model's typical values.
    let (ka, cl, v1, q, v2): (f64, f64, f64, f64, f64) = (1.2, 5.0, 30.0, 2.5, 60.0);
    let (k10, k12, k21) = (cl / v1, q / v1, q / v2);
    let s = k10 + k12 + k21;
    let disc = (s * s - 4.0 * k10 * k21).sqrt();
    let (alpha, beta) = ((s + disc) / 2.0, (s - disc) / 2.0);
    let a = vec![-ka, 0.0, 0.0, ka, -(k10 + k12), k21, 0.0, k12, -k21];
    let model = LinearModel {
        a,
        n: 3,
        central: 1,
        v: v1,
    };
    let imp = if oral {
        vec![(
            0,
            vec![
                (
                    ka / v1 * (k21 - alpha) / ((ka - alpha) * (beta - alpha)),
                    alpha,
                ),
                (
                    ka / v1 * (k21 - beta) / ((ka - beta) * (alpha - beta)),
                    beta,
                ),
                (ka / v1 * (k21 - ka) / ((alpha - ka) * (beta - ka)), ka),
            ],
        )]
    } else {
        vec![(
            1,
            vec![
                ((alpha - k21) / (v1 * (alpha - beta)), alpha),
                ((k21 - beta) / (v1 * (alpha - beta)), beta),
            ],
        )]
    };
    (model, imp)
}

fn line(
    state: usize,
    amount: f64,
    every: f64,
    count: u32,
    administration: Administration,
) -> DoseLine {
    DoseLine {
        steady_state: false,
        scaled: true,
        keeps_lag: false,
        state,
        amount,
        start: 0.0,
        interval: every,
        count,
        administration,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let (m, imp) = one_cmt(false);
    v.push(Case {
        name: "1cmt iv bolus q12h x3",
        model: m.clone(),
        impulse: imp.clone(),
        regimen: Regimen {
            lines: vec![line(1, 100.0, 12.0, 3, Administration::Bolus)],
        },
        dosing: vec![StateDosing::default(); 2],
        end: 48.0,
    });
    v.push(Case {
        name: "1cmt iv infusion 2h q12h x3",
        model: m,
        impulse: imp,
        regimen: Regimen {
            lines: vec![line(
                1,
                100.0,
                12.0,
                3,
                Administration::InfusionDuration(2.0),
            )],
        },
        dosing: vec![StateDosing::default(); 2],
        end: 48.0,
    });
    let (m, imp) = one_cmt(true);
    v.push(Case {
        name: "1cmt oral single dose",
        model: m.clone(),
        impulse: imp.clone(),
        regimen: Regimen {
            lines: vec![line(0, 100.0, 0.0, 1, Administration::Bolus)],
        },
        dosing: vec![StateDosing::default(); 2],
        end: 24.0,
    });
    v.push(Case {
        name: "1cmt oral q8h x4 with lag 0.5 h and F 0.8",
        model: m,
        impulse: imp,
        regimen: Regimen {
            lines: vec![line(0, 100.0, 8.0, 4, Administration::Bolus)],
        },
        dosing: vec![
            StateDosing {
                lag: 0.5,
                bioavailability: 0.8,
                ..Default::default()
            },
            StateDosing::default(),
        ],
        end: 40.0,
    });
    let (m, imp) = two_cmt(false);
    v.push(Case {
        name: "2cmt iv bolus single dose",
        model: m.clone(),
        impulse: imp.clone(),
        regimen: Regimen {
            lines: vec![line(1, 100.0, 0.0, 1, Administration::Bolus)],
        },
        dosing: vec![StateDosing::default(); 3],
        end: 72.0,
    });
    v.push(Case {
        name: "2cmt iv infusion 50 mg/h q24h x3",
        model: m,
        impulse: imp,
        regimen: Regimen {
            lines: vec![line(1, 100.0, 24.0, 3, Administration::InfusionRate(50.0))],
        },
        dosing: vec![StateDosing::default(); 3],
        end: 72.0,
    });
    let (m, imp) = two_cmt(true);
    v.push(Case {
        name: "2cmt oral 100 mg q12h x14 (quickstart arm)",
        model: m,
        impulse: imp,
        regimen: Regimen {
            lines: vec![line(0, 100.0, 12.0, 14, Administration::Bolus)],
        },
        dosing: vec![StateDosing::default(); 3],
        end: 168.0,
    });
    let (m, imp) = one_cmt(false);
    // The last dose at the end itself: the trough is the value at the end and the last
    // interval the one that closes at it, [36, 48].
    v.push(Case {
        name: "1cmt iv bolus q12h x5, the last at the end",
        model: m,
        impulse: imp,
        regimen: Regimen {
            lines: vec![line(1, 100.0, 12.0, 5, Administration::Bolus)],
        },
        dosing: vec![StateDosing::default(); 2],
        end: 48.0,
    });
    v
}

/// Closed-form concentration at t (left limit at event times: boluses at t do not count).
fn conc(case: &Case, schedule: &Schedule, t: f64) -> f64 {
    let mut c = 0.0;
    let mut open: Vec<(usize, f64, f64)> = Vec::new(); // (state, start, rate)
    let ends: Vec<(usize, f64, f64)> = schedule
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::InfusionEnd { rate } => Some((e.state, e.time, rate)),
            _ => None,
        })
        .collect();
    for e in &schedule.events {
        let imp = &case
            .impulse
            .iter()
            .find(|(s, _)| *s == e.state)
            .expect("dosed state has a response")
            .1;
        match e.kind {
            EventKind::Bolus { amount } if e.time < t => {
                c += amount
                    * imp
                        .iter()
                        .map(|(ci, l)| ci * (-l * (t - e.time)).exp())
                        .sum::<f64>();
            }
            EventKind::InfusionStart { rate } if e.time < t => open.push((e.state, e.time, rate)),
            _ => {}
        }
    }
    for (state, start, rate) in open {
        let end = ends
            .iter()
            .filter(|(s, te, r)| *s == state && *te > start && *r == rate)
            .map(|(_, te, _)| *te)
            .fold(f64::INFINITY, f64::min);
        let stop = end.min(t);
        let imp = &case.impulse.iter().find(|(s, _)| *s == state).unwrap().1;
        c += rate
            * imp
                .iter()
                .map(|(ci, l)| ci / l * ((-l * (t - stop)).exp() - (-l * (t - start)).exp()))
                .sum::<f64>();
    }
    c
}

/// Breakpoints of the closed form (event times) within [a, b], plus a and b.
fn pieces(schedule: &Schedule, a: f64, b: f64) -> Vec<f64> {
    let mut p = vec![a, b];
    p.extend(
        schedule
            .events
            .iter()
            .map(|e| e.time)
            .filter(|t| *t > a && *t < b),
    );
    p.sort_by(f64::total_cmp);
    p.dedup();
    p
}

/// 16-point Gauss–Legendre on 256 sub-intervals of every smooth piece.
fn auc_ref(case: &Case, s: &Schedule, a: f64, b: f64) -> f64 {
    const X: [f64; 8] = [
        0.0950125098376374,
        0.2816035507792589,
        0.4580167776572274,
        0.6178762444026438,
        0.755404408355003,
        0.8656312023878318,
        0.9445750230732326,
        0.9894009349916499,
    ];
    const W: [f64; 8] = [
        0.1894506104550685,
        0.1826034150449236,
        0.1691565193950025,
        0.1495959888165767,
        0.1246289712555339,
        0.0951585116824928,
        0.0622535239386479,
        0.0271524594117541,
    ];
    let p = pieces(s, a, b);
    let mut total = 0.0;
    for w in p.windows(2) {
        let n = 256;
        let hseg = (w[1] - w[0]) / n as f64;
        for j in 0..n {
            let mid = w[0] + (j as f64 + 0.5) * hseg;
            for (x, wt) in X.iter().zip(W) {
                total += wt * hseg / 2.0
                    * (conc(case, s, mid - x * hseg / 2.0) + conc(case, s, mid + x * hseg / 2.0));
            }
        }
    }
    total
}

/// Max of the closed form on [a, b]: a fine scan of every smooth piece, then golden-section.
/// Right limits at piece starts are approached from inside the piece.
fn max_ref(case: &Case, s: &Schedule, a: f64, b: f64, sign: f64) -> (f64, f64) {
    let mut best = (f64::NAN, f64::NEG_INFINITY);
    for w in pieces(s, a, b).windows(2) {
        let (lo, hi) = (w[0], w[1]);
        let n = 4000;
        let f = |t: f64| sign * conc(case, s, t.clamp(lo + 1e-13 * hi.max(1.0), hi));
        let mut k_best = 0;
        for k in 0..=n {
            if f(lo + (hi - lo) * k as f64 / n as f64)
                > f(lo + (hi - lo) * k_best as f64 / n as f64)
            {
                k_best = k;
            }
        }
        let t = common::golden_max(
            f,
            lo + (hi - lo) * (k_best.max(1) - 1) as f64 / n as f64,
            lo + (hi - lo) * (k_best + 1).min(n) as f64 / n as f64,
            200,
        );
        for (tt, v) in [(t, f(t)), (lo, f(lo)), (hi, f(hi))] {
            if v > best.1 {
                best = (tt, v);
            }
        }
    }
    (best.0, sign * best.1)
}

/// Time with c ≥ thr on [a, b], by bisection of every sign change on a fine scan.
fn time_above_ref(case: &Case, s: &Schedule, a: f64, b: f64, thr: f64) -> f64 {
    let mut total = 0.0;
    for w in pieces(s, a, b).windows(2) {
        let (lo, hi) = (w[0], w[1]);
        let f = |t: f64| conc(case, s, t.clamp(lo + 1e-13 * hi.max(1.0), hi)) - thr;
        let n = 4000;
        let mut prev = lo;
        for k in 1..=n {
            let t = lo + (hi - lo) * k as f64 / n as f64;
            let (fa, fb) = (f(prev), f(t));
            if fa >= 0.0 && fb >= 0.0 {
                total += t - prev;
            } else if (fa >= 0.0) != (fb >= 0.0) {
                let x0 = common::crossing(f, prev, t, fa >= 0.0);
                total += if fa >= 0.0 { x0 - prev } else { t - x0 };
            }
            prev = t;
        }
    }
    total
}

const METRICS: [&str; 10] = [
    "auc",
    "cmax",
    "tmax",
    "ctrough",
    "auc_last_interval",
    "cmin_last_interval",
    "cavg(0, 24)",
    "time_above(1.0)",
    "time_above_last_interval(1.0)",
    "at(5)",
];

fn reference(case: &Case, s: &Schedule, metric: &Metric) -> f64 {
    let end = case.end;
    let doses = s.doses_until(end);
    let win = vpop::metrics::resolve_window(metric.window, end, &doses).unwrap();
    match metric.kind {
        MetricKind::Auc => auc_ref(case, s, win.0, win.1),
        MetricKind::Cavg => auc_ref(case, s, win.0, win.1) / (win.1 - win.0),
        MetricKind::Cmax => max_ref(case, s, win.0, win.1, 1.0).1,
        MetricKind::Tmax => max_ref(case, s, win.0, win.1, 1.0).0,
        MetricKind::Cmin => max_ref(case, s, win.0, win.1, -1.0).1,
        MetricKind::Ctrough => match doses.trough() {
            None => f64::NAN,
            Some(t) => conc(case, s, t),
        },
        MetricKind::TimeAbove(thr) => time_above_ref(case, s, win.0, win.1, thr),
        MetricKind::At(t) => conc(case, s, t),
    }
}

/// One subject of a case with the given metrics and solver options.
fn simulate(
    case: &Case,
    specs: &[MetricSpec],
    opts: &SolverOptions,
) -> (Vec<f64>, Schedule, Status) {
    let schedule = case.regimen.schedule(1.0, &case.dosing).unwrap();
    let plan = SubjectPlan {
        occasions: &[],
        jumps: &[],
        schedule: &schedule,
        end: case.end,
        metrics: specs,
        sample_times: &[],
        solver: opts,
    };
    let y0 = vec![0.0; case.model.n];
    let mut integ = Integrator::new(opts.method, case.model.n + 1);
    let out = simulate_subject(
        case.model.clone(),
        case.model.clone(),
        &y0,
        &plan,
        &mut integ,
    );
    (out.metrics, schedule, out.status)
}

fn run(case: &Case, method: Method, rtol: f64) -> (Vec<MetricSpec>, Vec<f64>, Schedule, Status) {
    let specs: Vec<MetricSpec> = METRICS
        .iter()
        .map(|m| MetricSpec::new(0, "cp", Metric::parse(m).unwrap()))
        .collect();
    let opts = SolverOptions {
        method,
        rtol,
        atol: rtol * 1e-4,
        ..Default::default()
    };
    let (metrics, schedule, status) = simulate(case, &specs, &opts);
    (specs, metrics, schedule, status)
}

fn check_method(method: Method, rtol: f64, tol: f64) {
    let mut failures = Vec::new();
    for case in cases() {
        let (specs, got, schedule, status) = run(&case, method, rtol);
        assert_eq!(status, Status::Ok, "{}: {method}", case.name);
        for (spec, g) in specs.iter().zip(&got) {
            let want = reference(&case, &schedule, &spec.metric);
            if want.is_nan() {
                assert!(
                    g.is_nan(),
                    "{}: {} should be NaN, got {g}",
                    case.name,
                    spec.column
                );
                continue;
            }
            // Relative error, with an absolute floor for values that are zero by construction.
            let err = (g - want).abs() / want.abs().max(1e-3);
            if err.is_nan() || err > tol {
                failures.push(format!(
                    "{} {}: got {g:.12e}, want {want:.12e}, rel err {err:.2e}",
                    case.name, spec.column
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{method} at rtol {rtol}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn dopri5_matches_closed_forms() {
    check_method(Method::Dopri5, 1e-8, 1e-6);
}

#[test]
fn tsit5_matches_closed_forms() {
    check_method(Method::Tsit5, 1e-8, 1e-6);
}

/// Rosenbrock23 is a second-order method advancing with its lower-order solution, so its global
/// error is a few hundred times the local tolerance over these horizons (≈2e-6 relative at
/// rtol 1e-8); one decade tighter meets the same 1e-6 bound.
#[test]
fn rosenbrock23_matches_closed_forms() {
    check_method(Method::Rosenbrock23, 1e-9, 1e-6);
}

#[test]
fn rodas4_matches_closed_forms() {
    check_method(Method::Rodas4, 1e-8, 1e-6);
}

#[test]
fn rk4_auc_error_falls_sixteenfold_when_the_step_halves() {
    let case = &cases()[6];
    let schedule = case.regimen.schedule(1.0, &case.dosing).unwrap();
    let spec = [MetricSpec::new(0, "cp", Metric::parse("auc").unwrap())];
    let want = auc_ref(case, &schedule, 0.0, case.end);
    let err = |dt: f64| {
        let opts = SolverOptions {
            method: Method::Rk4,
            dt: Some(dt),
            ..Default::default()
        };
        let plan = SubjectPlan {
            occasions: &[],
            jumps: &[],
            schedule: &schedule,
            end: case.end,
            metrics: &spec,
            sample_times: &[],
            solver: &opts,
        };
        let mut integ = Integrator::new(Method::Rk4, 4);
        let out = simulate_subject(
            case.model.clone(),
            case.model.clone(),
            &[0.0; 3],
            &plan,
            &mut integ,
        );
        (out.metrics[0] - want).abs()
    };
    let (e1, e2) = (err(0.25), err(0.125));
    let ratio = e1 / e2;
    assert!(
        (14.0..18.5).contains(&ratio),
        "error ratio {ratio} ({e1:e} → {e2:e})"
    );
}

#[test]
fn profile_samples_match_the_closed_form() {
    let case = &cases()[6];
    let schedule = case.regimen.schedule(1.0, &case.dosing).unwrap();
    let times: Vec<f64> = (0..=56).map(|i| i as f64 * 3.0).collect();
    let opts = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-9,
        atol: 1e-13,
        ..Default::default()
    };
    let plan = SubjectPlan {
        occasions: &[],
        jumps: &[],
        schedule: &schedule,
        end: case.end,
        metrics: &[],
        sample_times: &times,
        solver: &opts,
    };
    let mut integ = Integrator::new(Method::Tsit5, 4);
    let out = simulate_subject(
        case.model.clone(),
        case.model.clone(),
        &[0.0; 3],
        &plan,
        &mut integ,
    );
    for (t, got) in times.iter().zip(&out.profile) {
        let want = conc(case, &schedule, *t);
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "t={t}: {got} vs {want}"
        );
    }
}

#[test]
fn a_failing_subject_is_flagged_and_yields_nan() {
    let mut case = cases().swap_remove(0);
    case.model.a[3] = f64::NAN;
    let (_, got, _, status) = run(&case, Method::Tsit5, 1e-6);
    assert_ne!(status, Status::Ok);
    assert!(got.iter().all(|v| v.is_nan()));
}

/// The command a new user runs: `vpop simulate` on the library's two_cmt_oral model prints AUC,
/// Cmax and Tmax equal to the closed form.
#[test]
fn vpop_simulate_on_the_library_model_matches_the_closed_form() {
    let case = &cases()[6];
    let text = common::simulate_ok(
        None,
        &[
            "two_cmt_oral",
            "--dose",
            "amount=100,into=depot,every=12,count=14",
            "--end",
            "168",
            "--metrics",
            "auc,cmax,tmax,ctrough",
        ],
    );
    let schedule = case.regimen.schedule(1.0, &case.dosing).unwrap();
    for (column, metric) in [
        ("cp_auc", "auc"),
        ("cp_cmax", "cmax"),
        ("cp_tmax", "tmax"),
        ("cp_ctrough", "ctrough"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(column))
            .unwrap_or_else(|| panic!("no {column} in:\n{text}"));
        let got: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let want = reference(case, &schedule, &Metric::parse(metric).unwrap());
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "{column}: {got} vs closed form {want}"
        );
    }
}

/// A simulation file gives the same result as flags; at steady state the AUC over a dosing
/// interval equals dose / CL (a property of linear kinetics).
#[test]
fn simulation_files_run_and_reach_the_steady_state_identity() {
    let text = common::simulate_ok(
        None,
        &[concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/one_subject.toml"
        )],
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("cp_auc_last_interval"))
        .unwrap();
    let auc_tau: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    // 100 mg every 12 h for 6.5 days at CL = 4 L/h: within 1 % of 25 mg·h/L.
    assert!((auc_tau / 25.0 - 1.0).abs() < 0.01, "{auc_tau}");
}

/// `vpop simulate` refuses what it would otherwise ignore or misread: flags beside a simulation
/// file (at their defaults too), a dose per a covariate, a metric column asked for twice, a window or sampling times
/// past the end, a key given twice in a dose; a fine `--times` range ends at its last time, not
/// past it (where the value would be NaN).
#[test]
fn vpop_simulate_refuses_what_it_would_ignore() {
    let vpop = |args: &[&str]| common::simulate_text(args);
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/one_subject.toml");
    let bolus = "amount=100,into=central";
    for (args, fragment) in [
        (
            vec![file, "--end", "48", "-p", "cl=1"],
            "leave out --param, --end",
        ),
        // At their default values too: given, they would be ignored all the same.
        (
            vec![
                file, "--end", "24", "--method", "tsit5", "--rtol", "1e-8", "--events", "cross",
            ],
            "leave out --end, --method, --rtol, --events (or",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "--covariates", "nocb"],
            "--id, --out and --covariates go with --data",
        ),
        (
            vec!["one_cmt_iv", "--dose", "amount=1,into=central,per=wt"],
            "a dose per a covariate",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "--metrics", "cmax,cp:cmax"],
            "metric column 'cp_cmax' is requested twice",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "--metrics", "auc(0,100)"],
            "the window (0, 100) ends after the end of the simulation (24)",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "-p", "cl=nan"],
            "--param 'cl=nan': 'nan' is not a finite number",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "--id", "7"],
            "--id, --out and --covariates go with --data",
        ),
        (
            vec![
                "one_cmt_iv",
                "--dose",
                bolus,
                "--end",
                "24",
                "--times",
                "12,30",
            ],
            "--times: 30 is after the end of the simulation (24)",
        ),
        (
            vec!["one_cmt_iv", "--dose", bolus, "--times", "0:36:12"],
            "--times: 36 is after the end of the simulation (24)",
        ),
        (
            vec!["one_cmt_iv", "--dose", "amount=100,amount=200,into=central"],
            "the key 'amount' is given twice",
        ),
        (
            vec![
                "one_cmt_oral",
                "--data",
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nm_dataset.csv"),
                "--end",
                "1",
            ],
            "leave out --end",
        ),
    ] {
        let (ok, text) = vpop(&args);
        assert!(!ok && text.contains(fragment), "{args:?}: {text}");
    }
    // A dosing declaration refused with these parameters, at its place in the model file; a
    // modelled dose into a state with both rate() and dur() (a dataset's RATE picks one).
    let dir = std::env::temp_dir().join(format!("vpop-simulate-refuses-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lag = dir.join("lag.vpm");
    std::fs::write(
        &lag,
        "param k = 1\nstate a\nalag(a) = -2 * k\nd/dt(a) = -k * a\noutput c = a\n",
    )
    .unwrap();
    let both = dir.join("both.vpm");
    std::fs::write(
        &both,
        "state a\nrate(a) = 5\ndur(a) = 5\nd/dt(a) = -a\noutput c = a\n",
    )
    .unwrap();
    // A declared rate that is NaN is said so, where it is declared (NaN had read as none).
    let nan_rate = dir.join("nan_rate.vpm");
    std::fs::write(
        &nan_rate,
        "param r = 1\nstate a\nrate(a) = sqrt(r - 2)\nd/dt(a) = -a\noutput c = a\n",
    )
    .unwrap();
    // A simulation file is checked as the run would check it: jumps in time too many to stop
    // at are refused by `vpop check` too.
    let jumpy = dir.join("jumpy.vpm");
    std::fs::write(
        &jumpy,
        "state a\nd/dt(a) = -a * (1 + 0.0001 * floor(1000 * t))\noutput c = a\n",
    )
    .unwrap();
    let jumpy_file = dir.join("jumpy.toml");
    std::fs::write(
        &jumpy_file,
        "model = \"jumpy.vpm\"\ndose = { amount = 1, into = \"a\" }\nend = 1008\n",
    )
    .unwrap();
    for command in ["check", "simulate"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .args([command.as_ref(), jumpy_file.as_os_str()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && text.contains("jump more than 100000 times between 0 and 1008"),
            "vpop {command}: {text}"
        );
    }
    let nan_rate = nan_rate.display().to_string();
    let (lag, both) = (lag.display().to_string(), both.display().to_string());
    for (args, fragment) in [
        (
            vec![nan_rate.as_str(), "--dose", "amount=1,into=a,modelled=true"],
            "nan_rate.vpm:3:6: rate(a) is NaN with these parameters",
        ),
        (
            vec![lag.as_str(), "--dose", "amount=1,into=a"],
            "lag.vpm:3:6: alag(a) is -2 with these parameters",
        ),
        (
            vec![both.as_str(), "--dose", "amount=1,into=a,modelled=true"],
            "declares both rate(a) and dur(a)",
        ),
    ] {
        let (ok, text) = vpop(&args);
        assert!(!ok && text.contains(fragment), "{args:?}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, text) = vpop(&["one_cmt_iv", "--dose", bolus, "--times", "0:24:1e-5"]);
    assert!(ok, "{text}");
    let last: Vec<f64> = text
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    // 100 / v · exp(−cl / v · 24) with the model's cl = 5, v = 50 (`vpop models one_cmt_iv`).
    let want = 100.0 / 50.0 * (-5.0f64 / 50.0 * 24.0).exp();
    assert!(
        last[0] == 24.0 && (last[1] / want - 1.0).abs() < 1e-6,
        "{last:?} vs {want}"
    );
}

/// `time_above_last_interval(x)` of repeated IV boluses into one compartment: in the last
/// interval [t_n, t_n + τ] the concentration falls from C0 = (D/V)·Σ_j exp(−k·j·τ) as
/// C0·exp(−k·(t − t_n)), so it is at or above x for ln(C0/x)/k, clamped to [0, τ]. Thresholds
/// crossed inside the interval, above its peak and below its trough; the last interval is the
/// last dose's, whatever the doses before it (a regimen whose last dose falls before the end,
/// and one whose last interval is cut by the end).
#[test]
fn time_above_in_the_last_interval_is_the_closed_form() {
    let (model, impulse) = one_cmt(false);
    let (cl, v) = (2.0, 25.0);
    let k: f64 = cl / v;
    for (every, count, end) in [(12.0, 5, 72.0), (8.0, 4, 40.0), (24.0, 3, 60.0)] {
        let case = Case {
            name: "1cmt iv bolus",
            model: model.clone(),
            impulse: impulse.clone(),
            regimen: Regimen {
                lines: vec![line(1, 100.0, every, count, Administration::Bolus)],
            },
            dosing: vec![StateDosing::default(); 2],
            end,
        };
        let last = every * (count - 1) as f64;
        let tau = f64::min(every, end - last);
        let c0: f64 = (0..count)
            .map(|j| 100.0 / v * (-k * every * j as f64).exp())
            .sum();
        let trough = c0 * (-k * tau).exp();
        let thresholds = [
            0.5 * trough,
            trough * (c0 / trough).sqrt(),
            0.9 * c0,
            2.0 * c0,
        ];
        let specs: Vec<MetricSpec> = thresholds
            .iter()
            .map(|x| {
                let m = Metric::parse(&format!("time_above_last_interval({x})")).unwrap();
                MetricSpec::new(0, "cp", m)
            })
            .collect();
        for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
            let opts = SolverOptions {
                method,
                rtol: 1e-10,
                atol: 1e-14,
                ..Default::default()
            };
            let (got, _, status) = simulate(&case, &specs, &opts);
            assert_eq!(status, Status::Ok);
            for (x, g) in thresholds.iter().zip(&got) {
                let want = ((c0 / x).ln() / k).clamp(0.0, tau);
                assert!(
                    (g - want).abs() <= 1e-7 * tau,
                    "q{every}h x{count}, end {end}, {method}: time above {x} in the last \
                     interval = {g}, closed form {want}"
                );
            }
        }
    }
}

/// A steady state that does not exist (nothing eliminates the dosed state) fails the subject,
/// and `vpop simulate` says why beside the status; the same dose with elimination runs.
#[test]
fn vpop_simulate_says_when_a_steady_state_does_not_exist() {
    let dose = "amount=100,into=central,every=12,steady_state=true";
    let (ok, text) = common::simulate_text(&["one_cmt_iv", "-p", "cl=0", "--dose", dose]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("status no_steady_state")
            && text.contains(
                "no_steady_state: the steady state of the steady-state dose was not found"
            ),
        "{text}"
    );
    let (ok, text) = common::simulate_text(&["one_cmt_iv", "--dose", dose, "--end", "12"]);
    assert!(ok, "{text}");
    // A dose rate above a saturable elimination's capacity: its iterations' steps reach
    // max_steps first.
    let oral = "amount=100,into=depot,every=12,steady_state=true";
    let (ok, text) = common::simulate_text(&["mm_elim_oral", "-p", "vmax=1", "--dose", oral]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("max_steps in the iterations to the steady state"),
        "{text}"
    );
}

/// `vpop simulate` names the metric's column as a trial does and gives the closed form: the
/// built-in one_cmt_iv (cl 5, v 50), 100 every 12 h five times, end 72; in the last interval
/// [48, 60] cp falls from C0 = 2·Σ_j exp(−1.2 j), above 1 for ln(C0)/0.1.
#[test]
fn vpop_simulate_gives_the_time_above_in_the_last_interval() {
    let out = common::simulate_in(
        None,
        &[
            "one_cmt_iv",
            "--dose",
            "amount=100,into=central,every=12,count=5",
            "--end",
            "72",
            "--rtol",
            "1e-10",
            "--metrics",
            "time_above_last_interval(1),time_above(1, 48, 60)",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let value = |column: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(column)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let c0: f64 = (0..5).map(|j| 2.0 * (-1.2 * j as f64).exp()).sum();
    let want = c0.ln() / 0.1;
    let got = value("cp_time_above_1_last_interval ");
    assert!(
        (got - want).abs() < 1e-6,
        "{got} vs closed form {want}\n{text}"
    );
    assert_eq!(got, value("cp_time_above_1_48_60 "), "{text}");
}

/// A simulation file takes an arm's `dose` beside `doses`, and `times` as an array (as a
/// trial's profile) or as the string `--times` takes: the same run either way, its profile
/// the closed form (one_cmt_iv: 100 at 0, 50 at 12; the value at 12 is the one before the
/// dose there).
#[test]
fn a_simulation_file_takes_a_dose_and_an_array_of_times() {
    let dir = std::env::temp_dir().join(format!("vpop-simulation-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        common::simulate_text(&[&file])
    };
    let body = "model = \"one_cmt_iv\"\ndose = { amount = 100, into = \"central\" }\n\
                doses = [{ amount = 50, into = \"central\", start = 12 }]\nend = 24\n\
                rtol = 1e-10\nmetrics = [\"auc\"]\n";
    let (ok, array) = run("array.toml", &format!("{body}times = [18, 6, 12]\n"));
    assert!(ok, "{array}");
    let (ok, string) = run("string.toml", &format!("{body}times = \"6,12,18\"\n"));
    assert!(ok, "{string}");
    assert_eq!(array, string);
    let c = |t: f64| {
        let mut c = 2.0 * (-0.1 * t).exp();
        if t > 12.0 {
            c += (-0.1 * (t - 12.0)).exp();
        }
        c
    };
    let rows: Vec<Vec<f64>> = array
        .lines()
        .rev()
        .take(3)
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
        .collect();
    for r in &rows {
        assert!((r[1] - c(r[0])).abs() < 1e-8 * c(r[0]), "{r:?}\n{array}");
    }
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        [18.0, 12.0, 6.0]
    );
    // The same rules as elsewhere, at their place in the file.
    for (name, text, says) in [
        (
            "late.toml",
            format!("{body}times = [6, 30]\n"),
            "late.toml:7:9: times [6, 30]: 30 is after the end of the simulation (24)",
        ),
        (
            "word.toml",
            format!("{body}times = [6, \"a\"]\n"),
            "word.toml:7:13: invalid type: string \"a\", expected a number",
        ),
        (
            "gut.toml",
            body.replace(
                "dose = { amount = 100, into = \"central\" }",
                "dose = { amount = 100, into = \"gut\" }",
            ),
            "gut.toml:2:31: dose into 'gut', which is not a state",
        ),
        (
            "array_dose.toml",
            body.replace(
                "dose = { amount = 100, into = \"central\" }",
                "dose = [{ amount = 100, into = \"central\" }]",
            ),
            "several dosing lines go in `doses = [{ … }, { … }]`",
        ),
    ] {
        let (ok, out) = run(name, &text);
        assert!(!ok && out.contains(says), "{name}: {out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A threshold just below Cmax is crossed twice within a few steps, often within one: the time
/// above it comes from both crossings located on the dense output around the interior maximum.
#[test]
fn time_above_a_threshold_near_the_peak_matches_the_closed_form() {
    for case in cases() {
        let schedule = case.regimen.schedule(1.0, &case.dosing).unwrap();
        let (_, cmax) = max_ref(&case, &schedule, 0.0, case.end, 1.0);
        let thr = 0.99 * cmax;
        let specs = [MetricSpec::new(
            0,
            "cp",
            Metric::parse(&format!("time_above({thr})")).unwrap(),
        )];
        let want = time_above_ref(&case, &schedule, 0.0, case.end, thr);
        for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
            // Loose: steps as long as the time above the threshold.
            let opts = SolverOptions {
                method,
                rtol: 1e-3,
                atol: 1e-7,
                ..Default::default()
            };
            let (metrics, _, _) = simulate(&case, &specs, &opts);
            let got = metrics[0];
            assert!(
                (got - want).abs() <= 3e-2 * want + 1e-6,
                "{} {method}: time above {thr:.4} = {got}, closed form {want}",
                case.name
            );
        }
    }
}

/// Zero doses over a duration (a placebo line of amount 0, a bioavailability of 0) give
/// nothing on the CPU reference, every method, against the closed form of the other doses.
#[test]
fn zero_doses_over_a_duration_give_nothing() {
    common::zero_doses_give_nothing(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-8,
        1e-6,
    );
}

/// A sampling grid of 0.1 h from 0.1 h reaches the dose times 24 h and 48 h themselves (not
/// 24.000000000000004, after the dose): their values are the troughs before the doses, below
/// the values 0.1 h earlier, as at 12 h and 36 h.
#[test]
fn a_decimal_grid_falls_on_the_dose_times() {
    let text = common::simulate_ok(
        None,
        &[
            "one_cmt_iv",
            "--dose",
            "amount=100,into=central,every=12,count=5",
            "--end",
            "60",
            "--times",
            "0.1:48:0.1",
        ],
    );
    let value = |t: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(t))
            .unwrap_or_else(|| panic!("no time {t} in:\n{text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    for (before, at) in [
        ("11.9000", "12.0000"),
        ("23.9000", "24.0000"),
        ("35.9000", "36.0000"),
        ("47.9000", "48.0000"),
    ] {
        assert!(
            value(at) < value(before),
            "{at}: {} after {}",
            value(at),
            value(before)
        );
    }
    let grid = vpop::trial::resolve::time_grid(0.1, 48.0, 0.1, 1000, "every").unwrap();
    assert_eq!(grid[239], 24.0);
    assert_eq!(grid[479], 48.0);
    assert_eq!(grid[2], 0.3);
    // No time past the last on the grid, and no two grid times snapped into one.
    let to = |from: f64, to: f64, step: f64| {
        vpop::trial::resolve::time_grid(from, to, step, 1000, "every").unwrap()
    };
    assert_eq!(to(0.0, 2.999999999, 1.0), [0.0, 1.0, 2.0]);
    assert_eq!(to(0.0, 48.0, 0.1).len(), 481);
    let fine = to(1e6, 1e6 + 1e-8, 1e-9);
    assert!(fine.windows(2).all(|w| w[0] < w[1]), "{fine:?}");
}

/// A short infusion late in a long trial delivers its amount on the CPU reference.
#[test]
fn a_late_short_infusion_delivers_its_amount() {
    common::a_late_short_infusion_delivers_its_amount(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-6,
    );
}

/// An output that is not finite leaves its own metrics undefined, the subject `ok` and the
/// other outputs' metrics right.
#[test]
fn non_finite_outputs_leave_their_metrics_undefined() {
    common::non_finite_outputs_leave_their_metrics_undefined(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-10,
        1e-8,
    );
}

/// Windowed areas late in a year-long run are the closed form's on the CPU reference.
#[test]
fn late_windows_keep_their_digits() {
    common::late_windows_keep_their_digits(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-10,
        1e-8,
    );
}

/// A short infusion late in a dataset delivers its amount on the CPU reference.
#[test]
fn a_late_short_infusion_record_delivers_its_amount() {
    common::a_late_short_infusion_record_delivers_its_amount(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-6,
    );
}

/// Jumps in time between the stopping points become stopping points on the CPU reference, at
/// three tolerances (with --nocapture, the table of docs/model-language.md, "Jumps").
#[test]
fn jumps_in_time_are_stopping_points() {
    for (rtol, tol) in [(1e-6, 1e-5), (1e-8, 1e-7), (1e-10, 1e-8)] {
        common::jumps_in_time_are_stopping_points(
            &mut |m| {
                Some(Box::new(vpop::backend::cpu::CpuBackend::new(m))
                    as Box<dyn vpop::backend::Backend>)
            },
            rtol,
            tol,
        );
    }
}

/// A segment a few units in the last place long after a jump starts on the new side on the
/// CPU reference.
#[test]
fn a_segment_ulps_long_starts_on_the_new_side() {
    common::a_segment_ulps_long_starts_on_the_new_side(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-10,
        1e-8,
    );
}

/// Tmax keeps the first of maxima within rtol on the CPU reference.
#[test]
fn tmax_keeps_the_first_of_maxima_within_rtol() {
    common::tmax_keeps_the_first_of_maxima_within_rtol(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-10,
        1e-4,
    );
}

/// A jump at a stopping point belongs to the segment after it on the CPU reference.
#[test]
fn a_jump_at_a_stopping_point_belongs_to_the_next_segment() {
    common::a_jump_at_a_stopping_point_belongs_to_the_next_segment(
        &mut |m| {
            Some(Box::new(vpop::backend::cpu::CpuBackend::new(m)) as Box<dyn vpop::backend::Backend>)
        },
        1e-10,
        1e-8,
    );
}
