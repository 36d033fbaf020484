//! Arms that start at steady state (`steady_state = true` on a dose line, or SS = 1 at time 0
//! in an arm's records): on the CPU reference against closed forms of a one-compartment IV
//! model (a bolus, and an infusion longer than the dosing interval whose previous infusion is
//! still running at the start; lines whose first dose comes after 0; a reset cancelling what
//! the doses before 0 still had to give); on the WGSL kernels (lavapipe) and the CUDA kernels (emulated
//! on the host) against the CPU reference, with an oral dose whose lag is longer than the
//! interval too, and resumed from any dispatch budget.

// Without a GPU backend compiled in, only the CPU tests remain.
#![cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_imports))]

mod common;

use std::sync::Arc;

use vpop::backend::cpu::{simulate_arm_subject, CpuBackend};
use vpop::backend::{ArmPlan, Backend, ChunkInput, ChunkOutput};
use vpop::dosing::{Administration, DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{library, CompiledModel, Model};
use vpop::solver::{Integrator, Method, SolverOptions, Status};

const CL: f64 = 5.0;
const V: f64 = 50.0;
const II: f64 = 12.0;
const DOSE: f64 = 100.0;

fn model() -> (Model, CompiledModel) {
    let lm = library::get("one_cmt_iv").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let c = CompiledModel::new(&m);
    (m, c)
}

fn arm(administration: Administration, metrics: &[&str]) -> ArmPlan {
    ArmPlan {
        name: "ss".into(),
        regimen: Regimen {
            lines: vec![DoseLine {
                state: 0,
                amount: DOSE,
                start: 0.0,
                interval: II,
                count: 1,
                administration,
                steady_state: true,
                scaled: true,
                keeps_lag: false,
            }],
        },
        metrics: metrics
            .iter()
            .map(|x| MetricSpec::new(0, "cp", Metric::parse(x).unwrap()))
            .collect(),
        end: II,
        sample_times: Vec::new(),
        solver: SolverOptions {
            method: Method::Tsit5,
            rtol: 1e-10,
            atol: 1e-12,
            ..Default::default()
        },
        occasions: Vec::new(),
    }
}

fn simulate(arm: &ArmPlan) -> Vec<f64> {
    simulate_with(arm, CL).0
}

/// The metrics, and the steps accepted (the steady state's iterations included).
fn simulate_with(arm: &ArmPlan, cl: f64) -> (Vec<f64>, u64) {
    let (_, c) = model();
    let mut integ = Integrator::new(arm.solver.method, 2);
    let out = simulate_arm_subject(&c, &[cl, V], 1.0, arm, &mut integ);
    assert_eq!(out.status, Status::Ok);
    assert!(out.stats.accepted > 0);
    (out.metrics, out.stats.accepted)
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: {got} vs {want} (rel {:.2e})",
        (got - want).abs() / want.abs()
    );
}

/// The concentration at t of one infusion of DOSE over `dur` hours from s.
fn infusion(dur: f64, s: f64, t: f64) -> f64 {
    if t <= s {
        return 0.0;
    }
    let (k, rate) = (CL / V, DOSE / dur);
    let e = (s + dur).min(t);
    rate / CL * ((-k * (t - e)).exp() - (-k * (t - s)).exp())
}

/// A bolus every 12 h at steady state: AUC over the interval is D/CL, the concentration
/// starts at D/V/(1 − r) and falls to D/V·r/(1 − r), r = exp(−12·CL/V).
#[test]
fn a_bolus_at_steady_state_matches_the_closed_form() {
    let m = simulate(&arm(
        Administration::Bolus,
        &["auc", "cmax", "cmin", "at(5)"],
    ));
    let k = CL / V;
    let r = (-k * II).exp();
    close(m[0], DOSE / CL, 1e-8, "AUC over the interval");
    close(m[1], DOSE / V / (1.0 - r), 1e-8, "Cmax");
    close(m[2], DOSE / V * r / (1.0 - r), 1e-8, "Cmin");
    close(m[3], DOSE / V * (-k * 5.0).exp() / (1.0 - r), 1e-8, "C(5)");
}

/// A steady-state dose given alone: its trough is the steady state's (the value before it)
/// and its last interval its dosing interval, as at steady state every interval is the same:
/// Ctrough D/V·r/(1 − r) and AUC over the last interval D/CL, though the run goes on to 2·II
/// (the whole run's AUC adds the decay from the trough over the second interval).
#[test]
fn a_steady_state_dose_given_alone_has_its_trough_and_its_interval() {
    let mut a = arm(
        Administration::Bolus,
        &[
            "ctrough",
            "auc_last_interval",
            "cmax_last_interval",
            "cmin_last_interval",
            "auc",
        ],
    );
    a.end = 2.0 * II;
    let m = simulate(&a);
    let k = CL / V;
    let r = (-k * II).exp();
    let trough = DOSE / V * r / (1.0 - r);
    close(m[0], trough, 1e-8, "Ctrough");
    close(m[1], DOSE / CL, 1e-8, "AUC over the last interval");
    close(m[2], DOSE / V / (1.0 - r), 1e-8, "Cmax over it");
    close(m[3], trough, 1e-8, "Cmin over it");
    close(
        m[4],
        DOSE / CL + trough * (1.0 - r) / k,
        1e-8,
        "AUC to 2·II",
    );
}

/// A steady state approached slowly (half-lives of 29 and 289 intervals: the state changes by
/// a ratio of 0.976 and 0.998 from one interval to the next): the iterations follow the change
/// until what remains of it is small, rather than stopping once it is as small as the
/// integration's error (which left AUC 4e-4 short at rtol 1e-6), and they get there by
/// extrapolating the geometric series of the changes, in a few dozen intervals rather than
/// thousands (plain iteration took 778–10 586 steps here; fewer than 500 are allowed). AUC over
/// the interval is D/CL, the concentrations as for any bolus at steady state.
#[test]
fn a_slowly_approached_steady_state_matches_the_closed_form() {
    for (rtol, atol, tol) in [(1e-6, 1e-9, 2e-5), (1e-10, 1e-12, 1e-8)] {
        for cl in [0.1, 0.01] {
            let mut a = arm(Administration::Bolus, &["auc", "cmax", "cmin"]);
            a.solver.rtol = rtol;
            a.solver.atol = atol;
            let (m, steps) = simulate_with(&a, cl);
            assert!(steps < 500, "CL {cl}, rtol {rtol:e}: {steps} steps");
            let r = (-cl / V * II).exp();
            let what = |x: &str| format!("{x}, CL {cl}, rtol {rtol:e}");
            close(m[0], DOSE / cl, tol, &what("AUC over the interval"));
            close(m[1], DOSE / V / (1.0 - r), tol, &what("Cmax"));
            close(m[2], DOSE / V * r / (1.0 - r), tol, &what("Cmin"));
        }
    }
}

/// An 18-hour infusion every 12 h at steady state: at the start the previous infusion is
/// still running (until 6 h); AUC over the interval is still D/CL (mass balance), and the
/// concentration is the superposition of every earlier infusion.
#[test]
fn an_infusion_longer_than_the_interval_matches_the_closed_form() {
    let dur = 18.0;
    let m = simulate(&arm(
        Administration::InfusionDuration(dur),
        &["auc", "at(3)", "at(9)", "cmax", "cmin"],
    ));
    let one = |s: f64, t: f64| infusion(dur, s, t);
    let c = |t: f64| (0..4000).map(|j| one(-(j as f64) * II, t)).sum::<f64>();
    close(m[0], DOSE / CL, 1e-8, "AUC over the interval");
    close(m[1], c(3.0), 1e-8, "C(3)");
    close(m[2], c(9.0), 1e-8, "C(9)");
    // The rate drops at 6 h (the previous infusion ends): the peak is there.
    close(m[3], c(6.0), 1e-8, "Cmax");
    close(m[4], c(0.0).min(c(12.0)), 1e-8, "Cmin");
}

/// A reset after a steady-state start goes back to the model's initial state (nothing in the
/// body), not to the steady state, as NONMEM's EVID 3 after an SS = 1 dose: 18-hour infusions
/// every 12 h from steady state, a reset at 18 h (the infusions started at 0 and 12 h stop),
/// then the dose at 24 h alone.
#[test]
fn a_reset_after_a_steady_state_start_empties_the_body() {
    let dur = 18.0;
    let mut a = arm(
        Administration::InfusionDuration(dur),
        &[
            "at(17)",
            "at(20)",
            "at(24)",
            "at(30)",
            "at(36)",
            "auc(18, 36)",
        ],
    );
    a.regimen.lines[0].count = 3;
    a.regimen.lines.push(DoseLine::reset(18.0));
    a.end = 3.0 * II;
    let m = simulate(&a);
    let (k, rate) = (CL / V, DOSE / dur);
    let one = |s: f64, t: f64| infusion(dur, s, t);
    let c = |t: f64| (0..4000).map(|j| one(II - (j as f64) * II, t)).sum::<f64>();
    close(m[0], c(17.0), 1e-8, "C(17), before the reset");
    assert_eq!(m[1], 0.0, "C(20): nothing left after the reset");
    assert_eq!(m[2], 0.0, "C(24): the dose at 24 h starts from nothing");
    close(m[3], one(24.0, 30.0), 1e-8, "C(30)");
    close(m[4], one(24.0, 36.0), 1e-8, "C(36)");
    // The integral from 24 to 36 h of one infusion started at 24 h.
    let auc = rate / CL * (12.0 - (1.0 - (-k * 12.0).exp()) / k);
    close(m[5], auc, 1e-8, "AUC(18, 36)");
}

/// A steady-state line whose first dose comes after 0 (at 5 h, every 12 h): the arm starts
/// from the steady state of the doses at −7, −19, … h, so from 0 to 5 h the concentration is
/// that of a dose 7 to 12 h old, and the dose at 5 h continues the same periodic profile. A
/// bolus (closed form), and an 18-hour infusion, of which the one started at −7 h still runs
/// at 0 (superposition of every earlier infusion).
#[test]
fn a_steady_state_line_may_start_after_0() {
    let (k, s) = (CL / V, 5.0);
    let r = (-k * II).exp();
    let mut a = arm(
        Administration::Bolus,
        &[
            "at(0)",
            "at(3)",
            "auc(0, 5)",
            "auc(5, 17)",
            "cmax",
            "at(20)",
            "ctrough",
        ],
    );
    a.regimen.lines[0].start = s;
    a.regimen.lines[0].count = 3;
    a.end = 3.0 * II;
    let m = simulate(&a);
    // A dose `age` hours old, at steady state.
    let c = |age: f64| DOSE / V * (-k * age).exp() / (1.0 - r);
    close(m[0], c(II - s), 1e-8, "C(0)");
    close(m[1], c(II - s + 3.0), 1e-8, "C(3)");
    let auc = DOSE / (V * k * (1.0 - r)) * ((-k * (II - s)).exp() - (-k * II).exp());
    close(m[2], auc, 1e-8, "AUC(0, 5)");
    close(
        m[3],
        DOSE / CL,
        1e-8,
        "AUC over the interval from the first dose",
    );
    close(m[4], c(0.0), 1e-8, "Cmax");
    close(m[5], c(20.0 - 17.0), 1e-8, "C(20)");
    // The trough before the last dose (29 h).
    close(m[6], c(II), 1e-8, "Ctrough");

    let dur = 18.0;
    let mut a = arm(
        Administration::InfusionDuration(dur),
        &["at(0)", "at(3)", "at(9)", "auc(5, 17)", "at(30)"],
    );
    a.regimen.lines[0].start = s;
    a.regimen.lines[0].count = 3;
    a.end = 3.0 * II;
    let m = simulate(&a);
    let c = |t: f64| {
        (0..4000)
            .map(|j| infusion(dur, s + 2.0 * II - (j as f64) * II, t))
            .sum::<f64>()
    };
    for (i, t) in [0.0, 3.0, 9.0].into_iter().enumerate() {
        close(m[i], c(t), 1e-8, &format!("infusion C({t})"));
    }
    close(m[3], DOSE / CL, 1e-8, "infusion AUC over the interval");
    close(m[4], c(30.0), 1e-8, "infusion C(30)");
}

/// A reset cancels what the infusions given before a steady-state start still had to give: 40-
/// hour infusions every 12 h from steady state, a reset at 18 h, then a dose at 24 h. The
/// infusion started at −12 h ran until 28 h; after the reset its end must not take its rate off
/// the infusion started at 24 h. The same with the line starting at 5 h.
#[test]
fn a_reset_cancels_the_infusions_given_before_a_steady_state_start() {
    let dur = 40.0;
    for s in [0.0, 5.0] {
        let mut a = arm(
            Administration::InfusionDuration(dur),
            &["at(20)", "at(30)", "at(36)"],
        );
        a.regimen.lines[0].start = s;
        a.regimen.lines[0].count = 3;
        a.regimen.lines.push(DoseLine::reset(18.0));
        a.end = 3.0 * II;
        let m = simulate(&a);
        // After the reset only the dose at s + 24 h is left.
        let last = s + 2.0 * II;
        let want = |t: f64| infusion(dur, last, t);
        let what = |t: f64| format!("C({t}), line from {s}");
        close(m[0], want(20.0), 1e-8, &what(20.0));
        close(m[1], want(30.0), 1e-8, &what(30.0));
        close(m[2], want(36.0), 1e-8, &what(36.0));
    }
}

/// A steady-state line starts within its first interval: one at or after `every` is refused.
#[test]
fn a_steady_state_line_starting_after_its_interval_is_refused() {
    let mut a = arm(Administration::Bolus, &["auc"]);
    a.regimen.lines[0].start = II;
    let e = a.regimen.validate(1).unwrap_err();
    assert!(e.to_string().contains("start < every"), "{e}");
    a.regimen.lines[0].start = II - 0.5;
    a.regimen.validate(1).unwrap();
}

/// A steady-state line in an arm's records (SS = 1 at time 0) is the same arm as the line.
#[test]
fn records_with_ss_start_the_arm_at_steady_state() {
    let (m, _) = model();
    let dir = std::env::temp_dir().join(format!("vpop-ss-arm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("ss.csv");
    std::fs::write(
        &csv,
        "ID,TIME,EVID,AMT,CMT,SS,II,ADDL\n1,0,1,100,1,1,12,2\n",
    )
    .unwrap();
    let ds = vpop::dosing::nonmem::Dataset::load(&csv).unwrap();
    let lines = vpop::trial::regimen::record_lines(&m, &ds).unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].steady_state);
    assert_eq!((lines[0].interval, lines[0].count), (12.0, 3));
    // Refused: SS = 1 later than the start, and SS = 2.
    for bad in [
        "ID,TIME,EVID,AMT,CMT,SS,II\n1,0,1,100,1,0,0\n1,24,1,100,1,1,12\n",
        "ID,TIME,EVID,AMT,CMT,SS,II\n1,0,1,100,1,2,12\n",
    ] {
        std::fs::write(&csv, bad).unwrap();
        let ds = vpop::dosing::nonmem::Dataset::load(&csv).unwrap();
        let e = vpop::trial::regimen::record_lines(&m, &ds).unwrap_err();
        assert!(e.message.contains("SS = 1 at TIME 0"), "{}", e.message);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An oral dose at steady state whose lag is a whole number of dosing intervals that are not
/// exact in binary (9.6 h = 8 × 1.2 h; 6.0 h = 5 × 1.2 h; 0.5 h = 10 × 0.05 h): one dose per
/// interval, as for any other lag (the doses 7 and 8 intervals back once both fell inside one
/// interval, an ulp from either end, and the steady state was doubled). AUC over an interval is
/// D/CL; the concentration at 0.6 h, the sum over the dose train of the one-dose profile.
#[test]
fn a_lag_of_whole_intervals_gives_one_dose_per_interval() {
    let c = CompiledModel::new(&Model::parse("oral_lag.vpm", ORAL_LAG).unwrap());
    let (ka, cl, v) = (1.2, 5.0, 50.0);
    let k = cl / v;
    for (ii, lag) in [(1.2, 9.6), (1.2, 9.5), (1.2, 9.7), (1.2, 6.0), (0.05, 0.5)] {
        let mut a = arm(Administration::Bolus, &["auc", "at(0.6)"]);
        a.regimen.lines[0].interval = ii;
        a.end = ii;
        a.metrics[1] = MetricSpec::new(
            0,
            "cp",
            Metric::parse(&format!("at({})", ii / 2.0)).unwrap(),
        );
        let mut integ = Integrator::new(a.solver.method, 2);
        let out = simulate_arm_subject(&c, &[ka, cl, v, lag], 1.0, &a, &mut integ);
        assert_eq!(out.status, Status::Ok);
        close(
            out.metrics[0],
            DOSE / cl,
            1e-8,
            &format!("AUC, ii {ii} lag {lag}"),
        );
        // The doses given j intervals before the one at 0 (j ≥ 0) arrive at lag − j·ii.
        let t = ii / 2.0;
        let want: f64 = (0..200_000)
            .map(|j| t - (lag - j as f64 * ii))
            .filter(|s| *s > 0.0)
            .map(|s| DOSE * ka / (v * (ka - k)) * ((-k * s).exp() - (-ka * s).exp()))
            .sum();
        close(
            out.metrics[1],
            want,
            1e-8,
            &format!("C({t}), ii {ii} lag {lag}"),
        );
    }
}

const ORAL_LAG: &str = "
param ka = 1.2
param cl = 5
param v = 50
param lag = 15
state depot
state central
alag(depot) = lag
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
output cp = central / v
";

/// Arms at steady state on a GPU backend against the CPU reference at the same settings: a
/// bolus, an infusion longer than the interval, and an oral dose whose lag (15 h) is longer
/// than the interval (the previous dose is still to come after 0); several subjects.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_agrees(b: &mut dyn Backend, model: &CompiledModel, oral: bool, rtol: f64, tol: f64) {
    let metrics = [
        "auc",
        "cmax",
        "cmin",
        "ctrough",
        "auc_last_interval",
        "at(5)",
    ];
    let mut arms = Vec::new();
    if oral {
        let mut a = arm(Administration::Bolus, &metrics);
        a.regimen.lines[0].count = 2;
        a.end = 2.0 * II;
        arms.push(a.clone());
        // Every 1.2 h: subject 2's lag (9.6 h) is 8 intervals, not exact in binary.
        a.regimen.lines[0].interval = 1.2;
        a.end = 2.4;
        a.metrics = ["auc", "cmax", "cmin", "at(0.6)"]
            .iter()
            .map(|x| MetricSpec::new(0, "cp", Metric::parse(x).unwrap()))
            .collect();
        arms.push(a.clone());
        // The lines starting after 0 (at 5 h and at 0.5 h).
        a.regimen.lines[0].start = 0.5;
        arms.push(a);
        let mut a = arms[0].clone();
        a.regimen.lines[0].start = 5.0;
        arms.push(a);
    } else {
        for admin in [
            Administration::Bolus,
            Administration::InfusionDuration(18.0),
        ] {
            let mut a = arm(admin, &metrics);
            a.regimen.lines[0].count = 3;
            a.end = 3.0 * II;
            arms.push(a);
        }
        // A reset after the start: back to the model's initial state, not the steady state.
        let mut a = arms[1].clone();
        a.regimen.lines.push(DoseLine::reset(18.0));
        arms.push(a);
        // 40-hour infusions: the reset cancels the end of the one started at −12 h.
        let mut a = arms[2].clone();
        a.regimen.lines[0].administration = Administration::InfusionDuration(40.0);
        arms.push(a);
        // The lines starting at 5 h (the doses before it at −7, −19, … h).
        for i in 0..arms.len() {
            let mut a = arms[i].clone();
            a.regimen.lines[0].start = 5.0;
            arms.push(a);
        }
        // A steady-state dose given alone, the run going on for a second interval: its
        // trough and last interval are the steady state's.
        let mut a = arm(Administration::Bolus, &metrics);
        a.end = 2.0 * II;
        arms.push(a);
    }
    let n = 6;
    let params: Vec<Vec<f64>> = if oral {
        vec![
            (0..n).map(|i| 0.8 + 0.2 * i as f64).collect(),
            (0..n).map(|i| 3.0 + i as f64).collect(),
            vec![50.0; n],
            vec![2.0, 5.0, 9.6, 11.0, 14.0, 17.0],
        ]
    } else {
        vec![(0..n).map(|i| 3.0 + i as f64).collect(), vec![V; n]]
    };
    let model = Arc::new(model.clone());
    for mut a in arms {
        a.solver.rtol = rtol;
        a.solver.atol = rtol * 1e-2;
        let (_, worst) = common::metrics_agree_with_cpu(b, &model, &a, &params, tol, "");
        println!(
            "{} {:?} from {}{}: worst {worst:.2e}",
            b.info().name,
            a.regimen.lines[0].administration,
            a.regimen.lines[0].start,
            if a.regimen.lines.len() > 1 {
                ", reset"
            } else {
                ""
            }
        );
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn oral_model() -> CompiledModel {
    CompiledModel::new(&Model::parse("oral_lag.vpm", ORAL_LAG).unwrap())
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_kernels_start_at_steady_state() {
    use vpop::backend::cuda::EmulatedCuda;
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        for (oral, model) in [(false, model().1), (true, oral_model())] {
            match EmulatedCuda::new(Arc::new(model.clone()), p) {
                Ok(mut b) => gpu_agrees(&mut b, &model, oral, rtol, tol),
                Err(e) => println!("SKIPPED: {e}"),
            }
        }
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_kernels_start_at_steady_state() {
    use vpop::backend::wgpu::WgpuBackend;
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        for (oral, model) in [(false, model().1), (true, oral_model())] {
            match WgpuBackend::new(Arc::new(model.clone()), p) {
                Ok(mut b) => gpu_agrees(&mut b, &model, oral, rtol, tol),
                Err(e) => println!("SKIPPED: {e}"),
            }
        }
    }
}

/// A subject suspended anywhere in the steady-state iterations (two steps and one interval
/// per dispatch) resumes to the same bits as with the default dispatch budget.
#[test]
#[cfg(feature = "wgpu")]
fn wgpu_steady_state_start_resumes_exactly() {
    use vpop::backend::wgpu::WgpuBackend;
    use vpop::backend::Precision;
    let model = oral_model();
    let mut b = match WgpuBackend::new(Arc::new(model.clone()), Precision::F64) {
        Ok(b) => b,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let mut a = arm(Administration::Bolus, &["auc", "cmax", "cmin", "at(5)"]);
    a.regimen.lines[0].count = 2;
    a.end = 2.0 * II;
    a.solver.atol = 1e-12;
    let params = vec![
        vec![1.0, 1.5],
        vec![4.0, 6.0],
        vec![50.0, 40.0],
        vec![15.0, 3.0],
    ];
    let input = ChunkInput {
        first_subject: 0,
        n: 2,
        params: &params,
        amount_scale: None,
        occasion_params: &[],
    };
    let (mut whole, mut pieces) = (ChunkOutput::default(), ChunkOutput::default());
    b.run_chunk(&a, &input, &mut whole).unwrap();
    b.set_dispatch_budget(Some((2, 1)));
    b.run_chunk(&a, &input, &mut pieces).unwrap();
    assert_eq!(whole.status, vec![0, 0]);
    assert_eq!(whole.metrics, pieces.metrics);
    // The same steps; a resumed integration evaluates its first right-hand side again.
    assert_eq!(whole.stats.accepted, pieces.stats.accepted);
    assert_eq!(whole.stats.rejected, pieces.stats.rejected);
    assert!(pieces.stats.rhs_evals > whole.stats.rhs_evals);
}

/// The doses before a steady-state line's first take that dose's dosing values: a line from
/// 5 h every 12 h in an arm whose second occasion, from 3 h, lengthens the lag from 2 to 4 h.
/// The doses at 5 and 17 h take the lag of their occasion (4 h), and so do those at −7, −19,
/// … h, as an SS = 1 record's implied doses take the values in force at the record: every
/// dose arrives at 9 + 12k h. The concentration is the sum of the one-dose profiles over that
/// train (CPU reference, within 1e-8), and the kernels agree with the CPU reference.
#[test]
fn a_steady_state_line_gives_its_earlier_doses_its_own_dosing_values() {
    use vpop::backend::cpu::simulate_arm_subject_occasions;
    let c = CompiledModel::new(&Model::parse("oral_lag.vpm", ORAL_LAG).unwrap());
    let (ka, cl, v) = (1.2, 5.0, 50.0);
    let k = cl / v;
    let ts = [0.0, 4.0, 10.0, 20.0];
    let mut a = arm(
        Administration::Bolus,
        &["at(0)", "at(4)", "at(10)", "at(20)"],
    );
    a.regimen.lines[0].start = 5.0;
    a.regimen.lines[0].count = 2;
    a.occasions = vec![3.0];
    a.end = 24.0;
    let mut integ = Integrator::new(a.solver.method, 2);
    let later = vec![vec![ka, cl, v, 4.0]];
    let out = simulate_arm_subject_occasions(&c, &[ka, cl, v, 2.0], &later, 1.0, &a, &mut integ);
    assert_eq!(out.status, Status::Ok);
    for (m, t) in ts.iter().enumerate() {
        let want: f64 = (-20_000..=1)
            .map(|j| t - (9.0 + 12.0 * j as f64))
            .filter(|s| *s > 0.0)
            .map(|s| DOSE * ka / (v * (ka - k)) * ((-k * s).exp() - (-ka * s).exp()))
            .sum();
        close(out.metrics[m], want, 1e-8, &format!("C({t})"));
    }
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        let params = vec![vec![ka; 2], vec![cl; 2], vec![v; 2], vec![2.0, 1.0]];
        let occ = vec![vec![vec![ka; 2], vec![cl; 2], vec![v; 2], vec![4.0, 11.0]]];
        let input = ChunkInput {
            first_subject: 0,
            n: 2,
            params: &params,
            amount_scale: None,
            occasion_params: &occ,
        };
        let model = Arc::new(c.clone());
        let mut cpu = ChunkOutput::default();
        CpuBackend::new(model.clone())
            .run_chunk(&a, &input, &mut cpu)
            .unwrap();
        close(
            cpu.metrics[2][0],
            out.metrics[2],
            1e-14,
            "the chunk's C(10)",
        );
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        #[cfg(feature = "cuda")]
        if let Ok(b) =
            vpop::backend::cuda::EmulatedCuda::new(model.clone(), vpop::backend::Precision::F64)
        {
            backends.push(Box::new(b));
        }
        #[cfg(feature = "wgpu")]
        match vpop::backend::wgpu::WgpuBackend::new(model.clone(), vpop::backend::Precision::F64) {
            Ok(b) => backends.push(Box::new(b)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        for b in &mut backends {
            let mut gpu = ChunkOutput::default();
            b.run_chunk(&a, &input, &mut gpu).unwrap();
            for (m, t) in ts.iter().enumerate() {
                for i in 0..2 {
                    assert_eq!(gpu.status[i], 0);
                    close(
                        gpu.metrics[m][i],
                        cpu.metrics[m][i],
                        1e-9,
                        &format!("{} C({t}) subject {i}", b.info().name),
                    );
                }
            }
        }
    }
}

/// A steady state that does not exist (nothing eliminates the dosed state: cl = 0) fails its
/// subject as `no_steady_state` once the iterations reach their limit, and the subject beside
/// it, with elimination, is unaffected: on the CPU reference, the WGSL kernels (lavapipe) and
/// the CUDA kernels (emulated), in f64 at rtol 1e-10, 1e-6 and 1e-4, where the dosed state's
/// growth per interval falls below 10 tolerance units of it (the noise level) within the
/// iterations' limit: a state that moves by the same amount every interval has no steady
/// state, however small that amount. (f32 cannot tell such a growth from a slow approach at
/// the noise level: docs/nonmem.md.)
#[test]
fn a_steady_state_that_does_not_exist_is_its_own_status() {
    let (_, c) = model();
    let c = Arc::new(c);
    let a = arm(Administration::Bolus, &["auc", "cmax"]);
    let params = vec![vec![0.0, CL], vec![V, V]];
    let check = |b: &mut dyn Backend, rtol: f64, what: &str| {
        let mut a = a.clone();
        a.solver.rtol = rtol;
        let what = format!("{what} at rtol {rtol:e}");
        let out = common::run(b, &a, &params);
        assert_eq!(
            out.status,
            [Status::NoSteadyState as u8, Status::Ok as u8],
            "{what}"
        );
        assert!(
            out.metrics[0][0].is_nan(),
            "{what}: a failed subject's metrics"
        );
        close(
            out.metrics[0][1],
            DOSE / CL,
            (100.0 * rtol).max(1e-4),
            &what,
        );
    };
    for rtol in [1e-10, 1e-6, 1e-4] {
        check(&mut CpuBackend::new(c.clone()), rtol, "cpu");
        #[cfg(feature = "wgpu")]
        match vpop::backend::wgpu::WgpuBackend::new(c.clone(), vpop::backend::Precision::F64) {
            Ok(mut b) => check(&mut b, rtol, "wgpu f64"),
            Err(e) => println!("SKIPPED: {e}"),
        }
        #[cfg(feature = "cuda")]
        match vpop::backend::cuda::EmulatedCuda::new(c.clone(), vpop::backend::Precision::F64) {
            Ok(mut b) => check(&mut b, rtol, "emulated CUDA f64"),
            Err(e) => println!("SKIPPED: {e}"),
        }
    }
}

/// A state that no dose enters can grow without bound too: a cumulative AUC state (`kc = 0`)
/// grows by the interval's AUC every interval, and the steady state does not exist, where the
/// same state with a loss (`kc = 0.5`) has one (its AUC D/CL): in f64 at rtol 1e-4, on the
/// CPU reference, the WGSL kernels and the CUDA kernels (emulated).
#[test]
fn a_state_that_grows_without_a_dose_has_no_steady_state_either() {
    let c = Arc::new(CompiledModel::new(
        &Model::parse(
            "cum.vpm",
            "param cl = 5\nparam v = 50\nparam kc = 0\nstate central, cum\n\
             d/dt(central) = -cl / v * central\nd/dt(cum) = central / v - kc * cum\n\
             output cp = central / v\n",
        )
        .unwrap(),
    ));
    let mut a = arm(Administration::Bolus, &["auc"]);
    a.solver.rtol = 1e-4;
    let params = vec![vec![CL, CL], vec![V, V], vec![0.0, 0.5]];
    let check = |b: &mut dyn Backend, what: &str| {
        let out = common::run(b, &a, &params);
        assert_eq!(
            out.status,
            [Status::NoSteadyState as u8, Status::Ok as u8],
            "{what}"
        );
        close(out.metrics[0][1], DOSE / CL, 1e-2, what);
    };
    check(&mut CpuBackend::new(c.clone()), "cpu");
    #[cfg(feature = "wgpu")]
    match vpop::backend::wgpu::WgpuBackend::new(c.clone(), vpop::backend::Precision::F64) {
        Ok(mut b) => check(&mut b, "wgpu f64"),
        Err(e) => println!("SKIPPED: {e}"),
    }
    #[cfg(feature = "cuda")]
    match vpop::backend::cuda::EmulatedCuda::new(c.clone(), vpop::backend::Precision::F64) {
        Ok(mut b) => check(&mut b, "emulated CUDA f64"),
        Err(e) => println!("SKIPPED: {e}"),
    }
}
