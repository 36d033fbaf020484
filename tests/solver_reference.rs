//! The integrators on problems with independent reference solutions: Robertson's stiff
//! kinetics (against scipy's Radau at rtol 1e-12), exponential growth and blow-up for status
//! codes, and pinned work counters.

use vpop::solver::{
    DenseOutput, Integrator, Method, NoObserver, OdeSystem, SolverOptions, Stats, Status,
    StepObserver,
};

struct Robertson;

impl OdeSystem for Robertson {
    fn dim(&self) -> usize {
        3
    }
    fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
        dy[0] = -0.04 * y[0] + 1e4 * y[1] * y[2];
        dy[1] = 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] * y[1];
        dy[2] = 3e7 * y[1] * y[1];
    }
    fn jacobian(&mut self, _t: f64, y: &[f64], j: &mut [f64]) {
        j.copy_from_slice(&[
            -0.04,
            1e4 * y[2],
            1e4 * y[1],
            0.04,
            -1e4 * y[2] - 6e7 * y[1],
            -1e4 * y[1],
            0.0,
            6e7 * y[1],
            0.0,
        ]);
    }
    fn dfdt(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
        out.fill(0.0);
    }
}

fn reference() -> Vec<[f64; 4]> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/robertson_reference.csv"
    ))
    .unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

fn robertson(method: Method, rtol: f64) -> (Vec<[f64; 3]>, Stats) {
    let opts = SolverOptions {
        method,
        rtol,
        atol: 1e-14,
        ..Default::default()
    };
    let mut integ = Integrator::new(method, 3);
    let mut y = [1.0, 0.0, 0.0];
    let (mut t, mut h, mut stats) = (0.0, 0.0, Stats::default());
    let mut out = Vec::new();
    for r in reference() {
        let status = integ.integrate(
            &mut Robertson,
            t,
            r[0],
            &mut y,
            &mut h,
            &opts,
            &mut NoObserver,
            &mut stats,
        );
        assert_eq!(status, Status::Ok, "{method} at t = {}", r[0]);
        out.push(y);
        t = r[0];
    }
    (out, stats)
}

fn check_robertson(method: Method, rtol: f64, tol: f64) -> Stats {
    let (got, stats) = robertson(method, rtol);
    for (g, r) in got.iter().zip(reference()) {
        for k in 0..3 {
            let err = (g[k] - r[k + 1]).abs() / r[k + 1].abs();
            assert!(
                err < tol,
                "{method}: y{} at t = {}: {} vs {} (rel err {err:.1e})",
                k + 1,
                r[0],
                g[k],
                r[k + 1]
            );
        }
    }
    stats
}

#[test]
fn rodas4_solves_robertson() {
    check_robertson(Method::Rodas4, 1e-8, 1e-6);
}

#[test]
fn rosenbrock23_solves_robertson() {
    check_robertson(Method::Rosenbrock23, 1e-8, 1e-5);
}

/// y' = y on [0, 1]: e at the end, and the dense output everywhere in between.
struct Growth;

impl OdeSystem for Growth {
    fn dim(&self) -> usize {
        1
    }
    fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
        dy[0] = y[0];
    }
    fn jacobian(&mut self, _t: f64, _y: &[f64], j: &mut [f64]) {
        j[0] = 1.0;
    }
    fn dfdt(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
        out[0] = 0.0;
    }
}

struct DenseCheck {
    worst: f64,
}

impl StepObserver for DenseCheck {
    fn on_step(&mut self, s: &dyn DenseOutput) {
        let mut y = [0.0];
        for i in 0..=10 {
            let t = s.t0() + (s.t1() - s.t0()) * i as f64 / 10.0;
            s.eval(t, &mut y);
            self.worst = self.worst.max((y[0] - t.exp()).abs() / t.exp());
        }
        assert!((s.f1()[0] - s.y1()[0]).abs() <= 1e-12 * s.y1()[0].abs());
    }
}

#[test]
fn every_method_reaches_e_and_interpolates_it() {
    for (method, rtol, tol_end, tol_dense) in [
        (Method::Dopri5, 1e-10, 1e-9, 1e-8),
        (Method::Tsit5, 1e-10, 1e-9, 1e-8),
        (Method::Rodas4, 1e-10, 1e-8, 1e-7),
        (Method::Rosenbrock23, 1e-8, 5e-6, 5e-6),
    ] {
        let opts = SolverOptions {
            method,
            rtol,
            atol: 1e-14,
            ..Default::default()
        };
        let mut y = [1.0];
        let (mut h, mut stats) = (0.0, Stats::default());
        let mut obs = DenseCheck { worst: 0.0 };
        let st = Integrator::new(method, 1).integrate(
            &mut Growth,
            0.0,
            1.0,
            &mut y,
            &mut h,
            &opts,
            &mut obs,
            &mut stats,
        );
        assert_eq!(st, Status::Ok);
        let e = std::f64::consts::E;
        assert!((y[0] - e).abs() / e < tol_end, "{method}: {}", y[0]);
        assert!(
            obs.worst < tol_dense,
            "{method}: dense output error {:e}",
            obs.worst
        );
    }
}

/// y' = y², y(0) = 1 has a pole at t = 1.
struct BlowUp;

impl OdeSystem for BlowUp {
    fn dim(&self) -> usize {
        1
    }
    fn rhs(&mut self, _t: f64, y: &[f64], dy: &mut [f64]) {
        dy[0] = y[0] * y[0];
    }
    fn jacobian(&mut self, _t: f64, y: &[f64], j: &mut [f64]) {
        j[0] = 2.0 * y[0];
    }
    fn dfdt(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
        out[0] = 0.0;
    }
}

#[test]
fn status_codes_for_failing_problems() {
    for method in [
        Method::Dopri5,
        Method::Tsit5,
        Method::Rosenbrock23,
        Method::Rodas4,
    ] {
        // Approaching the pole the step size collapses (or the state overflows): never Ok.
        let opts = SolverOptions {
            method,
            ..Default::default()
        };
        let (mut y, mut h, mut stats) = ([1.0], 0.0, Stats::default());
        let st = Integrator::new(method, 1).integrate(
            &mut BlowUp,
            0.0,
            2.0,
            &mut y,
            &mut h,
            &opts,
            &mut NoObserver,
            &mut stats,
        );
        assert!(
            matches!(
                st,
                Status::StepTooSmall | Status::NonFinite | Status::MaxSteps
            ),
            "{method}: {st:?}"
        );
        assert_ne!(st, Status::Ok);
        // A step budget that cannot suffice.
        let opts = SolverOptions {
            method,
            max_steps: 5,
            rtol: 1e-10,
            atol: 1e-12,
            ..Default::default()
        };
        let (mut y, mut h, mut stats) = ([1.0], 0.0, Stats::default());
        let st = Integrator::new(method, 1).integrate(
            &mut Growth,
            0.0,
            10.0,
            &mut y,
            &mut h,
            &opts,
            &mut NoObserver,
            &mut stats,
        );
        assert_eq!(st, Status::MaxSteps, "{method}");
        // A non-finite start.
        let (mut y, mut h, mut stats) = ([f64::NAN], 0.0, Stats::default());
        let opts = SolverOptions {
            method,
            ..Default::default()
        };
        let st = Integrator::new(method, 1).integrate(
            &mut Growth,
            0.0,
            1.0,
            &mut y,
            &mut h,
            &opts,
            &mut NoObserver,
            &mut stats,
        );
        assert_eq!(st, Status::NonFinite, "{method}");
    }
}

/// Work counters, pinned so that any change in step control shows up in review.
#[test]
fn work_counters_are_pinned() {
    let mut lines = Vec::new();
    for method in [Method::Rosenbrock23, Method::Rodas4] {
        let (_, s) = robertson(method, 1e-6);
        lines.push(format!("robertson {method}: {s:?}"));
    }
    for method in [
        Method::Dopri5,
        Method::Tsit5,
        Method::Rosenbrock23,
        Method::Rodas4,
    ] {
        let opts = SolverOptions {
            method,
            rtol: 1e-8,
            atol: 1e-12,
            ..Default::default()
        };
        let (mut y, mut h, mut stats) = ([1.0], 0.0, Stats::default());
        Integrator::new(method, 1).integrate(
            &mut Growth,
            0.0,
            1.0,
            &mut y,
            &mut h,
            &opts,
            &mut NoObserver,
            &mut stats,
        );
        lines.push(format!("growth {method}: {stats:?}"));
    }
    insta::assert_snapshot!(lines.join("\n"));
}

/// `vpop simulate ARGS`: its output, which must say the subject succeeded.
fn simulate(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status ok"), "{args:?}: {text}");
    text
}

/// A dose into a target-mediated model whose binding is fast against the dosing interval: the
/// step after each dose spans the binding transient, where the Rodas4 interpolant alone could
/// be off by 100 % (even negative) while the step's end was right. The values read inside steps
/// (at times, the minimum, the time above a threshold) must match scipy's Radau at rtol 1e-12
/// (tests/data/tmdd_reference.py) to well within the absolute tolerance.
#[test]
fn rosenbrock_values_inside_steps_follow_a_fast_binding_transient() {
    let times = [0.5, 24.5, 24.9, 26.5, 48.5, 72.5, 73.0, 95.0];
    let reference = [
        1.117874198152058e-06,
        6.450085378294441e-07,
        6.471950387140475e-07,
        6.559548710343762e-07,
        4.724826954840631e-07,
        3.83418106651842e-07,
        3.847811477800498e-07,
        4.4963287661931766e-07,
    ];
    let cmin = 3.82060920258033e-07;
    let atol = 1e-9;
    for method in ["rodas4", "rosenbrock23"] {
        let list: Vec<String> = times.iter().map(|t| t.to_string()).collect();
        let text = simulate(&[
            "tmdd_full",
            "-p",
            "kon=1000",
            "--dose",
            "amount=30,into=central,every=24,count=4",
            "--end",
            "96",
            "--method",
            method,
            "--rtol",
            "1e-6",
            "--atol",
            "1e-9",
            "--metrics",
            "rfree:cmin,rfree:time_above(3e-7)",
            "--times",
            &list.join(","),
        ]);
        let value = |column: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(column)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let got = value("rfree_cmin");
        assert!(
            (got - cmin).abs() < 0.05 * atol,
            "{method} cmin {got} vs {cmin}"
        );
        // rfree stays above 3.82e-7 throughout.
        assert_eq!(value("rfree_time_above_0p0000003"), 96.0, "{method}");
        for (t, want) in times.iter().zip(reference) {
            let row = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.len() == 3 && w[0].parse::<f64>().ok() == Some(*t))
                .unwrap_or_else(|| panic!("no row at {t}:\n{text}"));
            let got: f64 = row[2].parse().unwrap();
            assert!(
                (got - want).abs() < 0.05 * atol,
                "{method}: rfree({t}) = {got} vs {want}"
            );
        }
    }
}

/// A fast response (idr1 with kout = 1e5) driven by an infusion: Rodas4's interpolant error
/// inside each step is antisymmetric about its midpoint (zero there, ±48 tolerance units at a
/// quarter of the step before the dense output was checked at ¼ and ¾). Values inside steps
/// against scipy's Radau at rtol 1e-12 (tests/data/tmdd_reference.py), in tolerance units.
#[test]
fn rosenbrock_values_inside_steps_follow_an_infused_fast_response() {
    let reference = [
        (1.005298317, 9.905831188798526e-05),
        (1.013738238, 9.759655738843564e-05),
        (1.022122163, 9.619241004694959e-05),
        (1.035622479, 9.402590258452555e-05),
        (1.092367086, 8.602225810003463e-05),
        (1.621016942, 5.083049251191431e-05),
    ];
    let (rtol, atol) = (1e-6, 1e-9);
    for method in ["rodas4", "rosenbrock23"] {
        let list: Vec<String> = reference.iter().map(|(t, _)| t.to_string()).collect();
        let text = simulate(&[
            "idr1",
            "-p",
            "kout=1e5",
            "--dose",
            "amount=100,into=central,start=1,duration=1",
            "--end",
            "4",
            "--method",
            method,
            "--rtol",
            "1e-6",
            "--atol",
            "1e-9",
            "--metrics",
            "response:cmin",
            "--times",
            &list.join(","),
        ]);
        // The profile's rows, in the order of the times given (printed to 4 decimals).
        let rows: Vec<f64> = text
            .lines()
            .skip_while(|l| l.split_whitespace().next() != Some("time"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().last()?.parse().ok())
            .collect();
        assert_eq!(rows.len(), reference.len(), "{text}");
        for ((t, want), got) in reference.into_iter().zip(rows) {
            let units = (got - want).abs() / (rtol * want.abs() + atol);
            assert!(
                units < 3.0,
                "{method}: response({t}) = {got} vs {want} ({units:.1} units)"
            );
        }
    }
}

/// A tiny atol against a fast binding component made the starting-step estimate (1e-14 h)
/// smaller than the least step allowed (1e-14 of the span), and the subject failed before any
/// step was tried: the first step is now at least ten least steps. The result matches scipy's
/// Radau at rtol 1e-12 (tests/data/tmdd_reference.py) within the tolerance.
#[test]
fn a_tiny_atol_does_not_stop_the_first_step() {
    let (cp10, auc) = (9.164779947829127, 95.28305921370884);
    for (method, rel) in [("rodas4", 1e-6), ("rosenbrock23", 1e-6), ("tsit5", 1e-6)] {
        let text = simulate(&[
            "tmdd_full",
            "-p",
            "kon=1e4",
            "--dose",
            "amount=30,into=central",
            "--end",
            "10",
            "--method",
            method,
            "--rtol",
            "1e-6",
            "--atol",
            "1e-16",
            "--metrics",
            "cp:at(10),cp:auc",
        ]);
        let value = |column: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(column)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        for (column, want) in [("cp_at_10", cp10), ("cp_auc", auc)] {
            let got = value(column);
            assert!(
                (got - want).abs() <= rel * want,
                "{method} {column}: {got} vs {want}"
            );
        }
    }
}

/// `vpop simulate` of a model that steps in time says where the subject's integration stops
/// for it: examples/induction.vpm's meals (12 to 13 h each day), days, and this subject's
/// induction at 50 h; a model without steps in time says nothing of it.
#[test]
fn simulate_lists_the_subjects_jumps_in_time() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/induction.vpm");
    let text = simulate(&[
        model,
        "-p",
        "tind=50",
        "--dose",
        "amount=100,into=depot",
        "--end",
        "168",
    ]);
    assert!(
        text.contains(
            "\njumps in time, stopping points of the integration: 21, at t = 12, 13, 24, 36, 37, \
             48, 50, 60, … 157\n"
        ),
        "{text}"
    );
    let text = simulate(&[
        "two_cmt_oral",
        "--dose",
        "amount=100,into=depot",
        "--end",
        "24",
    ]);
    assert!(!text.contains("jumps in time"), "{text}");
}
