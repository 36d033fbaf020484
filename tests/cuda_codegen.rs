//! Generated CUDA C for every library model and both precisions compiles with NVRTC for sm_90
//! (no GPU needed; CI installs the NVRTC wheel and puts it on the library path).

mod common;

use vpop::backend::cuda::{compile_ptx, model_eval_source, nvrtc_available};
use vpop::backend::Precision;
use vpop::model::{library, Model, ModelPrograms};

#[test]
fn every_generated_kernel_compiles_with_nvrtc() {
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        for p in [Precision::F32, Precision::F64] {
            let src = model_eval_source(&progs, p).unwrap();
            let ptx =
                compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{} {p:?}: {e}", lm.name));
            assert!(
                ptx.contains(".entry model_eval"),
                "{} {p:?}: no kernel entry in the PTX",
                lm.name
            );
        }
    }
}

/// A model that calls every function of the model language, in its right-hand side (so the
/// Rosenbrock kernels' Jacobian calls their derivatives) and its outputs: the model evaluation
/// and the Rodas4 integrator kernels compile with NVRTC in both precisions, and the f32 ones
/// call CUDA's float functions (no double-precision instruction in their PTX).
#[test]
fn every_model_function_compiles_with_nvrtc() {
    use vpop::backend::cuda::kernel::integrate_source;
    use vpop::metrics::{Metric, MetricSpec};
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let text = "param k = 0.5\nparam c = 2\nstate x, y\nx(0) = 1\n\
                d/dt(x) = -k * tanh(x) + atan(y) * erf(x - y) + sin(t) * cos(x)\n\
                d/dt(y) = k * erfc(x) - phi(y) * expit(x) + logit(0.25 + 0.5 * expit(y))\n\
                output a = pow(abs(x), c) + log10(1 + y * y) + sqrt(exp(-x * x)) + min(x, y)\n\
                output b = floor(t / 24) + ceil(x) + max(x, y) + log(2 + tanh(y))\n";
    let m = Model::parse("functions.vpm", text).unwrap();
    let progs = ModelPrograms::new(&m);
    let metrics = vec![
        MetricSpec::new(0, "a", Metric::parse("auc").unwrap()),
        MetricSpec::new(1, "b", Metric::parse("cmax").unwrap()),
    ];
    for p in [Precision::F32, Precision::F64] {
        let sources = [
            ("model_eval", model_eval_source(&progs, p).unwrap()),
            (
                "integrate",
                integrate_source(&progs, Method::Rodas4, &metrics, p).unwrap(),
            ),
        ];
        for (entry, src) in sources {
            let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{entry} {p:?}: {e}"));
            assert!(ptx.contains(&format!(".entry {entry}")), "{entry} {p:?}");
            if p == Precision::F32 {
                let doubles = ptx.lines().filter(|l| l.contains(".f64")).count();
                assert_eq!(
                    doubles, 0,
                    "{entry}: {doubles} double-precision instructions"
                );
            }
        }
    }
}

/// The integrator kernel of every library model × method × precision compiles (for an arm
/// and for dataset records), and an f32
/// kernel computes in f32 only (no double-precision instructions in its PTX). Where ptxas is
/// available, the register/spill report of every kernel (sm_90, a metric of every kind) is
/// printed, and the kernels keep their state in registers: no f32 kernel and no f64 kernel of
/// an explicit method has a stack frame in local memory or spills, and no f64 kernel of a
/// model with 4 states or fewer does. The f64 Rosenbrock kernels of larger models may spill a
/// little where they reach the 255-register limit: at most 256 bytes of stack frame.
#[test]
fn every_integrator_kernel_compiles_with_nvrtc() {
    use vpop::backend::cuda::kernel::{integrate_source, records_source};
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    use rayon::prelude::*;
    let cases: Vec<(&str, &str, Method, Precision, bool)> = library::MODELS
        .iter()
        .flat_map(|lm| {
            Method::ALL.into_iter().flat_map(move |method| {
                [Precision::F32, Precision::F64]
                    .into_iter()
                    .flat_map(move |p| {
                        [false, true]
                            .into_iter()
                            .map(move |records| (lm.name, lm.source, method, p, records))
                    })
            })
        })
        .collect();
    let ptxas = ptxas();
    if ptxas.is_none() {
        println!(
            "no ptxas (set VPOP_PTXAS, or put the CUDA bin directory on PATH): no spill report"
        );
    }
    // NVRTC compiles independent programs concurrently.
    type Row = (String, usize, Method, Precision, (u32, u32, u32, u32));
    let rows: Vec<Option<Row>> = cases
        .par_iter()
        .map(|&(name, source, method, p, records)| {
            let m = Model::parse(name, source).unwrap();
            let progs = ModelPrograms::new(&m);
            let src = if records {
                records_source(&progs, method, p).unwrap()
            } else {
                integrate_source(&progs, method, &every_kind(&m), p).unwrap()
            };
            let ptx =
                compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{name} {method} {p:?}: {e}"));
            assert!(
                ptx.contains(".entry integrate"),
                "{name} {method} {p:?}: no kernel entry in the PTX"
            );
            assert_eq!(
                local_depot_bytes(&ptx),
                0,
                "{name} {method} {p:?} records {records}: an object kept in local memory"
            );
            if p == Precision::F32 {
                let doubles = ptx.lines().filter(|l| l.contains(".f64")).count();
                assert_eq!(
                    doubles, 0,
                    "{name} {method}: the f32 kernel has {doubles} double-precision instructions"
                );
            }
            ptxas.as_ref().map(|x| {
                let driver = if records { "-records" } else { "" };
                let tag = format!("{name}-{method}-{}{driver}", p.name());
                let r = ptxas_report(x, &ptx, &tag);
                (tag, progs.n_states, method, p, r)
            })
        })
        .collect();
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<40} {:>6} {:>9} {:>11} {:>12} {:>11}",
        "kernel", "states", "registers", "stack bytes", "spill stores", "spill loads"
    );
    for (tag, ns, _, _, (r, st, ss, sl)) in &rows {
        println!("{tag:<40} {ns:>6} {r:>9} {st:>11} {ss:>12} {sl:>11}");
    }
    let local: Vec<&String> = rows
        .iter()
        .filter(|(_, ns, method, p, (_, st, ss, _))| {
            let strict = *p == Precision::F32 || !method.is_rosenbrock() || *ns <= 4;
            (*st > 0 || *ss > 0) && (strict || *st > 256)
        })
        .map(|(t, ..)| t)
        .collect();
    assert!(
        local.is_empty(),
        "kernels with more local memory than allowed: {local:?}"
    );
}

/// `ptxas` from the environment (VPOP_PTXAS), the PATH, or the NVCC wheel beside NVRTC.
fn ptxas() -> Option<std::path::PathBuf> {
    let lib_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("VPOP_PTXAS")
        .map(std::path::PathBuf::from)
        .into_iter()
        .collect();
    candidates.push("ptxas".into());
    candidates.extend(
        lib_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| std::path::Path::new(d).join("../bin/ptxas")),
    );
    candidates.into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Registers, stack frame and spills of a kernel as `ptxas -v` reports them for sm_90.
fn ptxas_report(ptxas: &std::path::Path, ptx: &str, tag: &str) -> (u32, u32, u32, u32) {
    let dir = std::env::temp_dir().join(format!("vpop-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{tag}.ptx"));
    std::fs::write(&file, ptx).unwrap();
    let out = std::process::Command::new(ptxas)
        .args(["-arch=sm_90", "-v", "-o"])
        .arg(dir.join(format!("{tag}.cubin")))
        .arg(&file)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(dir.join(format!("{tag}.cubin")));
    assert!(out.status.success(), "{tag}: ptxas failed:\n{log}");
    let number_before = |key: &str| -> u32 {
        log.lines()
            .filter_map(|l| {
                let at = l.find(key)?;
                l[..at].split_whitespace().last()?.parse().ok()
            })
            .max()
            .unwrap_or(0)
    };
    let registers = log
        .lines()
        .filter_map(|l| {
            let at = l.find("Used ")?;
            l[at + 5..].split_whitespace().next()?.parse().ok()
        })
        .max()
        .unwrap_or(0);
    (
        registers,
        number_before("bytes stack frame"),
        number_before("bytes spill stores"),
        number_before("bytes spill loads"),
    )
}

/// One metric of every kind, spread over the model's outputs.
fn every_kind(m: &Model) -> Vec<vpop::metrics::MetricSpec> {
    use vpop::metrics::{Metric, MetricSpec};
    let kinds = [
        "auc",
        "cmax",
        "tmax",
        "cmin(13, 72)",
        "cavg(0, 24)",
        "ctrough",
        "time_above(1)",
        "at(30)",
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let out = i % m.outputs.len().max(1);
            let name = m.outputs.get(out).map_or("zero", |o| o.name.as_str());
            MetricSpec::new(out, name, Metric::parse(k).unwrap())
        })
        .collect()
}

/// The kernel of an arm that starts at steady state, has resets and switches parameters
/// between occasions (the steady-state iterations, the resets and the occasions compiled in),
/// of an arm with a steady-state start and resets, of an arm with a steady-state start alone
/// and of an arm with occasions alone, compile with NVRTC for every library model in both
/// precisions (Tsit5). Where ptxas is found: the occasions alone keep every f32 kernel free of
/// local memory, as the plain Tsit5 kernels are, and every f64 kernel within a stack frame of
/// 32 bytes (ddi_ritonavir_cyp3a's, at the 255-register limit with every metric kind and each
/// occasion's parameters, keeps 16 bytes there since the AUC quadratures restart at each stop
/// and outputs that are not finite are watched); a steady-state start stays within the stack
/// frame the largest plain kernels may have (256 bytes).
#[test]
fn steady_state_start_kernels_compile_with_nvrtc() {
    use rayon::prelude::*;
    use vpop::backend::cuda::kernel::arm_source;
    use vpop::backend::gpu::Driver;
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let ptxas = ptxas();
    // (steady-state start, resets, occasions)
    let drivers = [
        (true, true, true),
        (true, true, false),
        (true, false, false),
        (false, false, true),
    ];
    let cases: Vec<_> = library::MODELS
        .iter()
        .flat_map(|lm| {
            [Precision::F32, Precision::F64]
                .into_iter()
                .flat_map(move |p| drivers.map(|d| (lm.name, lm.source, p, d)))
        })
        .collect();
    let mut faults = Vec::new();
    let mut rows: Vec<String> = cases
        .par_iter()
        .filter_map(|&(name, source, p, (ss_start, resets, occ))| {
            let m = Model::parse(name, source).unwrap();
            let progs = ModelPrograms::new(&m);
            let driver = Driver::Arm {
                ss: ss_start.then_some((1, 12.0)),
                resets,
                occasions: occ,
            };
            let src = arm_source(&progs, Method::Tsit5, &every_kind(&m), driver, p).unwrap();
            assert_eq!(src.contains("#define HAS_OCCASIONS 1"), occ);
            assert_eq!(src.contains("#define SS_START 1"), ss_start);
            assert_eq!(src.contains("#define HAS_RESETS 1"), resets);
            let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{name} {p:?}: {e}"));
            assert!(ptx.contains(".entry integrate"), "{name} {p:?}");
            let what = match (ss_start, resets, occ) {
                (true, true, true) => "ss-resets-occasions",
                (true, true, false) => "ss-resets",
                (true, false, false) => "ss",
                _ => "occasions",
            };
            let tag = format!("{name}-tsit5-{}-{what}", p.name());
            ptxas.as_ref().map(|x| {
                let (r, st, ss, sl) = ptxas_report(x, &ptx, &tag);
                let fault = if ss_start {
                    (st > 256).then(|| format!("{tag}: a stack frame of {st} bytes"))
                } else if p == Precision::F64 {
                    (st > 32).then(|| format!("{tag}: a stack frame of {st} bytes"))
                } else {
                    (st != 0 || ss != 0).then(|| format!("{tag}: local memory ({st} bytes)"))
                };
                (
                    format!("{tag:<52} {r:>9} {st:>11} {ss:>12} {sl:>11}"),
                    fault,
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(row, fault)| {
            faults.extend(fault);
            row
        })
        .collect();
    rows.sort();
    if !rows.is_empty() {
        println!(
            "{:<52} {:>9} {:>11} {:>12} {:>11}",
            "kernel", "registers", "stack bytes", "spill stores", "spill loads"
        );
        println!("{}", rows.join("\n"));
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// The tuning reaches the PTX: a register cap becomes the entry's `.maxnreg` and launch bounds
/// its `.maxntid` and `.minnctapersm` (and ptxas, where available, keeps the kernel within the
/// cap), and fast math turns the f32 kernel's IEEE divisions into approximate ones; the default
/// tuning compiles as `compile_ptx` does.
#[test]
fn tuning_options_reach_the_ptx() {
    use vpop::backend::cuda::kernel::integrate_source;
    use vpop::backend::cuda::{compile_ptx_tuned, CudaTuning};
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let lm = library::MODELS
        .iter()
        .find(|m| m.name == "two_cmt_oral")
        .unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let progs = ModelPrograms::new(&m);
    let src = integrate_source(&progs, Method::Tsit5, &every_kind(&m), Precision::F32).unwrap();
    let tuned = |t: &str| compile_ptx_tuned(&src, "sm_90", &CudaTuning::parse(t).unwrap()).unwrap();
    let plain = tuned("default");
    assert_eq!(plain, compile_ptx(&src, "sm_90").unwrap());
    assert!(plain.contains("div.rn.f32") && !plain.contains(".maxnreg"));
    let capped = tuned("maxrreg=40");
    assert!(capped.contains(".maxnreg 40"), "no register cap in the PTX");
    let bounded = tuned("block=256,minblocks=4");
    assert!(bounded.contains(".maxntid 256") && bounded.contains(".minnctapersm 4"));
    let fast = tuned("fast-math");
    assert!(
        !fast.contains("div.rn.f32") && fast.contains("div.approx"),
        "fast math left IEEE divisions in the PTX"
    );
    assert!(tuned("opt=-prec-div=false").contains("div.full.f32"));
    let bad = compile_ptx_tuned(&src, "sm_90", &CudaTuning::parse("opt=-no-such").unwrap());
    assert!(bad.is_err(), "NVRTC accepted an unknown option");
    let Some(x) = ptxas() else {
        println!("no ptxas: registers not checked");
        return;
    };
    // What each tuning of the `tune` GPU check (.ci/gpu-check.sh) costs in registers and local
    // memory, in both precisions (sm_90).
    println!("two_cmt_oral Tsit5, every metric kind: registers, stack frame, spill stores");
    for p in [Precision::F32, Precision::F64] {
        let src = integrate_source(&progs, Method::Tsit5, &every_kind(&m), p).unwrap();
        for t in [
            "default",
            "maxrreg=40",
            "maxrreg=64",
            "maxrreg=80",
            "minblocks=6",
        ] {
            let tuning = CudaTuning::parse(t).unwrap();
            let ptx = compile_ptx_tuned(&src, "sm_90", &tuning).unwrap();
            let tag = format!("tuning-{}-{}", p.name(), t.replace('=', ""));
            let (regs, stack, spills, _) = ptxas_report(&x, &ptx, &tag);
            println!("  {:<4} {t:<12} {regs:>4} {stack:>5} {spills:>5}", p.name());
            let cap = tuning
                .maxrregcount
                .or(tuning.min_blocks.map(|b| 65_536 / (b * tuning.block)))
                .unwrap_or(255);
            assert!(
                regs <= cap,
                "{t} ({}): {regs} registers over {cap}",
                p.name()
            );
        }
    }
}

/// Kernels kept between runs (`vpop::backend::cuda::cache`): a second compile of the same
/// source and tuning reads the PTX the first kept, equal to what NVRTC makes; another tuning is
/// another entry; an entry cut short, or holding something else, is compiled again; without a
/// directory, or with one that cannot be written, the kernel is compiled all the same; pruning
/// removes the entries used least recently.
#[cfg(feature = "cuda")]
#[test]
fn compiled_kernels_are_kept_between_runs() {
    use vpop::backend::cuda::cache::{compile_ptx_in, prune, Origin};
    use vpop::backend::cuda::CudaTuning;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vpop-ptx-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lm = library::get("two_cmt_oral").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let src = model_eval_source(&ModelPrograms::new(&m), Precision::F32).unwrap();
    let plain = CudaTuning::default();
    let entries = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let fresh = compile_ptx(&src, "sm_90").unwrap();
    let (first, o) = compile_ptx_in(Some(&dir), &src, "sm_90", &plain).unwrap();
    assert_eq!((o, &first), (Origin::Compiled, &fresh));
    assert_eq!(entries().len(), 1, "{:?}", entries());
    let kept = entries()[0].clone();
    assert!(kept.extension().is_some_and(|x| x == "ptx"));
    let (again, o) = compile_ptx_in(Some(&dir), &src, "sm_90", &plain).unwrap();
    assert_eq!((o, &again), (Origin::Cached, &fresh));
    // Another tuning, another architecture: other entries.
    let fast = CudaTuning::parse("fast-math").unwrap();
    let (f, o) = compile_ptx_in(Some(&dir), &src, "sm_90", &fast).unwrap();
    assert_eq!(o, Origin::Compiled);
    assert_ne!(f, fresh);
    let (_, o) = compile_ptx_in(Some(&dir), &src, "sm_80", &plain).unwrap();
    assert_eq!(o, Origin::Compiled);
    assert_eq!(entries().len(), 3);
    // An entry cut short (a full disk), or one that holds another kernel, is compiled again
    // and replaced.
    let text = std::fs::read_to_string(&kept).unwrap();
    for bad in [
        text[..text.len() / 3].to_string(),
        "// another\n.entry x".into(),
    ] {
        std::fs::write(&kept, bad).unwrap();
        let (p, o) = compile_ptx_in(Some(&dir), &src, "sm_90", &plain).unwrap();
        assert_eq!((o, &p), (Origin::Compiled, &fresh));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), text);
    }
    // No directory, a directory that cannot be written: compiled, nothing kept.
    let (p, o) = compile_ptx_in(None, &src, "sm_90", &plain).unwrap();
    assert_eq!((o, &p), (Origin::Compiled, &fresh));
    let missing = dir.join("no").join("such");
    let (p, o) = compile_ptx_in(Some(&missing), &src, "sm_90", &plain).unwrap();
    assert_eq!((o, &p), (Origin::Compiled, &fresh));
    assert!(!missing.exists());
    // Pruning keeps the most recently used entry: `kept`, read last.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in entries() {
        let f = std::fs::File::options().append(true).open(&e).unwrap();
        f.set_modified(past).unwrap();
    }
    let (_, o) = compile_ptx_in(Some(&dir), &src, "sm_90", &plain).unwrap();
    assert_eq!(o, Origin::Cached);
    let len = std::fs::metadata(&kept).unwrap().len();
    prune(&dir, len);
    assert_eq!(entries(), vec![kept.clone()]);
    prune(&dir, 0);
    assert!(entries().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bytes of objects NVVM left in local memory (the PTX's `__local_depot`), before ptxas
/// spills anything: 0 where every per-thread array is in registers.
fn local_depot_bytes(ptx: &str) -> usize {
    ptx.lines()
        .find_map(|l| {
            let at = l.find("__local_depot0[")? + "__local_depot0[".len();
            l[at..].split(']').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// One kernel of [`model_kernels`]: its name, precision, source, PTX and (where ptxas is
/// available) registers, stack frame, spill stores and loads.
struct Kernel {
    tag: String,
    precision: Precision,
    src: String,
    ptx: String,
    report: Option<(u32, u32, u32, u32)>,
}

/// The kernels of the model in `file` (under the repository) for `methods` × f32/f64 × an arm
/// (a metric of every kind) and dataset records, compiled with NVRTC for sm_90 in parallel,
/// with ptxas's report of each printed where ptxas is available. None without NVRTC (the
/// caller prints SKIPPED).
fn model_kernels(
    name: &str,
    file: &str,
    methods: &[vpop::solver::Method],
) -> Option<(Model, Vec<Kernel>)> {
    use rayon::prelude::*;
    use vpop::backend::cuda::kernel::{integrate_source, records_source};
    if !nvrtc_available() {
        return None;
    }
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let m = Model::parse(name, &std::fs::read_to_string(path).unwrap()).unwrap();
    let progs = ModelPrograms::new(&m);
    let cases: Vec<_> = methods
        .iter()
        .flat_map(|&method| {
            [Precision::F32, Precision::F64]
                .into_iter()
                .flat_map(move |p| [false, true].map(|records| (method, p, records)))
        })
        .collect();
    let ptxas = ptxas();
    let kernels: Vec<Kernel> = cases
        .par_iter()
        .map(|&(method, p, records)| {
            let src = if records {
                records_source(&progs, method, p).unwrap()
            } else {
                integrate_source(&progs, method, &every_kind(&m), p).unwrap()
            };
            let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{method} {p:?}: {e}"));
            assert!(ptx.contains(".entry integrate"), "{method} {p:?}");
            let driver = if records { "-records" } else { "" };
            let tag = format!("{name}-{method}-{}{driver}", p.name());
            let report = ptxas.as_ref().map(|x| ptxas_report(x, &ptx, &tag));
            Kernel {
                tag,
                precision: p,
                src,
                ptx,
                report,
            }
        })
        .collect();
    for k in &kernels {
        if let Some((regs, stack, stores, loads)) = k.report {
            println!(
                "{:<40} {regs:>9} {stack:>11} {stores:>12} {loads:>11}",
                k.tag
            );
        }
    }
    Some((m, kernels))
}

/// The kernels of a model large enough for the sparse factorisation of W (tests/data/
/// sparse_qsp.vpm, 14 states: the Rosenbrock methods' `w_factor` and `w_solve` are the plan as
/// straight-line code) compile for every method and precision, for an arm and for dataset
/// records, and the f32 ones compute in f32 only. Where ptxas is available, their registers and
/// local memory are printed, and the f32 kernels keep their state in registers (no stack
/// frame, no spills), the Rosenbrock ones included.
#[test]
fn a_large_sparse_models_kernels_compile_with_nvrtc() {
    use vpop::solver::Method;
    let Some((_, kernels)) = model_kernels("sparse_qsp", "tests/data/sparse_qsp.vpm", &Method::ALL)
    else {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    };
    for k in &kernels {
        assert!(
            k.src.contains("// pivot 13: state"),
            "{}: the sparse factorisation",
            k.tag
        );
        if k.precision == Precision::F32 {
            let doubles = k.ptx.lines().filter(|l| l.contains(".f64")).count();
            assert_eq!(
                doubles, 0,
                "{}: {doubles} double-precision instructions",
                k.tag
            );
        }
    }
    let local: Vec<&String> = kernels
        .iter()
        .filter(|k| k.precision == Precision::F32 && k.report.is_some_and(|r| r.1 > 0 || r.2 > 0))
        .map(|k| &k.tag)
        .collect();
    assert!(local.is_empty(), "f32 kernels in local memory: {local:?}");
}

/// A 56-state model's kernels (examples/qsp_large.vpm, W factorised sparsely), for an arm and
/// for dataset records, keep their arrays out of local memory in either precision, but for
/// a few small ones indexed by metric or output (at most 512 bytes of PTX `__local_depot`).
/// NVVM keeps in registers the arrays of a local object of up to about 8 KB only, and none of
/// an object one of whose arrays is indexed by a value it cannot fold, so the kernel's arrays
/// are each a local array of their own (kernels/integrate.cu, SUB_STORAGE). When they were
/// members of one object, the f64 Rodas4 kernel (two metrics) kept the whole 11 KB object in
/// local memory and ptxas gave it a 19 304-byte stack frame; with a metric of every kind over
/// two outputs, so did the Tsit5 kernels: 6 528 bytes (f32) and 12 768 (f64), over which
/// NVRTC took 59 and 69 s (now 144 and 288 bytes, 3 s). Where ptxas is available, the
/// registers and local memory of each are printed.
#[test]
fn a_56_state_models_kernels_keep_their_arrays_out_of_local_memory() {
    use vpop::solver::Method;
    let methods = [Method::Tsit5, Method::Rodas4];
    let Some((m, kernels)) = model_kernels("qsp_large", "examples/qsp_large.vpm", &methods) else {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    };
    assert_eq!(m.states.len(), 56);
    for k in &kernels {
        let depot = local_depot_bytes(&k.ptx);
        assert!(
            depot <= 512,
            "{}: {depot} bytes of objects in local memory",
            k.tag
        );
    }
}

/// The arm kernels of a model whose jumps in time move with its parameters (each subject's
/// own stopping points, `OWN_STOPS`) compile with NVRTC, with and without occasions, with and
/// without a steady-state start (whose iterations stop at the subject's own too), in f32 and
/// f64, and keep nothing in local memory.
#[test]
fn own_stop_kernels_compile_with_nvrtc() {
    use vpop::backend::cuda::kernel::arm_source;
    use vpop::backend::gpu::Driver;
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let m = Model::parse("switch", common::TIME_SWITCH_MODEL).unwrap();
    let progs = ModelPrograms::new(&m);
    for (occasions, ss) in [(false, None), (true, None), (false, Some((0, 24.0)))] {
        for p in [Precision::F32, Precision::F64] {
            for method in [Method::Tsit5, Method::Rodas4] {
                let driver = Driver::Arm {
                    ss,
                    resets: false,
                    occasions,
                };
                let src = arm_source(&progs, method, &every_kind(&m), driver, p).unwrap();
                assert!(src.contains("#define OWN_STOPS 1"));
                let what = format!("{method} {p:?} occasions {occasions} ss {ss:?}");
                let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(ptx.contains(".entry integrate"), "{what}");
                assert_eq!(local_depot_bytes(&ptx), 0, "{what}: local memory");
            }
        }
    }
    // A model without such jumps: none compiled in.
    let m = common::library_model("two_cmt_oral");
    let src = arm_source(
        &ModelPrograms::new(&m),
        Method::Tsit5,
        &every_kind(&m),
        Driver::Arm {
            ss: None,
            resets: false,
            occasions: false,
        },
        Precision::F32,
    )
    .unwrap();
    assert!(src.contains("#define OWN_STOPS 0"));
}

/// The kernels that locate the changes of a model's switches (`events = "locate"`), arm and
/// records, compile with NVRTC in f32 and f64 and keep nothing in local memory; without
/// switches to locate, none is compiled in.
#[test]
fn located_event_kernels_compile_with_nvrtc() {
    use vpop::backend::cuda::kernel::{arm_source_located, records_source_located};
    use vpop::backend::gpu::Driver;
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let m = Model::parse("kill", common::KILL_MODEL).unwrap();
    let compiled = vpop::model::CompiledModel::new(&m);
    let (progs, sw) = (&compiled.programs, Some(compiled.switches()));
    assert_eq!(compiled.n_switches(), 1);
    for p in [Precision::F32, Precision::F64] {
        for method in [Method::Tsit5, Method::Rodas4] {
            let driver = Driver::Arm {
                ss: None,
                resets: false,
                occasions: false,
            };
            let arm = arm_source_located(progs, method, &every_kind(&m), driver, p, sw).unwrap();
            let records = records_source_located(progs, method, p, sw).unwrap();
            for (what, src) in [("arm", arm), ("records", records)] {
                assert!(src.contains("#define NSW 1"), "{what}");
                let what = format!("{what} {method} {p:?}");
                let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(ptx.contains(".entry integrate"), "{what}");
                assert_eq!(local_depot_bytes(&ptx), 0, "{what}: local memory");
            }
        }
    }
    let driver = Driver::Arm {
        ss: None,
        resets: false,
        occasions: false,
    };
    let src = arm_source_located(progs, Method::Tsit5, &[], driver, Precision::F32, None).unwrap();
    assert!(src.contains("#define NSW 0"));
}

/// Located kernels of a model with 1 to 16 switches (thresholds of one state, `c > th_i`),
/// Tsit5 with AUC and Cmax: every one compiles with NVRTC and keeps nothing in local memory in
/// its PTX; where ptxas is at hand, its registers and spills are printed, and up to 8 switches
/// neither precision spills (ptxas sm_90 on the CPU machine, 2026-12-06: registers f32 82, 92,
/// 105, 141 and f64 150, 164, 190, 254 for 1, 4, 8 and 16 switches, f64 spilling 8 / 8 bytes
/// at 16; docs/gpu.md, "Event location").
#[test]
fn located_kernels_with_many_switches_keep_to_registers() {
    use vpop::backend::cuda::kernel::arm_source_located;
    use vpop::backend::gpu::Driver;
    use vpop::metrics::{Metric, MetricSpec};
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let ptxas = ptxas();
    for n in [1usize, 4, 8, 16] {
        let mut src = String::from("param k = 0.1\n");
        for i in 1..=n {
            src += &format!("param th{i} = {i}\n");
        }
        src += "state c\nd/dt(c) = -k * c - 0.01 * (0";
        for i in 1..=n {
            src += &format!(" + (c > th{i})");
        }
        src += ") * c\noutput cp = c\n";
        let m = Model::parse("switches", &src).unwrap();
        let c = vpop::model::CompiledModel::new(&m);
        assert_eq!(c.n_switches(), n);
        let metrics: Vec<MetricSpec> = ["auc", "cmax"]
            .iter()
            .map(|x| MetricSpec::new(0, "cp", Metric::parse(x).unwrap()))
            .collect();
        let driver = Driver::Arm {
            ss: None,
            resets: false,
            occasions: false,
        };
        for p in [Precision::F32, Precision::F64] {
            let src = arm_source_located(
                &c.programs,
                Method::Tsit5,
                &metrics,
                driver,
                p,
                Some(c.switches()),
            )
            .unwrap();
            let what = format!("{n} switches {p:?}");
            let ptx = compile_ptx(&src, "sm_90").unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(local_depot_bytes(&ptx), 0, "{what}: local memory");
            if let Some(x) = &ptxas {
                let (r, st, ss, sl) = ptxas_report(x, &ptx, &format!("switches-{n}-{p:?}"));
                println!("{what}: {r} registers, stack frame {st} bytes, spills {ss} / {sl} bytes");
                if n <= 8 {
                    assert_eq!((st, ss, sl), (0, 0, 0), "{what}: spills");
                }
            }
        }
    }
}

/// The kernel of an arm that starts at steady state, for a model that jumps in time (a light
/// switched on and off every day), holds the jumps inside the interval before 0 as stops of
/// its iterations (NEXT_SS_STOP) and compiles with NVRTC in both precisions, with Tsit5 and
/// Rodas4; a model without jumps in time holds none.
#[test]
fn steady_state_start_kernels_with_jumps_in_time_compile_with_nvrtc() {
    use vpop::backend::cuda::kernel::arm_source;
    use vpop::backend::gpu::Driver;
    use vpop::solver::Method;
    if !nvrtc_available() {
        println!("SKIPPED: NVRTC (libnvrtc.so) is not on the library path");
        return;
    }
    let light = "param k = 0.1\nparam kin = 3\nparam kout = 0.4\nstate c, r\n\
                 d/dt(c) = -k * c\nd/dt(r) = if(mod(t - 8, 24) < 12, kin, 0) - kout * r\n\
                 output cp = c\noutput resp = r\n";
    let lm = library::get("one_cmt_iv").unwrap();
    for (name, source, stops) in [("light", light, 2), (lm.name, lm.source, 0)] {
        let m = Model::parse(name, source).unwrap();
        let progs = ModelPrograms::new(&m);
        let driver = Driver::Arm {
            ss: Some((0, 24.0)),
            resets: false,
            occasions: false,
        };
        for p in [Precision::F32, Precision::F64] {
            for method in [Method::Tsit5, Method::Rodas4] {
                let src = arm_source(&progs, method, &every_kind(&m), driver, p).unwrap();
                assert!(
                    src.contains(&format!("#define N_SS_STOPS {stops}\n")),
                    "{name} {p:?}"
                );
                let ptx = compile_ptx(&src, "sm_90")
                    .unwrap_or_else(|e| panic!("{name} {p:?} {method:?}: {e}"));
                assert!(ptx.contains(".entry integrate"), "{name} {p:?}");
            }
        }
    }
}
