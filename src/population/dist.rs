//! Univariate sampling: normal and log-normal (optionally truncated), uniform, categorical,
//! empirical quantile tables; the normal CDF and its inverse; Cholesky factors of OMEGA blocks.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

/// Φ(x), the standard normal CDF.
/// The power of two 2^e with 2^e ≤ |x| < 2^(e+1), e clamped to the normal exponents, for a
/// finite non-zero x: a unit that values near x can be divided by exactly (the summary of
/// `vpop sample` and sensitivity analyses keep their sums of squares in it, so that values
/// near the ends of the floats neither overflow nor underflow there).
pub fn power_of_two_at(x: f64) -> f64 {
    let e = ((x.to_bits() >> 52) & 0x7ff).clamp(1, 2046);
    f64::from_bits(e << 52)
}

pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// 1 − Φ(x), accurate in the upper tail.
pub fn norm_sf(x: f64) -> f64 {
    0.5 * libm::erfc(x / std::f64::consts::SQRT_2)
}

/// Φ⁻¹(p) by Halley's iteration on the CDF from a logistic-type starting point; accurate to a
/// few ulps over (0, 1). Returns ±∞ at 0 and 1, NaN outside.
pub fn norm_ppf(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        return -norm_ppf_lower(1.0 - p);
    }
    norm_ppf_lower(p)
}

/// Φ⁻¹(p) for p ≤ 0.5 (computed in the lower tail, where p carries full precision).
fn norm_ppf_lower(p: f64) -> f64 {
    // Start: the tail approximation x ≈ −sqrt(−2 ln p) corrected, good to ~1e-2.
    let t = (-2.0 * p.ln()).sqrt();
    let mut x = -(t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t));
    for _ in 0..8 {
        let e = norm_cdf(x) - p;
        let u = e * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
        let step = u / (1.0 + 0.5 * x * u);
        x -= step;
        if step.abs() <= 1e-15 * x.abs().max(1.0) {
            break;
        }
    }
    x
}

/// A standard normal draw truncated to [a, b] (in standard units). Rejection while it is
/// efficient, else exact inverse-CDF sampling in the tail that keeps precision: never loops
/// without bound.
pub fn truncated_std_normal<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() || a >= b {
        return if a == b { a } else { f64::NAN };
    }
    for _ in 0..16 {
        let z: f64 = StandardNormal.sample(rng);
        if z >= a && z <= b {
            return z;
        }
    }
    // So far out that the tail's probability underflows: sampled in the tail itself.
    if a > FAR_TAIL {
        return far_tail(rng, a, b);
    }
    if b < -FAR_TAIL {
        return -far_tail(rng, -b, -a);
    }
    let u: f64 = rng.random();
    if a > 0.0 {
        // Upper tail: work with survival probabilities.
        let (sa, sb) = (norm_sf(a), norm_sf(b));
        let s = sb + u * (sa - sb);
        (-norm_ppf(s)).clamp(a, b)
    } else {
        let (ca, cb) = (norm_cdf(a), norm_cdf(b));
        norm_ppf(ca + u * (cb - ca)).clamp(a, b)
    }
}

/// Where 1 − Φ(a) is too small to hold in an f64 with precision (it is 5.7e-300 at 37).
const FAR_TAIL: f64 = 37.0;

/// A standard normal draw truncated to [a, b] with a > [`FAR_TAIL`], by rejection from an
/// exponential proposal on [a, ∞) with the optimal rate, or from a uniform one on [a, b] when
/// the interval is narrow (Robert 1995, Statistics and Computing 5:121, "Simulation of
/// truncated normal variables"). Each try is accepted with a probability above a third, so the
/// bound on tries is never reached in practice; past it, the draw is the interval's start.
fn far_tail<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let narrow = b - a < 2.0 / a;
    let alpha = 0.5 * (a + (a * a + 4.0).sqrt());
    for _ in 0..1000 {
        let (u1, u2): (f64, f64) = (rng.random(), rng.random());
        let (z, log_accept) = if narrow {
            let z = a + u1 * (b - a);
            (z, 0.5 * (a - z) * (a + z))
        } else {
            let z = a - (1.0 - u1).ln() / alpha;
            (z, -0.5 * (z - alpha) * (z - alpha))
        };
        if z <= b && (1.0 - u2).ln() <= log_accept {
            return z;
        }
    }
    a
}

/// Lower-triangular Cholesky factor of a symmetric positive semi-definite matrix (row-major).
/// Zero-variance directions are allowed (their column is zero). Errors name the first pivot
/// that shows the matrix is not positive semi-definite, or the first asymmetric entry.
pub fn cholesky_psd(m: &[f64], n: usize) -> Result<Vec<f64>, String> {
    let scale = (0..n)
        .map(|i| m[i * n + i].abs())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    for i in 0..n {
        for j in 0..i {
            let (a, b) = (m[i * n + j], m[j * n + i]);
            if (a - b).abs() > 1e-12 * scale {
                return Err(format!(
                    "the matrix is not symmetric: entry ({}, {}) = {a} but ({}, {}) = {b}",
                    i + 1,
                    j + 1,
                    j + 1,
                    i + 1
                ));
            }
        }
        if !m[i * n + i].is_finite() || m[i * n + i] < 0.0 {
            return Err(format!(
                "variance {} on the diagonal (position {}) must be ≥ 0",
                m[i * n + i],
                i + 1
            ));
        }
    }
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let mut d = m[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d < -1e-10 * scale {
            return Err(format!("the matrix is not positive semi-definite (pivot {} is {d:.3e} < 0): check the correlations", j + 1));
        }
        let d = d.max(0.0).sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = m[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if d > 1e-150 {
                s / d
            } else if s.abs() > 1e-10 * scale {
                return Err(format!("the matrix is not positive semi-definite (a zero variance at {} with nonzero covariance)", j + 1));
            } else {
                0.0
            };
        }
    }
    Ok(l)
}

/// Linear interpolation of y over sorted x, clamped at the ends.
pub fn interp(x: &[f64], y: &[f64], at: f64) -> f64 {
    if at.is_nan() || x.is_empty() {
        return f64::NAN;
    }
    if at <= x[0] {
        return y[0];
    }
    let last = x.len() - 1;
    if at >= x[last] {
        return y[last];
    }
    let i = x.partition_point(|v| *v <= at) - 1;
    let w = (at - x[i]) / (x[i + 1] - x[i]);
    y[i] + w * (y[i + 1] - y[i])
}

/// For the quantile function Q that [`interp`] makes of non-decreasing `values` at `levels`
/// (held at the first value below the first level and at the last above the last level: the
/// tails' point masses), the least level u in [0, 1] with Q(u) ≥ `v`: a draw Q(U), U uniform,
/// is at least `v` exactly when U ≥ u. 0 where every value is at least `v` (the lower tail
/// included); on a flat stretch of values equal to `v`, its first level; 1 where no value
/// reaches `v`.
pub fn level_at_least(levels: &[f64], values: &[f64], v: f64) -> f64 {
    if v.is_nan() || values.is_empty() {
        return f64::NAN;
    }
    let last = values.len() - 1;
    if v <= values[0] {
        return 0.0;
    }
    if v > values[last] {
        return 1.0;
    }
    // values[i] < v ≤ values[i + 1].
    let i = values.partition_point(|w| *w < v) - 1;
    if v == values[i + 1] {
        return levels[i + 1];
    }
    levels[i] + (v - values[i]) / (values[i + 1] - values[i]) * (levels[i + 1] - levels[i])
}

/// For the quantile function Q of [`level_at_least`], the greatest level u in [0, 1] with
/// Q(u) ≤ `v`: a draw Q(U) is at most `v` exactly when U ≤ u. 1 where every value is at most
/// `v` (the upper tail included); on a flat stretch of values equal to `v`, its last level; 0
/// where no value is as small as `v`.
pub fn level_at_most(levels: &[f64], values: &[f64], v: f64) -> f64 {
    if v.is_nan() || values.is_empty() {
        return f64::NAN;
    }
    let last = values.len() - 1;
    if v >= values[last] {
        return 1.0;
    }
    if v < values[0] {
        return 0.0;
    }
    // values[j] ≤ v < values[j + 1].
    let j = values.partition_point(|w| *w <= v) - 1;
    if v == values[j] {
        return levels[j];
    }
    levels[j] + (v - values[j]) / (values[j + 1] - values[j]) * (levels[j + 1] - levels[j])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn interpolation_inverts() {
        let (x, y) = ([0.0, 0.5, 1.0], [10.0, 20.0, 20.0 + 1e-12]);
        for v in [12.5, 15.0, 19.0, 20.0] {
            for u in [level_at_least(&x, &y, v), level_at_most(&x, &y, v)] {
                assert!((interp(&x, &y, u) - v).abs() < 1e-12, "{v}: {u}");
            }
        }
        assert_eq!(level_at_least(&x, &y, 5.0), 0.0);
        assert_eq!(level_at_most(&x, &y, 30.0), 1.0);
    }

    /// The probability that a draw Q(U), U uniform on [0, 1], of the quantile function
    /// (`levels`, `values`) truncated to [lo, hi] equals `x`: the share of the levels between
    /// those of the bounds at which Q is `x`, from Q's own values (held beyond the first and
    /// last levels) by exact integration of the indicator over its linear pieces.
    fn truncated_mass(levels: &[f64], values: &[f64], lo: f64, hi: f64, x: f64) -> f64 {
        let (a, b) = (
            level_at_least(levels, values, lo),
            level_at_most(levels, values, hi),
        );
        // Q = x on [0, first level] (x the first value), on [last level, 1] (the last) and on
        // every piece between equal values.
        let mut knots = vec![0.0];
        knots.extend_from_slice(levels);
        knots.push(1.0);
        let mut at = values.to_vec();
        at.insert(0, values[0]);
        at.push(values[values.len() - 1]);
        let mut mass = 0.0;
        for k in 0..knots.len() - 1 {
            if at[k] == x && at[k + 1] == x {
                mass += (knots[k + 1].min(b) - knots[k].max(a)).max(0.0);
            }
        }
        mass / (b - a)
    }

    /// Bounds on an empirical table keep the point masses at its tails and at tied values:
    /// bounds that exclude nothing leave every level, a bound on a tied value keeps the whole
    /// stretch, and a binding bound renormalises what it keeps (the probabilities exact, from
    /// the levels of the bounds).
    #[test]
    fn bounds_keep_the_tails_and_ties_of_an_empirical_table() {
        let (q, v) = ([0.1, 0.5, 0.9], [10.0, 20.0, 30.0]);
        // Bounds that exclude nothing: all of [0, 1], tails of 10 % at 10 and at 30.
        for (lo, hi) in [
            (f64::NEG_INFINITY, f64::INFINITY),
            (0.0, 1000.0),
            (10.0, 30.0),
        ] {
            assert_eq!(level_at_least(&q, &v, lo), 0.0, "lo {lo}");
            assert_eq!(level_at_most(&q, &v, hi), 1.0, "hi {hi}");
            assert!((truncated_mass(&q, &v, lo, hi, 10.0) - 0.1).abs() < 1e-15);
            assert!((truncated_mass(&q, &v, lo, hi, 30.0) - 0.1).abs() < 1e-15);
        }
        // X | X ≥ 25: levels [0.7, 1], P(X = 30) = 0.1 / 0.3.
        assert!((level_at_least(&q, &v, 25.0) - 0.7).abs() < 1e-15);
        assert!((truncated_mass(&q, &v, 25.0, f64::INFINITY, 30.0) - 1.0 / 3.0).abs() < 1e-15);
        // X | X ≤ 15: levels [0, 0.3], P(X = 10) = 0.1 / 0.3.
        assert!((level_at_most(&q, &v, 15.0) - 0.3).abs() < 1e-15);
        assert!((truncated_mass(&q, &v, f64::NEG_INFINITY, 15.0, 10.0) - 1.0 / 3.0).abs() < 1e-15);
        // A bound at the least or greatest value keeps that value's tail only.
        assert_eq!(level_at_most(&q, &v, 10.0), 0.1);
        assert!((truncated_mass(&q, &v, f64::NEG_INFINITY, 10.0, 10.0) - 1.0).abs() < 1e-15);
        assert_eq!(level_at_least(&q, &v, 30.0), 0.9);
        assert!((truncated_mass(&q, &v, 30.0, f64::INFINITY, 30.0) - 1.0).abs() < 1e-15);
        // Tied values 20 over levels 0.4–0.6: a bound at 20 keeps the whole stretch.
        let (q, v) = ([0.1, 0.4, 0.6, 0.9], [10.0, 20.0, 20.0, 30.0]);
        assert_eq!(level_at_most(&q, &v, 20.0), 0.6);
        assert_eq!(level_at_least(&q, &v, 20.0), 0.4);
        let hi20 = |x| truncated_mass(&q, &v, f64::NEG_INFINITY, 20.0, x);
        assert!((hi20(20.0) - 0.2 / 0.6).abs() < 1e-15);
        assert!((hi20(10.0) - 0.1 / 0.6).abs() < 1e-15);
        let lo20 = |x| truncated_mass(&q, &v, 20.0, f64::INFINITY, x);
        assert!((lo20(20.0) - 0.2 / 0.6).abs() < 1e-15);
        assert!((lo20(30.0) - 0.1 / 0.6).abs() < 1e-15);
        // Ties at the ends of the table: the stretch and the tail beyond it together.
        let (q, v) = ([0.1, 0.3, 0.7, 0.9], [10.0, 10.0, 30.0, 30.0]);
        assert_eq!(level_at_most(&q, &v, 10.0), 0.3);
        assert_eq!(level_at_least(&q, &v, 30.0), 0.7);
        assert_eq!(level_at_least(&q, &v, 10.0), 0.0);
        assert_eq!(level_at_most(&q, &v, 30.0), 1.0);
        // Outside the table: nothing left (the sampler refuses the bound).
        assert_eq!(level_at_least(&q, &v, 31.0), 1.0);
        assert_eq!(level_at_most(&q, &v, 9.0), 0.0);
        assert!(level_at_least(&q, &v, f64::NAN).is_nan());
    }

    #[test]
    fn normal_quantiles_match_published_values() {
        // Standard normal quantiles (e.g. Abramowitz & Stegun, Table 26.5).
        for (p, z) in [
            (0.975, 1.959963984540054),
            (0.5, 0.0),
            (0.95, 1.6448536269514722),
            (1e-10, -6.361340902404056),
        ] {
            assert!(
                (norm_ppf(p) - z).abs() < 1e-12,
                "{p}: {} vs {z}",
                norm_ppf(p)
            );
        }
        for x in [-8.0, -3.0, -0.5, 0.0, 0.7, 2.0, 6.5] {
            // Round trip in the tail that keeps precision.
            let back = if x <= 0.0 {
                norm_ppf(norm_cdf(x))
            } else {
                -norm_ppf(norm_sf(x))
            };
            assert!((back - x).abs() < 1e-9 * x.abs().max(1.0), "{x}: {back}");
        }
    }

    #[test]
    fn truncated_draws_respect_bounds_even_far_in_the_tail() {
        let mut rng = SmallRng::seed_from_u64(1);
        for (a, b) in [
            (-1.0, 1.0),
            (3.0, 3.5),
            (8.0, 9.0),
            (-12.0, -10.0),
            (0.0, f64::INFINITY),
        ] {
            for _ in 0..2000 {
                let z = truncated_std_normal(&mut rng, a, b);
                assert!(z >= a && z <= b, "{z} outside [{a}, {b}]");
            }
        }
    }

    /// Where the tail's probability underflows, draws still follow the truncated normal: their
    /// mean and standard deviation against the density's own moments by quadrature, for an
    /// open tail, a narrow and a wide interval, the mirrored lower tail, and on both sides of
    /// the switch to sampling in the tail.
    #[test]
    fn far_tail_draws_follow_the_truncated_density() {
        // Moments of z = a + t on [a, b], density ∝ exp(−a t − t²/2), by Simpson's rule.
        let moments = |a: f64, b: f64| {
            let hi = (b - a).min(60.0 / a);
            let n = 20_000;
            let h = hi / n as f64;
            let (mut w, mut m1, mut m2) = (0.0, 0.0, 0.0);
            for i in 0..=n {
                let t = i as f64 * h;
                let c = if i == 0 || i == n {
                    1.0
                } else {
                    2.0 + 2.0 * (i % 2) as f64
                };
                let d = c * (-a * t - 0.5 * t * t).exp();
                w += d;
                m1 += d * t;
                m2 += d * t * t;
            }
            let mean = m1 / w;
            (a + mean, (m2 / w - mean * mean).sqrt())
        };
        let mut rng = SmallRng::seed_from_u64(3);
        for (a, b, mirrored) in [
            (40.0, 1e300, false),
            (40.0, f64::INFINITY, true),
            (40.0, 40.01, false),
            (45.0, 45.2, false),
            (36.9, f64::INFINITY, false),
            (37.1, f64::INFINITY, false),
            (300.0, 1e300, false),
        ] {
            let n = 20_000;
            let draws: Vec<f64> = (0..n)
                .map(|_| match mirrored {
                    false => truncated_std_normal(&mut rng, a, b),
                    true => -truncated_std_normal(&mut rng, -b, -a),
                })
                .collect();
            assert!(draws.iter().all(|z| *z >= a && *z <= b), "[{a}, {b}]");
            let mean = draws.iter().sum::<f64>() / n as f64;
            let sd = (draws.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            let (m, s) = moments(a, b);
            assert!(
                (mean - m).abs() < 5.0 * s / (n as f64).sqrt(),
                "[{a}, {b}]: mean {mean} vs {m}"
            );
            assert!((sd / s - 1.0).abs() < 0.05, "[{a}, {b}]: sd {sd} vs {s}");
        }
    }

    #[test]
    fn cholesky_accepts_psd_and_rejects_the_rest() {
        let m = [0.09, 0.03, 0.03, 0.04];
        let l = cholesky_psd(&m, 2).unwrap();
        assert!((l[0] * l[0] - 0.09).abs() < 1e-15 && (l[2] * l[0] - 0.03).abs() < 1e-15);
        assert!(cholesky_psd(&[1.0, 0.0, 0.0, 0.0], 2).is_ok()); // a zero variance
        assert!(cholesky_psd(&[1.0, 2.0, 2.0, 1.0], 2)
            .unwrap_err()
            .contains("positive semi-definite"));
        assert!(cholesky_psd(&[1.0, 0.1, 0.2, 1.0], 2)
            .unwrap_err()
            .contains("symmetric"));
        assert!(cholesky_psd(&[-1.0], 1).unwrap_err().contains("≥ 0"));
    }
}
