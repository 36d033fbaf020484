//! Generated CUDA C for every library model and both precisions compiles with NVRTC for sm_90
//! (no GPU needed; CI installs the NVRTC wheel and puts it on the library path).

use vpop::backend::cuda::{compile_ptx, model_eval_source, nvrtc_available};
use vpop::backend::Precision;
use vpop::model::{library, Model, ModelPrograms};

#[test]
fn every_generated_kernel_compiles_with_nvrtc() {
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        for p in [Precision::F32, Precision::F64] {
            let src = model_eval_source(&progs, p).unwrap();
            let ptx =
                compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{} {p:?}: {e}", lm.name));
            assert!(
                ptx.contains(".entry model_eval"),
                "{} {p:?}: no kernel entry in the PTX",
                lm.name
            );
        }
    }
}

/// The integrator kernel of every library model × method × precision compiles, and an f32
/// kernel computes in f32 only (no double-precision instructions in its PTX).
#[test]
fn every_integrator_kernel_compiles_with_nvrtc() {
    use vpop::backend::cuda::kernel::integrate_source;
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    use rayon::prelude::*;
    let cases: Vec<(&str, &str, Method, Precision)> = library::MODELS
        .iter()
        .flat_map(|lm| {
            Method::ALL.into_iter().flat_map(move |method| {
                [Precision::F32, Precision::F64]
                    .into_iter()
                    .map(move |p| (lm.name, lm.source, method, p))
            })
        })
        .collect();
    // NVRTC compiles independent programs concurrently.
    cases.par_iter().for_each(|&(name, source, method, p)| {
        let m = Model::parse(name, source).unwrap();
        let progs = ModelPrograms::new(&m);
        let src = integrate_source(&progs, method, 4, p).unwrap();
        let ptx =
            compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{name} {method} {p:?}: {e}"));
        assert!(
            ptx.contains(".entry integrate"),
            "{name} {method} {p:?}: no kernel entry in the PTX"
        );
        if p == Precision::F32 {
            let doubles = ptx.lines().filter(|l| l.contains(".f64")).count();
            assert_eq!(
                doubles, 0,
                "{name} {method}: the f32 kernel has {doubles} double-precision instructions"
            );
        }
    });
}
