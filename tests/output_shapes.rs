//! Metrics of outputs whose shape inside a step the states alone do not give, on every backend
//! against closed forms:
//! - outputs that depend on time directly (`a·t`, `1 + sin(t)`, `|t − 10|`): their peaks,
//!   troughs and threshold crossings come from their own slope, ∇g·f + ∂g/∂t, and the step
//!   sizes follow them (`MetricSpec::follow`), so a crossing or an extremum is not stepped over;
//! - outputs with plateaus (`c > 2`, `min(c, 2)`, `floor(c)`): the time above a threshold equal
//!   to a plateau's level counts the plateau from its start, and Tmax is the first time the
//!   maximum is reached, not the end of the step that reached it.
//!
//! The CPU f64 reference with every adaptive method; the CUDA kernels emulated on the host (and
//! on a device where there is one) and the WGSL kernels (lavapipe in CI), in f64 and f32.

#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_imports, dead_code)
)]

use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::{ArmPlan, Backend, Precision};
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{quadrature_outputs, Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Method, SolverOptions};

mod common;

/// A bolus into `a` at 0, eliminated at rate k; outputs that read t.
const TIMED: &str = "\
param k = 0.1
state a
d/dt(a) = -k * a
output y = a * t
output e = 1 + sin(t)
output tri = abs(t - 10)
";

/// One-compartment oral absorption; outputs with plateaus.
const PLATEAUS: &str = "\
param ka = 1
param cl = 2
param v = 10
state depot, central
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
c = central / v
output cp = c
output ind = c > 2
output cap = min(c, 2)
output fl = floor(c)
";

const END: f64 = 24.0;

fn arm(
    model: &Model,
    metrics: &[(&str, &str)],
    dose: DoseLine,
    p: Precision,
    m: Method,
) -> ArmPlan {
    let rtol = match p {
        Precision::F64 => 1e-10,
        _ => 1e-6,
    };
    ArmPlan {
        name: "shapes".into(),
        regimen: Regimen { lines: vec![dose] },
        metrics: metrics
            .iter()
            .map(|(o, x)| {
                let k = model.output_index(o).unwrap();
                MetricSpec::of_model(k, model, Metric::parse(x).unwrap())
            })
            .collect(),
        end: END,
        sample_times: Vec::new(),
        solver: SolverOptions {
            method: m,
            rtol,
            atol: rtol * 1e-3,
            ..Default::default()
        },
        occasions: Vec::new(),
    }
}

const TIMED_METRICS: [(&str, &str); 7] = [
    ("y", "cmax"),
    ("y", "tmax"),
    ("e", "time_above(1.5)"),
    ("e", "cmax"),
    ("e", "tmax"),
    ("e", "cmin"),
    ("tri", "cmin"),
];

/// Per subject (k), the timed model's metrics in closed form: y = D·t·e^(−kt) peaks at 1/k
/// (D = 1); 1 + sin(t) is at least 1.5 on [π/6, 5π/6] + 2πj, peaks at π/2 and reaches 0.
fn timed_want(k: f64) -> Vec<f64> {
    use std::f64::consts::PI;
    let above = (0..4)
        .map(|j| {
            let (lo, hi) = (
                PI / 6.0 + 2.0 * PI * j as f64,
                5.0 * PI / 6.0 + 2.0 * PI * j as f64,
            );
            (hi.min(END) - lo.min(END)).max(0.0)
        })
        .sum();
    vec![
        1.0 / (k * std::f64::consts::E),
        1.0 / k,
        above,
        2.0,
        PI / 2.0,
        0.0,
        0.0,
    ]
}

const PLATEAU_METRICS: [(&str, &str); 7] = [
    ("cp", "time_above(2)"),
    ("ind", "time_above(1)"),
    ("ind", "tmax"),
    ("cap", "tmax"),
    ("cap", "time_above(2)"),
    ("fl", "time_above(3)"),
    ("fl", "tmax"),
];

/// Per subject (ka, cl, v), the plateau model's metrics from the closed form of c (100 mg at
/// 0): the times c reaches 2 and 3 and leaves them (bisection), and the first time c reaches
/// floor(Cmax).
fn plateau_want(ka: f64, cl: f64, v: f64) -> Vec<f64> {
    let ke = cl / v;
    let c = |t: f64| 100.0 / v * ka / (ka - ke) * ((-ke * t).exp() - (-ka * t).exp());
    let tpeak = (ka / ke).ln() / (ka - ke);
    let span = |level: f64| {
        let up = common::crossing(|t| c(t) - level, 0.0, tpeak, false);
        let down = common::crossing(|t| c(t) - level, tpeak, END, true);
        (up, down)
    };
    let (up2, down2) = span(2.0);
    let (up3, down3) = span(3.0);
    let (top, _) = span(c(tpeak).floor());
    vec![
        down2 - up2,
        down2 - up2,
        up2,
        up2,
        down2 - up2,
        down3 - up3,
        top,
    ]
}

/// Subjects: parameters by column, and their closed-form metrics.
type Case = (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>);

fn cases(p: Precision, m: Method) -> [(CompiledModel, Case); 2] {
    let timed = Model::parse("timed.vpm", TIMED).unwrap();
    let ks = [0.1, 0.2, 0.35];
    let timed_case = (
        arm(
            &timed,
            &TIMED_METRICS,
            DoseLine::boluses(0, 1.0, 24.0, 1),
            p,
            m,
        ),
        vec![ks.to_vec()],
        ks.iter().map(|&k| timed_want(k)).collect(),
    );
    let plateaus = Model::parse("plateaus.vpm", PLATEAUS).unwrap();
    let subjects = [[1.0, 2.0, 10.0], [0.7, 1.5, 12.0], [2.0, 3.0, 9.0]];
    let plateau_case = (
        arm(
            &plateaus,
            &PLATEAU_METRICS,
            DoseLine::boluses(0, 100.0, 24.0, 1),
            p,
            m,
        ),
        (0..3)
            .map(|j| subjects.iter().map(|s| s[j]).collect())
            .collect(),
        subjects
            .iter()
            .map(|s| plateau_want(s[0], s[1], s[2]))
            .collect(),
    );
    [
        (CompiledModel::new(&timed), timed_case),
        (CompiledModel::new(&plateaus), plateau_case),
    ]
}

/// Every case on the backends `make` builds: each metric within `tol` of its closed form
/// (relative above 1, absolute below). Returns the worst error, or None where `make` could not
/// build a backend.
fn check(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    p: Precision,
    method: Method,
    tol: f64,
) -> Option<f64> {
    let mut worst = 0.0f64;
    for (model, (arm, params, want)) in cases(p, method) {
        let mut b = make(Arc::new(model))?;
        let out = common::run(b.as_mut(), &arm, &params);
        assert!(out.status.iter().all(|&s| s == 0), "{:?}", out.status);
        for (i, w) in want.iter().enumerate() {
            for (j, x) in w.iter().enumerate() {
                let got = out.metrics[j][i];
                let e = (got - x).abs() / x.abs().max(1.0);
                assert!(
                    e <= tol,
                    "{method:?} {p:?}: subject {i}, {}: {got} against {x} ({e:.2e} > {tol:e})",
                    arm.metrics[j].column
                );
                worst = worst.max(e);
            }
        }
    }
    Some(worst)
}

#[test]
fn outputs_that_read_time_are_followed_by_the_steps() {
    let timed = Model::parse("timed.vpm", TIMED).unwrap();
    let a = arm(
        &timed,
        &TIMED_METRICS,
        DoseLine::boluses(0, 1.0, 24.0, 1),
        Precision::F64,
        Method::Tsit5,
    );
    // Every timed output has a quadrature state; an area metric adds none of its own.
    assert_eq!(quadrature_outputs(&a.metrics), [0, 1, 2]);
    assert!(a.metrics.iter().all(|s| s.follow));
    let plateaus = Model::parse("plateaus.vpm", PLATEAUS).unwrap();
    let b = arm(
        &plateaus,
        &PLATEAU_METRICS,
        DoseLine::boluses(0, 100.0, 24.0, 1),
        Precision::F64,
        Method::Tsit5,
    );
    assert!(quadrature_outputs(&b.metrics).is_empty());
}

#[test]
fn cpu_reference_matches_the_closed_forms() {
    for method in [
        Method::Dopri5,
        Method::Tsit5,
        Method::Rosenbrock23,
        Method::Rodas4,
    ] {
        let mut make =
            |m: Arc<CompiledModel>| Some(Box::new(CpuBackend::new(m)) as Box<dyn Backend>);
        let tol = if method == Method::Rosenbrock23 {
            1e-5
        } else {
            1e-7
        };
        let e = check(&mut make, Precision::F64, method, tol).unwrap();
        println!("cpu {method:?}: worst {e:.2e}");
    }
}

/// f64 at rtol 1e-10 within 1e-7; f32 at rtol 1e-6 within 1e-3 (Tmax of a smooth peak is known
/// to about the square root of the values' precision).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_matches_the_closed_forms<B: Backend + 'static, E: std::fmt::Display>(
    name: &str,
    new: impl Fn(Arc<CompiledModel>, Precision) -> Result<B, E>,
) {
    for (p, tol) in [(Precision::F64, 1e-7), (Precision::F32, 1e-3)] {
        let mut backend = common::or_skipped(&new);
        for method in [Method::Tsit5, Method::Rodas4] {
            let mut make = |m: Arc<CompiledModel>| backend(m, p);
            if let Some(e) = check(&mut make, p, method, tol) {
                println!("{name} {p:?} {method:?}: worst {e:.2e}");
            }
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_kernels_match_the_closed_forms() {
    use vpop::backend::cuda::EmulatedCuda;
    gpu_matches_the_closed_forms("cuda-emulated", EmulatedCuda::new);
}

/// On a CUDA device (SKIPPED without one).
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_match_the_closed_forms() {
    use vpop::backend::cuda::CudaBackend;
    gpu_matches_the_closed_forms("cuda", CudaBackend::new);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_kernels_match_the_closed_forms() {
    use vpop::backend::wgpu::WgpuBackend;
    gpu_matches_the_closed_forms("wgpu", WgpuBackend::new);
}

/// Profiles in f16 hold values up to 65 504: a finite value beyond that would be written as
/// infinite, which is neither the value nor the null of a value that is not finite. The run
/// stops with an error that names the column, subject and time and says what to do, and the
/// same trial in f32 writes the value.
#[test]
fn f16_profiles_refuse_finite_values_beyond_its_range() {
    let dir = std::env::temp_dir().join(format!("vpop-f16-range-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // 5e6 / 50 · exp(−0.1 · t): 1e5 at 0, 90 484 at 1, 36 788 at 10.
    let spec = |precision: &str| {
        format!(
            "[trial]\nname = \"f16 range\"\nsubjects = 2\nseed = 1\n\
             [model]\nlibrary = \"one_cmt_iv\"\n\
             [[arm]]\nname = \"big\"\ndose = {{ amount = 5e6, into = \"central\" }}\n\
             [simulation]\nend = 100\nbackend = \"cpu\"\n\
             [output]\ndir = \"{}\"\nmetrics = [\"cmax\"]\n\
             profile = {{ times = [10, 1, 50], precision = \"{precision}\" }}\n",
            dir.join(precision).display()
        )
    };
    let run = |precision: &str| {
        let path = dir.join(format!("{precision}.toml"));
        std::fs::write(&path, spec(precision)).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .arg("run")
            .arg(&path)
            .arg("--quiet")
            .output()
            .unwrap()
    };
    let f16 = run("f16");
    let err = String::from_utf8_lossy(&f16.stderr);
    assert!(!f16.status.success(), "{err}");
    assert!(
        err.contains(
            "cp_profile of subject 0 in arm 'big' is 9.048374e4 at t = 1 (sampling time 1 of 3)"
        ) && err.contains("65504")
            && err.contains("precision = \"f32\""),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Invalid argument error"), "{err}");
    let f32 = run("f32");
    assert!(
        f32.status.success(),
        "{}",
        String::from_utf8_lossy(&f32.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
