//! Tunings of the CUDA kernels (threads per block, register caps, NVRTC options): `vpop bench
//! --cuda-variants` runs each CUDA backend once per tuning, `VPOP_CUDA_TUNING` sets a run's,
//! and a mistyped tuning is a clear error. Where a CUDA device exists, every tuning's row
//! agrees with the CPU reference; elsewhere each one is reported skipped by its name.

use std::path::Path;

use vpop::backend::cuda::CudaTuning;
use vpop::backend::Precision;
use vpop::trial::bench::{format_report, run_bench, BenchOptions, Target};
use vpop::trial::Trial;

fn quickstart() -> Trial {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("examples/quickstart.toml")).unwrap();
    Trial::from_text(&root.join("examples/quickstart.toml"), &spec).unwrap()
}

#[test]
fn the_bench_runs_cuda_once_per_tuning() {
    let variants: Vec<CudaTuning> = ["default", "block=256", "block=64,maxrreg=64", "fast-math"]
        .iter()
        .map(|t| CudaTuning::parse(t).unwrap())
        .collect();
    let opts = BenchOptions {
        subjects: 512,
        cpu_subjects: 256,
        targets: vec![Target::Cpu, Target::Cuda(Precision::F32)],
        cuda_variants: variants.clone(),
        ..Default::default()
    };
    let rep = run_bench(&quickstart(), &opts, &mut |_| {}).unwrap();
    let names: Vec<String> = variants
        .iter()
        .map(|t| format!("cuda-f32 [{}]", t.label()))
        .collect();
    if !rep.skipped.is_empty() {
        // No CUDA device: every tuning is reported, by its name, with the reason.
        let skipped: Vec<&str> = rep.skipped.iter().map(|s| s.backend.as_str()).collect();
        assert_eq!(skipped, names);
        assert_eq!(rep.rows.len(), 1);
        let text = format_report(&rep);
        assert!(
            text.contains("cuda-f32 [block=64,maxrreg=64] not run"),
            "{text}"
        );
        println!("SKIPPED: {}", rep.skipped[0].reason);
        return;
    }
    assert_eq!(rep.rows.len(), 1 + variants.len());
    for (row, name) in rep.rows[1..].iter().zip(&names) {
        assert_eq!(row.backend, format!("{name} (f32)"));
        assert_eq!((row.failed, row.status_mismatches), (0, 0), "{name}");
        // f32 at the quickstart's rtol 1e-6 (2.4e-6 on an H200); fast math's approximate
        // divisions and exponentials stay well within 1e-4.
        assert!(
            row.max_rel_auc_cmax < 1e-4,
            "{name}: {}",
            row.max_rel_auc_cmax
        );
        if name != "cuda-f32 [default]" {
            assert!(row.device.ends_with(']'), "{}", row.device);
        }
    }
}

/// `vpop bench` of the quickstart, 8 subjects, on `backends`, with further arguments.
fn bench(backends: &str, more: &[&str], tuning: Option<&str>) -> std::process::Output {
    let mut args = vec![
        "bench",
        "examples/quickstart.toml",
        "-n",
        "8",
        "--backends",
        backends,
    ];
    args.extend_from_slice(more);
    vpop(&args, tuning)
}

/// `vpop run` of the quickstart, 4 subjects, into `out`, with further arguments.
fn run(out: &Path, more: &[&str], tuning: Option<&str>) -> std::process::Output {
    let mut args = vec![
        "run",
        "examples/quickstart.toml",
        "--subjects",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    vpop(&args, tuning)
}

fn vpop(args: &[&str], tuning: Option<&str>) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"));
    c.current_dir(root).args(args);
    match tuning {
        Some(t) => c.env(CudaTuning::ENV, t),
        None => c.env_remove(CudaTuning::ENV),
    };
    c.output().unwrap()
}

#[test]
fn a_mistyped_tuning_is_a_clear_error() {
    let out = bench("cuda-f32", &["--cuda-variants", "default;block=100"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--cuda-variants: block=100: expected a multiple of 32"),
        "{err}"
    );
    // The environment's tuning is checked before `auto` looks for a device, so that a typo is
    // not taken for a missing GPU.
    let dir = std::env::temp_dir().join(format!("vpop-tuning-{}", std::process::id()));
    let out = run(&dir, &[], Some("blocks=256"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("VPOP_CUDA_TUNING=\"blocks=256\": 'blocks=256': expected block=N"),
        "{err}"
    );
    assert!(!dir.join("_manifest.json").exists());
    let out = bench("cpu,cuda-f64", &[], Some("maxrreg=300"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("maxrreg=300: expected a whole number from 16 to 255"),
        "{err}"
    );
    // The CPU backend takes no tuning and ignores the variable.
    let out = run(&dir, &["--backend", "cpu"], Some("blocks=256"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
