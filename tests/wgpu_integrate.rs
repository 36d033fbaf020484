//! The WGSL integrator kernel: generated for every library model × method and validated by
//! naga; run on an adapter (lavapipe in CI) and checked against the CPU f64 reference.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{arm, run, subjects, Agreement};
use vpop::backend::wgpu::kernel::integrate_source;
use vpop::backend::Backend;
use vpop::model::{library, CompiledModel, Model, ModelPrograms};
use vpop::solver::Method;

fn validate(src: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map(|_| ())
    .map_err(|e| e.emit_to_string(src))
}

#[test]
fn every_integrator_kernel_validates() {
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        for method in Method::ALL {
            for nm in [0, 3] {
                let src = integrate_source(&progs, method, nm).unwrap();
                if let Err(e) = validate(&src) {
                    panic!("{} {method} ({nm} metrics):\n{e}", lm.name);
                }
            }
        }
    }
}

/// The adapter's backend for a model, or `None` (after printing SKIPPED) without an adapter.
fn gpu_backend(model: Arc<CompiledModel>) -> Option<vpop::backend::wgpu::WgpuBackend> {
    match vpop::backend::wgpu::WgpuBackend::new(model) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: no wgpu adapter ({e})");
            None
        }
    }
}

/// Every method on one library model: the WGSL kernel (f32, rtol 1e-6) against the CPU
/// reference at the same settings (1e-4) and at rtol 1e-10 (1e-3).
fn agreement(name: &str) {
    let tol = Agreement {
        rtol: 1e-6,
        same: 1e-4,
        tight: 1e-3,
    };
    common::agrees_with_the_cpu_reference(name, tol, |model| {
        gpu_backend(model).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

agreement_tests!(agreement);

#[test]
fn failing_subjects_get_the_same_status_codes() {
    let model = Arc::new(CompiledModel::new(&common::library_model("two_cmt_oral")));
    if let Some(mut gpu) = gpu_backend(model) {
        common::failing_subjects_get_the_same_status_codes(&mut gpu);
    }
}

#[test]
fn suspended_and_resumed_subjects_give_the_same_results() {
    let lm = library::get("two_cmt_oral").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = gpu_backend(model) else {
        return;
    };
    let params = subjects(&m, 16);
    let a = arm(
        &m,
        Method::Tsit5,
        1e-6,
        &["auc".into(), "cmax".into(), "ctrough".into()],
    );
    gpu.set_dispatch_budget(Some((1, 1)));
    let many = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(Some((7, 3)));
    let some = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(None);
    let default = run(&mut gpu, &a, &params);
    assert_eq!(many.metrics, default.metrics);
    assert_eq!(some.metrics, default.metrics);
    assert_eq!(many.status, default.status);
}
