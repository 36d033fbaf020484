//! Generated WGSL for every library model: validated by naga (f32 and f64), and evaluated on a
//! real adapter (lavapipe in CI) against the CPU f64 evaluator.

#![cfg(feature = "wgpu")]

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

/// A generator for one model's random points: seeded by the model's name, so that the points
/// of a model do not depend on which models come before it in the library.
fn model_rng(seed: u64, name: &str) -> SmallRng {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    SmallRng::seed_from_u64(seed ^ h)
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

/// The text of the generated function that starts with `head`, to its closing brace.
fn function_body<'a>(src: &'a str, head: &str) -> &'a str {
    let start = src.find(head).unwrap_or_else(|| panic!("no {head}"));
    let end = start + src[start..].find("\n}\n").unwrap();
    &src[start..end]
}

/// What depends on parameters and constants alone is computed once per subject, in
/// `model_prepare`, and read from `q` by the model functions: no division is left in the
/// right-hand side or the outputs of a model whose rate is a sum of 40 quotients of
/// parameters. `model_prepare` names a value after its program and instruction with an
/// underscore (`f_32`), so that no name is a type's (`f32`, `f64`, `f16`, which the lines
/// below it would then mean): this right-hand side has more than 64 instructions, all of them
/// in model_prepare, and validates. The generated functions' values are checked on an adapter
/// against the CPU evaluator by the tests below, on every library model.
#[test]
fn parameter_only_values_are_computed_once_under_names_of_their_own() {
    let terms: Vec<String> = (1..=40).map(|i| format!("k / (v + {i})")).collect();
    let text = format!(
        "param k = 0.5\nparam v = 10\nstate a\nd/dt(a) = -({}) * a\noutput c = a / v\n",
        terms.join(" + ")
    );
    let m = Model::parse("quotients.vpm", &text).unwrap();
    let progs = ModelPrograms::new(&m);
    assert!(progs.rhs.instrs.len() > 120, "{}", progs.rhs.instrs.len());
    for p in [Precision::F32, Precision::F64] {
        let src = model_eval_source(&progs, p).unwrap();
        if let Err(e) = validate(&src, p == Precision::F64) {
            panic!("{p:?}:\n{e}");
        }
        let prepare = function_body(&src, "fn model_prepare(");
        // 40 quotients, and 1/v: the output a / v is a * (1/v).
        assert_eq!(prepare.matches(" / ").count(), 41, "{prepare}");
        for name in ["f_16: ", "f_32: ", "f_64: "] {
            assert!(prepare.contains(name), "{p:?}: no {name} in {prepare}");
        }
        // A model without parameters gets a model_prepare that returns its one-place array.
        let none = ModelPrograms::new(
            &Model::parse("none.vpm", "state a\nd/dt(a) = -a / 3\noutput c = a\n").unwrap(),
        );
        let src_none = model_eval_source(&none, p).unwrap();
        if let Err(e) = validate(&src_none, p == Precision::F64) {
            panic!("{p:?} without parameters:\n{e}");
        }
        assert!(src_none.contains("fn model_prepare("));
        // The rate is stored at q[2] (after k and v) and 1/v at q[3].
        for (f, read) in [
            ("fn model_rhs(", "q[2]"),
            ("fn model_jac(", "q[2]"),
            ("fn model_outputs(", "q[3]"),
        ] {
            let body = function_body(&src, f);
            assert!(!body.contains(" / ") && body.contains(read), "{body}");
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
    for lm in library::MODELS {
        let mut rng = model_rng(11, lm.name);
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

/// A kernel whose generated model code does not compile is reported at the model statement
/// the failing line came from (`file:line:col`), before any adapter sees it. No parsed model
/// produces such code; an out-of-range state index planted in the programs stands in for a
/// code generator fault.
#[test]
fn a_shader_that_does_not_compile_names_the_model_line() {
    use vpop::backend::wgpu::{check_source, kernel::integrate_source};
    use vpop::model::Op;
    use vpop::solver::Method;
    let m = Model::parse(
        "two_cmt_oral.vpm",
        library::get("two_cmt_oral").unwrap().source,
    )
    .unwrap();
    let mut progs = ModelPrograms::new(&m);
    // `central` in the right-hand side first appears in d/dt(central), line 11.
    let i = progs
        .rhs
        .instrs
        .iter()
        .position(|op| *op == Op::State(1))
        .unwrap();
    let s = &progs.statements[progs.rhs.origin(i).unwrap() as usize];
    assert_eq!((s.what.as_str(), s.line, s.col), ("d/dt(central)", 11, 6));
    for p in [Precision::F32, Precision::F64] {
        let good = integrate_source(&progs, Method::Tsit5, &[], p).unwrap();
        check_source(&good, p, &progs, "wgpu kernel").unwrap();
    }
    progs.rhs.instrs[i] = Op::State(99);
    for p in [Precision::F32, Precision::F64] {
        let bad = integrate_source(&progs, Method::Tsit5, &[], p).unwrap();
        let e = check_source(&bad, p, &progs, "wgpu kernel").unwrap_err();
        println!("{e}");
        assert!(
            e.starts_with(&format!(
                "two_cmt_oral.vpm:11:6: the {} wgpu kernel does not compile in the code generated for `d/dt(central)`",
                p.name()
            )),
            "{e}"
        );
        assert!(e.contains(&format!("let r{i}:")), "{e}");
        let eval = model_eval_source(&progs, p).unwrap();
        let e = check_source(&eval, p, &progs, "model evaluation shader").unwrap_err();
        assert!(e.starts_with("two_cmt_oral.vpm:11:6: "), "{e}");
    }
    // Through the backend, where an adapter exists: the same message, not a panic.
    let mut compiled = CompiledModel::new(&m);
    compiled.programs = progs;
    let model = std::sync::Arc::new(compiled);
    match vpop::backend::wgpu::WgpuBackend::new(model, Precision::F32) {
        Ok(mut b) => {
            use vpop::backend::{ArmPlan, Backend, ChunkInput, ChunkOutput};
            let arm = ArmPlan {
                name: "a".into(),
                regimen: vpop::dosing::Regimen { lines: vec![] },
                metrics: vec![],
                end: 1.0,
                sample_times: vec![],
                solver: Default::default(),
                occasions: vec![],
            };
            let params: Vec<Vec<f64>> = m.params.iter().map(|p| vec![p.default]).collect();
            let input = ChunkInput {
                first_subject: 0,
                n: 1,
                params: &params,
                amount_scale: None,
                occasion_params: &[],
            };
            let e = b
                .run_chunk(&arm, &input, &mut ChunkOutput::default())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("two_cmt_oral.vpm:11:6: "), "{e}");
        }
        Err(e) => println!("SKIPPED (backend part): {e}"),
    }
}

/// The f64 model functions on an adapter with SHADER_F64, against the CPU evaluator in f64:
/// the same expressions, so within a few ulps of the row's scale (exp, log and pow are the
/// kernels' own, shaders/real_f64.wgsl).
#[test]
fn f64_generated_code_agrees_with_the_cpu_evaluator_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(true) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let mut worst = 0.0f64;
    for lm in library::MODELS {
        let mut rng = model_rng(12, lm.name);
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
                params.push(p.default * rng.random_range(0.5..1.5f64));
            }
            times.push(rng.random_range(0.0..48.0f64));
        }
        let got = gpu
            .eval_model_f64(&progs, &states, &params, &times)
            .unwrap();
        let width = ns + ns * ns + ns + no + no * ns;
        for i in 0..n {
            let y = &states[i * ns..(i + 1) * ns];
            let q = &params[i * np..(i + 1) * np];
            let t = times[i];
            let mut b = cpu.bind(q);
            let mut want = vec![0.0; width];
            let (f, rest) = want.split_at_mut(ns);
            b.rhs(t, y, f);
            let (j, rest) = rest.split_at_mut(ns * ns);
            b.jacobian(t, y, j);
            let (d, rest) = rest.split_at_mut(ns);
            b.dfdt(t, y, d);
            let (g, gj) = rest.split_at_mut(no);
            b.outputs(t, y, g);
            b.output_jacobian(t, y, gj);
            let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-300);
            // A few ulps per operation, more where a sum cancels: with other points this test
            // found 1.75e-13 on effect_emax's ∂effect/∂ce (the quotient rule's two terms of
            // pow results cancel); these points stay below 1e-13.
            for k in 0..width {
                let g = got[i * width + k];
                let e = (g - want[k]).abs() / (want[k].abs() + 1e-12 * scale);
                worst = worst.max(e);
                assert!(
                    e <= 5e-13,
                    "{} point {i} value {k}: gpu {g:e} vs cpu {:e}",
                    lm.name,
                    want[k]
                );
            }
        }
    }
    println!("worst relative difference: {worst:.2e}");
}

/// Relative error of `got` from `want` in units of f64's epsilon (0 when both are the same
/// non-finite value or NaN).
fn ulps(got: f64, want: f64) -> f64 {
    if (got.is_nan() && want.is_nan()) || got == want {
        return 0.0;
    }
    if !got.is_finite() || !want.is_finite() {
        return f64::INFINITY;
    }
    (got - want).abs() / (want.abs() * f64::EPSILON).max(f64::from_bits(1))
}

/// The f64 exp, log, log10 and pow of the WGSL kernels (shaders/real_f64.wgsl) against Rust's
/// on an adapter with SHADER_F64: special values as in C (NaN, ±0, ±∞, negative bases,
/// overflow, underflow, subnormals) and at most a few ulps on 2^16 arguments over the whole
/// range, through the generated code of a model whose outputs are the four functions.
#[test]
fn f64_math_functions_are_accurate_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(true) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let text = "param x = 1\nparam a = 1\nparam b = 1\nstate s\nd/dt(s) = 0\n\
                output e = exp(x)\noutput l = log(a)\noutput l10 = log10(a)\noutput p = pow(a, b)\n";
    let m = Model::parse("math.vpm", text).unwrap();
    let progs = ModelPrograms::new(&m);
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        0.5,
        3.0,
        -3.0,
        0.75,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1e-310,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        709.782712893384,
        709.7827128933841,
        -745.1332191019411,
        -745.1332191019412,
        -708.5,
        1.0 + f64::EPSILON,
        1.0 - f64::EPSILON / 2.0,
        1e300,
        1e-300,
    ];
    let mut rng = SmallRng::seed_from_u64(13);
    // Classes of arguments: (name, x, a, b).
    let mut points: Vec<(&str, f64, f64, f64)> = Vec::new();
    for &u in &specials {
        for &v in &specials {
            points.push(("special", u, u, v));
        }
    }
    let n_special = points.len();
    for i in 0..(1 << 16) {
        let x = match i % 4 {
            0 => rng.random_range(-745.2..709.8f64),
            1 => rng.random_range(-1.0..1.0f64),
            2 => rng.random_range(-40.0..40.0),
            _ => rng.random_range(-1e-8..1e-8),
        };
        let a = match i % 5 {
            0 => 10f64.powf(rng.random_range(-307.0..308.0)),
            1 => rng.random_range(0.5..2.0),
            2 => 1.0 + rng.random_range(-1e-6..1e-6),
            3 => 10f64.powf(rng.random_range(-6.0..6.0)),
            _ => -(10f64.powf(rng.random_range(-3.0..3.0))),
        };
        // Exponents as models use them (Hill coefficients, allometry), integers, and any.
        let (class, b) = match i % 3 {
            0 => ("pow, |b| < 4", rng.random_range(-4.0..4.0)),
            1 => ("pow, integer b", f64::from(rng.random_range(-20..20))),
            _ => (
                "pow, any b",
                rng.random_range(-1.0..1.0) * 10f64.powf(rng.random_range(-3.0..2.5)),
            ),
        };
        points.push((class, x, a, b));
    }
    let mut params = Vec::new();
    for (_, x, a, b) in &points {
        params.extend_from_slice(&[*x, *a, *b]);
    }
    let n = points.len();
    let got = gpu
        .eval_model_f64(&progs, &vec![1.0; n], &params, &vec![0.0; n])
        .unwrap();
    // rhs, Jacobian, ∂f/∂t (one each), then the four outputs.
    let width = 3 + 4 + 4;
    let mut worst: std::collections::BTreeMap<String, (f64, f64, f64, f64)> = Default::default();
    let mut report = |name: &str, e: f64, x: f64, a: f64, b: f64| {
        let w = worst
            .entry(name.to_string())
            .or_insert((0.0, 0.0, 0.0, 0.0));
        if e > w.0 {
            *w = (e, x, a, b);
        }
    };
    for (i, &(class, x, a, b)) in points.iter().enumerate() {
        let o = &got[i * width + 3..i * width + 7];
        let want = [x.exp(), a.ln(), a.log10(), a.powf(b)];
        let names = ["exp", "log", "log10", class];
        for k in 0..4 {
            let e = ulps(o[k], want[k]);
            if i < n_special {
                // Special values exactly as C's (within an ulp where the result is finite).
                assert!(
                    e <= 8.0,
                    "{} of ({x:e}, {a:e}, {b:e}): {:e}, want {:e}",
                    ["exp", "log", "log10", "pow"][k],
                    o[k],
                    want[k]
                );
            } else {
                report(names[k], e, x, a, b);
            }
        }
    }
    for (name, (e, x, a, b)) in &worst {
        println!("{name}: worst {e:.2} ulp (x {x:e}, a {a:e}, b {b:e})");
    }
    for (name, limit) in [
        ("exp", 2.0),
        ("log", 2.0),
        ("log10", 2.0),
        ("pow, |b| < 4", 2.0),
        ("pow, integer b", 8.0),
        ("pow, any b", 8.0),
    ] {
        let e = worst[name].0;
        assert!(e <= limit, "{name}: {e} ulp");
    }
}

/// Evaluates the outputs of a model with one parameter `x` and one state through the generated
/// code on the adapter, for each x of `xs` (in f32 when `f32`): the outputs' values per point.
fn outputs_on_adapter(
    gpu: &vpop::backend::wgpu::Gpu,
    outputs: &str,
    xs: &[f64],
    f32: bool,
) -> Vec<Vec<f64>> {
    let text = format!("param x = 1\nstate s\nd/dt(s) = 0\n{outputs}");
    let m = Model::parse("outputs.vpm", &text).unwrap();
    let no = m.outputs.len();
    let progs = ModelPrograms::new(&m);
    let n = xs.len();
    // rhs, Jacobian, ∂f/∂t (one each), the outputs, their Jacobians (one each).
    let width = 3 + 2 * no;
    let got: Vec<f64> = if f32 {
        let xs: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        gpu.eval_model_f32(&progs, &vec![1.0; n], &xs, &vec![0.0; n])
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    } else {
        gpu.eval_model_f64(&progs, &vec![1.0; n], xs, &vec![0.0; n])
            .unwrap()
    };
    (0..n)
        .map(|i| got[i * width + 3..i * width + 3 + no].to_vec())
        .collect()
}

/// As [`outputs_on_adapter`] for a model with two outputs: a pair per point.
fn two_outputs_on_adapter(
    gpu: &vpop::backend::wgpu::Gpu,
    outputs: &str,
    xs: &[f64],
    f32: bool,
) -> Vec<(f64, f64)> {
    outputs_on_adapter(gpu, outputs, xs, f32)
        .into_iter()
        .map(|o| (o[0], o[1]))
        .collect()
}

/// Evaluates `sin(x)` and `cos(x)` through the generated code of a model on the adapter, for
/// each x of `xs` (in f32 when `f32`): (sin, cos) per point.
fn sin_cos_on_adapter(gpu: &vpop::backend::wgpu::Gpu, xs: &[f64], f32: bool) -> Vec<(f64, f64)> {
    two_outputs_on_adapter(gpu, "output sn = sin(x)\noutput cs = cos(x)\n", xs, f32)
}

/// `expit` and `logit` on the adapter, in f32 and f64, against their formulas in f64: close
/// to the formulas' rounding in the middle, and exactly 0, 1 and ±∞ where the formulas
/// saturate (exp overflowing, 1 + exp(−x) rounding to 1, logit of 0 and 1).
#[test]
fn expit_and_logit_saturate_and_agree_on_an_adapter() {
    let expit = |x: f64| 1.0 / (1.0 + (-x).exp());
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let mut rng = SmallRng::seed_from_u64(41);
    let mut xs: Vec<f64> = vec![0.0, 1.0, 0.5, 1e-30, 1.0 - 1e-7];
    xs.extend((0..2000).map(|_| rng.random_range(-30.0..30.0)));
    xs.extend((0..2000).map(|_| rng.random_range(0.0..1.0)));
    for f32 in [true, false] {
        let gpu = match vpop::backend::wgpu::Gpu::new(!f32) {
            Ok(g) => g,
            Err(e) => {
                println!("SKIPPED: {e}");
                continue;
            }
        };
        let round = |x: f64| if f32 { x as f32 as f64 } else { x };
        let outputs = "output e = expit(x)\noutput l = logit(x)\n";
        let (mut worst_e, mut worst_l) = (0f64, 0f64);
        let xs: Vec<f64> = xs.iter().map(|&x| round(x)).collect();
        for (&x, (e, l)) in xs
            .iter()
            .zip(two_outputs_on_adapter(&gpu, outputs, &xs, f32))
        {
            // Relative to the result, with an absolute floor for the tails and near logit's
            // zero at 1/2 (where log of a ratio near 1 is small).
            let (want_e, want_l) = (expit(x), logit(x));
            worst_e = worst_e.max((e - want_e).abs() / want_e.max(1e-6));
            if (0.0..1.0).contains(&x) && x > 0.0 {
                worst_l = worst_l.max((l - want_l).abs() / want_l.abs().max(1.0));
            }
        }
        let eps = if f32 {
            f64::from(f32::EPSILON)
        } else {
            f64::EPSILON
        };
        println!(
            "{}: expit worst {:.2} ulp, logit worst {:.2} ulp",
            if f32 { "f32" } else { "f64" },
            worst_e / eps,
            worst_l / eps
        );
        // In f32 the builtin exp's error dominates (Vulkan bounds it by 3 + 2·|x| ulps; on
        // lavapipe 7.1 ulp of expit over |x| < 30); in f64 the kernels' own exp64.
        let limit = if f32 { 16.0 } else { 4.0 };
        assert!(worst_e <= limit * eps, "expit: {:.2} ulp", worst_e / eps);
        assert!(worst_l <= 4.0 * eps, "logit: {:.2} ulp", worst_l / eps);
        // Saturation: exp(−x) overflows (f32 beyond 88.7, f64 beyond 709.8) and 1 + exp(−x)
        // rounds to 1 (f32 beyond 16.7, f64 beyond 36.8).
        let (low, high) = if f32 { (-100.0, 20.0) } else { (-800.0, 40.0) };
        let ends = [low, high, 0.0, 1.0];
        let got = two_outputs_on_adapter(&gpu, outputs, &ends, f32);
        assert_eq!(got[0].0, 0.0, "expit({low})");
        assert_eq!(got[1].0, 1.0, "expit({high})");
        assert_eq!(got[2].1, f64::NEG_INFINITY, "logit(0)");
        assert_eq!(got[3].1, f64::INFINITY, "logit(1)");
    }
}

/// Arguments for the sin and cos tests, by class: uniform in (−r, r) for each r of `ranges`,
/// log-uniform magnitudes from 1e-8 to `max`, and the nearest numbers to k·π/2 for k up to
/// `k_max` (where one of the two is near zero and the reduction's accuracy shows), each
/// rounded to f32 when `f32`.
fn trig_points(ranges: &[f64], max: f64, k_max: u32, f32: bool) -> Vec<(String, f64)> {
    let mut rng = SmallRng::seed_from_u64(29);
    let round = |x: f64| if f32 { x as f32 as f64 } else { x };
    let mut points = Vec::new();
    for _ in 0..(1 << 12) {
        for &r in ranges {
            points.push((format!("|x| < {r}"), round(rng.random_range(-r..r))));
        }
        let mag = 10f64.powf(rng.random_range(-8.0..max.log10()));
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        points.push((format!("1e-8 < |x| < {max:e}"), round(sign * mag)));
        let k = rng.random_range(1..=k_max);
        points.push((
            format!("x ≈ k·π/2, k ≤ {k_max}"),
            round(f64::from(k) * std::f64::consts::FRAC_PI_2),
        ));
    }
    points
}

/// The f64 sin and cos of the WGSL kernels (shaders/real_f64.wgsl, fdlibm's reduction and
/// kernels) against Rust's on an adapter with SHADER_F64: NaN for ±∞ and NaN, ±0 and tiny
/// arguments exact, and within 2 ulps over |x| < 1.6e6, near multiples of π/2 included.
#[test]
fn f64_sin_cos_are_accurate_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(true) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let specials = [
        0.0,
        -0.0,
        5e-324,
        -1e-300,
        1e-9,
        std::f64::consts::FRAC_PI_4,
        -std::f64::consts::FRAC_PI_2,
        std::f64::consts::PI,
        1e5,
        1.6e6,
    ];
    let got = sin_cos_on_adapter(&gpu, &specials, false);
    for (&x, &(s, c)) in specials.iter().zip(&got) {
        assert!(
            ulps(s, x.sin()) <= 1.0,
            "sin({x:e}) = {s:e}, want {:e}",
            x.sin()
        );
        assert!(
            ulps(c, x.cos()) <= 1.0,
            "cos({x:e}) = {c:e}, want {:e}",
            x.cos()
        );
        if x == 0.0 {
            assert_eq!(s.to_bits(), x.to_bits(), "sin(±0) keeps its sign");
        }
    }
    let odd = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
    for (x, (s, c)) in odd.iter().zip(sin_cos_on_adapter(&gpu, &odd, false)) {
        assert!(s.is_nan() && c.is_nan(), "sin, cos of {x}: {s}, {c}");
    }
    let points = trig_points(&[4.0, 1000.0], 1.6e6, 1_000_000, false);
    let xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    let got = sin_cos_on_adapter(&gpu, &xs, false);
    let mut worst: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for ((class, x), (s, c)) in points.iter().zip(got) {
        let e = ulps(s, x.sin()).max(ulps(c, x.cos()));
        let w = worst.entry(class.clone()).or_insert((0.0, 0.0));
        if e > w.0 {
            *w = (e, *x);
        }
    }
    for (class, (e, x)) in &worst {
        println!("sin, cos, {class}: worst {e:.2} ulp (x {x:e})");
        assert!(*e <= 2.0, "{class}: {e} ulp at x = {x:e}");
    }
    // Beyond the reduction's range: how the error grows (reported, not a promise).
    let far = [1e7, 1e9, 1e12];
    for (x, (s, _)) in far.iter().zip(sin_cos_on_adapter(&gpu, &far, false)) {
        println!("sin({x:e}): absolute error {:.1e}", (s - x.sin()).abs());
    }
}

/// The f32 sin and cos of the WGSL kernels (shaders/real_f32.wgsl: Cephes's reduction and
/// polynomials, not the builtins) against the f64 functions of the same f32 arguments, up to
/// Cephes's bound |x| < 8192: within 2 f32 ulps of the result, except near multiples of π/2
/// where the result is small, and everywhere an absolute error below 2^-23·max(|x|, 1).
#[test]
fn f32_sin_cos_are_accurate_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(false) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let odd = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
    for (x, (s, c)) in odd.iter().zip(sin_cos_on_adapter(&gpu, &odd, true)) {
        assert!(s.is_nan() && c.is_nan(), "sin, cos of {x}: {s}, {c}");
    }
    let points = trig_points(&[4.0, 100.0, 8192.0], 8192.0, 5000, true);
    let xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    let got = sin_cos_on_adapter(&gpu, &xs, true);
    let ulp32 = |g: f64, w: f64| (g - w).abs() / (w.abs() * f64::from(f32::EPSILON)).max(1e-45);
    let mut worst: std::collections::BTreeMap<String, (f64, f64, f64)> = Default::default();
    for ((class, x), (s, c)) in points.iter().zip(got) {
        let rel = ulp32(s, x.sin()).max(ulp32(c, x.cos()));
        let abs = (s - x.sin()).abs().max((c - x.cos()).abs());
        let w = worst.entry(class.clone()).or_insert((0.0, 0.0, 0.0));
        w.0 = w.0.max(rel);
        w.1 = w.1.max(abs / x.abs().max(1.0));
        if abs > 2f64.powi(-23) * x.abs().max(1.0) {
            w.2 = *x;
        }
    }
    for (class, (rel, abs, bad)) in &worst {
        println!("f32 sin, cos, {class}: worst {rel:.2} ulp, absolute error {abs:.2e}·max(|x|, 1)");
        assert_eq!(
            *bad, 0.0,
            "{class}: absolute error above 2^-23·max(|x|, 1) at x = {bad:e}"
        );
        // Near a multiple of π/2 the result is small and the reduction's absolute error
        // (f32 arithmetic) is many of its ulps.
        if !class.starts_with("x ≈") {
            assert!(*rel <= 2.0, "{class}: {rel} ulp");
        }
    }
}

/// A model's outputs: tanh, atan, erf, erfc, floor and ceil of its parameter `x`.
const TANH_ATAN_ERF: &str = "output th = tanh(x)\noutput at = atan(x)\noutput ef = erf(x)\n\
                             output ec = erfc(x)\noutput fl = floor(x)\noutput ce = ceil(x)\n";
const TANH_ATAN_ERF_NAMES: [&str; 6] = ["tanh", "atan", "erf", "erfc", "floor", "ceil"];

/// The references for [`TANH_ATAN_ERF`]: Rust's tanh, atan, floor and ceil, the `libm` crate's
/// erf and erfc (fdlibm's).
fn tanh_atan_erf_reference(x: f64) -> [f64; 6] {
    [
        x.tanh(),
        x.atan(),
        libm::erf(x),
        libm::erfc(x),
        x.floor(),
        x.ceil(),
    ]
}

/// The generated code of a model with tanh, atan, erf, erfc, floor and ceil is valid WGSL in
/// both precisions and calls the kernels' own functions (shaders/real_f32.wgsl,
/// shaders/real_f64.wgsl), never the builtins `tanh` and `atan` (Vulkan bounds their f32 error
/// only loosely and has no f64 ones), nor in f64 the builtin `exp`.
#[test]
fn tanh_atan_erf_code_validates_and_calls_no_builtins() {
    let text = format!("param x = 1\nstate s\nd/dt(s) = 0\n{TANH_ATAN_ERF}");
    let m = Model::parse("outputs.vpm", &text).unwrap();
    let progs = ModelPrograms::new(&m);
    for p in [Precision::F32, Precision::F64] {
        let src = model_eval_source(&progs, p).unwrap();
        if let Err(e) = validate(&src, p == Precision::F64) {
            panic!("{p:?}:\n{e}");
        }
        // The code without its comments (which name atan(t) and the like).
        let src: String = src
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        // Calls from generated code (`let r3: f32 = tanh_r(r2);`, or in model_prepare, as
        // here, where x is a parameter: `let g_3: f32 = tanh_r(g_2);`).
        for own in [
            "= tanh_r(",
            "= atan_r(",
            "= erf_r(",
            "= erfc_r(",
            "= floor_r(",
            "= ceil_r(",
        ] {
            assert!(src.contains(own), "{p:?}: no call {own}…");
        }
        let builtins: &[&str] = match p {
            Precision::F32 => &["tanh(", "atan("],
            Precision::F64 => &["tanh(", "atan(", "exp("],
        };
        for builtin in builtins {
            let called = src.match_indices(builtin).any(|(i, _)| {
                i == 0
                    || !(src.as_bytes()[i - 1].is_ascii_alphanumeric()
                        || src.as_bytes()[i - 1] == b'_')
            });
            assert!(!called, "{p:?}: calls the builtin {builtin}");
        }
    }
}

/// erf and erfc at a few points, independent of `libm`: computed with mpmath 1.3 at 50 digits
/// and rounded to f64 (x, erf x, erfc x).
const ERF_ERFC_MPMATH: [(f64, f64, f64); 26] = [
    (1e-300, 1.1283791670955126e-300, 1.0),
    (1e-10, 1.1283791670955126e-10, 0.999999999887162),
    (0.1, 0.1124629160182849, 0.887537083981715),
    (0.25, 0.27632639016823696, 0.7236736098317631),
    (0.5, 0.5204998778130465, 0.4795001221869535),
    (0.8, 0.7421009647076605, 0.2578990352923395),
    (0.84375, 0.7672256612323416, 0.23277433876765838),
    (0.9, 0.7969082124228322, 0.20309178757716786),
    (1.0, 0.8427007929497149, 0.15729920705028513),
    (1.25, 0.9229001282564583, 0.07709987174354177),
    (1.5, 0.9661051464753108, 0.033894853524689274),
    (2.0, 0.9953222650189527, 0.004677734981047266),
    (
        2.857142857142857,
        0.9999466876886117,
        5.3312311388322795e-05,
    ),
    (3.0, 0.9999779095030014, 2.209049699858544e-05),
    (4.5, 0.9999999998033839, 1.9661604415428876e-10),
    (5.9, 0.9999999999999999, 7.190409783550478e-17),
    (8.0, 1.0, 1.1224297172982926e-29),
    (10.0, 1.0, 2.088487583762545e-45),
    (15.0, 1.0, 7.212994172451207e-100),
    (20.0, 1.0, 5.395865611607901e-176),
    (25.0, 1.0, 8.300172571196523e-274),
    (26.5, 1.0, 2.2109076642637343e-307),
    (27.0, 1.0, 5.23705e-319),
    (-0.3, -0.3286267594591274, 1.3286267594591274),
    (-1.0, -0.8427007929497149, 1.8427007929497148),
    (-3.0, -0.9999779095030014, 1.9999779095030015),
];

/// The same value: equal bits (so ±0 apart), or both NaN.
fn same_value(got: f64, want: f64) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

/// Random arguments for the tanh, atan, erf and erfc tests, by class: uniform in (−1, 1),
/// (−6, 6) and (−r, r), erfc's tail from `tail.0` to `tail.1` (where its result is still
/// normal) and log-uniform magnitudes from 10^−`decades` to 10^`decades`; each rounded to f32
/// when `f32`.
fn tanh_atan_erf_points(r: f64, tail: (f64, f64), decades: i32, f32: bool) -> Vec<(String, f64)> {
    let mut rng = SmallRng::seed_from_u64(43);
    let round = |x: f64| if f32 { x as f32 as f64 } else { x };
    let mut points = Vec::new();
    for _ in 0..(1 << 13) {
        for r in [1.0, 6.0, r] {
            points.push((format!("|x| < {r}"), round(rng.random_range(-r..r))));
        }
        points.push((
            format!("x in [{}, {}]", tail.0, tail.1),
            round(rng.random_range(tail.0..tail.1)),
        ));
        let d = f64::from(decades);
        let mag = 10f64.powf(rng.random_range(-d..d));
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        points.push((
            format!("1e-{decades} < |x| < 1e{decades}"),
            round(sign * mag),
        ));
    }
    points
}

/// The f64 tanh, atan, erf, erfc, floor and ceil of the WGSL kernels (shaders/real_f64.wgsl:
/// Cephes's tanh, fdlibm's atan, erf and erfc) against Rust's and `libm`'s on an adapter with
/// SHADER_F64, and erf and erfc against mpmath's values: ±0, ±∞, NaN, saturation (±1, 0, 2)
/// and floor and ceil exactly as IEEE's, tanh, atan and erf within 2 ulps, erfc within 4
/// (relative where its result is normal, in units of the least subnormal beyond), over the
/// whole range.
#[test]
fn f64_tanh_atan_erf_are_accurate_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(true) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let limits = [2.0, 2.0, 2.0, 4.0];
    let specials = [
        0.0,
        -0.0,
        5e-324,
        -1e-310,
        1e-300,
        1e-9,
        0.4375,
        0.5,
        -0.5,
        0.625,
        -0.625,
        0.6875,
        1.0,
        -1.0,
        1.1875,
        2.4375,
        2.5,
        -2.5,
        6.0,
        -6.0,
        8.0,
        19.1,
        22.0,
        26.5,
        27.2,
        27.3,
        28.0,
        -28.0,
        30.0,
        -30.0,
        1e20,
        -1e300,
        f64::MAX,
        4503599627370495.5,
        -4503599627370495.5,
        4503599627370497.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let got = outputs_on_adapter(&gpu, TANH_ATAN_ERF, &specials, false);
    for (&x, o) in specials.iter().zip(&got) {
        let want = tanh_atan_erf_reference(x);
        for k in 0..6 {
            let name = TANH_ATAN_ERF_NAMES[k];
            // Exactly: floor and ceil, NaN, the signs of zeros, the limits at ±∞ and
            // saturation (tanh and erf ±1, erfc 0 and 2 from |x| = 28).
            let exact = k >= 4 || x.is_nan() || x == 0.0 || x.is_infinite() || x.abs() >= 28.0;
            if exact && !(k == 1 && x.is_finite()) {
                assert!(
                    same_value(o[k], want[k]),
                    "{name}({x:e}) = {:e}, want {:e}",
                    o[k],
                    want[k]
                );
            } else {
                assert!(
                    ulps(o[k], want[k]) <= limits[k],
                    "{name}({x:e}) = {:e}, want {:e}",
                    o[k],
                    want[k]
                );
            }
        }
    }
    // Against mpmath's values (independent of libm, whose method is the kernels' own).
    let xs: Vec<f64> = ERF_ERFC_MPMATH.iter().map(|p| p.0).collect();
    let got = outputs_on_adapter(&gpu, TANH_ATAN_ERF, &xs, false);
    for (&(x, erf, erfc), o) in ERF_ERFC_MPMATH.iter().zip(&got) {
        let (e, c) = (ulps(o[2], erf), ulps(o[3], erfc));
        println!("mpmath: erf({x:e}) {e:.2} ulp, erfc({x:e}) {c:.2} ulp");
        assert!(e <= limits[2], "erf({x:e}) = {:e}, want {erf:e}", o[2]);
        assert!(c <= limits[3], "erfc({x:e}) = {:e}, want {erfc:e}", o[3]);
    }
    let points = tanh_atan_erf_points(30.0, (6.0, 26.5), 300, false);
    let xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    let got = outputs_on_adapter(&gpu, TANH_ATAN_ERF, &xs, false);
    let mut worst: std::collections::BTreeMap<(usize, String), (f64, f64)> = Default::default();
    for ((class, x), o) in points.iter().zip(&got) {
        let want = tanh_atan_erf_reference(*x);
        for k in 0..4 {
            let e = ulps(o[k], want[k]);
            let w = worst.entry((k, class.clone())).or_insert((0.0, 0.0));
            if e > w.0 {
                *w = (e, *x);
            }
        }
        for k in 4..6 {
            assert!(
                same_value(o[k], want[k]),
                "{}({x:e}) = {:e}, want {:e}",
                TANH_ATAN_ERF_NAMES[k],
                o[k],
                want[k]
            );
        }
    }
    for ((k, class), (e, x)) in &worst {
        let name = TANH_ATAN_ERF_NAMES[*k];
        println!("{name}, {class}: worst {e:.2} ulp (x {x:e})");
    }
    for ((k, class), (e, x)) in &worst {
        let name = TANH_ATAN_ERF_NAMES[*k];
        assert!(*e <= limits[*k], "{name}, {class}: {e} ulp at x = {x:e}");
    }
}

/// The f32 tanh, atan, erf, erfc, floor and ceil of the WGSL kernels (shaders/real_f32.wgsl:
/// Cephes's single-precision functions with their own exp, not the builtins) against the f64
/// functions of the same f32 arguments: ±0, ±∞, NaN, saturation (±1, 0, 2) and floor and ceil
/// exactly, tanh, atan and erf within 4 f32 ulps, erfc within 6 where its result is a normal
/// f32 (below that, within 2^-126: adapters may flush subnormals). f32 subnormal arguments are
/// left out for the same reason.
#[test]
fn f32_tanh_atan_erf_are_accurate_on_an_adapter() {
    let gpu = match vpop::backend::wgpu::Gpu::new(false) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    // erfc's bound: 6.10 ulps just below 1 when it was 1 − erf there.
    let limits = [4.0, 4.0, 4.0, 6.0];
    let tiny = f64::from(f32::MIN_POSITIVE);
    // Relative error in units of 2^-23, or 0 when both are the same non-finite value or NaN;
    // results below f32's normal range count as exact within 2^-126.
    let ulps32 = |got: f64, want: f64| {
        if same_value(got, want) || (got == want) {
            0.0
        } else if !got.is_finite() || !want.is_finite() {
            f64::INFINITY
        } else if want.abs() < tiny {
            if (got - want).abs() <= tiny {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (got - want).abs() / (want.abs() * f64::from(f32::EPSILON))
        }
    };
    let specials: Vec<f64> = [
        0.0,
        -0.0,
        1e-30,
        1e-6,
        0.41421356,
        0.5,
        -0.5,
        0.625,
        -0.625,
        1.0,
        -1.0,
        2.0,
        2.4142137,
        2.5,
        -2.5,
        4.0,
        -4.0,
        9.1,
        10.1,
        -10.1,
        12.0,
        8388607.5,
        -8388607.5,
        8388609.0,
        1e30,
        f64::from(f32::MAX),
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]
    .iter()
    .map(|&x: &f64| x as f32 as f64)
    .collect();
    let got = outputs_on_adapter(&gpu, TANH_ATAN_ERF, &specials, true);
    for (&x, o) in specials.iter().zip(&got) {
        let want = tanh_atan_erf_reference(x);
        for k in 0..6 {
            let name = TANH_ATAN_ERF_NAMES[k];
            // Exactly (the f64 reference rounded to f32): floor and ceil, NaN, the signs of
            // zeros, the limits at ±∞ and saturation (tanh and erf ±1, erfc 0 and 2 from
            // |x| = 10.1).
            let exact = k >= 4 || x.is_nan() || x == 0.0 || x.is_infinite() || x.abs() >= 10.1;
            if exact && !(k == 1 && x.is_finite()) {
                let want = want[k] as f32 as f64;
                assert!(
                    same_value(o[k], want),
                    "f32 {name}({x:e}) = {:e}, want {want:e}",
                    o[k],
                );
            } else {
                assert!(
                    ulps32(o[k], want[k]) <= limits[k],
                    "f32 {name}({x:e}) = {:e}, want {:e}",
                    o[k],
                    want[k]
                );
            }
        }
    }
    let points = tanh_atan_erf_points(12.0, (4.0, 9.1), 30, true);
    let xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    let got = outputs_on_adapter(&gpu, TANH_ATAN_ERF, &xs, true);
    let mut worst: std::collections::BTreeMap<(usize, String), (f64, f64)> = Default::default();
    for ((class, x), o) in points.iter().zip(&got) {
        let want = tanh_atan_erf_reference(*x);
        for k in 0..4 {
            let e = ulps32(o[k], want[k]);
            let w = worst.entry((k, class.clone())).or_insert((0.0, 0.0));
            if e > w.0 {
                *w = (e, *x);
            }
        }
        for k in 4..6 {
            assert!(
                same_value(o[k], want[k]),
                "f32 {}({x:e}) = {:e}, want {:e}",
                TANH_ATAN_ERF_NAMES[k],
                o[k],
                want[k]
            );
        }
    }
    for ((k, class), (e, x)) in &worst {
        let name = TANH_ATAN_ERF_NAMES[*k];
        println!("f32 {name}, {class}: worst {e:.2} ulp (x {x:e})");
    }
    for ((k, class), (e, x)) in &worst {
        let name = TANH_ATAN_ERF_NAMES[*k];
        assert!(
            *e <= limits[*k],
            "f32 {name}, {class}: {e} ulp at x = {x:e}"
        );
    }
}
