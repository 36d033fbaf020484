//! Steady states of models that read their time (`t`): the doses repeated forever before the
//! dose's time T see the model's time of the interval before T, so a steady-state dose at T
//! of a model with a 24-hour cycle starts from the cycle's phase at T, and the model's time in
//! an arm's steady-state start runs up to 0 (with the line's first dose at 0 or later). On the CPU reference against closed forms of a
//! one-compartment model with an input that follows a cosine over the day, or grows
//! exponentially; on the WGSL kernels (lavapipe) and the CUDA kernels (on a device, else
//! emulated on the host) against the CPU reference.

// Without a GPU backend compiled in, only the CPU tests remain.
#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_imports, dead_code)
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use vpop::backend::cpu::simulate_arm_subject;
use vpop::backend::records::{record_program, simulate_records, Program, RecordBinding};
use vpop::backend::{ArmPlan, Backend};
use vpop::dosing::nonmem::Dataset;
use vpop::dosing::{Administration, DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Integrator, Method, SolverOptions, Status};

/// A one-compartment model with an input of `a` (1 + cos(w t)) (a 24-hour cycle) and one of
/// e·exp(b t).
const MODEL: &str = "
param k = 0.2
param a = 0.5
param w = 0.2617993877991494
param e = 0
param b = 0.05
state c
d/dt(c) = -k * c + a * (1 + cos(w * t)) + e * exp(b * t)
output cp = c
";

const K: f64 = 0.2;
const A: f64 = 0.5;
const W: f64 = std::f64::consts::PI / 12.0;
const B: f64 = 0.05;
const DOSE: f64 = 100.0;

fn model() -> (Model, CompiledModel) {
    let m = Model::parse("forced.vpm", MODEL).unwrap();
    let c = CompiledModel::new(&m);
    (m, c)
}

/// The periodic solution of the cosine input alone: a/k + a (k cos wt + w sin wt)/(k² + w²).
fn cycle(t: f64) -> f64 {
    A / K + A * (K * (W * t).cos() + W * (W * t).sin()) / (K * K + W * W)
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: {got} vs {want} (rel {:.2e})",
        (got - want).abs() / want.abs()
    );
}

fn solver(rtol: f64) -> SolverOptions {
    SolverOptions {
        method: Method::Tsit5,
        rtol,
        atol: rtol * 1e-2,
        ..Default::default()
    }
}

/// An arm that starts at steady state with a bolus every `ii` hours, over one interval.
fn arm(ii: f64, metrics: &[&str]) -> ArmPlan {
    ArmPlan {
        name: "ss".into(),
        regimen: Regimen {
            lines: vec![DoseLine {
                state: 0,
                amount: DOSE,
                start: 0.0,
                interval: ii,
                count: 1,
                administration: Administration::Bolus,
                steady_state: true,
                scaled: true,
                keeps_lag: false,
            }],
        },
        metrics: metrics
            .iter()
            .map(|x| MetricSpec::new(0, "cp", Metric::parse(x).unwrap()))
            .collect(),
        end: ii,
        sample_times: Vec::new(),
        solver: solver(1e-10),
        occasions: Vec::new(),
    }
}

/// (a, e): the cosine input alone, the exponential one alone.
fn params(a: f64, e: f64) -> Vec<f64> {
    vec![K, a, W, e, B]
}

/// An arm's steady-state start with the cosine input over a 24-hour interval: the cycle plus
/// the dose train, cp(s) = cycle(s) + D e^(−ks)/(1 − e^(−24k)) (at 0 before the dose: D r/(1 −
/// r), r = e^(−24k)).
#[test]
fn an_arm_starts_on_the_cycle() {
    let (_, c) = model();
    let a = arm(24.0, &["at(0)", "at(5)", "at(17)"]);
    let mut integ = Integrator::new(a.solver.method, 1);
    let out = simulate_arm_subject(&c, &params(A, 0.0), 1.0, &a, &mut integ);
    assert_eq!(out.status, Status::Ok);
    let r = (-K * 24.0).exp();
    for (m, s) in [0.0, 5.0, 17.0].iter().enumerate() {
        let train = if *s == 0.0 { r } else { (-K * s).exp() };
        let want = cycle(*s) + DOSE * train / (1.0 - r);
        close(out.metrics[m], want, 1e-8, &format!("cp({s})"));
    }
}

/// With the growing input e·exp(bt) the doses before 0 see the model's time before 0: the
/// interval from −ii to 0 repeated, x(0−) = (D r + e (1 − e^(−(k+b) ii))/(k + b))/(1 − r) with
/// r = e^(−k ii) (the interval from 0 to ii would give e^(b ii) times the input's part), which
/// cp(0) reads (before the dose), then cp(s) = (x(0−) + D) e^(−ks) + e (e^(bs) − e^(−ks))/(k + b).
#[test]
fn an_arms_steady_state_sees_the_time_before_0() {
    let (_, c) = model();
    let (ii, e) = (12.0, 2.0);
    let a = arm(ii, &["at(0)", "at(5)"]);
    let mut integ = Integrator::new(a.solver.method, 1);
    let out = simulate_arm_subject(&c, &params(0.0, e), 1.0, &a, &mut integ);
    assert_eq!(out.status, Status::Ok);
    let r = (-K * ii).exp();
    let x0 = (DOSE * r + e * (1.0 - (-(K + B) * ii).exp()) / (K + B)) / (1.0 - r);
    close(out.metrics[0], x0, 1e-8, "cp(0)");
    let s = 5.0;
    let want = (x0 + DOSE) * (-K * s).exp() + e * ((B * s).exp() - (-K * s).exp()) / (K + B);
    close(out.metrics[1], want, 1e-8, "cp(5)");
}

/// The same two inputs with the line's first dose at 5 h (the doses before it at −7, −19, …
/// h for a 12-hour interval, −19, −43, … for a 24-hour one). Under the cycle, cp(t) is
/// cycle(t) plus D e^(−k·age)/(1 − r), the age of the last dose being t − s + ii before the
/// dose at s and t − s after it; under the growing input, x(0) = (D e^(−k(ii − s)) + e (1 −
/// e^(−(k+b) ii))/(k + b))/(1 − r), then cp(t) = x(0) e^(−kt) + e (e^(bt) − e^(−kt))/(k + b)
/// until s.
#[test]
fn an_arm_whose_steady_state_line_starts_after_0_sees_its_doses_times() {
    let (_, c) = model();
    let s = 5.0;
    let mut a = arm(24.0, &["at(0)", "at(3)", "at(8)", "at(20)"]);
    a.regimen.lines[0].start = s;
    let mut integ = Integrator::new(a.solver.method, 1);
    let out = simulate_arm_subject(&c, &params(A, 0.0), 1.0, &a, &mut integ);
    assert_eq!(out.status, Status::Ok);
    let r = (-K * 24.0).exp();
    for (m, t) in [0.0, 3.0, 8.0, 20.0].iter().enumerate() {
        let age = if *t < s { t - s + 24.0 } else { t - s };
        let want = cycle(*t) + DOSE * (-K * age).exp() / (1.0 - r);
        close(out.metrics[m], want, 1e-8, &format!("cycle: cp({t})"));
    }
    let (ii, e) = (12.0, 2.0);
    let mut a = arm(ii, &["at(0)", "at(3)"]);
    a.regimen.lines[0].start = s;
    let out = simulate_arm_subject(&c, &params(0.0, e), 1.0, &a, &mut integ);
    assert_eq!(out.status, Status::Ok);
    let r = (-K * ii).exp();
    let x0 =
        (DOSE * (-K * (ii - s)).exp() + e * (1.0 - (-(K + B) * ii).exp()) / (K + B)) / (1.0 - r);
    for (m, t) in [0.0, 3.0].iter().enumerate() {
        let want = x0 * (-K * t).exp() + e * ((B * t).exp() - (-K * t).exp()) / (K + B);
        close(
            out.metrics[m],
            want,
            1e-8,
            &format!("growing input: cp({t})"),
        );
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpop-ss-time-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two dataset subjects with the cosine input: 1, a bolus at steady state every 24 h given at
/// 30 h; 2, the steady state at 30 h of an infusion (AMT 0, RATE 2, II 0). Each observed at
/// 30, 35 and 47 h.
const RECORDS: &str = "ID,TIME,EVID,AMT,RATE,CMT,SS,II,MDV
1,0,2,0,0,1,0,0,1
1,30,1,100,0,1,1,24,1
1,30,0,0,0,1,0,0,0
1,35,0,0,0,1,0,0,0
1,47,0,0,0,1,0,0,0
2,0,2,0,0,1,0,0,1
2,30,1,0,2,1,1,0,1
2,30,0,0,0,1,0,0,0
2,35,0,0,0,1,0,0,0
2,47,0,0,0,1,0,0,0
";

const RATE: f64 = 2.0;

/// What each subject's observations (records 2 to 4) should read: the dose train plus the
/// cycle at the records' own times (the steady state at 30 h is on the cycle's phase at 30 h,
/// not at 0 or 24 h); under the infusion, R/k plus the cycle at 30 h, from which R/k decays (the
/// record gives no input after its time, as NONMEM's).
fn wanted(subject: usize, t: f64) -> f64 {
    let s = t - 30.0;
    if subject == 0 {
        cycle(t) + DOSE * (-K * s).exp() / (1.0 - (-K * 24.0).exp())
    } else {
        cycle(t) + RATE / K * (-K * s).exp()
    }
}

struct Records {
    model: Arc<CompiledModel>,
    ds: Dataset,
    binding: RecordBinding,
    base: Vec<f64>,
    _dir: PathBuf,
}

fn records() -> Records {
    let (m, c) = model();
    let dir = temp_dir("records");
    let csv = dir.join("records.csv");
    std::fs::write(&csv, RECORDS).unwrap();
    let ds = Dataset::load(&csv).unwrap();
    let binding = RecordBinding::new(&m, &ds.covariates);
    Records {
        model: Arc::new(c),
        ds,
        binding,
        base: params(A, 0.0),
        _dir: dir,
    }
}

#[test]
fn a_steady_state_record_starts_on_the_cycles_phase_at_its_time() {
    let r = records();
    for (i, subject) in r.ds.subjects.iter().enumerate() {
        let out = simulate_records(&r.model, &r.base, &r.binding, subject, &solver(1e-10));
        assert_eq!(out.status, Status::Ok, "subject {}", i + 1);
        for (j, t) in [(2, 30.0), (3, 35.0), (4, 47.0)] {
            close(
                out.outputs[0][j],
                wanted(i, t),
                1e-8,
                &format!("subject {}, cp({t})", i + 1),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&r._dir);
}

/// The records and the arms above on a GPU backend against the CPU reference at the same
/// settings; what the backend gave (the records' outputs, then each arm's metrics).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_agrees(b: &mut dyn Backend, rtol: f64, tol: f64) -> Vec<Vec<f64>> {
    let mut gave = Vec::new();
    let name = b.info().name;
    // Records.
    let r = records();
    let programs: Vec<Program> =
        r.ds.subjects
            .iter()
            .map(|s| record_program(&r.model, &r.base, &r.binding, s, &mut |_, _| {}))
            .collect();
    let refs: Vec<&Program> = programs.iter().collect();
    let got = b.run_records(&refs, &solver(rtol)).unwrap();
    let mut worst = 0.0f64;
    for (i, subject) in r.ds.subjects.iter().enumerate() {
        let want = simulate_records(&r.model, &r.base, &r.binding, subject, &solver(rtol));
        assert_eq!(got[i].status, Status::Ok, "{name} subject {}", i + 1);
        for j in 2..5 {
            let (g, c) = (got[i].outputs[0][j], want.outputs[0][j]);
            let rel = (g - c).abs() / c.abs();
            worst = worst.max(rel);
            assert!(
                rel <= tol,
                "{name} subject {} record {j}: {g} vs {c}",
                i + 1
            );
        }
        gave.push(got[i].outputs[0].clone());
    }
    println!("{name} records: worst {worst:.2e}");
    let _ = std::fs::remove_dir_all(&r._dir);
    // Arms, two subjects each.
    let model = r.model.clone();
    for (ii, a, e, start) in [
        (24.0, A, 0.0, 0.0),
        (12.0, 0.0, 2.0, 0.0),
        (24.0, A, 0.0, 5.0),
        (12.0, 0.0, 2.0, 5.0),
    ] {
        let mut plan = arm(ii, &["auc", "cmax", "cmin", "at(0)", "at(5)", "at(3)"]);
        plan.regimen.lines[0].start = start;
        plan.solver = solver(rtol);
        let p = [params(a, e), params(0.8 * a, 1.5 * e)];
        let cols: Vec<Vec<f64>> = (0..p[0].len()).map(|k| vec![p[0][k], p[1][k]]).collect();
        let what = format!("ii {ii} from {start}");
        let (gpu, worst) = common::metrics_agree_with_cpu(b, &model, &plan, &cols, tol, &what);
        println!("{name} arm every {ii} h from {start}: worst {worst:.2e}");
        gave.extend(gpu.metrics);
    }
    gave
}

/// On a CUDA device where there is one, else through the host emulation of the kernels.
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_shift_the_time_of_steady_states() {
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        let Some(mut b) = common::cuda_or_emulated(Arc::new(model().1), p) else {
            return;
        };
        gpu_agrees(b.as_mut(), rtol, tol);
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_kernels_shift_the_time_of_steady_states() {
    use vpop::backend::wgpu::WgpuBackend;
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        match WgpuBackend::new(Arc::new(model().1), p) {
            Ok(mut b) => {
                let whole = gpu_agrees(&mut b, rtol, tol);
                // Suspended after every step and every steady-state round (the time shift is
                // set again on resuming): the same bits.
                b.set_dispatch_budget(Some((1, 1)));
                let pieces = gpu_agrees(&mut b, rtol, tol);
                assert_eq!(whole.len(), pieces.len());
                assert!(
                    whole
                        .iter()
                        .flatten()
                        .zip(pieces.iter().flatten())
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{p:?}: resumed dispatches differ"
                );
            }
            Err(e) => println!("SKIPPED: {e}"),
        }
    }
}

/// `vpop check` and `vpop run` note a steady state of a model that reads its time (an arm
/// that starts at steady state, an SS record of a `[data]` dataset), and nothing for a model
/// that does not read it.
#[test]
fn a_steady_state_of_a_model_that_reads_its_time_is_noted() {
    use vpop::trial::Trial;
    let dir = temp_dir("note");
    std::fs::write(dir.join("forced.vpm"), MODEL).unwrap();
    std::fs::write(
        dir.join("plain.vpm"),
        "param k = 0.2\nstate c\nd/dt(c) = -k * c\noutput cp = c\n",
    )
    .unwrap();
    std::fs::write(dir.join("records.csv"), RECORDS).unwrap();
    let arm = "[[arm]]\nname = \"daily\"\n\
               dose = { amount = 100, into = \"c\", every = 24, count = 2, steady_state = true }\n\
               [simulation]\nend = 48\n[output]\ndir = \"out\"\nmetrics = [\"auc\"]\n";
    let data = "[data]\nfile = \"records.csv\"\n[simulation]\n[output]\ndir = \"out\"\n";
    let spec = |model: &str, design: &str| {
        // A [data] trial's subjects are its dataset's.
        let n = if design.contains("[[arm]]") {
            "subjects = 2\n"
        } else {
            ""
        };
        format!("[trial]\nname = \"ss\"\n{n}seed = 1\n[model]\nfile = \"{model}\"\n{design}")
    };
    let note = |model: &str, design: &str| {
        let t = Trial::from_text(&dir.join("spec.toml"), &spec(model, design)).unwrap();
        t.model_notes().join("\n")
    };
    let notes = note("forced.vpm", arm);
    assert!(
        notes.contains("the model reads its time t and arm \"daily\" starts at steady state"),
        "{notes}"
    );
    let notes = note("forced.vpm", data);
    assert!(
        notes.contains("the model reads its time t and the dataset's SS = 1 record at TIME 30"),
        "{notes}"
    );
    for (model, design) in [("plain.vpm", arm), ("plain.vpm", data)] {
        assert!(!note(model, design).contains("reads its time"), "{model}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
