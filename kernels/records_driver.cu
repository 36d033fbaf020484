// The records driver of kernels/integrate.cu: one dataset subject's records, run as the
// program src/backend/records.rs writes for it (`Program`), as shaders/records_driver.wgsl
// does (see there for the instruction set) but without dispatch budgets: a thread runs its
// subject to the end. As there, the program is a resumable machine that stops where it needs
// an integration; here the thread then integrates and goes on, so that the integrator is
// inlined at one call site only (which keeps the kernel within its registers). Every event time, amount, rate, lag and bioavailability is resolved on
// the host; this driver integrates between events, applies inputs, resets, switches parameter
// sets, writes each record's outputs and finds steady states by the same iterations as the
// CPU reference (`Cpu::steady_state`, `Cpu::steady_infusion`).
//
// The kernel keeps the arm kernel's signature: `params` holds the parameter sets, `arm` the
// instructions (four values each), `metrics_out` the records' outputs (NO per record),
// `counters` comes in holding each subject's index (first instruction, instructions, first
// parameter set, first output row, records) and goes out holding its counters (status,
// accepted, rejected, right-hand sides, Jacobians), and `profiles` is each thread's scratch
// for steady states (SCRATCH values: the iterate, the state and inputs put aside, and the
// iterations' last changes), in
// global memory so that the integration keeps its registers.

#define SCRATCH (NY + 3 * NS)

struct Rec : Sub {
    const real* psets;
    // ss_x: the steady-state iterate; save_y, save_rates: the state and inputs put aside;
    // ss_dprev: the iterations' last changes (ss_translation).
    real* ss_x;
    real* ss_dprev;
    real* save_y;
    real* save_rates;
    real t_cur, save_t, span;
    // The integration the machine waits for: from want_t0 to want_t1.
    real want_t0, want_t1;
    unsigned ip, wi, phase, cycle;

    FI void load_params(unsigned k) {
        #pragma unroll
        for (int p = 0; p < NP; p++) q[p] = psets[(size_t)k * NP + p];
        model_prepare(q);
#if NSW > 0
        q[MODE_BASE + NSW] = (real)0;
#endif
    }

    FI bool fail(unsigned st) {
        status = st;
        return false;
    }

    // Whether the time is t1 (times this close are the same time, as on the CPU reference);
    // if not, the machine waits for an integration from t0 to t1 (and then comes back here).
    FI bool at(real t0, real t1) {
        if (t1 <= t_cur) return true;
        t_cur = t0;
        if (t1 - t0 <= SAME_TIME * fmax(fabs(t1), (real)1)) {
            t_cur = fmax(t0, t1);
            return true;
        }
        want_t0 = t0;
        want_t1 = t1;
        return false;
    }

    // y[s] or rates[s] for the run-time s, as predicated updates.
    FI void apply_input(unsigned op, unsigned s, real v) {
        #pragma unroll
        for (int j = 0; j < NS; j++) {
            if ((unsigned)j != s) continue;
            if (op == 2u) {
                y[j] += v;
            } else {
                rates[j] += v;
                if (fabs(rates[j]) <= RATE_CANCEL * fabs(v)) rates[j] = 0;
            }
        }
    }

    FI void reset_states() {
        initial_states();
        #pragma unroll
        for (int a = 0; a < NA; a++) y[NS + a] = 0;
        h_prop = 0;
    }

    // A steady-state round starts from the model states ss_x at time 0 with no inputs.
    FI void restart() {
        #pragma unroll
        for (int j = 0; j < NS; j++) { y[j] = ss_x[j]; rates[j] = 0; }
        #pragma unroll
        for (int a = 0; a < NA; a++) y[NS + a] = 0;
        t_cur = 0;
        wi = 0;
    }

    FI void isolate() {
        #pragma unroll
        for (int j = 0; j < NY; j++) save_y[j] = y[j];
        #pragma unroll
        for (int j = 0; j < NS; j++) save_rates[j] = rates[j];
        save_t = t_cur;
    }

    // Back from the scratch rounds: the model states set to (mode 1) or increased by (mode 2)
    // ss_x.
    FI void settle(unsigned mode) {
#if TIME_SHIFT
        q[T_SLOT] = (real)0;
#endif
        #pragma unroll
        for (int j = 0; j < NY; j++) y[j] = save_y[j];
        #pragma unroll
        for (int j = 0; j < NS; j++) {
            rates[j] = save_rates[j];
            y[j] = mode == 1u ? ss_x[j] : y[j] + ss_x[j];
        }
        t_cur = save_t;
        phase = 0;
    }

    // The window's inputs `w` (n of them, with the stops of the model's jumps in time in the
    // interval among them: [1, 0, 0, local time]) repeated every ii to steady state; false
    // while the machine waits (or failed), true when the steady state is reached.
    FI bool steady_state(const real* w, unsigned mode, real ii, unsigned n) {
        if (phase == 0u) {
            isolate();
            #pragma unroll
            for (int j = 0; j < NS; j++) ss_x[j] = mode == 1u ? y[j] : (real)0;
            ss_begin();
            cycle = 0;
            phase = 1;
            restart();
            // The model's time in the rounds is that of the interval before the dose (save_t,
            // the time of the start before the instruction).
#if TIME_SHIFT
            q[T_SLOT] = save_t - ii;
#endif
        }
        for (;;) {
            while (wi < n) {
                const real* in = w + 4 * wi;
                if (!at(t_cur, fmax(in[3], t_cur))) return false;
                const unsigned kind = (unsigned)in[0];
                if (kind != 1u) apply_input(kind, (unsigned)in[1], in[2]);
                wi++;
            }
            if (!at(t_cur, ii)) return false;
            const bool done = ss_iterate(ss_x, ss_dprev, false);
            if (done) {
                settle(mode);
                return true;
            }
            if (++cycle >= SS_MAX_CYCLES) return fail(NO_STEADY_STATE);
            restart();
        }
    }

    // A constant input `rate` into state s to steady state at the time of the start before
    // the instruction, as `Cpu::steady_infusion`: spans doubling from 1 (phase 2) until one
    // changes the state by no more than the noise level, then iterations over that span as
    // over a dosing interval (phase 3), the span doubling again where a mode is too slow to
    // tell from noise over it. Each span stops at the model's jumps in time inside it: the n
    // instructions `w` list them as (span, local time), ordered by span.
    FI bool steady_infusion(const real* w, unsigned s, real rate, unsigned n) {
        if (phase == 0u) {
            isolate();
            #pragma unroll
            for (int j = 0; j < NS; j++) ss_x[j] = y[j];
            span = 1;
            cycle = 0;
            phase = 2;
            restart();
            apply_input(3u, s, rate);
        }
        for (;;) {
            // The span ends, to the model, at the instruction's time.
#if TIME_SHIFT
            q[T_SLOT] = save_t - span;
#endif
            while (wi < n && w[4 * wi] < span) wi++;
            while (wi < n && w[4 * wi] == span) {
                if (!at(t_cur, w[4 * wi + 1])) return false;
                wi++;
            }
            if (!at(t_cur, span)) return false;
            if (phase == 2u) {
                const real change = ss_take_change(ss_x);
                if (ss_still) {
                    settle(1u);
                    return true;
                }
                if (change <= SS_NOISE) {
                    phase = 3;
                    ss_begin();
                    cycle = 0;
                } else {
                    if (++cycle >= SS_INFUSION_DOUBLINGS) return fail(NO_STEADY_STATE);
                    span = fmin((real)2 * span, SS_INFUSION_SPAN_MAX);
                }
            } else {
                const bool done = ss_iterate(ss_x, ss_dprev, true);
                if (ss_drift) {
                    if (span >= SS_INFUSION_SPAN_MAX) return fail(NO_STEADY_STATE);
                    span = fmin((real)2 * span, SS_INFUSION_SPAN_MAX);
                    ss_begin();
                    cycle = 0;
                } else if (done) {
                    settle(1u);
                    return true;
                } else if (++cycle >= SS_MAX_CYCLES) {
                    return fail(NO_STEADY_STATE);
                }
            }
            restart();
            apply_input(3u, s, rate);
        }
    }

    // Runs the program from instruction ip; true when the machine waits for an integration,
    // false at the end or on a failure.
    FI bool step(const real* prog, unsigned len, real* out) {
        for (; ip < len; ip++) {
            const real* in = prog + 4 * ip;
            const unsigned op = (unsigned)in[0];
            const real a = in[1], b = in[2], c = in[3];
            if (op == 0u) {
                t_cur = a;
            } else if (op == 1u) {
                if (!at(a, b)) return true;
            } else if (op == 2u || op == 3u) {
                apply_input(op, (unsigned)a, b);
                if (!all_finite(y)) return fail(3u);
            } else if (op == 4u) {
                reset_states();
            } else if (op == 5u) {
                load_params((unsigned)a);
            } else if (op == 6u) {
                real v[NO];
                outs(b, y, v);
                real* row = out + (size_t)(unsigned)a * NO;
                #pragma unroll
                for (int k = 0; k < NO; k++) row[k] = v[k];
            } else if (op == 7u) {
                if (!steady_state(in + 4, (unsigned)a, b, (unsigned)c)) return status == 0u;
                ip += (unsigned)c;
            } else if (op == 8u) {
                if (!steady_infusion(in + 4, (unsigned)a, b, (unsigned)c)) return status == 0u;
                ip += (unsigned)c;
            } else {
                return fail((unsigned)a);
            }
        }
        return false;
    }

    FI void run(const real* prog, unsigned len, real* out) {
        ip = 0;
        phase = 0;
        while (step(prog, len, out)) {
            // The one place the integrator is inlined.
            const unsigned st = integrate(want_t0, want_t1);
            if (st != 0u) { status = st; return; }
            t_cur = want_t1;
            if (!all_finite(y)) { status = 3u; return; }
        }
    }
};

extern "C" __global__ void VPOP_LAUNCH_BOUNDS integrate(const real* __restrict__ params, const real* __restrict__ scale,
                                                        const real* __restrict__ arm, const __grid_constant__ Meta meta,
                                                        real* __restrict__ metrics_out, unsigned* __restrict__ counters,
                                                        real* __restrict__ profiles) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= meta.n) return;
    unsigned* c = counters + (size_t)i * 5;
    const unsigned first = c[0], len = c[1], pset = c[2], row = c[3];
    Rec S;
    SUB_STORAGE
    S.m = &meta;
    S.arm = arm;
    S.profiles = profiles;
    S.sid = i;
    S.psets = params + (size_t)pset * NP;
    S.ss_x = profiles + (size_t)i * SCRATCH;
    S.save_y = S.ss_x + NS;
    S.save_rates = S.save_y + NY;
    S.ss_dprev = S.save_rates + NS;
    // The outputs of records a failed subject never reaches stay NaN: the host fills the
    // buffer so, as for the WGSL records kernel (which cannot loop over a subject's records).
    real* out = metrics_out + (size_t)row * NO;
    #pragma unroll
    for (int j = 0; j < NY; j++) S.y[j] = 0;
    #pragma unroll
    for (int j = 0; j < NS; j++) S.rates[j] = 0;
    S.t_cur = 0;
    S.h_prop = 0;
    S.ln_err_prev = log(STEP_ERR_PREV_MIN);
    S.seg_t0 = -1; S.seg_t1 = -1; S.seg_te = -1; S.st_tl = 0;
    S.status = 0; S.n_acc = 0; S.n_rej = 0; S.n_rhs = 0; S.n_jac = 0; S.next_sample = 0; S.fs = 0;
    S.load_params(0);
#if TIME_SHIFT
    S.q[T_SLOT] = (real)0;
#endif
    S.run(arm + (size_t)first * 4, len, out);
    c[0] = S.status; c[1] = S.n_acc; c[2] = S.n_rej; c[3] = S.n_rhs; c[4] = S.n_jac;
}
