//! `vpop run SPEC` and `vpop check SPEC`.

use std::path::PathBuf;

use anyhow::Context;

use crate::output::Shard;
use crate::trial::resolve::BackendChoice;
use crate::trial::run::{format_summary, run_trial, RunOptions};
use crate::trial::Trial;

pub const RUN_EXAMPLES: &str = "Examples:
  vpop run examples/quickstart.toml
  vpop run examples/quickstart.toml --subjects 1000 --out out/small
  vpop run trial.toml --shard 3/16          # the 3rd of 16 disjoint parts (job arrays)
  vpop run trial.toml --backend cpu --quiet

A killed run restarted with the same command resumes where it stopped.";

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The trial spec (TOML).
    pub spec: PathBuf,
    /// Run only shard k of N (1-based), e.g. 3/16: a deterministic, disjoint range of subjects.
    #[arg(long)]
    pub shard: Option<String>,
    /// Subjects per arm (overrides the spec).
    #[arg(long, value_parser = super::at_least_one::<u64>)]
    pub subjects: Option<u64>,
    /// Output directory (overrides the spec).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// auto, cpu, wgpu or cuda (overrides the spec).
    #[arg(long)]
    pub backend: Option<String>,
    /// Subjects per chunk (memory is bounded by a few chunks).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub chunk_size: Option<usize>,
    /// Host threads driving the backend, each with an instance of its own: while one
    /// thread packs a call and unpacks its results, another's kernels run (default: 2 on
    /// CUDA, 1 elsewhere; the CPU backend always runs one; at most 16).
    #[arg(long, value_parser = super::at_least_one::<usize>)]
    pub integrators: Option<usize>,
    /// Replace the output of a different earlier run in the output directory: every manifest
    /// and part file of vpop's there is removed first, except another shard's of this same run.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar (notes about the trial still print, to stderr).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The file: a trial spec, a population file, a sensitivity spec or a `vpop simulate`
    /// file (TOML, told apart by their top-level keys), a model file (.vpm), or a NONMEM-format
    /// dataset (.csv).
    pub spec: PathBuf,
}

/// The kinds of TOML file vpop reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Trial,
    Population,
    Sensitivity,
    Simulate,
}

impl FileKind {
    const ALL: [FileKind; 4] = [
        FileKind::Trial,
        FileKind::Population,
        FileKind::Sensitivity,
        FileKind::Simulate,
    ];

    /// "a trial spec", for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            FileKind::Trial => "a trial spec",
            FileKind::Population => "a population file",
            FileKind::Sensitivity => "a sensitivity spec",
            FileKind::Simulate => "a `vpop simulate` file",
        }
    }

    /// The command that reads a file of this kind.
    fn command(self) -> &'static str {
        match self {
            FileKind::Trial => "vpop run",
            FileKind::Population => "vpop sample",
            FileKind::Sensitivity => "vpop sensitivity",
            FileKind::Simulate => "vpop simulate",
        }
    }

    /// The top-level keys that make a file of this kind, for messages: those of
    /// [`KIND_KEYS`] (tables and arrays of tables bracketed as written), and `model` and
    /// `[population]`, which tell by their contents.
    fn keys(self) -> String {
        let own = KIND_KEYS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or(&[][..], |(_, keys)| keys);
        let mut v: Vec<String> = match self {
            FileKind::Trial => vec![
                "[model] library/file".into(),
                "[population] library/file".into(),
            ],
            FileKind::Population => vec!["[population] name/description".into()],
            FileKind::Sensitivity => Vec::new(),
            FileKind::Simulate => vec!["model = \"…\"".into()],
        };
        v.extend(own.iter().map(|k| match self {
            FileKind::Simulate => (*k).to_string(),
            _ if ARRAY_KEYS.contains(k) => format!("[[{k}]]"),
            _ => format!("[{k}]"),
        }));
        v.join(", ")
    }
}

/// The top-level keys that tell a file's kind by their name alone.
const KIND_KEYS: [(FileKind, &[&str]); 4] = [
    (
        FileKind::Trial,
        &["trial", "arm", "data", "simulation", "output"],
    ),
    (
        FileKind::Population,
        &["covariates", "parameters", "omega", "residual"],
    ),
    (FileKind::Sensitivity, &["sensitivity", "factor"]),
    (
        FileKind::Simulate,
        &[
            "params", "dose", "doses", "end", "method", "rtol", "atol", "dt", "events", "metrics",
            "times",
        ],
    ),
];

/// Keys of [`KIND_KEYS`] written as arrays of tables.
const ARRAY_KEYS: [&str; 3] = ["arm", "omega", "factor"];

/// What a TOML file is taken for, from its top-level keys, and why.
#[derive(Debug, Clone, PartialEq)]
struct Detection {
    kind: FileKind,
    /// The keys of each kind of file that the file has (kinds without any left out).
    evidence: Vec<(FileKind, Vec<String>)>,
}

impl Detection {
    /// Several kinds' keys, or none: the kind taken is a guess, and its loader's errors are
    /// read with that in mind.
    fn ambiguous(&self) -> bool {
        self.evidence.len() != 1
    }

    /// Why the file was read as [`Detection::kind`], for an error of its loader.
    fn explain(&self) -> String {
        let listed = |keys: &[String]| keys.join(", ");
        match self.evidence.as_slice() {
            [] => format!(
                "note: read as {}, as no top-level key tells which kind of file it is ({}: {}; {}: \
                 {}; {}: {}; {}: {})",
                self.kind.name(),
                FileKind::Trial.name(),
                FileKind::Trial.keys(),
                FileKind::Population.name(),
                FileKind::Population.keys(),
                FileKind::Sensitivity.name(),
                FileKind::Sensitivity.keys(),
                FileKind::Simulate.name(),
                FileKind::Simulate.keys(),
            ),
            ev => {
                let own = ev
                    .iter()
                    .find(|(k, _)| *k == self.kind)
                    .map_or_else(String::new, |(_, keys)| listed(keys));
                let others: Vec<String> = ev
                    .iter()
                    .filter(|(k, _)| *k != self.kind)
                    .map(|(k, keys)| format!("{} of {}", listed(keys), k.name()))
                    .collect();
                format!(
                    "note: read as {} for its top-level keys {own}; it also has {}: a file is one \
                     kind or the other",
                    self.kind.name(),
                    others.join(" and ")
                )
            }
        }
    }
}

/// What a file is, from its top-level keys: each key that only one kind of file has counts for
/// that kind (`[population]` by its own keys: `name` in a population file, `library` or `file`
/// in a trial spec; `model` by its type: a string in a `vpop simulate` file, a table in a trial
/// spec), and the kind with the most wins. A file whose keys do not tell is taken for a trial
/// spec (its loader then reports what is wrong, located), and so is one that does not parse.
fn file_kind(text: &str) -> Detection {
    let Ok(table) = text.parse::<toml::Table>() else {
        // Its syntax error needs no guess explained: as if it had a trial spec's keys.
        return Detection {
            kind: FileKind::Trial,
            evidence: vec![(FileKind::Trial, Vec::new())],
        };
    };
    let mut evidence: Vec<(FileKind, Vec<String>)> = Vec::new();
    let mut count =
        |kind: FileKind, key: String| match evidence.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, keys)) => keys.push(key),
            None => evidence.push((kind, vec![key])),
        };
    for (key, value) in &table {
        let by_name = KIND_KEYS
            .iter()
            .find(|(_, keys)| keys.contains(&key.as_str()))
            .map(|(k, _)| *k);
        let kind = match (key.as_str(), value) {
            _ if by_name.is_some() => by_name,
            ("model", toml::Value::String(_)) => Some(FileKind::Simulate),
            ("model", toml::Value::Table(_)) => Some(FileKind::Trial),
            ("population", toml::Value::Table(t)) => {
                let has = |k: &[&str]| k.iter().any(|k| t.contains_key(*k));
                if has(&["library", "file"]) && !has(&["name", "description"]) {
                    Some(FileKind::Trial)
                } else if has(&["name", "description"]) && !has(&["library", "file"]) {
                    Some(FileKind::Population)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(kind) = kind {
            count(kind, key.clone());
        }
    }
    // The most keys; on a tie, the first in FileKind::ALL.
    let kind = FileKind::ALL
        .into_iter()
        .max_by_key(|k| {
            let n = evidence
                .iter()
                .find(|(e, _)| e == k)
                .map_or(0, |(_, keys)| keys.len());
            (n, std::cmp::Reverse(*k as u8))
        })
        .unwrap_or(FileKind::Trial);
    Detection { kind, evidence }
}

pub fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let path = &args.spec;
    let text = crate::diag::read_text(path).map_err(|e| match e {
        crate::diag::ReadError::Text(d) => anyhow::anyhow!("{d}"),
        crate::diag::ReadError::Io(e) => anyhow::anyhow!("{}: cannot read: {e}", path.display()),
    })?;
    // A model file: parsed and compiled as a trial would.
    if path.extension().is_some_and(|e| e == "vpm") {
        let m = crate::model::Model::parse(&path.display().to_string(), &text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let compiled = crate::model::CompiledModel::new(&m);
        let names = |v: Vec<&str>| v.join(", ");
        println!("{}: ok (a model file)", path.display());
        println!("  model       {}", m.name);
        println!(
            "  states      {}",
            names(m.states.iter().map(|s| s.name.as_str()).collect())
        );
        println!(
            "  parameters  {}",
            names(m.params.iter().map(|p| p.name.as_str()).collect())
        );
        println!(
            "  outputs     {}",
            names(m.outputs.iter().map(|o| o.name.as_str()).collect())
        );
        for w in compiled
            .programs
            .notes(&m.defaults(), crate::solver::Events::Cross)
        {
            println!("  note        {w}");
        }
        return Ok(());
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        return check_dataset(path);
    }
    let detected = file_kind(&text);
    let checked = match detected.kind {
        FileKind::Trial => check_trial(args),
        FileKind::Population => check_population(path),
        FileKind::Sensitivity => check_sensitivity(path),
        FileKind::Simulate => check_simulation(path),
    };
    // A file with keys of several kinds (or of none) was read as one of them on a guess:
    // its errors say which, and why.
    checked.map_err(|e| match detected.ambiguous() {
        true => anyhow::anyhow!("{e:#}\n{}", detected.explain()),
        false => e,
    })
}

/// A NONMEM-format dataset, read as `vpop simulate --data` and a `[data]` trial read it (what
/// depends on a model, its compartments and parameter columns, is checked with one).
fn check_dataset(path: &std::path::Path) -> anyhow::Result<()> {
    use crate::dosing::nonmem::{Dataset, Evid};
    let d = Dataset::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let records = d.subjects.iter().flat_map(|s| &s.records);
    let count = |f: &dyn Fn(&crate::dosing::nonmem::Record) -> bool| {
        records.clone().filter(|r| f(r)).count()
    };
    let doses = count(&|r| matches!(r.evid, Evid::Dose | Evid::ResetDose));
    let observations = count(&|r| matches!(r.evid, Evid::Observation));
    let (lo, hi) = records
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r.time), hi.max(r.time))
        });
    println!("{}: ok (a NONMEM-format dataset)", path.display());
    println!(
        "  subjects    {} ({} records: {doses} doses, {observations} observations, {} other)",
        d.subjects.len(),
        d.rows,
        d.rows - doses - observations
    );
    if lo <= hi {
        println!("  times       {lo} to {hi}");
    }
    println!(
        "  covariates  {}",
        match d.covariates.is_empty() {
            true => "none".to_string(),
            false => d.covariates.join(", "),
        }
    );
    println!(
        "  note        compartments and parameter columns are checked against a model: `vpop \
         simulate MODEL --data {}`, or a trial spec's [data]",
        path.display()
    );
    Ok(())
}

fn check_population(path: &std::path::Path) -> anyhow::Result<()> {
    let p = crate::population::Population::load(path)?;
    println!("{}: ok (a population file)", path.display());
    println!("  population  {}", p.name);
    let listed = |names: Vec<&str>| match names.is_empty() {
        true => "none".to_string(),
        false => names.join(", "),
    };
    println!("  covariates  {}", listed(p.covariate_names()));
    println!("  parameters  {}", listed(p.parameter_names()));
    let residual: Vec<&str> = p
        .residual_models()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    if !residual.is_empty() {
        println!("  residual    {}", residual.join(", "));
    }
    Ok(())
}

fn check_sensitivity(path: &std::path::Path) -> anyhow::Result<()> {
    let a = crate::sensitivity::run::Analysis::load(path).map_err(anyhow::Error::msg)?;
    println!(
        "{}: ok (a sensitivity spec: vpop sensitivity)",
        path.display()
    );
    println!("  trial       {}", a.trial.name);
    println!(
        "  method      {}, {} samples, seed {}",
        a.method.name(),
        a.samples,
        a.seed
    );
    let factors: Vec<&str> = a.factors.iter().map(|f| f.name.as_str()).collect();
    println!("  factors     {}", factors.join(", "));
    let outputs: Vec<String> = a
        .outputs
        .iter()
        .map(|&(arm, m)| {
            let plan = &a.trial.arms[arm].plan;
            format!("{}/{}", plan.name, plan.metrics[m].column)
        })
        .collect();
    println!("  outputs     {}", outputs.join(", "));
    for w in &a.notes {
        println!("  note        {w}");
    }
    println!("  output      {}", a.out.display());
    Ok(())
}

/// `vpop check`'s word on `events` where it is not the default.
fn events_shown(events: crate::solver::Events) -> &'static str {
    match events {
        crate::solver::Events::Cross => "",
        crate::solver::Events::Locate => ", jumps with the states located (events = \"locate\")",
    }
}

fn check_simulation(path: &std::path::Path) -> anyhow::Result<()> {
    let file = path.display().to_string();
    let (sim, notes) = super::simulate::check_file(&file)?;
    let model = super::load_model(&sim.model)?;
    println!("{file}: ok (a one-subject simulation: vpop simulate {file})");
    println!("  model       {}", model.name);
    for w in notes {
        println!("  note        {w}");
    }
    println!(
        "  solver      {} rtol {:e} atol {:e}{}, end {}",
        sim.method,
        sim.rtol,
        sim.atol,
        events_shown(crate::solver::Events::parse(&sim.events).unwrap_or_default()),
        sim.end
    );
    Ok(())
}

fn check_trial(args: &CheckArgs) -> anyhow::Result<()> {
    let trial = Trial::load(&args.spec)?;
    println!("{}: ok", args.spec.display());
    for w in &trial.population_notes {
        println!("  note        {w}");
    }
    println!("  trial       {}", trial.name);
    // "1 covariate", "2 covariates".
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    println!(
        "  model       {} ({}, {}, outputs: {})",
        trial.model.name,
        count(trial.model.states.len(), "state"),
        count(trial.model.params.len(), "parameter"),
        trial
            .model
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in trial.model_notes().into_iter().chain(trial.design_notes()) {
        println!("  note        {w}");
    }
    match &trial.population {
        Some(p) => println!(
            "  population  {} ({}, parameters: {})",
            p.name,
            count(p.covariate_names().len(), "covariate"),
            p.parameter_names().join(", ")
        ),
        None => println!("  population  none: every subject has the model's parameter values"),
    }
    if let Some(d) = &trial.data {
        println!(
            "  dataset     {}: {} subjects × {} replicates = {} virtual subjects, {} records each replicate, seed {}",
            d.dataset.name,
            d.dataset.subjects.len(),
            d.replicates,
            trial.subjects,
            d.dataset.rows,
            trial.seed
        );
        let bound = d.binding.bound(&d.dataset.covariates);
        if !bound.is_empty() {
            println!("  set by data {}", bound.join(", "));
        }
        if let Some(p) = &trial.population {
            let given: Vec<&str> = d
                .given
                .iter()
                .map(|(c, _)| p.covariate_names()[*c])
                .collect();
            if !given.is_empty() {
                println!("  covariates  from the dataset: {}", given.join(", "));
            }
        }
        if !bound.is_empty() || !d.given.is_empty() {
            use crate::dosing::nonmem::Carry;
            println!(
                "  carried     {}: a record's values hold from {}",
                d.binding.carry.name(),
                match d.binding.carry {
                    Carry::Backward => "the record before it",
                    Carry::Forward => "the record on",
                }
            );
        }
        println!(
            "  solver      {} rtol {:e} atol {:e}{}, records to t = {}",
            trial.arms[0].plan.solver.method,
            trial.arms[0].plan.solver.rtol,
            trial.arms[0].plan.solver.atol,
            events_shown(trial.events()),
            d.end
        );
        jumps_line(&trial, d.end);
        f32_time_line(&trial);
        println!("  output      {}", trial.output_dir.display());
        return Ok(());
    }
    println!(
        "  subjects    {} per arm, seed {}",
        trial.subjects, trial.seed
    );
    for a in &trial.arms {
        let lines = &a.plan.regimen.lines;
        let resets = lines
            .iter()
            .filter(|l| l.administration == crate::dosing::Administration::Reset)
            .count();
        let n = lines.len() - resets;
        // Which lines the subject's covariate scales (`per`), where not all or none of them.
        let scaled = lines.iter().filter(|l| l.scaled).count();
        let per = match (a.amount_per, &trial.population) {
            (Some(c), Some(p)) if scaled < n => {
                format!(", {scaled} per {}", p.covariate_names()[c])
            }
            (Some(c), Some(p)) => format!(", all per {}", p.covariate_names()[c]),
            _ => String::new(),
        };
        println!(
            "  arm         {} ({n} dose line{}{per}{}{})",
            a.plan.name,
            if n == 1 { "" } else { "s" },
            match resets {
                0 => String::new(),
                1 => ", 1 reset".to_string(),
                r => format!(", {r} resets"),
            },
            notes_after_end(a)
                .iter()
                .map(|w| format!("; {w}"))
                .collect::<String>()
        );
    }
    let cols: Vec<&str> = trial.arms[0]
        .plan
        .metrics
        .iter()
        .map(|m| m.column.as_str())
        .collect();
    println!(
        "  metrics     {}",
        if cols.is_empty() {
            "none".to_string()
        } else {
            cols.join(", ")
        }
    );
    println!(
        "  solver      {} rtol {:e} atol {:e}{}, end {}",
        trial.arms[0].plan.solver.method,
        trial.arms[0].plan.solver.rtol,
        trial.arms[0].plan.solver.atol,
        events_shown(trial.events()),
        trial.arms[0].plan.end
    );
    jumps_line(
        &trial,
        trial.arms.iter().map(|a| a.plan.end).fold(0.0, f64::max),
    );
    if trial
        .arms
        .iter()
        .any(|a| a.plan.solver.method.is_rosenbrock())
    {
        if let Some(line) = sparse_w_line(&trial.model) {
            println!("  W           {line}");
        }
    }
    f32_time_line(&trial);
    println!("  output      {}", trial.output_dir.display());
    Ok(())
}

/// `vpop check`'s line on where the trial's model steps in time over (0, `end`), if it does.
fn jumps_line(trial: &Trial, end: f64) {
    let programs = &trial.compiled.programs;
    if let Some(line) = programs.jump_summary(&trial.model.defaults(), end) {
        println!("  jumps       {line}");
    }
}

/// `vpop check`'s note where a GPU backend in f32 would hold the trial's times too coarsely.
fn f32_time_line(trial: &crate::trial::Trial) {
    let f32_gpu =
        trial.precision == crate::backend::Precision::F32 && trial.backend != BackendChoice::Cpu;
    if !f32_gpu {
        return;
    }
    for w in [trial.f32_time_note(), trial.f32_time_above_note()]
        .into_iter()
        .flatten()
    {
        println!("  note        on a GPU backend: {w}");
    }
}

/// Where an arm's regimen runs past the end of the simulation: how many of its doses are
/// never given (they count for neither the last interval nor the trough, docs/metrics.md).
pub(crate) fn doses_past_the_end(regimen: &crate::dosing::Regimen, end: f64) -> Option<String> {
    note_doses_after(regimen.doses_after(end), end)
}

/// The note for `(after, all)` doses of a regimen after the end.
pub(crate) fn note_doses_after((past, all): (u64, u64), end: f64) -> Option<String> {
    (past > 0)
        .then(|| format!("{past} of the {all} doses come after the end ({end}) and are not given"))
}

/// What of an arm comes at or after the end of the simulation: doses never given, occasions
/// in which no time falls, resets that change nothing.
pub(crate) fn notes_after_end(a: &crate::trial::resolve::Arm) -> Vec<String> {
    let end = a.plan.end;
    let of = |(after, all): (usize, usize), one: &str, many: &str| match (after, all) {
        (0, _) => None,
        (1, 1) => Some(format!("its {one}")),
        (1, _) => Some(format!("1 of its {all} {many}")),
        (n, m) if n == m => Some(format!("its {m} {many}")),
        (n, m) => Some(format!("{n} of its {m} {many}")),
    };
    let mut notes: Vec<String> = note_doses_after(a.doses_after_end, end)
        .into_iter()
        .collect();
    if let Some(o) = of(a.occasions_after_end, "occasion", "occasions") {
        let starts = if a.occasions_after_end.0 == 1 {
            "starts"
        } else {
            "start"
        };
        notes.push(format!(
            "{o} {starts} at or after the end ({end}): no time of the simulation falls in {}",
            if a.occasions_after_end.0 == 1 {
                "it"
            } else {
                "them"
            }
        ));
    }
    if let Some(r) = of(a.resets_after_end, "reset", "resets") {
        let (come, change) = if a.resets_after_end.0 == 1 {
            ("comes", "changes")
        } else {
            ("come", "change")
        };
        notes.push(format!(
            "{r} {come} at or after the end ({end}) and {change} nothing"
        ));
    }
    notes
}

/// How the Rosenbrock methods factorise W for a model large enough to do it along the
/// structure of its Jacobian (9 states or more, factors at most half full), or None.
fn sparse_w_line(model: &crate::model::Model) -> Option<String> {
    let programs = crate::model::ModelPrograms::new(model);
    let plan = crate::backend::wsparse::plan(&programs)?;
    let n = programs.n_states;
    let nonzero = programs
        .jacobian
        .nonzero_results()
        .iter()
        .filter(|z| **z)
        .count();
    Some(format!(
        "factorised along the Jacobian's structure: {nonzero} of {} entries can be nonzero, \
         {} in the factors",
        n * n,
        plan.nnz()
    ))
}

/// A load error of a file read as `expected`, with what the file is instead where that can be
/// told: a model file (.vpm), a dataset (.csv), or a TOML file whose top-level keys make it
/// another kind (a population file given to `vpop run`).
pub(crate) fn other_kind(
    path: &std::path::Path,
    expected: FileKind,
    e: impl Into<anyhow::Error>,
) -> anyhow::Error {
    let e = e.into();
    let shown = path.display();
    let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
    let note = if ext.eq_ignore_ascii_case("vpm") {
        Some(format!(
            "it is a model file (.vpm), not {}: `vpop simulate {shown}` simulates it, and a \
             trial spec names it in [model] file = \"…\"",
            expected.name()
        ))
    } else if ext.eq_ignore_ascii_case("csv") {
        Some(format!(
            "it is a dataset (CSV), not {}: `vpop simulate MODEL --data {shown}` simulates its \
             records, `vpop check {shown}` checks it, and a trial spec names it in [data] \
             file = \"…\"",
            expected.name()
        ))
    } else {
        match std::fs::read_to_string(path).map(|t| file_kind(&t)) {
            // A file that does not parse has no keys to tell its kind by.
            Ok(d)
                if !d.ambiguous()
                    && d.kind != expected
                    && d.evidence.first().is_some_and(|(_, keys)| !keys.is_empty()) =>
            {
                Some(format!(
                    "its top-level keys ({}) make it {}, not {}: `{} {shown}` reads it",
                    d.evidence[0].1.join(", "),
                    d.kind.name(),
                    expected.name(),
                    d.kind.command(),
                ))
            }
            _ => None,
        }
    };
    match note {
        Some(note) => anyhow::anyhow!("{e:#}\nnote: {note}"),
        None => e,
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let trial = Trial::load(&args.spec).map_err(|e| other_kind(&args.spec, FileKind::Trial, e))?;
    let shard = args
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let backend = args
        .backend
        .as_deref()
        .map(|b| {
            BackendChoice::parse(b).with_context(|| {
                let hint = crate::diag::did_you_mean(b, ["auto", "cpu", "wgpu", "cuda"]);
                format!("--backend {b}: expected auto, cpu, wgpu or cuda{hint}")
            })
        })
        .transpose()?;
    let opts = RunOptions {
        shard,
        quiet: args.quiet,
        overwrite: args.overwrite,
        backend,
        subjects: args.subjects,
        chunk_size: args.chunk_size,
        output_dir: args.out.clone(),
        stop_after_parts: std::env::var("VPOP_STOP_AFTER_PARTS")
            .ok()
            .and_then(|v| v.parse().ok()),
        integrators: args.integrators,
    };
    // Notes about the trial itself print under --quiet too: it silences progress only.
    for w in &trial.population_notes {
        eprintln!("note: {w}");
    }
    for w in trial.model_notes().into_iter().chain(trial.design_notes()) {
        eprintln!("note: {w}");
    }
    for a in &trial.arms {
        for w in notes_after_end(a) {
            eprintln!("note: arm {}: {w}", a.plan.name);
        }
    }
    let report = run_trial(&trial, &opts).map_err(anyhow::Error::msg)?;
    eprintln!(
        "backend: {} on {} ({})",
        report.backend.name, report.backend.device, report.backend_reason
    );
    if report.backend.precision == crate::backend::Precision::F32 {
        for w in [trial.f32_time_note(), trial.f32_time_above_note()]
            .into_iter()
            .flatten()
        {
            eprintln!("note: {w}");
        }
    }
    if let (Some(n), Some(why)) = (args.integrators, &report.fewer_integrators) {
        eprintln!(
            "note: --integrators {n}: {} host thread{} drove the {} backend ({why})",
            report.integrators,
            if report.integrators == 1 { "" } else { "s" },
            report.backend.name,
        );
    }
    if let (Some(shard), 0) = (shard, report.subjects) {
        // More shards than chunks: some have nothing to do, which is not an empty summary.
        println!(
            "{}: shard {} holds no subjects (the run has fewer chunks than shards); nothing to \
             simulate, and its manifest records it complete",
            trial.name,
            shard.label()
        );
        println!("\noutput: {}", report.dir.display());
        return Ok(());
    }
    let secs = report.wall.as_secs_f64();
    // A resumed run did not simulate the resumed parts' subjects: no rate of them.
    let rate = |n: u64, unit: &str| match report.parts_resumed {
        0 => format!(" ({:.0} {unit})", n as f64 / secs.max(1e-9)),
        _ => String::new(),
    };
    if let Some(d) = &trial.data {
        println!(
            "{}: {} subjects ({} dataset subjects × {} replicates{}) in {:.2} s{}; {} written{}",
            trial.name,
            report.subjects,
            d.dataset.subjects.len(),
            d.replicates,
            match shard.filter(|s| *s != Shard::WHOLE) {
                Some(s) => format!(", {} in all; shard {}", trial.subjects, s.label()),
                None => String::new(),
            },
            secs,
            rate(report.subjects, "subjects/s"),
            parts(report.parts_written),
            if report.parts_resumed > 0 {
                format!(", {} resumed", report.parts_resumed)
            } else {
                String::new()
            },
        );
        // A dataset trial's stages run one after the other, chunk by chunk.
        println!(
            "stage times: sampling and record programs {:.2} s, integration {:.2} s, encoding and writing {:.2} s",
            report.sampling.as_secs_f64(),
            report.integrate.as_secs_f64(),
            report.encoding.as_secs_f64()
        );
        if !report.complete {
            println!("stopped before the end; run the same command again to resume");
            return Ok(());
        }
        let failed: u64 = report.arms.iter().map(|a| a.failed).sum();
        let ran: u64 = report.arms.iter().map(|a| a.subjects).sum();
        println!(
            "{failed} of {ran} subjects simulated in this run failed; one row per record, outputs: {}",
            trial
                .model
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("\noutput: {}", report.dir.display());
        return Ok(());
    }
    println!(
        "{}: {} subjects × {} arm{} in {:.2} s{}; {} written{}",
        trial.name,
        report.subjects,
        trial.arms.len(),
        if trial.arms.len() == 1 { "" } else { "s" },
        secs,
        rate(report.subjects * trial.arms.len() as u64, "subject-arms/s"),
        parts(report.parts_written),
        if report.parts_resumed > 0 {
            format!(", {} resumed", report.parts_resumed)
        } else {
            String::new()
        },
    );
    if report.integrators > 1 {
        println!(
            "integration {:.2} s busy over {} host threads, each with its own {} instance (overlapped with each other, and with sampling, encoding and writing)",
            report.integrate.as_secs_f64(),
            report.integrators,
            report.backend.name
        );
    } else {
        println!(
            "integration {:.2} s = {:.0} % of wall time (the rest is sampling, encoding and writing not hidden by the pipeline, and the summary)",
            report.integrate.as_secs_f64(),
            100.0 * report.integrate.as_secs_f64() / secs.max(1e-9)
        );
    }
    if report.calls > 0 {
        let per_call = report.parts_written as f64 / report.calls as f64;
        let kernel = if report.kernel.is_zero() {
            String::new()
        } else {
            format!(
                "; device kernels {:.2} s{}",
                report.kernel.as_secs_f64(),
                if report.integrators > 1 {
                    " (summed over the host threads: their kernels may overlap)"
                } else {
                    ""
                }
            )
        };
        println!(
            "backend calls: {} per arm, {per_call:.1} chunks each on average{kernel}",
            report.calls
        );
    }
    println!(
        "stage busy times: sampling {:.2} s, encoding and writing {:.2} s (summed over workers, overlapped with integration), summary {:.2} s",
        report.sampling.as_secs_f64(),
        report.encoding.as_secs_f64(),
        report.summary.as_secs_f64()
    );
    println!(
        "wall time: start-up {:.2} s (backend and output directory), pipeline {:.2} s, summary and manifest {:.2} s",
        report.startup.as_secs_f64(),
        report.pipeline.as_secs_f64(),
        (report.wall.saturating_sub(report.startup + report.pipeline)).as_secs_f64()
    );
    if let Some(mb) = peak_memory_mb() {
        println!("peak memory {mb:.0} MB");
    }
    if !report.complete {
        println!("stopped before the end; run the same command again to resume");
        return Ok(());
    }
    print!("{}", format_summary(&report, trial.target.as_ref()));
    println!("\noutput: {}", report.dir.display());
    Ok(())
}

/// This process's peak resident memory (Linux: VmHWM), in MB.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// "1 part", "3 parts".
fn parts(n: u64) -> String {
    if n == 1 {
        "1 part".to_string()
    } else {
        format!("{n} parts")
    }
}
