//! Event location (`events = "locate"`) on the CPU reference, against an exact solution: a
//! bacterial count killed while the concentration of a one-compartment oral model is above a
//! threshold, `d/dt(bact) = 0.05 * bact - if(cp > 2, 0.5, 0) * bact`. Its exact solution is
//! log₁₀ bact(t) = 6 + (0.05·t − 0.5·T(t)) / ln 10, T(t) the time cp has spent above 2 up to t,
//! from the crossings of the closed-form cp (bisected to the last floating-point time).

mod common;

use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::ArmPlan;
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Events, Method, SolverOptions};

use common::KILL_MODEL;

const DOSE: f64 = 100.0;
const EVERY: f64 = 12.0;
const COUNT: u32 = 14;
const END: f64 = 168.0;
const SAMPLES: [f64; 4] = [5.0, 30.5, 84.0, 167.0];

/// (ka, cl, v) of the subjects: cp crosses 2 twice in most dosing intervals.
const SUBJECTS: [[f64; 3]; 4] = [
    [1.5, 2.8, 35.0],
    [0.8, 4.0, 30.0],
    [2.5, 2.0, 45.0],
    [0.3, 3.1, 28.0],
];

fn cp(s: &[f64; 3], t: f64) -> f64 {
    let [ka, cl, v] = *s;
    let k = cl / v;
    (0..COUNT)
        .map(|i| i as f64 * EVERY)
        .filter(|&td| td <= t)
        .map(|td| DOSE * ka / (v * (ka - k)) * ((-k * (t - td)).exp() - (-ka * (t - td)).exp()))
        .sum()
}

/// The exact log₁₀ bact at the sample times, its minimum over [0, END], and T(END).
fn exact(s: &[f64; 3]) -> (Vec<f64>, f64, f64) {
    // Where cp − 2 changes sign, on a grid of 0.005 h and bisected.
    let g = |t: f64| cp(s, t) - 2.0;
    let mut crossings = Vec::new();
    let n = (END / 0.005) as usize;
    for i in 0..n {
        let (a, b) = (i as f64 * 0.005, (i + 1) as f64 * 0.005);
        if (g(a) > 0.0) != (g(b) > 0.0) {
            crossings.push(common::crossing(g, a, b, g(a) >= 0.0));
        }
    }
    // T(t): the time above 2 up to t.
    let above_until = |t: f64| {
        let mut total = 0.0;
        let mut from = 0.0;
        let mut above = g(0.0) > 0.0;
        for &c in crossings.iter().filter(|&&c| c < t) {
            if above {
                total += c - from;
            }
            from = c;
            above = !above;
        }
        if above {
            total += t - from;
        }
        total
    };
    let lb = |t: f64| 6.0 + (0.05 * t - 0.5 * above_until(t)) / std::f64::consts::LN_10;
    let min = crossings
        .iter()
        .copied()
        .chain([0.0, END])
        .map(lb)
        .fold(f64::INFINITY, f64::min);
    (
        SAMPLES.iter().map(|&t| lb(t)).collect(),
        min,
        above_until(END),
    )
}

fn arm(m: &Model, method: Method, rtol: f64, events: Events, area: bool) -> ArmPlan {
    let metric =
        |o: usize, name: &str| MetricSpec::new(o, &m.outputs[o].name, Metric::parse(name).unwrap());
    ArmPlan {
        name: "a".into(),
        regimen: Regimen {
            lines: vec![DoseLine::boluses(0, DOSE, EVERY, COUNT)],
        },
        metrics: [metric(1, "cmin")]
            .into_iter()
            .chain(area.then(|| metric(2, "auc")))
            .collect(),
        end: END,
        sample_times: SAMPLES.to_vec(),
        solver: SolverOptions {
            method,
            rtol,
            atol: 1e-30,
            events,
            ..Default::default()
        },
        occasions: Vec::new(),
    }
}

/// The subjects' parameter columns.
fn params() -> Vec<Vec<f64>> {
    (0..3)
        .map(|p| SUBJECTS.iter().map(|s| s[p]).collect())
        .collect()
}

/// The largest error of the subjects' log₁₀ bact (samples and minimum, relative to the larger
/// of the value and 1) and, with `area`, of the area of `above`, the time above 2 (relative to
/// END); infinite where a subject failed. And the steps taken, accepted and rejected.
fn worst(method: Method, rtol: f64, events: Events, area: bool) -> (f64, u64, u64) {
    let m = Model::parse("kill", KILL_MODEL).unwrap();
    let mut b = CpuBackend::new(Arc::new(CompiledModel::new(&m)));
    let out = common::run(&mut b, &arm(&m, method, rtol, events, area), &params());
    (errors(&out, area), out.stats.accepted, out.stats.rejected)
}

/// [`worst`]'s error of one chunk's results.
fn errors(out: &vpop::backend::ChunkOutput, area: bool) -> f64 {
    let n_t = SAMPLES.len();
    let mut worst = 0.0f64;
    for (i, s) in SUBJECTS.iter().enumerate() {
        if out.status[i] != 0 {
            // Crossing the switch, the area of `above` (0 until the first crossing) can stop
            // the subject with step_too_small at atol 1e-30.
            worst = f64::INFINITY;
            continue;
        }
        let (at, min, above) = exact(s);
        let rel = |got: f64, want: f64, scale: f64| (got - want).abs() / scale;
        for (j, want) in at.iter().enumerate() {
            // Output lb (index 1) at sample j.
            let got = out.profiles[1][i * n_t + j];
            worst = worst.max(rel(got, *want, want.abs().max(1.0)));
        }
        worst = worst.max(rel(out.metrics[0][i], min, min.abs().max(1.0)));
        if area {
            worst = worst.max(rel(out.metrics[1][i], above, END));
        }
    }
    worst
}

/// With the switch located, the errors follow rtol, where crossing it leaves errors that a
/// tighter rtol does not bring down (printed with --nocapture: the table of
/// docs/model-language.md, "Jumps").
#[test]
fn a_located_switch_keeps_the_errors_to_the_tolerance() {
    let mut failures = Vec::new();
    for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
        for rtol in [1e-6, 1e-8, 1e-10] {
            let (cross, ca, cr) = worst(method, rtol, Events::Cross, false);
            let (cross_area, _, _) = worst(method, rtol, Events::Cross, true);
            let (locate, la, lr) = worst(method, rtol, Events::Locate, false);
            let (locate_area, _, _) = worst(method, rtol, Events::Locate, true);
            println!(
                "{method} rtol {rtol:e}: cross {cross:.1e} ({ca} + {cr} steps), with the area \
                 {cross_area:.1e}; locate {locate:.1e} ({la} + {lr} steps), with the area \
                 {locate_area:.1e}"
            );
            if locate.max(locate_area) > 20.0 * rtol {
                failures.push(format!(
                    "{method} rtol {rtol:e}: located, error {locate:.1e} (with the area \
                     {locate_area:.1e})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A fresh directory of this test process.
fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-events-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `vpop simulate --events locate` integrates the jump located, without the note that
/// `cross` prints; an unknown value is refused.
#[test]
fn simulate_takes_events() {
    let dir = scratch("simulate");
    let model = dir.join("kill.vpm");
    std::fs::write(&model, KILL_MODEL).unwrap();
    let m = model.to_str().unwrap();
    let args = |events: &'static str| {
        [
            m,
            "--dose",
            "amount=100,into=depot,every=12,count=14",
            "--end",
            "168",
            "--atol",
            "1e-30",
            "--metrics",
            "lb:cmin",
            "--events",
            events,
        ]
    };
    let (ok, cross) = common::simulate_text(&args("cross"));
    assert!(ok, "{cross}");
    assert!(
        cross.contains("the right-hand side jumps where values of the states cross a bound")
            && cross.contains("events = \"locate\""),
        "{cross}"
    );
    let (ok, located) = common::simulate_text(&args("locate"));
    assert!(ok, "{located}");
    assert!(!located.contains("note:"), "{located}");
    // The first subject's exact minimum (at the default ka, cl, v).
    let (_, min, _) = exact(&SUBJECTS[0]);
    let got: f64 = located
        .lines()
        .find_map(|l| l.strip_prefix("lb_cmin"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{located}"));
    assert!((got - min).abs() <= 1e-8 * min.abs(), "{got} against {min}");
    let (ok, bad) = common::simulate_text(&args("find"));
    assert!(
        !ok && bad.contains("--events 'find': events is `cross`"),
        "{bad}"
    );
}

/// A spec's `events = "locate"` runs on every backend (`auto` as for `cross`, `wgpu` beside
/// it), and an unknown value is refused with its place in the file.
#[test]
fn a_spec_takes_events() {
    let dir = scratch("spec");
    std::fs::write(dir.join("kill.vpm"), KILL_MODEL).unwrap();
    let spec = |extra: &str| {
        format!(
            "[trial]\nname = \"kill\"\nsubjects = 4\nseed = 1\n\n[model]\nfile = \"kill.vpm\"\n\n\
             [[arm]]\nname = \"a\"\ndose = {{ amount = 100, into = \"depot\", every = 12, \
             count = 14 }}\n\n[simulation]\nend = 168\n{extra}\n[output]\ndir = \"out\"\n"
        )
    };
    let path = dir.join("kill.toml");
    let load = |extra: &str| vpop::trial::resolve::Trial::from_text(&path, &spec(extra));
    let t = load("events = \"locate\"\n").unwrap();
    assert_eq!(t.events(), Events::Locate);
    assert!(t.model_notes().is_empty(), "{:?}", t.model_notes());
    assert_eq!(load("").unwrap().events(), Events::Cross);
    assert_eq!(load("").unwrap().model_notes().len(), 1);
    // auto chooses as for `cross`.
    let (_, why) = vpop::trial::run::select_backend(&t, t.backend).unwrap();
    let (_, crossed) = vpop::trial::run::select_backend(&load("").unwrap(), t.backend).unwrap();
    assert_eq!(why, crossed);
    let t = load("events = \"locate\"\nbackend = \"wgpu\"\n").unwrap();
    assert_eq!(t.events(), Events::Locate);
    let e = load("events = \"sometimes\"\n").err().unwrap().to_string();
    assert!(e.contains("kill.toml:15:10: events is `cross`"), "{e}");
}

/// A GPU backend's results `got` for arm `a` against the CPU's `want` (printed, with both
/// against the exact solution and the steps taken): a failure in `failures` where they differ
/// by more than `same`, or where a subject failed.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn judge(
    name: &str,
    a: &ArmPlan,
    got: &vpop::backend::ChunkOutput,
    want: &vpop::backend::ChunkOutput,
    same: f64,
    failures: &mut Vec<String>,
) {
    let diff = common::worst_difference(a, got, want);
    println!(
        "{name} rtol {:e}: against the CPU {diff:.1e}, against the exact solution {:.1e} (CPU \
         {:.1e}); steps {} + {} (CPU {} + {})",
        a.solver.rtol,
        errors(got, true),
        errors(want, true),
        got.stats.accepted,
        got.stats.rejected,
        want.stats.accepted,
        want.stats.rejected
    );
    if diff.is_nan() || diff > same || got.status.iter().any(|s| *s != 0) {
        failures.push(format!("{name}: {diff:.1e} {:?}", got.status));
    }
}

/// The CUDA kernels locate as the CPU reference does (on a device, else through the host
/// emulation): every subject's results within 1e-9 of the CPU's in f64 at rtol 1e-10 and
/// within 1e-4 in f32 at rtol 1e-6 (the agreement of docs/gpu.md), and against the exact
/// solution as the CPU's.
#[cfg(feature = "cuda")]
#[test]
fn cuda_locates_as_the_cpu_reference() {
    use vpop::backend::Precision;
    let m = Model::parse("kill", KILL_MODEL).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let make = |p: Precision| cuda_or_emulated(&model, p);
    let mut cpu = CpuBackend::new(model.clone());
    let mut failures = Vec::new();
    for (p, rtol, same) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
        let Some(mut gpu) = make(p) else {
            return;
        };
        for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
            let a = arm(&m, method, rtol, Events::Locate, true);
            let want = common::run(&mut cpu, &a, &params());
            let got = common::run(gpu.as_mut(), &a, &params());
            judge(
                &format!("{} {method}", p.name()),
                &a,
                &got,
                &want,
                same,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The located WGSL kernels (arm, with every driver feature, and records; Tsit5, DOPRI5 and
/// Rodas4; f32 and f64) pass naga's validation, and the kernels of a model without switches or
/// of RK4 have none of the location code.
#[cfg(feature = "wgpu")]
#[test]
fn located_wgsl_kernels_validate() {
    use vpop::backend::gpu::{located_switches, Driver};
    use vpop::backend::wgpu::kernel::{arm_source_located, records_source_located};
    use vpop::backend::Precision;
    let m = Model::parse("kill", KILL_MODEL).unwrap();
    let model = CompiledModel::new(&m);
    let a = arm(&m, Method::Tsit5, 1e-6, Events::Locate, true);
    let driver = Driver::Arm {
        ss: Some((0, 12.0)),
        resets: true,
        occasions: true,
    };
    for p in [Precision::F32, Precision::F64] {
        let caps = match p {
            Precision::F32 => naga::valid::Capabilities::empty(),
            Precision::F64 => naga::valid::Capabilities::FLOAT64,
        };
        for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4, Method::Rk4] {
            let solver = SolverOptions {
                method,
                events: Events::Locate,
                ..Default::default()
            };
            let sw = located_switches(&model, &solver);
            assert_eq!(sw.is_some(), method.is_adaptive());
            let progs = &model.programs;
            for src in [
                arm_source_located(progs, method, &a.metrics, driver, p, sw).unwrap(),
                records_source_located(progs, method, p, sw).unwrap(),
            ] {
                let module = naga::front::wgsl::parse_str(&src)
                    .unwrap_or_else(|e| panic!("{method} {p:?}:\n{}", e.emit_to_string(&src)));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{method} {p:?}:\n{}", e.emit_to_string(&src)));
                let nsw = if method.is_adaptive() { 1 } else { 0 };
                assert!(
                    src.contains(&format!("const NSW: u32 = {nsw}u;")),
                    "{method}"
                );
            }
        }
    }
}

/// The WGSL kernels locate as the CPU reference does, on an adapter (lavapipe in CI): every
/// subject's results within 1e-4 of the CPU's in f32 at rtol 1e-6 and within 1e-9 in f64 at
/// rtol 1e-10 (where the adapter has f64), with the same steps as the CPU's to a few; and the
/// same results, bit for bit, when every dispatch suspends the subjects after a step or a few
/// (the modes of an integration under way go through the carry buffers).
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_locates_as_the_cpu_reference() {
    use vpop::backend::Precision;
    let m = Model::parse("kill", KILL_MODEL).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let mut cpu = CpuBackend::new(model.clone());
    let mut failures = Vec::new();
    for (p, rtol, same) in [(Precision::F32, 1e-6, 1e-4), (Precision::F64, 1e-10, 1e-9)] {
        let mut gpu = match vpop::backend::wgpu::WgpuBackend::new(model.clone(), p) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {} {e}", p.name());
                continue;
            }
        };
        for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
            let a = arm(&m, method, rtol, Events::Locate, true);
            let want = common::run(&mut cpu, &a, &params());
            let got = common::run(&mut gpu, &a, &params());
            let name = format!("wgpu {} {method}", p.name());
            judge(&name, &a, &got, &want, same, &mut failures);
            for budget in [(1, 1), (7, 3)] {
                gpu.set_dispatch_budget(Some(budget));
                let suspended = common::run(&mut gpu, &a, &params());
                gpu.set_dispatch_budget(None);
                if suspended.metrics != got.metrics
                    || suspended.profiles != got.profiles
                    || suspended.status != got.status
                    || suspended.stats.accepted != got.stats.accepted
                {
                    failures.push(format!(
                        "{} {method}: budget {budget:?} changes the results ({:.1e})",
                        p.name(),
                        common::worst_difference(&a, &suspended, &got)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A dataset's records locate the switch as an arm does: the CPU reference's record
/// simulation against the exact solution, and the CUDA records kernel (on a device, else
/// emulated) against the CPU's, in f64.
#[test]
fn records_locate_the_switch() {
    use vpop::backend::records::{record_program, simulate_records, Program, RecordBinding};
    use vpop::solver::Status;
    let m = Model::parse("kill", KILL_MODEL).unwrap();
    let model = CompiledModel::new(&m);
    let mut text = String::from("ID,TIME,EVID,AMT,CMT,II,ADDL,KA,CL,V\n");
    for (id, [ka, cl, v]) in SUBJECTS.iter().enumerate() {
        text.push_str(&format!(
            "{},0,1,{DOSE},1,{EVERY},{},{ka},{cl},{v}\n",
            id + 1,
            COUNT - 1
        ));
        for t in SAMPLES {
            text.push_str(&format!("{},{t},0,.,1,0,0,{ka},{cl},{v}\n", id + 1));
        }
    }
    let ds = vpop::dosing::nonmem::Dataset::parse("d.csv", &text).unwrap();
    let binding = RecordBinding::new(&m, &ds.covariates);
    let base = m.defaults();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-10,
        atol: 1e-30,
        events: Events::Locate,
        ..Default::default()
    };
    let mut programs: Vec<Program> = Vec::new();
    let mut cpu = Vec::new();
    for (s, subject) in ds.subjects.iter().zip(&SUBJECTS) {
        let out = simulate_records(&model, &base, &binding, s, &solver);
        assert_eq!(out.status, Status::Ok);
        let (want, _, _) = exact(subject);
        for (j, w) in want.iter().enumerate() {
            // Output lb after observation record j (the dose record first).
            let got = out.outputs[1][j + 1];
            assert!(
                (got - w).abs() <= 2e-9 * w.abs().max(1.0),
                "{got} against {w}"
            );
        }
        cpu.push(out);
        programs.push(record_program(&model, &base, &binding, s, &mut |_, _| {}));
    }
    #[cfg(not(feature = "cuda"))]
    println!("SKIPPED: built without the cuda feature");
    #[cfg(feature = "cuda")]
    {
        let model = Arc::new(model);
        let Some(mut gpu) = cuda_or_emulated(&model, vpop::backend::Precision::F64) else {
            return;
        };
        let refs: Vec<&Program> = programs.iter().collect();
        let got = gpu.run_records(&refs, &solver).unwrap();
        for (g, c) in got.iter().zip(&cpu) {
            assert_eq!(g.status, Status::Ok);
            let diff = common::max_rel(&g.outputs[1], &c.outputs[1]);
            assert!(diff <= 1e-9, "{diff:.1e}");
        }
    }
    // The WGSL records kernel on an adapter: in f64 within 1e-9 of the CPU's, in f32 (at rtol
    // 1e-6) within 1e-4 of the CPU's at that rtol.
    #[cfg(feature = "wgpu")]
    for (p, rtol, same) in [
        (vpop::backend::Precision::F64, 1e-10, 1e-9),
        (vpop::backend::Precision::F32, 1e-6, 1e-4),
    ] {
        let model = Arc::new(CompiledModel::new(&m));
        let mut gpu = match vpop::backend::wgpu::WgpuBackend::new(model.clone(), p) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {} {e}", p.name());
                continue;
            }
        };
        let solver = SolverOptions { rtol, ..solver };
        let refs: Vec<&Program> = programs.iter().collect();
        let got = vpop::backend::Backend::run_records(&mut gpu, &refs, &solver).unwrap();
        for (g, s) in got.iter().zip(&ds.subjects) {
            let c = simulate_records(&model, &base, &binding, s, &solver);
            assert_eq!(g.status, Status::Ok);
            let diff = common::max_rel(&g.outputs[1], &c.outputs[1]);
            println!("wgpu {} records: {diff:.1e} against the CPU", p.name());
            assert!(diff <= same, "{} {diff:.1e}", p.name());
        }
        // Suspended after every step or stopping point: the same results.
        gpu.set_dispatch_budget(Some((1, 1)));
        let suspended = vpop::backend::Backend::run_records(&mut gpu, &refs, &solver).unwrap();
        for (a, b) in suspended.iter().zip(&got) {
            assert_eq!(a.outputs, b.outputs, "{}", p.name());
        }
    }
}

/// A step in time whose argument is not a straight line in t (`sin(2 * pi * (t - 8) / 24) >
/// 0`, the light of `TIME_SWITCH_MODEL` written with a sine) is not a stopping point; with
/// `events = "locate"` it is held as a switch and its changes located, so the response keeps
/// to the tolerance against the closed form, as `mod(t - 8, 24) < 12` does as stopping
/// points. On the CPU reference, and on CUDA (emulated where there is no device) and the WGSL
/// kernels within 1e-9 of it in f64.
#[test]
fn a_step_in_time_off_a_straight_line_is_located() {
    let src = common::TIME_SWITCH_MODEL.replace(
        "if(mod(t - 8, 24) < 12, kin, 0)",
        "if(sin(2 * pi * (t - 8) / 24) > 0, kin, 0)",
    );
    assert_ne!(src, common::TIME_SWITCH_MODEL);
    let m = Model::parse("sine", &src).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    assert!(!model.programs.time_jumps.not_affine.is_empty());
    assert_eq!(model.n_switches(), 1);
    let switches = [30.0, 41.5, 12.0];
    let ts = m.param_index("tswitch").unwrap();
    let params: Vec<Vec<f64>> = m
        .defaults()
        .into_iter()
        .enumerate()
        .map(|(k, p)| {
            if k == ts {
                switches.to_vec()
            } else {
                vec![p; 3]
            }
        })
        .collect();
    let end = 71.0;
    let plan = |events: Events, rtol: f64| {
        let mut a = common::arm(
            &m,
            Method::Tsit5,
            rtol,
            &["auc", "cmax", "cmin"].map(String::from),
        );
        a.regimen = Regimen { lines: vec![] };
        a.end = end;
        a.sample_times = vec![];
        a.solver.events = events;
        a
    };
    let worst = |out: &vpop::backend::ChunkOutput| {
        let mut w = 0.0f64;
        for (i, &s) in switches.iter().enumerate() {
            let want = common::time_switch_closed_form(end, s);
            for (o, w3) in want.iter().enumerate() {
                for (mi, x) in w3.iter().enumerate() {
                    let e = (out.metrics[mi * 2 + o][i] - x).abs() / x.abs().max(1.0);
                    w = if e.is_nan() { f64::INFINITY } else { w.max(e) };
                }
            }
        }
        w
    };
    let mut cpu = CpuBackend::new(model.clone());
    for rtol in [1e-6, 1e-8] {
        let cross = common::run(&mut cpu, &plan(Events::Cross, rtol), &params);
        let located = common::run(&mut cpu, &plan(Events::Locate, rtol), &params);
        let (c, l) = (worst(&cross), worst(&located));
        println!(
            "rtol {rtol:e}: cross {c:.1e} ({} + {} steps), locate {l:.1e} ({} + {} steps)",
            cross.stats.accepted,
            cross.stats.rejected,
            located.stats.accepted,
            located.stats.rejected
        );
        assert!(l <= 20.0 * rtol, "rtol {rtol:e}: located {l:.1e}");
    }
    #[cfg(feature = "cuda")]
    {
        let Some(mut gpu) = cuda_or_emulated(&model, vpop::backend::Precision::F64) else {
            return;
        };
        let a = plan(Events::Locate, 1e-10);
        let want = common::run(&mut cpu, &a, &params);
        let got = common::run(gpu.as_mut(), &a, &params);
        let diff = common::worst_difference(&a, &got, &want);
        assert!(diff <= 1e-9, "{diff:.1e}");
    }
    // And on the WGSL kernels, where the adapter has f64.
    #[cfg(feature = "wgpu")]
    match vpop::backend::wgpu::WgpuBackend::new(model.clone(), vpop::backend::Precision::F64) {
        Err(e) => println!("SKIPPED: wgpu f64 {e}"),
        Ok(mut gpu) => {
            let a = plan(Events::Locate, 1e-10);
            let want = common::run(&mut cpu, &a, &params);
            let got = common::run(&mut gpu, &a, &params);
            let diff = common::worst_difference(&a, &got, &want);
            println!("wgpu f64 rtol 1e-10: {diff:.1e} against the CPU");
            assert!(diff <= 1e-9, "{diff:.1e}");
        }
    }
}

/// The kill model's switch driving a response that settles (`d/dt(resp) = if(cp > 2, 1, 0) -
/// 0.1 * resp`), for arms that start at steady state.
const RESPONSE_MODEL: &str = "\
param ka = 1.5
param cl = 2.8
param v = 35
state depot, central, resp
cp = central / v
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
d/dt(resp) = if(cp > 2, 1, 0) - 0.1 * resp
output conc = cp
output r = resp
output above = cp > 2
";

/// An arm that starts at steady state locates its switch in the steady-state iterations too:
/// on the CPU reference, the response and the time above 2 keep to the tolerance (rtol 1e-6
/// against rtol 1e-10, both located); the GPU kernels (CUDA, emulated where there is no
/// device; WGSL on an adapter, also suspended after every step) agree with the CPU as for
/// an arm without it.
#[test]
fn a_steady_state_start_locates() {
    let m = Model::parse("response", RESPONSE_MODEL).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let plan = |rtol: f64| {
        let mut a = common::arm(
            &m,
            Method::Tsit5,
            rtol,
            &["cmin", "auc", "time_above(2)"].map(String::from),
        );
        let mut line = DoseLine::boluses(0, DOSE, EVERY, COUNT);
        line.steady_state = true;
        a.regimen = Regimen { lines: vec![line] };
        a.end = END;
        a.solver.atol = 1e-12;
        a.solver.events = Events::Locate;
        a
    };
    let mut cpu = CpuBackend::new(model.clone());
    let reference = common::run(&mut cpu, &plan(1e-10), &params());
    let loose = common::run(&mut cpu, &plan(1e-6), &params());
    assert!(
        reference.status.iter().all(|s| *s == 0),
        "{:?}",
        reference.status
    );
    let diff = common::worst_difference(&plan(1e-6), &loose, &reference);
    println!("CPU rtol 1e-6 against rtol 1e-10: {diff:.1e}");
    assert!(diff <= 2e-5, "{diff:.1e}");
    #[allow(unused_mut)]
    let mut backends: Vec<(String, Box<dyn vpop::backend::Backend>, f64, f64)> = Vec::new();
    #[cfg(feature = "cuda")]
    for (p, rtol, same) in [
        (vpop::backend::Precision::F64, 1e-10, 1e-9),
        (vpop::backend::Precision::F32, 1e-6, 1e-4),
    ] {
        if let Some(b) = cuda_or_emulated(&model, p) {
            backends.push((format!("cuda {}", p.name()), b, rtol, same));
        }
    }
    #[cfg(feature = "wgpu")]
    for (p, rtol, same) in [
        (vpop::backend::Precision::F64, 1e-10, 1e-9),
        (vpop::backend::Precision::F32, 1e-6, 1e-4),
    ] {
        match vpop::backend::wgpu::WgpuBackend::new(model.clone(), p) {
            Ok(mut b) => {
                // Every dispatch suspends the subjects after a step: the modes go through the
                // carry buffers beside the steady-state iteration's.
                let a = plan(rtol);
                let whole = common::run(&mut b, &a, &params());
                b.set_dispatch_budget(Some((1, 1)));
                let suspended = common::run(&mut b, &a, &params());
                assert_eq!(whole.metrics, suspended.metrics, "wgpu {}", p.name());
                backends.push((format!("wgpu {}", p.name()), Box::new(b), rtol, same));
            }
            Err(e) => println!("SKIPPED: wgpu {} {e}", p.name()),
        }
    }
    for (name, mut b, rtol, same) in backends {
        let a = plan(rtol);
        let want = common::run(&mut cpu, &a, &params());
        let got = common::run(b.as_mut(), &a, &params());
        let diff = common::worst_difference(&a, &got, &want);
        println!("{name} rtol {rtol:e}: {diff:.1e} against the CPU");
        assert!(
            diff <= same && got.status.iter().all(|s| *s == 0),
            "{name}: {diff:.1e} {:?}",
            got.status
        );
    }
}

/// The CUDA backend on a device, else the host emulation of its kernels; `None` (with a
/// `SKIPPED` line) where there is neither.
#[cfg(feature = "cuda")]
fn cuda_or_emulated(
    model: &Arc<CompiledModel>,
    p: vpop::backend::Precision,
) -> Option<Box<dyn vpop::backend::Backend>> {
    use vpop::backend::cuda::{CudaBackend, EmulatedCuda};
    if let Ok(b) = CudaBackend::new(model.clone(), p) {
        return Some(Box::new(b));
    }
    match EmulatedCuda::new(model.clone(), p) {
        Ok(b) => Some(Box::new(b)),
        Err(e) => {
            println!("SKIPPED: no CUDA device and no host emulation ({e})");
            None
        }
    }
}

/// Two switches of one state a hundredth apart (`c > 2`, `c > 2.01`, the first declared first):
/// a falling concentration crosses the second before the first, so that a step holding both
/// changes narrows first on the first switch's argument and then finds the second changing
/// before it. The emulated f64 CUDA kernel gives the CPU reference's metrics bit for bit, and
/// the WGSL kernels agree within 1e-9 (f64) and 1e-4 (f32).
#[test]
fn a_switch_changing_before_the_one_narrowed_on_takes_over() {
    const TWO: &str = "
param k = 0.3
param th1 = 2
param th2 = 2.01
state c
d/dt(c) = -k * c - 0.05 * ((c > th1) + (c > th2)) * c
output cp = c
output high = (c > th1) + (c > th2)
";
    let m = Model::parse("two", TWO).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    assert_eq!(model.n_switches(), 2);
    let metric =
        |o: usize, name: &str| MetricSpec::new(o, &m.outputs[o].name, Metric::parse(name).unwrap());
    let a = ArmPlan {
        name: "a".into(),
        regimen: Regimen {
            lines: vec![DoseLine::boluses(0, 10.0, 24.0, 4)],
        },
        metrics: vec![
            metric(0, "auc"),
            metric(0, "cmin"),
            metric(1, "auc"),
            metric(0, "at(30)"),
        ],
        end: 96.0,
        sample_times: Vec::new(),
        solver: SolverOptions {
            method: Method::Tsit5,
            rtol: 1e-10,
            atol: 1e-12,
            events: Events::Locate,
            ..Default::default()
        },
        occasions: Vec::new(),
    };
    let params: Vec<Vec<f64>> = vec![vec![0.1, 0.2, 0.3, 0.5], vec![2.0; 4], vec![2.01; 4]];
    let want = common::run(&mut CpuBackend::new(model.clone()), &a, &params);
    assert!(want.status.iter().all(|s| *s == 0));
    // The time above both thresholds: (ln(10/2.01)) / (k + 0.1) of the first dose's decline,
    // as a check that the located changes are those of the model.
    let k = 0.1;
    let first = (10.0f64 / 2.01).ln() / (k + 0.1);
    assert!(
        want.metrics[2][0] > 2.0 * first * 0.999,
        "{}",
        want.metrics[2][0]
    );
    #[cfg(feature = "cuda")]
    {
        use vpop::backend::cuda::EmulatedCuda;
        use vpop::backend::Precision;
        match EmulatedCuda::new(model.clone(), Precision::F64) {
            Ok(mut b) => {
                let got = common::run(&mut b, &a, &params);
                common::assert_same_bits(&got, &want, "emulated CUDA f64");
            }
            Err(e) => println!("SKIPPED: {e}"),
        }
    }
    #[cfg(feature = "wgpu")]
    {
        use vpop::backend::wgpu::WgpuBackend;
        use vpop::backend::Precision;
        for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-9), (Precision::F32, 1e-6, 1e-4)] {
            let mut a = a.clone();
            a.solver.rtol = rtol;
            a.solver.atol = rtol * 1e-2;
            let want = common::run(&mut CpuBackend::new(model.clone()), &a, &params);
            match WgpuBackend::new(model.clone(), p) {
                Ok(mut b) => {
                    let got = common::run(&mut b, &a, &params);
                    let diff = common::worst_difference(&a, &got, &want);
                    println!("wgpu {p:?}: {diff:.1e} against the CPU");
                    assert!(diff <= tol, "wgpu {p:?}: {diff}");
                    assert!(got.status.iter().all(|s| *s == 0));
                }
                Err(e) => println!("SKIPPED: {e}"),
            }
        }
    }
}
