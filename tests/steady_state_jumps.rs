//! Steady states of models that jump in time (a light switched on from 08:00 to 20:00 every
//! day, `if(mod(t - 8, 24) < 12, kin, 0)`): the iterations over the interval before the dose
//! stop at the jumps inside it, as the integration does everywhere else, instead of crossing
//! them with the step control (which took tens of thousands of rejected steps for one subject
//! at rtol 1e-6, missed the steady state by 5e-5, and failed with Rodas4 at rtol 1e-10). On
//! the CPU reference against the closed form of the light's periodic response, for an arm's
//! steady-state start (its line from 0 and from 5 h) and a dataset's SS = 1 record; on the
//! WGSL kernels (lavapipe) and the CUDA kernels (on a device, else emulated on the host)
//! against the CPU reference.

// Without a GPU backend compiled in, only the CPU tests remain.
#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_imports, dead_code)
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use vpop::backend::cpu::simulate_arm_subject;
use vpop::backend::records::{record_program, simulate_records, Input, Program, RecordBinding};
use vpop::backend::{ArmPlan, Backend};
use vpop::dosing::nonmem::Dataset;
use vpop::dosing::{Administration, DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Integrator, Method, SolverOptions, Status};

/// A drug given every day into `c`, and a response produced while the light is on (08:00 to
/// 20:00, t = 0 at midnight), eliminated at all times.
const MODEL: &str = "
param k = 0.1
param kin = 3
param kout = 0.4
state c, r
d/dt(c) = -k * c
d/dt(r) = if(mod(t - 8, 24) < 12, kin, 0) - kout * r
output cp = c
output resp = r
";

/// The same with the light switched on at a time of each subject's own (`won`, 8 above): its
/// jumps move with the parameters.
const MOVING: &str = "
param k = 0.1
param kin = 3
param kout = 0.4
param won = 8
state c, r
d/dt(c) = -k * c
d/dt(r) = if(mod(t - won, 24) < 12, kin, 0) - kout * r
output cp = c
output resp = r
";

const KIN: f64 = 3.0;
const KOUT: f64 = 0.4;
const DOSE: f64 = 100.0;

fn model() -> (Model, CompiledModel) {
    let m = Model::parse("light.vpm", MODEL).unwrap();
    let c = CompiledModel::new(&m);
    (m, c)
}

/// The response's periodic solution: rising towards kin/kout from r8 while the light is on,
/// falling from r20 while it is off; r20 = (kin/kout)/(1 + q), r8 = q·r20, q = e^(−12 kout).
fn light(t: f64) -> f64 {
    let k = KIN / KOUT;
    let q = (-12.0 * KOUT).exp();
    let (r20, r8) = (k / (1.0 + q), k * q / (1.0 + q));
    let s = (t - 8.0).rem_euclid(24.0);
    if s < 12.0 {
        k + (r8 - k) * (-KOUT * s).exp()
    } else {
        r20 * (-KOUT * (s - 12.0)).exp()
    }
}

/// The response's area over (a, b) on the periodic solution, piece by piece between the
/// light's switches.
fn light_auc(a: f64, b: f64) -> f64 {
    let k = KIN / KOUT;
    let mut edges = vec![a];
    let mut e = 8.0 + 12.0 * ((a - 8.0) / 12.0).floor();
    while e < b {
        if e > a {
            edges.push(e);
        }
        e += 12.0;
    }
    edges.push(b);
    edges
        .windows(2)
        .map(|w| {
            let (s, e) = (w[0], w[1]);
            let on = (s - 8.0).rem_euclid(24.0) < 12.0;
            let r0 = light(s);
            let decay = (1.0 - (-KOUT * (e - s)).exp()) / KOUT;
            if on {
                k * (e - s) + (r0 - k) * decay
            } else {
                r0 * decay
            }
        })
        .sum()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: {got} vs {want} (rel {:.2e})",
        (got - want).abs() / want.abs()
    );
}

fn solver(method: Method, rtol: f64) -> SolverOptions {
    SolverOptions {
        method,
        rtol,
        atol: rtol * 1e-3,
        ..Default::default()
    }
}

/// An arm that starts at steady state with a bolus every `ii` hours from `start`, over a day,
/// its metrics on the response.
fn arm(ii: f64, start: f64, metrics: &[&str]) -> ArmPlan {
    ArmPlan {
        name: "ss".into(),
        regimen: Regimen {
            lines: vec![DoseLine {
                state: 0,
                amount: DOSE,
                start,
                interval: ii,
                count: 2,
                administration: Administration::Bolus,
                steady_state: true,
                scaled: true,
                keeps_lag: false,
            }],
        },
        metrics: metrics
            .iter()
            .map(|x| MetricSpec::new(1, "resp", Metric::parse(x).unwrap()))
            .collect(),
        end: 24.0,
        sample_times: Vec::new(),
        solver: solver(Method::Tsit5, 1e-10),
        occasions: Vec::new(),
    }
}

const PARAMS: [f64; 3] = [0.1, KIN, KOUT];

/// The response of an arm at steady state is on the light's periodic solution from 0 on,
/// whatever the method and tolerance, and the iterations take few rejected steps: the jumps
/// at 08:00 and 20:00 of the interval before 0 are stopping points.
#[test]
fn an_arms_steady_state_stops_at_the_jumps_before_0() {
    let (_, c) = model();
    let ts = [0.0, 3.0, 8.0, 12.0, 21.0];
    for (method, rtol, tol) in [
        (Method::Tsit5, 1e-6, 2e-6),
        (Method::Tsit5, 1e-10, 1e-9),
        (Method::Dopri5, 1e-8, 1e-7),
        (Method::Rodas4, 1e-6, 2e-6),
        (Method::Rodas4, 1e-10, 1e-9),
    ] {
        for start in [0.0, 5.0] {
            let mut a = arm(
                24.0,
                start,
                &["at(0)", "at(3)", "at(8)", "at(12)", "at(21)", "auc(0, 24)"],
            );
            a.solver = solver(method, rtol);
            let mut integ = Integrator::new(method, 2);
            let out = simulate_arm_subject(&c, &PARAMS, 1.0, &a, &mut integ);
            let what = format!("{method:?} rtol {rtol:e} from {start}");
            assert_eq!(out.status, Status::Ok, "{what}");
            for (m, t) in ts.iter().enumerate() {
                close(out.metrics[m], light(*t), tol, &format!("{what}: r({t})"));
            }
            close(
                out.metrics[5],
                light_auc(0.0, 24.0),
                tol,
                &format!("{what}: AUC"),
            );
            // Crossing the jumps took 9 894 to 21 958 rejected steps here.
            assert!(
                out.stats.rejected < 200,
                "{what}: {} rejected steps",
                out.stats.rejected
            );
            println!(
                "{what}: {} steps, {} rejected",
                out.stats.accepted, out.stats.rejected
            );
        }
    }
}

/// A directory of its own for each call (the tests run in parallel and remove theirs).
/// Where the light is switched on at `won` instead of 8 (the model [`MOVING`]), the response
/// is the same cycle shifted, on the CPU reference too: its iterations stop at each subject's
/// jumps.
#[test]
fn an_arms_steady_state_stops_at_jumps_that_move_with_the_parameters() {
    let c = CompiledModel::new(&Model::parse("moving.vpm", MOVING).unwrap());
    for (method, rtol, tol) in [
        (Method::Tsit5, 1e-6, 2e-6),
        (Method::Tsit5, 1e-10, 1e-9),
        (Method::Rodas4, 1e-10, 1e-9),
    ] {
        for won in [8.0, 6.5, 13.25] {
            for start in [0.0, 5.0] {
                let mut a = arm(24.0, start, &["at(0)", "at(3)", "at(11)", "auc(0, 24)"]);
                a.solver = solver(method, rtol);
                let mut integ = Integrator::new(method, 2);
                let p = [0.1, KIN, KOUT, won];
                let out = simulate_arm_subject(&c, &p, 1.0, &a, &mut integ);
                let what = format!("{method:?} rtol {rtol:e} on at {won} from {start}");
                assert_eq!(out.status, Status::Ok, "{what}");
                let shift = won - 8.0;
                for (m, t) in [0.0, 3.0, 11.0].iter().enumerate() {
                    let want = light(t - shift);
                    close(out.metrics[m], want, tol, &format!("{what}: r({t})"));
                }
                let auc = light_auc(-shift, 24.0 - shift);
                close(out.metrics[3], auc, tol, &format!("{what}: AUC"));
                assert!(out.stats.rejected < 200, "{what}: {}", out.stats.rejected);
            }
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vpop-ss-jumps-{tag}-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The dataset subjects: the time of their steady state, its interval (0: a steady-state
/// infusion, at [`RATE`]).
const SUBJECTS: [(f64, f64); 4] = [(30.0, 24.0), (30.3, 24.0), (1000.0, 12.0), (30.0, 0.0)];

/// A steady-state infusion's rate.
const RATE: f64 = 5.0;

/// Dataset subjects with a bolus at steady state every 24 h given at 30 h, at 30.3 h, and every
/// 12 h at 1000 h (the interval's local times far finer than the model's), and an infusion at
/// steady state from 30 h, each observed then and 5, 17 and 27 h later.
fn records_csv() -> String {
    let mut s = String::from("ID,TIME,EVID,AMT,RATE,CMT,SS,II,MDV\n");
    for (id, (t, ii)) in (1..).zip(SUBJECTS) {
        let (amt, rate) = if ii > 0.0 { (DOSE, 0.0) } else { (0.0, RATE) };
        s += &format!("{id},0,2,0,0,1,0,0,1\n{id},{t},1,{amt},{rate},1,1,{ii},1\n");
        for dt in [0.0, 5.0, 17.0, 27.0] {
            s += &format!("{id},{},0,0,0,1,0,0,0\n", t + dt);
        }
    }
    s
}

struct Records {
    model: Arc<CompiledModel>,
    ds: Dataset,
    binding: RecordBinding,
    _dir: PathBuf,
}

fn records() -> Records {
    let (m, c) = model();
    let dir = temp_dir("records");
    let csv = dir.join("records.csv");
    std::fs::write(&csv, records_csv()).unwrap();
    let ds = Dataset::load(&csv).unwrap();
    let binding = RecordBinding::new(&m, &ds.covariates);
    Records {
        model: Arc::new(c),
        ds,
        binding,
        _dir: dir,
    }
}

/// An SS = 1 record's steady state puts the response on the light's cycle at the record's
/// time (a dose every 24 h; every 12 h at 1 000 h, where the interval repeated is the one
/// before the dose, its own 12 hours of the cycle: the closed form is then the periodic
/// solution only where the 12 hours before the dose hold the cycle's, which the test does not
/// ask there, so that subject checks the drug alone). So does a steady-state infusion's, whose
/// spans, ending at the record's time, stop at the jumps inside them; the drug is then at
/// rate / k, and falls from there (the record gives no amount: the input stops there).
#[test]
fn a_steady_state_record_stops_at_the_jumps_before_it() {
    let r = records();
    for (method, rtol, tol) in [
        (Method::Tsit5, 1e-6, 2e-6),
        (Method::Tsit5, 1e-10, 1e-9),
        (Method::Rodas4, 1e-10, 1e-9),
    ] {
        for (i, subject) in r.ds.subjects.iter().enumerate() {
            let out = simulate_records(
                &r.model,
                &PARAMS,
                &r.binding,
                subject,
                &solver(method, rtol),
            );
            let what = format!("{method:?} rtol {rtol:e} subject {}", i + 1);
            assert_eq!(out.status, Status::Ok, "{what}");
            let (t0, ii) = SUBJECTS[i];
            for (j, dt) in [0.0, 5.0, 17.0, 27.0].iter().enumerate() {
                let t = t0 + dt;
                // The drug: a bolus every ii at steady state, its last at t0 (and none after);
                // or an infusion at steady state until t0.
                let cp = if ii > 0.0 {
                    DOSE * (-0.1 * dt).exp() / (1.0 - (-0.1 * ii).exp())
                } else {
                    RATE / 0.1 * (-0.1 * dt).exp()
                };
                close(out.outputs[0][j + 2], cp, tol, &format!("{what}: cp({t})"));
                if ii != 12.0 {
                    let resp = out.outputs[1][j + 2];
                    close(resp, light(t), tol, &format!("{what}: r({t})"));
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&r._dir);
}

/// A record program lists the stops of an SS = 1 dose's interval for the kernels beside its
/// window's inputs: the light's switches at 8 h and 20 h of every day inside (t − ii, t), at
/// their local times, in both precisions, sorted; the window holds the dose's inputs alone.
#[test]
fn a_record_program_lists_the_stops_of_a_steady_state_doses_interval() {
    use vpop::backend::records::Op;
    let r = records();
    for (k, &(t0, ii)) in SUBJECTS.iter().enumerate().filter(|(_, s)| s.1 > 0.0) {
        let program = record_program(
            &r.model,
            &PARAMS,
            &r.binding,
            &r.ds.subjects[k],
            &mut |_, _| {},
        );
        let (window, stops) = program
            .ops
            .iter()
            .find_map(|op| match op {
                Op::SteadyState(1, t, i, window, stops) if *t == t0 && *i == ii => {
                    Some((window.clone(), stops.clone()))
                }
                _ => None,
            })
            .expect("the steady state");
        assert!(
            window.iter().all(|w| w.1 == 0 && w.2 != Input::Rate(0.0)),
            "subject {k}: the dose's inputs alone: {window:?}"
        );
        let want: Vec<f64> = (-1..50)
            .flat_map(|d| [8.0 + 24.0 * f64::from(d), 20.0 + 24.0 * f64::from(d)])
            .filter(|&j| j > t0 - ii && j < t0)
            .map(|j| j - (t0 - ii))
            .collect();
        assert!(!want.is_empty());
        assert!(
            stops.windows(2).all(|w| w[0] < w[1]),
            "subject {k}: sorted, unique: {stops:?}"
        );
        assert!(stops.iter().all(|&s| s > 0.0 && s < ii));
        assert!(
            stops.len() >= want.len() && stops.len() <= 2 * want.len(),
            "subject {k}: {stops:?} for {want:?}"
        );
        for w in &want {
            // Its f64 stop, two units after the switch as the sum rounds, and its f32 stop.
            assert!(
                stops.iter().any(|&g| g > *w && g - w <= 1e-12 * t0),
                "subject {k}: no f64 stop at {w} in {stops:?}"
            );
            assert!(
                stops
                    .iter()
                    .any(|&g| g >= *w && f64::from(g as f32) == g && g - w <= 1e-5 * t0),
                "subject {k}: no f32 stop at {w} in {stops:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&r._dir);
}

/// A record program lists the stops of a steady-state infusion's spans for the kernels: each
/// span (1, 2, 4, … hours, ending at 30 h) holds the light's switches at 20 h and 8 h of every
/// day inside it, at their local times (a jump at model time τ is local τ − (30 − span)), in
/// both precisions, ordered by span; as many spans as fit [`SS_INFUSION_MAX_STOPS`].
#[test]
fn a_record_program_lists_the_stops_of_a_steady_state_infusions_spans() {
    use vpop::backend::records::{Op, SS_INFUSION_MAX_STOPS};
    let r = records();
    let program = record_program(
        &r.model,
        &PARAMS,
        &r.binding,
        &r.ds.subjects[3],
        &mut |_, _| {},
    );
    let stops = program
        .ops
        .iter()
        .find_map(|op| match op {
            Op::SteadyInfusion(0, t, rate, stops) if *t == 30.0 && *rate == RATE => {
                Some(stops.clone())
            }
            _ => None,
        })
        .expect("the steady-state infusion");
    assert!(!stops.is_empty() && stops.len() <= SS_INFUSION_MAX_STOPS);
    assert!(
        stops.windows(2).all(|w| w[0].0 <= w[1].0),
        "ordered by span"
    );
    let last = stops.last().unwrap().0;
    assert!(last >= 512.0, "spans listed up to {last} h only");
    let mut span = 1.0;
    while span <= last {
        // The switches inside (30 − span, 30), as local times.
        let mut want: Vec<f64> = (-100..2)
            .flat_map(|d| [8.0 + 24.0 * f64::from(d), 20.0 + 24.0 * f64::from(d)])
            .filter(|&j| j > 30.0 - span && j < 30.0)
            .map(|j| j - (30.0 - span))
            .collect();
        want.sort_by(f64::total_cmp);
        let got: Vec<f64> = stops.iter().filter(|s| s.0 == span).map(|s| s.1).collect();
        // Each switch's f64 stop and f32 stop (which may be the same number), in order.
        assert!(
            got.len() >= want.len() && got.len() <= 2 * want.len(),
            "span {span}: {got:?} for {want:?}"
        );
        for w in &want {
            assert!(
                got.iter().any(|g| (g - w).abs() <= 1e-9 * span),
                "span {span}: no stop at {w} in {got:?}"
            );
            assert!(
                got.iter()
                    .any(|&g| g as f32 == *w as f32 || (g - w).abs() <= 1e-5 * span),
                "span {span}: no f32 stop at {w}"
            );
        }
        span *= 2.0;
    }
    let _ = std::fs::remove_dir_all(&r._dir);
}

/// A light switched every 15 minutes: a steady-state infusion's spans hold more stops than a
/// record program lists ([`SS_INFUSION_MAX_STOPS`]), so the kernels cross the jumps of the
/// longer spans with the step control, where the CPU reference stops at every one. The batch
/// completes: the subject either agrees with the CPU reference or is flagged (out of steps, or
/// a step too small: what these crossings cost), never a wrong number.
fn flicker_gpu(b: &mut dyn Backend, model: &CompiledModel, rtol: f64, tol: f64) {
    use vpop::backend::records::{Op, SS_INFUSION_MAX_STOPS};
    let dir = temp_dir("flicker");
    let csv = dir.join("flicker.csv");
    let mut text = String::from("ID,TIME,EVID,AMT,RATE,CMT,SS,II,MDV\n");
    text += &format!("1,0,2,0,0,1,0,0,1\n1,30,1,0,{RATE},1,1,0,1\n1,30,0,0,0,1,0,0,0\n");
    text += "1,31.1,0,0,0,1,0,0,0\n";
    std::fs::write(&csv, text).unwrap();
    let ds = Dataset::load(&csv).unwrap();
    let m = Model::parse(
        "flicker.vpm",
        &MODEL.replace("mod(t - 8, 24) < 12", "mod(t, 0.5) < 0.25"),
    )
    .unwrap();
    let binding = RecordBinding::new(&m, &ds.covariates);
    let program = record_program(model, &PARAMS, &binding, &ds.subjects[0], &mut |_, _| {});
    let listed = program
        .ops
        .iter()
        .find_map(|op| match op {
            Op::SteadyInfusion(_, _, _, stops) => Some(stops.clone()),
            _ => None,
        })
        .unwrap();
    let last = listed.last().unwrap().0;
    assert!(
        listed.len() <= SS_INFUSION_MAX_STOPS && last < 128.0,
        "{last}"
    );
    println!(
        "flicker: {} stops listed, spans up to {last} h",
        listed.len()
    );
    let s = solver(Method::Tsit5, rtol);
    let want = simulate_records(model, &PARAMS, &binding, &ds.subjects[0], &s);
    assert_eq!(want.status, Status::Ok);
    let got = b.run_records(&[&program], &s).unwrap();
    println!("{} flicker: {:?}", b.info().name, got[0].status);
    if matches!(got[0].status, Status::MaxSteps | Status::StepTooSmall) {
        assert!(got[0].outputs[0][2].is_nan(), "a flagged subject's outputs");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    assert_eq!(got[0].status, Status::Ok, "{}", b.info().name);
    for o in 0..2 {
        for j in 2..4 {
            let (g, c) = (got[0].outputs[o][j], want.outputs[o][j]);
            assert!(
                (g - c).abs() <= tol * c.abs(),
                "{} output {o} record {j}: {g} vs {c}",
                b.info().name
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// [`MODEL`] with the light switched every 15 minutes.
fn flicker_model() -> Arc<CompiledModel> {
    let src = MODEL.replace("mod(t - 8, 24) < 12", "mod(t, 0.5) < 0.25");
    Arc::new(CompiledModel::new(
        &Model::parse("flicker.vpm", &src).unwrap(),
    ))
}

/// The kernels against the CPU reference at the same settings: the arms from 0 and from 5 h,
/// every 24 h and every 12 h; the records. What the backend gave, in order.
fn gpu_agrees(b: &mut dyn Backend, rtol: f64, tol: f64) -> Vec<Vec<f64>> {
    let mut gave = Vec::new();
    let name = b.info().name;
    let r = records();
    let s = solver(Method::Tsit5, rtol);
    let programs: Vec<Program> =
        r.ds.subjects
            .iter()
            .map(|sub| record_program(&r.model, &PARAMS, &r.binding, sub, &mut |_, _| {}))
            .collect();
    let refs: Vec<&Program> = programs.iter().collect();
    let got = b.run_records(&refs, &s).unwrap();
    let mut worst = 0.0f64;
    for (i, subject) in r.ds.subjects.iter().enumerate() {
        let want = simulate_records(&r.model, &PARAMS, &r.binding, subject, &s);
        assert_eq!(got[i].status, Status::Ok, "{name} subject {}", i + 1);
        for o in 0..2 {
            for j in 2..6 {
                let (g, c) = (got[i].outputs[o][j], want.outputs[o][j]);
                let rel = (g - c).abs() / c.abs();
                worst = worst.max(rel);
                assert!(
                    rel <= tol,
                    "{name} subject {} output {o} record {j}: {g} vs {c}",
                    i + 1
                );
            }
            gave.push(got[i].outputs[o].clone());
        }
    }
    println!("{name} records: worst {worst:.2e}");
    let _ = std::fs::remove_dir_all(&r._dir);
    let p = [PARAMS.to_vec(), vec![0.2, 2.0, 0.3]];
    gave.extend(arms_agree(b, &r.model, &p, rtol, tol));
    gave
}

/// The arms every 24 and 12 h from 0 and 5 h on the backend `b` of `model`, for two subjects
/// of parameters `p`, against the CPU reference; what the backend gave, in order.
fn arms_agree(
    b: &mut dyn Backend,
    model: &Arc<CompiledModel>,
    p: &[Vec<f64>; 2],
    rtol: f64,
    tol: f64,
) -> Vec<Vec<f64>> {
    let name = b.info().name;
    let s = solver(Method::Tsit5, rtol);
    let mut gave = Vec::new();
    for (ii, start) in [(24.0, 0.0), (24.0, 5.0), (12.0, 0.0), (12.0, 5.0)] {
        let mut plan = arm(
            ii,
            start,
            &["at(0)", "at(3)", "at(12)", "auc", "cmax", "cmin"],
        );
        plan.solver = s.clone();
        let cols: Vec<Vec<f64>> = (0..p[0].len()).map(|k| vec![p[0][k], p[1][k]]).collect();
        let what = format!("every {ii} h from {start}");
        let (gpu, worst) = common::metrics_agree_with_cpu(b, model, &plan, &cols, tol, &what);
        println!("{name} arm every {ii} h from {start}: worst {worst:.2e}");
        gave.extend(gpu.metrics);
    }
    gave
}

/// Two subjects of [`MOVING`], their light switched on at 6.5 h and at 13.25 h.
fn moving() -> (Arc<CompiledModel>, [Vec<f64>; 2]) {
    let c = CompiledModel::new(&Model::parse("moving.vpm", MOVING).unwrap());
    let p = [vec![0.1, KIN, KOUT, 6.5], vec![0.2, 2.0, 0.3, 13.25]];
    (Arc::new(c), p)
}

/// On a CUDA device where there is one, else through the host emulation of the kernels: the
/// model's jumps, and those that move with the parameters (each subject's own stops).
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_stop_at_the_jumps_of_steady_states() {
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        let Some(mut b) = common::cuda_or_emulated(Arc::new(model().1), p) else {
            return;
        };
        gpu_agrees(b.as_mut(), rtol, tol);
        let (model, params) = moving();
        let mut b = common::cuda_or_emulated(model.clone(), p).unwrap();
        println!("moving:");
        arms_agree(b.as_mut(), &model, &params, rtol, tol);
        let model = flicker_model();
        let mut b = common::cuda_or_emulated(model.clone(), p).unwrap();
        flicker_gpu(b.as_mut(), &model, rtol, 1e3 * tol);
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_kernels_stop_at_the_jumps_of_steady_states() {
    use vpop::backend::wgpu::WgpuBackend;
    use vpop::backend::Precision;
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        match WgpuBackend::new(Arc::new(model().1), p) {
            Ok(mut b) => {
                let whole = gpu_agrees(&mut b, rtol, tol);
                // Suspended after every step and every steady-state round: the same bits.
                b.set_dispatch_budget(Some((1, 1)));
                let pieces = gpu_agrees(&mut b, rtol, tol);
                assert_eq!(whole, pieces, "{p:?}: suspended runs differ");
            }
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        }
        let (model, params) = moving();
        let mut b = WgpuBackend::new(model.clone(), p).unwrap();
        println!("moving:");
        let whole = arms_agree(&mut b, &model, &params, rtol, tol);
        b.set_dispatch_budget(Some((1, 1)));
        let pieces = arms_agree(&mut b, &model, &params, rtol, tol);
        assert_eq!(whole, pieces, "{p:?}: suspended runs differ (moving jumps)");
        let model = flicker_model();
        let mut b = WgpuBackend::new(model.clone(), p).unwrap();
        flicker_gpu(&mut b, &model, rtol, 1e3 * tol);
    }
}
