// The records driver of shaders/integrate.wgsl: one dataset subject's records, run as the
// program src/backend/records.rs writes for it (`Program`). Every event time, amount, rate,
// lag and bioavailability is resolved there; this driver integrates between events, applies
// inputs, resets, switches parameter sets, writes each record's outputs and finds steady
// states by the same iterations as the CPU reference (`Cpu::steady_state`,
// `Cpu::steady_infusion`). Like the arm driver it works within a per-dispatch budget (steps,
// and instructions or steady-state cycles) and carries what it needs to go on.
//
// Instructions, four values each, in the `arm` buffer: [op, a, b, c].
//   0 start       a: first time
//   1 advance     integrate from a to b
//   2 bolus       into state a, amount b            (in a steady-state window: c = time)
//   3 rate        of state a changes by b           (in a steady-state window: c = time)
//   4 reset       initial states, no inputs, step size forgotten
//   5 params      parameter set a of the subject
//   6 output      record a's outputs at time b
//   7 steady      mode a (1 set, 2 add), interval b; the c next instructions are the
//                 window's inputs (2, 3) and the stops of the model's jumps in time in the
//                 interval ([1, 0, 0, local time]), in the order of their times (a start,
//                 0, gives the dose's time first)
//   8 infusion    steady state of a constant input b into state a; the c next instructions
//                 are the stops of the model's jumps in time in its spans, [span, local
//                 time], ordered by span (a start, 0, gives the infusion's time first)
//   9 fail        status a

// Accepted steps are not observed: records report outputs at their times only (so this
// kernel uses neither the profiles nor the dose scaling bindings).
fn accepted_step(t0: real, t1: real, h: real) {}

// Per subject, five values: first instruction, instructions, first parameter set, first
// output row, records.
@group(0) @binding(9) var<storage, read> index: array<u32>;


var<private> ip: u32;
// Next input of the steady-state window.
var<private> wi: u32;
// 0 running the program, 1 in steady-state cycles, 2 and 3 in a steady-state infusion (spans
// doubling, then fixed).
var<private> phase: u32;
var<private> cycle: u32;
// Parameter set in force.
var<private> pk: u32;
// An integration is under way (from t_prev, now at t_cur).
var<private> busy: u32;
var<private> save_y: array<real, {{N_NY}}>;
var<private> save_rates: array<real, {{N_NS}}>;
var<private> save_t: real;
var<private> span_ss: real;

fn load_params() {
    let o = (index[sid * 5u + 2u] + pk) * NP;
    for (var p = 0u; p < NP; p++) { q[p] = params[o + p]; }
    q = model_prepare(q);
}

// Integrates from t0 to t1 (times this close are the same time, as on the CPU reference);
// false when suspended or failed.
fn advance_from(t0: real, t1: real) -> bool {
    if (busy == 0u) {
        t_cur = t0;
        if (t1 - t0 <= SAME_TIME * max(abs(t1), 1.0)) {
            t_cur = max(t0, t1);
        } else {
            t_prev = t0;
            busy = 1u;
            step_i = 0u;
        }
    }
    if (busy != 0u) {
        let st = integrate(t_prev, t1);
        if (st == SUSPEND) {
            suspended = true;
            return false;
        }
        if (st != 0u) { status = st; return false; }
        busy = 0u;
        t_cur = t1;
    }
    if (!all_finite(y)) { status = 3u; return false; }
    return true;
}

fn advance_to(t1: real) -> bool {
    if (busy == 0u && t1 <= t_cur) {
        if (!all_finite(y)) { status = 3u; return false; }
        return true;
    }
    return advance_from(t_cur, t1);
}

fn apply_input(op: u32, s: u32, v: real) {
    if (op == 2u) {
        y[s] += v;
    } else {
        rates[s] += v;
        if (abs(rates[s]) <= RATE_CANCEL * abs(v)) { rates[s] = 0.0; }
    }
}

fn reset_states() {
    initial_states();
    for (var a = 0u; a < NA; a++) { y[NS + a] = 0.0; }
    h_prop = 0.0;
}

// A steady-state cycle starts from the model states ss_x at time 0 with no inputs.
fn restart() {
    for (var j = 0u; j < NS; j++) { y[j] = ss_x[j]; rates[j] = 0.0; }
    for (var a = 0u; a < NA; a++) { y[NS + a] = 0.0; }
    t_cur = 0.0;
    wi = 0u;
}

fn isolate() {
    save_y = y;
    save_rates = rates;
    save_t = t_cur;
}

// Back from the scratch cycles: the model states set to (mode 1) or increased by (mode 2) ss_x.
fn settle(mode: u32) {
    if (TIME_SHIFT) { q[T_SLOT] = 0.0; }
    y = save_y;
    rates = save_rates;
    t_cur = save_t;
    for (var j = 0u; j < NS; j++) {
        if (mode == 1u) { y[j] = ss_x[j]; } else { y[j] += ss_x[j]; }
    }
    phase = 0u;
}

// One more cycle or doubling within the budget; false (suspended) when it is spent.
fn next_round() -> bool {
    if (stops_left == 0u) {
        suspended = true;
        return false;
    }
    stops_left--;
    return true;
}

// Instruction `at` (mode, interval, window length): true when the steady state is reached.
// The model's time in the cycles is that of the interval before the dose (save_t, the time
// the start before the instruction set): q[T_SLOT] = save_t − ii, set again on resuming.
fn steady_state(at: u32, mode: u32, ii: real, n_window: u32) -> bool {
    if (phase == 0u) {
        isolate();
        for (var j = 0u; j < NS; j++) { ss_x[j] = select(0.0, y[j], mode == 1u); }
        cycle = 0u;
        ss_begin();
        phase = 1u;
        restart();
    }
    if (TIME_SHIFT) { q[T_SLOT] = save_t - ii; }
    loop {
        while (wi < n_window) {
            let o = (at + 1u + wi) * 4u;
            if (!advance_to(max(arm[o + 3u], t_cur))) { return false; }
            let kind = u32(arm[o]);
            if (kind != 1u) { apply_input(kind, u32(arm[o + 1u]), arm[o + 2u]); }
            wi++;
        }
        if (!advance_to(ii)) { return false; }
        let done = ss_iterate(false);
        if (done) {
            settle(mode);
            return true;
        }
        cycle++;
        if (cycle >= SS_MAX_CYCLES) { status = NO_STEADY_STATE; return false; }
        restart();
        if (!next_round()) { return false; }
    }
    return false;
}

// Instruction `at` (state, rate, stops): a constant input `rate` into state s to steady state
// at the time of the start before it, as `Cpu::steady_infusion`: spans doubling from 1 (phase
// 2) until one changes the state by no more than the noise level, then iterations over that
// span as over a dosing interval (phase 3), the span doubling again where a mode is too slow
// to tell from noise over it. Each span stops at the model's jumps in time inside it, listed
// after the instruction.
fn steady_infusion(at: u32, s: u32, rate: real, n_stops: u32) -> bool {
    if (phase == 0u) {
        isolate();
        for (var j = 0u; j < NS; j++) { ss_x[j] = y[j]; }
        cycle = 0u;
        span_ss = 1.0;
        phase = 2u;
        restart();
        rates[s] = rate;
    }
    loop {
        // The span ends, to the model, at the instruction's time.
        if (TIME_SHIFT) { q[T_SLOT] = save_t - span_ss; }
        while (wi < n_stops && arm[(at + 1u + wi) * 4u] < span_ss) { wi++; }
        while (wi < n_stops && arm[(at + 1u + wi) * 4u] == span_ss) {
            if (!advance_to(arm[(at + 1u + wi) * 4u + 1u])) { return false; }
            wi++;
        }
        if (!advance_to(span_ss)) { return false; }
        if (phase == 2u) {
            let change = ss_take_change();
            if (ss_still) {
                settle(1u);
                return true;
            }
            if (change <= SS_NOISE) {
                phase = 3u;
                ss_begin();
                cycle = 0u;
            } else {
                cycle++;
                if (cycle >= SS_INFUSION_DOUBLINGS) { status = NO_STEADY_STATE; return false; }
                span_ss = min(2.0 * span_ss, SS_INFUSION_SPAN_MAX);
            }
        } else {
            let done = ss_iterate(true);
            if (ss_drift) {
                if (span_ss >= SS_INFUSION_SPAN_MAX) { status = NO_STEADY_STATE; return false; }
                span_ss = min(2.0 * span_ss, SS_INFUSION_SPAN_MAX);
                ss_begin();
                cycle = 0u;
            } else if (done) {
                settle(1u);
                return true;
            } else {
                cycle++;
                if (cycle >= SS_MAX_CYCLES) { status = NO_STEADY_STATE; return false; }
            }
        }
        restart();
        rates[s] = rate;
        if (!next_round()) { return false; }
    }
    return false;
}

fn write_outputs(j: u32, t: real) {
    let c = outs(t, y);
    let row = index[sid * 5u + 3u] + j;
    for (var k = 0u; k < NO; k++) { metrics_out[row * NO + k] = c[k]; }
}

fn run_program() {
    let base = index[sid * 5u];
    let len = index[sid * 5u + 1u];
    loop {
        if (status != 0u || ip >= len) { return; }
        if (phase == 0u && !next_round()) { return; }
        let o = (base + ip) * 4u;
        let op = u32(arm[o]);
        let a = arm[o + 1u];
        let b = arm[o + 2u];
        let c = arm[o + 3u];
        if (op == 0u) {
            t_cur = a;
        } else if (op == 1u) {
            if (!advance_from(a, b)) { return; }
        } else if (op == 2u || op == 3u) {
            apply_input(op, u32(a), b);
            if (!all_finite(y)) { status = 3u; return; }
        } else if (op == 4u) {
            reset_states();
        } else if (op == 5u) {
            pk = u32(a);
            load_params();
        } else if (op == 6u) {
            write_outputs(u32(a), b);
        } else if (op == 7u) {
            if (!steady_state(base + ip, u32(a), b, u32(c))) { return; }
            ip += u32(c);
        } else if (op == 8u) {
            if (!steady_infusion(base + ip, u32(a), b, u32(c))) { return; }
            ip += u32(c);
        } else {
            status = u32(a);
            return;
        }
        ip++;
    }
}

fn save_carry() {
    var o = sid * CW;
    for (var j = 0u; j < NY; j++) { carry[o] = y[j]; o++; }
    for (var j = 0u; j < NY; j++) { carry[o] = save_y[j]; o++; }
    for (var j = 0u; j < NS; j++) { carry[o] = rates[j]; o++; }
    for (var j = 0u; j < NS; j++) { carry[o] = save_rates[j]; o++; }
    for (var j = 0u; j < NS; j++) { carry[o] = ss_x[j]; o++; }
    for (var j = 0u; j < NS; j++) { carry[o] = ss_dprev[j]; o++; }
    for (var k = 0u; k < NSW; k++) { carry[o] = sw_keep[k]; o++; }
    carry[o] = t_prev;
    carry[o + 1u] = t_cur;
    carry[o + 2u] = h_prop;
    carry[o + 3u] = ln_err_prev;
    carry[o + 4u] = save_t;
    carry[o + 5u] = ss_prev;
    carry[o + 6u] = span_ss;
    carry[o + 7u] = ss_prev_rho;
    carry[o + 8u] = ss_rho_jump;
    let u = sid * CU;
    carry_u[u] = status;
    carry_u[u + 1u] = n_acc;
    carry_u[u + 2u] = n_rej;
    carry_u[u + 3u] = n_rhs;
    carry_u[u + 4u] = n_jac;
    carry_u[u + 5u] = ip;
    carry_u[u + 6u] = wi;
    carry_u[u + 7u] = phase;
    carry_u[u + 8u] = cycle;
    carry_u[u + 9u] = ss_stalled;
    carry_u[u + 10u] = pk;
    carry_u[u + 11u] = busy;
    carry_u[u + 12u] = step_i;
    carry_u[u + 13u] = sw_phase;
    carry_u[u + 14u] = sw_events;
    carry_u[u + 15u] = ss_translating;
    carry_u[u + 16u] = ss_have_d;
}

fn load_carry() {
    var o = sid * CW;
    for (var j = 0u; j < NY; j++) { y[j] = carry[o]; o++; }
    for (var j = 0u; j < NY; j++) { save_y[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { rates[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { save_rates[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { ss_x[j] = carry[o]; o++; }
    for (var j = 0u; j < NS; j++) { ss_dprev[j] = carry[o]; o++; }
    for (var k = 0u; k < NSW; k++) { sw_keep[k] = carry[o]; o++; }
    t_prev = carry[o];
    t_cur = carry[o + 1u];
    h_prop = carry[o + 2u];
    ln_err_prev = carry[o + 3u];
    save_t = carry[o + 4u];
    ss_prev = carry[o + 5u];
    span_ss = carry[o + 6u];
    ss_prev_rho = carry[o + 7u];
    ss_rho_jump = carry[o + 8u];
    let u = sid * CU;
    status = carry_u[u];
    n_acc = carry_u[u + 1u];
    n_rej = carry_u[u + 2u];
    n_rhs = carry_u[u + 3u];
    n_jac = carry_u[u + 4u];
    ip = carry_u[u + 5u];
    wi = carry_u[u + 6u];
    phase = carry_u[u + 7u];
    cycle = carry_u[u + 8u];
    ss_stalled = carry_u[u + 9u];
    pk = carry_u[u + 10u];
    busy = carry_u[u + 11u];
    step_i = carry_u[u + 12u];
    sw_phase = carry_u[u + 13u];
    sw_events = carry_u[u + 14u];
    ss_translating = carry_u[u + 15u];
    ss_have_d = carry_u[u + 16u];
}

fn start_subject() {
    for (var j = 0u; j < NY; j++) { y[j] = 0.0; save_y[j] = 0.0; }
    for (var j = 0u; j < NS; j++) { rates[j] = 0.0; save_rates[j] = 0.0; ss_x[j] = 0.0; }
    t_prev = 0.0;
    t_cur = 0.0;
    h_prop = 0.0;
    ln_err_prev = log_r(STEP_ERR_PREV_MIN);
    save_t = 0.0;
    ss_prev = SS_NONE;
    ss_prev_rho = -1.0;
    ss_rho_jump = 0.0;
    span_ss = 1.0;
    status = 0u;
    n_acc = 0u;
    n_rej = 0u;
    n_rhs = 0u;
    n_jac = 0u;
    ip = 0u;
    wi = 0u;
    phase = 0u;
    cycle = 0u;
    ss_stalled = 0u;
    pk = 0u;
    busy = 0u;
    step_i = 0u;
    sw_phase = 0u;
    sw_events = 0u;
    // The outputs of records a failed subject never reaches stay NaN: the host fills the
    // buffer so, as no loop over a subject's records (65 535 iterations at most on software
    // adapters, outside any dispatch budget) need do it here.
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= meta_.n) { return; }
    sid = i;
    if (meta_.first_dispatch != 0u) {
        start_subject();
    } else {
        load_carry();
        // Finished in an earlier dispatch.
        if (status != 0u || ip >= index[sid * 5u + 1u]) { return; }
    }
    load_params();
    steps_left = meta_.step_budget;
    stops_left = meta_.stop_budget;
    suspended = false;
    run_program();
    save_carry();
    if (!loops_intact()) {
        carry_u[sid * CU] = CUT_SHORT;
    } else if (suspended) {
        atomicAdd(&pending, 1u);
    }
}
