//! The per-arm summary of a run: exact median and 5th/95th percentiles of every metric,
//! subjects, failures and target attainment, over the parts of a shard.
//!
//! Everything is tallied while the parts are written ([`Tally`]: subjects, failures, target
//! hits, and each metric's quantile tally: the values around each quantile's position, see
//! [`StreamedQuantiles`]); parts written by an earlier, resumed run are read back for the same
//! tally. A metric column whose kept values do not hold its quantiles (values that did not
//! arrive in random order) is read back from the parts for the selection's passes. Memory grows as the square root of the number of subjects.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arrow_array::{Array, DictionaryArray, Float64Array, RecordBatch, StringArray};

use super::quantile::StreamedQuantiles;
use super::resolve::Trial;
use super::run::{ArmSummary, MetricSummary};
use crate::output::dataset::{for_each_batch, for_each_column_batch, part_name};
use crate::output::Shard;

/// The summary's quantiles: median, 5th and 95th percentiles.
const PROBS: [f64; 3] = [0.5, 0.05, 0.95];

/// One arm's counts.
#[derive(Debug, Clone, Default)]
struct ArmTally {
    subjects: u64,
    /// Failed subjects by status label.
    failures: std::collections::BTreeMap<String, u64>,
    /// Successful subjects whose target metric is defined, and those in the target range.
    target_n: u64,
    target_hit: u64,
    /// Each metric column's quantile tally.
    metrics: Vec<StreamedQuantiles>,
}

/// What the summary counts in one pass over the parts, tallied part by part (by each encoder,
/// then merged).
#[derive(Debug, Clone)]
pub struct Tally {
    arms: Vec<ArmTally>,
}

/// A metric column's values with nulls (failed subjects, undefined metrics) as NaN.
fn values(col: &dyn Array) -> Result<std::borrow::Cow<'_, [f64]>, String> {
    let col = col
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or("metric column is not f64")?;
    Ok(if col.null_count() == 0 {
        std::borrow::Cow::Borrowed(col.values().as_ref())
    } else {
        std::borrow::Cow::Owned(
            (0..col.len())
                .map(|i| {
                    if col.is_null(i) {
                        f64::NAN
                    } else {
                        col.value(i)
                    }
                })
                .collect(),
        )
    })
}

impl Tally {
    pub fn new(trial: &Trial) -> Tally {
        Tally {
            arms: trial
                .arms
                .iter()
                .map(|a| ArmTally {
                    metrics: vec![StreamedQuantiles::new(&PROBS); a.plan.metrics.len()],
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Counts one arm's `status` column.
    fn add_status(&mut self, arm: usize, col: &dyn Array) -> Result<(), String> {
        let col = col
            .as_any()
            .downcast_ref::<DictionaryArray<arrow_array::types::UInt8Type>>()
            .ok_or("status column")?;
        let t = &mut self.arms[arm];
        t.subjects += col.len() as u64;
        // Keys index the dictionary as read back, which holds only the labels present in the
        // file: compare labels, not key values.
        let labels = col
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or("status labels")?;
        let mut by_key = vec![0u64; labels.len()];
        for k in col.keys().iter().flatten() {
            if let Some(c) = by_key.get_mut(k as usize) {
                *c += 1;
            }
        }
        for (i, n) in by_key.into_iter().enumerate() {
            if n > 0 && labels.value(i) != "ok" {
                *t.failures.entry(labels.value(i).to_string()).or_default() += n;
            }
        }
        Ok(())
    }

    fn add_metric(&mut self, arm: usize, m: usize, col: &dyn Array) -> Result<(), String> {
        self.arms[arm].metrics[m].add(&values(col)?);
        Ok(())
    }

    fn add_target(&mut self, trial: &Trial, arm: usize, col: &dyn Array) -> Result<(), String> {
        let Some(t) = &trial.target else {
            return Ok(());
        };
        let a = &mut self.arms[arm];
        for x in values(col)?.iter().filter(|x| !x.is_nan()) {
            a.target_n += 1;
            if t.above.is_none_or(|lo| *x > lo) && t.below.is_none_or(|hi| *x < hi) {
                a.target_hit += 1;
            }
        }
        Ok(())
    }

    /// Counts one part's batch of `arm`, as written.
    pub fn add_batch(
        &mut self,
        trial: &Trial,
        arm: usize,
        batch: &RecordBatch,
    ) -> Result<(), String> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("no column {name}"))
        };
        self.add_status(arm, col("status")?.as_ref())?;
        for (m, spec) in trial.arms[arm].plan.metrics.iter().enumerate() {
            self.add_metric(arm, m, col(&spec.column)?.as_ref())?;
        }
        if let Some(t) = &trial.target {
            self.add_target(trial, arm, col(&t.column)?.as_ref())?;
        }
        Ok(())
    }

    /// Counts parts already on disk (written by an earlier run that this one resumes), each
    /// file on its own, in parallel.
    fn add_files(&mut self, trial: &Trial, files: &[PathBuf]) -> Result<(), String> {
        use rayon::prelude::*;
        let read = files
            .par_iter()
            .try_fold(
                || Tally::new(trial),
                |mut t, file| {
                    let file = std::slice::from_ref(file);
                    for (a, arm) in trial.arms.iter().enumerate() {
                        // What add_batch reads, and nothing else.
                        let columns: Vec<&str> = std::iter::once("status")
                            .chain(arm.plan.metrics.iter().map(|s| s.column.as_str()))
                            .chain(trial.target.iter().map(|t| t.column.as_str()))
                            .collect();
                        for_each_batch(file, a, &columns, &mut |b| t.add_batch(trial, a, b))?;
                    }
                    Ok::<_, String>(t)
                },
            )
            .try_reduce(
                || Tally::new(trial),
                |mut a, b| {
                    a.merge(&b);
                    Ok(a)
                },
            )?;
        self.merge(&read);
        Ok(())
    }

    pub fn merge(&mut self, other: &Tally) {
        for (a, b) in self.arms.iter_mut().zip(&other.arms) {
            a.subjects += b.subjects;
            for (label, n) in &b.failures {
                *a.failures.entry(label.clone()).or_default() += n;
            }
            a.target_n += b.target_n;
            a.target_hit += b.target_hit;
            for (x, y) in a.metrics.iter_mut().zip(&b.metrics) {
                x.merge(y);
            }
        }
    }
}

/// Per-arm summaries of this shard's parts. `tally` holds the counts of the parts named in
/// `tallied` (written by this run); the other parts of the shard are read back for theirs.
/// Exact quantiles by streaming selection: memory independent of the number of subjects.
pub fn summarize(
    trial: &Trial,
    dir: &Path,
    shard: Shard,
    n_chunks: u64,
    mut tally: Tally,
    tallied: &HashSet<u64>,
) -> Result<Vec<ArmSummary>, String> {
    let (c0, c1) = shard.chunk_range(n_chunks);
    let file = |c: u64| dir.join(part_name(c));
    let files: Vec<PathBuf> = (c0..c1).map(file).collect();
    let untallied: Vec<PathBuf> = (c0..c1)
        .filter(|c| !tallied.contains(c))
        .map(file)
        .collect();
    tally.add_files(trial, &untallied)?;
    // The quantiles come from the values kept as they streamed past; a column whose kept
    // values do not hold them is read back from the parts for the selection's later passes, in
    // parallel (columns and their parts).
    let tasks: Vec<(usize, usize)> = trial
        .arms
        .iter()
        .enumerate()
        .flat_map(|(a, arm)| (0..arm.plan.metrics.len()).map(move |m| (a, m)))
        .collect();
    let summaries: Vec<Result<MetricSummary, String>> = {
        use rayon::prelude::*;
        tasks
            .par_iter()
            .map(|&(a, m)| {
                let spec = &trial.arms[a].plan.metrics[m];
                let streamed = &tally.arms[a].metrics[m];
                let (n, q) = match streamed.quantiles() {
                    Some(q) => q,
                    None => read_back(&files, a, &spec.column, streamed)?,
                };
                Ok(MetricSummary {
                    column: spec.column.clone(),
                    n,
                    median: q[0],
                    p5: q[1],
                    p95: q[2],
                })
            })
            .collect()
    };
    let mut summaries = summaries.into_iter();
    let mut out = Vec::new();
    for (arm, t) in trial.arms.iter().zip(&tally.arms) {
        let mut metrics = Vec::new();
        for _ in &arm.plan.metrics {
            metrics.push(summaries.next().ok_or("missing summary")??);
        }
        out.push(ArmSummary {
            name: arm.plan.name.clone(),
            subjects: t.subjects,
            failed: t.failures.values().sum(),
            failures: t.failures.iter().map(|(l, n)| (l.clone(), *n)).collect(),
            metrics,
            target_attainment: trial.target.as_ref().map(|_| {
                if t.target_n == 0 {
                    f64::NAN
                } else {
                    t.target_hit as f64 / t.target_n as f64
                }
            }),
            target_subjects: t.target_n,
        });
    }
    Ok(out)
}

/// The quantiles of one arm's metric column by the selection's passes over its parts (each
/// part file a stream of its own, read in parallel), for when the values kept by `streamed`
/// miss them.
fn read_back(
    files: &[PathBuf],
    arm: usize,
    column: &str,
    streamed: &StreamedQuantiles,
) -> Result<(u64, Vec<f64>), String> {
    let error = std::sync::Mutex::new(None);
    let parts: Vec<_> = files
        .iter()
        .map(|file| {
            let error = &error;
            move |f: &mut dyn FnMut(&[f64])| {
                let read =
                    for_each_column_batch(std::slice::from_ref(file), arm, column, &mut |col| {
                        f(&values(col)?);
                        Ok(())
                    });
                if let Err(e) = read {
                    error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            }
        })
        .collect();
    let q = streamed.passes_over(&parts);
    match error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of more subjects than the values kept for all probabilities (so each metric's
    /// windows are given and narrowed, part by part in each encoder): its summary equals the
    /// selection's passes over the parts read back, and the windows tallied again from the
    /// parts.
    #[test]
    fn windows_and_read_back_agree_on_a_run() {
        let dir = std::env::temp_dir().join(format!("vpop-summary-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pop.toml"),
            r#"
[population]
name = "oral"
[parameters]
ka = "1.5 * exp(eta_ka)"
cl = "2.8 * exp(eta_cl)"
v = "35 * exp(eta_v)"
[[omega]]
etas = ["eta_ka", "eta_cl", "eta_v"]
cv = [0.4, 0.3, 0.2]
"#,
        )
        .unwrap();
        let spec = dir.join("trial.toml");
        let text = r#"
[trial]
name = "windows"
subjects = 45000
seed = 3
[model]
library = "one_cmt_oral"
[population]
file = "pop.toml"
[[arm]]
name = "single"
dose = { amount = 100, into = "depot" }
[simulation]
end = 24
method = "tsit5"
rtol = 1e-4
chunk_size = 5000
backend = "cpu"
[output]
dir = "unused"
metrics = ["auc", "cmax", "tmax", "time_above(2.0)"]
"#;
        std::fs::write(&spec, text).unwrap();
        let trial = Trial::from_text(&spec, text).unwrap();
        let out = dir.join("out");
        let opts = crate::trial::RunOptions {
            quiet: true,
            output_dir: Some(out.clone()),
            ..Default::default()
        };
        let report = crate::trial::run_trial(&trial, &opts).unwrap();
        let files: Vec<PathBuf> = (0..9).map(|c| out.join(part_name(c))).collect();
        for m in &report.arms[0].metrics {
            let mut streamed = StreamedQuantiles::new(&PROBS);
            for_each_column_batch(&files, 0, &m.column, &mut |col| {
                streamed.add(&values(col)?);
                Ok(())
            })
            .unwrap();
            let (n, q) = read_back(&files, 0, &m.column, &streamed).unwrap();
            assert_eq!(n, m.n, "{}", m.column);
            assert_eq!(q, vec![m.median, m.p5, m.p95], "{}", m.column);
            assert_eq!(streamed.quantiles(), Some((n, q)), "{}", m.column);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
