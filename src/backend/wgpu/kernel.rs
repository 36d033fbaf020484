//! The WGSL integrator kernel's source for a model, a method, an arm's metrics and a
//! precision (the arm data it reads is built in `crate::backend::gpu`); the wgpu runtime in
//! `mod.rs` uploads and dispatches. One template serves f32 and f64, as for CUDA: its scalar
//! type `real` is replaced by `f32` or `f64`, and the precision's helpers (`finite`, `nan`,
//! `pow_r`, and in f64 the kernel's own exp, log, log10 and pow) are filled in.

use crate::backend::gpu::Driver;
pub use crate::backend::gpu::{arm_data, ArmData, KernelSizes};
use crate::backend::stepgen::{step_code, Lang, StepCode};
use crate::backend::Precision;
use crate::metrics::{quadrature_outputs, MetricSpec};
use crate::model::switches::Switches;
use crate::model::ModelPrograms;
use crate::solver::tableau::TABLEAUS_WGSL;
use crate::solver::Method;

use super::codegen;

/// The integrator template.
pub const INTEGRATE_WGSL: &str = include_str!("../../../shaders/integrate.wgsl");
/// Its driver through an arm's dosing schedule.
pub const ARM_DRIVER_WGSL: &str = include_str!("../../../shaders/arm_driver.wgsl");
/// Its driver through a dataset subject's record program.
pub const RECORDS_DRIVER_WGSL: &str = include_str!("../../../shaders/records_driver.wgsl");

/// Counters kept per subject between dispatches by the arm driver (the last two: an
/// integration's switches held, let go or none under way, and the changes it located).
pub const CARRY_U: usize = 10;
/// … and by the records driver.
pub const RECORDS_CARRY_U: usize = 17;

/// Floating-point values the records driver keeps per subject between dispatches, with `nsw`
/// switches located (their modes, in an integration a dispatch suspended).
pub fn records_carry_f(z: &KernelSizes, nsw: usize) -> usize {
    2 * z.ny() + 4 * z.ns + nsw + 9
}

/// Machine epsilon and the end-of-segment snap of each precision (as in the CUDA kernel).
fn eps_snap(p: Precision) -> (f64, f64) {
    match p {
        Precision::F32 => (
            f64::from(f32::EPSILON),
            crate::solver::tableau_data::SNAP_F32,
        ),
        Precision::F64 => (f64::EPSILON, crate::solver::tableau_data::SNAP_F64),
    }
}

/// The full WGSL source of the integrator kernel for an arm's metrics (their number, kinds and
/// outputs, and which outputs get an AUC quadrature, are compiled in; windows and thresholds
/// are read from the arm data), in precision `p` (f64 needs an adapter with `SHADER_F64`).
pub fn integrate_source(
    m: &ModelPrograms,
    method: Method,
    metrics: &[MetricSpec],
    p: Precision,
) -> Result<String, String> {
    source(
        m,
        method,
        metrics,
        Driver::Arm {
            ss: None,
            resets: false,
            occasions: false,
        },
        p,
        None,
    )
}

/// [`integrate_source`] for an arm that may start at steady state, have resets and switch
/// parameters between occasions: `driver` is `Driver::of_arm` of the arm (a `Driver::Arm`).
pub fn arm_source(
    m: &ModelPrograms,
    method: Method,
    metrics: &[MetricSpec],
    driver: Driver,
    p: Precision,
) -> Result<String, String> {
    source(m, method, metrics, driver, p, None)
}

/// [`arm_source`] locating the changes of `switches` (`events = "locate"`; none where `None`,
/// empty, or the method has fixed steps: `crate::backend::gpu::kernel_switches`).
pub fn arm_source_located(
    m: &ModelPrograms,
    method: Method,
    metrics: &[MetricSpec],
    driver: Driver,
    p: Precision,
    switches: Option<&Switches>,
) -> Result<String, String> {
    source(m, method, metrics, driver, p, switches)
}

/// Floating-point values and counters the arm driver keeps per subject between dispatches,
/// with `nsw` switches located (their modes, in an integration a dispatch suspended); a
/// steady-state start keeps its iteration too.
pub fn arm_carry(z: &KernelSizes, steady_state: bool, nsw: usize) -> (usize, usize) {
    if steady_state {
        (z.carry_f() + nsw + 2 * z.ns + 5, CARRY_U + 8)
    } else {
        (z.carry_f() + nsw, CARRY_U)
    }
}

/// The full WGSL source of the records kernel (a dataset subject's record program, see
/// `crate::backend::records::Program`) in precision `p`.
pub fn records_source(m: &ModelPrograms, method: Method, p: Precision) -> Result<String, String> {
    source(m, method, &[], Driver::Records, p, None)
}

/// [`records_source`] locating the changes of `switches`, as [`arm_source_located`].
pub fn records_source_located(
    m: &ModelPrograms,
    method: Method,
    p: Precision,
    switches: Option<&Switches>,
) -> Result<String, String> {
    source(m, method, &[], Driver::Records, p, switches)
}

/// `fn {name}(i: u32) -> u32` returning `values[i]` (0 without values), as a balanced tree of
/// selects on `i` (the last value past the end): its depth grows as log2 of the values, so
/// that hundreds of metrics or outputs stay within the WGSL parser's nesting limit (a chain
/// of 192 selects exceeded it).
fn index_function(name: &str, values: &[usize]) -> String {
    let tree = crate::backend::gpu::index_tree(values, &|lo, hi, m| {
        format!("select({lo}, {hi}, i >= {m}u)")
    });
    format!("fn {name}(i: u32) -> u32 {{ return {tree}; }}\n")
}

fn source(
    m: &ModelPrograms,
    method: Method,
    metrics: &[MetricSpec],
    driver: Driver,
    p: Precision,
    switches: Option<&Switches>,
) -> Result<String, String> {
    if let Some(x) = metrics.iter().find(|x| x.output >= m.n_outputs.max(1)) {
        return Err(format!(
            "metric {} reads output {} of a model with {}",
            x.column, x.output, m.n_outputs
        ));
    }
    // Switches located: the integration's programs read them from their modes; a steady
    // state's iterations (an arm's steady-state start, a record's SS) shift the time the model
    // reads, where it reads it: its programs read `t + q[T_SLOT]`.
    let switches = crate::backend::gpu::kernel_switches(switches, method);
    let kp = crate::backend::gpu::KernelPrograms::new(m, switches, driver);
    let (m, nsw, time_shift) = (&*kp.programs, kp.nsw, kp.time_shift);
    // W's factorisation, and the programs it is generated with (the Jacobian's structurally
    // nonzero entries alone where W is factorised sparsely).
    let (programs, w_code, lu_len) = crate::backend::wsparse::kernel_w(m, Lang::Wgsl);
    let m = &*programs;
    let z = KernelSizes::new(m, metrics);
    let ny = z.ny();
    let a = driver.arm_settings();
    // Stopping points of each subject's own: jumps in time that move with the parameters.
    let own_stops = driver != Driver::Records && m.time_jumps.moves_with_params();
    let (driver, (cw, cu)) = match driver {
        Driver::Records => (
            RECORDS_DRIVER_WGSL,
            (records_carry_f(&z, nsw), RECORDS_CARRY_U),
        ),
        Driver::Arm { ss, .. } => (ARM_DRIVER_WGSL, arm_carry(&z, ss.is_some(), nsw)),
    };
    // The parameters, then what model_prepare computes from them; with switches, their modes
    // and whether they are held, then the time shift (MODE_BASE: the first of these; 0 where
    // there are none, so that the code that reads them, never run, indexes within q).
    let q_len = crate::backend::hoist::q_len(m);
    let slots = crate::backend::gpu::QSlots::new(q_len, nsw, time_shift);
    let (mode_base, q_extra) = (slots.base, slots.extra);
    let sizes = format!(
        "const NS: u32 = {}u;\nconst NP: u32 = {}u;\nconst NO: u32 = {}u;\nconst NA: u32 = {}u;\n\
         const NY: u32 = {}u;\n\
         const NM: u32 = {}u;\nconst CW: u32 = {cw}u;\nconst CU: u32 = {cu}u;\n\
         const CW_ARM: u32 = {}u;\nconst CU_ARM: u32 = {CARRY_U}u;\nconst SS_START: bool = {};\n\
         const SS_ADMIN: u32 = {}u;\nconst SS_II: {} = {};\nconst HAS_RESETS: bool = {};\n\
         const HAS_OCCASIONS: bool = {};\nconst OWN_STOPS: bool = {own_stops};\n\
         const NSW: u32 = {nsw}u;\nconst MODE_BASE: u32 = {mode_base}u;\n\
         const MAX_EVENTS: u32 = {}u;\nconst SW_REACH: u32 = {}u;\n\
         const SLOW_STEPS: u32 = {}u;\nconst TIME_SHIFT: bool = {time_shift};\n\
         const T_SLOT: u32 = {}u;\n",
        z.ns,
        z.np,
        z.no,
        z.na,
        ny,
        z.nm,
        arm_carry(&z, false, nsw).0,
        a.ss_start,
        a.ss_admin,
        codegen::scalar(p),
        codegen::literal(a.ss_ii, p),
        a.resets,
        a.occasions,
        crate::solver::MAX_EVENTS,
        // The states the switches read: the dense output's components a change is looked for on.
        switches.map_or(0, |s| s.reach()),
        crate::solver::integrator::SLOW_STEPS,
        slots.time_index(),
    );
    // The output each AUC quadrature integrates, and the quadrature of an output that has one.
    let quad = quadrature_outputs(metrics);
    let slot_of: Vec<usize> = (0..z.no)
        .map(|k| crate::metrics::quadrature_slot(&quad, k))
        .collect();
    // Each metric's kind (its code in the arm data) and output.
    let (kinds, outputs) = crate::backend::gpu::metric_kinds_and_outputs(metrics);
    let sizes = format!(
        "{sizes}{}{}{}{}",
        index_function("quad_output", &quad),
        index_function("output_quad", &slot_of),
        index_function("metric_kind", &kinds),
        index_function("metric_output", &outputs)
    );
    // The jumps in time inside an arm's steady-state interval: the first stop after t, BIG
    // past the last.
    let ss_stops = crate::backend::gpu::ss_window_stops(m, &a, p);
    let next_ss_stop: String = ss_stops
        .iter()
        .map(|x| {
            let x = codegen::literal(*x, p);
            format!("    if (t < {x}) {{ return {x}; }}\n")
        })
        .collect();
    let sizes = format!(
        "{sizes}const N_SS_STOPS: u32 = {}u;\nfn next_ss_stop(t: {real}) -> {real} {{\n\
         {next_ss_stop}    return BIG;\n}}\n",
        ss_stops.len(),
        real = codegen::scalar(p)
    );
    let step = step_code(method, Lang::Wgsl, ny);
    let funcs = codegen::model_functions_q(m, p, q_extra);
    // The switches' values (a stub where there are none: WGSL has no conditional compilation).
    let none = crate::model::Program::default();
    let funcs = format!(
        "{funcs}\n{}\n{}",
        codegen::function(
            "model_switches",
            kp.switches.as_ref().map_or(&none, |s| &s.0),
            m.n_states,
            q_len + q_extra,
            p
        ),
        codegen::function(
            "model_switch_args",
            kp.switches.as_ref().map_or(&none, |s| &s.1),
            m.n_states,
            q_len + q_extra,
            p
        )
    );
    let lit = |v: usize| v.max(1).to_string();
    let s = crate::backend::gpu::search_settings(p);
    let (eps, snap) = eps_snap(p);
    let search = format!(
        "const EPS: real = {};\nconst SNAP: real = {};\nconst RATE_CANCEL: real = {};\n\
         const EXTREMUM_CGOLD: real = {};\nconst EXTREMUM_XTOL: real = {};\n\
         const EXTREMUM_ITERS: u32 = {}u;\n\
         const ROOT_ITERS: u32 = {}u;\nconst ROOT_RTOL: real = {};\n\
         const TMAX_TIE_EPS: real = {};",
        codegen::literal(eps, p),
        codegen::literal(snap, p),
        codegen::literal(p.rate_cancel(), p),
        codegen::literal(s.extremum_cgold, p),
        codegen::literal(s.extremum_xtol, p),
        s.extremum_iters,
        s.root_iters,
        codegen::literal(s.root_rtol, p),
        codegen::literal(crate::metrics::accumulate::TMAX_TIE_EPS, p)
    );
    let template = codegen::retype(&INTEGRATE_WGSL.replace("{{DRIVER}}", driver), p);
    let step = StepCode {
        decls: codegen::retype(&step.decls, p),
        code: codegen::retype(&step.code, p),
    };
    // Outputs affine in the states are searched on their quartic.
    // Outputs that depend on time directly have a ∂g/∂t term in their slopes.
    // The fractions of a step where located switches are compared (the CPU's EVENT_PROBES).
    let probes = crate::solver::integrator::EVENT_PROBES
        .iter()
        .enumerate()
        .rev()
        .fold(codegen::literal(0.0, p), |acc, (i, v)| {
            format!("select({acc}, {}, i == {i}u)", codegen::literal(*v, p))
        });
    let search = format!(
        "{search}\nconst N_PROBES: u32 = {}u;\nfn event_probe(i: u32) -> real {{ return {probes}; }}\n\
         const QUARTIC_ITERS: u32 = {}u;\n\
         fn output_affine(k: u32) -> bool {{ return {}; }}\n\
         const OUTPUTS_USE_TIME: bool = {};",
        crate::solver::integrator::EVENT_PROBES.len(),
        crate::metrics::accumulate::QUARTIC_ITERS,
        crate::backend::gpu::affine_condition(m),
        crate::backend::gpu::outputs_use_time(m)
    );
    // The quartic's constants: doubles (as the CPU reference's), rounded to real.
    let search = crate::metrics::accumulate::QUARTIC_CONSTANTS
        .iter()
        .fold(search, |acc, (name, v)| {
            acc + &format!("\nconst {name}: real = {};", codegen::literal(*v, p))
        });
    let search = codegen::retype(&search, p);
    codegen::fill(
        &template,
        &[
            ("W", &codegen::retype(&w_code, p)),
            ("SIZES", &sizes),
            ("SEARCH", &search),
            ("PRECISION", codegen::precision_helpers(p)),
            ("TABLEAUS", TABLEAUS_WGSL),
            ("MODEL", &funcs),
            ("STAGES", &step.decls),
            ("STEP", &step.code),
            // The parameters, then what model_prepare computes from them.
            ("N_NQ", &lit(q_len + q_extra)),
            ("N_NSW", &lit(nsw)),
            ("N_NS4", &lit(4 * m.n_states)),
            ("N_NS", &lit(z.ns)),
            ("N_NY", &lit(ny)),
            ("N_NSS", &lit(lu_len)),
            ("N_NOS", &lit(m.n_outputs * z.ns)),
            ("N_NM", &lit(z.nm)),
            ("N_NA", &lit(z.na)),
            ("N_NO", &lit(z.no)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metric;
    use crate::model::{library, Model};

    /// One value a driver's `save_carry` or `load_carry` moves: its buffer (`f` floats, `u`
    /// counters), its block (0, or 1: the steady-state start's), a loop over a size constant
    /// or a scalar at an offset, and the variable.
    #[derive(Debug, PartialEq)]
    struct Slot {
        buffer: char,
        block: u8,
        size: Result<String, usize>,
        var: String,
    }

    /// The slots of function `name` in a driver's source, read line by line.
    fn carry_slots(src: &str, name: &str) -> Vec<Slot> {
        let start = src.find(&format!("fn {name}() {{")).unwrap();
        let body = &src[start..start + src[start..].find("\n}\n").unwrap()];
        let between = |l: &str, a: &str, b: &str| -> String {
            let i = l.find(a).unwrap() + a.len();
            l[i..i + l[i..].find(b).unwrap()].to_string()
        };
        let offset = |l: &str, at: &str| -> usize {
            let rest = &l[l.find(at).unwrap() + at.len()..];
            match rest.strip_prefix(" + ") {
                Some(r) => r[..r.find('u').unwrap()].parse().unwrap(),
                None => 0,
            }
        };
        let (mut f_block, mut u_block) = (0, 0);
        let mut slots = Vec::new();
        for l in body.lines().map(str::trim) {
            if l.starts_with("o = sid * CW + CW_ARM") {
                f_block = 1;
            } else if l.starts_with("let v = sid * CU + CU_ARM") {
                u_block = 1;
            } else if l.starts_with("for (") && l.contains("carry[o]") {
                let var = if l.contains("{ carry[o] = ") {
                    between(l, "{ carry[o] = ", "[")
                } else {
                    between(l, "{ ", "[")
                };
                slots.push(Slot {
                    buffer: 'f',
                    block: f_block,
                    size: Ok(between(l, "< ", ";")),
                    var,
                });
            } else if let Some(at) = ["carry_u[u", "carry_u[v", "carry[o"]
                .into_iter()
                .find(|at| l.contains(at))
            {
                let var = if l.starts_with(at) {
                    between(l, "= ", ";")
                } else {
                    l[..l.find(" = ").unwrap()].to_string()
                };
                let (buffer, block) = if at == "carry[o" {
                    ('f', f_block)
                } else {
                    ('u', u_block)
                };
                slots.push(Slot {
                    buffer,
                    block,
                    size: Err(offset(l, at)),
                    var,
                });
            }
        }
        slots
    }

    /// The WGSL drivers' carry layouts agree with the sizes the host allocates and with each
    /// other: `load_carry` reads every value where `save_carry` wrote it, scalars at
    /// consecutive offsets, and each block holds as many values as `arm_carry` and
    /// `records_carry_f` count (with distinct sizes, so that a slot counted under the wrong
    /// size constant shows).
    #[test]
    fn carry_layouts_match_the_host_sizes() {
        let z = KernelSizes {
            ns: 3,
            np: 4,
            no: 1,
            nm: 7,
            na: 2,
        };
        // Switches located, a size of their own too.
        let nsw = 5;
        let value = |sym: &str| match sym {
            "NSW" => nsw,
            "NY" => z.ny(),
            "NS" => z.ns,
            "NM" => z.nm,
            "NA" => z.na,
            _ => panic!("unknown size {sym}"),
        };
        let count = |slots: &[Slot], buffer: char, block: u8| -> usize {
            let mut next = 0;
            let mut n = 0;
            for s in slots
                .iter()
                .filter(|s| s.buffer == buffer && s.block == block)
            {
                match &s.size {
                    Ok(sym) => n += value(sym),
                    Err(k) => {
                        assert_eq!(*k, next, "{} at offset {k}, expected {next}", s.var);
                        next += 1;
                        n += 1;
                    }
                }
            }
            n
        };
        let (arm_f, arm_u) = arm_carry(&z, false, nsw);
        let (ss_f, ss_u) = arm_carry(&z, true, nsw);
        for (src, f, u) in [
            (
                ARM_DRIVER_WGSL,
                vec![arm_f, ss_f - arm_f],
                vec![arm_u, ss_u - arm_u],
            ),
            (
                RECORDS_DRIVER_WGSL,
                vec![records_carry_f(&z, nsw)],
                vec![RECORDS_CARRY_U],
            ),
        ] {
            let save = carry_slots(src, "save_carry");
            let load = carry_slots(src, "load_carry");
            assert_eq!(save, load, "load_carry reads what save_carry writes");
            for (block, want) in f.iter().enumerate() {
                assert_eq!(
                    count(&save, 'f', block as u8),
                    *want,
                    "floats, block {block}"
                );
            }
            for (block, want) in u.iter().enumerate() {
                assert_eq!(
                    count(&save, 'u', block as u8),
                    *want,
                    "counters, block {block}"
                );
            }
        }
    }

    #[test]
    fn index_functions_are_select_trees() {
        assert_eq!(
            index_function("f", &[4, 7]),
            "fn f(i: u32) -> u32 { return select(4u, 7u, i >= 1u); }\n"
        );
        assert_eq!(
            index_function("f", &[4, 7, 9]),
            "fn f(i: u32) -> u32 { return select(4u, select(7u, 9u, i >= 2u), i >= 1u); }\n"
        );
        // Every value at its index, and nested no deeper than log2 of their count: 1 000
        // metrics are 10 selects deep.
        let values: Vec<usize> = (0..1000).map(|i| (i * 7) % 13).collect();
        let f = index_function("f", &values);
        let (mut depth, mut deepest) = (0i32, 0i32);
        for c in f.chars() {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            deepest = deepest.max(depth);
        }
        assert!(deepest <= 12, "{deepest}");
        let body = f.split("return ").nth(1).unwrap().trim_end_matches("; }\n");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(eval_select(body, i), *v, "{i}");
        }
        assert_eq!(
            index_function("f", &[]),
            "fn f(i: u32) -> u32 { return 0u; }\n"
        );
    }

    /// Evaluates an index function's body (`select(a, b, i >= m)` trees of literals) at `i`.
    fn eval_select(e: &str, i: usize) -> usize {
        let e = e.trim();
        let Some(inner) = e.strip_prefix("select(").and_then(|x| x.strip_suffix(')')) else {
            return e.trim_end_matches('u').parse().unwrap();
        };
        // The three arguments, split at the commas outside nested parentheses.
        let (mut depth, mut parts, mut start) = (0, Vec::new(), 0);
        for (j, c) in inner.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..j]);
                    start = j + 1;
                }
                _ => {}
            }
        }
        parts.push(&inner[start..]);
        let m: usize = parts[2]
            .trim()
            .trim_start_matches("i >= ")
            .trim_end_matches('u')
            .parse()
            .unwrap();
        eval_select(if i >= m { parts[1] } else { parts[0] }, i)
    }

    fn has_lines(src: &str, lines: &[&str]) -> bool {
        lines.iter().all(|l| src.lines().any(|x| x == *l))
    }

    /// Only outputs with an area metric get a quadrature: the extended state is the model's
    /// states and those, and the records kernel has none.
    #[test]
    fn quadratures_are_compiled_in_for_area_metrics_only() {
        let lm = library::get("effect_emax").unwrap();
        let m = Model::parse(lm.name, lm.source).unwrap();
        let progs = ModelPrograms::new(&m);
        let effect = m.outputs.iter().position(|o| o.name == "effect").unwrap();
        let spec = |k: usize, x: &str| MetricSpec::new(k, "o", Metric::parse(x).unwrap());
        let metrics = [
            spec(0, "cmax"),
            spec(effect, "auc"),
            spec(0, "time_above(1)"),
        ];
        let ns = m.states.len();
        let src = integrate_source(&progs, Method::Tsit5, &metrics, Precision::F32).unwrap();
        assert!(src.contains("const NA: u32 = 1u;"));
        assert!(src.contains(&format!("const NY: u32 = {}u;", ns + 1)));
        assert!(src.contains(&format!(
            "fn quad_output(i: u32) -> u32 {{ return {effect}u; }}"
        )));
        let src = records_source(&progs, Method::Rodas4, Precision::F64).unwrap();
        assert!(src.contains("const NA: u32 = 0u;"));
        assert!(src.contains(&format!("const NY: u32 = {ns}u;")));
        // Each metric's kind (as the arm data codes it) and output are compiled in.
        assert!(has_lines(
            &integrate_source(&progs, Method::Tsit5, &metrics, Precision::F32).unwrap(),
            &[
                "fn metric_kind(i: u32) -> u32 { return select(1u, select(0u, 6u, i >= 2u), i >= \
                 1u); }",
                &format!(
                    "fn metric_output(i: u32) -> u32 {{ return select(0u, select({effect}u, 0u, i \
                     >= 2u), i >= 1u); }}"
                ),
            ]
        ));
        let bad = [spec(m.outputs.len(), "auc")];
        assert!(integrate_source(&progs, Method::Tsit5, &bad, Precision::F32).is_err());
    }
}
