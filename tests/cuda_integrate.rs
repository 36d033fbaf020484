//! The CUDA integrator kernels on a device, against the CPU f64 reference: f32 within 1e-4 at
//! rtol 1e-6, f64 within 1e-9 at rtol 1e-10, for every library model × method, and the same
//! status codes for failing subjects. Without libcuda, NVRTC or a device, every test prints
//! SKIPPED.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{arm, run, subjects, Agreement};
use vpop::backend::Backend;
use vpop::backend::Precision;
use vpop::model::CompiledModel;
use vpop::solver::Method;

#[cfg(feature = "cuda")]
fn cuda(model: Arc<CompiledModel>, p: Precision) -> Option<Box<dyn Backend>> {
    match vpop::backend::cuda::CudaBackend::new(model, p) {
        Ok(b) => Some(Box::new(b)),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_model: Arc<CompiledModel>, _p: Precision) -> Option<Box<dyn Backend>> {
    println!("SKIPPED: built without the `cuda` feature");
    None
}

/// The precisions to check: both, or the one named by VPOP_CUDA_PRECISION (f32 or f64).
fn precisions() -> Vec<Precision> {
    match std::env::var("VPOP_CUDA_PRECISION").as_deref() {
        Ok("f32") => vec![Precision::F32],
        Ok("f64") => vec![Precision::F64],
        _ => vec![Precision::F32, Precision::F64],
    }
}

fn agreement(name: &str) {
    for p in precisions() {
        let tol = match p {
            Precision::F32 => Agreement {
                rtol: 1e-6,
                same: 1e-4,
                tight: 1e-3,
                subjects: 24,
            },
            Precision::F64 => Agreement {
                rtol: 1e-10,
                same: 1e-9,
                tight: 1e-9,
                subjects: 24,
            },
        };
        common::agrees_with_the_cpu_reference(name, tol, |m| cuda(m, p));
    }
}

agreement_tests!(agreement);

#[test]
fn failing_subjects_get_the_same_status_codes() {
    for p in [Precision::F32, Precision::F64] {
        let model = Arc::new(CompiledModel::new(&common::library_model("two_cmt_oral")));
        if let Some(mut b) = cuda(model, p) {
            common::failing_subjects_get_the_same_status_codes(b.as_mut());
        }
    }
}

/// A chunk larger than one launch's worth of blocks, with profiles: every subject's result is
/// where it belongs (subject i of the chunk equals subject i run alone).
#[test]
fn subjects_land_in_their_own_rows() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut b) = cuda(model, Precision::F32) else {
        return;
    };
    let params = subjects(&m, 1000);
    let a = arm(&m, Method::Tsit5, 1e-6, &["auc".into(), "cmax".into()]);
    let all = run(b.as_mut(), &a, &params);
    for i in [0usize, 1, 127, 128, 129, 999] {
        let one: Vec<Vec<f64>> = params.iter().map(|c| vec![c[i]]).collect();
        let alone = run(b.as_mut(), &a, &one);
        for k in 0..2 {
            assert_eq!(
                all.metrics[k][i], alone.metrics[k][0],
                "subject {i} metric {k}"
            );
        }
        let nt = a.sample_times.len();
        assert_eq!(
            &all.profiles[0][i * nt..(i + 1) * nt],
            &alone.profiles[0][..],
            "subject {i} profile"
        );
    }
}
