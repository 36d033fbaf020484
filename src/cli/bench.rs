//! `vpop bench SPEC`: the trial on every available backend, with subjects/s, the ratio to the
//! CPU reference and the largest difference of the metrics from a tight CPU f64 reference.

use std::path::PathBuf;

use anyhow::Context;

use crate::backend::cuda::CudaTuning;
use crate::output::AtomicFile;
use crate::trial::bench::{format_report, run_bench, BenchOptions, Target};
use crate::trial::Trial;

pub const EXAMPLES: &str = "Examples:
  vpop bench examples/quickstart.toml
  vpop bench examples/quickstart.toml -n 10000000 --backends cuda-f32,cuda-f64,wgpu --rtol 1e-5
  vpop bench examples/quickstart.toml --backends cpu --cpu-subjects 100000 --json bench.json
  vpop bench examples/quickstart.toml -n 10000000 --backends cuda-f32 --rtol 2e-4 \
      --cuda-variants 'default;block=256;block=64;maxrreg=64;fast-math'

The CPU reference integrates the first --cpu-subjects subjects of each arm twice: at the trial's
settings (timed, on all cores) and at --reference-rtol (the accuracy reference; with Tsit5
for an RK4 trial, whose fixed step no tolerance tightens, and Rodas4 for a Rosenbrock23 one).
Each GPU backend integrates -n subjects per arm; sampling happens before the clock starts.";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The trial spec (TOML).
    pub spec: PathBuf,
    /// Subjects per arm on each GPU backend.
    #[arg(short = 'n', long, default_value_t = 1_000_000, value_parser = super::at_least_one::<u64>)]
    pub subjects: u64,
    /// Subjects per arm on the CPU reference, and in the accuracy comparison.
    #[arg(long, default_value_t = 20_000, value_parser = super::at_least_one::<u64>)]
    pub cpu_subjects: u64,
    /// Backends to run, comma-separated: cpu, wgpu, wgpu-f64, cuda-f32, cuda-f64; also
    /// cuda-emulated-f32 and cuda-emulated-f64 (the CUDA kernels run on the CPU, to see their
    /// accuracy at a tolerance where there is no GPU; their speed means nothing).
    #[arg(long, default_value = "cpu,wgpu,cuda-f32,cuda-f64")]
    pub backends: String,
    /// Relative tolerance of the backends under test (overrides the spec; atol follows).
    #[arg(long)]
    pub rtol: Option<f64>,
    /// Relative tolerance of the CPU f64 accuracy reference.
    #[arg(long, default_value_t = 1e-10)]
    pub reference_rtol: f64,
    /// Subjects per backend call.
    #[arg(long, default_value_t = 1 << 20, value_parser = super::at_least_one::<usize>)]
    pub chunk_size: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Count the CUDA kernel's operations per subject-arm (FLOPs by kind, transcendental
    /// functions, comparisons) in f32 and f64, on this many subjects per arm: the generated
    /// kernel built on the host with a number type that counts what is done with it (needs a
    /// C++ compiler). With a CUDA row, the report gives the FLOP rate that makes.
    #[arg(long, value_name = "SUBJECTS", default_value_t = 0)]
    pub count_ops: usize,
    /// Run each CUDA backend once per tuning, separated by semicolons, each a comma-separated
    /// list of block=N (threads per block, default 128), maxrreg=N (NVRTC --maxrregcount),
    /// fast-math (NVRTC --use_fast_math), opt=-OPTION (any NVRTC option), order=natural
    /// (subjects to threads as sampled, not the costliest first) or default, e.g.
    /// "default;block=256;block=64,maxrreg=64;fast-math". Without it, CUDA runs with the
    /// tuning in VPOP_CUDA_TUNING (the default where unset).
    #[arg(long, value_name = "TUNINGS")]
    pub cuda_variants: Option<String>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let trial = Trial::load(&args.spec)
        .map_err(|e| super::run::other_kind(&args.spec, super::run::FileKind::Trial, e))?;
    let mut targets = Vec::new();
    for name in args.backends.split(',').filter(|s| !s.trim().is_empty()) {
        let t = Target::parse(name).with_context(|| {
            format!(
                "unknown backend '{name}' in --backends (cpu, wgpu, wgpu-f64, cuda-f32, cuda-f64, cuda-emulated-f32, cuda-emulated-f64)"
            )
        })?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    anyhow::ensure!(!targets.is_empty(), "--backends names no backend");
    use crate::solver::check;
    if let Some(r) = args.rtol {
        check::rtol(r).map_err(|e| anyhow::anyhow!("--{e}, got {r}"))?;
    }
    let r = args.reference_rtol;
    check::rtol(r).map_err(|e| anyhow::anyhow!("--reference-{e}, got {r}"))?;
    let cuda_variants = match &args.cuda_variants {
        Some(v) => v
            .split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| CudaTuning::parse(t).map_err(|e| anyhow::anyhow!("--cuda-variants: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => {
            if targets.iter().any(|t| matches!(t, Target::Cuda(_))) {
                CudaTuning::from_env().map_err(|e| anyhow::anyhow!(e))?;
            }
            Vec::new()
        }
    };
    let opts = BenchOptions {
        subjects: args.subjects.max(1),
        cpu_subjects: args.cpu_subjects.max(1),
        targets: targets.clone(),
        rtol: args.rtol,
        reference_rtol: args.reference_rtol,
        chunk: args.chunk_size.max(1),
        time_cpu: targets.contains(&Target::Cpu),
        count_ops: args.count_ops,
        cuda_variants,
    };
    let report = run_bench(&trial, &opts, &mut |line| eprintln!("{line}"))
        .map_err(|e| anyhow::anyhow!(e))?;
    println!("{}", format_report(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        AtomicFile::write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
