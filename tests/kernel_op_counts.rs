//! Operation counts of the CUDA integrator kernel (the generated source built on the host with a
//! `real` that counts what is done with it, kernels/host_count.h): the counting build computes
//! exactly what the plain build computes, and what it counts is the kernel's work — one more
//! multiplication in the model's right-hand side adds exactly one multiplication per
//! right-hand-side evaluation the kernel reports, and twice the subjects count twice the work.

#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;

use common::{arm, run, subjects};
use vpop::backend::cuda::EmulatedCuda;
use vpop::backend::cuda::OpCounts;
use vpop::backend::Precision;
use vpop::model::{CompiledModel, Model};
use vpop::solver::Method;

const MODEL: &str = "\
# Two-compartment oral absorption
param ka = 1.2
param cl = 5
param v1 = 30
param q = 2.5
param v2 = 60
param unit = 1
state depot, central, peripheral
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - (cl + q) / v1 * central + q / v2 * peripheral
d/dt(peripheral) = q / v1 * central - q / v2 * peripheral
output cp = central / v1
";

fn metrics() -> Vec<String> {
    ["auc", "cmax", "tmax", "ctrough", "time_above(1.0)"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The test subjects' parameters, `unit` exactly 1.
fn params(model: &Model, n: usize) -> Vec<Vec<f64>> {
    let mut p = subjects(model, n);
    let unit = model.params.iter().position(|p| p.name == "unit").unwrap();
    p[unit].fill(1.0);
    p
}

/// Runs `n` subjects through a counting build; None (after SKIPPED) without a C++ compiler.
fn counted(
    src: &str,
    method: Method,
    p: Precision,
    n: usize,
) -> Option<(vpop::backend::ChunkOutput, OpCounts)> {
    let model = Model::parse("counted.vpm", src).unwrap();
    let compiled = Arc::new(CompiledModel::new(&model));
    let mut b = match EmulatedCuda::counting(compiled, p) {
        Ok(b) => b,
        Err(e) => {
            println!("SKIPPED: {e}");
            return None;
        }
    };
    let params = params(&model, n);
    let out = run(&mut b, &arm(&model, method, 1e-6, &metrics()), &params);
    Some((out, b.op_counts()))
}

#[test]
fn counting_builds_compute_what_plain_builds_compute() {
    for p in [Precision::F32, Precision::F64] {
        let Some((counted, ops)) = counted(MODEL, Method::Tsit5, p, 40) else {
            return;
        };
        let model = Model::parse("counted.vpm", MODEL).unwrap();
        let mut plain = match EmulatedCuda::new(Arc::new(CompiledModel::new(&model)), p) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        let params = params(&model, 40);
        let out = run(
            &mut plain,
            &arm(&model, Method::Tsit5, 1e-6, &metrics()),
            &params,
        );
        assert_eq!(counted.status, out.status);
        assert_eq!(counted.stats.rhs_evals, out.stats.rhs_evals);
        for (a, b) in counted.metrics.iter().zip(&out.metrics) {
            for (x, y) in a.iter().zip(b) {
                assert!(x.to_bits() == y.to_bits(), "{p:?}: {x} against {y}");
            }
        }
        assert_eq!(plain.op_counts(), OpCounts::default());
        assert!(ops.flops() > 0 && ops.transcendental > 0, "{ops:?}");
    }
}

#[test]
fn one_more_multiplication_per_right_hand_side_is_counted_once_per_evaluation() {
    // `* unit` (a parameter equal to 1, which the lowering cannot fold away) in one right-hand
    // side: the same steps, one more multiplication per evaluation.
    let more = MODEL.replace(
        "d/dt(depot) = -ka * depot",
        "d/dt(depot) = -ka * depot * unit",
    );
    for method in [Method::Tsit5, Method::Dopri5, Method::Rk4] {
        for p in [Precision::F32, Precision::F64] {
            let Some((base, a)) = counted(MODEL, method, p, 24) else {
                return;
            };
            let (extra, b) = counted(&more, method, p, 24).unwrap();
            assert_eq!(base.stats.rhs_evals, extra.stats.rhs_evals);
            assert!(base.stats.rhs_evals > 0);
            assert_eq!(
                b.mul - a.mul,
                base.stats.rhs_evals,
                "{method:?} {p:?}: {a:?} against {b:?}"
            );
            assert_eq!(
                (b.add, b.div, b.fma, b.sqrt, b.transcendental),
                (a.add, a.div, a.fma, a.sqrt, a.transcendental),
                "{method:?} {p:?}"
            );
        }
    }
}

#[test]
fn twice_the_same_subjects_count_twice_the_work() {
    let Some((_, one)) = counted(MODEL, Method::Tsit5, Precision::F32, 17) else {
        return;
    };
    // subjects() repeats with period 17, so 34 subjects are the 17 twice.
    let (_, two) = counted(MODEL, Method::Tsit5, Precision::F32, 34).unwrap();
    assert_eq!(two.flops(), 2 * one.flops());
    assert_eq!(two.transcendental, 2 * one.transcendental);
    assert_eq!(two.compare, 2 * one.compare);
}

/// `vpop bench --count-ops`: both precisions counted on the bench's first subjects, with the
/// steps of the counted run close to the CPU reference's, and the FLOP rate of a CUDA row.
#[test]
fn the_bench_counts_the_kernel_operations_per_subject() {
    use vpop::trial::bench::{format_report, run_bench, BenchOptions, Target};
    use vpop::trial::Trial;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("examples/quickstart.toml")).unwrap();
    let t = Trial::from_text(&root.join("examples/quickstart.toml"), &spec).unwrap();
    let opts = BenchOptions {
        subjects: 16,
        cpu_subjects: 16,
        targets: vec![Target::Cpu, Target::CudaEmulated(Precision::F32)],
        count_ops: 16,
        ..Default::default()
    };
    let rep = run_bench(&t, &opts, &mut |_| {}).unwrap();
    if !rep.skipped.is_empty() {
        println!("SKIPPED: {}", rep.skipped[0].reason);
        return;
    }
    assert_eq!(rep.kernel_ops.len(), 2);
    let cpu_steps = rep.rows[0].steps_per_subject;
    for k in &rep.kernel_ops {
        assert_eq!(k.subject_arms, 32);
        assert!(
            (k.steps_per_subject / cpu_steps - 1.0).abs() < 0.05,
            "{}: {} steps against {cpu_steps}",
            k.precision,
            k.steps_per_subject
        );
        // Several hundred operations per step; the per-subject counts add up to the FLOPs.
        let per_step = k.flops_per_subject / k.steps_per_subject;
        assert!((100.0..2000.0).contains(&per_step), "{per_step}");
        let o = &k.per_subject;
        let sum = (o.add + o.mul + o.div + o.sqrt + 2 * o.fma) as f64;
        assert!((sum / k.flops_per_subject - 1.0).abs() < 1e-3);
    }
    let text = format_report(&rep);
    assert!(text.contains("CUDA kernel f32 per subject-arm"), "{text}");
    assert!(text.contains("FLOP/s and"), "{text}");
}
