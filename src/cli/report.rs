//! `vpop report DIR`: PNG charts of a trial's output.

use std::path::PathBuf;

use crate::trial::report::report;

pub const EXAMPLES: &str = "Examples:
  vpop report out/quickstart                    # writes out/quickstart/_report/*.png
  vpop report out/quickstart --out charts --max-subjects 50000";

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A `vpop run` output directory.
    pub dir: PathBuf,
    /// Where to write the charts (default: DIR/_report, which dataset readers such as pyarrow
    /// and Spark pass over, as they do the manifest).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Subjects per arm read for the charts; larger runs are sampled systematically.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_subjects: u64,
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("_report"));
    let r = report(&args.dir, &out, args.max_subjects).map_err(anyhow::Error::msg)?;
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    if !r.empty.is_empty() {
        eprintln!(
            "not drawn: no subject has a value of {}",
            r.empty.join(", ")
        );
    }
    Ok(())
}
