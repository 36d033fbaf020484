//! NONMEM's own outputs for 29 dosing scenarios (shared/reference/nmtests: bolus, infusion,
//! lag, bioavailability, modelled duration, ADDL, SS = 1 and 2, steady-state infusion, EVID 3
//! and 4), reproduced on the CPU f64 reference to NONMEM's printed digits:
//! |sim − CP| ≤ 5e-5·|CP| + 1e-3 on every row.

use std::path::PathBuf;

use vpop::backend::records::{
    check_subject, record_program, run_program, simulate_records, RecordBinding,
};
use vpop::dosing::nonmem::Dataset;
use vpop::model::{CompiledModel, Model};
use vpop::solver::{Method, SolverOptions, Status};

fn reference(file: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/nmtests")
        .join(file);
    p.exists().then_some(p)
}

/// NONMEM's CP per dataset row.
fn nonmem_cp(path: &PathBuf) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').nth(2).unwrap().trim().parse().unwrap())
        .collect()
}

fn check(method: Method) {
    let (Some(data), Some(golden)) = (reference("1001.csv"), reference("1001-nm.csv")) else {
        println!("SKIPPED: ../shared/reference/nmtests is not beside the checkout");
        return;
    };
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nm1001.vpm"),
    )
    .unwrap();
    let ir = Model::parse("nm1001.vpm", &text).unwrap();
    let model = CompiledModel::new(&ir);
    let ds = Dataset::load(&data).unwrap();
    let cp = nonmem_cp(&golden);
    assert_eq!(ds.rows, 3837);
    assert_eq!(cp.len(), ds.rows);
    assert_eq!(ds.subjects.len(), 29);
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let solver = SolverOptions {
        method,
        rtol: 1e-10,
        atol: 1e-10,
        ..Default::default()
    };
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let mut worst_at = String::new();
    for s in &ds.subjects {
        check_subject(&ir, &model, &base, &binding, s).unwrap();
        let got = simulate_records(&model, &base, &binding, s, &solver);
        assert_eq!(got.status, Status::Ok, "scenario {}", s.id);
        let mut bad = 0;
        let mut first = None;
        for (j, r) in s.records.iter().enumerate() {
            let want = cp[r.row];
            let sim = got.outputs[0][j];
            let tol = 5e-5 * want.abs() + 1e-3;
            let err = (sim - want).abs();
            if err / tol > worst {
                worst = err / tol;
                worst_at = format!(
                    "scenario {} line {} time {}: {sim} vs {want}",
                    s.id, r.line, r.time
                );
            }
            if err.is_nan() || err > tol {
                bad += 1;
                first.get_or_insert((r.line, r.time, sim, want));
            }
        }
        if bad > 0 {
            failures.push(format!(
                "scenario {}: {bad} of {} rows differ; first at line {} (time {}): {} vs NONMEM {}",
                s.id,
                s.records.len(),
                first.unwrap().0,
                first.unwrap().1,
                first.unwrap().2,
                first.unwrap().3
            ));
        }
    }
    println!("{method}: worst |sim − CP| / tolerance = {worst:.3} ({worst_at})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_scenario_matches_nonmem_with_tsit5() {
    check(Method::Tsit5);
}

#[test]
fn every_scenario_matches_nonmem_with_rodas4() {
    check(Method::Rodas4);
}

/// The records as a program (what the GPU kernels run), run on the CPU reference: the same
/// numbers, bit for bit, as simulating the records directly.
#[test]
fn programs_reproduce_the_direct_simulation() {
    let Some(data) = reference("1001.csv") else {
        println!("SKIPPED: ../shared/reference/nmtests is not beside the checkout");
        return;
    };
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nm1001.vpm"),
    )
    .unwrap();
    let ir = Model::parse("nm1001.vpm", &text).unwrap();
    let model = CompiledModel::new(&ir);
    let ds = Dataset::load(&data).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let solver = SolverOptions {
        rtol: 1e-8,
        atol: 1e-8,
        ..Default::default()
    };
    let mut n_ss = 0;
    for s in &ds.subjects {
        let direct = simulate_records(&model, &base, &binding, s, &solver);
        let program = record_program(&model, &base, &binding, s, &mut |_, _| {});
        n_ss += program
            .ops
            .iter()
            .filter(|op| matches!(op, vpop::backend::records::Op::SteadyState(..)))
            .count();
        let via = run_program(&model, &program, &solver);
        assert_eq!(via, direct, "scenario {}", s.id);
    }
    assert!(n_ss > 0, "the scenarios exercise steady states");
}
