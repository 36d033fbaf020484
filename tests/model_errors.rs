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
    // LIMIT operators: LIMIT operations deep.
    let text = format!(
        "state a\na(0) = 1\nd/dt(a) = -a\noutput y = {}\n",
        sum(LIMIT + 1)
    );
    let m = Model::parse("m.vpm", &text).unwrap();
    let compiled = vpop::model::CompiledModel::new(&m);
    let mut bound = compiled.bind(&[]);
    let mut out = [0.0];
    bound.outputs(0.0, &[1.0], &mut out);
    assert_eq!(out[0], (LIMIT + 1) as f64);
    // The (LIMIT + 1)-th `+` (after term LIMIT, each term 4 columns from column 12).
    let (line, col, message) = output_error(&sum(LIMIT + 2)).expect("refused");
    assert_eq!((line, col), (3, 12 + 4 * LIMIT + 2), "{message}");
    assert!(
        message.contains("more than 2048 operations deep"),
        "{message}"
    );
    let (_, _, message) = output_error(&sum(100_000)).expect("refused");
    assert!(message.contains("too long"), "{message}");
    // Parentheses alone add nothing to the tree.
    let wrapped = format!("{}{}{}", "(".repeat(60), sum(LIMIT + 1), ")".repeat(60));
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

/// The statements where a model's right-hand side jumps with the states, as `vpop check`,
/// `run` and `simulate` note them: a threshold on a concentration (in a right-hand side or a
/// derived quantity), `floor` of a state; not a smooth switch, a jump in time alone, a step
/// that selects between two forms of one value (tmdd_qss's root), nor any library model.
#[test]
fn jumps_of_the_right_hand_side_with_the_states_are_found_and_located() {
    let head = "param cl = 2.8\nparam v = 35\nparam mic = 2\nparam kmax = 0.5\n\
                state central, bact\nbact(0) = 1e6\ncp = central / v\n\
                d/dt(central) = -cl / v * central\n";
    let jumps = |body: &str| -> Vec<String> {
        let m = Model::parse("j.vpm", &format!("{head}{body}output b = bact\n")).unwrap();
        let c = vpop::model::CompiledModel::new(&m);
        c.programs
            .rhs_jumps_with_states(&m.defaults())
            .iter()
            .map(|s| format!("{} {}:{}:{}", s.what, s.file, s.line, s.col))
            .collect()
    };
    assert_eq!(
        jumps("d/dt(bact) = 0.05 * bact - if(cp > mic, kmax, 0) * bact\n"),
        ["d/dt(bact) j.vpm:9:6"]
    );
    assert_eq!(
        jumps("kill = kmax * (cp >= mic)\nd/dt(bact) = 0.05 * bact - kill * bact\n"),
        ["kill = … j.vpm:9:1"]
    );
    assert_eq!(
        jumps("d/dt(bact) = -0.1 * floor(central / 7)\n"),
        ["d/dt(bact) j.vpm:9:6"]
    );
    for smooth in [
        "d/dt(bact) = 0.05 * bact - kmax * cp^4 / (mic^4 + cp^4) * bact\n",
        "d/dt(bact) = 0.05 * bact - if(t > 30, kmax, 0) * bact\n",
        "d/dt(bact) = 0.05 * bact - if(mic > 1, kmax, 0) * bact\n",
        "d/dt(bact) = -abs(cp - mic) - max(cp, mic)\n",
    ] {
        assert_eq!(jumps(smooth), Vec::<String>::new(), "{smooth}");
    }
    for entry in library::MODELS {
        let m = Model::parse(entry.name, entry.source).unwrap();
        let c = vpop::model::CompiledModel::new(&m);
        assert!(
            c.programs.rhs_jumps_with_states(&m.defaults()).is_empty(),
            "{}",
            entry.name
        );
    }
    // tmdd_qss reads a comparison of the states, which changes nothing.
    let qss = library::get("tmdd_qss").unwrap();
    let m = Model::parse(qss.name, qss.source).unwrap();
    assert!(vpop::model::CompiledModel::new(&m)
        .programs
        .rhs
        .steps_of_states()
        .contains(&true));
}

/// `vpop check` of a model whose right-hand side jumps says where, and where to read more.
#[test]
fn vpop_check_notes_a_right_hand_side_that_jumps() {
    let dir = std::env::temp_dir().join(format!("vpop-jump-note-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kill.vpm");
    std::fs::write(
        &file,
        "param cl = 2.8\nparam v = 35\nstate central, bact\nbact(0) = 1e6\n\
         d/dt(central) = -cl / v * central\nd/dt(bact) = -if(central / v > 2, 0.5, 0) * bact\n\
         output cp = central / v\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("note        the right-hand side jumps where values of the states cross a bound (`d/dt(bact)` at ")
            && text.contains("kill.vpm:6:6)")
            && text.contains("docs/model-language.md, \"Jumps\""),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vpop check` notes a step in time that is not located (a step of a curve in t); a
/// threshold on t itself, on a parameter, or the light of `mod(t - 8, 24) < 12` become
/// stopping points and get no note.
#[test]
fn vpop_check_notes_steps_in_time_that_are_not_stopping_points() {
    let dir = std::env::temp_dir().join(format!("vpop-time-note-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |name: &str, body: &str| -> String {
        let file = dir.join(name);
        let text =
            format!("param k = 0.1\nparam tstart = 12\nstate a\na(0) = 1\n{body}\noutput cp = a\n");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vpop"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
    };
    let text = check("wave.vpm", "d/dt(a) = -if(sin(t) > 0, k, 0) * a");
    assert!(
        text.contains(
            "note        a step in time whose argument is not a straight line in t (`d/dt(a)` at "
        ) && text.contains("wave.vpm:5:6)"),
        "{text}"
    );
    for body in [
        "d/dt(a) = -if(t > 30, k, 0) * a",
        "d/dt(a) = -if(t > tstart, k, 0) * a",
        "d/dt(a) = -if(mod(t - 8, 24) < 12, k, 0) * a",
    ] {
        let text = check("fixed.vpm", body);
        assert!(!text.contains("  note "), "{body}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An area metric (auc, cavg) of an output that jumps with the states is noted, by its
/// column; an area of a smooth output, or another metric of the jumping one, is not.
#[test]
fn areas_of_outputs_that_jump_with_the_states_are_noted() {
    use vpop::metrics::{MetricRequest, MetricSpec};
    let m = Model::parse(
        "ind.vpm",
        "param ka = 1.5\nparam cl = 2.8\nparam v = 35\nstate depot, central\n\
         d/dt(depot) = -ka * depot\nd/dt(central) = ka * depot - cl / v * central\n\
         c = central / v\noutput cp = c\noutput above = c > 2\noutput day = floor(t / 24)\n",
    )
    .unwrap();
    let c = vpop::model::CompiledModel::new(&m);
    assert_eq!(
        c.programs.outputs_jumping_with_states(&m.defaults()),
        [false, true, false]
    );
    let note = |metrics: &[(usize, &str)]| {
        let specs: Vec<MetricSpec> = metrics
            .iter()
            .map(|(k, name)| {
                MetricSpec::of_model(*k, &m, MetricRequest::parse(name).unwrap().metric)
            })
            .collect();
        vpop::trial::resolve::area_jump_note(
            &c.programs,
            &m.defaults(),
            &specs,
            vpop::solver::Events::Cross,
        )
    };
    let n = note(&[(0, "auc"), (1, "auc"), (1, "cavg(0, 24)"), (2, "auc")]).unwrap();
    assert!(
        n.starts_with("above_auc, above_cavg_0_24 are the area of an output that jumps"),
        "{n}"
    );
    assert!(n.contains("docs/model-language.md, \"Jumps\""), "{n}");
    assert_eq!(
        note(&[(0, "auc"), (1, "cmax"), (1, "time_above(0.5)")]),
        None
    );
}

/// A chain of derived quantities, each using the one before (`a1 = a0 + x`, the way the docs
/// split a long sum), is one expression as deep as the chain once inlined; its derivatives for
/// the Jacobian are taken without recursing along it. 30 000 links compile on a test thread's
/// small stack (2 MiB; they had overflowed the main thread's 8 MiB from about 30 000), and the
/// right-hand side and Jacobian are the closed forms: with a0 = x and a_i = a_(i−1) + x, the
/// last link is 30 000·x, so d/dt(x) = −30 000·x / 1e4 = −3x.
#[test]
fn a_long_chain_of_derived_quantities_compiles_on_a_small_stack() {
    use vpop::model::CompiledModel;
    use vpop::solver::OdeSystem;
    const N: usize = 30_000;
    let mut text = String::from("state x\nx(0) = 2\na0 = x\n");
    for i in 1..N {
        text.push_str(&format!("a{i} = a{} + x\n", i - 1));
    }
    text.push_str(&format!("d/dt(x) = -a{} / 1e4\noutput c = x\n", N - 1));
    let m = Model::parse("chain.vpm", &text).unwrap();
    let compiled = CompiledModel::new(&m);
    let mut bound = compiled.bind(&[]);
    let mut dy = [0.0];
    bound.rhs(0.0, &[2.0], &mut dy);
    assert!((dy[0] + 6.0).abs() < 1e-9, "{}", dy[0]);
    let mut jac = [0.0];
    bound.jacobian(0.0, &[2.0], &mut jac);
    assert!((jac[0] + 3.0).abs() < 1e-9, "{}", jac[0]);
}
