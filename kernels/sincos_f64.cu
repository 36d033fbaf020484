// sin and cos of the f64 kernels (real is double), the same as the f64 WGSL kernels'
// (shaders/real_f64.wgsl): fdlibm's (e_rem_pio2.c, k_sin.c, k_cos.c; the coefficients are
// theirs). x = k·π/2 + (y0 + y1) with |y0| ≤ π/4 by the medium-range reduction, π/2 in parts
// of 33 bits (k times each is exact for |k| < 2^20) and their tails, the second and third part
// taken when the first leaves a remainder below 2^-16 and 2^-49 of |x|; then the minimax
// polynomials on [−π/4, π/4] with y1 carried. About an ulp for |x| < 2^20·π/2 ≈ 1.6e6; beyond,
// the error grows with |x|. CUDA's sin and cos keep a 40-byte local array for their
// reduction of large arguments, which the kernels keep out of local memory. Both polynomials
// are evaluated and the quadrant selects. NaN for ±∞ and NaN.

// sin(x + y) for |x| ≤ π/4, y a tail below an ulp of x.
__device__ __forceinline__ real ksin64(real x, real y) {
    const real z = x * x;
    const real v = z * x;
    real r = 1.58969099521155010221e-10;
    r = r * z - 2.50507602534068634195e-08;
    r = r * z + 2.75573137070700676789e-06;
    r = r * z - 1.98412698298579493134e-04;
    r = r * z + 8.33333333332248946124e-03;
    return x - ((z * (0.5 * y - v * r) - y) + v * 1.66666666666666324348e-01);
}

// cos(x + y) for |x| ≤ π/4, y a tail below an ulp of x.
__device__ __forceinline__ real kcos64(real x, real y) {
    const real z = x * x;
    real r = -1.13596475577881948265e-11;
    r = r * z + 2.08757232129817482790e-09;
    r = r * z - 2.75573143513906633035e-07;
    r = r * z + 2.48015872894767294178e-05;
    r = r * z - 1.38888888888741095749e-03;
    r = r * z + 4.16666666666666019037e-02;
    r = r * z;
    const real hz = 0.5 * z;
    const real w = 1.0 - hz;
    return w + (((1.0 - w) - hz) + (z * r - x * y));
}

// The quadrant of x (0 to 3, as a real) into *q, the reduced argument into *hi + *lo.
__device__ __forceinline__ void rem_pio2_64(real x, real* q, real* hi, real* lo) {
    const real k = floor(x * 6.36619772367581382433e-01 + 0.5);
    *q = k - 4.0 * floor(k * 0.25);
    real r = x - k * 1.57079632673412561417e+00;
    real w = k * 6.07710050650619224932e-11;
    real y0 = r - w;
    if (fabs(y0) < fabs(x) * 1.52587890625e-05) {
        real t = r;
        w = k * 6.07710050630396597660e-11;
        r = t - w;
        w = k * 2.02226624879595063154e-21 - ((t - r) - w);
        y0 = r - w;
        if (fabs(y0) < fabs(x) * 1.7763568394002505e-15) {
            t = r;
            w = k * 2.02226624871116645580e-21;
            r = t - w;
            w = k * 8.47842766036889956997e-32 - ((t - r) - w);
            y0 = r - w;
        }
    }
    *hi = y0;
    *lo = (r - y0) - w;
}

__device__ __forceinline__ real sin_r(real x) {
    if (!isfinite(x)) return x - x;
    real q, hi, lo;
    rem_pio2_64(x, &q, &hi, &lo);
    const real s = ksin64(hi, lo), c = kcos64(hi, lo);
    return q == 0.0 ? s : q == 1.0 ? c : q == 2.0 ? -s : -c;
}

__device__ __forceinline__ real cos_r(real x) {
    if (!isfinite(x)) return x - x;
    real q, hi, lo;
    rem_pio2_64(x, &q, &hi, &lo);
    const real s = ksin64(hi, lo), c = kcos64(hi, lo);
    return q == 0.0 ? c : q == 1.0 ? -s : q == 2.0 ? -c : s;
}
