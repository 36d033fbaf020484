//! `vpop run` on a NONMEM-format dataset (`[data]`): every dataset subject replicated with its
//! own draws, outputs on every record checked against the closed form of a one-compartment IV
//! bolus with each virtual subject's written parameters; covariates given by the dataset;
//! residual error on observation records only; resumption; located errors.

use std::path::{Path, PathBuf};

mod common;

use arrow_array::{Array, Float64Array, UInt32Array, UInt64Array, UInt8Array};
use vpop::trial::{run_trial, RunOptions, Trial};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const POP: &str = r#"
[population]
name = "iv"

[covariates.wt]
dist = "lognormal"
median = 70
cv = 0.2

[covariates.sex]
levels = { male = 0.5, female = 0.5 }

[parameters]
cl = "5 * (wt / 70)^0.75 * exp(eta_cl)"
v = "50 * exp(eta_v)"

[[omega]]
etas = ["eta_cl", "eta_v"]
cv = [0.3, 0.2]

[residual]
cp = { proportional = 0.1 }
"#;

/// Subject 1 gives its weight and sex, and its weight changes at 12 h (clearance follows);
/// subject 2 gives neither (drawn); subject 3's second dose is an EVID 4 reset-and-dose.
const DATA: &str = "ID,TIME,EVID,AMT,CMT,WT,SEX,DV
1,0,1,100,1,52,1,.
1,1,0,.,1,.,.,1.5
1,6,0,.,1,.,.,.
1,12,1,100,1,70,.,.
1,14,0,.,1,.,.,.
2,0,1,200,1,.,.,.
2,2,0,.,1,.,.,.
2,24,0,.,1,.,.,.
3,0,1,100,1,90,0,.
3,4,0,.,1,.,.,.
3,8,4,50,1,.,.,.
3,10,0,.,1,.,.,.
";

const SPEC: &str = r#"
[trial]
name = "dataset"
seed = 11

[model]
library = "one_cmt_iv"

[population]
file = "pop.toml"

[data]
file = "data.csv"
replicates = 40

[simulation]
method = "tsit5"
rtol = 1e-10
atol = 1e-12
chunk_size = 25

[output]
dir = "out"
parameters = true
observations = true
"#;

fn setup(name: &str, spec: &str) -> (PathBuf, Result<Trial, String>) {
    let dir = tmp(name);
    std::fs::write(dir.join("pop.toml"), POP).unwrap();
    std::fs::write(dir.join("data.csv"), DATA).unwrap();
    let t = Trial::from_text(&dir.join("spec.toml"), spec).map_err(|e| e.to_string());
    (dir, t)
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions {
        shard: None,
        quiet: true,
        overwrite: false,
        backend: None,
        subjects: None,
        chunk_size: None,
        output_dir: Some(dir.to_path_buf()),
        stop_after_parts: None,
        integrators: None,
    }
}

struct Rows {
    subject: Vec<u64>,
    replicate: Vec<u32>,
    time: Vec<f64>,
    evid: Vec<u8>,
    cols: std::collections::HashMap<String, Vec<Option<f64>>>,
}

fn read(dir: &Path) -> Rows {
    let parts = common::parquet_parts(dir);
    let mut r = Rows {
        subject: vec![],
        replicate: vec![],
        time: vec![],
        evid: vec![],
        cols: Default::default(),
    };
    for p in parts {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&p).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let get = |n: &str| b.column_by_name(n).unwrap().clone();
            let f64s = |n: &str| {
                let c = get(n);
                let c = c.as_any().downcast_ref::<Float64Array>().unwrap().clone();
                (0..c.len())
                    .map(|i| (!c.is_null(i)).then(|| c.value(i)))
                    .collect::<Vec<_>>()
            };
            let s = get("subject_id");
            r.subject
                .extend(s.as_any().downcast_ref::<UInt64Array>().unwrap().values());
            let s = get("replicate");
            r.replicate
                .extend(s.as_any().downcast_ref::<UInt32Array>().unwrap().values());
            let s = get("EVID");
            r.evid
                .extend(s.as_any().downcast_ref::<UInt8Array>().unwrap().values());
            r.time.extend(f64s("TIME").into_iter().map(|v| v.unwrap()));
            for n in ["cp", "cp_obs", "cl", "v", "wt", "DV"] {
                r.cols.entry(n.to_string()).or_default().extend(f64s(n));
            }
        }
    }
    r
}

/// Every record's cp against the closed form of a one-compartment IV bolus with the written
/// parameters, within `rel`. Subject 1's weight, 70 kg on its record at 12 h, holds from
/// `from`: 6 h, the time of the record before it (next observation carried backward, the
/// default), or 12 h (`covariates = "locf"`).
fn check_closed_form(r: &Rows, rel: f64, from: f64) {
    let cp = &r.cols["cp"];
    let (cl, v, wt) = (&r.cols["cl"], &r.cols["v"], &r.cols["wt"]);
    let mut last_dose: std::collections::HashMap<u64, Vec<(f64, f64, bool)>> = Default::default();
    for i in 0..r.subject.len() {
        let s = r.subject[i];
        let id = s % 3;
        assert_eq!(u64::from(r.replicate[i]), s / 3);
        // Subject 1's weight comes from the dataset, the others' only when given.
        match id {
            0 => assert_eq!(wt[i], Some(52.0)),
            2 => assert_eq!(wt[i], Some(90.0)),
            _ => assert_ne!(wt[i], Some(52.0)),
        }
        let (cl, v) = (cl[i].unwrap(), v[i].unwrap());
        // Doses up to this record (EVID 4 clears what came before).
        let doses = last_dose.entry(s).or_default();
        let t_rec = r.time[i];
        if r.evid[i] == 1 || r.evid[i] == 4 {
            let amt = match (id, t_rec as u32) {
                (1, _) => 200.0,
                (2, 8) => 50.0,
                _ => 100.0,
            };
            doses.push((t_rec, amt, r.evid[i] == 4));
        }
        let start = doses.iter().rposition(|d| d.2).unwrap_or(0);
        let mut want: f64 = doses[start..]
            .iter()
            .map(|(td, a, _)| a / v * (-(cl / v) * (t_rec - td)).exp())
            .sum();
        if id == 0 && t_rec >= 12.0 {
            // From `from` the weight is 70 kg instead of 52: clearance × (70/52)^0.75. The
            // records before 12 h are at 0, 1 and 6 h, none after `from`.
            let cl2 = cl * (70.0f64 / 52.0).powf(0.75);
            let a_from = 100.0 * (-(cl / v) * from).exp();
            let a12 = a_from * (-(cl2 / v) * (12.0 - from)).exp() + 100.0;
            want = a12 / v * (-(cl2 / v) * (t_rec - 12.0)).exp();
        }
        let got = cp[i].unwrap();
        assert!(
            (got - want).abs() <= rel * want.abs() + 1e-12,
            "subject {s} t {t_rec}: {got} vs {want}"
        );
    }
}

#[test]
fn every_record_of_every_replicate_matches_the_closed_form() {
    let (dir, t) = setup("closed-form", SPEC);
    let t = t.unwrap();
    assert_eq!(t.subjects, 3 * 40);
    let out = dir.join("out");
    let report = run_trial(&t, &opts(&out)).unwrap();
    assert_eq!(report.backend.name, "cpu");
    assert_eq!(report.parts_written, 5);
    let r = read(&out);
    // 5 + 3 + 4 records per replicate.
    assert_eq!(r.subject.len(), 40 * 12);
    check_closed_form(&r, 1e-8, 6.0);
    let (cp, obs) = (&r.cols["cp"], &r.cols["cp_obs"]);
    let (mut z, mut z2, mut nobs) = (0.0, 0.0, 0);
    for i in 0..r.subject.len() {
        let got = cp[i].unwrap();
        match (r.evid[i], obs[i]) {
            (0, Some(y)) => {
                let e = (y - got) / (0.1 * got);
                z += e;
                z2 += e * e;
                nobs += 1;
            }
            (0, None) => panic!("no observation on an observation record"),
            (_, Some(_)) => panic!("an observation on a dose record"),
            _ => {}
        }
    }
    // Proportional residual error with SD 0.1: standardised residuals ~ N(0, 1).
    let m = z / nobs as f64;
    let sd = (z2 / nobs as f64 - m * m).sqrt();
    assert!(m.abs() < 4.0 / (nobs as f64).sqrt(), "mean {m}");
    assert!((sd - 1.0).abs() < 0.15, "sd {sd} over {nobs}");
    // The dataset's DV is carried along.
    assert_eq!(r.cols["DV"][1], Some(1.5));

    // The visual predictive check: a PNG of the simulated bands and the observed DV.
    let rep = vpop::trial::report::report(&out, &dir.join("report"), 1000).unwrap();
    assert_eq!(rep.files.len(), 1);
    assert!(rep.files[0].ends_with("vpc.png"));
    let png = std::fs::read(&rep.files[0]).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // A run stopped after two parts resumes to the same files.
    let again = dir.join("again");
    let stop = RunOptions {
        stop_after_parts: Some(2),
        ..opts(&again)
    };
    assert!(!run_trial(&t, &stop).unwrap().complete);
    let resumed = run_trial(&t, &opts(&again)).unwrap();
    assert_eq!(resumed.parts_resumed, 2);
    for k in 0..5 {
        let name = format!("part-{k:05}.parquet");
        assert_eq!(
            std::fs::read(out.join(&name)).unwrap(),
            std::fs::read(again.join(&name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn bad_dataset_trials_are_located_errors() {
    let with_arm = SPEC.replace(
        "[simulation]",
        "[[arm]]\nname = \"a\"\ndose = { amount = 1, into = \"central\" }\n\n[simulation]",
    );
    let e = setup("arm", &with_arm).1.err().unwrap();
    assert!(e.contains("spec.toml:") && e.contains("[[arm]]"), "{e}");
    let with_metrics = SPEC.replace(
        "parameters = true",
        "parameters = true\nmetrics = [\"auc\"]",
    );
    let e = setup("metrics", &with_metrics).1.err().unwrap();
    // At the metric, not at [data].
    let line = SPEC.lines().position(|l| l == "parameters = true").unwrap() + 2;
    assert!(
        e.contains(&format!(
            "spec.toml:{line}:12: [output] metrics: a [data] trial"
        )),
        "{e}"
    );
    // A dataset that is not there: the file, without a place in it.
    let e = setup("missing", &SPEC.replace("data.csv", "nope.csv"))
        .1
        .err()
        .unwrap();
    assert!(
        e.contains("dataset: ") && e.contains("nope.csv: cannot read the dataset: "),
        "{e}"
    );
    assert!(!e.contains("nope.csv:1:1"), "{e}");
    let with_end = SPEC.replace("[simulation]", "[simulation]\nend = 12");
    let e = setup("end", &with_end).1.err().unwrap();
    assert!(
        e.contains("a [data] trial runs to its dataset's last record: remove `end`"),
        "{e}"
    );
    let with_subjects = SPEC.replace("seed = 11", "seed = 11\nsubjects = 5");
    let e = setup("subjects", &with_subjects).1.err().unwrap();
    assert!(e.contains("replicates"), "{e}");
    // A sex code the population does not have, at its field (line 2, column 16), with the
    // column's name; on a later record too, whose value takes over from the first.
    let (dir, _) = setup("code", SPEC);
    for (from, to, at) in [
        (
            "1,0,1,100,1,52,1,.",
            "1,0,1,100,1,52,2,.",
            "data.csv:2:16: column SEX: 2",
        ),
        (
            "1,12,1,100,1,70,.,.",
            "1,12,1,100,1,70,7,.",
            "data.csv:5:17: column SEX: 7",
        ),
        (
            "3,4,0,.,1,.,.,.",
            "3,4,0,.,1,.,0.5,.",
            "data.csv:11:13: column SEX: 0.5",
        ),
    ] {
        std::fs::write(dir.join("data.csv"), DATA.replace(from, to)).unwrap();
        let e = match Trial::from_text(&dir.join("spec.toml"), SPEC) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{to}: accepted"),
        };
        assert!(
            e.contains(&format!(
                "{at} is not a code of the population's categorical covariate 'sex' (its \
                 codes: 0 male, 1 female)"
            )),
            "{e}"
        );
    }
    // An output or a parameter named like a column of the dataset's rows: located at the
    // model, before anything runs (the part would have held two columns of one name, and an
    // output named `status` stopped the writer).
    let model = |extra: &str| {
        format!(
            "param cl = 5\nparam v = 50\n{extra}\nstate central\n\
             d/dt(central) = -cl / v * central\noutput cp = central / v\n"
        )
    };
    let clash = SPEC.replace("library = \"one_cmt_iv\"", "file = \"clash.vpm\"");
    for (extra, want) in [
        (
            "output TIME = central",
            "'TIME' (a column of every dataset run and an output of the model): rename one",
        ),
        (
            "output status = central",
            "'status' (an output of the model and a column of every dataset run): rename one",
        ),
        (
            "param EVID = 1",
            "'EVID' (a column of every dataset run and a parameter of the model): rename one, or \
             leave the parameters out ([output] parameters = false)",
        ),
    ] {
        std::fs::write(dir.join("data.csv"), DATA).unwrap();
        std::fs::write(dir.join("clash.vpm"), model(extra)).unwrap();
        let e = match Trial::from_text(&dir.join("spec.toml"), &clash) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{extra}: accepted"),
        };
        assert!(
            e.contains(&format!(
                "spec.toml:7:8: the output would have two columns named {want}"
            )),
            "{e}"
        );
    }
    // A compartment the model does not have.
    std::fs::write(
        dir.join("data.csv"),
        DATA.replace("3,8,4,50,1,", "3,8,4,50,2,"),
    )
    .unwrap();
    let e = match Trial::from_text(&dir.join("spec.toml"), SPEC) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("CMT 2 accepted for a one-compartment model"),
    };
    // At the CMT field: line 12, column 10.
    assert!(e.contains("data.csv:12:10: CMT 2"), "{e}");
    // RATE = -1 without a modelled rate, at the RATE field.
    std::fs::write(
        dir.join("data.csv"),
        "ID,TIME,AMT,RATE,CMT\n1,0,100,2,1\n1,12,100,-1,1\n",
    )
    .unwrap();
    let e = match Trial::from_text(&dir.join("spec.toml"), SPEC) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("RATE -1 accepted without a modelled rate"),
    };
    assert!(
        e.contains("data.csv:3:10: RATE = -1 needs a modelled rate"),
        "{e}"
    );
}

/// A covariate the dataset gives that the population computes from others (`wt` from `bmi`
/// and `height`): a note says those keep their draws. A drawn one (the POP's `wt`) has none.
#[test]
fn a_given_covariate_the_population_derives_is_a_note() {
    let derived = POP.replace(
        "[covariates.wt]\ndist = \"lognormal\"\nmedian = 70\ncv = 0.2\n",
        "[covariates.bmi]\ndist = \"lognormal\"\nmedian = 24\ncv = 0.1\n\n\
         [covariates.height]\ndist = \"normal\"\nmean = 170\nsd = 8\n\n\
         [covariates.wt]\nexpr = \"bmi * (height / 100)^2\"\n",
    );
    assert_ne!(derived, POP);
    let (dir, t) = setup("derived-note", SPEC);
    assert!(t.unwrap().design_notes().is_empty());
    std::fs::write(dir.join("pop.toml"), derived).unwrap();
    let t = Trial::from_text(&dir.join("spec.toml"), SPEC).unwrap();
    assert_eq!(
        t.design_notes(),
        [
            "the dataset gives wt, which the population computes from bmi, height: those keep \
          their draws, so in the written rows they need not agree with the dataset's wt"
        ]
    );
}

/// The same dataset trial on the WGSL records kernel (SKIPPED without an adapter): in f64 at
/// rtol 1e-10 every record within 1e-8 of the closed form, as on the CPU; in f32 at rtol 1e-6
/// within 1e-4 of it.
#[test]
fn the_wgpu_records_kernel_matches_the_closed_form() {
    for (precision, rtol, atol, rel) in [
        ("f64", "1e-10", "1e-12", 1e-8),
        ("f32", "1e-6", "1e-9", 1e-4),
    ] {
        let spec = SPEC
            .replace(
                "rtol = 1e-10",
                &format!("rtol = {rtol}\nprecision = \"{precision}\""),
            )
            .replace("atol = 1e-12", &format!("atol = {atol}"));
        let (dir, t) = setup(&format!("wgpu-{precision}"), &spec);
        let out = dir.join("out");
        let gpu = RunOptions {
            backend: Some(vpop::trial::resolve::BackendChoice::Wgpu),
            ..opts(&out)
        };
        let report = match run_trial(&t.unwrap(), &gpu) {
            Ok(r) => r,
            Err(e) if e.contains("not available") => {
                println!("SKIPPED: {e}");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(report.backend.name, "wgpu");
        assert_eq!(report.backend.precision.name(), precision);
        let r = read(&out);
        assert_eq!(r.subject.len(), 40 * 12);
        check_closed_form(&r, rel, 6.0);
        println!(
            "wgpu {precision}: {} records within {rel:e} of the closed form",
            r.subject.len()
        );
    }
}

/// `covariates = "locf"`: a weight given on a record holds from that record on, on the CPU
/// reference and on the wgpu records kernel (f64; SKIPPED without an adapter); a rule other
/// than nocb or locf is a located error.
#[test]
fn last_observation_carried_forward_changes_the_weight_at_its_record() {
    let spec = SPEC.replace("replicates = 40", "replicates = 40\ncovariates = \"locf\"");
    let (dir, t) = setup("locf", &spec);
    let t = t.unwrap();
    let out = dir.join("out");
    run_trial(&t, &opts(&out)).unwrap();
    check_closed_form(&read(&out), 1e-8, 12.0);
    #[cfg(feature = "wgpu")]
    {
        let spec = spec.replace("rtol = 1e-10", "rtol = 1e-10\nprecision = \"f64\"");
        let (dir, t) = setup("locf-wgpu", &spec);
        let out = dir.join("out");
        let gpu = RunOptions {
            backend: Some(vpop::trial::resolve::BackendChoice::Wgpu),
            ..opts(&out)
        };
        match run_trial(&t.unwrap(), &gpu) {
            Ok(_) => check_closed_form(&read(&out), 1e-8, 12.0),
            Err(e) if e.contains("not available") => println!("SKIPPED: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
    let bad = SPEC.replace("replicates = 40", "replicates = 40\ncovariates = \"carry\"");
    let Err(err) = setup("locf-bad", &bad).1 else {
        panic!("covariates = \"carry\" accepted");
    };
    assert!(
        err.contains("spec.toml:15:14") && err.contains("expected \"nocb\""),
        "{err}"
    );
}

/// A subject with more records than a software adapter lets a kernel loop run (65 535
/// iterations on lavapipe) on the WGSL records kernel in f32: every record within 1e-4 of the
/// CPU reference (SKIPPED without an adapter). A dose every 12 h (ADDL 10), then 65 600
/// observation records at 82 times, 800 at each (the same outputs, few integration steps).
#[cfg(feature = "wgpu")]
#[test]
fn a_subject_with_more_records_than_a_kernel_loop_runs_on_wgpu() {
    use std::sync::Arc;
    use vpop::backend::records::{record_program, simulate_records, Program, RecordBinding};
    use vpop::backend::{Backend, Precision};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions, Status};
    let ir = Model::parse(
        "m.vpm",
        "param ka = 1\nparam cl = 2\nparam v = 10\nstate depot, central\n\
         d/dt(depot) = -ka * depot\nd/dt(central) = ka * depot - cl / v * central\n\
         output cp = central / v\n",
    )
    .unwrap();
    let model = CompiledModel::new(&ir);
    let mut text = String::from("ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0,1,100,1,12,10\n");
    for i in 1..=65_600 {
        text.push_str(&format!("1,{},0,.,2,.,.\n", (i - 1) / 800 + 1));
    }
    let ds = vpop::dosing::nonmem::Dataset::parse("d.csv", &text).unwrap();
    let subject = &ds.subjects[0];
    assert!(subject.records.len() > 65_536);
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base: Vec<f64> = ir.params.iter().map(|p| p.default).collect();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-6,
        atol: 1e-9,
        ..Default::default()
    };
    let cpu = simulate_records(&model, &base, &binding, subject, &solver);
    assert_eq!(cpu.status, Status::Ok);
    let program = record_program(&model, &base, &binding, subject, &mut |_, _| {});
    let mut gpu = match vpop::backend::wgpu::WgpuBackend::new(Arc::new(model), Precision::F32) {
        Ok(b) => b,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let refs: Vec<&Program> = vec![&program];
    let got = gpu.run_records(&refs, &solver).unwrap();
    assert_eq!(got[0].status, Status::Ok);
    let scale = cpu.outputs[0].iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got[0].outputs[0]
        .iter()
        .zip(&cpu.outputs[0])
        .map(|(g, c)| (g - c).abs() / scale)
        .fold(0.0f64, f64::max);
    assert_eq!(got[0].outputs[0].len(), subject.records.len());
    assert!(
        got[0].outputs[0].iter().all(|v| v.is_finite()) && worst <= 1e-4,
        "largest difference {worst:e} of the largest value"
    );
    println!(
        "wgpu f32: {} records, largest difference from the CPU {worst:.2e} of the largest value",
        subject.records.len()
    );
}

/// `vpop bench` on a dataset trial: the record programs on the CPU and on wgpu (SKIPPED
/// without an adapter), the outputs on every record against the tight CPU reference.
#[test]
fn bench_runs_a_dataset_trial_on_every_backend() {
    use vpop::trial::bench::{run_bench, BenchOptions, Target};
    let (_dir, t) = setup("bench", SPEC);
    let opts = BenchOptions {
        subjects: 120,
        cpu_subjects: 60,
        targets: vec![Target::Cpu, Target::Wgpu(vpop::backend::Precision::F32)],
        rtol: Some(1e-6),
        ..Default::default()
    };
    let rep = run_bench(&t.unwrap(), &opts, &mut |_| {}).unwrap();
    assert!(rep.records);
    assert!(rep.reference.contains("every record"), "{}", rep.reference);
    assert!(vpop::trial::bench::format_report(&rep).contains("outputs on every record"));
    assert_eq!(rep.rows[0].backend, "cpu (f64)");
    for r in &rep.rows {
        println!(
            "{}: {} subjects, max rel. error {:.2e}",
            r.backend, r.subjects, r.max_rel_metrics
        );
        assert_eq!(r.failed, 0);
        assert_eq!(r.status_mismatches, 0);
        assert!(
            r.max_rel_metrics < 1e-4,
            "{}: {}",
            r.backend,
            r.max_rel_metrics
        );
        assert!(r.steps_per_subject > 0.0);
    }
    match rep.rows.get(1) {
        Some(r) => assert_eq!(r.subjects, 120),
        None => println!("SKIPPED: {}", rep.skipped[0].reason),
    }
}

/// `vpop simulate MODEL --data CSV --out CSV`: a bolus, a zero-order infusion (RATE) and an
/// EVID 4 reset-and-dose, every record's cp against the closed form of the one-compartment
/// model with its default parameters (CL 5, V 50), in a column named as the model names the
/// output; a CMT the model lacks is refused at its field before anything is printed.
#[test]
fn vpop_simulate_runs_a_dataset_and_locates_its_errors() {
    let dir = tmp("simulate-data");
    let data = dir.join("d.csv");
    std::fs::write(
        &data,
        "ID,TIME,EVID,AMT,RATE,CMT\n1,0,1,100,.,1\n1,1,0,.,.,1\n1,6,0,.,.,1\n\
         1,12,1,100,20,1\n1,14,0,.,.,1\n1,24,0,.,.,1\n1,30,4,50,.,1\n1,32,0,.,.,1\n",
    )
    .unwrap();
    let pred = dir.join("pred.csv");
    let vpop = |args: &[&std::ffi::OsStr]| common::simulate_in(None, args);
    let out = vpop(&[
        "one_cmt_iv".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        pred.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (cl, v) = (5.0f64, 50.0f64);
    let k = cl / v;
    // Amount in central at t: the 100 mg bolus at 0 and the 100 mg infusion at 20 mg/h from 12
    // (5 h), until the reset at 30; then the 50 mg bolus alone.
    let amount = |t: f64| -> f64 {
        if t >= 30.0 {
            return 50.0 * (-k * (t - 30.0)).exp();
        }
        let mut a = 100.0 * (-k * t).exp();
        if t > 12.0 {
            let on = (t - 12.0).min(5.0);
            a += 20.0 / k * (1.0 - (-k * on).exp()) * (-k * (t - 12.0 - on)).exp();
        }
        a
    };
    let text = std::fs::read_to_string(&pred).unwrap();
    let mut lines = text.lines();
    // The records' columns in NONMEM's capitals, the output as the model declares it (as
    // `vpop run` writes a `[data]` trial's rows).
    assert_eq!(
        lines.next(),
        Some("ID,TIME,EVID,CMT,AMT,RATE,SS,II,ADDL,DV,cp")
    );
    let mut n = 0;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let (t, cp): (f64, f64) = (f[1].parse().unwrap(), f[10].parse().unwrap());
        let want = amount(t) / v;
        assert!(
            (cp - want).abs() <= 1e-6 * want,
            "t {t}: cp {cp} vs closed form {want}"
        );
        n += 1;
    }
    assert_eq!(n, 8);
    // The same records as R's write.csv(na = ".") writes them, header and character columns
    // quoted (C a character column): the same rows; the row whose C is "C" is a comment.
    let quoted = dir.join("quoted.csv");
    std::fs::write(
        &quoted,
        "\"C\",\"ID\",\"TIME\",\"EVID\",\"AMT\",\"RATE\",\"CMT\"\n\
         \".\",\"1\",0,1,100,.,1\n\".\",\"1\",1,0,.,.,1\n\".\",\"1\",6,0,.,.,1\n\
         \"C\",\"1\",7,1,999,.,1\n\".\",\"1\",12,1,\"100\",20,1\n\".\",\"1\",14,0,.,.,1\n\
         \".\",\"1\",24,0,.,.,1\n\".\",\"1\",30,4,50,.,1\n\".\",\"1\",32,0,.,.,1\n",
    )
    .unwrap();
    let pred_quoted = dir.join("pred_quoted.csv");
    let out = vpop(&[
        "one_cmt_iv".as_ref(),
        "--data".as_ref(),
        quoted.as_os_str(),
        "--out".as_ref(),
        pred_quoted.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&pred_quoted).unwrap(), text);
    // Refused, with nothing on stdout: a dataset whose every record is a comment, an amount on
    // an observation record (a mistyped EVID would drop the dose), infusions of nothing, a
    // compartment turned off.
    for (records, want) in [
        (
            "C,ID,TIME,AMT,CMT\nC,1,0,100,1\nC,1,1,.,1\n",
            "d.csv:1:1: the dataset has no records: all 2 rows after the header are comments",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,0,100,1\n1,5,0,.,1\n",
            "d.csv:2:7: AMT is 100 on a record that gives no dose (EVID 0)",
        ),
        (
            "ID,TIME,AMT,CMT,RATE\n1,0,0,1,10\n1,5,.,1,.\n",
            "d.csv:2:9: RATE is 10 on a dose with AMT 0 and SS 0",
        ),
        // A steady-state dose of nothing (AMT 0 with II > 0), which with SS = 1 would also
        // have wiped out the bolus before it.
        (
            "ID,TIME,EVID,AMT,CMT,SS,II,RATE\n1,0,1,100,1,0,0,0\n1,6,1,0,1,1,12,10\n\
             1,7,0,.,1,.,.,.\n",
            "d.csv:3:13: II is 12 on a steady-state dose (SS 1) with AMT 0 and RATE 10",
        ),
        // A negative CMT turns a compartment off in NONMEM, on an other-type event too.
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,1,2,.,-1\n1,2,0,.,1\n",
            "d.csv:3:9: CMT -1 turns compartment 1 off, which is not supported",
        ),
    ] {
        std::fs::write(&data, records).unwrap();
        let out = vpop(&["one_cmt_iv".as_ref(), "--data".as_ref(), data.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{want}\n{err}");
        assert!(out.stdout.is_empty());
    }
    // A compartment the model lacks: line 5, the CMT field at column 15; nothing on stdout.
    std::fs::write(
        &data,
        "ID,TIME,EVID,AMT,RATE,CMT\n1,0,1,100,.,1\n1,1,0,.,.,1\n1,6,0,.,.,1\n1,12,1,100,20,2\n",
    )
    .unwrap();
    let out = vpop(&["one_cmt_iv".as_ref(), "--data".as_ref(), data.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("d.csv:5:15: CMT 2 but the model has 1 compartment (state)"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `vpop simulate --out` quotes an ID that holds a comma or a quote (read from a quoted field)
/// as RFC 4180 does, so that the file has one field per column and reads back with the same
/// IDs: the output of observation records, read back as a dataset, gives the same file.
#[test]
fn vpop_simulate_out_quotes_ids_and_reads_back() {
    let dir = tmp("simulate-quoted-ids");
    let vpop = |args: &[&str]| {
        common::simulate_ok(Some(&dir), args);
    };
    // A dose: the output's rows, quoted where the ID needs it.
    std::fs::write(
        dir.join("dose.csv"),
        "ID,TIME,AMT,CMT\n\"A, site 2\",0,100,1\n\"A, site 2\",1,.,1\n",
    )
    .unwrap();
    vpop(&["one_cmt_iv", "--data", "dose.csv", "--out", "dose_out.csv"]);
    let text = std::fs::read_to_string(dir.join("dose_out.csv")).unwrap();
    let cp1 = 100.0 / 50.0 * (-0.1f64).exp();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "ID,TIME,EVID,CMT,AMT,RATE,SS,II,ADDL,DV,cp",
            "\"A, site 2\",0,1,1,100,0,0,0,0,.,2"
        ]
    );
    let last: f64 = lines[2]
        .strip_prefix("\"A, site 2\",1,0,1,.,.,.,.,.,.,")
        .unwrap()
        .parse()
        .unwrap();
    assert!((last - cp1).abs() <= 1e-6 * cp1, "{}", lines[2]);
    // Observation records of subjects whose IDs hold commas, quotes and a leading '#': read
    // back, the same subjects, times and values.
    std::fs::write(
        dir.join("obs.csv"),
        "ID,TIME,EVID\n\"A, site 2\",0,0\n\"A, site 2\",1,0\n\"say \"\"hi\"\", 3\",0,0\n\"#4\",2,2\n",
    )
    .unwrap();
    vpop(&["one_cmt_iv", "--data", "obs.csv", "--out", "obs_out.csv"]);
    let first = std::fs::read_to_string(dir.join("obs_out.csv")).unwrap();
    assert!(
        first.contains("\n\"say \"\"hi\"\", 3\",0,0,.,.,.,.,.,.,.,0\n\"#4\",2,2,.,.,.,.,.,.,.,0\n"),
        "{first}"
    );
    vpop(&["one_cmt_iv", "--data", "obs_out.csv", "--out", "again.csv"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("again.csv")).unwrap(),
        first
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vpop simulate --out` writes a dataset: read back, it gives the same records and the same
/// predictions, the file again. Boluses with ADDL, an infusion (RATE), a clearance set by a
/// covariate column on an other-type record (MDV 1) at 36 h, an EVID 4 reset-and-dose, DV
/// values, and a steady-state dose (SS = 1); every prediction against the closed form of the
/// one-compartment IV model (CL 5, then 10 for subject 1; V 50). The clearance of 10 holds
/// from 31 h, the record before (next observation carried backward, the default, during the
/// infusion), or from 36 h with `--covariates locf`.
#[test]
fn vpop_simulate_out_reads_back_as_the_same_dataset() {
    let dir = tmp("simulate-round-trip");
    std::fs::write(
        dir.join("d.csv"),
        "ID,TIME,EVID,AMT,CMT,RATE,II,ADDL,SS,CL,DV,MDV
1,0,1,100,1,.,12,2,0,.,.,0
1,6,0,.,1,.,.,.,.,.,1.5,0
1,30,1,60,1,20,.,0,0,.,.,0
1,31,0,.,1,.,.,.,.,.,.,0
1,36,2,.,.,.,.,.,.,10,.,1
1,40,0,.,1,.,.,.,.,.,2.2,0
1,48,4,50,1,.,.,.,.,.,.,0
1,50,0,.,1,.,.,.,.,.,.,1
2,0,1,100,1,0,24,0,1,.,.,0
2,5,0,.,1,.,.,.,.,.,.,0
",
    )
    .unwrap();
    let ok = |args: &[&str]| -> String {
        let out = common::simulate_in(Some(&dir), args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        err
    };
    ok(&["one_cmt_iv", "--data", "d.csv", "--out", "first.csv"]);
    // The output's column, read back as a covariate, gives way to the output.
    let note = ok(&["one_cmt_iv", "--data", "first.csv", "--out", "again.csv"]);
    assert!(
        note.contains(
            "note: --out leaves out the dataset's column CP: the output 'cp' takes its name"
        ),
        "{note}"
    );
    let first = std::fs::read_to_string(dir.join("first.csv")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("again.csv")).unwrap(),
        first
    );
    let v = 50.0f64;
    let (k1, k2) = (5.0 / v, 10.0 / v);
    // Subject 1: boluses of 100 at 0, 12 and 24, 60 at 20/h from 30 (3 h), all with k1 until
    // `from`, then k2; the reset at 48 leaves the bolus of 50 alone.
    let one = |t: f64, from: f64| -> f64 {
        if t >= 48.0 {
            return 50.0 * (-k2 * (t - 48.0)).exp() / v;
        }
        let at = |t: f64| -> f64 {
            let mut a: f64 = [0.0, 12.0, 24.0]
                .iter()
                .filter(|d| **d <= t)
                .map(|d| 100.0 * (-k1 * (t - d)).exp())
                .sum();
            if t > 30.0 {
                let on = (t - 30.0).min(3.0);
                a += 20.0 / k1 * (1.0 - (-k1 * on).exp()) * (-k1 * (t - 30.0 - on)).exp();
            }
            a
        };
        if t <= from {
            return at(t) / v;
        }
        // What was in by `from`, and the rest of the infusion (until 33 h), with k2.
        let on = (t - from).min((33.0 - from).max(0.0));
        (at(from) * (-k2 * (t - from)).exp()
            + 20.0 / k2 * (1.0 - (-k2 * on).exp()) * (-k2 * (t - from - on)).exp())
            / v
    };
    // Subject 2: the steady state of 100 every 24 h, its dose at 0 given.
    let two = |t: f64| 100.0 * (-k1 * t).exp() / (1.0 - (-24.0 * k1).exp()) / v;
    let mut lines = first.lines();
    assert_eq!(
        lines.next(),
        Some("ID,TIME,EVID,CMT,AMT,RATE,SS,II,ADDL,DV,cp,CL")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let written: Vec<String> = rows
        .iter()
        .map(|f| [&f[..10], &f[11..]].concat().join(","))
        .collect();
    // The records as read (MDV 1 on a record that is no dose: EVID 2), their missing values '.'.
    assert_eq!(
        written,
        [
            "1,0,1,1,100,0,0,12,2,.,.",
            "1,6,0,1,.,.,.,.,.,1.5,.",
            "1,30,1,1,60,20,0,0,0,.,.",
            "1,31,0,1,.,.,.,.,.,.,.",
            "1,36,2,.,.,.,.,.,.,.,10",
            "1,40,0,1,.,.,.,.,.,2.2,.",
            "1,48,4,1,50,0,0,0,0,.,.",
            "1,50,2,1,.,.,.,.,.,.,.",
            "2,0,1,1,100,0,1,24,0,.,.",
            "2,5,0,1,.,.,.,.,.,.,.",
        ]
    );
    let check = |text: &str, from: f64| {
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            let (t, cp): (f64, f64) = (f[1].parse().unwrap(), f[10].parse().unwrap());
            let want = if f[0] == "1" { one(t, from) } else { two(t) };
            assert!(
                (cp - want).abs() <= 1e-6 * want,
                "ID {} t {t} (CL 10 from {from}): cp {cp} vs closed form {want}",
                f[0]
            );
        }
    };
    check(&first, 31.0);
    ok(&[
        "one_cmt_iv",
        "--data",
        "d.csv",
        "--covariates",
        "locf",
        "--out",
        "locf.csv",
    ]);
    check(
        &std::fs::read_to_string(dir.join("locf.csv")).unwrap(),
        36.0,
    );
    // An output named like one of the records' columns would be read back as it: refused with
    // --out, simulated without.
    std::fs::write(
        dir.join("dv.vpm"),
        "param cl = 5\nparam v = 50\nstate central\nd/dt(central) = -cl / v * central\n\
         output Dv = central / v\n",
    )
    .unwrap();
    ok(&["dv.vpm", "--data", "d.csv"]);
    let out = common::simulate_in(
        Some(&dir),
        &["dv.vpm", "--data", "d.csv", "--out", "dv.csv"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--out: the model's output 'Dv' has the name of the column DV"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// NONMEM's IDs are numbers: `1`, `1.0` and `01` name one subject, whose records are simulated
/// together (the dose at 0 counts at 1 and 2 h) and written with its ID as first written;
/// `--id 1.00` selects it; the same number again after another subject is a located error.
#[test]
fn ids_that_are_the_same_number_are_one_subject() {
    let dir = tmp("numeric-ids");
    std::fs::write(
        dir.join("d.csv"),
        "ID,TIME,AMT,CMT\n1,0,100,1\n1.0,1,.,1\n01,2,.,1\n2,0,50,1\n2.00,3,.,1\nA,0,.,1\n",
    )
    .unwrap();
    let out = common::simulate_in(
        Some(&dir),
        &["one_cmt_iv", "--data", "d.csv", "--out", "all.csv"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp = |dose: f64, t: f64| dose / 50.0 * (-0.1 * t).exp();
    let check = |file: &str, want: &[(&str, f64, f64)]| {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(rows.len(), want.len(), "{text}");
        for (f, (id, t, c)) in rows.iter().zip(want) {
            let (time, got): (f64, f64) = (f[1].parse().unwrap(), f[10].parse().unwrap());
            assert_eq!((f[0], time), (*id, *t), "{text}");
            assert!(
                (got - c).abs() <= 1e-6 * c.max(1e-300),
                "{id} at {t}: {got} vs {c}"
            );
        }
    };
    check(
        "all.csv",
        &[
            ("1", 0.0, cp(100.0, 0.0)),
            ("1", 1.0, cp(100.0, 1.0)),
            ("1", 2.0, cp(100.0, 2.0)),
            ("2", 0.0, cp(50.0, 0.0)),
            ("2", 3.0, cp(50.0, 3.0)),
            ("A", 0.0, 0.0),
        ],
    );
    let out = common::simulate_in(
        Some(&dir),
        &[
            "one_cmt_iv",
            "--data",
            "d.csv",
            "--id",
            "1.00",
            "--out",
            "one.csv",
        ],
    );
    assert!(out.status.success());
    check(
        "one.csv",
        &[
            ("1", 0.0, cp(100.0, 0.0)),
            ("1", 1.0, cp(100.0, 1.0)),
            ("1", 2.0, cp(100.0, 2.0)),
        ],
    );
    std::fs::write(
        dir.join("d.csv"),
        "ID,TIME,AMT,CMT\n1,0,100,1\n2,0,50,1\n1.0,1,.,1\n",
    )
    .unwrap();
    let out = common::simulate_in(Some(&dir), &["one_cmt_iv", "--data", "d.csv"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("d.csv:4:1: the records of subject 1.0 (first written 1) are not contiguous"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every record the model cannot take is reported at once, each at its line and column
/// (compartments past the model's, on any record; modelled rates and durations it does not
/// declare).
#[test]
fn every_record_the_model_cannot_take_is_reported() {
    let dir = std::env::temp_dir().join(format!("vpop-bad-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("d.csv"),
        "ID,TIME,EVID,AMT,CMT,RATE\n1,0,1,100,9,0\n1,1,1,100,1,-1\n1,2,0,.,1,.\n2,0,1,100,1,-2\n2,1,1,100,5,0\n2,2,0,.,3,.\n",
    )
    .unwrap();
    let out = common::simulate_in(Some(&dir), &["one_cmt_iv", "--data", "d.csv"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "d.csv:2:11: CMT 9 but the model has 1 compartment (state)",
        "d.csv:3:13: RATE = -1 needs a modelled rate",
        "d.csv:5:13: RATE = -2 needs a modelled duration",
        "d.csv:6:11: CMT 5 but the model has 1 compartment (state)",
        // On an observation record too.
        "d.csv:7:9: CMT 3 but the model has 1 compartment (state)",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A subject's records stop where the model jumps in time, also where the jump moves with a
/// parameter a dataset column sets (each subject's records are resolved on the host): a
/// clearance that steps up after `tswitch` follows its closed form on every record, on the
/// CPU reference and in the wgpu f64 records kernel (SKIPPED without an adapter), within
/// 5e-8 at rtol 1e-8 (largest error 7e-9), and in the wgpu f32 one within 1e-5 at rtol 1e-6.
/// Before, the step control crossed the jump, and the records after it were up to 5e-7 off
/// (f64).
#[test]
fn records_stop_where_the_model_jumps_in_time() {
    use vpop::backend::records::{record_program, simulate_records, RecordBinding};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions, Status};
    let ir = Model::parse(
        "m.vpm",
        "param k1 = 0.05\nparam k2 = 0.2\nparam tswitch = 30\nstate a\n\
         d/dt(a) = -if(t > tswitch, k2, k1) * a\noutput cp = a\n",
    )
    .unwrap();
    let model = CompiledModel::new(&ir);
    let times = [0.0, 10.0, 25.0, 33.3, 50.0, 70.0];
    let mut text = String::from("ID,TIME,EVID,AMT,CMT,TSWITCH\n");
    for (id, ts) in [(1, 20.0), (2, 41.5)] {
        text.push_str(&format!("{id},0,1,10,1,{ts}\n"));
        for t in &times[1..] {
            text.push_str(&format!("{id},{t},0,.,1,{ts}\n"));
        }
    }
    let ds = vpop::dosing::nonmem::Dataset::parse("d.csv", &text).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base = ir.defaults();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-8,
        atol: 1e-13,
        ..Default::default()
    };
    let exact = |ts: f64, t: f64| -> f64 {
        let (k1, k2) = (0.05, 0.2);
        10.0 * (-k1 * t.min(ts)).exp() * (-k2 * (t - ts).max(0.0)).exp()
    };
    let check = |what: &str, outputs: &[Vec<f64>], ts: f64| {
        for (j, t) in times.iter().enumerate() {
            let (got, want) = (outputs[0][j], exact(ts, *t));
            assert!(
                (got - want).abs() <= 5e-8 * want,
                "{what}: tswitch {ts}, t {t}: {got} vs {want} ({:.1e})",
                (got - want).abs() / want
            );
        }
    };
    let mut programs = Vec::new();
    for (s, ts) in ds.subjects.iter().zip([20.0, 41.5]) {
        let cpu = simulate_records(&model, &base, &binding, s, &solver);
        assert_eq!(cpu.status, Status::Ok);
        check("cpu", &cpu.outputs, ts);
        programs.push(record_program(&model, &base, &binding, s, &mut |_, _| {}));
    }
    #[cfg(not(feature = "wgpu"))]
    println!(
        "SKIPPED: built without the wgpu feature ({} programs)",
        programs.len()
    );
    #[cfg(feature = "wgpu")]
    {
        use std::sync::Arc;
        use vpop::backend::records::Program;
        use vpop::backend::{Backend, Precision};
        let mut gpu = match vpop::backend::wgpu::WgpuBackend::new(Arc::new(model), Precision::F64) {
            Ok(b) => b,
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        let refs: Vec<&Program> = programs.iter().collect();
        let got = gpu.run_records(&refs, &solver).unwrap();
        for (o, ts) in got.iter().zip([20.0, 41.5]) {
            assert_eq!(o.status, Status::Ok);
            check("wgpu f64", &o.outputs, ts);
        }
        // f32 at rtol 1e-6: within 1e-5 (largest error 2.3e-6, 2 steps rejected per subject).
        // With the f64 stops alone, rounded to the nearest f32 (20 + 3 f64 units rounds to
        // 20, before the jump), the step control crossed the jump: 5.3e-5, 14 rejected.
        let mut gpu = vpop::backend::wgpu::WgpuBackend::new(
            Arc::new(CompiledModel::new(&ir)),
            Precision::F32,
        )
        .unwrap();
        let loose = SolverOptions {
            rtol: 1e-6,
            atol: 1e-9,
            ..solver
        };
        let got = gpu.run_records(&refs, &loose).unwrap();
        for (o, ts) in got.iter().zip([20.0, 41.5]) {
            assert_eq!(o.status, Status::Ok);
            let worst = times
                .iter()
                .enumerate()
                .map(|(j, t)| (o.outputs[0][j] - exact(ts, *t)).abs() / exact(ts, *t))
                .fold(0.0, f64::max);
            println!(
                "wgpu f32: tswitch {ts}: {worst:.2e}, steps {} + {}",
                o.stats.accepted, o.stats.rejected
            );
            assert!(worst <= 1e-5, "wgpu f32: tswitch {ts}: {worst:.2e}");
        }
    }
}

/// A dataset's records on the model `ir` (source text), at rtol 1e-10 in f64: on the CPU
/// reference, and as record programs on the wgpu and CUDA records kernels (CUDA emulated on
/// the host where there is no device; SKIPPED where neither can be built). Every subject
/// succeeds, and `check(what, subject, outputs)` judges each subject's first output on every
/// record.
fn records_on_every_backend(ir: &str, data: &str, check: &dyn Fn(&str, usize, &[f64])) {
    let ok = |_| vpop::solver::Status::Ok;
    records_on_every_backend_with(ir, data, 1e-10, &ok, check);
}

/// [`records_on_every_backend`] at `rtol`, where subject `s` ends with the status `status(s)`.
fn records_on_every_backend_with(
    ir: &str,
    data: &str,
    rtol: f64,
    status: &dyn Fn(usize) -> vpop::solver::Status,
    check: &dyn Fn(&str, usize, &[f64]),
) {
    use vpop::backend::records::{record_program, simulate_records, Program, RecordBinding};
    use vpop::backend::Backend;
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions};
    let ir = Model::parse("m.vpm", ir).unwrap();
    let model = std::sync::Arc::new(CompiledModel::new(&ir));
    let ds = vpop::dosing::nonmem::Dataset::parse("d.csv", data).unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let base = ir.defaults();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol,
        atol: 1e-14,
        ..Default::default()
    };
    let mut programs = Vec::new();
    for (s, subject) in ds.subjects.iter().enumerate() {
        let cpu = simulate_records(&model, &base, &binding, subject, &solver);
        assert_eq!(cpu.status, status(s), "cpu: subject {}", s + 1);
        check("cpu", s, &cpu.outputs[0]);
        programs.push(record_program(
            &model,
            &base,
            &binding,
            subject,
            &mut |_, _| {},
        ));
    }
    let refs: Vec<&Program> = programs.iter().collect();
    #[cfg_attr(not(any(feature = "wgpu", feature = "cuda")), allow(unused_mut))]
    let mut backends: Vec<(&str, Box<dyn Backend>)> = Vec::new();
    #[cfg(feature = "wgpu")]
    match vpop::backend::wgpu::WgpuBackend::new(model.clone(), vpop::backend::Precision::F64) {
        Ok(b) => backends.push(("wgpu f64", Box::new(b))),
        Err(e) => println!("SKIPPED: wgpu: {e}"),
    }
    #[cfg(feature = "cuda")]
    if let Some(b) = common::cuda_or_emulated(model.clone(), vpop::backend::Precision::F64) {
        backends.push(("cuda f64", b));
    }
    if backends.is_empty() {
        println!("SKIPPED: built without the wgpu and cuda features (the CPU reference ran)");
    }
    for (what, mut b) in backends {
        let got = b.run_records(&refs, &solver).unwrap();
        for (s, o) in got.iter().enumerate() {
            assert_eq!(o.status, status(s), "{what}: subject {}", s + 1);
            check(what, s, &o.outputs[0]);
        }
        println!("{what}: every record as the closed form has it");
    }
}

/// A reset may take time back (a crossover's second period from 0 again): every record
/// against the closed form of a one-compartment IV model, on the CPU reference and as record
/// programs on the wgpu and CUDA records kernels in f64 (CUDA emulated on the host where
/// there is no device; SKIPPED where neither can be built), and through `vpop simulate`.
/// Subject 1: 100 at 0 and 12 (ADDL 1), then at TIME 0 a reset-and-dose of 50 with CL 10
/// given on it (from then on). Subject 2: an infusion of 100 at 10/h from 10 h, a reset at
/// TIME 5 that ends it, then 40 at 7 h.
#[test]
fn a_reset_may_take_time_back() {
    let text = "ID,TIME,EVID,AMT,RATE,CMT,II,ADDL,CL\n\
        1,0,1,100,.,1,12,1,.\n1,1,0,.,.,1,.,.,.\n1,18,0,.,.,1,.,.,.\n\
        1,0,4,50,.,1,.,.,10\n1,2,0,.,.,1,.,.,.\n1,8,0,.,.,1,.,.,.\n\
        2,0,2,.,.,1,.,.,.\n2,10,1,100,10,1,.,.,.\n2,15,0,.,.,1,.,.,.\n\
        2,5,3,.,.,1,.,.,.\n2,6,0,.,.,1,.,.,.\n2,7,1,40,.,1,.,.,.\n2,9,0,.,.,1,.,.,.\n";
    let v = 50.0f64;
    let (k1, k2) = (5.0 / v, 10.0 / v);
    let want: [&[f64]; 2] = [
        &[
            100.0 / v,
            100.0 * (-k1).exp() / v,
            (100.0 * (-k1 * 18.0).exp() + 100.0 * (-k1 * 6.0).exp()) / v,
            50.0 / v,
            50.0 * (-k2 * 2.0).exp() / v,
            50.0 * (-k2 * 8.0).exp() / v,
        ],
        &[
            0.0,
            0.0,
            10.0 / k1 * (1.0 - (-k1 * 5.0).exp()) / v,
            0.0,
            0.0,
            40.0 / v,
            40.0 * (-k1 * 2.0).exp() / v,
        ],
    ];
    let check = |what: &str, s: usize, got: &[f64]| {
        assert_eq!(got.len(), want[s].len(), "{what}");
        for (j, (g, w)) in got.iter().zip(want[s]).enumerate() {
            assert!(
                (g - w).abs() <= 1e-8 * w + 1e-14,
                "{what}: subject {}, record {j}: {g} vs {w}",
                s + 1
            );
        }
    };
    let ir = "param cl = 5\nparam v = 50\nstate central\nd/dt(central) = -cl / v * central\n\
              output cp = central / v\n";
    records_on_every_backend(ir, text, &check);
    // The command line: the same records, the same closed form.
    let dir = tmp("time-back");
    std::fs::write(dir.join("d.csv"), text).unwrap();
    std::fs::write(dir.join("m.vpm"), ir).unwrap();
    let out = common::simulate_in(
        Some(&dir),
        &[
            "m.vpm", "--data", "d.csv", "--rtol", "1e-10", "--atol", "1e-14", "--out", "p.csv",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.join("p.csv")).unwrap();
    let mut cp: [Vec<f64>; 2] = Default::default();
    for l in written.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        cp[f[0].parse::<usize>().unwrap() - 1].push(f[10].parse().unwrap());
    }
    check("vpop simulate", 0, &cp[0]);
    check("vpop simulate", 1, &cp[1]);
}

/// A lagged dose takes the bioavailability (and with it an infusion's duration) in force when
/// it enters, after its lag, as NONMEM does ("the value of the bioavailability parameter in
/// effect at the time the dose is actually introduced"): F drops from 1 to 0.5 on a record at
/// 1 h, so under the default rule it holds from 0 h on; the lag is 2 h. Subject 1: a bolus of
/// 100 at 0 enters at 2 h as 50. Subject 2: an infusion of 100 at 20/h at 0 enters at 2 h as
/// 50, for 2.5 h. Subject 3: as subject 1, with an F of −1 on the dose's record, which no
/// dose takes (the dose enters with 0.5), so the subject does not fail. Under `locf` F changes
/// at 1 h, still before the doses enter. Every record against the closed form on every backend
/// (see `records_on_every_backend`).
#[test]
fn a_lagged_dose_takes_the_bioavailability_in_force_when_it_enters() {
    let ir = "param cl = 5\nparam v = 50\nparam fbio = 1\nparam lagc = 2\nstate central\n\
              d/dt(central) = -cl / v * central\nf(central) = fbio\nalag(central) = lagc\n\
              output cp = central / v\n";
    let text = "ID,TIME,EVID,AMT,RATE,CMT,FBIO\n\
        1,0,1,100,.,1,1\n1,1,2,.,.,1,0.5\n1,3,0,.,.,1,.\n\
        2,0,1,100,20,1,1\n2,1,2,.,.,1,0.5\n2,3,0,.,.,1,.\n2,6,0,.,.,1,.\n\
        3,0,1,100,.,1,-1\n3,1,2,.,.,1,0.5\n3,3,0,.,.,1,.\n";
    let (v, k) = (50.0f64, 0.1f64);
    // The infusion: 50 at 20/h from 2 h to 4.5 h.
    let infusion = |t: f64| -> f64 {
        let on = (t - 2.0).clamp(0.0, 2.5);
        20.0 / k * (1.0 - (-k * on).exp()) * (-k * (t - 2.0 - on)).exp() / v
    };
    let want: [&[f64]; 3] = [
        &[0.0, 0.0, 50.0 * (-k).exp() / v],
        &[0.0, 0.0, infusion(3.0), infusion(6.0)],
        &[0.0, 0.0, 50.0 * (-k).exp() / v],
    ];
    let check = |what: &str, s: usize, got: &[f64]| {
        assert_eq!(got.len(), want[s].len(), "{what}");
        for (j, (g, w)) in got.iter().zip(want[s]).enumerate() {
            assert!(
                (g - w).abs() <= 1e-8 * w + 1e-14,
                "{what}: subject {}, record {j}: {g} vs {w}",
                s + 1
            );
        }
    };
    records_on_every_backend(ir, text, &check);
}

/// A parameter a dataset column has set keeps that value when covariates the dataset gives
/// change later and the population's parameters are re-evaluated with them: here CL = 10 from
/// the record at 2 h (from 0 h, under the default rule) holds over the clearance a weight of
/// 140 kg on the record at 4 h would give (5·2^0.75). The CPU reference, with the update a
/// `[data]` trial makes (the population's clearance from the weight).
#[test]
fn a_clearance_the_dataset_sets_holds_over_the_populations() {
    use vpop::backend::records::{simulate_records_with, RecordBinding};
    use vpop::model::{CompiledModel, Model};
    use vpop::solver::{Method, SolverOptions, Status};
    let ir = Model::parse(
        "m.vpm",
        "param cl = 5\nparam v = 50\nstate central\nd/dt(central) = -cl / v * central\n\
         output cp = central / v\n",
    )
    .unwrap();
    let model = CompiledModel::new(&ir);
    let ds = vpop::dosing::nonmem::Dataset::parse(
        "d.csv",
        "ID,TIME,EVID,AMT,CMT,WT,CL\n1,0,1,100,1,70,.\n1,2,0,.,1,.,10\n1,4,0,.,1,140,.\n\
         1,6,0,.,1,.,.\n",
    )
    .unwrap();
    let binding = RecordBinding::new(&ir, &ds.covariates);
    let wt = ds.covariates.iter().position(|c| c == "wt").unwrap();
    let solver = SolverOptions {
        method: Method::Tsit5,
        rtol: 1e-10,
        atol: 1e-14,
        ..Default::default()
    };
    let mut update = |r: &vpop::dosing::nonmem::Record, p: &mut [f64]| {
        let w = r.covariates[wt];
        if !w.is_nan() {
            p[0] = 5.0 * (w / 70.0).powf(0.75);
        }
    };
    let out = simulate_records_with(
        &model,
        &ir.defaults(),
        &binding,
        &ds.subjects[0],
        &solver,
        &mut update,
    );
    assert_eq!(out.status, Status::Ok);
    for (t, got) in [0.0f64, 2.0, 4.0, 6.0].iter().zip(&out.outputs[0]) {
        let want = 2.0 * (-0.2 * t).exp();
        assert!((got - want).abs() <= 1e-8 * want, "t {t}: {got} vs {want}");
    }
}

/// Additional doses that fall on a record's time in exact arithmetic are given before it, as
/// doses at its time are, though TIME + k·II misses it by round-off in binary (a dose at 0.1 h
/// every 0.1 h: 0.1 + 2·0.1 is 0.30000000000000004, the record's 0.3 is 0.29999999999999999;
/// the observation at 0.3 h came before that dose). Every record against the sum of the
/// doses up to its time on every backend (see `records_on_every_backend`).
#[test]
fn additional_doses_on_a_records_time_come_before_it_despite_round_off() {
    let ir = "param cl = 5\nparam v = 50\nstate central\nd/dt(central) = -cl / v * central\n\
              output cp = central / v\n";
    let times = [0.1, 0.3, 0.7, 2.3, 2.4];
    let mut text = String::from("ID,TIME,EVID,AMT,CMT,II,ADDL\n1,0.1,1,100,1,0.1,30\n");
    for t in &times[1..] {
        text.push_str(&format!("1,{t},0,.,1,.,.\n"));
    }
    // Doses at m/10 h for m = 1..=31, those up to each record's time (in tenths) counted.
    let want: Vec<f64> = times
        .iter()
        .map(|&t: &f64| {
            let tenths = (t * 10.0).round() as i32;
            (1..=tenths.min(31))
                .map(|m| 2.0 * (-0.1 * (t - f64::from(m) / 10.0)).exp())
                .sum()
        })
        .collect();
    let check = |what: &str, _: usize, got: &[f64]| {
        for ((t, g), w) in times.iter().zip(got).zip(&want) {
            assert!((g - w).abs() <= 1e-8 * w, "{what}: t {t}: {g} vs {w}");
        }
    };
    records_on_every_backend(ir, &text, &check);
}

/// A steady-state record whose steady state does not exist (nothing eliminates the dosed
/// state: CL 0 on the record) fails its subject as `no_steady_state`, a steady-state bolus
/// (subject 1) and a steady-state infusion (subject 2, AMT 0, RATE 10, II 0) alike, and the
/// subject with elimination (3) is unaffected: on the CPU reference and as record programs on
/// the wgpu and CUDA records kernels (CUDA emulated on the host where there is no device;
/// SKIPPED where neither can be built), in f64 at rtol 1e-10 and 1e-4, where the growth per
/// interval falls below the noise level within the iterations' limit (f32 cannot tell a
/// constant growth from a slow approach there: docs/nonmem.md).
#[test]
fn a_steady_state_record_that_has_none_is_its_own_status() {
    use vpop::solver::Status;
    let ir = "param cl = 5\nparam v = 50\nstate central\nd/dt(central) = -cl / v * central\n\
              output cp = central / v\n";
    let data = "ID,TIME,EVID,AMT,RATE,CMT,SS,II,CL\n\
        1,0,1,100,.,1,1,12,0\n1,6,0,.,.,1,.,.,0\n\
        2,0,1,0,10,1,1,0,0\n2,6,0,.,.,1,.,.,0\n\
        3,0,1,100,.,1,1,12,5\n3,6,0,.,.,1,.,.,5\n";
    let want = [Status::NoSteadyState, Status::NoSteadyState, Status::Ok];
    // Subject 3 at 6 h: the steady state of 100 every 12 h, k = 0.1, six hours on.
    let c6 = 2.0 / (1.0 - (-1.2f64).exp()) * (-0.6f64).exp();
    for (rtol, within) in [(1e-10, 1e-8), (1e-4, 1e-2)] {
        let check = |what: &str, s: usize, o: &[f64]| {
            if s == 2 {
                let e = (o[1] - c6).abs() / c6;
                assert!(e <= within, "{what} at rtol {rtol:e}: {} vs {c6}", o[1]);
            }
        };
        records_on_every_backend_with(ir, data, rtol, &|s| want[s], &check);
    }
}
