//! A trial spec resolved against its model and population: everything checked, every name
//! turned into an index, every error located in the spec file.

use std::path::{Path, PathBuf};

use crate::backend::{ArmPlan, Precision};
use crate::diag::{Diagnostic, SourceFile};
use crate::dosing::{Administration, Regimen};
use crate::metrics::{resolve_window, MetricKind, MetricRequest, MetricSpec, Window};
use crate::model::{library, CompiledModel, Model};
use crate::population::{library as population_library, Population};
use crate::solver::{check, Events, Method, SolverOptions};

use super::dose_line;
use super::spec::{parse_spec, span_of, TrialSpecFile};

/// A trial whose subjects and doses come from a NONMEM-format dataset.
#[derive(Debug, Clone)]
pub struct DataDesign {
    pub dataset: crate::dosing::nonmem::Dataset,
    /// Dataset columns that set model parameters (record by record).
    pub binding: crate::backend::records::RecordBinding,
    /// Virtual subjects per dataset subject: virtual subject i is dataset subject
    /// `i % n_subjects`, replicate `i / n_subjects`.
    pub replicates: u64,
    /// (population covariate, dataset covariate column): the dataset's value (the subject's
    /// first non-missing one) replaces the population's draw.
    pub given: Vec<(usize, usize)>,
    /// The last record's time.
    pub end: f64,
}

/// The most occasions an arm may have.
pub const MAX_OCCASIONS: usize = 1000;

/// Where each model parameter's per-subject value comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamSource {
    /// A parameter of the population file (index into its parameter columns).
    Population(usize),
    /// The same value for every subject (model default or `[model.params]` override).
    Fixed(f64),
}

/// Which backend the spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Option<BackendChoice> {
        Some(match s.to_ascii_lowercase().as_str() {
            "auto" => BackendChoice::Auto,
            "cpu" => BackendChoice::Cpu,
            "wgpu" => BackendChoice::Wgpu,
            "cuda" => BackendChoice::Cuda,
            _ => return None,
        })
    }
}

/// An arm: its plan (shared by all its subjects) and dose scaling.
#[derive(Debug, Clone)]
pub struct Arm {
    pub plan: ArmPlan,
    /// Per dose line: the population covariate that scales its amount (mg/kg dosing).
    pub amount_per: Option<usize>,
    /// The spec's doses after the end, never given (and not carried in `plan`), of all its
    /// doses: `(after, all)`.
    pub doses_after_end: (u64, u64),
    /// The arm's occasions that start at or after the end, in which no time of the simulation
    /// falls, of all its occasions (the first, at 0, included): `(after, all)`.
    pub occasions_after_end: (usize, usize),
    /// The arm's resets (`resets`, and EVID 3 or 4 in its `records`) at or after the end,
    /// which change nothing the output shows, of all its resets: `(after, all)`.
    pub resets_after_end: (usize, usize),
}

impl Arm {
    /// The per-subject scale of the `per` dose lines' amounts (mg/kg: the subject's weight) for
    /// a chunk whose covariates are `covariates` (`covariates[c][i]`, the population's order);
    /// none where the arm doses no line per unit of a covariate.
    pub fn amount_scale<'a>(&self, covariates: &'a [Vec<f64>]) -> Option<&'a [f64]> {
        self.amount_per.map(|c| covariates[c].as_slice())
    }
}

/// Probability-of-target-attainment definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Index into the arm's metric columns.
    pub metric: usize,
    pub column: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
}

/// A fully checked trial.
pub struct Trial {
    /// Notes, located at the spec's population: parameters the population samples that the
    /// model does not have; covariates named as model parameters that nothing sets.
    pub population_notes: Vec<String>,
    pub spec_path: PathBuf,
    pub spec_text: String,
    pub name: String,
    pub subjects: u64,
    pub seed: u64,
    pub model: Model,
    pub compiled: CompiledModel,
    pub population: Option<Population>,
    pub params: Vec<ParamSource>,
    pub arms: Vec<Arm>,
    pub backend: BackendChoice,
    pub precision: Precision,
    pub chunk_size: Option<usize>,
    pub output_dir: PathBuf,
    pub write_parameters: bool,
    pub write_covariates: bool,
    pub profile_f16: bool,
    /// Compression of the output's Parquet parts.
    pub codec: crate::output::Codec,
    /// Outputs written with residual error: (output index, residual model).
    pub observations: Vec<(usize, crate::population::ResidualModel)>,
    pub target: Option<Target>,
    /// A dataset's subjects and records instead of arms (one placeholder arm in `arms`).
    pub data: Option<DataDesign>,
    /// Each file the trial reads besides its spec, model and population (a `[data]` dataset,
    /// arms' `records`), with its BLAKE3, in the order read: part of the run's identity, so
    /// that a changed file is not taken for the run it was.
    pub input_hashes: Vec<crate::output::InputHash>,
}

/// Errors while loading a trial: located diagnostics, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl From<Diagnostic> for TrialError {
    fn from(d: Diagnostic) -> Self {
        TrialError::Invalid(vec![d])
    }
}

/// A path from the spec: relative to the spec's folder, or to the working directory when that
/// is where it exists (shipped `populations/…` files used from the project root).
fn resolve_path(spec_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let beside = spec_path.parent().unwrap_or(Path::new(".")).join(p);
    if beside.exists() || !p.exists() {
        beside
    } else {
        p.to_path_buf()
    }
}

impl Trial {
    /// Where f32 kernels would hold this trial's times too coarsely: they resolve time t to
    /// about t·6e-8 (half an f32 ulp), and a value changing at rate λ is off by about λ times
    /// that. Said when that resolution at the trial's last time is more than 1e-4 of the
    /// closest two of its times (doses, samples, occasions, records), the accuracy the f32
    /// kernels aim at (docs/gpu.md, "Precision").
    pub fn f32_time_note(&self) -> Option<String> {
        let mut last = 0.0f64;
        let mut closest = f64::INFINITY;
        let mut durations = Vec::new();
        let mut spaced = |times: &mut Vec<f64>| {
            times.retain(|t| t.is_finite());
            times.sort_by(f64::total_cmp);
            times.dedup();
            for w in times.windows(2) {
                closest = closest.min(w[1] - w[0]);
            }
            if let Some(t) = times.last() {
                last = last.max(t.abs());
            }
        };
        match &self.data {
            Some(d) => {
                for s in &d.dataset.subjects {
                    spaced(&mut s.records.iter().map(|r| r.time).collect());
                    // An infusion record's duration at its RATE.
                    durations.extend(
                        s.records
                            .iter()
                            .filter(|r| r.rate > 0.0 && r.amt > 0.0)
                            .map(|r| r.amt / r.rate),
                    );
                }
            }
            None => {
                for a in &self.arms {
                    let p = &a.plan;
                    let mut times = vec![0.0, p.end];
                    times.extend(&p.sample_times);
                    times.extend(&p.occasions);
                    // A window's bounds (a window shorter than what f32 holds is empty).
                    for m in &p.metrics {
                        if let Window::Range(a, b) = m.metric.window {
                            times.extend([a, b.min(p.end)]);
                        }
                    }
                    for l in &p.regimen.lines {
                        times.push(l.start);
                        if l.count > 1 {
                            times.push(l.start + l.interval);
                            times.push(l.start + l.interval * (l.count - 1) as f64);
                        }
                    }
                    spaced(&mut times);
                    // An infusion's duration (where the spec alone gives it) is the spacing
                    // of its start and end.
                    for l in &p.regimen.lines {
                        let duration = match l.administration {
                            Administration::InfusionDuration(d) => d,
                            Administration::InfusionRate(r) if !l.scaled => l.amount / r,
                            _ => f64::INFINITY,
                        };
                        if duration > 0.0 {
                            durations.push(duration);
                        }
                    }
                }
            }
        }
        let closest = durations.into_iter().fold(closest, f64::min);
        let resolution = last * f64::from(f32::EPSILON) / 2.0;
        (closest.is_finite() && resolution > 1e-4 * closest).then(|| {
            format!(
                "f32 kernels resolve time to about {resolution:.1e} at {last}, {:.1e} of the \
                 closest two times of this trial ({closest}): values that change quickly may be \
                 off by more than 1e-4; precision = \"f64\" or backend = \"cpu\" hold time \
                 exactly (docs/gpu.md, \"Precision\")",
                resolution / closest,
                closest = (closest * 1e9).round() / 1e9,
            )
        })
    }

    /// Where f32 kernels would lose digits in a time above a threshold over a window late in
    /// the run (e.g. the last interval of a year): its crossings are placed to f32's time
    /// resolution there, about 6e-8 · b, so its relative error is about 2.4e-7 · b / (b − a)
    /// where the output is above for much of the window, more where it is above for a short
    /// part only (measured: 1.3e-4 over the last interval of a year of doses every 12 h): a
    /// note for the worst metric where that passes 1e-5. Areas and averages over windows are
    /// sums of the areas between stopping points, which keep their digits at any time. `None`
    /// for a `[data]` trial (its metrics are records).
    pub fn f32_time_above_note(&self) -> Option<String> {
        let mut worst: Option<(f64, String, f64, f64)> = None;
        for arm in &self.arms {
            let p = &arm.plan;
            let doses = p.regimen.doses_until(p.end);
            for m in &p.metrics {
                if !matches!(m.metric.kind, MetricKind::TimeAbove(_))
                    || m.metric.window == Window::Whole
                {
                    continue;
                }
                if let Some((a, b)) = resolve_window(m.metric.window, p.end, &doses) {
                    let error = 2.4e-7 * b / (b - a);
                    if worst.as_ref().is_none_or(|w| error > w.0) {
                        worst = Some((error, m.column.clone(), a, b));
                    }
                }
            }
        }
        let (error, column, a, b) = worst.filter(|w| w.0 > 1e-5)?;
        Some(format!(
            "f32 kernels place the threshold crossings of {column} over [{a}, {b}] to f32's \
             time resolution there (about {:.0e}): expect relative errors of about {error:.0e} \
             in it, more where the output is above the threshold for a short part of the \
             window only; precision = \"f64\" or backend = \"cpu\" hold it to the tolerance \
             (docs/gpu.md, \"Precision\")",
            b * f64::from(f32::EPSILON) / 2.0
        ))
    }

    /// Notes on the model (`ModelPrograms::notes`): constants that fold to a value that is not
    /// finite, and where it jumps (docs/model-language.md, "Jumps"): its right-hand side with
    /// the states, its steps in time that are not stopping points, and the areas of outputs
    /// that jump with the states ([`area_jump_note`]), with the model's default parameters.
    pub fn model_notes(&self) -> Vec<String> {
        let defaults = self.model.defaults();
        let programs = &self.compiled.programs;
        let metrics: Vec<&MetricSpec> = self.arms.iter().flat_map(|a| &a.plan.metrics).collect();
        programs
            .notes(&defaults, self.events())
            .into_iter()
            .chain(area_jump_note(programs, &defaults, metrics, self.events()))
            .chain(self.steady_state_time_note())
            .collect()
    }

    /// Notes on an arm's design: metrics that no subject can have, whatever its parameters (a
    /// trough of an arm with one dose, a window the simulation leaves empty), and a fixed step
    /// longer than the time between two of its doses (each such interval is then one step).
    pub fn design_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let (Some(data), Some(pop)) = (&self.data, &self.population) {
            let names = pop.covariate_names();
            for &(c, _) in &data.given {
                let from: Vec<&str> = pop.derived_from(c).iter().map(|&f| names[f]).collect();
                if !from.is_empty() {
                    notes.push(format!(
                        "the dataset gives {}, which the population computes from {}: those \
                         keep their draws, so in the written rows they need not agree with the \
                         dataset's {}",
                        names[c],
                        from.join(", "),
                        names[c]
                    ));
                }
            }
        }
        for a in &self.arms {
            let plan = &a.plan;
            for (m, spec) in plan.metrics.iter().enumerate() {
                if let Some(why) = undefined_by_construction(plan, m) {
                    notes.push(format!(
                        "arm '{}': no subject will have a value of {}: {why}",
                        plan.name, spec.column
                    ));
                }
            }
            let Some(dt) = plan.solver.dt.filter(|_| !plan.solver.method.is_adaptive()) else {
                continue;
            };
            let times = plan.regimen.doses_until(plan.end).times;
            let gap = times
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min);
            if dt > gap {
                notes.push(format!(
                    "arm '{}': the fixed step dt = {dt} is longer than the {gap} between two of \
                     its doses, so each such interval is integrated in one step: take dt a small \
                     fraction of it",
                    plan.name
                ));
            }
        }
        notes
    }

    /// The note for steady states of a model that reads its time `t`: the doses before the
    /// steady state see the times before it, which is the steady state itself only where
    /// the model's change with time repeats every dosing interval (docs/nonmem.md, "Steady
    /// states of models that read their time"). `None` without such a steady state.
    pub fn steady_state_time_note(&self) -> Option<String> {
        if !crate::backend::gpu::reads_time(&self.compiled.programs, None) {
            return None;
        }
        let where_ = match &self.data {
            Some(d) => d
                .dataset
                .subjects
                .iter()
                .flat_map(|s| &s.records)
                .find(|r| r.ss > 0)
                .map(|r| format!("the dataset's SS = {} record at TIME {}", r.ss, r.time))?,
            None => {
                let (arm, line) = self.arms.iter().find_map(|a| {
                    let l = a.plan.regimen.lines.iter().find(|l| l.steady_state)?;
                    Some((a, l))
                })?;
                format!(
                    "arm {:?} starts at steady state (a dose every {})",
                    arm.plan.name, line.interval
                )
            }
        };
        Some(format!(
            "the model reads its time t and {where_}: the earlier doses see the times of the \
             interval before the steady-state dose, repeated, which is the steady state itself \
             where the model's change with time repeats every dosing interval (a 24-hour cycle \
             and a dose every 24 h) and an approximation where it does not (docs/nonmem.md, \
             \"Steady states of models that read their time\")"
        ))
    }

    /// What the integration does at a jump with the states (`[simulation] events`).
    pub fn events(&self) -> Events {
        self.arms
            .first()
            .map_or(Events::Cross, |a| a.plan.solver.events)
    }

    /// Reads, parses and checks a trial spec file.
    pub fn load(path: &Path) -> Result<Trial, TrialError> {
        let text = crate::diag::read_text(path).map_err(|e| match e {
            crate::diag::ReadError::Text(d) => TrialError::from(d),
            crate::diag::ReadError::Io(cause) => TrialError::Io {
                path: path.to_path_buf(),
                cause,
            },
        })?;
        Trial::from_text(path, &text)
    }

    /// Parses and checks a trial spec given as text (`path` locates errors and relative files).
    pub fn from_text(path: &Path, text: &str) -> Result<Trial, TrialError> {
        let src = SourceFile::new(path.display().to_string(), text);
        let spec = parse_spec(&src)?;
        resolve(path, &src, spec)
    }
}

/// The note for area metrics (`auc`, `cavg`) of outputs that jump with the states (an
/// indicator such as `cp > 2`, `floor(cp)`), with the parameters `params`: such an area is
/// integrated across each jump by shortening the steps, with errors above rtol, and f32 GPU
/// kernels can fail as `step_too_small` there. `None` where no such metric is asked for.
pub fn area_jump_note<'a>(
    programs: &crate::model::ModelPrograms,
    params: &[f64],
    metrics: impl IntoIterator<Item = &'a MetricSpec>,
    events: Events,
) -> Option<String> {
    // Located, such a jump ends a step: the area keeps to the tolerance.
    if events == Events::Locate {
        return None;
    }
    let areas: Vec<&MetricSpec> = metrics
        .into_iter()
        .filter(|m| matches!(m.metric.kind, MetricKind::Auc | MetricKind::Cavg))
        .collect();
    if areas.is_empty() {
        return None;
    }
    let jumping = programs.outputs_jumping_with_states(params);
    let mut columns: Vec<&str> = areas
        .iter()
        .filter(|m| jumping.get(m.output) == Some(&true))
        .map(|m| m.column.as_str())
        .collect();
    columns.dedup();
    if columns.is_empty() {
        return None;
    }
    Some(format!(
        "{} {} the area of an output that jumps with the states: the steps are shortened \
         across each jump, with errors above rtol, and f32 GPU kernels can stop there with \
         step_too_small; time_above(level) measures the time an output spends above a level, \
         with each crossing located on the dense output (docs/model-language.md, \"Jumps\")",
        columns.join(", "),
        if columns.len() == 1 { "is" } else { "are" }
    ))
}

fn resolve(path: &Path, src: &SourceFile, spec: TrialSpecFile) -> Result<Trial, TrialError> {
    let mut errors: Vec<Diagnostic> = Vec::new();

    // Model.
    let model_section = spec.model.get_ref();
    let model = match (&model_section.library, &model_section.file) {
        (Some(name), None) => match library::get(name.get_ref()) {
            Some(m) => Model::parse(m.name, m.source).map_err(|e| {
                vec![src.error(
                    span_of(name),
                    format!("built-in model '{}' does not parse: {e}", m.name),
                )]
            }),
            None => {
                let known: Vec<&str> = library::names().collect();
                Err(vec![src.error(
                    span_of(name),
                    format!(
                        "no built-in model '{}'; built-in models: {}{}",
                        name.get_ref(),
                        known.join(", "),
                        crate::diag::did_you_mean(name.get_ref(), known.iter().copied())
                    ),
                )])
            }
        },
        (None, Some(file)) => {
            let p = resolve_path(path, file.get_ref());
            match crate::diag::read_text(&p) {
                Ok(t) => {
                    Model::parse(&p.display().to_string(), &t).map_err(|e| e.diagnostics().to_vec())
                }
                Err(crate::diag::ReadError::Text(d)) => Err(vec![d]),
                Err(crate::diag::ReadError::Io(e)) => Err(vec![src.error(
                    span_of(file),
                    format!("cannot read model file {}: {e}", p.display()),
                )]),
            }
        }
        (Some(name), Some(_)) => Err(vec![src.error(
            span_of(name),
            "[model] takes either `library` (a built-in model) or `file` (a model file), not both",
        )]),
        (None, None) => Err(vec![src.error(
            span_of(&spec.model),
            "[model] needs `library = \"NAME\"` (a built-in model) or `file = \"PATH\"` (a model file)",
        )]),
    };
    let model = match model {
        Ok(m) => m,
        Err(mut e) => {
            errors.append(&mut e);
            return Err(TrialError::Invalid(errors));
        }
    };

    // Population.
    let population = match &spec.population {
        Some(section) => match (&section.get_ref().library, &section.get_ref().file) {
            (Some(name), None) => match population_library::get(name.get_ref()) {
                Some(lp) => match Population::parse(&lp.file_name(), lp.source) {
                    Ok(pop) => Some(pop),
                    Err(e) => {
                        errors.push(src.error(
                            span_of(name),
                            format!("built-in population '{}' does not parse: {e}", lp.name),
                        ));
                        return Err(TrialError::Invalid(errors));
                    }
                },
                None => {
                    let known: Vec<&str> = population_library::names().collect();
                    errors.push(src.error(
                        span_of(name),
                        format!(
                            "no built-in population '{}'; built-in populations: {}{}",
                            name.get_ref(),
                            known.join(", "),
                            crate::diag::did_you_mean(name.get_ref(), known.iter().copied())
                        ),
                    ));
                    return Err(TrialError::Invalid(errors));
                }
            },
            (None, Some(f)) => {
                let file = resolve_path(path, f.get_ref());
                match Population::load(&file) {
                    Ok(pop) => Some(pop),
                    Err(e) => {
                        // A shipped file named from elsewhere than the project's root.
                        let hint = match (
                            file.exists(),
                            population_library::named_by_path(f.get_ref()),
                        ) {
                            (false, Some(lp)) => format!(
                                "; a population of that name is built in: library = \"{}\"",
                                lp.name
                            ),
                            _ => String::new(),
                        };
                        errors.push(src.error(span_of(f), format!("population file: {e}{hint}")));
                        return Err(TrialError::Invalid(errors));
                    }
                }
            }
            (Some(name), Some(_)) => {
                errors.push(src.error(
                    span_of(name),
                    "[population] takes either `library` or `file`, not both",
                ));
                return Err(TrialError::Invalid(errors));
            }
            (None, None) => {
                errors.push(src.error(
                    span_of(section),
                    "[population] needs `library = \"NAME\"` (a built-in population) or `file = \"PATH\"`",
                ));
                return Err(TrialError::Invalid(errors));
            }
        },
        None => None,
    };

    // Parameters: population columns first, then overrides, then model defaults.
    let pop_params: Vec<String> = population
        .as_ref()
        .map(|p| p.parameter_names().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let mut params: Vec<ParamSource> = model
        .params
        .iter()
        .map(|p| ParamSource::Fixed(p.default))
        .collect();
    for (i, p) in model.params.iter().enumerate() {
        if let Some(j) = pop_params.iter().position(|n| *n == p.name) {
            params[i] = ParamSource::Population(j);
        }
    }
    // A population parameter the model does not have would be sampled and never used (a
    // misspelt name, or a population written for another model).
    let unused: Vec<&str> = pop_params
        .iter()
        .filter(|n| model.param_index(n).is_none())
        .map(String::as_str)
        .collect();
    // Not an error: a built-in population written for one model also serves another for its
    // covariates; `vpop check` and `vpop run` say so.
    let mut population_notes = Vec::new();
    let unused_population_parameters = match (unused.is_empty(), &spec.population) {
        (false, Some(section)) => {
            let section = section.get_ref();
            let at = section.library.as_ref().or(section.file.as_ref());
            let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
            let what = if unused.len() == 1 {
                "a parameter"
            } else {
                "parameters"
            };
            let text = format!(
                "the population samples {what} the model '{}' does not have, which no subject \
                 uses: {} (the model's parameters: {}; a population's [parameters] take the \
                 model's names)",
                model.name,
                unused.join(", "),
                names.join(", ")
            );
            Some(
                src.error(at.map(span_of).unwrap_or_default(), text)
                    .to_string(),
            )
        }
        _ => None,
    };
    for (name, value) in &model_section.params {
        match model.param_index(name) {
            Some(_) if !value.get_ref().is_finite() => errors.push(src.error(
                span_of(value),
                format!(
                    "parameter '{name}' must be a finite number, got {}",
                    value.get_ref()
                ),
            )),
            Some(i) if matches!(params[i], ParamSource::Population(_)) => errors.push(src.error(
                span_of(value),
                format!(
                    "parameter '{name}' is set by the population file; remove it here or there"
                ),
            )),
            Some(i) => params[i] = ParamSource::Fixed(*value.get_ref()),
            None => errors.push(src.error(
                span_of(value),
                format!(
                    "the model has no parameter '{name}'{}",
                    crate::diag::did_you_mean(name, model.params.iter().map(|p| p.name.as_str()))
                ),
            )),
        }
    }
    population_notes.extend(unused_population_parameters);
    // A dataset instead of arms.
    let mut input_hashes = Vec::new();
    let data = spec.data.as_ref().and_then(|d| {
        let r = resolve_data(src, path, d, &model, population.as_ref(), &mut input_hashes);
        r.map_err(|mut e| errors.append(&mut e)).ok()
    });
    // A covariate named as a model parameter that neither the population's [parameters] nor
    // the spec sets: covariates reach the model only through [parameters], so every subject
    // takes the model's default (as NONMEM or mrgsolve would not: there a covariate feeds the
    // parameter of its name). Not where a dataset's column of that name sets it.
    if let (Some(pop), Some(section)) = (&population, &spec.population) {
        let shadowed: Vec<String> = pop
            .covariate_names()
            .iter()
            .filter_map(|c| {
                let i = model.param_index(c)?;
                let column = data.as_ref().is_some_and(|d| {
                    d.dataset
                        .covariates
                        .iter()
                        .any(|k| k.eq_ignore_ascii_case(c))
                });
                let set = !matches!(params[i], ParamSource::Fixed(_))
                    || model_section.params.contains_key(*c)
                    || column;
                (!set).then(|| format!("{c} (the model's default {})", model.params[i].default))
            })
            .collect();
        if !shadowed.is_empty() {
            let section = section.get_ref();
            let at = section.library.as_ref().or(section.file.as_ref());
            let first = shadowed[0]
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string();
            let (what, have, them) = if shadowed.len() == 1 {
                ("covariate", "has the name of a model parameter", "it")
            } else {
                ("covariates", "have the names of model parameters", "them")
            };
            let text = format!(
                "the population's {what} {} {have} that its [parameters] do not set: every \
                 subject takes the model's default, not the covariate (covariates reach the \
                 model through [parameters]: set {them} there, e.g. {first} = \"{first}\")",
                shadowed.join(", "),
            );
            population_notes.push(
                src.error(at.map(span_of).unwrap_or_default(), text)
                    .to_string(),
            );
        }
    }

    // Simulation.
    let sim = spec.simulation.get_ref();
    let end = match (&sim.end, &data) {
        (Some(e), _) if spec.data.is_some() => {
            errors.push(src.error(
                span_of(e),
                "a [data] trial runs to its dataset's last record: remove `end`",
            ));
            data.as_ref().map_or(1.0, |d| d.end)
        }
        (Some(e), _) => {
            let end = *e.get_ref();
            if !(end.is_finite() && end > 0.0) {
                errors.push(src.error(span_of(e), "end must be a positive number"));
            }
            end
        }
        (None, Some(d)) => d.end,
        // The dataset failed to load: its errors say why.
        (None, None) if spec.data.is_some() => 1.0,
        (None, None) => {
            errors.push(src.error(
                span_of(&spec.simulation),
                "[simulation] needs `end = …`: the end of the simulation, in the model's time unit",
            ));
            1.0
        }
    };
    let method = Method::parse(sim.method.get_ref()).unwrap_or_else(|e| {
        errors.push(src.error(span_of(&sim.method), e));
        Method::Tsit5
    });
    let (rtol, atol) = (*sim.rtol.get_ref(), *sim.atol.get_ref());
    if let Err(e) = check::rtol(rtol) {
        errors.push(src.error(span_of(&sim.rtol), e));
    }
    if let Err(e) = check::atol(atol) {
        errors.push(src.error(span_of(&sim.atol), e));
    }
    let dt = sim.dt.as_ref().map(|d| *d.get_ref());
    match &sim.dt {
        Some(d) => {
            if let Err(e) = check::dt(*d.get_ref()) {
                errors.push(src.error(span_of(d), e));
            }
        }
        None if method == Method::Rk4 => {
            errors.push(src.error(
                span_of(&sim.method),
                "rk4 is a fixed-step method: set dt = … (> 0)",
            ));
        }
        _ => {}
    }
    if let Some(m) = sim.max_steps.as_ref().filter(|m| *m.get_ref() == 0) {
        errors.push(src.error(span_of(m), "max_steps must be at least 1"));
    }
    let events = match &sim.events {
        None => Events::Cross,
        Some(e) => Events::parse(e.get_ref()).unwrap_or_else(|| {
            errors.push(src.error(span_of(e), crate::cli::simulate::EVENTS_CHOICES));
            Events::Cross
        }),
    };
    let solver = SolverOptions {
        method,
        rtol,
        atol,
        dt,
        events,
        max_steps: sim
            .max_steps
            .as_ref()
            .map_or(SolverOptions::default().max_steps, |m| *m.get_ref()),
        ..Default::default()
    };
    let backend = BackendChoice::parse(sim.backend.get_ref()).unwrap_or_else(|| {
        errors.push(src.error(
            span_of(&sim.backend),
            "backend must be auto, cpu, wgpu or cuda",
        ));
        BackendChoice::Auto
    });
    let precision = match &sim.precision {
        None => Precision::F32,
        Some(p) => Precision::parse(p.get_ref()).unwrap_or_else(|| {
            errors.push(src.error(
                span_of(p),
                format!(
                    "unknown precision '{}': expected \"f32\" or \"f64\"",
                    p.get_ref()
                ),
            ));
            Precision::F32
        }),
    };

    // Metrics × outputs.
    let outputs: Vec<usize> = match &spec.output.outputs {
        None => (0..model.outputs.len()).collect(),
        Some(names) => {
            let mut listed: Vec<usize> = Vec::new();
            for n in names.get_ref() {
                match model.output_named(n.get_ref()) {
                    // Listed twice: every metric's column would be requested twice.
                    Ok(k) if listed.contains(&k) => errors.push(src.error(
                        span_of(n),
                        format!("output '{}' is listed twice", n.get_ref()),
                    )),
                    Ok(k) => listed.push(k),
                    Err(e) => errors.push(src.error(span_of(n), e)),
                }
            }
            listed
        }
    };
    // Each metric of every output above, or of the one output it names (`effect:cmax`).
    let mut metric_specs = Vec::new();
    let mut without_column = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &spec.output.metrics {
        let request = match MetricRequest::parse(m.get_ref()) {
            Ok(r) => r,
            Err(e) => {
                errors.push(src.error(span_of(m), e.to_string()));
                continue;
            }
        };
        // Against an end the spec gives (a missing or bad one has its own error).
        let given = sim.end.is_some() && end.is_finite() && end > 0.0;
        if let Err(e) = request
            .metric
            .within(if given { end } else { f64::INFINITY })
        {
            errors.push(src.error(span_of(m), format!("metric '{}': {e}", m.get_ref())));
            continue;
        }
        let of = match request.outputs(&model, &outputs) {
            Ok(of) => of,
            Err(e) => {
                errors.push(src.error(span_of(m), e));
                continue;
            }
        };
        // A metric left without a column (`outputs = []`) is refused below, not dropped.
        if of.is_empty() {
            without_column.push(m.get_ref().as_str());
            continue;
        }
        for k in of {
            let s = MetricSpec::of_model(k, &model, request.metric);
            if !seen.insert(s.column.clone()) {
                errors.push(src.error(
                    span_of(m),
                    format!("metric column '{}' is requested twice", s.column),
                ));
                continue;
            }
            metric_specs.push(s);
        }
    }

    // Only an empty `outputs` leaves a metric without its output (a name it lists that the
    // model lacks has its own error).
    if let (Some(o), Some(first)) = (&spec.output.outputs, without_column.first()) {
        if o.get_ref().is_empty() {
            let names: Vec<&str> = model.outputs.iter().map(|o| o.name.as_str()).collect();
            errors.push(src.error(
                span_of(o),
                format!(
                    "`outputs = []` leaves {} without a column: the metrics that name no output \
                     apply to those `outputs` lists; list some (the model's: {}), name each \
                     metric's output ('{}:{first}'), or remove `outputs` (every output)",
                    match without_column.len() {
                        1 => format!("metric '{first}'"),
                        _ => format!("metrics '{}'", without_column.join("', '")),
                    },
                    names.join(", "),
                    names[0],
                ),
            ));
        }
    }

    if spec.output.dir.get_ref().trim().is_empty() {
        errors.push(src.error(
            span_of(&spec.output.dir),
            "dir must name the output directory (\".\" for the current one)",
        ));
    }

    // Profiles.
    let mut sample_times = Vec::new();
    let mut profile_f16 = false;
    if let Some(ps) = &spec.output.profile {
        let p = ps.get_ref();
        sample_times = p.times.clone();
        if p.every.is_none() && (p.from.is_some() || p.to.is_some()) {
            errors.push(src.error(
                span_of(ps),
                "[output.profile]: from and to bound a grid of times `every` apart: add every = …",
            ));
        } else if p.every.is_none() && p.times.is_empty() {
            errors.push(src.error(
                span_of(ps),
                "[output.profile]: give its times = […] or a grid every = … (from, to)",
            ));
        }
        if let Some(step) = p.every {
            let (from, to) = (p.from.unwrap_or(0.0), p.to.unwrap_or(end));
            match time_grid(from, to, step, MAX_PROFILE_TIMES, "every") {
                Ok(t) => sample_times.extend(t),
                Err(e) => errors.push(src.error(span_of(ps), format!("[output.profile]: {e}"))),
            }
        }
        if sample_times
            .iter()
            .any(|t| !(t.is_finite() && *t >= 0.0 && *t <= end))
        {
            errors.push(src.error(
                span_of(ps),
                "[output.profile]: sampling times must lie in [0, end]",
            ));
        }
        sample_times.sort_by(f64::total_cmp);
        sample_times.dedup();
        match p
            .precision
            .as_ref()
            .map(|s| (s, s.get_ref().to_ascii_lowercase()))
        {
            None => {}
            Some((_, s)) if s == "f32" => {}
            Some((_, s)) if s == "f16" => profile_f16 = true,
            Some((s, _)) => errors.push(src.error(
                span_of(s),
                format!(
                    "unknown profile precision '{}': expected \"f32\" or \"f16\"",
                    s.get_ref()
                ),
            )),
        }
    }

    let mut codec = match &spec.output.compression {
        None => crate::output::Codec::default(),
        Some(c) => crate::output::Codec::parse(c.get_ref()).unwrap_or_else(|| {
            let names: Vec<String> = crate::output::Codec::ALL
                .iter()
                .map(|c| format!("\"{}\"", c.name()))
                .collect();
            errors.push(src.error(
                span_of(c),
                format!(
                    "unknown compression '{}': expected one of {}",
                    c.get_ref(),
                    names.join(", ")
                ),
            ));
            crate::output::Codec::default()
        }),
    };
    if let Some(level) = &spec.output.compression_level {
        let checked = i32::try_from(*level.get_ref())
            .map_err(|_| format!("zstd level {} is out of range", level.get_ref()))
            .and_then(|l| codec.with_level(l));
        match checked {
            Ok(c) => codec = c,
            Err(e) => errors.push(src.error(span_of(level), e)),
        }
    }

    // Arms.
    let covariates: Vec<String> = population
        .as_ref()
        .map(|p| p.covariate_names().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let mut arms = Vec::new();
    let no_arms = Vec::new();
    let spec_arms = spec.arms.as_ref().map_or(&no_arms, |a| a.get_ref());
    match (&spec.arms, &spec.data) {
        (Some(a), Some(_)) if !a.get_ref().is_empty() => errors.push(src.error(
            span_of(a),
            "a [data] trial takes its subjects and doses from the dataset: remove the [[arm]] \
             sections (or the [data] section)",
        )),
        (_, Some(_)) => {}
        (Some(a), None) if a.get_ref().is_empty() => {
            errors.push(src.error(span_of(a), "a trial needs at least one [[arm]]"))
        }
        (None, None) => errors.push(src.error(
            Default::default(),
            "a trial needs at least one [[arm]] (or a [data] dataset)",
        )),
        _ => {}
    }
    if let (Some(d), Some(dd)) = (&spec.data, &data) {
        let o = &spec.output;
        for (what, bad, at) in [
            (
                "metrics",
                !o.metrics.is_empty(),
                o.metrics.first().map(span_of),
            ),
            (
                "profile",
                !sample_times.is_empty(),
                o.profile.as_ref().map(span_of),
            ),
            ("target", o.target.is_some(), o.target.as_ref().map(span_of)),
        ] {
            if bad {
                errors.push(src.error(
                    at.unwrap_or_else(|| span_of(d)),
                    format!(
                        "[output] {what}: a [data] trial writes the model's outputs on every \
                         record of the dataset, not arm metrics or profiles"
                    ),
                ));
            }
        }
        arms.push(Arm {
            plan: ArmPlan {
                name: dd.dataset.name.clone(),
                regimen: Regimen::default(),
                metrics: Vec::new(),
                end,
                sample_times: Vec::new(),
                solver: solver.clone(),
                occasions: Vec::new(),
            },
            amount_per: None,
            doses_after_end: (0, 0),
            occasions_after_end: (0, 0),
            resets_after_end: (0, 0),
        });
    }
    let mut names = std::collections::HashSet::new();
    for arm in spec_arms {
        let a = arm.get_ref();
        if !names.insert(a.name.get_ref().clone()) {
            errors.push(src.error(
                span_of(&a.name),
                format!("arm name '{}' is used twice", a.name.get_ref()),
            ));
        }
        if a.name.get_ref().trim().is_empty() {
            errors.push(src.error(span_of(&a.name), "an arm needs a name (the arm column)"));
        }
        let mut regimen = Regimen::default();
        let mut amount_per = None;
        let doses: Vec<_> = a.dose.iter().chain(&a.doses).collect();
        if doses.is_empty() && a.records.is_none() {
            errors.push(src.error(
                span_of(arm),
                "an arm needs `dose = {…}`, `doses = [{…}, …]` or `records = \"regimen.csv\"`",
            ));
        }
        if let Some(rec) = &a.records {
            let file = resolve_path(path, rec.get_ref());
            let what = format!("records of arm {}", a.name.get_ref());
            match load_dataset(&file, what, &mut input_hashes)
                .and_then(|ds| super::regimen::record_lines(&model, &ds))
            {
                Ok(lines) => regimen.lines.extend(lines),
                Err(d) => errors.push(src.error(span_of(rec), format!("records: {d}"))),
            }
        }
        for d in doses {
            match dose_line(&model, d.get_ref()) {
                Ok(l) => regimen.lines.push(l),
                Err(e) => errors.push(src.error(e.span(span_of(d)), e.message)),
            }
            if let Some(per) = &d.get_ref().per {
                let categorical = |j: usize| {
                    population
                        .as_ref()
                        .is_some_and(|p| p.covariate_labels(j).is_some())
                };
                match covariates.iter().position(|c| c == per) {
                    Some(j) if categorical(j) => errors.push(src.error(
                        span_of(d),
                        format!(
                            "`per = \"{per}\"`: '{per}' is categorical; a dose scales with a \
                             numeric covariate (mg/kg: per = \"wt\")"
                        ),
                    )),
                    Some(j) if amount_per.is_none_or(|k| k == j) => amount_per = Some(j),
                    Some(_) => errors.push(src.error(
                        span_of(d),
                        "all dose lines of an arm must use the same `per` covariate",
                    )),
                    None => errors.push(src.error(
                        span_of(d),
                        format!("`per = \"{per}\"`: the population has no covariate '{per}'"),
                    )),
                }
            }
        }
        if let Some(resets) = &a.resets {
            let t = resets.get_ref();
            if t.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                errors
                    .push(src.error(span_of(resets), "resets: times after the arm's start (> 0)"));
            } else {
                regimen
                    .lines
                    .extend(t.iter().map(|x| crate::dosing::DoseLine::reset(*x)));
            }
        }
        if regimen.lines.iter().filter(|l| l.steady_state).count() > 1 {
            errors.push(src.error(
                span_of(arm),
                "only one dose line of an arm can be at steady state (`steady_state = true`, or \
                 SS = 1 in its records)",
            ));
        }
        let mut occasions = Vec::new();
        let mut occasions_after_end = (0, 1);
        if let Some(occ) = &a.occasions {
            let t = occ.get_ref();
            let increasing = t.windows(2).all(|w| w[0] < w[1]);
            if t.first() != Some(&0.0) || !increasing || t.iter().any(|x| !x.is_finite()) {
                errors.push(src.error(
                    span_of(occ),
                    "occasions: start times of the occasions, the first 0, strictly increasing",
                ));
            } else if t.len() > MAX_OCCASIONS {
                errors.push(src.error(span_of(occ), format!("occasions: at most {MAX_OCCASIONS}")));
            } else {
                occasions = t[1..].to_vec();
                occasions_after_end = (t.iter().filter(|x| **x >= end).count(), t.len());
            }
        }
        let doses_after_end = regimen.doses_after(end);
        let resets = regimen.reset_times();
        let resets_after_end = (resets.iter().filter(|x| **x >= end).count(), resets.len());
        arms.push(Arm {
            doses_after_end,
            occasions_after_end,
            resets_after_end,
            plan: ArmPlan {
                name: a.name.get_ref().clone(),
                // Doses after the end are never given: not carried (a count of millions
                // would otherwise be every subject's schedule).
                regimen: regimen.until(end),
                metrics: metric_specs.clone(),
                end,
                sample_times: sample_times.clone(),
                solver: solver.clone(),
                occasions,
            },
            amount_per,
        });
    }

    let subjects = match (&spec.trial.subjects, &data) {
        (Some(s), None) => {
            if *s.get_ref() == 0 {
                errors.push(src.error(span_of(s), "subjects must be at least 1"));
            }
            *s.get_ref()
        }
        (Some(s), Some(_)) => {
            errors.push(src.error(
                span_of(s),
                "with [data], the subjects are the dataset's subjects × `replicates`: remove \
                 `subjects`",
            ));
            1
        }
        (None, Some(d)) => (d.dataset.subjects.len() as u64).saturating_mul(d.replicates),
        (None, None) if spec.data.is_some() => 1,
        (None, None) => {
            errors.push(src.error(Default::default(), "[trial] needs `subjects = …` (per arm)"));
            1
        }
    };
    let target = spec.output.target.as_ref().and_then(|t| {
        let tg = t.get_ref();
        let idx = metric_specs.iter().position(|s| s.column == tg.metric);
        match (idx, tg.above, tg.below) {
            (None, _, _) => {
                let cols: Vec<&str> = metric_specs.iter().map(|s| s.column.as_str()).collect();
                errors.push(src.error(
                    span_of(t),
                    format!(
                        "target metric '{}' is not among the metric columns ({}){}",
                        tg.metric,
                        if cols.is_empty() {
                            "[output] metrics gives none".to_string()
                        } else {
                            cols.join(", ")
                        },
                        crate::diag::did_you_mean(&tg.metric, cols.iter().copied())
                    ),
                ));
                None
            }
            (Some(_), None, None) => {
                errors.push(src.error(span_of(t), "a target needs `above = …` and/or `below = …`"));
                None
            }
            (Some(_), above, below) if above.into_iter().chain(below).any(|x| x.is_nan()) => {
                errors.push(src.error(span_of(t), "a target's bounds must be numbers, not nan"));
                None
            }
            (Some(_), Some(lo), Some(hi)) if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) => {
                errors.push(src.error(
                    span_of(t),
                    format!("a target range needs above < below (got above = {lo}, below = {hi}): no value is in it"),
                ));
                None
            }
            (Some(i), above, below) => Some(Target {
                metric: i,
                column: tg.metric.clone(),
                above,
                below,
            }),
        }
    });
    if let Some(c) = sim.chunk_size.as_ref().filter(|c| *c.get_ref() == 0) {
        errors.push(src.error(span_of(c), "chunk_size must be at least 1"));
    }
    // Too many parts for a run, at the spec's chunk size or the largest default one (a run
    // checks again with the chunk it takes).
    let chunk = sim.chunk_size.as_ref().map_or(
        if data.is_some() {
            super::dataset::DEFAULT_CHUNK
        } else {
            super::run::DEFAULT_CHUNK
        },
        |c| *c.get_ref(),
    );
    if let Some(e) = super::run::too_many_parts(subjects, chunk as u64) {
        let at = match (&spec.trial.subjects, &spec.data) {
            (Some(s), _) => span_of(s),
            (None, Some(d)) => d.get_ref().replicates.as_ref().map_or(span_of(d), span_of),
            (None, None) => Default::default(),
        };
        errors.push(src.error(at, e));
    }

    let mut observations = Vec::new();
    if let Some(obs) = spec.output.observations.as_ref().filter(|o| *o.get_ref()) {
        let at = span_of(obs);
        let residual = population
            .as_ref()
            .map(|p| p.residual_models().to_vec())
            .unwrap_or_default();
        if sample_times.is_empty() && spec.data.is_none() {
            errors.push(src.error(at, "[output] observations = true needs sampling times: add profile = { every = … } or { times = […] }"));
        }
        if residual.is_empty() {
            errors.push(src.error(at, "[output] observations = true needs a [residual] error model in the population file"));
        }
        for (name, m) in residual {
            match model.output_index(&name) {
                Some(k) => observations.push((k, m)),
                None => errors.push(src.error(at, format!("the population's residual error names output '{name}', which the model does not have"))),
            }
        }
    }

    // Every column of the output has a name of its own (readers select columns by name): a
    // covariate written beside the parameters may not be named like one, nor like a metric;
    // in a dataset run, no output or parameter like a column of the dataset's rows.
    let columns: Vec<(String, &str)> = if spec.data.is_some() {
        let obs: Vec<usize> = observations.iter().map(|(k, _)| *k).collect();
        super::dataset::data_columns(
            &model,
            population.as_ref(),
            spec.output.covariates,
            spec.output.parameters,
            &obs,
        )
        .into_iter()
        .map(|(name, _, _, what)| (name, what))
        .collect()
    } else {
        let mut columns: Vec<(String, &str)> = vec![
            ("subject_id".into(), "a column of every run"),
            ("arm".into(), "a column of every run"),
            ("status".into(), "a column of every run"),
        ];
        if let (Some(p), true) = (&population, spec.output.covariates) {
            columns.extend(
                p.covariate_names()
                    .iter()
                    .map(|n| (n.to_string(), "a covariate of the population")),
            );
        }
        if spec.output.parameters {
            columns.extend(
                model
                    .params
                    .iter()
                    .map(|p| (p.name.clone(), "a parameter of the model")),
            );
        }
        columns.extend(
            metric_specs
                .iter()
                .map(|m| (m.column.clone(), "a metric column")),
        );
        if !sample_times.is_empty() {
            columns.extend(
                model
                    .outputs
                    .iter()
                    .map(|o| (format!("{}_profile", o.name), "a profile column")),
            );
        }
        columns.extend(observations.iter().map(|(k, _)| {
            (
                format!("{}_obs", model.outputs[*k].name),
                "an observation column",
            )
        }));
        columns
    };
    {
        // Located at the population where a covariate clashes, else at the model.
        let population_at = spec
            .population
            .as_ref()
            .and_then(|s| s.get_ref().library.as_ref().or(s.get_ref().file.as_ref()))
            .map(span_of);
        let model_at = model_section
            .library
            .as_ref()
            .or(model_section.file.as_ref())
            .map(span_of);
        let covariate = "a covariate of the population";
        let parameter = "a parameter of the model";
        let mut seen = std::collections::HashMap::new();
        for (name, what) in &columns {
            if let Some(first) = seen.insert(name.as_str(), *what) {
                let pair = [first, *what];
                let at = if pair.contains(&covariate) {
                    population_at.or(model_at)
                } else {
                    model_at.or(population_at)
                };
                let hint = if pair.contains(&covariate) && pair.contains(&parameter) {
                    ", or write only one of [output] covariates and parameters"
                } else if pair.contains(&parameter) {
                    ", or leave the parameters out ([output] parameters = false)"
                } else {
                    ""
                };
                errors.push(src.error(
                    at.unwrap_or_default(),
                    format!(
                        "the output would have two columns named '{name}' ({first} and {what}): \
                         rename one{hint}"
                    ),
                ));
            }
        }
    }

    let compiled = CompiledModel::new(&model);
    // The model's jumps in time become stopping points of every subject: not more than a
    // run can stop at.
    if let Err(e) = compiled.programs.jump_stops(
        &model.defaults(),
        0.0,
        end,
        crate::model::jumps::Which::Constant,
        crate::backend::Precision::F64,
        &[],
    ) {
        errors.push(src.error(
            span_of(&spec.simulation),
            format!("{e} (docs/model-language.md, \"Jumps\")"),
        ));
    }
    if !errors.is_empty() {
        return Err(TrialError::Invalid(errors));
    }
    Ok(Trial {
        spec_path: path.to_path_buf(),
        spec_text: src.text.clone(),
        name: spec.trial.name,
        subjects,
        seed: spec.trial.seed,
        model,
        compiled,
        population,
        params,
        arms,
        backend,
        precision,
        chunk_size: sim.chunk_size.as_ref().map(|c| *c.get_ref()),
        output_dir: resolve_output_dir(path, spec.output.dir.get_ref()),
        write_parameters: spec.output.parameters,
        write_covariates: spec.output.covariates,
        profile_f16,
        codec,
        observations,
        target,
        data,
        population_notes,
        input_hashes,
    })
}

/// Reads and parses a NONMEM-format file, noting the BLAKE3 of the bytes parsed.
/// Reads a dataset (`what` it is to the trial: `dataset`, `records of arm NAME`) and records
/// its hash.
fn load_dataset(
    file: &Path,
    what: String,
    hashes: &mut Vec<crate::output::InputHash>,
) -> Result<crate::dosing::nonmem::Dataset, crate::diag::Diagnostic> {
    let name = file.display().to_string();
    let text = crate::diag::read_text(file).map_err(|e| match e {
        crate::diag::ReadError::Text(d) => d,
        crate::diag::ReadError::Io(e) => crate::diag::Diagnostic {
            file: name.clone(),
            line: 0,
            col: 0,
            message: format!("cannot read the dataset: {e}"),
        },
    })?;
    hashes.push(crate::output::InputHash::of_text(what, name.clone(), &text));
    crate::dosing::nonmem::Dataset::parse(&name, &text)
}

/// The `[data]` section: the dataset, how its columns bind to the model and the population,
/// and the end of the simulation (the last record's time).
fn resolve_data(
    src: &SourceFile,
    path: &Path,
    d: &toml::Spanned<super::spec::DataSection>,
    model: &Model,
    population: Option<&Population>,
    input_hashes: &mut Vec<crate::output::InputHash>,
) -> Result<DataDesign, Vec<crate::diag::Diagnostic>> {
    let sec = d.get_ref();
    let file = resolve_path(path, sec.file.get_ref());
    let dataset = load_dataset(&file, "dataset".into(), input_hashes)
        .map_err(|e| vec![src.error(span_of(&sec.file), format!("dataset: {e}"))])?;
    let mut errors = Vec::new();
    if dataset.subjects.is_empty() {
        errors.push(src.error(span_of(&sec.file), "the dataset has no subjects"));
    }
    let replicates = sec.replicates.as_ref().map_or(1, |r| *r.get_ref());
    if replicates == 0 {
        if let Some(r) = &sec.replicates {
            errors.push(src.error(span_of(r), "replicates must be at least 1"));
        }
    }
    use crate::dosing::nonmem::Carry;
    let carry = match &sec.covariates {
        None => Carry::default(),
        Some(c) => Carry::parse(c.get_ref()).unwrap_or_else(|| {
            errors.push(src.error(
                span_of(c),
                format!(
                    "covariates = '{}': expected \"nocb\" (next observation carried backward, \
                     NONMEM's rule) or \"locf\" (last observation carried forward)",
                    c.get_ref()
                ),
            ));
            Carry::default()
        }),
    };
    let binding =
        crate::backend::records::RecordBinding::new(model, &dataset.covariates).carrying(carry);
    // Compartments and modelled rates/durations of every dose record, against the model.
    let compiled = CompiledModel::new(model);
    let defaults: Vec<f64> = model.defaults();
    // Each bad record, up to MAX_ERRORS of them.
    let problems: Vec<String> = dataset
        .subjects
        .iter()
        .flat_map(|s| {
            crate::backend::records::check_subject(model, &compiled, &defaults, &binding, s)
        })
        .map(|(line, col, msg)| format!("{}:{line}:{col}: {msg}", dataset.name))
        .collect();
    for p in crate::dosing::nonmem::first_errors(problems) {
        // The last line says how many more (without a location of its own).
        let text = if p.starts_with('…') {
            format!("{}: {p}", dataset.name)
        } else {
            p
        };
        errors.push(src.error(span_of(&sec.file), text));
    }
    // Population covariates the dataset provides: the subject's first non-missing value, then
    // each later one from its record on (or from the record before it: `carry`).
    let mut given = Vec::new();
    if let Some(pop) = population {
        for (c, name) in pop.covariate_names().iter().enumerate() {
            let Some(col) = dataset
                .covariates
                .iter()
                .position(|n| n.eq_ignore_ascii_case(name))
            else {
                continue;
            };
            // Every record's value, not only the first: later ones take over from it.
            if let Some(labels) = pop.covariate_labels(c) {
                let bad = dataset.subjects.iter().flat_map(|s| &s.records).find(|r| {
                    let v = r.covariates[col];
                    !v.is_nan() && (v.fract() != 0.0 || v < 0.0 || v >= labels.len() as f64)
                });
                if let Some(r) = bad {
                    errors.push(src.error(
                        span_of(&sec.file),
                        format!(
                            "{}:{}:{}: column {}: {} is not a code of the population's \
                             categorical covariate '{name}' (its codes: {})",
                            dataset.name,
                            r.line,
                            r.covariate_cols[col],
                            dataset.covariates[col].to_ascii_uppercase(),
                            r.covariates[col],
                            labels
                                .iter()
                                .enumerate()
                                .map(|(k, l)| format!("{k} {l}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            given.push((c, col));
        }
    }
    let end = dataset
        .subjects
        .iter()
        .flat_map(|s| s.records.iter().map(|r| r.time))
        .fold(0.0f64, f64::max);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(DataDesign {
        dataset,
        binding,
        replicates,
        given,
        end: end.max(f64::MIN_POSITIVE),
    })
}

/// Output directories are relative to the working directory (where the user runs vpop).
fn resolve_output_dir(_spec: &Path, dir: &str) -> PathBuf {
    PathBuf::from(dir)
}

/// The most sampling times a trial's profile grid (`every`) may have.
pub const MAX_PROFILE_TIMES: usize = 1_000_000;

/// The times `from`, `from + step`, … up to `to` (the last one within rounding of `to` is
/// `to` itself, never past it), at most `max` of them.
pub fn time_grid(
    from: f64,
    to: f64,
    step: f64,
    max: usize,
    step_name: &str,
) -> Result<Vec<f64>, String> {
    if !(step.is_finite() && step > 0.0) {
        return Err(format!("{step_name} must be > 0, not {step}"));
    }
    if !(from.is_finite() && to.is_finite() && from <= to) {
        return Err(format!(
            "the grid runs from {from} to {to}: from must be ≤ to"
        ));
    }
    // The quotient's round-off (48 / 0.1 = 479.99999999999994) is not a time short of `to`.
    let n = ((to - from) / step * (1.0 + 8.0 * f64::EPSILON)).floor();
    if n + 1.0 > max as f64 {
        return Err(format!(
            "{step_name} = {step} from {from} to {to} gives {} times, more than {max}",
            n + 1.0
        ));
    }
    Ok((0..=n as usize)
        .map(|i| decimal_snap(from + i as f64 * step, step).min(to))
        .collect())
}

/// `t` as the nearest number of 12 significant digits where only round-off separates them
/// (a few units of the last place, and far less than the grid's `step`): a grid of 0.1 h
/// reaches 24 h, not 24.000000000000004, so a grid time meant to fall on a dose time does
/// (and reads the value before the dose).
fn decimal_snap(t: f64, step: f64) -> f64 {
    let snapped: f64 = format!("{t:.11e}").parse().unwrap_or(t);
    let d = (snapped - t).abs();
    if d <= 8.0 * f64::EPSILON * t.abs() && d <= 1e-6 * step {
        snapped
    } else {
        t
    }
}

/// Why metric `m` of `plan` has no value in any run of the arm, whatever the parameters: a
/// trough with fewer than two doses before the end (`ctrough` is the value just before the
/// last of several, or before a steady-state dose given alone), or a window that the
/// simulation leaves empty.
pub(crate) fn undefined_by_construction(
    plan: &crate::backend::ArmPlan,
    m: usize,
) -> Option<String> {
    use crate::metrics::{resolve_window, MetricKind};
    let doses = plan.regimen.doses_until(plan.end);
    let metric = plan.metrics[m].metric;
    match metric.kind {
        MetricKind::Ctrough if doses.trough().is_none() => Some(format!(
            "a trough is the value before the last of several doses (or before a steady-state \
             dose given alone), and the arm gives {} by the end",
            match doses.times.len() {
                0 => "none".to_string(),
                1 => "one".to_string(),
                n => n.to_string(),
            }
        )),
        MetricKind::Auc
        | MetricKind::Cavg
        | MetricKind::Cmax
        | MetricKind::Tmax
        | MetricKind::Cmin
            if resolve_window(metric.window, plan.end, &doses).is_none() =>
        {
            Some("its window holds no time of the simulation".to_string())
        }
        _ => None,
    }
}
