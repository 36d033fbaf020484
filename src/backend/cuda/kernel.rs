//! The CUDA integrator kernel's source for a model, a method, an arm's metrics and a precision
//! (the arm data it reads is built in `crate::backend::gpu`).

use std::fmt::Write;

use crate::backend::gpu::{metric_kinds_and_outputs, Driver, KernelSizes};
use crate::backend::stepgen::{step_code, Lang};
use crate::backend::Precision;
use crate::metrics::{quadrature_outputs, MetricSpec};
use crate::model::switches::Switches;
use crate::model::ModelPrograms;
use crate::solver::integrator::EVENT_PROBES;
use crate::solver::tableau::TABLEAUS_CUH;
use crate::solver::Method;

use super::codegen;

/// The integrator template.
pub const INTEGRATE_CU: &str = include_str!("../../../kernels/integrate.cu");
/// Its driver through an arm's dosing schedule.
pub const ARM_DRIVER_CU: &str = include_str!("../../../kernels/arm_driver.cu");
/// Its driver through a dataset subject's record program.
pub const RECORDS_DRIVER_CU: &str = include_str!("../../../kernels/records_driver.cu");

/// Counters written per subject: status, accepted, rejected, rhs evaluations, Jacobians.
pub const COUNTERS: usize = 5;

/// Wraps the bare decimal literals of generated step code in `(real)` casts, so that f32
/// kernels never compute in double (a literal like `0.5` is a double in C).
fn cast_literals(code: &str) -> String {
    let b = code.as_bytes();
    let mut out = String::with_capacity(code.len() + code.len() / 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if c.is_ascii_digit() && !prev_ident {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                i += 1;
                if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let lit = &code[start..i];
            if lit.contains('.') || lit.contains('e') {
                out.push_str(&format!("((real){lit})"));
            } else {
                out.push_str(lit);
            }
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

/// `metric_kind(mi)` and `metric_output(mi)`: each metric's kind code (as in the arm data) and
/// output; `quad_output(a)`: the output AUC quadrature `a` integrates
/// ([`quadrature_outputs`]); `metric_quad(mi)`: the quadrature an area metric reads; all as
/// compile-time constants of the kernel.
fn metric_table(metrics: &[MetricSpec]) -> String {
    let mut s = String::from(
        "// Kind (0 auc, 1 cmax, 2 tmax, 3 cmin, 4 cavg, 5 ctrough, 6 time above, 7 at) and\n\
         // output of each metric.\n",
    );
    let (kinds, outputs) = metric_kinds_and_outputs(metrics);
    let quad = quadrature_outputs(metrics);
    let slots: Vec<usize> = outputs
        .iter()
        .map(|&k| crate::metrics::quadrature_slot(&quad, k))
        .collect();
    s.push_str(
        "// The output each AUC quadrature integrates, and the quadrature of each metric's output\n\
         // (area metrics).\n",
    );
    for (name, values) in [
        ("metric_kind", kinds),
        ("metric_output", outputs),
        ("quad_output", quad),
        ("metric_quad", slots),
    ] {
        let _ = writeln!(
            s,
            "FI constexpr unsigned {name}(unsigned mi) {{ return {}; }}",
            crate::backend::gpu::index_tree(&values, &|lo, hi, m| format!(
                "(mi < {m}u ? {lo} : {hi})"
            ))
        );
    }
    s
}

/// `output_affine(k)`: whether output k is affine in the states (`ModelPrograms::affine_outputs`),
/// as a compile-time constant of the kernel.
fn affine_table(m: &ModelPrograms) -> String {
    format!(
        "// Outputs affine in the states: searched on their quartic.\n\
         FI constexpr bool output_affine(unsigned k) {{ return {}; }}\n\
         // Outputs that depend on time directly: a ∂g/∂t term in their slopes.\n\
         constexpr bool OUTPUTS_USE_TIME = {};\n",
        crate::backend::gpu::affine_condition(m),
        crate::backend::gpu::outputs_use_time(m)
    )
}

/// The full CUDA C source of the integrator kernel `integrate` for an arm's metrics (their
/// kinds and outputs are compiled in; windows and thresholds are read from the arm data).
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

/// [`arm_source`] locating the changes of `switches` (`events = "locate"`; none where
/// `None` or empty).
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

/// The full CUDA C source of the records kernel `integrate` (a dataset subject's record
/// program, see `crate::backend::records::Program`), in precision `p`.
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

fn source(
    m: &ModelPrograms,
    method: Method,
    metrics: &[MetricSpec],
    driver: Driver,
    p: Precision,
    switches: Option<&Switches>,
) -> Result<String, String> {
    // Switches located: the integration's programs read them from their modes; a steady
    // state's iterations (an arm's steady-state start, a record's SS) shift the time the model
    // reads, where it reads it: its programs read `t + q[T_SLOT]`.
    let switches = crate::backend::gpu::kernel_switches(switches, method);
    let kp = crate::backend::gpu::KernelPrograms::new(m, switches, driver);
    let (m, n_sw, time_shift) = (&*kp.programs, kp.nsw, kp.time_shift);
    let records = driver == Driver::Records;
    // Stopping points of each subject's own: jumps in time that move with the parameters.
    let own_stops = !records && m.time_jumps.moves_with_params();
    if let Some(x) = metrics.iter().find(|x| x.output >= m.n_outputs.max(1)) {
        return Err(format!(
            "metric {} reads output {} of a model with {}",
            x.column, x.output, m.n_outputs
        ));
    }
    // W's factorisation, and the programs it is generated with (the Jacobian's structurally
    // nonzero entries alone where W is factorised sparsely).
    let (programs, w_code, lu_len) = crate::backend::wsparse::kernel_w(m, Lang::Cuda);
    let m = &*programs;
    let z = KernelSizes::new(m, metrics);
    let ny = z.ny();
    // The parameters, then the values model_prepare computes from them, then the switches'
    // modes and whether they are held, then the time shift.
    let q_len = crate::backend::hoist::q_len(m);
    let slots = crate::backend::gpu::QSlots::new(q_len, n_sw, time_shift);
    let sizes = format!(
        "#define NLU {lu_len}\n#define NS {}\n#define NP {}\n#define NP1 {}\n#define NO {}\n#define NA {}\n#define NA1 {}\n\
         #define NY {}\n#define NM {}\n#define NM1 {}\n#define NS4 {}\n#define NOS {}\n\
         #define OBSERVE {}\n#define NSW {n_sw}\n#define MODE_BASE {q_len}\n#define MAX_EVENTS {}u\n\
         #define N_PROBES {}\n#define EVENT_PROBE(i) ({})\n#define SW_REACH {}\n\
         #define SLOW_STEPS {}u\n#define TIME_SHIFT {}\n#define T_SLOT {}\n",
        z.ns,
        z.np,
        (q_len + slots.extra).max(1),
        z.no,
        z.na,
        z.na.max(1),
        ny,
        z.nm,
        z.nm.max(1),
        (4 * m.n_states).max(1),
        (z.no * z.ns).max(1),
        u8::from(!records),
        crate::solver::MAX_EVENTS,
        EVENT_PROBES.len(),
        // The fractions of a step where the switches are compared (doubles, as the CPU's).
        EVENT_PROBES
            .iter()
            .enumerate()
            .rev()
            .fold(String::from("0.0"), |acc, (i, v)| format!("(i) == {i} ? {v:?} : {acc}")),
        // The states the switches read: the dense output's components a change is looked for on.
        switches.map_or(0, |s| s.reach()),
        crate::solver::integrator::SLOW_STEPS,
        u8::from(time_shift),
        slots.time_index(),
    );
    // The jumps in time inside an arm's steady-state interval: the first stop after t, BIG
    // past the last.
    let ss_stops = crate::backend::gpu::ss_window_stops(m, &driver.arm_settings(), p);
    let next_ss_stop = ss_stops.iter().rev().fold(String::from("BIG"), |acc, x| {
        let x = super::codegen::literal(*x, p);
        format!("((t) < {x} ? {x} : {acc})")
    });
    let sizes = format!(
        "{sizes}#define N_SS_STOPS {}\n#define NEXT_SS_STOP(t) ({next_ss_stop})\n",
        ss_stops.len()
    );
    let step = step_code(method, Lang::Cuda, ny);
    let real = super::codegen::real_type(p);
    let s = crate::backend::gpu::search_settings(p);
    let a = driver.arm_settings();
    let sizes = format!(
        "{sizes}#define EXTREMUM_CGOLD {:e}\n#define EXTREMUM_XTOL {:e}\n\
         #define EXTREMUM_ITERS {}\n#define ROOT_ITERS {}\n#define QUARTIC_ITERS {}\n\
         #define ROOT_RTOL {:e}\n#define SS_START {}\n#define SS_ADMIN {}u\n\
         #define SS_II ((real){:e})\n#define HAS_RESETS {}\n#define HAS_OCCASIONS {}\n\
         #define OWN_STOPS {}\n#define RATE_CANCEL ((real){:e})\n#define TMAX_TIE_EPS {:e}\n",
        s.extremum_cgold,
        s.extremum_xtol,
        s.extremum_iters,
        s.root_iters,
        crate::metrics::accumulate::QUARTIC_ITERS,
        s.root_rtol,
        u8::from(a.ss_start),
        a.ss_admin,
        a.ss_ii,
        u8::from(a.resets),
        u8::from(a.occasions),
        u8::from(own_stops),
        p.rate_cancel(),
        crate::metrics::accumulate::TMAX_TIE_EPS
    );
    // The quartic's constants: doubles (as the CPU reference's), rounded to real where used.
    let sizes: String = crate::metrics::accumulate::QUARTIC_CONSTANTS
        .iter()
        .fold(sizes, |acc, (name, v)| {
            acc + &format!("#define {name} {v:e}\n")
        });
    // Member functions of the per-subject struct: indent them.
    let code = cast_literals(&step.code);
    let (consts, funcs): (Vec<&str>, Vec<&str>) =
        code.lines().partition(|l| l.starts_with("#define"));
    let funcs: String = funcs
        .iter()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    let sizes = format!("{sizes}{}\n", consts.join("\n"));
    let driver = match driver {
        Driver::Records => RECORDS_DRIVER_CU,
        Driver::Arm { .. } => ARM_DRIVER_CU,
    };
    codegen_fill(
        INTEGRATE_CU,
        &[
            ("DRIVER", driver),
            ("W", &w_code),
            ("REAL", real),
            ("SIZES", &sizes),
            ("TABLEAUS", TABLEAUS_CUH),
            (
                "MODEL",
                &match &kp.switches {
                    Some((values, args)) => format!(
                        "{}\n{}\n{}",
                        codegen::model_functions(m, p),
                        codegen::function("model_switches", values, p),
                        codegen::function("model_switch_args", args, p)
                    ),
                    None => codegen::model_functions(m, p),
                },
            ),
            (
                "METRICS",
                &format!("{}{}", metric_table(metrics), affine_table(m)),
            ),
            ("STAGES", &step.decls),
            ("STEP", &funcs),
        ],
    )
}

fn codegen_fill(template: &str, slots: &[(&str, &str)]) -> Result<String, String> {
    crate::backend::wgpu::codegen::fill(template, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_kinds_and_outputs_are_compiled_in() {
        use crate::metrics::Metric;
        let metrics = [
            MetricSpec::new(1, "e", Metric::parse("tmax").unwrap()),
            MetricSpec::new(0, "cp", Metric::parse("time_above(2)").unwrap()),
        ];
        let t = metric_table(&metrics);
        assert!(t.contains("metric_kind(unsigned mi) { return (mi < 1u ? 2u : 6u); }"));
        assert!(t.contains("metric_output(unsigned mi) { return (mi < 1u ? 1u : 0u); }"));
        assert!(metric_table(&[]).contains("metric_kind(unsigned mi) { return 0u; }"));
        // No area metric: no quadrature.
        assert!(t.contains("quad_output(unsigned mi) { return 0u; }"));
        // Quadratures for outputs 1 and 2 only, each once, whatever reads them.
        let metrics = [
            MetricSpec::new(2, "c", Metric::parse("cavg(0, 24)").unwrap()),
            MetricSpec::new(0, "a", Metric::parse("cmax").unwrap()),
            MetricSpec::new(1, "b", Metric::parse("auc").unwrap()),
            MetricSpec::new(2, "c", Metric::parse("auc_last_interval").unwrap()),
        ];
        let t = metric_table(&metrics);
        assert!(t.contains("quad_output(unsigned mi) { return (mi < 1u ? 1u : 2u); }"));
        assert!(t.contains(
            "metric_quad(unsigned mi) { return (mi < 2u ? (mi < 1u ? 1u : 0u) : (mi < 3u ? 0u : \
             1u)); }"
        ));
    }

    #[test]
    fn a_metric_of_a_missing_output_is_an_error() {
        use crate::metrics::Metric;
        use crate::model::{library, Model};
        let lm = library::get("two_cmt_oral").unwrap();
        let progs = ModelPrograms::new(&Model::parse(lm.name, lm.source).unwrap());
        let bad = [MetricSpec::new(5, "x", Metric::parse("auc").unwrap())];
        let e = integrate_source(&progs, Method::Tsit5, &bad, Precision::F32).unwrap_err();
        assert!(e.contains("output 5"), "{e}");
    }

    #[test]
    fn decimal_literals_are_cast_and_names_are_not() {
        assert_eq!(
            cast_literals("x = 0.5 * h + RK4_C_1 * k1[j] + 2.0e-3 / 6"),
            "x = ((real)0.5) * h + RK4_C_1 * k1[j] + ((real)2.0e-3) / 6"
        );
    }
}
