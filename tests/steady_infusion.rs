//! Steady states reached through a slow mode: the indirect-response model idr1 with a response
//! turning over in 29 or 2 900 days, under a steady-state infusion (SS = 1, AMT = 0, RATE > 0,
//! II = 0) against the closed form of its steady state, on the CPU reference, the WGSL kernels
//! (lavapipe) and the CUDA kernels (emulated on the host); and under boluses every 12 h at
//! steady state (SS = 1, II = 12) on the same backends, against the periodic steady state of
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
/// long before it shows), and a large one on a response 100 times slower at a loose tolerance
/// (with Tsit5 there, a jump at a span of 128 h amplified the integration's own error by 777:
/// 45 tolerance units off, before the span was lengthened instead).
const CASES: [(f64, f64, Method, f64); 5] = [
    (1e-3, 1e-4, Method::Tsit5, 1e-6),
    (1e-3, 1e-4, Method::Rodas4, 1e-6),
    (1e-5, 0.9, Method::Rodas4, 1e-4),
    (1e-5, 0.9, Method::Tsit5, 1e-4),
    (1e-5, 0.9, Method::Rodas4, 1e-6),
];

/// (kout, imax, method, rtol) of boluses of 100 every 12 h at steady state: a response whose
/// half-life is 580 or 5 800 dosing intervals, at loose to tight tolerances (the iterations
/// had stopped 11 000 tolerance units short at rtol 1e-4, 16 at 1e-8 and 1 100 at 1e-10).
const BOLUS_CASES: [(f64, f64, Method, f64); 7] = [
    (1e-4, 0.9, Method::Rodas4, 1e-4),
    (1e-5, 0.9, Method::Rodas4, 1e-4),
    (1e-5, 0.9, Method::Tsit5, 1e-4),
    (1e-4, 0.9, Method::Rodas4, 1e-6),
    (1e-5, 0.9, Method::Rodas4, 1e-6),
    (1e-5, 0.9, Method::Rodas4, 1e-8),
    (1e-5, 0.9, Method::Rodas4, 1e-10),
];

/// The error allowed, in tolerance units: 2, and at rtol 1e-10 (where about a thousandth of a
/// tolerance unit of the integrator's own error over an interval is amplified by 1/(1 − ρ) =
/// 8 300 in the steady state of the slowest response) 100. Measured for the slowest response's
/// boluses with Rodas4: CPU 0.56, emulated CUDA 8.1, lavapipe 51.7 (5e-9 relative; the GPU
/// records drivers iterate on their own step sequence, which Rodas4's dense-output check
/// changed).
fn allowed(c: &Case) -> f64 {
    if c.solver.rtol <= 1e-10 {
        100.0
    } else {
        2.0
    }
}

struct Case {
    name: String,
    model: Arc<CompiledModel>,
    ds: Dataset,
    binding: RecordBinding,
    base: Vec<f64>,
    solver: SolverOptions,
    want: f64,
}

/// The infusion cases, then the bolus cases: each a dataset of a steady-state dose at 0 and an
/// observation (at 0 under the infusion, at 6 h between boluses), and the response wanted.
fn cases(dir: &std::path::Path) -> Vec<Case> {
    let infusions = CASES.iter().map(|&spec| (spec, true));
    let boluses = BOLUS_CASES.iter().map(|&spec| (spec, false));
    infusions
        .chain(boluses)
        .enumerate()
        .map(|(i, (spec, infusion))| case(dir, i, spec, infusion))
        .collect()
}

fn case(
    dir: &std::path::Path,
    i: usize,
    (kout, imax, method, rtol): (f64, f64, Method, f64),
    infusion: bool,
) -> Case {
    let lm = library::get("idr1").unwrap();
    let ir = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&ir));
    let csv = dir.join(format!("ss-{i}.csv"));
    let records = if infusion {
        format!(
            "1,0,1,0,{RATE},1,1,0,{kout},{imax},1\n\
             1,0,0,0,0,1,0,0,{kout},{imax},0\n"
        )
    } else {
        format!(
            "1,0,1,100,0,1,1,12,{kout},{imax},1\n\
             1,6,0,0,0,1,0,0,{kout},{imax},0\n"
        )
    };
    std::fs::write(
        &csv,
        format!("ID,TIME,EVID,AMT,RATE,CMT,SS,II,KOUT,IMAX,MDV\n{records}"),
    )
    .unwrap();
    let ds = Dataset::load(&csv).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let get = |name: &str| base[ir.params.iter().position(|p| p.name == name).unwrap()];
    let (cl, kin, ic50) = (get("cl"), get("kin"), get("ic50"));
    let want = if infusion {
        // At steady state the concentration is RATE / CL and production balances loss.
        let css = RATE / cl;
        kin / kout * (1.0 - imax * css / (ic50 + css))
    } else {
        periodic_response(&get, kout, imax, 100.0, 12.0)
    };
    let solver = SolverOptions {
        method,
        rtol,
        atol: rtol * 1e-3,
        ..Default::default()
    };
    let what = if infusion { "infusion" } else { "boluses" };
    Case {
        name: format!("{what}, kout {kout}, imax {imax}, {method:?}, rtol {rtol}"),
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
fn steady_states_reach_a_slow_responses_steady_state() {
    let dir = temp_dir("cpu");
    for c in cases(&dir) {
        let out = simulate_records(&c.model, &c.base, &c.binding, &c.ds.subjects[0], &c.solver);
        assert_eq!(out.status, Status::Ok, "{}", c.name);
        let err = error(&c, out.outputs[1][1]);
        println!(
            "{}: response {} vs {}: {err:.3} tolerances, {} steps",
            c.name, out.outputs[1][1], c.want, out.stats.accepted
        );
        // A steady state found to the tolerance (the infusions stopped 50 and 15 000
        // tolerances short, the boluses up to 11 000).
        assert!(
            err <= allowed(&c),
            "{}: {err} tolerances from the steady state",
            c.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cases in f64 on a GPU backend: as close to the reference as on the CPU.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_agrees(tag: &str, make: &dyn Fn(Arc<CompiledModel>) -> Option<Box<dyn Backend>>) {
    let dir = temp_dir(tag);
    for c in cases(&dir) {
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
        assert_eq!(out[0].status, Status::Ok, "{} {}", b.info().name, c.name);
        let err = error(&c, out[0].outputs[1][1]);
        println!("{} {}: {err:.3} tolerances", b.info().name, c.name);
        assert!(
            err <= allowed(&c),
            "{} {}: {err} tolerances",
            b.info().name,
            c.name
        );
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
