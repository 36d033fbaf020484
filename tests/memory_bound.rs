//! Memory is bounded by the chunk size, not by the number of subjects: ten times the subjects
//! with the same chunk size must not need more memory (the run reports its peak resident
//! memory).

use std::process::Command;

const SPEC: &str = r#"
[trial]
name = "memory bound"
subjects = 1000
seed = 5

[model]
library = "two_cmt_oral"

[population]
file = "POPULATION"

[[arm]]
name = "single"
dose = { amount = 100, into = "depot" }

[simulation]
end = 24
method = "tsit5"
backend = "cpu"

[output]
dir = "unused"
metrics = ["auc", "cmax"]
"#;

fn peak_mb(spec: &std::path::Path, subjects: u64, out: &std::path::Path) -> f64 {
    let o = Command::new(env!("CARGO_BIN_EXE_vpop"))
        .args(["run", spec.to_str().unwrap(), "--quiet", "--overwrite"])
        .args(["--subjects", &subjects.to_string(), "--chunk-size", "2000"])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("peak memory "))
        .and_then(|l| l.trim_end_matches(" MB").parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in the output:\n{text}"))
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_subjects() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("SKIPPED: peak memory is read from /proc (Linux only)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("vpop-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.toml");
    let population = root.join("populations/adult_healthy.toml");
    std::fs::write(
        &spec,
        SPEC.replace("POPULATION", population.to_str().unwrap()),
    )
    .unwrap();
    let small = peak_mb(&spec, 20_000, &dir.join("small"));
    let large = peak_mb(&spec, 200_000, &dir.join("large"));
    println!("peak memory: {small:.0} MB at 20 000 subjects, {large:.0} MB at 200 000");
    assert!(
        large <= 1.2 * small + 8.0,
        "peak memory grew from {small:.0} MB to {large:.0} MB with 10× the subjects"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
