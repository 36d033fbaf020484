// The arm driver of kernels/integrate.cu: one subject's way through an arm's dosing schedule
// (administrations expanded from the dose lines, with the subject's lag, bioavailability and
// modelled rates), metrics and profiles observed on every accepted step.

struct Arm : Sub {
    // Administration i for this subject: kind 0 bolus, 1 infusion, 2 nothing, 3 invalid.
    FI void admin_event(unsigned i, real& start, real& end_, real& value, unsigned& state, unsigned& kind) {
        const real* a = arm + i * 5;
        const real nominal = a[0];
        const unsigned s = (unsigned)a[1];
        const real amt = a[2];
        const unsigned ak = (unsigned)a[3];
        const real v = a[4];
        state = s;
        kind = 3u;
        start = 0; end_ = 0; value = 0;
        real lag = 0, f = 0, rate_m = 0, dur_m = 0;
        #pragma unroll
        for (int j = 0; j < NS; j++)
            if ((unsigned)j == s) {
                lag = dose_v[4 * j];
                f = dose_v[4 * j + 1];
                rate_m = dose_v[4 * j + 2];
                dur_m = dose_v[4 * j + 3];
            }
        if (!(isfinite(lag) && lag >= (real)0) || !(isfinite(f) && f >= (real)0)) return;
        const real amount = amt * subj_scale * f;
        if (!(isfinite(amount) && amount >= (real)0)) return;
        const real t = nominal + lag;
        start = t;
        if (ak == 0u) { value = amount; kind = 0u; return; }
        real rate, dur;
        if (ak == 1u) { rate = v; dur = amount / v; }
        else if (ak == 2u) { rate = amount / v; dur = v; }
        else if (!isnan(rate_m)) { rate = rate_m; dur = amount / rate_m; }
        else if (!isnan(dur_m) && dur_m > (real)0) { rate = amount / dur_m; dur = dur_m; }
        else return;
        if (!(isfinite(rate) && rate > (real)0 && isfinite(dur) && dur >= (real)0)) return;
        value = rate;
        end_ = t + dur;
        kind = dur > (real)0 ? 1u : 2u;
    }

    FI void run_stops() {
        for (;;) {
            if (t_prev >= m->end_time) return;
            while (fs < m->n_fixed && arm[m->off_fixed + fs] <= t_prev) fs++;
            real ts = fs < m->n_fixed ? arm[m->off_fixed + fs] : BIG;
            for (unsigned a = 0; a < m->n_admin; a++) {
                real st, en, val;
                unsigned s, kind;
                admin_event(a, st, en, val, s, kind);
                if (kind <= 1u && st > t_prev) ts = fmin(ts, st);
                if (kind == 1u && en > t_prev) ts = fmin(ts, en);
            }
            if (ts >= BIG) { status = CUT_SHORT; return; }
            if (t_prev >= (real)0) {
                unsigned r = integrate(t_prev, ts);
                if (r != 0u) { status = r; return; }
            }
            stop_pre(ts);
            for (unsigned a = 0; a < m->n_admin; a++) {
                real st, en, val;
                unsigned s, kind;
                admin_event(a, st, en, val, s, kind);
                // y[s] and rates[s] for the run-time s, as predicated updates.
                #pragma unroll
                for (int j = 0; j < NS; j++) {
                    if ((unsigned)j != s) continue;
                    if (kind == 0u && st > t_prev && st <= ts) y[j] += val;
                    if (kind == 1u) {
                        if (st > t_prev && st <= ts) rates[j] += val;
                        if (en > t_prev && en <= ts) {
                            rates[j] -= val;
                            if (fabs(rates[j]) <= (real)1e-6 * val) rates[j] = 0;
                        }
                    }
                }
            }
            if (!all_finite(y)) { status = 3u; return; }
            stop_post(ts);
            t_prev = ts;
        }
    }
};

extern "C" __global__ void integrate(const real* __restrict__ params, const real* __restrict__ scale,
                                     const real* __restrict__ arm, const __grid_constant__ Meta meta,
                                     real* __restrict__ metrics_out, unsigned* __restrict__ counters,
                                     real* __restrict__ profiles) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= meta.n) return;
    Arm S;
    S.m = &meta;
    S.arm = arm;
    S.profiles = profiles;
    S.sid = i;
    #pragma unroll
    for (int p = 0; p < NP; p++) S.q[p] = __ldg(&params[(size_t)p * meta.n + i]);
    S.subj_scale = scale[i];
    real zero[NS];
    #pragma unroll
    for (int j = 0; j < NS; j++) zero[j] = 0;
    model_dosing((real)0, zero, S.q, S.dose_v);
    real y0[NS];
    model_init((real)0, zero, S.q, y0);
    #pragma unroll
    for (int j = 0; j < NS; j++) { S.y[j] = y0[j]; S.rates[j] = 0; }
    #pragma unroll
    for (int k = 0; k < NO; k++) S.y[NS + k] = 0;
    #pragma unroll
    for (unsigned mi = 0; mi < NM; mi++) {
        unsigned kind, k;
        bool win;
        real a, b, x;
        S.spec(mi, kind, k, win, a, b, x);
        S.vals[mi] = nan("");
        S.aux[mi] = nan("");
        if (kind == 1u) S.vals[mi] = -BIG;
        if (kind == 2u) S.aux[mi] = -BIG;
        if (kind == 3u) S.vals[mi] = BIG;
        if (kind == 6u) S.vals[mi] = 0;
    }
    S.t_prev = -1;
    S.h_prop = 0;
    S.err_prev = (real)1e-4;
    S.status = 0; S.n_acc = 0; S.n_rej = 0; S.n_rhs = 0; S.n_jac = 0; S.next_sample = 0; S.fs = 0;
    for (unsigned j = 0; j < meta.n_times; j++) {
        #pragma unroll
        for (int k = 0; k < NO; k++) profiles[((size_t)k * meta.n + i) * meta.n_times + j] = nan("");
    }
    if (!S.all_finite(S.y)) S.status = 3u;
    for (unsigned a = 0; a < meta.n_admin; a++) {
        real st, en, val;
        unsigned s, kind;
        S.admin_event(a, st, en, val, s, kind);
        if (kind == 3u) S.status = 3u;
    }
    if (S.status == 0u) S.run_stops();
    #pragma unroll
    for (unsigned mi = 0; mi < NM; mi++) {
        real v = S.vals[mi];
        if (S.status != 0u || !isfinite(v) || fabs(v) >= BIG) v = nan("");
        metrics_out[(size_t)mi * meta.n + i] = v;
    }
    unsigned* c = counters + (size_t)i * 5;
    c[0] = S.status; c[1] = S.n_acc; c[2] = S.n_rej; c[3] = S.n_rhs; c[4] = S.n_jac;
}
