//! Stopping points late in time, where f32 resolves time coarsely: at 100 000 h an f32 ulp is
//! 0.0078 h.
//! - A step is what t moves by: where t + h rounds, the states advance by the rounded step. They
//!   once advanced by h, so that the states drifted from the time by up to half an ulp a step:
//!   a few percent of the value after a quarter hour at k = 3 per hour.
//! - The stretch that takes a step ending near a stopping point to it (two ulps of t) is wide
//!   next to the step that a fast rate needs there. A step stretched so and rejected must
//!   shrink: the kernels once proposed a step that the stretch took back to the rejected one,
//!   and looped (max_steps on CUDA, a cut loop on wgpu). Where no step the tolerance allows
//!   moves t, the subject fails as `step_too_small`.
//!
//! Every backend completes; the values are the closed form's (docs/gpu.md, "Precision").

#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_imports, dead_code)
)]

use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::{ArmPlan, Backend, Precision};
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Method, SolverOptions};

mod common;

const MODEL: &str = "\
param k = 2
state a
d/dt(a) = -k * a
output c = a
";

const T0: f64 = 100_000.0;

/// Subjects' elimination rates, 0.3 to 30 per hour: up to 3 per hour the steps that f32 time
/// allows at 1e5 h are short enough for rtol 1e-6; above, some are not, and their steps near
/// a stopping point are rejected within the stretch.
fn rates() -> Vec<f64> {
    (0..96)
        .map(|i| 0.3 * (30.0f64 / 0.3).powf(i as f64 / 95.0))
        .collect()
}

/// Rates up to which every subject succeeds in f32.
const F32_RATES_OK: f64 = 3.0;

/// 100 at T0 and at T0 + 0.25; per subject, the value at T0 + 0.25 (before its dose), T0 + 0.5
/// and T0 + 1.
fn case(p: Precision) -> (ArmPlan, Vec<Vec<f64>>) {
    let model = Model::parse("late.vpm", MODEL).unwrap();
    let mut dose = DoseLine::boluses(0, 100.0, 0.25, 2);
    dose.start = T0;
    let times = [T0 + 0.25, T0 + 0.5, T0 + 1.0];
    let rtol = if p == Precision::F64 { 1e-10 } else { 1e-6 };
    let arm = ArmPlan {
        name: "late".into(),
        regimen: Regimen { lines: vec![dose] },
        metrics: times
            .iter()
            .map(|t| MetricSpec::of_model(0, &model, Metric::parse(&format!("at({t})")).unwrap()))
            .collect(),
        end: T0 + 1.0,
        sample_times: Vec::new(),
        solver: SolverOptions {
            method: Method::Tsit5,
            rtol,
            atol: rtol * 1e-3,
            ..Default::default()
        },
        occasions: Vec::new(),
    };
    let exact = |k: f64, t: f64| {
        let mut c = 100.0 * (-k * (t - T0)).exp();
        if t > T0 + 0.25 {
            c += 100.0 * (-k * (t - T0 - 0.25)).exp();
        }
        c
    };
    let want = rates()
        .into_iter()
        .map(|k| times.iter().map(|&t| exact(k, t)).collect())
        .collect();
    (arm, want)
}

/// Every subject finishes: it succeeds, or, where the step the tolerance needs is shorter than
/// the two ulps of t that a step must move t by (0.024 h in f32), it fails as `step_too_small`
/// (never `max_steps` or a cut loop). Every subject whose rate is at most `must_ok` succeeds,
/// and the values of those that succeed are within `tol` of the closed form (relative, or of
/// 1e-4 of a dose where less is left).
fn check(b: &mut dyn Backend, p: Precision, tol: f64, must_ok: f64) -> (f64, usize) {
    let (arm, want) = case(p);
    let out = common::run(b, &arm, &[rates()]);
    let ok = out.status.iter().filter(|&&s| s == 0).count();
    assert!(
        out.status
            .iter()
            .zip(rates())
            .all(|(&s, k)| s == 0 || (s == 2 && k > must_ok)),
        "{p:?}: {:?}",
        out.status
    );
    let mut worst = 0.0f64;
    for (i, w) in want.iter().enumerate() {
        if out.status[i] != 0 {
            continue;
        }
        for (j, x) in w.iter().enumerate() {
            let got = out.metrics[j][i];
            // Relative, down to 1e-4 of a dose (the fastest rates leave 1e-8 of it).
            let e = (got - x).abs() / x.abs().max(1e-2);
            assert!(
                e <= tol,
                "{p:?} subject {i} {}: {got} against {x}",
                arm.metrics[j].column
            );
            worst = worst.max(e);
        }
    }
    (worst, ok)
}

fn model() -> Arc<CompiledModel> {
    Arc::new(CompiledModel::new(
        &Model::parse("late.vpm", MODEL).unwrap(),
    ))
}

#[test]
fn the_cpu_reference_matches_the_closed_form() {
    let (e, _) = check(
        &mut CpuBackend::new(model()),
        Precision::F64,
        1e-8,
        f64::INFINITY,
    );
    println!("cpu: {e:.2e}");
}

/// f64 within 1e-8, every subject; f32 within 1e-5 (rtol 1e-6; 4.3e-2 before the states
/// advanced by the step t takes).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_completes<B: Backend + 'static, E: std::fmt::Display>(
    name: &str,
    new: impl Fn(Arc<CompiledModel>, Precision) -> Result<B, E>,
) {
    let mut make = common::or_skipped(&new);
    for (p, tol, must_ok) in [
        (Precision::F64, 1e-8, f64::INFINITY),
        (Precision::F32, 1e-5, F32_RATES_OK),
    ] {
        if let Some(mut b) = make(model(), p) {
            let (e, ok) = check(b.as_mut(), p, tol, must_ok);
            println!("{name} {p:?}: {ok} of 96 succeed, worst {e:.2e}");
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_kernels_complete() {
    use vpop::backend::cuda::EmulatedCuda;
    gpu_completes("cuda-emulated", EmulatedCuda::new);
}

/// On a CUDA device (SKIPPED without one).
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_complete() {
    use vpop::backend::cuda::CudaBackend;
    gpu_completes("cuda", CudaBackend::new);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_kernels_complete() {
    use vpop::backend::wgpu::WgpuBackend;
    gpu_completes("wgpu", WgpuBackend::new);
}

// NONMEM records late in time: records one ulp of f32 time after a dose (once taken for the
// dose's own time, and the states then left behind the time by that ulp) and between doses.
// Every record time is an f32 value, so that what is measured is the integration, not the
// rounding of the times given.

/// Doses of 100 at T0 and T0 + 0.5; observations an ulp after each, and between.
const RECORDS: &str = "ID,TIME,AMT,CMT
1,100000,100,1
1,100000.0078125,.,1
1,100000.25,.,1
1,100000.5,100,1
1,100000.5078125,.,1
1,100001,.,1
";

/// Every record's output, per subject rate up to F32_RATES_OK, within `tol` of the closed
/// form; every subject succeeds.
fn check_records(b: &mut dyn Backend, name: &str, rtol: f64, tol: f64) {
    use vpop::backend::records::{record_program, RecordBinding};
    let m = Model::parse("late.vpm", MODEL).unwrap();
    let compiled = model();
    let ds = vpop::dosing::nonmem::Dataset::parse("late.csv", RECORDS).unwrap();
    let binding = RecordBinding::new(&m, &ds.covariates);
    let ks: Vec<f64> = rates().into_iter().filter(|&k| k <= F32_RATES_OK).collect();
    let programs: Vec<_> = ks
        .iter()
        .map(|&k| record_program(&compiled, &[k], &binding, &ds.subjects[0], &mut |_, _| {}))
        .collect();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol,
        atol: rtol * 1e-3,
        ..Default::default()
    };
    let out = b
        .run_records(&programs.iter().collect::<Vec<_>>(), &solver)
        .unwrap();
    let doses = [T0, T0 + 0.5];
    let mut worst = 0.0f64;
    for (k, o) in ks.iter().zip(out) {
        assert_eq!(o.status as u8, 0, "{name}: k = {k}");
        for (r, g) in ds.subjects[0].records.iter().zip(&o.outputs[0]) {
            let want: f64 = doses
                .iter()
                .filter(|&&d| d <= r.time)
                .map(|d| 100.0 * (-k * (r.time - d)).exp())
                .sum();
            let e = (g - want).abs() / want.abs().max(1e-2);
            assert!(
                e <= tol,
                "{name}: k = {k}, t = {}: {g} against {want}",
                r.time
            );
            worst = worst.max(e);
        }
    }
    println!("{name} records: {} subjects, worst {worst:.2e}", ks.len());
}

#[test]
fn cpu_records_match_the_closed_form() {
    check_records(&mut CpuBackend::new(model()), "cpu", 1e-10, 1e-8);
}

/// f64 within 1e-8 and f32 within 1e-5 (before: 1.6e-2 at T0 + 1 on lavapipe, where the record
/// an ulp after the dose was taken for the dose's time).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn records_on_gpu<B: Backend + 'static, E: std::fmt::Display>(
    name: &str,
    new: impl Fn(Arc<CompiledModel>, Precision) -> Result<B, E>,
) {
    let mut make = common::or_skipped(&new);
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-5)] {
        if let Some(mut b) = make(model(), p) {
            check_records(b.as_mut(), &format!("{name} {p:?}"), rtol, tol);
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_records_complete() {
    use vpop::backend::cuda::EmulatedCuda;
    records_on_gpu("cuda-emulated", EmulatedCuda::new);
}

/// On a CUDA device (SKIPPED without one).
#[cfg(feature = "cuda")]
#[test]
fn cuda_records_complete() {
    use vpop::backend::cuda::CudaBackend;
    records_on_gpu("cuda", CudaBackend::new);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_records_complete() {
    use vpop::backend::wgpu::WgpuBackend;
    records_on_gpu("wgpu", WgpuBackend::new);
}
