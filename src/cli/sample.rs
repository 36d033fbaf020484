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
    let mut meta = vec![
        (
            "vpop.engine".to_string(),
            format!("vpop {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "vpop.results_revision".to_string(),
            crate::trial::run::RESULTS_REVISION.to_string(),
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
    if let Some(levels) = pop.levels_json() {
        meta.push(("vpop.levels".to_string(), levels));
    }
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

/// Count, mean and sum of squared deviations from the mean of a column's finite values, tallied
/// chunk by chunk: each chunk's by two passes over it (the mean summed about the chunk's first
/// value, so that an offset common to all values adds no rounding), merged into the running
/// ones by Chan, Golub & LeVeque's formula ("Algorithms for computing the sample variance:
/// analysis and recommendations", Am Stat 1983;37:242). Unlike Σx² − n·mean², it keeps the
/// spread of values far from zero (N(1e8, 1)) to full precision.
///
/// The sums are kept in units of `scale`, a power of two at the largest magnitude seen, so
/// that values near the ends of the floats (a uniform over ±1.7e308, where x − x₀ and its
/// square overflow; spreads of 1e-200, whose squares underflow) give a finite mean and SD.
/// Dividing by a power of two is exact, so values of ordinary size give the same bits.
#[derive(Debug, Clone, Copy)]
struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
    scale: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            scale: 1.0,
        }
    }
}

impl Moments {
    fn add(&mut self, xs: &[f64]) {
        let finite = || xs.iter().copied().filter(|x| x.is_finite());
        let Some(x0) = finite().next() else {
            return;
        };
        let largest = finite().fold(0.0f64, |m, x| m.max(x.abs()));
        if largest > 0.0 {
            let scale = crate::population::dist::power_of_two_at(largest);
            // Nothing but zeros so far: any unit holds them exactly.
            if self.n == 0 || (self.mean == 0.0 && self.m2 == 0.0) {
                self.scale = scale;
            } else if scale > self.scale {
                let r = self.scale / scale;
                self.mean *= r;
                self.m2 *= r * r;
                self.scale = scale;
            }
        }
        let s = self.scale;
        let n = finite().count() as u64;
        let y0 = x0 / s;
        let mean = y0 + finite().map(|x| x / s - y0).sum::<f64>() / n as f64;
        let m2: f64 = finite().map(|x| (x / s - mean) * (x / s - mean)).sum();
        let total = self.n + n;
        let delta = mean - self.mean;
        let w = n as f64 / total as f64;
        self.mean += delta * w;
        self.m2 += m2 + delta * delta * self.n as f64 * w;
        self.n = total;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.mean * self.scale
        }
    }

    /// The sample standard deviation (n − 1); 0 for one value, NaN for none.
    fn sd(&self) -> f64 {
        match self.n {
            0 => f64::NAN,
            1 => 0.0,
            n => (self.m2 / (n - 1) as f64).sqrt() * self.scale,
        }
    }
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
    let mut moments = vec![Moments::default(); names.len()];
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
            moments[k].add(xs);
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
        let n = moments[k].n;
        if n < args.subjects {
            not_finite.push(format!(
                "{name}: {} of {} subjects are NaN or infinite (left out of its statistics)",
                args.subjects - n,
                args.subjects
            ));
        }
        let (mean, sd) = (moments[k].mean(), moments[k].sd());
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
        let q = if n == 0 { vec![f64::NAN; 3] } else { q };
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

#[cfg(test)]
mod tests {
    use super::Moments;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    /// Two passes over all the values (the mean summed about the first): the reference.
    fn two_pass(xs: &[f64]) -> (f64, f64) {
        let mean = xs[0] + xs.iter().map(|x| x - xs[0]).sum::<f64>() / xs.len() as f64;
        let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
        (mean, (ss / (xs.len() - 1) as f64).sqrt())
    }

    /// Values with a tiny spread next to their mean (N(1e8, 1), a uniform on [1e6, 1e6 + 1]),
    /// tallied in uneven chunks with non-finite values among them: the streamed mean and SD
    /// equal two passes over the finite values.
    #[test]
    fn the_streamed_sd_keeps_a_small_spread_far_from_zero() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
        let normal = Normal::new(1e8, 1.0).unwrap();
        let big: Vec<f64> = (0..300_000).map(|_| normal.sample(&mut rng)).collect();
        let uniform: Vec<f64> = (0..300_000)
            .map(|i| 1e6 + (i as f64 * 0.618_033_988_749_895).fract())
            .collect();
        for xs in [big, uniform] {
            let mut with_nan = xs.clone();
            with_nan.extend([f64::NAN, f64::INFINITY]);
            with_nan.rotate_right(1000);
            let mut m = Moments::default();
            let mut at = 0;
            for len in [1, 7, 65_536, 100_000].into_iter().cycle() {
                let end = (at + len).min(with_nan.len());
                m.add(&with_nan[at..end]);
                at = end;
                if at == with_nan.len() {
                    break;
                }
            }
            let (mean, sd) = two_pass(&xs);
            assert_eq!(m.n, xs.len() as u64);
            assert!((m.sd() / sd - 1.0).abs() < 1e-9, "sd {} vs {sd}", m.sd());
            assert!(
                (m.mean() - mean).abs() <= 1e-15 * mean,
                "mean {} vs {mean}",
                m.mean()
            );
        }
        let mut one = Moments::default();
        one.add(&[]);
        one.add(&[0.0]);
        assert_eq!((one.mean(), one.sd()), (0.0, 0.0));
        let mut one = Moments::default();
        one.add(&[5.0, f64::NAN]);
        assert_eq!((one.mean(), one.sd()), (5.0, 0.0));
        assert!(Moments::default().mean().is_nan() && Moments::default().sd().is_nan());
    }

    /// Values at the ends of the floats, tallied in chunks whose largest magnitudes grow and
    /// shrink: a uniform over ±f64::MAX has a finite mean near 0 and the SD MAX/√3 (its
    /// differences and squares overflow unscaled), and a spread of 1e-200 about 1e-200 (whose
    /// squares underflow unscaled) keeps its SD. References: the closed forms, and two passes
    /// over the values divided by a power of two.
    #[test]
    fn the_streamed_moments_hold_at_the_ends_of_the_floats() {
        let n = 200_000;
        let u = |i: usize| (i as f64 * 0.618_033_988_749_895).fract();
        let huge: Vec<f64> = (0..n).map(|i| f64::MAX * (2.0 * u(i) - 1.0)).collect();
        let tiny: Vec<f64> = (0..n).map(|i| 1e-200 * (1.0 + u(i))).collect();
        let mut mixed: Vec<f64> = (0..n).map(|i| 1e-300 * u(i)).collect();
        // A first chunk of zeros, then a spread of 1e-200.
        let mut zeros_first = vec![0.0; 20_000];
        zeros_first.extend(tiny.iter().copied());
        mixed.extend((0..n).map(|i| 1e300 * u(i)));
        for (xs, k) in [
            (&huge, 2f64.powi(1000)),
            (&tiny, 2f64.powi(-600)),
            (&mixed, 2f64.powi(900)),
            (&zeros_first, 2f64.powi(-600)),
        ] {
            let mut m = Moments::default();
            for chunk in xs.chunks(12_345) {
                m.add(chunk);
            }
            let scaled: Vec<f64> = xs.iter().map(|x| x / k).collect();
            let (mean, sd) = two_pass(&scaled);
            assert!(m.mean().is_finite() && m.sd().is_finite());
            assert!(
                (m.sd() / (sd * k) - 1.0).abs() < 1e-12,
                "sd {} vs {}",
                m.sd(),
                sd * k
            );
            assert!(
                (m.mean() - mean * k).abs() <= 1e-12 * sd * k,
                "mean {} vs {}",
                m.mean(),
                mean * k
            );
        }
        let mut m = Moments::default();
        m.add(&huge);
        let sd = f64::MAX / 3f64.sqrt();
        assert!((m.sd() / sd - 1.0).abs() < 1e-4, "{} vs {sd}", m.sd());
        assert!(m.mean().abs() < 1e-4 * sd, "{}", m.mean());
    }
}
