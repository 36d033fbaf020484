//! diffsol on the peer problem of benches/peers (README.md there): two_cmt_oral, 100 mg into the
//! depot every 12 h × 14, 168 h, f64, one subject at a time on one thread.
//!
//! usage: vpop-peer-diffsol SUBJECTS.csv [N] [REPEATS]
//!
//! SUBJECTS.csv is what `python3 common.py VPOP_DIR N OUT.csv` writes: the parameters vpop
//! sampled and its AUC and Cmax. Each subject is one problem (rhs, init and a reset closure,
//! the parameters set with `set_params`) solved by diffsol's explicit Tsit45 (Tsitouras 5(4),
//! its own PI step control) at rtol 1e-6 / atol 1e-9 on all four states, stepped by hand:
//! `set_stop_time` at each dose time, the dose added with `apply_reset` (the reset closure adds
//! 100 to the depot; diffsol recomputes dy). AUC is the fourth state (d AUC/dt = central / v1).
//! Cmax: the concentration at every step end, and, in a step where d central/dt turns from
//! positive to negative, the maximum of diffsol's dense output (Tsit5's free interpolant) found
//! by bisection on its time derivative (`interpolate_dy`), like vpop's refinement.
//! The timed loop is the integration of all N subjects, REPEATS times (default 5); the figure
//! is the median pass. Prints one JSON line shaped like common.report's.
use std::time::Instant;

use diffsol::{
    DiffsolError, NalgebraMat, NalgebraVec, OdeBuilder, OdeEquations, OdeSolverMethod,
    OdeSolverStopReason, Vector,
};

const DIFFSOL_VERSION: &str = "0.19.0"; // the version pinned in Cargo.toml
const DOSE: f64 = 100.0;
const EVERY: f64 = 12.0;
const COUNT: usize = 14;
const END: f64 = 168.0;
const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-9;
const CENTRAL: usize = 1;
const AUC: usize = 3;

type M = NalgebraMat<f64>;
type V = NalgebraVec<f64>;

struct Subject {
    /// ka, cl, v1, q, v2
    p: [f64; 5],
    auc_vpop: f64,
    cmax_vpop: f64,
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Result1 {
    auc: f64,
    cmax: f64,
    steps: usize,
    rejected: usize,
}

fn read_subjects(path: &str, n: usize) -> Vec<Subject> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("empty CSV").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .unwrap_or_else(|| panic!("{path}: no column {name}"))
    };
    let idx = ["ka", "cl", "v1", "q", "v2", "cp_auc", "cp_cmax"].map(col);
    lines
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
            Subject {
                p: [f[idx[0]], f[idx[1]], f[idx[2]], f[idx[3]], f[idx[4]]],
                auc_vpop: f[idx[5]],
                cmax_vpop: f[idx[6]],
            }
        })
        .collect()
}

/// The maximum of the dense output's central amount inside the last step [a, b], where its
/// time derivative goes from positive (at a) to negative (at b); None if the interpolant's
/// derivative does not bracket a zero there.
fn refine_peak<'a, S: OdeSolverMethod<'a, E>, E: OdeEquations<V = V, T = f64> + 'a>(
    solver: &S,
    mut a: f64,
    mut b: f64,
    buf: &mut V,
) -> Result<Option<f64>, DiffsolError> {
    let slope = |t: f64, buf: &mut V| -> Result<f64, DiffsolError> {
        solver.interpolate_dy_inplace(t, buf)?;
        Ok(buf.get_index(CENTRAL))
    };
    if !(slope(a, buf)? > 0.0 && slope(b, buf)? < 0.0) {
        return Ok(None);
    }
    while b - a > 1e-9 * b.abs().max(1.0) {
        let m = 0.5 * (a + b);
        if slope(m, buf)? > 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    solver.interpolate_inplace(0.5 * (a + b), buf)?;
    Ok(Some(buf.get_index(CENTRAL)))
}

fn main() -> Result<(), DiffsolError> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: vpop-peer-diffsol SUBJECTS.csv [N] [REPEATS]");
    let n: usize = args.get(2).map_or(200, |s| s.parse().expect("N"));
    let repeats: usize = args.get(3).map_or(5, |s| s.parse().expect("REPEATS"));
    let subjects = read_subjects(path, n);
    assert!(!subjects.is_empty(), "{path}: no subjects");
    assert_eq!(END, COUNT as f64 * EVERY);

    let mut problem = OdeBuilder::<M>::new()
        .rtol(RTOL)
        .atol([ATOL; 4])
        .p(subjects[0].p)
        .rhs(|x, p, _t, y| {
            let (ka, cl, v1, q, v2) = (p[0], p[1], p[2], p[3], p[4]);
            y[0] = -ka * x[0];
            y[1] = ka * x[0] - (cl + q) / v1 * x[1] + q / v2 * x[2];
            y[2] = q / v1 * x[1] - q / v2 * x[2];
            y[3] = x[1] / v1; // AUC of cp as a quadrature state
        })
        .init(
            |_p, _t, y| {
                y.fill(0.0);
                y[0] = DOSE; // the first dose, at t = 0
            },
            4,
        )
        .reset(|x, _p, _t, y| {
            y.copy_from_slice(x);
            y[0] += DOSE; // a dose into the depot
        })
        .build()?;
    let ctx = *problem.context();

    let mut run_all = |out: &mut Vec<Result1>| -> Result<f64, DiffsolError> {
        out.clear();
        let mut buf = V::zeros(4, ctx);
        let t0 = Instant::now();
        for s in &subjects {
            problem.eqn_mut().set_params(&V::from_slice(&s.p, ctx));
            let v1 = s.p[2];
            let mut solver = problem.tsit45()?;
            let mut peak = 0.0f64; // the central amount at t = 0 is 0
            for d in 0..COUNT {
                if d > 0 {
                    solver.apply_reset()?;
                }
                solver.set_stop_time((d + 1) as f64 * EVERY)?;
                loop {
                    let (a, rising) = {
                        let st = solver.state();
                        (st.t, st.dy.get_index(CENTRAL) > 0.0)
                    };
                    let reason = solver.step()?;
                    let (b, end_value, falling) = {
                        let st = solver.state();
                        (
                            st.t,
                            st.y.get_index(CENTRAL),
                            st.dy.get_index(CENTRAL) < 0.0,
                        )
                    };
                    peak = peak.max(end_value);
                    if rising && falling {
                        if let Some(inner) = refine_peak(&solver, a, b, &mut buf)? {
                            peak = peak.max(inner);
                        }
                    }
                    if reason == OdeSolverStopReason::TstopReached {
                        break;
                    }
                }
            }
            let stats = solver.get_statistics();
            out.push(Result1 {
                auc: solver.state().y.get_index(AUC),
                cmax: peak / v1,
                steps: stats.number_of_steps,
                rejected: stats.number_of_error_test_failures,
            });
        }
        Ok(t0.elapsed().as_secs_f64())
    };

    let mut results = Vec::with_capacity(subjects.len());
    let mut first = Vec::new();
    let mut times = Vec::with_capacity(repeats.max(1));
    for r in 0..repeats.max(1) {
        times.push(run_all(&mut results)?);
        if r == 0 {
            first = results.clone();
        } else {
            assert!(first == results, "repeated passes disagree");
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];

    let nf = subjects.len() as f64;
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    let (mut d_auc, mut d_cmax) = (0.0f64, 0.0f64);
    for (s, r) in subjects.iter().zip(&results) {
        d_auc = d_auc.max(rel(r.auc, s.auc_vpop));
        d_cmax = d_cmax.max(rel(r.cmax, s.cmax_vpop));
    }
    let steps: usize = results.iter().map(|r| r.steps).sum();
    let rejected: usize = results.iter().map(|r| r.rejected).sum();
    println!(
        "{{\"peer\": \"diffsol {DIFFSOL_VERSION} Tsit45 (f64, 1 thread)\", \"subjects\": {}, \
         \"seconds\": {}, \"subjects_per_s\": {}, \"max_rel_diff_auc_vs_vpop\": {:e}, \
         \"max_rel_diff_cmax_vs_vpop\": {:e}, \"repeats\": {}, \"steps_per_subject\": {}, \
         \"rejected_per_subject\": {}}}",
        subjects.len(),
        median,
        nf / median,
        d_auc,
        d_cmax,
        times.len(),
        steps as f64 / nf,
        rejected as f64 / nf,
    );
    Ok(())
}
