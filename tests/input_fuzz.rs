//! Mutated inputs never make vpop panic: trial specs, population files and NONMEM-format
//! datasets changed byte by byte and token by token (numbers replaced by edge values such as
//! 0, −1, 1e308, nan, inf; names swapped; lines dropped or repeated) are either rejected with an
//! error or accepted, and whatever is accepted also samples, simulates and writes its output
//! without panicking.

use std::path::{Path, PathBuf};

mod common;

use common::mutate_bytes;
use proptest::prelude::*;
use vpop::dosing::nonmem::Dataset;
use vpop::population::{Population, SampledChunk};
use vpop::trial::{run_trial, RunOptions, Trial};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Numbers that break naive code: zero, negatives, the ends of f64 and of integer types, NaN.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "0.0",
    "1e308",
    "-1e308",
    "1e-320",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9007199254740993",
    "1e400",
    "0.5",
    "2",
    "1000000",
];

/// Splits text into runs of identifier characters, runs of number characters and single other
/// characters, so that mutations can replace whole tokens.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let class = |c: char| {
        if c.is_ascii_digit() || c == '.' {
            1
        } else if c.is_alphanumeric() || c == '_' {
            2
        } else {
            0
        }
    };
    for c in text.chars() {
        let k = class(c);
        match out.last_mut() {
            Some(last) if k != 0 && class(last.chars().next().unwrap()) == k => last.push(c),
            _ => out.push(c.to_string()),
        }
    }
    out
}

/// Applies token-level mutations: `(position, kind, choice)` triples.
fn mutate_tokens(text: &str, ops: &[(usize, u8, usize)]) -> String {
    let mut t = tokens(text);
    let words: Vec<String> = t
        .iter()
        .filter(|w| w.chars().next().is_some_and(|c| c.is_alphabetic()))
        .cloned()
        .collect();
    for &(pos, kind, choice) in ops {
        if t.is_empty() {
            break;
        }
        let numbers: Vec<usize> = (0..t.len())
            .filter(|&i| t[i].starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        match kind % 5 {
            // A number becomes an edge value.
            0 if !numbers.is_empty() => {
                let i = numbers[pos % numbers.len()];
                t[i] = EDGE_NUMBERS[choice % EDGE_NUMBERS.len()].to_string();
            }
            // A name becomes another name of the same text.
            1 if !words.is_empty() => {
                let named: Vec<usize> = (0..t.len())
                    .filter(|&i| t[i].starts_with(|c: char| c.is_alphabetic()))
                    .collect();
                if !named.is_empty() {
                    let i = named[pos % named.len()];
                    t[i] = words[choice % words.len()].clone();
                }
            }
            // A token is dropped.
            2 => {
                t.remove(pos % t.len());
            }
            // A line is dropped or repeated.
            _ => {
                let joined = t.concat();
                let mut lines: Vec<&str> = joined.lines().collect();
                if !lines.is_empty() {
                    let i = pos % lines.len();
                    if kind % 5 == 3 {
                        lines.remove(i);
                    } else {
                        lines.insert(i, lines[i]);
                    }
                }
                t = tokens(&(lines.join("\n") + "\n"));
            }
        }
    }
    t.concat()
}

fn populations() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(root().join("populations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// A population that parses must also sample (values may be anything, but no panic).
fn exercise_population(name: &str, text: &str) {
    if let Ok(p) = Population::parse(name, text) {
        let mut chunk = SampledChunk::default();
        p.sample(1, 0, 70, &mut chunk);
        assert_eq!(chunk.n, 70);
    }
}

/// A small trial run of whatever spec resolves: 3 subjects per arm on the CPU reference.
fn exercise_trial(spec_path: &Path, text: &str, out: &Path) {
    let Ok(mut t) = Trial::from_text(spec_path, text) else {
        return;
    };
    t.subjects = t.subjects.min(3);
    let _ = std::fs::remove_dir_all(out);
    let _ = run_trial(
        &t,
        &RunOptions {
            quiet: true,
            output_dir: Some(out.to_path_buf()),
            ..Default::default()
        },
    );
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vpop-fuzz-{}-{name}", std::process::id()))
}

const TRIAL: &str = r#"
[trial]
name = "fuzzed"
subjects = 3
seed = 5

[model]
library = "two_cmt_oral"

[population]
file = "populations/adult_healthy.toml"

[[arm]]
name = "low"
dose = { amount = 100, into = "depot", every = 12, count = 4 }

[[arm]]
name = "high"
dose = { amount = 200, into = "depot", every = 24, count = 2, duration = 1 }

[simulation]
end = 48
method = "tsit5"
rtol = 1e-5
atol = 1e-7
chunk_size = 2
backend = "cpu"

[output]
dir = "unused"
metrics = ["auc", "cmax", "tmax", "ctrough", "auc_last_interval", "time_above(1.0)"]
parameters = true
profile = { every = 12, precision = "f32" }
target = { metric = "cp_ctrough", above = 0.5 }
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_populations_never_panic(
        which in 0usize..16,
        bytes in proptest::collection::vec((0usize..100_000, 0u8..3, proptest::sample::select(b"=\"[]{},.#\n -+e0159xab".to_vec())), 0..4),
        toks in proptest::collection::vec((0usize..100_000, 0u8..5, 0usize..1000), 0..4),
    ) {
        let pops = populations();
        let (name, text) = &pops[which % pops.len()];
        let text = mutate_bytes(&mutate_tokens(text, &toks), &bytes);
        exercise_population(name, &text);
    }

    #[test]
    fn mutated_datasets_never_panic(
        bytes in proptest::collection::vec((0usize..100_000, 0u8..3, proptest::sample::select(b",.\n -+e0159.#CIDTMEVAS".to_vec())), 0..4),
        toks in proptest::collection::vec((0usize..100_000, 0u8..5, 0usize..1000), 0..4),
    ) {
        let text = std::fs::read_to_string(root().join("examples/nm_study.csv")).unwrap();
        let text = mutate_bytes(&mutate_tokens(&text, &toks), &bytes);
        let _ = Dataset::parse("mutant.csv", &text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_trial_specs_never_panic(
        bytes in proptest::collection::vec((0usize..100_000, 0u8..3, proptest::sample::select(b"=\"[]{},.#\n -+e0159xab".to_vec())), 0..2),
        toks in proptest::collection::vec((0usize..100_000, 0u8..5, 0usize..1000), 1..4),
    ) {
        let text = mutate_bytes(&mutate_tokens(TRIAL, &toks), &bytes);
        exercise_trial(&root().join("spec.toml"), &text, &out_dir("trial"));
    }

    #[test]
    fn mutated_dataset_trials_never_panic(
        bytes in proptest::collection::vec((0usize..100_000, 0u8..3, proptest::sample::select(b",.\n -+e0159".to_vec())), 0..2),
        toks in proptest::collection::vec((0usize..100_000, 0u8..5, 0usize..1000), 1..4),
    ) {
        // The dataset is mutated and written beside a spec that reads it.
        let dir = out_dir("data-in");
        std::fs::create_dir_all(&dir).unwrap();
        let csv = std::fs::read_to_string(root().join("examples/nm_study.csv")).unwrap();
        std::fs::write(dir.join("d.csv"), mutate_bytes(&mutate_tokens(&csv, &toks), &bytes)).unwrap();
        let pop = root().join("populations/adult_healthy.toml");
        let spec = format!(
            "[trial]\nname = \"d\"\nseed = 1\n[model]\nlibrary = \"two_cmt_oral\"\n\
             [population]\nfile = {:?}\n[data]\nfile = \"d.csv\"\nreplicates = 2\n\
             [simulation]\nbackend = \"cpu\"\nmethod = \"tsit5\"\nrtol = 1e-5\natol = 1e-7\n\
             [output]\ndir = \"unused\"\nobservations = true\n",
            pop.display().to_string()
        );
        exercise_trial(&dir.join("spec.toml"), &spec, &out_dir("data-out"));
    }
}

/// A sensitivity spec beside a copy of the quickstart (3 subjects per arm, on the CPU).
fn sensitivity_spec_dir() -> PathBuf {
    let dir = out_dir("sens-in");
    std::fs::create_dir_all(&dir).unwrap();
    let quick = std::fs::read_to_string(root().join("examples/quickstart.toml"))
        .unwrap()
        .replace("subjects = 100_000", "subjects = 3")
        .replace("backend = \"auto\"", "backend = \"cpu\"");
    std::fs::write(dir.join("quickstart.toml"), quick).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_sensitivity_specs_never_panic(
        bytes in proptest::collection::vec((0usize..100_000, 0u8..3, proptest::sample::select(b"=\"[]{},.#\n -+e0159xab".to_vec())), 0..2),
        toks in proptest::collection::vec((0usize..100_000, 0u8..5, 0usize..1000), 1..4),
    ) {
        let dir = sensitivity_spec_dir();
        let text = std::fs::read_to_string(root().join("examples/sensitivity.toml")).unwrap();
        std::fs::write(dir.join("s.toml"), mutate_bytes(&mutate_tokens(&text, &toks), &bytes)).unwrap();
        if let Ok(mut a) = vpop::sensitivity::run::Analysis::load(&dir.join("s.toml")) {
            // Small designs: the point is that whatever loads also runs, not the indices.
            a.samples = a.samples.min(8);
            a.bootstrap = a.bootstrap.min(4);
            a.subjects = a.subjects.min(2);
            a.out = out_dir("sens-out");
            let _ = vpop::sensitivity::run::run(&a, None);
        }
    }
}

#[test]
fn the_mutators_change_what_they_are_given() {
    // Token splitting is lossless, and each kind of mutation changes the text.
    let text = std::fs::read_to_string(root().join("populations/adult_healthy.toml")).unwrap();
    assert_eq!(tokens(&text).concat(), text);
    for kind in 0..5u8 {
        let m = mutate_tokens(&text, &[(7, kind, 3)]);
        assert_ne!(m, text, "kind {kind}");
    }
    assert_ne!(mutate_bytes(&text, &[(3, 2, b'#')]), text);
}
