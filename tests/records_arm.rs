//! A one-subject NONMEM-format dataset as an arm's regimen (`records = "..."`): the same
//! schedule as the equivalent `doses = [...]` lines, on every backend; unsupported records are
//! refused with their line.

use std::path::PathBuf;

use vpop::trial::{run_trial, RunOptions, Trial};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const RECORDS: &str = "\
ID,TIME,EVID,AMT,CMT,II,ADDL,RATE,DV
# a loading dose, then 100 mg every 12 h (6 doses), and a 2-hour infusion into central
1,0,1,200,1,.,0,0,.
1,1,0,.,2,.,.,.,.
1,12,1,100,1,12,5,0,.
1,24,1,50,2,.,0,25,.
1,30,0,.,2,.,.,.,.
";

fn spec(dir: &std::path::Path, backend: &str) -> String {
    format!(
        r#"
[trial]
name = "records arm"
subjects = 300
seed = 9

[model]
library = "one_cmt_oral"

[population]
file = "{pop}"

[[arm]]
name = "records"
records = "regimen.csv"

[[arm]]
name = "doses"
doses = [
  {{ amount = 200, into = "depot" }},
  {{ amount = 100, into = "depot", start = 12, every = 12, count = 6 }},
  {{ amount = 50, into = "central", start = 24, rate = 25 }},
]

[simulation]
end = 96
rtol = 1e-6
atol = 1e-9
backend = "{backend}"

[output]
dir = "{out}"
metrics = ["auc", "cmax", "tmax", "ctrough"]
"#,
        pop = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("populations/adult_healthy.toml")
            .display(),
        out = dir.join(format!("out-{backend}")).display()
    )
}

#[test]
fn a_records_arm_equals_the_same_doses_written_as_lines() {
    let dir = temp_dir("records-arm");
    std::fs::write(dir.join("regimen.csv"), RECORDS).unwrap();
    let mut backends = vec!["cpu"];
    if vpop::backend::wgpu::list_adapters().is_empty() {
        println!("SKIPPED (wgpu part): no adapter");
    } else {
        backends.push("wgpu");
    }
    for backend in backends {
        let path = dir.join(format!("trial-{backend}.toml"));
        std::fs::write(&path, spec(&dir, backend)).unwrap();
        let trial = Trial::load(&path).unwrap();
        assert_eq!(trial.arms[0].plan.regimen, trial.arms[1].plan.regimen);
        let rep = run_trial(
            &trial,
            &RunOptions {
                quiet: true,
                ..Default::default()
            },
        )
        .unwrap();
        let (a, b) = (&rep.arms[0], &rep.arms[1]);
        assert_eq!(a.failed, 0, "{backend}");
        assert_eq!(a.metrics, b.metrics, "{backend}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_records_are_refused_with_their_line() {
    let dir = temp_dir("records-bad");
    let cases = [
        (
            "ID,TIME,EVID,AMT,CMT,SS,II\n1,5,1,100,1,1,12\n",
            "regimen.csv:2:1: in an arm's regimen a steady-state dose is SS = 1 at TIME 0",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n1,5,3,.,.\n",
            "regimen.csv:3:1: EVID 3/4 (reset) records are not supported",
        ),
        (
            "ID,TIME,EVID,AMT,CMT,CL\n1,0,1,100,1,3\n",
            "regimen.csv:2:1: column CL would set model parameter 'cl'",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,1\n2,0,1,100,1\n",
            "regimen.csv:1:1: an arm's records must describe one subject",
        ),
        (
            "ID,TIME,EVID,AMT,CMT\n1,0,1,100,3\n",
            "regimen.csv:2:1: CMT 3 but the model has 2 states",
        ),
    ];
    for (i, (records, want)) in cases.iter().enumerate() {
        std::fs::write(dir.join("regimen.csv"), records).unwrap();
        let path = dir.join("trial.toml");
        std::fs::write(&path, spec(&dir, "cpu")).unwrap();
        let e = match Trial::load(&path) {
            Ok(_) => panic!("case {i} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want), "case {i}: {e}");
        assert!(e.contains("trial.toml:15:11: records: "), "case {i}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
