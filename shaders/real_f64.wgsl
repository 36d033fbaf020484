// The scalar helpers of the f64 WGSL kernels (shaders/real_f32.wgsl is the f32 set).
//
// Vulkan's extended instructions (GLSL.std.450 exp, log, pow, exp2, log2, sin, …) take 16- and
// 32-bit floats only: a WGSL `exp` of an f64 is either rejected or, as on lavapipe, silently
// evaluated wrongly. frexp of an f64 needs 64-bit integers, and bit casts of f64 do too. So the
// f64 kernels carry their own exp, log, log10, pow, sin and cos, built from what every SHADER_F64
// adapter has: arithmetic, fma, floor, ldexp, comparisons and conversions. Accuracy (measured
// against Rust's f64 functions by f64_math_functions_are_accurate_on_an_adapter in
// tests/wgpu_codegen.rs, see docs/gpu.md): about one ulp, a few for pow with large exponents.
// fma is used only where a product and a sum would do as well: some drivers (lavapipe) do
// not fuse it in f64.
//
// Non-finite values are recognised through an f32 conversion (which keeps NaN and infinity),
// by bits: shader compilers may assume that floating-point comparisons never see NaN.

fn is_nan(x: f64) -> bool {
    let b = bitcast<u32>(f32(x));
    return (b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu) != 0u;
}

fn finite(x: f64) -> bool {
    // Scaled by 2^-1000 every finite f64 is a finite f32; infinities and NaN stay what they are.
    let b = bitcast<u32>(f32(x * 9.332636185032189e-302lf));
    return (b & 0x7f800000u) != 0x7f800000u;
}

fn nan() -> f64 {
    return f64(bitcast<f32>(0x7fc00000u));
}

fn inf64() -> f64 {
    return f64(bitcast<f32>(0x7f800000u));
}

// ln 2 = LN2_HI + LN2_LO, LN2_HI with 32 significant bits so that k·LN2_HI is exact for
// |k| < 2^21 (Cody–Waite; the values of fdlibm's e_exp.c, ln2HI[0] and ln2LO[0]).
const F64_LN2_HI: f64 = 6.93147180369123816490e-01lf;
const F64_LN2_LO: f64 = 1.90821492927058770002e-10lf;
const F64_LOG2E: f64 = 1.4426950408889634lf;
// log10(e) = F64_LOG10E_HI + F64_LOG10E_LO.
const F64_LOG10E_HI: f64 = 0.4342944819032518lf;
const F64_LOG10E_LO: f64 = 1.098319650216765e-17lf;

// e^(x + lo) for |lo| of the order of an ulp of x: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its
// Taylor polynomial of degree 13 (truncation error below 5e-18 relative), times 2^k.
fn exp_ext(x: f64, lo: f64) -> f64 {
    if (is_nan(x)) { return x; }
    if (x > 709.782712893384lf) { return inf64(); }
    if (x < -745.1332191019412lf) { return 0.0lf; }
    let k = floor(x * F64_LOG2E + 0.5lf);
    let r = (x - k * F64_LN2_HI) - k * F64_LN2_LO + lo;
    var p = 1.6059043836821613e-10lf;
    p = fma(p, r, 2.08767569878681e-09lf);
    p = fma(p, r, 2.505210838544172e-08lf);
    p = fma(p, r, 2.755731922398589e-07lf);
    p = fma(p, r, 2.7557319223985893e-06lf);
    p = fma(p, r, 2.48015873015873e-05lf);
    p = fma(p, r, 0.0001984126984126984lf);
    p = fma(p, r, 0.001388888888888889lf);
    p = fma(p, r, 0.008333333333333333lf);
    p = fma(p, r, 0.041666666666666664lf);
    p = fma(p, r, 0.16666666666666666lf);
    p = fma(p, r, 0.5lf);
    p = fma(p, r, 1.0lf);
    p = fma(p, r, 1.0lf);
    // 2^k in two factors: each stays representable down to subnormal results.
    let ki = i32(k);
    let k1 = ki / 2;
    return ldexp(ldexp(p, k1), ki - k1);
}

fn exp64(x: f64) -> f64 {
    return exp_ext(x, 0.0lf);
}

// The rounding error of p = x·y: x and y split into 24-bit heads (an f32 conversion, which no
// compiler folds away) and tails, whose partial products are exact. Unlike fma(x, y, −p), this
// holds where fma is evaluated as a product and a sum.
fn prod_err(x: f64, y: f64, p: f64) -> f64 {
    let xh = f64(f32(x));
    let xl = x - xh;
    let yh = f64(f32(y));
    let yl = y - yh;
    return ((xh * yh - p) + xh * yl + xl * yh) + xl * yl;
}

// ln x for a positive finite x as an unevaluated sum hi + lo: x = 2^e·m with m in [√½, √2);
// ln m = ln(1 + u) = u − u²/2 + f·(u²/2 + R(f²)) with f = u / (2 + u) and
// R(z) = 2z/3 + 2z²/5 + … + 2z¹¹/23 (the atanh series; f² ≤ 0.0295, truncation below 2^-60),
// the form of fdlibm's e_log.c with the Taylor coefficients in place of its minimax ones.
// The sums that carry the low part are written so that a compiler's algebraic rewrites
// (a + b − a → b) do not apply; where a compiler cancels them anyway only the low part is lost.
fn log_ext(x: f64) -> vec2<f64> {
    var m = x;
    var e = 0.0lf;
    // Bring m into f32's normal range (subnormals first), where its binary exponent can be read.
    if (m < 2.2250738585072014e-308lf) { m = m * 1.8014398509481984e16lf; e = -54.0lf; }
    if (m >= 1.3407807929942597e154lf) {
        m = m * 7.458340731200207e-155lf; e += 512.0lf;
    } else if (m < 7.458340731200207e-155lf) {
        m = m * 1.3407807929942597e154lf; e -= 512.0lf;
    }
    if (m >= 1.157920892373162e77lf) {
        m = m * 8.636168555094445e-78lf; e += 256.0lf;
    } else if (m < 8.636168555094445e-78lf) {
        m = m * 1.157920892373162e77lf; e -= 256.0lf;
    }
    if (m >= 3.402823669209385e38lf) {
        m = m * 2.938735877055719e-39lf; e += 128.0lf;
    } else if (m < 2.938735877055719e-39lf) {
        m = m * 3.402823669209385e38lf; e -= 128.0lf;
    }
    if (m >= 1.8446744073709552e19lf) {
        m = m * 5.421010862427522e-20lf; e += 64.0lf;
    } else if (m < 5.421010862427522e-20lf) {
        m = m * 1.8446744073709552e19lf; e -= 64.0lf;
    }
    // The exponent of the nearest f32 (one too high when the conversion rounds up to a power
    // of two, which leaves m just below 1).
    let ef = i32((bitcast<u32>(f32(m)) >> 23u) & 0xffu) - 127;
    m = ldexp(m, -ef);
    e += f64(ef);
    if (m > 1.4142135623730951lf) {
        m = m * 0.5lf;
        e += 1.0lf;
    } else if (m < 0.7071067811865476lf) {
        m = m * 2.0lf;
        e -= 1.0lf;
    }
    let u = m - 1.0lf;
    let f = u / (2.0lf + u);
    let z = f * f;
    var r = 0.08695652173913043lf;
    r = fma(r, z, 0.09523809523809523lf);
    r = fma(r, z, 0.10526315789473684lf);
    r = fma(r, z, 0.11764705882352941lf);
    r = fma(r, z, 0.13333333333333333lf);
    r = fma(r, z, 0.15384615384615385lf);
    r = fma(r, z, 0.18181818181818182lf);
    r = fma(r, z, 0.2222222222222222lf);
    r = fma(r, z, 0.2857142857142857lf);
    r = fma(r, z, 0.4lf);
    r = fma(r, z, 0.6666666666666666lf);
    r = r * z;
    let hu = 0.5lf * u;
    let hfsq = hu * u;
    let c = f * (hfsq + r) - prod_err(hu, u, hfsq);
    // ln m = u − hfsq + c, the first difference split exactly (|u| ≥ hfsq).
    let h1 = u - hfsq;
    let l1 = ((u - h1) - hfsq) + c;
    // + e·ln 2, with e·F64_LN2_HI exact (|e| ≤ 1075) and |e·ln 2| > |h1| unless e = 0.
    let eh = e * F64_LN2_HI;
    let s = eh + h1;
    let l = ((eh - s) + h1) + (l1 + e * F64_LN2_LO);
    let hi = s + l;
    return vec2<f64>(hi, (s - hi) + l);
}

fn log64(x: f64) -> f64 {
    if (is_nan(x) || x < 0.0lf) { return nan(); }
    if (x == 0.0lf) { return -inf64(); }
    if (!finite(x)) { return x; }
    let l = log_ext(x);
    return l.x + l.y;
}

fn log10_64(x: f64) -> f64 {
    if (is_nan(x) || x < 0.0lf) { return nan(); }
    if (x == 0.0lf) { return -inf64(); }
    if (!finite(x)) { return x; }
    let l = log_ext(x);
    let p = l.x * F64_LOG10E_HI;
    let q = fma(l.x, F64_LOG10E_HI, -p) + (l.x * F64_LOG10E_LO + l.y * F64_LOG10E_HI);
    return p + q;
}

// Every f64 of magnitude 2^52 or more is an integer (and floor is not relied on there).
fn is_integer(b: f64) -> bool {
    return abs(b) >= 4503599627370496.0lf || floor(b) == b;
}

// a^b with the special cases of C's pow (and Rust's powf): a^0 = 1 and 1^b = 1 even for NaN,
// a finite negative base needs an integer exponent, ±0, ±∞ and odd exponents as in C99
// Annex F. Otherwise e^(b·ln|a|) with ln|a| and the product carried beyond f64.
fn pow64(a: f64, b: f64) -> f64 {
    if (b == 0.0lf || a == 1.0lf) { return 1.0lf; }
    if (is_nan(a) || is_nan(b)) { return nan(); }
    let ax = abs(a);
    if (!finite(b)) {
        if (ax == 1.0lf) { return 1.0lf; }
        if ((ax < 1.0lf) == (b < 0.0lf)) { return inf64(); }
        return 0.0lf;
    }
    let b_int = is_integer(b);
    // −0 included (1/−0 = −∞).
    let negative = a < 0.0lf || (a == 0.0lf && 1.0lf / a < 0.0lf);
    if (negative && !b_int && a != 0.0lf && finite(a)) { return nan(); }
    let odd = b_int && !is_integer(0.5lf * b);
    var mag: f64;
    if (ax == 1.0lf) {
        mag = 1.0lf;
    } else if (ax == 0.0lf) {
        mag = select(0.0lf, inf64(), b < 0.0lf);
    } else if (!finite(ax)) {
        mag = select(inf64(), 0.0lf, b < 0.0lf);
    } else {
        // |b·ln|a|| > 745 (over- or underflow) before b leaves f32's range, which prod_err needs.
        let l = log_ext(ax);
        let p = b * l.x;
        mag = exp_ext(p, prod_err(b, l.x, p) + b * l.y);
    }
    return select(mag, -mag, negative && odd);
}

fn pow_r(a: f64, b: f64) -> f64 {
    return pow64(a, b);
}

fn exp_r(x: f64) -> f64 {
    return exp64(x);
}

fn log_r(x: f64) -> f64 {
    return log64(x);
}

// sin and cos: fdlibm's (e_rem_pio2.c, k_sin.c, k_cos.c; the coefficients are theirs).
// x = k·π/2 + (y0 + y1) with |y0| ≤ π/4 by the medium-range reduction: π/2 in parts of 33 bits
// (k times each is exact for |k| < 2^20) and their tails, a second and a third part taken when
// the first leaves a remainder that small relative to x (here by magnitudes, in fdlibm by
// exponents). Then the minimax polynomials of degree 13 (sin) and 14 (cos) on [−π/4, π/4],
// with y1 carried. About one ulp for |x| < 2^20·π/2 ≈ 1.6e6 (measured by
// f64_sin_cos_are_accurate_on_an_adapter in tests/wgpu_codegen.rs); beyond, k times the first
// part is no longer exact and the error grows with |x|. NaN for ±∞ and NaN.
const F64_INVPIO2: f64 = 6.36619772367581382433e-01lf;
const F64_PIO2_1: f64 = 1.57079632673412561417e+00lf;
const F64_PIO2_1T: f64 = 6.07710050650619224932e-11lf;
const F64_PIO2_2: f64 = 6.07710050630396597660e-11lf;
const F64_PIO2_2T: f64 = 2.02226624879595063154e-21lf;
const F64_PIO2_3: f64 = 2.02226624871116645580e-21lf;
const F64_PIO2_3T: f64 = 8.47842766036889956997e-32lf;

struct Reduced64 {
    hi: f64,
    lo: f64,
    q: i32,
}

fn rem_pio2_64(x: f64) -> Reduced64 {
    let k = floor(x * F64_INVPIO2 + 0.5lf);
    var r = x - k * F64_PIO2_1;
    var w = k * F64_PIO2_1T;
    var y0 = r - w;
    // The first part cancelled more than 16 bits of x: the second (and maybe third) part.
    if (abs(y0) < abs(x) * 1.52587890625e-05lf) {
        var t = r;
        w = k * F64_PIO2_2;
        r = t - w;
        w = k * F64_PIO2_2T - ((t - r) - w);
        y0 = r - w;
        if (abs(y0) < abs(x) * 1.7763568394002505e-15lf) {
            t = r;
            w = k * F64_PIO2_3;
            r = t - w;
            w = k * F64_PIO2_3T - ((t - r) - w);
            y0 = r - w;
        }
    }
    return Reduced64(y0, (r - y0) - w, i32(k) & 3);
}

// The sine of x + y for |x| ≤ π/4, y a tail below an ulp of x.
fn ksin64(x: f64, y: f64) -> f64 {
    let z = x * x;
    let v = z * x;
    var r = 1.58969099521155010221e-10lf;
    r = r * z - 2.50507602534068634195e-08lf;
    r = r * z + 2.75573137070700676789e-06lf;
    r = r * z - 1.98412698298579493134e-04lf;
    r = r * z + 8.33333333332248946124e-03lf;
    return x - ((z * (0.5lf * y - v * r) - y) + v * 1.66666666666666324348e-01lf);
}

// The cosine of x + y for |x| ≤ π/4, y a tail below an ulp of x.
fn kcos64(x: f64, y: f64) -> f64 {
    let z = x * x;
    var r = -1.13596475577881948265e-11lf;
    r = r * z + 2.08757232129817482790e-09lf;
    r = r * z - 2.75573143513906633035e-07lf;
    r = r * z + 2.48015872894767294178e-05lf;
    r = r * z - 1.38888888888741095749e-03lf;
    r = r * z + 4.16666666666666019037e-02lf;
    r = r * z;
    let hz = 0.5lf * z;
    let w = 1.0lf - hz;
    return w + (((1.0lf - w) - hz) + (z * r - x * y));
}

fn sin_r(x: f64) -> f64 {
    if (!finite(x)) { return nan(); }
    let a = rem_pio2_64(x);
    switch (a.q) {
        case 0: { return ksin64(a.hi, a.lo); }
        case 1: { return kcos64(a.hi, a.lo); }
        case 2: { return -ksin64(a.hi, a.lo); }
        default: { return -kcos64(a.hi, a.lo); }
    }
}

fn cos_r(x: f64) -> f64 {
    if (!finite(x)) { return nan(); }
    let a = rem_pio2_64(x);
    switch (a.q) {
        case 0: { return kcos64(a.hi, a.lo); }
        case 1: { return -ksin64(a.hi, a.lo); }
        case 2: { return -kcos64(a.hi, a.lo); }
        default: { return ksin64(a.hi, a.lo); }
    }
}
