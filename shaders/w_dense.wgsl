// The dense factorisation of W, for shaders/integrate.wgsl's slot W (models with fewer than
// nine states, or whose factors would be more than half full; see src/backend/wsparse.rs).

// W = si·I − sj·J of the extended system, factorised: the model block by LU with partial
// pivoting; the AUC rows (J = [G 0]) are solved by substitution in w_solve.
fn w_factor(t: real, si: real, sj: real) -> bool {
    let ys = model_part(y);
    // A derivative that is not finite at this point (a power below 1 of a state at 0) is taken
    // as 0: W is then an approximation, which the step's error control judges.
    var jm = model_jac(t, ys, q);
    var dm = model_dfdt(t, ys, q);
    for (var j = 0u; j < NS; j++) { dfdt_v[j] = finite_or_0(dm[j]); }
    if (NA > 0u) {
        gq = model_output_jac(t, ys, q);
        // An output that is not finite here adds nothing to its quadrature (sys_rhs), so
        // neither does its row of J nor its ∂/∂t (the CPU reference's WithQuadrature alike).
        let gv = model_outputs(t, ys, q);
        for (var k = 0u; k < NO * NS; k++) { gq[k] = select(0.0, finite_or_0(gq[k]), finite(gv[k / NS])); }
        var dg = model_output_dfdt(t, ys, q);
        for (var k = 0u; k < NO; k++) { dg[k] = select(0.0, dg[k], finite(gv[k])); }
        for (var a = 0u; a < NA; a++) { dfdt_v[NS + a] = finite_or_0(dg[quad_output(a)]); }
    }
    n_jac++;
    w_si = si;
    w_sj = sj;
    for (var i = 0u; i < NS; i++) {
        for (var j = 0u; j < NS; j++) {
            lu[i * NS + j] = select(0.0, si, i == j) - sj * finite_or_0(jm[i * NS + j]);
        }
    }
    for (var k = 0u; k < NS; k++) {
        var p = k;
        var best = abs(lu[k * NS + k]);
        for (var i = k + 1u; i < NS; i++) {
            let v = abs(lu[i * NS + k]);
            if (v > best) { best = v; p = i; }
        }
        if (best == 0.0 || !finite(best)) { return false; }
        piv[k] = p;
        if (p != k) {
            for (var j = 0u; j < NS; j++) {
                let a = lu[k * NS + j];
                lu[k * NS + j] = lu[p * NS + j];
                lu[p * NS + j] = a;
            }
        }
        let inv = 1.0 / lu[k * NS + k];
        for (var i = k + 1u; i < NS; i++) {
            let f = lu[i * NS + k] * inv;
            lu[i * NS + k] = f;
            if (f != 0.0) {
                for (var j = k + 1u; j < NS; j++) { lu[i * NS + j] -= f * lu[k * NS + j]; }
            }
        }
    }
    return true;
}

fn w_solve(b: array<real, {{N_NY}}>) -> array<real, {{N_NY}}> {
    var x = b;
    for (var k = 0u; k < NS; k++) {
        let p = piv[k];
        let a = x[k];
        x[k] = x[p];
        x[p] = a;
    }
    for (var i = 1u; i < NS; i++) {
        var s = x[i];
        for (var j = 0u; j < i; j++) { s -= lu[i * NS + j] * x[j]; }
        x[i] = s;
    }
    for (var ii = 0u; ii < NS; ii++) {
        let i = NS - 1u - ii;
        var s = x[i];
        for (var j = i + 1u; j < NS; j++) { s -= lu[i * NS + j] * x[j]; }
        x[i] = s / lu[i * NS + i];
    }
    for (var a = 0u; a < NA; a++) {
        let k = quad_output(a);
        var s = b[NS + a];
        for (var j = 0u; j < NS; j++) { s += w_sj * gq[k * NS + j] * x[j]; }
        x[NS + a] = s / w_si;
    }
    return x;
}
