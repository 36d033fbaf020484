//! Exact quantiles of data too large to hold, by radix selection over streamed passes.
//!
//! Each value is mapped to an order-preserving 64-bit key; every pass histograms the next 16
//! bits of the keys that share the prefix found so far, for every wanted rank at once, until the
//! remaining candidates fit in a small buffer. Memory stays at a few histograms whatever the
//! number of values; a column is read at most four times. Quantiles interpolate linearly between
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

/// Candidates below this count are collected and sorted instead of histogrammed further.
const COLLECT_LIMIT: u64 = 1 << 16;

/// Finds order statistics of the finite values produced by `stream`, which must yield the same
/// values in the same order on every call (it is called several times). NaN values are skipped.
/// Returns `(count, values at the requested 0-based ranks)`; ranks ≥ count give NaN.
pub fn order_statistics<F>(mut stream: F, ranks: &[u64]) -> (u64, Vec<f64>)
where
    F: FnMut(&mut dyn FnMut(&[f64])),
{
    let mut count = 0u64;
    stream(&mut |xs: &[f64]| count += xs.iter().filter(|x| !x.is_nan()).count() as u64);
    // Per rank: the key prefix fixed so far (its bit length) and the rank within that prefix.
    struct Pending {
        prefix: u64,
        bits: u32,
        rank: u64,
        result: Option<f64>,
    }
    let mut pend: Vec<Pending> = ranks
        .iter()
        .map(|&r| Pending {
            prefix: 0,
            bits: 0,
            rank: r,
            result: if r >= count { Some(f64::NAN) } else { None },
        })
        .collect();
    let matches = |k: u64, prefix: u64, bits: u32| bits == 0 || (k >> (64 - bits)) == prefix;
    let mut in_prefix = vec![count; pend.len()];
    while pend.iter().any(|p| p.result.is_none()) {
        // Collect where few candidates remain; histogram the next 16 bits elsewhere.
        let collect: Vec<bool> = pend
            .iter()
            .zip(&in_prefix)
            .map(|(p, n)| p.result.is_none() && (*n <= COLLECT_LIMIT || p.bits >= 48))
            .collect();
        let mut hist: Vec<Vec<u64>> = pend
            .iter()
            .zip(&collect)
            .map(|(p, c)| {
                if p.result.is_none() && !c {
                    vec![0u64; 1 << 16]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut bufs: Vec<Vec<u64>> = vec![Vec::new(); pend.len()];
        stream(&mut |xs: &[f64]| {
            for &x in xs {
                if x.is_nan() {
                    continue;
                }
                let k = key(x);
                for (i, p) in pend.iter().enumerate() {
                    if p.result.is_some() || !matches(k, p.prefix, p.bits) {
                        continue;
                    }
                    if collect[i] {
                        bufs[i].push(k);
                    } else {
                        hist[i][((k << p.bits) >> 48) as usize] += 1;
                    }
                }
            }
        });
        for (i, p) in pend.iter_mut().enumerate() {
            if p.result.is_some() {
                continue;
            }
            if collect[i] {
                let b = &mut bufs[i];
                b.sort_unstable();
                p.result = Some(unkey(b[p.rank as usize]));
                continue;
            }
            let mut acc = 0u64;
            for (bucket, &c) in hist[i].iter().enumerate() {
                if acc + c > p.rank {
                    p.prefix = (p.prefix << 16) | bucket as u64;
                    p.bits += 16;
                    p.rank -= acc;
                    in_prefix[i] = c;
                    break;
                }
                acc += c;
            }
        }
    }
    (
        count,
        pend.into_iter()
            .map(|p| p.result.unwrap_or(f64::NAN))
            .collect(),
    )
}

/// Type-7 quantiles (linear interpolation between order statistics) of the non-NaN values.
pub fn quantiles<F>(stream: F, probs: &[f64]) -> (u64, Vec<f64>)
where
    F: FnMut(&mut dyn FnMut(&[f64])),
{
    // First find the count, so that ranks are known; order_statistics counts again, which is
    // cheap next to the selection passes.
    let mut stream = stream;
    let mut n = 0u64;
    stream(&mut |xs: &[f64]| n += xs.iter().filter(|x| !x.is_nan()).count() as u64);
    if n == 0 {
        return (0, vec![f64::NAN; probs.len()]);
    }
    let mut ranks = Vec::new();
    let pos: Vec<(u64, f64)> = probs
        .iter()
        .map(|&p| {
            let h = (n - 1) as f64 * p.clamp(0.0, 1.0);
            let lo = h.floor() as u64;
            (lo, h - lo as f64)
        })
        .collect();
    for &(lo, _) in &pos {
        ranks.push(lo);
        ranks.push((lo + 1).min(n - 1));
    }
    let (_, stats) = order_statistics(stream, &ranks);
    let q = pos
        .iter()
        .enumerate()
        .map(|(i, &(_, frac))| {
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

    #[test]
    fn empty_and_single() {
        let (n, q) = quantiles(|f: &mut dyn FnMut(&[f64])| f(&[f64::NAN]), &[0.5]);
        assert_eq!(n, 0);
        assert!(q[0].is_nan());
        let (_, q) = quantiles(|f: &mut dyn FnMut(&[f64])| f(&[3.5]), &[0.05, 0.5, 0.95]);
        assert_eq!(q, vec![3.5, 3.5, 3.5]);
    }
}
