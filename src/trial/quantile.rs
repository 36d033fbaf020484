//! Exact quantiles of data too large to hold, by radix selection over streamed passes.
//!
//! Each value is mapped to an order-preserving 64-bit key; every pass histograms the next 16
//! bits of the keys that share the prefix found so far, for every wanted rank at once, until the
//! remaining candidates fit in a buffer (2^20 keys). Memory stays at a few histograms and
//! buffers whatever the number of values; a column is read twice for most data, at most five
//! times. A pass over values split into parts (a dataset's files) runs the parts in
//! parallel and merges their counts. Quantiles interpolate linearly between
//! order statistics (type 7, as numpy's default, pandas, polars and DuckDB's `quantile_cont`).
//!
//! Values that stream past in random order (a trial's subjects) usually need no pass at all:
//! [`StreamedQuantiles`] keeps the values near each wanted position as they go by, and falls
//! back to the passes only when those miss. It takes no part of the passes' work while the
//! values stream past (an earlier design counted the first pass's histogram there too), so
//! that the common case, windows that hold the quantiles, costs the least.

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
    let (count, _, values) = select(sequential(stream), |_| ranks.to_vec());
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
/// mantissa bits: buckets 1/16 of an octave wide). Counts of parts of the values merge. Kept
/// sparsely, 16 counters per exponent that occurs, so that a part's counts are small.
#[derive(Debug, Clone)]
struct TopCounts {
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
    fn add(&mut self, xs: &[f64]) {
        for &x in xs {
            if !x.is_nan() {
                let b = (key(x) >> 48) as usize;
                self.blocks[b >> 4].get_or_insert_with(|| Box::new([0; 16]))[b & 15] += 1;
            }
        }
    }

    /// Adds another part's counts.
    fn merge(&mut self, other: &TopCounts) {
        for (mine, theirs) in self.blocks.iter_mut().zip(&other.blocks) {
            if let Some(t) = theirs {
                let m = mine.get_or_insert_with(|| Box::new([0; 16]));
                for (a, b) in m.iter_mut().zip(t.iter()) {
                    *a += b;
                }
            }
        }
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

/// The selection: the first pass counts the top 16 bits of every key
/// (which also counts the values, so that `ranks_for(count)` can name the ranks); each later
/// pass serves every distinct prefix the pending ranks have reached, histogramming its next 16
/// bits or, when at most [`COLLECT_LIMIT`] candidates share it, collecting and sorting them.
/// Typically two passes; `pass` runs one, given its empty accumulator. Returns the count, the
/// ranks and their values.
fn select<P>(mut pass: P, ranks_for: impl FnOnce(u64) -> Vec<u64>) -> (u64, Vec<u64>, Vec<f64>)
where
    P: FnMut(Acc) -> Acc,
{
    let top = match pass(Acc::Top(TopCounts::default())) {
        Acc::Top(t) => t.dense(),
        Acc::Pass(_) => unreachable!("a first pass counts"),
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
    quantiles_of(sequential(stream), probs)
}

/// [`quantiles`] of values split into `parts`, each a stream of its own that yields the same
/// values on every call; each pass runs the parts in parallel.
pub fn quantiles_in_parts<S>(parts: &[S], probs: &[f64]) -> (u64, Vec<f64>)
where
    S: Fn(&mut dyn FnMut(&[f64])) + Sync,
{
    quantiles_of(parallel(parts), probs)
}

/// The 0-based ranks of the order statistics on either side of each probability's position
/// among `n` values, two per probability, and the position's fraction between them.
fn type7_ranks(n: u64, probs: &[f64]) -> Vec<(u64, u64, f64)> {
    probs
        .iter()
        .map(|&p| {
            let h = n.saturating_sub(1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as u64;
            (lo, (lo + 1).min(n.saturating_sub(1)), h - lo as f64)
        })
        .collect()
}

/// Type-7 quantiles from the order statistics at [`type7_ranks`], two per probability.
fn type7_interpolate(n: u64, probs: &[f64], stats: &[f64]) -> Vec<f64> {
    if n == 0 {
        return vec![f64::NAN; probs.len()];
    }
    type7_ranks(n, probs)
        .iter()
        .enumerate()
        .map(|(i, &(_, _, frac))| {
            let (a, b) = (stats[2 * i], stats[2 * i + 1]);
            if frac == 0.0 {
                a
            } else {
                a + frac * (b - a)
            }
        })
        .collect()
}

fn quantiles_of<P>(pass: P, probs: &[f64]) -> (u64, Vec<f64>)
where
    P: FnMut(Acc) -> Acc,
{
    let (n, _, stats) = select(pass, |n| {
        type7_ranks(n, probs)
            .iter()
            .flat_map(|&(lo, hi, _)| [lo, hi])
            .collect()
    });
    (n, type7_interpolate(n, probs, &stats))
}

/// Values kept around each wanted probability's position while the values stream past, so
/// that the quantiles usually need no pass over the values at all.
///
/// Each probability has a window, a range of values: every value in it is kept, the values
/// below it are only counted. Until [`WARM_KEYS`] values have been seen they are all kept,
/// once for every probability; then each window holding more than [`WINDOW_KEYS`] values (and
/// more than twice its target width) is narrowed to the values within [`WINDOW_SIGMAS`]
/// standard errors of the probability's rank among the values seen so far (the standard error
/// of a sample quantile's rank, √(p(1 − p)·n)), so memory grows as √n. At the end the order
/// statistics are read from the windows when their ranks fall inside them, which is certain
/// for data that arrive in random order, as subjects do; otherwise (data sorted by the metric,
/// say) the window is given up and [`quantiles_in_parts`] reads the values again: the result is
/// exact either way (a quantile that is a zero may come back as +0 where the passes would say
/// −0).
/// Tallies of disjoint parts of the values merge (their windows intersect).
#[derive(Debug, Clone)]
pub struct StreamedQuantiles {
    probs: Vec<f64>,
    n: u64,
    /// Every value, while there are fewer than [`WARM_KEYS`] (one window for all the
    /// probabilities); then `None`, and each probability has its window.
    warm: Option<Kept>,
    windows: Vec<Window>,
}

/// A probability's window; `None` once given up.
#[derive(Debug, Clone)]
struct Window {
    p: f64,
    kept: Option<Kept>,
}

/// The values of a window, `lo..=hi`, and the count of values below `lo`. Values equal to a
/// bound are only counted (a metric may have many ties: zero time above a threshold, say), so
/// that ties cost no memory; the values strictly between the bounds are kept. `lo == hi` keeps
/// only the count `at_lo`. Values are compared as numbers with −0 taken as +0 (a NaN is in no
/// window), so that the order is total.
#[derive(Debug, Clone)]
struct Kept {
    lo: f64,
    hi: f64,
    below: u64,
    at_lo: u64,
    at_hi: u64,
    values: Vec<f64>,
}

/// The values kept for all the probabilities at once, at most, before each has its window.
const WARM_KEYS: usize = 1 << 13;

/// A window keeping more values than this (and more than twice its width) is narrowed.
const WINDOW_KEYS: usize = 1 << 11;

/// A narrowed window keeps the values within this many standard errors of the wanted rank.
const WINDOW_SIGMAS: f64 = 8.0;

/// Values are counted into a window this many at a time.
const BLOCK: usize = 16;

impl Kept {
    fn everything() -> Kept {
        Kept {
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
            below: 0,
            at_lo: 0,
            at_hi: 0,
            values: Vec::new(),
        }
    }

    /// Counts or keeps the values of `xs` (NaNs compare false: in no window).
    fn add(&mut self, xs: &[f64]) {
        let (lo, hi) = (self.lo, self.hi);
        // Counting without branches (the place of a value relative to the window is
        // unpredictable), then keeping the values in the window. Four counts of values below
        // or at a bound give the window's counts (a NaN is in none of them).
        let (mut lt_lo, mut le_lo, mut lt_hi, mut le_hi) = (0u64, 0u64, 0u64, 0u64);
        for &x in xs {
            lt_lo += u64::from(x < lo);
            le_lo += u64::from(x <= lo);
            lt_hi += u64::from(x < hi);
            le_hi += u64::from(x <= hi);
        }
        self.below += lt_lo;
        self.at_lo += le_lo - lt_lo;
        if lo == hi {
            return;
        }
        self.at_hi += le_hi - lt_hi;
        let inside = lt_hi - le_lo;
        if inside == 0 {
            return;
        }
        self.values.reserve(inside as usize);
        // Block by block: a block without a value inside is passed over (once a window is
        // narrowed most are, so the branch is predicted well); the values of another are
        // copied with the length advanced for those inside (a branch per value would be
        // mispredicted on `x > lo` for half the values of a median's window before it is
        // narrowed). −0 is kept as +0.
        let mut keep = |b: &[f64]| {
            let mut any = false;
            for &x in b {
                any |= (x > lo) & (x < hi);
            }
            if any {
                let mut kept = [0.0; BLOCK];
                let mut m = 0;
                for (&x, _) in b.iter().zip(0..BLOCK) {
                    kept[m] = x + 0.0;
                    m += usize::from((x > lo) & (x < hi));
                }
                self.values.extend_from_slice(&kept[..m]);
            }
        };
        let (blocks, rest) = xs.as_chunks::<BLOCK>();
        for b in blocks {
            keep(b);
        }
        keep(rest);
    }

    /// How many values the window holds.
    fn len(&self) -> u64 {
        self.at_lo + self.values.len() as u64 + self.at_hi
    }

    /// The `i`-th smallest value of the window (reorders `values`).
    fn nth(&mut self, i: u64) -> f64 {
        if i < self.at_lo {
            self.lo
        } else if i - self.at_lo < self.values.len() as u64 {
            *self
                .values
                .select_nth_unstable_by((i - self.at_lo) as usize, f64::total_cmp)
                .1
        } else {
            self.hi
        }
    }

    /// How many values of the window are below `v`, and how many are equal to it.
    fn rank(&self, v: f64) -> (u64, u64) {
        let at_hi = if self.hi != self.lo { self.at_hi } else { 0 };
        let (mut lt, mut eq) = (0u64, 0u64);
        for &x in &self.values {
            lt += u64::from(x < v);
            eq += u64::from(x == v);
        }
        lt += u64::from(self.lo < v) * self.at_lo + u64::from(self.hi < v) * at_hi;
        eq += u64::from(self.lo == v) * self.at_lo + u64::from(self.hi == v) * at_hi;
        (lt, eq)
    }

    /// Keeps only the values in `lo..=hi`, bounds within the window's, counting those below.
    fn restrict(&mut self, lo: f64, hi: f64) {
        let (below, at_lo) = self.rank(lo);
        let at_hi = if hi == lo { 0 } else { self.rank(hi).1 };
        self.values.retain(|&x| lo < x && x < hi);
        self.values.shrink_to(2 * self.values.len());
        self.below += below;
        (self.lo, self.hi, self.at_lo, self.at_hi) = (lo, hi, at_lo, at_hi);
    }

    /// Narrows to the values within [`WINDOW_SIGMAS`] standard errors of the rank of `p` among
    /// `n` values; `false` if that rank is not in the window (the values do not arrive in
    /// random order), when the window must be given up.
    fn narrow(&mut self, p: f64, n: u64) -> bool {
        let len = self.len() as f64;
        let target = n.saturating_sub(1) as f64 * p.clamp(0.0, 1.0) - self.below as f64;
        if !(0.0..len).contains(&target) {
            return false;
        }
        let half = WINDOW_SIGMAS * (p * (1.0 - p) * n as f64).sqrt() + 2.0;
        if 2.0 * (2.0 * half + 1.0) > self.values.len() as f64 {
            return true;
        }
        // A bound moves only where the window reaches beyond the target's neighbourhood; the
        // new bounds are values of the window.
        let lo = if target - half > 0.0 {
            self.nth((target - half) as u64)
        } else {
            self.lo
        };
        let hi = if target + half < len - 1.0 {
            self.nth((target + half).ceil() as u64)
        } else {
            self.hi
        };
        self.restrict(lo, hi);
        true
    }
}

impl StreamedQuantiles {
    /// Tallies for the quantiles at `probs`.
    pub fn new(probs: &[f64]) -> StreamedQuantiles {
        StreamedQuantiles {
            probs: probs.to_vec(),
            n: 0,
            warm: Some(Kept::everything()),
            windows: Vec::new(),
        }
    }

    /// Counts the non-NaN values of `xs`.
    pub fn add(&mut self, xs: &[f64]) {
        // Pieces no larger than the values kept for all probabilities: the windows are given
        // and narrowed as soon as there are that many.
        for piece in xs.chunks(WARM_KEYS) {
            self.add_piece(piece);
        }
    }

    fn add_piece(&mut self, xs: &[f64]) {
        self.n += xs.iter().filter(|x| !x.is_nan()).count() as u64;
        match &mut self.warm {
            Some(k) => k.add(xs),
            None => {
                for k in self.windows.iter_mut().filter_map(|w| w.kept.as_mut()) {
                    k.add(xs);
                }
            }
        }
        self.narrow();
    }

    /// Gives each probability its window, from the values kept so far for all of them.
    fn split(&mut self) {
        if let Some(warm) = self.warm.take() {
            self.windows = self
                .probs
                .iter()
                .map(|&p| Window {
                    p,
                    kept: Some(warm.clone()),
                })
                .collect();
        }
    }

    /// Narrows the windows that hold too many values (first giving each probability its own,
    /// once the values kept for all of them are too many).
    fn narrow(&mut self) {
        if self
            .warm
            .as_ref()
            .is_some_and(|k| k.values.len() >= WARM_KEYS)
        {
            self.split();
        }
        let n = self.n;
        for w in &mut self.windows {
            if w.kept
                .as_ref()
                .is_some_and(|k| k.values.len() > WINDOW_KEYS)
                && !w.kept.as_mut().is_some_and(|k| k.narrow(w.p, n))
            {
                w.kept = None;
            }
        }
    }

    /// Adds the tally of other values (the same probabilities).
    pub fn merge(&mut self, other: &StreamedQuantiles) {
        assert_eq!(self.probs, other.probs, "tallies of the same quantiles");
        self.n += other.n;
        if let (Some(a), Some(b)) = (&mut self.warm, &other.warm) {
            a.below += b.below;
            a.at_lo += b.at_lo;
            a.at_hi += b.at_hi;
            a.values.extend_from_slice(&b.values);
        } else {
            self.split();
            let mut other = other.clone();
            other.split();
            for (w, o) in self.windows.iter_mut().zip(other.windows) {
                w.kept = match (w.kept.take(), o.kept) {
                    (Some(mut a), Some(mut b)) => {
                        let (lo, hi) = (a.lo.max(b.lo), a.hi.min(b.hi));
                        (lo <= hi).then(|| {
                            a.restrict(lo, hi);
                            b.restrict(lo, hi);
                            a.below += b.below;
                            a.at_lo += b.at_lo;
                            a.at_hi += b.at_hi;
                            a.values.extend_from_slice(&b.values);
                            a
                        })
                    }
                    _ => None,
                };
            }
        }
        self.narrow();
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The quantiles by the selection's passes over the values, streamed again as `parts`
    /// (see [`quantiles_in_parts`]): for when [`Self::quantiles`] says the kept values miss
    /// them.
    pub fn passes_over<S>(&self, parts: &[S]) -> (u64, Vec<f64>)
    where
        S: Fn(&mut dyn FnMut(&[f64])) + Sync,
    {
        quantiles_in_parts(parts, &self.probs)
    }

    /// The quantiles, if every order statistic they need is in a window; `None` if the values
    /// must be read again ([`Self::passes_over`]).
    pub fn quantiles(&self) -> Option<(u64, Vec<f64>)> {
        let n = self.n;
        if n == 0 {
            return Some((0, vec![f64::NAN; self.probs.len()]));
        }
        // Copies of the windows, whose values the selection reorders.
        let kept: Vec<Option<&Kept>> = match &self.warm {
            Some(k) => vec![Some(k)],
            None => self.windows.iter().map(|w| w.kept.as_ref()).collect(),
        };
        let mut copies: Vec<Option<Kept>> = vec![None; kept.len()];
        let mut stats = Vec::with_capacity(2 * self.probs.len());
        for &(lo, hi, _) in &type7_ranks(n, &self.probs) {
            for rank in [lo, hi] {
                // Any window that holds the rank will do (windows may overlap).
                let (i, k) = kept.iter().enumerate().find_map(|(i, k)| {
                    let k = (*k)?;
                    (k.below <= rank && rank - k.below < k.len()).then_some((i, k))
                })?;
                let k = copies[i].get_or_insert_with(|| k.clone());
                let below = k.below;
                stats.push(k.nth(rank - below));
            }
        }
        Some((n, type7_interpolate(n, &self.probs, &stats)))
    }
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

    /// A window keeps the values strictly between its bounds and counts the rest the same way
    /// whether few or many of them fall inside (two code paths), with −0, NaN and infinities.
    #[test]
    fn windows_keep_the_same_values_however_few_are_inside() {
        let specials = [
            -0.0,
            0.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for (lo, hi) in [
            (0.0, 1.0),
            (-1.0, 0.0),
            (f64::NEG_INFINITY, 0.0),
            (2.0, 2.0),
            (-3.0, 5.0),
        ] {
            for inside in [1usize, 400] {
                let mut xs: Vec<f64> = specials.to_vec();
                xs.extend([lo, hi, lo, hi]);
                // Many values outside, some inside.
                xs.extend((0..1000).map(|i| 10.0 + i as f64));
                xs.extend((0..inside).map(|i| {
                    lo.max(-100.0)
                        + (hi.min(100.0) - lo.max(-100.0)) * (i as f64 + 0.5) / inside as f64
                }));
                let mut k = Kept::everything();
                (k.lo, k.hi) = (lo, hi);
                k.add(&xs);
                let mut want: Vec<f64> = xs
                    .iter()
                    .filter(|&&x| lo < x && x < hi)
                    .map(|x| x + 0.0)
                    .collect();
                let mut got = k.values.clone();
                want.sort_by(f64::total_cmp);
                got.sort_by(f64::total_cmp);
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "({lo}, {hi}), {inside} inside"
                );
                assert_eq!(k.below, xs.iter().filter(|&&x| x < lo).count() as u64);
                assert_eq!(k.at_lo, xs.iter().filter(|&&x| x == lo).count() as u64);
                let at_hi = if lo == hi {
                    0
                } else {
                    xs.iter().filter(|&&x| x == hi).count() as u64
                };
                assert_eq!(k.at_hi, at_hi);
            }
        }
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
        let parts: Vec<_> = data
            .chunks(300_001)
            .map(|part| move |f: &mut dyn FnMut(&[f64])| part.chunks(65_536).for_each(&mut *f))
            .collect();
        let (n_par, q_par) = quantiles_in_parts(&parts, &probs);
        data.sort_by(f64::total_cmp);
        assert_eq!(n, data.len() as u64);
        assert_eq!(n_par, n);
        for ((p, got), par) in probs.iter().zip(&q).zip(&q_par) {
            assert_eq!(*got, type7(&data, *p), "p = {p}");
            assert_eq!(*par, *got, "p = {p}, parts in parallel");
        }
    }

    /// Parts streamed in parallel, their counts merged part by part, give the same quantiles
    /// as one stream of the same values, each part read once per pass; the first pass's counts
    /// of parts merge into the counts of the whole.
    #[test]
    fn parts_in_parallel_give_the_quantiles_of_one_stream() {
        let mut rng = SmallRng::seed_from_u64(5);
        let data: Vec<f64> = (0..500_000)
            .map(|i| match i % 3 {
                0 => (rng.random::<f64>() * 8.0).exp(),
                1 => -rng.random::<f64>(),
                _ => f64::NAN,
            })
            .collect();
        let mut whole = TopCounts::default();
        whole.add(&data);
        let mut merged = TopCounts::default();
        for part in data.chunks(100_000) {
            let mut t = TopCounts::default();
            for batch in part.chunks(4_099) {
                t.add(batch);
            }
            merged.merge(&t);
        }
        assert_eq!(merged.dense(), whole.dense());
        assert_eq!(
            whole.dense().iter().sum::<u64>(),
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
        assert_eq!(quantiles_in_parts(&parts, &probs), own);
        assert_eq!(reads.load(Ordering::Relaxed), passes * parts.len());
    }

    /// Exact quantiles of values streamed in `batch`-sized pieces through tallies of `parts`
    /// values each, merged; `None` where the kept keys did not hold them.
    fn streamed(data: &[f64], parts: usize, batch: usize, probs: &[f64]) -> StreamedQuantiles {
        let mut all = StreamedQuantiles::new(probs);
        for part in data.chunks(parts) {
            let mut t = StreamedQuantiles::new(probs);
            for b in part.chunks(batch) {
                t.add(b);
            }
            all.merge(&t);
        }
        all
    }

    fn exact(data: &[f64], probs: &[f64]) -> Vec<f64> {
        let mut sorted: Vec<f64> = data.iter().copied().filter(|x| !x.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        probs.iter().map(|&p| type7(&sorted, p)).collect()
    }

    /// Subjects arrive in random order: the kept keys hold every order statistic the summary
    /// needs (no pass over the values), with ties (zeros, a value clamped at a bound), NaNs,
    /// negatives and a heavy tail, tallied part by part and merged, and the memory they take
    /// stays far below the values'.
    #[test]
    fn streamed_quantiles_need_no_second_pass_for_random_order() {
        let mut rng = SmallRng::seed_from_u64(3);
        let data: Vec<f64> = (0..1_500_000)
            .map(|_| {
                let u = rng.random::<f64>();
                if u < 0.2 {
                    0.0
                } else if u < 0.3 {
                    -0.0
                } else if u < 0.35 {
                    f64::NAN
                } else if u < 0.45 {
                    168.0
                } else if u < 0.5 {
                    -rng.random::<f64>()
                } else {
                    (rng.random::<f64>() * 6.0).exp()
                }
            })
            .collect();
        for probs in [&[0.5, 0.05, 0.95][..], &[0.0, 0.25, 0.3, 0.999, 1.0]] {
            for (parts, batch) in [(1_500_000, 65_536), (200_000, 4_099), (1_000, 7)] {
                let s = streamed(&data, parts, batch, probs);
                let (n, q) = s.quantiles().unwrap_or_else(|| {
                    panic!("probs {probs:?}, parts of {parts}: the kept keys miss a rank")
                });
                assert_eq!(n, data.iter().filter(|x| !x.is_nan()).count() as u64);
                assert_eq!(q, exact(&data, probs), "probs {probs:?}, parts of {parts}");
                // At most twice a window's width or WINDOW_KEYS each, and what one batch
                // added since the last narrowing.
                let kept: usize = s
                    .windows
                    .iter()
                    .map(|w| w.kept.as_ref().map_or(0, |k| k.values.len()))
                    .sum();
                let bound: f64 = probs
                    .iter()
                    .map(|p| {
                        let half = WINDOW_SIGMAS * (p * (1.0 - p) * n as f64).sqrt() + 2.0;
                        (2.0 * (2.0 * half + 1.0)).max(WINDOW_KEYS as f64)
                    })
                    .sum::<f64>()
                    + batch.max(parts.min(WARM_KEYS)) as f64;
                assert!(
                    s.warm.is_none() && kept as f64 <= bound,
                    "{kept} values kept for {n} values (at most {bound})"
                );
            }
        }
    }

    /// Values sorted by themselves (the worst order for windows chosen from the values seen
    /// so far): the kept keys may miss a rank, and then the selection's passes over the values
    /// give the exact quantiles.
    #[test]
    fn streamed_quantiles_fall_back_to_passes_for_sorted_values() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut data: Vec<f64> = (0..400_000).map(|_| rng.random::<f64>() * 100.0).collect();
        let probs = [0.5, 0.05, 0.95];
        let want = exact(&data, &probs);
        for descending in [false, true] {
            data.sort_by(f64::total_cmp);
            if descending {
                data.reverse();
            }
            let s = streamed(&data, 100_000, 65_536, &probs);
            assert!(s.quantiles().is_none(), "sorted values, windows kept");
            let parts: Vec<_> = data
                .chunks(100_000)
                .map(|part| move |f: &mut dyn FnMut(&[f64])| part.chunks(65_536).for_each(&mut *f))
                .collect();
            assert_eq!(s.passes_over(&parts).1, want);
        }
    }

    /// Small tallies keep every key: exact for any order, and for none or one value.
    #[test]
    fn streamed_quantiles_of_few_values_are_exact() {
        let probs = [0.5, 0.05, 0.95];
        // Fewer values than are kept for all probabilities, in parts merged.
        let m = WARM_KEYS - 1;
        let data: Vec<f64> = (0..m).map(|i| ((i * 7919) % m) as f64).collect();
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        for d in [&data, &sorted] {
            let (n, q) = streamed(d, m / 4, 1_000, &probs).quantiles().unwrap();
            assert_eq!((n, q), (m as u64, exact(d, &probs)));
        }
        let (n, q) = streamed(&[f64::NAN], 1, 1, &probs).quantiles().unwrap();
        assert_eq!(n, 0);
        assert!(q.iter().all(|x| x.is_nan()));
        let (_, q) = streamed(&[2.5], 1, 1, &probs).quantiles().unwrap();
        assert_eq!(q, vec![2.5; 3]);
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
