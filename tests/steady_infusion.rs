//! Steady states reached through a slow mode: the indirect-response model idr1 with a response
//! turning over in 29 or 2 900 days, under a steady-state infusion (SS = 1, AMT = 0, RATE > 0,
//! II = 0) against the closed form of its steady state, on the CPU reference, the WGSL kernels
//! (lavapipe) and the CUDA kernels (emulated on the host); and under boluses every 12 h at
//! steady state (SS = 1, II = 12) on the CPU reference, against the periodic steady state of
//! the response's linear equation computed by quadrature.

// Without a GPU backend compiled in, only the CPU test remains.
#![cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_imports))]

use std::path::PathBuf;
use std::sync::Arc;

use vpop::backend::records::{record_program, simulate_records, Program, RecordBinding};
use vpop::backend::{Backend, Precision};
use vpop::dosing::nonmem::Dataset;
use vpop::model::{library, CompiledModel, Model};
use vpop::solver::{Method, SolverOptions, Status};

const RATE: f64 = 10.0;

/// (kout, imax, method, rtol): a small drug effect on a slow response (the fast kinetics settle
/// long before it shows), and a large one on a response 100 times slower at a loose tolerance.
const CASES: [(f64, f64, Method, f64); 4] = [
    (1e-3, 1e-4, Method::Tsit5, 1e-6),
    (1e-3, 1e-4, Method::Rodas4, 1e-6),
    (1e-5, 0.9, Method::Rodas4, 1e-4),
    (1e-5, 0.9, Method::Rodas4, 1e-6),
];

struct Case {
    model: Arc<CompiledModel>,
    ds: Dataset,
    binding: RecordBinding,
    base: Vec<f64>,
    solver: SolverOptions,
    want: f64,
}

fn case(dir: &std::path::Path, (kout, imax, method, rtol): (f64, f64, Method, f64)) -> Case {
    let lm = library::get("idr1").unwrap();
    let ir = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&ir));
    let csv = dir.join(format!("ss-{kout}-{imax}.csv"));
    std::fs::write(
        &csv,
        format!(
            "ID,TIME,EVID,AMT,RATE,CMT,SS,II,KOUT,IMAX,MDV\n\
             1,0,1,0,{RATE},1,1,0,{kout},{imax},1\n\
             1,0,0,0,0,1,0,0,{kout},{imax},0\n"
        ),
    )
    .unwrap();
    let ds = Dataset::load(&csv).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let get = |name: &str| base[ir.params.iter().position(|p| p.name == name).unwrap()];
    let (cl, kin, ic50) = (get("cl"), get("kin"), get("ic50"));
    // At steady state the concentration is RATE / CL and production balances loss.
    let css = RATE / cl;
    let want = kin / kout * (1.0 - imax * css / (ic50 + css));
    let solver = SolverOptions {
        method,
        rtol,
        atol: rtol * 1e-3,
        ..Default::default()
    };
    Case {
        model,
        ds,
        binding,
        base,
        solver,
        want,
    }
}

/// The response's error in units of the tolerance.
fn error(c: &Case, got: f64) -> f64 {
    (got - c.want).abs() / (c.solver.atol + c.solver.rtol * c.want.abs())
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vpop-ss-infusion-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_steady_state_infusion_reaches_a_slow_responses_steady_state() {
    let dir = temp_dir("cpu");
    for spec in CASES {
        let c = case(&dir, spec);
        let out = simulate_records(&c.model, &c.base, &c.binding, &c.ds.subjects[0], &c.solver);
        assert_eq!(out.status, Status::Ok, "{spec:?}");
        let err = error(&c, out.outputs[1][1]);
        println!(
            "{spec:?}: response {} vs {}: {err:.3} tolerances",
            out.outputs[1][1], c.want
        );
        // A steady state found to the tolerance (it stopped 50 and 15 000 tolerances short).
        assert!(
            err <= 2.0,
            "{spec:?}: {err} tolerances from the steady state"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cases in f64 on a GPU backend: within 2 tolerances of the closed form, as on the CPU.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_agrees(tag: &str, make: &dyn Fn(Arc<CompiledModel>) -> Option<Box<dyn Backend>>) {
    let dir = temp_dir(tag);
    for spec in CASES {
        let c = case(&dir, spec);
        let Some(mut b) = make(c.model.clone()) else {
            return;
        };
        let program: Program = record_program(
            &c.model,
            &c.base,
            &c.binding,
            &c.ds.subjects[0],
            &mut |_, _| {},
        );
        let out = b.run_records(&[&program], &c.solver).unwrap();
        assert_eq!(out[0].status, Status::Ok, "{} {spec:?}", b.info().name);
        let err = error(&c, out[0].outputs[1][1]);
        println!("{} {spec:?}: {err:.3} tolerances", b.info().name);
        assert!(err <= 2.0, "{} {spec:?}: {err} tolerances", b.info().name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend, or `None` (SKIPPED) where it cannot run here.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn available<B: Backend + 'static, E: std::fmt::Display>(
    made: Result<B, E>,
) -> Option<Box<dyn Backend>> {
    made.map_err(|e| println!("SKIPPED: {e}"))
        .ok()
        .map(|b| Box::new(b) as Box<dyn Backend>)
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_f64_reaches_a_slow_responses_steady_state() {
    gpu_agrees("wgpu", &|m| {
        available(vpop::backend::wgpu::WgpuBackend::new(m, Precision::F64))
    });
}

#[test]
#[cfg(feature = "cuda")]
fn emulated_cuda_f64_reaches_a_slow_responses_steady_state() {
    gpu_agrees("cuda", &|m| {
        available(vpop::backend::cuda::EmulatedCuda::new(m, Precision::F64))
    });
}

/// The response of idr1 6 h after a bolus of `dose` at steady state every `ii` hours: the
/// concentration is the one-compartment superposition, and the response's equation is linear,
/// dr/dt = g(t) − kout·r with g(t) = kin·(1 − imax·c/(ic50 + c)), so its periodic solution is
/// r(0) = ∫₀^ii e^(−kout·(ii − s)) g(s) ds / (1 − e^(−kout·ii)), integrated here by Simpson's
/// rule on 200 000 panels.
fn periodic_response(p: &dyn Fn(&str) -> f64, kout: f64, imax: f64, dose: f64, ii: f64) -> f64 {
    let (k, v, kin, ic50) = (p("cl") / p("v"), p("v"), p("kin"), p("ic50"));
    let c = |s: f64| dose / v * (-k * s).exp() / (1.0 - (-k * ii).exp());
    let g = |s: f64| kin * (1.0 - imax * c(s) / (ic50 + c(s)));
    let simpson = |a: f64, b: f64, f: &dyn Fn(f64) -> f64| {
        let n = 200_000;
        let h = (b - a) / n as f64;
        let inner: f64 = (1..n)
            .map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
            .sum();
        (f(a) + f(b) + inner) * h / 3.0
    };
    let r0 = simpson(0.0, ii, &|s| (-kout * (ii - s)).exp() * g(s)) / (1.0 - (-kout * ii).exp());
    (-kout * 6.0).exp() * r0 + simpson(0.0, 6.0, &|s| (-kout * (6.0 - s)).exp() * g(s))
}

/// Boluses at steady state with a response whose half-life is 580 and 5 800 dosing intervals:
/// the ratio of its changes from one interval to the next is 0.9988 or 0.99988, which the
/// iterations follow by extrapolation (they had stopped 90 000 tolerance units short).
#[test]
fn boluses_at_steady_state_reach_a_slow_responses_steady_state() {
    let dir = temp_dir("bolus");
    let lm = library::get("idr1").unwrap();
    let ir = Model::parse(lm.name, lm.source).unwrap();
    let model = CompiledModel::new(&ir);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let get = |name: &str| base[ir.params.iter().position(|p| p.name == name).unwrap()];
    for kout in [1e-4, 1e-5] {
        let imax = 0.9;
        let csv = dir.join(format!("bolus-{kout}.csv"));
        std::fs::write(
            &csv,
            format!(
                "ID,TIME,EVID,AMT,CMT,SS,II,KOUT,IMAX,MDV\n\
                 1,0,1,100,1,1,12,{kout},{imax},1\n\
                 1,6,0,0,1,0,0,{kout},{imax},0\n"
            ),
        )
        .unwrap();
        let ds = Dataset::load(&csv).unwrap();
        let binding = RecordBinding::new(&ir, &ds.covariates);
        let want = periodic_response(&get, kout, imax, 100.0, 12.0);
        let solver = SolverOptions {
            method: Method::Rodas4,
            rtol: 1e-6,
            atol: 1e-9,
            ..Default::default()
        };
        let out = simulate_records(&model, &base, &binding, &ds.subjects[0], &solver);
        assert_eq!(out.status, Status::Ok, "kout {kout}");
        let got = out.outputs[1][1];
        let err = (got - want).abs() / (solver.atol + solver.rtol * want.abs());
        println!(
            "bolus kout {kout}: response {got} vs {want}: {err:.3} tolerances, {} steps",
            out.stats.accepted
        );
        assert!(err <= 2.0, "kout {kout}: {got} vs {want}: {err} tolerances");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
