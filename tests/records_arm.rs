//! A one-subject NONMEM-format dataset as an arm's regimen (`records = "..."`): the same
//! schedule as the equivalent `doses = [...]` lines, on every backend; unsupported records are
//! refused with their line.

use std::path::PathBuf;
use std::sync::Arc;

use vpop::backend::{Backend, Precision};
use vpop::model::CompiledModel;
use vpop::trial::{run_trial, RunOptions, Trial};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const RECORDS: &str = "\
ID,TIME,EVID,AMT,CMT,II,ADDL,RATE,DV
# a loading dose, then 100 mg every 12 h (6 doses), and a 2-hour infusion into central
1,0,1,200,1,.,0,0,.
1,1,0,.,2,.,.,.,.
1,12,1,100,1,12,5,0,.
1,24,1,50,2,.,0,25,.
1,30,0,.,2,.,.,.,.
";

fn spec(dir: &std::path::Path, backend: &str) -> String {
    format!(
        r#"
[trial]
name = "records arm"
subjects = 300
seed = 9

[model]
library = "one_cmt_oral"

[population]
file = "{pop}"

[[arm]]
name = "records"
records = "regimen.csv"

[[arm]]
name = "doses"
doses = [
  {{ amount = 200, into = "depot" }},
  {{ amount = 100, into = "depot", start = 12, every = 12, count = 6 }},
  {{ amount = 50, into = "central", start = 24, rate = 25 }},
]

[simulation]
end = 96
rtol = 1e-6
atol = 1e-9
backend = "{backend}"

[output]
dir = "{out}"
metrics = ["auc", "cmax", "tmax", "ctrough"]
"#,
        pop = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("populations/adult_healthy.toml")
            .display(),
        out = dir.join(format!("out-{backend}")).display()
    )
}

#[test]
fn a_records_arm_equals_the_same_doses_written_as_lines() {
    let dir = temp_dir("records-arm");
    std::fs::write(dir.join("regimen.csv"), RECORDS).unwrap();
    let mut backends = vec!["cpu"];
    if vpop::backend::wgpu::list_adapters().is_empty() {
        println!("SKIPPED (wgpu part): no adapter");
    } else {
        backends.push("wgpu");
    }
    for backend in backends {
        let path = dir.join(format!("trial-{backend}.toml"));
        std::fs::write(&path, spec(&dir, backend)).unwrap();
        let trial = Trial::load(&path).unwrap();
        // The same lines, but that a record's keep the lag of the occasion it starts in (which
        // changes nothing in an arm of one occasion).
        let records: Vec<vpop::dosing::DoseLine> = trial.arms[0]
            .plan
            .regimen
            .lines
            .iter()
            .map(|l| {
                assert!(l.keeps_lag);
                vpop::dosing::DoseLine {
                    keeps_lag: false,
                    ..l.clone()
                }
            })
            .collect();
        assert_eq!(records, trial.arms[1].plan.regimen.lines);
        let rep = run_trial(
            &trial,
            &RunOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (a, b) = (&rep.arms[0], &rep.arms[1]);
        assert_eq!(a.failed, 0, "{backend}");
        assert_eq!(a.metrics, b.metrics, "{backend}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_records_are_refused_with_their_line() {
    let dir = temp_dir("records-bad");
    let cases = [
        (
            "ID,TIME,EVID,AMT,CMT,SS,II\n1,5,1,100,1,1,12\n",
            "regimen.csv:2:1: in an arm's regimen a steady-state dose is SS = 1 at TIME 0",
        ),
        (
            "ID,TIME,EVID,AMT,CMT,SS,II\n1,0,1,100,1,1,12\n1,0,1,50,2,1,24\n",
            "regimen.csv:3:1: a second steady-state dose (SS = 1)",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,3,.,.\n1,0,1,100,1\n",
            "regimen.csv:2:1: a reset (EVID 3/4) in an arm's regimen comes after the arm's start",
        ),
        (
            "ID,TIME,EVID,AMT,CMT,CL\n1,0,1,100,1,3\n",
            "regimen.csv:2:1: column CL would set model parameter 'cl'",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n2,0,1,100,1\n",
            "regimen.csv:1:1: an arm's records must describe one subject",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,3\n",
            "regimen.csv:2:1: CMT 3 but the model has 2 states",
        ),
        // On a record that gives no dose too.
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,4,0,.,3\n",
            "regimen.csv:3:1: CMT 3 but the model has 2 states",
        ),
        // A dose that the steady-state dose after it at TIME 0 zeroes, with its additional
        // doses.
        (
            "ID,TIME,EVID,AMT,CMT,SS,II,ADDL\n1,0,1,100,1,0,12,3\n1,0,1,50,2,1,24,0\n",
            "regimen.csv:2:1: a dose before the steady-state dose (SS = 1) on line 3",
        ),
        // Doses NONMEM gives before a reset at their time, which cancels them: a record
        // before the reset, and an additional dose due at the reset's time.
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,12,1,100,1\n1,12,3,.,.\n",
            "regimen.csv:3:1: a dose due at TIME 12, before the reset on line 4",
        ),
        (
            "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,12,1\n1,12,3,.,.,.,.\n",
            "regimen.csv:2:1: a dose due at TIME 12, before the reset on line 3",
        ),
        // A reset that takes time back (a [data] trial runs it).
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,24,0,.,1\n1,0,4,50,1\n",
            "regimen.csv:4:1: TIME goes back from 24 to 0 at this reset: an arm's regimen runs forward in time",
        ),
        // The 500 000th of a million additional doses.
        (
            "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,0.5,1000000\n1,250000,3,.,.,.,.\n",
            "regimen.csv:2:1: a dose due at TIME 250000, before the reset on line 3",
        ),
    ];
    for (i, (records, want)) in cases.iter().enumerate() {
        std::fs::write(dir.join("regimen.csv"), records).unwrap();
        let path = dir.join("trial.toml");
        std::fs::write(&path, spec(&dir, "cpu")).unwrap();
        let e = match Trial::load(&path) {
            Ok(_) => panic!("case {i} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "case {i}: {e}");
        assert!(e.contains("trial.toml:15:11: records: "), "case {i}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const LAGGED: &str = "
param ka = 1.2
param cl = 5
param v = 50
param lag = 3
state depot
state central
alag(depot) = lag
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
output cp = central / v
";

/// Resets in an arm's records (EVID 3, and EVID 4: reset then dose) give the same values as
/// the records simulated with NONMEM's semantics: an infusion running across a reset stops, a
/// lagged dose due after it is cancelled, a dose after it counts; and the GPU kernels agree.
#[test]
fn resets_in_an_arms_records_follow_nonmem() {
    use vpop::backend::cpu::simulate_arm_subject;
    use vpop::backend::records::{simulate_records, RecordBinding};
    use vpop::backend::ArmPlan;
    use vpop::dosing::nonmem::Dataset;
    use vpop::metrics::{Metric, MetricSpec};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Integrator, Method, SolverOptions, Status};
    let dir = temp_dir("records-reset");
    let csv = dir.join("reset.csv");
    // An infusion into central 0–4 h, an oral dose at 2 h (lag 3 h: due at 5 h), a reset at
    // 3 h, a reset and an oral dose at 6 h (due at 9 h), a further oral dose at 12 h.
    std::fs::write(
        &csv,
        "ID,TIME,EVID,AMT,CMT,RATE,DV
1,0,1,100,2,25,.
1,1,0,.,2,.,.
1,2,1,50,1,0,.
1,3,3,.,.,.,.
1,3.5,0,.,2,.,.
1,5.5,0,.,2,.,.
1,6,4,80,1,0,.
1,8,0,.,2,.,.
1,10,0,.,2,.,.
1,12,1,40,1,0,.
1,20,0,.,2,.,.
",
    )
    .unwrap();
    let ir = Model::parse("lagged.vpm", LAGGED).unwrap();
    let model = CompiledModel::new(&ir);
    let ds = Dataset::load(&csv).unwrap();
    let lines = vpop::trial::regimen::record_lines(&ir, &ds).unwrap();
    let times = [1.0, 3.5, 5.5, 8.0, 10.0, 20.0];
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-10,
        atol: 1e-12,
        ..Default::default()
    };
    let arm = ArmPlan {
        name: "reset".into(),
        regimen: vpop::dosing::Regimen { lines },
        metrics: times
            .iter()
            .map(|t| MetricSpec::new(0, "cp", Metric::parse(&format!("at({t})")).unwrap()))
            .collect(),
        end: 24.0,
        sample_times: Vec::new(),
        solver: solver.clone(),
        occasions: Vec::new(),
    };
    let params: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let mut integ = Integrator::new(Method::Tsit5, 3);
    let got = simulate_arm_subject(&model, &params, 1.0, &arm, &mut integ);
    assert_eq!(got.status, Status::Ok);
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let want = simulate_records(&model, &params, &binding, &ds.subjects[0], &solver);
    let obs: Vec<f64> = ds.subjects[0]
        .records
        .iter()
        .zip(&want.outputs[0])
        .filter(|(r, _)| r.evid == vpop::dosing::nonmem::Evid::Observation)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(obs.len(), times.len());
    for ((t, g), w) in times.iter().zip(&got.metrics).zip(&obs) {
        assert!(
            (g - w).abs() <= 1e-9 * w.abs().max(1e-6),
            "t = {t}: arm {g} vs records {w}"
        );
    }
    // Between the reset at 3 h and the dose due at 9 h nothing is left.
    assert_eq!(obs[2], 0.0);
    assert!(obs[1] == 0.0 && obs[4] > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
    gpu_resets_agree(&model, &arm, &params);
}

/// The same arm with resets on the GPU kernels (wgpu on lavapipe; CUDA emulated on the host),
/// against the CPU reference at the same settings, with the AUC and extremes across the resets.
fn gpu_resets_agree(
    model: &vpop::model::CompiledModel,
    arm: &vpop::backend::ArmPlan,
    params: &[f64],
) {
    use std::sync::Arc;
    use vpop::backend::{Backend, ChunkInput, ChunkOutput, Precision};
    use vpop::metrics::{Metric, MetricSpec};
    let mut arm = arm.clone();
    for m in ["auc", "cmax", "cmin", "auc(0, 7)"] {
        arm.metrics
            .push(MetricSpec::new(0, "cp", Metric::parse(m).unwrap()));
    }
    let cols: Vec<Vec<f64>> = params
        .iter()
        .enumerate()
        .map(|(k, p)| {
            (0..4)
                .map(|i| p * (1.0 + 0.1 * (i * (k + 1)) as f64))
                .collect()
        })
        .collect();
    let input = ChunkInput {
        first_subject: 0,
        n: 4,
        params: &cols,
        amount_scale: None,
        occasion_params: &[],
    };
    let model = Arc::new(model.clone());
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        let mut a = arm.clone();
        a.solver.rtol = rtol;
        a.solver.atol = rtol * 1e-2;
        let mut cpu = ChunkOutput::default();
        vpop::backend::cpu::CpuBackend::new(model.clone())
            .run_chunk(&a, &input, &mut cpu)
            .unwrap();
        #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        #[cfg(feature = "wgpu")]
        match vpop::backend::wgpu::WgpuBackend::new(model.clone(), p) {
            Ok(b) => backends.push(Box::new(b)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        #[cfg(feature = "cuda")]
        match vpop::backend::cuda::EmulatedCuda::new(model.clone(), p) {
            Ok(b) => backends.push(Box::new(b)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        for mut b in backends {
            let mut gpu = ChunkOutput::default();
            b.run_chunk(&a, &input, &mut gpu).unwrap();
            let mut worst = 0.0f64;
            for (m, spec) in a.metrics.iter().enumerate() {
                for i in 0..4 {
                    assert_eq!(gpu.status[i], 0);
                    let (g, c) = (gpu.metrics[m][i], cpu.metrics[m][i]);
                    let rel = (g - c).abs() / c.abs().max(1e-6);
                    worst = worst.max(rel);
                    assert!(
                        rel <= tol,
                        "{} {p:?} {}: {g} vs {c}",
                        b.info().name,
                        spec.column
                    );
                }
            }
            println!("{} {p:?}: worst {worst:.2e}", b.info().name);
        }
    }
}

const BASELINE: &str = "
param k = 0.1
param base = 8
state x
x(0) = base
d/dt(x) = -k * x
output c = x
";

/// A reset restores the initial state of the occasion in force, as NONMEM evaluates the
/// initial conditions with the parameters current at the reset: a baseline with inter-occasion
/// variability, occasions from 10 h and 20 h, resets at 15 h (within the second occasion) and
/// at 20 h (at the third's start). Every backend against the closed form.
#[test]
fn a_reset_restores_the_initial_state_of_the_occasion_in_force() {
    use std::sync::Arc;
    use vpop::backend::{ArmPlan, ChunkInput, ChunkOutput, Precision};
    use vpop::dosing::{DoseLine, Regimen};
    use vpop::metrics::{Metric, MetricSpec};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions};
    let model = Arc::new(CompiledModel::new(
        &Model::parse("baseline.vpm", BASELINE).unwrap(),
    ));
    let metrics = ["at(8)", "at(12)", "at(17)", "at(20)", "at(25)", "auc"];
    let arm = ArmPlan {
        name: "iov baseline".into(),
        regimen: Regimen {
            lines: vec![DoseLine::reset(15.0), DoseLine::reset(20.0)],
        },
        metrics: metrics
            .iter()
            .map(|m| MetricSpec::new(0, "c", Metric::parse(m).unwrap()))
            .collect(),
        end: 30.0,
        sample_times: Vec::new(),
        solver: SolverOptions::default(),
        occasions: vec![10.0, 20.0],
    };
    // Two subjects; (k, base) in the three occasions.
    let occ = [
        [(0.1, 8.0), (0.2, 5.0), (0.3, 3.0)],
        [(0.05, 2.0), (0.15, 6.0), (0.25, 9.0)],
    ];
    let columns = |o: usize| -> Vec<Vec<f64>> {
        vec![
            occ.iter().map(|s| s[o].0).collect(),
            occ.iter().map(|s| s[o].1).collect(),
        ]
    };
    let params = columns(0);
    let later = vec![columns(1), columns(2)];
    let input = ChunkInput {
        first_subject: 0,
        n: 2,
        params: &params,
        amount_scale: None,
        occasion_params: &later,
    };
    let want = |s: &[(f64, f64); 3]| -> Vec<f64> {
        let [(k1, b1), (k2, b2), (k3, b3)] = *s;
        let x10 = b1 * (-k1 * 10.0).exp();
        let x = |t: f64| {
            if t < 10.0 {
                b1 * (-k1 * t).exp()
            } else if t < 15.0 {
                x10 * (-k2 * (t - 10.0)).exp()
            } else if t < 20.0 {
                b2 * (-k2 * (t - 15.0)).exp()
            } else {
                b3 * (-k3 * (t - 20.0)).exp()
            }
        };
        // The integral of b·e^{−k(t − a)} from a to a + d.
        let part = |b: f64, k: f64, d: f64| b * (1.0 - (-k * d).exp()) / k;
        let auc = part(b1, k1, 10.0) + part(x10, k2, 5.0) + part(b2, k2, 5.0) + part(b3, k3, 10.0);
        // at(20) is the left limit there: before the reset.
        vec![
            x(8.0),
            x(12.0),
            x(17.0),
            b2 * (-k2 * 5.0).exp(),
            x(25.0),
            auc,
        ]
    };
    let runs = every_backend(&model, 1e-9, 1e-4);
    for (mut b, tol) in runs {
        let mut a = arm.clone();
        let f64_run = b.info().precision == Precision::F64;
        a.solver.method = Method::Tsit5;
        a.solver.rtol = if f64_run { 1e-10 } else { 1e-6 };
        a.solver.atol = a.solver.rtol * 1e-2;
        let mut out = ChunkOutput::default();
        b.run_chunk(&a, &input, &mut out).unwrap();
        let mut worst = 0.0f64;
        for (i, s) in occ.iter().enumerate() {
            assert_eq!(out.status[i], 0);
            for (m, w) in want(s).iter().enumerate() {
                let g = out.metrics[m][i];
                let rel = (g - w).abs() / w.abs();
                worst = worst.max(rel);
                assert!(
                    rel <= tol,
                    "{} {:?} subject {i} {}: {g} vs {w}",
                    b.info().name,
                    b.info().precision,
                    metrics[m]
                );
            }
        }
        println!(
            "{} {:?}: worst {worst:.2e}",
            b.info().name,
            b.info().precision
        );
    }
}

const LAG_AND_F: &str = "
param ka = 1
param cl = 2
param v = 10
param lagt = 1
param bio = 1
state depot
state central
alag(depot) = lagt
f(depot) = bio
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
output cp = central / v
";

/// In an arm with occasions, a record's additional doses keep the lag in force at their
/// record, as NONMEM gives them ("the value of ALAGn in effect at time T applies to the dose
/// and to all subsequent additional doses"), and take the bioavailability of the occasion they
/// are given in; a later record has its own occasion's lag. 100 into the depot every 12 h from
/// 0 (ADDL 3) and 50 at 30 h, occasions from 0 and 20 h, the lag and F changing between them
/// (subject 1: lag 1 then 5 h, F 1 then 0.5; subject 2: lag 3 then 0.5 h, F 0.8 then 1):
/// the doses at 24 and 36 h arrive 1 h (3 h) after, the record at 30 h 5 h (0.5 h) after.
/// Every backend against the closed form of the one-compartment oral model.
#[test]
fn additional_doses_in_an_arm_with_occasions_keep_their_records_lag() {
    use std::sync::Arc;
    use vpop::backend::{ArmPlan, ChunkInput, ChunkOutput, Precision};
    use vpop::dosing::nonmem::Dataset;
    use vpop::metrics::{Metric, MetricSpec};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions};
    let ir = Model::parse("lag_and_f.vpm", LAG_AND_F).unwrap();
    let model = Arc::new(CompiledModel::new(&ir));
    let ds = Dataset::parse(
        "regimen.csv",
        "ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,12,3\n1,30,1,50,1,.,.\n",
    )
    .unwrap();
    let lines = vpop::trial::regimen::record_lines(&ir, &ds).unwrap();
    let times = [
        2.0, 13.5, 24.5, 25.5, 27.0, 30.2, 31.0, 36.6, 37.5, 40.0, 47.0,
    ];
    let mut metrics: Vec<String> = times.iter().map(|t| format!("at({t})")).collect();
    metrics.push("auc".into());
    let end = 48.0;
    let arm = ArmPlan {
        name: "records with occasions".into(),
        regimen: vpop::dosing::Regimen { lines },
        metrics: metrics
            .iter()
            .map(|m| MetricSpec::new(0, "cp", Metric::parse(m).unwrap()))
            .collect(),
        end,
        sample_times: Vec::new(),
        solver: SolverOptions::default(),
        occasions: vec![20.0],
    };
    // (lag, F) in the two occasions; ka, CL and V do not change.
    let occ = [[(1.0, 1.0), (5.0, 0.5)], [(3.0, 0.8), (0.5, 1.0)]];
    let (ka, k, v) = (1.0f64, 0.2f64, 10.0f64);
    let columns = |o: usize| -> Vec<Vec<f64>> {
        vec![
            vec![ka; 2],
            vec![k * v; 2],
            vec![v; 2],
            occ.iter().map(|s| s[o].0).collect(),
            occ.iter().map(|s| s[o].1).collect(),
        ]
    };
    let params = columns(0);
    let later = vec![columns(1)];
    let input = ChunkInput {
        first_subject: 0,
        n: 2,
        params: &params,
        amount_scale: None,
        occasion_params: &later,
    };
    // The doses as (amount given, arrival): the record at 0 and its additional doses with the
    // first occasion's lag, each with the F of its own occasion; the record at 30 with the
    // second occasion's lag and F.
    let doses = |s: &[(f64, f64); 2]| -> Vec<(f64, f64)> {
        let [(lag1, f1), (lag2, f2)] = *s;
        vec![
            (100.0 * f1, lag1),
            (100.0 * f1, 12.0 + lag1),
            (100.0 * f2, 24.0 + lag1),
            (100.0 * f2, 36.0 + lag1),
            (50.0 * f2, 30.0 + lag2),
        ]
    };
    let c = ka / (v * (ka - k));
    let cp = |ds: &[(f64, f64)], t: f64| -> f64 {
        ds.iter()
            .filter(|(_, a)| *a <= t)
            .map(|(amt, a)| amt * c * ((-k * (t - a)).exp() - (-ka * (t - a)).exp()))
            .sum()
    };
    let auc = |ds: &[(f64, f64)]| -> f64 {
        ds.iter()
            .filter(|(_, a)| *a <= end)
            .map(|(amt, a)| {
                let s = end - a;
                amt * c * ((1.0 - (-k * s).exp()) / k - (1.0 - (-ka * s).exp()) / ka)
            })
            .sum()
    };
    let want = |s: &[(f64, f64); 2]| -> Vec<f64> {
        let d = doses(s);
        let mut w: Vec<f64> = times.iter().map(|t| cp(&d, *t)).collect();
        w.push(auc(&d));
        w
    };
    let runs = every_backend(&model, 1e-8, 1e-4);
    for (mut b, tol) in runs {
        let mut a = arm.clone();
        let f64_run = b.info().precision == Precision::F64;
        a.solver.method = Method::Tsit5;
        a.solver.rtol = if f64_run { 1e-10 } else { 1e-6 };
        a.solver.atol = a.solver.rtol * 1e-2;
        let mut out = ChunkOutput::default();
        b.run_chunk(&a, &input, &mut out).unwrap();
        let mut worst = 0.0f64;
        for (i, s) in occ.iter().enumerate() {
            assert_eq!(out.status[i], 0);
            let w = want(s);
            let scale = w[..times.len()].iter().fold(0.0f64, |m, x| m.max(*x));
            for (m, w) in w.iter().enumerate() {
                let g = out.metrics[m][i];
                // Concentrations relative to the largest, the area relative to itself.
                let err = (g - w).abs() / if m < times.len() { scale } else { w.abs() };
                worst = worst.max(err);
                assert!(
                    err <= tol,
                    "{} {:?} subject {i} {}: {g} vs {w}",
                    b.info().name,
                    b.info().precision,
                    metrics[m]
                );
            }
        }
        println!(
            "{} {:?}: worst {worst:.2e}",
            b.info().name,
            b.info().precision
        );
    }
}

/// The CPU reference, emulated CUDA and wgpu in f64 and f32 on `model`, each with the
/// tolerance its results are held to (`f64_tol` for the f64 backends, `f32_tol` for f32); a
/// backend that cannot be made says `SKIPPED` and is left out.
fn every_backend(
    model: &Arc<CompiledModel>,
    f64_tol: f64,
    f32_tol: f64,
) -> Vec<(Box<dyn Backend>, f64)> {
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
    let mut v: Vec<(Box<dyn Backend>, f64)> = vec![(
        Box::new(vpop::backend::cpu::CpuBackend::new(model.clone())),
        f64_tol,
    )];
    for (p, tol) in [(Precision::F64, f64_tol), (Precision::F32, f32_tol)] {
        #[cfg(feature = "cuda")]
        match vpop::backend::cuda::EmulatedCuda::new(model.clone(), p) {
            Ok(b) => v.push((Box::new(b), tol)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        #[cfg(feature = "wgpu")]
        match vpop::backend::wgpu::WgpuBackend::new(model.clone(), p) {
            Ok(b) => v.push((Box::new(b), tol)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        let _ = (p, tol);
    }
    v
}
