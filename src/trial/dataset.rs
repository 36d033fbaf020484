//! Trials on a NONMEM-format dataset (`[data]`): every dataset subject is simulated
//! `replicates` times, each replicate a virtual subject with its own draws from the population,
//! through the subject's own records with NONMEM's semantics (`crate::backend::records`, the
//! CPU f64 reference). The output has one row per record: the model's outputs after the
//! record, and with `[output] observations = true` the same with the population's residual
//! error.
//!
//! Virtual subject i is dataset subject `i % n` (n subjects in the dataset), replicate
//! `i / n`, so its draws depend only on (seed, i) like every other run, and a run resumes and
//! shards by chunks of virtual subjects as arm trials do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, RecordBatch, StringArray, UInt16Array, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use crate::backend::records::{record_program, Program, RecordsOutcome};
use crate::backend::Backend;
use crate::output::DatasetWriter;
use crate::population::SampledChunk;
use crate::solver::Status;

use super::resolve::{DataDesign, ParamSource, Trial};
use super::run::{
    check_precision, provenance, run_plan, select_backend, ArmSummary, RunOptions, RunPlan,
    RunReport,
};

/// Virtual subjects per part by default: dataset subjects often have tens of records each.
pub(crate) const DEFAULT_CHUNK: usize = 4096;

/// The columns of a dataset run's rows, in order: name, Arrow type, nullable, and what the
/// column is (for the message where two would share a name). The schema is built from it, and
/// trial resolution checks its names before anything runs.
pub(crate) fn data_columns(
    model: &crate::model::Model,
    population: Option<&crate::population::Population>,
    covariates: bool,
    parameters: bool,
    observations: &[usize],
) -> Vec<(String, DataType, bool, &'static str)> {
    let dict = |v: DataType| DataType::Dictionary(Box::new(v), Box::new(DataType::Utf8));
    let fixed = "a column of every dataset run";
    let mut cols: Vec<(String, DataType, bool, &'static str)> = vec![
        ("subject_id".into(), DataType::UInt64, false, fixed),
        ("replicate".into(), DataType::UInt32, false, fixed),
        ("ID".into(), dict(DataType::UInt32), false, fixed),
        ("TIME".into(), DataType::Float64, false, fixed),
        ("EVID".into(), DataType::UInt8, false, fixed),
        ("CMT".into(), DataType::Float64, true, fixed),
        ("AMT".into(), DataType::Float64, true, fixed),
        ("DV".into(), DataType::Float64, true, fixed),
    ];
    for o in &model.outputs {
        cols.push((
            o.name.clone(),
            DataType::Float64,
            true,
            "an output of the model",
        ));
    }
    for k in observations {
        cols.push((
            format!("{}_obs", model.outputs[*k].name),
            DataType::Float64,
            true,
            "an observation column",
        ));
    }
    if let (Some(pop), true) = (population, covariates) {
        for (c, name) in pop.covariate_names().iter().enumerate() {
            let dt = if pop.covariate_labels(c).is_some() {
                dict(DataType::UInt16)
            } else {
                DataType::Float64
            };
            cols.push((name.to_string(), dt, true, "a covariate of the population"));
        }
    }
    if parameters {
        for p in &model.params {
            cols.push((
                p.name.clone(),
                DataType::Float64,
                true,
                "a parameter of the model",
            ));
        }
    }
    cols.push(("status".into(), dict(DataType::UInt8), false, fixed));
    cols
}

/// The Arrow schema of a dataset run's rows.
fn schema(trial: &Trial) -> SchemaRef {
    let observations: Vec<usize> = trial.observations.iter().map(|(k, _)| *k).collect();
    let fields: Vec<Field> = data_columns(
        &trial.model,
        trial.population.as_ref(),
        trial.write_covariates,
        trial.write_parameters,
        &observations,
    )
    .into_iter()
    .map(|(name, dt, nullable, _)| Field::new(name, dt, nullable))
    .collect();
    Arc::new(Schema::new(fields))
}

/// One chunk of virtual subjects: their draws and simulated records.
struct Chunk {
    first: u64,
    covariates: Vec<Vec<f64>>,
    /// `params[p][k]`: model parameter p of the chunk's subject k before any record sets it.
    params: Vec<Vec<f64>>,
    outcomes: Vec<RecordsOutcome>,
}

/// A chunk of virtual subjects as record programs, with their draws.
pub(crate) struct ChunkPrograms {
    pub covariates: Vec<Vec<f64>>,
    /// `params[p][k]`: model parameter p of the chunk's subject k before any record sets it.
    pub params: Vec<Vec<f64>>,
    pub programs: Vec<Program>,
}

/// The chunk's subjects sampled, their programs built and integrated; with the time spent
/// sampling and building (the rest of the call is integration).
fn simulate_chunk(
    trial: &Trial,
    data: &DataDesign,
    first: u64,
    n: usize,
    backend: &mut dyn Backend,
) -> Result<(Chunk, Duration), String> {
    let t0 = Instant::now();
    let c = chunk_programs(trial, data, first, n);
    let built = t0.elapsed();
    let refs: Vec<&Program> = c.programs.iter().collect();
    let outcomes = backend
        .run_records(&refs, &trial.arms[0].plan.solver)
        .map_err(|e| e.to_string())?;
    let chunk = Chunk {
        first,
        covariates: c.covariates,
        params: c.params,
        outcomes,
    };
    Ok((chunk, built))
}

/// Virtual subjects `first..first + n`: their draws, and each one's records as a program
/// (the semantics, resolved on the host; a backend integrates them).
pub(crate) fn chunk_programs(
    trial: &Trial,
    data: &DataDesign,
    first: u64,
    n: usize,
) -> ChunkPrograms {
    let ids = data.dataset.subjects.len() as u64;
    let subject_of = |k: usize| &data.dataset.subjects[((first + k as u64) % ids) as usize];
    let mut scratch = SampledChunk::default();
    if let Some(pop) = &trial.population {
        let given: Vec<(usize, Vec<f64>)> = data
            .given
            .iter()
            .map(|(c, col)| {
                let values = (0..n)
                    .map(|k| {
                        subject_of(k)
                            .records
                            .iter()
                            .map(|r| r.covariates[*col])
                            .find(|v| !v.is_nan())
                            .unwrap_or(f64::NAN)
                    })
                    .collect();
                (*c, values)
            })
            .collect();
        pop.sample_given(trial.seed, first, n, 1, &given, &mut scratch);
    }
    let params: Vec<Vec<f64>> = trial
        .params
        .iter()
        .map(|src| match src {
            ParamSource::Population(j) => scratch.parameters[*j].clone(),
            ParamSource::Fixed(v) => vec![*v; n],
        })
        .collect();
    let time_varying = trial.population.as_ref().filter(|_| !data.given.is_empty());
    // Each virtual subject's records as a program (the semantics, on the host), then the
    // backend integrates them all.
    let programs: Vec<Program> = (0..n)
        .into_par_iter()
        .map(|k| {
            let base: Vec<f64> = params.iter().map(|c| c[k]).collect();
            let Some(pop) = time_varying else {
                return record_program(
                    &trial.compiled,
                    &base,
                    &data.binding,
                    subject_of(k),
                    &mut |_, _| {},
                );
            };
            // Covariates given by the dataset change from record to record (`data.binding`'s
            // carry): derived covariates and the population's parameters follow.
            let mut slots: Vec<f64> = scratch
                .covariates
                .iter()
                .chain(&scratch.etas)
                .map(|c| c[k])
                .collect();
            let mut keep = vec![false; scratch.covariates.len()];
            for (c, _) in &data.given {
                keep[*c] = true;
            }
            let mut scratch = crate::population::Scratch::default();
            let mut pop_params = vec![0.0; pop.parameter_names().len()];
            let mut update = |r: &crate::dosing::nonmem::Record, p: &mut [f64]| {
                let mut changed = false;
                for (c, col) in &data.given {
                    let v = r.covariates[*col];
                    if !v.is_nan() && v != slots[*c] {
                        slots[*c] = v;
                        changed = true;
                    }
                }
                if changed {
                    pop.recompute(&mut slots, &keep, &mut scratch, &mut pop_params);
                    for (i, src) in trial.params.iter().enumerate() {
                        if let ParamSource::Population(j) = src {
                            p[i] = pop_params[*j];
                        }
                    }
                }
            };
            record_program(
                &trial.compiled,
                &base,
                &data.binding,
                subject_of(k),
                &mut update,
            )
        })
        .collect();
    ChunkPrograms {
        covariates: scratch.covariates,
        params,
        programs,
    }
}

/// The rows of a chunk: one per record of every virtual subject.
fn encode(
    trial: &Trial,
    data: &DataDesign,
    schema: &SchemaRef,
    c: &Chunk,
) -> Result<RecordBatch, String> {
    use crate::population::rng::{subject_rng, Stream};
    use rand_distr::{Distribution, StandardNormal};
    let ids = data.dataset.subjects.len() as u64;
    let rows: usize = c
        .outcomes
        .iter()
        .map(|o| o.outputs.first().map_or(0, Vec::len))
        .sum();
    let mut subject_id = Vec::with_capacity(rows);
    let mut replicate = Vec::with_capacity(rows);
    let mut id_key = Vec::with_capacity(rows);
    let (mut time, mut evid, mut cmt, mut amt, mut dv) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let n_out = trial.model.outputs.len();
    let mut outputs = vec![Vec::with_capacity(rows); n_out];
    let mut obs = vec![Vec::with_capacity(rows); trial.observations.len()];
    let mut status = Vec::with_capacity(rows);
    let mut row_subject = Vec::with_capacity(rows);
    for (k, o) in c.outcomes.iter().enumerate() {
        let i = c.first + k as u64;
        let s = (i % ids) as usize;
        let subject = &data.dataset.subjects[s];
        let mut rng = subject_rng(trial.seed, i, Stream::Residual);
        for (j, r) in subject.records.iter().enumerate() {
            subject_id.push(i);
            replicate.push((i / ids) as u32);
            id_key.push(s as u32);
            time.push(r.time);
            evid.push(r.evid as u8);
            cmt.push(r.cmt as f64);
            amt.push(r.amt);
            dv.push(r.dv);
            for (out, col) in outputs.iter_mut().enumerate() {
                col.push(o.outputs[out][j]);
            }
            for (col, (out, model)) in obs.iter_mut().zip(&trial.observations) {
                let (e1, e2): (f64, f64) = (
                    StandardNormal.sample(&mut rng),
                    StandardNormal.sample(&mut rng),
                );
                let f = o.outputs[*out][j];
                // Observations exist on observation records only.
                col.push(if r.evid == crate::dosing::nonmem::Evid::Observation {
                    Some(model.apply(f, e1, e2))
                } else {
                    None
                });
            }
            status.push((o.status as u8).min(Status::NonFinite as u8));
            row_subject.push(k);
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from(subject_id)),
        Arc::new(UInt32Array::from(replicate)),
        Arc::new(
            DictionaryArray::try_new(
                UInt32Array::from(id_key),
                Arc::new(StringArray::from_iter_values(
                    data.dataset.subjects.iter().map(|s| s.id.as_str()),
                )),
            )
            .map_err(|e| e.to_string())?,
        ),
        Arc::new(Float64Array::from(time)),
        Arc::new(UInt8Array::from(evid)),
        Arc::new(Float64Array::from(cmt)),
        Arc::new(Float64Array::from(amt)),
        Arc::new(Float64Array::from(dv)),
    ];
    for col in outputs {
        // Null where the subject failed, as for arm metrics.
        let col: Float64Array = col.iter().map(|v| v.is_finite().then_some(*v)).collect();
        cols.push(Arc::new(col));
    }
    for col in obs {
        cols.push(Arc::new(Float64Array::from(col)));
    }
    if let (Some(pop), true) = (&trial.population, trial.write_covariates) {
        for (ci, values) in c.covariates.iter().enumerate() {
            let per_row = row_subject.iter().map(|k| values[*k]);
            match pop.covariate_labels(ci) {
                Some(labels) => {
                    let keys: UInt16Array = per_row
                        .map(|x| crate::population::category_code(x, labels.len()))
                        .collect();
                    cols.push(Arc::new(
                        DictionaryArray::try_new(
                            keys,
                            Arc::new(StringArray::from(labels.to_vec())),
                        )
                        .map_err(|e| e.to_string())?,
                    ));
                }
                None => cols.push(Arc::new(Float64Array::from_iter_values(per_row))),
            }
        }
    }
    if trial.write_parameters {
        for values in &c.params {
            cols.push(Arc::new(Float64Array::from_iter_values(
                row_subject.iter().map(|k| values[*k]),
            )));
        }
    }
    cols.push(Arc::new(
        DictionaryArray::try_new(
            UInt8Array::from(status),
            Arc::new(StringArray::from(super::encode::STATUS_LABELS.to_vec())),
        )
        .map_err(|e| e.to_string())?,
    ));
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
}

/// Runs a `[data]` trial: the records' semantics are resolved on the host into programs
/// (`crate::backend::records`), which the chosen backend integrates (the CPU f64 reference,
/// or the WGSL and CUDA records kernels).
pub fn run_dataset_trial(trial: &Trial, opts: &RunOptions) -> Result<RunReport, String> {
    let start = Instant::now();
    let data = trial
        .data
        .as_ref()
        .ok_or_else(|| "the trial has no [data] section".to_string())?;
    let (mut backend, reason) = select_backend(trial, opts.backend.unwrap_or(trial.backend))?;
    if opts.subjects.is_some_and(|s| s != trial.subjects) {
        return Err(format!(
            "a [data] trial simulates the dataset's {} subjects × {} replicates = {} subjects; \
             change `replicates` in [data] instead of --subjects",
            data.dataset.subjects.len(),
            data.replicates,
            trial.subjects
        ));
    }
    let info = backend.info();
    check_precision(trial, &info)?;
    let subjects = trial.subjects;
    let RunPlan {
        chunk,
        c0,
        c1,
        dir,
        identity,
    } = run_plan(trial, opts, subjects, DEFAULT_CHUNK)?;
    let schema = schema(trial);
    let mut prov = provenance(trial, &info);
    prov.insert("vpop.dataset".into(), data.dataset.name.clone());
    prov.insert("vpop.replicates".into(), data.replicates.to_string());
    let (mut writer, done) = DatasetWriter::open(
        &dir,
        identity,
        vec![trial.arms[0].plan.name.clone()],
        schema.clone(),
        prov,
        trial.codec,
        opts.overwrite,
    )
    .map_err(|e| e.to_string())?;
    let done_parts: std::collections::HashSet<u64> = done.iter().map(|p| p.part).collect();
    let stop_after = opts.stop_after_parts.unwrap_or(u64::MAX);
    let (mut written, mut ran) = (0u64, 0u64);
    let mut failures = std::collections::BTreeMap::new();
    let (mut integrate, mut sampling, mut encoding) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut complete = true;
    for c in c0..c1 {
        if done_parts.contains(&c) {
            continue;
        }
        if written >= stop_after {
            complete = false;
            break;
        }
        let first = c * chunk;
        let n = (subjects - first).min(chunk) as usize;
        let t0 = Instant::now();
        let (sim, built) = simulate_chunk(trial, data, first, n, backend.as_mut())?;
        integrate += t0.elapsed() - built;
        sampling += built;
        let t1 = Instant::now();
        let batch = encode(trial, data, &schema, &sim)?;
        writer
            .write_part(c, first, n as u64, &[batch])
            .map_err(|e| e.to_string())?;
        encoding += t1.elapsed();
        for o in sim.outcomes.iter().filter(|o| o.status != Status::Ok) {
            *failures.entry(o.status.name().to_string()).or_insert(0u64) += 1;
        }
        ran += n as u64;
        written += 1;
    }
    if complete {
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(RunReport {
        backend: info,
        backend_reason: reason,
        dir,
        // This shard's subjects, not the whole trial's.
        subjects: (c0..c1).map(|c| (subjects - c * chunk).min(chunk)).sum(),
        parts_written: written,
        parts_resumed: done.len() as u64,
        wall: start.elapsed(),
        integrate,
        sampling,
        encoding,
        summary: Duration::ZERO,
        calls: written,
        kernel: Duration::ZERO,
        integrators: 1,
        fewer_integrators: opts
            .integrators
            .filter(|n| *n > 1)
            .map(|_| "a [data] trial's record programs run on one".to_string()),
        startup: Duration::ZERO,
        pipeline: Duration::ZERO,
        arms: vec![ArmSummary {
            name: trial.arms[0].plan.name.clone(),
            subjects: ran,
            failed: failures.values().sum(),
            failures: failures.into_iter().collect(),
            metrics: Vec::new(),
            target_attainment: None,
            target_subjects: 0,
        }],
        complete,
    })
}
