//! NONMEM's own outputs for 29 dosing scenarios (shared/reference/nmtests: bolus, infusion,
//! lag, bioavailability, modelled duration, ADDL, SS = 1 and 2, steady-state infusion, EVID 3
//! and 4), reproduced to NONMEM's printed digits, |sim − CP| ≤ 5e-5·|CP| + 1e-3 on every row:
//! on the CPU f64 reference, and through the record programs every backend runs (the CPU
//! reference, the WGSL kernels in f32 and f64, the CUDA kernels on a device or emulated on the
//! host). Backends that are not there print SKIPPED.

use std::path::PathBuf;

use std::sync::Arc;

use vpop::backend::records::{
    check_subject, record_program, run_program, simulate_records, Program, RecordBinding,
    RecordsOutcome,
};
use vpop::backend::Backend;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
use vpop::backend::Precision;
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

/// The scenarios' dataset, model and NONMEM's CP, or `None` (SKIPPED) without the reference.
struct Golden {
    ir: Model,
    model: CompiledModel,
    ds: Dataset,
    cp: Vec<f64>,
    binding: RecordBinding,
    base: Vec<f64>,
}

fn golden() -> Option<Golden> {
    let (Some(data), Some(golden)) = (reference("1001.csv"), reference("1001-nm.csv")) else {
        println!("SKIPPED: ../shared/reference/nmtests is not beside the checkout");
        return None;
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
    for s in &ds.subjects {
        assert!(check_subject(&ir, &model, &base, &binding, s).is_empty());
    }
    Some(Golden {
        ir,
        model,
        ds,
        cp,
        binding,
        base,
    })
}

/// Every row of every scenario against NONMEM; `outcome(i)` is scenario i's simulation.
fn compare(g: &Golden, what: &str, outcomes: &[RecordsOutcome]) {
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let mut worst_at = String::new();
    for (s, got) in g.ds.subjects.iter().zip(outcomes) {
        let failed_at = s
            .records
            .iter()
            .zip(&got.outputs[0])
            .find(|(_, v)| v.is_nan());
        assert_eq!(
            got.status,
            Status::Ok,
            "{what}: scenario {} failed at {:?} ({:?})",
            s.id,
            failed_at.map(|(r, _)| (r.line, r.time)),
            got.stats
        );
        let mut bad = 0;
        let mut first = None;
        for (j, r) in s.records.iter().enumerate() {
            let want = g.cp[r.row];
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
        if let Some((line, time, sim, want)) = first {
            failures.push(format!(
                "{what}: scenario {}: {bad} of {} rows differ; first at line {line} (time \
                 {time}): {sim} vs NONMEM {want}",
                s.id,
                s.records.len(),
            ));
        }
    }
    println!("{what}: worst |sim − CP| / tolerance = {worst:.3} ({worst_at})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The scenarios as record programs on a backend.
/// Every golden subject's record program.
fn programs(g: &Golden) -> Vec<Program> {
    g.ds.subjects
        .iter()
        .map(|s| record_program(&g.model, &g.base, &g.binding, s, &mut |_, _| {}))
        .collect()
}

fn check_backend(backend: &mut dyn Backend, method: Method, rtol: f64) {
    let Some(g) = golden() else { return };
    let programs = programs(&g);
    let refs: Vec<&Program> = programs.iter().collect();
    let solver = SolverOptions {
        method,
        rtol,
        atol: rtol,
        ..Default::default()
    };
    let info = backend.info();
    let what = format!(
        "{} {} {method} rtol {rtol:e}",
        info.name,
        info.precision.name()
    );
    let outcomes = backend.run_records(&refs, &solver).unwrap();
    assert_eq!(outcomes.len(), programs.len());
    let _ = &g.ir;
    compare(&g, &what, &outcomes);
}

fn check(method: Method) {
    let Some(g) = golden() else { return };
    let solver = SolverOptions {
        method,
        rtol: 1e-10,
        atol: 1e-10,
        ..Default::default()
    };
    let outcomes: Vec<RecordsOutcome> =
        g.ds.subjects
            .iter()
            .map(|s| simulate_records(&g.model, &g.base, &g.binding, s, &solver))
            .collect();
    compare(&g, &format!("cpu records {method}"), &outcomes);
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

#[test]
fn programs_on_the_cpu_backend_match_nonmem() {
    let Some(g) = golden() else { return };
    let mut b = vpop::backend::cpu::CpuBackend::new(Arc::new(g.model));
    check_backend(&mut b, Method::Tsit5, 1e-10);
}

/// The WGSL records kernel, or `None` (SKIPPED) without an adapter for the precision.
#[cfg(feature = "wgpu")]
fn wgpu(precision: Precision) -> Option<vpop::backend::wgpu::WgpuBackend> {
    let g = golden()?;
    match vpop::backend::wgpu::WgpuBackend::new(Arc::new(g.model), precision) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_f64_matches_nonmem() {
    if let Some(mut b) = wgpu(Precision::F64) {
        check_backend(&mut b, Method::Tsit5, 1e-10);
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_f64_rodas4_matches_nonmem() {
    if let Some(mut b) = wgpu(Precision::F64) {
        check_backend(&mut b, Method::Rodas4, 1e-10);
    }
}

#[test]
#[cfg(feature = "wgpu")]
fn wgpu_f32_matches_nonmem() {
    if let Some(mut b) = wgpu(Precision::F32) {
        check_backend(&mut b, Method::Tsit5, 1e-6);
    }
}

/// The CUDA records kernel on the device (`device`) or emulated on the host, or `None`
/// (SKIPPED) where it cannot run.
#[cfg(feature = "cuda")]
fn cuda(device: bool, precision: Precision) -> Option<Box<dyn Backend>> {
    let g = golden()?;
    let model = Arc::new(g.model);
    let made: Result<Box<dyn Backend>, _> = if device {
        vpop::backend::cuda::CudaBackend::new(model, precision).map(|b| Box::new(b) as _)
    } else {
        vpop::backend::cuda::EmulatedCuda::new(model, precision).map(|b| Box::new(b) as _)
    };
    match made {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_matrix(device: bool) {
    for (precision, method, rtol) in [
        (Precision::F64, Method::Tsit5, 1e-10),
        (Precision::F64, Method::Rodas4, 1e-10),
        (Precision::F32, Method::Tsit5, 1e-6),
    ] {
        if let Some(mut b) = cuda(device, precision) {
            check_backend(b.as_mut(), method, rtol);
        }
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_device_matches_nonmem() {
    cuda_matrix(true);
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_emulated_matches_nonmem() {
    cuda_matrix(false);
}

/// Record programs split across lanes (as a machine's streams and devices split them) give
/// what one launch gives, subject by subject.
#[cfg(feature = "cuda")]
#[test]
fn cuda_records_split_across_lanes_equal_one_launch() {
    let Some(g) = golden() else { return };
    let model = Arc::new(g.model.clone());
    let programs = programs(&g);
    let refs: Vec<&Program> = programs.iter().collect();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-6,
        atol: 1e-6,
        ..Default::default()
    };
    let mut runs = Vec::new();
    for lanes in [1, 4] {
        match vpop::backend::cuda::EmulatedCuda::new(model.clone(), Precision::F32) {
            Ok(b) => runs.push(b.with_lanes(lanes).run_records(&refs, &solver).unwrap()),
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        }
    }
    assert_eq!(runs[0].len(), programs.len());
    assert_same_outcomes(&runs[1], &runs[0], "four lanes against one");
}

/// Outcomes equal subject by subject, to the bit.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn assert_same_outcomes(a: &[RecordsOutcome], b: &[RecordsOutcome], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.status, y.status, "{what}: subject {i}");
        assert_eq!(x.stats, y.stats, "{what}: subject {i}");
        for (u, v) in x.outputs.iter().zip(&y.outputs) {
            let same =
                u.len() == v.len() && u.iter().zip(v).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{what}: subject {i}: {u:?} vs {v:?}");
        }
    }
}

/// Record programs handed to threads in the order of their cost (the second call, after the
/// first has been learnt from) give, subject by subject, what they give as given: the golden
/// scenarios ten times over, with their parameters scaled so that their costs differ.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn in_any_order(
    ordered: &mut dyn Backend,
    natural: &mut dyn Backend,
    programs: &[Program],
    what: &str,
) {
    let refs: Vec<&Program> = programs.iter().collect();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-5,
        atol: 1e-5,
        ..Default::default()
    };
    let want = natural.run_records(&refs, &solver).unwrap();
    let first = ordered.run_records(&refs, &solver).unwrap();
    let second = ordered.run_records(&refs, &solver).unwrap();
    assert_same_outcomes(&first, &want, &format!("{what}, first call"));
    assert_same_outcomes(&second, &want, &format!("{what}, ordered call"));
}

/// The golden scenarios' programs ten times, the k-th copy's parameters scaled by 1.1^k.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn varied_programs(g: &Golden) -> Vec<Program> {
    let base = programs(g);
    (0..10)
        .flat_map(|k| {
            base.iter().map(move |p| {
                let mut p = p.clone();
                for set in &mut p.params {
                    for v in set.iter_mut() {
                        *v *= 1.1f64.powi(k);
                    }
                }
                p
            })
        })
        .collect()
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_record_programs_in_any_order_give_the_same_outcomes() {
    let Some(g) = golden() else { return };
    let model = Arc::new(g.model.clone());
    let programs = varied_programs(&g);
    for precision in [Precision::F32, Precision::F64] {
        let make = || vpop::backend::cuda::EmulatedCuda::new(model.clone(), precision);
        match (make(), make()) {
            (Ok(a), Ok(b)) => in_any_order(
                &mut a.with_lanes(3),
                &mut b.with_lanes(3).in_natural_order(),
                &programs,
                &format!("emulated CUDA {}", precision.name()),
            ),
            (Err(e), _) | (_, Err(e)) => {
                println!("SKIPPED: {e}");
                return;
            }
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_record_programs_in_any_order_give_the_same_outcomes() {
    let Some(g) = golden() else { return };
    let programs = varied_programs(&g);
    if let (Some(mut a), Some(b)) = (wgpu(Precision::F32), wgpu(Precision::F32)) {
        in_any_order(&mut a, &mut b.in_natural_order(), &programs, "wgpu f32");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_matches_nonmem() {
    println!("SKIPPED: built without the `cuda` feature");
}
