//! Sensitivity analysis: vpop's indices equal SALib's on the same design and outputs, and a
//! whole analysis through the trial pipeline finds the analytic answer of a PK model.

mod common;

use std::path::{Path, PathBuf};

use arrow_array::{Float64Array, RecordBatch};
use vpop::sensitivity::run::Analysis;
use vpop::sensitivity::{
    efast_design, efast_indices, morris_design, morris_indices, sobol_design, sobol_indices, Design,
};

/// Ishigami (a = 7, b = 0.1) on [−π, π]³ from unit-cube coordinates.
fn ishigami(x: &[f64]) -> f64 {
    let p = |u: f64| -std::f64::consts::PI + 2.0 * std::f64::consts::PI * u;
    let (x1, x2, x3) = (p(x[0]), p(x[1]), p(x[2]));
    x1.sin() + 7.0 * x2.sin().powi(2) + 0.1 * x3.powi(4) * x1.sin()
}

fn outputs(d: &Design) -> Vec<f64> {
    (0..d.rows).map(|i| ishigami(d.row(i))).collect()
}

fn write_column(path: &PathBuf, y: &[f64]) {
    let text: Vec<String> = y.iter().map(|v| format!("{v:.17e}")).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `text` written to `dir/name`; its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A sensitivity spec of the `trial.toml` beside it by `method` with `samples`, then `rest`
/// (further settings of `[sensitivity]`, and the factors).
fn spec_text(method: &str, samples: usize, rest: &str) -> String {
    format!(
        "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"{method}\"\nsamples = {samples}\n{rest}"
    )
}

/// [`spec_text`] written to `dir/name` and loaded.
fn spec(
    dir: &Path,
    name: &str,
    method: &str,
    samples: usize,
    rest: &str,
) -> Result<Analysis, String> {
    Analysis::load(&write(dir, name, &spec_text(method, samples, rest)))
}

/// The `out = ...` line of a spec that writes to `dir` (quoted as TOML reads it).
fn out_line(dir: &Path) -> String {
    format!("out = {:?}\n", dir.display().to_string())
}

/// The (only) record batch of a Parquet file.
fn read_batch(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A column of f64 values of a batch.
fn column(batch: &RecordBatch, name: &str) -> Float64Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .clone()
}

fn assert_close(what: &str, ours: &[f64], theirs: &serde_json::Value) {
    let theirs: Vec<f64> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
            "{what}: vpop {a} vs SALib {b}"
        );
    }
}

/// Half-widths from two resamplings of the same kind (2 000 resamples each): within 10 % of
/// each other, where a different scheme is off by factors. (On the Morris grid every
/// elementary effect of Ishigami's x2 has the same size, so its μ* has a half-width of
/// rounding only.)
fn assert_resampled(what: &str, ours: &[f64], theirs: &serde_json::Value) {
    let theirs: Vec<f64> = theirs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    assert_eq!(ours.len(), theirs.len(), "{what}");
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (a - b).abs() <= 0.1 * b.abs() + 1e-12,
            "{what}: vpop {a} vs SALib {b}"
        );
    }
}

#[test]
fn indices_equal_salibs_on_the_same_design_and_outputs() {
    if !common::python_imports("SALib, numpy") {
        println!("SKIPPED: SALib is not installed (pip install SALib)");
        return;
    }
    let dir = temp_dir("salib");
    let (k, p, m) = (3, 4, 4);
    let sd = sobol_design(k, 1024, 7).unwrap();
    let sy = outputs(&sd);
    write_column(&dir.join("sobol_y.csv"), &sy);
    let md = morris_design(k, 50, p, 7).unwrap();
    let my = outputs(&md);
    let rows: Vec<String> = (0..md.rows)
        .map(|i| {
            md.row(i)
                .iter()
                .map(|v| format!("{v:.17e}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(dir.join("morris_x.csv"), rows.join("\n")).unwrap();
    write_column(&dir.join("morris_y.csv"), &my);
    let ed = efast_design(k, 1001, m, 7).unwrap();
    let ey = outputs(&ed);
    write_column(&dir.join("efast_y.csv"), &ey);
    // Enough resamples that two resamplings of the same kind agree on a half-width to a few
    // per cent.
    let resamples = 2000;
    std::fs::write(
        dir.join("meta.json"),
        format!("{{\"k\": {k}, \"levels\": {p}, \"M\": {m}, \"resamples\": {resamples}}}"),
    )
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/salib_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SALib failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pick = |idx: &vpop::sensitivity::Indices, i: usize| -> Vec<f64> {
        idx.values.iter().map(|f| f[i].1).collect()
    };
    let conf = |idx: &vpop::sensitivity::Indices, i: usize| -> Vec<f64> {
        idx.values.iter().map(|f| f[i].2).collect()
    };
    let s = sobol_indices(&sd, &sy, resamples, 0.95, 1).unwrap();
    assert_close("sobol S1", &pick(&s, 0), &json["sobol"]["S1"]);
    assert_close("sobol ST", &pick(&s, 1), &json["sobol"]["ST"]);
    let mo = morris_indices(&md, &my, resamples, 0.95, 1).unwrap();
    assert_close("morris mu", &pick(&mo, 0), &json["morris"]["mu"]);
    assert_close("morris mu_star", &pick(&mo, 1), &json["morris"]["mu_star"]);
    assert_close("morris sigma", &pick(&mo, 2), &json["morris"]["sigma"]);
    let e = efast_indices(&ed, &ey, resamples, 0.95, 1).unwrap();
    assert_close("efast S1", &pick(&e, 0), &json["efast"]["S1"]);
    assert_close("efast ST", &pick(&e, 1), &json["efast"]["ST"]);
    // The confidence half-widths come from the same resampling schemes as SALib's, with other
    // random draws: they agree to the resampling's own noise.
    assert_resampled("sobol S1_conf", &conf(&s, 0), &json["sobol"]["S1_conf"]);
    assert_resampled("sobol ST_conf", &conf(&s, 1), &json["sobol"]["ST_conf"]);
    assert_resampled(
        "morris mu_star_conf",
        &conf(&mo, 1),
        &json["morris"]["mu_star_conf"],
    );
    assert_resampled("efast S1_conf", &conf(&e, 0), &json["efast"]["S1_conf"]);
    assert_resampled("efast ST_conf", &conf(&e, 1), &json["efast"]["ST_conf"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-compartment IV bolus: AUC = dose / CL and C(0) = dose / V exactly, so the AUC depends
/// on CL alone and Cmax on V alone. The whole analysis runs through the trial pipeline (CPU
/// backend) and writes its Parquet files.
#[test]
fn a_pk_analysis_through_the_pipeline_finds_the_analytic_answer() {
    use vpop::sensitivity::run::run;
    let dir = temp_dir("gsa");
    write(
        &dir,
        "trial.toml",
        r#"
[trial]
name = "1-cmt IV bolus"
subjects = 1
seed = 1

[model]
library = "one_cmt_iv"

[[arm]]
name = "bolus"
dose = { amount = 100, into = "central" }

[simulation]
end = 2000
method = "tsit5"
rtol = 1e-8
atol = 1e-10
backend = "cpu"

[output]
dir = "out"
metrics = ["auc", "cmax"]
"#,
    );
    for (method, samples) in [("sobol", 256), ("efast", 257), ("morris", 20)] {
        let rest = format!(
            r#"seed = 3
bootstrap = 50
{out}
[[factor]]
name = "cl"
range = [1.0, 4.0]

[[factor]]
name = "v"
range = [10.0, 50.0]
scale = "log"
"#,
            out = out_line(&dir.join(format!("gsa-{method}")))
        );
        let a = spec(&dir, &format!("{method}.toml"), method, samples, &rest).unwrap();
        let rep = run(&a, None).unwrap();
        assert_eq!(rep.results.len(), 2, "{method}");
        for f in &rep.files {
            assert!(f.exists(), "{}", f.display());
        }
        let auc = &rep.results[0];
        let cmax = &rep.results[1];
        assert_eq!(auc.output, "cp_auc");
        assert_eq!(cmax.output, "cp_cmax");
        match method {
            "morris" => {
                // μ* of the factor that matters is large, of the other zero.
                assert!(auc.indices.values[0][1].1 > 1.0, "{:?}", auc.indices);
                assert!(auc.indices.values[1][1].1 < 1e-3, "{:?}", auc.indices);
                assert!(cmax.indices.values[1][1].1 > 0.1, "{:?}", cmax.indices);
                assert!(cmax.indices.values[0][1].1 < 1e-6, "{:?}", cmax.indices);
            }
            _ => {
                let (s1_cl, st_v) = (auc.indices.values[0][0].1, auc.indices.values[1][1].1);
                assert!((s1_cl - 1.0).abs() < 0.05, "{method} AUC S1(cl) {s1_cl}");
                assert!(st_v.abs() < 0.02, "{method} AUC ST(v) {st_v}");
                let (s1_v, st_cl) = (cmax.indices.values[1][0].1, cmax.indices.values[0][1].1);
                assert!((s1_v - 1.0).abs() < 0.05, "{method} Cmax S1(v) {s1_v}");
                assert!(st_cl.abs() < 0.02, "{method} Cmax ST(cl) {st_cl}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_specs_are_located() {
    let dir = temp_dir("gsa-bad");
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"t\"\nsubjects = 1\nseed = 1\n[model]\nlibrary = \"one_cmt_iv\"\n\
         [[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"central\" }\n[simulation]\nend = 24\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\"]\n",
    );
    let cases = [
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"kk\"\nrange = [1, 2]\n",
            ":6:8: the model has no parameter 'kk'",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobel\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":3:10: unknown method 'sobel'",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nrange = [2, 1]\n",
            ":7:9: range must be [low, high]",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"morris\"\nsamples = 10\n[[factor]]\nname = \"cl\"\nnormal = { mean = 1, sd = 0.1 }\n",
            ":5:1: Morris grids need bounded factors",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"efast\"\nsamples = 20\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":4:11: eFAST needs more than",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\noutputs = [\"cp_cmax\"]\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:12: no metric column 'cp_cmax'",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\narms = [\"b\"]\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:9: the trial has no arm 'b' (its arms: a)",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nrange = [1, 2, 3]\n",
            ":7:9: range must be [low, high]",
        ),
        (
            "[sensitivity]\ntrial = \"nope.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":2:9: trial: no file",
        ),
        // `scale` shapes a range only.
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nnormal = { mean = 5, sd = 1 }\nscale = \"log\"\n",
            ":8:9: factor 'cl': scale applies to a range",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\n[[factor]]\nname = \"cl\"\nlognormal = { median = 5, cv = 0.3 }\nscale = \"linear\"\n",
            ":8:9: factor 'cl': scale applies to a range",
        ),
        // Virtual subjects need the trial's population; a statistic needs virtual subjects.
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\nsubjects = 20\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:12: subjects: the trial has no [population]",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\nstatistic = \"mean\"\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:13: statistic applies where design points run virtual subjects",
        ),
        // An empty list leaves nothing to analyse.
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\noutputs = []\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:11: outputs = []: nothing to analyse",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\narms = []\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:8: arms = []: nothing to analyse",
        ),
        // A design's errors at the key they are about.
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"morris\"\nsamples = 10\nlevels = 3\n[[factor]]\nname = \"cl\"\nrange = [1, 10]\n",
            ":5:10: Morris levels must be even and at least 2, not 3",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"morris\"\nlevels = 4\nsamples = 1\n[[factor]]\nname = \"cl\"\nrange = [1, 10]\n",
            ":5:11: Morris designs take 2 to 65536 trajectories, not 1",
        ),
        // Sizes that would take the machine's memory (a typo of a few zeros) are refused
        // before the design is made.
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"morris\"\nsamples = 1000000000\n[[factor]]\nname = \"cl\"\nrange = [1, 10]\n",
            ":4:11: Morris designs take 2 to 65536 trajectories, not 1000000000",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"efast\"\nsamples = 10000000\n[[factor]]\nname = \"cl\"\nrange = [1, 10]\n",
            ":4:11: eFAST designs take at most 1048576 points per factor, not 10000000",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\nbootstrap = 100000000\n[[factor]]\nname = \"cl\"\nrange = [1, 10]\n",
            ":5:13: bootstrap takes at most 100000 resamples, not 100000000",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"efast\"\ninterference = 6\nsamples = 100\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:11: eFAST needs more than 4·M² = 144 points per factor (M = 6), not 100",
        ),
        (
            "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"efast\"\nsamples = 100\ninterference = 0\n[[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
            ":5:16: interference must be ≥ 1",
        ),
    ];
    // An output directory that is a file (`out` is relative to the working directory).
    let out_file = format!(
        "[sensitivity]\ntrial = \"trial.toml\"\nmethod = \"sobol\"\nsamples = 64\nout = {:?}\n\
         [[factor]]\nname = \"cl\"\nrange = [1, 2]\n",
        dir.join("trial.toml").display().to_string()
    );
    let cases: Vec<(&str, &str)> = cases
        .into_iter()
        .chain([(out_file.as_str(), ":5:7: out: ")])
        .collect();
    for (i, (text, want)) in cases.iter().enumerate() {
        let e = match Analysis::load(&write(&dir, &format!("s{i}.toml"), text)) {
            Ok(_) => panic!("case {i} loaded"),
            Err(e) => e,
        };
        assert!(e.contains(want), "case {i}: {e} does not contain {want}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A typical-value factor acts on the population: it scales every virtual subject's sampled
/// clearance, and the analysed output is the median over the subjects. For a linear model the
/// AUC after one dose is dose/CL, so the median AUC depends on the typical clearance alone.
#[test]
fn typical_value_factors_act_on_the_sampled_population() {
    use vpop::sensitivity::run::run;
    let dir = temp_dir("gsa-pop");
    let pop = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("populations/adult_healthy.toml");
    write(
        &dir,
        "trial.toml",
        &format!(
            r#"
[trial]
name = "population GSA"
subjects = 1
seed = 11

[model]
library = "two_cmt_oral"

[population]
file = "{}"

[[arm]]
name = "single"
dose = {{ amount = 100, into = "depot" }}

[simulation]
end = 400
rtol = 1e-7
atol = 1e-10
backend = "cpu"

[output]
dir = "out"
metrics = ["auc", "cmax"]
"#,
            pop.display()
        ),
    );
    let rest = format!(
        r#"subjects = 40
statistic = "median"
{}
[[factor]]
typical = "cl"
range = [0.5, 2.0]
scale = "log"

[[factor]]
typical = "ka"
range = [0.5, 2.0]
scale = "log"
"#,
        out_line(&dir.join("out"))
    );
    let a = spec(&dir, "gsa.toml", "sobol", 64, &rest).unwrap();
    assert_eq!(a.subjects, 40);
    let rep = run(&a, None).unwrap();
    assert_eq!(rep.evaluations, 64 * 4 * 40);
    let auc = &rep.results[0];
    assert_eq!(auc.output, "cp_auc");
    let (s1_cl, st_ka) = (auc.indices.values[0][0].1, auc.indices.values[1][1].1);
    assert!(
        (s1_cl - 1.0).abs() < 0.05,
        "median AUC S1(typical cl) {s1_cl}"
    );
    assert!(st_ka.abs() < 0.01, "median AUC ST(typical ka) {st_ka}");
    // Cmax depends on absorption too.
    assert!(rep.results[1].indices.values[1][1].1 > 0.01);
    // A typical-value factor needs a population parameter.
    let e = match spec(
        &dir,
        "bad.toml",
        "sobol",
        16,
        "[[factor]]\ntypical = \"nope\"\nrange = [1, 2]\n",
    ) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    assert!(
        e.contains(":6:11: the model has no parameter 'nope'"),
        "{e}"
    );
    // A typical-value factor multiplies: one that can reach 0 or below is refused.
    for (factor, want) in [
        (
            "range = [-0.5, 2]",
            ":7:9: factor 'cl' multiplies the population's value",
        ),
        (
            "range = [0, 2]",
            ":7:9: factor 'cl' multiplies the population's value",
        ),
        (
            "normal = { mean = 1, sd = 0.2 }",
            ":7:10: factor 'cl' multiplies the population's value",
        ),
    ] {
        let rest = format!("[[factor]]\ntypical = \"cl\"\n{factor}\n");
        let e = match spec(&dir, "bad.toml", "sobol", 16, &rest) {
            Ok(_) => panic!("{factor}: loaded"),
            Err(e) => e,
        };
        assert!(e.contains(want), "{factor}: {e}");
    }
    // `subjects` without typical-value factors runs the population too: every design point
    // runs the same virtual subjects (their sampled parameters, the factor's set), where
    // without it a design point is one run at the model's values.
    for (subjects, population) in [
        ("", false),
        ("subjects = 1\n", true),
        ("subjects = 3\n", true),
    ] {
        let rest = format!("{subjects}[[factor]]\nname = \"ka\"\nrange = [0.5, 2]\n");
        let a = spec(&dir, "plain.toml", "sobol", 16, &rest).unwrap();
        assert_eq!(a.population, population, "{subjects}");
        let d = a.design().unwrap();
        let params = a.parameters(&d);
        let names: Vec<&str> = a
            .trial
            .model
            .params
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let (ka, cl) = (
            names.iter().position(|n| *n == "ka").unwrap(),
            names.iter().position(|n| *n == "cl").unwrap(),
        );
        let pop = a.trial.population.as_ref().unwrap();
        let mut chunk = vpop::population::SampledChunk::default();
        pop.sample(11, 0, a.subjects, &mut chunk);
        let sampled_cl = &chunk.parameters[pop
            .parameter_names()
            .iter()
            .position(|n| *n == "cl")
            .unwrap()];
        assert_eq!(params[cl].len(), d.rows * a.subjects);
        for (e, (got_cl, got_ka)) in params[cl].iter().zip(&params[ka]).enumerate() {
            let want_cl = if population {
                sampled_cl[e % a.subjects]
            } else {
                a.trial.model.params[cl].default
            };
            assert_eq!(*got_cl, want_cl, "{subjects}evaluation {e}");
            let want_ka = a.factors[0].transform.apply(d.row(e / a.subjects)[0]);
            assert_eq!(*got_ka, want_ka);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dose per kilogram (`per = "wt"`) scales with each virtual subject's weight in an analysis,
/// as in a trial. One-compartment IV bolus: a subject's AUC to a long end is its dose over its
/// clearance, so each design point's mean AUC over its subjects is mean((5·wt + 100) / CL) for
/// an arm of 5 mg/kg and a fixed 100 mg (the `per` line scaled, the other not), with the
/// subjects' sampled weights and the design point's clearances (a typical-value factor's or a
/// model-level one's). Design points without the population have no weight to scale by: an arm
/// with a `per` line is refused there, at the spec's place.
#[test]
fn doses_per_kilogram_scale_with_each_virtual_subjects_weight() {
    use vpop::sensitivity::run::run;
    let dir = temp_dir("gsa-per");
    write(
        &dir,
        "pop.toml",
        r#"
[population]
name = "by_weight"

[covariates.wt]
dist = "lognormal"
median = 70
cv = 0.25

[parameters]
cl = "5 * (wt / 70)^0.75 * exp(eta_cl)"
v = "50 * wt / 70"

[[omega]]
etas = ["eta_cl"]
variance = [0.09]
"#,
    );
    write(
        &dir,
        "trial.toml",
        r#"
[trial]
name = "mg/kg"
subjects = 1
seed = 5

[model]
library = "one_cmt_iv"

[population]
file = "pop.toml"

[[arm]]
name = "per_kg"
doses = [{ amount = 5, per = "wt", into = "central" },
         { amount = 100, into = "central", start = 24 }]

[[arm]]
name = "fixed"
dose = { amount = 100, into = "central" }

[simulation]
end = 3000
method = "tsit5"
rtol = 1e-9
atol = 1e-12
backend = "cpu"

[output]
dir = "out"
metrics = ["auc"]
"#,
    );
    let factors = [
        "subjects = 7\n[[factor]]\ntypical = \"cl\"\nrange = [0.5, 2.0]\nscale = \"log\"\n\
         [[factor]]\nname = \"v\"\nrange = [30.0, 60.0]\n",
        "subjects = 3\n[[factor]]\nname = \"cl\"\nrange = [2.0, 8.0]\n",
    ];
    for (k, factors) in factors.iter().enumerate() {
        let out = dir.join(format!("out{k}"));
        let rest = format!(
            "statistic = \"mean\"\nbootstrap = 4\n{}{factors}",
            out_line(&out)
        );
        let a = spec(&dir, &format!("gsa{k}.toml"), "sobol", 16, &rest).unwrap();
        let rep = run(&a, None).unwrap();
        assert_eq!(rep.results.len(), 2);
        let d = a.design().unwrap();
        let m = a.subjects;
        let params = a.parameters(&d);
        let cl = a.trial.model.param_index("cl").unwrap();
        let pop = a.trial.population.as_ref().unwrap();
        let mut chunk = vpop::population::SampledChunk::default();
        pop.sample(5, 0, m, &mut chunk);
        let wt = &chunk.covariates[0];
        assert!(wt.iter().all(|w| (20.0..200.0).contains(w)), "{wt:?}");
        let batch = read_batch(&out.join("evaluations.parquet"));
        let (per_kg, fixed) = (
            column(&batch, "per_kg.cp_auc").values().to_vec(),
            column(&batch, "fixed.cp_auc").values().to_vec(),
        );
        assert_eq!(per_kg.len(), d.rows);
        for r in 0..d.rows {
            let mean = |dose: &dyn Fn(f64) -> f64| {
                (0..m)
                    .map(|i| dose(wt[i]) / params[cl][r * m + i])
                    .sum::<f64>()
                    / m as f64
            };
            let (want_per, want_fixed) = (mean(&|w| 5.0 * w + 100.0), mean(&|_| 100.0));
            assert!(
                (per_kg[r] / want_per - 1.0).abs() < 1e-6,
                "spec {k}, row {r}: mean AUC {} vs (5·wt + 100)/CL {want_per}",
                per_kg[r]
            );
            assert!(
                (fixed[r] / want_fixed - 1.0).abs() < 1e-6,
                "spec {k}, row {r}: {} vs {want_fixed}",
                fixed[r]
            );
        }
    }
    // Without `subjects` (one run at the model's values), a `per` line has no weight.
    let factor = "[[factor]]\nname = \"cl\"\nrange = [2.0, 8.0]\n";
    for (arms, want) in [
        (
            "",
            Some(":2:9: arm 'per_kg' doses per unit of covariate 'wt'"),
        ),
        (
            "arms = [\"fixed\", \"per_kg\"]\n",
            Some(":5:18: arm 'per_kg' doses per unit"),
        ),
        ("arms = [\"fixed\"]\n", None),
        // An arm or an output named twice.
        (
            "arms = [\"fixed\", \"fixed\"]\n",
            Some(":5:18: 'fixed' is named twice"),
        ),
        (
            "arms = [\"fixed\"]\noutputs = [\"cp_auc\", \"cp_auc\"]\n",
            Some(":6:22: 'cp_auc' is named twice"),
        ),
    ] {
        match (
            spec(
                &dir,
                "one_run.toml",
                "sobol",
                16,
                &format!("{arms}{factor}"),
            ),
            want,
        ) {
            (Err(e), Some(want)) => {
                assert!(e.contains(want), "{arms}: {e} does not contain {want}");
                assert!(e.contains("subjects = N") || e.contains("twice"), "{e}");
            }
            (Ok(_), None) => {}
            (Err(e), None) => panic!("{arms}: {e}"),
            (Ok(_), Some(_)) => panic!("{arms}: loaded"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn doses_after_the_end_are_noted_as_by_vpop_run() {
    let dir = temp_dir("after-end");
    write(
        &dir,
        "trial.toml",
        r#"
[trial]
name = "past the end"
subjects = 1
seed = 1

[model]
library = "one_cmt_iv"

[[arm]]
name = "daily"
dose = { amount = 100, into = "central", every = 24, count = 10 }

[[arm]]
name = "once"
dose = { amount = 100, into = "central" }

[simulation]
end = 100
backend = "cpu"

[output]
dir = "out"
metrics = ["auc"]
"#,
    );
    for (arms, noted) in [("", true), ("arms = [\"once\"]\n", false)] {
        let rest =
            format!("{arms}out = \"gsa\"\n\n[[factor]]\nname = \"cl\"\nrange = [1.0, 4.0]\n");
        write(&dir, "gsa.toml", &spec_text("morris", 4, &rest));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .args(["sensitivity", "gsa.toml"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let note = "note: arm daily: 5 of the 10 doses come after the end (100) and are not given";
        assert_eq!(err.contains(note), noted, "{arms}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// More factors than a Sobol' design takes: the error is at the first factor beyond them.
#[test]
fn too_many_sobol_factors_are_located_at_the_first_one_beyond() {
    use vpop::sensitivity::SOBOL_MAX_FACTORS;
    let dir = temp_dir("gsa-factors");
    let k = SOBOL_MAX_FACTORS + 2;
    let params: String = (0..k).map(|i| format!("param p{i} = 1\n")).collect();
    write(
        &dir,
        "many.vpm",
        &format!("{params}state a\nd/dt(a) = -p0 * a\noutput c = a\n"),
    );
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"t\"\nsubjects = 1\nseed = 1\n[model]\nfile = \"many.vpm\"\n\
         [[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"a\" }\n[simulation]\nend = 1\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\"]\n",
    );
    let factors: String = (0..k)
        .map(|i| format!("[[factor]]\nname = \"p{i}\"\nrange = [1, 2]\n"))
        .collect();
    let e = match spec(&dir, "gsa.toml", "sobol", 16, &factors) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    // Four lines of header, then three lines per factor: factor 129 (index 128) is on line
    // 5 + 3·128.
    let line = 5 + 3 * SOBOL_MAX_FACTORS;
    assert!(
        e.contains(&format!(
            ":{line}:1: Sobol designs take 1 to {SOBOL_MAX_FACTORS} factors, not {k}"
        )),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-compartment bolus with an Emax effect of its concentration.
const PKPD_MODEL: &str = "param cl = 5\nparam v = 50\nparam e0 = 10\nparam emax = 100\n\
    param ec50 = 1\nparam hill = 2\nstate central\nc = central / v\nd/dt(central) = -cl * c\n\
    output cp = c\noutput effect = e0 + emax * c^hill / (ec50^hill + c^hill)\n";

/// Factors on the effect's parameters of [`PKPD_MODEL`] only: the concentration does not
/// depend on them.
const PKPD_FACTORS: &str = "[[factor]]\nname = \"emax\"\nrange = [50, 150]\n\
    [[factor]]\nname = \"ec50\"\nrange = [0.05, 2]\n\
    [[factor]]\nname = \"hill\"\nrange = [1, 8]\n";

/// The effect's parameters do not act on the concentration, so its AUC is the same at every
/// design point, 100/5·(1 − e^(−0.1·24)), but for the adaptive solver's error: the effect's
/// quadrature steers the step sizes, which move it by about 1e-9 of its value at rtol 1e-6.
/// That spread lies within the solver's tolerance, so it is not shared out among the factors
/// (Sobol and eFAST: NaN; Morris: effects 0), and the table says why; the effect's own AUC,
/// which the factors do move, is analysed.
#[test]
fn an_output_that_varies_only_within_the_solver_tolerance_is_not_apportioned() {
    use vpop::sensitivity::run::{format_report, run};
    use vpop::sensitivity::Variation;
    let dir = temp_dir("gsa-noise");
    write(&dir, "pm.vpm", PKPD_MODEL);
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"pkpd\"\nsubjects = 1\nseed = 1\n[model]\nfile = \"pm.vpm\"\n\
         [[arm]]\nname = \"bolus\"\ndose = { amount = 100, into = \"central\" }\n\
         [simulation]\nend = 24\nmethod = \"tsit5\"\nbackend = \"cpu\"\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\", \"cmax\"]\n",
    );
    let exact = 100.0 / 5.0 * (1.0 - (-0.1f64 * 24.0).exp());
    for (method, samples) in [("sobol", 64), ("efast", 257), ("morris", 10)] {
        let rest = format!(
            "bootstrap = 20\n{}outputs = [\"cp_auc\", \"effect_auc\"]\n{PKPD_FACTORS}",
            out_line(&dir.join(format!("out-{method}")))
        );
        let a = spec(&dir, "gsa.toml", method, samples, &rest).unwrap();
        let rep = run(&a, None).unwrap();
        let (cp, effect) = (&rep.results[0], &rep.results[1]);
        assert_eq!(cp.output, "cp_auc");
        match cp.variation {
            Variation::WithinTolerance {
                relative_sd,
                resolution,
            } => {
                assert_eq!(
                    (resolution.relative, resolution.absolute),
                    (1e-6, 1e-9),
                    "{method}: the trial's default rtol and atol"
                );
                assert!(
                    relative_sd > 1e-12 && relative_sd < 1e-7,
                    "{method}: {relative_sd}"
                );
            }
            other => panic!("{method}: cp_auc {other:?}"),
        }
        for (index, value, _) in cp.indices.values.iter().flatten() {
            if method == "morris" {
                assert_eq!(*value, 0.0, "{method} {index}");
            } else {
                assert!(value.is_nan(), "{method} {index} = {value}");
            }
        }
        assert_eq!(effect.variation, Variation::Resolved, "{method}");
        assert!(effect
            .indices
            .values
            .iter()
            .flatten()
            .any(|(_, v, _)| *v > 0.1));
        let table = format_report(&a, &rep);
        assert!(
            table.contains("cp_auc varies only within the solver's tolerance"),
            "{table}"
        );
        // The runs themselves are right to the tolerance.
        let col = column(&read_batch(&a.out.join("evaluations.parquet")), "cp_auc");
        assert!(col.values().iter().all(|v| (v / exact - 1.0).abs() < 1e-6));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trough is the value before the last of several doses: a single-dose arm has none, so the
/// default outputs leave its `ctrough` out (with a note) and analyse the rest, while an arm of
/// several doses keeps it; naming it for the single-dose arm is an error at the name.
#[test]
fn default_outputs_leave_out_metrics_undefined_by_construction() {
    use vpop::sensitivity::run::run;
    let dir = temp_dir("gsa-trough");
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"t\"\nsubjects = 1\nseed = 1\n[model]\nlibrary = \"one_cmt_iv\"\n\
         [[arm]]\nname = \"single\"\ndose = { amount = 100, into = \"central\" }\n\
         [[arm]]\nname = \"daily\"\ndose = { amount = 100, into = \"central\", every = 24, count = 3 }\n\
         [simulation]\nend = 72\nbackend = \"cpu\"\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\", \"cmax\", \"tmax\", \"ctrough\"]\n",
    );
    let out = out_line(&dir.join("out"));
    let spec = |extra: &str| {
        let rest =
            format!("bootstrap = 4\n{out}{extra}[[factor]]\nname = \"cl\"\nrange = [2, 8]\n");
        spec(&dir, "gsa.toml", "sobol", 16, &rest)
    };
    let a = spec("").unwrap();
    let columns: Vec<String> = a
        .outputs
        .iter()
        .map(|&(arm, m)| {
            let plan = &a.trial.arms[arm].plan;
            format!("{}/{}", plan.name, plan.metrics[m].column)
        })
        .collect();
    assert_eq!(
        columns,
        [
            "single/cp_auc",
            "single/cp_cmax",
            "daily/cp_auc",
            "daily/cp_cmax",
            "daily/cp_ctrough"
        ]
    );
    assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
    assert!(
        a.notes[0].contains("arm 'single'") && a.notes[0].contains("cp_ctrough"),
        "{}",
        a.notes[0]
    );
    let rep = run(&a, None).unwrap();
    assert_eq!(rep.results.len(), 5);
    // Named, the trough of the single dose is an error at its name (line 7, after `out`).
    let e = match spec("outputs = [\"cp_auc\", \"cp_ctrough\"]\n") {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    assert!(
        e.contains(":7:22: 'cp_ctrough' is undefined for every run of arm 'single'"),
        "{e}"
    );
    assert!(e.contains("or the arm out of `arms`"), "{e}");
    let a = spec("arms = [\"daily\"]\noutputs = [\"cp_ctrough\"]\n").unwrap();
    assert_eq!(a.outputs.len(), 1);
    assert!(a.notes.is_empty());
    // Nothing left to analyse at all.
    let e = match spec("arms = [\"single\"]\noutputs = [\"cp_ctrough\"]\n") {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    assert!(e.contains(":8:12: 'cp_ctrough' is undefined"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An analysis that stops because an output has no finite value at some design points still
/// writes every evaluation, so that the failing points can be found, and the error says
/// where. y = a·√p with p from −1 to 1: its AUC to t = 1 is √p·(1 − e⁻¹) where p ≥ 0 and
/// undefined (null) where p < 0. The indices and chart of an earlier analysis in the same
/// directory (p from 0.5 to 1, where every value is defined) do not stay beside the new
/// evaluations, which they were not estimated from.
#[test]
fn an_analysis_stopped_by_undefined_outputs_still_writes_its_evaluations() {
    use arrow_array::Array;
    use vpop::sensitivity::run::run;
    let dir = temp_dir("gsa-nan");
    write(
        &dir,
        "root.vpm",
        "param p = 1\nstate a\nd/dt(a) = -a\noutput y = a * sqrt(p)\n",
    );
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"t\"\nsubjects = 1\nseed = 1\n[model]\nfile = \"root.vpm\"\n\
         [[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"a\" }\n[simulation]\nend = 1\n\
         rtol = 1e-9\natol = 1e-12\nbackend = \"cpu\"\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\"]\n",
    );
    let out = dir.join("out");
    let analysis = |range: &str| {
        let rest = format!(
            "{}[[factor]]\nname = \"p\"\nrange = {range}\n",
            out_line(&out)
        );
        spec(&dir, "gsa.toml", "sobol", 16, &rest).unwrap()
    };
    let (indices, chart) = (out.join("indices.parquet"), out.join("indices.png"));
    let earlier = run(&analysis("[0.5, 1]"), None).unwrap();
    assert!(earlier.files.contains(&indices) && indices.exists());
    assert!(earlier.files.contains(&chart) && chart.exists());
    let e = match run(&analysis("[-1, 1]"), None) {
        Ok(_) => panic!("ran"),
        Err(e) => e,
    };
    let file = out.join("evaluations.parquet");
    assert!(e.contains("a y_auc: "), "{e}");
    assert!(e.contains("model evaluations gave no finite value"), "{e}");
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(!indices.exists(), "the earlier analysis's indices stayed");
    assert!(!chart.exists(), "the earlier analysis's chart stayed");
    let batch = read_batch(&file);
    let (p, y) = (column(&batch, "p"), column(&batch, "y_auc"));
    assert_eq!(p.len(), 16 * 3);
    let mut missing = 0;
    for i in 0..p.len() {
        if p.value(i) < 0.0 {
            assert!(
                y.is_null(i),
                "row {i}: p {} gave {}",
                p.value(i),
                y.value(i)
            );
            missing += 1;
        } else {
            let want = p.value(i).sqrt() * (1.0 - (-1.0f64).exp());
            assert!(
                (y.value(i) - want).abs() < 1e-7,
                "row {i}: {} vs {want}",
                y.value(i)
            );
        }
    }
    assert!(missing > 0);
    assert!(
        e.contains(&format!("{missing} of 48 model evaluations")),
        "{e}"
    );
    // Only this analysis's files are left: the evaluations, and no temporary file.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["evaluations.parquet"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The solver holds each quantity to atol + rtol·|y|, so an output whose values lie near
/// atol is resolved to about atol, not to rtol of its size. `rest` decays from 10 at rate 1
/// to 3.8e-10 at t = 24 (below atol = 1e-9): its minimum moves with the step sizes that the
/// effect's quadrature chooses, by far more than rtol of it but far less than atol, and is
/// not apportioned. `small`, the effect scaled to a magnitude of about 1e-6, responds to the
/// factors with a spread far beyond 10·atol, and is.
#[test]
fn an_output_near_zero_is_measured_against_atol() {
    use vpop::sensitivity::run::{format_report, run};
    use vpop::sensitivity::Variation;
    let dir = temp_dir("gsa-atol");
    write(
        &dir,
        "pm.vpm",
        &format!(
            "{PKPD_MODEL}param kb = 1\nstate b\nd/dt(b) = -kb * b\noutput rest = b\n\
             output small = 1e-9 * (e0 + emax * c^hill / (ec50^hill + c^hill))\n"
        ),
    );
    write(
        &dir,
        "trial.toml",
        "[trial]\nname = \"pkpd\"\nsubjects = 1\nseed = 1\n[model]\nfile = \"pm.vpm\"\n\
         [[arm]]\nname = \"bolus\"\ndoses = [{ amount = 100, into = \"central\" }, \
         { amount = 10, into = \"b\" }]\n\
         [simulation]\nend = 24\nmethod = \"tsit5\"\nrtol = 1e-6\natol = 1e-9\nbackend = \"cpu\"\n\
         [output]\ndir = \"out\"\nmetrics = [\"effect:auc\", \"small:auc\", \"rest:cmin\"]\n",
    );
    let rest = format!(
        "bootstrap = 20\n{}outputs = [\"effect_auc\", \"small_auc\", \"rest_cmin\"]\n\
         {PKPD_FACTORS}",
        out_line(&dir.join("out"))
    );
    let a = spec(&dir, "gsa.toml", "sobol", 64, &rest).unwrap();
    let rep = run(&a, None).unwrap();
    let by_name = |name: &str| rep.results.iter().find(|r| r.output == name).unwrap();
    let (effect, small, least) = (
        by_name("effect_auc"),
        by_name("small_auc"),
        by_name("rest_cmin"),
    );
    // The minimum is the value at the end, off the exact 10·e^(−24) by the solver's error.
    let y = column(&read_batch(&a.out.join("evaluations.parquet")), "rest_cmin");
    let exact = 10.0 * (-24.0f64).exp();
    let n = y.len() as f64;
    let mean = y.values().iter().sum::<f64>() / n;
    let sd = (y.values().iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        y.values().iter().all(|v| (v - exact).abs() < 1e-9),
        "{:?}",
        y.values()
    );
    assert!(
        sd > 10.0 * 1e-6 * mean && sd < 1e-9,
        "rest_cmin must spread beyond 10·rtol of its values and within atol: sd {sd:e}, mean {mean:e}"
    );
    assert!(
        matches!(least.variation, Variation::WithinTolerance { .. }),
        "{:?}",
        least.variation
    );
    for (index, value, _) in least.indices.values.iter().flatten() {
        assert!(value.is_nan(), "rest_cmin {index} = {value}");
    }
    let table = format_report(&a, &rep);
    assert!(
        table.contains("rest_cmin varies only within the solver's tolerance"),
        "{table}"
    );
    for r in [effect, small] {
        assert_eq!(r.variation, Variation::Resolved, "{}", r.output);
        assert!(
            r.indices.values.iter().flatten().any(|(_, v, _)| *v > 0.1),
            "{}: {:?}",
            r.output,
            r.indices
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// eFAST needs a distinct complementary frequency for each of the other k − 1 factors: with 6
/// factors and M = 4, N = 320 is refused at `samples` (factors would share a frequency and a
/// phase, and take identical values), and at the least N it takes, 321, the indices of an
/// additive output Σ cᵢ·xᵢ of uniform factors are the analytic cᵢ²/Σc² (S1 = ST).
#[test]
fn efast_refuses_designs_whose_factors_share_a_frequency() {
    let (k, m) = (6, 4);
    let err = efast_design(k, 320, m, 3).unwrap_err().to_string();
    assert!(err.contains("at least 4·M²·(k − 1) + 1 = 321"), "{err}");
    let c = [1.0, 2.0, 3.0, 4.0, 5.0, 1.0];
    let total: f64 = c.iter().map(|c| c * c).sum();
    let d = efast_design(k, 321, m, 3).unwrap();
    let y: Vec<f64> = (0..d.rows)
        .map(|r| d.row(r).iter().zip(c).map(|(x, c)| c * x).sum())
        .collect();
    let idx = efast_indices(&d, &y, 0, 0.95, 1).unwrap();
    let s1_sum: f64 = idx.values.iter().map(|f| f[0].1).sum();
    assert!((s1_sum - 1.0).abs() < 0.03, "S1 sum to {s1_sum}");
    for (i, f) in idx.values.iter().enumerate() {
        let exact = c[i] * c[i] / total;
        assert!(
            (f[0].1 - exact).abs() < 0.02,
            "S1 of factor {i}: {} vs {exact}",
            f[0].1
        );
        assert!(
            (f[1].1 - exact).abs() < 0.03,
            "ST of factor {i}: {} vs {exact}",
            f[1].1
        );
    }
}

/// Outputs near the ends of the floats are analysed in units of their size: s·(x₁ + 0.5·x₂)
/// at s = 1e200 and 1e-200 (whose squares overflow and underflow) has the Sobol indices of
/// s = 1, and Morris effects s·(1, 0.5) with σ 0 (to rounding), finite. Their chart is drawn
/// (an axis of infinite span had made the chart loop forever), also with values that are not
/// finite.
#[test]
fn outputs_near_the_ends_of_the_floats_are_analysed_in_their_own_units() {
    use vpop::sensitivity::{analyse, Resolution};
    let f = |d: &Design, s: f64| -> Vec<f64> {
        (0..d.rows)
            .map(|r| s * (d.row(r)[0] + 0.5 * d.row(r)[1]))
            .collect()
    };
    let sd = sobol_design(2, 512, 5).unwrap();
    let (one, _) = analyse(&sd, &f(&sd, 1.0), Resolution::EXACT, 0, 0.95, 1).unwrap();
    for s in [1e200, 1e-200, 1e300] {
        let (idx, _) = analyse(&sd, &f(&sd, s), Resolution::EXACT, 0, 0.95, 1).unwrap();
        for (a, b) in idx.values.iter().flatten().zip(one.values.iter().flatten()) {
            assert!((a.1 - b.1).abs() < 1e-12, "s = {s:e}: {} vs {}", a.1, b.1);
        }
    }
    let md = morris_design(2, 20, 4, 5).unwrap();
    for s in [1e200, 1e-200] {
        let (idx, _) = analyse(&md, &f(&md, s), Resolution::EXACT, 50, 0.95, 1).unwrap();
        for (i, effect) in [1.0, 0.5].into_iter().enumerate() {
            let v = &idx.values[i];
            for (name, value, _) in &v[..2] {
                assert!(
                    (value / (s * effect) - 1.0).abs() < 1e-9,
                    "{name} at s = {s:e}"
                );
            }
            assert!(v[2].1.is_finite() && v[2].1 <= 1e-9 * s, "sigma {}", v[2].1);
            assert!(v[1].2.is_finite(), "mu_star's half-width {}", v[1].2);
        }
    }
    let dir = temp_dir("extreme-chart");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.join("indices.png");
    std::thread::spawn(move || {
        let panel = |v: f64, c: f64| vpop::output::plot::BarPanel {
            title: "y".into(),
            categories: vec!["x1".into(), "x2".into()],
            bars: vec![
                vec![("mu_star".into(), v, c), ("sigma".into(), 1.0, f64::NAN)],
                vec![("mu_star".into(), -v, c), ("sigma".into(), 2.0, f64::NAN)],
            ],
        };
        let panels = [
            panel(f64::INFINITY, f64::INFINITY),
            panel(1.7e308, 1e308),
            panel(f64::NAN, 1.0),
        ];
        let _ = tx.send(vpop::output::plot::bar_panels(&path, &panels));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the chart was not drawn within 2 minutes");
    r.unwrap();
    assert!(std::fs::metadata(dir.join("indices.png")).unwrap().len() > 1000);
}
