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

/// A dataset's subjects simulated on every backend, each with the relative tolerance its
/// precision allows: the CPU reference directly and as programs (rtol 1e-10), and the programs
/// on the WGSL and the emulated CUDA records kernels in f64 (rtol 1e-10) and f32 (rtol 1e-6);
/// SKIPPED where a backend is absent.
fn on_every_backend(model: &str, data: &str) -> Vec<(String, f64, Vec<RecordsOutcome>)> {
    let ir = Model::parse("m.vpm", model).unwrap();
    let model = CompiledModel::new(&ir);
    let ds = Dataset::parse("d.csv", data).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    for s in &ds.subjects {
        assert!(check_subject(&ir, &model, &base, &binding, s).is_empty());
    }
    let solver = |rtol: f64| SolverOptions {
        method: Method::Tsit5,
        rtol,
        atol: rtol * 1e-2,
        ..Default::default()
    };
    let programs: Vec<Program> = ds
        .subjects
        .iter()
        .map(|s| record_program(&model, &base, &binding, s, &mut |_, _| {}))
        .collect();
    let refs: Vec<&Program> = programs.iter().collect();
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
    let mut runs = vec![
        (
            "cpu records".to_string(),
            1e-8,
            ds.subjects
                .iter()
                .map(|s| simulate_records(&model, &base, &binding, s, &solver(1e-10)))
                .collect(),
        ),
        (
            "cpu programs".to_string(),
            1e-8,
            refs.iter()
                .map(|p| run_program(&model, p, &solver(1e-10)))
                .collect(),
        ),
    ];
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    for (precision, rtol, tol) in [(Precision::F64, 1e-10, 1e-8), (Precision::F32, 1e-6, 1e-4)] {
        let model = Arc::new(model.clone());
        #[cfg_attr(not(all(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        #[cfg(feature = "wgpu")]
        match vpop::backend::wgpu::WgpuBackend::new(model.clone(), precision) {
            Ok(b) => backends.push(Box::new(b)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        #[cfg(feature = "cuda")]
        match vpop::backend::cuda::EmulatedCuda::new(model.clone(), precision) {
            Ok(b) => backends.push(Box::new(b)),
            Err(e) => println!("SKIPPED: {e}"),
        }
        for mut b in backends {
            let name = format!("{} {}", b.info().name, precision.name());
            runs.push((name, tol, b.run_records(&refs, &solver(rtol)).unwrap()));
        }
    }
    runs
}

/// Every backend's output `k` on the records with a closed form (`want[subject][record]`,
/// `None` where there is none) within its tolerance of it, relative to the largest value.
fn check_closed_form(
    runs: &[(String, f64, Vec<RecordsOutcome>)],
    k: usize,
    want: &[Vec<Option<f64>>],
) {
    let scale = want
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (name, tol, outcomes) in runs {
        let mut worst = 0.0f64;
        for (i, (got, want)) in outcomes.iter().zip(want).enumerate() {
            assert_eq!(got.status, Status::Ok, "{name}: subject {i}");
            for (j, w) in want.iter().enumerate() {
                let Some(w) = w else { continue };
                let g = got.outputs[k][j];
                let err = (g - w).abs() / scale;
                worst = worst.max(err);
                assert!(err <= *tol, "{name}: subject {i}, record {j}: {g} vs {w}");
            }
        }
        println!(
            "{name}: largest difference from the closed form {worst:.2e} of the largest value"
        );
    }
}

const ONE_CMT_IV: &str = "
param cl = 2
param v = 10
state central
d/dt(central) = -cl / v * central
output cp = central / v
";

/// SS = 1 cancels the additional doses earlier records still had to give (NONMEM's SS help:
/// "infusions in progress or pending additional doses are cancelled"), and keeps its own; a
/// reset (EVID 3) and SS = 2 keep them. 100 every 12 h from 0 (ADDL 5: doses to 60), then at
/// 30 h: SS = 1 of 100 every 24 h with ADDL 1 (subject 1), a reset (2), SS = 2 of 100 every
/// 24 h (3). One-compartment IV bolus, k = CL/V = 0.2 /h, on every backend against the sum of
/// the doses' exponentials.
#[test]
fn steady_state_cancels_pending_additional_doses_on_every_backend() {
    let data = "ID,TIME,EVID,AMT,CMT,SS,II,ADDL
1,0,1,100,1,0,12,5
1,25,0,.,1,.,.,.
1,30,1,100,1,1,24,1
1,31,0,.,1,.,.,.
1,37,0,.,1,.,.,.
1,50,0,.,1,.,.,.
1,56,0,.,1,.,.,.
1,62,0,.,1,.,.,.
2,0,1,100,1,0,12,5
2,25,0,.,1,.,.,.
2,30,3,.,.,.,.,.
2,31,0,.,1,.,.,.
2,37,0,.,1,.,.,.
2,50,0,.,1,.,.,.
3,0,1,100,1,0,12,5
3,25,0,.,1,.,.,.
3,30,1,100,1,2,24,0
3,31,0,.,1,.,.,.
3,37,0,.,1,.,.,.
3,50,0,.,1,.,.,.
";
    let (k, v) = (0.2f64, 10.0f64);
    // The concentration at t of boluses of 100 at `doses`, and of the steady state of 100
    // every 24 h whose last dose is at 30 (when `ss`).
    let cp = |t: f64, doses: &[f64], ss: bool| -> f64 {
        let mut c: f64 = doses
            .iter()
            .filter(|&&d| d <= t)
            .map(|d| 100.0 / v * (-k * (t - d)).exp())
            .sum();
        if ss && t >= 30.0 {
            c += 100.0 / v * (-k * (t - 30.0)).exp() / (1.0 - (-24.0 * k).exp());
        }
        c
    };
    let before = [0.0, 12.0, 24.0];
    let all = [0.0, 12.0, 24.0, 36.0, 48.0, 60.0];
    let ds = Dataset::parse("d.csv", data).unwrap();
    let want: Vec<Vec<Option<f64>>> = ds
        .subjects
        .iter()
        .map(|s| {
            s.records
                .iter()
                .map(|r| {
                    let t = r.time;
                    Some(match (s.id.as_str(), t < 30.0) {
                        (_, true) => cp(t, &before, false),
                        // Only the steady state and its own additional dose at 54.
                        ("1", false) => cp(t, &[54.0], true),
                        // The reset empties the body; the doses at 36, 48 and 60 still come.
                        ("2", false) => cp(t, &[36.0, 48.0, 60.0], false),
                        _ => cp(t, &all, true),
                    })
                })
                .collect()
        })
        .collect();
    let runs = on_every_backend(ONE_CMT_IV, data);
    check_closed_form(&runs, 0, &want);
}

const LAGGED_ORAL: &str = "
param ka = 1
param cl = 2
param v = 10
param lagt = 0
state depot, central
d/dt(depot) = -ka * depot
d/dt(central) = ka * depot - cl / v * central
alag(depot) = lagt
output cp = central / v
";

/// The lag in force at a dose record applies to its additional doses (NONMEM's dose help: "the
/// value of ALAGn in effect at time T applies to the dose and to all subsequent additional
/// doses"), however it changes after the record: 100 into the depot at 0 with lag 2 and one
/// additional dose 12 h later (arriving at 14, not at 20 with the lag of 8 set at 6 h), then a
/// dose record at 16 that takes the lag of 8 (arriving at 24). One-compartment oral model
/// (ka 1 /h, k 0.2 /h, V 10) on every backend against the closed form of its doses.
#[test]
fn additional_doses_keep_the_lag_of_their_record_on_every_backend() {
    let data = "ID,TIME,EVID,AMT,CMT,II,ADDL,LAGT
1,0,1,100,1,12,1,2
1,3,0,.,2,.,.,.
1,6,2,.,1,.,.,8
1,13,0,.,2,.,.,.
1,15,0,.,2,.,.,.
1,16,1,100,1,.,.,.
1,21,0,.,2,.,.,.
1,25,0,.,2,.,.,.
";
    let (ka, k, v) = (1.0f64, 0.2f64, 10.0f64);
    let cp = |t: f64| -> f64 {
        [2.0, 14.0, 24.0]
            .iter()
            .filter(|&&a| a <= t)
            .map(|a| {
                let s = t - a;
                100.0 * ka / (ka - k) * ((-k * s).exp() - (-ka * s).exp()) / v
            })
            .sum()
    };
    let ds = Dataset::parse("d.csv", data).unwrap();
    let want: Vec<Vec<Option<f64>>> = vec![ds.subjects[0]
        .records
        .iter()
        .map(|r| Some(cp(r.time)))
        .collect()];
    let runs = on_every_backend(LAGGED_ORAL, data);
    check_closed_form(&runs, 0, &want);
}

/// A record with a very large ADDL beside thousands of records: 1 every 0.01 h from 0 with
/// ADDL 200 000 (to 2 000 h), 2 every 0.5 h from 1 000.0025 h with ADDL 1 000 (to 1 500 h), and
/// 4 000 observation records between the doses, on the CPU reference directly and as a
/// program, against the closed form of the two geometric series of boluses (one-compartment
/// IV, k = CL/V = 0.2 /h). The additional doses are made one at a time as they fall due, not
/// listed at once and sorted again at every record (docs/nonmem.md has the times).
#[test]
fn a_record_with_a_large_addl_matches_the_closed_form() {
    let (ii1, addl1, ii2, addl2, start2) = (0.01f64, 200_000u32, 0.5f64, 1_000u32, 1000.0025f64);
    let obs: Vec<f64> = (0..4000).map(|j| 0.005 + 0.55 * j as f64).collect();
    let mut data = format!("ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,1,1,{ii1},{addl1}\n");
    let mut second = false;
    for t in &obs {
        if !second && *t > start2 {
            data.push_str(&format!("1,{start2},1,2,1,{ii2},{addl2}\n"));
            second = true;
        }
        data.push_str(&format!("1,{t},0,.,1,.,.\n"));
    }
    let (k, v) = (0.2f64, 10.0f64);
    // Boluses of `amount` at start, start + ii, …, start + addl·ii, at t: the last one given
    // N intervals after the start, and the geometric series of the N + 1 given.
    let series = |t: f64, amount: f64, start: f64, ii: f64, addl: u32| -> f64 {
        if t < start {
            return 0.0;
        }
        let n = ((t - start) / ii).floor().min(f64::from(addl));
        let r = (-k * ii).exp();
        amount / v * (-k * (t - start - n * ii)).exp() * (1.0 - r.powf(n + 1.0)) / (1.0 - r)
    };
    let cp = |t: f64| series(t, 1.0, 0.0, ii1, addl1) + series(t, 2.0, start2, ii2, addl2);
    let ir = Model::parse("m.vpm", ONE_CMT_IV).unwrap();
    let model = CompiledModel::new(&ir);
    let ds = Dataset::parse("d.csv", &data).unwrap();
    let s = &ds.subjects[0];
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-10,
        atol: 1e-12,
        ..Default::default()
    };
    let direct = simulate_records(&model, &base, &binding, s, &solver);
    let program = record_program(&model, &base, &binding, s, &mut |_, _| {});
    let via = run_program(&model, &program, &solver);
    assert_eq!(via, direct);
    assert_eq!(direct.status, Status::Ok);
    let want: Vec<f64> = s.records.iter().map(|r| cp(r.time)).collect();
    let scale = want.iter().fold(0.0f64, |m, w| m.max(*w));
    let mut worst = 0.0f64;
    for (r, (g, w)) in s.records.iter().zip(direct.outputs[0].iter().zip(&want)) {
        let err = (g - w).abs() / scale;
        worst = worst.max(err);
        assert!(err <= 1e-8, "t {}: {g} vs {w}", r.time);
    }
    println!("largest difference from the closed form {worst:.2e} of the largest value {scale}");
}

/// A subject that fails at a record has NaN outputs from that record on, on every backend (the
/// kernels write only the records they reach; the buffer starts as NaN), and the subject after
/// it its own values: a modelled duration of 0 at the second dose (RATE −2) fails the first.
#[test]
fn records_after_a_failure_are_nan_on_every_backend() {
    let model = "
param cl = 2
param v = 10
param tinf = 1
state central
d/dt(central) = -cl / v * central
dur(central) = tinf
output cp = central / v
";
    let data = "ID,TIME,EVID,AMT,CMT,RATE,TINF
1,0,1,100,1,0,.
1,1,0,.,1,.,.
1,2,1,100,1,-2,0
1,3,0,.,1,.,.
1,4,0,.,1,.,.
2,0,1,100,1,0,.
2,1,0,.,1,.,.
2,4,0,.,1,.,.
";
    let cp = |t: f64| 10.0 * (-0.2 * t).exp();
    for (name, tol, outcomes) in on_every_backend(model, data) {
        assert_eq!(outcomes[0].status, Status::NonFinite, "{name}");
        let got = &outcomes[0].outputs[0];
        for (j, t) in [0.0, 1.0].iter().enumerate() {
            assert!((got[j] - cp(*t)).abs() <= tol * 10.0, "{name}: {got:?}");
        }
        assert!(got[2..].iter().all(|v| v.is_nan()), "{name}: {got:?}");
        assert_eq!(outcomes[1].status, Status::Ok, "{name}");
        for (j, t) in [0.0, 1.0, 4.0].iter().enumerate() {
            let g = outcomes[1].outputs[0][j];
            assert!((g - cp(*t)).abs() <= tol * 10.0, "{name}: {g} at {t}");
        }
    }
}
