//! The order in which a GPU backend hands a call's subjects to its threads.
//!
//! A GPU runs the 32 threads of a warp in lockstep: between two stopping points (doses, window
//! bounds) a warp takes as many steps as its slowest subject while the others wait. Subjects in
//! sampling order are a random mix of fast and slow ones. In the quickstart's first arm
//! (two_cmt_oral, 100 mg q12h × 14, Tsit5), warps of adult_healthy subjects in sampling order
//! keep 70 % of their lane-steps busy at rtol 2e-4 (74 % at 1e-6); in the order made here,
//! 98 % (98.5 %) (the test `ordered_warps_waste_fewer_steps_than_sampled_ones`, docs/gpu.md
//! "Subjects in the order of their cost").
//!
//! A subject's steps are not known before it is integrated, but they follow its parameters.
//! [`SubjectOrder`] fits, arm by arm, the logarithm of the steps each subject took (accepted and
//! rejected, from the kernel's counters) to the logarithms of the parameters that vary between
//! subjects and of the dose scaling, by least squares over the calls made so far, and orders a
//! new call's subjects by the fitted cost, window by window of [`WINDOW`] consecutive subjects,
//! the costliest of each window first. Each window holds the whole spread of costs, so its warps
//! are nearly as alike as those of a call ordered whole (16 384 subjects of the case above
//! ordered by ka: 97.6 % of lane-steps busy in windows of 4 096, 97.8 % ordered whole), while
//! packing the parameters and taking the results stay within a window's memory. The order decides which thread integrates which subject and nothing
//! else: every subject's results are the same in any order. Record programs (a `[data]`
//! trial's subjects) are ordered the same way ([`records_in_order`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::backend::records::{Program, RecordsOutcome};
use crate::backend::{BackendError, ChunkInput};

/// Features at most: the parameters whose logarithms vary most in the first samples.
const MAX_FEATURES: usize = 24;

/// Subjects ordered together: a call's subjects are ordered window by window.
pub const WINDOW: usize = 4096;

/// Buckets a window's fitted costs are sorted into: subjects in a bucket keep their sampling
/// order.
const BUCKETS: usize = 1024;

/// A feature whose share of the fitted spread of costs is below this is left out of the order.
const NEGLIGIBLE: f64 = 0.01;

/// What [`SubjectOrder::plan`] says about a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing learnt yet for the arm.
    Unknown,
    /// The fit has nothing to order by (no parameter varies, or none bears on the cost).
    Natural,
    /// The call's subjects (absolute indices in the chunk), the costliest first.
    Ordered(Vec<u32>),
}

/// What a backend integrates next of a call's remaining subjects (see [`SubjectOrder::round`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// The rest of the call in this order (absolute indices), the costliest of each window
    /// first.
    Ordered(Vec<u32>),
    /// These subjects as sampled: a pilot to learn from (the call goes on with more rounds),
    /// or the rest of the call.
    AsSampled { rows: Range<usize>, pilot: bool },
}

/// What was learnt of one arm's costs: the normal equations of the least-squares fit of
/// ln(1 + steps) to [1, ln|p_c| for c in `cols`, ln(scale) where `scale`].
#[derive(Debug, Clone)]
struct ArmFit {
    cols: Vec<usize>,
    scale: bool,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    samples: u64,
    beta: Option<Vec<f64>>,
}

impl ArmFit {
    fn k(&self) -> usize {
        1 + self.cols.len() + usize::from(self.scale)
    }

    /// The fitted weight of each feature (after the constant), 0 for those whose share of the
    /// spread of fitted costs (weight × the feature's standard deviation in the samples) is
    /// negligible against the largest.
    fn weights(&self) -> Vec<f64> {
        let (k, n) = (self.k(), self.samples.max(1) as f64);
        let beta = self.beta.as_deref().unwrap_or(&[]);
        let share: Vec<f64> = (1..k)
            .map(|f| {
                let mean = self.xtx[f] / n;
                let var = (self.xtx[f * k + f] / n - mean * mean).max(0.0);
                (beta[f] * var.sqrt()).abs()
            })
            .collect();
        let top = share.iter().copied().fold(0.0, f64::max);
        (1..k)
            .map(|f| {
                if top > 0.0 && share[f - 1] >= NEGLIGIBLE * top {
                    beta[f]
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The features of subject `i` after the constant 1, into `x` (length k − 1).
    fn features(&self, input: &ChunkInput<'_>, i: usize, x: &mut [f64]) {
        for (x, &c) in x.iter_mut().zip(&self.cols) {
            *x = log_abs(input.params[c][i]);
        }
        if self.scale {
            x[self.cols.len()] = input.amount_scale.map_or(0.0, |s| log_abs(s[i]));
        }
    }
}

/// ln|v| within about 1e-5, and 0 where v is 0 or not finite (such a value says nothing of the
/// cost): from the exponent, and the series of 2 atanh((m − 1)/(m + 1)) for the mantissa m in
/// [1, 2) to the seventh power. A call orders a million subjects by a few such logarithms
/// each, on the thread that drives the GPU.
fn log_abs(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return 0.0;
    }
    let bits = v.abs().to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    e as f64 * std::f64::consts::LN_2
        + 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0))))
}

/// The subject order of a backend and its siblings: a fit per arm (by name), learnt from every
/// call's counters.
#[derive(Debug, Default)]
pub struct SubjectOrder {
    arms: Mutex<HashMap<String, ArmFit>>,
}

/// The first call of an arm, with nothing learnt of its subjects' costs, integrates its first
/// [`PILOT`] subjects in sampling order, learns from them, and orders the rest: when it has at
/// least [`PILOT_CALL`] subjects (a smaller call is integrated as sampled, and learnt from).
pub const PILOT: usize = 4096;
pub const PILOT_CALL: usize = 16 * PILOT;

/// Samples a call keeps for the fit, at most (about).
pub const SAMPLES_PER_CALL: usize = 8192;

/// Every how many threads of a call of `n` subjects one is sampled for the fit.
pub fn sample_every(n: usize) -> usize {
    n.div_ceil(SAMPLES_PER_CALL).max(1)
}

impl SubjectOrder {
    pub fn new() -> SubjectOrder {
        SubjectOrder::default()
    }

    /// The fewest samples a fit is made from: eight per unknown, and at least 64.
    fn min_samples(k: usize) -> u64 {
        (8 * k).max(64) as u64
    }

    /// Learns from subjects integrated for arm `arm`: `(subject, steps)`, the subject's index
    /// in `input` and its accepted plus rejected steps.
    pub fn learn(&self, arm: &str, input: &ChunkInput<'_>, samples: &[(u32, u32)]) {
        if samples.is_empty() {
            return;
        }
        let mut arms = self.arms.lock().unwrap_or_else(|e| e.into_inner());
        let fit = arms
            .entry(arm.to_string())
            .or_insert_with(|| new_fit(input, samples));
        let k = fit.k();
        let mut x = vec![0.0; k];
        for &(i, steps) in samples {
            x[0] = 1.0;
            fit.features(input, i as usize, &mut x[1..]);
            let y = (1.0 + f64::from(steps)).ln();
            for a in 0..k {
                for b in 0..k {
                    fit.xtx[a * k + b] += x[a] * x[b];
                }
                fit.xty[a] += x[a] * y;
            }
        }
        fit.samples += samples.len() as u64;
        if fit.samples >= Self::min_samples(k) {
            // A fit that cannot be solved orders nothing (rather than asking for a pilot again).
            fit.beta = Some(solve(&fit.xtx, &fit.xty, k).unwrap_or_else(|| vec![0.0; k]));
        }
    }

    /// The order of subjects `range` of `input` for arm `arm`: window by window of [`WINDOW`]
    /// subjects (from `range.start`), the costliest of each first.
    pub fn plan(&self, arm: &str, input: &ChunkInput<'_>, range: Range<usize>) -> Plan {
        let (fit, weights) = {
            let arms = self.arms.lock().unwrap_or_else(|e| e.into_inner());
            match arms.get(arm) {
                Some(f) if f.beta.is_some() => (f.clone(), f.weights()),
                _ => return Plan::Unknown,
            }
        };
        if weights.iter().all(|w| *w == 0.0) {
            return Plan::Natural;
        }
        // The columns that bear on the cost (the dose scaling after the parameters), and
        // their weights.
        let used: Vec<(&[f64], f64)> = weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0.0)
            .filter_map(|(f, &w)| {
                let col = match fit.cols.get(f) {
                    Some(&c) => input.params[c].as_slice(),
                    None => input.amount_scale?,
                };
                Some((col, w))
            })
            .collect();
        let mut order: Vec<u32> = (range.start as u32..range.end as u32).collect();
        order.par_chunks_mut(WINDOW).for_each(|window| {
            let first = window[0] as usize;
            let mut keys = vec![0.0; window.len()];
            for &(col, w) in &used {
                for (key, v) in keys.iter_mut().zip(&col[first..first + window.len()]) {
                    *key += w * log_abs(*v);
                }
            }
            costliest_first(&keys, first, window);
        });
        Plan::Ordered(order)
    }
}

impl SubjectOrder {
    /// The next round of a call whose subjects `range` of `input` remain for arm `arm`: the
    /// rest ordered when there is a fit; with nothing learnt yet, a pilot of [`PILOT`] subjects
    /// as sampled when `may_pilot` (no pilot in this call yet) and at least [`PILOT_CALL`]
    /// remain; else the rest as sampled.
    pub fn round(
        &self,
        arm: &str,
        input: &ChunkInput<'_>,
        range: Range<usize>,
        may_pilot: bool,
    ) -> Round {
        match self.plan(arm, input, range.clone()) {
            Plan::Ordered(rows) => Round::Ordered(rows),
            Plan::Unknown if may_pilot && range.len() >= PILOT_CALL => Round::AsSampled {
                rows: range.start..range.start + PILOT,
                pilot: true,
            },
            _ => Round::AsSampled {
                rows: range,
                pilot: false,
            },
        }
    }
}

/// A fit for the features of `input` that vary among the samples' subjects.
fn new_fit(input: &ChunkInput<'_>, samples: &[(u32, u32)]) -> ArmFit {
    let spread = |v: &dyn Fn(usize) -> f64| {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(i, _) in samples {
            let x = v(i as usize);
            lo = lo.min(x);
            hi = hi.max(x);
        }
        hi - lo
    };
    let mut varying: Vec<(usize, f64)> = (0..input.params.len())
        .map(|c| (c, spread(&|i| log_abs(input.params[c][i]))))
        .filter(|(_, s)| *s > 1e-9)
        .collect();
    varying.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    varying.truncate(MAX_FEATURES);
    let mut cols: Vec<usize> = varying.into_iter().map(|(c, _)| c).collect();
    cols.sort_unstable();
    let scale = input
        .amount_scale
        .is_some_and(|s| spread(&|i| log_abs(s[i])) > 1e-9);
    let k = 1 + cols.len() + usize::from(scale);
    ArmFit {
        cols,
        scale,
        xtx: vec![0.0; k * k],
        xty: vec![0.0; k],
        samples: 0,
        beta: None,
    }
}

/// The solution of (A + λI) x = b for the k × k symmetric A (λ a trace-relative ridge that
/// keeps features constant so far, or collinear ones, solvable), by Gaussian elimination with
/// partial pivoting; None when it fails.
fn solve(a: &[f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let trace: f64 = (0..k).map(|i| a[i * k + i]).sum();
    let ridge = 1e-9 * trace / k as f64;
    let mut m: Vec<f64> = a.to_vec();
    let mut x: Vec<f64> = b.to_vec();
    for i in 0..k {
        m[i * k + i] += ridge;
    }
    for c in 0..k {
        let p = (c..k).max_by(|&r, &s| m[r * k + c].abs().total_cmp(&m[s * k + c].abs()))?;
        if m[p * k + c].abs() <= f64::MIN_POSITIVE {
            return None;
        }
        if p != c {
            for j in 0..k {
                m.swap(p * k + j, c * k + j);
            }
            x.swap(p, c);
        }
        for r in c + 1..k {
            let f = m[r * k + c] / m[c * k + c];
            for j in c..k {
                m[r * k + j] -= f * m[c * k + j];
            }
            x[r] -= f * x[c];
        }
    }
    for c in (0..k).rev() {
        let s: f64 = (c + 1..k).map(|j| m[c * k + j] * x[j]).sum();
        x[c] = (x[c] - s) / m[c * k + c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Indices `first + j` of `keys` into `out`, the largest keys first, by a counting sort into
/// [`BUCKETS`] buckets over the keys' range (equal buckets keep index order; keys that are not
/// finite go last; all equal: index order).
fn costliest_first(keys: &[f64], first: usize, out: &mut [u32]) {
    let (lo, hi) = keys
        .iter()
        .filter(|k| k.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &k| {
            (lo.min(k), hi.max(k))
        });
    let per = if hi > lo {
        (BUCKETS - 1) as f64 / (hi - lo)
    } else {
        0.0
    };
    let bucket = |k: f64| -> usize {
        if k.is_finite() {
            (((hi - k) * per) as usize).min(BUCKETS - 1)
        } else {
            BUCKETS
        }
    };
    let buckets: Vec<u16> = keys.iter().map(|&k| bucket(k) as u16).collect();
    let mut start = [0u32; BUCKETS + 2];
    for &b in &buckets {
        start[b as usize + 1] += 1;
    }
    for b in 1..start.len() {
        start[b] += start[b - 1];
    }
    for (j, &b) in buckets.iter().enumerate() {
        out[start[b as usize] as usize] = (first + j) as u32;
        start[b as usize] += 1;
    }
}

/// The name record programs are learnt under, beside the arms' (an arm of this name would
/// share their fit, which changes the order subjects are integrated in and no result).
const RECORDS: &str = "\0records";

/// Runs record programs (a `[data]` trial's subjects) through `run`, which integrates the
/// programs it is given and returns their outcomes in the same order, in the order of their
/// fitted cost: as an arm's subjects are ordered, with the features of a program its first
/// parameter set and its number of operations (doses, observations, resets: a program's
/// stopping points), learnt from the steps of every program integrated so far. With nothing
/// learnt, a call of at least [`PILOT_CALL`] programs runs its first [`PILOT`] as given (a
/// pilot) and orders the rest; a smaller one runs as given. The outcomes come back in the
/// programs' order whatever the order they were integrated in.
pub fn records_in_order(
    order: &SubjectOrder,
    programs: &[&Program],
    mut run: impl FnMut(&[&Program]) -> Result<Vec<RecordsOutcome>, BackendError>,
) -> Result<Vec<RecordsOutcome>, BackendError> {
    let n = programs.len();
    let np = programs
        .iter()
        .map(|p| p.params.first().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    let mut cols = vec![vec![1.0; n]; np + 1];
    for (i, p) in programs.iter().enumerate() {
        for (j, &v) in p.params.first().into_iter().flatten().enumerate() {
            cols[j][i] = v;
        }
        cols[np][i] = p.ops.len() as f64;
    }
    let input = ChunkInput {
        first_subject: 0,
        n,
        params: &cols,
        amount_scale: None,
        occasion_params: &[],
    };
    let mut outcomes: Vec<Option<RecordsOutcome>> = vec![None; n];
    let mut start = 0;
    while start < n {
        let rows: Vec<u32> = match order.round(RECORDS, &input, start..n, start == 0) {
            Round::Ordered(rows) => rows,
            Round::AsSampled { rows, .. } => (rows.start as u32..rows.end as u32).collect(),
        };
        let subset: Vec<&Program> = rows.iter().map(|&i| programs[i as usize]).collect();
        let done = run(&subset)?;
        if done.len() != rows.len() {
            return Err(BackendError::Failed(format!(
                "{} outcomes for {} record programs",
                done.len(),
                rows.len()
            )));
        }
        let every = sample_every(rows.len());
        let samples: Vec<(u32, u32)> = rows
            .iter()
            .zip(&done)
            .step_by(every)
            .map(|(&i, o)| {
                let steps = o.stats.accepted + o.stats.rejected;
                (i, steps.min(u64::from(u32::MAX)) as u32)
            })
            .collect();
        order.learn(RECORDS, &input, &samples);
        let taken = rows.len();
        for (i, o) in rows.into_iter().zip(done) {
            outcomes[i as usize] = Some(o);
        }
        start += taken;
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| BackendError::Failed("a record program was not run".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(params: &'a [Vec<f64>], scale: Option<&'a [f64]>) -> ChunkInput<'a> {
        ChunkInput {
            first_subject: 0,
            n: params[0].len(),
            params,
            amount_scale: scale,
            occasion_params: &[],
        }
    }

    /// Pseudo-random numbers in (0, 1), reproducible.
    fn uniform(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            })
            .collect()
    }

    /// Steps that follow a power law of two of three parameters and of the dose scaling are
    /// fitted exactly, and the order puts the costliest subjects first.
    #[test]
    fn a_power_law_of_the_parameters_is_fitted_and_ordered() {
        let n = 5000;
        let ka: Vec<f64> = uniform(1, n).iter().map(|u| 0.2 + 3.0 * u).collect();
        let cl: Vec<f64> = uniform(2, n).iter().map(|u| 1.0 + 9.0 * u).collect();
        let v: Vec<f64> = uniform(3, n).iter().map(|u| 10.0 + 50.0 * u).collect();
        let fixed = vec![7.0; n];
        let scale: Vec<f64> = uniform(4, n).iter().map(|u| 0.5 + u).collect();
        let params = vec![ka.clone(), fixed, cl.clone(), v];
        let inp = input(&params, Some(&scale));
        let cost = |i: usize| 40_000.0 * ka[i].powf(0.7) * cl[i].powf(-0.2) * scale[i].powf(0.1);
        let samples: Vec<(u32, u32)> = (0..n)
            .step_by(3)
            .map(|i| (i as u32, cost(i).round() as u32 - 1))
            .collect();
        let order = SubjectOrder::new();
        assert_eq!(order.plan("a", &inp, 0..n), Plan::Unknown);
        order.learn("a", &inp, &samples[..10]);
        assert_eq!(
            order.plan("a", &inp, 0..n),
            Plan::Unknown,
            "too few samples"
        );
        order.learn("a", &inp, &samples[10..]);
        {
            let arms = order.arms.lock().unwrap();
            let fit = &arms["a"];
            // The constant column is no feature.
            assert_eq!(fit.cols, vec![0, 2, 3]);
            assert!(fit.scale);
            let b = fit.beta.as_ref().unwrap();
            // Steps are rounded: the fit is close to the power law, not exact.
            for (got, want) in b[1..].iter().zip([0.7, -0.2, 0.0, 0.1]) {
                assert!((got - want).abs() < 0.02, "{b:?}");
            }
        }
        let Plan::Ordered(o) = order.plan("a", &inp, 100..n) else {
            panic!("no order");
        };
        // Window by window (from the range's start), each window's subjects the costliest
        // first, up to a bucket's width and the fit's error.
        assert_eq!(o.len(), n - 100);
        for (w, window) in o.chunks(WINDOW).enumerate() {
            let first = (100 + w * WINDOW) as u32;
            let mut seen = window.to_vec();
            seen.sort_unstable();
            assert_eq!(
                seen,
                (first..first + window.len() as u32).collect::<Vec<_>>()
            );
            let costs: Vec<f64> = window.iter().map(|&i| cost(i as usize)).collect();
            assert!(costs[0] > 3.0 * costs[costs.len() - 1]);
            for c in costs.windows(2) {
                assert!(c[1] <= c[0] * 1.01, "{} after {}", c[1], c[0]);
            }
        }
        // The volume, which the steps do not follow, is left out of the order.
        assert_eq!(order.arms.lock().unwrap()["a"].weights()[2], 0.0);
        // Another arm knows nothing yet.
        assert_eq!(order.plan("b", &inp, 0..n), Plan::Unknown);
    }

    #[test]
    fn costs_that_no_parameter_explains_leave_the_order_natural() {
        let n = 500;
        let params = vec![vec![1.0; n], vec![2.0; n]];
        let inp = input(&params, None);
        let samples: Vec<(u32, u32)> = (0..n as u32).map(|i| (i, 100 + i % 7)).collect();
        let order = SubjectOrder::new();
        order.learn("a", &inp, &samples);
        assert_eq!(order.plan("a", &inp, 0..n), Plan::Natural);
    }

    #[test]
    fn equal_keys_keep_their_order_and_non_finite_ones_go_last() {
        let mut out = [0u32; 6];
        costliest_first(&[1.0, 3.0, f64::NAN, 1.0, 3.0, 2.0], 10, &mut out);
        assert_eq!(out, [11, 14, 15, 10, 13, 12]);
        costliest_first(&[2.0; 6], 3, &mut out);
        assert_eq!(out, [3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn logarithms_are_close_enough_to_order_by() {
        for v in [
            1e-300, 3e-7, 0.1, 0.999, 1.0, 1.5, 2.0, 7.3, 1e5, -42.0, 1.7e308,
        ] {
            let want = f64::abs(v).ln();
            assert!(
                (log_abs(v) - want).abs() < 2e-5,
                "{v}: {} {want}",
                log_abs(v)
            );
        }
        for v in [0.0, f64::NAN, f64::INFINITY] {
            assert_eq!(log_abs(v), 0.0);
        }
    }

    #[test]
    fn the_ridge_solves_collinear_features() {
        // x2 = 2 x1: any split of the slope between them fits; the ridge picks one.
        let rows = [(1.0, 2.0, 5.0), (2.0, 4.0, 9.0), (3.0, 6.0, 13.0)];
        let k = 3;
        let (mut a, mut b) = (vec![0.0; k * k], vec![0.0; k]);
        for (x1, x2, y) in rows {
            let x = [1.0, x1, x2];
            for i in 0..k {
                for j in 0..k {
                    a[i * k + j] += x[i] * x[j];
                }
                b[i] += x[i] * y;
            }
        }
        let beta = solve(&a, &b, k).unwrap();
        for (x1, x2, y) in rows {
            let fit = beta[0] + beta[1] * x1 + beta[2] * x2;
            assert!((fit - y).abs() < 1e-5, "{beta:?}");
        }
    }

    /// Record programs: a first call of at least PILOT_CALL runs a pilot as given, then the
    /// rest costliest first window by window; a later call is ordered whole; every outcome
    /// comes back in its program's place; a small first call runs as given.
    #[test]
    fn record_programs_run_in_the_order_of_their_cost_and_come_back_in_theirs() {
        use crate::solver::{Stats, Status};
        let programs = |n: usize, seed: u64| -> Vec<Program> {
            uniform(seed, n)
                .into_iter()
                .map(|u| Program {
                    ops: Vec::new(),
                    params: vec![vec![0.1 + 10.0 * u, 3.0]],
                    n_records: 1,
                })
                .collect()
        };
        // Steps grow with the first parameter; each outcome carries its program's.
        let outcome = |p: &Program| RecordsOutcome {
            status: Status::Ok,
            stats: Stats {
                accepted: (20.0 * p.params[0][0].powf(0.7)) as u64,
                ..Default::default()
            },
            outputs: vec![vec![p.params[0][0]]],
        };
        let order = SubjectOrder::new();
        for (call, n) in [(0, PILOT_CALL + 1000), (1, 3 * WINDOW)] {
            let owned = programs(n, 17 + call);
            let refs: Vec<&Program> = owned.iter().collect();
            let mut runs: Vec<Vec<f64>> = Vec::new();
            let out = records_in_order(&order, &refs, |ps| {
                runs.push(ps.iter().map(|p| p.params[0][0]).collect());
                Ok(ps.iter().map(|p| outcome(p)).collect())
            })
            .unwrap();
            let back: Vec<f64> = out.iter().map(|o| o.outputs[0][0]).collect();
            let given: Vec<f64> = owned.iter().map(|p| p.params[0][0]).collect();
            assert_eq!(back, given, "call {call}: outcomes in the programs' order");
            let ordered = if call == 0 {
                assert_eq!(runs.len(), 2, "a pilot, then the rest");
                assert_eq!(runs[0], given[..PILOT]);
                &runs[1]
            } else {
                assert_eq!(runs.len(), 1);
                &runs[0]
            };
            for w in ordered.chunks(WINDOW) {
                // Costliest first, up to the counting sort's buckets.
                let falls = w.windows(2).filter(|p| p[1] > p[0] * 1.02).count();
                assert!(falls == 0, "call {call}: {falls} rises in a window");
            }
        }
        // A small first call of programs learnt under no fit yet runs as given.
        let fresh = SubjectOrder::new();
        let owned = programs(1000, 5);
        let refs: Vec<&Program> = owned.iter().collect();
        let mut runs = 0;
        records_in_order(&fresh, &refs, |ps| {
            runs += 1;
            assert!(ps.iter().zip(&owned).all(|(a, b)| std::ptr::eq(*a, b)));
            Ok(ps.iter().map(|p| outcome(p)).collect())
        })
        .unwrap();
        assert_eq!(runs, 1);
    }
}
