//! Bad model files: each produces its expected error first, at its expected line and column, and no
//! input — random bytes, mutated models — makes the parser or validator panic.

mod common;

use common::mutate_bytes as mutate;
use proptest::prelude::*;
use vpop::model::library;
use vpop::model::Model;

#[test]
fn every_bad_model_gives_its_expected_error() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad_models");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        // `# expect:` the first error reported; `# expect only:` the only one (no error that
        // follows from it, such as a missing equation for a statement lost to a syntax error).
        let first = text.lines().next().unwrap_or("");
        let (expect, only) = match first.strip_prefix("# expect only: ") {
            Some(e) => (e, true),
            None => (
                first
                    .strip_prefix("# expect: ")
                    .expect("first line: # expect: L:C: message"),
                false,
            ),
        };
        let mut parts = expect.splitn(3, ':');
        let (line, col, frag): (usize, usize, &str) = (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().trim(),
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match Model::parse(&name, &text) {
            Ok(_) => failures.push(format!("{name}: parsed without error")),
            Err(e) => {
                let hit = e.diagnostics().first().is_some_and(|d| {
                    d.line == line && d.col == col && d.message.contains(frag) && d.file == name
                });
                if !hit || (only && e.diagnostics().len() > 1) {
                    failures.push(format!("{name}: expected {line}:{col}: {frag}\n  got: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_library_model_parses() {
    for m in library::MODELS {
        let model = Model::parse(&format!("{}.vpm", m.name), m.source)
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        assert_eq!(model.name, m.name);
        assert!(
            !m.description().is_empty(),
            "{} has no description line",
            m.name
        );
    }
}

/// The first error of a model whose one output is `expr` (on line 3, from column 12), as
/// (line, column, message); None where the model parses.
fn output_error(expr: &str) -> Option<(usize, usize, String)> {
    let text = format!("state a\nd/dt(a) = -a\noutput y = {expr}\n");
    match Model::parse("m.vpm", &text) {
        Ok(_) => None,
        Err(e) => {
            let d = &e.diagnostics()[0];
            Some((d.line, d.col, d.message.clone()))
        }
    }
}

/// Expressions nest at most 64 levels deep (docs/model-language.md): each pair of
/// parentheses, function call, unary operator and exponent opens a level; a chain of binary
/// operators does not. At the limit a model parses; one level more is an error at what opens
/// that level, which states the limit.
#[test]
fn nesting_is_refused_one_level_beyond_the_documented_limit() {
    const LIMIT: usize = 64;
    // What opens one level (its last character opens it) and what closes it.
    for (open, close) in [
        ("(", ")"),
        ("exp(", ")"),
        ("1 + (", ")"),
        // Every precedence on each level: the deepest recursion per level.
        ("a || a && a < a + a * (", ")"),
        ("-", ""),
        ("!", ""),
        ("a^", ""),
    ] {
        let nested = |levels: usize| format!("{}a{}", open.repeat(levels), close.repeat(levels));
        assert_eq!(output_error(&nested(LIMIT)), None, "{open}: {LIMIT} levels");
        let Some((line, col, message)) = output_error(&nested(LIMIT + 1)) else {
            panic!("{open}: {} levels parsed", LIMIT + 1);
        };
        let at = 12 + LIMIT * open.len() + open.len() - 1;
        assert_eq!((line, col), (3, at), "{open}: {message}");
        assert!(
            message.contains("nested more than 64 levels deep"),
            "{open}: {message}"
        );
    }
    // Levels of different kinds add up: `-(` opens two.
    let mixed = |n: usize| format!("{}a{}", "-(".repeat(n), ")".repeat(n));
    assert_eq!(output_error(&mixed(LIMIT / 2)), None);
    let (_, col, _) = output_error(&mixed(LIMIT / 2 + 1)).expect("refused");
    assert_eq!(col, 12 + LIMIT);
    // A chain of binary operators, of many more operands than levels, stays on its level.
    let chain = vec!["a"; 1_000].join(" + ");
    assert_eq!(
        output_error(&format!(
            "{}{chain}{}",
            "(".repeat(LIMIT),
            ")".repeat(LIMIT)
        )),
        None
    );
}

/// A chain of binary operators builds a tree as deep as it is long, and the passes over it
/// recurse along it: an expression whose tree would be more than 2 048 operations deep
/// (docs/model-language.md) is an error at the operator that would make it so, instead of a
/// stack overflow (a sum of 100 000 terms had aborted the process). At the limit, the model
/// compiles and evaluates on a test thread's small stack.
#[test]
fn a_chain_beyond_the_documented_tree_depth_is_a_located_error() {
    use vpop::metrics::accumulate::OutputEval;
    const LIMIT: usize = 2048;
    let sum = |n: usize| vec!["a"; n].join(" + ");
    let text = format!(
        "state a\na(0) = 1\nd/dt(a) = -a\noutput y = {}\n",
        sum(LIMIT)
    );
    let m = Model::parse("m.vpm", &text).unwrap();
    let compiled = vpop::model::CompiledModel::new(&m);
    let mut bound = compiled.bind(&[]);
    let mut out = [0.0];
    bound.outputs(0.0, &[1.0], &mut out);
    assert_eq!(out[0], LIMIT as f64);
    // The LIMIT-th `+` (after term LIMIT − 1, each term 4 columns from column 12).
    let (line, col, message) = output_error(&sum(LIMIT + 1)).expect("refused");
    assert_eq!((line, col), (3, 12 + 4 * (LIMIT - 1) + 2), "{message}");
    assert!(
        message.contains("more than 2048 operations deep"),
        "{message}"
    );
    let (_, _, message) = output_error(&sum(100_000)).expect("refused");
    assert!(message.contains("too long"), "{message}");
    // Parentheses alone add nothing to the tree.
    let wrapped = format!("{}{}{}", "(".repeat(60), sum(LIMIT - 1), ")".repeat(60));
    assert_eq!(output_error(&wrapped), None);
}

/// A number is 0 or within f64's normal range. One beyond it (`1e999`, which would be
/// infinite) is an error at its place, and so is one that is not 0 but lies below the
/// smallest normal f64, 2.2250738585072014e-308 (`1e-400`, which would read as 0, and the
/// subnormal `1e-310`, which keeps only some of its digits).
#[test]
fn numbers_beyond_the_normal_range_of_f64_are_located_errors() {
    for (number, want) in [
        ("1e999", "number '1e999' is out of range"),
        ("1e-400", "number '1e-400' is below the smallest normal f64"),
        (
            "0.5e-320",
            "number '0.5e-320' is below the smallest normal f64",
        ),
        ("1e-310", "number '1e-310' is below the smallest normal f64"),
        (
            "2.2250738585072011e-308",
            "is below the smallest normal f64 (2.2250738585072014e-308)",
        ),
    ] {
        let got = output_error(&format!("a * {number}"));
        let Some((line, col, message)) = got else {
            panic!("{number} parsed");
        };
        assert_eq!((line, col), (3, 16), "{number}: {message}");
        assert!(message.contains(want), "{number}: {message}");
    }
    for number in [
        "0",
        "0.0",
        "0e-400",
        "000.000e-999",
        "2.2250738585072014e-308",
        "1e-307",
        "1.7976931348623157e308",
    ] {
        assert_eq!(output_error(&format!("a * {number}")), None, "{number}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = Model::parse("fuzz.vpm", &text);
        let _ = vpop::model::parse_expr_str("fuzz", &text);
    }

    #[test]
    fn mutated_library_models_never_panic(
        which in 0usize..64,
        ops in proptest::collection::vec((0usize..10_000, 0u8..3, proptest::sample::select(b"()+-*/^=,#\n xyz0.5e".to_vec())), 1..6),
    ) {
        let m = &library::MODELS[which % library::MODELS.len()];
        let text = mutate(m.source, &ops);
        if let Ok(model) = Model::parse("mutant.vpm", &text) {
            // Whatever parses must also lower and evaluate without panicking.
            let compiled = vpop::model::CompiledModel::new(&model);
            let params: Vec<f64> = model.params.iter().map(|p| p.default).collect();
            let mut b = compiled.bind(&params);
            let mut y = vec![1.0; model.states.len()];
            b.initial_state(&mut y);
            let mut dy = vec![0.0; y.len()];
            vpop::solver::OdeSystem::rhs(&mut b, 0.5, &y, &mut dy);
        }
    }
}
