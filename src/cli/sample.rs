//! `vpop sample POPULATION -n N --seed S -o params.parquet [--summary]`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, RecordBatch, StringArray, UInt16Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

use crate::output::{writer_properties, AtomicFile, Codec};
use crate::population::{category_code, Population, SampledChunk, SUBJECT_COLUMN};
use crate::trial::quantile::StreamedQuantiles;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// A population file (e.g. populations/my_population.toml) or a built-in population's
    /// name (`vpop populations` lists them).
    pub population: PathBuf,
    /// Number of subjects.
    #[arg(short = 'n', long, default_value_t = 1000, value_parser = super::at_least_one::<u64>)]
    pub subjects: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output Parquet file; without it, the summary is printed (as with --summary).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Print mean, SD and percentiles of every column beside the file's stated targets.
    #[arg(long)]
    pub summary: bool,
    /// Occasions per subject: inter-occasion etas (`occasion = true` OMEGA blocks) are drawn
    /// anew for each, and the parameters that use them get one column per occasion
    /// (`cl_occ1`, `cl_occ2`, …).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub occasions: u32,
}

/// A Float64 column of a sampled chunk.
#[derive(Debug, Clone, Copy)]
enum Col {
    Eta(usize),
    Param(usize),
    /// Occasion k ≥ 2 (index k − 2 into `occasions`), inter-occasion eta j.
    OccEta(usize, usize),
    OccParam(usize, usize),
}

impl Col {
    fn get(self, c: &SampledChunk) -> &[f64] {
        match self {
            Col::Eta(e) => &c.etas[e],
            Col::Param(p) => &c.parameters[p],
            Col::OccEta(k, j) => &c.occasions[k].etas[j],
            Col::OccParam(k, p) => &c.occasions[k].parameters[p],
        }
    }
}

/// The eta and parameter columns with their names: with several occasions, every
/// occasion-varying column once per occasion, suffixed `_occK`.
fn value_columns(pop: &Population, occasions: usize) -> Vec<(String, Col)> {
    let iov = pop.iov_eta_indices();
    let varies = pop.parameter_varies_by_occasion();
    let mut cols = Vec::new();
    let name = |n: &str, k: usize, per_occasion: bool| {
        if per_occasion && occasions > 1 {
            format!("{n}_occ{k}")
        } else {
            n.to_string()
        }
    };
    for (e, n) in pop.eta_names().iter().enumerate() {
        let j = iov.iter().position(|x| *x == e);
        cols.push((name(n, 1, j.is_some()), Col::Eta(e)));
        if let Some(j) = j {
            for k in 2..=occasions {
                cols.push((name(n, k, true), Col::OccEta(k - 2, j)));
            }
        }
    }
    for (p, n) in pop.parameter_names().iter().enumerate() {
        cols.push((name(n, 1, varies[p]), Col::Param(p)));
        if varies[p] {
            for k in 2..=occasions {
                cols.push((name(n, k, true), Col::OccParam(k - 2, p)));
            }
        }
    }
    cols
}

pub const EXAMPLES: &str = "Examples:
  vpop sample adult_healthy -n 100000 --seed 7 -o params.parquet
  vpop sample populations/adult_healthy.toml -n 1000000 --summary";

const CHUNK: u64 = 1 << 18;

pub fn run(args: &SampleArgs) -> anyhow::Result<()> {
    let pop = super::load_population(&args.population)?;
    let cov = pop.covariate_names();
    let occasions = args.occasions as usize;
    let values = value_columns(&pop, occasions);
    // The population's names are its own (checked where it is read), but an occasion's suffix
    // may make one column's name another's.
    let mut seen = std::collections::HashSet::from([SUBJECT_COLUMN]);
    for n in cov
        .iter()
        .copied()
        .chain(values.iter().map(|(n, _)| n.as_str()))
    {
        if !seen.insert(n) {
            anyhow::bail!(
                "{}: with --occasions {occasions}, column '{n}' would be written twice (a \
                 name ending in _occK is taken by the per-occasion columns)",
                args.population.display()
            );
        }
    }
    let mut fields = vec![Field::new(SUBJECT_COLUMN, DataType::UInt64, false)];
    for (c, name) in cov.iter().enumerate() {
        let dt = if pop.covariate_labels(c).is_some() {
            DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8))
        } else {
            DataType::Float64
        };
        fields.push(Field::new(*name, dt, true));
    }
    for (n, _) in &values {
        fields.push(Field::new(n, DataType::Float64, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let meta = vec![
        (
            "vpop.engine".to_string(),
            format!("vpop {}", env!("CARGO_PKG_VERSION")),
        ),
        ("vpop.population".to_string(), pop.name.clone()),
        (
            "vpop.population_file".to_string(),
            args.population.display().to_string(),
        ),
        ("vpop.population_hash".to_string(), pop.hash()),
        (
            "vpop.population_source".to_string(),
            pop.source_text().to_string(),
        ),
        ("vpop.seed".to_string(), args.seed.to_string()),
        ("vpop.occasions".to_string(), occasions.to_string()),
    ];
    let mut writer = match &args.output {
        Some(path) => {
            let mut f = AtomicFile::create(path)?;
            let w = ArrowWriter::try_new(
                f.take_file(),
                schema.clone(),
                Some(writer_properties(
                    &schema,
                    meta,
                    CHUNK as usize,
                    Codec::default(),
                )),
            )?;
            Some((f, w))
        }
        None => None,
    };
    let mut chunk = SampledChunk::default();
    let mut first = 0;
    // Without a file, the summary samples the subjects itself.
    while writer.is_some() && first < args.subjects {
        let n = (args.subjects - first).min(CHUNK) as usize;
        pop.sample_occasions(args.seed, first, n, occasions, &mut chunk);
        if let Some((_, w)) = writer.as_mut() {
            let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
                first..first + n as u64,
            ))];
            for (c, col) in chunk.covariates.iter().enumerate() {
                match pop.covariate_labels(c) {
                    Some(labels) => {
                        let keys: UInt16Array = col
                            .iter()
                            .map(|x| category_code(*x, labels.len()))
                            .collect();
                        cols.push(Arc::new(DictionaryArray::try_new(
                            keys,
                            Arc::new(StringArray::from(labels.to_vec())),
                        )?));
                    }
                    None => cols.push(Arc::new(Float64Array::from(col.clone()))),
                }
            }
            for (_, c) in &values {
                cols.push(Arc::new(Float64Array::from(c.get(&chunk).to_vec())));
            }
            w.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
        }
        first += n as u64;
    }
    if let Some((f, w)) = writer {
        let file = w.into_inner()?;
        file.sync_all()?;
        drop(file);
        let path = f.commit_path()?;
        println!(
            "{} subjects of {} (seed {}) → {}",
            args.subjects,
            pop.name,
            args.seed,
            path.display()
        );
    }
    if args.summary || args.output.is_none() {
        print_summary(&pop, args)?;
    }
    Ok(())
}

/// Mean, SD, 5/50/95th percentiles per column, beside the file's targets. Resamples the same
/// subjects chunk by chunk (draws depend only on seed and subject index), so memory stays
/// bounded: one pass tallies every column (the quantiles from the values kept near their
/// positions); a column whose kept values miss its quantiles is resampled for the exact
/// selection's later passes.
fn print_summary(pop: &Population, args: &SampleArgs) -> anyhow::Result<()> {
    let cov = pop.covariate_names();
    let n_cov = cov.len();
    let occasions = args.occasions as usize;
    let values = value_columns(pop, occasions);
    let names: Vec<String> = cov
        .iter()
        .map(|s| s.to_string())
        .chain(values.iter().map(|(n, _)| n.clone()))
        .collect();
    /// Column `k` of a chunk: the covariates, then `values`.
    fn column<'c>(
        values: &[(String, Col)],
        n_cov: usize,
        c: &'c SampledChunk,
        k: usize,
    ) -> &'c [f64] {
        if k < n_cov {
            &c.covariates[k]
        } else {
            values[k - n_cov].1.get(c)
        }
    }
    let for_each_chunk = |f: &mut dyn FnMut(&SampledChunk)| {
        let mut chunk = SampledChunk::default();
        let mut first = 0;
        while first < args.subjects {
            let n = (args.subjects - first).min(CHUNK) as usize;
            pop.sample_occasions(args.seed, first, n, occasions, &mut chunk);
            f(&chunk);
            first += n as u64;
        }
    };
    const PROBS: [f64; 3] = [0.05, 0.5, 0.95];
    let labels: Vec<Option<&[String]>> = (0..names.len())
        .map(|k| (k < n_cov).then(|| pop.covariate_labels(k)).flatten())
        .collect();
    let mut counts: Vec<Vec<u64>> = labels
        .iter()
        .map(|l| vec![0; l.map_or(0, |l| l.len())])
        .collect();
    let mut moments = vec![(0.0f64, 0.0f64, 0u64); names.len()];
    let mut tallies = vec![StreamedQuantiles::new(&PROBS); names.len()];
    for_each_chunk(&mut |chunk| {
        for k in 0..names.len() {
            let xs = column(&values, n_cov, chunk, k);
            if let Some(l) = labels[k] {
                for x in xs {
                    if let Some(code) = category_code(*x, l.len()) {
                        counts[k][code as usize] += 1;
                    }
                }
                continue;
            }
            let (s, s2, n) = &mut moments[k];
            for x in xs.iter().filter(|x| x.is_finite()) {
                *s += x;
                *s2 += x * x;
                *n += 1;
            }
            tallies[k].add(xs);
        }
    });
    println!(
        "\n{} — {} subjects, seed {}",
        pop.name, args.subjects, args.seed
    );
    // The first column as wide as its longest entry (`hepatic=moderate`).
    let w = names
        .iter()
        .enumerate()
        .flat_map(|(k, name)| match labels[k] {
            Some(ls) => ls
                .iter()
                .map(|l| name.chars().count() + 1 + l.chars().count())
                .collect(),
            None => vec![name.chars().count()],
        })
        .fold(12, usize::max);
    println!(
        "{:<w$} {:>11} {:>11} {:>11} {:>11} {:>11}   target",
        "column", "mean", "sd", "p5", "median", "p95"
    );
    let mut not_finite = Vec::new();
    for (k, name) in names.iter().enumerate() {
        if let Some(labels) = labels[k] {
            let total: u64 = counts[k].iter().sum();
            if total < args.subjects {
                not_finite.push(format!(
                    "{name}: {} of {} subjects have no category (left out of its frequencies)",
                    args.subjects - total,
                    args.subjects
                ));
            }
            let target = pop
                .covariate_target(k)
                .and_then(|t| t.freq.clone())
                .unwrap_or_default();
            for (l, c) in labels.iter().zip(&counts[k]) {
                let tgt = target.get(l).map(|t| format!("{t:.4}")).unwrap_or_default();
                println!(
                    "{:<w$} {:>11.4} {:>11} {:>11} {:>11} {:>11}   {tgt}",
                    format!("{name}={l}"),
                    *c as f64 / total.max(1) as f64,
                    "",
                    "",
                    "",
                    ""
                );
            }
            continue;
        }
        let (s, s2, n) = moments[k];
        if n < args.subjects {
            not_finite.push(format!(
                "{name}: {} of {} subjects are NaN or infinite (left out of its statistics)",
                args.subjects - n,
                args.subjects
            ));
        }
        let mean = if n == 0 { f64::NAN } else { s / n as f64 };
        let sd = ((s2 / n.max(1) as f64 - mean * mean) * n as f64 / (n.max(2) - 1) as f64)
            .max(0.0)
            .sqrt();
        let (_, q) = tallies[k].quantiles().unwrap_or_else(|| {
            let resample = |f: &mut dyn FnMut(&[f64])| {
                for_each_chunk(&mut |chunk| f(column(&values, n_cov, chunk, k)))
            };
            tallies[k].passes_over(&[resample])
        });
        let target = if k < n_cov {
            pop.covariate_target(k)
                .map(|t| {
                    let mut v = Vec::new();
                    if let Some(m) = t.mean {
                        v.push(format!("mean {m}"));
                    }
                    if let Some(x) = t.sd {
                        v.push(format!("sd {x}"));
                    }
                    if let Some(x) = t.median {
                        v.push(format!("median {x}"));
                    }
                    if let Some(x) = t.p5 {
                        v.push(format!("p5 {x}"));
                    }
                    if let Some(x) = t.p95 {
                        v.push(format!("p95 {x}"));
                    }
                    v.join(", ")
                })
                .unwrap_or_default()
        } else if let Col::Eta(e) | Col::OccEta(_, e) = values[k - n_cov].1 {
            let e = match values[k - n_cov].1 {
                Col::OccEta(..) => pop.iov_eta_indices()[e],
                _ => e,
            };
            format!("sd {:.4}", pop.eta_variances()[e].sqrt())
        } else {
            String::new()
        };
        // No finite value: no statistic.
        let (sd, q) = if n == 0 {
            (f64::NAN, vec![f64::NAN; 3])
        } else {
            (sd, q)
        };
        let v = |x: f64| crate::output::table_value(x, 4);
        println!(
            "{:<w$} {:>11} {:>11} {:>11} {:>11} {:>11}   {target}",
            name,
            v(mean),
            v(sd),
            v(q[0]),
            v(q[1]),
            v(q[2])
        );
    }
    for line in &not_finite {
        println!("note: {line}");
    }
    let _ = std::io::Write::flush(&mut std::io::stdout()).context("stdout");
    Ok(())
}
