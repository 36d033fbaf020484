//! One subject of the quickstart arm (two_cmt_oral, 100 mg q12h × 14, 168 h, metrics) on the
//! CPU reference, per method; and the right-hand side alone.
//!
//! cargo bench --bench cpu_subject

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpop::backend::cpu::simulate_arm_subject;
use vpop::backend::ArmPlan;
use vpop::dosing::{DoseLine, Regimen};
use vpop::metrics::{Metric, MetricSpec};
use vpop::model::{library, CompiledModel, Model};
use vpop::solver::{Integrator, Method, OdeSystem, SolverOptions};

fn subject(c: &mut Criterion) {
    let lm = library::get("two_cmt_oral").unwrap();
    let model = Model::parse(lm.name, lm.source).unwrap();
    let compiled = CompiledModel::new(&model);
    let params: Vec<f64> = model.params.iter().map(|p| p.default).collect();
    let metrics: Vec<MetricSpec> = [
        "auc",
        "cmax",
        "tmax",
        "ctrough",
        "auc_last_interval",
        "time_above(1.0)",
    ]
    .iter()
    .map(|m| MetricSpec::new(0, "cp", Metric::parse(m).unwrap()))
    .collect();
    let mut group = c.benchmark_group("quickstart_subject");
    group.throughput(Throughput::Elements(1));
    for method in [Method::Tsit5, Method::Dopri5, Method::Rodas4] {
        let arm = ArmPlan {
            name: "a".into(),
            regimen: Regimen {
                lines: vec![DoseLine::boluses(0, 100.0, 12.0, 14)],
            },
            metrics: metrics.clone(),
            end: 168.0,
            sample_times: vec![],
            solver: SolverOptions {
                method,
                rtol: 1e-6,
                atol: 1e-9,
                ..Default::default()
            },
            occasions: Vec::new(),
        };
        let mut integ = Integrator::new(method, 4);
        group.bench_function(method.name(), |b| {
            b.iter(|| simulate_arm_subject(&compiled, &params, 1.0, &arm, &mut integ))
        });
    }
    group.finish();
    let mut bound = compiled.bind(&params);
    let (y, mut dy) = ([10.0, 3.0, 7.0], [0.0; 3]);
    c.bench_function("rhs two_cmt_oral", |b| {
        b.iter(|| bound.rhs(1.0, std::hint::black_box(&y), &mut dy))
    });
}

criterion_group!(benches, subject);
criterion_main!(benches);
