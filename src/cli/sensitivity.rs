//! `vpop sensitivity SPEC`: global sensitivity analysis of exposure metrics.

use std::path::PathBuf;

use crate::sensitivity::run::{format_report, run as run_analysis, Analysis};
use crate::trial::resolve::BackendChoice;

pub const EXAMPLES: &str = "Examples:
  vpop sensitivity examples/sensitivity.toml
  vpop sensitivity examples/sensitivity.toml --backend cpu

The spec names a trial spec (model, arms, solver, backend), the design (sobol, morris, efast),
the factors (model parameters with a range or a distribution) and the metric columns to
analyse. Results go to OUT/indices.parquet (arm, output, factor, index, value, conf) and
OUT/evaluations.parquet (factor values and outputs of every model run).";

#[derive(clap::Args, Debug)]
pub struct SensitivityArgs {
    /// The sensitivity spec (TOML).
    pub spec: PathBuf,
    /// auto, cpu, wgpu or cuda (overrides the trial spec's).
    #[arg(long)]
    pub backend: Option<String>,
}

pub fn run(args: &SensitivityArgs) -> anyhow::Result<()> {
    let a = Analysis::load(&args.spec).map_err(|e| {
        super::run::other_kind(
            &args.spec,
            super::run::FileKind::Sensitivity,
            anyhow::Error::msg(e),
        )
    })?;
    let backend = match &args.backend {
        None => None,
        Some(b) => Some(
            BackendChoice::parse(b)
                .ok_or_else(|| anyhow::anyhow!("unknown backend '{b}' (auto, cpu, wgpu, cuda)"))?,
        ),
    };
    for w in &a.notes {
        eprintln!("note: {w}");
    }
    // Where the model jumps with the states, as `vpop run` notes it: an output's noise from
    // the jumps would be apportioned among the factors.
    for w in a.trial.model_notes() {
        eprintln!("note: {w}");
    }
    // The analysed arms' doses, occasions and resets after the end, as `vpop run` notes them.
    for (i, arm) in a.trial.arms.iter().enumerate() {
        if a.outputs.iter().any(|&(j, _)| j == i) {
            for w in super::run::notes_after_end(arm) {
                eprintln!("note: arm {}: {w}", arm.plan.name);
            }
        }
    }
    let report = run_analysis(&a, backend).map_err(anyhow::Error::msg)?;
    println!("{}", format_report(&a, &report));
    for w in &report.notes {
        eprintln!("note: {w}");
    }
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
