// The arm driver of kernels/integrate.cu: one subject's way through an arm's dosing schedule
// (administrations expanded from the dose lines, with the subject's lag, bioavailability and
// modelled rates), metrics and profiles observed on every accepted step.

struct Arm : Sub {
#if HAS_OCCASIONS
    // The occasion table after the metric specs (src/backend/gpu.rs, occasion_table): the
    // number K of later occasions, their starts, then the occasion of each run of
    // administrations.
    FI unsigned occ_base() { return m->off_metrics + NM * 6u; }
    FI unsigned n_occ() { return (unsigned)arm[occ_base()]; }
    FI unsigned run_occ(unsigned l) { return (unsigned)arm[occ_base() + 1u + n_occ() + l]; }

    // The occasion time t falls in (0 the first): how many later occasions start at or before t.
    FI unsigned occasion_of(real t) {
        const real* starts = arm + occ_base() + 1u;
        unsigned b = 0, e = n_occ();
        while (b < e) {
            const unsigned mid = b + (e - b) / 2u;
            if (starts[mid] <= t) b = mid + 1u;
            else e = mid;
        }
        return b;
    }

    // Occasion o's dosing values: the current occasion's are at hand, another's are worked out
    // from its parameters.
    FI void dose_of(unsigned o, real* dv) {
        if (o == occ) {
            #pragma unroll
            for (int j = 0; j < NS4; j++) dv[j] = dose_v[j];
            return;
        }
        real qo[NP1];
        params_of(o, qo);
        dosing_of(qo, dv);
    }

    // Whether run l can have an input after t_prev: not one of a later occasion (its doses
    // start at or after that occasion's start, a stopping point not yet reached) nor one found
    // finished (before occ_live).
    FI bool run_open(unsigned l) {
        const unsigned o = run_occ(l);
        return o <= occ && o >= occ_live;
    }

    // Run l's dose (admin_dose of its first administration b), with its occasion's dosing
    // values; false when the run is not open.
    FI bool run_dose(unsigned l, unsigned b, real& lag, real& dur, real& value, unsigned& state,
                     unsigned& kind) {
        if (!run_open(l)) return false;
        real dv[NS4];
        admin_dosing(b, run_occ(l), dv);
        admin_dose_v(b, dv, lag, dur, value, state, kind);
        return true;
    }

    // Administration i's dosing values in occasion o (its own): o's, but for the lag of the
    // occasion o' its kind names where the line keeps the lag of the occasion it starts in
    // (16·(o' + 1) added; src/backend/gpu.rs, arm_data).
    FI void admin_dosing(unsigned i, unsigned o, real* dv) {
        const unsigned lo = (unsigned)arm[i * 5 + 3] >> 4;
        const unsigned s = (unsigned)arm[i * 5 + 1];
        real lag = 0;
        if (lo > 0u) {
            dose_of(lo - 1u, dv);
            #pragma unroll
            for (int j = 0; j < NS; j++)
                if ((unsigned)j == s) lag = dv[4 * j];
        }
        dose_of(o, dv);
        if (lo > 0u) {
            #pragma unroll
            for (int j = 0; j < NS; j++)
                if ((unsigned)j == s) dv[4 * j] = lag;
        }
    }

    // At a stopping point ts: the occasions that start by then begin (the CPU reference switches
    // after observing the stop, before its inputs).
    FI void switch_occasion(real ts) {
        const unsigned k = occasion_of(ts);
        if (k == occ) return;
        occ = k;
        params_of(k, q);
        dosing_of(q, dose_v);
    }
#endif

    // Administration i's dose for this subject, all but its times: its lag and duration (0 for a
    // bolus or a reset), amount or rate, state, and kind: 0 bolus, 1 infusion, 2 nothing,
    // 3 invalid, 4 reset. The same for every administration of a line.
    FI void admin_dose(unsigned i, real& lag, real& dur, real& value, unsigned& state, unsigned& kind) {
#if HAS_OCCASIONS
        real dv[NS4];
        admin_dosing(i, occasion_of(arm[i * 5]), dv);
        admin_dose_v(i, dv, lag, dur, value, state, kind);
#else
        admin_dose_v(i, dose_v, lag, dur, value, state, kind);
#endif
    }

    // admin_dose with the dosing values dv (lag, bioavailability, modelled rate and duration
    // per state) of the administration's occasion.
    FI void admin_dose_v(unsigned i, const real* dv, real& lag, real& dur, real& value, unsigned& state,
                         unsigned& kind) {
        const real* a = arm + i * 5;
        const unsigned s = (unsigned)a[1];
        const real amt = a[2];
        // The kind (0 bolus, 1 at a rate, 2 over a duration, 3 modelled, 4 reset), 8 added
        // where the subject's dose scale multiplies the amount (`per`), and 16·(o' + 1) where
        // the lag is occasion o''s (admin_dosing).
        const unsigned ak8 = (unsigned)a[3];
        const unsigned ak = ak8 & 7u;
        const real v = a[4];
        state = s;
        kind = 3u;
        lag = 0; dur = 0; value = 0;
        if (ak == 4u) { state = 0; kind = 4u; return; }
        real l = 0, f = 0, rate_m = 0, dur_m = 0;
        #pragma unroll
        for (int j = 0; j < NS; j++)
            if ((unsigned)j == s) {
                l = dv[4 * j];
                f = dv[4 * j + 1];
                rate_m = dv[4 * j + 2];
                dur_m = dv[4 * j + 3];
            }
        if (!(isfinite(l) && l >= (real)0) || !(isfinite(f) && f >= (real)0)) return;
        const real amount = amt * ((ak8 & 8u) ? subj_scale : (real)1) * f;
        if (!(isfinite(amount) && amount >= (real)0)) return;
        lag = l;
        if (ak == 0u) { value = amount; kind = 0u; return; }
        real rate, d;
        if (ak == 1u) { rate = v; d = amount / v; }
        else if (ak == 2u) { rate = amount / v; d = v; }
        else if (!isnan(rate_m)) { rate = rate_m; d = amount / rate_m; }
        else if (!isnan(dur_m) && dur_m > (real)0) { rate = amount / dur_m; d = dur_m; }
        else return;
        // An amount of 0 over a duration (rate 0) gives nothing, as a bolus of 0 does.
        const bool nothing = rate == (real)0 && amount == (real)0;
        if (!(isfinite(rate) && (rate > (real)0 || nothing) && isfinite(d) && d >= (real)0)) return;
        value = rate;
        dur = nothing ? (real)0 : d;
        kind = dur > (real)0 ? 1u : 2u;
    }

    // Administration i for this subject: its start (nominal time + lag) and end (start +
    // duration, an infusion's), with its dose.
    FI void admin_event(unsigned i, real& start, real& end_, real& value, unsigned& state, unsigned& kind) {
        real lag, dur;
        admin_dose(i, lag, dur, value, state, kind);
        const real nominal = arm[i * 5];
        start = 0; end_ = 0;
        if (kind == 4u) { start = nominal; end_ = nominal; }
        else if (kind != 3u) {
            start = nominal + lag;
            if (kind != 0u) end_ = start + dur;
            if (kind == 1u) {
                // The rate whose rounded span delivers the amount value·dur (late in a long
                // trial, in f32, a short infusion's span can differ from its duration by a large
                // fraction of it); a span rounded to 0 is a bolus of it (src/dosing
                // ResolvedDose::given_at).
                const real span = end_ - start;
                if (span != dur) {
                    if (span > (real)0) value = value * dur / span;
                    else { value = value * dur; kind = 0u; end_ = 0; }
                }
            }
        }
    }

#if SS_START
    // The arm starts at steady state (src/dosing DoseLine::steady_state): administration
    // SS_ADMIN (nominal time s in [0, SS_II), the line's first dose) repeated every SS_II
    // forever before. As its start s + lag is taken for the lag of a dose at 0, the doses of
    // that line before s are administrations too ("tail" events: j = 1 … n_tail intervals
    // before SS_ADMIN), of which only the inputs after 0 count; an infusion running at 0
    // starts at 0.
    unsigned n_tail;

    // The steady-state dose: its lag (start), duration, bolus amount or rate, state, and
    // kind (0 bolus, 1 infusion, 2 nothing, 3 invalid).
    FI void ss_dose(real& lag, real& dur, real& value, unsigned& state, unsigned& kind) {
        real st, en;
        admin_event(SS_ADMIN, st, en, value, state, kind);
        lag = st;
        dur = kind == 1u ? en - st : (real)0;
    }

    // When the dose j intervals before 0 arrives, for the lag `lag`: lag = n·SS_II + r with
    // the phase r in [0, SS_II) (one within round-off of SS_II is 0 of the next interval), and
    // the arrival r + (n − j)·SS_II (src/backend/records.rs `arrival`: lag − j·SS_II would put
    // two doses in one interval where the lag is a whole number of intervals not exact in binary).
    FI real ss_arrival(real lag, unsigned j) {
        real n = floor(lag / SS_II);
        real r = lag - n * SS_II;
        if (r < (real)0) {
            r = (real)0;
        } else if (SS_II - r <= SS_ULPS * m->eps * fmax(lag, SS_II)) {
            n = n + (real)1;
            r = (real)0;
        }
        return r + (n - (real)j) * SS_II;
    }

    // The times of the dose j intervals before 0 (tail event n_admin + j − 1), from 0 on, for
    // the steady-state dose's lag, duration and kind (ss_dose; kind 2: nothing after 0).
    FI void tail_times(unsigned j, real lag, real dur, real& start, real& end_, unsigned& kind) {
        const real a = ss_arrival(lag, j);
        start = a;
        end_ = a + dur;
        if (kind == 0u && !(a >= (real)0)) kind = 2u;
        if (kind == 1u) {
            if (!(end_ > (real)0)) kind = 2u;
            start = fmax(a, (real)0);
        }
    }

    // f(a, start, end, value, state, kind) for every tail event a (n_admin + j − 1 for the
    // dose j intervals before 0), the steady-state dose worked out once, not once per event.
    template <class F>
    FI void each_tail(F f) {
        real lag, dur, val;
        unsigned s, kind;
        ss_dose(lag, dur, val, s, kind);
        for (unsigned j = 1; j <= n_tail; j++) {
            real st, en;
            unsigned k = kind;
            tail_times(j, lag, dur, st, en, k);
            f(m->n_admin + j - 1u, st, en, val, s, k);
        }
    }

    // Among the inputs of one interval [0, SS_II) of the dose repeated forever, the first after
    // the cursor (time, class, key) in application order: by time, rate decreases first, then
    // in order of creation (key 2j: bolus or start of the dose j intervals before; 2j + 1: its
    // end). False when none is left.
    FI bool next_window_input(real lag, real dur, real value, unsigned kind, unsigned reach,
                              real& ct, unsigned& cc, unsigned& ck, real& dv, bool& bolus) {
        bool found = false;
        real bt = 0;
        unsigned bc = 0, bk = 0;
        for (unsigned j = 0; j <= reach; j++) {
            const real a = ss_arrival(lag, j);
            for (unsigned w = 0; w < 2; w++) {
                real t;
                unsigned c;
                if (kind == 0u) {
                    if (w == 1u || !(a >= (real)0 && a < SS_II)) continue;
                    t = a; c = 1;
                } else if (kind == 1u) {
                    const real b = a + dur;
                    if (!(b > (real)0 && a < SS_II)) continue;
                    if (w == 0u) { t = fmax(a, (real)0); c = 1; }
                    else { if (!(b < SS_II)) continue; t = b; c = 0; }
                } else {
                    continue;
                }
                const unsigned k = 2 * j + w;
                const bool after = t > ct || (t == ct && (c > cc || (c == cc && k > ck)));
                const bool before = !found || t < bt || (t == bt && (c < bc || (c == bc && k < bk)));
                if (after && before) { found = true; bt = t; bc = c; bk = k; }
            }
        }
        if (!found) return false;
        ct = bt; cc = bc; ck = bk;
        bolus = kind == 0u;
        dv = bolus ? value : (bc == 0u ? -value : value);
        return true;
    }

    // The state at 0: the steady state of the dose, by the iterations of the CPU reference
    // (src/backend/records.rs). False on a failure (status set).
    FI bool steady_start() {
        real lag, dur, value;
        unsigned s, kind;
        ss_dose(lag, dur, value, s, kind);
        if (kind == 3u) { status = 3u; return false; }
        const unsigned reach = (unsigned)ceil((lag + dur) / SS_II) + 1;
        n_tail = reach + 1;
        real x[NS], dprev[NS];
        #pragma unroll
        for (int j = 0; j < NS; j++) x[j] = y[j];
        ss_begin();
        // The model's time in the iterations is that of the interval before 0.
#if TIME_SHIFT
        q[T_SLOT] = -SS_II;
#endif
        for (unsigned cycle = 0; cycle < SS_MAX_CYCLES; cycle++) {
            #pragma unroll
            for (int j = 0; j < NS; j++) { y[j] = x[j]; rates[j] = 0; }
            #pragma unroll
            for (int a = 0; a < NA; a++) y[NS + a] = 0;
            real t = 0, ct = -BIG;
            unsigned cc = 0, ck = 0;
            for (;;) {
                real dv = 0;
                bool bolus = false;
                // The next input (the cursor moves once it is applied), or the model's next
                // jump in time before it (NEXT_SS_STOP: src/backend/gpu.rs ss_window_stops),
                // a stopping point of its own.
                real nt = ct;
                unsigned nc = cc, nk = ck;
                const bool more = next_window_input(lag, dur, value, kind, reach, nt, nc, nk, dv, bolus);
                real te = more ? nt : SS_II;
                bool jump = false;
#if N_SS_STOPS
                const real js = NEXT_SS_STOP(t);
                if (js < te) { te = js; jump = true; }
#endif
#if OWN_STOPS
                // And the subject's own, where the jumps move with its parameters.
                const real os = own_ss_stop_after(t);
                if (os < te) { te = os; jump = true; }
#endif
                // The one integrator call of the steady-state iterations.
                if (te - t > SAME_TIME * fmax(fabs(te), (real)1)) {
                    const unsigned st = integrate<false>(t, te);
                    if (st != 0u) { status = st; return false; }
                }
                t = fmax(t, te);
                if (!all_finite(y)) { status = 3u; return false; }
                if (jump) continue;
                if (!more) break;
                ct = nt; cc = nc; ck = nk;
                #pragma unroll
                for (int j = 0; j < NS; j++) {
                    if ((unsigned)j != s) continue;
                    if (bolus) y[j] += dv;
                    else {
                        rates[j] += dv;
                        if (fabs(rates[j]) <= RATE_CANCEL * fabs(dv)) rates[j] = 0;
                    }
                }
            }
            const bool done = ss_iterate(x, dprev, false);
            if (done) {
                #pragma unroll
                for (int j = 0; j < NS; j++) { y[j] = x[j]; rates[j] = 0; }
                #pragma unroll
                for (int a = 0; a < NA; a++) y[NS + a] = 0;
                h_prop = 0;
                ln_err_prev = log(STEP_ERR_PREV_MIN);
#if TIME_SHIFT
                q[T_SLOT] = (real)0;
#endif
                return true;
            }
        }
        status = NO_STEADY_STATE;
        return false;
    }
#endif

    // Resets (HAS_RESETS): an event of a dose given before a reset, due at or after it, is
    // cancelled (src/dosing Administration::Reset). Of each run of resets, the first after the
    // dose's nominal time is found by a binary search (their lag and duration are 0).
    FI bool cut(unsigned a, real t) {
#if HAS_RESETS
        real n0 = a < m->n_admin ? arm[a * 5] : (real)0;
#if SS_START
        if (a >= m->n_admin) n0 = arm[SS_ADMIN * 5] - (real)(a - m->n_admin + 1) * SS_II;
#endif
        for (unsigned l = 0; l < m->n_lines; l++) {
            unsigned b, e;
            line_range(l, b, e);
            if (b >= e || (unsigned)arm[b * 5u + 3u] != 4u) continue;
            const unsigned r = first_after(b, e, n0, (real)0, (real)0, false);
            if (r < e && arm[r * 5u] <= t) return true;
        }
#endif
        return false;
    }

    // Line l's administrations [b, e): a dose line, or consecutive lines of the same dose
    // (src/backend/gpu.rs, arm_data). Within one the start and end times do not decrease (the
    // same state, amount and kind throughout, nominal times increasing), so what is due next
    // is found by a binary search, not a scan of the whole schedule at every stop.
    FI void line_range(unsigned l, unsigned& b, unsigned& e) {
        const real* ends = arm + m->n_admin * 5u;
        b = l == 0u ? 0u : (unsigned)ends[l - 1u];
        e = (unsigned)ends[l];
    }

    // The first administration of [b, e) whose start (ends: end) is after t, or e, in a line
    // whose doses have this lag and duration (admin_dose): start = nominal + lag and end =
    // start + duration, as admin_event computes them. Only the nominal times are read.
    FI unsigned first_after(unsigned b, unsigned e, real t, real lag, real dur, bool ends) {
        while (b < e) {
            const unsigned mid = b + (e - b) / 2u;
            const real st = arm[mid * 5u] + lag;
            if ((ends ? st + dur : st) > t) e = mid;
            else b = mid + 1u;
        }
        return b;
    }

    // The next stop ts, or an event's start (bolus, infusion, reset) or end (infusion) after
    // t_prev if sooner.
    FI real sooner(real ts, real st, real en, unsigned kind) {
        if ((kind <= 1u || kind == 4u) && st > t_prev) ts = fmin(ts, st);
        if (kind == 1u && en > t_prev) ts = fmin(ts, en);
        return ts;
    }

    // Administration a's inputs in (t_prev, ts]: a bolus, an infusion's start or end (resets
    // apart).
    FI void apply_event(unsigned a, real ts) {
        real st, en, val;
        unsigned s, kind;
        admin_event(a, st, en, val, s, kind);
        apply_input(a, ts, st, en, val, s, kind);
    }

    // The inputs in (t_prev, ts] of event a (an administration, or a ≥ n_admin the tail event
    // a − n_admin + 1) of these times, value, state and kind.
    FI void apply_input(unsigned a, real ts, real st, real en, real val, unsigned s, unsigned kind) {
        const bool cut_start = cut(a, st), cut_end = cut(a, en);
        // y[s] and rates[s] for the run-time s, as predicated updates.
        #pragma unroll
        for (int j = 0; j < NS; j++) {
            if ((unsigned)j != s) continue;
            if (kind == 0u && st > t_prev && st <= ts && !cut_start) y[j] += val;
            if (kind == 1u) {
                if (st > t_prev && st <= ts && !cut_start) rates[j] += val;
                if (en > t_prev && en <= ts && !cut_end) {
                    rates[j] -= val;
                    if (fabs(rates[j]) <= RATE_CANCEL * val) rates[j] = 0;
                }
            }
        }
    }

#if OWN_STOPS
    // The first of the subject's own stopping points after t (where the model jumps in time at
    // times that move with its parameters; src/backend/gpu.rs, own_stops), BIG past the last:
    // after every occasion's parameters, their count, then the times in order (`list` 0);
    // then those of a steady-state start's iterations, in the local time of the interval
    // before 0, the same way (`list` 1).
    FI real own_stop_after(real t, unsigned list = 0u) {
#if HAS_OCCASIONS
        size_t base = (size_t)(1u + n_occ()) * NP;
#else
        size_t base = NP;
#endif
        unsigned c = (unsigned)__ldg(&params[base * m->n + sid]);
        if (list == 1u) {
            base += 1u + c;
            c = (unsigned)__ldg(&params[base * m->n + sid]);
        }
        for (unsigned k = 0; k < c; k++) {
            const real v = __ldg(&params[(base + 1u + k) * m->n + sid]);
            if (v > t) return v;
        }
        return BIG;
    }

    FI real own_ss_stop_after(real t) { return own_stop_after(t, 1u); }
#endif

    FI void run_stops() {
        const unsigned nl = m->n_lines;
        for (;;) {
            if (t_prev >= m->end_time) return;
            while (fs < m->n_fixed && arm[m->off_fixed + fs] <= t_prev) fs++;
            real ts = fs < m->n_fixed ? arm[m->off_fixed + fs] : BIG;
#if OWN_STOPS
            ts = fmin(ts, own_stop_after(t_prev));
#endif
            // The next stop: the earliest start (bolus, infusion, reset) or infusion end after
            // t_prev, line by line.
#if HAS_OCCASIONS
            unsigned live = occ;
#endif
            for (unsigned l = 0; l < nl; l++) {
                unsigned b, e;
                line_range(l, b, e);
                if (b >= e) continue;
                real lag, dur, val;
                unsigned s, kind;
#if HAS_OCCASIONS
                if (!run_dose(l, b, lag, dur, val, s, kind)) continue;
                bool pending = false;
#else
                admin_dose(b, lag, dur, val, s, kind);
#endif
                if (kind <= 1u || kind == 4u) {
                    const unsigned a = first_after(b, e, t_prev, lag, dur, false);
                    if (a < e) ts = fmin(ts, arm[a * 5u] + lag);
#if HAS_OCCASIONS
                    pending = pending || a < e;
#endif
                }
                if (kind == 1u) {
                    const unsigned a = first_after(b, e, t_prev, lag, dur, true);
                    if (a < e) ts = fmin(ts, (arm[a * 5u] + lag) + dur);
#if HAS_OCCASIONS
                    pending = pending || a < e;
#endif
                }
#if HAS_OCCASIONS
                if (pending && run_occ(l) < live) live = run_occ(l);
#endif
            }
#if HAS_OCCASIONS
            // Runs of earlier occasions with nothing after t_prev have nothing after any later
            // time either.
            occ_live = live;
#endif
#if SS_START
            each_tail([&](unsigned, real st, real en, real, unsigned, unsigned k) {
                ts = sooner(ts, st, en, k);
            });
#endif
            if (ts >= BIG) { status = CUT_SHORT; return; }
            if (t_prev >= (real)0) {
                unsigned r = integrate(t_prev, ts);
                if (r != 0u) { status = r; return; }
            }
            stop_pre(ts);
#if HAS_OCCASIONS
            switch_occasion(ts);
#endif
#if HAS_RESETS
            bool reset = false;
            for (unsigned l = 0; l < nl; l++) {
                unsigned b, e;
                line_range(l, b, e);
                // A reset line's lag and duration are 0: its times are the nominal ones.
                if (b >= e || (unsigned)arm[b * 5u + 3u] != 4u) continue;
#if HAS_OCCASIONS
                if (!run_open(l)) continue;
#endif
                const unsigned a = first_after(b, e, t_prev, (real)0, (real)0, false);
                reset = reset || (a < e && arm[a * 5u] <= ts);
            }
            // Back to the initial state; the AUC quadratures go on.
            if (reset) initial_states();
#endif
            // The inputs due in (t_prev, ts], in the order of the administrations: of each
            // line, those whose start (infusions: start or end) falls in the window.
            for (unsigned l = 0; l < nl; l++) {
                unsigned b, e;
                line_range(l, b, e);
                if (b >= e) continue;
                real lag, dur, val;
                unsigned s, kind;
#if HAS_OCCASIONS
                if (!run_dose(l, b, lag, dur, val, s, kind)) continue;
#else
                admin_dose(b, lag, dur, val, s, kind);
#endif
                if (kind > 1u) continue;
                const unsigned lo = first_after(b, e, t_prev, lag, dur, kind == 1u);
                const unsigned hi = first_after(lo, e, ts, lag, dur, false);
                for (unsigned a = lo; a < hi; a++) apply_event(a, ts);
            }
#if SS_START
            each_tail([&](unsigned a, real st, real en, real val, unsigned s, unsigned k) {
                apply_input(a, ts, st, en, val, s, k);
            });
#endif
            if (!all_finite(y)) { status = 3u; return; }
            stop_post(ts);
            t_prev = ts;
        }
    }
};

extern "C" __global__ void VPOP_LAUNCH_BOUNDS integrate(const real* __restrict__ params, const real* __restrict__ scale,
                                                        const real* __restrict__ arm, const __grid_constant__ Meta meta,
                                                        real* __restrict__ metrics_out, unsigned* __restrict__ counters,
                                                        real* __restrict__ profiles) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= meta.n) return;
    Arm S;
    SUB_STORAGE
    S.m = &meta;
    S.arm = arm;
    S.profiles = profiles;
    S.sid = i;
    #pragma unroll
    for (int p = 0; p < NP; p++) S.q[p] = __ldg(&params[(size_t)p * meta.n + i]);
    model_prepare(S.q);
#if NSW > 0
    S.q[MODE_BASE + NSW] = (real)0;
#endif
#if TIME_SHIFT
    S.q[T_SLOT] = (real)0;
#endif
    S.subj_scale = scale[i];
#if HAS_OCCASIONS || OWN_STOPS
    S.params = params;
#endif
#if HAS_OCCASIONS
    S.occ = 0;
    S.occ_live = 0;
#endif
    S.dosing_of(S.q, S.dose_v);
    S.initial_states();
    #pragma unroll
    S.qbase = metrics_out;
    for (int a = 0; a < NA; a++) { S.y[NS + a] = 0; metrics_out[(size_t)a * meta.n + i] = 0; }
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
    S.ln_err_prev = log(STEP_ERR_PREV_MIN);
    S.seg_t0 = -1; S.seg_t1 = -1; S.seg_te = -1; S.st_tl = 0;
    S.status = 0; S.n_acc = 0; S.n_rej = 0; S.n_rhs = 0; S.n_jac = 0; S.next_sample = 0; S.fs = 0;
    for (unsigned j = 0; j < meta.n_times; j++) {
        #pragma unroll
        for (int k = 0; k < NO; k++) profiles[((size_t)k * meta.n + i) * meta.n_times + j] = nan("");
    }
    if (!S.all_finite(S.y)) S.status = 3u;
#if HAS_OCCASIONS
    // Every administration of a run has the run's dose: one check per run.
    for (unsigned l = 0; l < meta.n_lines; l++) {
        unsigned b, e;
        S.line_range(l, b, e);
        if (b >= e) continue;
        real dv[NS4], lag, dur, val;
        unsigned s, kind;
        S.admin_dosing(b, S.run_occ(l), dv);
        S.admin_dose_v(b, dv, lag, dur, val, s, kind);
        if (kind == 3u) S.status = 3u;
    }
#else
    for (unsigned a = 0; a < meta.n_admin; a++) {
        real st, en, val;
        unsigned s, kind;
        S.admin_event(a, st, en, val, s, kind);
        if (kind == 3u) S.status = 3u;
    }
#endif
#if SS_START
    if (S.status == 0u) S.steady_start();
#endif
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
