// The arm driver of shaders/integrate.wgsl: one subject's way through an arm's dosing schedule
// (administrations expanded from the dose lines, with the subject's lag, bioavailability and
// modelled rates), metrics and profiles observed on every accepted step.

// Every accepted step is observed (metrics, profiles).
fn accepted_step(t0: real, t1: real, h: real) {
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
    // 0 bolus, 1 infusion, 2 nothing (an infusion of zero duration), 3 invalid.
    kind: u32,
}

// Administration i of the arm for this subject (lag, bioavailability, modelled rate or
// duration from the model's dosing declarations; amounts scaled per subject).
fn admin_event(i: u32) -> Event {
    let o = i * 5u;
    let nominal = arm[o];
    let s = u32(arm[o + 1u]);
    let amt = arm[o + 2u];
    let kind = u32(arm[o + 3u]);
    let v = arm[o + 4u];
    var ev = Event(0.0, 0.0, 0.0, s, 3u);
    let lag = dose_v[4u * s];
    let f = dose_v[4u * s + 1u];
    let rate_m = dose_v[4u * s + 2u];
    let dur_m = dose_v[4u * s + 3u];
    if (!(finite(lag) && lag >= 0.0) || !(finite(f) && f >= 0.0)) { return ev; }
    let amount = amt * subj_scale * f;
    if (!(finite(amount) && amount >= 0.0)) { return ev; }
    let t = nominal + lag;
    ev.start = t;
    if (kind == 0u) {
        ev.value = amount;
        ev.kind = 0u;
        return ev;
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
        return ev;
    }
    if (!(finite(rate) && rate > 0.0 && finite(dur) && dur >= 0.0)) { return ev; }
    ev.value = rate;
    ev.end_ = t + dur;
    ev.kind = select(2u, 1u, dur > 0.0);
    return ev;
}

// Stopping points from the last one processed to the end, within this dispatch's budget.
fn run_stops() {
    loop {
        if (t_prev >= meta_.end_time) { return; }
        while (fs < meta_.n_fixed && arm[meta_.off_fixed + fs] <= t_prev) { fs++; }
        var ts = BIG;
        if (fs < meta_.n_fixed) { ts = arm[meta_.off_fixed + fs]; }
        for (var a = 0u; a < meta_.n_admin; a++) {
            let ev = admin_event(a);
            if (ev.kind <= 1u && ev.start > t_prev) { ts = min(ts, ev.start); }
            if (ev.kind == 1u && ev.end_ > t_prev) { ts = min(ts, ev.end_); }
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
        for (var a = 0u; a < meta_.n_admin; a++) {
            let ev = admin_event(a);
            if (ev.kind == 0u && ev.start > t_prev && ev.start <= ts) {
                y[ev.state] += ev.value;
            }
            if (ev.kind == 1u) {
                if (ev.start > t_prev && ev.start <= ts) { rates[ev.state] += ev.value; }
                if (ev.end_ > t_prev && ev.end_ <= ts) {
                    rates[ev.state] -= ev.value;
                    // A finished infusion leaves exactly nothing behind.
                    if (abs(rates[ev.state]) <= 1e-6 * ev.value) { rates[ev.state] = 0.0; }
                }
            }
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
    carry[o] = t_prev;
    carry[o + 1u] = h_prop;
    carry[o + 2u] = err_prev;
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
}

fn load_carry() {
    var o = sid * CW;
    for (var j = 0u; j < NY; j++) { y[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { rates[j] = carry[o]; o++; }
    for (var m = 0u; m < NM; m++) { vals[m] = carry[o]; o++; }
    for (var m = 0u; m < NM; m++) { aux[m] = carry[o]; o++; }
    t_prev = carry[o];
    h_prop = carry[o + 1u];
    err_prev = carry[o + 2u];
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
}

fn start_subject() {
    var zero: array<real, {{N_NS}}>;
    var y0 = model_init(0.0, zero, q);
    for (var j = 0u; j < NS; j++) { y[j] = y0[j]; rates[j] = 0.0; }
    for (var k = 0u; k < NO; k++) { y[NS + k] = 0.0; }
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
    h_prop = 0.0;
    err_prev = 1e-4;
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
    if (!all_finite(y)) { status = 3u; }
    for (var a = 0u; a < meta_.n_admin; a++) {
        if (admin_event(a).kind == 3u) { status = 3u; }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= meta_.n) { return; }
    sid = i;
    for (var p = 0u; p < NP; p++) { q[p] = params[p * meta_.n + i]; }
    subj_scale = scale[i];
    var zero: array<real, {{N_NS}}>;
    dose_v = model_dosing(0.0, zero, q);
    if (meta_.first_dispatch != 0u) {
        start_subject();
    } else {
        load_carry();
        // Finished in an earlier dispatch: its results are written.
        if (status != 0u || t_prev >= meta_.end_time) { return; }
    }
    steps_left = meta_.step_budget;
    stops_left = meta_.stop_budget;
    suspended = false;
    if (status == 0u) { run_stops(); }
    save_carry();
    if (suspended) { atomicAdd(&pending, 1u); }
    for (var m = 0u; m < NM; m++) {
        var v = vals[m];
        if (status != 0u || !finite(v) || abs(v) >= BIG) { v = nan(); }
        metrics_out[m * meta_.n + i] = v;
    }
}
