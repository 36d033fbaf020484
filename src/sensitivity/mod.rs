//! Global sensitivity analysis: designs (Saltelli's scheme on a scrambled Sobol' sequence,
//! Morris trajectories, eFAST search curves) in the unit hypercube, and the estimators of the
//! indices from the model outputs.
//!
//! The designs' row layouts and the estimators follow SALib (Herman & Usher, 2017), so that a
//! design and its outputs can be handed to SALib's `sobol.analyze`, `morris.analyze` and
//! `fast.analyze` and give the same indices (tests/sensitivity.rs checks it to 1e-10):
//! - Sobol: first order by Saltelli et al. (2010), total order by Jansen (1999), both on outputs
//!   standardised by their mean and standard deviation and divided by the variance of the A
//!   and B rows; bootstrap confidence intervals z·sd of the resampled estimates.
//! - Morris (1991) with Campolongo et al.'s (2007) μ*: elementary effects (y(x_i high) −
//!   y(x_i low)) / Δ with Δ = p / (2(p − 1)) in unit-cube units; μ, μ*, σ (n − 1); a bootstrap
//!   confidence interval of μ*.
//! - eFAST (Saltelli, Tarantola & Chan, 1999): for each factor a block of N points on a search
//!   curve where it oscillates at ω = ⌊(N − 1)/(2M)⌋ and the others at low frequencies; first
//!   order from the power at the first M harmonics of ω, total from the power below ω/2;
//!   confidence intervals from the indices of contiguous half-curves, as SALib 1.6 draws them.
//!
//! The confidence intervals resample as SALib does, so they agree with SALib's up to the
//! resampling's own noise (the random draws differ).
//!
//! This module knows nothing about models: [`run`] maps a design onto model parameters and
//! evaluates it through the trial backends.

pub mod run;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// The design method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Sobol,
    Morris,
    Efast,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s.to_ascii_lowercase().as_str() {
            "sobol" | "saltelli" => Method::Sobol,
            "morris" => Method::Morris,
            "efast" | "fast" => Method::Efast,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Sobol => "sobol",
            Method::Morris => "morris",
            Method::Efast => "efast",
        }
    }
}

/// Points in the unit hypercube, row-major `rows × k`.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub method: Method,
    pub k: usize,
    pub rows: usize,
    pub x: Vec<f64>,
    /// Sobol: base samples N; Morris: trajectories r; eFAST: points per factor N.
    pub n: usize,
    /// Morris: number of grid levels p; eFAST: interference factor M.
    pub param: usize,
}

impl Design {
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.k..(i + 1) * self.k]
    }
}

/// Why a design cannot be made, by the setting it is about (so that a spec can point at it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesignError {
    /// The number of factors.
    #[error("{0}")]
    Factors(String),
    /// The design's size: base samples, trajectories or points per factor.
    #[error("{0}")]
    Samples(String),
    /// Morris grid levels.
    #[error("{0}")]
    Levels(String),
    /// The eFAST interference factor M.
    #[error("{0}")]
    Interference(String),
}

/// Largest Sobol' sequence length and dimension of the scrambled generator.
pub const SOBOL_MAX_N: usize = 1 << 16;
pub const SOBOL_MAX_FACTORS: usize = 128;

/// Saltelli's scheme: for each of `n` Owen-scrambled Sobol' points in 2k dimensions (A from
/// the first k, B from the last k), the rows A, AB₁ … AB_k (A with column j from B), B:
/// `n · (k + 2)` rows.
pub fn sobol_design(k: usize, n: usize, seed: u64) -> Result<Design, DesignError> {
    if k == 0 || k > SOBOL_MAX_FACTORS {
        return Err(DesignError::Factors(format!(
            "Sobol designs take 1 to {SOBOL_MAX_FACTORS} factors, not {k}"
        )));
    }
    if !(2..=SOBOL_MAX_N).contains(&n) {
        return Err(DesignError::Samples(format!(
            "Sobol designs take 2 to {SOBOL_MAX_N} base samples, not {n}"
        )));
    }
    let seed = (seed ^ (seed >> 32)) as u32;
    let rows = n * (k + 2);
    let mut x = vec![0.0; rows * k];
    for i in 0..n {
        let a: Vec<f64> = (0..k)
            .map(|j| f64::from(sobol_burley::sample(i as u32, j as u32, seed)))
            .collect();
        let b: Vec<f64> = (0..k)
            .map(|j| f64::from(sobol_burley::sample(i as u32, (k + j) as u32, seed)))
            .collect();
        let base = i * (k + 2);
        x[base * k..(base + 1) * k].copy_from_slice(&a);
        for j in 0..k {
            let r = base + 1 + j;
            let row = &mut x[r * k..(r + 1) * k];
            row.copy_from_slice(&a);
            row[j] = b[j];
        }
        let r = base + k + 1;
        x[r * k..(r + 1) * k].copy_from_slice(&b);
    }
    Ok(Design {
        method: Method::Sobol,
        k,
        rows,
        x,
        n,
        param: 0,
    })
}

/// Morris trajectories: `r` trajectories of k + 1 points on a grid of `p` levels (p even),
/// each moving one factor by Δ = p / (2(p − 1)) at a time, in random order.
pub fn morris_design(k: usize, r: usize, p: usize, seed: u64) -> Result<Design, DesignError> {
    if k == 0 {
        return Err(DesignError::Factors(
            "a Morris design needs at least one factor".into(),
        ));
    }
    if !(2..=MORRIS_MAX_TRAJECTORIES).contains(&r) {
        return Err(DesignError::Samples(format!(
            "Morris designs take 2 to {MORRIS_MAX_TRAJECTORIES} trajectories, not {r}"
        )));
    }
    if p < 2 || !p.is_multiple_of(2) {
        return Err(DesignError::Levels(format!(
            "Morris levels must be even and at least 2, not {p}"
        )));
    }
    let delta = morris_delta(p);
    let step = 1.0 / (p - 1) as f64;
    let mut rng = SmallRng::seed_from_u64(seed);
    let rows = r * (k + 1);
    let mut x = Vec::with_capacity(rows * k);
    for _ in 0..r {
        let mut pt: Vec<f64> = (0..k)
            .map(|_| rng.random_range(0..p) as f64 * step)
            .collect();
        x.extend_from_slice(&pt);
        let mut order: Vec<usize> = (0..k).collect();
        for i in (1..k).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        for &i in &order {
            // With p even every level has exactly one neighbour Δ away inside [0, 1].
            if pt[i] + delta <= 1.0 + 1e-12 {
                pt[i] += delta;
            } else {
                pt[i] -= delta;
            }
            pt[i] = pt[i].clamp(0.0, 1.0);
            x.extend_from_slice(&pt);
        }
    }
    Ok(Design {
        method: Method::Morris,
        k,
        rows,
        x,
        n: r,
        param: p,
    })
}

/// The most Morris trajectories r a design takes (r·(k + 1) evaluations).
pub const MORRIS_MAX_TRAJECTORIES: usize = 65_536;

/// The most eFAST points per factor N a design takes (N·k evaluations).
pub const EFAST_MAX_N: usize = 1 << 20;

/// The most resamples for confidence intervals.
pub const MAX_RESAMPLES: usize = 100_000;

/// Δ of a Morris grid with `p` levels.
pub fn morris_delta(p: usize) -> f64 {
    p as f64 / (2.0 * (p as f64 - 1.0))
}

/// The eFAST frequencies: ω₀ for the factor of interest, then the k − 1 complementary ones.
fn efast_omegas(k: usize, n: usize, m: usize) -> (usize, Vec<usize>) {
    let omega0 = (n - 1) / (2 * m);
    let mm = omega0 / (2 * m);
    let others = if k < 2 {
        Vec::new()
    } else if mm >= k - 1 {
        // ⌊linspace(1, mm, k − 1)⌋.
        (0..k - 1)
            .map(|i| {
                if k == 2 {
                    1
                } else {
                    (1.0 + (mm as f64 - 1.0) * i as f64 / (k - 2) as f64).floor() as usize
                }
            })
            .collect()
    } else {
        (0..k - 1).map(|i| i % mm.max(1) + 1).collect()
    };
    (omega0, others)
}

/// eFAST: k blocks of `n` points; in block i factor i runs at frequency ω₀, the others at the
/// complementary frequencies, each block with a random phase shift.
pub fn efast_design(k: usize, n: usize, m: usize, seed: u64) -> Result<Design, DesignError> {
    if k == 0 {
        return Err(DesignError::Factors(
            "an eFAST design needs at least one factor".into(),
        ));
    }
    if m == 0 {
        return Err(DesignError::Interference(
            "the eFAST interference factor M must be at least 1".into(),
        ));
    }
    if n > EFAST_MAX_N {
        return Err(DesignError::Samples(format!(
            "eFAST designs take at most {EFAST_MAX_N} points per factor, not {n}"
        )));
    }
    // Too few points for M: reported as a matter of the points (`samples`), the setting that
    // is usually sized to M.
    if n <= 4 * m * m {
        return Err(DesignError::Samples(format!(
            "eFAST needs more than 4·M² = {} points per factor (M = {m}), not {n}",
            4 * m * m
        )));
    }
    // The complementary factors take ⌊⌊(N − 1)/2M⌋/2M⌋ distinct frequencies; with fewer than
    // k − 1 of them, factors share a frequency and, in a block's one phase, take identical
    // values: the design no longer samples them independently, and the indices are wrong
    // (6 additive factors at N = 129, M = 4: S1 summing to 0.62, not 1).
    let least = 4 * m * m * (k - 1) + 1;
    if k > 2 && n < least {
        return Err(DesignError::Samples(format!(
            "eFAST with {k} factors needs at least 4·M²·(k − 1) + 1 = {least} points per factor \
             (M = {m}), not {n}: with fewer, factors share a frequency and the design does not \
             vary them independently"
        )));
    }
    let (omega0, others) = efast_omegas(k, n, m);
    let mut rng = SmallRng::seed_from_u64(seed);
    let rows = n * k;
    let mut x = vec![0.0; rows * k];
    for i in 0..k {
        let mut omega = vec![0usize; k];
        omega[i] = omega0;
        let mut o = others.iter();
        for (j, w) in omega.iter_mut().enumerate() {
            if j != i {
                *w = *o.next().unwrap_or(&1);
            }
        }
        let phi = 2.0 * std::f64::consts::PI * rng.random::<f64>();
        for s_idx in 0..n {
            let s = 2.0 * std::f64::consts::PI / n as f64 * s_idx as f64;
            let row = i * n + s_idx;
            for j in 0..k {
                let g = 0.5 + ((omega[j] as f64 * s + phi).sin()).asin() / std::f64::consts::PI;
                x[row * k + j] = g;
            }
        }
    }
    Ok(Design {
        method: Method::Efast,
        k,
        rows,
        x,
        n,
        param: m,
    })
}

/// Indices of one output.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Indices {
    /// Per factor: (name of the index, value, confidence half-width or NaN).
    pub values: Vec<Vec<(&'static str, f64, f64)>>,
}

/// Confidence half-width z·sd of resampled estimates (NaN with fewer than two).
fn half_width(z: f64, resampled: &[f64]) -> f64 {
    if resampled.len() > 1 {
        z * sd1(resampled)
    } else {
        f64::NAN
    }
}

/// z of a two-sided confidence level.
fn z_of(conf: f64) -> f64 {
    crate::population::dist::norm_ppf(0.5 + conf / 2.0)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Population variance.
fn var(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64
}

/// Sample standard deviation (n − 1).
fn sd1(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt()
}

/// The magnitude of `y`'s values, mean |y|: the scale of rounding, and of a solver's error
/// (relative to each value, so an output of either sign is measured by its values, not by
/// their mean).
fn magnitude(y: &[f64]) -> f64 {
    y.iter().map(|v| v.abs()).sum::<f64>() / y.len() as f64
}

/// Whether `y` does not vary: its standard deviation is zero, or below what rounding leaves
/// in equal values (1e-12 of their magnitude). Variance-based indices are shares of the
/// variance, so for such an output they are 0/0: NaN, as SALib computes them.
pub fn is_constant(y: &[f64]) -> bool {
    var(y).sqrt() <= 1e-12 * magnitude(y)
}

/// How many times the evaluations' resolution ([`Resolution::of`] the output's magnitude) an
/// output's standard deviation must exceed for its indices to be estimated.
///
/// An adaptive solver keeps each step's error within atol + rtol·|y| of the solution, so an
/// output that does not depend on the factors still moves from one design point to the next
/// by up to about that much (step sizes follow whatever else is integrated alongside); the
/// variance-based indices would then share out that error as if it were a response. Ten
/// times the resolution bounds the error's part of any output that is analysed to about
/// 1/10² = 1 % of its variance, below the indices' usual bootstrap half-widths, while a
/// response whose standard deviation exceeds 0.001 % of the output (at the default rtol of
/// 1e-6, for an output well above atol) is still analysed. A weaker response may be real, but
/// it cannot be told from the solver's error at that tolerance: smaller tolerances resolve it.
pub const RESOLVED_SPREAD: f64 = 10.0;

/// How finely the evaluations resolve a value y: to about `absolute + relative·|y|`, as the
/// adaptive solvers' error norm weighs each component (atol + rtol·|y|). Zero for exact
/// evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution {
    /// The relative tolerance (no finer than the precision the evaluations compute in).
    pub relative: f64,
    /// The absolute tolerance.
    pub absolute: f64,
}

impl Resolution {
    /// Exact evaluations (but for rounding).
    pub const EXACT: Resolution = Resolution {
        relative: 0.0,
        absolute: 0.0,
    };

    /// The resolution of a value of size `magnitude`.
    pub fn of(self, magnitude: f64) -> f64 {
        self.absolute + self.relative * magnitude
    }
}

/// How an output varies across a design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variation {
    /// More than the evaluations resolve: its indices are estimated.
    Resolved,
    /// Not at all (up to rounding, [`is_constant`]).
    Constant,
    /// Only within the evaluations' resolution: its standard deviation, `relative_sd` of its
    /// magnitude (the mean of |y|), is at most [`RESOLVED_SPREAD`] times the `resolution` of
    /// that magnitude.
    WithinTolerance {
        relative_sd: f64,
        resolution: Resolution,
    },
}

/// How `y` varies, given the resolution of the evaluations that gave it (the solver's
/// tolerances; [`Resolution::EXACT`] where they are exact but for rounding). `y` is finite.
pub fn variation(y: &[f64], resolution: Resolution) -> Variation {
    let (sd, scale) = (var(y).sqrt(), magnitude(y));
    if is_constant(y) {
        Variation::Constant
    } else if sd <= RESOLVED_SPREAD * resolution.of(scale) {
        Variation::WithinTolerance {
            relative_sd: sd / scale,
            resolution,
        }
    } else {
        Variation::Resolved
    }
}

/// Indices of a constant output: every value NaN (see [`is_constant`]).
fn undefined(k: usize, names: &[&'static str]) -> Indices {
    Indices {
        values: (0..k)
            .map(|_| names.iter().map(|n| (*n, f64::NAN, f64::NAN)).collect())
            .collect(),
    }
}

fn first_order(a: &[f64], ab: &[f64], b: &[f64]) -> f64 {
    let y: Vec<f64> = a.iter().chain(b).copied().collect();
    let v = var(&y);
    if v == 0.0 {
        return f64::NAN;
    }
    let s: f64 = (0..a.len()).map(|i| b[i] * (ab[i] - a[i])).sum::<f64>() / a.len() as f64;
    s / v
}

fn total_order(a: &[f64], ab: &[f64], b: &[f64]) -> f64 {
    let y: Vec<f64> = a.iter().chain(b).copied().collect();
    let v = var(&y);
    if v == 0.0 {
        return f64::NAN;
    }
    let s: f64 = (0..a.len())
        .map(|i| (a[i] - ab[i]) * (a[i] - ab[i]))
        .sum::<f64>()
        / a.len() as f64;
    0.5 * s / v
}

/// The outputs fit the design (`expected` of them) and are all finite.
fn check_outputs(y: &[f64], expected: usize) -> Result<(), String> {
    if y.len() != expected {
        return Err(format!("expected {expected} outputs, got {}", y.len()));
    }
    let bad = y.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(format!(
            "{bad} of {} model evaluations gave no finite value; the indices need every one",
            y.len()
        ));
    }
    Ok(())
}

/// Sobol first-order (S1) and total (ST) indices with bootstrap confidence half-widths.
pub fn sobol_indices(
    d: &Design,
    y: &[f64],
    resamples: usize,
    conf: f64,
    seed: u64,
) -> Result<Indices, String> {
    let (k, n) = (d.k, d.n);
    check_outputs(y, n * (k + 2))?;
    if is_constant(y) {
        return Ok(undefined(k, &["S1", "ST"]));
    }
    let mu = mean(y);
    let sd = var(y).sqrt();
    let ys: Vec<f64> = y
        .iter()
        .map(|v| if sd > 0.0 { (v - mu) / sd } else { 0.0 })
        .collect();
    let step = k + 2;
    let a: Vec<f64> = (0..n).map(|i| ys[i * step]).collect();
    let b: Vec<f64> = (0..n).map(|i| ys[i * step + k + 1]).collect();
    let z = z_of(conf);
    let mut rng = SmallRng::seed_from_u64(seed);
    let draws: Vec<Vec<usize>> = (0..resamples)
        .map(|_| (0..n).map(|_| rng.random_range(0..n)).collect())
        .collect();
    let mut values = Vec::with_capacity(k);
    for j in 0..k {
        let ab: Vec<f64> = (0..n).map(|i| ys[i * step + 1 + j]).collect();
        let s1 = first_order(&a, &ab, &b);
        let st = total_order(&a, &ab, &b);
        let (mut r1, mut rt) = (Vec::new(), Vec::new());
        for idx in &draws {
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<f64>>();
            let (ra, rab, rb) = (pick(&a), pick(&ab), pick(&b));
            r1.push(first_order(&ra, &rab, &rb));
            rt.push(total_order(&ra, &rab, &rb));
        }
        values.push(vec![
            ("S1", s1, half_width(z, &r1)),
            ("ST", st, half_width(z, &rt)),
        ]);
    }
    Ok(Indices { values })
}

/// Morris μ, μ*, σ per factor (μ* with a bootstrap confidence half-width).
pub fn morris_indices(
    d: &Design,
    y: &[f64],
    resamples: usize,
    conf: f64,
    seed: u64,
) -> Result<Indices, String> {
    let (k, r) = (d.k, d.n);
    check_outputs(y, r * (k + 1))?;
    let delta = morris_delta(d.param);
    let mut ee = vec![Vec::with_capacity(r); k];
    for t in 0..r {
        for s in 0..k {
            let (r0, r1) = (t * (k + 1) + s, t * (k + 1) + s + 1);
            let (x0, x1) = (d.row(r0), d.row(r1));
            let Some(i) = (0..k).find(|&i| x0[i] != x1[i]) else {
                return Err(format!("trajectory {t} step {s} changes no factor"));
            };
            let e = if x1[i] > x0[i] {
                (y[r1] - y[r0]) / delta
            } else {
                (y[r0] - y[r1]) / delta
            };
            ee[i].push(e);
        }
    }
    let z = z_of(conf);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(k);
    for e in &ee {
        let mu = mean(e);
        let abs: Vec<f64> = e.iter().map(|v| v.abs()).collect();
        let mu_star = mean(&abs);
        let sigma = if e.len() > 1 { sd1(e) } else { f64::NAN };
        let boot: Vec<f64> = (0..resamples)
            .map(|_| {
                let s: f64 = (0..abs.len())
                    .map(|_| abs[rng.random_range(0..abs.len())])
                    .sum();
                s / abs.len() as f64
            })
            .collect();
        let ci = half_width(z, &boot);
        values.push(vec![
            ("mu", mu, f64::NAN),
            ("mu_star", mu_star, ci),
            ("sigma", sigma, f64::NAN),
        ]);
    }
    Ok(Indices { values })
}

/// The power spectrum (|FFT|/N)² of `y` at frequencies 1 … ⌈N/2⌉ − 1.
fn spectrum(y: &[f64]) -> Vec<f64> {
    use rustfft::num_complex::Complex;
    let n = y.len();
    let mut buf: Vec<Complex<f64>> = y.iter().map(|v| Complex::new(*v, 0.0)).collect();
    rustfft::FftPlanner::new()
        .plan_fft_forward(n)
        .process(&mut buf);
    (1..n.div_ceil(2))
        .map(|j| (buf[j].norm() / n as f64).powi(2))
        .collect()
}

fn efast_orders(y: &[f64], m: usize, omega: usize) -> (f64, f64) {
    if is_constant(y) {
        return (f64::NAN, f64::NAN);
    }
    let sp = spectrum(y);
    let v = 2.0 * sp.iter().sum::<f64>();
    let d1 = 2.0 * (1..=m).filter_map(|p| sp.get(p * omega - 1)).sum::<f64>();
    let dt = 2.0 * sp[..(omega / 2).min(sp.len())].iter().sum::<f64>();
    (d1 / v, 1.0 - dt / v)
}

/// eFAST first-order (S1) and total (ST) indices with confidence half-widths from SALib's
/// resampling of the search curve: each resample is the block's points from a uniformly drawn
/// start, ⌈N/2⌉ of them in the curve's order (wrapping around its end), and its indices are
/// estimated as a block's are, at the frequency ⌊(⌈N/2⌉ − 1)/(2M)⌋. Points drawn one by one
/// would lose the order that the spectrum reads the factors' frequencies from, and with it
/// any estimate of the indices.
pub fn efast_indices(
    d: &Design,
    y: &[f64],
    resamples: usize,
    conf: f64,
    seed: u64,
) -> Result<Indices, String> {
    let (k, n, m) = (d.k, d.n, d.param);
    check_outputs(y, n * k)?;
    if is_constant(y) {
        return Ok(undefined(k, &["S1", "ST"]));
    }
    let omega = (n - 1) / (2 * m);
    let z = z_of(conf);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(k);
    for i in 0..k {
        let block = &y[i * n..(i + 1) * n];
        let (s1, st) = efast_orders(block, m, omega);
        let half = n.div_ceil(2);
        // ⌈N/2⌉ > 2M² (the design has N > 4M²), so the window's frequency is at least M.
        let w = (half - 1) / (2 * m);
        let (mut r1, mut rt) = (Vec::new(), Vec::new());
        let mut window = Vec::with_capacity(half);
        for _ in 0..resamples {
            let start = rng.random_range(0..n);
            window.clear();
            window.extend((start..start + half).map(|s| block[s % n]));
            let (a, b) = efast_orders(&window, m, w);
            r1.push(a);
            rt.push(b);
        }
        values.push(vec![
            ("S1", s1, half_width(z, &r1)),
            ("ST", st, half_width(z, &rt)),
        ]);
    }
    Ok(Indices { values })
}

/// The indices of output `y` of design `d` with how it varies ([`variation`], at the
/// `resolution` of the evaluations). An output that does not vary beyond the resolution has
/// no response to share out: its Sobol and eFAST indices are NaN (0/0), as a constant output's
/// are, and its Morris indices those of the constant output (every elementary effect 0).
pub fn analyse(
    d: &Design,
    y: &[f64],
    resolution: Resolution,
    resamples: usize,
    conf: f64,
    seed: u64,
) -> Result<(Indices, Variation), String> {
    check_outputs(y, d.rows)?;
    // In units of a power of two at the largest |y|: exact, and the variances and spectra of
    // outputs near the ends of the floats (1e200, whose squares overflow; 1e-200, whose
    // squares underflow) are those of values near 1. Sobol and eFAST indices are ratios of
    // variances, the same in any unit; Morris effects are scaled back.
    let unit = unit_of(y);
    let ys: Vec<f64> = y.iter().map(|v| v / unit).collect();
    let scaled = Resolution {
        relative: resolution.relative,
        absolute: resolution.absolute / unit,
    };
    let v = match variation(&ys, scaled) {
        Variation::WithinTolerance { relative_sd, .. } => Variation::WithinTolerance {
            relative_sd,
            resolution,
        },
        v => v,
    };
    let mut idx = match (v, d.method) {
        (Variation::Resolved, _) => indices(d, &ys, resamples, conf, seed)?,
        (_, Method::Morris) => {
            let level = vec![mean(&ys); ys.len()];
            morris_indices(d, &level, resamples, conf, seed)?
        }
        _ => undefined(d.k, &["S1", "ST"]),
    };
    if d.method == Method::Morris {
        for (_, value, half) in idx.values.iter_mut().flatten() {
            *value *= unit;
            *half *= unit;
        }
    }
    Ok((idx, v))
}

/// A power of two at the largest magnitude of `y`'s values (1 where all are 0): dividing by
/// it is exact and brings them to [−2, 2].
fn unit_of(y: &[f64]) -> f64 {
    let largest = y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if largest > 0.0 && largest.is_finite() {
        crate::population::dist::power_of_two_at(largest)
    } else {
        1.0
    }
}

/// The indices of a design's outputs by its method.
pub fn indices(
    d: &Design,
    y: &[f64],
    resamples: usize,
    conf: f64,
    seed: u64,
) -> Result<Indices, String> {
    match d.method {
        Method::Sobol => sobol_indices(d, y, resamples, conf, seed),
        Method::Morris => morris_indices(d, y, resamples, conf, seed),
        Method::Efast => efast_indices(d, y, resamples, conf, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ishigami (a = 7, b = 0.1) on [−π, π]³.
    fn ishigami(x: &[f64]) -> f64 {
        let p = |u: f64| -std::f64::consts::PI + 2.0 * std::f64::consts::PI * u;
        let (x1, x2, x3) = (p(x[0]), p(x[1]), p(x[2]));
        x1.sin() + 7.0 * x2.sin().powi(2) + 0.1 * x3.powi(4) * x1.sin()
    }

    /// Analytic indices of Ishigami (a = 7, b = 0.1): (S1, ST) per factor.
    fn ishigami_exact() -> [(f64, f64); 3] {
        let (a, b) = (7.0f64, 0.1f64);
        let pi4 = std::f64::consts::PI.powi(4);
        let pi8 = pi4 * pi4;
        let v1 = 0.5 * (1.0 + b * pi4 / 5.0).powi(2);
        let v2 = a * a / 8.0;
        let v13 = b * b * pi8 * (1.0 / 18.0 - 1.0 / 50.0);
        let v = v1 + v2 + v13;
        [(v1 / v, (v1 + v13) / v), (v2 / v, v2 / v), (0.0, v13 / v)]
    }

    fn outputs(d: &Design) -> Vec<f64> {
        (0..d.rows).map(|i| ishigami(d.row(i))).collect()
    }

    #[test]
    fn sobol_recovers_the_analytic_ishigami_indices() {
        let d = sobol_design(3, 1 << 14, 1).unwrap();
        let idx = sobol_indices(&d, &outputs(&d), 100, 0.95, 2).unwrap();
        for (j, (s1, st)) in ishigami_exact().iter().enumerate() {
            let got = &idx.values[j];
            assert!((got[0].1 - s1).abs() < 0.01, "S1[{j}] {} vs {s1}", got[0].1);
            assert!((got[1].1 - st).abs() < 0.01, "ST[{j}] {} vs {st}", got[1].1);
            assert!(got[0].2 > 0.0 && got[0].2 < 0.05, "CI {}", got[0].2);
        }
    }

    #[test]
    fn efast_recovers_the_analytic_ishigami_indices() {
        let d = efast_design(3, 1 << 12, 4, 1).unwrap();
        let idx = efast_indices(&d, &outputs(&d), 20, 0.95, 2).unwrap();
        for (j, (s1, st)) in ishigami_exact().iter().enumerate() {
            let got = &idx.values[j];
            assert!((got[0].1 - s1).abs() < 0.02, "S1[{j}] {} vs {s1}", got[0].1);
            assert!((got[1].1 - st).abs() < 0.05, "ST[{j}] {} vs {st}", got[1].1);
        }
    }

    #[test]
    fn morris_ranks_a_linear_model() {
        let d = morris_design(4, 20, 4, 3).unwrap();
        let coef = [0.5, 4.0, -2.0, 0.0];
        let y: Vec<f64> = (0..d.rows)
            .map(|i| d.row(i).iter().zip(coef).map(|(x, c)| x * c).sum())
            .collect();
        let idx = morris_indices(&d, &y, 50, 0.95, 1).unwrap();
        for (j, c) in coef.iter().enumerate() {
            let v = &idx.values[j];
            // A linear model: every elementary effect is the coefficient.
            assert!((v[0].1 - c).abs() < 1e-9, "mu[{j}] {}", v[0].1);
            assert!((v[1].1 - c.abs()).abs() < 1e-9, "mu*[{j}] {}", v[1].1);
            assert!(v[2].1.abs() < 1e-9, "sigma[{j}] {}", v[2].1);
        }
    }

    #[test]
    fn morris_trajectories_move_one_factor_by_delta_on_the_grid() {
        let d = morris_design(5, 10, 4, 9).unwrap();
        let delta = morris_delta(4);
        for t in 0..10 {
            for s in 0..5 {
                let (a, b) = (d.row(t * 6 + s), d.row(t * 6 + s + 1));
                let moved: Vec<usize> = (0..5).filter(|&i| a[i] != b[i]).collect();
                assert_eq!(moved.len(), 1);
                assert!(((a[moved[0]] - b[moved[0]]).abs() - delta).abs() < 1e-12);
                assert!(b.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }

    /// An output that is the same at every design point has no variance to share out: S1 and
    /// ST are 0/0 (NaN) for Sobol and eFAST alike, also where the spectrum of the constant
    /// holds rounding noise, and for values equal but for rounding; Morris effects are 0.
    #[test]
    fn a_constant_output_has_undefined_indices() {
        for (d, name) in [
            (sobol_design(2, 64, 1).unwrap(), "sobol"),
            (efast_design(2, 200, 4, 1).unwrap(), "efast"),
        ] {
            for y in [
                vec![10.0; d.rows],
                (0..d.rows)
                    .map(|i| 0.1 * 3.0 + if i % 2 == 0 { 0.0 } else { 1e-16 })
                    .collect(),
            ] {
                let idx = indices(&d, &y, 20, 0.95, 1).unwrap();
                for (j, v) in idx.values.iter().enumerate() {
                    for (index, value, conf) in v {
                        assert!(value.is_nan(), "{name} {index}[{j}] = {value}");
                        assert!(conf.is_nan(), "{name} {index}[{j}] ± {conf}");
                    }
                }
            }
        }
        let d = morris_design(2, 10, 4, 1).unwrap();
        let idx = indices(&d, &vec![10.0; d.rows], 20, 0.95, 1).unwrap();
        assert!(idx.values.iter().flatten().all(|(_, v, _)| *v == 0.0));
    }

    /// An adaptive solver's error moves an output y that no factor acts on by up to about
    /// atol + rtol·|y| from one design point to the next. Within ten times the
    /// tolerance the output has no response to share out; beyond it, the same output is
    /// analysed. The rule scales with the tolerances: at a resolution of 0 (exact evaluations)
    /// the same small spread is analysed, and near 0, where atol dominates, a spread far
    /// beyond rtol of the values is still within it.
    #[test]
    fn an_output_within_the_solver_tolerance_has_no_indices() {
        let rtol = 1e-6;
        let tol = Resolution {
            relative: rtol,
            absolute: 1e-9,
        };
        for d in [
            sobol_design(3, 256, 1).unwrap(),
            efast_design(3, 257, 4, 1).unwrap(),
            morris_design(3, 20, 4, 1).unwrap(),
        ] {
            let name = d.method.name();
            // 18.19 plus an Ishigami response scaled to a standard deviation of `rel` of it.
            let r = outputs(&d);
            let (mr, sr) = (mean(&r), var(&r).sqrt());
            let y_at = |rel: f64| -> Vec<f64> {
                r.iter()
                    .map(|v| 18.19 * (1.0 + rel * (v - mr) / sr))
                    .collect()
            };
            let noise = y_at(3e-9);
            let (idx, v) = analyse(&d, &noise, tol, 50, 0.95, 1).unwrap();
            match v {
                Variation::WithinTolerance {
                    relative_sd,
                    resolution,
                } => {
                    assert!((1e-9..1e-8).contains(&relative_sd), "{name} {relative_sd}");
                    assert_eq!(resolution, tol);
                }
                other => panic!("{name}: {other:?}"),
            }
            for (index, value, _) in idx.values.iter().flatten() {
                match d.method {
                    Method::Morris => assert_eq!(*value, 0.0, "{name} {index}"),
                    _ => assert!(value.is_nan(), "{name} {index} = {value}"),
                }
            }
            // Just inside and well beyond 10·rtol; and the noise itself with exact outputs.
            let inside = y_at(0.9 * RESOLVED_SPREAD * rtol);
            assert!(matches!(
                analyse(&d, &inside, tol, 50, 0.95, 1).unwrap().1,
                Variation::WithinTolerance { .. }
            ));
            for (y, resolution) in [(y_at(1e-4), tol), (noise.clone(), Resolution::EXACT)] {
                let (idx, v) = analyse(&d, &y, resolution, 50, 0.95, 1).unwrap();
                assert_eq!(v, Variation::Resolved, "{name}");
                // (Compared as text, where NaN half-widths are equal.)
                let direct = indices(&d, &y, 50, 0.95, 1).unwrap();
                assert_eq!(format!("{idx:?}"), format!("{direct:?}"), "{name}");
                assert!(idx.values.iter().flatten().all(|(_, v, _)| v.is_finite()));
            }
            // Values of about 1e-10 (below atol) spread by 30 % of them: within 10·atol, and
            // analysed only where the solver resolved them better (no atol); values of about
            // 1e-7 spread so lie beyond 10·atol and are analysed.
            let near_zero = |size: f64| -> Vec<f64> {
                r.iter()
                    .map(|v| size * (1.0 + 0.3 * (v - mr) / sr))
                    .collect()
            };
            let without_atol = Resolution {
                relative: rtol,
                absolute: 0.0,
            };
            for (size, resolution, within) in [
                (1e-10, tol, true),
                (1e-10, without_atol, false),
                (1e-7, tol, false),
            ] {
                let v = analyse(&d, &near_zero(size), resolution, 50, 0.95, 1)
                    .unwrap()
                    .1;
                assert_eq!(
                    matches!(v, Variation::WithinTolerance { .. }),
                    within,
                    "{name}: {size:e} at {resolution:?}: {v:?}"
                );
                assert_eq!(within, v != Variation::Resolved, "{name}: {v:?}");
            }
            // A constant output stays constant, whatever the tolerance.
            let flat = vec![18.19; d.rows];
            assert_eq!(
                analyse(&d, &flat, tol, 50, 0.95, 1).unwrap().1,
                Variation::Constant
            );
        }
    }

    /// eFAST's confidence intervals resample contiguous half-curves from a uniformly drawn
    /// start (SALib 1.6): with many resamples their half-width is z times the standard
    /// deviation of the indices over all N windows, computed here window by window.
    #[test]
    fn efast_confidence_is_the_spread_over_half_curve_windows() {
        let (n, m) = (1001, 4);
        let d = efast_design(3, n, m, 7).unwrap();
        let y = outputs(&d);
        let idx = efast_indices(&d, &y, 4000, 0.95, 5).unwrap();
        let z = z_of(0.95);
        let half = n.div_ceil(2);
        let w = (half - 1) / (2 * m);
        for j in 0..3 {
            let block = &y[j * n..(j + 1) * n];
            let (s1, st): (Vec<f64>, Vec<f64>) = (0..n)
                .map(|start| {
                    let window: Vec<f64> = (0..half).map(|i| block[(start + i) % n]).collect();
                    efast_orders(&window, m, w)
                })
                .unzip();
            let sd = |v: &[f64]| var(v).sqrt();
            for (k, all) in [(0, &s1), (1, &st)] {
                let (got, want) = (idx.values[j][k].2, z * sd(all));
                assert!(
                    (got / want - 1.0).abs() < 0.1,
                    "factor {j} {}: half-width {got} vs {want} over every window",
                    idx.values[j][k].0
                );
            }
        }
    }

    #[test]
    fn bad_designs_are_refused_by_the_setting_they_are_about() {
        assert!(matches!(
            sobol_design(0, 16, 1),
            Err(DesignError::Factors(_))
        ));
        assert!(matches!(
            sobol_design(SOBOL_MAX_FACTORS + 1, 16, 1),
            Err(DesignError::Factors(_))
        ));
        assert!(matches!(
            sobol_design(3, 1 << 17, 1),
            Err(DesignError::Samples(_))
        ));
        assert!(matches!(
            morris_design(3, 10, 3, 1),
            Err(DesignError::Levels(_))
        ));
        assert!(matches!(
            morris_design(3, 1, 4, 1),
            Err(DesignError::Samples(_))
        ));
        assert!(matches!(
            efast_design(3, 64, 4, 1),
            Err(DesignError::Samples(_))
        ));
        assert!(matches!(
            efast_design(3, 64, 0, 1),
            Err(DesignError::Interference(_))
        ));
        let d = sobol_design(2, 8, 1).unwrap();
        let mut y = vec![1.0; d.rows];
        y[3] = f64::NAN;
        assert!(sobol_indices(&d, &y, 10, 0.95, 1)
            .unwrap_err()
            .contains("1 of 32"));
    }
}
