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
