//! `vpop report DIR`: charts of a finished run, read back from its Parquet parts.

use std::path::PathBuf;
use std::process::Command;

fn vpop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vpop"))
}

fn is_png(p: &PathBuf) -> bool {
    std::fs::read(p).is_ok_and(|b| b.len() > 1000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn a_run_with_profiles_gets_metric_and_profile_charts() {
    let dir = std::env::temp_dir().join(format!("vpop-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let spec = dir.join("trial.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
[trial]
name = "report test"
subjects = 600
seed = 5

[model]
library = "one_cmt_oral"

[population]
file = "{pop}"

[[arm]]
name = "low"
dose = {{ amount = 100, into = "depot", every = 24, count = 3 }}

[[arm]]
name = "high"
dose = {{ amount = 200, into = "depot", every = 24, count = 3 }}

[simulation]
end = 72
backend = "cpu"
chunk_size = 250

[output]
dir = "{out}"
metrics = ["auc", "cmax", "tmax"]
profile = {{ every = 4, from = 0, to = 72 }}
"#,
            pop = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("populations/adult_healthy.toml")
                .display(),
            out = out.display()
        ),
    )
    .unwrap();
    let run = vpop()
        .arg("run")
        .arg(&spec)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rep = vpop().arg("report").arg(&out).output().unwrap();
    assert!(
        rep.status.success(),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let text = String::from_utf8_lossy(&rep.stdout);
    for name in ["metrics.png", "profiles.png"] {
        let p = out.join("_report").join(name);
        assert!(text.contains(name), "{text}");
        assert!(is_png(&p), "{} is not a PNG", p.display());
    }
    // Beside the parts, only what dataset readers pass over (names from `_` or `.`), so that
    // `pyarrow.dataset.dataset(out)` still reads the run after a report.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".parquet") || name.starts_with('_') || name.starts_with('.'),
            "{name} in the run directory"
        );
    }
    // Sampling a large run: every 4th subject of 600.
    let rep = vpop()
        .arg("report")
        .arg(&out)
        .args(["--max-subjects", "150", "--out"])
        .arg(dir.join("small"))
        .output()
        .unwrap();
    assert!(rep.status.success());
    assert!(is_png(&dir.join("small/metrics.png")));
    // Not a run directory: a clear error.
    let bad = vpop().arg("report").arg(&dir).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a vpop run's output directory"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Charts show the subjects whose integration succeeded (a failed subject's profile stops where
/// its integration did, so pooling it would change the band's subjects from time to time), only
/// the run's metric columns (not a covariate named like one), and every arm in its own colour.
#[test]
fn charts_draw_the_metrics_of_the_subjects_that_succeeded() {
    use vpop::trial::{run_trial, RunOptions, Trial};
    let dir = std::env::temp_dir().join(format!("vpop-report-ok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pop.toml"),
        "[population]\nname = \"p\"\n\
         [covariates.cp_baseline]\ndist = \"normal\"\nmean = 1\nsd = 0.1\n\
         [covariates.cp_assay]\nlevels = { lcms = 0.5, elisa = 0.5 }\n\
         [parameters]\nka = \"1.2 * exp(eta_ka)\"\ncl = \"5 * exp(eta_cl)\"\n\
         [[omega]]\netas = [\"eta_ka\", \"eta_cl\"]\ncv = [0.8, 0.3]\n",
    )
    .unwrap();
    let arms: String = (1..=6)
        .map(|i| {
            format!(
                "[[arm]]\nname = \"d{i}\"\ndose = {{ amount = {}, into = \"depot\", every = 12, count = 4 }}\n",
                50 * i
            )
        })
        .collect();
    let spec = format!(
        "[trial]\nname = \"r\"\nsubjects = 400\nseed = 7\n[model]\nlibrary = \"two_cmt_oral\"\n\
         [population]\nfile = \"pop.toml\"\n{arms}\
         [simulation]\nend = 48\nbackend = \"cpu\"\nmax_steps = 120\n\
         [output]\ndir = \"out\"\nmetrics = [\"auc\", \"cmax\"]\n\
         target = {{ metric = \"cp_cmax\", above = 1.0 }}\n\
         profile = {{ times = [0.5, 1, 2, 4, 12, 24, 47.5, 48] }}\n"
    );
    let trial = Trial::from_text(&dir.join("spec.toml"), &spec).unwrap();
    let rep = run_trial(
        &trial,
        &RunOptions {
            quiet: true,
            output_dir: Some(dir.join("out")),
            ..Default::default()
        },
    )
    .unwrap();
    let ok: Vec<u64> = rep.arms.iter().map(|a| a.subjects - a.failed).collect();
    assert!(
        ok.iter().all(|&n| n > 0 && n < 400),
        "the cap on steps should fail some subjects of every arm, not all: {ok:?}"
    );
    // The summary's target attainment says what it is over.
    let text = vpop::trial::run::format_summary(&rep, trial.target.as_ref());
    for n in &ok {
        assert!(
            text.contains(&format!(" of the {n} subjects with a value of cp_cmax")),
            "{text}"
        );
    }
    let r = vpop::trial::report::report(&dir.join("out"), &dir.join("charts"), 1_000_000).unwrap();
    let drawn = if ok.iter().all(|&n| n == ok[0]) {
        format!("{} subjects per arm", ok[0])
    } else {
        let by_arm = ok.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        format!("{} subjects by arm", by_arm.join(" / "))
    };
    assert_eq!(
        r.titles,
        [
            format!("cp_auc: {drawn}"),
            format!("cp_cmax: {drawn}"),
            format!("cp: {drawn}"),
        ]
    );
    assert!(r.empty.is_empty(), "{:?}", r.empty);
    // Six arms, six colours; and beyond the palette's ten, still no two alike.
    for n in [6, 12, 30] {
        let mut c: Vec<_> = (0..n)
            .map(|i| {
                let c = vpop::output::plot::series_color(i, n);
                (c.0, c.1, c.2)
            })
            .collect();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run that has not finished (stopped after its first part, as a killed run is; or one shard
/// of two) is refused with what is missing, unless `--partial` asks for its charts, which then
/// come with a warning of how much of the run they show. Resumed to its end, the same
/// directory reports as before.
#[test]
fn a_run_that_has_not_finished_is_refused_or_drawn_as_partial() {
    let dir = std::env::temp_dir().join(format!("vpop-report-partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let spec = dir.join("trial.toml");
    std::fs::write(
        &spec,
        format!(
            "[trial]\nname = \"partial\"\nsubjects = 300\nseed = 3\n\
             [model]\nlibrary = \"one_cmt_oral\"\n\
             [population]\nfile = \"{pop}\"\n\
             [[arm]]\nname = \"a\"\ndose = {{ amount = 100, into = \"depot\", every = 24, count = 2 }}\n\
             [simulation]\nend = 48\nbackend = \"cpu\"\nchunk_size = 100\n\
             [output]\ndir = \"{out}\"\nmetrics = [\"auc\", \"cmax\"]\n\
             profile = {{ every = 6 }}\n",
            pop = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("populations/adult_healthy.toml")
                .display(),
            out = out.display()
        ),
    )
    .unwrap();
    // Stopped after its first part: the manifest says "running".
    let run = vpop()
        .arg("run")
        .arg(&spec)
        .arg("--quiet")
        .env("VPOP_STOP_AFTER_PARTS", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let manifest = std::fs::read_to_string(out.join("_manifest.json")).unwrap();
    assert!(manifest.contains("\"running\""), "{manifest}");

    let rep = vpop().arg("report").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(!rep.status.success(), "{err}");
    assert!(
        err.contains("the run has not finished")
            && err.contains("_manifest.json says \"running\"")
            && err.contains("1 of its 3 parts are there (100 of 300 subjects per arm)")
            && err.contains("--partial"),
        "{err}"
    );
    assert!(!out.join("_report").exists(), "nothing drawn");

    let rep = vpop()
        .arg("report")
        .arg(&out)
        .arg("--partial")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(rep.status.success(), "{err}");
    assert!(
        err.contains("WARNING: PARTIAL RUN")
            && err.contains("The charts show 100 of the trial's 300 subjects per arm"),
        "{err}"
    );
    // Beside the finished run's charts, not in their place.
    for name in ["metrics.png", "profiles.png"] {
        assert!(is_png(&out.join("_report-partial").join(name)), "{name}");
    }
    assert!(!out.join("_report").exists());
    // Each chart's title says so.
    let charts = dir.join("titled");
    let r = vpop::trial::report::report_titled(&out, &charts, 1000, " (PARTIAL RUN)").unwrap();
    assert!(
        !r.titles.is_empty() && r.titles.iter().all(|t| t.ends_with(" (PARTIAL RUN)")),
        "{:?}",
        r.titles
    );

    // Resumed to its end: a report as of any finished run, without a warning.
    let run = vpop()
        .arg("run")
        .arg(&spec)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rep = vpop().arg("report").arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(rep.status.success(), "{err}");
    assert!(!err.contains("PARTIAL"), "{err}");
    assert!(is_png(&out.join("_report").join("metrics.png")));

    // One shard of two, finished: its manifest is complete, the run is not.
    let sharded = dir.join("sharded");
    let run = vpop()
        .arg("run")
        .arg(&spec)
        .args(["--quiet", "--shard", "1/2", "--out"])
        .arg(&sharded)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rep = vpop().arg("report").arg(&sharded).output().unwrap();
    let err = String::from_utf8_lossy(&rep.stderr);
    assert!(!rep.status.success(), "{err}");
    assert!(
        err.contains("no manifest of shard 2/2")
            && err.contains("1 of its 3 parts are there (100 of 300 subjects per arm)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
