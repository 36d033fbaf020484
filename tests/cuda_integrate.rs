//! The CUDA integrator kernels against the CPU f64 reference: f32 within 1e-4 at rtol 1e-6,
//! f64 within 1e-9 at rtol 1e-10, for every library model × method, the same status codes for
//! failing subjects, and every subject of a large chunk in its own row.
//!
//! The kernels run on a device where there is one (libcuda, NVRTC and a GPU), and on the host
//! emulation (the same generated CUDA source built by the system C++ compiler and run on the
//! CPU) where a C++ compiler is found; on both where both exist. VPOP_CUDA_RUNNER=device or
//! emulated keeps one, VPOP_CUDA_PRECISION=f32 or f64 one precision. Without either, every test
//! prints SKIPPED.

#[macro_use]
mod common;

use std::sync::{Arc, OnceLock};

use common::{arm, run, subjects, Agreement};
use vpop::backend::{Backend, BackendError, Precision};
use vpop::model::CompiledModel;
use vpop::solver::Method;

/// Where the kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Device,
    Emulated,
}

#[cfg(feature = "cuda")]
fn make(
    r: Runner,
    model: Arc<CompiledModel>,
    p: Precision,
) -> Result<Box<dyn Backend>, BackendError> {
    Ok(match r {
        Runner::Device => Box::new(vpop::backend::cuda::CudaBackend::new(model, p)?),
        Runner::Emulated => Box::new(vpop::backend::cuda::EmulatedCuda::new(model, p)?),
    })
}

#[cfg(not(feature = "cuda"))]
fn make(
    _r: Runner,
    _model: Arc<CompiledModel>,
    _p: Precision,
) -> Result<Box<dyn Backend>, BackendError> {
    Err(BackendError::Unavailable(
        "cuda",
        "built without the `cuda` feature".into(),
    ))
}

/// The runners available here (probed once), or why there is none.
fn runners() -> Result<&'static [Runner], &'static str> {
    static FOUND: OnceLock<Result<Vec<Runner>, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let wanted: Vec<Runner> = match std::env::var("VPOP_CUDA_RUNNER").as_deref() {
            Ok("device") => vec![Runner::Device],
            Ok("emulated") => vec![Runner::Emulated],
            _ => vec![Runner::Device, Runner::Emulated],
        };
        let model = Arc::new(CompiledModel::new(&common::library_model("one_cmt_iv")));
        let mut ok = Vec::new();
        let mut why = Vec::new();
        for r in wanted {
            match make(r, model.clone(), Precision::F32) {
                Ok(_) => ok.push(r),
                Err(e) => why.push(e.to_string()),
            }
        }
        if ok.is_empty() {
            Err(why.join("; "))
        } else {
            Ok(ok)
        }
    });
    match found {
        Ok(v) => Ok(v),
        Err(why) => Err(why),
    }
}

/// Calls `check` with each available runner's backend for `model` and `p`; prints SKIPPED
/// when there is none.
fn each_runner(
    model: &Arc<CompiledModel>,
    p: Precision,
    mut check: impl FnMut(Runner, &mut dyn Backend),
) {
    match runners() {
        Err(why) => println!("SKIPPED: {why}"),
        Ok(rs) => {
            for &r in rs {
                let mut b = make(r, model.clone(), p)
                    .unwrap_or_else(|e| panic!("{r:?} was available, now: {e}"));
                check(r, b.as_mut());
            }
        }
    }
}

/// The precisions to check: both, or the one named by VPOP_CUDA_PRECISION (f32 or f64).
fn precisions() -> Vec<Precision> {
    match std::env::var("VPOP_CUDA_PRECISION").as_deref() {
        Ok("f32") => vec![Precision::F32],
        Ok("f64") => vec![Precision::F64],
        _ => vec![Precision::F32, Precision::F64],
    }
}

fn agreement(name: &str) {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    for p in precisions() {
        let tol = match p {
            Precision::F32 => Agreement {
                rtol: 1e-6,
                same: 1e-4,
                tight: 1e-3,
                subjects: 24,
            },
            Precision::F64 => Agreement {
                rtol: 1e-10,
                same: 1e-9,
                tight: 1e-9,
                subjects: 24,
            },
        };
        for &r in rs {
            println!("{name}, {r:?}, {}:", p.name());
            common::agrees_with_the_cpu_reference(name, tol, |m| {
                Some(make(r, m, p).unwrap_or_else(|e| panic!("{r:?}: {e}")))
            });
        }
    }
}

agreement_tests!(agreement);

#[test]
fn failing_subjects_get_the_same_status_codes() {
    for p in [Precision::F32, Precision::F64] {
        let model = Arc::new(CompiledModel::new(&common::library_model("two_cmt_oral")));
        each_runner(&model, p, |_, b| {
            common::failing_subjects_get_the_same_status_codes(b);
        });
    }
}

/// A W whose sparse factorisation refuses a pivot once the steps are large: the step is
/// rejected and retried smaller, and the results keep to the tolerance.
#[test]
fn refused_pivots_reject_the_step() {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    for &r in rs {
        for (p, rtol, tol) in [(Precision::F32, 1e-6, 1e-4), (Precision::F64, 1e-6, 1e-5)] {
            println!("{r:?} {p:?}:");
            common::refused_pivots_reject_the_step(
                |model| Some(make(r, model, p).unwrap_or_else(|e| panic!("{r:?}: {e}"))),
                rtol,
                tol,
                20.0,
            );
        }
    }
}

/// Runs `n` subjects of `model` as one chunk on each runner: the subjects `picked` give bit for
/// bit what they give run alone (status, metrics, profiles).
fn subjects_equal_themselves_alone(model: &str, n: usize, rtol: f64, picked: &[usize]) {
    let m = common::library_model(model);
    let compiled = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, n);
    let a = arm(&m, Method::Tsit5, rtol, &["auc".into(), "cmax".into()]);
    each_runner(&compiled, Precision::F32, |r, b| {
        let all = run(b, &a, &params);
        for &i in picked {
            let one: Vec<Vec<f64>> = params.iter().map(|c| vec![c[i]]).collect();
            let alone = run(b, &a, &one);
            assert_eq!(all.status[i], alone.status[0], "{r:?}: subject {i} status");
            for k in 0..2 {
                assert_eq!(
                    all.metrics[k][i].to_bits(),
                    alone.metrics[k][0].to_bits(),
                    "{r:?}: subject {i} metric {k}"
                );
            }
            let nt = a.sample_times.len();
            assert_eq!(
                &all.profiles[0][i * nt..(i + 1) * nt],
                &alone.profiles[0][..],
                "{r:?}: subject {i} profile"
            );
        }
    });
}

/// A chunk larger than one launch's worth of blocks, with profiles: every subject's result is
/// where it belongs (subject i of the chunk equals subject i run alone).
#[test]
fn subjects_land_in_their_own_rows() {
    subjects_equal_themselves_alone("two_cmt_oral", 1000, 1e-6, &[0, 1, 127, 128, 129, 999]);
}

/// A chunk large enough for a device to split across its streams (and devices): every
/// subject's result equals the subject run alone, at the parts' edges too.
#[test]
fn a_chunk_split_across_streams_keeps_every_subject_in_its_row() {
    subjects_equal_themselves_alone(
        "one_cmt_iv",
        100_000,
        1e-4,
        &[0, 33_407, 33_408, 33_409, 66_815, 66_816, 99_999],
    );
}

/// A chunk split across lanes (as a machine's streams and devices split it) gives what one
/// launch gives, subject by subject, in f32 and f64, with profiles.
#[cfg(feature = "cuda")]
#[test]
fn a_chunk_split_across_lanes_equals_one_launch() {
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 1000);
    let a = arm(&m, Method::Tsit5, 1e-6, &["auc".into(), "cmax".into()]);
    for p in [Precision::F32, Precision::F64] {
        let mut outs = Vec::new();
        for lanes in [1, 3] {
            match vpop::backend::cuda::EmulatedCuda::new(model.clone(), p) {
                Ok(b) => outs.push(run(&mut b.with_lanes(lanes), &a, &params)),
                Err(e) => {
                    println!("SKIPPED: {e}");
                    return;
                }
            }
        }
        common::assert_same_bits(&outs[1], &outs[0], &format!("{p:?}, three lanes"));
    }
}

/// Subjects handed to threads the costliest first (as learnt from a first call) give what
/// they give in the order they were sampled in, bit for bit, in f32 and f64, with profiles.
#[cfg(feature = "cuda")]
#[test]
fn subjects_in_any_order_give_the_same_results() {
    use vpop::backend::cuda::EmulatedCuda;
    let m = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&m));
    let params = subjects(&m, 3000);
    let a = arm(
        &m,
        Method::Tsit5,
        1e-5,
        &["auc".into(), "cmax".into(), "tmax".into()],
    );
    for p in [Precision::F32, Precision::F64] {
        let (ordered, natural) = match (
            EmulatedCuda::new(model.clone(), p),
            EmulatedCuda::new(model.clone(), p),
        ) {
            (Ok(o), Ok(n)) => (o.with_lanes(3), n.with_lanes(3).in_natural_order()),
            (Err(e), _) | (_, Err(e)) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        let (mut ordered, mut natural) = (ordered, natural);
        common::subjects_in_any_order_give_the_same_results(
            &mut ordered,
            &mut natural,
            &a,
            &params,
            &format!("{p:?}"),
        );
    }
}

/// Arm `a` on every runner in precision `p` gives the CPU reference's `cpu`: the same statuses,
/// and every metric and profile bit for bit in emulated f64, within 1e-9 in f64 on a device and
/// 1e-4 in f32.
fn agrees_on_every_runner(
    rs: &[Runner],
    model: &Arc<CompiledModel>,
    p: Precision,
    a: &vpop::backend::ArmPlan,
    params: &[Vec<f64>],
    cpu: &vpop::backend::ChunkOutput,
) {
    for &r in rs {
        let mut b = make(r, model.clone(), p).unwrap();
        let gpu = run(b.as_mut(), a, params);
        assert_eq!(gpu.status, cpu.status, "{r:?} {p:?}");
        let worst = common::worst_difference(a, &gpu, cpu);
        println!("{r:?} {p:?}: worst {worst:.2e}");
        match (r, p) {
            (Runner::Emulated, Precision::F64) => assert_eq!(worst, 0.0),
            (_, Precision::F64) => assert!(worst <= 1e-9, "{worst}"),
            _ => assert!(worst <= 1e-4, "{worst}"),
        }
    }
}

/// A long schedule of interleaved dose lines (boluses into two compartments, overlapping
/// infusions whose ends fall between later starts, a reset): the kernel finds what is due next
/// by searching each line, and gives the CPU reference's metrics, bit for bit in f64 with Tsit5.
#[test]
fn long_interleaved_schedules_agree() {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    let ir = common::library_model("two_cmt_oral");
    let model = Arc::new(CompiledModel::new(&ir));
    let params = subjects(&ir, 8);
    for p in precisions() {
        let rtol = if p == Precision::F64 { 1e-10 } else { 1e-6 };
        let a = common::long_interleaved_arm(&ir, Method::Tsit5, rtol);
        let cpu = run(
            &mut vpop::backend::cpu::CpuBackend::new(model.clone()),
            &a,
            &params,
        );
        agrees_on_every_runner(rs, &model, p, &a, &params, &cpu);
    }
}

/// Metrics that read some outputs only (effect_emax: the AUC and average of `effect`, the Cmax
/// of `cp`): only `effect` gets a quadrature. The kernels agree with the CPU reference (bit for
/// bit in emulated f64), and the CPU's AUC equals that of an arm where every output has one.
#[test]
fn quadratures_of_some_outputs_agree() {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    let ir = common::library_model("effect_emax");
    assert_eq!(ir.outputs.len(), 2);
    let model = Arc::new(CompiledModel::new(&ir));
    let params = subjects(&ir, 8);
    for p in precisions() {
        let rtol = if p == Precision::F64 { 1e-10 } else { 1e-6 };
        let a = common::some_outputs_arm(&ir, Method::Tsit5, rtol);
        let mut cpu_b = vpop::backend::cpu::CpuBackend::new(model.clone());
        let cpu = run(&mut cpu_b, &a, &params);
        assert!(cpu.status.iter().all(|s| *s == 0));
        if p == Precision::F64 {
            // Every output's AUC integrated: columns cp_auc, effect_auc.
            let every = run(
                &mut cpu_b,
                &arm(&ir, Method::Tsit5, rtol, &["auc".into()]),
                &params,
            );
            let d = common::max_rel(&cpu.metrics[0], &every.metrics[1]);
            println!("effect AUC alone against with cp's: {d:.2e}");
            assert!(d <= 1e-8, "{d}");
        }
        agrees_on_every_runner(rs, &model, p, &a, &params, &cpu);
    }
}

/// Parameters that switch between occasions (inter-occasion variability): doses take the lag,
/// bioavailability and modelled rate of the occasion their nominal time falls in, doses given
/// before an occasion's start finish with their own, a reset at an occasion's start restores
/// the first occasion's initial state; the kernel agrees with the CPU reference, and the
/// occasions change the results.
#[test]
fn occasions_switch_parameters() {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    let ir = vpop::model::Model::parse("dosing", common::DOSING_MODEL).unwrap();
    let model = Arc::new(CompiledModel::new(&ir));
    for p in precisions() {
        let rtol = if p == Precision::F64 { 1e-10 } else { 1e-6 };
        for method in [Method::Tsit5, Method::Rodas4] {
            let (a, params, later) = common::occasion_arm(&ir, method, rtol, 16);
            let mut cpu_b = vpop::backend::cpu::CpuBackend::new(model.clone());
            let cpu = common::run_occasions(&mut cpu_b, &a, &params, &later);
            assert!(cpu.status[3] != 0 && cpu.status[5] != 0 && cpu.status[0] == 0);
            let one = run(
                &mut cpu_b,
                &vpop::backend::ArmPlan {
                    occasions: vec![],
                    ..a.clone()
                },
                &params,
            );
            // Over the subjects whose dosing is valid throughout.
            let ok = |o: &vpop::backend::ChunkOutput| -> Vec<f64> {
                let v = o.metrics[0].iter().zip(&cpu.status);
                v.filter(|(_, s)| **s == 0).map(|(x, _)| *x).collect()
            };
            let effect = common::max_rel(&ok(&one), &ok(&cpu));
            assert!(effect > 1e-2, "the occasions change the results: {effect}");
            for &r in rs {
                let mut b = make(r, model.clone(), p).unwrap();
                // Too few occasions' parameters: an error naming the arm, on either backend.
                for b in [b.as_mut(), &mut cpu_b as &mut dyn Backend] {
                    let input = vpop::backend::ChunkInput {
                        first_subject: 0,
                        n: params[0].len(),
                        params: &params,
                        amount_scale: None,
                        occasion_params: &later[..2],
                    };
                    let mut out = vpop::backend::ChunkOutput::default();
                    let e = b.run_chunk(&a, &input, &mut out).unwrap_err().to_string();
                    assert!(e.contains("arm 'a' has 6 occasions"), "{e}");
                }
                let gpu = common::run_occasions(b.as_mut(), &a, &params, &later);
                assert_eq!(gpu.status, cpu.status, "{r:?} {p:?} {method}");
                let worst = common::worst_difference(&a, &gpu, &cpu);
                println!(
                    "{r:?} {p:?} {method}: worst {worst:.2e} (occasions' effect {effect:.2e})"
                );
                match (r, p) {
                    (_, Precision::F64) => assert!(worst <= 1e-9, "{worst}"),
                    _ => assert!(worst <= 1e-4, "{worst}"),
                }
            }
        }
    }
}

/// A slow infusion running on after a fast one into the same compartment (rates 1e-4 and 1e4)
/// keeps its rate when the fast one ends: only round-off of the rates' sum is cancelled there
/// (1e-12 of the ending rate in f64, as on the CPU reference).
#[test]
fn a_slow_infusion_outlasting_a_fast_one_keeps_its_rate() {
    let Ok(rs) = runners() else {
        println!("SKIPPED: {}", runners().unwrap_err());
        return;
    };
    if !precisions().contains(&Precision::F64) {
        return;
    }
    let ir = common::library_model("one_cmt_iv");
    let model = Arc::new(CompiledModel::new(&ir));
    let params = subjects(&ir, 4);
    let a = common::slow_and_fast_infusions(&ir);
    let cpu = run(
        &mut vpop::backend::cpu::CpuBackend::new(model.clone()),
        &a,
        &params,
    );
    for &r in rs {
        let mut b = make(r, model.clone(), Precision::F64).unwrap();
        let gpu = run(b.as_mut(), &a, &params);
        let worst = common::worst_difference(&a, &gpu, &cpu);
        println!("{r:?} F64: worst {worst:.2e}");
        assert!(worst <= 1e-9, "{worst}");
    }
}

/// `check(maker, pick)` on every runner in both precisions: `maker` builds that runner's
/// backends, `pick(for_f32, for_f64)` the value of the precision; SKIPPED where no runner is
/// available.
fn each_kernel_maker(
    mut check: impl FnMut(
        &mut dyn FnMut(Arc<CompiledModel>) -> Option<Box<dyn Backend>>,
        fn(f64, f64) -> f64,
    ),
) {
    match runners() {
        Err(why) => println!("SKIPPED: {why}"),
        Ok(rs) => {
            for &r in rs {
                for p in [Precision::F32, Precision::F64] {
                    let pick: fn(f64, f64) -> f64 = match p {
                        Precision::F32 => |a, _| a,
                        Precision::F64 => |_, b| b,
                    };
                    check(
                        &mut |m| Some(make(r, m, p).unwrap_or_else(|e| panic!("{r:?}: {e}"))),
                        pick,
                    );
                }
            }
        }
    }
}

/// Zero doses over a duration give nothing in the CUDA kernels, in f32 and f64, as on the
/// CPU reference.
#[test]
fn zero_doses_over_a_duration_give_nothing() {
    each_kernel_maker(|make, pick| {
        common::zero_doses_give_nothing(make, pick(1e-6, 1e-8), pick(1e-4, 1e-6))
    });
}

/// A short infusion late in a long trial delivers its amount in the CUDA kernels (f32 rounds
/// its end by 3 % of its duration).
#[test]
fn a_late_short_infusion_delivers_its_amount() {
    each_kernel_maker(|make, pick| {
        common::a_late_short_infusion_delivers_its_amount(make, pick(2e-4, 1e-6))
    });
}

/// An output that is not finite leaves its own metrics undefined, the subject `ok` and the
/// other outputs' metrics right.
#[test]
fn non_finite_outputs_leave_their_metrics_undefined() {
    each_kernel_maker(|make, pick| {
        common::non_finite_outputs_leave_their_metrics_undefined(
            make,
            pick(1e-6, 1e-10),
            pick(1e-4, 1e-8),
        )
    });
}

/// Windowed areas late in a year-long run keep their digits in the CUDA kernels.
#[test]
fn late_windows_keep_their_digits() {
    each_kernel_maker(|make, pick| {
        common::late_windows_keep_their_digits(make, pick(1e-6, 1e-10), pick(5e-6, 1e-8))
    });
}

/// A short infusion late in a dataset delivers its amount in the CUDA records kernels.
#[test]
fn a_late_short_infusion_record_delivers_its_amount() {
    each_kernel_maker(|make, pick| {
        common::a_late_short_infusion_record_delivers_its_amount(make, pick(2e-4, 1e-6))
    });
}

/// Jumps in time between the stopping points become stopping points in the CUDA kernels.
#[test]
fn jumps_in_time_are_stopping_points() {
    each_kernel_maker(|make, pick| {
        common::jumps_in_time_are_stopping_points(make, pick(1e-6, 1e-10), pick(1e-4, 1e-8))
    });
}

/// A segment a few units in the last place long after a jump starts on the new side in the
/// CUDA kernels.
#[test]
fn a_segment_ulps_long_starts_on_the_new_side() {
    each_kernel_maker(|make, pick| {
        common::a_segment_ulps_long_starts_on_the_new_side(
            make,
            pick(1e-6, 1e-10),
            pick(1e-4, 1e-8),
        )
    });
}

/// 240 metric columns agree with the CPU reference in the CUDA kernels.
#[test]
fn many_metrics_of_many_outputs_agree_with_cpu() {
    each_kernel_maker(|make, pick| {
        common::many_metrics_of_many_outputs_agree_with_cpu(
            make,
            pick(1e-6, 1e-10),
            pick(1e-4, 1e-8),
        )
    });
}

/// Tmax keeps the first of maxima within rtol in the CUDA kernels, and within what f32 peak
/// values resolve at a tighter rtol.
#[test]
fn tmax_keeps_the_first_of_maxima_within_rtol() {
    each_kernel_maker(|make, pick| {
        common::tmax_keeps_the_first_of_maxima_within_rtol(
            make,
            pick(1e-6, 1e-10),
            pick(0.05, 1e-4),
        );
        // In f32 at a tighter rtol, the tie is what f32 peak values resolve (TMAX_TIE_EPS).
        common::tmax_keeps_the_first_of_maxima_within_rtol(
            make,
            pick(2e-7, 1e-10),
            pick(0.05, 1e-4),
        )
    });
}

/// A jump at a stopping point belongs to the segment after it in the CUDA kernels.
#[test]
fn a_jump_at_a_stopping_point_belongs_to_the_next_segment() {
    each_kernel_maker(|make, pick| {
        common::a_jump_at_a_stopping_point_belongs_to_the_next_segment(
            make,
            pick(1e-6, 1e-10),
            pick(1e-4, 1e-8),
        )
    });
}
