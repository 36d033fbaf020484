//! Population sampling throughput: the adult population (8 covariates, 5 parameters, a 3×3
//! OMEGA block), single-threaded and on all cores.
//!
//! cargo bench --bench population

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpop::population::{Population, SampledChunk};

fn sampling(c: &mut Criterion) {
    let pop = Population::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("populations/adult_healthy.toml"),
    )
    .unwrap();
    let n = 262_144;
    let mut group = c.benchmark_group("adult_healthy");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut chunk = SampledChunk::default();
    group.bench_function("1 thread", |b| {
        b.iter(|| one.install(|| pop.sample(1, 0, n, &mut chunk)))
    });
    group.bench_function("all cores", |b| b.iter(|| pop.sample(1, 0, n, &mut chunk)));
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
