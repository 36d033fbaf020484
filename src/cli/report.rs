//! `vpop report DIR`: PNG charts of a trial's output.
//!
//! The run's manifests say whether it finished: a run that was stopped (killed, or still being
//! written) holds only some of its parts, the first chunks of each shard, and charts of those
//! would pass for the trial's. Such a run is refused unless `--partial` asks for its charts,
//! which are then drawn with a warning that says how much of the run they show.

use std::path::{Path, PathBuf};

use crate::output::dataset::{manifest_shard, read_manifest, Manifest, Shard};
use crate::trial::report::report_titled;

pub const EXAMPLES: &str = "Examples:
  vpop report out/quickstart                    # writes out/quickstart/_report/*.png
  vpop report out/quickstart --out charts --max-subjects 50000
  vpop report out/long-trial --partial          # a run still going, or stopped: what is
                                                # there, in out/long-trial/_report-partial

A run that has not finished (its manifest says \"running\", or shards are missing) is refused
unless --partial is given: its parts are the first chunks of the trial only.";

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
    /// Draw the charts of a run that has not finished (stopped, or still running) from the
    /// parts it has written so far, with a warning of how much of the run that is, into
    /// DIR/_report-partial unless --out says otherwise. Without it such a run is refused.
    #[arg(long)]
    pub partial: bool,
}

/// How much of its run a dataset directory holds, by its manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completeness {
    /// Distinct parts recorded by the manifests, and the run's parts (chunks) in all.
    pub parts: u64,
    pub parts_total: u64,
    /// Subjects (per arm) in those parts, and the run's.
    pub subjects: u64,
    pub subjects_total: u64,
    /// Manifests whose status is not `complete`: file name and status.
    pub unfinished: Vec<(String, String)>,
    /// Shards of a sharded run without a manifest in the directory (`k/N`).
    pub missing_shards: Vec<String>,
}

impl Completeness {
    /// Every part of the run is there (a run stopped after its last part, before its manifest
    /// said so, is complete too).
    pub fn is_complete(&self) -> bool {
        self.parts >= self.parts_total
    }

    /// What is missing, for a message: `its manifest says "running"; 6 of its 20 parts are
    /// there (12288 of 40000 subjects per arm)`.
    pub fn describe(&self) -> String {
        let mut why = Vec::new();
        match self.unfinished.as_slice() {
            [] => {}
            [(name, status)] => why.push(format!("{name} says \"{status}\"")),
            many => why.push(format!(
                "{} manifests are not complete ({})",
                many.len(),
                many.iter()
                    .map(|(n, s)| format!("{n}: \"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        if !self.missing_shards.is_empty() {
            why.push(format!(
                "no manifest of shard{} {}",
                if self.missing_shards.len() == 1 {
                    ""
                } else {
                    "s"
                },
                self.missing_shards.join(", ")
            ));
        }
        why.push(format!(
            "{} of its {} parts are there ({} of {} subjects per arm)",
            self.parts, self.parts_total, self.subjects, self.subjects_total
        ));
        why.join("; ")
    }
}

/// The completeness of the run in `dir`, from every manifest there; `None` where there is no
/// manifest or one cannot be read (the report itself then says why).
pub fn completeness(dir: &Path) -> Option<Completeness> {
    let mut manifests: Vec<(String, Shard, Manifest)> = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let path = e.ok()?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if let Some(shard) = manifest_shard(&name) {
            manifests.push((name, shard, read_manifest(&path).ok()?));
        }
    }
    manifests.sort_by(|a, b| a.0.cmp(&b.0));
    let first = &manifests.first()?.2.identity;
    let (subjects_total, chunk) = (first.subjects, first.chunk_size.max(1));
    let parts_total = subjects_total.div_ceil(chunk);
    // A part recorded by several manifests (an unsharded run that resumed its shards') counts
    // once.
    let parts: std::collections::BTreeMap<u64, u64> = manifests
        .iter()
        .flat_map(|(_, _, m)| m.parts.iter().map(|p| (p.part, p.subjects)))
        .collect();
    let unfinished = manifests
        .iter()
        .filter(|(_, _, m)| m.status != "complete")
        .map(|(name, _, m)| (name.clone(), m.status.clone()))
        .collect();
    // The shards of a sharded run that have no manifest, where no unsharded one stands for
    // them all.
    let mut missing_shards = Vec::new();
    if manifests.iter().all(|(_, s, _)| *s != Shard::WHOLE) {
        if let Some(n) = manifests.iter().map(|(_, s, _)| s.n).max() {
            missing_shards = (1..=n.min(1 << 20))
                .filter(|k| !manifests.iter().any(|(_, s, _)| s.k == *k && s.n == n))
                .map(|k| format!("{k}/{n}"))
                .collect();
        }
    }
    Some(Completeness {
        parts: parts.len() as u64,
        parts_total,
        subjects: parts.values().sum(),
        subjects_total,
        unfinished,
        missing_shards,
    })
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let partial = completeness(&args.dir).filter(|c| !c.is_complete());
    // The charts of a partial run go beside the finished run's, not in their place, under a
    // name that says what they are (dataset readers pass over it too).
    let [finished, unfinished] = crate::output::dataset::REPORT_DIRS;
    let default_out = match partial {
        Some(_) => unfinished,
        None => finished,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.dir.join(default_out));
    if let Some(c) = &partial {
        if !args.partial {
            anyhow::bail!(
                "{}: the run has not finished: {}. It was stopped, or is still running: `vpop \
                 run` with the same spec and output directory resumes it (with the same \
                 --shard, for a shard). To chart the subjects there so far, run `vpop report` \
                 with --partial",
                args.dir.display(),
                c.describe()
            );
        }
        eprintln!("{}", partial_warning(&args.dir, c));
    }
    let note = if partial.is_some() {
        " (PARTIAL RUN)"
    } else {
        ""
    };
    let r = report_titled(&args.dir, &out, args.max_subjects, note).map_err(anyhow::Error::msg)?;
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    if !r.empty.is_empty() {
        eprintln!(
            "not drawn: no subject has a value of {}",
            r.empty.join(", ")
        );
    }
    if let Some(c) = &partial {
        // Again after the list of files, where it is seen last.
        eprintln!("{}", partial_warning(&args.dir, c));
    }
    Ok(())
}

/// The warning of a report drawn with `--partial`.
fn partial_warning(dir: &Path, c: &Completeness) -> String {
    format!(
        "WARNING: PARTIAL RUN: {}: {}. The charts show {} of the trial's {} subjects per arm \
         (the first chunks only), not the whole trial.",
        dir.display(),
        c.describe(),
        c.subjects,
        c.subjects_total
    )
}
