//! Univariate sampling: normal and log-normal (optionally truncated), uniform, categorical,
//! empirical quantile tables; the normal CDF and its inverse; Cholesky factors of OMEGA blocks.

use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

/// Φ(x), the standard normal CDF.
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

/// The inverse of [`interp`] for non-decreasing `y`: the first `x` where the interpolant
/// reaches `v` (clamped to the ends of `x`).
pub fn interp_inverse(x: &[f64], y: &[f64], v: f64) -> f64 {
    if v.is_nan() || x.is_empty() {
        return f64::NAN;
    }
    if v <= y[0] {
        return x[0];
    }
    let last = y.len() - 1;
    if v >= y[last] {
        return x[last];
    }
    let i = y.partition_point(|w| *w < v).max(1) - 1;
    let dy = y[i + 1] - y[i];
    if dy <= 0.0 {
        return x[i + 1];
    }
    x[i] + (v - y[i]) / dy * (x[i + 1] - x[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn interpolation_inverts() {
        let (x, y) = ([0.0, 0.5, 1.0], [10.0, 20.0, 20.0 + 1e-12]);
        for v in [10.0, 12.5, 15.0, 19.0, 20.0] {
            assert!((interp(&x, &y, interp_inverse(&x, &y, v)) - v).abs() < 1e-12);
        }
        assert_eq!(interp_inverse(&x, &y, 5.0), 0.0);
        assert_eq!(interp_inverse(&x, &y, 30.0), 1.0);
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
