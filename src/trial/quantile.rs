//! Exact quantiles of data too large to hold, by radix selection over streamed passes.
//!
//! Each value is mapped to an order-preserving 64-bit key; every pass histograms the next 16
//! bits of the keys that share the prefix found so far, for every wanted rank at once, until the
//! remaining candidates fit in a buffer (2^20 keys). Memory stays at a few histograms and
//! buffers whatever the number of values; a column is read twice for most data, at most five
//! times, and once fewer when the first pass was tallied as the values were written
//! ([`TopCounts`]). A pass over values split into parts (a dataset's files) runs the parts in
//! parallel and merges their counts. Quantiles interpolate linearly between
//! order statistics (type 7, as numpy's default, pandas, polars and DuckDB's `quantile_cont`).

/// Order-preserving key of a finite f64.
fn key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn unkey(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// Candidates at most this many are collected and sorted instead of histogrammed further.
const COLLECT_LIMIT: u64 = 1 << 20;

/// Finds order statistics of the finite values produced by `stream`, which must yield the same
/// values in the same order on every call (it is called several times). NaN values are skipped.
/// Returns `(count, values at the requested 0-based ranks)`; ranks ≥ count give NaN.
pub fn order_statistics<F>(stream: F, ranks: &[u64]) -> (u64, Vec<f64>)
where
    F: FnMut(&mut dyn FnMut(&[f64])),
{
    let (count, _, values) = select(None, sequential(stream), |_| ranks.to_vec());
    (count, values)
}

/// What one pass accumulates: the first pass's counts of the top 16 bits, or a later pass's
/// histograms and candidates. Accumulators of disjoint parts of the values merge.
#[derive(Debug, Clone)]
enum Acc {
    Top(TopCounts),
    Pass(Vec<Group>),
}

impl Acc {
    fn add(&mut self, xs: &[f64]) {
        match self {
            Acc::Top(t) => t.add(xs),
            Acc::Pass(groups) => {
                for &x in xs {
                    if x.is_nan() {
                        continue;
                    }
                    let k = key(x);
                    for g in groups.iter_mut() {
                        if (k >> (64 - g.bits)) != g.prefix {
                            continue;
                        }
                        if g.collect {
                            g.buf.push(k);
                        } else {
                            g.hist[((k << g.bits) >> 48) as usize] += 1;
                        }
                    }
                }
            }
        }
    }

    fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Top(a), Acc::Top(b)) => a.merge(&b),
            (Acc::Pass(a), Acc::Pass(b)) => {
                for (g, h) in a.iter_mut().zip(b) {
                    for (x, y) in g.hist.iter_mut().zip(&h.hist) {
                        *x += y;
                    }
                    g.buf.extend_from_slice(&h.buf);
                }
            }
            _ => unreachable!("accumulators of one pass"),
        }
    }
}

/// The candidates of one prefix in a pass.
#[derive(Debug, Clone)]
struct Group {
    prefix: u64,
    bits: u32,
    collect: bool,
    hist: Vec<u64>,
    buf: Vec<u64>,
}

/// A pass over values streamed one part after another: `stream` yields them all.
fn sequential<F>(mut stream: F) -> impl FnMut(Acc) -> Acc
where
    F: FnMut(&mut dyn FnMut(&[f64])),
{
    move |mut acc| {
        stream(&mut |xs: &[f64]| acc.add(xs));
        acc
    }
}

/// A pass over values split into `parts`, each streamed on its own, in parallel.
fn parallel<S>(parts: &[S]) -> impl FnMut(Acc) -> Acc + '_
where
    S: Fn(&mut dyn FnMut(&[f64])) + Sync,
{
    use rayon::prelude::*;
    move |empty: Acc| {
        parts
            .par_iter()
            .fold(
                || empty.clone(),
                |mut acc, part| {
                    part(&mut |xs: &[f64]| acc.add(xs));
                    acc
                },
            )
            .reduce_with(|mut a, b| {
                a.merge(b);
                a
            })
            .unwrap_or(empty)
    }
}

/// The selection's first pass: counts of the keys' top 16 bits (sign, exponent and four
/// mantissa bits: buckets 1/16 of an octave wide). It can be taken while the values stream past
/// elsewhere (each part's values as it is written) and merged, which saves a pass over them.
/// Kept sparsely, 16 counters per exponent that occurs, so a tally per column is small.
#[derive(Debug, Clone)]
pub struct TopCounts {
    blocks: Vec<Option<Box<[u64; 16]>>>,
}

impl Default for TopCounts {
    fn default() -> Self {
        TopCounts {
            blocks: vec![None; 1 << 12],
        }
    }
}

impl TopCounts {
    /// Counts the non-NaN values of `xs`.
    pub fn add(&mut self, xs: &[f64]) {
        for &x in xs {
            if !x.is_nan() {
                let b = (key(x) >> 48) as usize;
                self.blocks[b >> 4].get_or_insert_with(|| Box::new([0; 16]))[b & 15] += 1;
            }
        }
    }

    /// Adds another tally's counts.
    pub fn merge(&mut self, other: &TopCounts) {
        for (mine, theirs) in self.blocks.iter_mut().zip(&other.blocks) {
            if let Some(t) = theirs {
                let m = mine.get_or_insert_with(|| Box::new([0; 16]));
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a += b;
                }
            }
        }
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.blocks
            .iter()
            .flatten()
            .map(|b| b.iter().sum::<u64>())
            .sum()
    }

    fn dense(&self) -> Vec<u64> {
        let mut top = vec![0u64; 1 << 16];
        for (i, b) in self.blocks.iter().enumerate() {
            if let Some(b) = b {
                top[i * 16..i * 16 + 16].copy_from_slice(&b[..]);
            }
        }
        top
    }
}

/// The selection: the first pass (unless `first` gives it) counts the top 16 bits of every key
/// (which also counts the values, so that `ranks_for(count)` can name the ranks); each later
/// pass serves every distinct prefix the pending ranks have reached, histogramming its next 16
/// bits or, when at most [`COLLECT_LIMIT`] candidates share it, collecting and sorting them.
/// Typically two passes; `pass` runs one, given its empty accumulator. Returns the count, the
/// ranks and their values.
fn select<P>(
    first: Option<&TopCounts>,
    mut pass: P,
    ranks_for: impl FnOnce(u64) -> Vec<u64>,
) -> (u64, Vec<u64>, Vec<f64>)
where
    P: FnMut(Acc) -> Acc,
{
    let top = match first {
        Some(t) => t.dense(),
        None => match pass(Acc::Top(TopCounts::default())) {
            Acc::Top(t) => t.dense(),
            Acc::Pass(_) => unreachable!("a first pass counts"),
        },
    };
    let count: u64 = top.iter().sum();
    let ranks = ranks_for(count);
    /// A rank: the key prefix fixed so far (its bit length), the rank within that prefix and
    /// how many values share the prefix.
    struct Pending {
        prefix: u64,
        bits: u32,
        rank: u64,
        within: u64,
        result: Option<f64>,
    }
    /// Fixes the next 16 bits of `p` from the histogram of its prefix (NaN if the histogram
    /// holds fewer values than the rank: a stream that changed between passes).
    fn descend(p: &mut Pending, hist: &[u64]) {
        let mut acc = 0u64;
        for (bucket, &c) in hist.iter().enumerate() {
            if acc + c > p.rank {
                p.prefix = (p.prefix << 16) | bucket as u64;
                p.bits += 16;
                p.rank -= acc;
                p.within = c;
                return;
            }
            acc += c;
        }
        p.result = Some(f64::NAN);
    }
    let mut pend: Vec<Pending> = ranks
        .iter()
        .map(|&r| {
            let mut p = Pending {
                prefix: 0,
                bits: 0,
                rank: r,
                within: count,
                result: (r >= count).then_some(f64::NAN),
            };
            if p.result.is_none() {
                descend(&mut p, &top);
            }
            p
        })
        .collect();
    drop(top);
    while pend.iter().any(|p| p.result.is_none()) {
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = vec![usize::MAX; pend.len()];
        for (i, p) in pend.iter().enumerate() {
            if p.result.is_some() {
                continue;
            }
            let g = match groups
                .iter()
                .position(|g| g.prefix == p.prefix && g.bits == p.bits)
            {
                Some(g) => g,
                None => {
                    let collect = p.within <= COLLECT_LIMIT || p.bits >= 48;
                    groups.push(Group {
                        prefix: p.prefix,
                        bits: p.bits,
                        collect,
                        hist: if collect {
                            Vec::new()
                        } else {
                            vec![0; 1 << 16]
                        },
                        buf: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            group_of[i] = g;
        }
        let mut groups = match pass(Acc::Pass(groups)) {
            Acc::Pass(g) => g,
            Acc::Top(_) => unreachable!("a later pass selects"),
        };
        for g in groups.iter_mut().filter(|g| g.collect) {
            g.buf.sort_unstable();
        }
        for (p, &g) in pend.iter_mut().zip(&group_of) {
            if g == usize::MAX {
                continue;
            }
            let g = &groups[g];
            if g.collect {
                p.result = Some(g.buf.get(p.rank as usize).map_or(f64::NAN, |&k| unkey(k)));
            } else {
                descend(p, &g.hist);
            }
        }
    }
    let values = pend
        .into_iter()
        .map(|p| p.result.unwrap_or(f64::NAN))
        .collect();
    (count, ranks, values)
}

/// Type-7 quantiles (linear interpolation between order statistics) of the non-NaN values.
pub fn quantiles<F>(stream: F, probs: &[f64]) -> (u64, Vec<f64>)
where
    F: FnMut(&mut dyn FnMut(&[f64])),
{
    quantiles_of(None, sequential(stream), probs)
}

/// [`quantiles`] of values split into `parts`, each a stream of its own, whose first pass,
/// `first`, was taken as they streamed past: the parts must yield the same values. The later
/// passes run the parts in parallel.
pub fn quantiles_after<S>(first: &TopCounts, parts: &[S], probs: &[f64]) -> (u64, Vec<f64>)
where
    S: Fn(&mut dyn FnMut(&[f64])) + Sync,
{
    quantiles_of(Some(first), parallel(parts), probs)
}

fn quantiles_of<P>(first: Option<&TopCounts>, pass: P, probs: &[f64]) -> (u64, Vec<f64>)
where
    P: FnMut(Acc) -> Acc,
{
    // Each probability needs the order statistics on either side of its position.
    let position = |n: u64, p: f64| {
        let h = n.saturating_sub(1) as f64 * p.clamp(0.0, 1.0);
        let lo = h.floor() as u64;
        (lo, h - lo as f64)
    };
    let (n, _, stats) = select(first, pass, |n| {
        probs
            .iter()
            .flat_map(|&p| {
                let (lo, _) = position(n, p);
                [lo, (lo + 1).min(n.saturating_sub(1))]
            })
            .collect()
    });
    if n == 0 {
        return (0, vec![f64::NAN; probs.len()]);
    }
    let q = probs
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let (_, frac) = position(n, p);
            let (a, b) = (stats[2 * i], stats[2 * i + 1]);
            if frac == 0.0 {
                a
            } else {
                a + frac * (b - a)
            }
        })
        .collect();
    (n, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn type7(sorted: &[f64], p: f64) -> f64 {
        let h = (sorted.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
    }

    #[test]
    fn keys_preserve_order() {
        let xs = [
            -f64::INFINITY,
            -1e300,
            -1.0,
            -1e-300,
            -0.0,
            0.0,
            1e-300,
            1.0,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) <= key(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(unkey(key(w[0])).to_bits(), w[0].to_bits());
        }
    }

    #[test]
    fn matches_sorting_on_awkward_data() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut data: Vec<f64> = (0..300_000)
            .map(|i| match i % 5 {
                0 => 0.0,                                // a big tie
                1 => f64::NAN,                           // skipped
                2 => rng.random::<f64>() * 1e-6,         // tiny values
                3 => -rng.random::<f64>() * 50.0,        // negatives
                _ => (rng.random::<f64>() * 30.0).exp(), // heavy tail
            })
            .collect();
        let probs = [0.0, 0.05, 0.5, 0.95, 1.0, 0.333];
        let (n, q) = quantiles(
            |f: &mut dyn FnMut(&[f64])| data.chunks(7919).for_each(&mut *f),
            &probs,
        );
        data.retain(|x| !x.is_nan());
        data.sort_by(f64::total_cmp);
        assert_eq!(n, data.len() as u64);
        for (p, got) in probs.iter().zip(&q) {
            assert_eq!(*got, type7(&data, *p), "p = {p}");
        }
    }

    /// More candidates than a buffer holds under one 16-bit prefix (and under one 32-bit
    /// prefix), with ties: the selection descends further before it collects.
    #[test]
    fn deep_selection_on_a_narrow_range() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut data: Vec<f64> = (0..2_300_000)
            .map(|i| match i % 4 {
                0 => 1.0 + rng.random::<f64>() * 1e-3,
                1 => 1.0 + rng.random::<f64>() * 1e-9,
                2 => 1.0 + (i % 1000) as f64 * 1e-12,
                _ => 1.0,
            })
            .collect();
        let probs = [0.0, 0.05, 0.25, 0.5, 0.7, 0.95, 1.0];
        let (n, q) = quantiles(
            |f: &mut dyn FnMut(&[f64])| data.chunks(65_536).for_each(&mut *f),
            &probs,
        );
        // The same through parts read in parallel, whose histograms and candidates merge.
        let mut first = TopCounts::default();
        first.add(&data);
        let parts: Vec<_> = data
            .chunks(300_001)
            .map(|part| move |f: &mut dyn FnMut(&[f64])| part.chunks(65_536).for_each(&mut *f))
            .collect();
        let (n_par, q_par) = quantiles_after(&first, &parts, &probs);
        data.sort_by(f64::total_cmp);
        assert_eq!(n, data.len() as u64);
        assert_eq!(n_par, n);
        for ((p, got), par) in probs.iter().zip(&q).zip(&q_par) {
            assert_eq!(*got, type7(&data, *p), "p = {p}");
            assert_eq!(*par, *got, "p = {p}, parts in parallel");
        }
    }

    /// A first pass tallied part by part and merged gives the same quantiles as the selection's
    /// own, with one pass fewer.
    #[test]
    fn a_merged_first_pass_saves_a_pass() {
        let mut rng = SmallRng::seed_from_u64(5);
        let data: Vec<f64> = (0..500_000)
            .map(|i| match i % 3 {
                0 => (rng.random::<f64>() * 8.0).exp(),
                1 => -rng.random::<f64>(),
                _ => f64::NAN,
            })
            .collect();
        let mut first = TopCounts::default();
        for part in data.chunks(100_000) {
            let mut t = TopCounts::default();
            for batch in part.chunks(4_099) {
                t.add(batch);
            }
            first.merge(&t);
        }
        assert_eq!(
            first.count(),
            data.iter().filter(|x| !x.is_nan()).count() as u64
        );
        let probs = [0.05, 0.5, 0.95];
        let mut passes = 0;
        let own = quantiles(
            |f: &mut dyn FnMut(&[f64])| {
                passes += 1;
                data.chunks(65_536).for_each(&mut *f)
            },
            &probs,
        );
        // The same values as parts streamed in parallel (each part read once per pass).
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reads = AtomicUsize::new(0);
        let parts: Vec<_> = data
            .chunks(100_000)
            .map(|part| {
                let reads = &reads;
                move |f: &mut dyn FnMut(&[f64])| {
                    reads.fetch_add(1, Ordering::Relaxed);
                    part.chunks(4_099).for_each(&mut *f)
                }
            })
            .collect();
        let after = quantiles_after(&first, &parts, &probs);
        assert_eq!(own, after);
        assert_eq!(reads.load(Ordering::Relaxed), (passes - 1) * parts.len());
    }

    #[test]
    fn empty_and_single() {
        let (n, q) = quantiles(|f: &mut dyn FnMut(&[f64])| f(&[f64::NAN]), &[0.5]);
        assert_eq!(n, 0);
        assert!(q[0].is_nan());
        let (_, q) = quantiles(|f: &mut dyn FnMut(&[f64])| f(&[3.5]), &[0.05, 0.5, 0.95]);
        assert_eq!(q, vec![3.5, 3.5, 3.5]);
    }
}
