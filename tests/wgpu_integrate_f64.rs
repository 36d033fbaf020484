//! The f64 WGSL integrator kernels on an adapter with SHADER_F64 (lavapipe in CI), against
//! the CPU f64 reference: every library model × method within 1e-9 relative at rtol 1e-10, as
//! for CUDA in f64, the same status codes for failing subjects, and suspended subjects resuming
//! exactly. Without such an adapter every test prints SKIPPED. The f64 kernels are generated
//! and validated with the f32 ones in tests/wgpu_integrate.rs.

#![cfg(feature = "wgpu")]

#[macro_use]
mod common;

use std::sync::Arc;

use common::{arm, run, subjects, Agreement};
use vpop::backend::{Backend, Precision};
use vpop::model::CompiledModel;
use vpop::solver::Method;

/// The f64 backend for a model, or `None` (after printing SKIPPED) without an adapter with
/// SHADER_F64.
fn gpu_backend(model: Arc<CompiledModel>) -> Option<vpop::backend::wgpu::WgpuBackend> {
    match vpop::backend::wgpu::WgpuBackend::new(model, Precision::F64) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

/// Subjects per model in the f64 matrix: lavapipe emulates f64 on the CPU's cores at
/// rtol 1e-10, so fewer than in f32, with every model × method still covered.
const SUBJECTS: usize = 8;

/// Every method on one library model: the f64 WGSL kernel at rtol 1e-10 within 1e-9 of the
/// CPU reference (Tmax within `common::TMAX_CONDITIONING`), as for CUDA in f64.
fn agreement(name: &str) {
    let tol = Agreement {
        rtol: 1e-10,
        same: 1e-9,
        tight: 1e-9,
        subjects: SUBJECTS,
    };
    common::agrees_with_the_cpu_reference(name, tol, |model| {
        gpu_backend(model).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

agreement_tests!(agreement);

/// Why Tmax is compared within `common::TMAX_CONDITIONING` in f64: on the CPU reference
/// itself, one parameter changed by one ulp moves effect_emax's Tmax by more than 1e-8
/// relative while the other metrics move by less than 1e-12.
#[test]
fn tmax_moves_by_round_off() {
    let m = common::library_model("effect_emax");
    let mut cpu = vpop::backend::cpu::CpuBackend::new(Arc::new(CompiledModel::new(&m)));
    let params = subjects(&m, 8);
    let a = arm(&m, Method::Rk4, 1e-10, &["tmax".into(), "cmax".into()]);
    let base = run(&mut cpu, &a, &params);
    let (mut tmax, mut other) = (0.0f64, 0.0f64);
    for p in 0..params.len() {
        let mut q = params.clone();
        for v in &mut q[p] {
            *v *= 1.0 + f64::EPSILON;
        }
        let o = run(&mut cpu, &a, &q);
        for (k, s) in a.metrics.iter().enumerate() {
            let e = common::max_rel(&o.metrics[k], &base.metrics[k]);
            if s.column.ends_with("_tmax") {
                tmax = tmax.max(e);
            } else {
                other = other.max(e);
            }
        }
    }
    println!("one ulp of one parameter: Tmax {tmax:.2e}, Cmax {other:.2e}");
    assert!(tmax > 1e-8 && tmax < common::TMAX_CONDITIONING, "{tmax:e}");
    assert!(other < 1e-12, "{other:e}");
}

#[test]
fn failing_subjects_get_the_same_status_codes() {
    let model = Arc::new(CompiledModel::new(&common::library_model("two_cmt_oral")));
    if let Some(mut gpu) = gpu_backend(model) {
        common::failing_subjects_get_the_same_status_codes(&mut gpu);
    }
}

/// A W whose sparse factorisation refuses a pivot once the steps are large: the step is
/// rejected and retried smaller, and the results keep to the tolerance.
#[test]
fn refused_pivots_reject_the_step() {
    common::refused_pivots_reject_the_step(
        |model| gpu_backend(model).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-5,
        20.0,
    );
}

#[test]
fn suspended_and_resumed_subjects_give_the_same_results() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = gpu_backend(model) else {
        return;
    };
    let params = subjects(&m, 4);
    let a = arm(&m, Method::Rodas4, 1e-8, &["auc".into(), "cmax".into()]);
    gpu.set_dispatch_budget(Some((3, 2)));
    let some = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(None);
    let default = run(&mut gpu, &a, &params);
    assert_eq!(some.metrics, default.metrics);
    assert_eq!(some.status, default.status);
}

/// A slow infusion running on after a fast one into the same compartment keeps its rate when
/// the fast one ends (see `tests/cuda_integrate.rs`, same name).
#[test]
fn a_slow_infusion_outlasting_a_fast_one_keeps_its_rate() {
    let ir = common::library_model("one_cmt_iv");
    let model = Arc::new(CompiledModel::new(&ir));
    let Some(mut gpu) = gpu_backend(model.clone()) else {
        return;
    };
    let params = subjects(&ir, 4);
    let a = common::slow_and_fast_infusions(&ir);
    let cpu = run(&mut vpop::backend::cpu::CpuBackend::new(model), &a, &params);
    let got = run(&mut gpu, &a, &params);
    let worst = common::worst_difference(&a, &got, &cpu);
    println!("wgpu f64: worst {worst:.2e}");
    assert!(worst <= 1e-9, "{worst}");
}

/// A segment a few units in the last place long after a jump starts on the new side in the
/// f64 kernel.
#[test]
fn a_segment_ulps_long_starts_on_the_new_side() {
    common::a_segment_ulps_long_starts_on_the_new_side(
        &mut |m| gpu_backend(m).map(|b| Box::new(b) as Box<dyn vpop::backend::Backend>),
        1e-10,
        1e-8,
    );
}

/// Jumps in time between the stopping points become stopping points in the f64 kernel.
#[test]
fn jumps_in_time_are_stopping_points() {
    common::jumps_in_time_are_stopping_points(
        &mut |m| gpu_backend(m).map(|b| Box::new(b) as Box<dyn vpop::backend::Backend>),
        1e-10,
        1e-8,
    );
}
