// Integrates one virtual subject per invocation, in f32 or f64, with the same step control,
// dense-output metrics and status codes as the CPU f64 reference (src/backend/cpu.rs,
// src/solver/integrator.rs, src/metrics/accumulate.rs) and the CUDA kernel
// (kernels/integrate.cu). What the subject goes through is the driver's (slot DRIVER): an
// arm's dosing schedule (shaders/arm_driver.wgsl) or a dataset subject's records as a program
// (shaders/records_driver.wgsl).
//
// A dispatch does at most a budget of steps and stopping points per subject, so that no
// dispatch runs long enough to trip a desktop watchdog (or a software rasteriser's loop limit);
// a subject that runs out of budget is suspended, everything it needs to go on is kept in the
// carry buffers, it counts itself in `pending`, and the host dispatches again until none is.
//
// `real` stands for the scalar type, f32 or f64: src/backend/wgpu/kernel.rs replaces the word
// (a WGSL alias would make naga's array<real, N> a type apart from the model functions'
// array<f32, N>). Slots it fills: SIZES (NS, NP, NO, NA, NY, NM, the carry widths, the AUC
// quadratures' outputs: quad_output, output_quad, and each metric's kind and output:
// metric_kind, metric_output), SEARCH (the
// precision's machine epsilon, end-of-segment snap and metric search settings), PRECISION
// (shaders/real_f32.wgsl or real_f64.wgsl: finite, is_nan, nan, pow_r, exp_r, log_r, and in f64 the
// exp/log/log10/pow the model functions call), TABLEAUS (coefficients from build.rs), MODEL
// (generated model functions), STAGES and STEP (the method, from src/backend/stepgen.rs), and
// literal array sizes N_*. The driver defines accepted_step(t0, t1, h), called on every
// accepted step.
//
// `q` holds a subject's parameters (NP) and, after them, what the generated `model_prepare`
// computes from them alone: wherever the parameters are loaded, model_prepare follows. With
// switches located (NSW > 0, events = "locate"), their modes follow from MODE_BASE, then
// whether they are held; then, where the model reads its time and the kernel finds steady
// states (TIME_SHIFT), q[T_SLOT]: what the model's time is ahead of the integration's (N_NQ in
// all). A steady state's iterations integrate an interval from 0 that is, to the model, the
// one before the dose (the CPU reference's `WithQuadrature::t_shift`).

{{SIZES}}
{{TABLEAUS}}

// Largest finite f32, used as ±infinity in running extremes (in both precisions).
const BIG: real = 3.0e38;
// Steady states as in src/backend/records.rs (`SsIterations`), with its constants (SS_*, from
// src/solver/tableau_data.rs, where each rule is told): stop when the change still to come is
// below SS_FRACTION of the tolerance, or the change sits at the noise floor (SS_NOISE tolerance
// units) without shrinking (two ratios of changes at least SS_FLAT that are not a slow mode
// settling, SS_SETTLING) or for SS_NOISE_CYCLES intervals — unless a state moves by the same
// amount every interval (SS_TRANSLATION, SS_TRANSLATING) — or every state changed by round-off
// only (SS_ULPS ulps); a slow approach whose ratio has held steady (SS_STEADY of 1 − ρ), ρ from
// SS_JUMP up to SS_JUMP_MAX, jumps to the end of the geometric series of its changes.
// EPS: the precision's machine epsilon; SNAP: a step that ends within SNAP·span of a stopping
// point is stretched to it. The in-step searches (src/backend/gpu.rs search_settings): the
// extremum search's fraction of the step and iteration cap, the crossing iteration cap and
// bracket fraction, as far as the precision resolves.
{{SEARCH}}

struct Meta {
    n: u32,
    n_admin: u32,
    n_fixed: u32,
    n_times: u32,
    first_dispatch: u32,
    wants_extrema: u32,
    max_steps: u32,
    off_fixed: u32,
    off_times: u32,
    off_metrics: u32,
    step_budget: u32,
    stop_budget: u32,
    rtol: real,
    atol: real,
    dt: real,
    h_max: real,
    h_min_rel: real,
    end_time: real,
    trough: real,
    pad0: real,
}

// Model parameters, structure of arrays: parameter p of subject i at [p * n + i].
@group(0) @binding(0) var<storage, read> params: array<real>;
// Per-subject dose amount multiplier.
@group(0) @binding(1) var<storage, read> scale: array<real>;
// The arm: administrations (5 values each: nominal time, state, amount, kind, value), fixed
// stopping points, profile sample times, metric specs (6 values each).
@group(0) @binding(2) var<storage, read> arm: array<real>;
// Per-subject floating-point carry (CW values each) and counters (CU values each).
@group(0) @binding(3) var<storage, read_write> carry: array<real>;
@group(0) @binding(4) var<storage, read_write> carry_u: array<u32>;
// Metric m of subject i at [m * n + i].
@group(0) @binding(5) var<storage, read_write> metrics_out: array<real>;
// Output k of subject i at sample j at [(k * n + i) * n_times + j].
@group(0) @binding(6) var<storage, read_write> profiles: array<real>;
@group(0) @binding(7) var<uniform> meta_: Meta;
// Subjects suspended by this dispatch.
@group(0) @binding(8) var<storage, read_write> pending: atomic<u32>;

{{MODEL}}

// Per-subject state.
var<private> sid: u32;
var<private> q: array<real, {{N_NQ}}>;
var<private> subj_scale: real;
var<private> dose_v: array<real, {{N_NS4}}>;
var<private> rates: array<real, {{N_NS}}>;
var<private> y: array<real, {{N_NY}}>;
var<private> y1: array<real, {{N_NY}}>;
var<private> f0: array<real, {{N_NY}}>;
var<private> f1: array<real, {{N_NY}}>;
var<private> err: array<real, {{N_NY}}>;
var<private> tmp: array<real, {{N_NY}}>;
var<private> dense_v: array<real, {{N_NY}}>;
var<private> dfdt_v: array<real, {{N_NY}}>;
var<private> lu: array<real, {{N_NSS}}>;
var<private> piv: array<u32, {{N_NS}}>;
var<private> gq: array<real, {{N_NOS}}>;
var<private> w_si: real;
var<private> w_sj: real;
var<private> vals: array<real, {{N_NM}}>;
var<private> aux: array<real, {{N_NM}}>;
// The AUC quadratures' running totals up to the last stopping point (size_base).
var<private> qbase: array<real, {{N_NA}}>;
var<private> st_t0: real;
var<private> st_t1: real;
var<private> st_h: real;
// The left limit of the current segment's end (set before each accepted step), and of the last
// observed step its end and latest evaluation time: outputs read at a step's end, or at a
// sample or a stop there, are the left limit, before a jump in time at the stop (a window
// [a, b] sees the output up to b-; the CPU reference's MetricAccumulator alike).
var<private> st_tl: real;
// The start of the current segment (the last stopping point): Tmax's tie (tmax_moves).
var<private> seg_t0: real;
var<private> seg_t1: real;
var<private> seg_te: real;
var<private> h_prop: real;
var<private> ln_err_prev: real;
var<private> t_prev: real;
var<private> t_cur: real;
var<private> step_i: u32;
var<private> steps_left: u32;
var<private> stops_left: u32;
var<private> suspended: bool;
var<private> status: u32;
var<private> n_acc: u32;
var<private> n_rej: u32;
var<private> n_rhs: u32;
var<private> n_jac: u32;
var<private> next_sample: u32;
var<private> fs: u32;
// The current occasion of an arm whose parameters switch between occasions (HAS_OCCASIONS:
// q and dose_v are its own; shaders/arm_driver.wgsl); 0 otherwise.
var<private> occ: u32;
// Interior extremum of each output in the current step, where a metric needs it (observe).
var<private> imax_t: array<real, {{N_NO}}>;
var<private> imax_c: array<real, {{N_NO}}>;
var<private> imin_t: array<real, {{N_NO}}>;
var<private> imin_c: array<real, {{N_NO}}>;
// Per output, for the current step: quartic made (4).
var<private> ifound: array<u32, {{N_NO}}>;
// Per output: the step's quartic (an affine output), once made.
var<private> quart: array<array<real, 5>, {{N_NO}}>;
// Event location (NSW > 0): whether an integration is under way with its switches held (1),
// let go after MAX_EVENTS changes (2), or none is (0); the changes it located; the modes of a
// suspended one (the drivers carry these three); the switches' values just after a located
// change, and its time.
var<private> sw_phase: u32;
var<private> sw_events: u32;
var<private> sw_keep: array<real, {{N_NSW}}>;
var<private> sw_past: array<real, {{N_NSW}}>;
var<private> sw_at: real;

{{STAGES}}

{{PRECISION}}

fn all_finite(v: array<real, {{N_NY}}>) -> bool {
    var ok = true;
    for (var j = 0u; j < NY; j++) { ok = ok && finite(v[j]); }
    return ok;
}

fn model_part(v: array<real, {{N_NY}}>) -> array<real, {{N_NS}}> {
    var ys: array<real, {{N_NS}}>;
    for (var j = 0u; j < NS; j++) { ys[j] = v[j]; }
    return ys;
}

// The model extended with infusion inputs and an AUC state for each output an area metric
// reads (quad_output; NA of them, none in the records kernel). An output that is not finite
// adds nothing to its quadrature: its metrics are undefined (observe), the states and the other
// outputs' metrics go on (the CPU reference's WithQuadrature alike).
fn sys_rhs(t: real, v: array<real, {{N_NY}}>) -> array<real, {{N_NY}}> {
    let ys = model_part(v);
    var f = model_rhs(t, ys, q);
    var out: array<real, {{N_NY}}>;
    for (var j = 0u; j < NS; j++) { out[j] = f[j] + rates[j]; }
    if (NA > 0u) {
        var g = model_outputs(t, ys, q);
        for (var a = 0u; a < NA; a++) { out[NS + a] = finite_or_0(g[quad_output(a)]); }
    }
    n_rhs++;
    return out;
}

// The outputs, for the metrics: with the switches evaluated, not held at their modes (as the
// CPU reference's outputs; the quadratures in sys_rhs read the modes).
fn outs(t: real, v: array<real, {{N_NY}}>) -> array<real, {{N_NO}}> {
    if (NSW > 0u) {
        var live = q;
        live[MODE_BASE + NSW] = 0.0;
        return model_outputs(t, model_part(v), live);
    }
    return model_outputs(t, model_part(v), q);
}

// Occasion o's parameters (HAS_OCCASIONS: `params[(o * NP + p) * n + i]`; o = 0 the first).
fn params_of(o: u32) -> array<real, {{N_NQ}}> {
    var qo: array<real, {{N_NQ}}>;
    for (var p = 0u; p < NP; p++) { qo[p] = params[(o * NP + p) * meta_.n + sid]; }
    return model_prepare(qo);
}

// The model's initial states with the parameters in force (a reset in a later occasion: that
// occasion's, as NONMEM's initial conditions) and no infusion running (a subject's start, a
// reset); the AUC quadratures are left to the caller.
fn initial_states() {
    var zero: array<real, {{N_NS}}>;
    let y0 = model_init(0.0, zero, q);
    for (var j = 0u; j < NS; j++) { y[j] = y0[j]; rates[j] = 0.0; }
}

{{W}}

{{STEP}}

// x, in a form the shader compiler cannot see through: compilers simplify (a + b) − a to b
// (Mesa's NIR does, for operations not marked exact, and WGSL has no way to mark them), which
// would take the round-off out of a compensated sum. Every invocation has meta_.n ≥ 1.
fn opaque(x: real) -> real {
    return select(x, 0.0, meta_.n == 0u);
}

// What component j's size is measured from in the step control: 0 for a model state, the
// running total of an AUC quadrature (restarted from 0 at each stopping point, stop_pre), as
// the CPU reference's scale_base (src/solver/integrator.rs).
fn size_base(j: u32) -> real {
    if (j >= NS) { return qbase[j - NS]; }
    return 0.0;
}

fn error_norm() -> real {
    var s: real = 0.0;
    for (var j = 0u; j < NY; j++) {
        let b = size_base(j);
        let sc = meta_.atol + meta_.rtol * max(abs(b + y[j]), abs(b + y1[j]));
        let r = err[j] / sc;
        s += r * r;
    }
    let e = sqrt(s * (1.0 / real(NY)));
    if (!finite(e) || !all_finite(y1)) { return BIG; }
    return e;
}

// The latest time at which the steps of a segment [t0, t1) evaluate the system: four to
// eight ulps before t1 (a model reading t may jump at a stopping point; the jump belongs to
// the next segment), and not before t0 (a segment a few ulps long starts on the new side of a
// jump at its start). Four ulps, as `left_limit` on the CPU (src/solver/mod.rs): Vulkan allows
// f32 division 2.5 ulps of error, and t / 24 must still fall short of 1. By arithmetic, since
// f64 has no bit casts in WGSL. Where the model's time is shifted (TIME_SHIFT: a steady
// state's interval), ulps of the larger of t1 and the model's time t1 + q[T_SLOT]
// (`left_limit_shifted`), so that the model's time there is before a jump whose stop t1 is.
fn left_limit(t0: real, t1: real) -> real {
    var scale = abs(t1);
    if (TIME_SHIFT) { scale = max(scale, abs(t1 + q[T_SLOT])); }
    return max(t1 - max(4.0 * scale * EPS, 1e-30), t0);
}

// Hairer, Nørsett & Wanner's starting step; tl: the left limit of the segment's end.
fn initial_step(t0: real, tl: real) -> real {
    var d0: real = 0.0;
    var d1: real = 0.0;
    for (var j = 0u; j < NY; j++) {
        let v = size_base(j) + y[j];
        let sc = meta_.atol + meta_.rtol * abs(v);
        d0 += (v / sc) * (v / sc);
        d1 += (f0[j] / sc) * (f0[j] / sc);
    }
    d0 = sqrt(d0 / real(NY));
    d1 = sqrt(d1 / real(NY));
    var h0: real = 1e-6;
    if (!(d0 < 1e-5 || d1 < 1e-5)) { h0 = 0.01 * d0 / d1; }
    for (var j = 0u; j < NY; j++) { tmp[j] = y[j] + h0 * f0[j]; }
    f1 = sys_rhs(min(t0 + h0, tl), tmp);
    var d2: real = 0.0;
    for (var j = 0u; j < NY; j++) {
        let sc = meta_.atol + meta_.rtol * abs(size_base(j) + y[j]);
        let r = (f1[j] - f0[j]) / sc;
        d2 += r * r;
    }
    d2 = sqrt(d2 / real(NY)) / h0;
    let dm = max(d1, d2);
    var h1 = max(h0 * 1e-3, 1e-6);
    if (dm > 1e-15) { h1 = pow_r(0.01 / dm, 1.0 / Q_ORDER); }
    let h = min(100.0 * h0, h1);
    if (finite(h) && h > 0.0) { return h; }
    return 1e-6;
}

struct Spec {
    kind: u32,
    k: u32,
    win: bool,
    a: real,
    b: real,
    x: real,
}

// Metric kinds: 0 auc, 1 cmax, 2 tmax, 3 cmin, 4 cavg, 5 ctrough, 6 time above x, 7 value at x.
// A metric's kind and output are compiled in (the arm data has them too): in a kernel whose
// loops over the metrics are unrolled (src/backend/wgpu/codegen.rs, unroll_loops), each
// metric's copy keeps its own kind's code, and its arrays are indexed by constants. Its window
// and threshold are the arm's (arm data).
fn spec(m: u32) -> Spec {
    let o = meta_.off_metrics + m * 6u;
    return Spec(metric_kind(m), metric_output(m), arm[o + 2u] != 0.0, arm[o + 3u], arm[o + 4u], arm[o + 5u]);
}

// Whether metric m (of kind `kind`) has seen its output not finite in its window (observe):
// NaN in its running value (the running maximum of a Tmax, the sum of an area), tested by its
// bits, since WGSL lets compilers assume that comparisons never meet a NaN.
fn undefined_metric(m: u32, kind: u32) -> bool {
    if (kind == 2u || kind == 0u || kind == 4u) { return is_nan(aux[m]); }
    return is_nan(vals[m]);
}

// Whether output value c moves Tmax metric m (as the CPU reference's tmax_moves): any higher
// value within the segment of its time, one higher by more than rtol relative in a later
// segment (peaks equal to within what the solver resolves keep the first one's time).
fn tmax_moves(m: u32, c: real) -> bool {
    let tie = max(meta_.rtol, TMAX_TIE_EPS * EPS);
    return c > aux[m] && (vals[m] >= seg_t0 || c - aux[m] > tie * abs(aux[m]));
}

fn update_extreme(m: u32, kind: u32, t: real, c: real) {
    if (undefined_metric(m, kind)) { return; }
    if (kind == 1u) {
        if (c > vals[m]) { vals[m] = c; }
    } else if (kind == 2u) {
        // aux holds the running maximum, the value is its time.
        if (tmax_moves(m, c)) { aux[m] = c; vals[m] = t; }
    } else if (kind == 3u) {
        if (c < vals[m]) { vals[m] = c; }
    }
}

fn output_at(t: real, k: u32) -> real {
    dense_into(t);
    var c = outs(min(t, min(st_t1, st_tl)), dense_v);
    return c[k];
}

// An output affine in the states (output_affine(k)) follows the dense output's polynomial
// (degree 4 at most) on a step: the quartic through its values at u = 0, 1, 2, 3, 4
// (u = 4 (t - t0) / h), from Newton's forward differences expanded into the coefficients of
// 1, u, ..., u^4, as the CPU reference's Quartic. Made once per step and output.
fn quartic(k: u32, ca: real, cb: real) -> array<real, 5> {
    if ((ifound[k] & 4u) != 0u) { return quart[k]; }
    let t0 = st_t0;
    let h = st_t1 - st_t0;
    let f1 = output_at(t0 + 0.25 * h, k);
    let f2 = output_at(t0 + 0.5 * h, k);
    let f3 = output_at(t0 + 0.75 * h, k);
    let a1 = f1 - ca;
    let a2 = f2 - f1;
    let a3 = f3 - f2;
    let a4 = cb - f3;
    let b1 = a2 - a1;
    let b2 = a3 - a2;
    let b3 = a4 - a3;
    let e1 = b2 - b1;
    let e2 = b3 - b2;
    let dd = e2 - e1;
    // QUARTIC_THIRD, …: the CPU reference's constants (generated), rounded to real.
    quart[k] = array<real, 5>(
        ca,
        a1 - 0.5 * b1 + QUARTIC_THIRD * e1 - 0.25 * dd,
        0.5 * b1 - 0.5 * e1 + QUARTIC_ELEVEN_24THS * dd,
        QUARTIC_SIXTH * e1 - 0.25 * dd,
        QUARTIC_TWENTY_FOURTH * dd,
    );
    ifound[k] |= 4u;
    return quart[k];
}

// (P(u), P'(u), P''(u)) of the quartic c, by Horner's rule.
fn quartic_eval(c: array<real, 5>, u: real) -> vec3<real> {
    let p = (((c[4] * u + c[3]) * u + c[2]) * u + c[1]) * u + c[0];
    let dp = ((4.0 * c[4] * u + 3.0 * c[3]) * u + 2.0 * c[2]) * u + c[1];
    let ddp = (12.0 * c[4] * u + 6.0 * c[3]) * u + 2.0 * c[2];
    return vec3<real>(p, dp, ddp);
}

// The root in [lo, hi] of P' (slope) or of P - thr (not slope), given opposite signs at the
// ends: Newton's method kept inside the bracket (bisection where a step would leave it), as
// the CPU reference's Quartic::root. Returns (1, root), or (0, 0) when the signs do not differ.
fn quartic_root(c: array<real, 5>, slope: bool, thr: real, lo0: real, hi0: real) -> vec2<real> {
    var lo = lo0;
    var hi = hi0;
    let el = quartic_eval(c, lo);
    let eh = quartic_eval(c, hi);
    let glo = select(el.x - thr, el.y, slope);
    let ghi = select(eh.x - thr, eh.y, slope);
    if (glo == 0.0) { return vec2<real>(1.0, lo); }
    if (ghi == 0.0) { return vec2<real>(1.0, hi); }
    if ((glo > 0.0) == (ghi > 0.0) || !finite(glo) || !finite(ghi)) { return vec2<real>(0.0, 0.0); }
    let lo_positive = glo > 0.0;
    var u = lo + glo / (glo - ghi) * (hi - lo);
    for (var it = 0u; it < QUARTIC_ITERS; it++) {
        let e = quartic_eval(c, u);
        let gu = select(e.x - thr, e.y, slope);
        let du = select(e.y, e.z, slope);
        if (gu == 0.0) { return vec2<real>(1.0, u); }
        if ((gu > 0.0) == lo_positive) { lo = u; } else { hi = u; }
        var next = u - gu / du;
        if (!(next > lo && next < hi)) { next = 0.5 * (lo + hi); }
        if (abs(next - u) <= 4.0 * EPS * max(abs(u), 1.0) || hi - lo <= 4.0 * EPS * max(abs(hi), 1.0)) {
            return vec2<real>(1.0, next);
        }
        u = next;
    }
    return vec2<real>(1.0, u);
}

// The extremum of output k inside the step, whose ends have outputs ca and cb; returns
// (t, c). For an affine output, the root of the quartic's slope; otherwise (or when the
// quartic's slope does not change sign) Brent's minimisation of -sign * c (parabolic
// interpolation safeguarded by golden sections), as the CPU reference's refine_extremum.
fn refine_extremum(k: u32, maximize: bool, ca: real, cb: real) -> vec2<real> {
    let sign = select(real(-1), real(1), maximize);
    if (output_affine(k)) {
        let c = quartic(k, ca, cb);
        let d0 = quartic_eval(c, 0.0).y;
        let d4 = quartic_eval(c, 4.0).y;
        if (sign * d0 > 0.0 && sign * d4 < 0.0) {
            let r = quartic_root(c, true, 0.0, 0.0, 4.0);
            if (r.x != 0.0) {
                let tm = st_t0 + (st_t1 - st_t0) * r.y / 4.0;
                return vec2<real>(tm, output_at(tm, k));
            }
        }
    }
    var a = st_t0;
    var b = st_t1;
    let xtol = EXTREMUM_XTOL * (b - a);
    var x = a + EXTREMUM_CGOLD * (b - a);
    var w = x;
    var v = x;
    var fx = -sign * output_at(x, k);
    var fw = fx;
    var fv = fx;
    var d: real = 0.0;
    var e: real = 0.0;
    for (var it = 0u; it < EXTREMUM_ITERS; it++) {
        let xm = 0.5 * (a + b);
        let tol1 = xtol + 2.0 * EPS * abs(x);
        let tol2 = 2.0 * tol1;
        if (abs(x - xm) <= tol2 - 0.5 * (b - a)) { break; }
        var parabolic = false;
        if (abs(e) > tol1) {
            let r = (x - w) * (fx - fv);
            var q = (x - v) * (fx - fw);
            var p = (x - v) * q - (x - w) * r;
            q = 2.0 * (q - r);
            if (q > 0.0) { p = -p; }
            q = abs(q);
            let e_prev = e;
            e = d;
            if (abs(p) < abs(0.5 * q * e_prev) && p > q * (a - x) && p < q * (b - x)) {
                d = p / q;
                let u = x + d;
                if (u - a < tol2 || b - u < tol2) { d = select(-tol1, tol1, xm >= x); }
                parabolic = true;
            }
        }
        if (!parabolic) {
            e = select(b - x, a - x, x >= xm);
            d = EXTREMUM_CGOLD * e;
        }
        var u = x + d;
        if (abs(d) < tol1) { u = select(x - tol1, x + tol1, d > 0.0); }
        let fu = -sign * output_at(u, k);
        if (fu <= fx) {
            if (u >= x) { a = x; } else { b = x; }
            v = w;
            fv = fw;
            w = x;
            fw = fx;
            x = u;
            fx = fu;
        } else {
            if (u < x) { a = u; } else { b = u; }
            if (fu <= fw || w == x) {
                v = w;
                fv = fw;
                w = u;
                fw = fu;
            } else if (fu <= fv || v == x || v == w) {
                v = u;
                fv = fu;
            }
        }
    }
    return vec2<real>(x, -sign * fx);
}

// Where output k crosses thr in [a0, b0] inside the step, given the signs of c − thr at the
// ends differ; the step's ends have outputs ca and cb. For an affine output, the root of the
// quartic minus thr; otherwise (or when its sign does not change there) the Illinois variant
// of regula falsi.
fn crossing(k: u32, thr: real, a0: real, b0: real, g0: real, g1: real, ca: real, cb: real) -> real {
    if (output_affine(k)) {
        let t0 = st_t0;
        let h = st_t1 - st_t0;
        let per_time = 4.0 / h;
        let c = quartic(k, ca, cb);
        let r = quartic_root(c, false, thr, (a0 - t0) * per_time, (b0 - t0) * per_time);
        if (r.x != 0.0) { return t0 + h * r.y / 4.0; }
    }
    var a = a0;
    var b = b0;
    var ga = g0;
    var gb = g1;
    var side = 0;
    let tol = ROOT_RTOL * (b - a) + 4.0 * EPS * abs(b);
    var x = a;
    for (var it = 0u; it < ROOT_ITERS; it++) {
        x = (a * gb - b * ga) / (gb - ga);
        if (!finite(x) || x <= a || x >= b) { x = 0.5 * (a + b); }
        let gx = output_at(x, k) - thr;
        if ((b - a) < tol) { break; }
        // The boundary of c >= thr, not any zero of c - thr (a plateau at thr is above it).
        if ((gx >= 0.0) == (gb >= 0.0)) {
            b = x;
            gb = gx;
            if (side == -1) { ga *= 0.5; }
            side = -1;
        } else {
            a = x;
            ga = gx;
            if (side == 1) { gb *= 0.5; }
            side = 1;
        }
    }
    return x;
}

// d output / dt at the ends of the step: ∇g · f, plus ∂g/∂t where outputs depend on time
// directly.
fn output_slopes(t: real, v: array<real, {{N_NY}}>, f: array<real, {{N_NY}}>) -> array<real, {{N_NO}}> {
    var gj = model_output_jac(t, model_part(v), q);
    var d: array<real, {{N_NO}}>;
    for (var k = 0u; k < NO; k++) {
        var s: real = 0.0;
        for (var j = 0u; j < NS; j++) { s += gj[k * NS + j] * f[j]; }
        d[k] = s;
    }
    if (OUTPUTS_USE_TIME) {
        var dg = model_output_dfdt(t, model_part(v), q);
        for (var k = 0u; k < NO; k++) { d[k] += dg[k]; }
    }
    return d;
}

fn write_profile(j: u32, c: array<real, {{N_NO}}>) {
    for (var k = 0u; k < NO; k++) {
        profiles[(k * meta_.n + sid) * meta_.n_times + j] = c[k];
    }
}

// Every accepted step: profile samples, extremes, threshold crossings, values at times.
fn observe() {
    let t0 = st_t0;
    let t1 = st_t1;
    let te = min(t1, st_tl);
    seg_t1 = t1;
    seg_te = te;
    var c0 = outs(t0, y);
    var c1 = outs(te, y1);
    let base = meta_.off_times;
    while (next_sample < meta_.n_times && arm[base + next_sample] <= t1) {
        let ts = arm[base + next_sample];
        if (ts > t0) {
            dense_into(ts);
            write_profile(next_sample, outs(min(ts, te), dense_v));
        }
        next_sample++;
    }
    var dc0: array<real, {{N_NO}}>;
    var dc1: array<real, {{N_NO}}>;
    if (meta_.wants_extrema != 0u) {
        dc0 = output_slopes(t0, y, f0);
        dc1 = output_slopes(te, y1, f1);
    }
    // Which interior extrema the metrics need, per output: maximum (1), minimum (2).
    var want: array<u32, {{N_NO}}>;
    for (var k = 0u; k < NO; k++) {
        ifound[k] = 0u;
        want[k] = 0u;
    }
    for (var m = 0u; m < NM; m++) {
        let s = spec(m);
        if (s.win && !(t0 < s.a || t1 > s.b)) {
            let k = s.k;
            let peak = dc0[k] > 0.0 && dc1[k] < 0.0;
            let dip = dc0[k] < 0.0 && dc1[k] > 0.0;
            if ((s.kind == 1u || s.kind == 2u) && peak) {
                want[k] |= 1u;
            } else if (s.kind == 3u && dip) {
                want[k] |= 2u;
            } else if (s.kind == 6u) {
                // Both ends above: the output may dip below around an interior minimum; both
                // below: it may rise above around an interior maximum.
                let g0 = c0[k] - s.x;
                let g1 = c1[k] - s.x;
                if (g0 >= 0.0 && g1 >= 0.0 && dip) { want[k] |= 2u; }
                else if (g0 < 0.0 && g1 < 0.0 && peak) { want[k] |= 1u; }
            }
        }
    }
    // One call of each search in the kernel (inlined by shader compilers: every call site is
    // a copy of the search and of the dense output).
    for (var j = 0u; j < 2u * NO; j++) {
        let k = j / 2u;
        let w = 1u << (j % 2u);
        if ((want[k] & w) == 0u) { continue; }
        let r = refine_extremum(k, w == 1u, c0[k], c1[k]);
        if (w == 1u) {
            imax_t[k] = r.x;
            imax_c[k] = r.y;
        } else {
            imin_t[k] = r.x;
            imin_c[k] = r.y;
        }
    }
    for (var m = 0u; m < NM; m++) {
        let s = spec(m);
        if (s.win && !(t0 < s.a || t1 > s.b)) {
            let k = s.k;
            // An output that is not finite at a step in the window leaves its extremes, areas
            // and times above undefined (as the CPU reference's MetricAccumulator).
            if (s.kind <= 4u || s.kind == 6u) {
                if (!(finite(c0[k]) && finite(c1[k]))) {
                    vals[m] = nan();
                    aux[m] = nan();
                }
                if (undefined_metric(m, s.kind)) { continue; }
            }
            if (s.kind == 1u || s.kind == 2u) {
                // A new maximum where the output ends the step flat (a plateau) may have been
                // reached inside the step: Tmax is the first time it is. In time order (a Tmax
                // keeps the first of maxima within its tie): the plateau's start or the interior
                // maximum, then the step's end.
                if (s.kind == 2u && !output_affine(k) && dc1[k] == 0.0 && c0[k] < c1[k] && tmax_moves(m, c1[k])) {
                    update_extreme(m, s.kind, crossing(k, c1[k], t0, t1, c0[k] - c1[k], 0.0, c0[k], c1[k]), c1[k]);
                }
                if (dc0[k] > 0.0 && dc1[k] < 0.0) { update_extreme(m, s.kind, imax_t[k], imax_c[k]); }
                update_extreme(m, s.kind, t1, c1[k]);
            } else if (s.kind == 3u) {
                update_extreme(m, s.kind, t1, c1[k]);
                if (dc0[k] < 0.0 && dc1[k] > 0.0) { update_extreme(m, s.kind, imin_t[k], imin_c[k]); }
            } else if (s.kind == 6u) {
                let g0 = c0[k] - s.x;
                let g1 = c1[k] - s.x;
                // The crossings inside the step: none, one, or two around an interior extremum
                // beyond the threshold.
                var n = 0u;
                var tm: real = 0.0;
                var gm: real = 0.0;
                if (g0 >= 0.0 && g1 >= 0.0) {
                    if (dc0[k] < 0.0 && dc1[k] > 0.0 && imin_c[k] < s.x) {
                        n = 2u;
                        tm = imin_t[k];
                        gm = imin_c[k] - s.x;
                    }
                } else if (g0 < 0.0 && g1 < 0.0) {
                    if (dc0[k] > 0.0 && dc1[k] < 0.0 && imax_c[k] >= s.x) {
                        n = 2u;
                        tm = imax_t[k];
                        gm = imax_c[k] - s.x;
                    }
                } else {
                    n = 1u;
                }
                var x0: real = 0.0;
                var x1: real = 0.0;
                for (var i = 0u; i < n; i++) {
                    let first = i == 0u;
                    let split = first && n == 2u;
                    let xc = crossing(k, s.x, select(tm, t0, first), select(t1, tm, split),
                        select(gm, g0, first), select(g1, gm, split), c0[k], c1[k]);
                    if (first) { x0 = xc; } else { x1 = xc; }
                }
                var above: real = select(0.0, t1 - t0, g0 >= 0.0);
                if (n == 2u) {
                    above = select(x1 - x0, (t1 - t0) - (x1 - x0), g0 >= 0.0);
                } else if (n == 1u) {
                    above = select(t1 - x0, x0 - t0, g0 >= 0.0);
                }
                vals[m] += above;
            } else if (s.kind == 7u && s.x > t0 && s.x <= t1) {
                vals[m] = output_at(s.x, k);
            }
        }
    }
}

// Before the events of a stopping point (left limit).
fn stop_pre(t: real) {
    var c = outs(select(t, seg_te, seg_t1 == t && seg_te <= t), y);
    if (t == 0.0) {
        while (next_sample < meta_.n_times && arm[meta_.off_times + next_sample] <= 0.0) {
            write_profile(next_sample, c);
            next_sample++;
        }
    }
    for (var m = 0u; m < NM; m++) {
        let s = spec(m);
        let cv = c[s.k];
        if (s.kind == 5u) {
            if (t == meta_.trough) { vals[m] = cv; }
        } else if (s.kind == 7u) {
            if (s.x == 0.0 && t == 0.0) { vals[m] = cv; }
        } else if (s.kind == 0u || s.kind == 4u) {
            // aux sums the areas of the segments between stops inside the window (the
            // quadrature holds the area since the previous stop).
            // vals collects what each addition rounds off until b (compensated summation, as
            // the CPU reference's aux_lo).
            if (s.win) {
                if (t == s.a) {
                    aux[m] = 0.0;
                    vals[m] = 0.0;
                } else if (s.a < t && t <= s.b) {
                    let v = y[NS + output_quad(s.k)];
                    let undefined = undefined_metric(m, s.kind);
                    let sum = aux[m] + v;
                    let so = opaque(sum);
                    let bb = so - aux[m];
                    vals[m] += (aux[m] - (so - bb)) + (v - bb);
                    aux[m] = sum;
                    if (undefined) { aux[m] = nan(); }
                    if (t == s.b) {
                        let area = aux[m] + vals[m];
                        vals[m] = select(area, area / (s.b - s.a), s.kind == 4u);
                        if (undefined) { vals[m] = nan(); }
                    }
                }
            }
        } else if (s.kind >= 1u && s.kind <= 3u) {
            if (s.win && s.a < t && t <= s.b) { update_extreme(m, s.kind, t, cv); }
        }
    }
    // The quadratures start again from 0, their totals kept for the step control (size_base):
    // in f32 a value as small as the area since the last stop loses nothing to a large running
    // total (src/backend/cpu.rs alike).
    for (var a = 0u; a < NA; a++) {
        qbase[a] += y[NS + a];
        y[NS + a] = 0.0;
    }
}

// After the events of a stopping point (right limit).
fn stop_post(t: real) {
    // The right limit begins the next segment.
    seg_t0 = t;
    if (meta_.wants_extrema == 0u) { return; }
    var c = outs(t, y);
    for (var m = 0u; m < NM; m++) {
        let s = spec(m);
        if (s.kind >= 1u && s.kind <= 3u && s.win && s.a <= t && t < s.b) {
            update_extreme(m, s.kind, t, c[s.k]);
        }
    }
}

// Steady-state iterations (both drivers): the iterate, the last interval's change (SS_NONE: none
// since the start or a jump), ratio of changes (−1: none), the last jump's ratio (0: none) and
// the latest ratio, how many intervals in a row the change has been at the noise level, whether every state changed by round-off only, whether
// the change drifts (ss_converged), and the jump chosen.
var<private> ss_x: array<real, {{N_NS}}>;
var<private> ss_prev: real;
var<private> ss_prev_rho: real;
var<private> ss_rho_jump: real;
var<private> ss_rho: real;
var<private> ss_stalled: u32;
var<private> ss_still: bool;
// The last ss_change in units of the tolerance at the iterate ss_x (the ratio's units).
var<private> ss_change_at_x: real;
var<private> ss_drift: bool;
var<private> ss_g: real;
// Each state's change over the last interval, how many intervals in a row some state changed
// by what it changed over the one before (SS_TRANSLATION), and whether ss_dprev holds the
// changes of the interval before (1u; 0u: none since the start or a jump).
var<private> ss_dprev: array<real, {{N_NS}}>;
var<private> ss_translating: u32;
var<private> ss_have_d: u32;

// The iterations start anew (no previous change or ratio).
fn ss_begin() {
    ss_prev = SS_NONE;
    ss_prev_rho = -1.0;
    ss_rho_jump = 0.0;
    ss_stalled = 0u;
    ss_translating = 0u;
    ss_have_d = 0u;
}

// After an interval from the iterate ss_x: whether some state moved by the same amount as over
// the interval before (by more than SS_FRACTION of its tolerance, measured to better than
// SS_TRANSLATION of it), as `SsIterations::next` on the CPU; ss_dprev takes this interval's
// changes.
fn ss_translation() {
    var translates = false;
    for (var j = 0u; j < NS; j++) {
        let d = y[j] - ss_x[j];
        let w = meta_.atol + meta_.rtol * abs(y[j]);
        translates = translates || (ss_have_d == 1u && abs(d) >= SS_FRACTION * w
            && 2.0 * SS_ULPS * EPS * abs(y[j]) <= SS_TRANSLATION * abs(d)
            && abs(d - ss_dprev[j]) <= SS_TRANSLATION * abs(d));
        ss_dprev[j] = d;
    }
    ss_have_d = 1u;
    if (translates) {
        ss_translating = min(ss_translating + 1u, SS_TRANSLATING);
    } else {
        ss_translating = 0u;
    }
}

// The largest change of the model states from ss_x over an interval, in units of the
// tolerance at the states (and ss_still, and ss_change_at_x: in units of the tolerance at
// ss_x).
fn ss_change() -> real {
    var change: real = 0.0;
    var at_x: real = 0.0;
    ss_still = true;
    for (var j = 0u; j < NS; j++) {
        let w = meta_.atol + meta_.rtol * abs(y[j]);
        let wx = meta_.atol + meta_.rtol * abs(ss_x[j]);
        let d = abs(y[j] - ss_x[j]);
        change = max(change, d / w);
        at_x = max(at_x, d / wx);
        ss_still = ss_still && d <= SS_ULPS * EPS * abs(y[j]);
    }
    ss_change_at_x = at_x;
    return change;
}

// ss_change, and ss_x takes the states.
fn ss_take_change() -> real {
    let change = ss_change();
    for (var j = 0u; j < NS; j++) { ss_x[j] = y[j]; }
    return change;
}

// After an interval changed the state by `change`: whether the steady state is reached
// (ss_prev, ss_prev_rho and ss_stalled follow, ss_g is the jump ss_next makes, and ss_drift says
// two ratios in a row were flat but below SS_JUMP_MAX). As `SsIterations::next` on
// the CPU: geometric convergence leaves about change·ρ/(1−ρ) to come (ρ at least the last
// jump's, whose mode the modes it stirred can hide), trusted from the third change since the
// start or a jump; at the noise floor the change stops shrinking, or wanders without settling;
// a steady ratio is a slow mode, extrapolated (ss_rho: the ratio of the jump).
fn ss_converged(change: real, lengthens: bool) -> bool {
    let first = ss_prev >= SS_NONE;
    // Both changes in the same units: the tolerance at the states the previous one ended at
    // (ss_x).
    let raw = ss_change_at_x / ss_prev;
    let rho = min(raw, SS_RATIO_MAX);
    let slow = max(rho, ss_rho_jump);
    var remaining: real = SS_NONE;
    if (!first) { remaining = change * slow / (1.0 - slow); }
    ss_prev = change;
    if (change <= SS_NOISE) { ss_stalled++; } else { ss_stalled = 0u; }
    let converged = ss_still || (ss_prev_rho >= 0.0 && remaining <= SS_FRACTION);
    let flat = rho >= SS_FLAT && ss_prev_rho >= SS_FLAT;
    let drho = abs(rho - ss_prev_rho);
    let steady = drho <= SS_STEADY * (1.0 - rho);
    let slow_mode = steady && rho >= SS_JUMP && rho < SS_JUMP_MAX;
    let settling = drho <= SS_SETTLING * (1.0 - rho) && rho < SS_JUMP_MAX;
    let accurate = change * drho <= SS_FRACTION * (1.0 - rho) * (1.0 - rho);
    let noise = flat && change <= SS_NOISE && !settling;
    // A mode the last jump extrapolated, too slow to measure again at the noise level: steady
    // changes are its, extrapolated again with the jump's ratio.
    let left = change * ss_rho_jump / (1.0 - ss_rho_jump);
    let rejump = noise && ss_rho_jump >= SS_FLAT && raw <= 2.0 - SS_FLAT && left > SS_JUMP_ABOVE;
    // A state that moves by the same amount every interval has no steady state, however small
    // that amount is.
    let growing = ss_translating >= SS_TRANSLATING;
    let done = converged || (!growing && ((noise && !rejump) || ss_stalled >= SS_NOISE_CYCLES));
    // Where the interval can be lengthened (lengthens: a steady-state infusion's span), a slow
    // mode whose jump would amplify the integration's own error by more than the change sets
    // ss_drift instead of jumping.
    let lengthen = lengthens && slow_mode && rho / (1.0 - rho) > change;
    ss_drift = !converged && ((flat && rho < SS_JUMP_MAX) || lengthen);
    ss_prev_rho = select(rho, -1.0, first);
    ss_rho = select(rho, ss_rho_jump, rejump);
    ss_g = 0.0;
    if (!done && !lengthen && (rejump
        || (slow_mode && (remaining > SS_JUMP_ABOVE || rho >= SS_JUMP_SLOW || accurate)))) {
        ss_g = ss_rho / (1.0 - ss_rho);
    }
    return done;
}

// The next iterate ss_x (the previous one in): the states, or with a jump (ss_g > 0) the
// states extrapolated along their last change, y + (y − ss_x)·ss_g, where that changes no
// state's sign; a jump taken starts the ratios anew.
fn ss_next() {
    var jump = ss_g > 0.0;
    for (var j = 0u; j < NS; j++) {
        jump = jump && (y[j] + (y[j] - ss_x[j]) * ss_g) * y[j] >= 0.0;
    }
    for (var j = 0u; j < NS; j++) {
        ss_x[j] = select(y[j], y[j] + (y[j] - ss_x[j]) * ss_g, jump);
    }
    if (jump) {
        ss_prev = SS_NONE;
        ss_prev_rho = -1.0;
        ss_rho_jump = ss_rho;
        ss_have_d = 0u;
    }
}

// One iteration after an interval from the iterate ss_x, as `SsIterations::next` on the CPU:
// ss_x takes the next iterate; whether the steady state is reached.
fn ss_iterate(lengthens: bool) -> bool {
    ss_translation();
    let done = ss_converged(ss_change(), lengthens);
    ss_next();
    return done;
}

// Integrates the segment [t0, t1] between stopping points from t_cur (t0, or where a
// suspended subject stopped); returns a status code (0 ok, 1 max steps, 2 step too small,
// 3 non-finite) or SUSPEND when this dispatch's step budget is spent.
const SUSPEND: u32 = 255u;
// Returned only if a loop ended in a way the code does not allow (a loop cut short by the
// shader compiler): reported as a failure rather than a silently wrong result.
const CUT_SHORT: u32 = 254u;
// A steady-state dose whose steady state was not found (Status::NoSteadyState).
const NO_STEADY_STATE: u32 = 4u;

// Whether every loop of this invocation ran its course. A software rasteriser (llvmpipe) counts
// the loop back edges of an invocation group against one limit and, past it, leaves every
// loop after one pass without a word: values computed in loops are then silently wrong. A
// loop whose trip count the compiler cannot know (two; three for an empty batch, which never
// gets here) tells: it runs once only if the limit was reached. The drivers call it last, and
// report a subject whose dispatch was cut as CUT_SHORT; the host then runs the batch again
// with a smaller budget.
fn loops_intact() -> bool {
    let laps = select(2u, 3u, meta_.n == 0u);
    var v = 0u;
    for (var i = 0u; i < laps; i++) { v = v * 3u + 1u; }
    return v == select(4u, 13u, meta_.n == 0u);
}

// After a rejected step that was stretched to the stopping point, where the next proposal
// would be stretched back to it too (t's resolution makes the stretch wide: f32 at large t):
// a step ending before the stretch instead, half the way to it, so that the step does shrink.
// False where no step ends before the stretch (t + the half rounds into it): the step cannot
// shrink.
fn shrink_before_stretch(t: real, snap_to: real) -> bool {
    h_prop = 0.5 * (snap_to - t);
    return h_prop > 0.0 && t + h_prop < snap_to;
}

// Event location (events = "locate"), as the CPU reference's (src/solver/integrator.rs,
// locate_change) and the CUDA kernel's: the switches of the states (model_switches) are held
// at their modes, q[MODE_BASE + k], while q[MODE_BASE + NSW] is 1.
fn hold_modes(sw: array<real, {{N_NSW}}>) {
    // (q[MODE_BASE] may be the time shift where there are no switches.)
    if (NSW == 0u) { return; }
    for (var k = 0u; k < NSW; k++) { q[MODE_BASE + k] = sw[k]; }
    q[MODE_BASE + NSW] = 1.0;
}

// The first switch whose value differs from its mode (NaN the same as NaN, by its bits); NSW
// where none does.
fn first_changed(sw: array<real, {{N_NSW}}>) -> u32 {
    var first = NSW;
    for (var k = 0u; k < NSW; k++) {
        let md = q[MODE_BASE + k];
        let nan_a = is_nan(sw[k]);
        let nan_b = is_nan(md);
        if (first == NSW && select(sw[k] != md, nan_a != nan_b, nan_a || nan_b)) { first = k; }
    }
    return first;
}

fn switches_changed(sw: array<real, {{N_NSW}}>) -> bool {
    return first_changed(sw) < NSW;
}

// Whether a held switch changes inside the accepted step from t to t_new (its dense output
// prepared, st_t0 and st_h set): compared at the fractions event_probe(i) of the step (a
// quarter, half and three quarters) and at its end, on the dense output's first SW_REACH
// components (those the switches read); the first point found changed is bisected on the dense
// output to the neighbouring times before and after the change, the time after it into sw_at,
// the switches' values there into sw_past. tl: the left limit of the segment's end.
fn locate_change(t: real, t_new: real, step: real, tl: real) -> bool {
    var lo = t;
    var hi = t_new;
    var found = false;
    for (var i = 0u; i <= N_PROBES && !found; i++) {
        var x = t_new;
        var sw: array<real, {{N_NSW}}>;
        if (i == N_PROBES) {
            sw = model_switches(min(x, tl), model_part(y1), q);
        } else {
            x = t + event_probe(i) * step;
            dense_reach(x);
            sw = model_switches(min(x, tl), model_part(dense_v), q);
        }
        if (switches_changed(sw)) {
            found = true;
            hi = x;
            sw_past = sw;
        } else {
            lo = x;
        }
    }
    if (!found) { return false; }
    // Narrowed by the Illinois method on the argument of the switch that changed (its sign
    // changes where the switch does), as the CPU reference's: points kept inside the bracket, a
    // bisection where the argument is not finite or keeps its sign across it and after SLOW_STEPS
    // steps in a row that did not halve it.
    dense_reach(lo);
    var a_lo = model_switch_args(min(lo, tl), model_part(dense_v), q);
    dense_reach(hi);
    var a_hi = model_switch_args(min(hi, tl), model_part(dense_v), q);
    var k = first_changed(sw_past);
    var fa = a_lo[k];
    var fb = a_hi[k];
    // 1: hi moved last, 2: lo did (Illinois halves the value kept twice).
    var side = 0u;
    var slow = 0u;
    var bisect = false;
    loop {
        let mid = lo + 0.5 * (hi - lo);
        if (mid <= lo || mid >= hi) { break; }
        let width = hi - lo;
        var x = mid;
        if (!bisect && finite(fa) && finite(fb) && fa * fb < 0.0) {
            let s = lo + (hi - lo) * (fa / (fa - fb));
            if (s > lo && s < hi) { x = s; }
        }
        dense_reach(x);
        let sw = model_switches(min(x, tl), model_part(dense_v), q);
        let a_x = model_switch_args(min(x, tl), model_part(dense_v), q);
        let j = first_changed(sw);
        if (j < NSW) {
            hi = x;
            sw_past = sw;
            a_hi = a_x;
            if (j != k) {
                // Another switch changes before: its argument from here on.
                k = j;
                fa = a_lo[k];
                fb = a_hi[k];
                side = 0u;
            } else {
                fb = a_hi[k];
                if (side == 1u) { fa *= 0.5; }
                side = 1u;
            }
        } else {
            lo = x;
            a_lo = a_x;
            fa = a_lo[k];
            if (side == 2u) { fb *= 0.5; }
            side = 2u;
        }
        slow = select(0u, slow + 1u, hi - lo > 0.5 * width);
        bisect = slow >= SLOW_STEPS;
    }
    sw_at = hi;
    return true;
}

// Integrates [t0, t1] as integrate_held. With switches (NSW > 0, an adaptive method), they are
// held at their values at t0, or at the modes a suspended integration kept, and their changes
// located.
fn integrate(t0: real, t1: real) -> u32 {
    if (NSW == 0u || t1 <= t0) { return integrate_held(t0, t1); }
    if (sw_phase == 0u) {
        sw_events = 0u;
        hold_modes(model_switches(t0, model_part(y), q));
        sw_phase = 1u;
    } else {
        for (var k = 0u; k < NSW; k++) { q[MODE_BASE + k] = sw_keep[k]; }
        q[MODE_BASE + NSW] = select(real(0), real(1), sw_phase == 1u);
    }
    let st = integrate_held(t0, t1);
    if (st == SUSPEND) {
        for (var k = 0u; k < NSW; k++) { sw_keep[k] = q[MODE_BASE + k]; }
    } else {
        sw_phase = 0u;
    }
    q[MODE_BASE + NSW] = 0.0;
    return st;
}

// Lets the switches go for the rest of an integration (MAX_EVENTS changes located).
fn let_switches_go() {
    if (NSW == 0u) { return; }
    sw_phase = 2u;
    q[MODE_BASE + NSW] = 0.0;
}

fn integrate_held(t0: real, t1: real) -> u32 {
    if (t1 <= t0) { return 0u; }
    seg_t0 = t0;
    f0 = sys_rhs(t_cur, y);
    if (!all_finite(y) || !all_finite(f0)) { return 3u; }
    let span = t1 - t0;
    let tl = left_limit(t0, t1);
    if (FIXED_STEP) {
        let dt = meta_.dt;
        if (!(dt > 0.0 && finite(dt))) { return 2u; }
        let n_steps = u32(max(ceil(span / dt - 1e-4), 1.0));
        for (var i = step_i; i < n_steps; i++) {
            if (n_acc + n_rej >= meta_.max_steps) { return 1u; }
            if (steps_left == 0u) {
                step_i = i;
                t_cur = t0 + real(i) * dt;
                return SUSPEND;
            }
            steps_left--;
            let t = t0 + real(i) * dt;
            var t_new = t0 + real(i + 1u) * dt;
            if (i + 1u == n_steps) { t_new = t1; }
            let h = t_new - t;
            do_step(t, h, tl);
            if (!all_finite(y1) || !all_finite(f1)) { return 3u; }
            n_acc++;
            st_tl = tl;
            accepted_step(t, t_new, h);
            y = y1;
            f0 = f1;
            if (i + 1u == n_steps) {
                step_i = 0u;
                return 0u;
            }
        }
        return CUT_SHORT;
    }
    let alpha = 1.0 / Q_ORDER - 0.75 * BETA;
    if (!(h_prop > 0.0 && finite(h_prop))) {
        // A starting step below the least step (states at rest long after t = 0, e.g. after
        // a reset; a tiny atol against a fast component) is raised to STEP_START least steps.
        if (meta_.dt > 0.0) {
            h_prop = meta_.dt;
        } else {
            h_prop = max(initial_step(t0, tl), STEP_START * max(meta_.h_min_rel * max(abs(t0), span), STEP_ULPS * EPS * abs(t0)));
        }
    }
    var t = t_cur;
    var rejected_last = false;
    var saw_non_finite = false;
    // A step retaken to end at a located change of the switches (never suspended before it is
    // taken: sw_past is not carried).
    var retaken = false;
    loop {
        if (n_acc + n_rej >= meta_.max_steps) { return 1u; }
        if (steps_left == 0u && !rejected_last && !retaken) {
            t_cur = t;
            return SUSPEND;
        }
        if (steps_left > 0u) { steps_left--; }
        let scale_t = max(abs(t), span);
        // A step must also move t: at least two ulps of t (a last step ends at t1 exactly).
        let h_min = max(meta_.h_min_rel * scale_t, STEP_ULPS * EPS * abs(t));
        var step = min(h_prop, meta_.h_max);
        let snap_to = t1 - (SNAP * span + STEP_ULPS * EPS * abs(t1));
        let last = t + step >= snap_to;
        // The step is what t moves by: where t + step rounds (f32 at large t), the states
        // advance by the rounded step, so that they stay at the time t says.
        if (last) { step = t1 - t; } else { step = step_taken(t, step); }
        // The last step may be shorter: it ends at t1 exactly (a stopping point an ulp away).
        if (step < h_min && !last) { return select(2u, 3u, saw_non_finite); }
        let ok = do_step(t, step, tl);
        var e = BIG;
        if (ok) { e = error_norm(); }
        if (e >= BIG) { saw_non_finite = true; }
        if (e <= 1.0) {
            var t_new = t + step;
            if (last) { t_new = t1; }
            if (NEEDS_F1) { f1 = sys_rhs(min(t_new, tl), y1); }
            if (!all_finite(f1)) {
                saw_non_finite = true;
                h_prop = step * STEP_FAC_MIN;
                if (last && t + h_prop >= snap_to && !shrink_before_stretch(t, snap_to)) { return 3u; }
                n_rej++;
                rejected_last = true;
                retaken = false;
                continue;
            }
            // A switch that changes inside the step: the step is taken again to end just after
            // the change, and the switches take their new values there. A step retaken so ends
            // at the change.
            var flip = retaken;
            retaken = false;
            if (NSW > 0u && sw_phase == 1u && !flip) {
                st_t0 = t;
                st_t1 = t_new;
                st_h = step;
                prepare_dense(step);
                if (locate_change(t, t_new, step, tl)) {
                    sw_events++;
                    if (sw_at < t_new && sw_at - t >= h_min) {
                        n_rej++;
                        h_prop = sw_at - t;
                        retaken = true;
                        continue;
                    }
                    if (sw_at < t_new) {
                        // At the step's start: the switches change there.
                        n_rej++;
                        hold_modes(sw_past);
                        if (sw_events >= MAX_EVENTS) { let_switches_go(); }
                        f0 = sys_rhs(min(t, tl), y);
                        continue;
                    }
                    // At its end.
                    flip = true;
                }
            }
            n_acc++;
            st_tl = tl;
            accepted_step(t, t_new, step);
            y = y1;
            f0 = f1;
            // safety · e^(−α) · e_prev^β from logarithms: one log per step.
            let ln_e = log_r(max(e, STEP_ERR_MIN));
            var fac = STEP_SAFETY * exp_r(BETA * ln_err_prev - alpha * ln_e);
            fac = clamp(fac, STEP_FAC_MIN, STEP_FAC_MAX);
            if (rejected_last) { fac = min(fac, 1.0); }
            ln_err_prev = max(ln_e, log_r(STEP_ERR_PREV_MIN));
            rejected_last = false;
            saw_non_finite = false;
            if (!last) { h_prop = step * fac; }
            t = t_new;
            if (last) { return 0u; }
            if (NSW > 0u && flip && sw_phase == 1u) {
                if (sw_events >= MAX_EVENTS) { let_switches_go(); } else { hold_modes(sw_past); }
                f0 = sys_rhs(min(t, tl), y);
            }
        } else {
            n_rej++;
            rejected_last = true;
            retaken = false;
            var fac: real = STEP_FAC_MIN;
            if (e < BIG) { fac = clamp(STEP_SAFETY * exp_r(-alpha * log_r(e)), STEP_FAC_MIN, 1.0); }
            h_prop = step * fac;
            if (last && t + h_prop >= snap_to && !shrink_before_stretch(t, snap_to)) {
                return select(2u, 3u, saw_non_finite);
            }
        }
    }
    return CUT_SHORT;
}

{{DRIVER}}
