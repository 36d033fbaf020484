//! Numerical checks of the built-in models: baseline fixed points that follow from their
//! equations, hand-computed right-hand sides, and agreement of every method on every model.

use vpop::backend::cpu::{simulate_subject, SubjectPlan};
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{library, CompiledModel, Model};
use vpop::solver::{Integrator, Method, OdeSystem, SolverOptions, Status};

fn load(name: &str) -> Model {
    let m = library::get(name).unwrap();
    Model::parse(m.name, m.source).unwrap()
}

fn defaults(m: &Model) -> Vec<f64> {
    m.params.iter().map(|p| p.default).collect()
}

/// One subject of model `m` (compiled as `c`) on the CPU reference from `y0` to `end`.
#[allow(clippy::too_many_arguments)]
fn simulate(
    c: &CompiledModel,
    m: &Model,
    params: &[f64],
    y0: &[f64],
    schedule: &vpop::dosing::Schedule,
    metrics: &[MetricSpec],
    end: f64,
    solver: &SolverOptions,
) -> vpop::backend::cpu::SubjectOutcome {
    let plan = SubjectPlan {
        occasions: &[],
        jumps: &[],
        schedule,
        end,
        metrics,
        sample_times: &[],
        solver,
    };
    let mut integ = Integrator::new(solver.method, m.states.len() + m.outputs.len());
    simulate_subject(c.bind(params), c.bind(params), y0, &plan, &mut integ)
}

fn rhs_at(name: &str, y: &[f64]) -> Vec<f64> {
    let m = load(name);
    let c = CompiledModel::new(&m);
    let mut b = c.bind(&defaults(&m));
    let mut dy = vec![0.0; y.len()];
    b.rhs(0.0, y, &mut dy);
    dy
}

#[test]
fn two_cmt_oral_rhs_by_hand() {
    let (ka, cl, v1, q, v2) = (1.2, 5.0, 30.0, 2.5, 60.0);
    let y = [10.0, 3.0, 7.0];
    let dy = rhs_at("two_cmt_oral", &y);
    let want = [
        -ka * y[0],
        ka * y[0] - (cl / v1 + q / v1) * y[1] + q / v2 * y[2],
        q / v1 * y[1] - q / v2 * y[2],
    ];
    for k in 0..3 {
        assert!(
            (dy[k] - want[k]).abs() < 1e-14,
            "{k}: {} vs {}",
            dy[k],
            want[k]
        );
    }
}

#[test]
fn baselines_are_fixed_points_without_drug() {
    for name in [
        "idr1",
        "idr2",
        "idr3",
        "idr4",
        "tmdd_full",
        "tmdd_qss",
        "ddi_ritonavir_cyp3a",
    ] {
        let m = load(name);
        let c = CompiledModel::new(&m);
        let mut b = c.bind(&defaults(&m));
        let mut y0 = vec![0.0; m.states.len()];
        b.initial_state(&mut y0);
        assert!(
            y0.iter().any(|v| *v != 0.0),
            "{name}: a nonzero baseline is expected"
        );
        let mut dy = vec![1.0; y0.len()];
        b.rhs(0.0, &y0, &mut dy);
        for (k, d) in dy.iter().enumerate() {
            assert!(
                d.abs() < 1e-15,
                "{name}: d/dt({}) = {d} at baseline",
                m.states[k].name
            );
        }
    }
}

/// idr_circadian without drug stays on its 24-hour cycle from its initial state: the response
/// is the closed form rm/kout + b·(kout·cos(w(t − tz)) + w·sin(w(t − tz)))/(kout² + w²),
/// checked by the right-hand side at t = 0 (against the derivative of the closed form) and by
/// integration over two days.
#[test]
fn the_circadian_baseline_repeats_every_day_without_drug() {
    let m = load("idr_circadian");
    let c = CompiledModel::new(&m);
    let p = defaults(&m);
    let get = |name: &str| p[m.params.iter().position(|q| q.name == name).unwrap()];
    let (rm, b, tz, kout) = (get("rm"), get("b"), get("tz"), get("kout"));
    let w = 2.0 * std::f64::consts::PI / 24.0;
    let cycle = |t: f64| {
        rm / kout
            + b * (kout * (w * (t - tz)).cos() + w * (w * (t - tz)).sin()) / (kout * kout + w * w)
    };
    let slope = |t: f64| {
        b * w * (-kout * (w * (t - tz)).sin() + w * (w * (t - tz)).cos()) / (kout * kout + w * w)
    };
    let mut bound = c.bind(&p);
    let mut y0 = vec![0.0; 3];
    bound.initial_state(&mut y0);
    assert!((y0[2] - cycle(0.0)).abs() < 1e-13 * cycle(0.0), "{y0:?}");
    let mut dy = vec![0.0; 3];
    bound.rhs(0.0, &y0, &mut dy);
    assert!(
        (dy[2] - slope(0.0)).abs() < 1e-13 * rm,
        "{} vs {}",
        dy[2],
        slope(0.0)
    );
    let times = [5.0, 13.0, 24.0, 30.5, 47.0];
    let specs: Vec<MetricSpec> = times
        .iter()
        .map(|t| MetricSpec::new(1, "response", Metric::parse(&format!("at({t})")).unwrap()))
        .collect();
    let schedule = Regimen::default()
        .schedule(1.0, &bound.state_dosing())
        .unwrap();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-11,
        atol: 1e-12,
        ..Default::default()
    };
    let out = simulate(&c, &m, &p, &y0, &schedule, &specs, 48.0, &solver);
    assert_eq!(out.status, Status::Ok);
    for (t, got) in times.iter().zip(&out.metrics) {
        let want = cycle(*t);
        assert!(
            (got - want).abs() < 1e-9 * want,
            "r({t}) = {got}, want {want}"
        );
    }
}

#[test]
fn jacobians_match_finite_differences_on_every_library_model() {
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let c = CompiledModel::new(&m);
        let mut b = c.bind(&defaults(&m));
        let n = m.states.len();
        let y: Vec<f64> = (0..n).map(|i| 0.3 + 0.7 * i as f64).collect();
        let mut jac = vec![0.0; n * n];
        b.jacobian(1.0, &y, &mut jac);
        for j in 0..n {
            let h = 1e-6 * y[j].abs().max(1.0);
            let (mut yp, mut ym) = (y.clone(), y.clone());
            yp[j] += h;
            ym[j] -= h;
            let (mut fp, mut fm) = (vec![0.0; n], vec![0.0; n]);
            b.rhs(1.0, &yp, &mut fp);
            b.rhs(1.0, &ym, &mut fm);
            for i in 0..n {
                let fd = (fp[i] - fm[i]) / (2.0 * h);
                let got = jac[i * n + j];
                assert!(
                    (got - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                    "{}: J[{i}][{j}] = {got}, finite difference {fd}",
                    lm.name
                );
            }
        }
    }
}

/// Every model × method: metrics agree with Rodas4 at a tight tolerance.
#[test]
fn every_method_agrees_on_every_library_model() {
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let c = CompiledModel::new(&m);
        let params = defaults(&m);
        // A dose into the first state (the depot or the central compartment), repeated.
        let regimen = Regimen {
            lines: vec![DoseLine::boluses(0, 100.0, 12.0, 4)],
        };
        let mut b = c.bind(&params);
        let schedule = regimen.schedule(1.0, &b.state_dosing()).unwrap();
        let mut y0 = vec![0.0; m.states.len()];
        b.initial_state(&mut y0);
        let specs: Vec<MetricSpec> = ["auc", "cmax", "auc_last_interval"]
            .iter()
            .flat_map(|x| {
                let metric = Metric::parse(x).unwrap();
                m.outputs
                    .iter()
                    .enumerate()
                    .map(move |(k, o)| MetricSpec::new(k, &o.name, metric))
            })
            .collect();
        let run = |method: Method, rtol: f64| {
            let solver = SolverOptions {
                method,
                rtol,
                atol: rtol * 1e-3,
                dt: (method == Method::Rk4).then_some(0.01),
                ..Default::default()
            };
            simulate(&c, &m, &params, &y0, &schedule, &specs, 72.0, &solver)
        };
        let reference = run(Method::Rodas4, 1e-10);
        assert_eq!(reference.status, Status::Ok, "{}", lm.name);
        for (method, rtol, tol) in [
            (Method::Rodas4, 1e-7f64, 1e-5),
            (Method::Rosenbrock23, 1e-7, 1e-4),
            (Method::Tsit5, 1e-7, 1e-5),
            (Method::Dopri5, 1e-7, 1e-5),
            (Method::Rk4, 0.0, 1e-5),
        ] {
            let out = run(method, rtol.max(1e-12));
            assert_eq!(out.status, Status::Ok, "{} {method}", lm.name);
            for ((s, got), want) in specs.iter().zip(&out.metrics).zip(&reference.metrics) {
                let err = (got - want).abs() / want.abs().max(1e-6);
                assert!(
                    err < tol,
                    "{} {method} {}: {got} vs {want} (rel {err:.1e})",
                    lm.name,
                    s.column
                );
            }
        }
    }
}
