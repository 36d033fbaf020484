// Integrates one virtual subject per thread, in f32 or f64, with the same step control,
// dense-output metrics and status codes as the CPU reference (src/backend/cpu.rs,
// src/solver/integrator.rs, src/metrics/accumulate.rs) and the WGSL kernel
// (shaders/integrate.wgsl). What the subject goes through is the driver's (slot DRIVER, the
// kernel `integrate` itself): an arm's dosing schedule (kernels/arm_driver.cu) or a dataset
// subject's records as a program (kernels/records_driver.cu).
//
// Slots filled by src/backend/cuda/kernel.rs: REAL, SIZES (with the metric searches'
// EXTREMUM_CGOLD, EXTREMUM_XTOL, EXTREMUM_ITERS, ROOT_ITERS and ROOT_RTOL for the precision,
// and OBSERVE: whether accepted steps are observed for metrics and profiles), TABLEAUS
// (coefficients from build.rs), MODEL (generated model functions), METRICS (each metric's kind and output), STAGES and STEP (the
// method, from src/backend/stepgen.rs), DRIVER.
//
// Everything a thread keeps is meant to live in registers: every per-subject array is indexed
// with compile-time indices only (loops over NS, NO, NA, NY and NM are unrolled, and a value at a
// run-time index, such as a dose's compartment or an LU pivot row, is reached by a predicated
// loop over the compile-time ones), and every function is inlined, so no pointer to a
// per-thread array escapes. ptxas's report (tests/cuda_codegen.rs) checks it.

typedef {{REAL}} real;
{{SIZES}}
{{TABLEAUS}}

#define BIG ((real)3.0e38)
// Steady states as in src/backend/records.rs (`SsIterations`), with its constants (SS_*, from
// src/solver/tableau_data.rs, where each rule is told): stop when the change still to come is
// below SS_FRACTION of the tolerance, or the change sits at the noise floor (SS_NOISE tolerance
// units) without shrinking (two ratios of changes at least SS_FLAT that are not a slow mode
// settling, SS_SETTLING) or for SS_NOISE_CYCLES intervals — unless a state moves by the same
// amount every interval (SS_TRANSLATION, SS_TRANSLATING) — or every state changed by round-off
// only (SS_ULPS ulps); a slow approach whose ratio has held steady (SS_STEADY of 1 − ρ), ρ from
// SS_JUMP up to SS_JUMP_MAX, jumps to the end of the geometric series of its changes.
#define CUT_SHORT 254u
// A steady-state dose whose steady state was not found (Status::NoSteadyState).
#define NO_STEADY_STATE 4u
#define FI __device__ __forceinline__
// Attributes of the driver's entry `integrate` (a register cap, launch bounds), set by the
// CUDA backend's tuning (src/backend/cuda/mod.rs, CudaTuning): none by default.
#ifndef VPOP_LAUNCH_BOUNDS
#define VPOP_LAUNCH_BOUNDS
#endif

FI real clampr(real x, real a, real b) { return fmin(fmax(x, a), b); }
// x where it is finite, else 0 (a derivative that is not finite at a point, as the WGSL
// kernels' finite_or_0 and the CPU reference take it).
FI real finite_or_0(real x) { return isfinite(x) ? x : (real)0; }
#define clamp clampr

struct Meta {
    unsigned n, n_admin, n_fixed, n_times;
    // n_lines: dose lines, whose administrations' end indices follow the administrations.
    unsigned wants_extrema, max_steps, off_fixed, off_times, off_metrics, n_lines;
    // eps: the precision's machine epsilon; snap: a step that ends within snap·span of a
    // stopping point is stretched to it.
    real rtol, atol, dt, h_max, h_min_rel, end_time, trough, eps, snap;
};

{{MODEL}}

{{METRICS}}

// Sub's arrays (element type, name, length), the stage and dense-output vectors of the
// method aside (STAGE_ARRAYS, generated with the step). Sub holds a pointer to each
// (SUB_POINTER), and SUB_STORAGE, in the kernel that makes a Sub named S, declares each as a
// local array of its own and points S at it. NVVM keeps in registers the arrays of a local
// object of up to about 8 KB only, so a Sub holding them all (a 42-state model's f64 Rodas4
// kernel: 8.6 KB) stayed whole in local memory, every access a load or a store. Apart, each
// array is small enough, and the pointers fold away once Sub's scalars are in registers
// (tests/cuda_codegen.rs checks that no library model's kernel keeps an object in local
// memory). One list for both, so that no pointer is left without its storage.
#define SUB_ARRAYS(X) \
    /* The parameters, then what model_prepare computes from them alone. */ \
    X(real, q, NP1) \
    X(real, dose_v, NS4) \
    X(real, rates, NS) \
    X(real, y, NY) X(real, y1, NY) X(real, f0, NY) X(real, f1, NY) \
    X(real, err, NY) X(real, tmp, NY) X(real, dense_v, NY) X(real, dfdt_v, NY) \
    /* The factors of W (NLU: n² dense, or the entries of the sparse factors). */ \
    X(real, lu, NLU) \
    X(int, piv, NS) \
    X(real, gq, NOS) \
    X(real, vals, NM1) X(real, aux, NM1) \
    /* Per output, for the current step: its interior maximum and minimum where a metric */ \
    /* needs them (observe). */ \
    X(real, imax_t, NO) X(real, imax_c, NO) X(real, imin_t, NO) X(real, imin_c, NO)
#define SUB_POINTER(type, name, len) type* name;
#define SUB_BIND(type, name, len) type S##_##name[len]; S.name = S##_##name;

struct Sub {
    // The kernel's parameter itself (__grid_constant__): read in place, never copied.
    const Meta* __restrict__ m;
    const real* __restrict__ arm;
    real* __restrict__ profiles;
    unsigned sid;
    // The AUC quadratures' running totals up to the last stopping point (sized), quadrature a
    // at qbase[a * n + sid]: the arm kernel's metrics buffer, whose slots are free until the
    // metrics are written at the end (there are no more quadratures than metrics). In global
    // memory, since registers kept for them pushed large models' f64 kernels into local memory.
    real* qbase;
    SUB_ARRAYS(SUB_POINTER)
    real subj_scale;
    real w_si, w_sj;
    real st_t0, st_t1, st_h, h_prop, ln_err_prev, t_prev;
    // The left limit of the current segment's end (set before each observed step), and of the
    // last observed step its end and latest evaluation time: outputs read at a step's end, or
    // at a sample or a stop there, are the left limit, before a jump in time at the stop (a
    // window [a, b] sees the output up to b-; the CPU reference's MetricAccumulator alike).
    // seg_t0: the start of the current segment (the last stopping point), Tmax's tie
    // (tmax_moves).
    real st_tl, seg_t0, seg_t1, seg_te;
    unsigned status, n_acc, n_rej, n_rhs, n_jac, next_sample, fs;
#if HAS_OCCASIONS || OWN_STOPS
    // Every occasion's parameters, `params[(o * NP + p) * n + i]`, then (OWN_STOPS) the
    // subject's own stopping points (src/backend/gpu.rs, pack_params).
    const real* __restrict__ params;
#endif
#if HAS_OCCASIONS
    // Parameters switch between occasions (src/backend/gpu.rs, occasion_table): the current
    // occasion (q and dose_v are its own); runs of administrations of earlier occasions than
    // occ_live have nothing left to give.
    unsigned occ, occ_live;

    // Occasion o's parameters, then what model_prepare computes from them.
    FI void params_of(unsigned o, real* qo) {
        #pragma unroll
        for (int p = 0; p < NP; p++) qo[p] = __ldg(&params[((size_t)o * NP + p) * m->n + sid]);
        model_prepare(qo);
    }
#endif
{{STAGES}}

    FI bool all_finite(const real* v) {
        bool ok = true;
        #pragma unroll
        for (int j = 0; j < NY; j++) ok = ok && isfinite(v[j]);
        return ok;
    }

    // The model extended with infusion inputs and an AUC state for each output an area
    // metric reads (quad_output; NA of them, none in the records kernel). An output that is not
    // finite adds nothing to its quadrature: its metrics are undefined (observe), the states
    // and the other outputs' metrics go on (the CPU reference's WithQuadrature alike).
    FI void sys_rhs(real t, const real* v, real* out) {
        real f[NS];
        model_rhs(t, v, q, f);
        #pragma unroll
        for (int j = 0; j < NS; j++) out[j] = f[j] + rates[j];
#if NA > 0
        real g[NO];
        model_outputs(t, v, q, g);
        #pragma unroll
        for (int a = 0; a < NA; a++) out[NS + a] = finite_or_0(g[quad_output(a)]);
#endif
        n_rhs++;
    }

    // The outputs, for the metrics: with the switches evaluated, not held at their modes (as
    // the CPU reference's outputs; the quadratures in sys_rhs read the modes).
    FI void outs(real t, const real* v, real* c) {
#if NSW > 0
        const real held = q[MODE_BASE + NSW];
        q[MODE_BASE + NSW] = (real)0;
        model_outputs(t, v, q, c);
        q[MODE_BASE + NSW] = held;
#else
        model_outputs(t, v, q, c);
#endif
    }

    // The dosing values (lag, bioavailability, modelled rate and duration per state) of
    // parameters qo: the model's dosing declarations at t = 0 with no amounts.
    FI void dosing_of(const real* qo, real* dv) {
        real zero[NS];
        #pragma unroll
        for (int j = 0; j < NS; j++) zero[j] = 0;
        model_dosing((real)0, zero, qo, dv);
    }

    // The model's initial states with the parameters in force (a reset in a later occasion:
    // that occasion's, as NONMEM's initial conditions) and no infusion running (a subject's
    // start, a reset); the AUC quadratures are left to the caller.
    FI void initial_states() {
        real zero[NS], y0[NS];
        #pragma unroll
        for (int j = 0; j < NS; j++) zero[j] = 0;
        model_init((real)0, zero, q, y0);
        #pragma unroll
        for (int j = 0; j < NS; j++) { y[j] = y0[j]; rates[j] = 0; }
    }

{{W}}

{{STEP}}

    // Component j of v as the step control measures its size: a model state as it is, an AUC
    // quadrature (restarted from 0 at each stopping point, stop_pre) from its running total
    // qbase, as the CPU reference's scale_base (src/solver/integrator.rs).
    FI real sized(const real* v, int j) {
#if NA > 0
        if (j >= NS) return qbase[(size_t)(j - NS) * m->n + sid] + v[j];
#endif
        return v[j];
    }

    FI real error_norm() {
        real s = 0;
        #pragma unroll
        for (int j = 0; j < NY; j++) {
            real sc = m->atol + m->rtol * fmax(fabs(sized(y, j)), fabs(sized(y1, j)));
            real r = err[j] / sc;
            s += r * r;
        }
        real e = sqrt(s * ((real)1 / (real)NY));
        if (!isfinite(e) || !all_finite(y1)) return BIG;
        return e;
    }

    // The latest time at which the steps of a segment [t0, t1) evaluate the system: four to
    // eight ulps before t1 (a model reading t may jump at a stopping point; the jump belongs
    // to the next segment), and not before t0 (a segment a few ulps long starts on the new
    // side of a jump at its start). As `left_limit_shifted` on the CPU (src/solver/mod.rs):
    // 4·|t1|·ε is exact, so a fused multiply-add changes nothing; where the model's time is
    // shifted (TIME_SHIFT: a steady state's interval), ulps of the larger of t1 and the
    // model's time t1 + q[T_SLOT], so that the model's time there is before a jump whose
    // stop t1 is.
    FI real left_limit(real t0, real t1) {
#if TIME_SHIFT
        const real scale = fmax(fabs(t1), fabs(t1 + q[T_SLOT]));
#else
        const real scale = fabs(t1);
#endif
        return fmax(t1 - fmax((real)4 * scale * m->eps, (real)1e-30), t0);
    }

    // Hairer, Nørsett & Wanner's starting step; tl: the left limit of the segment's end.
    FI real initial_step(real t0, real tl) {
        real d0 = 0, d1 = 0;
        #pragma unroll
        for (int j = 0; j < NY; j++) {
            const real v = sized(y, j);
            real sc = m->atol + m->rtol * fabs(v);
            d0 += (v / sc) * (v / sc);
            d1 += (f0[j] / sc) * (f0[j] / sc);
        }
        d0 = sqrt(d0 / (real)NY);
        d1 = sqrt(d1 / (real)NY);
        real h0 = (d0 < (real)1e-5 || d1 < (real)1e-5) ? (real)1e-6 : (real)0.01 * d0 / d1;
        #pragma unroll
        for (int j = 0; j < NY; j++) tmp[j] = y[j] + h0 * f0[j];
        sys_rhs(fmin(t0 + h0, tl), tmp, f1);
        real d2 = 0;
        #pragma unroll
        for (int j = 0; j < NY; j++) {
            real sc = m->atol + m->rtol * fabs(sized(y, j));
            real r = (f1[j] - f0[j]) / sc;
            d2 += r * r;
        }
        d2 = sqrt(d2 / (real)NY) / h0;
        real dm = fmax(d1, d2);
        real h1 = dm <= (real)1e-15 ? fmax(h0 * (real)1e-3, (real)1e-6) : pow((real)0.01 / dm, (real)1 / Q_ORDER);
        real h = fmin((real)100 * h0, h1);
        return (isfinite(h) && h > (real)0) ? h : (real)1e-6;
    }

    // Metric kinds: 0 auc, 1 cmax, 2 tmax, 3 cmin, 4 cavg, 5 ctrough, 6 time above x, 7 at x.
    // A metric's kind and output are compile-time constants (METRICS); its window and
    // threshold are read from the arm data.
    FI void spec(unsigned mi, unsigned& kind, unsigned& k, bool& win, real& a, real& b, real& x) {
        const real* s = arm + m->off_metrics + mi * 6;
        kind = metric_kind(mi);
        k = metric_output(mi);
        win = __ldg(&s[2]) != (real)0;
        a = __ldg(&s[3]);
        b = __ldg(&s[4]);
        x = __ldg(&s[5]);
    }

    // Whether output value c moves Tmax metric mi (as the CPU reference's tmax_moves): any
    // higher value within the segment of its time, one higher by more than rtol relative in a
    // later segment (peaks equal to within what the solver resolves keep the first one's time).
    FI bool tmax_moves(unsigned mi, real c) const {
        const real tie = fmax(m->rtol, (real)TMAX_TIE_EPS * m->eps);
        return c > aux[mi] && (vals[mi] >= seg_t0 || c - aux[mi] > tie * fabs(aux[mi]));
    }

    FI void update_extreme(unsigned mi, unsigned kind, real t, real c) {
        if (kind == 1u) {
            if (c > vals[mi]) vals[mi] = c;
        } else if (kind == 2u) {
            if (tmax_moves(mi, c)) { aux[mi] = c; vals[mi] = t; }
        } else if (kind == 3u) {
            if (c < vals[mi]) vals[mi] = c;
        }
    }

    FI real output_at(real t, unsigned k) {
        real c[NO];
        dense_into(t);
        outs(fmin(t, fmin(st_t1, st_tl)), dense_v, c);
        return c[k];
    }

    // An output affine in the states (output_affine(k)) follows the dense output's polynomial
    // (degree 4 at most) on a step: the quartic through its values at u = 0, 1, 2, 3, 4
    // (u = 4 (t - t0) / h), from Newton's forward differences expanded into the coefficients
    // of 1, u, ..., u^4, as the CPU reference's Quartic. Made for each search: the CPU
    // reference and the WGSL kernel keep a step's quartic for the searches after the first,
    // which would hold five more registers per output here, where the largest models' f64
    // kernels are at the limit.
    FI void quartic(unsigned k, real ca, real cb, real* c) {
        const real t0 = st_t0, h = st_t1 - st_t0;
        const real f1 = output_at(t0 + (real)0.25 * h, k);
        const real f2 = output_at(t0 + (real)0.5 * h, k);
        const real f3 = output_at(t0 + (real)0.75 * h, k);
        const real a1 = f1 - ca, a2 = f2 - f1, a3 = f3 - f2, a4 = cb - f3;
        const real b1 = a2 - a1, b2 = a3 - a2, b3 = a4 - a3;
        const real e1 = b2 - b1, e2 = b3 - b2;
        const real da = a1, db = b1, dc = e1, dd = e2 - e1;
        c[0] = ca;
        c[1] = da - (real)0.5 * db + (real)QUARTIC_THIRD * dc - (real)0.25 * dd;
        c[2] = (real)0.5 * db - (real)0.5 * dc + (real)QUARTIC_ELEVEN_24THS * dd;
        c[3] = (real)QUARTIC_SIXTH * dc - (real)0.25 * dd;
        c[4] = (real)QUARTIC_TWENTY_FOURTH * dd;
    }

    // P(u), P'(u), P''(u) of the quartic c, by Horner's rule.
    FI void quartic_eval(const real* c, real u, real& p, real& dp, real& ddp) {
        p = (((c[4] * u + c[3]) * u + c[2]) * u + c[1]) * u + c[0];
        dp = (((real)4 * c[4] * u + (real)3 * c[3]) * u + (real)2 * c[2]) * u + c[1];
        ddp = ((real)12 * c[4] * u + (real)6 * c[3]) * u + (real)2 * c[2];
    }

    // The root in [lo, hi] of P' (slope) or of P - thr (not slope), given opposite signs at
    // the ends: Newton's method kept inside the bracket (bisection where a step would leave
    // it), as the CPU reference's Quartic::root. False when the signs do not differ.
    FI bool quartic_root(const real* c, bool slope, real thr, real lo, real hi, real& root) {
        real p, dp, ddp;
        quartic_eval(c, lo, p, dp, ddp);
        const real glo = slope ? dp : p - thr;
        quartic_eval(c, hi, p, dp, ddp);
        const real ghi = slope ? dp : p - thr;
        if (glo == (real)0) { root = lo; return true; }
        if (ghi == (real)0) { root = hi; return true; }
        if ((glo > (real)0) == (ghi > (real)0) || !isfinite(glo) || !isfinite(ghi)) return false;
        const bool lo_positive = glo > (real)0;
        real u = lo + glo / (glo - ghi) * (hi - lo);
        for (int it = 0; it < QUARTIC_ITERS; it++) {
            quartic_eval(c, u, p, dp, ddp);
            const real gu = slope ? dp : p - thr, du = slope ? ddp : dp;
            if (gu == (real)0) { root = u; return true; }
            if ((gu > (real)0) == lo_positive) lo = u; else hi = u;
            real next = u - gu / du;
            if (!(next > lo && next < hi)) next = (real)0.5 * (lo + hi);
            if (fabs(next - u) <= (real)4 * m->eps * fmax(fabs(u), (real)1)
                || hi - lo <= (real)4 * m->eps * fmax(fabs(hi), (real)1)) { root = next; return true; }
            u = next;
        }
        root = u;
        return true;
    }

    // The extremum of output k inside the step, whose ends have outputs ca and cb: for an
    // affine output, the root of the quartic's slope; otherwise (or when the quartic's slope
    // does not change sign) Brent's minimisation of -sign * c (parabolic interpolation
    // safeguarded by golden sections), as the CPU reference's refine_extremum.
    FI void refine_extremum(unsigned k, bool maximize, real ca, real cb, real& tm, real& cm) {
        const real sign = maximize ? (real)1 : (real)-1;
        if (output_affine(k)) {
            real p, d0, d4, dd, u, c[5];
            quartic(k, ca, cb, c);
            quartic_eval(c, (real)0, p, d0, dd);
            quartic_eval(c, (real)4, p, d4, dd);
            if (sign * d0 > (real)0 && sign * d4 < (real)0
                && quartic_root(c, true, (real)0, (real)0, (real)4, u)) {
                tm = st_t0 + (st_t1 - st_t0) * u / (real)4;
                cm = output_at(tm, k);
                return;
            }
        }
        real a = st_t0, b = st_t1;
        const real xtol = (real)EXTREMUM_XTOL * (b - a);
        real x = a + (real)EXTREMUM_CGOLD * (b - a), w = x, v = x;
        real fx = -sign * output_at(x, k), fw = fx, fv = fx;
        real d = 0, e = 0;
        for (int it = 0; it < EXTREMUM_ITERS; it++) {
            real xm = (real)0.5 * (a + b);
            real tol1 = xtol + (real)2 * m->eps * fabs(x);
            real tol2 = (real)2 * tol1;
            if (fabs(x - xm) <= tol2 - (real)0.5 * (b - a)) break;
            bool parabolic = false;
            if (fabs(e) > tol1) {
                real r = (x - w) * (fx - fv);
                real q = (x - v) * (fx - fw);
                real p = (x - v) * q - (x - w) * r;
                q = (real)2 * (q - r);
                if (q > (real)0) p = -p;
                q = fabs(q);
                real e_prev = e;
                e = d;
                if (fabs(p) < fabs((real)0.5 * q * e_prev) && p > q * (a - x) && p < q * (b - x)) {
                    d = p / q;
                    real u = x + d;
                    if (u - a < tol2 || b - u < tol2) d = xm >= x ? tol1 : -tol1;
                    parabolic = true;
                }
            }
            if (!parabolic) {
                e = x >= xm ? a - x : b - x;
                d = (real)EXTREMUM_CGOLD * e;
            }
            real u = fabs(d) >= tol1 ? x + d : (d > (real)0 ? x + tol1 : x - tol1);
            real fu = -sign * output_at(u, k);
            if (fu <= fx) {
                if (u >= x) a = x; else b = x;
                v = w; fv = fw; w = x; fw = fx; x = u; fx = fu;
            } else {
                if (u < x) a = u; else b = u;
                if (fu <= fw || w == x) { v = w; fv = fw; w = u; fw = fu; }
                else if (fu <= fv || v == x || v == w) { v = u; fv = fu; }
            }
        }
        tm = x; cm = -sign * fx;
    }

    // Where output k crosses thr in [a0, b0] inside the step, whose ends have outputs ca and
    // cb: for an affine output, the root of the quartic minus thr; otherwise (or when its sign
    // does not change there) the Illinois variant of regula falsi.
    FI real crossing(unsigned k, real thr, real a0, real b0, real g0, real g1, real ca, real cb) {
        if (output_affine(k)) {
            const real t0 = st_t0, h = st_t1 - st_t0, per_time = (real)4 / h;
            real u, c[5];
            quartic(k, ca, cb, c);
            if (quartic_root(c, false, thr, (a0 - t0) * per_time, (b0 - t0) * per_time, u))
                return t0 + h * u / (real)4;
        }
        real a = a0, b = b0, ga = g0, gb = g1;
        int side = 0;
        const real tol = (real)ROOT_RTOL * (b - a) + (real)4 * m->eps * fabs(b);
        real x = a;
        for (int it = 0; it < ROOT_ITERS; it++) {
            x = (a * gb - b * ga) / (gb - ga);
            if (!isfinite(x) || x <= a || x >= b) x = (real)0.5 * (a + b);
            real gx = output_at(x, k) - thr;
            if ((b - a) < tol) break;
            // The boundary of c >= thr, not any zero of c - thr (a plateau at thr is above it).
            if ((gx >= (real)0) == (gb >= (real)0)) {
                b = x; gb = gx;
                if (side == -1) ga *= (real)0.5;
                side = -1;
            } else {
                a = x; ga = gx;
                if (side == 1) gb *= (real)0.5;
                side = 1;
            }
        }
        return x;
    }

    FI void output_slopes(real t, const real* v, const real* f, real* d) {
        real gj[NOS];
        model_output_jac(t, v, q, gj);
        #pragma unroll
        for (int k = 0; k < NO; k++) {
            real s = 0;
            #pragma unroll
            for (int j = 0; j < NS; j++) s += gj[k * NS + j] * f[j];
            d[k] = s;
        }
        // Outputs that depend on time directly: ∂g/∂t.
        if (OUTPUTS_USE_TIME) {
            real dg[NO];
            model_output_dfdt(t, v, q, dg);
            #pragma unroll
            for (int k = 0; k < NO; k++) d[k] += dg[k];
        }
    }

    FI void write_profile(unsigned j, const real* c) {
        #pragma unroll
        for (int k = 0; k < NO; k++)
            profiles[((size_t)k * m->n + sid) * m->n_times + j] = c[k];
    }

    FI void observe() {
        const real t0 = st_t0, t1 = st_t1, te = fmin(t1, st_tl);
        seg_t1 = t1;
        seg_te = te;
        real c0[NO], c1[NO], dc0[NO], dc1[NO], c[NO];
        outs(t0, y, c0);
        outs(te, y1, c1);
        const real* times = arm + m->off_times;
        while (next_sample < m->n_times && __ldg(&times[next_sample]) <= t1) {
            real ts = __ldg(&times[next_sample]);
            if (ts > t0) {
                dense_into(ts);
                outs(fmin(ts, te), dense_v, c);
                write_profile(next_sample, c);
            }
            next_sample++;
        }
        #pragma unroll
        for (int k = 0; k < NO; k++) { dc0[k] = 0; dc1[k] = 0; }
        if (m->wants_extrema) {
            output_slopes(t0, y, f0, dc0);
            output_slopes(te, y1, f1, dc1);
        }
        // Per output, for this step: interior maximum refined (1), minimum (2). An extremum
        // search is called once per metric that needs it (the refined extremum is shared);
        // calling it once per output instead, after a pass that notes what the metrics need,
        // compiles faster but pushed the largest model's f64 kernels past 255 registers.
        unsigned ifound[NO];
        #pragma unroll
        for (int k = 0; k < NO; k++) ifound[k] = 0;
        #pragma unroll
        for (unsigned mi = 0; mi < NM; mi++) {
            unsigned kind, k;
            bool win;
            real a, b, x;
            spec(mi, kind, k, win, a, b, x);
            if (!win || t0 < a || t1 > b) continue;
            // An output that is not finite at a step in the window leaves its extremes, areas
            // and times above undefined: NaN in each running value, which no later comparison
            // or sum undoes (as the CPU reference's MetricAccumulator).
            if (!(isfinite(c0[k]) && isfinite(c1[k])) && (kind <= 4u || kind == 6u)) {
                vals[mi] = nan("");
                aux[mi] = nan("");
                continue;
            }
            if (kind == 1u || kind == 2u) {
                // A new maximum where the output ends the step flat (a plateau) may have been
                // reached inside the step: Tmax is the first time it is. In time order (a Tmax
                // keeps the first of maxima within its tie): the plateau's start or the interior
                // maximum, then the step's end.
                if (kind == 2u && !output_affine(k) && dc1[k] == (real)0 && c0[k] < c1[k] && tmax_moves(mi, c1[k]))
                    update_extreme(mi, kind, crossing(k, c1[k], t0, t1, c0[k] - c1[k], (real)0, c0[k], c1[k]), c1[k]);
                if (dc0[k] > (real)0 && dc1[k] < (real)0) {
                    if (!(ifound[k] & 1u)) {
                        refine_extremum(k, true, c0[k], c1[k], imax_t[k], imax_c[k]);
                        ifound[k] |= 1u;
                    }
                    update_extreme(mi, kind, imax_t[k], imax_c[k]);
                }
                update_extreme(mi, kind, t1, c1[k]);
            } else if (kind == 3u) {
                update_extreme(mi, kind, t1, c1[k]);
                if (dc0[k] < (real)0 && dc1[k] > (real)0) {
                    if (!(ifound[k] & 2u)) {
                        refine_extremum(k, false, c0[k], c1[k], imin_t[k], imin_c[k]);
                        ifound[k] |= 2u;
                    }
                    update_extreme(mi, kind, imin_t[k], imin_c[k]);
                }
            } else if (kind == 6u) {
                const real g0 = c0[k] - x, g1 = c1[k] - x;
                // The crossings inside the step (none, one, or two around an interior extremum
                // beyond the threshold), found at one call site of the crossing search.
                unsigned n = 0;
                real tm = 0, gm = 0;
                if (g0 >= (real)0 && g1 >= (real)0) {
                    if (dc0[k] < (real)0 && dc1[k] > (real)0) {
                        if (!(ifound[k] & 2u)) {
                            refine_extremum(k, false, c0[k], c1[k], imin_t[k], imin_c[k]);
                            ifound[k] |= 2u;
                        }
                        // Both ends above: the output may dip below around an interior minimum.
                        if (imin_c[k] < x) { n = 2; tm = imin_t[k]; gm = imin_c[k] - x; }
                    }
                } else if (g0 < (real)0 && g1 < (real)0) {
                    if (dc0[k] > (real)0 && dc1[k] < (real)0) {
                        if (!(ifound[k] & 1u)) {
                            refine_extremum(k, true, c0[k], c1[k], imax_t[k], imax_c[k]);
                            ifound[k] |= 1u;
                        }
                        // Both ends below: it may rise above around an interior maximum.
                        if (imax_c[k] >= x) { n = 2; tm = imax_t[k]; gm = imax_c[k] - x; }
                    }
                } else n = 1;
                real x0 = 0, x1 = 0;
                #pragma unroll 1
                for (unsigned i = 0; i < n; i++) {
                    const bool first = i == 0u;
                    const real lo = first ? t0 : tm, glo = first ? g0 : gm;
                    const real hi = first && n == 2u ? tm : t1, ghi = first && n == 2u ? gm : g1;
                    const real xc = crossing(k, x, lo, hi, glo, ghi, c0[k], c1[k]);
                    if (first) x0 = xc; else x1 = xc;
                }
                real above;
                if (n == 2u) above = g0 >= (real)0 ? (t1 - t0) - (x1 - x0) : x1 - x0;
                else if (n == 1u) above = g0 >= (real)0 ? x0 - t0 : t1 - x0;
                else above = g0 >= (real)0 ? t1 - t0 : (real)0;
                vals[mi] += above;
            } else if (kind == 7u && x > t0 && x <= t1) {
                vals[mi] = output_at(x, k);
            }
        }
    }

    FI void stop_pre(real t) {
        real c[NO];
        outs(seg_t1 == t && seg_te <= t ? seg_te : t, y, c);
        if (t == (real)0)
            while (next_sample < m->n_times && arm[m->off_times + next_sample] <= (real)0) {
                write_profile(next_sample, c);
                next_sample++;
            }
        #pragma unroll
        for (unsigned mi = 0; mi < NM; mi++) {
            unsigned kind, k;
            bool win;
            real a, b, x;
            spec(mi, kind, k, win, a, b, x);
            real cv = c[k];
            if (kind == 5u) {
                if (t == m->trough) vals[mi] = cv;
            } else if (kind == 7u) {
                if (x == (real)0 && t == (real)0) vals[mi] = cv;
            } else if (kind == 0u || kind == 4u) {
                // aux sums the areas of the segments between stops inside the window (the
                // quadrature holds the area since the previous stop).
                // vals collects what each addition rounds off until b (compensated summation,
                // as the CPU reference's aux_lo; a register array of its own pushed large
                // models' f64 kernels into local memory).
                if (win) {
                    if (t == a) { aux[mi] = 0; vals[mi] = 0; }
                    else if (a < t && t <= b) {
                        const real s = aux[mi] + y[NS + metric_quad(mi)];
                        const real bb = s - aux[mi];
                        vals[mi] += (aux[mi] - (s - bb)) + (y[NS + metric_quad(mi)] - bb);
                        aux[mi] = s;
                        if (t == b) {
                            const real area = aux[mi] + vals[mi];
                            vals[mi] = kind == 4u ? area / (b - a) : area;
                        }
                    }
                }
            } else if (kind >= 1u && kind <= 3u) {
                if (win && a < t && t <= b) update_extreme(mi, kind, t, cv);
            }
        }
        // The quadratures start again from 0, their totals kept for the step control (sized):
        // in f32 a value as small as the area since the last stop loses nothing to a large
        // running total (src/backend/cpu.rs alike).
        #pragma unroll
        for (int qa = 0; qa < NA; qa++) {
            qbase[(size_t)qa * m->n + sid] += y[NS + qa];
            y[NS + qa] = 0;
        }
    }

    FI void stop_post(real t) {
        // The right limit begins the next segment.
        seg_t0 = t;
        if (!m->wants_extrema) return;
        real c[NO];
        outs(t, y, c);
        #pragma unroll
        for (unsigned mi = 0; mi < NM; mi++) {
            unsigned kind, k;
            bool win;
            real a, b, x;
            spec(mi, kind, k, win, a, b, x);
            if (kind >= 1u && kind <= 3u && win && a <= t && t < b) update_extreme(mi, kind, t, c[k]);
        }
    }

    // Steady-state iterations (both drivers): the last interval's change (SS_NONE: none since the
    // start or a jump), ratio of changes (−1: none), the last jump's ratio (0: none) and the
    // latest ratio, how many intervals in a row the change has been at the noise level, whether every state changed by round-off only, and the jump chosen.
    real ss_prev;
    real ss_prev_rho;
    real ss_rho_jump;
    real ss_rho;
    unsigned ss_stalled;
    bool ss_still;
    // The last ss_change in units of the tolerance at the iterate x (the ratio's units).
    real ss_change_at_x;
    bool ss_drift;
    real ss_g;
    // How many intervals in a row some state changed by what it changed over the one before
    // (SS_TRANSLATION), and whether the changes of the interval before are at hand (none since
    // the start or a jump).
    unsigned ss_translating;
    bool ss_have_d;

    // The iterations start anew (no previous change or ratio).
    FI void ss_begin() {
        ss_prev = SS_NONE;
        ss_prev_rho = (real)-1;
        ss_rho_jump = 0;
        ss_stalled = 0;
        ss_translating = 0;
        ss_have_d = false;
    }

    // After an interval from the iterate x, dprev holding each state's change over the interval
    // before: whether some state moved by the same amount again (by more than SS_FRACTION of
    // its tolerance, measured to better than SS_TRANSLATION of it), as `SsIterations::next` on
    // the CPU; dprev takes this interval's changes.
    FI void ss_translation(const real* x, real* dprev) {
        bool translates = false;
        #pragma unroll
        for (int j = 0; j < NS; j++) {
            const real d = y[j] - x[j];
            const real w = m->atol + m->rtol * fabs(y[j]);
            translates = translates || (ss_have_d && fabs(d) >= SS_FRACTION * w
                && (real)2 * SS_ULPS * m->eps * fabs(y[j]) <= SS_TRANSLATION * fabs(d)
                && fabs(d - dprev[j]) <= SS_TRANSLATION * fabs(d));
            dprev[j] = d;
        }
        ss_have_d = true;
        ss_translating = !translates ? 0u
            : ss_translating + 1 < SS_TRANSLATING ? ss_translating + 1 : SS_TRANSLATING;
    }

    // The largest change of the model states from the iterate x over an interval, in units of
    // the tolerance at the states (and ss_still, and ss_change_at_x: in units of the tolerance
    // at x).
    FI real ss_change(const real* x) {
        real change = 0;
        real at_x = 0;
        ss_still = true;
        #pragma unroll
        for (int j = 0; j < NS; j++) {
            const real w = m->atol + m->rtol * fabs(y[j]);
            const real wx = m->atol + m->rtol * fabs(x[j]);
            const real d = fabs(y[j] - x[j]);
            change = fmax(change, d / w);
            at_x = fmax(at_x, d / wx);
            ss_still = ss_still && d <= SS_ULPS * m->eps * fabs(y[j]);
        }
        ss_change_at_x = at_x;
        return change;
    }

    // ss_change, and x takes the states.
    FI real ss_take_change(real* x) {
        const real change = ss_change(x);
        #pragma unroll
        for (int j = 0; j < NS; j++) x[j] = y[j];
        return change;
    }

    // After an interval changed the state by `change`: whether the steady state is reached
    // (ss_prev, ss_prev_rho and ss_stalled follow, ss_g is the jump ss_next makes, and ss_drift
    // says two ratios in a row were flat but below SS_JUMP_MAX). As
    // `SsIterations::next` on the CPU: geometric convergence leaves about change·ρ/(1−ρ) to
    // come (ρ at least the last jump's, whose mode the modes it stirred can hide), trusted from
    // the third change since the start or a jump; at the noise floor the change stops
    // shrinking, or wanders without settling; a steady ratio is a slow mode, extrapolated
    // (ss_rho: the ratio of the jump).
    FI bool ss_converged(real change, bool lengthens) {
        const bool first = ss_prev >= SS_NONE;
        // Both changes in the same units: the tolerance at the states the previous one ended
        // at (x).
        const real raw = ss_change_at_x / ss_prev;
        const real rho = fmin(raw, SS_RATIO_MAX);
        const real slow = fmax(rho, ss_rho_jump);
        const real remaining = first ? SS_NONE : change * slow / ((real)1 - slow);
        ss_prev = change;
        ss_stalled = change <= SS_NOISE ? ss_stalled + 1 : 0;
        const bool converged = ss_still || (ss_prev_rho >= (real)0 && remaining <= SS_FRACTION);
        const bool flat = rho >= SS_FLAT && ss_prev_rho >= SS_FLAT;
        const real drho = fabs(rho - ss_prev_rho);
        const bool steady = drho <= SS_STEADY * ((real)1 - rho);
        const bool slow_mode = steady && rho >= SS_JUMP && rho < SS_JUMP_MAX;
        const bool settling = drho <= SS_SETTLING * ((real)1 - rho) && rho < SS_JUMP_MAX;
        const bool accurate = change * drho <= SS_FRACTION * ((real)1 - rho) * ((real)1 - rho);
        const bool noise = flat && change <= SS_NOISE && !settling;
        // A mode the last jump extrapolated, too slow to measure again at the noise level:
        // steady changes are its, extrapolated again with the jump's ratio.
        const real left = change * ss_rho_jump / ((real)1 - ss_rho_jump);
        const bool rejump = noise && ss_rho_jump >= SS_FLAT && raw <= (real)2 - SS_FLAT
            && left > SS_JUMP_ABOVE;
        // A state that moves by the same amount every interval has no steady state, however
        // small that amount is.
        const bool growing = ss_translating >= SS_TRANSLATING;
        const bool done = converged
            || (!growing && ((noise && !rejump) || ss_stalled >= SS_NOISE_CYCLES));
        // Where the interval can be lengthened (lengthens: a steady-state infusion's span), a
        // slow mode whose jump would amplify the integration's own error by more than the
        // change sets ss_drift instead of jumping.
        const bool lengthen = lengthens && slow_mode && rho / ((real)1 - rho) > change;
        ss_drift = !converged && ((flat && rho < SS_JUMP_MAX) || lengthen);
        ss_prev_rho = first ? (real)-1 : rho;
        const bool jump = !done && !lengthen && (rejump || (slow_mode
            && (remaining > SS_JUMP_ABOVE || rho >= SS_JUMP_SLOW || accurate)));
        ss_rho = rejump ? ss_rho_jump : rho;
        ss_g = jump ? ss_rho / ((real)1 - ss_rho) : (real)0;
        return done;
    }

    // The next iterate x (the previous one in): the states, or with a jump (ss_g > 0) the
    // states extrapolated along their last change, y + (y − x)·ss_g, where that changes no
    // state's sign; a jump taken starts the ratios anew.
    FI void ss_next(real* x) {
        bool jump = ss_g > (real)0;
        #pragma unroll
        for (int j = 0; j < NS; j++) jump = jump && (y[j] + (y[j] - x[j]) * ss_g) * y[j] >= (real)0;
        #pragma unroll
        for (int j = 0; j < NS; j++) x[j] = jump ? y[j] + (y[j] - x[j]) * ss_g : y[j];
        if (jump) {
            ss_prev = SS_NONE;
            ss_prev_rho = (real)-1;
            ss_rho_jump = ss_rho;
            ss_have_d = false;
        }
    }

    // One iteration after an interval from the iterate x (dprev: the changes of the interval
    // before, ss_translation), as `SsIterations::next` on the CPU: x takes the next iterate;
    // whether the steady state is reached.
    FI bool ss_iterate(real* x, real* dprev, bool lengthens) {
        ss_translation(x, dprev);
        const bool done = ss_converged(ss_change(x), lengthens);
        ss_next(x);
        return done;
    }

    // The step that t ≥ 0 takes when h > 0 is added to it: where t + h rounds (f32 at large t),
    // the states advance by the rounded step, so that they stay at the time t says. Rounded
    // down, never up: a step rounded up to the one just rejected would be rejected forever.
    FI real step_taken(real t, real h) {
        const real t_new = t + h;
        return t_new - t > h ? nextafter(t_new, (real)0) - t : t_new - t;
    }

    // After a rejected step that was stretched to the stopping point, where the next proposal
    // would be stretched back to it too (t's resolution makes the stretch wide: f32 at large
    // t): a step ending before the stretch instead, half the way to it, so that the step does
    // shrink. False where no step ends before the stretch (t + the half rounds into it): the
    // step cannot shrink.
    FI bool shrink_before_stretch(real t, real snap_to) {
        h_prop = (real)0.5 * (snap_to - t);
        return h_prop > (real)0 && t + h_prop < snap_to;
    }

#if NSW > 0
    // Event location (events = "locate"), as the CPU reference's (src/solver/integrator.rs,
    // locate_change): the switches of the states (model_switches) are held at their modes,
    // q[MODE_BASE + k], while q[MODE_BASE + NSW] is 1.
    FI void hold_modes(const real* sw) {
        #pragma unroll
        for (int k = 0; k < NSW; k++) q[MODE_BASE + k] = sw[k];
        q[MODE_BASE + NSW] = (real)1;
    }

    FI bool switches_changed(const real* sw) {
        bool c = false;
        #pragma unroll
        for (int k = 0; k < NSW; k++) {
            const real md = q[MODE_BASE + k];
            c = c || (sw[k] != md && !(isnan(sw[k]) && isnan(md)));
        }
        return c;
    }

    // Whether a held switch changes inside the accepted step from t to t_new (its dense output
    // prepared, st_t0 and st_h set): compared at the fractions EVENT_PROBE(i) of the step (a
    // quarter, half and three quarters) and at its end, on the dense output's first SW_REACH
    // components (those the switches read); the first point found changed is bisected on the
    // dense output to the neighbouring times before and after the change, the time after it
    // into at, the switches' values there into past. tl: the left limit of the segment's end.
    FI bool locate_change(real t, real t_new, real step, real tl, real& at, real* past) {
        real sw[NSW];
        real lo = t, hi = t_new;
        bool found = false;
        for (int i = 0; i <= N_PROBES && !found; i++) {
            const real x = i == N_PROBES ? t_new : t + (real)EVENT_PROBE(i) * step;
            if (i == N_PROBES) {
                model_switches(fmin(x, tl), y1, q, sw);
            } else {
                dense_reach(x);
                model_switches(fmin(x, tl), dense_v, q, sw);
            }
            if (switches_changed(sw)) {
                found = true;
                hi = x;
                #pragma unroll
                for (int k = 0; k < NSW; k++) past[k] = sw[k];
            } else {
                lo = x;
            }
        }
        if (!found) return false;
        // Narrowed by the Illinois method on the argument of the switch that changed (its
        // sign changes where the switch does), as the CPU reference's: points kept inside the
        // bracket, a bisection where the argument is not finite or keeps its sign across it
        // and after SLOW_STEPS steps in a row that did not halve it. Only that switch's
        // arguments at the bracket's ends are kept (fa, fb; read with constant indices alone,
        // pick, so that the arguments stay in registers): where another switch is found to
        // change first, its argument at lo is evaluated there again, the same value the CPU
        // reference keeps for it, rather than every switch's argument kept at both ends.
        real a_x[NSW];
        int k = first_changed(past);
        dense_reach(lo);
        model_switch_args(fmin(lo, tl), dense_v, q, a_x);
        real fa = pick(a_x, k);
        dense_reach(hi);
        model_switch_args(fmin(hi, tl), dense_v, q, a_x);
        real fb = pick(a_x, k);
        // 1: hi moved last, -1: lo did (Illinois halves the value kept twice).
        int side = 0;
        unsigned slow = 0u;
        bool bisect = false;
        for (;;) {
            const real mid = lo + (real)0.5 * (hi - lo);
            if (mid <= lo || mid >= hi) break;
            const real width = hi - lo;
            real x = mid;
            if (!bisect && isfinite(fa) && isfinite(fb) && fa * fb < (real)0) {
                const real s = lo + (hi - lo) * (fa / (fa - fb));
                if (s > lo && s < hi) x = s;
            }
            dense_reach(x);
            model_switches(fmin(x, tl), dense_v, q, sw);
            model_switch_args(fmin(x, tl), dense_v, q, a_x);
            const int j = first_changed(sw);
            if (j >= 0) {
                hi = x;
                #pragma unroll
                for (int i = 0; i < NSW; i++) past[i] = sw[i];
                if (j != k) {
                    // Another switch changes before: its argument from here on.
                    k = j;
                    fb = pick(a_x, k);
                    dense_reach(lo);
                    model_switch_args(fmin(lo, tl), dense_v, q, a_x);
                    fa = pick(a_x, k);
                    side = 0;
                } else {
                    fb = pick(a_x, k);
                    if (side == 1) fa *= (real)0.5;
                    side = 1;
                }
            } else {
                lo = x;
                fa = pick(a_x, k);
                if (side == -1) fb *= (real)0.5;
                side = -1;
            }
            slow = hi - lo > (real)0.5 * width ? slow + 1u : 0u;
            bisect = slow >= SLOW_STEPS;
        }
        at = hi;
        return true;
    }

    // The first switch whose value sw differs from its mode; -1 where none does.
    FI int first_changed(const real* sw) {
        int k = -1;
        #pragma unroll
        for (int j = NSW - 1; j >= 0; j--) {
            const real md = q[MODE_BASE + j];
            if (sw[j] != md && !(isnan(sw[j]) && isnan(md))) k = j;
        }
        return k;
    }

    // a[k], read with constant indices.
    FI static real pick(const real* a, int k) {
        real v = (real)0;
        #pragma unroll
        for (int j = 0; j < NSW; j++) v = j == k ? a[j] : v;
        return v;
    }
#endif

    // Integrates [t0, t1]; returns 0 ok, 1 max steps, 2 step too small, 3 non-finite. OBS
    // false: the accepted steps are never observed (no observer code in this copy). With
    // switches (NSW > 0, an adaptive method), they are held at their values at t0 and the
    // changes located (integrate_held).
    template <bool OBS = true>
    FI unsigned integrate(real t0, real t1) {
#if NSW > 0
        if (t1 <= t0) return 0u;
        if (FIXED_STEP) return integrate_held<OBS>(t0, t1, false);
        real sw[NSW];
        model_switches(t0, y, q, sw);
        hold_modes(sw);
        const unsigned st = integrate_held<OBS>(t0, t1, true);
        q[MODE_BASE + NSW] = (real)0;
        return st;
#else
        return integrate_held<OBS>(t0, t1, false);
#endif
    }

    template <bool OBS = true>
    FI unsigned integrate_held(real t0, real t1, bool held) {
        (void)held;
        if (t1 <= t0) return 0u;
        seg_t0 = t0;
        sys_rhs(t0, y, f0);
        if (!all_finite(y) || !all_finite(f0)) return 3u;
        const real span = t1 - t0;
        const real tl = left_limit(t0, t1);
        if (FIXED_STEP) {
            const real dt = m->dt;
            if (!(dt > (real)0 && isfinite(dt))) return 2u;
            const unsigned n_steps = (unsigned)fmax(ceil(span / dt - (real)1e-4), (real)1);
            for (unsigned i = 0; i < n_steps; i++) {
                if (n_acc + n_rej >= m->max_steps) return 1u;
                real t = t0 + (real)i * dt;
                real t_new = (i + 1 == n_steps) ? t1 : t0 + (real)(i + 1) * dt;
                real h = t_new - t;
                do_step(t, h, tl);
                if (!all_finite(y1) || !all_finite(f1)) return 3u;
                n_acc++;
                if (OBSERVE && OBS) {
                    prepare_dense(h);
                    st_t0 = t; st_t1 = t_new; st_h = h; st_tl = tl;
                    observe();
                }
                #pragma unroll
                for (int j = 0; j < NY; j++) { y[j] = y1[j]; f0[j] = f1[j]; }
            }
            return 0u;
        }
        const real alpha = (real)1 / Q_ORDER - (real)0.75 * BETA;
        // A starting step below the least step (states at rest long after t = 0, e.g. after a
        // reset; a tiny atol against a fast component) is raised to STEP_START least steps.
        if (!(h_prop > (real)0 && isfinite(h_prop)))
            h_prop = m->dt > (real)0 ? m->dt
                : fmax(initial_step(t0, tl), STEP_START * fmax(m->h_min_rel * fmax(fabs(t0), span), STEP_ULPS * m->eps * fabs(t0)));
        real t = t0;
        bool rejected_last = false, saw_non_finite = false;
#if NSW > 0
        // A step retaken to end at a located change of the switches; the changes located; the
        // switches' values just after the change.
        bool retaken = false;
        unsigned events = 0u;
        real past[NSW];
#endif
        for (;;) {
            if (n_acc + n_rej >= m->max_steps) return 1u;
            const real scale_t = fmax(fabs(t), span);
            const real h_min = fmax(m->h_min_rel * scale_t, STEP_ULPS * m->eps * fabs(t));
            real step = fmin(h_prop, m->h_max);
            const real snap_to = t1 - (m->snap * span + STEP_ULPS * m->eps * fabs(t1));
            const bool last = t + step >= snap_to;
            step = last ? t1 - t : step_taken(t, step);
            // The last step may be shorter: it ends at t1 exactly (a stopping point an ulp away).
            if (step < h_min && !last) return saw_non_finite ? 3u : 2u;
            bool ok = do_step(t, step, tl);
            real e = ok ? error_norm() : BIG;
            if (e >= BIG) saw_non_finite = true;
            if (e <= (real)1) {
                real t_new = last ? t1 : t + step;
                if (NEEDS_F1) sys_rhs(fmin(t_new, tl), y1, f1);
                if (!all_finite(f1)) {
                    saw_non_finite = true;
                    h_prop = step * STEP_FAC_MIN;
                    if (last && t + h_prop >= snap_to && !shrink_before_stretch(t, snap_to)) return 3u;
                    n_rej++;
                    rejected_last = true;
#if NSW > 0
                    retaken = false;
#endif
                    continue;
                }
#if NSW > 0
                // A switch that changes inside the step: the step is taken again to end just
                // after the change, and the switches take their new values there. A step
                // retaken so ends at the change.
                bool flip = retaken;
                retaken = false;
                if (held && !flip) {
                    st_t0 = t; st_t1 = t_new; st_h = step;
                    prepare_dense(step);
                    real at;
                    if (locate_change(t, t_new, step, tl, at, past)) {
                        events++;
                        if (at < t_new && at - t >= h_min) {
                            n_rej++;
                            h_prop = at - t;
                            retaken = true;
                            continue;
                        }
                        if (at < t_new) {
                            // At the step's start: the switches change there.
                            n_rej++;
                            hold_modes(past);
                            sys_rhs(fmin(t, tl), y, f0);
                            if (events >= MAX_EVENTS) {
                                held = false;
                                q[MODE_BASE + NSW] = (real)0;
                                sys_rhs(fmin(t, tl), y, f0);
                            }
                            continue;
                        }
                        // At its end.
                        flip = true;
                    }
                }
#endif
                n_acc++;
                if (OBSERVE && OBS) {
                    prepare_dense(step);
                    st_t0 = t; st_t1 = t_new; st_h = step; st_tl = tl;
                    observe();
                }
                #pragma unroll
                for (int j = 0; j < NY; j++) { y[j] = y1[j]; f0[j] = f1[j]; }
                // safety · e^(−α) · e_prev^β as exp(β ln e_prev − α ln e): one log per step.
                real ln_e = log(fmax(e, STEP_ERR_MIN));
                real fac = STEP_SAFETY * exp(BETA * ln_err_prev - alpha * ln_e);
                fac = fmin(fmax(fac, STEP_FAC_MIN), STEP_FAC_MAX);
                if (rejected_last) fac = fmin(fac, (real)1);
                ln_err_prev = fmax(ln_e, log(STEP_ERR_PREV_MIN));
                rejected_last = false;
                saw_non_finite = false;
                if (!last) h_prop = step * fac;
                t = t_new;
                if (last) return 0u;
#if NSW > 0
                if (flip && held) {
                    if (events >= MAX_EVENTS) {
                        held = false;
                        q[MODE_BASE + NSW] = (real)0;
                    } else {
                        hold_modes(past);
                    }
                    sys_rhs(fmin(t, tl), y, f0);
                }
#endif
            } else {
                n_rej++;
                rejected_last = true;
#if NSW > 0
                retaken = false;
#endif
                real fac = e < BIG ? fmin(fmax(STEP_SAFETY * exp(-alpha * log(e)), STEP_FAC_MIN), (real)1) : STEP_FAC_MIN;
                h_prop = step * fac;
                if (last && t + h_prop >= snap_to && !shrink_before_stretch(t, snap_to))
                    return saw_non_finite ? 3u : 2u;
            }
        }
    }
};

// The storage of the arrays of the Sub named S (see SUB_ARRAYS), in the kernel that makes it.
#define SUB_STORAGE SUB_ARRAYS(SUB_BIND) STAGE_ARRAYS(SUB_BIND)

{{DRIVER}}
