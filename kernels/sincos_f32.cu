// sin and cos of the f32 kernels (real is float), the same as the f32 WGSL kernels'
// (shaders/real_f32.wgsl): x = k·π/2 + r with |r| ≤ π/4, π/2 in three parts of which k times the
// first two is exact (Cody–Waite; Cephes sinf.c's DP1, DP2, DP3, doubled), then Cephes's minimax
// polynomials for sinf and cosf on [−π/4, π/4]: within an ulp for |x| < 8192 (Cephes's bound;
// an f32 argument that large is itself uncertain by 2^-11). CUDA's sinf and cosf reduce
// arguments beyond 105 615 through double precision, which the f32 kernels keep out. Both
// polynomials are evaluated and the quadrant selects, without branches. NaN for ±∞ and NaN.
// The f64 kernels' are in kernels/sincos_f64.cu.

__device__ __forceinline__ real sin_poly(real r) {
    const real z = r * r;
    return r + r * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
}

__device__ __forceinline__ real cos_poly(real r) {
    const real z = r * r;
    return 1.0f - 0.5f * z
        + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f);
}

// The quadrant of x (0 to 3, as a real) and the reduced argument.
__device__ __forceinline__ real reduce_pio2(real x, real* q) {
    const real k = floor(x * 0.636619772f + 0.5f);
    *q = k - 4.0f * floor(k * 0.25f);
    return ((x - k * 1.5703125f) - k * 4.837512969970703125e-4f) - k * 7.54978995489188216e-8f;
}

__device__ __forceinline__ real sin_r(real x) {
    if (!isfinite(x)) return x - x;
    real q;
    const real r = reduce_pio2(x, &q);
    const real s = sin_poly(r), c = cos_poly(r);
    return q == 0.0f ? s : q == 1.0f ? c : q == 2.0f ? -s : -c;
}

__device__ __forceinline__ real cos_r(real x) {
    if (!isfinite(x)) return x - x;
    real q;
    const real r = reduce_pio2(x, &q);
    const real s = sin_poly(r), c = cos_poly(r);
    return q == 0.0f ? c : q == 1.0f ? -s : q == 2.0f ? -c : s;
}
