//! The WGSL integrator kernel: generated for every library model × method × precision and
//! validated by naga; run in f32 on an adapter (lavapipe in CI) and checked against the CPU f64
//! reference within 1e-4 at rtol 1e-6. The f64 kernels run in tests/wgpu_integrate_f64.rs.

#![cfg(feature = "wgpu")]

#[macro_use]
mod common;

use std::sync::Arc;

use common::{arm, run, subjects, Agreement};
use vpop::backend::gpu::Driver;
use vpop::backend::wgpu::kernel::{arm_source, integrate_source};
use vpop::backend::{Backend, ChunkOutput, Precision};
use vpop::model::{library, CompiledModel, Model, ModelPrograms};
use vpop::solver::Method;

fn validate(src: &str, p: Precision) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let caps = match p {
        Precision::F32 => naga::valid::Capabilities::empty(),
        Precision::F64 => naga::valid::Capabilities::FLOAT64,
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(src))
}

/// Three metrics: the AUC of the last output, the Cmax of the first, and its average
/// concentration (two quadratures when the model has several outputs).
fn three_metrics(m: &Model) -> Vec<vpop::metrics::MetricSpec> {
    use vpop::metrics::{Metric, MetricSpec};
    let last = m.outputs.len().max(1) - 1;
    let name = |k: usize| m.outputs.get(k).map_or("zero", |o| o.name.as_str());
    [(last, "auc"), (0, "cmax"), (0, "cavg(0, 24)")]
        .iter()
        .map(|(k, x)| MetricSpec::new(*k, name(*k), Metric::parse(x).unwrap()))
        .collect()
}

#[test]
fn every_integrator_kernel_validates() {
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        let three = three_metrics(&m);
        for p in [Precision::F32, Precision::F64] {
            for method in Method::ALL {
                for (metrics, ss) in [
                    (&[][..], None),
                    (&three[..], None),
                    (&three, Some((1, 12.0))),
                ] {
                    let nm = metrics.len();
                    let src = match ss {
                        None => integrate_source(&progs, method, metrics, p).unwrap(),
                        Some(_) => {
                            let d = Driver::Arm {
                                ss,
                                resets: true,
                                occasions: true,
                            };
                            arm_source(&progs, method, metrics, d, p).unwrap()
                        }
                    };
                    if let Err(e) = validate(&src, p) {
                        panic!("{} {method} {p:?} ({nm} metrics, {ss:?}):\n{e}", lm.name);
                    }
                    // Vulkan has exp, log and pow for 32-bit floats only: an f64 kernel calls
                    // its own (exp64, log64, pow64, …), never the builtins. sin, cos, tanh and
                    // atan are the kernels' own in both precisions (sin_r, …, atan_r). The
                    // code is checked without its comments, which name atan(t) and the like.
                    let src: String = src
                        .lines()
                        .map(|l| l.split("//").next().unwrap_or(""))
                        .collect::<Vec<_>>()
                        .join("\n");
                    let builtins: &[&str] = match p {
                        Precision::F64 => &[
                            "exp(", "log(", "pow(", "exp2(", "log2(", "sin(", "cos(", "tanh(",
                            "atan(",
                        ],
                        Precision::F32 => &["sin(", "cos(", "tanh(", "atan("],
                    };
                    for builtin in builtins {
                        let called = src.match_indices(builtin).any(|(i, _)| {
                            i == 0
                                || !src.as_bytes()[i - 1].is_ascii_alphanumeric()
                                    && src.as_bytes()[i - 1] != b'_'
                        });
                        assert!(
                            !called,
                            "{} {method} {p:?}: kernel calls {builtin}",
                            lm.name
                        );
                    }
                }
            }
        }
    }
}

/// The adapter's backend for a model, or `None` (after printing SKIPPED) without an adapter,
/// or for f64 without SHADER_F64.
fn gpu_backend(
    model: Arc<CompiledModel>,
    p: Precision,
) -> Option<vpop::backend::wgpu::WgpuBackend> {
    match vpop::backend::wgpu::WgpuBackend::new(model, p) {
        Ok(b) => Some(b),
        Err(e) => {
            println!("SKIPPED: {e}");
            None
        }
    }
}

/// Every method on one library model: the WGSL kernel (f32, rtol 1e-6) against the CPU
/// reference at the same settings (1e-4) and at rtol 1e-10 (1e-3).
fn agreement(name: &str) {
    let tol = Agreement {
        rtol: 1e-6,
        same: 1e-4,
        tight: 1e-3,
        subjects: 24,
    };
    common::agrees_with_the_cpu_reference(name, tol, |model| {
        gpu_backend(model, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>)
    });
}

agreement_tests!(agreement);

#[test]
fn failing_subjects_get_the_same_status_codes() {
    let model = Arc::new(CompiledModel::new(&common::library_model("two_cmt_oral")));
    if let Some(mut gpu) = gpu_backend(model, Precision::F32) {
        common::failing_subjects_get_the_same_status_codes(&mut gpu);
    }
}

/// A W whose sparse factorisation refuses a pivot once the steps are large: the step is
/// rejected and retried smaller, and the results keep to the tolerance.
#[test]
fn refused_pivots_reject_the_step() {
    common::refused_pivots_reject_the_step(
        |model| gpu_backend(model, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
        20.0,
    );
}

/// two_cmt_oral, and two f32 backends for it: one handing subjects to invocations in the order
/// of their cost (the default), one as sampled; `None` (SKIPPED) without an adapter.
fn ordered_and_natural() -> Option<(
    Model,
    vpop::backend::wgpu::WgpuBackend,
    vpop::backend::wgpu::WgpuBackend,
)> {
    let lm = library::get("two_cmt_oral").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let ordered = gpu_backend(model.clone(), Precision::F32)?;
    let natural = gpu_backend(model, Precision::F32)?.in_natural_order();
    Some((m, ordered, natural))
}

/// Subjects handed to invocations the costliest first (as learnt from a first call) give what
/// they give in the order they were sampled in, bit for bit, with profiles.
#[test]
fn subjects_in_any_order_give_the_same_results() {
    let Some((m, mut ordered, mut natural)) = ordered_and_natural() else {
        return;
    };
    let params = subjects(&m, 300);
    let a = arm(&m, Method::Tsit5, 1e-5, &["auc".into(), "cmax".into()]);
    common::subjects_in_any_order_give_the_same_results(
        &mut ordered,
        &mut natural,
        &a,
        &params,
        "wgpu f32",
    );
}

/// A first call large enough for a pilot (its first subjects as sampled, learnt from, then
/// the rest the costliest first) gives what the subjects give as sampled, bit for bit.
#[test]
fn a_piloted_first_call_gives_the_same_results() {
    let Some((m, mut ordered, mut natural)) = ordered_and_natural() else {
        return;
    };
    let params = subjects(&m, vpop::backend::order::PILOT_CALL + 1000);
    let a = arm(&m, Method::Tsit5, 1e-4, &["auc".into(), "cmax".into()]);
    let got = run(&mut ordered, &a, &params);
    let want = run(&mut natural, &a, &params);
    common::assert_same_bits(&got, &want, "wgpu f32, a piloted first call");
}

#[test]
fn suspended_and_resumed_subjects_give_the_same_results() {
    let lm = library::get("two_cmt_oral").unwrap();
    let m = Model::parse(lm.name, lm.source).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = gpu_backend(model, Precision::F32) else {
        return;
    };
    let params = subjects(&m, 16);
    let a = arm(
        &m,
        Method::Tsit5,
        1e-6,
        &["auc".into(), "cmax".into(), "ctrough".into()],
    );
    gpu.set_dispatch_budget(Some((1, 1)));
    let many = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(Some((7, 3)));
    let some = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(None);
    let default = run(&mut gpu, &a, &params);
    assert_eq!(many.metrics, default.metrics);
    assert_eq!(some.metrics, default.metrics);
    assert_eq!(many.status, default.status);
}

/// Metrics that read some outputs only (effect_emax: the AUC of `effect`, the Cmax of `cp`;
/// only `effect` gets a quadrature): the kernel agrees with the CPU reference in f32 and f64.
#[test]
fn quadratures_of_some_outputs_agree() {
    let m = common::library_model("effect_emax");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 16);
    for (p, rtol, tol) in [(Precision::F32, 1e-6, 1e-4), (Precision::F64, 1e-10, 1e-9)] {
        let Some(mut gpu) = gpu_backend(model.clone(), p) else {
            continue;
        };
        for method in [Method::Tsit5, Method::Rodas4] {
            let a = common::some_outputs_arm(&m, method, rtol);
            assert_agrees_with_cpu(
                &mut gpu,
                &model,
                &a,
                &params,
                tol,
                &format!("{p:?} {method}"),
            );
        }
    }
}

/// More metrics than the kernels unroll loops of (64): their loops are kept, each metric's kind
/// and output chosen at run time from the compiled-in tables; the kernel agrees with the CPU
/// reference in f32 (70 metrics of four kinds, the values at 67 times among them).
#[test]
fn more_metrics_than_are_unrolled_agree() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 16);
    let Some(mut gpu) = gpu_backend(model.clone(), Precision::F32) else {
        return;
    };
    let mut names = vec!["auc".to_string(), "cmax".into(), "time_above(1)".into()];
    names.extend((1..=67).map(|t| format!("at({t})")));
    let a = arm(&m, Method::Tsit5, 1e-6, &names);
    assert!(a.metrics.len() > vpop::backend::wgpu::codegen::UNROLL_MAX_PASSES as usize);
    let what = format!("F32, {} metrics", a.metrics.len());
    assert_agrees_with_cpu(&mut gpu, &model, &a, &params, 1e-4, &what);
}

/// The kernel's status codes are the CPU reference's and its metrics and profiles within `tol`
/// of them (`common::worst_difference`).
fn assert_agrees_with_cpu(
    gpu: &mut dyn Backend,
    model: &Arc<CompiledModel>,
    a: &vpop::backend::ArmPlan,
    params: &[Vec<f64>],
    tol: f64,
    what: &str,
) {
    let cpu = run(
        &mut vpop::backend::cpu::CpuBackend::new(model.clone()),
        a,
        params,
    );
    let gpu_out = run(gpu, a, params);
    assert_eq!(gpu_out.status, cpu.status, "{what}");
    let worst = common::worst_difference(a, &gpu_out, &cpu);
    println!("wgpu {what}: worst {worst:.2e}");
    assert!(worst <= tol, "{what}: {worst}");
}

/// Two runs' status codes, metrics, profiles and step counts are the same, bit for bit.
fn assert_bit_identical(a: &ChunkOutput, b: &ChunkOutput, what: &str) {
    let bits = |v: &[Vec<f64>]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.status, b.status, "{what}");
    assert_eq!(bits(&a.metrics), bits(&b.metrics), "{what}");
    assert_eq!(bits(&a.profiles), bits(&b.profiles), "{what}");
    assert_eq!(a.stats, b.stats, "{what}");
}

/// The kernels compiled without wgpu's loop counters, or without any of its runtime checks
/// (`VPOP_WGPU_CHECKS`), compute bit for bit what the checked kernels compute: every loop ends
/// and every index is in bounds without them. A long schedule of interleaved dose lines, an
/// explicit and a Rosenbrock method, f32 and f64.
#[test]
fn runtime_checks_change_nothing() {
    use vpop::backend::wgpu::ShaderChecks;
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 16);
    for (p, rtol) in [(Precision::F32, 1e-6), (Precision::F64, 1e-10)] {
        let Some(mut gpu) = gpu_backend(model.clone(), p) else {
            continue;
        };
        for method in [Method::Tsit5, Method::Rodas4] {
            let a = common::long_interleaved_arm(&m, method, rtol);
            gpu.set_shader_checks(ShaderChecks::Checked);
            let checked = run(&mut gpu, &a, &params);
            for c in [ShaderChecks::UnboundedLoops, ShaderChecks::Unchecked] {
                gpu.set_shader_checks(c);
                assert!(gpu.info().device.contains(c.label()));
                let other = run(&mut gpu, &a, &params);
                assert_bit_identical(&other, &checked, &format!("{p:?} {method} {c:?}"));
            }
            println!("wgpu {p:?} {method}: the same results with every setting");
        }
    }
    assert_eq!(
        ShaderChecks::parse("unchecked"),
        Ok(ShaderChecks::Unchecked)
    );
    assert_eq!(ShaderChecks::parse(""), Ok(ShaderChecks::Checked));
    let e = ShaderChecks::parse("loops").unwrap_err();
    assert!(
        e.contains("expected checked, unbounded-loops or unchecked"),
        "{e}"
    );
}

/// The kernels with their loops over the model's sizes and metrics unrolled (the default)
/// compute bit for bit what the same kernels with those loops kept compute
/// (`VPOP_WGSL_UNROLL=0`): a six-state model on the long schedule of interleaved dose lines,
/// with metrics of every kind (whole-profile and windowed), f32 and f64, every method.
#[test]
fn unrolled_loops_change_nothing() {
    let m = common::library_model("transit_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 16);
    for (p, rtol) in [(Precision::F32, 1e-6), (Precision::F64, 1e-10)] {
        let Some(mut gpu) = gpu_backend(model.clone(), p) else {
            continue;
        };
        for method in Method::ALL {
            let mut a = common::long_interleaved_arm(&m, method, rtol);
            // Windowed extrema, an average, an AUC over a window, times above two thresholds.
            let more = [
                "cmax(380, 430)",
                "tmax(380, 430)",
                "cmin(300, 390)",
                "cavg(0, 24)",
                "time_above(1)",
                "time_above(2.5)",
                "auc(600, 700)",
            ];
            for x in more {
                let metric = vpop::metrics::Metric::parse(x).unwrap();
                let k = a.metrics.len() % m.outputs.len();
                let spec = vpop::metrics::MetricSpec::new(k, &m.outputs[k].name, metric);
                a.metrics.push(spec);
            }
            gpu.set_unroll_loops(true);
            let unrolled = run(&mut gpu, &a, &params);
            gpu.set_unroll_loops(false);
            assert!(gpu.info().device.contains("loops kept"));
            let kept = run(&mut gpu, &a, &params);
            assert_bit_identical(&unrolled, &kept, &format!("{p:?} {method}"));
            println!("wgpu {p:?} {method}: the same results unrolled and with loops kept");
        }
        gpu.set_unroll_loops(true);
    }
}

/// A software adapter (llvmpipe) counts an invocation group's loop back edges against one
/// limit and, past it, leaves every loop after one pass without a word. A dispatch that ran
/// past it is detected: with a budget set explicitly, that is an error naming the budget, never
/// a wrong result; with the default budgets, the batch is run again with smaller ones and
/// agrees with the CPU reference. On a hardware adapter every budget gives the same results.
#[test]
fn a_dispatch_past_the_loop_limit_is_detected() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = gpu_backend(model.clone(), Precision::F32) else {
        return;
    };
    let params = subjects(&m, 64);
    let a = common::long_interleaved_arm(&m, Method::Tsit5, 1e-6);
    let input = vpop::backend::ChunkInput {
        first_subject: 0,
        n: 64,
        params: &params,
        amount_scale: None,
        occasion_params: &[],
    };
    gpu.set_dispatch_budget(Some((1 << 30, 1 << 30)));
    let mut out = vpop::backend::ChunkOutput::default();
    let whole = gpu.run_chunk(&a, &input, &mut out);
    gpu.set_dispatch_budget(None);
    let default = run(&mut gpu, &a, &params);
    let cpu = run(&mut vpop::backend::cpu::CpuBackend::new(model), &a, &params);
    assert_eq!(default.status, cpu.status);
    let worst = common::worst_difference(&a, &default, &cpu);
    assert!(worst <= 1e-4, "{worst}");
    if gpu.adapter().device_type == "Cpu" {
        let e = whole
            .expect_err("one dispatch for the whole schedule")
            .to_string();
        println!("{e}");
        assert!(e.contains("cut the kernel's loops short") && e.contains("1073741824 steps"));
    } else {
        whole.unwrap();
        assert_eq!(out.metrics, default.metrics);
    }
}

/// A long schedule of interleaved dose lines (boluses into two compartments, overlapping
/// infusions, a reset): the kernel searches each line for what is due next and agrees with the
/// CPU reference, also when every dispatch stops after one step and one stopping point.
#[test]
fn long_interleaved_schedules_agree() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let Some(mut gpu) = gpu_backend(model.clone(), Precision::F32) else {
        return;
    };
    let params = subjects(&m, 8);
    let a = common::long_interleaved_arm(&m, Method::Tsit5, 1e-6);
    let cpu = run(&mut vpop::backend::cpu::CpuBackend::new(model), &a, &params);
    let default = run(&mut gpu, &a, &params);
    assert_eq!(default.status, cpu.status);
    let worst = common::worst_difference(&a, &default, &cpu);
    println!("wgpu f32: worst {worst:.2e}");
    assert!(worst <= 1e-4, "{worst}");
    gpu.set_dispatch_budget(Some((1, 1)));
    let resumed = run(&mut gpu, &a, &params);
    gpu.set_dispatch_budget(None);
    assert_eq!(resumed.metrics, default.metrics);
    assert_eq!(resumed.profiles, default.profiles);
}

/// Parameters that switch between occasions (inter-occasion variability; see
/// `tests/cuda_integrate.rs`, `occasions_switch_parameters`): the kernel agrees with the CPU
/// reference in f32 and f64, also when every dispatch stops after one step and one stopping
/// point (a resumed subject finds its occasion again).
#[test]
fn occasions_switch_parameters() {
    let m = Model::parse("dosing", common::DOSING_MODEL).unwrap();
    let model = Arc::new(CompiledModel::new(&m));
    for p in [Precision::F32, Precision::F64] {
        let Some(mut gpu) = gpu_backend(model.clone(), p) else {
            continue;
        };
        let (rtol, tol) = match p {
            Precision::F32 => (1e-6, 1e-4),
            Precision::F64 => (1e-10, 1e-9),
        };
        for method in [Method::Tsit5, Method::Rodas4] {
            let (a, params, later) = common::occasion_arm(&m, method, rtol, 8);
            let mut cpu_b = vpop::backend::cpu::CpuBackend::new(model.clone());
            let cpu = common::run_occasions(&mut cpu_b, &a, &params, &later);
            assert!(cpu.status[3] != 0 && cpu.status[5] != 0 && cpu.status[0] == 0);
            let default = common::run_occasions(&mut gpu, &a, &params, &later);
            assert_eq!(default.status, cpu.status);
            let worst = common::worst_difference(&a, &default, &cpu);
            println!("wgpu {p:?} {method}: worst {worst:.2e}");
            assert!(worst <= tol, "{p:?} {method}: {worst}");
            if p == Precision::F32 {
                gpu.set_dispatch_budget(Some((1, 1)));
                let resumed = common::run_occasions(&mut gpu, &a, &params, &later);
                gpu.set_dispatch_budget(None);
                // Bit for bit (the failing subjects' NaNs included).
                let bits = |o: &vpop::backend::ChunkOutput| -> Vec<u64> {
                    let values = o.metrics.iter().chain(&o.profiles).flatten();
                    values.map(|x| x.to_bits()).collect()
                };
                assert_eq!(bits(&resumed), bits(&default));
                assert_eq!(resumed.status, default.status);
            }
        }
    }
}

/// Zero doses over a duration give nothing in the f32 kernels, as on the CPU reference.
#[test]
fn zero_doses_over_a_duration_give_nothing() {
    common::zero_doses_give_nothing(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}

/// A short infusion late in a long trial delivers its amount in the f32 kernels, though f32
/// rounds its end by 3 % of its duration.
#[test]
fn a_late_short_infusion_delivers_its_amount() {
    common::a_late_short_infusion_delivers_its_amount(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        2e-4,
    );
}

/// An output that is not finite leaves its own metrics undefined, the subject `ok` and the
/// other outputs' metrics right.
#[test]
fn non_finite_outputs_leave_their_metrics_undefined() {
    common::non_finite_outputs_leave_their_metrics_undefined(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}

/// Windowed areas late in a year-long run keep their digits in the f32 kernel.
#[test]
fn late_windows_keep_their_digits() {
    common::late_windows_keep_their_digits(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        5e-6,
    );
}

/// A short infusion late in a dataset delivers its amount in the f32 records kernel.
#[test]
fn a_late_short_infusion_record_delivers_its_amount() {
    common::a_late_short_infusion_record_delivers_its_amount(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        2e-4,
    );
}

/// Jumps in time between the stopping points become stopping points in the f32 kernel.
#[test]
fn jumps_in_time_are_stopping_points() {
    common::jumps_in_time_are_stopping_points(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}

/// A segment a few units in the last place long after a jump starts on the new side in the
/// f32 kernel.
#[test]
fn a_segment_ulps_long_starts_on_the_new_side() {
    common::a_segment_ulps_long_starts_on_the_new_side(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}

/// The kernel of 200 outputs with 8 metrics each (1 600 metric columns) validates, in both
/// precisions: its tables of metrics and outputs nest as log2 of their size (a chain of 192
/// selects exceeded naga's parser nesting limit).
#[test]
fn kernels_of_hundreds_of_metrics_and_outputs_validate() {
    use vpop::metrics::{Metric, MetricSpec};
    let m = common::many_outputs_model(200);
    let progs = ModelPrograms::new(&m);
    let metrics: Vec<MetricSpec> = (0..200)
        .flat_map(|k| {
            common::EIGHT_METRICS.map(|x| MetricSpec::new(k, "o", Metric::parse(x).unwrap()))
        })
        .collect();
    for p in [Precision::F32, Precision::F64] {
        let src = integrate_source(&progs, Method::Tsit5, &metrics, p).unwrap();
        if let Err(e) = validate(&src, p) {
            panic!("{p:?}: {e}");
        }
    }
}

/// 240 metric columns agree with the CPU reference in the f32 kernel.
#[test]
fn many_metrics_of_many_outputs_agree_with_cpu() {
    common::many_metrics_of_many_outputs_agree_with_cpu(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}

/// Tmax keeps the first of maxima within rtol in the f32 kernel, and within what f32 peak
/// values resolve at a tighter rtol (`TMAX_TIE_EPS`).
#[test]
fn tmax_keeps_the_first_of_maxima_within_rtol() {
    for rtol in [1e-6, 2e-7] {
        common::tmax_keeps_the_first_of_maxima_within_rtol(
            &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
            rtol,
            0.05,
        );
    }
}

/// A jump at a stopping point belongs to the segment after it in the f32 kernel.
#[test]
fn a_jump_at_a_stopping_point_belongs_to_the_next_segment() {
    common::a_jump_at_a_stopping_point_belongs_to_the_next_segment(
        &mut |m| gpu_backend(m, Precision::F32).map(|b| Box::new(b) as Box<dyn Backend>),
        1e-6,
        1e-4,
    );
}
