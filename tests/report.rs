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
