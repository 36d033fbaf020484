//! Helpers shared by the backend agreement tests: deterministic subjects, a test arm with
//! boluses and an infusion, and the comparison against the CPU f64 reference; the part files
//! of a run's output directory.
#![allow(dead_code, unused_macros)]

use std::sync::Arc;

use vpop::backend::cpu::CpuBackend;
use vpop::backend::{ArmPlan, Backend, ChunkInput, ChunkOutput};
use vpop::dosing::{Administration, DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{library, CompiledModel, Model};
use vpop::solver::{Method, SolverOptions};

/// Parameters of `n` subjects: the model's defaults times a deterministic spread of ±30 %.
pub fn subjects(m: &Model, n: usize) -> Vec<Vec<f64>> {
    m.params
        .iter()
        .enumerate()
        .map(|(p, par)| {
            (0..n)
                .map(|i| {
                    let u = ((i * 7 + p * 13) % 17) as f64 / 16.0 - 0.5;
                    par.default * (0.6 * u).exp()
                })
                .collect()
        })
        .collect()
}

pub fn arm(m: &Model, method: Method, rtol: f64, metrics: &[String]) -> ArmPlan {
    let specs = metrics
        .iter()
        .flat_map(|x| {
            let metric = Metric::parse(x).unwrap();
            m.outputs
                .iter()
                .enumerate()
                .map(move |(k, o)| MetricSpec::new(k, &o.name, metric))
        })
        .collect();
    ArmPlan {
        name: "a".into(),
        regimen: Regimen {
            lines: vec![
                DoseLine::boluses(0, 100.0, 12.0, 4),
                DoseLine {
                    steady_state: false,
                    scaled: true,
                    keeps_lag: false,
                    state: 0,
                    amount: 50.0,
                    start: 6.0,
                    interval: 0.0,
                    count: 1,
                    administration: Administration::InfusionDuration(2.5),
                },
            ],
        },
        metrics: specs,
        end: 72.0,
        sample_times: vec![0.0, 1.0, 7.3, 36.0, 71.0],
        solver: SolverOptions {
            method,
            rtol,
            atol: rtol * 1e-3,
            dt: (method == Method::Rk4).then_some(0.01),
            ..Default::default()
        },
        occasions: Vec::new(),
    }
}

/// Metrics of every kind that reads the whole profile, the value at `at` and the AUC over
/// `window`.
fn profile_metrics(at: f64, window: (f64, f64)) -> Vec<String> {
    let mut v: Vec<String> = ["auc", "cmax", "tmax", "cmin", "ctrough"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push(format!("at({at})"));
    v.push(format!("auc({}, {})", window.0, window.1));
    v
}

/// A dose line that is not at steady state.
fn line(
    state: usize,
    amount: f64,
    start: f64,
    interval: f64,
    count: u32,
    administration: Administration,
) -> DoseLine {
    DoseLine {
        steady_state: false,
        scaled: true,
        keeps_lag: false,
        state,
        amount,
        start,
        interval,
        count,
        administration,
    }
}

/// [`arm`] whose metrics read some outputs only: the AUC and average of the model's last
/// output, the Cmax and time above 1 of its first. With several outputs, the last alone gets an
/// AUC quadrature (the kernels' quadrature map is then not the identity).
pub fn some_outputs_arm(m: &Model, method: Method, rtol: f64) -> ArmPlan {
    let last = m.outputs.len() - 1;
    let spec =
        |k: usize, x: &str| MetricSpec::new(k, &m.outputs[k].name, Metric::parse(x).unwrap());
    ArmPlan {
        metrics: vec![
            spec(last, "auc"),
            spec(0, "cmax"),
            spec(last, "cavg(0, 24)"),
            spec(0, "time_above(1)"),
        ],
        ..arm(m, method, rtol, &[])
    }
}

/// A long schedule of interleaved dose lines over 720 h (boluses into two compartments every 12
/// and 48 h, infusions every 24 h lasting 30 h and every 36 h at a fixed rate, single infusions,
/// a reset at 400 h), with metrics of every kind that reads the whole profile and profiles.
pub fn long_interleaved_arm(m: &Model, method: Method, rtol: f64) -> ArmPlan {
    let mut a = arm(m, method, rtol, &profile_metrics(401.0, (390.0, 420.0)));
    a.end = 720.0;
    a.sample_times = vec![0.0, 13.0, 400.5, 719.0];
    a.regimen = Regimen {
        lines: vec![
            line(0, 100.0, 0.0, 12.0, 60, Administration::Bolus),
            line(
                1,
                40.0,
                6.0,
                24.0,
                28,
                Administration::InfusionDuration(30.0),
            ),
            line(1, 20.0, 5.0, 48.0, 15, Administration::Bolus),
            line(0, 0.0, 400.0, 0.0, 1, Administration::Reset),
            line(1, 10.0, 3.0, 36.0, 19, Administration::InfusionRate(4.0)),
            // Single doses as a dataset's records give them: the first two go on from the
            // line before last (one run with it), the third comes before them (a run of its
            // own).
            line(1, 10.0, 687.0, 0.0, 1, Administration::InfusionRate(4.0)),
            line(1, 10.0, 700.5, 0.0, 1, Administration::InfusionRate(4.0)),
            line(1, 10.0, 2.0, 0.0, 1, Administration::InfusionRate(4.0)),
        ],
    };
    a
}

/// Two infusions into the first state from 0 h, at rates 1e-4 (for 100 h) and 1e4 (for
/// 0.01 h), AUC and Cmax to 200 h and the profile at 150 h (from the slow one alone): Tsit5 at
/// rtol 1e-10.
pub fn slow_and_fast_infusions(m: &Model) -> ArmPlan {
    let mut a = arm(m, Method::Tsit5, 1e-10, &["auc".into(), "cmax".into()]);
    a.regimen = Regimen {
        lines: vec![
            line(0, 0.01, 0.0, 0.0, 1, Administration::InfusionRate(1e-4)),
            line(0, 100.0, 0.0, 0.0, 1, Administration::InfusionRate(1e4)),
        ],
    };
    a.end = 200.0;
    a.sample_times = vec![150.0];
    a
}

/// A model whose doses depend on its parameters (the oral dose's lag and bioavailability, a
/// modelled infusion rate into the central compartment), with an endogenous baseline: the
/// initial amount in the central compartment.
pub const DOSING_MODEL: &str = "
param ka = 1.2
param cl = 5
param v = 40
param lag = 3
param fa = 0.7
param r = 20
param base = 8
state depot
state central
central(0) = base
alag(depot) = lag
f(depot) = fa
rate(central) = r
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
output cp = central / v
";

/// Parameter columns, `[p][i]`.
pub type Columns = Vec<Vec<f64>>;

/// An arm of [`DOSING_MODEL`] over 480 h whose parameters switch at five later occasions (at
/// 150, 300, 301.5 and 410 h, and at 600 h, after the end): lagged oral doses every 12 h,
/// modelled infusions every 24 h and 30-h infusions every 48 h that run across the occasions'
/// starts, a reset at the start of the occasion at 300 h; with the parameters of every
/// occasion for `n` subjects (`occasion_params[k][p][i]`, each subject's own spread; subjects
/// 3 and 5 have invalid dosing at a later occasion).
pub fn occasion_arm(
    m: &Model,
    method: Method,
    rtol: f64,
    n: usize,
) -> (ArmPlan, Columns, Vec<Columns>) {
    let mut a = arm(m, method, rtol, &profile_metrics(301.0, (290.0, 320.0)));
    a.end = 480.0;
    a.sample_times = vec![0.0, 13.0, 150.0, 300.5, 479.0];
    a.regimen = Regimen {
        lines: vec![
            line(0, 100.0, 0.0, 12.0, 40, Administration::Bolus),
            line(1, 200.0, 6.0, 24.0, 20, Administration::Modelled),
            line(
                1,
                50.0,
                30.0,
                48.0,
                10,
                Administration::InfusionDuration(30.0),
            ),
            line(0, 0.0, 300.0, 0.0, 1, Administration::Reset),
        ],
    };
    a.occasions = vec![150.0, 300.0, 301.5, 410.0, 600.0];
    let params = subjects(m, n);
    let mut later: Vec<Columns> = (1..=a.occasions.len())
        .map(|k| {
            params
                .iter()
                .enumerate()
                .map(|(p, col)| {
                    col.iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let u = ((i * 5 + p * 3 + k * 7) % 11) as f64 / 10.0 - 0.5;
                            // Lags of up to ~8 h carry doses of one occasion into the next.
                            let spread = if m.params[p].name == "lag" { 1.0 } else { 0.4 };
                            v * (spread * u).exp()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    // Invalid dosing at a later occasion only: subject 3's lag at the third occasion is NaN,
    // subject 5's bioavailability at the second is negative. Both subjects fail (non_finite).
    let index = |name: &str| m.params.iter().position(|p| p.name == name);
    if let (Some(lag), Some(fa), true) = (index("lag"), index("fa"), n > 5) {
        later[1][lag][3] = f64::NAN;
        later[0][fa][5] = -0.5;
    }
    (a, params, later)
}

/// [`run`] with parameters for every later occasion of the arm.
pub fn run_occasions(
    b: &mut dyn Backend,
    arm: &ArmPlan,
    params: &[Vec<f64>],
    later: &[Vec<Vec<f64>>],
) -> ChunkOutput {
    let input = ChunkInput {
        first_subject: 0,
        n: params[0].len(),
        params,
        amount_scale: None,
        occasion_params: later,
    };
    let mut out = ChunkOutput::default();
    b.run_chunk(arm, &input, &mut out).unwrap();
    out
}

/// The largest relative difference (see [`max_rel`]) of any metric but Tmax (whole or windowed)
/// and of any profile between two runs of `arm`.
pub fn worst_difference(arm: &ArmPlan, gpu: &ChunkOutput, cpu: &ChunkOutput) -> f64 {
    let metrics = arm
        .metrics
        .iter()
        .enumerate()
        .filter(|(_, s)| s.metric.kind != vpop::metrics::MetricKind::Tmax)
        .map(|(m, _)| max_rel(&gpu.metrics[m], &cpu.metrics[m]));
    let profiles = gpu
        .profiles
        .iter()
        .zip(&cpu.profiles)
        .map(|(g, c)| max_rel(g, c));
    metrics.chain(profiles).fold(0.0, f64::max)
}

pub fn run(b: &mut dyn Backend, arm: &ArmPlan, params: &[Vec<f64>]) -> ChunkOutput {
    let n = params[0].len();
    let input = ChunkInput {
        first_subject: 0,
        n,
        params,
        amount_scale: None,
        occasion_params: &[],
    };
    let mut out = ChunkOutput::default();
    b.run_chunk(arm, &input, &mut out).unwrap();
    out
}

/// `arm` on the backend `b` and on the CPU reference for the subjects of `params` (one
/// column per parameter): every subject succeeds on `b`, and each metric is within `tol` of
/// the CPU's, relative (`what` names the case in a failure). What `b` gave, and the largest
/// relative difference.
pub fn metrics_agree_with_cpu(
    b: &mut dyn Backend,
    model: &Arc<CompiledModel>,
    arm: &ArmPlan,
    params: &[Vec<f64>],
    tol: f64,
    what: &str,
) -> (ChunkOutput, f64) {
    let cpu = run(&mut CpuBackend::new(model.clone()), arm, params);
    let gpu = run(b, arm, params);
    let name = b.info().name;
    let mut worst = 0.0f64;
    for (m, spec) in arm.metrics.iter().enumerate() {
        for (i, status) in gpu.status.iter().enumerate() {
            assert_eq!(*status, 0, "{name} {what}: {} subject {i}", spec.column);
            let (g, c) = (gpu.metrics[m][i], cpu.metrics[m][i]);
            let rel = (g - c).abs() / c.abs().max(f64::MIN_POSITIVE);
            worst = worst.max(rel);
            assert!(
                rel <= tol,
                "{name} {what}: {} subject {i}: {g} vs {c}",
                spec.column
            );
        }
    }
    (gpu, worst)
}

/// `got` equals `want` bit for bit: statuses, work counted, every metric and profile.
pub fn assert_same_bits(got: &ChunkOutput, want: &ChunkOutput, what: &str) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(got.status, want.status, "{what}: status");
    assert_eq!(got.stats, want.stats, "{what}: work");
    for (x, y) in got.metrics.iter().zip(&want.metrics) {
        assert_eq!(bits(x), bits(y), "{what}: metrics");
    }
    for (x, y) in got.profiles.iter().zip(&want.profiles) {
        assert_eq!(bits(x), bits(y), "{what}: profiles");
    }
}

/// A backend that hands subjects to threads in the order of their cost (learnt in a first
/// call, ordered in a second) gives what `natural` gives with subjects as sampled, bit for bit.
pub fn subjects_in_any_order_give_the_same_results(
    ordered: &mut dyn Backend,
    natural: &mut dyn Backend,
    arm: &ArmPlan,
    params: &[Vec<f64>],
    what: &str,
) {
    let first = run(ordered, arm, params);
    let second = run(ordered, arm, params);
    let want = run(natural, arm, params);
    assert_same_bits(&first, &want, &format!("{what}, first call"));
    assert_same_bits(&second, &want, &format!("{what}, ordered call"));
}

/// Largest difference between GPU and CPU values relative to `|cpu| + floor`, where the floor
/// is 1e-6 of the column's largest magnitude (values that are zero up to round-off).
pub fn max_rel(gpu: &[f64], cpu: &[f64]) -> f64 {
    let scale = cpu.iter().map(|v| v.abs()).fold(0.0, f64::max);
    gpu.iter()
        .zip(cpu)
        .map(|(g, c)| {
            if g.is_nan() && c.is_nan() {
                0.0
            } else {
                (g - c).abs() / (c.abs() + 1e-6 * scale).max(f64::MIN_POSITIVE)
            }
        })
        .fold(
            0.0,
            |a: f64, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
        )
}

/// The metrics every agreement test checks (plus times above a threshold, over the whole
/// simulation and in the last interval).
pub const METRICS: [&str; 8] = [
    "auc",
    "cmax",
    "tmax",
    "cmin(13, 72)",
    "ctrough",
    "auc_last_interval",
    "cavg(0, 24)",
    "at(30)",
];

/// The closest two f64 computations of Tmax can be expected to agree (relative). Near a flat
/// maximum an output differs from its peak by ½|c''|·(t − Tmax)², so a round-off difference δ
/// in the output moves the located maximum by about √(2δ/|c''|): on the CPU reference itself,
/// a change of one parameter by one ulp moves Tmax by up to 1.7e-8 relative (effect_emax,
/// idr2, idr3; `tmax_moves_by_round_off` in tests/wgpu_integrate.rs checks the effect_emax
/// case). Backends with their own (equally accurate) exp, log and pow, or another order of
/// operations, differ from the CPU by such round-off; so do fused multiply-adds (the CUDA
/// emulation built with FMA moves f64 Tmax by 1.0–1.9e-8 on three models). 1e-7 leaves room
/// for a few ulps.
pub const TMAX_CONDITIONING: f64 = 1e-7;

/// Tolerances of an agreement test.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// Tolerance the backend under test runs at.
    pub rtol: f64,
    /// Against the CPU at the same method and tolerance.
    pub same: f64,
    /// Against the CPU at rtol 1e-10.
    pub tight: f64,
    /// Subjects integrated.
    pub subjects: usize,
}

/// Every method on one library model: the backend made by `make` against the CPU reference
/// at the same settings and at rtol 1e-10. `make` returns `None` (after printing SKIPPED)
/// where the backend is unavailable.
pub fn agrees_with_the_cpu_reference(
    name: &str,
    tol: Agreement,
    make: impl Fn(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
) {
    let m = agreement_model(name);
    let lm = &m;
    let metrics: Vec<String> = METRICS.iter().map(|s| s.to_string()).collect();
    let mut worst = 0.0f64;
    let mut report = String::new();
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = make(model.clone()) else {
        return;
    };
    let mut cpu = CpuBackend::new(model.clone());
    let params = subjects(&m, tol.subjects);
    // A threshold in the range of the first output: 30 % of subject 0's Cmax.
    let probe = run(
        &mut cpu,
        &arm(&m, Method::Rodas4, 1e-10, &["cmax".into()]),
        &params,
    );
    let thr = 0.3 * probe.metrics[0][0];
    let mut all = metrics.clone();
    all.push(format!("time_above({thr})"));
    // The last interval's window is resolved on the host, as the other metrics' are.
    all.push(format!("time_above_last_interval({thr})"));
    for method in Method::ALL {
        let gpu_arm = arm(&m, method, tol.rtol, &all);
        let t0 = std::time::Instant::now();
        let got = run(gpu.as_mut(), &gpu_arm, &params);
        report.push_str(&format!(
            "{} {method}: first run (kernel build included) {:.2} s\n",
            lm.name,
            t0.elapsed().as_secs_f64()
        ));
        // The same method and tolerance in f64 (the backends must compute the same thing),
        // and a tight f64 solution (the result must also be accurate).
        let same = run(&mut cpu, &gpu_arm, &params);
        let tight_arm = arm(&m, method, 1e-10, &all);
        let tight = if tight_arm.solver == gpu_arm.solver {
            same.clone()
        } else {
            run(&mut cpu, &tight_arm, &params)
        };
        assert_eq!(got.status, same.status, "{} {method}: status", lm.name);
        // Worst relative difference from the CPU at the same settings: all but Tmax, Tmax.
        let mut method_worst = (0.0f64, 0.0f64);
        for (k, s) in gpu_arm.metrics.iter().enumerate() {
            let tmax = s.metric.kind == vpop::metrics::MetricKind::Tmax;
            for (want, tol) in [(&same, tol.same), (&tight, tol.tight)] {
                // Tmax sits on a flat maximum: its time is resolved less finely, and never
                // closer than TMAX_CONDITIONING (round-off alone moves it that much).
                let tol = if tmax {
                    (10.0 * tol).max(TMAX_CONDITIONING)
                } else {
                    tol
                };
                let e = max_rel(&got.metrics[k], &want.metrics[k]);
                assert!(
                    e <= tol,
                    "{} {method} {}: max relative difference {e:.3e} > {tol:e} (got {:?} vs cpu {:?})",
                    lm.name,
                    s.column,
                    &got.metrics[k][..4],
                    &want.metrics[k][..4]
                );
            }
            let e = max_rel(&got.metrics[k], &same.metrics[k]);
            report.push_str(&format!("{} {method} {}: {e:.2e}\n", lm.name, s.column));
            if tmax {
                method_worst.1 = method_worst.1.max(e);
            } else {
                worst = worst.max(e);
                method_worst.0 = method_worst.0.max(e);
            }
        }
        for (k, p) in got.profiles.iter().enumerate() {
            let e = max_rel(p, &same.profiles[k]);
            assert!(e <= tol.same, "{} {method} profile {k}: {e:.3e}", lm.name);
        }
        report.push_str(&format!(
            "{} {method}: worst {:.2e} (tmax {:.2e})\n",
            lm.name, method_worst.0, method_worst.1
        ));
    }
    println!("{report}{name}: worst relative difference (all but tmax): {worst:.3e}");
}

/// Status codes of deliberately failing subjects match the CPU reference's: a NaN parameter,
/// an overflowing one, and a step budget too small for anyone.
pub fn failing_subjects_get_the_same_status_codes(gpu: &mut dyn Backend) {
    let lm = library::get("two_cmt_oral").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let mut cpu = CpuBackend::new(model);
    let mut params = subjects(&m, 4);
    params[1][0] = f64::NAN; // subject 0: a NaN parameter, non-finite
    params[0][1] = -1e6; // subject 1: a huge negative absorption rate, overflows
    for method in Method::ALL {
        let mut a = arm(&m, method, 1e-6, &["auc".into(), "cmax".into()]);
        let want = run(&mut cpu, &a, &params);
        let got = run(gpu, &a, &params);
        // Subject 1 overflows f32 sooner than f64: it fails either way, maybe differently.
        assert_ne!(got.status[1], 0, "{method}");
        for i in [0, 2, 3] {
            assert_eq!(got.status[i], want.status[i], "{method}");
        }
        assert_eq!(got.status[0], 3, "{method}");
        assert!(got.metrics[0][0].is_nan());
        // Too few steps allowed: every subject stops with max_steps.
        a.solver.max_steps = 20;
        let want = run(&mut cpu, &a, &params);
        let got = run(gpu, &a, &params);
        assert_ne!(got.status[1], 0, "{method} with max_steps");
        for i in [0, 2, 3] {
            assert_eq!(got.status[i], want.status[i], "{method} with max_steps");
        }
        assert_eq!(got.status[2], 1, "{method}");
    }
}

/// The model of an agreement test: the library model of that name, or the test model
/// `tests/data/NAME.vpm` (`sparse_qsp`: 14 states, W factorised along its sparse structure).
pub fn agreement_model(name: &str) -> Model {
    match library::get(name) {
        Some(lm) => Model::parse(lm.name, lm.source).unwrap(),
        None => {
            let path = format!("{}/tests/data/{name}.vpm", env!("CARGO_MANIFEST_DIR"));
            let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            Model::parse(name, &source).unwrap()
        }
    }
}

/// Rodas4 on `tests/data/weak_pivot.vpm`, whose W the kernels' sparse factorisation refuses
/// once the steps are large (a pivot below the threshold fails `w_factor`, rejecting the step):
/// every subject completes, its AUC and Cmax within `tol` of the CPU reference at rtol 1e-10,
/// and the kernel rejects more steps than the CPU at the same settings (which factorises such
/// a W densely instead of rejecting the step), at least `min_refusals` more per subject.
pub fn refused_pivots_reject_the_step(
    make: impl FnOnce(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
    min_refusals: f64,
) {
    let m = agreement_model("weak_pivot");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = make(model.clone()) else {
        return;
    };
    let mut cpu = CpuBackend::new(model);
    let n = 16;
    let params = subjects(&m, n);
    let metrics = ["auc".to_string(), "cmax".to_string()];
    let a = arm(&m, Method::Rodas4, rtol, &metrics);
    let got = run(gpu.as_mut(), &a, &params);
    let same = run(&mut cpu, &a, &params);
    let tight = run(&mut cpu, &arm(&m, Method::Rodas4, 1e-10, &metrics), &params);
    assert!(got.status.iter().all(|s| *s == 0), "{:?}", got.status);
    for k in 0..a.metrics.len() {
        let e = max_rel(&got.metrics[k], &tight.metrics[k]);
        println!(
            "{}: {e:.2e} from the reference at rtol 1e-10",
            a.metrics[k].column
        );
        assert!(e <= tol, "{}: {e:.3e} > {tol:e}", a.metrics[k].column);
    }
    let per = |o: &ChunkOutput| {
        (
            o.stats.accepted as f64 / n as f64,
            o.stats.rejected as f64 / n as f64,
        )
    };
    let (g, c) = (per(&got), per(&same));
    println!(
        "steps per subject: kernel {:.1} accepted, {:.1} rejected; CPU {:.1} accepted, {:.1} rejected",
        g.0, g.1, c.0, c.1
    );
    assert!(
        g.1 >= c.1 + min_refusals,
        "no refused pivots: {g:?} against the CPU's {c:?}"
    );
}

/// The library model a test is named after, parsed.
pub fn library_model(name: &str) -> Model {
    let lm = library::get(name).unwrap();
    Model::parse(lm.name, lm.source).unwrap()
}

/// One test per library model calling `$check(model_name)`, and a test that the list covers
/// the whole library.
macro_rules! agreement_tests {
    ($check:ident) => {
        agreement_tests!(
            @ $check,
            one_cmt_iv,
            one_cmt_oral,
            two_cmt_iv,
            two_cmt_oral,
            three_cmt_iv,
            three_cmt_oral,
            transit_oral,
            mm_elim_oral,
            tmdd_full,
            tmdd_qss,
            idr1,
            idr2,
            idr3,
            idr4,
            idr_circadian,
            effect_emax,
            ddi_ritonavir_cyp3a
        );
    };
    (@ $check:ident, $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $check(stringify!($name));
            }
        )*

        /// A model large enough for the sparse factorisation of W (the Rosenbrock methods'
        /// kernels run the plan as straight-line code; the CPU reference its interpreter).
        #[test]
        fn sparse_qsp() {
            $check("sparse_qsp");
        }

        #[test]
        fn every_library_model_has_an_agreement_test() {
            let covered = [$(stringify!($name)),*];
            for lm in vpop::model::library::MODELS {
                assert!(covered.contains(&lm.name), "no agreement test for {}", lm.name);
            }
        }
    };
}

/// Where `f` changes sign in [x0, x1] (`above` is whether f(x0) ≥ 0), by 100 bisections: the
/// last point found on x0's side.
pub fn crossing(f: impl Fn(f64) -> f64, x0: f64, x1: f64, above: bool) -> f64 {
    let (mut a, mut b) = (x0, x1);
    for _ in 0..100 {
        let mid = 0.5 * (a + b);
        if (f(mid) >= 0.0) == above {
            a = mid;
        } else {
            b = mid;
        }
    }
    a
}

/// The maximum of a unimodal `f` in [x0, x1] by `iterations` golden sections: its place.
pub fn golden_max(f: impl Fn(f64) -> f64, x0: f64, x1: f64, iterations: usize) -> f64 {
    let (mut a, mut b) = (x0, x1);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..iterations {
        let (m1, m2) = (b - g * (b - a), a + g * (b - a));
        if f(m1) < f(m2) {
            a = m1;
        } else {
            b = m2;
        }
    }
    0.5 * (a + b)
}

/// The Parquet part files of a run's output directory, in part order.
pub fn parquet_parts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut parts: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    parts
}

/// The record batches of one arm (row group `arm` of every part) of a run's output directory.
pub fn arm_batches(dir: &std::path::Path, arm: usize) -> Vec<arrow_array::RecordBatch> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    parquet_parts(dir)
        .iter()
        .flat_map(|p| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(p).unwrap())
                .unwrap()
                .with_row_groups(vec![arm])
                .build()
                .unwrap()
                .map(|b| b.unwrap())
        })
        .collect()
}

/// Whether `python3` can import `modules` (e.g. "pyarrow, duckdb"): checks that read outputs
/// back with Python tools run where those are installed and say SKIPPED elsewhere.
pub fn python_imports(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Byte-level mutations of a text: `(position, kind, byte)` deletes (kind 0), inserts (1) or
/// replaces (2) one byte, positions taken modulo the length.
pub fn mutate_bytes(src: &str, ops: &[(usize, u8, u8)]) -> String {
    let mut b = src.as_bytes().to_vec();
    for &(pos, kind, byte) in ops {
        if b.is_empty() {
            break;
        }
        let i = pos % b.len();
        match kind % 3 {
            0 => {
                b.remove(i);
            }
            1 => b.insert(i, byte),
            _ => b[i] = byte,
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// A maker of `new`'s backends for a precision: None, with why (SKIPPED), where one cannot be
/// built (no adapter, no CUDA driver).
pub fn or_skipped<B: Backend + 'static, E: std::fmt::Display>(
    new: impl Fn(Arc<CompiledModel>, vpop::backend::Precision) -> Result<B, E>,
) -> impl FnMut(Arc<CompiledModel>, vpop::backend::Precision) -> Option<Box<dyn Backend>> {
    move |m, p| match new(m, p) {
        Ok(b) => Some(Box::new(b) as Box<dyn Backend>),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

/// A one-compartment model whose infusions into `central` take their bioavailability `fc` and
/// their modelled duration `tinf` from the subject.
pub const ZERO_DOSE_MODEL: &str = "
param cl = 5
param v = 40
param fc = 1
param tinf = 2
state central
f(central) = fc
dur(central) = tinf
d/dt(central) = -cl / v * central
output cp = central / v
";

/// A model with outputs that are not finite where k = 0: infinite (`inv`), NaN (`nan_out`),
/// and infinite while reading t (`inv_t`, whose cmin gives it a quadrature to follow).
pub const NON_FINITE_MODEL: &str = "
param k = 2
state a
a(0) = 1
d/dt(a) = -a
output cp = a
output inv = a / k
output nan_out = sqrt(k - 1) + a
output inv_t = a / k + min(t, 0)
";

/// An output that is not finite leaves its own extremes, areas and times above undefined and
/// nothing else: the subject's status stays `ok` and the finite output's metrics are the
/// closed form's (once, the quadrature of the infinite output failed the whole subject as
/// `non_finite`, and a NaN output's time above and Tmax differed between the CPU and the
/// kernels). With k = 2 every output is finite and its metrics are the closed form's.
pub fn non_finite_outputs_leave_their_metrics_undefined(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = Model::parse("non_finite", NON_FINITE_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let params = vec![vec![0.0, 2.0]];
    let metrics = ["auc", "cmax", "tmax", "cmin", "time_above(0.5)"];
    let n_out = m.outputs.len();
    for method in [Method::Tsit5, Method::Rodas4] {
        let mut a = arm(&m, method, rtol, &metrics.map(String::from));
        a.regimen = Regimen { lines: vec![] };
        a.end = 4.0;
        a.sample_times = vec![];
        let out = run(b.as_mut(), &a, &params);
        let e4 = (-4.0f64).exp();
        // a = e^−t from 1: area, peak, its time, trough, time above 0.5; of a/2 the same with
        // half the values (above 0.5 until ln 1 = 0: none); of 1 + a the values shifted by 1.
        let of_a = [1.0 - e4, 1.0, 0.0, e4, 2f64.ln()];
        let half = [(1.0 - e4) / 2.0, 0.5, 0.0, e4 / 2.0, 0.0];
        let plus_one = [4.0 + 1.0 - e4, 2.0, 0.0, 1.0 + e4, 4.0];
        for (i, k) in [(0, 0.0), (1, 2.0)] {
            assert_eq!(out.status[i], 0, "{method} k = {k}");
            for (mi, name) in metrics.iter().enumerate() {
                for (o, want) in [of_a, half, plus_one, half].iter().enumerate() {
                    let got = out.metrics[mi * n_out + o][i];
                    let output = &m.outputs[o].name;
                    if o > 0 && k == 0.0 {
                        assert!(
                            got.is_nan(),
                            "{method} k = 0: {output} {name} = {got}, not undefined"
                        );
                    } else {
                        let w = want[mi];
                        assert!(
                            (got - w).abs() <= tol * w.abs().max(1.0),
                            "{method} k = {k}: {output} {name} {got} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

/// A model that reads the day number `floor(t / 24)`: its elimination doubles, triples, … each
/// day, and the day number is an output.
pub const DAY_MODEL: &str = "
param k = 0.02
state a
a(0) = 1
d/dt(a) = -k * (1 + floor(t / 24)) * a
output cp = a
output day = floor(t / 24)
";

/// A jump at a stopping point belongs to the segment after it: with the window edges 24 and
/// 48 as stopping points, the day number's area over [0, 24] is 0, over [24, 48] 24 and to 60 h
/// 48, its largest value over [0, 24] is 0 (at 0) and over [24, 48] 1, its value at 48 h is 1
/// (the left limit), and the state whose elimination steps up each day follows its closed form, on every
/// method, within `tol` (relative) at `rtol`. The stages of the step that ends at a stopping
/// point had evaluated the model after the jump: the area's error then shrank only with the
/// step, whose scale is atol where the area is still 0, and the subject failed as
/// `max_steps`; fixed-step RK4 took a wrong area.
pub fn a_jump_at_a_stopping_point_belongs_to_the_next_segment(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = Model::parse("day", DAY_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let k = 0.02;
    let params = vec![vec![k]];
    let metrics = [
        "auc",
        "auc(0, 24)",
        "auc(24, 48)",
        "cmin(0, 24)",
        "cmax(0, 24)",
        "tmax(0, 24)",
        "cmax(24, 48)",
        "at(48)",
    ];
    // a(t) = e^(−k ∫ (1 + day)): e^(−k t) to 24, then e^(−24 k − 2 k (t − 24)), then with 3 k.
    let a_at = |t: f64| -> f64 {
        let (d1, d2) = (t.min(24.0), (t.min(48.0) - 24.0).max(0.0));
        (-k * (d1 + 2.0 * d2 + 3.0 * (t - 48.0).max(0.0))).exp()
    };
    let area = |t0: f64, t1: f64| -> f64 {
        // Piece by piece: over a piece of rate r from a(s) the area is a(s) (1 − e^(−r Δ)) / r.
        [
            (0.0, 24.0, k),
            (24.0, 48.0, 2.0 * k),
            (48.0, f64::INFINITY, 3.0 * k),
        ]
        .iter()
        .map(|&(s, e, r)| {
            let (lo, hi) = (t0.max(s), t1.min(e));
            if hi <= lo {
                0.0
            } else {
                a_at(lo) * (1.0 - (-r * (hi - lo)).exp()) / r
            }
        })
        .sum()
    };
    let n_out = m.outputs.len();
    for method in Method::ALL {
        let mut a = arm(&m, method, rtol, &metrics.map(String::from));
        a.regimen = Regimen { lines: vec![] };
        a.end = 60.0;
        a.sample_times = vec![];
        let out = run(b.as_mut(), &a, &params);
        assert_eq!(out.status[0], 0, "{method}: status");
        let want = [
            [area(0.0, 60.0), 48.0],
            [area(0.0, 24.0), 0.0],
            [area(24.0, 48.0), 24.0],
            [a_at(24.0), 0.0],
            // The day number is 0 up to 24⁻ and 1 up to 48⁻: a window's extremes and a value
            // at a time are the left limit at its end, as its area is.
            [1.0, 0.0],
            [0.0, 0.0],
            [a_at(24.0), 1.0],
            [a_at(48.0), 1.0],
        ];
        // Rosenbrock23 advances with its second-order solution: its global error is a few
        // hundred times the tolerance (closed_form_pk's `rosenbrock23_matches_closed_forms`).
        let tol = if method == Method::Rosenbrock23 {
            tol.max(1e-6)
        } else {
            tol
        };
        for (mi, name) in metrics.iter().enumerate() {
            for (o, w) in want[mi].iter().enumerate() {
                let got = out.metrics[mi * n_out + o][0];
                assert!(
                    (got - w).abs() <= tol * w.abs().max(1.0),
                    "{method}: {} {name} {got} vs {w}",
                    m.outputs[o].name
                );
            }
        }
    }
}

/// A model that jumps in time between its stopping points: its elimination rate steps up
/// at `tswitch` (a parameter: each subject's own time; no dose or window there), and a light on from 08:00 to 20:00 each day
/// (`mod(t - 8, 24) < 12`) drives the production of a response.
pub const TIME_SWITCH_MODEL: &str = "
param k1 = 0.05
param k2 = 0.2
param tswitch = 30
param kin = 3
param kout = 0.4
state a, r
a(0) = 10
d/dt(a) = -if(t > tswitch, k2, k1) * a
d/dt(r) = if(mod(t - 8, 24) < 12, kin, 0) - kout * r
output cp = a
output resp = r
";

/// The closed forms of [`TIME_SWITCH_MODEL`] with its default parameters but `ts` for
/// `tswitch`, over [0, `end`]: per output, the AUC, Cmax and Cmin.
pub fn time_switch_closed_form(end: f64, ts: f64) -> [[f64; 3]; 2] {
    let (k1, k2, kin, kout): (f64, f64, f64, f64) = (0.05, 0.2, 3.0, 0.4);
    // a: 10 e^(−k1 t) to ts, then e^(−k2 (t − ts)) from there.
    let a_ts = 10.0 * (-k1 * ts).exp();
    let a_end = a_ts * (-k2 * (end - ts)).exp();
    let auc_a = 10.0 * (1.0 - (-k1 * ts).exp()) / k1 + a_ts * (1.0 - (-k2 * (end - ts)).exp()) / k2;
    // r: piece by piece between the light's switches, from r(0) = 0.
    let mut edges = vec![0.0];
    let mut d = 8.0;
    while d < end {
        edges.push(d);
        if d + 12.0 < end {
            edges.push(d + 12.0);
        }
        d += 24.0;
    }
    edges.push(end);
    let (mut r, mut auc_r, mut r_max, mut r_min) = (0.0f64, 0.0, 0.0f64, 0.0f64);
    for w in edges.windows(2) {
        let (s, e) = (w[0], w[1]);
        let on = (s - 8.0).rem_euclid(24.0) < 12.0;
        let target = if on { kin / kout } else { 0.0 };
        let x = (-kout * (e - s)).exp();
        auc_r += target * (e - s) + (r - target) * (1.0 - x) / kout;
        r = target + (r - target) * x;
        r_max = r_max.max(r);
        r_min = r_min.min(r);
    }
    [[auc_a, 10.0, a_end], [auc_r, r_max, r_min]]
}

/// Jumps in time between the stopping points become stopping points, those that move with
/// the parameters each subject's own: the AUC, Cmax and Cmin of [`TIME_SWITCH_MODEL`] follow
/// their closed forms within `tol` (relative) at `rtol` on every method, for subjects that
/// switch at 30, 41.5 and 12 h (12: before the light's first jump). Before, the step control
/// crossed each jump by shortening its steps, and the error estimate saw each jump only in
/// part.
pub fn jumps_in_time_are_stopping_points(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = Model::parse("switch", TIME_SWITCH_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let switches = [30.0, 41.5, 12.0];
    let ts_index = m.param_index("tswitch").unwrap();
    let params: Vec<Vec<f64>> = m
        .defaults()
        .into_iter()
        .enumerate()
        .map(|(k, p)| {
            if k == ts_index {
                switches.to_vec()
            } else {
                vec![p; switches.len()]
            }
        })
        .collect();
    let metrics = ["auc", "cmax", "cmin"];
    let end = 71.0;
    let n_out = m.outputs.len();
    // Every method's results first (with --nocapture, the table of docs/model-language.md,
    // "Jumps"), then the checks.
    let outs: Vec<(Method, ChunkOutput)> = Method::ALL
        .into_iter()
        .map(|method| {
            let mut a = arm(&m, method, rtol, &metrics.map(String::from));
            a.regimen = Regimen { lines: vec![] };
            a.end = end;
            a.sample_times = vec![];
            let out = run(b.as_mut(), &a, &params);
            let mut worst = 0.0f64;
            for (i, &ts) in switches.iter().enumerate() {
                let want = time_switch_closed_form(end, ts);
                for (o, w) in want.iter().enumerate() {
                    for (mi, w) in w.iter().enumerate() {
                        let e = (out.metrics[mi * n_out + o][i] - w).abs() / w.abs().max(1.0);
                        worst = if e.is_nan() {
                            f64::INFINITY
                        } else {
                            worst.max(e)
                        };
                    }
                }
            }
            println!(
                "{method} rtol {rtol:e}: largest error {worst:.1e}, steps {} + {}",
                out.stats.accepted, out.stats.rejected
            );
            (method, out)
        })
        .collect();
    for (method, out) in outs {
        // Rosenbrock23 advances with its second-order solution: its global error is a few
        // hundred times the tolerance.
        let tol = if method == Method::Rosenbrock23 {
            tol.max(1e-6).max(100.0 * rtol)
        } else {
            tol
        };
        for (i, &ts) in switches.iter().enumerate() {
            assert_eq!(out.status[i], 0, "{method}: status");
            let want = time_switch_closed_form(end, ts);
            for (mi, name) in metrics.iter().enumerate() {
                for (o, w) in want.iter().enumerate() {
                    let (got, w) = (out.metrics[mi * n_out + o][i], w[mi]);
                    assert!(
                        (got - w).abs() <= tol * w.abs().max(1.0),
                        "{method}, tswitch {ts}: {} {name} {got} vs {w} ({:.1e})",
                        m.outputs[o].name,
                        (got - w).abs() / w.abs().max(1.0)
                    );
                }
            }
        }
    }
}

/// A model stepping in time at 30 h, into which a subject's dose arrives after its own lag
/// `tlag`: a stopping point of the subject's own, which can fall a unit in the last place
/// before the jump's stop (shared by the arm, `t > 30` moving with no parameter). `b` starts
/// to grow at the jump, from 0: its absolute tolerance alone bounds its error there (as an
/// output's AUC whose output switches on).
pub const LAGGED_SWITCH_MODEL: &str = "
param k1 = 0.05
param k2 = 0.2
param tlag = 30
state a, b
a(0) = 10
alag(a) = tlag
d/dt(a) = -if(t > 30, k2, k1) * a
d/dt(b) = if(t > 30, 1, 0)
output cp = a
output on = b
";

/// A segment a few units in the last place long, between a subject's lagged dose just after
/// the jump of `t > 30` and the jump's stop two units after it, starts on the new side of the
/// jump, as its steps' stages do ([`vpop::solver::left_limit`]): the AUC and Cmax of both
/// outputs of [`LAGGED_SWITCH_MODEL`] with a bolus of 5 at 0 follow their closed forms within `tol`
/// (relative) at `rtol` on every method, for lags one and two units after 30 in f64 and in
/// f32, and half an hour before. Before, the stages of such a segment fell four or more units
/// before its end, before its start and on the old side, disagreed with its first evaluation
/// by 1 in `b`'s derivative, and f32 kernels failed the subject (`step_too_small`: an error
/// estimate of a few atol over a step of two units that no shorter step could make smaller,
/// where `b` is 0).
pub fn a_segment_ulps_long_starts_on_the_new_side(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = Model::parse("lagged_switch", LAGGED_SWITCH_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let (k1, k2, dose, end) = (0.05f64, 0.2f64, 5.0, 48.0);
    let up32 = |n: u32| (0..n).fold(30f32, |x, _| x.next_up()) as f64;
    let up64 = |n: u32| (0..n).fold(30f64, |x, _| x.next_up());
    let lags = [up64(1), up64(2), up32(1), up32(2), up32(3), 29.5];
    // a: 10 e^(−k1 t) to 30, e^(−k2 (t − 30)) after, and the dose at the lag; piece by piece.
    // b: t − 30 after 30. Per output, the AUC and Cmax.
    let closed = |lag: f64| -> [[f64; 2]; 2] {
        let mut edges = [0.0, 30.0, lag, end];
        edges.sort_by(f64::total_cmp);
        let (mut a, mut auc, mut cmax) = (10.0f64, 0.0, 10.0f64);
        for w in edges.windows(2) {
            if w[0] == lag {
                a += dose;
                cmax = cmax.max(a);
            }
            let r = if w[0] >= 30.0 && w[1] > 30.0 { k2 } else { k1 };
            let x = (-r * (w[1] - w[0])).exp();
            auc += a * (1.0 - x) / r;
            a *= x;
        }
        let b = end - 30.0;
        [[auc, cmax], [b * b / 2.0, b]]
    };
    let mut params = m
        .defaults()
        .into_iter()
        .map(|p| vec![p; lags.len()])
        .collect::<Vec<_>>();
    params[m.param_index("tlag").unwrap()] = lags.to_vec();
    let metrics = ["auc", "cmax"];
    for method in Method::ALL {
        let mut a = arm(&m, method, rtol, &metrics.map(String::from));
        a.regimen = Regimen {
            lines: vec![DoseLine::boluses(0, dose, 0.0, 1)],
        };
        a.end = end;
        a.sample_times = vec![];
        let out = run(b.as_mut(), &a, &params);
        // Rosenbrock23 advances with its second-order solution: its global error is a few
        // hundred times the tolerance.
        let tol = if method == Method::Rosenbrock23 {
            tol.max(1e-6).max(100.0 * rtol)
        } else {
            tol
        };
        for (i, &lag) in lags.iter().enumerate() {
            assert_eq!(out.status[i], 0, "{method}, lag {lag:e}: status");
            for (o, want) in closed(lag).iter().enumerate() {
                for (mi, name) in metrics.iter().enumerate() {
                    let (got, w) = (out.metrics[mi * 2 + o][i], want[mi]);
                    assert!(
                        (got - w).abs() <= tol * w.abs().max(1.0),
                        "{method}, lag {lag:e}: {} {name} {got} vs {w} ({:.1e})",
                        m.outputs[o].name,
                        (got - w).abs() / w.abs().max(1.0)
                    );
                }
            }
        }
    }
}

/// Zero doses given over a duration (a placebo line of amount 0; a bioavailability of 0) give
/// nothing, as boluses of 0 do: every subject `ok`, and the AUC and Cmax to 72 h those of the
/// other doses alone, in closed form, within `tol` (relative) at `rtol`, on the backend `make`
/// builds.
pub fn zero_doses_give_nothing(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = Model::parse("zero_dose", ZERO_DOSE_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    // (cl, v, fc, tinf) of three subjects: the full dose, none of it, and a fifth of it.
    let subjects = [
        (5.0, 40.0, 1.0, 2.0),
        (4.0, 30.0, 0.0, 3.0),
        (6.0, 50.0, 0.2, 1.5),
    ];
    let params: Vec<Vec<f64>> = (0..4)
        .map(|p| subjects.iter().map(|s| [s.0, s.1, s.2, s.3][p]).collect())
        .collect();
    for method in Method::ALL {
        let mut a = arm(&m, method, rtol, &["auc".into(), "cmax".into()]);
        // A placebo of 0 over 3 h every 12 h, 100 over the modelled duration at 24 h, 50 over
        // 1 h at 30 h.
        a.regimen = Regimen {
            lines: vec![
                line(0, 0.0, 0.0, 12.0, 2, Administration::InfusionDuration(3.0)),
                line(0, 100.0, 24.0, 0.0, 1, Administration::Modelled),
                line(0, 50.0, 30.0, 0.0, 1, Administration::InfusionDuration(1.0)),
            ],
        };
        a.sample_times = vec![1.0, 25.0];
        let out = run(b.as_mut(), &a, &params);
        for (i, &(cl, v, fc, d)) in subjects.iter().enumerate() {
            assert_eq!(out.status[i], 0, "{method} subject {i}");
            // Infusions (start, amount, duration) of the amount given, and their closed form.
            let doses = [(24.0, 100.0 * fc, d), (30.0, 50.0 * fc, 1.0)];
            let k = cl / v;
            let amount_at = |t: f64| -> f64 {
                doses
                    .iter()
                    .map(|&(t0, amt, dur)| {
                        let rate = amt / dur;
                        let s = (t - t0).clamp(0.0, dur);
                        rate / k * (1.0 - (-k * s).exp()) * (-k * (t - t0 - s)).exp()
                    })
                    .sum()
            };
            let given: f64 = doses.iter().map(|x| x.1).sum();
            let auc = (given - amount_at(72.0)) / cl;
            // The concentration rises while an infusion runs and falls after: its peak is at
            // the end of one.
            let cmax = amount_at(24.0 + d).max(amount_at(31.0)) / v;
            let (got_auc, got_cmax) = (out.metrics[0][i], out.metrics[1][i]);
            let close = |g: f64, w: f64| (g - w).abs() <= tol * w.max(1e-300);
            assert!(
                close(got_auc, auc),
                "{method} subject {i}: AUC {got_auc} vs {auc}"
            );
            assert!(
                close(got_cmax, cmax),
                "{method} subject {i}: Cmax {got_cmax} vs {cmax}"
            );
            if fc == 0.0 {
                assert_eq!((got_auc, got_cmax), (0.0, 0.0), "{method}");
            }
        }
    }
}

/// Windowed areas late in a long run keep their digits: one_cmt_iv, 100 every 12 h for a
/// year (and a loading dose 1 000 times the maintenance dose before 1 every 12 h), AUCs and
/// averages over [8700, 8712], the last interval, the whole run and a partition of it against
/// the closed form within `tol`. In f32 they were the difference of two readings of a running
/// total and lost digits with b / (b − a): 1.5e-4 over [8700, 8712], 1.2e-2 after the loading
/// dose; and a sum of the areas between stops that the shader compiler made plain lost 1.4e-5
/// of the whole run's.
pub fn late_windows_keep_their_digits(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = library_model("one_cmt_iv");
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let (cl, v) = (5.0, 50.0);
    let k = cl / v;
    let params: Vec<Vec<f64>> = m
        .params
        .iter()
        .map(|p| vec![if p.name == "cl" { cl } else { v }])
        .collect();
    let metrics = [
        "auc(8700, 8712)",
        "auc_last_interval",
        "cavg_last_interval",
        "auc",
        "auc(0, 12)",
        "auc(12, 24)",
        "auc(24, 8760)",
    ];
    for (load, dose) in [(0.0, 100.0), (1000.0, 1.0)] {
        let mut a = arm(&m, Method::Tsit5, rtol, &metrics.map(String::from));
        a.regimen = Regimen {
            lines: vec![line(0, dose, 0.0, 12.0, 730, Administration::Bolus)],
        };
        if load > 0.0 {
            a.regimen
                .lines
                .push(line(0, load, 0.0, 0.0, 1, Administration::Bolus));
        }
        a.end = 8760.0;
        a.sample_times = vec![];
        // Boluses (time, amount) and the area of their superposition over [t0, t1].
        let doses: Vec<(f64, f64)> = (0..730)
            .map(|i| (12.0 * i as f64, dose))
            .chain((load > 0.0).then_some((0.0, load)))
            .collect();
        let area = |t0: f64, t1: f64| -> f64 {
            doses
                .iter()
                .filter(|d| d.0 < t1)
                .map(|&(td, amt)| {
                    amt / (v * k) * ((-k * (t0.max(td) - td)).exp() - (-k * (t1 - td)).exp())
                })
                .sum()
        };
        let want = [
            area(8700.0, 8712.0),
            area(8748.0, 8760.0),
            area(8748.0, 8760.0) / 12.0,
            area(0.0, 8760.0),
            area(0.0, 12.0),
            area(12.0, 24.0),
            area(24.0, 8760.0),
        ];
        let out = run(b.as_mut(), &a, &params);
        assert_eq!(out.status[0], 0, "loading dose {load}");
        for (i, w) in want.iter().enumerate() {
            let got = out.metrics[i][0];
            assert!(
                (got / w - 1.0).abs() <= tol,
                "loading dose {load}: {} {got} vs {w} ({:.1e})",
                metrics[i],
                got / w - 1.0
            );
        }
    }
}

/// A short infusion late in a long trial (100 over 0.0123 h from 8 700 h, whose end f32 rounds
/// by 3 % of its duration) delivers its amount: the AUC over [8 700, 8 760] and the Cmax of
/// one_cmt_iv (cl 5, v 50), given by its duration and by its rate, within `tol` (relative)
/// of the closed form on the backend `make` builds (f32 had delivered 103.2).
pub fn a_late_short_infusion_delivers_its_amount(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    tol: f64,
) {
    let m = library_model("one_cmt_iv");
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let (cl, v, amount, dur, start) = (5.0, 50.0, 100.0, 0.0123, 8700.0);
    let k = cl / v;
    let params: Vec<Vec<f64>> = m
        .params
        .iter()
        .map(|p| vec![if p.name == "cl" { cl } else { v }])
        .collect();
    assert!(m.params.iter().all(|p| p.name == "cl" || p.name == "v"));
    let peak = amount / dur / k * (1.0 - (-k * dur).exp());
    let auc = (amount - peak * (-k * (8760.0 - start - dur)).exp()) / k / v;
    let cmax = peak / v;
    for admin in [
        Administration::InfusionDuration(dur),
        Administration::InfusionRate(amount / dur),
    ] {
        let mut a = arm(
            &m,
            Method::Tsit5,
            1e-6,
            &["auc(8700, 8760)".into(), "cmax".into()],
        );
        a.regimen = Regimen {
            lines: vec![line(0, amount, start, 0.0, 1, admin)],
        };
        a.end = 8760.0;
        a.sample_times = vec![8701.0];
        let out = run(b.as_mut(), &a, &params);
        assert_eq!(out.status[0], 0, "{admin:?}");
        let (got_auc, got_cmax) = (out.metrics[0][0], out.metrics[1][0]);
        assert!(
            (got_auc / auc - 1.0).abs() <= tol,
            "{admin:?}: AUC {got_auc} vs {auc}"
        );
        assert!(
            (got_cmax / cmax - 1.0).abs() <= tol,
            "{admin:?}: Cmax {got_cmax} vs {cmax}"
        );
    }
}

/// [`a_late_short_infusion_delivers_its_amount`] as a dataset's records: 100 at a rate of
/// 100 / 0.0123 from 8 700 h into one_cmt_iv (cl 5, v 50), and 100 over 1e-5 h from 1 000 h
/// (shorter than f32 holds time there: a bolus), the concentration read 1 h and 60 h later
/// within `tol` (relative) of the closed form on the backend `make` builds.
pub fn a_late_short_infusion_record_delivers_its_amount(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    tol: f64,
) {
    use vpop::backend::records::{record_program, RecordBinding};
    use vpop::dosing::nonmem::Dataset;
    let m = library_model("one_cmt_iv");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut b) = make(model.clone()) else {
        return;
    };
    let (cl, v, amount) = (5.0, 50.0, 100.0);
    let k = cl / v;
    let dir = std::env::temp_dir().join(format!("vpop-late-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (start, dur) in [(8700.0, 0.0123), (1000.0, 1e-5)] {
        let csv = dir.join("late.csv");
        std::fs::write(
            &csv,
            format!(
                "ID,TIME,EVID,AMT,RATE,CMT,MDV\n1,{start},1,{amount},{},1,1\n\
                 1,{},0,0,0,1,0\n1,{},0,0,0,1,0\n",
                amount / dur,
                start + 1.0,
                start + 60.0
            ),
        )
        .unwrap();
        let ds = Dataset::load(&csv).unwrap();
        let binding = RecordBinding::new(&m, &ds.covariates);
        let base: Vec<f64> = m.params.iter().map(|p| p.default).collect();
        assert_eq!(base, [cl, v]);
        let program = record_program(&model, &base, &binding, &ds.subjects[0], &mut |_, _| {});
        let solver = vpop::solver::SolverOptions {
            method: Method::Tsit5,
            rtol: 1e-6,
            atol: 1e-9,
            ..Default::default()
        };
        let out = b.run_records(&[&program], &solver).unwrap();
        assert_eq!(out[0].status, vpop::solver::Status::Ok);
        let peak = amount / dur / k * (1.0 - (-k * dur).exp());
        for (j, t) in [(1, start + 1.0), (2, start + 60.0)] {
            let want = peak * (-k * (t - start - dur)).exp() / v;
            let got = out[0].outputs[0][j];
            assert!((got / want - 1.0).abs() <= tol, "at {t}: {got} vs {want}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vpop simulate ARGS`, run in `dir` (where given): its output, whether it succeeded or not.
pub fn simulate_in(
    dir: Option<&std::path::Path>,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"));
    cmd.arg("simulate").args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.output().expect("vpop simulate could not be started")
}

/// What `vpop simulate ARGS` prints on stdout, where it must succeed.
pub fn simulate_ok(dir: Option<&std::path::Path>, args: &[impl AsRef<std::ffi::OsStr>]) -> String {
    let out = simulate_in(dir, args);
    assert!(
        out.status.success(),
        "vpop simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("vpop simulate printed text that is not UTF-8")
}

/// `vpop simulate ARGS`: whether it succeeded, and stdout followed by stderr.
pub fn simulate_text(args: &[impl AsRef<std::ffi::OsStr>]) -> (bool, String) {
    let out = simulate_in(None, args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A bacterial count killed while the concentration of a one-compartment oral model is above
/// a threshold: a right-hand side that jumps with the states (tests/events.rs).
pub const KILL_MODEL: &str = "\
param ka = 1.5
param cl = 2.8
param v = 35
state depot, central, bact
bact(0) = 1e6
cp = central / v
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
d/dt(bact) = 0.05 * bact - if(cp > 2, 0.5, 0) * bact
output conc = cp
output lb = log10(bact)
output above = cp > 2
";

/// The CUDA backend of `model` in precision `p` on a device where there is one, else the host
/// emulation of its kernels; `None`, with a `SKIPPED` line, where neither can be built.
#[cfg(feature = "cuda")]
pub fn cuda_or_emulated(
    model: Arc<CompiledModel>,
    p: vpop::backend::Precision,
) -> Option<Box<dyn Backend>> {
    use vpop::backend::cuda::{CudaBackend, EmulatedCuda};
    match CudaBackend::new(model.clone(), p) {
        Ok(b) => Some(Box::new(b)),
        Err(_) => match EmulatedCuda::new(model, p) {
            Ok(b) => Some(Box::new(b)),
            Err(e) => {
                println!("SKIPPED: no CUDA device and no host emulation ({e})");
                None
            }
        },
    }
}

/// Eight metrics of every kind a kernel accumulates: areas, extremes, a trough, an average,
/// a last interval's area and a time above a threshold.
pub const EIGHT_METRICS: [&str; 8] = [
    "auc",
    "cmax",
    "tmax",
    "cmin",
    "ctrough",
    "cavg",
    "auc_last_interval",
    "time_above(0.1)",
];

/// A model of one state and `n` outputs (`o0` … : the state over 10, 20, …).
pub fn many_outputs_model(n: usize) -> Model {
    let mut src = String::from("param k = 0.1\nstate a\nd/dt(a) = -k * a\n");
    for i in 0..n {
        src.push_str(&format!("output o{i} = a / {}\n", 10 * (i + 1)));
    }
    Model::parse("many", &src).unwrap()
}

/// Eight metrics of every output of a 30-output model (240 metric columns, more than the
/// nesting a chain of selects per column reaches in a kernel's tables) agree with the CPU
/// reference within `tol` at `rtol` (Tsit5).
pub fn many_metrics_of_many_outputs_agree_with_cpu(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    tol: f64,
) {
    let m = many_outputs_model(30);
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut b) = make(model.clone()) else {
        return;
    };
    let metrics: Vec<String> = EIGHT_METRICS.map(String::from).to_vec();
    let a = arm(&m, Method::Tsit5, rtol, &metrics);
    assert_eq!(a.metrics.len(), 240);
    let params = subjects(&m, 3);
    metrics_agree_with_cpu(b.as_mut(), &model, &a, &params, tol, "240 metrics");
}

/// An oral and an intravenous compartment eliminated at the same rate, dosed together.
const TWIN_MODEL: &str = "
param ka = 1
param k = 0.1
state depot, cen, iv
d/dt(depot) = -ka * depot
d/dt(cen) = ka * depot - k * cen
d/dt(iv) = -k * iv
output oral = cen
output bolus = iv
";

/// Tmax keeps the first of maxima equal to within the run's rtol and moves to a later one
/// only where it is higher by more: 100 mg q12h × 14 into an oral and an intravenous
/// compartment, for a subject eliminated so fast that every interval's peak equals the first
/// to 1e-15 (Tmax is the first peak, not the one the solver's round-off made largest) and one
/// whose peaks still grow by 1 % at the last dose (Tmax is the last peak). Over the whole
/// run and over [24, 48], on every method, against the peaks of the closed forms taken by the
/// same rule; Tmax within `ttol` (hours).
pub fn tmax_keeps_the_first_of_maxima_within_rtol(
    make: &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
    rtol: f64,
    ttol: f64,
) {
    let m = Model::parse("twin", TWIN_MODEL).unwrap();
    let Some(mut b) = make(Arc::new(CompiledModel::new(&m))) else {
        return;
    };
    let subjects = [(4.5, 3.0), (1.0, 0.03)];
    let params = vec![
        subjects.iter().map(|s| s.0).collect::<Vec<f64>>(),
        subjects.iter().map(|s| s.1).collect(),
    ];
    let metrics = ["tmax", "tmax(24, 48)"];
    let windows = [(0.0, 168.0), (24.0, 48.0)];
    let n_out = m.outputs.len();
    for method in Method::ALL {
        let mut a = arm(&m, method, rtol, &metrics.map(String::from));
        a.regimen = Regimen {
            lines: vec![
                DoseLine::boluses(0, 100.0, 12.0, 14),
                DoseLine::boluses(2, 100.0, 12.0, 14),
            ],
        };
        a.end = 168.0;
        a.sample_times = vec![];
        let out = run(b.as_mut(), &a, &params);
        for (s, &(ka, k)) in subjects.iter().enumerate() {
            assert_eq!(out.status[s], 0, "{method}: status of subject {s}");
            let doses: Vec<f64> = (0..14).map(|j| 12.0 * j as f64).collect();
            let oral = |t: f64| -> f64 {
                doses
                    .iter()
                    .filter(|&&d| d <= t)
                    .map(|&d| {
                        100.0 * ka / (ka - k) * ((-k * (t - d)).exp() - (-ka * (t - d)).exp())
                    })
                    .sum()
            };
            let bolus = |t: f64| -> f64 {
                doses
                    .iter()
                    .filter(|&&d| d <= t)
                    .map(|&d| 100.0 * (-k * (t - d)).exp())
                    .sum()
            };
            for (mi, &(lo, hi)) in windows.iter().enumerate() {
                // Each interval's peak in the window: the oral one inside it, the bolus at
                // its dose (the right limit there).
                let starts: Vec<f64> = doses
                    .iter()
                    .copied()
                    .filter(|&d| d >= lo && d < hi)
                    .collect();
                let peaks: [Vec<(f64, f64)>; 2] = [
                    starts
                        .iter()
                        .map(|&d| {
                            let t = golden_max(oral, d, d + 12.0, 200);
                            (t, oral(t))
                        })
                        .collect(),
                    starts.iter().map(|&d| (d, bolus(d))).collect(),
                ];
                for (o, peaks) in peaks.iter().enumerate() {
                    let (mut t_want, mut best) = peaks[0];
                    for &(t, c) in &peaks[1..] {
                        let rise = (c - best) / best;
                        assert!(
                            !(rise > rtol / 100.0 && rise < 100.0 * rtol),
                            "the case is too close to the tie to test: {rise}"
                        );
                        if rise > rtol {
                            (t_want, best) = (t, c);
                        }
                    }
                    let got = out.metrics[mi * n_out + o][s];
                    assert!(
                        (got - t_want).abs() <= ttol,
                        "{method}: subject {s}: {} {} {got} vs {t_want}",
                        m.outputs[o].name,
                        metrics[mi]
                    );
                }
            }
        }
    }
}
