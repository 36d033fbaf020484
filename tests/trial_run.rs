//! The trial pipeline end to end: output layout and provenance, resumption after a stop
//! (byte-identical to an uninterrupted run), shards whose union is the whole run, bad specs, and
//! the dataset read back by pyarrow and DuckDB.

use std::path::{Path, PathBuf};

mod common;

use vpop::output::Shard;
use vpop::trial::{run_trial, RunOptions, Trial};

const SPEC: &str = r#"
[trial]
name = "test trial"
subjects = 2500
seed = 99

[model]
library = "two_cmt_oral"

[population]
file = "populations/adult_healthy.toml"

[[arm]]
name = "low"
dose = { amount = 100, into = "depot", every = 12, count = 4 }

[[arm]]
name = "high"
dose = { amount = 200, into = "depot", every = 24, count = 2 }

[simulation]
end = 48
method = "tsit5"
rtol = 1e-5
atol = 1e-7
chunk_size = 700

[output]
dir = "unused"
metrics = ["auc", "cmax", "ctrough", "time_above(1.0)"]
parameters = true
profile = { every = 12, precision = "f16" }
target = { metric = "cp_ctrough", above = 0.5 }
"#;

fn trial() -> Trial {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Trial::from_text(&root.join("spec.toml"), SPEC).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::parquet_parts(dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Flips a byte in the middle of a file: a part torn by a crash, of the same size.
fn tear(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        quiet: true,
        output_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn a_stopped_run_resumes_to_identical_files() {
    let t = trial();
    let whole = tmp("whole");
    let r = run_trial(&t, &opts(&whole)).unwrap();
    assert!(r.complete);
    assert_eq!((r.parts_written, r.subjects), (4, 2500));
    let resumed = tmp("resumed");
    let first = run_trial(
        &t,
        &RunOptions {
            stop_after_parts: Some(2),
            ..opts(&resumed)
        },
    )
    .unwrap();
    assert!(!first.complete);
    // Debris of a killed writer is cleaned up on the next start.
    std::fs::write(resumed.join(".part-00003.parquet.123.tmp"), b"half a file").unwrap();
    // A part torn by a crash (same size, other bytes) no longer matches its recorded hash and
    // is written again.
    tear(&resumed.join("part-00001.parquet"));
    let second = run_trial(&t, &opts(&resumed)).unwrap();
    assert!(second.complete);
    assert_eq!((second.parts_resumed, second.parts_written), (1, 3));
    assert!(
        files(&whole) == files(&resumed),
        "resumed dataset differs from the uninterrupted one"
    );
    assert!(!resumed.join(".part-00003.parquet.123.tmp").exists());
    assert_eq!(r.arms, second.arms);
    // The manifest names every part with its size and BLAKE3.
    let manifest: vpop::output::Manifest =
        serde_json::from_str(&std::fs::read_to_string(resumed.join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.parts.len(), 4);
    for p in &manifest.parts {
        let bytes = std::fs::read(resumed.join(&p.file)).unwrap();
        assert_eq!(p.bytes, bytes.len() as u64, "{}", p.file);
        assert_eq!(
            p.blake3.as_deref(),
            Some(blake3::hash(&bytes).to_hex().as_str()),
            "{}",
            p.file
        );
        assert_eq!(p.sha256, None);
    }
    // A different run into the same directory is refused.
    let mut other = trial();
    other.seed = 100;
    let err = run_trial(&other, &opts(&resumed)).unwrap_err();
    assert!(err.contains("different run"), "{err}");
}

/// Manifests written before parts were hashed with BLAKE3 record SHA-256: resuming such a run
/// keeps the parts whose SHA-256 still matches and writes the others again.
#[test]
fn a_run_recorded_with_sha256_resumes() {
    use sha2::Digest;
    let t = trial();
    let whole = tmp("whole-sha");
    run_trial(&t, &opts(&whole)).unwrap();
    let dir = tmp("resumed-sha");
    let first = run_trial(
        &t,
        &RunOptions {
            stop_after_parts: Some(3),
            ..opts(&dir)
        },
    )
    .unwrap();
    assert!(!first.complete);
    let path = dir.join("_manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for p in m["parts"].as_array_mut().unwrap() {
        let file = p["file"].as_str().unwrap().to_string();
        let bytes = std::fs::read(dir.join(&file)).unwrap();
        let p = p.as_object_mut().unwrap();
        assert!(p.remove("blake3").is_some());
        p.insert(
            "sha256".into(),
            format!("{:x}", sha2::Sha256::digest(&bytes)).into(),
        );
    }
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    tear(&dir.join("part-00000.parquet"));
    let second = run_trial(&t, &opts(&dir)).unwrap();
    assert!(second.complete);
    assert_eq!((second.parts_resumed, second.parts_written), (2, 2));
    assert!(files(&whole) == files(&dir), "resumed dataset differs");
    // The rewritten manifest records BLAKE3 for every part, the resumed ones included.
    let m: vpop::output::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(m.parts.len(), 4);
    for p in &m.parts {
        let bytes = std::fs::read(dir.join(&p.file)).unwrap();
        assert_eq!(
            p.blake3.as_deref(),
            Some(blake3::hash(&bytes).to_hex().as_str())
        );
    }
}

#[test]
fn shards_are_disjoint_and_their_union_is_the_whole_run() {
    let t = trial();
    let whole = tmp("unsharded");
    run_trial(&t, &opts(&whole)).unwrap();
    let sharded = tmp("sharded");
    let mut total = 0;
    for k in 1..=3 {
        let r = run_trial(
            &t,
            &RunOptions {
                shard: Some(Shard { k, n: 3 }),
                ..opts(&sharded)
            },
        )
        .unwrap();
        total += r.subjects;
    }
    assert_eq!(total, 2500);
    let (a, b) = (files(&whole), files(&sharded));
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(a == b, "sharded parts differ from the unsharded run's");
}

#[test]
fn summaries_and_output_columns() {
    let t = trial();
    let dir = tmp("summary");
    let r = run_trial(&t, &opts(&dir)).unwrap();
    assert_eq!(r.arms.len(), 2);
    let low = &r.arms[0];
    assert_eq!((low.subjects, low.failed), (2500, 0));
    let auc = &low.metrics[0];
    assert_eq!(auc.column, "cp_auc");
    assert!(auc.p5 < auc.median && auc.median < auc.p95);
    // Dose-normalised exposure over 48 h is the same in both arms within sampling noise of
    // the paired design: 400 mg in each arm.
    let high_auc = r.arms[1].metrics[0].median;
    assert!(
        (high_auc / auc.median - 1.0).abs() < 0.1,
        "{high_auc} vs {}",
        auc.median
    );
    let pta = low.target_attainment.unwrap();
    assert!((0.0..=1.0).contains(&pta));
    summary_matches_the_files(&r, &dir, 0.5);

    // Columns and provenance, read back with the parquet crate.
    let part = dir.join("part-00000.parquet");
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&part).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata().file_metadata();
    let kv: std::collections::HashMap<String, String> = meta
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    for key in [
        "vpop.engine",
        "vpop.results_revision",
        "vpop.model_hash",
        "vpop.model_source",
        "vpop.population_hash",
        "vpop.trial_spec",
        "vpop.seed",
        "vpop.backend",
        "vpop.device",
        "vpop.precision",
        "vpop.method",
        "vpop.rtol",
        "vpop.atol",
        "vpop.events",
    ] {
        assert!(kv.contains_key(key), "missing {key}");
    }
    assert_eq!(kv["vpop.events"], "cross");
    assert_eq!(kv["vpop.seed"], "99");
    // The categorical covariates' levels in the population file's order (a part's dictionary
    // holds them in the order they occur).
    assert_eq!(kv["vpop.levels"], r#"{"sex":["male","female"]}"#);
    let names: Vec<String> = meta
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for c in [
        "subject_id",
        "arm",
        "sex",
        "wt",
        "crcl",
        "ka",
        "cl",
        "cp_auc",
        "cp_cmax",
        "cp_ctrough",
        "cp_time_above_1",
        "status",
        "cp_profile",
    ] {
        assert!(
            names.iter().any(|n| n == c),
            "missing column {c} in {names:?}"
        );
    }
    assert_eq!(
        reader.metadata().num_row_groups(),
        2,
        "one row group per arm"
    );

    // Interoperability: pyarrow and DuckDB read the same rows and medians.
    if !common::python_imports("pyarrow, duckdb") {
        println!("SKIPPED: pyarrow/duckdb not installed (the interop check needs them)");
        return;
    }
    let columns: Vec<String> = names;
    let mut medians = serde_json::Map::new();
    for arm in &r.arms {
        let mut m = serde_json::Map::new();
        for s in &arm.metrics {
            m.insert(s.column.clone(), serde_json::json!(s.median));
        }
        medians.insert(arm.name.clone(), serde_json::Value::Object(m));
    }
    let expected = serde_json::json!({
        "rows": 5000, "columns": columns,
        "metadata": {"vpop.seed": "99", "vpop.model": "two_cmt_oral", "vpop.backend": "cpu"},
        "medians": medians,
    });
    let exp_path = tmp("expected.json");
    std::fs::write(&exp_path, serde_json::to_string(&expected).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/check_dataset.py"
        ))
        .arg(&dir)
        .arg(&exp_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_specs_are_located_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.toml");
    for (from, to, line, fragment) in [
        (
            "library = \"two_cmt_oral\"",
            "library = \"two_cmt_orl\"",
            8,
            "no built-in model 'two_cmt_orl'",
        ),
        (
            "into = \"depot\", every = 12",
            "into = \"gut\", every = 12",
            15,
            "not a state of the model",
        ),
        // Errors of a section as a whole are located at it (or at the key to remove), not at
        // the file's start.
        (
            "library = \"two_cmt_oral\"",
            "library = \"two_cmt_oral\"\nfile = \"two_cmt_oral.vpm\"",
            8,
            "[model] takes either `library` (a built-in model) or `file` (a model file), not both",
        ),
        (
            "library = \"two_cmt_oral\"",
            "",
            7,
            "[model] needs `library = \"NAME\"` (a built-in model) or `file = \"PATH\"`",
        ),
        (
            "file = \"populations/adult_healthy.toml\"",
            "",
            10,
            "[population] needs `library = \"NAME\"`",
        ),
        (
            "end = 48\n",
            "",
            21,
            "[simulation] needs `end = …`: the end of the simulation, in the model's time unit",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_abov(1.0)\"",
            30,
            "unknown metric",
        ),
        // A misspelt name gets the one likely meant.
        (
            "library = \"two_cmt_oral\"",
            "library = \"two_cmt_orl\"",
            8,
            "; did you mean 'two_cmt_oral'?",
        ),
        (
            "into = \"depot\", every = 12",
            "into = \"dept\", every = 12",
            15,
            "(states: depot, central, periph); did you mean 'depot'?",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_abov(1.0)\"",
            30,
            "unknown metric (did you mean 'time_above'?)",
        ),
        (
            "method = \"tsit5\"",
            "method = \"tsit4\"",
            23,
            "unknown method 'tsit4' (rk4, dopri5, tsit5, rosenbrock23, rodas4); did you mean 'tsit5'?",
        ),
        (
            "metric = \"cp_ctrough\"",
            "metric = \"cp_trough\"",
            33,
            "; did you mean 'cp_ctrough'?",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_above(1.0)\", \"c:cmax\"",
            30,
            "the model has no output 'c' (outputs: cp); did you mean 'cp'?",
        ),
        (
            "end = 48\n",
            "end = 48\nrtoll = 1e-6\n",
            23,
            "; did you mean `rtol`?",
        ),
        (
            "method = \"tsit5\"",
            "method = \"euler\"",
            23,
            "unknown method 'euler'",
        ),
        (
            "metric = \"cp_ctrough\"",
            "metric = \"cp_trough\"",
            33,
            "target metric 'cp_trough'",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_above(1.0)\", \"conc:cmax\"",
            30,
            "the model has no output 'conc' (outputs: cp)",
        ),
        (
            "parameters = true",
            "parameters = true\noutputs = [\"cp\", \"conc\"]",
            32,
            "the model has no output 'conc' (outputs: cp)",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_above(1.0)\", \"cp:cmax\"",
            30,
            "metric column 'cp_cmax' is requested twice",
        ),
        (
            "parameters = true",
            "parameters = true\noutputs = [\"cp\", \"cp\"]",
            32,
            "output 'cp' is listed twice",
        ),
        (
            "\"time_above(1.0)\"",
            "\"cp time_above:(1.0)\"",
            30,
            "'cp time_above' is not an output name",
        ),
        (
            "dose = { amount = 200, into = \"depot\", every = 24, count = 2 }",
            "doses = [{ amount = 2, per = \"wt\", into = \"depot\" },\n { amount = 60, per = \"bsa\", into = \"depot\", start = 24 }]",
            20,
            "all dose lines of an arm must use the same `per` covariate",
        ),
        (
            "dose = { amount = 100, into = \"depot\", every = 12, count = 4 }",
            "dose = { amount = 100, into = \"depot\", modelled = true }",
            15,
            "the model declares neither rate(depot) nor dur(depot)",
        ),
        (
            "dose = { amount = 100, into = \"depot\", every = 12, count = 4 }",
            "dose = { amount = 100, into = \"depot\", every = -3 }",
            15,
            "every = -3: the dosing interval must be a number > 0",
        ),
        ("name = \"low\"", "name = \" \"", 14, "an arm needs a name"),
        (
            "profile = { every = 12, precision = \"f16\" }",
            "profile = { from = 12, precision = \"f16\" }",
            32,
            "from and to bound a grid of times `every` apart",
        ),
        (
            "profile = { every = 12, precision = \"f16\" }",
            "profile = {}",
            32,
            "give its times = […] or a grid every = …",
        ),
        ("subjects = 2500", "subjects = -3", 4, ""),
        (
            "library = \"two_cmt_oral\"",
            "library = \"two_cmt_oral\"\nparams = { q = inf }",
            9,
            "parameter 'q' must be a finite number, got inf",
        ),
        (
            "subjects = 2500",
            "subjects = 9223372036854775807",
            4,
            "subjects in chunks of 700 make 13176245766935395 parts, and a run writes at most 1000000",
        ),
        ("rtol = 1e-5", "rtol = 0", 24, "rtol must be in (0, 1)"),
        (
            "dir = \"unused\"",
            "dir = \"\"",
            29,
            "dir must name the output directory",
        ),
        (
            "above = 0.5 }",
            "above = 0.5, below = 0.1 }",
            33,
            "a target range needs above < below",
        ),
        (
            "atol = 1e-7",
            "atol = -1e-7",
            25,
            "atol must be a positive number",
        ),
        (
            "chunk_size = 700",
            "chunk_size = 0",
            26,
            "chunk_size must be at least 1",
        ),
        (
            "chunk_size = 700",
            "chunk_size = 700\ndt = -0.5",
            27,
            "dt must be a positive number",
        ),
        (
            "chunk_size = 700",
            "chunk_size = 700\nmax_steps = 0",
            27,
            "max_steps must be at least 1",
        ),
        (
            "profile = { every = 12,",
            "profile = { every = 0,",
            32,
            "every must be > 0",
        ),
        (
            "profile = { every = 12,",
            "profile = { every = 1e-5,",
            32,
            "every = 0.00001 from 0 to 48 gives 4800001 times, more than 1000000",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_above(1.0)\", \"auc(0, 100)\", \"at(60)\"",
            30,
            "the window (0, 100) ends after the end of the simulation (48)",
        ),
        (
            "\"time_above(1.0)\"",
            "\"time_above(1.0)\", \"at(60)\"",
            30,
            "at(60) is after the end of the simulation (48)",
        ),
        (
            "every = 12, count = 4 }",
            "every = 12, count = 4000000000 }",
            15,
            "count must be at most 10000000",
        ),
        (
            "amount = 200, into = \"depot\"",
            "amount = 2, per = \"sex\", into = \"depot\"",
            19,
            "'sex' is categorical; a dose scales with a numeric covariate",
        ),
        (
            "above = 0.5",
            "above = nan",
            33,
            "a target's bounds must be numbers, not nan",
        ),
        (
            "profile = { every = 12,",
            "profile = { times = [1, 500],",
            32,
            "sampling times must lie in [0, end]",
        ),
        (
            "profile = { every = 12, precision = \"f16\" }",
            "observations = true",
            32,
            "observations = true needs sampling times",
        ),
        (
            "method = \"tsit5\"",
            "method = \"rk4\"",
            23,
            "rk4 is a fixed-step method",
        ),
        (
            "parameters = true",
            "parameters = true\ncompression = \"lz5\"",
            32,
            "unknown compression 'lz5'",
        ),
        (
            "parameters = true",
            "parameters = true\ncompression = \"Brotli\"",
            32,
            "unknown compression 'Brotli': expected one of \"zstd\", \"lz4\", \"snappy\", \"none\"",
        ),
        (
            "chunk_size = 700",
            "chunk_size = 700\nprecision = \"f128\"",
            27,
            "unknown precision 'f128': expected \"f32\" or \"f64\"",
        ),
        (
            "precision = \"f16\"",
            "precision = \"f8\"",
            32,
            "unknown profile precision 'f8': expected \"f32\" or \"f16\"",
        ),
        // Metrics that name no output apply to those `outputs` lists: none with `[]`.
        (
            "parameters = true",
            "parameters = true\noutputs = []",
            32,
            "`outputs = []` leaves metrics 'auc', 'cmax', 'ctrough', 'time_above(1.0)' without \
             a column",
        ),
        (
            "metrics = [\"auc\", \"cmax\", \"ctrough\", \"time_above(1.0)\"]",
            "metrics = [\"cp:auc\", \"cmax\", \"cp:ctrough\"]\noutputs = []",
            31,
            "`outputs = []` leaves metric 'cmax' without a column",
        ),
        (
            "parameters = true",
            "parameters = true\ncompression = \"lz4\"\ncompression_level = 3",
            33,
            "a compression level is for zstd, not lz4",
        ),
        (
            "parameters = true",
            "parameters = true\ncompression = \"zstd\"\ncompression_level = 23",
            33,
            "zstd level 23 is out of range",
        ),
    ] {
        let text = SPEC.replace(from, to);
        let err = match Trial::from_text(&root, &text) {
            Ok(_) => panic!("{to}: accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&format!("spec.toml:{line}:")), "{to}: {err}");
        assert!(err.contains(fragment), "{to}: {err}");
    }
    // A dose into a state the model lacks is located at the state's name, in a spec and in a
    // simulation file.
    let text = SPEC.replace("into = \"depot\", every = 12", "into = \"gut\", every = 12");
    let col = text.lines().nth(14).unwrap().find("\"gut\"").unwrap() + 1;
    let err = Trial::from_text(&root, &text).err().unwrap().to_string();
    assert!(
        err.contains(&format!("spec.toml:15:{col}: dose into 'gut'")),
        "{err}"
    );
    let dir = tmp("into");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("one.toml");
    std::fs::write(
        &file,
        "model = \"two_cmt_oral\"\ndoses = [{ amount = 1, into = \"depot\" },\n  { amount = 2, into = \"gut\" }]\nend = 24\n",
    )
    .unwrap();
    let (ok, text) = common::simulate_text(&[file.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("one.toml:3:24: dose into 'gut'"), "{text}");
}

/// `precision`, `compression` and a profile's `precision` are read in any case, as `method`
/// and `backend` are.
#[test]
fn names_of_choices_are_case_insensitive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.toml");
    let text = SPEC
        .replace(
            "method = \"tsit5\"",
            "method = \"TSIT5\"\nbackend = \"CPU\"",
        )
        .replace("chunk_size = 700", "chunk_size = 700\nprecision = \"F64\"")
        .replace("precision = \"f16\"", "precision = \"F16\"")
        .replace(
            "parameters = true",
            "parameters = true\ncompression = \"ZSTD\"",
        );
    let t = Trial::from_text(&root, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.precision, vpop::backend::Precision::F64);
    assert_eq!(t.backend, vpop::trial::resolve::BackendChoice::Cpu);
    assert_eq!(
        t.codec,
        vpop::output::Codec::Zstd(vpop::output::DEFAULT_ZSTD_LEVEL)
    );
    assert!(t.profile_f16);
    assert_eq!(t.arms[0].plan.solver.method, vpop::solver::Method::Tsit5);
}

/// `outputs = []` is refused only where it leaves a metric without a column: beside metrics
/// that each name their output, or in a run of profiles only, it is no error.
#[test]
fn empty_outputs_are_allowed_where_no_metric_needs_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.toml");
    let metrics = "metrics = [\"auc\", \"cmax\", \"ctrough\", \"time_above(1.0)\"]";
    let named = SPEC.replace(
        metrics,
        "metrics = [\"cp:auc\", \"cp:ctrough\"]\noutputs = []",
    );
    let t = Trial::from_text(&root, &named).unwrap_or_else(|e| panic!("{e}"));
    let cols: Vec<&str> = t.arms[0]
        .plan
        .metrics
        .iter()
        .map(|m| m.column.as_str())
        .collect();
    assert_eq!(cols, ["cp_auc", "cp_ctrough"]);
    let profiles_only = SPEC
        .replace(metrics, "outputs = []")
        .replace("target = { metric = \"cp_ctrough\", above = 0.5 }", "");
    let t = Trial::from_text(&root, &profiles_only).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.arms[0].plan.metrics.is_empty());
    assert!(!t.arms[0].plan.sample_times.is_empty());
}

/// Occasions and resets at or after the end have no effect; like doses after the end they
/// are counted, and `vpop check` and `vpop run` say so.
#[test]
fn occasions_and_resets_after_the_end_are_noted() {
    let dir = tmp("after-end");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "[trial]\nname = \"after end\"\nsubjects = 3\nseed = 1\n[model]\n\
             library = \"one_cmt_iv\"\n[[arm]]\nname = \"a\"\n\
             dose = {{ amount = 100, into = \"central\", every = 12, count = 4 }}\n\
             occasions = [0, 24, 48, 60]\nresets = [24, 48, 100]\n\
             [[arm]]\nname = \"b\"\ndose = {{ amount = 100, into = \"central\" }}\n\
             occasions = [0, 24]\nresets = [24]\n\
             [simulation]\nend = 48\nbackend = \"cpu\"\n\
             [output]\ndir = {:?}\nmetrics = [\"auc\"]\n",
            dir.join("out")
        ),
    )
    .unwrap();
    let t = Trial::load(&spec).unwrap();
    assert_eq!(t.arms[0].occasions_after_end, (2, 4));
    assert_eq!(t.arms[0].resets_after_end, (2, 3));
    assert_eq!(t.arms[1].occasions_after_end, (0, 2));
    assert_eq!(t.arms[1].resets_after_end, (0, 1));
    let vpop = |cmd: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .args(cmd.split(' '))
            .arg(&spec)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stdout}{stderr}");
        (stdout, stderr)
    };
    let (stdout, _) = vpop("check");
    let occasions = "2 of its 4 occasions start at or after the end (48): no time of the \
                     simulation falls in them";
    let resets = "2 of its 3 resets come at or after the end (48) and change nothing";
    assert!(
        stdout.contains(&format!(
            "  arm         a (1 dose line, 3 resets; {occasions}; {resets})"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("  arm         b (1 dose line, 1 reset)\n"),
        "{stdout}"
    );
    // The notes are about the trial, not progress: `--quiet` (no progress bar) keeps them.
    for quiet in [false, true] {
        let (_, stderr) = vpop(if quiet { "run --quiet" } else { "run" });
        assert!(
            stderr.contains(&format!("note: arm a: {occasions}\n")),
            "quiet {quiet}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("note: arm a: {resets}\n")),
            "quiet {quiet}: {stderr}"
        );
        assert!(!stderr.contains("note: arm b"), "quiet {quiet}: {stderr}");
    }
}

/// A population parameter the model does not have is sampled for nobody: the trial loads (a
/// built-in population serves other models for its covariates) with a note located at the
/// spec's population.
#[test]
fn population_parameters_the_model_lacks_are_noted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.toml");
    assert!(trial().population_notes.is_empty());
    let t = Trial::from_text(&root, &SPEC.replace("two_cmt_oral", "one_cmt_oral")).unwrap();
    assert_eq!(t.population_notes.len(), 1, "{:?}", t.population_notes);
    let note = &t.population_notes[0];
    assert!(note.contains("spec.toml:11:8:"), "{note}");
    assert!(
        note.contains("does not have, which no subject uses: v1, q, v2"),
        "{note}"
    );
}

/// A population covariate named as a model parameter that the population's [parameters] do
/// not set feeds nothing (covariates reach the model through [parameters]): a note located at
/// the spec's population names it; none where [parameters] or the spec sets the parameter.
#[test]
fn covariates_named_as_unset_model_parameters_are_noted() {
    let dir = tmp("shadowed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("m.vpm"),
        "param wt = 70\nparam cl = 5\nstate central\nd/dt(central) = -cl / (wt / 7) * central\n\
         output cp = central / (wt / 7)\n",
    )
    .unwrap();
    let spec = "[trial]\nname = \"w\"\nsubjects = 20\nseed = 1\n[model]\nfile = \"m.vpm\"\nPARAMS\
                [population]\nlibrary = \"adult_healthy\"\n\
                [[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"central\" }\n\
                [simulation]\nend = 1\n[output]\ndir = \"out\"\nmetrics = [\"auc\"]\n";
    let t = Trial::from_text(&dir.join("spec.toml"), &spec.replace("PARAMS", "")).unwrap();
    let notes = t.population_notes.join("\n");
    assert!(notes.contains("spec.toml:8:11:"), "{notes}");
    assert!(
        notes.contains("covariate wt (the model's default 70) has the name of a model parameter"),
        "{notes}"
    );
    let set = spec.replace("PARAMS", "params = { wt = 80 }\n");
    let t = Trial::from_text(&dir.join("spec.toml"), &set).unwrap();
    assert!(
        !t.population_notes.join("").contains("covariate wt"),
        "{:?}",
        t.population_notes
    );
    // A dataset's column WT sets wt record by record: no note; without that column, a note.
    let data = "[trial]\nname = \"w\"\nseed = 1\n[model]\nfile = \"m.vpm\"\n\
                [population]\nlibrary = \"adult_healthy\"\n[data]\nfile = \"d.csv\"\n\
                [simulation]\nbackend = \"cpu\"\n[output]\ndir = \"out\"\n";
    for (columns, noted) in [(",WT", false), ("", true)] {
        let wt = if noted { "" } else { ",60" };
        let none = if noted { "" } else { ",." };
        std::fs::write(
            dir.join("d.csv"),
            format!("ID,TIME,EVID,AMT,CMT{columns}\n1,0,1,1,1{wt}\n1,1,0,.,1{none}\n"),
        )
        .unwrap();
        let t = Trial::from_text(&dir.join("spec.toml"), data).unwrap();
        let notes = t.population_notes.join("");
        assert_eq!(notes.contains("covariate wt"), noted, "{columns}: {notes}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vpop check` checks every kind of file vpop reads, told apart by its top-level keys: a
/// trial spec, a population file, a sensitivity spec, a `vpop simulate` file; errors in
/// each are located.
#[test]
fn check_takes_every_kind_of_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |path: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .arg("check")
            .arg(path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for (file, says) in [
        ("examples/quickstart.toml", "  arm         100mg_q12h"),
        ("populations/adult_healthy.toml", "ok (a population file)"),
        ("examples/sensitivity.toml", "factors     ka, cl, v1, q, v2"),
        ("examples/one_subject.toml", "ok (a one-subject simulation"),
        // Where the model steps in time: every subject's meals and days, and its own
        // induction time (60 h with the model's values, at a meal's start).
        (
            "examples/induction.toml",
            "  jumps       in time, stopping points of the integration: 20 shared by every \
             subject, at t = 12, 13, 24, 36, 37, 48, 60, 61, … 157; each subject's own from its \
             parameters (`d/dt(central)` at ",
        ),
        (
            "examples/induction.toml",
            "induction.vpm:13:6; at t = 60 with the model's values)\n",
        ),
        (
            "examples/qsp_large.toml",
            "  W           factorised along the Jacobian's structure: 117 of 3136 entries can be \
             nonzero, 127 in the factors",
        ),
        (
            "examples/threshold_kill.toml",
            "  solver      tsit5 rtol 1e-6 atol 1e-9, jumps with the states located \
             (events = \"locate\"), end 168",
        ),
    ] {
        let (ok, text) = check(&root.join(file));
        assert!(ok && text.contains(says), "{file}: {text}");
        // A model without steps in time has no such line.
        if file != "examples/induction.toml" {
            assert!(!text.contains("  jumps "), "{file}: {text}");
        }
    }
    let dir = tmp("check-kinds");
    std::fs::create_dir_all(&dir).unwrap();
    // A large model with a Rosenbrock method: how its W is factorised; the quickstart's
    // (3 states, Tsit5) says nothing of it.
    let large = dir.join("large.toml");
    std::fs::write(
        &large,
        format!(
            "[trial]\nname = \"large\"\nsubjects = 10\nseed = 1\n[model]\nfile = {:?}\n\
             [[arm]]\nname = \"a\"\ndose = {{ amount = 100, into = \"depot\" }}\n\
             [simulation]\nend = 24\nmethod = \"rodas4\"\n[output]\ndir = \"out\"\n\
             metrics = [\"cp:auc\"]\n",
            root.join("tests/data/sparse_qsp.vpm")
        ),
    )
    .unwrap();
    let (ok, text) = check(&large);
    assert!(
        ok && text.contains(
            "  W           factorised along the Jacobian's structure: 33 of 196 entries can be \
             nonzero, "
        ),
        "{text}"
    );
    assert!(!check(&root.join("examples/quickstart.toml"))
        .1
        .contains("  W   "));
    // A regimen that runs past the end: the doses never given are counted, and `vpop run`
    // says so too.
    let quickstart = std::fs::read_to_string(root.join("examples/quickstart.toml")).unwrap();
    let cut = dir.join("cut.toml");
    std::fs::write(
        &cut,
        quickstart
            .replace("end = 168", "end = 100")
            .replace("subjects = 100_000", "subjects = 20")
            .replace("backend = \"auto\"", "backend = \"cpu\"")
            .replace("out/quickstart", &dir.join("cut").display().to_string()),
    )
    .unwrap();
    let (ok, text) = check(&cut);
    for says in [
        "  arm         100mg_q12h (1 dose line; 5 of the 14 doses come after the end (100) and are not given)",
        "  arm         200mg_q24h (1 dose line; 2 of the 7 doses come after the end (100) and are not given)",
    ] {
        assert!(ok && text.contains(says), "{text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("run")
        .arg(&cut)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: arm 100mg_q12h: 5 of the 14 doses come after the end (100)"),
        "{stderr}"
    );
    // A model file: parsed and compiled; its errors located.
    let (ok, text) = check(&root.join("examples/probit_ae.vpm"));
    assert!(ok && text.contains("ok (a model file)"), "{text}");
    assert!(text.contains("  outputs     cp, p_ae"), "{text}");
    let bad = dir.join("bad.vpm");
    std::fs::write(&bad, "state a\nd/dt(a) = -k * a\noutput c = a\n").unwrap();
    let (ok, text) = check(&bad);
    assert!(!ok && text.contains("bad.vpm:2:"), "{text}");
    let population = std::fs::read_to_string(root.join("populations/adult_healthy.toml")).unwrap();
    let bad = dir.join("population.toml");
    std::fs::write(
        &bad,
        population.replacen("[covariates.age]", "[covariates.age]\ndistr = 1", 1),
    )
    .unwrap();
    let (ok, text) = check(&bad);
    assert!(!ok && text.contains("population.toml:22:"), "{text}");
    // A population file of a header and [[omega]] alone (as `vpop sample` reads it) is one by
    // its keys; `vpop run` says what it is.
    let omega_only = dir.join("omega_only.toml");
    std::fs::write(
        &omega_only,
        "[population]\nname = \"x\"\n[[omega]]\netas = [\"e1\"]\nvariance = [0.1]\n",
    )
    .unwrap();
    let (ok, text) = check(&omega_only);
    assert!(ok && text.contains("ok (a population file)"), "{text}");
    assert!(text.contains("  covariates  none\n"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("run")
        .arg(&omega_only)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(
                "note: its top-level keys (population, omega) make it a population file, not a \
                 trial spec: `vpop sample "
            ),
        "{stderr}"
    );
    // Every command that reads one kind of file says what a file of another kind is, and which
    // command reads it.
    let vpop = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let quickstart_file = root.join("examples/quickstart.toml");
    let model_file = root.join("examples/induction.vpm");
    let dataset_file = root.join("examples/nm_dataset.csv");
    let simulate_file = root.join("examples/one_subject.toml");
    for (command, file, note) in [
        (
            "sensitivity",
            &quickstart_file,
            "make it a trial spec, not a sensitivity spec: `vpop run ",
        ),
        (
            "sample",
            &quickstart_file,
            "make it a trial spec, not a population file: `vpop run ",
        ),
        (
            "simulate",
            &quickstart_file,
            "make it a trial spec, not a `vpop simulate` file: `vpop run ",
        ),
        (
            "bench",
            &simulate_file,
            "make it a `vpop simulate` file, not a trial spec: `vpop simulate ",
        ),
        (
            "run",
            &model_file,
            "note: it is a model file (.vpm), not a trial spec: `vpop simulate ",
        ),
        (
            "simulate",
            &dataset_file,
            "note: it is a dataset (CSV), not a `vpop simulate` file",
        ),
    ] {
        let (ok, text) = vpop(&[command.as_ref(), file.as_os_str()]);
        assert!(
            !ok && text.contains(note),
            "vpop {command} {}: {text}",
            file.display()
        );
    }
    // A dataset: read as `vpop simulate --data` reads it, its errors located.
    let (ok, text) = check(&dataset_file);
    assert!(
        ok && text.contains("ok (a NONMEM-format dataset)"),
        "{text}"
    );
    assert!(
        text.contains("  subjects    3 (20 records: 4 doses, 15 observations, 1 other)"),
        "{text}"
    );
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,-2,0,.,1\n").unwrap();
    let (ok, text) = check(&bad);
    assert!(!ok && text.contains("bad.csv:3:3:"), "{text}");
    // Keys of two kinds: read as the kind with more of them, and its errors say so and why.
    let mixed = dir.join("mixed.toml");
    std::fs::write(
        &mixed,
        format!("{quickstart}\n[[omega]]\netas = [\"e1\"]\nvariance = [0.1]\n"),
    )
    .unwrap();
    let (ok, text) = check(&mixed);
    assert!(!ok && text.contains("unknown field `omega`"), "{text}");
    assert!(
        text.contains(
            "note: read as a trial spec for its top-level keys trial, model, population, arm, \
             simulation, output; it also has omega of a population file"
        ),
        "{text}"
    );
    // No key that tells: read as a trial spec, and the note lists each kind's keys.
    let untold = dir.join("untold.toml");
    std::fs::write(&untold, "[population]\n").unwrap();
    let (ok, text) = check(&untold);
    assert!(
        !ok && text.contains(
            "note: read as a trial spec, as no top-level key tells which kind of file it is"
        ) && text.contains("a population file: [population] name/description"),
        "{text}"
    );
    let sensitivity = std::fs::read_to_string(root.join("examples/sensitivity.toml")).unwrap();
    let bad = dir.join("sensitivity.toml");
    std::fs::write(
        &bad,
        sensitivity
            .replace("method = \"sobol\"", "method = \"sobolev\"")
            .replace(
                "\"quickstart.toml\"",
                &format!("{:?}", root.join("examples/quickstart.toml")),
            ),
    )
    .unwrap();
    let (ok, text) = check(&bad);
    assert!(
        !ok && text.contains("sensitivity.toml:") && text.contains("sobolev"),
        "{text}"
    );
    let simulate = dir.join("one_subject.toml");
    std::fs::write(
        &simulate,
        "model = \"two_cmt_oral\"\nparams = { clearance = 4.0 }\nend = 24\n",
    )
    .unwrap();
    let (ok, text) = check(&simulate);
    assert!(
        !ok && text
            .contains("one_subject.toml:2:10: the model two_cmt_oral has no parameter 'clearance'"),
        "{text}"
    );
    std::fs::write(
        &simulate,
        "model = \"two_cmt_oral\"\nend = 24\nrtol = 0\ndt = -1\n",
    )
    .unwrap();
    let (ok, text) = check(&simulate);
    assert!(!ok, "{text}");
    for line in [
        "one_subject.toml:3:8: rtol must be in (0, 1)",
        "one_subject.toml:4:6: dt must be a positive number",
    ] {
        assert!(text.contains(line), "{text}");
    }
    std::fs::write(
        &simulate,
        "model = \"two_cmt_oral\"\nend = 24\ndoses = [{ amount = 1, into = \"gut\" }]\n\
         metrics = [\"auc\", \"conc:cmax\"]\ntimes = \"0:24:-1\"\n",
    )
    .unwrap();
    let (ok, text) = check(&simulate);
    assert!(!ok, "{text}");
    for line in [
        "one_subject.toml:3:31: dose into 'gut', which is not a state",
        "one_subject.toml:4:19: metric 'conc:cmax': the model has no output 'conc'",
        "one_subject.toml:5:9: times '0:24:-1'",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    // Sampling times after the end, where nothing is simulated (as at(t) and a trial's profile).
    std::fs::write(
        &simulate,
        "model = \"two_cmt_oral\"\nend = 24\ntimes = \"0:36:12\"\n",
    )
    .unwrap();
    let (ok, text) = check(&simulate);
    assert!(
        !ok && text.contains(
            "one_subject.toml:3:9: times '0:36:12': 36 is after the end of the simulation (24)"
        ),
        "{text}"
    );
}

/// Counts on the command line are at least 1: a run of no subjects, or chunks of none, is
/// refused before anything is sampled or written.
#[test]
fn zero_counts_on_the_command_line_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = root.join("examples/quickstart.toml");
    let spec = spec.to_str().unwrap();
    for args in [
        vec!["run", spec, "--subjects", "0"],
        vec!["run", spec, "--chunk-size", "0"],
        vec!["sample", "adult_healthy", "-n", "0"],
        vec!["bench", spec, "--cpu-subjects", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("must be at least 1"),
            "{args:?}: {err}"
        );
    }
    // A count of subjects beyond any machine (a typo of some zeros) is refused before the run
    // lists its parts, and nothing is written.
    let dir = tmp("too-many-parts");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .args(["run", spec, "--subjects", "100000000000000", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("make 1525878907 parts, and a run writes at most 1000000"),
        "{err}"
    );
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
}

/// An output path that is a file, not a directory, is refused with a message that says so.
/// A manifest that cannot be read is named as such, not taken for another run's.
#[test]
fn an_unreadable_manifest_is_named() {
    let mut t = trial();
    t.subjects = 50;
    let dir = tmp("bad-manifest");
    run_trial(&t, &opts(&dir)).unwrap();
    std::fs::write(dir.join("_manifest.json"), "{garbage").unwrap();
    let e = run_trial(&t, &opts(&dir)).unwrap_err();
    assert!(
        e.contains("_manifest.json: the run's manifest cannot be read"),
        "{e}"
    );
    assert!(e.contains("--overwrite"), "{e}");
    let o = RunOptions {
        overwrite: true,
        ..opts(&dir)
    };
    assert!(run_trial(&t, &o).unwrap().complete);
}

#[test]
fn an_output_path_that_is_a_file_is_refused() {
    let file = tmp("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let err = run_trial(&trial(), &opts(&file)).unwrap_err().to_string();
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let _ = std::fs::remove_file(&file);
}

/// A metric is of every output, or of the one output named before a colon
/// (examples/pkpd_emax.toml: `effect:time_above(50)`, and no cp_time_above_50).
#[test]
fn a_metric_of_one_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = Trial::load(&root.join("examples/pkpd_emax.toml")).unwrap();
    let columns: Vec<&str> = t.arms[0]
        .plan
        .metrics
        .iter()
        .map(|s| s.column.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "cp_auc",
            "effect_auc",
            "cp_cmax",
            "effect_cmax",
            "cp_tmax",
            "effect_tmax",
            "cp_cmin_last_interval",
            "effect_cmin_last_interval",
            "effect_time_above_50"
        ]
    );
    let last = &t.arms[0].plan.metrics[8];
    assert_eq!(last.output, t.model.output_index("effect").unwrap());
    // The target names a column of the one output.
    let target = t.target.as_ref().unwrap();
    assert_eq!(columns[target.metric], "effect_cmin_last_interval");
}

/// examples/qsp_large.toml (a stiff 56-state model, Rodas4, W factorised sparsely) runs: every
/// subject completes, and the doses' exposures are ordered as target binding makes them (the
/// doubled dose more than doubles the AUC of free drug; the signal peaks higher).
#[test]
fn the_large_qsp_example_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = Trial::load(&root.join("examples/qsp_large.toml")).unwrap();
    let dir = tmp("qsp-large");
    let r = run_trial(
        &t,
        &RunOptions {
            subjects: Some(24),
            backend: Some(vpop::trial::resolve::BackendChoice::Cpu),
            ..opts(&dir)
        },
    )
    .unwrap();
    assert!(r.complete);
    let median = |arm: usize, column: &str| {
        let a = &r.arms[arm];
        assert_eq!((a.subjects, a.failed), (24, 0), "{}", a.name);
        a.metrics
            .iter()
            .find(|m| m.column == column)
            .unwrap()
            .median
    };
    assert!(median(1, "cp_auc") > 2.0 * median(0, "cp_auc"));
    assert!(median(1, "signal_cmax") > median(0, "signal_cmax"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// examples/hepatic_study.toml (the built-in hepatic_impairment population at steady state)
/// runs: every subject completes, and the exposure rises with the Child–Pugh class as the
/// population's clearance falls: each class's geometric mean AUC over an interval against
/// normal hepatic function within 15 % of the ratio of the typical clearances (1.71, 2.52,
/// 3.46: docs/populations.md; the classes' spread of albumin and liver size moves the geometric
/// means off the typical values).
#[test]
fn the_hepatic_study_example_orders_the_classes() {
    use arrow_array::types::UInt16Type;
    use arrow_array::{Array, DictionaryArray, Float64Array, StringArray};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = Trial::load(&root.join("examples/hepatic_study.toml")).unwrap();
    let dir = tmp("hepatic-study");
    let r = run_trial(
        &t,
        &RunOptions {
            subjects: Some(1200),
            backend: Some(vpop::trial::resolve::BackendChoice::Cpu),
            ..opts(&dir)
        },
    )
    .unwrap();
    assert!(r.complete);
    assert_eq!((r.arms[0].subjects, r.arms[0].failed), (1200, 0));
    let classes = ["normal", "mild", "moderate", "severe"];
    let mut log_sum = [0.0f64; 4];
    let mut count = [0usize; 4];
    for b in common::arm_batches(&dir, 0) {
        let class = b
            .column_by_name("hepatic")
            .unwrap()
            .as_any()
            .downcast_ref::<DictionaryArray<UInt16Type>>()
            .unwrap()
            .clone();
        let labels = class
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let auc = b
            .column_by_name("cp_auc_last_interval")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        for i in 0..b.num_rows() {
            let label = labels.value(class.keys().value(i) as usize);
            let k = classes.iter().position(|c| *c == label).unwrap();
            log_sum[k] += auc.value(i).ln();
            count[k] += 1;
        }
    }
    let gm: Vec<f64> = (0..4)
        .map(|k| (log_sum[k] / count[k] as f64).exp())
        .collect();
    for (k, want) in [(1, 1.71), (2, 2.52), (3, 3.46)] {
        let ratio = gm[k] / gm[0];
        assert!(
            (ratio / want - 1.0).abs() <= 0.15,
            "{}: geometric mean AUC ratio {ratio:.3}, typical {want}",
            classes[k]
        );
    }
    assert!(gm.windows(2).all(|w| w[0] < w[1]), "{gm:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[population] library = "NAME"` takes the built-in copy of a shipped population from any
/// directory: the same population (hash and samples) as its file; a shipped file named from
/// elsewhere gets a hint, and so do unknown names and both keys at once.
#[test]
fn built_in_populations_are_named_from_anywhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let elsewhere = std::env::temp_dir().join("elsewhere").join("spec.toml");
    let by_name = SPEC.replace(
        "file = \"populations/adult_healthy.toml\"",
        "library = \"adult_healthy\"",
    );
    let a = Trial::from_text(&elsewhere, &by_name).unwrap();
    let b = Trial::from_text(&root.join("spec.toml"), SPEC).unwrap();
    let (pa, pb) = (a.population.unwrap(), b.population.unwrap());
    assert_eq!(pa.hash(), pb.hash());
    let (mut ca, mut cb) = Default::default();
    pa.sample(9, 0, 500, &mut ca);
    pb.sample(9, 0, 500, &mut cb);
    assert_eq!(ca, cb);
    let err = |text: &str| match Trial::from_text(&elsewhere, text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    };
    // (The tests run in the project's root, where `populations/…` is found.)
    let e = err(&SPEC.replace("populations/adult", "shipped/adult"));
    assert!(e.contains("spec.toml:11:8: population file:"), "{e}");
    assert!(
        e.contains("a population of that name is built in: library = \"adult_healthy\""),
        "{e}"
    );
    let e = err(&by_name.replace("\"adult_healthy\"", "\"adults\""));
    assert!(
        e.contains("spec.toml:11:11: no built-in population 'adults'"),
        "{e}"
    );
    let e = err(&by_name.replace(
        "library = \"adult_healthy\"",
        "library = \"adult_healthy\"\nfile = \"p.toml\"",
    ));
    assert!(e.contains("not both"), "{e}");
}

/// Simulated observations carry the population's residual error: standardised residuals
/// (obs − pred) / sqrt((0.10·pred)² + 0.01²) are standard normal.
#[test]
fn observations_carry_the_residual_error_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = SPEC.replace(
        "profile = { every = 12, precision = \"f16\" }",
        "profile = { every = 6 }\nobservations = true",
    );
    let t = Trial::from_text(&root.join("spec.toml"), &text).unwrap();
    let dir = tmp("observations");
    run_trial(&t, &opts(&dir)).unwrap();
    let (mut s, mut s2, mut n) = (0.0, 0.0, 0usize);
    for part in std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&part).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            use arrow_array::{Array, FixedSizeListArray, Float32Array};
            let list = |name: &str| {
                let l = b
                    .column_by_name(name)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .unwrap()
                    .clone();
                l.values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .clone()
            };
            let (pred, obs) = (list("cp_profile"), list("cp_obs"));
            for i in 0..pred.len() {
                let (f, y) = (pred.value(i) as f64, obs.value(i) as f64);
                let r = (y - f) / ((0.1 * f).powi(2) + 0.01f64.powi(2)).sqrt();
                s += r;
                s2 += r * r;
                n += 1;
            }
        }
    }
    let mean = s / n as f64;
    let sd = (s2 / n as f64 - mean * mean).sqrt();
    assert!(n > 40_000, "{n} observations");
    assert!(mean.abs() < 3.0 / (n as f64).sqrt() + 1e-3, "mean {mean}");
    assert!((sd - 1.0).abs() < 0.02, "sd {sd}");
}

/// `subject_id` and the named Float64 columns of a dataset, in file order.
/// The bits of columns `names` of every row, keyed by subject and arm (within a part, an
/// arm's rows come before the next arm's, so a subject's k-th row is its k-th arm's).
fn rows_by_subject(
    dir: &Path,
    names: &[&str],
) -> std::collections::BTreeMap<(u64, usize), Vec<u64>> {
    let (ids, vals) = float_columns(dir, names);
    let mut seen = std::collections::HashMap::new();
    let mut rows = std::collections::BTreeMap::new();
    for (r, id) in ids.iter().enumerate() {
        let arm = seen.entry(*id).and_modify(|k| *k += 1).or_insert(0usize);
        let v: Vec<u64> = vals.iter().map(|c| c[r].to_bits()).collect();
        rows.insert((*id, *arm), v);
    }
    rows
}

fn float_columns(dir: &Path, names: &[&str]) -> (Vec<u64>, Vec<Vec<f64>>) {
    use arrow_array::{Array, Float64Array, UInt64Array};
    let mut ids = Vec::new();
    let mut cols = vec![Vec::new(); names.len()];
    for (name, _) in files(dir) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(dir.join(name)).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let id = b.column_by_name("subject_id").unwrap();
            let id = id.as_any().downcast_ref::<UInt64Array>().unwrap();
            ids.extend(id.values().iter().copied());
            for (k, n) in names.iter().enumerate() {
                let c = b.column_by_name(n).unwrap();
                let c = c.as_any().downcast_ref::<Float64Array>().unwrap();
                cols[k]
                    .extend((0..c.len()).map(|i| if c.is_null(i) { f64::NAN } else { c.value(i) }));
            }
        }
    }
    (ids, cols)
}

#[test]
fn the_wgpu_backend_runs_a_trial_like_the_cpu_reference() {
    let t = trial();
    let gpu_dir = tmp("wgpu");
    let gpu_opts = RunOptions {
        backend: Some(vpop::trial::resolve::BackendChoice::Wgpu),
        ..opts(&gpu_dir)
    };
    let report = match run_trial(&t, &gpu_opts) {
        Ok(r) => r,
        Err(e) if e.contains("not available") => {
            println!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(report.backend.name, "wgpu");
    let cpu_dir = tmp("wgpu-cpu-reference");
    run_trial(&t, &opts(&cpu_dir)).unwrap();
    let names = ["cp_auc", "cp_cmax", "cp_ctrough", "cp_time_above_1"];
    let (gid, got) = float_columns(&gpu_dir, &names);
    let (cid, want) = float_columns(&cpu_dir, &names);
    assert_eq!(gid, cid);
    assert_eq!(gid.len(), 5000);
    for (k, n) in names.iter().enumerate() {
        for i in 0..gid.len() {
            let (g, c) = (got[k][i], want[k][i]);
            // Time above a threshold is a difference of crossing times: absolute in hours.
            let tol = if n.contains("time_above") {
                1e-3
            } else {
                1e-4 * c.abs() + 1e-9
            };
            assert!((g - c).abs() <= tol, "{n} row {i}: wgpu {g} vs cpu {c}");
        }
    }
    use parquet::file::reader::FileReader;
    let reader = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(gpu_dir.join("part-00000.parquet")).unwrap(),
    )
    .unwrap();
    let kv: std::collections::HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["vpop.backend"], "wgpu");
    assert_eq!(kv["vpop.precision"], "f32");
    // Two host threads, each with an instance of the backend on the same device, taking
    // chunks of 500 as they come: every subject's values, bit for bit.
    let two_dir = tmp("wgpu-two-threads");
    let two = run_trial(
        &t,
        &RunOptions {
            chunk_size: Some(500),
            integrators: Some(2),
            output_dir: Some(two_dir.clone()),
            ..gpu_opts.clone()
        },
    )
    .unwrap();
    assert_eq!(two.integrators, 2);
    assert_eq!(two.parts_written, 5);
    let (a, b) = (
        rows_by_subject(&gpu_dir, &names),
        rows_by_subject(&two_dir, &names),
    );
    assert_eq!(a.len(), 5000);
    assert!(a == b, "two threads changed some subject's values");
}

/// A part in which no subject succeeds: the summary still counts every failure (the status
/// dictionary read back from Parquet holds only the labels present in the file).
#[test]
fn a_run_where_every_subject_fails_counts_every_failure() {
    let dir = tmp("all-fail");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stiff.vpm"),
        "param k = 0.1\nstate x\nd/dt(x) = -k * x * 1e50\noutput c = x\n",
    )
    .unwrap();
    let spec = "[trial]\nname = \"fails\"\nsubjects = 20\nseed = 1\n[model]\nfile = \"stiff.vpm\"\n\
                [[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"x\" }\n\
                [simulation]\nend = 1\nbackend = \"cpu\"\n[output]\ndir = \"out\"\nmetrics = [\"auc\"]\n";
    let trial = Trial::from_text(&dir.join("spec.toml"), spec).unwrap();
    let rep = run_trial(&trial, &opts(&dir.join("out"))).unwrap();
    assert_eq!((rep.arms[0].subjects, rep.arms[0].failed), (20, 20));
    // Why, by status: as written, and as read back from the parts by a resumed run.
    assert_eq!(rep.arms[0].failures, [("step_too_small".to_string(), 20)]);
    let resumed = run_trial(&trial, &opts(&dir.join("out"))).unwrap();
    assert_eq!(resumed.parts_resumed, 1);
    assert_eq!(resumed.arms[0].failures, rep.arms[0].failures);
    let text = vpop::trial::run::format_summary(&resumed, None);
    assert!(text.contains("20 failed (step_too_small 20;"), "{text}");
    // No chart of metrics no subject has: a clear error, not a blank image.
    let e = vpop::trial::report::report(&dir.join("out"), &dir.join("charts"), 100).unwrap_err();
    assert!(e.contains("no subject has a value to draw (c_auc)"), "{e}");
    assert!(!dir.join("charts/metrics.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Inter-occasion variability: clearance takes a new value at the second occasion (12 h),
/// where the second dose falls. One-compartment IV bolus, so every subject's AUC and Cmax
/// have closed forms in its two sampled clearances: on the CPU reference and on the WGSL
/// kernel in f64.
#[test]
fn arms_switch_parameters_between_occasions() {
    let dir = tmp("occasions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pop.toml"),
        r#"
[population]
name = "iov"

[parameters]
cl = "5 * exp(eta_cl + iov_cl)"
v = "50 * exp(eta_v)"

[[omega]]
etas = ["eta_cl", "eta_v"]
cv = [0.3, 0.2]

[[omega]]
etas = ["iov_cl"]
cv = [0.4]
occasion = true
"#,
    )
    .unwrap();
    let spec = r#"
[trial]
name = "iov"
subjects = 300
seed = 5

[model]
library = "one_cmt_iv"

[population]
file = "pop.toml"

[[arm]]
name = "two occasions"
dose = { amount = 100, into = "central", every = 12, count = 2 }
occasions = [0, 12]

[simulation]
end = 24
method = "tsit5"
rtol = 1e-10
atol = 1e-12
backend = "cpu"

[output]
dir = "out"
metrics = ["auc", "cmax"]
"#;
    let t = Trial::from_text(&dir.join("spec.toml"), spec).unwrap();
    let pop = vpop::population::Population::load(&dir.join("pop.toml")).unwrap();
    let mut c = vpop::population::SampledChunk::default();
    pop.sample_occasions(5, 0, 300, 2, &mut c);
    // On the CPU reference, and on the WGSL kernel in f64 where an adapter has it.
    let gpu_spec = spec.replace(
        "backend = \"cpu\"",
        "backend = \"wgpu\"\nprecision = \"f64\"",
    );
    let gpu_t = Trial::from_text(&dir.join("spec.toml"), &gpu_spec).unwrap();
    // A thousand occasions (all but two after the end): every subject carries every
    // occasion's parameters, so the default chunk shrinks (1 000 × 2 parameters × 8 bytes:
    // 16 384 subjects in 256 MiB); the closed forms below hold for it too, and its results
    // are the two-occasion run's.
    let many: Vec<String> = [0.0, 12.0]
        .into_iter()
        .chain((0..998).map(|k| 100.0 + k as f64))
        .map(|t| t.to_string())
        .collect();
    let many = spec.replace(
        "occasions = [0, 12]",
        &format!("occasions = [{}]", many.join(", ")),
    );
    let t_many = Trial::from_text(&dir.join("spec.toml"), &many).unwrap();
    for (t, name) in [(&t, "cpu"), (&gpu_t, "wgpu"), (&t_many, "many")] {
        let out = dir.join(name);
        if let Err(e) = run_trial(t, &opts(&out)) {
            assert!(name == "wgpu" && e.contains("not available"), "{e}");
            println!("SKIPPED ({name} part): {e}");
            continue;
        }
        let (ids, got) = float_columns(&out, &["cp_auc", "cp_cmax"]);
        assert_eq!(ids.len(), 300);
        let mut switched = 0;
        for (row, id) in ids.iter().enumerate() {
            let i = *id as usize;
            let (cl1, cl2, v) = (
                c.parameters[0][i],
                c.occasions[0].parameters[0][i],
                c.parameters[1][i],
            );
            assert_eq!(v, c.occasions[0].parameters[1][i]);
            let (k1, k2) = (cl1 / v, cl2 / v);
            let a12 = 100.0 * (-12.0 * k1).exp() + 100.0;
            let auc = (100.0 * (1.0 - (-12.0 * k1).exp()) / k1
                + a12 * (1.0 - (-12.0 * k2).exp()) / k2)
                / v;
            let cmax = a12 / v;
            for (k, want) in [auc, cmax].into_iter().enumerate() {
                let g = got[k][row];
                assert!(
                    (g / want - 1.0).abs() < 1e-8,
                    "{name}, subject {i}: {g} vs closed form {want}"
                );
            }
            // The result differs from one clearance all along: the switch happened.
            let one = (100.0 * (1.0 - (-12.0 * k1).exp()) / k1
                + a12 * (1.0 - (-12.0 * k1).exp()) / k1)
                / v;
            if (one / auc - 1.0).abs() > 1e-3 {
                switched += 1;
            }
        }
        assert!(
            switched > 250,
            "{name}: {switched} subjects changed clearance"
        );
    }

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("many").join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["identity"]["chunk_size"], 16384);
    assert_eq!(
        float_columns(&dir.join("many"), &["cp_auc", "cp_cmax"]),
        float_columns(&dir.join("cpu"), &["cp_auc", "cp_cmax"])
    );

    // Occasions must start at 0 and increase.
    let bad = spec.replace("occasions = [0, 12]", "occasions = [12, 0]");
    let err = match Trial::from_text(&dir.join("spec.toml"), &bad) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("decreasing occasions accepted"),
    };
    assert!(
        err.contains("spec.toml:") && err.contains("occasions"),
        "{err}"
    );
}

/// The trial spec with `extra` lines added to [simulation] and fewer subjects.
fn spec_with(subjects: u32, simulation: &str) -> String {
    SPEC.replace("subjects = 2500", &format!("subjects = {subjects}"))
        .replace("rtol = 1e-5\natol = 1e-7\n", simulation)
}

/// `backend = "wgpu"` with `precision = "f64"` integrates in f64 where the adapter has
/// SHADER_F64 (lavapipe has): the CPU run's metrics within 1e-9, and `vpop.precision = f64`.
#[test]
fn the_wgpu_backend_runs_a_trial_in_f64_like_the_cpu_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = spec_with(
        300,
        "rtol = 1e-10\natol = 1e-13\nbackend = \"wgpu\"\nprecision = \"f64\"\n",
    );
    let t = Trial::from_text(&root.join("spec.toml"), &text).unwrap();
    let gpu_dir = tmp("wgpu-f64");
    let report = match run_trial(&t, &opts(&gpu_dir)) {
        Ok(r) => r,
        Err(e) if e.contains("not available") => {
            println!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(report.backend.name, "wgpu");
    assert_eq!(report.backend.precision, vpop::backend::Precision::F64);
    let cpu_dir = tmp("wgpu-f64-cpu-reference");
    let cpu_opts = RunOptions {
        backend: Some(vpop::trial::resolve::BackendChoice::Cpu),
        ..opts(&cpu_dir)
    };
    run_trial(&t, &cpu_opts).unwrap();
    let names = ["cp_auc", "cp_cmax", "cp_ctrough", "cp_time_above_1"];
    let (gid, got) = float_columns(&gpu_dir, &names);
    let (cid, want) = float_columns(&cpu_dir, &names);
    assert_eq!(gid, cid);
    assert_eq!(gid.len(), 600);
    for (k, n) in names.iter().enumerate() {
        for i in 0..gid.len() {
            let (g, c) = (got[k][i], want[k][i]);
            assert!(
                (g - c).abs() <= 1e-9 * c.abs() + 1e-12,
                "{n} row {i}: wgpu {g} vs cpu {c}"
            );
        }
    }
    use parquet::file::reader::FileReader;
    let reader = parquet::file::reader::SerializedFileReader::new(
        std::fs::File::open(gpu_dir.join("part-00000.parquet")).unwrap(),
    )
    .unwrap();
    let kv: std::collections::HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["vpop.backend"], "wgpu");
    assert_eq!(kv["vpop.precision"], "f64");
    let _ = std::fs::remove_dir_all(&gpu_dir);
    let _ = std::fs::remove_dir_all(&cpu_dir);
}

/// Asking wgpu for f64 where the adapter has no SHADER_F64 (wgpu's GL backend never has it)
/// stops the run with a clear message, and an f32 kernel refuses a tolerance it cannot
/// resolve with a hint at f64: errors, never panics.
#[test]
fn f64_on_wgpu_without_shader_f64_and_f32_below_its_resolution_are_clear_errors() {
    let dir = tmp("wgpu-f64-missing");
    std::fs::create_dir_all(&dir).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = spec_with(10, "rtol = 1e-10\natol = 1e-13\nprecision = \"f64\"\n")
        .replace("populations/", &format!("{}/populations/", root.display()));
    let spec = dir.join("spec.toml");
    std::fs::write(&spec, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .args([
            "run",
            spec.to_str().unwrap(),
            "--backend",
            "wgpu",
            "--quiet",
        ])
        .env("WGPU_BACKEND", "gl")
        .env("XDG_RUNTIME_DIR", &dir)
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("backend 'wgpu' is not available"), "{err}");
    if err.contains("SHADER_F64") {
        assert!(err.contains("precision = \"f32\""), "{err}");
    } else {
        println!("no GL adapter here: {err}");
    }
    // f32 at rtol 1e-10 on whatever adapter there is.
    let t = Trial::from_text(
        &root.join("spec.toml"),
        &spec_with(10, "rtol = 1e-10\natol = 1e-13\n"),
    )
    .unwrap();
    let f32_opts = RunOptions {
        backend: Some(vpop::trial::resolve::BackendChoice::Wgpu),
        ..opts(&dir.join("out"))
    };
    match run_trial(&t, &f32_opts) {
        Err(e) if e.contains("not available") => println!("SKIPPED (f32 part): {e}"),
        Err(e) => assert!(
            e.contains("below what f32 resolves") && e.contains("precision = \"f64\""),
            "{e}"
        ),
        Ok(_) => panic!("rtol 1e-10 accepted in f32"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The parts' columns are encoded as `[output] compression` says: by default LZ4 with
/// byte-stream-split floating-point columns, no dictionary but on dictionary columns, and a
/// delta-encoded subject_id; zstd and snappy split the floating-point columns too;
/// `compression = "none"` leaves every column plain and uncompressed; `compression_level`
/// changes zstd's output. All read back to the same values, with this crate and (where
/// installed) pyarrow and DuckDB.
#[test]
fn parts_are_compressed_as_the_spec_says() {
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec.toml");
    let python = common::python_imports("pyarrow, duckdb");
    if !python {
        println!("SKIPPED (reading back with pyarrow and DuckDB): not installed");
    }
    let mut values = Vec::new();
    let mut zstd_parts = Vec::new();
    for (codec, lines) in [
        ("lz4", ""),
        ("zstd", "compression = \"zstd\"\n"),
        ("zstd", "compression = \"zstd\"\ncompression_level = -1\n"),
        ("snappy", "compression = \"snappy\"\n"),
        ("none", "compression = \"none\"\n"),
    ] {
        let text = SPEC
            .replace("subjects = 2500", "subjects = 300")
            .replace("[output]\n", &format!("[output]\n{lines}"));
        let trial = Trial::from_text(&root, &text).unwrap();
        let dir = tmp(&format!("codec-{codec}-{}", values.len()));
        run_trial(&trial, &opts(&dir)).unwrap();
        let part = dir.join("part-00000.parquet");
        let meta = SerializedFileReader::new(std::fs::File::open(&part).unwrap())
            .unwrap()
            .metadata()
            .clone();
        for rg in meta.row_groups() {
            for col in rg.columns() {
                let name = col.column_path().string();
                let enc = col.encodings().collect::<Vec<_>>();
                let compression = col.compression();
                let expected = match codec {
                    "zstd" => matches!(compression, Compression::ZSTD(_)),
                    "lz4" => compression == Compression::LZ4_RAW,
                    "snappy" => compression == Compression::SNAPPY,
                    _ => compression == Compression::UNCOMPRESSED,
                };
                assert!(expected, "{codec} {name}: {compression:?}");
                let float =
                    name.starts_with("cp_") || ["age", "wt", "cl", "v1"].contains(&name.as_str());
                if float && !name.contains("profile") {
                    assert!(
                        !enc.contains(&Encoding::RLE_DICTIONARY),
                        "{codec} {name}: {enc:?}"
                    );
                    assert_eq!(
                        enc.contains(&Encoding::BYTE_STREAM_SPLIT),
                        codec != "none",
                        "{codec} {name}: {enc:?}"
                    );
                }
                if name == "subject_id" {
                    assert!(
                        enc.contains(&Encoding::DELTA_BINARY_PACKED),
                        "{name}: {enc:?}"
                    );
                }
                if name == "arm" || name == "status" {
                    assert!(enc.contains(&Encoding::RLE_DICTIONARY), "{name}: {enc:?}");
                }
                // Statistics where they prune row groups: the subject ids, the arm, the
                // status; not on floating-point columns or categorical covariates.
                let stats = col.statistics();
                match name.as_str() {
                    "subject_id" | "arm" | "status" => {
                        let s = stats.unwrap_or_else(|| panic!("{name}: no statistics"));
                        assert!(s.min_bytes_opt().is_some(), "{name}: {s:?}");
                        if name == "arm" {
                            assert_eq!(s.min_bytes_opt(), s.max_bytes_opt());
                        }
                    }
                    "sex" => assert!(
                        stats.is_none_or(|s| s.min_bytes_opt().is_none()),
                        "{name}: {stats:?}"
                    ),
                    _ if float => assert!(
                        stats.is_none_or(|s| s.min_bytes_opt().is_none()),
                        "{name}: {stats:?}"
                    ),
                    _ => {}
                }
            }
        }
        if codec == "zstd" {
            zstd_parts.push(std::fs::read(&part).unwrap());
        }
        let cols = float_columns(&dir, &["cp_auc", "cp_cmax", "age"]);
        if python {
            let sum: f64 = cols.1[0].iter().sum();
            let script = format!(
                "import pyarrow.dataset as ds, duckdb, math\n\
                 t = ds.dataset('{d}', format='parquet').to_table()\n\
                 s = sum(x for x in t.column('cp_auc').to_pylist())\n\
                 (n, d) = duckdb.connect().execute(\"SELECT count(*), sum(cp_auc) FROM read_parquet('{d}/part-*.parquet')\").fetchone()\n\
                 assert t.num_rows == n == {rows}, (t.num_rows, n)\n\
                 assert math.isclose(s, {sum:?}, rel_tol=1e-12) and math.isclose(d, {sum:?}, rel_tol=1e-12), (s, d)\n",
                d = dir.display(),
                rows = cols.0.len(),
            );
            let out = std::process::Command::new("python3")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{codec}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        values.push(cols);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]));
    // The level reaches zstd (the files differ), the values do not change.
    assert_ne!(zstd_parts[0], zstd_parts[1]);
}

/// A backend that prefers large calls (the CUDA kernels, here emulated on the host) gets
/// consecutive chunks merged into one call; every subject's row is what it is when its chunk
/// is the only one in the call, bit for bit, and the parts are those of the chunking.
/// Every row's covariates and parameters, in both arms and every part, are the ones sampling
/// the population alone gives the subject (categorical covariates as their labels).
#[test]
fn rows_carry_the_sampled_covariates_and_parameters() {
    use arrow_array::{cast::AsArray, types::UInt16Type, Array};
    let t = trial();
    let pop = t.population.as_ref().unwrap();
    let mut c = vpop::population::SampledChunk::default();
    pop.sample(t.seed, 0, t.subjects as usize, &mut c);
    let dir = tmp("sampled-columns");
    run_trial(&t, &opts(&dir)).unwrap();
    let param_names = pop.parameter_names();
    let mut rows = 0;
    for arm in 0..2 {
        for b in common::arm_batches(&dir, arm) {
            let ids = b.column_by_name("subject_id").unwrap();
            let ids = ids.as_primitive::<arrow_array::types::UInt64Type>();
            let mut checked = 0;
            for (k, cov) in pop.covariate_names().into_iter().enumerate() {
                let col = b.column_by_name(cov).unwrap();
                for (r, &id) in ids.values().iter().enumerate() {
                    let want = c.covariates[k][id as usize];
                    match pop.covariate_labels(k) {
                        Some(labels) => {
                            let d = col.as_dictionary::<UInt16Type>();
                            let v = d.values().as_string::<i32>();
                            let key = d.keys().value(r) as usize;
                            assert_eq!(v.value(key), labels[want as usize], "{cov} of {id}");
                        }
                        None => {
                            let got = col.as_primitive::<arrow_array::types::Float64Type>();
                            assert_eq!(got.value(r).to_bits(), want.to_bits(), "{cov} of {id}");
                        }
                    }
                }
                checked += 1;
            }
            for field in b.schema().fields() {
                let Some(j) = param_names.iter().position(|p| p == field.name()) else {
                    continue;
                };
                let col = b.column_by_name(field.name()).unwrap();
                let got = col.as_primitive::<arrow_array::types::Float64Type>();
                assert_eq!(got.null_count(), 0);
                for (r, &id) in ids.values().iter().enumerate() {
                    let want = c.parameters[j][id as usize];
                    assert_eq!(got.value(r).to_bits(), want.to_bits(), "{field} of {id}");
                }
                checked += 1;
            }
            assert!(checked >= 9, "{checked} columns checked");
            rows += b.num_rows();
        }
    }
    assert_eq!(rows, 2 * 2500);
}

#[cfg(feature = "cuda")]
#[test]
fn chunks_merged_into_one_call_give_every_subject_its_own_row() {
    use vpop::backend::Backend;
    // The high arm doses per kilogram: merged calls carry the weight column.
    let spec = SPEC.replace(
        r#"dose = { amount = 200, into = "depot", every = 24, count = 2 }"#,
        r#"dose = { amount = 3, per = "wt", into = "depot", every = 24, count = 2 }"#,
    );
    assert_ne!(spec, SPEC);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = Trial::from_text(&root.join("spec.toml"), &spec).unwrap();
    let model = std::sync::Arc::new(t.compiled.clone());
    let make = || -> Option<Box<dyn Backend>> {
        match vpop::backend::cuda::EmulatedCuda::new(model.clone(), vpop::backend::Precision::F32) {
            Ok(b) => Some(Box::new(b)),
            Err(e) => {
                println!("SKIPPED: {e}");
                None
            }
        }
    };
    let Some(b) = make() else { return };
    assert!(b.preferred_batch() > 2500);
    let run = |b: Box<dyn Backend>, dir: &Path, chunk: usize| {
        let o = RunOptions {
            chunk_size: Some(chunk),
            ..opts(dir)
        };
        let r = vpop::trial::run::run_trial_on(&t, &o, b, String::new(), std::time::Instant::now())
            .unwrap();
        assert!(r.complete);
        r
    };
    let merged = tmp("merged");
    let r = run(b, &merged, 700);
    assert_eq!(r.parts_written, 4);
    let single = tmp("single");
    run(make().unwrap(), &single, 2500);
    let cols = ["cp_auc", "cp_cmax", "cp_ctrough", "cp_time_above_1", "cl"];
    let (a, b) = (
        rows_by_subject(&merged, &cols),
        rows_by_subject(&single, &cols),
    );
    assert_eq!(a.len(), 2 * 2500);
    assert!(a == b, "merged calls changed some subject's row");
    // Two host threads, each with an emulation of its own, take alternate calls of merged
    // chunks: the same files.
    let two = tmp("merged-two-threads");
    let o = RunOptions {
        chunk_size: Some(700),
        integrators: Some(2),
        ..opts(&two)
    };
    let r2 = vpop::trial::run::run_trial_on(
        &t,
        &o,
        make().unwrap(),
        String::new(),
        std::time::Instant::now(),
    )
    .unwrap();
    assert!(r2.complete);
    assert_eq!(r2.integrators, 2);
    assert!(
        files(&two) == files(&merged),
        "two integration threads changed the parts"
    );
    // Profiles too, subject by subject (f16 bits, rows in subject order within each arm).
    let profiles = |dir: &Path| {
        use arrow_array::{Array, FixedSizeListArray, Float16Array, UInt64Array};
        let mut rows = std::collections::BTreeMap::new();
        for arm in 0..2 {
            for b in common::arm_batches(dir, arm) {
                let ids = b.column_by_name("subject_id").unwrap();
                let ids = ids.as_any().downcast_ref::<UInt64Array>().unwrap();
                let p = b.column_by_name("cp_profile").unwrap();
                let p = p.as_any().downcast_ref::<FixedSizeListArray>().unwrap();
                for (r, id) in ids.values().iter().enumerate() {
                    let v = p.value(r);
                    let v = v.as_any().downcast_ref::<Float16Array>().unwrap();
                    let bits: Vec<u16> = v.values().iter().map(|x| x.to_bits()).collect();
                    rows.insert((*id, arm), bits);
                }
            }
        }
        rows
    };
    let (pa, pb) = (profiles(&merged), profiles(&single));
    assert_eq!(pa.len(), 2 * 2500);
    assert!(pa == pb, "merged calls changed some subject's profile");
}

/// A backend that fails ends the run with its error, while the sampler is still ahead (it
/// must not be left waiting on a full channel), for backends that take chunk by chunk and for
/// those that take merged chunks.
#[test]
fn a_failing_backend_ends_the_run_with_its_error() {
    use vpop::backend::{ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput};
    struct Failing(usize);
    impl Backend for Failing {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                name: "failing",
                device: "none".into(),
                precision: vpop::backend::Precision::F64,
            }
        }
        fn run_chunk(
            &mut self,
            _arm: &ArmPlan,
            _input: &ChunkInput<'_>,
            _out: &mut ChunkOutput,
        ) -> Result<(), BackendError> {
            Err(BackendError::Failed("the device fell off the bus".into()))
        }
        fn run_records(
            &mut self,
            _programs: &[&vpop::backend::records::Program],
            _solver: &vpop::solver::SolverOptions,
        ) -> Result<Vec<vpop::backend::records::RecordsOutcome>, BackendError> {
            Err(BackendError::Failed("no records".into()))
        }
        fn preferred_batch(&self) -> usize {
            self.0
        }
        fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
            Some(Ok(Box::new(Failing(self.0))))
        }
    }
    for (batch, integrators) in [(1, 1), (500, 1), (1, 3), (500, 2)] {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = trial();
            let dir = tmp(&format!("failing-{batch}-{integrators}"));
            let o = RunOptions {
                chunk_size: Some(50),
                integrators: Some(integrators),
                ..opts(&dir)
            };
            let r = vpop::trial::run::run_trial_on(
                &t,
                &o,
                Box::new(Failing(batch)),
                String::new(),
                std::time::Instant::now(),
            );
            let _ = tx.send(r.map(|_| ()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the run did not end");
        let err = r.unwrap_err();
        assert!(err.contains("fell off the bus"), "{err}");
    }
}

/// Several host threads, each driving an instance of its own of a backend that prefers
/// merged calls, take calls as they come; the parts, the manifest's record of them and the
/// summary are those of one thread, and every thread took calls. A sibling that cannot be
/// opened is an error when the threads were asked for, and one thread runs otherwise.
#[test]
fn several_integration_threads_write_the_files_of_one() {
    use std::sync::{Arc, Mutex};
    use vpop::backend::{ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput};
    type Calls = Arc<Mutex<Vec<std::thread::ThreadId>>>;
    struct Threaded {
        cpu: vpop::backend::cpu::CpuBackend,
        model: Arc<vpop::model::CompiledModel>,
        calls: Calls,
        /// Siblings left to open without an error (shared by the instances).
        siblings: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Backend for Threaded {
        fn info(&self) -> BackendInfo {
            self.cpu.info()
        }
        fn run_chunk(
            &mut self,
            arm: &ArmPlan,
            input: &ChunkInput<'_>,
            out: &mut ChunkOutput,
        ) -> Result<(), BackendError> {
            self.calls.lock().unwrap().push(std::thread::current().id());
            // Long enough for the other threads to take the next calls meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(15));
            self.cpu.run_chunk(arm, input, out)
        }
        fn run_records(
            &mut self,
            programs: &[&vpop::backend::records::Program],
            solver: &vpop::solver::SolverOptions,
        ) -> Result<Vec<vpop::backend::records::RecordsOutcome>, BackendError> {
            self.cpu.run_records(programs, solver)
        }
        fn preferred_batch(&self) -> usize {
            300
        }
        fn integrators(&self) -> usize {
            3
        }
        fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.siblings.load(SeqCst);
            if left == 0 {
                return Some(Err(BackendError::Failed("out of device memory".into())));
            }
            self.siblings.store(left - 1, SeqCst);
            Some(Ok(Box::new(Threaded {
                cpu: vpop::backend::cpu::CpuBackend::new(self.model.clone()),
                model: self.model.clone(),
                calls: self.calls.clone(),
                siblings: self.siblings.clone(),
            })))
        }
    }
    let t = trial();
    let model = Arc::new(t.compiled.clone());
    let backend = |siblings: usize, calls: &Calls| {
        Box::new(Threaded {
            cpu: vpop::backend::cpu::CpuBackend::new(model.clone()),
            model: model.clone(),
            calls: calls.clone(),
            siblings: Arc::new(siblings.into()),
        })
    };
    let run = |name: &str, integrators: Option<usize>, siblings: usize, calls: &Calls| {
        let dir = tmp(name);
        let o = RunOptions {
            chunk_size: Some(100),
            integrators,
            ..opts(&dir)
        };
        let r = vpop::trial::run::run_trial_on(
            &t,
            &o,
            backend(siblings, calls),
            String::new(),
            std::time::Instant::now(),
        );
        (r, dir)
    };
    let one_calls = Calls::default();
    let (one, one_dir) = run("threads-one", Some(1), 5, &one_calls);
    let one = one.unwrap();
    assert_eq!(one.integrators, 1);
    let many_calls = Calls::default();
    let (many, many_dir) = run("threads-three", None, 5, &many_calls);
    let many = many.unwrap();
    assert!(one.complete && many.complete);
    assert_eq!(many.integrators, 3);
    assert_eq!(one.parts_written, 25);
    assert!(
        files(&one_dir) == files(&many_dir),
        "the threads changed the parts"
    );
    let manifest = |d: &Path| {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("_manifest.json")).unwrap())
                .unwrap();
        let mut parts = m["parts"].as_array().unwrap().clone();
        parts.sort_by_key(|p| p["part"].as_u64());
        parts
    };
    assert_eq!(manifest(&one_dir), manifest(&many_dir));
    assert_eq!(one.arms, many.arms);
    summary_matches_the_files(&many, &many_dir, 0.5);
    // Calls of at most three chunks (300 subjects) for 25 chunks.
    assert!(many.calls >= 9, "{} calls", many.calls);
    let threads: std::collections::HashSet<_> =
        many_calls.lock().unwrap().iter().copied().collect();
    assert_eq!(
        threads.len(),
        3,
        "calls came from {} threads",
        threads.len()
    );
    let threads: std::collections::HashSet<_> = one_calls.lock().unwrap().iter().copied().collect();
    assert_eq!(threads.len(), 1);
    // A sibling that fails to open: an error when asked for, one thread fewer by default.
    let (asked, asked_dir) = run("threads-asked", Some(3), 1, &Calls::default());
    let err = asked.unwrap_err();
    assert!(
        err.contains("integration thread 3") && err.contains("out of device memory"),
        "{err}"
    );
    // Found before anything is written: no manifest of a run that never started.
    assert!(
        !asked_dir.join("_manifest.json").exists(),
        "a run that could not start its threads left a manifest"
    );
    let (fewer, fewer_dir) = run("threads-fewer", None, 1, &Calls::default());
    let fewer = fewer.unwrap();
    assert_eq!(fewer.integrators, 2);
    assert!(files(&fewer_dir) == files(&one_dir));
    for d in [one_dir, many_dir, fewer_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A backend that offers no further instance (the CPU reference, whose calls keep every core
/// busy) runs on one host thread however many are asked for, and the report says why; asked
/// for none, it says nothing.
#[test]
fn a_backend_without_siblings_runs_on_one_host_thread_and_says_why() {
    let t = trial();
    let (asked_dir, default_dir) = (tmp("one-thread-asked"), tmp("one-thread-default"));
    let asked = run_trial(
        &t,
        &RunOptions {
            integrators: Some(3),
            ..opts(&asked_dir)
        },
    )
    .unwrap();
    assert_eq!(asked.backend.name, "cpu");
    assert_eq!(asked.integrators, 1);
    assert_eq!(
        asked.fewer_integrators.as_deref(),
        Some("each of its calls keeps every core busy")
    );
    let default = run_trial(&t, &opts(&default_dir)).unwrap();
    assert_eq!((default.integrators, default.fewer_integrators), (1, None));
    for d in [asked_dir, default_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The CUDA backend on two host threads (two instances on the same devices, each with its
/// own streams and buffers, sharing the compiled kernels) writes the parts that one thread
/// writes, byte for byte. Needs a CUDA device (`SKIPPED` otherwise).
#[test]
fn cuda_on_two_host_threads_writes_the_files_of_one() {
    let t = trial();
    let run = |name: &str, integrators: usize| {
        let dir = tmp(name);
        let o = RunOptions {
            backend: Some(vpop::trial::resolve::BackendChoice::Cuda),
            chunk_size: Some(300),
            integrators: Some(integrators),
            ..opts(&dir)
        };
        run_trial(&t, &o).map(|r| (r, dir))
    };
    let (one, one_dir) = match run("cuda-one-thread", 1) {
        Ok(r) => r,
        Err(e) if e.contains("not available") => {
            println!("SKIPPED: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (two, two_dir) = run("cuda-two-threads", 2).unwrap();
    assert_eq!((one.integrators, two.integrators), (1, 2));
    assert!(one.complete && two.complete);
    assert_eq!(two.parts_written, 9);
    assert!(
        files(&one_dir) == files(&two_dir),
        "two threads changed the parts"
    );
    assert_eq!(one.arms, two.arms);
    println!(
        "cuda, {} calls on one thread, {} on two ({})",
        one.calls, two.calls, two.backend.device
    );
}

/// Each arm's summary (counted while the parts were written, quantiles by selection) equals
/// what sorting the metric columns read back from the part files gives: type-7 median and 5th
/// and 95th percentiles of the non-null values, subjects, and the share of defined
/// `cp_ctrough` values above `above`.
fn summary_matches_the_files(r: &vpop::trial::RunReport, dir: &Path, above: f64) {
    use arrow_array::{Array, Float64Array};
    let column = |arm: usize, name: &str| -> (usize, Vec<f64>) {
        let (mut rows, mut values) = (0, Vec::new());
        for batch in common::arm_batches(dir, arm) {
            let col = batch.column_by_name(name).unwrap();
            let col = col.as_any().downcast_ref::<Float64Array>().unwrap();
            rows += col.len();
            values.extend(col.iter().flatten());
        }
        (rows, values)
    };
    let type7 = |sorted: &[f64], p: f64| {
        let h = (sorted.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(sorted.len() - 1);
        let frac = h - lo as f64;
        if frac == 0.0 {
            sorted[lo]
        } else {
            sorted[lo] + frac * (sorted[hi] - sorted[lo])
        }
    };
    for (a, arm) in r.arms.iter().enumerate() {
        for m in &arm.metrics {
            let (rows, mut v) = column(a, &m.column);
            assert_eq!(arm.subjects, rows as u64, "{}", m.column);
            v.sort_by(f64::total_cmp);
            assert_eq!(m.n, v.len() as u64, "{}", m.column);
            let want = [type7(&v, 0.5), type7(&v, 0.05), type7(&v, 0.95)];
            assert_eq!([m.median, m.p5, m.p95], want, "arm {a} {}", m.column);
        }
        let (_, trough) = column(a, "cp_ctrough");
        let hit = trough.iter().filter(|x| **x > above).count();
        assert_eq!(
            arm.target_attainment.unwrap(),
            hit as f64 / trough.len() as f64,
            "arm {a}"
        );
    }
}

/// Every trial spec under examples/ loads (its model, population and arms resolve), as
/// `vpop check` does.
#[test]
fn every_example_trial_spec_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml")
            && std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .any(|l| l.trim() == "[trial]")
        {
            Trial::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            loaded.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    loaded.sort();
    assert!(loaded.len() >= 4, "{loaded:?}");
    println!("{loaded:?}");
}

/// `vpop bench`'s accuracy reference is a method that can reach its tolerance: an RK4 trial
/// (fixed step: its own settings at rtol 1e-10 would be the run itself, an error of 0) is
/// measured against Tsit5, a Rosenbrock23 trial against Rodas4; the others against
/// themselves.
#[test]
fn the_bench_reference_is_a_method_that_reaches_its_tolerance() {
    use vpop::trial::bench::{run_bench, BenchOptions, Target};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("examples/quickstart.toml");
    let spec = std::fs::read_to_string(&path).unwrap();
    for (method, extra, reference) in [
        ("rk4", "dt = 0.05\n", "tsit5"),
        ("rosenbrock23", "", "rodas4"),
        ("dopri5", "", "dopri5"),
    ] {
        let text = spec.replace(
            "method = \"tsit5\"\n",
            &format!("method = \"{method}\"\n{extra}"),
        );
        assert_ne!(text, spec);
        let trial = vpop::trial::Trial::from_text(&path, &text).unwrap();
        let opts = BenchOptions {
            subjects: 32,
            cpu_subjects: 32,
            targets: vec![Target::Cpu],
            ..Default::default()
        };
        let rep = run_bench(&trial, &opts, &mut |_| {}).unwrap();
        assert!(
            rep.reference
                .starts_with(&format!("CPU f64, {reference} at rtol 1e-10")),
            "{method}: {}",
            rep.reference
        );
        let err = rep.rows[0].max_rel_auc_cmax;
        // A real comparison: the trial's own error at rtol 1e-6 (or dt 0.05), not 0.
        assert!(err > 1e-12 && err < 1e-4, "{method}: {err}");
    }
}

/// Readers select columns by name: a covariate written beside the model's parameters may not
/// be named like one of them (nor like a metric), which a population for another model can be.
#[test]
fn two_columns_of_one_name_are_refused() {
    let dir = tmp("same-name");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pop.toml"),
        "[population]\nname = \"p\"\n[covariates.v]\ndist = \"normal\"\nmean = 30\nsd = 3\n\
         [covariates.cp_auc]\ndist = \"normal\"\nmean = 1\nsd = 0.1\n",
    )
    .unwrap();
    let spec = |parameters: bool| {
        format!(
            "[trial]\nname = \"n\"\nsubjects = 10\nseed = 1\n[model]\nlibrary = \"one_cmt_oral\"\n\
             [population]\nfile = \"pop.toml\"\n\
             [[arm]]\nname = \"a\"\ndose = {{ amount = 1, into = \"depot\" }}\n\
             [simulation]\nend = 24\n[output]\ndir = \"out\"\nmetrics = [\"cmax\"{}]\nparameters = {parameters}\n",
            if parameters { "" } else { ", \"auc\"" }
        )
    };
    let e = Trial::from_text(&dir.join("spec.toml"), &spec(true))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("spec.toml:8:8: ")
            && e.contains("two columns named 'v' (a covariate of the population and a parameter of the model)"),
        "{e}"
    );
    let e = Trial::from_text(&dir.join("spec.toml"), &spec(false))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(
            "two columns named 'cp_auc' (a covariate of the population and a metric column)"
        ),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fixed loading dose beside per-kilogram maintenance doses in one arm: only the lines with
/// `per` are multiplied by the subject's weight. For a linear model the area to infinity is
/// the dose over the clearance, so each subject's AUC times its clearance is the amount it
/// received: 100 + 3 × 1.5 × wt in the mixed arm, 3 × 1.5 × wt in the per-kilogram arm. On
/// the CPU reference, and on the WGSL kernels in f64 where an adapter has it.
#[test]
fn fixed_and_per_kilogram_doses_share_an_arm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = |backend: &str| {
        format!(
            r#"
[trial]
name = "loading dose"
subjects = 200
seed = 5

[model]
library = "two_cmt_iv"

[population]
library = "adult_healthy"

[[arm]]
name = "mixed"
doses = [{{ amount = 100, into = "central" }},
         {{ amount = 1.5, per = "wt", into = "central", start = 24, every = 24, count = 3 }}]

[[arm]]
name = "per_kg"
dose = {{ amount = 1.5, per = "wt", into = "central", start = 24, every = 24, count = 3 }}

[simulation]
end = 1500
rtol = 1e-10
atol = 1e-12
{backend}

[output]
dir = "unused"
metrics = ["auc"]
parameters = true
"#
        )
    };
    let check = |dir: &Path, what: &str| {
        let (ids, cols) = float_columns(dir, &["cp_auc", "cl", "wt"]);
        assert_eq!(ids.len(), 400, "{what}");
        let mut seen = std::collections::HashMap::new();
        for (r, id) in ids.iter().enumerate() {
            // Rows of a subject come arm by arm, in the spec's order.
            let arm = *seen.entry(*id).and_modify(|k| *k += 1).or_insert(0usize);
            let (auc, cl, wt) = (cols[0][r], cols[1][r], cols[2][r]);
            let given = 3.0 * 1.5 * wt + if arm == 0 { 100.0 } else { 0.0 };
            let err = (auc * cl / given - 1.0).abs();
            assert!(
                err < 1e-7,
                "{what}: subject {id} arm {arm}: {auc} × {cl} vs {given}"
            );
        }
    };
    // `vpop check` says which lines are per kilogram.
    let dir = tmp("per-line-check");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spec.toml"), spec("")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("check")
        .arg(dir.join("spec.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  arm         mixed (2 dose lines, 1 per wt)\n")
            && stdout.contains("  arm         per_kg (1 dose line, all per wt)\n"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let cpu = tmp("per-line-cpu");
    let t = Trial::from_text(&root.join("spec.toml"), &spec("")).unwrap();
    run_trial(&t, &opts(&cpu)).unwrap();
    check(&cpu, "cpu");
    let _ = std::fs::remove_dir_all(&cpu);
    let text = spec("backend = \"wgpu\"\nprecision = \"f64\"");
    let t = Trial::from_text(&root.join("spec.toml"), &text).unwrap();
    let gpu = tmp("per-line-wgpu");
    match run_trial(&t, &opts(&gpu)) {
        Ok(_) => check(&gpu, "wgpu f64"),
        Err(e) if e.contains("not available") || e.contains("SHADER_F64") => {
            println!("SKIPPED: {e}")
        }
        Err(e) => panic!("{e}"),
    }
    let _ = std::fs::remove_dir_all(&gpu);
}

/// A trial whose times f32 kernels would hold too coarsely says so (`vpop check`, and
/// `vpop run` on an f32 GPU backend): a profile every 0.05 h to 20 000 h, where f32 resolves
/// time to about 1.2e-3 h. The test trial's times (to 48 h, 12 h apart) are not noted.
#[test]
fn times_too_fine_for_f32_are_noted() {
    assert!(trial().f32_time_note().is_none());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let long = SPEC.replace("end = 48", "end = 20000").replace(
        "profile = { every = 12,",
        "profile = { every = 0.05, from = 19990,",
    );
    assert_ne!(long, SPEC);
    let t = Trial::from_text(&root.join("spec.toml"), &long).unwrap();
    let note = t.f32_time_note().expect("no note");
    assert!(
        note.contains("f32 kernels resolve time to about 1.2e-3 at 20000")
            && note.contains("closest two times of this trial (0.05)"),
        "{note}"
    );
}

/// A time above over a window late in a long run, whose crossings f32 kernels place to the
/// time resolution there, is noted with the error to expect (about 2.4e-7 · b/(b − a): 1.3e-4
/// measured over the last interval of a year); areas over windows, the test trial's metrics
/// and a whole-run time above are not; an infusion's duration counts among the closest
/// times.
#[test]
fn windowed_metrics_late_in_a_long_run_are_noted_for_f32() {
    assert!(trial().f32_time_above_note().is_none());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let year = SPEC
        .replace("end = 48", "end = 8760")
        .replace("every = 12, count = 4", "every = 12, count = 730")
        .replace(
            "metrics = [\"auc\",",
            "metrics = [\"auc(8700, 8712)\", \"auc\",",
        );
    // Areas over windows are sums of the areas between stops: no note.
    let t = Trial::from_text(&root.join("spec.toml"), &year).unwrap();
    assert!(
        t.f32_time_above_note().is_none(),
        "{:?}",
        t.f32_time_above_note()
    );
    // A time above over the last interval of the year places its crossings to f32's time
    // resolution at 8760.
    let above = year.replace(
        "\"time_above(1.0)\"",
        "\"time_above(1.0)\", \"time_above_last_interval(1.0)\"",
    );
    let t = Trial::from_text(&root.join("spec.toml"), &above).unwrap();
    let note = t.f32_time_above_note().expect("no note");
    assert!(
        note.contains("cp_time_above_1_last_interval over [8748, 8760]")
            && note.contains("relative errors of about 2e-4"),
        "{note}"
    );
    let infusion = SPEC.replace(
        "every = 24, count = 2 }",
        "every = 24, count = 2, duration = 0.001 }",
    );
    let t = Trial::from_text(&root.join("spec.toml"), &infusion).unwrap();
    let note = t.f32_time_note().expect("no note");
    assert!(
        note.contains("closest two times of this trial (0.001)"),
        "{note}"
    );
}

/// A metric no subject of an arm can have (the trough of a single dose) is a note before the
/// run, and a target on it is reported as undefined, not as "NaN %"; so is a fixed step
/// longer than the time between two doses.
#[test]
fn a_metric_no_subject_can_have_is_a_note_and_its_target_undefined() {
    let dir = tmp("single-dose-trough");
    let spec = format!(
        "[trial]\nname = \"one dose\"\nsubjects = 20\nseed = 1\n[model]\nlibrary = \"one_cmt_iv\"\n\
         [[arm]]\nname = \"single\"\ndose = {{ amount = 100, into = \"central\" }}\n\
         [simulation]\nend = 24\nbackend = \"cpu\"\n[output]\ndir = \"{}\"\n\
         metrics = [\"auc\", \"ctrough\"]\ntarget = {{ metric = \"cp_ctrough\", above = 1.0 }}\n",
        dir.display()
    );
    let t = Trial::from_text(&dir.join("spec.toml"), &spec).unwrap();
    assert_eq!(
        t.design_notes(),
        [
            "arm 'single': no subject will have a value of cp_ctrough: a trough is the value \
          before the last of several doses (or before a steady-state dose given alone), and the \
          arm gives one by the end"
        ]
    );
    // A fixed step longer than the dosing interval is a note too.
    let rk4 = spec
        .replace(
            "into = \"central\" }",
            "into = \"central\", every = 12, count = 2 }",
        )
        .replace("end = 24", "end = 24\nmethod = \"rk4\"\ndt = 30");
    let notes = Trial::from_text(&dir.join("spec.toml"), &rk4)
        .unwrap()
        .design_notes();
    assert_eq!(
        notes,
        [
            "arm 'single': the fixed step dt = 30 is longer than the 12 between two of its doses, \
          so each such interval is integrated in one step: take dt a small fraction of it"
        ]
    );
    let report = run_trial(&t, &opts(&dir)).unwrap();
    let summary = vpop::trial::run::format_summary(&report, t.target.as_ref());
    assert!(
        summary.contains(
            "probability of target attainment (cp_ctrough > 1): undefined, no subject has a \
             value of cp_ctrough"
        ) && !summary.contains("NaN %"),
        "{summary}"
    );
}

/// A tolerance the backend's precision does not resolve (rtol below 1e-7 in f32) is refused
/// before anything is written: no manifest is left that claims a run which cannot be resumed.
/// The same arm at rtol 1e-7 passes that check and reaches the backend.
#[test]
fn a_tolerance_the_precision_does_not_resolve_is_refused_before_anything_is_written() {
    use vpop::backend::{ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput};
    struct F32Only;
    impl Backend for F32Only {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                name: "f32-only",
                device: "none".into(),
                precision: vpop::backend::Precision::F32,
            }
        }
        fn run_chunk(
            &mut self,
            _arm: &ArmPlan,
            _input: &ChunkInput<'_>,
            _out: &mut ChunkOutput,
        ) -> Result<(), BackendError> {
            Err(BackendError::Failed("reached the backend".into()))
        }
        fn run_records(
            &mut self,
            _programs: &[&vpop::backend::records::Program],
            _solver: &vpop::solver::SolverOptions,
        ) -> Result<Vec<vpop::backend::records::RecordsOutcome>, BackendError> {
            Err(BackendError::Failed("reached the backend".into()))
        }
    }
    for (rtol, refused) in [(1e-8, true), (1e-7, false)] {
        let mut t = trial();
        let last = t.arms.len() - 1;
        t.arms[last].plan.solver.rtol = rtol;
        let dir = tmp(&format!("f32-refused-{rtol:e}"));
        let err = vpop::trial::run::run_trial_on(
            &t,
            &opts(&dir),
            Box::new(F32Only),
            String::new(),
            std::time::Instant::now(),
        )
        .map(|_| ())
        .unwrap_err();
        if refused {
            let arm = &t.arms[last].plan.name;
            assert!(
                err.contains(&format!(
                    "arm '{arm}': rtol 1e-8 is below what f32 resolves"
                )),
                "{err}"
            );
            assert!(!dir.join("_manifest.json").exists(), "a manifest was left");
        } else {
            assert!(err.contains("reached the backend"), "{err}");
        }
    }
}
