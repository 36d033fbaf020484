//! Models written with the language's functions (`sin`, `cos`, `expit`, `logit`, `tanh`,
//! `atan`, `erf`, `erfc`, `phi`, `floor`, `ceil`, `trunc`, `mod`) and `pi`, on every backend
//! against closed
//! forms and exact relations:
//! - a one-compartment response to a cosine input (a circadian production rate) with bolus
//!   doses on top: the solution and its AUC in closed form;
//! - a pendulum, `sin` of a state (so its Jacobian holds `cos`, for the Rosenbrock methods):
//!   its energy is conserved and its period is 4·√(L/g)·K(sin(θ₀/2)), K the complete elliptic
//!   integral of the first kind (by the arithmetic–geometric mean);
//! - logistic growth, whose logit is linear in time: logit(n/cap) = r·t + logit(p0);
//! - examples/probit_ae.vpm's probit adverse event, Φ((cp − c50)/s): its peak is Φ of the
//!   concentration's peak, at the same time, and it is above ½ while cp is above c50;
//! - a Gaussian input (an absorption profile: the absorbed fraction is a difference of normal
//!   distribution functions, `phi`) and a state decaying as y' = −k·tanh(y) (so
//!   sinh(y) = sinh(y0)·e^(−kt), and the Rosenbrock methods' Jacobian holds 1 − tanh²), seen
//!   through `erf`, `erfc`, `atan`, `floor` and `ceil`, and time through `mod` and `trunc`
//!   of negative and positive values; the AUC of Φ by ∫Φ(u) du = uΦ(u) + φ(u);
//! - a fractional power of a concentration that starts at 0, c^g with g < 1 (its Jacobian is
//!   infinite at t = 0): ∫c^g against Gauss–Legendre quadrature of the closed form of c.
//!
//! The CPU f64 reference with every adaptive method; the WGSL kernels (lavapipe in CI) and
//! the CUDA kernels (emulated on the host, and on a device where there is one) in f64 and f32.

// Without a GPU backend compiled in, only the CPU tests remain.
#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_imports, dead_code)
)]

use std::f64::consts::PI;
use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::{ArmPlan, Backend, Precision};
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Method, SolverOptions};

mod common;

const CIRCADIAN: &str = "\
param k = 0.3
param a = 2
param w = 0.2617993877991494
param ph = 1
state x
d/dt(x) = a * (1 + cos(w * t - ph)) - k * x
output c = x
";

const PENDULUM: &str = "\
param g = 9.81
param len = 1.5
param th0 = 1
state th, om
th(0) = th0
d/dt(th) = om
d/dt(om) = -g / len * sin(th)
output theta = th
output energy = 0.5 * len * om^2 + g * (1 - cos(th))
";

const LOGISTIC: &str = "\
param r = 0.3
param cap = 100
param p0 = 0.05
state n
n(0) = cap * p0
fr = n / cap
d/dt(n) = r * n * (1 - fr)
output z = logit(fr)
output back = expit(logit(fr)) * 2 * pi / (2 * pi)
output size = n
";

const SPECIAL: &str = "\
param dose = 100
param t0 = 4
param s = 1.5
param k = 0.8
param y0 = 2
state amt, y
y(0) = y0
d/dt(amt) = dose / (s * sqrt(2 * pi)) * exp(-0.5 * ((t - t0) / s)^2)
d/dt(y) = -k * tanh(y)
output frac = phi((t - t0) / s) - phi(-t0 / s)
output absorbed = amt / dose
output yv = y
output ey = erf(y)
output ecy = erfc(y / 2)
output ay = atan(3 * y)
output steps = 1 + floor(t / 2) + ceil(t / 3 - 0.4)
output wrap = mod(t - 3.7, 2.5) + trunc(1.2 - t / 3)
";

/// A power below 1 of a state that starts at 0 (a Hill coefficient below 1): the right-hand
/// side is finite everywhere, but at t = 0 the Jacobian's ∂(c^g)/∂central and the AUC row's
/// gradient are infinite, which the Rosenbrock methods take as 0 for that step.
const FRACTIONAL: &str = "\
param ka = 1
param cl = 3
param v = 30
param g = 0.8
state depot, central, x
c = central / v
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
d/dt(x) = c^g
output h = c^g
output xo = x
";

const DOSE: f64 = 5.0;
const II: f64 = 24.0;
const END: f64 = 60.0;
const TIMES: [f64; 4] = [7.5, 23.0, 31.0, 55.0];

/// Subjects of the circadian model: (k, a, w, ph).
fn circadian_subjects() -> Vec<[f64; 4]> {
    vec![
        [0.3, 2.0, 2.0 * PI / 24.0, 1.0],
        [0.05, 0.7, 2.0 * PI / 24.0, -2.5],
        [1.2, 5.0, 2.0 * PI / 12.0, 4.0],
        [0.3, 2.0, 2.0 * PI / 8.0, 0.0],
    ]
}

/// x(t) with x(0) = 0 and DOSE into x at 0, II, 2·II, …: the particular solution, the
/// homogeneous part that makes x(0) = 0, and the doses' exponentials.
fn circadian_x(p: [f64; 4], t: f64) -> f64 {
    let [k, a, w, ph] = p;
    let q = a / (k * k + w * w);
    let part = |t: f64| a / k + q * (k * (w * t - ph).cos() + w * (w * t - ph).sin());
    let mut x = part(t) - part(0.0) * (-k * t).exp();
    let mut td = 0.0;
    while td <= t {
        x += DOSE * (-k * (t - td)).exp();
        td += II;
    }
    x
}

/// ∫₀ᵀ x dt of [`circadian_x`].
fn circadian_auc(p: [f64; 4], end: f64) -> f64 {
    let [k, a, w, ph] = p;
    let q = a / (k * k + w * w);
    let part = |t: f64| a / k + q * (k * (w * t - ph).cos() + w * (w * t - ph).sin());
    let int_part = a * end / k
        + q * (k * ((w * end - ph).sin() + ph.sin()) / w
            - w * ((w * end - ph).cos() - ph.cos()) / w);
    let decay = |from: f64| (1.0 - (-k * (end - from)).exp()) / k;
    let mut auc = int_part - part(0.0) * decay(0.0);
    let mut td = 0.0;
    while td <= end {
        auc += DOSE * decay(td);
        td += II;
    }
    auc
}

/// Subjects of the pendulum: (g, len, th0).
fn pendulum_subjects() -> Vec<[f64; 3]> {
    vec![
        [9.81, 1.5, 1.0],
        [9.81, 0.5, 0.2],
        [1.62, 2.0, 2.5],
        [9.81, 1.0, -1.8],
    ]
}

/// The period of a pendulum of amplitude th0: 4·√(len/g)·K(m) with m = sin²(th0/2),
/// K(m) = π / (2·AGM(1, √(1 − m))).
fn pendulum_period(p: [f64; 3]) -> f64 {
    let [g, len, th0] = p;
    let m = (th0 / 2.0).sin().powi(2);
    let (mut x, mut y) = (1.0f64, (1.0 - m).sqrt());
    for _ in 0..40 {
        (x, y) = (0.5 * (x + y), (x * y).sqrt());
    }
    4.0 * (len / g).sqrt() * PI / (2.0 * x)
}

/// Per-subject parameter rows as the backends take them: one column per parameter.
fn columns<const N: usize>(subjects: &[[f64; N]]) -> Vec<Vec<f64>> {
    (0..N)
        .map(|j| subjects.iter().map(|s| s[j]).collect())
        .collect()
}

/// Subjects of the logistic model: (r, cap, p0); at the end (15 h) n/cap is 0.83–0.95.
fn logistic_subjects() -> Vec<[f64; 3]> {
    vec![
        [0.3, 100.0, 0.05],
        [0.1, 5.0, 0.3],
        [0.5, 1e3, 0.01],
        [0.2, 20.0, 0.5],
    ]
}

const LOGISTIC_END: f64 = 15.0;

/// The logistic arm: z = logit(n/cap) at four times and its AUC, n/cap back through expit at
/// the same times, and the largest n (at the end), with the closed form of each.
fn logistic_case(method: Method, rtol: f64) -> (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let times = [0.0, 2.5, 7.0, 12.0];
    let mut metrics: Vec<(usize, &str, String)> = Vec::new();
    for (o, name) in [(0, "z"), (1, "back")] {
        metrics.extend(times.iter().map(|t| (o, name, format!("at({t})"))));
    }
    metrics.push((0, "z", "auc".into()));
    metrics.push((2, "size", "cmax".into()));
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let expit = |z: f64| 1.0 / (1.0 + (-z).exp());
    let subjects = logistic_subjects();
    let params = columns(&subjects);
    let want = subjects
        .iter()
        .map(|&[r, cap, p0]| {
            let z = |t: f64| r * t + logit(p0);
            let mut w: Vec<f64> = times.iter().map(|&t| z(t)).collect();
            w.extend(times.iter().map(|&t| expit(z(t))));
            w.push(r * LOGISTIC_END * LOGISTIC_END / 2.0 + logit(p0) * LOGISTIC_END);
            w.push(cap * expit(z(LOGISTIC_END)));
            w
        })
        .collect();
    (
        plan(&metrics, Regimen::default(), LOGISTIC_END, method, rtol),
        params,
        want,
    )
}

/// Subjects of the special-functions model: (dose, t0, s, k, y0).
fn special_subjects() -> Vec<[f64; 5]> {
    vec![
        [100.0, 4.0, 1.5, 0.8, 2.0],
        [50.0, 2.0, 0.5, 0.3, -1.5],
        [10.0, 6.0, 2.5, 1.5, 0.5],
        [1.0, 3.0, 1.0, 0.05, 4.0],
    ]
}

const SPECIAL_END: f64 = 12.0;

/// The special-functions arm: every output at four times (away from the steps of `floor`,
/// `ceil`, `trunc` and `mod`) and the AUC of `frac`, with the closed form of each from Rust's and the `libm`
/// crate's functions. `steps` is 1 at the start and first steps up at t = 1.2: a step at
/// t = 0, where its AUC is still 0, would leave Rodas4 at atol 1e-13 nothing to measure the
/// step's error against (`step_too_small`).
fn special_case(method: Method, rtol: f64) -> (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let times = [1.5, 4.5, 6.5, 9.5];
    let names = ["frac", "absorbed", "yv", "ey", "ecy", "ay", "steps", "wrap"];
    let mut metrics: Vec<(usize, &str, String)> = Vec::new();
    for (o, name) in names.iter().enumerate() {
        metrics.extend(times.iter().map(|t| (o, *name, format!("at({t})"))));
    }
    metrics.push((0, "frac", "auc".into()));
    let phi = |u: f64| 0.5 * libm::erfc(-u / 2f64.sqrt());
    let density = |u: f64| (-0.5 * u * u).exp() / (2.0 * PI).sqrt();
    let subjects = special_subjects();
    let params = columns(&subjects);
    let want = subjects
        .iter()
        .map(|&[_, t0, s, k, y0]| {
            let frac = |t: f64| phi((t - t0) / s) - phi(-t0 / s);
            let y = |t: f64| (y0.sinh() * (-k * t).exp()).asinh();
            // mod(a, b) = a − b·floor(a / b) (the sign of b); trunc toward zero, where floor
            // would step down: 1.2 − t/3 is −0.3 at t = 4.5.
            let wrap = |t: f64| {
                let a = t - 3.7;
                a - 2.5 * (a / 2.5).floor() + (1.2 - t / 3.0).trunc()
            };
            let outputs: [&dyn Fn(f64) -> f64; 8] = [
                &frac,
                &frac,
                &y,
                &|t| libm::erf(y(t)),
                &|t| libm::erfc(y(t) / 2.0),
                &|t| (3.0 * y(t)).atan(),
                &|t| 1.0 + (t / 2.0).floor() + (t / 3.0 - 0.4).ceil(),
                &wrap,
            ];
            let mut w: Vec<f64> = Vec::new();
            for f in outputs {
                w.extend(times.iter().map(|&t| f(t)));
            }
            let big = |u: f64| u * phi(u) + density(u);
            let (u0, u1) = (-t0 / s, (SPECIAL_END - t0) / s);
            w.push(s * (big(u1) - big(u0)) - SPECIAL_END * phi(u0));
            w
        })
        .collect();
    (
        plan(&metrics, Regimen::default(), SPECIAL_END, method, rtol),
        params,
        want,
    )
}

fn plan(
    metrics: &[(usize, &str, String)],
    regimen: Regimen,
    end: f64,
    method: Method,
    rtol: f64,
) -> ArmPlan {
    ArmPlan {
        name: "periodic".into(),
        regimen,
        metrics: metrics
            .iter()
            .map(|(o, name, m)| MetricSpec::new(*o, name, Metric::parse(m).unwrap()))
            .collect(),
        end,
        sample_times: Vec::new(),
        solver: SolverOptions {
            method,
            rtol,
            atol: rtol * 1e-3,
            ..Default::default()
        },
        occasions: Vec::new(),
    }
}

const FRACTIONAL_END: f64 = 24.0;

/// Subjects of the fractional-power model: (ka, cl, v, g).
fn fractional_subjects() -> Vec<[f64; 4]> {
    vec![
        [1.0, 3.0, 30.0, 0.8],
        [0.6, 2.0, 25.0, 0.5],
        [1.8, 4.0, 40.0, 0.95],
        [1.2, 3.5, 20.0, 0.3],
    ]
}

/// ∫₀ᵀ f by 5-point Gauss–Legendre on intervals graded geometrically towards 0 (where the
/// integrand behaves as t^g) and uniform beyond 1.
fn integral(f: impl Fn(f64) -> f64, end: f64) -> f64 {
    const X: [f64; 5] = [
        -0.906_179_845_938_664,
        -0.538_469_310_105_683_1,
        0.0,
        0.538_469_310_105_683_1,
        0.906_179_845_938_664,
    ];
    const W: [f64; 5] = [
        0.236_926_885_056_189_1,
        0.478_628_670_499_366_5,
        0.568_888_888_888_888_9,
        0.478_628_670_499_366_5,
        0.236_926_885_056_189_1,
    ];
    let mut edges: Vec<f64> = (0..=80).map(|k| 0.7f64.powi(80 - k)).collect();
    edges.insert(0, 0.0);
    edges.extend((1..=((end - 1.0) * 40.0) as usize).map(|k| 1.0 + k as f64 / 40.0));
    edges
        .windows(2)
        .map(|e| {
            let (m, r) = (0.5 * (e[0] + e[1]), 0.5 * (e[1] - e[0]));
            r * X.iter().zip(W).map(|(x, w)| w * f(m + r * x)).sum::<f64>()
        })
        .sum()
}

/// The fractional-power arm: 100 into the depot at 0; the AUC of h = c^g and x at the end
/// (both ∫c^g), and h at two times, against the one-compartment closed form of c.
fn fractional_case(method: Method, rtol: f64) -> (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let metrics: Vec<(usize, &str, String)> = vec![
        (0, "h", "auc".into()),
        (1, "xo", format!("at({FRACTIONAL_END})")),
        (0, "h", "at(0.5)".into()),
        (0, "h", "at(10)".into()),
    ];
    let subjects = fractional_subjects();
    let params = columns(&subjects);
    let want = subjects
        .iter()
        .map(|&[ka, cl, v, g]| {
            let k = cl / v;
            let c = |t: f64| 100.0 * ka / (v * (ka - k)) * ((-k * t).exp() - (-ka * t).exp());
            let h = |t: f64| c(t).powf(g);
            let area = integral(h, FRACTIONAL_END);
            vec![area, area, h(0.5), h(10.0)]
        })
        .collect();
    let regimen = Regimen {
        lines: vec![vpop::dosing::DoseLine::boluses(0, 100.0, 0.0, 1)],
    };
    (
        plan(&metrics, regimen, FRACTIONAL_END, method, rtol),
        params,
        want,
    )
}

/// The circadian arm: `at(t)` at [`TIMES`] and the AUC, with the closed form of each.
fn circadian_case(method: Method, rtol: f64) -> (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut metrics: Vec<(usize, &str, String)> =
        TIMES.iter().map(|t| (0, "c", format!("at({t})"))).collect();
    metrics.push((0, "c", "auc".into()));
    let regimen = Regimen {
        lines: vec![DoseLine::boluses(0, DOSE, II, 3)],
    };
    let subjects = circadian_subjects();
    let params = columns(&subjects);
    let want = subjects
        .iter()
        .map(|&s| {
            let mut w: Vec<f64> = TIMES
                .iter()
                // `at` at a dose time is the value before the dose.
                .map(|&t| circadian_x(s, t))
                .collect();
            w.push(circadian_auc(s, END));
            w
        })
        .collect();
    (plan(&metrics, regimen, END, method, rtol), params, want)
}

/// The pendulum arm, over 2.5 periods of its slowest subject: θ at a quarter, a half and one
/// period of each subject (0, −θ₀, θ₀), and the largest and smallest energy (both
/// g·(1 − cos θ₀)). The times differ per subject, so each subject is its own arm.
fn pendulum_cases(method: Method, rtol: f64) -> Vec<(ArmPlan, Vec<Vec<f64>>, Vec<f64>)> {
    pendulum_subjects()
        .into_iter()
        .map(|s| {
            let period = pendulum_period(s);
            let metrics = vec![
                (0, "theta", format!("at({})", period / 4.0)),
                (0, "theta", format!("at({})", period / 2.0)),
                (0, "theta", format!("at({period})")),
                (1, "energy", "cmax".into()),
                (1, "energy", "cmin".into()),
            ];
            let e = s[0] * (1.0 - s[2].cos());
            let want = vec![0.0, -s[2], s[2], e, e];
            let params = s.iter().map(|&v| vec![v]).collect();
            (
                plan(&metrics, Regimen::default(), 2.5 * period, method, rtol),
                params,
                want,
            )
        })
        .collect()
}

/// Runs `a` on `b` and returns each subject's metrics.
fn run(b: &mut dyn Backend, a: &ArmPlan, params: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = params[0].len();
    let out = common::run(b, a, params);
    assert!(out.status.iter().all(|&s| s == 0), "{:?}", out.status);
    (0..n)
        .map(|i| out.metrics.iter().map(|col| col[i]).collect())
        .collect()
}

/// The largest error of `got` against `want`: relative where |want| > `floor`, absolute
/// (scaled by `floor`) below.
fn worst(got: &[Vec<f64>], want: &[Vec<f64>], floor: f64) -> f64 {
    let mut e = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        for (x, y) in g.iter().zip(w) {
            e = e.max((x - y).abs() / y.abs().max(floor));
        }
    }
    e
}

fn models() -> [CompiledModel; 5] {
    [
        ("circadian.vpm", CIRCADIAN),
        ("pendulum.vpm", PENDULUM),
        ("logistic.vpm", LOGISTIC),
        ("special.vpm", SPECIAL),
        ("fractional.vpm", FRACTIONAL),
    ]
    .map(|(name, text)| CompiledModel::new(&Model::parse(name, text).unwrap()))
}

/// A model's one arm on a backend (`make` builds it): every metric within `tol` of its closed
/// form. Returns the worst error.
fn one_arm(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    model: CompiledModel,
    name: &str,
    (arm, params, want): (ArmPlan, Vec<Vec<f64>>, Vec<Vec<f64>>),
    tol: f64,
) -> Option<f64> {
    let mut b = make(Arc::new(model))?;
    let got = run(b.as_mut(), &arm, &params);
    let e = worst(&got, &want, 1.0);
    assert!(e <= tol, "{name}: {e:.2e} > {tol:e}\n{got:?}\n{want:?}");
    Some(e)
}

/// The five models on one backend (`make` builds it for a model) at `rtol`: every metric
/// within `tol` of its closed form. Returns the worst errors (circadian, pendulum, logistic,
/// special functions, fractional power).
fn check(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    method: Method,
    rtol: f64,
    tol: f64,
) -> Option<[f64; 5]> {
    let [c, p, l, f, h] = models();
    let e_c = one_arm(make, c, "circadian", circadian_case(method, rtol), tol)?;
    let mut b = make(Arc::new(p))?;
    let mut e_p = 0.0f64;
    for (arm, params, want) in pendulum_cases(method, rtol) {
        let got = run(b.as_mut(), &arm, &params);
        let e = worst(&got, std::slice::from_ref(&want), 1.0);
        assert!(e <= tol, "pendulum: {e:.2e} > {tol:e}\n{got:?}\n{want:?}");
        e_p = e_p.max(e);
    }
    let e_l = one_arm(make, l, "logistic", logistic_case(method, rtol), tol)?;
    let e_f = one_arm(make, f, "special", special_case(method, rtol), tol)?;
    let e_h = one_arm(make, h, "fractional", fractional_case(method, rtol), tol)?;
    Some([e_c, e_p, e_l, e_f, e_h])
}

#[test]
fn cpu_reference_matches_the_closed_forms() {
    for method in [
        Method::Dopri5,
        Method::Tsit5,
        Method::Rosenbrock23,
        Method::Rodas4,
    ] {
        // Rosenbrock23 is of order 2–3: its error is a few hundred times rtol here.
        let (rtol, tol) = match method {
            Method::Rosenbrock23 => (1e-8, 1e-5),
            _ => (1e-10, 1e-8),
        };
        let mut make =
            |m: Arc<CompiledModel>| Some(Box::new(CpuBackend::new(m)) as Box<dyn Backend>);
        let [c, p, l, f, h] = check(&mut make, method, rtol, tol).unwrap();
        println!(
            "cpu {method:?}: circadian {c:.2e}, pendulum {p:.2e}, logistic {l:.2e}, special \
             {f:.2e}, fractional power {h:.2e}"
        );
    }
}

/// The five models on a GPU backend in f64 (rtol 1e-10, within 1e-8) and f32 (rtol 1e-6, within
/// 1e-4), with Tsit5 and Rodas4; `new` builds the backend, or says why it cannot.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_matches_the_closed_forms<B: Backend + 'static, E: std::fmt::Display>(
    name: &str,
    new: impl Fn(Arc<CompiledModel>, Precision) -> Result<B, E>,
) {
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-4)] {
        let mut backend = common::or_skipped(&new);
        for method in [Method::Tsit5, Method::Rodas4] {
            let mut make = |m: Arc<CompiledModel>| backend(m, p);
            if let Some([c, e, l, f, h]) = check(&mut make, method, rtol, tol) {
                println!(
                    "{name} {p:?} {method:?}: circadian {c:.2e}, pendulum {e:.2e}, \
                     logistic {l:.2e}, special {f:.2e}, fractional power {h:.2e}"
                );
            }
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_kernels_match_the_closed_forms() {
    use vpop::backend::cuda::EmulatedCuda;
    gpu_matches_the_closed_forms("cuda-emulated", EmulatedCuda::new);
}

/// Subjects of examples/probit_ae.vpm: (ka, cl, v1, q, v2, c50, s); under 200 mg q24h their
/// concentration peaks lie 0.85 to 2.4 SDs above c50, so that the event's probability peaks
/// between 0.80 and 0.993: short of 1, where f32 would round a flat top to ties.
fn probit_subjects() -> Vec<[f64; 7]> {
    vec![
        [1.2, 5.0, 30.0, 2.5, 60.0, 4.0, 0.8],
        [0.6, 3.0, 25.0, 4.0, 40.0, 3.5, 0.8],
        [2.5, 8.0, 45.0, 1.0, 80.0, 2.5, 1.2],
        [0.9, 6.5, 20.0, 3.0, 50.0, 4.5, 0.7],
        [1.8, 4.0, 60.0, 2.0, 30.0, 3.0, 0.9],
    ]
}

/// The probit exposure-response of examples/probit_ae.vpm, p = Φ((cp − c50)/s), is an
/// increasing function of the concentration, so its peak is Φ of the concentration's peak, at
/// the same time, and it is above ½ exactly while cp is above c50: the extremum and crossing
/// searches on a non-affine output (Brent's and Illinois' on the dense output) against those on
/// the affine `cp` (on its quartic). 200 mg q24h × 7; `new` builds the backend for a precision
/// (None where there is none), which must agree at rtol 1e-10 (f64, within 1e-8) or 1e-6 (f32,
/// within 1e-4).
fn probit_peak_is_phi_of_the_concentration_peak(
    name: &str,
    new: &mut dyn FnMut(Arc<CompiledModel>, Precision) -> Option<Box<dyn Backend>>,
) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/probit_ae.vpm");
    let text = std::fs::read_to_string(path).unwrap();
    let model = Arc::new(CompiledModel::new(&Model::parse(path, &text).unwrap()));
    let subjects = probit_subjects();
    let params = columns(&subjects);
    let regimen = Regimen {
        lines: vec![DoseLine::boluses(0, 200.0, 24.0, 7)],
    };
    for (p, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-4)] {
        let Some(mut b) = new(model.clone(), p) else {
            continue;
        };
        let mut metrics: Vec<(usize, &str, String)> = Vec::new();
        for (o, name) in [(0, "cp"), (1, "p_ae")] {
            metrics.extend(["cmax", "tmax"].map(|m| (o, name, m.to_string())));
        }
        metrics.push((1, "p_ae", "time_above(0.5)".into()));
        // cp above each subject's own c50: subject i reads column 5 + i.
        for s in &subjects {
            metrics.push((0, "cp", format!("time_above({})", s[5])));
        }
        let arm = plan(&metrics, regimen.clone(), 168.0, Method::Tsit5, rtol);
        let got = run(b.as_mut(), &arm, &params);
        let phi = |u: f64| 0.5 * libm::erfc(u * -std::f64::consts::FRAC_1_SQRT_2);
        let mut e = 0.0f64;
        for (i, (g, s)) in got.iter().zip(&subjects).enumerate() {
            let (c50, sd) = (s[5], s[6]);
            let (cmax, tmax, pmax, ptmax, above) = (g[0], g[1], g[2], g[3], g[4]);
            let z = (cmax - c50) / sd;
            assert!(
                (0.5..3.0).contains(&z),
                "{name} {p:?} subject {i}: cmax {cmax} is {z} SDs above c50"
            );
            let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1.0);
            let errs = [
                rel(pmax, phi((cmax - c50) / sd)),
                rel(ptmax, tmax),
                rel(above, g[5 + i]),
            ];
            for (what, err) in ["peak", "time of the peak", "time above"].iter().zip(errs) {
                assert!(
                    err <= tol,
                    "{name} {p:?} subject {i}: {what} differs by {err:.2e}\n{g:?}"
                );
            }
            e = e.max(errs.into_iter().fold(0.0, f64::max));
        }
        println!("{name} {p:?}: probit peak, its time and time above ½ within {e:.2e}");
    }
}

#[test]
fn cpu_probit_peak_is_phi_of_the_concentration_peak() {
    probit_peak_is_phi_of_the_concentration_peak("cpu", &mut |m, p| {
        (p == Precision::F64).then(|| Box::new(CpuBackend::new(m)) as Box<dyn Backend>)
    });
}

#[cfg(feature = "cuda")]
#[test]
fn emulated_cuda_probit_peak_is_phi_of_the_concentration_peak() {
    use vpop::backend::cuda::EmulatedCuda;
    probit_peak_is_phi_of_the_concentration_peak(
        "cuda-emulated",
        &mut common::or_skipped(EmulatedCuda::new),
    );
}

/// On a CUDA device (SKIPPED without one; `.ci/gpu-check.sh`'s `cuda_functions` check).
#[cfg(feature = "cuda")]
#[test]
fn cuda_probit_peak_is_phi_of_the_concentration_peak() {
    use vpop::backend::cuda::CudaBackend;
    probit_peak_is_phi_of_the_concentration_peak("cuda", &mut common::or_skipped(CudaBackend::new));
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_probit_peak_is_phi_of_the_concentration_peak() {
    use vpop::backend::wgpu::WgpuBackend;
    probit_peak_is_phi_of_the_concentration_peak("wgpu", &mut common::or_skipped(WgpuBackend::new));
}

/// On a CUDA device (SKIPPED without one; `.ci/gpu-check.sh`'s `cuda_functions` check).
#[cfg(feature = "cuda")]
#[test]
fn cuda_kernels_match_the_closed_forms() {
    use vpop::backend::cuda::CudaBackend;
    gpu_matches_the_closed_forms("cuda", CudaBackend::new);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_kernels_match_the_closed_forms() {
    use vpop::backend::wgpu::WgpuBackend;
    gpu_matches_the_closed_forms("wgpu", WgpuBackend::new);
}
