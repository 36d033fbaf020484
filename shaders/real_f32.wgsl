// The scalar helpers of the f32 WGSL kernels (shaders/real_f64.wgsl is the f64 set): the
// builtins serve for exp, log and pow; sin, cos, tanh, atan, erf and erfc are the kernels' own
// (below; Vulkan bounds the builtins' error only loosely, atan's by 4096 ulps, tanh's by
// sinh's and cosh's), and non-finite values are recognised by bits, because shader compilers
// may assume that floating-point comparisons never see NaN.

fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// x where it is finite, else 0.
fn finite_or_0(x: f32) -> f32 {
    return select(0.0, x, finite(x));
}

// The step that t ≥ 0 takes when h > 0 is added to it: where t + h rounds (large t), the
// states advance by the rounded step, so that they stay at the time t says. h rounded down to
// a multiple of the ulp of t + h, so that t + the result is exact: never up, since a step
// rounded up to the one just rejected would be rejected forever. Not from (t + h) − t, which
// shader compilers may fold to h.
fn step_taken(t: f32, h: f32) -> f32 {
    let e = bitcast<u32>(t + h) & 0x7f800000u;
    if (e <= 0x0b800000u) { return h; }
    let q = bitcast<f32>(e - 0x0b800000u);
    return floor(h / q) * q;
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

// e^(x + lo) for tanh (lo = 0) and erfc (|lo| up to 0.08; exp_r is the builtin, whose error
// Vulkan bounds only by 3 + 2·|x| ulps): x = k·ln 2 + r with |r| ≤ ln2/2 + |lo|, ln 2 in
// two parts of which k times the first is exact (Cody–Waite), e^r by Cephes expf.c's minimax
// polynomial, times 2^k in two factors so that subnormal results stay representable (where
// the adapter keeps f32 subnormals). Overflow beyond 88.72, 0 below −104.
fn exp_ext(x: f32, lo: f32) -> f32 {
    if (x > 88.72283) { return bitcast<f32>(0x7f800000u); }
    if (x < -104.0) { return 0.0; }
    let k = floor(x * 1.442695 + 0.5);
    let r = (x - k * 0.693359375) + k * 2.12194440e-4 + lo;
    var p = 1.9875691500e-4;
    p = p * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let e = p * (r * r) + r + 1.0;
    let ki = i32(k);
    let k1 = ki / 2;
    return ldexp(ldexp(e, k1), ki - k1);
}

// tanh: Cephes tanhf.c. For |x| < 0.625, x + x·z·P(z) with z = x² (Cephes's P of degree 4);
// beyond, 1 − 2/(e^(2|x|) + 1) with exp_ext, the sign restored; ±1 beyond |x| = 10, where
// 1 − tanh|x| < 2^-27. ±0 stay ±0 and NaN stays NaN. Within 1.2 f32 ulps of the f64 tanh
// (measured by f32_tanh_atan_erf_are_accurate_on_an_adapter in tests/wgpu_codegen.rs).
fn tanh_r(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    if (a > 10.0) { return select(1.0, -1.0, x < 0.0); }
    // x itself below 2^-13 (tanh x = x − x³/3 + …), ±0 included: x + x·(−0) would be +0.
    if (a < 1.220703125e-4) { return x; }
    if (a < 0.625) {
        let z = x * x;
        var p = -5.70498872745e-3;
        p = p * z + 2.06390887954e-2;
        p = p * z - 5.37397155531e-2;
        p = p * z + 1.33314422036e-1;
        p = p * z - 3.33332819422e-1;
        return x + x * (z * p);
    }
    let t = 1.0 - 2.0 / (exp_ext(2.0 * a, 0.0) + 1.0);
    return select(t, -t, x < 0.0);
}

// atan: Cephes atanf.c. |x| ≤ tan(π/8) directly, x + x·z·P(z) with z = x² (Cephes's P of
// degree 3); up to tan(3π/8), π/4 + atan((|x| − 1)/(|x| + 1)); beyond, π/2 + atan(−1/|x|)
// (infinities included). π/4 and π/2 as an f32 and its remainder, added last. Within 1.6 f32
// ulps of the f64 atan (measured by f32_tanh_atan_erf_are_accurate_on_an_adapter). NaN stays
// NaN, ±0 stay ±0.
fn atan_poly32(t: f32) -> f32 {
    let z = t * t;
    var p = 8.05374449538e-2;
    p = p * z - 1.38776856032e-1;
    p = p * z + 1.99777106478e-1;
    p = p * z - 3.33329491539e-1;
    return t + t * (z * p);
}

fn atan_r(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    // x itself below 2^-13 (atan x = x − x³/3 + …), ±0 included: x + x·(−0) would be +0.
    if (a < 1.220703125e-4) { return x; }
    if (a <= 0.41421356) { return atan_poly32(x); }
    var r: f32;
    if (a <= 2.41421356) {
        // π/4 = 0.78539819 − 2.1855695e-8.
        r = 0.78539819 + (-2.1855695e-8 + atan_poly32((a - 1.0) / (a + 1.0)));
    } else {
        // π/2 = 1.5707964 − 4.371139e-8.
        r = 1.5707964 + (-4.371139e-8 + atan_poly32(-1.0 / a));
    }
    return select(r, -r, x < 0.0);
}

// erf and erfc: Cephes ndtrf.c. erf(x) = x + x·U(x²) for |x| < 1 (Cephes's T of degree 6,
// U = T − 1), erfc = 1 − erf below 1/4 and, as fdlibm's s_erf.c takes it without 1 − erf's
// cancellation, 0.5 − ((x − 0.5) + x·U) up to 0.84375 and (1 − erx) − P(x − 1)/Q(x − 1) up
// to 1 (fdlibm's pa/qa and erx); for |x| ≥ 1, erfc|x| = e^(−x²)·P(1/x²)/|x| below 2 and
// e^(−x²)·R(1/x²)/|x| beyond (Cephes's P of degree 8 and R of degree 7), then erf = 1 − erfc
// and erfc(−x) = 2 − erfc(x). Unlike Cephes, e^(−x²) comes from x² as an exact sum (the
// square of x's leading 12 bits, exact in f32, and the rest) through exp_ext: the rounding of
// x², half an ulp of it, would cost up to 32 ulps of the result at x = 9. erfc underflows to
// 0 beyond 10.05 (0 from 10.1), erf is ±1 beyond 4. erf within 0.64 f32 ulps of the f64 erf;
// erfc within 2.3 where its result is a normal f32 (1.1 below 1, where 1 − erf alone lost up
// to 6.1), 2.1 beyond 4 (measured by f32_tanh_atan_erf_are_accurate_on_an_adapter). NaN stays
// NaN, ±0 stay ±0.
// (erf(x) − x)/x for |x| < 1, of z = x² (Cephes's polynomial less its constant term's 1).
fn erf_small32(z: f32) -> f32 {
    var t = 7.853861353153693e-5;
    t = t * z - 8.010193625184903e-4;
    t = t * z + 5.188327685732524e-3;
    t = t * z - 2.685381193529856e-2;
    t = t * z + 1.128358514861418e-1;
    t = t * z - 3.761262582423300e-1;
    t = t * z + 1.283791657267100e-1;
    return t;
}

// erf(1 + s) − erx for |1 + s| in [0.84375, 1]: fdlibm's s_erf.c pa/qa (the values of the f64
// kernels, rounded to f32) and its erx.
const F32_ERX: f32 = 8.45062911510467529297e-01;
fn erf_one32(s: f32) -> f32 {
    var p = -2.16637559486879084300e-03;
    p = p * s + 3.54783043256182359371e-02;
    p = p * s - 1.10894694282396677476e-01;
    p = p * s + 3.18346619901161753674e-01;
    p = p * s - 3.72207876035701323847e-01;
    p = p * s + 4.14856118683748331666e-01;
    p = p * s - 2.36211856075265944077e-03;
    var q = 1.19844998467991074170e-02;
    q = q * s + 1.36370839120290507362e-02;
    q = q * s + 1.26171219808761642112e-01;
    q = q * s + 7.18286544141962662868e-02;
    q = q * s + 5.40397917702171048937e-01;
    q = q * s + 1.06420880400844228286e-01;
    q = q * s + 1.0;
    return p / q;
}

// erfc(x) for 1 ≤ x < 10.1.
fn erfc_large32(x: f32) -> f32 {
    let xh = bitcast<f32>(bitcast<u32>(x) & 0xfffff000u);
    let e = exp_ext(-(xh * xh), -((x - xh) * (x + xh)));
    let q = 1.0 / x;
    let y = q * q;
    var p: f32;
    if (x < 2.0) {
        p = 2.326819970068386e-2;
        p = p * y - 1.387039388740657e-1;
        p = p * y + 3.687424674597105e-1;
        p = p * y - 5.824733027278666e-1;
        p = p * y + 6.210004621745983e-1;
        p = p * y - 4.944515323274145e-1;
        p = p * y + 3.404879937665872e-1;
        p = p * y - 2.741127028184656e-1;
        p = p * y + 5.638259427386472e-1;
    } else {
        p = -1.047766399936249e1;
        p = p * y + 1.297719955372516e1;
        p = p * y - 7.495518717768503;
        p = p * y + 2.921019019210786;
        p = p * y - 1.015265279202700;
        p = p * y + 4.218463358204948e-1;
        p = p * y - 2.820767439740514e-1;
        p = p * y + 5.641895067754075e-1;
    }
    return e * (q * p);
}

fn erf_r(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    if (a < 1.0) { return x + x * erf_small32(x * x); }
    var r = 1.0;
    if (a < 4.0) { r = 1.0 - erfc_large32(a); }
    return select(r, -r, x < 0.0);
}

fn erfc_r(x: f32) -> f32 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    // 1 − erf without its cancellation above 1/4, as fdlibm: 0.5 − ((x − 0.5) + x·u) below
    // 0.84375, (1 − erx) − P/Q (both exact differences) up to 1.
    if (a < 1.0) {
        if (x < 0.25) { return 1.0 - (x + x * erf_small32(x * x)); }
        if (x < 0.84375) { return 0.5 - ((x - 0.5) + x * erf_small32(x * x)); }
        return (1.0 - F32_ERX) - erf_one32(x - 1.0);
    }
    var r = 0.0;
    if (a < 10.1) { r = erfc_large32(a); }
    return select(r, 2.0 - r, x < 0.0);
}

// floor and ceil as IEEE's: the builtin floor (exact in Vulkan), not relied on for ±0,
// non-finite values or |x| ≥ 2^23 (integers all), which pass through; ceil(x) = −floor(−x),
// which gives −0 for x in (−1, −0]. Exact (checked by
// f32_tanh_atan_erf_are_accurate_on_an_adapter).
fn floor_r(x: f32) -> f32 {
    if (!finite(x) || x == 0.0 || abs(x) >= 8388608.0) { return x; }
    return floor(x);
}

fn ceil_r(x: f32) -> f32 {
    return -floor_r(-x);
}
