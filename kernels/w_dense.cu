// The dense factorisation of W, for kernels/integrate.cu's slot W (models with fewer than
// nine states, or whose factors would be more than half full; see src/backend/wsparse.rs).

    // W = si·I − sj·J of the extended system: the model block by LU with partial pivoting, the
    // AUC rows (J = [G 0]) by substitution in w_solve.
    // Loops have constant bounds and test the varying ones inside, so that unrolling leaves
    // compile-time indices only; a pivot row is swapped by a predicated loop over the rows.
    FI bool w_factor(real t, real si, real sj) {
        // A derivative that is not finite at this point (a power below 1 of a state at 0) is
        // taken as 0: W is then an approximation, which the step's error control judges.
#if NA > 0
        // Which quadratures' outputs are not finite here, found before J so that the outputs'
        // values are not kept alongside it.
        unsigned bad[(NA + 31) / 32];
        {
            real gv[NO];
            model_outputs(t, y, q, gv);
            #pragma unroll
            for (int w = 0; w < (NA + 31) / 32; w++) bad[w] = 0;
            #pragma unroll
            for (int a = 0; a < NA; a++)
                if (!isfinite(gv[quad_output(a)])) bad[a / 32] |= 1u << (a % 32);
        }
#endif
        real jm[NS * NS], dm[NS];
        model_jac(t, y, q, jm);
        model_dfdt(t, y, q, dm);
        #pragma unroll
        for (int j = 0; j < NS; j++) dfdt_v[j] = finite_or_0(dm[j]);
#if NA > 0
        real dg[NO];
        model_output_jac(t, y, q, gq);
        model_output_dfdt(t, y, q, dg);
        #pragma unroll
        for (int k = 0; k < NOS; k++) gq[k] = finite_or_0(gq[k]);
        // An output that is not finite here adds nothing to its quadrature (sys_rhs), so
        // neither does its row of J nor its ∂/∂t (the CPU reference's WithQuadrature alike).
        #pragma unroll
        for (int a = 0; a < NA; a++) {
            if (bad[a / 32] & (1u << (a % 32))) {
                dg[quad_output(a)] = 0;
                #pragma unroll
                for (int j = 0; j < NS; j++) gq[quad_output(a) * NS + j] = 0;
            }
        }
        #pragma unroll
        for (int a = 0; a < NA; a++) {
            const real d = dg[quad_output(a)];
            dfdt_v[NS + a] = finite_or_0(d);
        }
#endif
        n_jac++;
        w_si = si;
        w_sj = sj;
        #pragma unroll
        for (int i = 0; i < NS; i++) {
            #pragma unroll
            for (int j = 0; j < NS; j++) {
                const real e = jm[i * NS + j];
                lu[i * NS + j] = (i == j ? si : (real)0) - sj * finite_or_0(e);
            }
        }
        #pragma unroll
        for (int k = 0; k < NS; k++) {
            int p = k;
            real best = fabs(lu[k * NS + k]);
            #pragma unroll
            for (int i = 0; i < NS; i++) {
                if (i <= k) continue;
                real v = fabs(lu[i * NS + k]);
                if (v > best) { best = v; p = i; }
            }
            if (best == (real)0 || !isfinite(best)) return false;
            piv[k] = p;
            #pragma unroll
            for (int i = 0; i < NS; i++) {
                if (i <= k || i != p) continue;
                #pragma unroll
                for (int j = 0; j < NS; j++) {
                    real a = lu[k * NS + j];
                    lu[k * NS + j] = lu[i * NS + j];
                    lu[i * NS + j] = a;
                }
            }
            real inv = (real)1 / lu[k * NS + k];
            #pragma unroll
            for (int i = 0; i < NS; i++) {
                if (i <= k) continue;
                real f = lu[i * NS + k] * inv;
                lu[i * NS + k] = f;
                if (f != (real)0) {
                    #pragma unroll
                    for (int j = 0; j < NS; j++)
                        if (j > k) lu[i * NS + j] -= f * lu[k * NS + j];
                }
            }
        }
        return true;
    }

    FI void w_solve(real* x) {
        real b[NA1];
        #pragma unroll
        for (int a = 0; a < NA; a++) b[a] = x[NS + a];
        #pragma unroll
        for (int k = 0; k < NS; k++) {
            const int p = piv[k];
            #pragma unroll
            for (int i = 0; i < NS; i++) {
                if (i <= k || i != p) continue;
                real a = x[k];
                x[k] = x[i];
                x[i] = a;
            }
        }
        #pragma unroll
        for (int i = 1; i < NS; i++) {
            real s = x[i];
            #pragma unroll
            for (int j = 0; j < NS; j++)
                if (j < i) s -= lu[i * NS + j] * x[j];
            x[i] = s;
        }
        #pragma unroll
        for (int i = NS - 1; i >= 0; i--) {
            real s = x[i];
            #pragma unroll
            for (int j = 0; j < NS; j++)
                if (j > i) s -= lu[i * NS + j] * x[j];
            x[i] = s / lu[i * NS + i];
        }
        #pragma unroll
        for (int a = 0; a < NA; a++) {
            const int k = quad_output(a);
            real s = b[a];
            #pragma unroll
            for (int j = 0; j < NS; j++) s += w_sj * gq[k * NS + j] * x[j];
            x[NS + a] = s / w_si;
        }
    }
