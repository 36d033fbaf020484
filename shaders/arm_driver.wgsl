// The arm driver of shaders/integrate.wgsl: one subject's way through an arm's dosing schedule
// (administrations expanded from the dose lines, with the subject's lag, bioavailability and
// modelled rates), metrics and profiles observed on every accepted step.

// Every accepted step is observed (metrics, profiles), except during the iterations of a
// steady-state start.
fn accepted_step(t0: real, t1: real, h: real) {
    if (ss_phase == 1u) { return; }
    prepare_dense(h);
    st_t0 = t0;
    st_t1 = t1;
    st_h = h;
    observe();
}

struct Event {
    start: real,
    end_: real,
    // Bolus amount or infusion rate.
    value: real,
    state: u32,
    // 0 bolus, 1 infusion, 2 nothing (an infusion of zero duration), 3 invalid, 4 reset.
    kind: u32,
}

// Administration i's dose for this subject, all but its times (lag, bioavailability, modelled
// rate or duration from the model's dosing declarations; amounts scaled per subject). The same
// for every administration of a line.
struct Dose {
    // 0 for a reset; the duration 0 for a bolus or a reset.
    lag: real,
    dur: real,
    value: real,
    state: u32,
    kind: u32,
}

// The occasion table after the metric specs (HAS_OCCASIONS; src/backend/gpu.rs,
// occasion_table): the number K of later occasions, their starts, then the occasion of each
// run of administrations. Runs of administrations of occasions before occ_live have nothing
// left to give.
var<private> occ_live: u32;

fn occ_base() -> u32 {
    return meta_.off_metrics + NM * 6u;
}

fn n_occ() -> u32 {
    return u32(arm[occ_base()]);
}

fn run_occ(l: u32) -> u32 {
    return u32(arm[occ_base() + 1u + n_occ() + l]);
}

// The occasion time t falls in (0 the first): how many later occasions start at or before t.
fn occasion_of(t: real) -> u32 {
    let s0 = occ_base() + 1u;
    var b = 0u;
    var e = n_occ();
    while (b < e) {
        let mid = b + (e - b) / 2u;
        if (arm[s0 + mid] <= t) { b = mid + 1u; } else { e = mid; }
    }
    return b;
}

// Occasion o's dosing values: the current occasion's are at hand, another's are worked out from
// its parameters.
fn dose_of(o: u32) -> array<real, {{N_NS4}}> {
    if (o == occ) { return dose_v; }
    return dosing_of(params_of(o));
}

// The occasion that holds at t becomes the current one: its parameters and dosing values.
fn enter_occasion(k: u32) {
    if (k == occ) { return; }
    occ = k;
    q = params_of(k);
    dose_v = dosing_of(q);
}

// The dosing values (lag, bioavailability, modelled rate and duration per state) of parameters
// p: the model's dosing declarations at t = 0 with no amounts.
fn dosing_of(p: array<real, {{N_NQ}}>) -> array<real, {{N_NS4}}> {
    var zero: array<real, {{N_NS}}>;
    return model_dosing(0.0, zero, p);
}

fn admin_dose(i: u32) -> Dose {
    if (HAS_OCCASIONS) { return admin_dose_v(i, admin_dosing(i, occasion_of(arm[i * 5u]))); }
    return admin_dose_v(i, dose_v);
}

// Administration i's dosing values in occasion o (its own): o's, but for the lag of the occasion
// o' its kind names where the line keeps the lag of the occasion it starts in (16·(o' + 1)
// added; src/backend/gpu.rs, arm_data).
fn admin_dosing(i: u32, o: u32) -> array<real, {{N_NS4}}> {
    var dv = dose_of(o);
    let lo = u32(arm[i * 5u + 3u]) >> 4u;
    if (lo > 0u) {
        let s = u32(arm[i * 5u + 1u]);
        let lag = dose_of(lo - 1u)[4u * s];
        dv[4u * s] = lag;
    }
    return dv;
}

// Whether run l can have an input after t_prev: not one of a later occasion (its doses start
// at or after that occasion's start, a stopping point not yet reached) nor one found finished
// (before occ_live).
fn run_open(l: u32) -> bool {
    if (!HAS_OCCASIONS) { return true; }
    let o = run_occ(l);
    return o <= occ && o >= occ_live;
}

// Run l's dose (admin_dose of its first administration b), with its occasion's dosing values.
fn run_dose(l: u32, b: u32) -> Dose {
    if (HAS_OCCASIONS) { return admin_dose_v(b, admin_dosing(b, run_occ(l))); }
    return admin_dose_v(b, dose_v);
}

// admin_dose with the dosing values dv (lag, bioavailability, modelled rate and duration per
// state) of the administration's occasion.
fn admin_dose_v(i: u32, dv: array<real, {{N_NS4}}>) -> Dose {
    let o = i * 5u;
    let s = u32(arm[o + 1u]);
    let amt = arm[o + 2u];
    // The kind (0 bolus, 1 at a rate, 2 over a duration, 3 modelled, 4 reset), 8 added where
    // the subject's dose scale multiplies the amount (`per`), and 16·(o' + 1) where the lag is
    // occasion o''s (admin_dosing).
    let kind8 = u32(arm[o + 3u]);
    let kind = kind8 & 7u;
    let v = arm[o + 4u];
    if (kind == 4u) { return Dose(0.0, 0.0, 0.0, 0u, 4u); }
    var d = Dose(0.0, 0.0, 0.0, s, 3u);
    let lag = dv[4u * s];
    let f = dv[4u * s + 1u];
    let rate_m = dv[4u * s + 2u];
    let dur_m = dv[4u * s + 3u];
    if (!(finite(lag) && lag >= 0.0) || !(finite(f) && f >= 0.0)) { return d; }
    let amount = amt * select(1.0, subj_scale, (kind8 & 8u) != 0u) * f;
    if (!(finite(amount) && amount >= 0.0)) { return d; }
    d.lag = lag;
    if (kind == 0u) {
        d.value = amount;
        d.kind = 0u;
        return d;
    }
    var rate: real = 0.0;
    var dur: real = 0.0;
    if (kind == 1u) {
        rate = v;
        dur = amount / v;
    } else if (kind == 2u) {
        rate = amount / v;
        dur = v;
    } else if (!is_nan(rate_m)) {
        rate = rate_m;
        dur = amount / rate_m;
    } else if (!is_nan(dur_m) && dur_m > 0.0) {
        rate = amount / dur_m;
        dur = dur_m;
    } else {
        return d;
    }
    // An amount of 0 over a duration (rate 0) gives nothing, as a bolus of 0 does.
    let nothing = rate == 0.0 && amount == 0.0;
    if (!(finite(rate) && (rate > 0.0 || nothing) && finite(dur) && dur >= 0.0)) { return d; }
    d.value = rate;
    d.dur = select(dur, 0.0, nothing);
    d.kind = select(2u, 1u, d.dur > 0.0);
    return d;
}

// Administration i of the arm for this subject: its start (nominal time + lag) and end (start +
// duration, an infusion's), with its dose.
fn admin_event(i: u32) -> Event {
    let d = admin_dose(i);
    let nominal = arm[i * 5u];
    var ev = Event(0.0, 0.0, d.value, d.state, d.kind);
    if (d.kind == 4u) {
        ev.start = nominal;
        ev.end_ = nominal;
    } else if (d.kind != 3u) {
        ev.start = nominal + d.lag;
        if (d.kind != 0u) { ev.end_ = ev.start + d.dur; }
        if (d.kind == 1u) {
            // The rate whose rounded span delivers the amount value·dur (late in a long trial,
            // in f32, a short infusion's span can differ from its duration by a large fraction
            // of it); a span rounded to 0 is a bolus of it (src/dosing ResolvedDose::given_at).
            let span = ev.end_ - ev.start;
            if (span != d.dur) {
                if (span > 0.0) {
                    ev.value = d.value * d.dur / span;
                } else {
                    ev.value = d.value * d.dur;
                    ev.kind = 0u;
                    ev.end_ = 0.0;
                }
            }
        }
    }
    return ev;
}

// A steady-state start (SS_START; src/dosing DoseLine::steady_state): administration SS_ADMIN
// (nominal time s in [0, SS_II), the line's first dose) repeated every SS_II forever before.
// The state at 0 is found by the CPU reference's iterations (src/backend/records.rs), within
// the dispatch budget (a subject can be suspended inside them), its start s + lag taken for the
// lag of a dose at 0; the doses of that line before s are events too ("tail" events: the dose
// j = 1 … n_tail intervals before SS_ADMIN), of which only the inputs after 0 count, an
// infusion running at 0 starting at 0.
// 0 not started, 1 iterating, 2 done (or no steady-state start).
var<private> ss_phase: u32;
var<private> ss_cycle: u32;
// Time within the interval, and the integration under way to the next input.
var<private> ss_t: real;
var<private> ss_busy: u32;
// The last input applied in this interval: time, class, key (see next_window_input).
var<private> ss_ct: real;
var<private> ss_cc: u32;
var<private> ss_ck: u32;
var<private> n_tail: u32;

// The steady-state dose: start = its lag, end_ − start its duration.
fn ss_dose() -> Event {
    return admin_event(SS_ADMIN);
}

fn ss_reach(d: Event) -> u32 {
    var dur: real = 0.0;
    if (d.kind == 1u) { dur = d.end_ - d.start; }
    return u32(ceil((d.start + dur) / SS_II)) + 1u;
}

// When the dose j intervals before 0 arrives, for the lag `lag`: lag = n·SS_II + r with the
// phase r in [0, SS_II) (one within round-off of SS_II is 0 of the next interval), and the
// arrival r + (n − j)·SS_II (src/backend/records.rs `arrival`: lag − j·SS_II would put two
// doses in one interval where the lag is a whole number of intervals not exact in binary).
fn ss_arrival(lag: real, j: u32) -> real {
    var n = floor(lag / SS_II);
    var r = lag - n * SS_II;
    if (r < 0.0) {
        r = 0.0;
    } else if (SS_II - r <= SS_ULPS * EPS * max(lag, SS_II)) {
        n = n + 1.0;
        r = 0.0;
    }
    return r + (n - real(j)) * SS_II;
}

// The dose j intervals before 0, from 0 on.
fn tail_event(j: u32) -> Event {
    var ev = ss_dose();
    let a = ss_arrival(ev.start, j);
    ev.end_ = a + (ev.end_ - ev.start);
    ev.start = a;
    if (ev.kind == 0u && !(a >= 0.0)) { ev.kind = 2u; }
    if (ev.kind == 1u) {
        if (!(ev.end_ > 0.0)) { ev.kind = 2u; }
        ev.start = max(a, 0.0);
    }
    return ev;
}

// Event a of the subject: an administration, or (a ≥ n_admin) a tail event.
fn event_of(a: u32) -> Event {
    if (SS_START && a >= meta_.n_admin) { return tail_event(a - meta_.n_admin + 1u); }
    return admin_event(a);
}

fn n_events() -> u32 {
    return meta_.n_admin + n_tail;
}

struct WindowInput {
    found: bool,
    t: real,
    c: u32,
    k: u32,
    // Bolus amount or rate change.
    dv: real,
}

// Among the inputs of one interval [0, SS_II) of the dose repeated forever, the first after the
// cursor (ss_ct, ss_cc, ss_ck) in application order: by time, rate decreases (class 0) first,
// then in order of creation (key 2j: the bolus or start of the dose j intervals before; 2j + 1:
// its end).
fn next_window_input(d: Event) -> WindowInput {
    var best = WindowInput(false, 0.0, 0u, 0u, 0.0);
    var dur: real = 0.0;
    if (d.kind == 1u) { dur = d.end_ - d.start; }
    let reach = ss_reach(d);
    for (var j = 0u; j <= reach; j++) {
        let a = ss_arrival(d.start, j);
        for (var w = 0u; w < 2u; w++) {
            var t: real = 0.0;
            var c = 1u;
            var dv = d.value;
            if (d.kind == 0u) {
                if (w == 1u || !(a >= 0.0 && a < SS_II)) { continue; }
                t = a;
            } else if (d.kind == 1u) {
                let b = a + dur;
                if (!(b > 0.0 && a < SS_II)) { continue; }
                if (w == 0u) {
                    t = max(a, 0.0);
                } else {
                    if (!(b < SS_II)) { continue; }
                    t = b;
                    c = 0u;
                    dv = -d.value;
                }
            } else {
                continue;
            }
            let k = 2u * j + w;
            let after = t > ss_ct || (t == ss_ct && (c > ss_cc || (c == ss_cc && k > ss_ck)));
            let before = !best.found || t < best.t
                || (t == best.t && (c < best.c || (c == best.c && k < best.k)));
            if (after && before) { best = WindowInput(true, t, c, k, dv); }
        }
    }
    return best;
}

// A steady-state interval starts from the model states ss_x at time 0 with no inputs.
fn ss_restart() {
    for (var j = 0u; j < NS; j++) { y[j] = ss_x[j]; rates[j] = 0.0; }
    for (var a = 0u; a < NA; a++) { y[NS + a] = 0.0; }
    ss_t = 0.0;
    ss_busy = 0u;
    ss_ct = -BIG;
    ss_cc = 0u;
    ss_ck = 0u;
}

// Integrates the interval from ss_t to te; false when suspended or failed.
fn ss_advance(te: real) -> bool {
    if (ss_busy == 0u) {
        if (te - ss_t <= SAME_TIME * max(abs(te), 1.0)) {
            ss_t = max(ss_t, te);
            if (!all_finite(y)) { status = 3u; return false; }
            return true;
        }
        ss_busy = 1u;
        t_cur = ss_t;
        step_i = 0u;
    }
    let st = integrate(ss_t, te);
    if (st == SUSPEND) {
        suspended = true;
        return false;
    }
    if (st != 0u) { status = st; return false; }
    ss_busy = 0u;
    ss_t = te;
    if (!all_finite(y)) { status = 3u; return false; }
    return true;
}

// The state at 0; false while suspended (or failed, status set). The model's time in the
// iterations is that of the interval before 0 (q[T_SLOT] = −SS_II; set again on resuming).
fn steady_start() -> bool {
    let d = ss_dose();
    if (TIME_SHIFT) { q[T_SLOT] = -SS_II; }
    if (ss_phase == 0u) {
        for (var j = 0u; j < NS; j++) { ss_x[j] = y[j]; }
        ss_begin();
        ss_cycle = 0u;
        ss_phase = 1u;
        ss_restart();
    }
    loop {
        loop {
            let nx = next_window_input(d);
            var te = SS_II;
            if (nx.found) { te = nx.t; }
            // The model's next jump in time before the input (next_ss_stop: src/backend/gpu.rs
            // ss_window_stops), a stopping point of its own; found again from ss_t on resuming.
            var jump = false;
            if (N_SS_STOPS > 0u) {
                let js = next_ss_stop(ss_t);
                if (js < te) { te = js; jump = true; }
            }
            // And the subject's own, where the jumps move with its parameters.
            if (OWN_STOPS) {
                let os = own_stop_in(1u, ss_t);
                if (os < te) { te = os; jump = true; }
            }
            if (!ss_advance(te)) { return false; }
            if (jump) { continue; }
            if (!nx.found) { break; }
            if (nx.c == 1u && d.kind == 0u) {
                y[d.state] += nx.dv;
            } else {
                rates[d.state] += nx.dv;
                if (abs(rates[d.state]) <= RATE_CANCEL * abs(nx.dv)) { rates[d.state] = 0.0; }
            }
            ss_ct = nx.t;
            ss_cc = nx.c;
            ss_ck = nx.k;
        }
        let done = ss_iterate(false);
        if (done) {
            ss_restart();
            h_prop = 0.0;
            ln_err_prev = log_r(STEP_ERR_PREV_MIN);
            t_prev = -1.0;
            t_cur = -1.0;
            step_i = 0u;
            ss_phase = 2u;
            if (TIME_SHIFT) { q[T_SLOT] = 0.0; }
            return true;
        }
        ss_cycle++;
        if (ss_cycle >= SS_MAX_CYCLES) { status = NO_STEADY_STATE; return false; }
        ss_restart();
        if (stops_left == 0u) {
            suspended = true;
            return false;
        }
        stops_left--;
    }
    return false;
}

// Resets (HAS_RESETS): an event of a dose given before a reset, due at or after it, is
// cancelled (src/dosing Administration::Reset).
fn nominal_of(a: u32) -> real {
    if (SS_START && a >= meta_.n_admin) {
        return arm[SS_ADMIN * 5u] - real(a - meta_.n_admin + 1u) * SS_II;
    }
    return arm[a * 5u];
}

fn cut(a: u32, t: real) -> bool {
    if (!HAS_RESETS) { return false; }
    let n0 = nominal_of(a);
    // Of each run of resets, the first after the dose's nominal time (their lag and duration
    // are 0).
    let none = Dose(0.0, 0.0, 0.0, 0u, 4u);
    for (var l = 0u; l < n_lines(); l++) {
        let b = line_begin(l);
        let e = line_end(l);
        if (b >= e || u32(arm[b * 5u + 3u]) != 4u) { continue; }
        let r = first_after(b, e, n0, none, false);
        if (r < e && arm[r * 5u] <= t) { return true; }
    }
    return false;
}

// Line l's administrations [b, e): a dose line, or consecutive lines of the same dose; the
// lines' ends follow the administrations (src/backend/gpu.rs, arm_data). Within one the start
// and end times do not decrease (the same state, amount and kind throughout, nominal times
// increasing), so what is due next is found by a binary search, not a scan of the whole
// schedule at every stop.
fn n_lines() -> u32 {
    return meta_.off_fixed - meta_.n_admin * 5u;
}

fn line_begin(l: u32) -> u32 {
    if (l == 0u) { return 0u; }
    return u32(arm[meta_.n_admin * 5u + l - 1u]);
}

fn line_end(l: u32) -> u32 {
    return u32(arm[meta_.n_admin * 5u + l]);
}

// The first administration of [b, e) whose start (ends: end) is after t, or e, in a line whose
// doses are d (admin_dose): start = nominal + lag and end = start + duration, as admin_event
// computes them. Only the nominal times are read.
fn first_after(b0: u32, e0: u32, t: real, d: Dose, ends: bool) -> u32 {
    var b = b0;
    var e = e0;
    while (b < e) {
        let mid = b + (e - b) / 2u;
        let st = arm[mid * 5u] + d.lag;
        if (select(st, st + d.dur, ends) > t) { e = mid; } else { b = mid + 1u; }
    }
    return b;
}

// The next stop ts, or an event's start (bolus, infusion, reset) or end (infusion) after t_prev
// if sooner.
fn sooner(ts: real, ev: Event) -> real {
    var t = ts;
    if ((ev.kind <= 1u || ev.kind == 4u) && ev.start > t_prev) { t = min(t, ev.start); }
    if (ev.kind == 1u && ev.end_ > t_prev) { t = min(t, ev.end_); }
    return t;
}

// Event a's inputs in (t_prev, ts]: a bolus, an infusion's start or end (resets apart).
fn apply_event(a: u32, ts: real) {
    let ev = event_of(a);
    if (ev.kind == 0u && ev.start > t_prev && ev.start <= ts && !cut(a, ev.start)) {
        y[ev.state] += ev.value;
    }
    if (ev.kind == 1u) {
        if (ev.start > t_prev && ev.start <= ts && !cut(a, ev.start)) {
            rates[ev.state] += ev.value;
        }
        if (ev.end_ > t_prev && ev.end_ <= ts && !cut(a, ev.end_)) {
            rates[ev.state] -= ev.value;
            // A finished infusion leaves exactly nothing behind.
            if (abs(rates[ev.state]) <= RATE_CANCEL * ev.value) { rates[ev.state] = 0.0; }
        }
    }
}

// The first of the subject's own stopping points after t (OWN_STOPS: where the model jumps in
// time at times that move with its parameters; src/backend/gpu.rs, own_stops), BIG past the
// last: after every occasion's parameters, their count, then the times in order (`list` 0);
// then those of a steady-state start's iterations, in the local time of the interval before
// 0, the same way (`list` 1).
fn own_stop_in(list: u32, t: real) -> real {
    var sets = 1u;
    if (HAS_OCCASIONS) { sets = 1u + n_occ(); }
    var base = sets * NP;
    var c = u32(params[base * meta_.n + sid]);
    if (list == 1u) {
        base += 1u + c;
        c = u32(params[base * meta_.n + sid]);
    }
    for (var k = 0u; k < c; k++) {
        let v = params[(base + 1u + k) * meta_.n + sid];
        if (v > t) { return v; }
    }
    return BIG;
}

fn own_stop_after(t: real) -> real {
    return own_stop_in(0u, t);
}

// Stopping points from the last one processed to the end, within this dispatch's budget.
fn run_stops() {
    let nl = n_lines();
    loop {
        if (t_prev >= meta_.end_time) { return; }
        while (fs < meta_.n_fixed && arm[meta_.off_fixed + fs] <= t_prev) { fs++; }
        var ts = BIG;
        if (fs < meta_.n_fixed) { ts = arm[meta_.off_fixed + fs]; }
        if (OWN_STOPS) { ts = min(ts, own_stop_after(t_prev)); }
        // The next stop: the earliest start (bolus, infusion, reset) or infusion end after
        // t_prev, line by line.
        var live = occ;
        for (var l = 0u; l < nl; l++) {
            let b = line_begin(l);
            let e = line_end(l);
            if (b >= e || !run_open(l)) { continue; }
            let d = run_dose(l, b);
            var pending = false;
            if (d.kind <= 1u || d.kind == 4u) {
                let a = first_after(b, e, t_prev, d, false);
                if (a < e) { ts = min(ts, arm[a * 5u] + d.lag); }
                pending = pending || a < e;
            }
            if (d.kind == 1u) {
                let a = first_after(b, e, t_prev, d, true);
                if (a < e) { ts = min(ts, (arm[a * 5u] + d.lag) + d.dur); }
                pending = pending || a < e;
            }
            if (HAS_OCCASIONS && pending) { live = min(live, run_occ(l)); }
        }
        // Runs of earlier occasions with nothing after t_prev have nothing after any later time
        // either.
        if (HAS_OCCASIONS) { occ_live = live; }
        if (SS_START) {
            for (var a = meta_.n_admin; a < n_events(); a++) { ts = sooner(ts, event_of(a)); }
        }
        if (ts >= BIG) { status = CUT_SHORT; return; }
        if (t_prev >= 0.0) {
            if (t_cur == t_prev && stops_left == 0u) {
                suspended = true;
                return;
            }
            let st = integrate(t_prev, ts);
            if (st == SUSPEND) {
                suspended = true;
                return;
            }
            if (st != 0u) { status = st; return; }
        }
        if (stops_left > 0u) { stops_left--; }
        stop_pre(ts);
        // The occasions that start by ts begin (the CPU reference switches after observing the
        // stop, before its inputs).
        if (HAS_OCCASIONS) { enter_occasion(occasion_of(ts)); }
        if (HAS_RESETS) {
            var reset = false;
            for (var l = 0u; l < nl; l++) {
                let b = line_begin(l);
                let e = line_end(l);
                if (b >= e || !run_open(l)) { continue; }
                // A reset line's lag and duration are 0: its times are the nominal ones.
                let d = run_dose(l, b);
                if (d.kind != 4u) { continue; }
                let a = first_after(b, e, t_prev, d, false);
                reset = reset || (a < e && arm[a * 5u] <= ts);
            }
            // Back to the initial state; the AUC quadratures go on.
            if (reset) { initial_states(); }
        }
        // The inputs due in (t_prev, ts], in the order of the administrations: of each line,
        // those whose start (infusions: start or end) falls in the window.
        for (var l = 0u; l < nl; l++) {
            let b = line_begin(l);
            let e = line_end(l);
            if (b >= e || !run_open(l)) { continue; }
            let d = run_dose(l, b);
            if (d.kind > 1u) { continue; }
            let lo = first_after(b, e, t_prev, d, d.kind == 1u);
            let hi = first_after(lo, e, ts, d, false);
            for (var a = lo; a < hi; a++) { apply_event(a, ts); }
        }
        if (SS_START) {
            for (var a = meta_.n_admin; a < n_events(); a++) { apply_event(a, ts); }
        }
        if (!all_finite(y)) { status = 3u; return; }
        stop_post(ts);
        t_prev = ts;
        t_cur = ts;
    }
    status = CUT_SHORT;
}

fn save_carry() {
    var o = sid * CW;
    for (var j = 0u; j < NY; j++) { carry[o] = y[j]; o++; }
    for (var j = 0u; j < NS; j++) { carry[o] = rates[j]; o++; }
    for (var m = 0u; m < NM; m++) { carry[o] = vals[m]; o++; }
    for (var m = 0u; m < NM; m++) { carry[o] = aux[m]; o++; }
    for (var a = 0u; a < NA; a++) { carry[o] = qbase[a]; o++; }
    for (var k = 0u; k < NSW; k++) { carry[o] = sw_keep[k]; o++; }
    carry[o] = t_prev;
    carry[o + 1u] = h_prop;
    carry[o + 2u] = ln_err_prev;
    carry[o + 3u] = t_cur;
    let u = sid * CU;
    carry_u[u] = status;
    carry_u[u + 1u] = n_acc;
    carry_u[u + 2u] = n_rej;
    carry_u[u + 3u] = n_rhs;
    carry_u[u + 4u] = n_jac;
    carry_u[u + 5u] = next_sample;
    carry_u[u + 6u] = fs;
    carry_u[u + 7u] = step_i;
    carry_u[u + 8u] = sw_phase;
    carry_u[u + 9u] = sw_events;
    if (SS_START) {
        o = sid * CW + CW_ARM;
        for (var k = 0u; k < NS; k++) { carry[o] = ss_x[k]; o++; }
        for (var k = 0u; k < NS; k++) { carry[o] = ss_dprev[k]; o++; }
        carry[o] = ss_prev;
        carry[o + 1u] = ss_t;
        carry[o + 2u] = ss_ct;
        carry[o + 3u] = ss_prev_rho;
        carry[o + 4u] = ss_rho_jump;
        let v = sid * CU + CU_ARM;
        carry_u[v] = ss_phase;
        carry_u[v + 1u] = ss_cycle;
        carry_u[v + 2u] = ss_stalled;
        carry_u[v + 3u] = ss_busy;
        carry_u[v + 4u] = ss_cc;
        carry_u[v + 5u] = ss_ck;
        carry_u[v + 6u] = ss_translating;
        carry_u[v + 7u] = ss_have_d;
    }
}

fn load_carry() {
    var o = sid * CW;
    for (var j = 0u; j < NY; j++) { y[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { rates[j] = carry[o]; o++; }
    for (var m = 0u; m < NM; m++) { vals[m] = carry[o]; o++; }
    for (var m = 0u; m < NM; m++) { aux[m] = carry[o]; o++; }
    for (var a = 0u; a < NA; a++) { qbase[a] = carry[o]; o++; }
    for (var k = 0u; k < NSW; k++) { sw_keep[k] = carry[o]; o++; }
    t_prev = carry[o];
    h_prop = carry[o + 1u];
    ln_err_prev = carry[o + 2u];
    t_cur = carry[o + 3u];
    let u = sid * CU;
    status = carry_u[u];
    n_acc = carry_u[u + 1u];
    n_rej = carry_u[u + 2u];
    n_rhs = carry_u[u + 3u];
    n_jac = carry_u[u + 4u];
    next_sample = carry_u[u + 5u];
    fs = carry_u[u + 6u];
    step_i = carry_u[u + 7u];
    sw_phase = carry_u[u + 8u];
    sw_events = carry_u[u + 9u];
    if (SS_START) {
        o = sid * CW + CW_ARM;
        for (var k = 0u; k < NS; k++) { ss_x[k] = carry[o]; o++; }
        for (var k = 0u; k < NS; k++) { ss_dprev[k] = carry[o]; o++; }
        ss_prev = carry[o];
        ss_t = carry[o + 1u];
        ss_ct = carry[o + 2u];
        ss_prev_rho = carry[o + 3u];
        ss_rho_jump = carry[o + 4u];
        let v = sid * CU + CU_ARM;
        ss_phase = carry_u[v];
        ss_cycle = carry_u[v + 1u];
        ss_stalled = carry_u[v + 2u];
        ss_busy = carry_u[v + 3u];
        ss_cc = carry_u[v + 4u];
        ss_ck = carry_u[v + 5u];
        ss_translating = carry_u[v + 6u];
        ss_have_d = carry_u[v + 7u];
    }
}

fn start_subject() {
    initial_states();
    for (var a = 0u; a < NA; a++) { y[NS + a] = 0.0; qbase[a] = 0.0; }
    for (var m = 0u; m < NM; m++) {
        let kind = spec(m).kind;
        vals[m] = nan();
        aux[m] = nan();
        if (kind == 1u) { vals[m] = -BIG; }
        if (kind == 2u) { aux[m] = -BIG; }
        if (kind == 3u) { vals[m] = BIG; }
        if (kind == 6u) { vals[m] = 0.0; }
    }
    t_prev = -1.0;
    t_cur = -1.0;
    step_i = 0u;
    sw_phase = 0u;
    sw_events = 0u;
    h_prop = 0.0;
    ln_err_prev = log_r(STEP_ERR_PREV_MIN);
    status = 0u;
    n_acc = 0u;
    n_rej = 0u;
    n_rhs = 0u;
    n_jac = 0u;
    next_sample = 0u;
    fs = 0u;
    for (var j = 0u; j < meta_.n_times; j++) {
        for (var k = 0u; k < NO; k++) { profiles[(k * meta_.n + sid) * meta_.n_times + j] = nan(); }
    }
    ss_phase = select(2u, 0u, SS_START);
    ss_busy = 0u;
    if (!all_finite(y)) { status = 3u; }
    if (HAS_OCCASIONS) {
        // Every administration of a run has the run's dose: one check per run.
        for (var l = 0u; l < n_lines(); l++) {
            if (line_begin(l) < line_end(l) && run_dose(l, line_begin(l)).kind == 3u) { status = 3u; }
        }
    } else {
        for (var a = 0u; a < meta_.n_admin; a++) {
            if (admin_event(a).kind == 3u) { status = 3u; }
        }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= meta_.n) { return; }
    sid = i;
    for (var p = 0u; p < NP; p++) { q[p] = params[p * meta_.n + i]; }
    q = model_prepare(q);
    subj_scale = scale[i];
    dose_v = dosing_of(q);
    occ = 0u;
    occ_live = 0u;
    if (meta_.first_dispatch != 0u) {
        start_subject();
    } else {
        load_carry();
        // Finished in an earlier dispatch: its results are written.
        if (status != 0u || t_prev >= meta_.end_time) { return; }
        // The occasion reached: the stops up to t_prev are behind (occ_live is found again).
        if (HAS_OCCASIONS) { enter_occasion(occasion_of(t_prev)); }
    }
    n_tail = 0u;
    if (SS_START) {
        let d = ss_dose();
        if (d.kind <= 2u) { n_tail = ss_reach(d) + 1u; }
    }
    steps_left = meta_.step_budget;
    stops_left = meta_.stop_budget;
    suspended = false;
    if (!SS_START) { ss_phase = 2u; }
    if (status == 0u && ss_phase != 2u) { steady_start(); }
    if (status == 0u && ss_phase == 2u && !suspended) { run_stops(); }
    save_carry();
    for (var m = 0u; m < NM; m++) {
        var v = vals[m];
        if (status != 0u || !finite(v) || abs(v) >= BIG) { v = nan(); }
        metrics_out[m * meta_.n + i] = v;
    }
    if (!loops_intact()) {
        carry_u[sid * CU] = CUT_SHORT;
    } else if (suspended) {
        atomicAdd(&pending, 1u);
    }
}
