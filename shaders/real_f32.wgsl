// The scalar helpers of the f32 WGSL kernels (shaders/real_f64.wgsl is the f64 set): the
// builtins serve for exp, log and pow, sin and cos are the kernels' own (below), and
// non-finite values are recognised by bits, because shader compilers may assume that
// floating-point comparisons never see NaN.

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn is_nan(x: f32) -> bool {
    let b = bitcast<u32>(x);
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn pow_r(a: f32, b: f32) -> f32 {
    return pow(a, b);
}

fn exp_r(x: f32) -> f32 {
    return exp(x);
}

fn log_r(x: f32) -> f32 {
    return log(x);
}

// sin and cos: x = k·π/2 + r with |r| ≤ π/4, π/2 in three parts of which k times the first
// two is exact (Cody–Waite; Cephes sinf.c's DP1, DP2, DP3, doubled), then Cephes's minimax
// polynomials for sinf and cosf on [−π/4, π/4]. Not the builtins: Vulkan requires of those
// only an absolute error of 2^-11 within [−π, π]. Accurate to a few ulps for |x| < 8192
// (Cephes's bound; measured by f32_sin_cos_are_accurate_on_an_adapter in
// tests/wgpu_codegen.rs), NaN for ±∞ and NaN.
struct Quadrant {
    r: f32,
    q: i32,
}

fn reduce_pio2(x: f32) -> Quadrant {
    let k = round(x * 0.6366197723675814);
    let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    return Quadrant(r, i32(k) & 3);
}

fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    return r + r * z * ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1);
}

fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    return 1.0 - 0.5 * z
        + z * z * ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2);
}

fn sin_r(x: f32) -> f32 {
    if (!finite(x)) { return nan(); }
    let a = reduce_pio2(x);
    switch (a.q) {
        case 0: { return sin_poly(a.r); }
        case 1: { return cos_poly(a.r); }
        case 2: { return -sin_poly(a.r); }
        default: { return -cos_poly(a.r); }
    }
}

fn cos_r(x: f32) -> f32 {
    if (!finite(x)) { return nan(); }
    let a = reduce_pio2(x);
    switch (a.q) {
        case 0: { return cos_poly(a.r); }
        case 1: { return -sin_poly(a.r); }
        case 2: { return -cos_poly(a.r); }
        default: { return sin_poly(a.r); }
    }
}
