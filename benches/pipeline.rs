//! The host side of `vpop run` and one backend chunk:
//! - sampling + Arrow encoding + zstd Parquet encoding of one chunk of the quickstart (65 536
//!   subjects × 2 arms, written to memory), in rows/s;
//! - one chunk of 4 096 quickstart subjects (both arms) on each available backend, in
//!   subject-arms/s (wgpu only on a hardware adapter; CUDA where a device exists);
//! - `vpop run` of 1 M quickstart subjects (VPOP_BENCH_SUBJECTS) through a backend that
//!   integrates nothing: the subjects/s the host side sustains on all cores;
//! - what ordering a GPU call's 2^20 subjects by their fitted cost adds on the host: the
//!   order itself, parameters packed and results taken in it against in sampling order;
//! - the summary's quantile tally of one metric column as the encoders take it, in values/s.
//!
//! cargo bench --bench pipeline

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vpop::backend::{Backend, ChunkInput, ChunkOutput};
use vpop::population::SampledChunk;
use vpop::trial::run::layout;
use vpop::trial::Trial;

fn quickstart() -> Trial {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).unwrap();
    Trial::load(&root.join("examples/quickstart.toml")).unwrap()
}

/// Parameters of the first `n` subjects in the model's parameter order.
fn params(trial: &Trial, n: usize) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut chunk = SampledChunk::default();
    let pop = trial.population.as_ref().unwrap();
    pop.sample(trial.seed, 0, n, &mut chunk);
    let p = trial
        .params
        .iter()
        .map(|src| match src {
            vpop::trial::resolve::ParamSource::Population(j) => chunk.parameters[*j].clone(),
            vpop::trial::resolve::ParamSource::Fixed(v) => vec![*v; n],
        })
        .collect();
    (p, chunk.covariates)
}

fn host(c: &mut Criterion) {
    let trial = quickstart();
    let n = 65_536;
    let (_, cov) = params(&trial, n);
    let lay = layout(&trial);
    // As `vpop run` hands them over: once per part, shared by the arms, without a copy.
    let subject = lay.subject_columns(cov, Vec::new(), n).unwrap();
    // Plausible metric values; the encoder does not look at them.
    let outs: Vec<ChunkOutput> = trial
        .arms
        .iter()
        .map(|a| {
            let mut o = ChunkOutput::default();
            o.reset(n, a.plan.metrics.len(), 1, 0);
            for (m, col) in o.metrics.iter_mut().enumerate() {
                for (i, v) in col.iter_mut().enumerate() {
                    *v = (i as f64 * 0.37 + m as f64).sin().abs() * 100.0;
                }
            }
            o
        })
        .collect();
    let mut group = c.benchmark_group("host_pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("sample 65536 subjects", |b| {
        let mut chunk = SampledChunk::default();
        let pop = trial.population.as_ref().unwrap();
        b.iter(|| pop.sample(trial.seed, 0, n, &mut chunk))
    });
    group.throughput(Throughput::Elements((n * outs.len()) as u64));
    use vpop::output::Codec;
    type Props<'a> = Box<dyn Fn() -> parquet::file::properties::WriterProperties + 'a>;
    let builders: [(&str, Props); 6] = [
        (
            "zstd (level 1)",
            Box::new(|| {
                vpop::output::writer_properties(&lay.schema, Vec::new(), usize::MAX, Codec::Zstd(1))
            }),
        ),
        (
            "zstd level -1",
            Box::new(|| {
                vpop::output::writer_properties(
                    &lay.schema,
                    Vec::new(),
                    usize::MAX,
                    Codec::Zstd(-1),
                )
            }),
        ),
        (
            "lz4, as vpop writes by default",
            Box::new(|| {
                vpop::output::writer_properties(&lay.schema, Vec::new(), usize::MAX, Codec::Lz4)
            }),
        ),
        (
            "snappy",
            Box::new(|| {
                vpop::output::writer_properties(&lay.schema, Vec::new(), usize::MAX, Codec::Snappy)
            }),
        ),
        (
            "uncompressed",
            Box::new(|| {
                vpop::output::writer_properties(&lay.schema, Vec::new(), usize::MAX, Codec::None)
            }),
        ),
        (
            // What vpop wrote before 2026-11-30 (dictionaries tried on every column).
            "zstd(3) with dictionaries on every column",
            Box::new(|| {
                parquet::file::properties::WriterProperties::builder()
                    .set_writer_version(parquet::file::properties::WriterVersion::PARQUET_2_0)
                    .set_compression(parquet::basic::Compression::ZSTD(
                        parquet::basic::ZstdLevel::try_new(3).unwrap(),
                    ))
                    .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
                    .build()
            }),
        ),
    ];
    for (label, props) in &builders {
        let mut bytes = 0;
        group.bench_function(
            format!("encode + Parquet {label}, 65536 subjects x 2 arms"),
            |b| {
                b.iter(|| {
                    bytes = to_memory(&lay, props(), outs.len(), |a| {
                        lay.encode(a, 0, &subject, &outs[a].view_all(), &[])
                    })
                })
            },
        );
        println!("{label}: {bytes} bytes");
    }
    group.finish();
}

/// Writes the batches of `arms` arms (one row group each) as one Parquet file in memory;
/// its size in bytes.
fn to_memory(
    lay: &vpop::trial::encode::RowLayout,
    props: parquet::file::properties::WriterProperties,
    arms: usize,
    batch: impl Fn(usize) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError>,
) -> usize {
    let mut w =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), lay.schema.clone(), Some(props)).unwrap();
    for a in 0..arms {
        w.write(&batch(a).unwrap()).unwrap();
        w.flush().unwrap();
    }
    w.into_inner().unwrap().len()
}

/// Profiles (`cp_profile`, 49 times every 2 h) of 65 536 subjects × 2 arms: Arrow + Parquet
/// (LZ4) encoding with f32 and with f16 items, as vpop writes them, to memory; for f16 also two
/// other ways to write them.
fn profiles(c: &mut Criterion) {
    use vpop::output::Codec;
    use vpop::trial::encode::{Columns, RowLayout};
    let n = 65_536;
    let n_times = 49;
    let mut group = c.benchmark_group("host_pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * n as u64));
    // Oral-absorption curves with subject-to-subject spread: smooth, distinct values.
    let mut out = ChunkOutput::default();
    out.reset(n, 1, 1, n_times);
    for i in 0..n {
        let u = (i as f64 * 0.618_033_988_75).fract();
        let (ka, k, scale) = (0.8 + u, 0.05 + 0.1 * u, 1.0 + 3.0 * u);
        for j in 0..n_times {
            let t = 2.0 * j as f64;
            out.profiles[0][i * n_times + j] = scale * ((-k * t).exp() - (-ka * t).exp());
        }
    }
    for f16 in [false, true] {
        let lay = RowLayout::new(Columns {
            arms: vec!["a".into(), "b".into()],
            profile_outputs: vec!["cp".into()],
            n_times,
            profile_f16: f16,
            ..Default::default()
        });
        let label = if f16 { "f16" } else { "f32" };
        let variants: Vec<(&str, parquet::file::properties::WriterProperties)> = {
            use parquet::basic::Encoding;
            use parquet::file::properties::EnabledStatistics;
            use parquet::schema::types::ColumnPath;
            let base =
                || vpop::output::writer_properties(&lay.schema, Vec::new(), usize::MAX, Codec::Lz4);
            let path = ColumnPath::from(vec!["cp_profile".into(), "list".into(), "item".into()]);
            let mut v = vec![("as written", base())];
            if f16 {
                v.push((
                    "with statistics (as written before 2026-12-02)",
                    base()
                        .into_builder()
                        .set_column_statistics_enabled(path.clone(), EnabledStatistics::Chunk)
                        .build(),
                ));
                v.push((
                    "byte-stream-split, no dictionary (DuckDB 2.0.1 cannot read it)",
                    base()
                        .into_builder()
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_encoding(path.clone(), Encoding::BYTE_STREAM_SPLIT)
                        .build(),
                ));
            }
            v
        };
        for (v, props) in &variants {
            let mut bytes = 0;
            group.bench_function(format!("profiles {label} {v}"), |b| {
                b.iter(|| {
                    bytes = to_memory(&lay, props.clone(), 2, |a| {
                        lay.encode(a, 0, &[], &out.view_all(), &[])
                    })
                })
            });
            println!("profiles {label} {v}: {bytes} bytes");
        }
    }
    group.finish();
}

fn backends(c: &mut Criterion) {
    let trial = quickstart();
    let n = 4096;
    let (p, _) = params(&trial, n);
    let model = Arc::new(trial.compiled.clone());
    let mut list: Vec<(String, Box<dyn Backend>)> = vec![(
        "cpu".into(),
        Box::new(vpop::backend::cpu::CpuBackend::new(model.clone())),
    )];
    #[cfg(feature = "wgpu")]
    match vpop::backend::wgpu::WgpuBackend::new(model.clone(), vpop::backend::Precision::F32) {
        Ok(b) if b.adapter().device_type != "Cpu" => list.push(("wgpu".into(), Box::new(b))),
        Ok(_) => println!("wgpu: skipped (software adapter only)"),
        Err(e) => println!("wgpu: skipped ({e})"),
    }
    #[cfg(feature = "cuda")]
    for prec in [vpop::backend::Precision::F32, vpop::backend::Precision::F64] {
        match vpop::backend::cuda::CudaBackend::new(model.clone(), prec) {
            Ok(b) => list.push((format!("cuda-{}", prec.name()), Box::new(b))),
            Err(e) => println!("cuda-{}: skipped ({e})", prec.name()),
        }
    }
    let mut group = c.benchmark_group("backend_chunk");
    group.sample_size(10);
    group.throughput(Throughput::Elements((n * trial.arms.len()) as u64));
    for (name, b) in &mut list {
        group.bench_function(
            format!("{name}: 4096 quickstart subjects x 2 arms"),
            |bench| {
                bench.iter(|| {
                    for arm in &trial.arms {
                        let input = ChunkInput {
                            first_subject: 0,
                            n,
                            params: &p,
                            amount_scale: None,
                            occasion_params: &[],
                        };
                        let mut out = ChunkOutput::default();
                        b.run_chunk(&arm.plan, &input, &mut out).unwrap();
                    }
                })
            },
        );
    }
    group.finish();
}

/// A backend that integrates nothing: every subject's metrics are made from its parameters at
/// once, so that a run measures the host pipeline alone (sampling, merging chunks into calls as
/// for a GPU, encoding, Parquet, manifest, summary).
struct NoIntegration;

impl Backend for NoIntegration {
    fn info(&self) -> vpop::backend::BackendInfo {
        vpop::backend::BackendInfo {
            name: "none",
            device: "no integration (host pipeline benchmark)".into(),
            precision: vpop::backend::Precision::F64,
        }
    }

    fn run_chunk(
        &mut self,
        arm: &vpop::backend::ArmPlan,
        input: &ChunkInput<'_>,
        out: &mut ChunkOutput,
    ) -> Result<(), vpop::backend::BackendError> {
        let nt = arm.sample_times.len();
        out.reset(input.n, arm.metrics.len(), 1, nt);
        for (m, col) in out.metrics.iter_mut().enumerate() {
            for (v, p) in col.iter_mut().zip(&input.params[m % input.params.len()]) {
                *v = p * (m + 1) as f64;
            }
        }
        Ok(())
    }

    /// As a GPU backend: consecutive chunks merged into calls of 2^20 subjects.
    fn preferred_batch(&self) -> usize {
        1 << 20
    }

    fn run_records(
        &mut self,
        _programs: &[&vpop::backend::records::Program],
        _solver: &vpop::solver::SolverOptions,
    ) -> Result<Vec<vpop::backend::records::RecordsOutcome>, vpop::backend::BackendError> {
        Err(vpop::backend::BackendError::Failed("no records".into()))
    }
}

/// `vpop run` of the quickstart (1 M subjects × 2 arms, default chunks and codec) with no
/// integration: how many subjects per second the host side sustains on this machine's cores.
fn host_end_to_end(c: &mut Criterion) {
    // As the `vpop` binary does at its start.
    vpop::tune_allocator();
    let mut trial = quickstart();
    let n: u64 = std::env::var("VPOP_BENCH_SUBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    trial.subjects = n;
    let dir = std::env::temp_dir().join(format!("vpop-bench-host-{}", std::process::id()));
    let mut group = c.benchmark_group("host_end_to_end");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n));
    for codec in [
        vpop::output::Codec::Zstd(1),
        vpop::output::Codec::Lz4,
        vpop::output::Codec::None,
    ] {
        trial.codec = codec;
        group.bench_function(
            format!(
                "quickstart {n} subjects x 2 arms, no integration, {}",
                codec.name()
            ),
            |b| {
                b.iter(|| {
                    let opts = vpop::trial::RunOptions {
                        quiet: true,
                        overwrite: true,
                        output_dir: Some(dir.clone()),
                        ..Default::default()
                    };
                    let r = vpop::trial::run::run_trial_on(
                        &trial,
                        &opts,
                        Box::new(NoIntegration),
                        String::new(),
                        std::time::Instant::now(),
                    )
                    .unwrap();
                    assert!(r.complete);
                })
            },
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    group.finish();
}

/// The host's part of handing a CUDA call's 2^20 quickstart subjects to threads in the order of
/// their fitted cost (`vpop::backend::order`): making the order, and packing parameters and
/// taking six f32 metrics in it, against the same in sampling order.
fn subject_order(c: &mut Criterion) {
    use vpop::backend::gpu::{pack_params, take_values, Rows};
    use vpop::backend::order::{Plan, SubjectOrder};
    let trial = quickstart();
    let n = 1 << 20;
    let (p, _) = params(&trial, n);
    let input = ChunkInput {
        first_subject: 0,
        n,
        params: &p,
        amount_scale: None,
        occasion_params: &[],
    };
    let arm = &trial.arms[0].plan;
    // Steps growing with ka (the model's first parameter), as in the quickstart.
    let order = SubjectOrder::new();
    let samples: Vec<(u32, u32)> = (0..4096u32)
        .map(|i| (i, (150.0 * p[0][i as usize].powf(0.7)) as u32))
        .collect();
    order.learn(&arm.name, &input, &samples);
    let Plan::Ordered(ordered) = order.plan(&arm.name, &input, 0..n) else {
        panic!("no order learnt");
    };
    // Three parts, as a call of 2^20 subjects on one device.
    let per = n.div_ceil(3);
    let parts = |by_cost: bool| -> Vec<Rows> {
        (0..3)
            .map(|k| k * per..((k + 1) * per).min(n))
            .map(|r| match by_cost {
                true => Rows::List(ordered[r].to_vec()),
                false => Rows::Range(r),
            })
            .collect()
    };
    let mut group = c.benchmark_group("subject_order");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("order 2^20 subjects by fitted cost", |b| {
        b.iter(|| order.plan(&arm.name, &input, 0..n))
    });
    let nm = arm.metrics.len();
    for by_cost in [false, true] {
        let label = if by_cost { "ordered" } else { "as sampled" };
        let rows = parts(by_cost);
        group.bench_function(format!("pack f32 parameters, {label}"), |b| {
            b.iter(|| {
                rows.iter()
                    .map(|r| pack_params(&input, arm, p.len(), r, &[], |v| v as f32))
                    .collect::<Vec<_>>()
            })
        });
        let metrics: Vec<Vec<f32>> = rows
            .iter()
            .map(|r| (0..nm * r.len()).map(|v| v as f32).collect())
            .collect();
        let mut out = ChunkOutput::default();
        out.reset(n, nm, 1, 0);
        group.bench_function(format!("take six f32 metrics, {label}"), |b| {
            b.iter(|| {
                for (r, m) in rows.iter().zip(&metrics) {
                    take_values(&mut out, m, &[], r, f64::from);
                }
            })
        });
    }
    group.finish();
}

/// The summary's tally of a metric column (its median, 5th and 95th percentiles kept exact
/// while the parts are written): 2^20 log-normal values, as a metric of subjects in random
/// order, in batches of 65 536 as the encoders hand them over.
fn summary_tally(c: &mut Criterion) {
    use rand::{RngExt, SeedableRng};
    use vpop::trial::quantile::StreamedQuantiles;
    let n = 1 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let xs: Vec<f64> = (0..n)
        .map(|_| {
            let z: f64 = rng.sample(rand_distr::StandardNormal);
            (6.0 + 0.4 * z).exp()
        })
        .collect();
    let mut group = c.benchmark_group("summary_tally");
    group.sample_size(20);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("2^20 values of one metric, median, 5th and 95th", |b| {
        b.iter(|| {
            let mut t = StreamedQuantiles::new(&[0.5, 0.05, 0.95]);
            for batch in xs.chunks(65536) {
                t.add(batch);
            }
            t.quantiles().expect("kept values hold the quantiles")
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    host,
    profiles,
    backends,
    host_end_to_end,
    subject_order,
    summary_tally
);
criterion_main!(benches);
