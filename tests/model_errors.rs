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
