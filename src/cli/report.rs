//! `vpop report DIR`: PNG charts of a trial's output.

use std::path::PathBuf;

use crate::trial::report::report;

pub const EXAMPLES: &str = "Examples:
  vpop report out/quickstart                    # writes out/quickstart/report/*.png
  vpop report out/quickstart --out charts --max-subjects 50000";

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A `vpop run` output directory.
    pub dir: PathBuf,
    /// Where to write the charts (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Subjects per arm read for the charts; larger runs are sampled systematically.
    #[arg(long, default_value_t = 200_000)]
    pub max_subjects: u64,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("report"));
    let r = report(&args.dir, &out, args.max_subjects).map_err(anyhow::Error::msg)?;
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
