//! Subjects in the order of their fitted cost fill a GPU's warps better than subjects in the
//! order they were sampled in, measured on the CPU reference's step counts.
//!
//! A warp of 32 threads runs in lockstep: between two stopping points it takes as many steps
//! as its slowest subject. The quickstart's first arm (two_cmt_oral, 100 mg q12h × 14, Tsit5 at
//! rtol 2e-4, the throughput benchmark's settings, and at the quickstart's 1e-6) is integrated for adult_healthy subjects on
//! the CPU reference, interval by interval; the share of a warp's lane-steps that do work is
//! compared between warps of subjects as sampled and warps in the order
//! `vpop::backend::order::SubjectOrder` makes after learning from a pilot of other subjects.

use vpop::backend::cpu::simulate_arm_subject;
use vpop::backend::order::{Plan, SubjectOrder};
use vpop::backend::{ArmPlan, ChunkInput};
use vpop::dosing::{DoseLine, Regimen};
use vpop::model::{library, CompiledModel, Model};
use vpop::population::{Population, SampledChunk};
use vpop::solver::{Integrator, Method, SolverOptions};

const DOSES: usize = 14;
const WARP: usize = 32;

/// Each subject's steps (accepted and rejected) in each dosing interval: the steps of the
/// arm cut at the interval's end, less those cut at its start.
fn steps_per_interval(
    compiled: &CompiledModel,
    params: &[Vec<f64>],
    i: usize,
    rtol: f64,
) -> Vec<u32> {
    let p: Vec<f64> = params.iter().map(|c| c[i]).collect();
    let mut integ = Integrator::new(Method::Tsit5, 4);
    let mut before = 0;
    (1..=DOSES)
        .map(|k| {
            let arm = ArmPlan {
                name: "q12h".into(),
                regimen: Regimen {
                    lines: vec![DoseLine::boluses(0, 100.0, 12.0, DOSES as u32)],
                },
                metrics: Vec::new(),
                end: 12.0 * k as f64,
                sample_times: Vec::new(),
                solver: SolverOptions {
                    method: Method::Tsit5,
                    rtol,
                    atol: rtol * 1e-3,
                    ..Default::default()
                },
                occasions: Vec::new(),
            };
            let o = simulate_arm_subject(compiled, &p, 1.0, &arm, &mut integ);
            let total = (o.stats.accepted + o.stats.rejected) as u32;
            let s = total - before;
            before = total;
            s
        })
        .collect()
}

/// The share of lane-steps that do work when warps of `order`'s subjects, in turn, take the
/// steps of their slowest subject in each interval.
fn lockstep_efficiency(steps: &[Vec<u32>], order: &[u32]) -> f64 {
    let (mut useful, mut run) = (0u64, 0u64);
    for warp in order.chunks(WARP) {
        let interval = |k: usize| warp.iter().map(move |&i| u64::from(steps[i as usize][k]));
        for k in 0..DOSES {
            useful += interval(k).sum::<u64>();
            run += WARP as u64 * interval(k).max().unwrap();
        }
    }
    useful as f64 / run as f64
}

#[test]
fn ordered_warps_waste_fewer_steps_than_sampled_ones() {
    let lm = library::get("two_cmt_oral").unwrap();
    let model = Model::parse(lm.name, lm.source).unwrap();
    let compiled = CompiledModel::new(&model);
    let lp = vpop::population::library::get("adult_healthy").unwrap();
    let pop = Population::parse("adult_healthy.toml", lp.source).unwrap();
    let (pilot, n) = (512, 512 + 2 * vpop::backend::order::WINDOW);
    let mut chunk = SampledChunk::default();
    pop.sample(20261122, 0, n, &mut chunk);
    let names = pop.parameter_names();
    let params: Vec<Vec<f64>> = model
        .params
        .iter()
        .map(|p| match names.iter().position(|q| *q == p.name) {
            Some(j) => chunk.parameters[j].clone(),
            None => vec![p.default; n],
        })
        .collect();
    let input = ChunkInput {
        first_subject: 0,
        n,
        params: &params,
        amount_scale: None,
        occasion_params: &[],
    };
    for rtol in [2e-4, 1e-6] {
        let steps: Vec<Vec<u32>> = (0..n)
            .map(|i| steps_per_interval(&compiled, &params, i, rtol))
            .collect();
        // Learn from the pilot's total steps, as a backend learns from its counters.
        let order = SubjectOrder::new();
        let samples: Vec<(u32, u32)> = (0..pilot)
            .map(|i| (i as u32, steps[i].iter().sum()))
            .collect();
        order.learn("q12h", &input, &samples);
        let Plan::Ordered(ordered) = order.plan("q12h", &input, pilot..n) else {
            panic!("no order learnt");
        };
        let sampled: Vec<u32> = (pilot as u32..n as u32).collect();
        let (as_sampled, by_cost) = (
            lockstep_efficiency(&steps, &sampled),
            lockstep_efficiency(&steps, &ordered),
        );
        let mean = steps
            .iter()
            .map(|s| s.iter().sum::<u32>() as f64)
            .sum::<f64>()
            / n as f64;
        println!(
            "rtol {rtol:e}, {} subjects, {mean:.1} steps each: lane-steps that work, as sampled \
             {as_sampled:.3}, ordered by fitted cost {by_cost:.3} ({:.2}× fewer warp steps)",
            n - pilot,
            by_cost / as_sampled
        );
        assert!(by_cost >= 0.9, "rtol {rtol:e}, ordered: {by_cost}");
        assert!(
            by_cost - as_sampled >= 0.15,
            "rtol {rtol:e}: {as_sampled} → {by_cost}"
        );
    }
}
