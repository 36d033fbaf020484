//! `vpop report DIR`: PNG charts of a trial's output dataset — the distribution of every
//! metric by arm, and percentile bands of the profiles when the run wrote them.
//!
//! The dataset is read back from its Parquet parts (every manifest in the directory, so the
//! parts of several shards count together). Charts of runs with more subjects than
//! `max_subjects` per arm use a systematic sample (every k-th subject), which the chart titles
//! state.

use std::path::{Path, PathBuf};

use arrow_array::{Array, FixedSizeListArray, Float16Array, Float32Array, Float64Array};

use crate::output::dataset::Manifest;
use crate::output::plot::{band_panels, hist_panels, BandPanel, HistPanel};

/// What a report wrote.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub files: Vec<PathBuf>,
    /// The charts' titles, in the order drawn (each says how many subjects it shows).
    pub titles: Vec<String>,
    pub subjects_per_arm: Vec<u64>,
    /// Metric and profile columns not drawn: no subject whose integration succeeded has a
    /// value of them.
    pub empty: Vec<String>,
}

/// The manifests of a dataset directory (one per shard).
fn manifests(dir: &Path) -> Result<Vec<Manifest>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| crate::output::dataset::manifest_shard(n).is_some())
        })
        .collect();
    names.sort();
    for p in names {
        // Checked: a manifest names only part files of this directory.
        out.push(crate::output::dataset::read_manifest(&p)?);
    }
    if out.is_empty() {
        return Err(format!(
            "{}: no _manifest*.json: not a vpop run's output directory",
            dir.display()
        ));
    }
    Ok(out)
}

/// Reads one column of one arm (row group) from every part, every `stride`-th row.
fn read_column(
    files: &[PathBuf],
    arm: usize,
    column: &str,
    stride: u64,
    mut take: impl FnMut(&dyn Array, usize),
) -> Result<(), String> {
    let mut row = 0u64;
    crate::output::dataset::for_each_column_batch(files, arm, column, &mut |col| {
        for i in 0..col.len() {
            if row.is_multiple_of(stride) {
                take(col, i);
            }
            row += 1;
        }
        Ok(())
    })
}

/// Whether each row of one arm (every `stride`-th) has status `ok`: charts draw those
/// subjects only, as the run's summary counts them (a failed subject's profile stops where its
/// integration did).
fn rows_ok(files: &[PathBuf], arm: usize, stride: u64) -> Result<Vec<bool>, String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt8Type;
    let mut ok = Vec::new();
    read_column(files, arm, "status", stride, |a, i| {
        let name = if let Some(d) = a.as_dictionary_opt::<UInt8Type>() {
            let k = d.keys().value(i) as usize;
            d.values()
                .as_string_opt::<i32>()
                .map(|v| v.value(k) == "ok")
        } else {
            a.as_string_opt::<i32>().map(|v| v.value(i) == "ok")
        };
        ok.push(name.unwrap_or(true));
    })?;
    Ok(ok)
}

/// "N subjects per arm", or "N1 / N2 subjects by arm" where the arms differ.
fn subjects_drawn(counts: &[usize]) -> String {
    match counts {
        [first, rest @ ..] if rest.iter().all(|c| c == first) => {
            format!("{first} subjects per arm")
        }
        _ => format!(
            "{} subjects by arm",
            counts
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    }
}

fn f64_at(a: &dyn Array, i: usize) -> f64 {
    if a.is_null(i) {
        return f64::NAN;
    }
    if let Some(x) = a.as_any().downcast_ref::<Float64Array>() {
        x.value(i)
    } else if let Some(x) = a.as_any().downcast_ref::<Float32Array>() {
        f64::from(x.value(i))
    } else if let Some(x) = a.as_any().downcast_ref::<Float16Array>() {
        x.value(i).to_f64()
    } else {
        f64::NAN
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The part files of every manifest (each part once) and the subjects they hold.
fn part_files(dir: &Path, ms: &[Manifest]) -> (Vec<PathBuf>, u64) {
    // A part recorded by two manifests (an unsharded run that resumed its shards' parts)
    // counts once.
    let parts: std::collections::BTreeMap<u64, (&str, u64)> = ms
        .iter()
        .flat_map(|m| {
            m.parts
                .iter()
                .map(|p| (p.part, (p.file.as_str(), p.subjects)))
        })
        .collect();
    let subjects = parts.values().map(|(_, n)| n).sum();
    (parts.values().map(|(f, _)| dir.join(f)).collect(), subjects)
}

/// A `[data]` run's visual predictive check, `vpc.png`: for every model output, the 5th, 50th
/// and 95th percentiles of the simulated values over all replicates at each observation time
/// of the dataset (with residual error when the run wrote `<output>_obs`), and the dataset's
/// observed DV at those times.
fn data_report(dir: &Path, out: &Path, ms: &[Manifest], note: &str) -> Result<ReportFiles, String> {
    let first = &ms[0];
    let (files, subjects) = part_files(dir, ms);
    let source = first
        .provenance
        .get("vpop.model_source")
        .ok_or("the manifest has no vpop.model_source")?;
    let model = crate::model::Model::parse("model", source).map_err(|e| e.to_string())?;
    let read_f64 = |col: &str| -> Result<Vec<f64>, String> {
        let mut v = Vec::new();
        read_column(&files, 0, col, 1, |arr, i| v.push(f64_at(arr, i)))?;
        Ok(v)
    };
    let int = |col: &str| -> Result<Vec<u64>, String> {
        let mut v = Vec::new();
        read_column(&files, 0, col, 1, |arr, i| {
            use arrow_array::{UInt32Array, UInt8Array};
            let a = arr.as_any();
            v.push(if let Some(x) = a.downcast_ref::<UInt8Array>() {
                u64::from(x.value(i))
            } else if let Some(x) = a.downcast_ref::<UInt32Array>() {
                u64::from(x.value(i))
            } else {
                u64::MAX
            })
        })?;
        Ok(v)
    };
    let time = read_f64("TIME")?;
    let ok = rows_ok(&files, 0, 1)?;
    let evid = int("EVID")?;
    let replicate = int("replicate")?;
    let dv = read_f64("DV")?;
    // The records of subjects whose integration failed are left out, as from the summary.
    let obs_rows: Vec<usize> = (0..time.len())
        .filter(|i| evid[*i] == 0 && ok.get(*i).copied().unwrap_or(true))
        .collect();
    let mut times: Vec<f64> = obs_rows.iter().map(|i| time[*i]).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    if times.is_empty() {
        return Err(format!(
            "{}: the dataset has no observation records (EVID 0) to check",
            dir.display()
        ));
    }
    let observed: Vec<(f64, f64)> = obs_rows
        .iter()
        .filter(|i| replicate[**i] == 0 && dv[**i].is_finite())
        .map(|i| (time[*i], dv[*i]))
        .collect();
    let mut panels = Vec::new();
    for o in &model.outputs {
        let with_error = first.columns.contains(&format!("{}_obs", o.name));
        let col = if with_error {
            format!("{}_obs", o.name)
        } else {
            o.name.clone()
        };
        let values = read_f64(&col)?;
        let mut by_time: Vec<Vec<f64>> = vec![Vec::new(); times.len()];
        for &i in &obs_rows {
            if values[i].is_finite() {
                let k = times.partition_point(|t| *t < time[i]);
                by_time[k].push(values[i]);
            }
        }
        let (mut lo, mut mid, mut hi) = (Vec::new(), Vec::new(), Vec::new());
        for v in &mut by_time {
            v.sort_by(f64::total_cmp);
            lo.push(percentile(v, 0.05));
            mid.push(percentile(v, 0.5));
            hi.push(percentile(v, 0.95));
        }
        panels.push(BandPanel {
            title: format!(
                "{}: {} simulated subjects{}{note}",
                o.name,
                subjects,
                if with_error {
                    " (with residual error)"
                } else {
                    ""
                }
            ),
            x_label: "time".into(),
            x: times.clone(),
            groups: vec![("simulated".into(), lo, mid, hi)],
            points: Some(("observed DV".into(), observed.clone())),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let p = out.join("vpc.png");
    band_panels(&p, &panels)?;
    Ok(ReportFiles {
        files: vec![p],
        titles: panels.iter().map(|p| p.title.clone()).collect(),
        subjects_per_arm: vec![subjects],
        empty: Vec::new(),
    })
}

/// Writes `metrics.png` and, when the run wrote profiles, `profiles.png` into `out`.
pub fn report(dir: &Path, out: &Path, max_subjects: u64) -> Result<ReportFiles, String> {
    report_titled(dir, out, max_subjects, "")
}

/// [`report`] with `note` after every chart's title (" — PARTIAL RUN" for the charts of a run
/// that has not finished).
pub fn report_titled(
    dir: &Path,
    out: &Path,
    max_subjects: u64,
    note: &str,
) -> Result<ReportFiles, String> {
    let ms = manifests(dir)?;
    let first = &ms[0];
    if first.provenance.contains_key("vpop.dataset") {
        return data_report(dir, out, &ms, note);
    }
    let arms = first.arms.clone();
    let (files, subjects) = part_files(dir, &ms);
    let stride = subjects.div_ceil(max_subjects.max(1)).max(1);
    let prov = &first.provenance;
    let source = prov
        .get("vpop.model_source")
        .ok_or("the manifest has no vpop.model_source")?;
    let model = crate::model::Model::parse("model", source).map_err(|e| e.to_string())?;
    let outputs: Vec<&str> = model.outputs.iter().map(|o| o.name.as_str()).collect();
    // The metric columns the run wrote (`vpop.metrics`); in a run recorded without that list,
    // the columns named `<output>_…` before `status` that are not a parameter (the metrics come
    // last before it, but a covariate may be named like one).
    let metric_cols: Vec<String> = match prov.get("vpop.metrics") {
        Some(list) => list
            .split(',')
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect(),
        None => first
            .columns
            .iter()
            .take_while(|c| *c != "status")
            .filter(|c| {
                outputs.iter().any(|o| c.starts_with(&format!("{o}_")))
                    && model.param_index(c).is_none()
            })
            .cloned()
            .collect(),
    };
    let oks: Vec<Vec<bool>> = (0..arms.len())
        .map(|a| rows_ok(&files, a, stride))
        .collect::<Result<_, _>>()?;
    let sampled = if stride > 1 {
        format!(" (every {stride}th subject)")
    } else {
        String::new()
    };
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut panels = Vec::new();
    let mut empty: Vec<String> = Vec::new();
    for col in &metric_cols {
        let mut groups = Vec::new();
        for (a, name) in arms.iter().enumerate() {
            let mut v = Vec::new();
            let mut row = 0;
            read_column(&files, a, col, stride, |arr, i| {
                if oks[a].get(row).copied().unwrap_or(true) {
                    v.push(f64_at(arr, i));
                }
                row += 1;
            })?;
            groups.push((name.clone(), v));
        }
        // A metric no subject has a value of (every subject failed, or the metric is undefined
        // for the regimen) has nothing to draw.
        if groups.iter().all(|g| g.1.iter().all(|v| !v.is_finite())) {
            empty.push(col.clone());
            continue;
        }
        // The subjects drawn: those with a value (a metric may be undefined for some).
        let counts: Vec<usize> = groups
            .iter()
            .map(|g| g.1.iter().filter(|v| v.is_finite()).count())
            .collect();
        panels.push(HistPanel {
            title: format!("{col}: {}{sampled}{note}", subjects_drawn(&counts)),
            groups,
        });
    }
    if !panels.is_empty() {
        let p = out.join("metrics.png");
        hist_panels(&p, &panels, 60)?;
        written.push(p);
    }
    let times: Vec<f64> = prov
        .get("vpop.sample_times")
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let mut bands = Vec::new();
    for o in &outputs {
        let col = format!("{o}_profile");
        if times.is_empty() || !first.columns.contains(&col) {
            continue;
        }
        let nt = times.len();
        let mut groups = Vec::new();
        let mut counts = Vec::new();
        for (a, name) in arms.iter().enumerate() {
            let mut by_time: Vec<Vec<f64>> = vec![Vec::new(); nt];
            let (mut row, mut drawn) = (0, 0usize);
            read_column(&files, a, &col, stride, |arr, i| {
                let ok = oks[a].get(row).copied().unwrap_or(true);
                row += 1;
                if let Some(l) = arr.as_any().downcast_ref::<FixedSizeListArray>() {
                    if l.is_null(i) || !ok {
                        return;
                    }
                    drawn += 1;
                    let items = l.value(i);
                    for (j, slot) in by_time.iter_mut().enumerate().take(items.len()) {
                        let v = f64_at(items.as_ref(), j);
                        if v.is_finite() {
                            slot.push(v);
                        }
                    }
                }
            })?;
            let mut lo = Vec::with_capacity(nt);
            let mut mid = Vec::with_capacity(nt);
            let mut hi = Vec::with_capacity(nt);
            for v in &mut by_time {
                v.sort_by(f64::total_cmp);
                lo.push(percentile(v, 0.05));
                mid.push(percentile(v, 0.5));
                hi.push(percentile(v, 0.95));
            }
            groups.push((name.clone(), lo, mid, hi));
            counts.push(drawn);
        }
        // No subject with a value at any time (every subject failed): nothing to draw.
        if groups.iter().all(|g| g.2.iter().all(|v| !v.is_finite())) {
            empty.push(col);
            continue;
        }
        bands.push(BandPanel {
            title: format!("{o}: {}{sampled}{note}", subjects_drawn(&counts)),
            x_label: "time".into(),
            x: times.clone(),
            groups,
            points: None,
        });
    }
    if !bands.is_empty() {
        let p = out.join("profiles.png");
        band_panels(&p, &bands)?;
        written.push(p);
    }
    if written.is_empty() && !empty.is_empty() {
        return Err(format!(
            "{}: no subject has a value to draw ({}): did every subject fail? (the run's \
             summary counts them by status)",
            dir.display(),
            empty.join(", ")
        ));
    }
    if written.is_empty() {
        return Err(format!(
            "{}: no metric or profile columns to plot",
            dir.display()
        ));
    }
    Ok(ReportFiles {
        files: written,
        titles: panels
            .iter()
            .map(|p| p.title.clone())
            .chain(bands.iter().map(|b| b.title.clone()))
            .collect(),
        subjects_per_arm: vec![subjects; arms.len()],
        empty,
    })
}
