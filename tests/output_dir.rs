//! One output directory, many writers: the shards of a run share it, and nothing else does.
//! Manifests of other runs (another spec, input file, seed, subject count, chunk size, backend
//! or precision, or another revision of the rules that made the values) are refused, part files
//! no manifest of the run accounts for are refused, `--overwrite` removes every manifest and
//! part of vpop's (and nothing else), a manifest that names files outside the directory is
//! refused and none of its files touched, shards started together leave each other's
//! temporary files alone, and two runs writing the same shard at once are refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

mod common;

use vpop::output::Shard;
use vpop::trial::{run_trial, RunOptions, Trial};

fn spec(subjects: u64, seed: u64) -> String {
    format!(
        r#"
[trial]
name = "shared directory"
subjects = {subjects}
seed = {seed}

[model]
library = "one_cmt_oral"

[population]
file = "{pop}"

[[arm]]
name = "daily"
dose = {{ amount = 100, into = "depot", every = 24, count = 2 }}

[simulation]
end = 48
rtol = 1e-5
atol = 1e-7
chunk_size = 100
backend = "cpu"

[output]
dir = "unused"
metrics = ["auc", "cmax"]
"#,
        pop = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("populations/adult_healthy.toml")
            .display()
    )
}

fn trial(subjects: u64, seed: u64) -> Trial {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Trial::from_text(&root.join("spec.toml"), &spec(subjects, seed)).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-outdir-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        quiet: true,
        output_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

fn shard(dir: &Path, k: u64, n: u64) -> RunOptions {
    RunOptions {
        shard: Some(Shard { k, n }),
        ..opts(dir)
    }
}

fn overwrite(o: RunOptions) -> RunOptions {
    RunOptions {
        overwrite: true,
        ..o
    }
}

/// Every file of a directory with its bytes, by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The part files only.
fn parts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    contents(dir)
        .into_iter()
        .filter(|(n, _)| n.starts_with("part-") && n.ends_with(".parquet"))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    contents(dir).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn shards_of_different_runs_never_share_a_directory() {
    let t = trial(400, 99);
    let whole = tmp("whole");
    run_trial(&t, &opts(&whole)).unwrap();

    // Shard 1/2 of one run, then shards of runs that differ in one thing each.
    let dir = tmp("mixed");
    run_trial(&t, &shard(&dir, 1, 2)).unwrap();
    let before = contents(&dir);
    let mut other_chunk = trial(400, 99);
    other_chunk.chunk_size = Some(50);
    for (other, n, what) in [
        (trial(400, 7), 2, "seed 99"),
        (trial(800, 99), 2, "400 subjects"),
        (trial(800, 7), 3, "400 subjects"),
        (other_chunk, 2, "chunk size 100"),
    ] {
        let e = run_trial(&other, &shard(&dir, 2, n)).unwrap_err();
        assert!(e.contains("different run") && e.contains(what), "{e}");
        assert!(e.contains("--overwrite"), "{e}");
        assert_eq!(
            contents(&dir),
            before,
            "a refused shard changed the directory"
        );
    }

    // A shard of another run into the directory of a complete unsharded run.
    let complete = tmp("complete");
    run_trial(&t, &opts(&complete)).unwrap();
    let before = contents(&complete);
    let e = run_trial(&trial(400, 7), &shard(&complete, 1, 2)).unwrap_err();
    assert!(
        e.contains("different run") && e.contains("_manifest.json"),
        "{e}"
    );
    assert_eq!(contents(&complete), before);

    // The same run unsharded over its complete shards: their parts are its own.
    let sharded = tmp("sharded");
    for k in 1..=2 {
        run_trial(&t, &shard(&sharded, k, 2)).unwrap();
    }
    let r = run_trial(&t, &opts(&sharded)).unwrap();
    assert!(r.complete);
    assert_eq!((r.parts_resumed, r.parts_written), (4, 0));
    assert!(parts(&sharded) == parts(&whole));
    assert_eq!(r.arms, run_trial(&t, &opts(&whole)).unwrap().arms);
    // And a shard of it beside the unsharded run's manifest resumes from that.
    let r = run_trial(&t, &shard(&whole, 2, 4)).unwrap();
    assert_eq!((r.parts_resumed, r.parts_written), (1, 0));
}

#[test]
fn overwrite_removes_every_manifest_and_part_of_vpop_and_nothing_else() {
    let small = trial(400, 99);
    let fresh = tmp("fresh");
    run_trial(&small, &opts(&fresh)).unwrap();
    let others = [
        "notes.txt",
        ".editor-swap.tmp",
        "part-1.csv",
        "_manifest.json.bak",
        "part-00001.parquet.orig",
    ];
    for damage in ["truncated", "deleted"] {
        let dir = tmp(damage);
        run_trial(&trial(1200, 99), &opts(&dir)).unwrap();
        for f in others {
            std::fs::write(dir.join(f), "not vpop's").unwrap();
        }
        let manifest = dir.join("_manifest.json");
        match damage {
            "truncated" => std::fs::write(&manifest, "").unwrap(),
            _ => std::fs::remove_file(&manifest).unwrap(),
        }
        let e = run_trial(&small, &opts(&dir)).unwrap_err();
        let why = match damage {
            "truncated" => "the run's manifest cannot be read",
            _ => "part files that no manifest of this run accounts for",
        };
        assert!(e.contains(why) && e.contains("--overwrite"), "{e}");
        let r = run_trial(&small, &overwrite(opts(&dir))).unwrap();
        assert!(r.complete);
        assert!(
            parts(&dir) == parts(&fresh),
            "old parts left beside the new"
        );
        for f in others {
            assert!(dir.join(f).exists(), "{f} removed");
        }
    }

    // After the shards of another run: their manifests and parts go too, and the charts
    // `vpop report` drew of it in its default folders.
    let dir = tmp("after-shards");
    for k in 1..=3 {
        run_trial(&trial(1200, 7), &shard(&dir, k, 3)).unwrap();
    }
    for folder in ["_report", "_report-partial"] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        std::fs::write(dir.join(folder).join("cp_auc.png"), "a chart").unwrap();
    }
    run_trial(&small, &overwrite(opts(&dir))).unwrap();
    let mut want: Vec<String> = (0..4).map(|c| format!("part-{c:05}.parquet")).collect();
    want.insert(0, "_manifest.json".into());
    assert_eq!(names(&dir), want);
    assert!(parts(&dir) == parts(&fresh));
    // The same run again: nothing of another run, its charts stay.
    std::fs::create_dir_all(dir.join("_report")).unwrap();
    std::fs::write(dir.join("_report").join("cp_auc.png"), "a chart").unwrap();
    run_trial(&small, &overwrite(opts(&dir))).unwrap();
    assert!(dir.join("_report").join("cp_auc.png").exists());

    // Another shard of the same run may be running: its manifest and chunks are kept.
    let dir = tmp("sibling");
    run_trial(&small, &shard(&dir, 2, 2)).unwrap();
    let sibling = contents(&dir);
    run_trial(&small, &overwrite(shard(&dir, 1, 2))).unwrap();
    for f in &sibling {
        assert!(contents(&dir).contains(f), "{} changed", f.0);
    }
    assert!(parts(&dir) == parts(&fresh));
}

/// A manifest that names a file outside its directory (or any name that is not a part's) is
/// not vpop's: refused, and with --overwrite removed without touching what it names.
#[test]
fn a_manifest_naming_other_files_is_refused_and_they_are_left_alone() {
    let t = trial(400, 99);
    let root = tmp("outside");
    std::fs::create_dir_all(&root).unwrap();
    let victim = root.join("victim.txt");
    let absolute = root.join("absolute.txt");
    for (name, target) in [("relative", "../victim.txt"), ("absolute", "")] {
        let dir = root.join(name);
        run_trial(&t, &opts(&dir)).unwrap();
        std::fs::write(&victim, "precious").unwrap();
        std::fs::write(&absolute, "precious").unwrap();
        let path = dir.join("_manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let target = match target {
            "" => absolute.display().to_string(),
            t => t.to_string(),
        };
        m["parts"][0]["file"] = target.clone().into();
        m["identity"]["seed"] = 1.into();
        std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        for o in [opts(&dir), shard(&dir, 1, 2)] {
            let e = run_trial(&t, &o).unwrap_err();
            assert!(
                e.contains("is not vpop's or was edited") && e.contains(&target),
                "{e}"
            );
        }
        // `vpop report` reads no file such a manifest names either.
        let e = vpop::trial::report::report(&dir, &dir.join("_report"), 1000).unwrap_err();
        assert!(e.contains("is not vpop's or was edited"), "{e}");
        let r = run_trial(&t, &overwrite(opts(&dir))).unwrap();
        assert!(r.complete && r.parts_written == 4);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&absolute).unwrap(), "precious");
    }
}

/// The files a trial reads besides its spec, model and population (a `[data]` dataset, an
/// arm's records) are part of its run: changed, the run is another.
#[test]
fn a_changed_input_file_is_another_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp("inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let data = "ID,TIME,EVID,AMT,CMT,DV\n1,0,1,100,1,.\n1,2,0,.,1,.\n2,0,1,100,1,.\n2,4,0,.,1,.\n";
    let data_spec = format!(
        r#"
[trial]
name = "data"
seed = 3

[model]
library = "one_cmt_iv"

[population]
file = "{pop}"

[data]
file = "data.csv"
replicates = 50

[simulation]
chunk_size = 20
backend = "cpu"

[output]
dir = "unused"
"#,
        pop = root.join("populations/adult_healthy.toml").display()
    );
    let records_spec = spec(200, 5).replace(
        r#"dose = { amount = 100, into = "depot", every = 24, count = 2 }"#,
        r#"records = "regimen.csv""#,
    );
    let regimen = "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,24,1,100,1\n";
    for (spec, file, what, text, changed) in [
        (
            data_spec,
            "data.csv",
            "dataset",
            data,
            data.replace("1,0,1,100", "1,0,1,300"),
        ),
        (
            records_spec,
            "regimen.csv",
            "records of arm daily",
            regimen,
            regimen.replace("1,24,1,100", "1,24,1,300"),
        ),
    ] {
        let out = dir.join(format!("out-{file}"));
        std::fs::write(dir.join(file), text).unwrap();
        let load = || Trial::from_text(&dir.join("spec.toml"), &spec).unwrap();
        let r = run_trial(&load(), &opts(&out)).unwrap();
        assert!(r.complete, "{file}");
        std::fs::write(dir.join(file), &changed).unwrap();
        // The refusal names the input that differs, and only it.
        let e = run_trial(&load(), &opts(&out)).unwrap_err();
        let named = format!(
            "_manifest.json records another {what} ({}); choose",
            dir.join(file).display()
        );
        assert!(
            e.contains("different run") && e.contains(&named),
            "{file}: {e}"
        );
        let e = run_trial(&load(), &shard(&out, 2, 2)).unwrap_err();
        assert!(
            e.contains("different run") && e.contains(&named),
            "{file}: {e}"
        );
        // A manifest written before inputs were recorded apart: its provenance shows the spec,
        // model and population the same, so a dataset or records file differs.
        let manifest = out.join("_manifest.json");
        let recorded = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, without_inputs(&recorded)).unwrap();
        let e = run_trial(&load(), &opts(&out)).unwrap_err();
        assert!(
            e.contains("records other input files (a dataset or records file)"),
            "{file}: {e}"
        );
        std::fs::write(&manifest, &recorded).unwrap();
        // As it was, the run is the one it was and resumes whole.
        std::fs::write(dir.join(file), text).unwrap();
        let r = run_trial(&load(), &opts(&out)).unwrap();
        assert!(r.complete && r.parts_written == 0, "{file}");
    }
}

/// A manifest as versions before per-input hashes wrote it: no `identity.inputs`.
fn without_inputs(manifest: &str) -> String {
    let mut m: serde_json::Value = serde_json::from_str(manifest).unwrap();
    let removed = m["identity"].as_object_mut().unwrap().remove("inputs");
    assert!(removed.is_some(), "{manifest}");
    serde_json::to_string_pretty(&m).unwrap()
}

/// A run refused over a changed model file names the model (and not the spec, which is the
/// same); so does one whose manifest predates per-input hashes, from the provenance's model
/// source. The same model file, resumed, is the same run.
#[test]
fn a_changed_model_file_is_named() {
    let dir = tmp("model-file");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("pk.vpm");
    let source =
        "param k = 0.1\nstate central\nd/dt(central) = -k * central\noutput cp = central\n";
    std::fs::write(&model, source).unwrap();
    let spec = spec(200, 5)
        .replace("library = \"one_cmt_oral\"", "file = \"pk.vpm\"")
        .replace("into = \"depot\"", "into = \"central\"");
    let load = || Trial::from_text(&dir.join("spec.toml"), &spec).unwrap();
    let out = dir.join("out");
    assert!(run_trial(&load(), &opts(&out)).unwrap().complete);
    std::fs::write(&model, source.replace("0.1", "0.2")).unwrap();
    let e = run_trial(&load(), &opts(&out)).unwrap_err();
    assert!(
        e.contains(&format!(
            "_manifest.json records another model ({}); choose",
            model.display()
        )),
        "{e}"
    );
    let manifest = out.join("_manifest.json");
    let recorded = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, without_inputs(&recorded)).unwrap();
    let e = run_trial(&load(), &opts(&out)).unwrap_err();
    assert!(
        e.contains("_manifest.json records another model; choose"),
        "{e}"
    );
    std::fs::write(&manifest, &recorded).unwrap();
    std::fs::write(&model, source).unwrap();
    let r = run_trial(&load(), &opts(&out)).unwrap();
    assert!(r.complete && r.parts_written == 0);
    // A manifest without per-input hashes still describes the same run.
    std::fs::write(&manifest, without_inputs(&recorded)).unwrap();
    let r = run_trial(&load(), &opts(&out)).unwrap();
    assert!(r.complete && r.parts_written == 0);
}

/// A shard of a `[data]` trial reports its own subjects, not the whole trial's.
#[test]
fn a_data_shard_counts_its_own_subjects() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tmp("data-shard");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("data.csv"),
        "ID,TIME,EVID,AMT,CMT,DV\n1,0,1,100,1,.\n1,2,0,.,1,.\n",
    )
    .unwrap();
    let spec = format!(
        "[trial]\nname = \"d\"\nseed = 1\n[model]\nlibrary = \"one_cmt_iv\"\n[population]\nfile = \"{}\"\n[data]\nfile = \"data.csv\"\nreplicates = 100\n[simulation]\nchunk_size = 10\nbackend = \"cpu\"\n[output]\ndir = \"unused\"\n",
        root.join("populations/adult_healthy.toml").display()
    );
    let t = Trial::from_text(&dir.join("spec.toml"), &spec).unwrap();
    let r = run_trial(&t, &shard(&dir.join("out"), 1, 4)).unwrap();
    assert_eq!(r.subjects, 20);
    assert_eq!(r.arms[0].subjects, 20);
}

/// A backend computing in another precision (here a stand-in that reports itself as wgpu in
/// f32 around the CPU reference).
struct OtherBackend(vpop::backend::cpu::CpuBackend);

impl vpop::backend::Backend for OtherBackend {
    fn info(&self) -> vpop::backend::BackendInfo {
        vpop::backend::BackendInfo {
            name: "wgpu",
            device: "a stand-in".into(),
            precision: vpop::backend::Precision::F32,
        }
    }
    fn run_chunk(
        &mut self,
        arm: &vpop::backend::ArmPlan,
        input: &vpop::backend::ChunkInput<'_>,
        out: &mut vpop::backend::ChunkOutput,
    ) -> Result<(), vpop::backend::BackendError> {
        self.0.run_chunk(arm, input, out)
    }
    fn run_records(
        &mut self,
        programs: &[&vpop::backend::records::Program],
        solver: &vpop::solver::SolverOptions,
    ) -> Result<Vec<vpop::backend::records::RecordsOutcome>, vpop::backend::BackendError> {
        self.0.run_records(programs, solver)
    }
}

#[test]
fn a_run_resumes_only_on_the_backend_and_precision_it_began_with() {
    let t = trial(400, 99);
    let dir = tmp("backends");
    let other = || {
        Box::new(OtherBackend(vpop::backend::cpu::CpuBackend::new(
            std::sync::Arc::new(t.compiled.clone()),
        ))) as Box<dyn vpop::backend::Backend>
    };
    let on_other = |o: &RunOptions| {
        vpop::trial::run::run_trial_on(&t, o, other(), String::new(), std::time::Instant::now())
    };
    let stopped = RunOptions {
        stop_after_parts: Some(2),
        ..opts(&dir)
    };
    assert!(!on_other(&stopped).unwrap().complete);
    let before = contents(&dir);
    for o in [opts(&dir), shard(&dir, 2, 2)] {
        let e = run_trial(&t, &o).unwrap_err();
        assert!(
            e.contains("wgpu backend in f32")
                && e.contains("cpu backend in f64")
                && e.contains("--overwrite"),
            "{e}"
        );
    }
    assert_eq!(contents(&dir), before);
    // On the backend it began with, it resumes, and its manifest says so.
    let r = on_other(&opts(&dir)).unwrap();
    assert!(r.complete && r.parts_resumed == 2 && r.parts_written == 2);
    let m: vpop::output::Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m.provenance["vpop.backend"], "wgpu");
    assert_eq!(m.provenance["vpop.precision"], "f32");
    // --overwrite computes it anew on the CPU.
    let r = run_trial(&t, &overwrite(opts(&dir))).unwrap();
    assert!(r.complete && r.parts_resumed == 0);
}

/// A run begun by a build whose rules give other values (another `vpop.results_revision`, or
/// none: a version from before it was recorded) is not resumed: its rows and this build's
/// would differ in one dataset. With the revision it began with, it resumes.
#[test]
fn a_run_resumes_only_under_the_rules_it_began_with() {
    let t = trial(400, 7);
    let dir = tmp("revision");
    let stopped = RunOptions {
        stop_after_parts: Some(2),
        ..opts(&dir)
    };
    assert!(!run_trial(&t, &stopped).unwrap().complete);
    let manifest = dir.join("_manifest.json");
    let recorded = std::fs::read_to_string(&manifest).unwrap();
    let m: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    let ours = vpop::trial::run::RESULTS_REVISION.to_string();
    assert_eq!(m["provenance"]["vpop.results_revision"], ours.as_str());
    let with = |revision: Option<&str>| {
        let mut m = m.clone();
        let p = m["provenance"].as_object_mut().unwrap();
        match revision {
            Some(r) => p.insert("vpop.results_revision".into(), r.into()),
            None => p.remove("vpop.results_revision"),
        };
        serde_json::to_string_pretty(&m).unwrap()
    };
    for (revision, said) in [
        (Some("0"), "with results revision 0,".to_string()),
        (
            None,
            "with no results revision (an earlier version),".to_string(),
        ),
    ] {
        std::fs::write(&manifest, with(revision)).unwrap();
        let before = contents(&dir);
        for o in [opts(&dir), shard(&dir, 2, 2)] {
            let e = run_trial(&t, &o).unwrap_err();
            assert!(
                e.contains(&said)
                    && e.contains(&format!("(results revision {ours})"))
                    && e.contains("--overwrite"),
                "{e}"
            );
        }
        assert_eq!(contents(&dir), before);
    }
    std::fs::write(&manifest, &recorded).unwrap();
    let r = run_trial(&t, &opts(&dir)).unwrap();
    assert!(r.complete && r.parts_resumed == 2 && r.parts_written > 0);
    // Every part says which rules made its values.
    let part = std::fs::File::open(dir.join("part-00003.parquet")).unwrap();
    let meta = parquet::file::reader::SerializedFileReader::new(part).unwrap();
    use parquet::file::reader::FileReader;
    let kv = meta
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap();
    let got = kv.iter().find(|k| k.key == "vpop.results_revision");
    assert_eq!(got.and_then(|k| k.value.as_deref()), Some(ours.as_str()));
}

/// A run begun with the stopping points at the model's jumps in time turned off
/// (`VPOP_JUMP_STOPS=0`, which changes values) records it, and resumes only with them off;
/// a run begun with them on does not resume with them off.
#[test]
fn a_run_resumes_only_with_the_jump_stops_it_began_with() {
    let dir = tmp("jumpstops");
    std::fs::create_dir_all(&dir).unwrap();
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec(400, 7)).unwrap();
    let t = Trial::from_text(&spec_path, &spec(400, 7)).unwrap();
    let cli = |out: &Path, stops: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vpop"));
        c.arg("run")
            .arg(&spec_path)
            .args(["--backend", "cpu", "--quiet", "--out"])
            .arg(out)
            .env("VPOP_STOP_AFTER_PARTS", "2")
            .env_remove("VPOP_JUMP_STOPS");
        if !stops {
            c.env("VPOP_JUMP_STOPS", "0");
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let off = dir.join("off");
    let (ok, err) = cli(&off, false);
    assert!(ok, "{err}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(off.join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["provenance"]["vpop.jump_stops"], "off");
    assert_ne!(m["status"], "complete");
    let before = contents(&off);
    // This process has them on (the tests do not set the variable).
    assert!(vpop::model::jumps::jump_stops_on());
    let e = run_trial(&t, &opts(&off)).unwrap_err();
    assert!(
        e.contains("were computed without stopping points at the model's jumps in time")
            && e.contains("resume it as it began (with VPOP_JUMP_STOPS=0)"),
        "{e}"
    );
    assert_eq!(contents(&off), before);
    let (ok, err) = cli(&off, false);
    assert!(ok, "{err}");
    assert!(contents(&off).len() > before.len());
    // Begun with them on: not resumed with them off, resumed with them on.
    let on = dir.join("on");
    let stopped = RunOptions {
        stop_after_parts: Some(2),
        ..opts(&on)
    };
    assert!(!run_trial(&t, &stopped).unwrap().complete);
    let before = contents(&on);
    let (ok, err) = cli(&on, false);
    assert!(!ok && err.contains("(without VPOP_JUMP_STOPS)"), "{err}");
    assert_eq!(contents(&on), before);
    let (ok, err) = cli(&on, true);
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A manifest edited by hand is refused with what differs named: its columns (those it has that
/// this run has not, and the reverse, or their order), or a hash of all inputs that its
/// inputs' own hashes do not explain.
#[test]
fn an_edited_manifest_is_refused_with_what_differs() {
    let t = trial(200, 5);
    let dir = tmp("edited");
    assert!(run_trial(&t, &opts(&dir)).unwrap().complete);
    let manifest = dir.join("_manifest.json");
    let recorded = std::fs::read_to_string(&manifest).unwrap();
    let m: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    let columns: Vec<String> = serde_json::from_value(m["columns"].clone()).unwrap();
    assert!(columns.len() > 3 && columns.contains(&"cp_auc".to_string()));
    let edited = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m = m.clone();
        f(&mut m);
        std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let e = run_trial(&t, &opts(&dir)).unwrap_err();
        std::fs::write(&manifest, &recorded).unwrap();
        e
    };
    let without_auc: Vec<&String> = columns.iter().filter(|c| *c != "cp_auc").collect();
    let e = edited(&|m| m["columns"] = serde_json::json!(without_auc));
    assert!(
        e.contains("records no columns 'cp_auc' (this run: columns 'cp_auc')"),
        "{e}"
    );
    let renamed: Vec<String> = (columns.iter())
        .map(|c| c.replace("cp_auc", "cp_aucx"))
        .collect();
    let e = edited(&|m| m["columns"] = serde_json::json!(renamed));
    assert!(
        e.contains("records columns 'cp_aucx' (this run: columns 'cp_auc')"),
        "{e}"
    );
    let mut swapped = columns.clone();
    swapped.swap(0, 1);
    let e = edited(&|m| m["columns"] = serde_json::json!(swapped));
    assert!(
        e.contains("records the same columns in another order"),
        "{e}"
    );
    let e = edited(&|m| m["identity"]["spec_hash"] = "0".repeat(64).into());
    assert!(
        e.contains("records another hash of its inputs (`spec_hash`), though each input"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), recorded);
    assert_eq!(run_trial(&t, &opts(&dir)).unwrap().parts_written, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shard removes the temporary files a killed attempt of its own left, and no others: not
/// another shard's (which may be writing beside it), not a user's.
#[test]
fn a_shard_removes_only_its_own_temporary_files() {
    let t = trial(400, 99);
    let dir = tmp("temporaries");
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = [
        ".part-00002.parquet.2-of-2.4242.tmp",
        "._manifest-shard-2-of-2.json.4242.tmp",
        ".part-00000.parquet.1-of-1.4242.tmp",
        ".part-00003.parquet.4242.tmp",
        ".editor-swap.tmp",
        ".notes.tmp",
    ];
    let ours = [
        ".part-00001.parquet.1-of-2.77.tmp",
        "._manifest-shard-1-of-2.json.77.tmp",
        // As versions that did not tag parts named them, of this shard's chunks.
        ".part-00000.parquet.77.tmp",
    ];
    for f in theirs.iter().chain(&ours) {
        std::fs::write(dir.join(f), "half").unwrap();
    }
    assert!(run_trial(&t, &shard(&dir, 1, 2)).unwrap().complete);
    for f in theirs {
        assert!(dir.join(f).exists(), "{f} removed");
    }
    for f in ours {
        assert!(!dir.join(f).exists(), "{f} kept");
    }
}

/// Shards started together into one directory, as a job array starts them, each a process of
/// its own: every one completes, and their parts are the unsharded run's.
#[test]
fn shards_started_together_leave_each_other_alone() {
    let dir = tmp("together");
    std::fs::create_dir_all(&dir).unwrap();
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, spec(3000, 99)).unwrap();
    let run = |out: &Path, shard: Option<&str>| -> Child {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vpop"));
        c.arg("run")
            .arg(&spec_path)
            .args(["--backend", "cpu", "--quiet", "--chunk-size", "50", "--out"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(s) = shard {
            c.args(["--shard", s]);
        }
        c.spawn().unwrap()
    };
    let check = |c: Child, what: &str| {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let whole = dir.join("whole");
    check(run(&whole, None), "unsharded");
    for attempt in 0..4 {
        let out = dir.join(format!("out-{attempt}"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(".editor-swap.tmp"), "mine").unwrap();
        let first = run(&out, Some("1/3"));
        // The others start while the first is writing its parts.
        let t0 = std::time::Instant::now();
        while common::parquet_parts(&out).is_empty()
            && t0.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let second = run(&out, Some("2/3"));
        let third = run(&out, Some("3/3"));
        check(first, "shard 1/3");
        check(second, "shard 2/3");
        check(third, "shard 3/3");
        assert!(parts(&out) == parts(&whole), "attempt {attempt}");
        assert!(out.join(".editor-swap.tmp").exists());
        for k in 1..=3 {
            let m: vpop::output::Manifest = serde_json::from_str(
                &std::fs::read_to_string(out.join(format!("_manifest-shard-{k}-of-3.json")))
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(m.status, "complete");
        }
    }
}

/// Two different runs of the same shard started into one directory: one writes its parts, the
/// other is refused before it touches a file (by the first's lock while it writes, or by its
/// manifest after), however their starts fall; the parts are the winner's alone, and the lock
/// file goes with the run.
#[test]
fn two_runs_started_together_into_one_directory_never_mix() {
    let dir = tmp("race");
    std::fs::create_dir_all(&dir).unwrap();
    let spec_of = |seed: u64| {
        let path = dir.join(format!("spec-{seed}.toml"));
        std::fs::write(&path, spec(2000, seed)).unwrap();
        path
    };
    let specs = [spec_of(98), spec_of(99)];
    // A longer run, for the second to start while it writes.
    let long = dir.join("spec-long.toml");
    std::fs::write(&long, spec(30_000, 97)).unwrap();
    let run = |spec: &Path, out: &Path| -> Child {
        Command::new(env!("CARGO_BIN_EXE_vpop"))
            .arg("run")
            .arg(spec)
            .args(["--backend", "cpu", "--quiet", "--chunk-size", "50", "--out"])
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait = |c: Child| {
        let out = c.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let alone: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let out = dir.join(format!("alone-{i}"));
            let (ok, err) = wait(run(s, &out));
            assert!(ok, "{err}");
            parts(&out)
        })
        .collect();
    // The second starts while the first writes its parts: the lock refuses it.
    let out = dir.join("while");
    std::fs::create_dir_all(&out).unwrap();
    let first = run(&long, &out);
    let t0 = std::time::Instant::now();
    while common::parquet_parts(&out).is_empty()
        && t0.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (ok, err) = wait(run(&specs[1], &out));
    assert!(!ok);
    assert!(
        err.contains("another vpop process is writing _manifest.json and its parts there now"),
        "{err}"
    );
    // Nor does --overwrite remove it under the run, from any shard.
    for shard in ["1/1", "1/2"] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vpop"));
        let o = c
            .arg("run")
            .arg(&specs[1])
            .args([
                "--backend",
                "cpu",
                "--quiet",
                "--overwrite",
                "--shard",
                shard,
            ])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // The same shard meets the lock itself; another one meets it when it would remove
        // the run's files.
        assert!(
            !o.status.success()
                && err.contains("another vpop process is writing _manifest.json")
                && (shard == "1/1"
                    || err.contains("--overwrite does not remove a run while it is written")),
            "{shard}: {err}"
        );
    }
    let (ok, err) = wait(first);
    assert!(ok, "{err}");
    let (ok, err) = wait(run(&long, &dir.join("long-alone")));
    assert!(ok, "{err}");
    assert!(parts(&out) == parts(&dir.join("long-alone")));
    assert!(
        !names(&out).iter().any(|n| n.ends_with(".lock")),
        "{:?}",
        names(&out)
    );
    // Started at the same moment: exactly one writes, and the parts are its own.
    for attempt in 0..4 {
        let out = dir.join(format!("together-{attempt}"));
        let (a, b) = (run(&specs[0], &out), run(&specs[1], &out));
        let (a, b) = (wait(a), wait(b));
        assert!(a.0 != b.0, "attempt {attempt}: {} | {}", a.1, b.1);
        let (winner, loser) = if a.0 { (0, &b.1) } else { (1, &a.1) };
        assert!(
            loser.contains("another vpop process is writing")
                || loser.contains("holds the output of a different run"),
            "attempt {attempt}: {loser}"
        );
        assert!(parts(&out) == alone[winner], "attempt {attempt}");
    }
    // The whole of one run and a shard of another, started together (two manifests, not
    // one lock): at most one writes, its parts its own; one that stops leaves no manifest.
    for attempt in 0..4 {
        let out = dir.join(format!("layouts-{attempt}"));
        let b = Command::new(env!("CARGO_BIN_EXE_vpop"))
            .arg("run")
            .arg(&specs[1])
            .args([
                "--backend",
                "cpu",
                "--quiet",
                "--chunk-size",
                "50",
                "--shard",
                "1/2",
            ])
            .arg("--out")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let a = run(&specs[0], &out);
        let (a, b) = (wait(a), wait(b));
        assert!(!(a.0 && b.0), "attempt {attempt}: both wrote");
        for (ok, err) in [&a, &b] {
            assert!(
                *ok || err.contains("holds the output of a different run"),
                "attempt {attempt}: {err}"
            );
        }
        let manifests: Vec<String> = (names(&out).into_iter())
            .filter(|n| n.starts_with("_manifest"))
            .collect();
        let winner = [a.0, b.0].iter().position(|w| *w);
        assert_eq!(manifests.len(), winner.map_or(0, |_| 1), "{manifests:?}");
        let written = parts(&out);
        match winner {
            Some(w) => assert!(
                !written.is_empty() && written.iter().all(|p| alone[w].contains(p)),
                "attempt {attempt}"
            ),
            None => assert!(written.is_empty(), "attempt {attempt}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_paths_that_cannot_hold_a_dataset_are_named() {
    let dir = tmp("paths");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("link");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
        let e = run_trial(&trial(100, 1), &opts(&link)).unwrap_err();
        assert!(
            e.contains("symbolic link") && e.contains("does not exist"),
            "{e}"
        );
    }
    // A shard with no chunks says so instead of summarising nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("run")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml"))
        .args([
            "--subjects",
            "10",
            "--backend",
            "cpu",
            "--quiet",
            "--shard",
            "3/4",
            "--out",
        ])
        .arg(dir.join("empty-shard"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("holds no subjects"),
        "{text}"
    );
    assert!(!text.contains("NaN"), "{text}");
}
