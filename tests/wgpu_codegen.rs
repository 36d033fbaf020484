//! Generated WGSL for every library model: validated by naga (f32 and f64), and evaluated on a
//! real adapter (lavapipe in CI) against the CPU f64 evaluator.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use vpop::backend::wgpu::model_eval_source;
use vpop::backend::Precision;
use vpop::metrics::OutputEval;
use vpop::model::{library, CompiledModel, Model, ModelPrograms};
use vpop::solver::OdeSystem;

fn validate(src: &str, f64: bool) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let caps = if f64 {
        naga::valid::Capabilities::FLOAT64
    } else {
        naga::valid::Capabilities::empty()
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(src))
}

#[test]
fn every_generated_shader_validates() {
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        for p in [Precision::F32, Precision::F64] {
            let src = model_eval_source(&progs, p).unwrap();
            if let Err(e) = validate(&src, p == Precision::F64) {
                panic!("{} {p:?}:\n{e}", lm.name);
            }
        }
    }
}

#[test]
fn generated_code_agrees_with_the_cpu_evaluator_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(false) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: no wgpu adapter ({e})");
            return;
        }
    };
    println!(
        "adapter: {} ({}, {})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    let mut rng = SmallRng::seed_from_u64(11);
    for lm in library::MODELS {
        let m = Model::parse(lm.name, lm.source).unwrap();
        let cpu = CompiledModel::new(&m);
        let progs = ModelPrograms::new(&m);
        let (ns, np, no) = (m.states.len(), m.params.len(), m.outputs.len());
        let n = 256;
        let mut states = Vec::new();
        let mut params = Vec::new();
        let mut times = Vec::new();
        for _ in 0..n {
            for _ in 0..ns {
                states.push(rng.random_range(0.1..10.0f64));
            }
            for p in &m.params {
                // Defaults scaled by up to ±50 % (zero defaults stay zero).
                params.push(p.default * rng.random_range(0.5..1.5f64));
            }
            times.push(rng.random_range(0.0..48.0f64));
        }
        let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<f32>>();
        let got = gpu
            .eval_model_f32(&progs, &f32s(&states), &f32s(&params), &f32s(&times))
            .unwrap();
        let width = ns + ns * ns + ns + no + no * ns;
        for i in 0..n {
            // The CPU evaluator on the same (f32-rounded) inputs, in f64.
            let y: Vec<f64> = states[i * ns..(i + 1) * ns]
                .iter()
                .map(|x| *x as f32 as f64)
                .collect();
            let q: Vec<f64> = params[i * np..(i + 1) * np]
                .iter()
                .map(|x| *x as f32 as f64)
                .collect();
            let t = times[i] as f32 as f64;
            let mut b = cpu.bind(&q);
            let mut want = vec![0.0; width];
            let (f, rest) = want.split_at_mut(ns);
            b.rhs(t, &y, f);
            let (j, rest) = rest.split_at_mut(ns * ns);
            b.jacobian(t, &y, j);
            let (d, rest) = rest.split_at_mut(ns);
            b.dfdt(t, &y, d);
            let (g, gj) = rest.split_at_mut(no);
            b.outputs(t, &y, g);
            b.output_jacobian(t, &y, gj);
            // f32 evaluation of the same expressions: relative error a few ulps per operation,
            // against the scale of the row's values (sums can cancel).
            let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-30);
            for k in 0..width {
                let g = got[i * width + k] as f64;
                assert!(
                    (g - want[k]).abs() <= 1e-4 * want[k].abs() + 1e-5 * scale,
                    "{} point {i} value {k}: gpu {g} vs cpu {}",
                    lm.name,
                    want[k]
                );
            }
        }
    }
}
