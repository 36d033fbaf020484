//! Random regimens against the exact solution. A two-compartment model with first-order
//! absorption, a lag time and a bioavailability on the depot, under random dose lines (boluses
//! and infusions by rate or by duration, into the depot or the central compartment, starting
//! together or apart, infusions overlapping the next dose, doses past the end, resets; arms
//! that start at steady state, arms with occasions, doses per kilogram), with random windows,
//! thresholds and sampling times: every metric and profile value of every backend against the
//! closed form of the linear system. And 30 random datasets of NONMEM records (boluses and
//! infusions into either compartment, ADDL, SS = 1 and SS = 2, EVID 3 and 4, observations
//! before and after a dose's record at its time): every output after every record, on the
//! CPU reference and the records kernels.
//!
//! The reference is independent of vpop's dosing and metric code: the regimen is expanded
//! here, the states are propagated exactly between events by the matrix exponential of the
//! system augmented with the infusion rates and the area (scaling and squaring of a Taylor
//! series), and the metrics are read off that solution (areas from the augmented state,
//! extrema on a fine grid refined by golden sections, crossings by bisection), following the
//! semantics of docs/metrics.md.

// Without a GPU backend compiled in, only the CPU test remains.
#![cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(dead_code))]

mod common;

use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::{ArmPlan, Backend, ChunkInput, ChunkOutput};
use vpop::dosing::{Administration, DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Method, SolverOptions};

const MODEL: &str = "# two_cmt_oral with a lag time and a bioavailability on the depot
param ka = 1.2
param cl = 5.0
param v1 = 30
param q = 2.5
param v2 = 60
param tlag = 0.6
param fdep = 0.7
state depot, central, periph
alag(depot) = tlag
f(depot) = fdep
k10 = cl / v1
d/dt(depot)   = -ka * depot
d/dt(central) =  ka * depot - (k10 + q/v1) * central + q/v2 * periph
d/dt(periph)  =  q/v1 * central - q/v2 * periph
output cp = central / v1
";

/// Cases (one arm each) and subjects per case.
const CASES: usize = 40;
const SUBJECTS: usize = 4;

/// splitmix64: the cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// A value in [lo, hi] on a grid of `step` (dose times people write).
    fn grid(&mut self, lo: f64, hi: f64, step: f64) -> f64 {
        lo + ((self.range(0.0, hi - lo) / step).round() * step).min(hi - lo)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Case {
    arm: ArmPlan,
    /// `params[p][i]`, in the model's parameter order.
    params: Vec<Vec<f64>>,
    /// `occasion_params[k][p][i]`: at the arm's occasion k + 2.
    occasion_params: Vec<Vec<Vec<f64>>>,
    /// Per-subject multiplier of the amounts (mg/kg dosing).
    amount_scale: Option<Vec<f64>>,
}

impl Case {
    /// Subject i's parameters at each occasion.
    fn subject(&self, i: usize) -> Vec<Vec<f64>> {
        std::iter::once(&self.params)
            .chain(&self.occasion_params)
            .map(|occ| occ.iter().map(|col| col[i]).collect())
            .collect()
    }

    fn scale(&self, i: usize) -> f64 {
        self.amount_scale.as_ref().map_or(1.0, |s| s[i])
    }
}

const KA: usize = 0;
const CL: usize = 1;
const V1: usize = 2;
const Q: usize = 3;
const V2: usize = 4;
const TLAG: usize = 5;
const FDEP: usize = 6;

fn make_case(rng: &mut Rng, n_params: usize) -> Case {
    let n_lines = 1 + rng.below(3);
    let mut lines: Vec<DoseLine> = Vec::new();
    for _ in 0..n_lines {
        let state = rng.below(2);
        let amount = rng.grid(20.0, 300.0, 10.0);
        let count = 1 + rng.below(8) as u32;
        let interval = if count > 1 {
            rng.grid(2.0, 30.0, 0.5)
        } else {
            0.0
        };
        // Often at a time another line doses too.
        let start = match (rng.below(3), lines.first()) {
            (0, _) => 0.0,
            (1, Some(l)) => l.start + l.interval * rng.below(l.count as usize) as f64,
            _ => rng.grid(0.0, 48.0, 0.25),
        };
        // Infusions from a quarter of an hour to longer than the interval.
        let length = rng.range(0.25, 1.5 * interval.max(4.0));
        let administration = match rng.below(4) {
            0 => Administration::InfusionDuration(length),
            1 => Administration::InfusionRate(amount / length),
            _ => Administration::Bolus,
        };
        lines.push(DoseLine {
            steady_state: false,
            state,
            amount,
            start,
            interval,
            count,
            administration,
            scaled: true,
            keeps_lag: false,
        });
    }
    // One arm in four starts at steady state (its first line), one has occasions, one doses
    // per kilogram.
    let variant = rng.below(4);
    if variant == 1 {
        let l = &mut lines[0];
        l.steady_state = true;
        if l.count == 1 {
            l.interval = rng.grid(4.0, 24.0, 0.5);
        }
        // Its start within its first interval (at 0 in a third of them): the doses before it,
        // every interval back, give the state at 0.
        l.start %= l.interval;
    }
    let last = lines
        .iter()
        .map(|l| l.start + l.interval * (l.count - 1) as f64)
        .fold(0.0, f64::max);
    // The end: past the last dose, or through the regimen (later doses are never given).
    let end = if rng.below(3) == 0 {
        rng.grid(6.0, last.max(12.0), 0.5)
    } else {
        last + rng.grid(6.0, 48.0, 0.5)
    };
    if rng.below(5) == 0 {
        let mut reset = DoseLine::reset(rng.grid(2.0, end, 0.5));
        reset.state = 0;
        lines.push(reset);
    }
    let a = rng.grid(0.0, end, 0.5);
    let b = (a + rng.grid(0.5, 48.0, 0.5)).min(end + 5.0);
    let a2 = rng.grid(0.0, end, 0.25);
    let b2 = a2 + rng.grid(0.25, end, 0.25);
    // A sampling time at a nominal dose time, where the value is the one before the dose.
    let dose_time = {
        let l = &lines[rng.below(n_lines)];
        (l.start + l.interval * rng.below(l.count as usize) as f64).min(end)
    };
    let at = if rng.below(2) == 0 {
        dose_time
    } else {
        rng.range(0.0, end)
    };
    let mut sample_times: Vec<f64> = (0..4).map(|_| rng.range(0.0, end)).collect();
    sample_times.extend([dose_time, 0.0, end]);
    sample_times.sort_by(f64::total_cmp);
    sample_times.dedup();
    let metric_names = [
        "auc".to_string(),
        "cmax".into(),
        "tmax".into(),
        "cmin".into(),
        "ctrough".into(),
        "auc_last_interval".into(),
        "cmax_last_interval".into(),
        "cmin_last_interval".into(),
        format!("cavg({a}, {b})"),
        format!("auc({a2}, {b2})"),
        format!("cmin({a2}, {b2})"),
        format!("at({at})"),
        // The threshold is set per case once the reference's Cmax is known.
        "time_above(1)".into(),
    ];
    let metrics = metric_names
        .iter()
        .map(|m| MetricSpec::new(0, "cp", Metric::parse(m).unwrap()))
        .collect();
    let typical = [1.2, 5.0, 30.0, 2.5, 60.0, 0.6, 0.7];
    let mut params = vec![Vec::new(); n_params];
    for _ in 0..SUBJECTS {
        for (p, t) in typical.iter().enumerate() {
            let v = if p == FDEP {
                rng.range(0.3, 1.0)
            } else {
                t * (0.5 * (2.0 * rng.unit() - 1.0)).exp()
            };
            params[p].push(v);
        }
    }
    // Occasions: every parameter moves by up to ±30 % at each (F anew), the volume too, so
    // that the concentration itself jumps at an occasion's start.
    let mut occasions = Vec::new();
    let mut occasion_params = Vec::new();
    if variant == 2 {
        for _ in 0..1 + rng.below(2) {
            occasions.push(rng.grid(1.0, end - 1.0, 0.5));
        }
        occasions.sort_by(f64::total_cmp);
        occasions.dedup();
        for _ in &occasions {
            let occ: Vec<Vec<f64>> = params
                .iter()
                .enumerate()
                .map(|(p, col)| {
                    col.iter()
                        .map(|v| {
                            if p == FDEP {
                                rng.range(0.3, 1.0)
                            } else {
                                v * (0.3 * (2.0 * rng.unit() - 1.0)).exp()
                            }
                        })
                        .collect()
                })
                .collect();
            occasion_params.push(occ);
        }
    }
    let amount_scale =
        (variant == 3).then(|| (0..SUBJECTS).map(|_| rng.grid(40.0, 110.0, 0.1)).collect());
    // Doses per kilogram beside fixed ones: the first line one kind, the others the other.
    if variant == 3 {
        let first = rng.below(2) == 0;
        for (j, l) in lines.iter_mut().enumerate() {
            if l.administration != Administration::Reset {
                l.scaled = (j == 0) == first;
            }
        }
    }
    Case {
        arm: ArmPlan {
            name: "random".into(),
            regimen: Regimen { lines },
            metrics,
            end,
            sample_times,
            solver: SolverOptions::default(),
            occasions,
        },
        params,
        occasion_params,
        amount_scale,
    }
}

// ---------------------------------------------------------------------------------------
// The exact solution.

/// z = (depot, central, periph, infusion rate into depot, into central, ∫cp): dz/dt = M·z.
const N: usize = 6;
type Mat = [[f64; N]; N];
type Vector = [f64; N];

fn mat_mul(a: &Mat, b: &Mat) -> Mat {
    let mut c = [[0.0; N]; N];
    for i in 0..N {
        for k in 0..N {
            for j in 0..N {
                c[i][j] += a[i][k] * b[k][j];
            }
        }
    }
    c
}

fn mat_vec(a: &Mat, x: &Vector) -> Vector {
    let mut y = [0.0; N];
    for i in 0..N {
        for j in 0..N {
            y[i] += a[i][j] * x[j];
        }
    }
    y
}

/// exp(M·h): M·h scaled by 2^-s to a norm ≤ 1/2, a Taylor series to 20 terms, squared s times.
fn expm(m: &Mat, h: f64) -> Mat {
    let norm = (0..N)
        .map(|i| (0..N).map(|j| (m[i][j] * h).abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let s = if norm > 0.5 {
        (norm / 0.5).log2().ceil() as i32
    } else {
        0
    };
    let scale = h / 2f64.powi(s);
    let mut a = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..N {
            a[i][j] = m[i][j] * scale;
        }
    }
    let mut e = [[0.0; N]; N];
    let mut term = [[0.0; N]; N];
    for i in 0..N {
        e[i][i] = 1.0;
        term[i][i] = 1.0;
    }
    for k in 1..=20 {
        term = mat_mul(&term, &a);
        for row in term.iter_mut() {
            for x in row.iter_mut() {
                *x /= k as f64;
            }
        }
        for i in 0..N {
            for j in 0..N {
                e[i][j] += term[i][j];
            }
        }
    }
    for _ in 0..s {
        e = mat_mul(&e, &e);
    }
    e
}

/// What happens at one time of the expanded regimen.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// The parameters of occasion k (0: the first) from then on.
    Occasion(usize),
    Reset,
    Bolus(usize, f64),
    Rate(usize, f64),
}

/// The system matrix for one set of parameters.
fn system(p: &[f64]) -> Mat {
    let (ka, k10, k12, k21) = (p[KA], p[CL] / p[V1], p[Q] / p[V1], p[Q] / p[V2]);
    let mut m = [[0.0; N]; N];
    m[0][0] = -ka;
    m[0][3] = 1.0;
    m[1][0] = ka;
    m[1][1] = -(k10 + k12);
    m[1][2] = k21;
    m[1][4] = 1.0;
    m[2][1] = k12;
    m[2][2] = -k21;
    m[5][1] = 1.0 / p[V1];
    m
}

/// A subject's exact solution: the state just after each event time.
struct Exact {
    /// The system matrix and the central volume of each occasion.
    ms: Vec<(Mat, f64)>,
    /// (time, state right after every change at that time, occasion from then on), sorted;
    /// the first at 0.
    knots: Vec<(f64, Vector, usize)>,
}

impl Exact {
    /// `p[k]`: the parameters at occasion k (one set without occasions); `scale` multiplies
    /// every amount.
    fn new(arm: &ArmPlan, p: &[Vec<f64>], scale: f64) -> Exact {
        let ms: Vec<(Mat, f64)> = p.iter().map(|q| (system(q), q[V1])).collect();
        // The regimen, expanded: (time, change).
        let resets: Vec<f64> = arm
            .regimen
            .lines
            .iter()
            .filter(|l| l.administration == Administration::Reset)
            .map(|l| l.start)
            .collect();
        let mut changes: Vec<(f64, Change)> = resets.iter().map(|r| (*r, Change::Reset)).collect();
        changes.extend(
            arm.occasions
                .iter()
                .enumerate()
                .map(|(k, t)| (*t, Change::Occasion(k + 1))),
        );
        let occasion_of = |t: f64| arm.occasions.iter().take_while(|s| **s <= t).count();
        // A line at steady state has been given every interval for ever before 0: its doses
        // from far enough back that what is left of the first is below round-off.
        let mut first_time = 0.0f64;
        for l in &arm.regimen.lines {
            if l.administration == Administration::Reset {
                continue;
            }
            let past = if l.steady_state {
                (6000.0 / l.interval).ceil() as i64
            } else {
                0
            };
            for k in -past..l.count as i64 {
                let nominal = l.start + l.interval * k as f64;
                // The doses before a steady-state line's first take its dosing values, as an
                // SS = 1 record's implied doses take those in force at the record.
                let q = &p[occasion_of(nominal.max(l.start))];
                let (lag, f) = if l.state == 0 {
                    (q[TLAG], q[FDEP])
                } else {
                    (0.0, 1.0)
                };
                let t = nominal + lag;
                let amount = l.amount * if l.scaled { scale } else { 1.0 } * f;
                first_time = first_time.min(t);
                let mut add = |time: f64, c: Change| {
                    // A reset after the nominal time cancels what the dose had still to give.
                    if !resets.iter().any(|r| nominal < *r && *r <= time) {
                        changes.push((time, c));
                    }
                };
                match l.administration {
                    Administration::Bolus => add(t, Change::Bolus(l.state, amount)),
                    Administration::InfusionRate(rate) => {
                        add(t, Change::Rate(l.state, rate));
                        add(t + amount / rate, Change::Rate(l.state, -rate));
                    }
                    Administration::InfusionDuration(d) => {
                        add(t, Change::Rate(l.state, amount / d));
                        add(t + d, Change::Rate(l.state, -amount / d));
                    }
                    _ => unreachable!(),
                }
            }
        }
        // At one time: a new occasion and a reset first (what is given then comes after).
        let rank = |c: &Change| match c {
            Change::Occasion(_) => 0,
            Change::Reset => 1,
            _ => 2,
        };
        changes.sort_by(|a, b| a.0.total_cmp(&b.0).then(rank(&a.1).cmp(&rank(&b.1))));
        // From before the first dose (the first past one at steady state): the area is read
        // as differences, so it may start anywhere.
        let mut knots: Vec<(f64, Vector, usize)> = vec![(first_time - 1.0, [0.0; N], 0)];
        for (t, c) in changes {
            if t > arm.end {
                break;
            }
            let (t0, z0, mut occ) = *knots.last().unwrap();
            let mut z = if t > t0 {
                mat_vec(&expm(&ms[occ].0, t - t0), &z0)
            } else {
                z0
            };
            match c {
                Change::Occasion(k) => occ = k,
                Change::Reset => {
                    let auc = z[5];
                    z = [0.0; N];
                    z[5] = auc;
                }
                Change::Bolus(s, a) => z[s] += a,
                Change::Rate(s, r) => z[3 + s] += r,
            }
            if t > t0 {
                knots.push((t, z, occ));
            } else {
                *knots.last_mut().unwrap() = (t, z, occ);
            }
        }
        Exact { ms, knots }
    }

    /// The state at t ≥ 0 and the occasion in force: the left limit (before what happens at
    /// t), or the right limit.
    fn state(&self, t: f64, right: bool) -> (Vector, usize) {
        let k = self
            .knots
            .iter()
            .rposition(|(tk, _, _)| if right { *tk <= t } else { *tk < t })
            .unwrap();
        let (tk, z, occ) = self.knots[k];
        if t > tk {
            (mat_vec(&expm(&self.ms[occ].0, t - tk), &z), occ)
        } else {
            (z, occ)
        }
    }

    fn conc(&self, t: f64, right: bool) -> f64 {
        let (z, occ) = self.state(t, right);
        z[1] / self.ms[occ].1
    }

    fn auc(&self, a: f64, b: f64) -> f64 {
        self.state(b, false).0[5] - self.state(a, false).0[5]
    }

    /// The pieces of [a, b] between knots: the solution is smooth inside each.
    fn pieces(&self, a: f64, b: f64) -> Vec<(f64, f64)> {
        let mut p = vec![a, b];
        p.extend(self.knots.iter().map(|k| k.0).filter(|t| *t > a && *t < b));
        p.sort_by(f64::total_cmp);
        p.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// `sign` = 1: the maximum of cp over [a⁺, b⁻] and its time; −1: the minimum.
    fn extremum(&self, a: f64, b: f64, sign: f64) -> (f64, f64) {
        const GRID: usize = 400;
        // The grid's local maxima of every piece: (piece start, grid step, index, value).
        let mut peaks: Vec<(f64, f64, usize, f64)> = Vec::new();
        for (lo, hi) in self.pieces(a, b) {
            // Right limit at the piece's start, left limit at its end, stepped exactly.
            let h = (hi - lo) / GRID as f64;
            let (mut z, occ) = self.state(lo, true);
            let (m, v1) = &self.ms[occ];
            let step = expm(m, h);
            let mut vals = Vec::with_capacity(GRID + 1);
            for _ in 0..=GRID {
                vals.push(sign * z[1] / v1);
                z = mat_vec(&step, &z);
            }
            for j in 0..=GRID {
                let left = j == 0 || vals[j - 1] <= vals[j];
                let right = j == GRID || vals[j + 1] <= vals[j];
                if left && right {
                    peaks.push((lo, h, j, vals[j]));
                }
            }
        }
        let top = peaks.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max);
        let mut best = (f64::NAN, f64::NEG_INFINITY);
        // Refine every maximum within reach of the top (peaks of similar heights).
        for &(lo, h, j, v) in peaks.iter().filter(|p| p.3 >= top - 1e-3 * top.abs()) {
            let (start, occ) = self.state(lo, true);
            let (m, v1) = &self.ms[occ];
            let f = |t: f64| sign * mat_vec(&expm(m, t - lo), &start)[1] / v1;
            let t = common::golden_max(
                f,
                lo + h * j.saturating_sub(1) as f64,
                lo + h * (j + 1).min(GRID) as f64,
                80,
            );
            for (tt, vv) in [(t, f(t)), (lo + h * j as f64, v)] {
                if vv > best.1 {
                    best = (tt, vv);
                }
            }
        }
        (best.0, sign * best.1)
    }

    /// Time with cp ≥ x in [a, b]: grid sign changes located by bisection.
    fn time_above(&self, a: f64, b: f64, x: f64) -> f64 {
        const GRID: usize = 400;
        let mut total = 0.0;
        for (lo, hi) in self.pieces(a, b) {
            let h = (hi - lo) / GRID as f64;
            let (start, occ) = self.state(lo, true);
            let (m, v1) = &self.ms[occ];
            let step = expm(m, h);
            let mut z = start;
            let f = |t: f64| mat_vec(&expm(m, t - lo), &start)[1] / v1 - x;
            let mut prev = z[1] / v1 - x;
            for j in 1..=GRID {
                z = mat_vec(&step, &z);
                let cur = z[1] / v1 - x;
                let (t0, t1) = (lo + h * (j - 1) as f64, lo + h * j as f64);
                if prev >= 0.0 && cur >= 0.0 {
                    total += h;
                } else if (prev >= 0.0) != (cur >= 0.0) {
                    let x0 = common::crossing(f, t0, t1, prev >= 0.0);
                    total += if prev >= 0.0 { x0 - t0 } else { t1 - x0 };
                }
                prev = cur;
            }
        }
        total
    }
}

/// The window of a metric, as docs/metrics.md defines it: the last interval starts at the
/// last nominal dose given before the end and lasts its line's interval, or to the end; a dose
/// at the end itself closes it.
fn window(arm: &ArmPlan, w: vpop::metrics::Window) -> Option<(f64, f64)> {
    use vpop::metrics::Window;
    let end = arm.end;
    let (a, b) = match w {
        Window::Whole => (0.0, end),
        Window::Range(a, b) => (a, b),
        Window::LastInterval => match (last_dose(arm, end), last_dose(arm, f64::INFINITY)) {
            (Some((t, _)), Some((u, _))) if u == end => (t, end),
            (Some((t, Some(tau))), _) => (t, t + tau),
            (Some((t, None)), _) => (t, end),
            (None, _) => (0.0, end),
        },
    };
    let (a, b) = (a.max(0.0), b.min(end));
    (a < b).then_some((a, b))
}

/// The last nominal administration before `before` and at or before the end, and its line's
/// interval when the line repeats or starts at steady state (the later line where two give a
/// dose at that time).
fn last_dose(arm: &ArmPlan, before: f64) -> Option<(f64, Option<f64>)> {
    let mut last: Option<(f64, Option<f64>)> = None;
    for l in &arm.regimen.lines {
        if l.administration == Administration::Reset {
            continue;
        }
        for k in 0..l.count {
            let t = l.start + l.interval * k as f64;
            if t <= arm.end && t < before && last.is_none_or(|(u, _)| t >= u) {
                last = Some((t, (l.count > 1 || l.steady_state).then_some(l.interval)));
            }
        }
    }
    last
}

/// Distinct nominal administration times at or before the end.
fn doses_given(arm: &ArmPlan) -> usize {
    let mut t: Vec<f64> = arm
        .regimen
        .lines
        .iter()
        .filter(|l| l.administration != Administration::Reset)
        .flat_map(|l| (0..l.count).map(move |k| l.start + l.interval * k as f64))
        .filter(|t| *t <= arm.end)
        .collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    t.len()
}

/// The exact value of metric `k` of `arm` for a subject.
fn exact_metric(arm: &ArmPlan, k: usize, e: &Exact) -> f64 {
    use vpop::metrics::MetricKind as K;
    let metric = arm.metrics[k].metric;
    if let K::At(t) = metric.kind {
        return if t <= arm.end {
            e.conc(t, false)
        } else {
            f64::NAN
        };
    }
    if metric.kind == K::Ctrough {
        // Before the last of several doses, or before a steady-state dose given alone (the
        // steady state's trough).
        let alone_at_steady_state = doses_given(arm) == 1
            && arm.regimen.lines.iter().any(|l| {
                l.steady_state && l.administration != Administration::Reset && l.start <= arm.end
            });
        return match (
            doses_given(arm) > 1 || alone_at_steady_state,
            last_dose(arm, f64::INFINITY),
        ) {
            (true, Some((t, _))) => e.conc(t, false),
            _ => f64::NAN,
        };
    }
    let Some((a, b)) = window(arm, metric.window) else {
        return f64::NAN;
    };
    match metric.kind {
        K::Auc => e.auc(a, b),
        K::Cavg => e.auc(a, b) / (b - a),
        K::Cmax => e.extremum(a, b, 1.0).1,
        K::Tmax => e.extremum(a, b, 1.0).0,
        K::Cmin => e.extremum(a, b, -1.0).1,
        K::TimeAbove(x) => e.time_above(a, b, x),
        K::Ctrough | K::At(_) => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------

fn model() -> Arc<CompiledModel> {
    let m = Model::parse("random_regimens.vpm", MODEL).unwrap();
    Arc::new(CompiledModel::new(&m))
}

/// A case's exact values, per subject.
struct Expected {
    /// `metrics[k][i]`.
    metrics: Vec<Vec<f64>>,
    /// `profile[i][j]`: cp of subject i at sampling time j.
    profile: Vec<Vec<f64>>,
    /// The largest concentration of any subject: the scale of concentration errors.
    scale: f64,
    exact: Vec<Exact>,
}

/// The cases, with each arm's threshold set at a fraction of its first subject's Cmax, and
/// their exact values (computed once, in parallel: every backend and method is checked
/// against the same).
fn cases(n_params: usize) -> Vec<(Case, Expected)> {
    use rayon::prelude::*;
    let mut rng = Rng(20261204);
    let cases: Vec<Case> = (0..CASES).map(|_| make_case(&mut rng, n_params)).collect();
    let fractions: Vec<f64> = (0..CASES).map(|_| rng.range(0.2, 0.8)).collect();
    cases
        .into_par_iter()
        .zip(fractions)
        .map(|(mut c, fraction)| {
            let exact: Vec<Exact> = (0..SUBJECTS)
                .map(|i| Exact::new(&c.arm, &c.subject(i), c.scale(i)))
                .collect();
            let cmax: Vec<f64> = exact
                .iter()
                .map(|e| e.extremum(0.0, c.arm.end, 1.0).1)
                .collect();
            let x = (cmax[0] * fraction * 1e4).round() / 1e4;
            let last = c.arm.metrics.len() - 1;
            c.arm.metrics[last] =
                MetricSpec::new(0, "cp", Metric::parse(&format!("time_above({x})")).unwrap());
            let metrics = (0..c.arm.metrics.len())
                .map(|k| exact.iter().map(|e| exact_metric(&c.arm, k, e)).collect())
                .collect();
            let profile = exact
                .iter()
                .map(|e| {
                    c.arm
                        .sample_times
                        .iter()
                        .map(|t| e.conc(*t, false))
                        .collect()
                })
                .collect();
            let expected = Expected {
                metrics,
                profile,
                scale: cmax.iter().copied().fold(0.0, f64::max),
                exact,
            };
            (c, expected)
        })
        .collect()
}

/// Every metric and profile value of `backend` within `tol` of the exact solution: relative to
/// the case's largest concentration for concentrations and areas (per hour of window), to the
/// window's length for times.
fn check(
    backend: &mut dyn Backend,
    cases: &[(Case, Expected)],
    method: Method,
    rtol: f64,
    tol: f64,
) {
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for (ci, (case, expected)) in cases.iter().enumerate() {
        let mut arm = case.arm.clone();
        arm.solver = SolverOptions {
            method,
            rtol,
            atol: rtol * 1e-4,
            ..Default::default()
        };
        let input = ChunkInput {
            first_subject: 0,
            n: SUBJECTS,
            params: &case.params,
            amount_scale: case.amount_scale.as_deref(),
            occasion_params: &case.occasion_params,
        };
        let mut out = ChunkOutput::default();
        backend.run_chunk(&arm, &input, &mut out).unwrap();
        let scale = expected.scale;
        for i in 0..SUBJECTS {
            let ctx = || {
                format!(
                    "case {ci} subject {i} ({:?}, end {})",
                    arm.regimen.lines, arm.end
                )
            };
            if out.status[i] != 0 {
                failures.push(format!("{}: status {}", ctx(), out.status[i]));
                continue;
            }
            for (k, spec) in arm.metrics.iter().enumerate() {
                use vpop::metrics::MetricKind as K;
                let got = out.metrics[k][i];
                let want = expected.metrics[k][i];
                let length = window(&arm, spec.metric.window).map_or(1.0, |(a, b)| b - a);
                let err = match spec.metric.kind {
                    _ if want.is_nan() || got.is_nan() => {
                        if want.is_nan() == got.is_nan() {
                            0.0
                        } else {
                            f64::INFINITY
                        }
                    }
                    // Tmax: the exact solution there is the maximum (times of equal peaks
                    // may differ).
                    K::Tmax => {
                        let e = &expected.exact[i];
                        let at = e.conc(got, true).max(e.conc(got, false));
                        (at - expected.metrics[1][i]).abs() / scale
                    }
                    K::TimeAbove(_) => (got - want).abs() / length,
                    K::Auc => (got - want).abs() / (scale * length),
                    _ => (got - want).abs() / scale,
                };
                worst = worst.max(err);
                if err > tol {
                    failures.push(format!(
                        "{}: {} = {got:.12e}, exact {want:.12e} (error {err:.2e})",
                        ctx(),
                        spec.column
                    ));
                }
            }
            let n_times = arm.sample_times.len();
            for (j, t) in arm.sample_times.iter().enumerate() {
                let got = out.profiles[0][i * n_times + j];
                let want = expected.profile[i][j];
                let err = (got - want).abs() / scale;
                worst = worst.max(err);
                if err > tol {
                    failures.push(format!(
                        "{}: profile at {t} = {got:.12e}, exact {want:.12e} (error {err:.2e})",
                        ctx()
                    ));
                }
            }
        }
    }
    let info = backend.info();
    println!(
        "{} {} {method} rtol {rtol:e}: worst error {worst:.2e} over {CASES} regimens × {SUBJECTS} subjects",
        info.name,
        info.precision.name()
    );
    assert!(
        failures.is_empty(),
        "{} of the values off:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// How many cases have each feature: a generator that stopped making one would leave it
/// untested without failing.
fn coverage(cases: &[(Case, Expected)]) -> Vec<(&'static str, usize)> {
    let count = |f: &dyn Fn(&ArmPlan) -> bool| cases.iter().filter(|(c, _)| f(&c.arm)).count();
    let doses = |a: &ArmPlan| -> Vec<f64> {
        a.regimen
            .lines
            .iter()
            .filter(|l| l.administration != Administration::Reset)
            .flat_map(|l| (0..l.count).map(move |k| l.start + l.interval * k as f64))
            .collect()
    };
    let admin = |a: &ArmPlan, f: &dyn Fn(&DoseLine) -> bool| a.regimen.lines.iter().any(f);
    vec![
        (
            "a reset",
            count(&|a| admin(a, &|l| l.administration == Administration::Reset)),
        ),
        (
            "doses past the end",
            count(&|a| doses(a).iter().any(|t| *t > a.end)),
        ),
        (
            "two lines dosing at one time",
            count(&|a| {
                let mut t = doses(a);
                let n = t.len();
                t.sort_by(f64::total_cmp);
                t.dedup();
                t.len() < n
            }),
        ),
        (
            "an infusion by rate",
            count(&|a| {
                admin(a, &|l| {
                    matches!(l.administration, Administration::InfusionRate(_))
                })
            }),
        ),
        (
            "an infusion by duration",
            count(&|a| {
                admin(a, &|l| {
                    matches!(l.administration, Administration::InfusionDuration(_))
                })
            }),
        ),
        (
            "an infusion longer than its interval",
            count(&|a| {
                admin(
                    a,
                    &|l| matches!(l.administration, Administration::InfusionDuration(d) if l.count > 1 && d > l.interval),
                )
            }),
        ),
        (
            "a line into the depot (lag, F)",
            count(&|a| {
                admin(a, &|l| {
                    l.state == 0 && l.administration != Administration::Reset
                })
            }),
        ),
        (
            "a line into the central compartment",
            count(&|a| admin(a, &|l| l.state == 1)),
        ),
        (
            "a start at steady state",
            count(&|a| admin(a, &|l| l.steady_state)),
        ),
        (
            "a steady-state line starting after 0",
            count(&|a| admin(a, &|l| l.steady_state && l.start > 0.0)),
        ),
        ("occasions", count(&|a| !a.occasions.is_empty())),
        (
            "doses per kilogram",
            cases
                .iter()
                .filter(|(c, _)| c.amount_scale.is_some())
                .count(),
        ),
        (
            "doses per kilogram beside fixed doses",
            count(&|a| {
                admin(a, &|l| l.scaled)
                    && admin(a, &|l| {
                        !l.scaled && l.administration != Administration::Reset
                    })
            }),
        ),
    ]
}

#[test]
fn cpu_reference_matches_the_exact_solution() {
    let model = model();
    let cases = cases(model.n_params());
    for (what, n) in coverage(&cases) {
        println!("{n:>3} of {CASES} regimens with {what}");
        assert!(n >= 3, "only {n} regimens with {what}");
    }
    let mut cpu = CpuBackend::new(model);
    for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
        check(&mut cpu, &cases, method, 1e-10, 1e-8);
    }
}

/// The reference itself: its exponential, its extrema and crossings.
#[test]
fn the_exact_solution_is_exact() {
    // One bolus into the central compartment of a one-compartment system (periph unlinked):
    // cp = D/V·e^(−k t), its area D/(V k)·(1 − e^(−k t)).
    let arm = ArmPlan {
        name: "x".into(),
        regimen: Regimen {
            lines: vec![DoseLine {
                steady_state: false,
                scaled: true,
                keeps_lag: false,
                state: 1,
                amount: 100.0,
                start: 2.0,
                interval: 0.0,
                count: 1,
                administration: Administration::Bolus,
            }],
        },
        metrics: Vec::new(),
        end: 50.0,
        sample_times: Vec::new(),
        solver: SolverOptions::default(),
        occasions: Vec::new(),
    };
    let (cl, v) = (3.0, 20.0);
    let e = Exact::new(&arm, &[vec![1.0, cl, v, 0.0, 60.0, 0.0, 1.0]], 1.0);
    let k = cl / v;
    let c = |t: f64| 100.0 / v * (-k * (t - 2.0)).exp();
    for t in [2.5, 7.0, 31.0, 50.0] {
        assert!((e.conc(t, false) / c(t) - 1.0).abs() < 1e-13, "{t}");
    }
    assert_eq!(e.conc(2.0, false), 0.0);
    assert!((e.conc(2.0, true) / c(2.0) - 1.0).abs() < 1e-14);
    let auc = 100.0 / (v * k) * (1.0 - (-k * 48.0).exp());
    assert!((e.auc(0.0, 50.0) / auc - 1.0).abs() < 1e-12);
    let (tmax, cmax) = e.extremum(0.0, 50.0, 1.0);
    assert_eq!(tmax, 2.0);
    assert!((cmax / c(2.0) - 1.0).abs() < 1e-14);
    let (_, cmin) = e.extremum(0.0, 50.0, -1.0);
    assert_eq!(cmin, 0.0);
    // cp ≥ 1 from 2 until ln(5)/k later.
    let above = e.time_above(0.0, 50.0, 1.0);
    assert!((above - (5f64).ln() / k).abs() < 1e-9, "{above}");
    // The same dose every 12 h at steady state, from 0: the trough before the dose at 0 is
    // D/V·r/(1 − r) with r = e^(−12 k), the area over an interval D/CL; at 3 mg/kg for 70 kg.
    let mut ss = arm.clone();
    ss.regimen.lines[0].steady_state = true;
    ss.regimen.lines[0].start = 0.0;
    ss.regimen.lines[0].interval = 12.0;
    ss.end = 12.0;
    let e = Exact::new(&ss, &[vec![1.0, cl, v, 0.0, 60.0, 0.0, 1.0]], 0.03 * 70.0);
    let r = (-12.0 * k).exp();
    let trough = 210.0 / v * r / (1.0 - r);
    assert!((e.conc(0.0, false) / trough - 1.0).abs() < 1e-12);
    assert!((e.conc(0.0, true) / (trough + 210.0 / v) - 1.0).abs() < 1e-12);
    assert!((e.auc(0.0, 12.0) / (210.0 / cl) - 1.0).abs() < 1e-12);
    // An occasion at 20 h halves the volume: the concentration doubles there.
    let mut occ = arm.clone();
    occ.occasions = vec![20.0];
    let e = Exact::new(
        &occ,
        &[
            vec![1.0, cl, v, 0.0, 60.0, 0.0, 1.0],
            vec![1.0, cl, v / 2.0, 0.0, 60.0, 0.0, 1.0],
        ],
        1.0,
    );
    assert!((e.conc(20.0, false) / c(20.0) - 1.0).abs() < 1e-13);
    assert!((e.conc(20.0, true) / (2.0 * c(20.0)) - 1.0).abs() < 1e-13);
}

/// f64 as close to the exact solution as the CPU reference; f32 at rtol 1e-6 within 1e-4.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn on_gpu<E: std::fmt::Display>(
    make: impl Fn(Arc<CompiledModel>, vpop::backend::Precision) -> Result<Box<dyn Backend>, E>,
) {
    use vpop::backend::Precision;
    let model = model();
    // The exact values once, and only where a backend runs.
    let mut cases = None;
    for (precision, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-4)] {
        let mut b = match make(model.clone(), precision) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {e}");
                continue;
            }
        };
        let cases = cases.get_or_insert_with(|| self::cases(model.n_params()));
        for method in [Method::Tsit5, Method::Rodas4] {
            check(b.as_mut(), cases, method, rtol, tol);
        }
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_matches_the_exact_solution() {
    on_gpu(|m, p| {
        vpop::backend::wgpu::WgpuBackend::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

#[test]
#[cfg(feature = "cuda")]
fn emulated_cuda_matches_the_exact_solution() {
    on_gpu(|m, p| {
        vpop::backend::cuda::EmulatedCuda::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

// ---------------------------------------------------------------------------------------
// NONMEM records (docs/nonmem.md): random datasets, every output against the exact solution.

/// One record of a random dataset.
#[derive(Debug, Clone)]
struct Rec {
    time: f64,
    evid: u8,
    amt: f64,
    /// 1: the depot (lag, F), 2: central.
    cmt: usize,
    rate: f64,
    ii: f64,
    addl: u32,
    ss: u8,
}

impl Rec {
    fn observation(time: f64) -> Rec {
        Rec {
            time,
            evid: 0,
            amt: 0.0,
            cmt: 2,
            rate: 0.0,
            ii: 0.0,
            addl: 0,
            ss: 0,
        }
    }
}

/// A random dataset of one subject: doses (boluses and infusions into either compartment,
/// ADDL, a first dose at steady state, later ones added at steady state), resets (EVID 3 and
/// 4), observations between them and at dose times, before and after the dose's record.
fn make_records(rng: &mut Rng) -> Vec<Rec> {
    let mut recs: Vec<Rec> = Vec::new();
    let mut t = rng.grid(0.0, 6.0, 0.5);
    for d in 0..2 + rng.below(4) {
        let cmt = 1 + rng.below(2);
        let amt = rng.grid(20.0, 300.0, 10.0);
        let ii = rng.grid(3.0, 24.0, 0.5);
        let length = rng.range(0.25, 1.5 * ii);
        let rate = if rng.below(3) == 0 { amt / length } else { 0.0 };
        let addl = if rng.below(2) == 0 {
            rng.below(5) as u32
        } else {
            0
        };
        // The first dose at steady state (SS = 1); a later central dose that is over within
        // the interval may add its steady state (SS = 2).
        let ss = match (d, rng.below(4)) {
            (0, 0) => 1,
            (_, 1) if d > 0 && cmt == 2 && (rate == 0.0 || amt / rate < ii) => 2,
            _ => 0,
        };
        let evid = if d > 0 && rng.below(6) == 0 { 4 } else { 1 };
        let dose = Rec {
            time: t,
            evid,
            amt,
            cmt,
            rate,
            ii: if addl > 0 || ss > 0 { ii } else { 0.0 },
            addl,
            ss,
        };
        match rng.below(3) {
            0 => recs.extend([Rec::observation(t), dose]),
            1 => recs.extend([dose, Rec::observation(t)]),
            _ => recs.push(dose),
        }
        let span = rng.grid(2.0, 40.0, 0.5);
        for _ in 0..1 + rng.below(4) {
            recs.push(Rec::observation(t + rng.range(0.0, span)));
        }
        if rng.below(6) == 0 {
            let mut reset = Rec::observation(t + rng.range(0.0, span));
            reset.evid = 3;
            recs.push(reset);
        }
        t += span;
    }
    recs.push(Rec::observation(t + rng.grid(1.0, 24.0, 0.5)));
    // In time order; records at one time keep their order.
    recs.sort_by(|a, b| a.time.total_cmp(&b.time));
    recs
}

/// The dataset's text, with the subject's parameters as covariate columns.
fn dataset_csv(recs: &[Rec], p: &[f64]) -> String {
    let mut s = String::from("ID,TIME,EVID,AMT,CMT,RATE,II,ADDL,SS,KA,CL,V1,Q,V2,TLAG,FDEP\n");
    for r in recs {
        s.push_str(&format!(
            "1,{},{},{},{},{},{},{},{},{}\n",
            r.time,
            r.evid,
            r.amt,
            r.cmt,
            r.rate,
            r.ii,
            r.addl,
            r.ss,
            p.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    s
}

/// An input still to come: a lagged bolus, an infusion's start or end, or an additional dose
/// (ADDL) of a record, given at its time.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Input(Change),
    Dose(usize),
}

/// The records' exact outputs: the states propagated exactly from event to event, the inputs
/// due at a record's time first, then the record.
struct RecordsExact<'a> {
    m: Mat,
    p: &'a [f64],
    recs: &'a [Rec],
    t: f64,
    z: Vector,
    pending: Vec<(f64, Pending)>,
}

impl RecordsExact<'_> {
    fn outputs(recs: &[Rec], p: &[f64]) -> Vec<f64> {
        let mut e = RecordsExact {
            m: system(p),
            p,
            recs,
            t: recs[0].time,
            z: [0.0; N],
            pending: Vec::new(),
        };
        let mut out = Vec::new();
        for (j, r) in recs.iter().enumerate() {
            e.advance(r.time);
            match r.evid {
                3 => e.reset(),
                1 | 4 => {
                    if r.evid == 4 || r.ss == 1 {
                        e.reset();
                    }
                    // SS = 1 cancels the additional doses still to come as well.
                    if r.ss == 1 {
                        e.pending.retain(|p| !matches!(p.1, Pending::Dose(_)));
                    }
                    if r.ss > 0 {
                        e.steady_state(j);
                    }
                    e.give(j, r.time);
                    for k in 1..=r.addl {
                        e.pending.push((r.time + r.ii * k as f64, Pending::Dose(j)));
                    }
                    // A bolus without lag is in the record's own output.
                    e.advance(r.time);
                }
                _ => {}
            }
            out.push(e.z[1] / p[V1]);
        }
        out
    }

    /// The amount, time and kind of the inputs of record j's dose given at `nominal`.
    fn inputs(&self, j: usize, nominal: f64) -> Vec<(f64, Change)> {
        let r = &self.recs[j];
        let s = r.cmt - 1;
        let (lag, f) = if s == 0 {
            (self.p[TLAG], self.p[FDEP])
        } else {
            (0.0, 1.0)
        };
        let (t, amount) = (nominal + lag, r.amt * f);
        if r.rate > 0.0 {
            vec![
                (t, Change::Rate(s, r.rate)),
                (t + amount / r.rate, Change::Rate(s, -r.rate)),
            ]
        } else {
            vec![(t, Change::Bolus(s, amount))]
        }
    }

    fn give(&mut self, j: usize, nominal: f64) {
        for (t, c) in self.inputs(j, nominal) {
            self.pending.push((t, Pending::Input(c)));
        }
    }

    /// Every pending input due at or before `to`, in time order, and the states there.
    fn advance(&mut self, to: f64) {
        loop {
            let next = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| *t <= to)
                .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                .map(|(k, _)| k);
            let Some(k) = next else { break };
            let (t, what) = self.pending.remove(k);
            self.propagate(t);
            match what {
                Pending::Input(c) => apply(&mut self.z, c),
                Pending::Dose(j) => self.give(j, t),
            }
        }
        self.propagate(to);
    }

    fn propagate(&mut self, to: f64) {
        if to > self.t {
            self.z = mat_vec(&expm(&self.m, to - self.t), &self.z);
            self.t = to;
        }
    }

    /// Every state to zero; running infusions and lagged doses cancelled, additional doses
    /// still to come kept.
    fn reset(&mut self) {
        self.z = [0.0; N];
        self.pending.retain(|p| matches!(p.1, Pending::Dose(_)));
    }

    /// Record j's dose every II for ever before it, added to the state: the doses of 6 000 h
    /// before, propagated to the record's time; their inputs that reach past it still come.
    fn steady_state(&mut self, j: usize) {
        let r = &self.recs[j];
        let n = (6000.0 / r.ii).ceil() as i64;
        let mut events: Vec<(f64, Change)> = (1..=n)
            .rev()
            .flat_map(|k| self.inputs(j, r.time - r.ii * k as f64))
            .collect();
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut z = [0.0; N];
        let mut t = events[0].0;
        for &(te, c) in events.iter().filter(|e| e.0 < r.time) {
            z = mat_vec(&expm(&self.m, te - t), &z);
            t = te;
            apply(&mut z, c);
        }
        z = mat_vec(&expm(&self.m, r.time - t), &z);
        for (x, add) in self.z.iter_mut().zip(&z).take(5) {
            *x += add;
        }
        for &(te, c) in events.iter().filter(|e| e.0 >= r.time) {
            self.pending.push((te, Pending::Input(c)));
        }
    }
}

fn apply(z: &mut Vector, c: Change) {
    match c {
        Change::Bolus(s, a) => z[s] += a,
        Change::Rate(s, r) => z[3 + s] += r,
        _ => unreachable!(),
    }
}

const RECORD_CASES: usize = 30;

/// The random datasets, one subject each: its records, the dataset and the exact outputs.
fn record_cases() -> Vec<(Vec<Rec>, vpop::dosing::nonmem::Dataset, Vec<f64>)> {
    let mut rng = Rng(41_202_026);
    (0..RECORD_CASES)
        .map(|_| {
            let recs = make_records(&mut rng);
            let typical = [1.2, 5.0, 30.0, 2.5, 60.0, 0.6, 0.7];
            let p: Vec<f64> = typical
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    if k == FDEP {
                        rng.grid(0.3, 1.0, 0.01)
                    } else {
                        (t * (0.5 * (2.0 * rng.unit() - 1.0)).exp() * 1e4).round() / 1e4
                    }
                })
                .collect();
            let ds = vpop::dosing::nonmem::Dataset::parse("random.csv", &dataset_csv(&recs, &p))
                .unwrap_or_else(|e| panic!("{e}\n{}", dataset_csv(&recs, &p)));
            let exact = RecordsExact::outputs(&recs, &p);
            (recs, ds, exact)
        })
        .collect()
}

/// Runs record programs with solver options: each program's output after each record.
type RunRecords<'a> =
    dyn FnMut(&[vpop::backend::records::Program], &SolverOptions) -> Vec<Vec<f64>> + 'a;

/// Every output after every record within `tol` of the exact value, relative to the
/// dataset's largest concentration.
fn check_records(run: &mut RunRecords<'_>, name: &str, method: Method, rtol: f64, tol: f64) {
    use vpop::backend::records::{record_program, RecordBinding};
    let m = Model::parse("random_regimens.vpm", MODEL).unwrap();
    let compiled = model();
    let base: Vec<f64> = m.params.iter().map(|p| p.default).collect();
    let cases = record_cases();
    let programs: Vec<_> = cases
        .iter()
        .map(|(_, ds, _)| {
            let binding = RecordBinding::new(&m, &ds.covariates);
            record_program(&compiled, &base, &binding, &ds.subjects[0], &mut |_, _| {})
        })
        .collect();
    let solver = SolverOptions {
        method,
        rtol,
        atol: rtol * 1e-4,
        ..Default::default()
    };
    let got = run(&programs, &solver);
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for (c, ((recs, _, exact), got)) in cases.iter().zip(&got).enumerate() {
        let scale = exact.iter().copied().fold(0.0, f64::max);
        for (j, (g, want)) in got.iter().zip(exact).enumerate() {
            let err = (g - want).abs() / scale;
            worst = worst.max(err);
            if err > tol || err.is_nan() {
                failures.push(format!(
                    "dataset {c} record {j} {:?}: {g:.12e}, exact {want:.12e} (error {err:.2e})",
                    recs[j]
                ));
            }
        }
    }
    let records: usize = cases.iter().map(|c| c.0.len()).sum();
    println!(
        "{name} {method} rtol {rtol:e}: worst error {worst:.2e} over {RECORD_CASES} datasets, {records} records"
    );
    assert!(
        failures.is_empty(),
        "{} of the outputs off:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn cpu_records_match_the_exact_solution() {
    let cases = record_cases();
    let count = |f: &dyn Fn(&Rec) -> bool| cases.iter().filter(|c| c.0.iter().any(f)).count();
    for (what, n) in [
        ("SS = 1", count(&|r| r.ss == 1)),
        ("SS = 2", count(&|r| r.ss == 2)),
        ("ADDL", count(&|r| r.addl > 0)),
        ("an infusion", count(&|r| r.rate > 0.0)),
        ("EVID 3", count(&|r| r.evid == 3)),
        ("EVID 4", count(&|r| r.evid == 4)),
        (
            "a depot dose (lag, F)",
            count(&|r| r.evid != 0 && r.cmt == 1),
        ),
    ] {
        println!("{n:>3} of {RECORD_CASES} datasets with {what}");
        assert!(n >= 3, "only {n} datasets with {what}");
    }
    let compiled = model();
    let m = Model::parse("random_regimens.vpm", MODEL).unwrap();
    let base: Vec<f64> = m.params.iter().map(|p| p.default).collect();
    for method in [Method::Tsit5, Method::Rodas4] {
        check_records(
            &mut |programs, solver| {
                cases
                    .iter()
                    .zip(programs)
                    .map(|((_, ds, _), _)| {
                        let binding =
                            vpop::backend::records::RecordBinding::new(&m, &ds.covariates);
                        let out = vpop::backend::records::simulate_records(
                            &compiled,
                            &base,
                            &binding,
                            &ds.subjects[0],
                            solver,
                        );
                        out.outputs[0].clone()
                    })
                    .collect()
            },
            "cpu f64",
            method,
            1e-10,
            1e-8,
        );
    }
}

/// The datasets on a GPU backend's records kernels: f64 as close to the exact solution as the
/// CPU reference, f32 at rtol 1e-6 within 1e-4.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn records_on_gpu<E: std::fmt::Display>(
    make: impl Fn(Arc<CompiledModel>, vpop::backend::Precision) -> Result<Box<dyn Backend>, E>,
) {
    use vpop::backend::Precision;
    for (precision, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-4)] {
        let mut b = match make(model(), precision) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {e}");
                continue;
            }
        };
        let name = format!("{} {}", b.info().name, precision.name());
        for method in [Method::Tsit5, Method::Rodas4] {
            check_records(
                &mut |programs, solver| {
                    let refs: Vec<_> = programs.iter().collect();
                    let out = b.run_records(&refs, solver).unwrap();
                    out.into_iter().map(|o| o.outputs[0].clone()).collect()
                },
                &name,
                method,
                rtol,
                tol,
            );
        }
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_records_match_the_exact_solution() {
    records_on_gpu(|m, p| {
        vpop::backend::wgpu::WgpuBackend::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

#[test]
#[cfg(feature = "cuda")]
fn emulated_cuda_records_match_the_exact_solution() {
    records_on_gpu(|m, p| {
        vpop::backend::cuda::EmulatedCuda::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

/// On a CUDA device (prints SKIPPED without one): arms and records.
#[test]
#[cfg(feature = "cuda")]
fn cuda_device_matches_the_exact_solution() {
    on_gpu(|m, p| {
        vpop::backend::cuda::CudaBackend::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
    records_on_gpu(|m, p| {
        vpop::backend::cuda::CudaBackend::new(m, p).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}
