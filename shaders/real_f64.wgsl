// The scalar helpers of the f64 WGSL kernels (shaders/real_f32.wgsl is the f32 set).
//
// Vulkan's extended instructions (GLSL.std.450 exp, log, pow, exp2, log2, sin, …) take 16- and
// 32-bit floats only: a WGSL `exp` of an f64 is either rejected or, as on lavapipe, silently
// evaluated wrongly. frexp of an f64 needs 64-bit integers, and bit casts of f64 do too. So the
// f64 kernels carry their own exp, log, log10, pow, sin, cos, tanh, atan, erf and erfc, built
// from what every SHADER_F64 adapter has: arithmetic, fma, floor, ldexp, comparisons and
// conversions. Accuracy (measured against Rust's f64 functions by the f64_…_on_an_adapter
// tests in tests/wgpu_codegen.rs, see docs/gpu.md): about one ulp, two for tanh and erfc, a
// few for pow with large exponents.
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

// x where it is finite, else 0.
fn finite_or_0(x: f64) -> f64 {
    return select(0.0, x, finite(x));
}

// The step that t takes when h is added to it (shaders/real_f32.wgsl): in f64 the rounding
// of t + h is far below any tolerance (f64 has no bit casts in WGSL to round it by).
fn step_taken(t: f64, h: f64) -> f64 {
    return h;
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

// e^(x + lo) for |lo| up to about 1/4 (erfc passes that much; exp and pow an ulp of x):
// x + lo = k·ln2 + r with |r| ≤ ln2/2 (k chosen for x + lo, r = x − k·ln2 + lo), e^r by its
// Taylor polynomial of degree 13 (truncation error below 5e-18 relative), times 2^k.
fn exp_ext(x: f64, lo: f64) -> f64 {
    if (is_nan(x)) { return x; }
    if (x > 709.782712893384lf) { return inf64(); }
    if (x < -745.1332191019412lf) { return 0.0lf; }
    let k = floor((x + lo) * F64_LOG2E + 0.5lf);
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

// tanh: Cephes tanh.c. For |x| < 0.625, x + x·z·P(z)/Q(z) with z = x² (Cephes's P of degree 2
// and monic Q of degree 3); beyond, 1 − 2/(e^(2|x|) + 1) with exp64, the sign restored; ±1
// beyond |x| = 22, where 1 − tanh|x| < 2^-62. ±0 stay ±0 and NaN stays NaN. Within 1.8 ulps
// of Rust's tanh, the worst just above 0.625, where the subtraction magnifies the errors of
// the exponential and the quotient (measured by f64_tanh_atan_erf_are_accurate_on_an_adapter
// in tests/wgpu_codegen.rs).
fn tanh_r(x: f64) -> f64 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    if (a > 22.0lf) { return select(1.0lf, -1.0lf, x < 0.0lf); }
    // x itself below 2^-27 (tanh x = x − x³/3 + …), ±0 included: x + x·(−0) would be +0.
    if (a < 7.450580596923828e-9lf) { return x; }
    if (a < 0.625lf) {
        let z = x * x;
        var p = -9.64399179425052238628e-1lf;
        p = p * z - 9.92877231001918586564e1lf;
        p = p * z - 1.61468768441708447952e3lf;
        var q = z + 1.12811678491632931402e2lf;
        q = q * z + 2.23548839060100448583e3lf;
        q = q * z + 4.84406305325125486048e3lf;
        return x + x * (z * p / q);
    }
    let t = 1.0lf - 2.0lf / (exp64(2.0lf * a) + 1.0lf);
    return select(t, -t, x < 0.0lf);
}

// atan: fdlibm's s_atan.c (its breakpoints, its atan(0.5), atan(1), atan(1.5), π/2 as hi + lo
// and its odd polynomial aT of degree 23). |x| < 7/16 directly; otherwise atan|x| =
// atan(c) + atan(t) with t = (|x| − c)/(1 + c·|x|) for c = 0.5, 1, 1.5, and
// π/2 + atan(−1/|x|) beyond 39/16 (infinities included). Within one ulp of Rust's atan
// (measured by f64_tanh_atan_erf_are_accurate_on_an_adapter). NaN stays NaN, ±0 stay ±0.
fn atan_poly64(t: f64) -> f64 {
    // aT[0]·t² + aT[1]·t⁴ + … + aT[10]·t²², so that atan(t) = t − t·atan_poly64(t).
    let z = t * t;
    var p = 1.62858201153657823623e-02lf;
    p = p * z - 3.65315727442169155270e-02lf;
    p = p * z + 4.97687799461593236017e-02lf;
    p = p * z - 5.83357013379057348645e-02lf;
    p = p * z + 6.66107313738753120669e-02lf;
    p = p * z - 7.69187620504482999495e-02lf;
    p = p * z + 9.09088713343650656196e-02lf;
    p = p * z - 1.11111104054623557880e-01lf;
    p = p * z + 1.42857142725034663711e-01lf;
    p = p * z - 1.99999999998764832476e-01lf;
    p = p * z + 3.33333333333329318027e-01lf;
    return p * z;
}

fn atan_r(x: f64) -> f64 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    // x itself below 2^-27 (atan x = x − x³/3 + …), ±0 included: x − x·(+0) would be +0.
    if (a < 7.450580596923828e-9lf) { return x; }
    if (a < 0.4375lf) { return x - x * atan_poly64(x); }
    var t: f64;
    var hi: f64;
    var lo: f64;
    if (a < 0.6875lf) {
        t = (2.0lf * a - 1.0lf) / (2.0lf + a);
        hi = 4.63647609000806093515e-01lf;
        lo = 2.26987774529616870924e-17lf;
    } else if (a < 1.1875lf) {
        t = (a - 1.0lf) / (a + 1.0lf);
        hi = 7.85398163397448278999e-01lf;
        lo = 3.06161699786838301793e-17lf;
    } else if (a < 2.4375lf) {
        t = (a - 1.5lf) / (1.0lf + 1.5lf * a);
        hi = 9.82793723247329054082e-01lf;
        lo = 1.39033110312309984516e-17lf;
    } else {
        t = -1.0lf / a;
        hi = 1.57079632679489655800e+00lf;
        lo = 6.12323399573676603587e-17lf;
    }
    let r = hi - ((t * atan_poly64(t) - lo) - t);
    return select(r, -r, x < 0.0lf);
}

// erf and erfc: fdlibm's s_erf.c (its intervals, its rational approximations pp/qq, pa/qa,
// ra/sa, rb/sb and erx, the single-precision rounding of erf(1)). For |x| < 0.84375,
// erf = x + x·P(x²)/Q(x²) and erfc = 1 − erf (as 0.5 − ((x − 0.5) + x·P/Q) from 1/4 on);
// up to 1.25, erf = erx + P(s)/Q(s) with s = |x| − 1 and erfc = (1 − erx) − P/Q; beyond,
// erfc|x| = e^(−x² − 0.5625 + R(1/x²)/S(1/x²))/|x|, erf = 1 − erfc, erfc(−x) = 2 − erfc(x).
// Here the exponential is one exp_ext: −x² = −h² + (h − x)(h + x) with h = x rounded to f32,
// −h² − 0.5625 exact for |x| < 2^21, the rest passed as its low part (fdlibm multiplies two
// exps instead; exp_ext takes a low part this large; x² rounded would cost up to 256 ulps at
// x = 28). erfc underflows to 0 near 27.23 (below the least subnormal), erf is ±1 beyond 6.
// Within 1.0 ulp of the libm crate's erf (fdlibm's, in CPU arithmetic) and 2.0 of its erfc
// (relative error, down to the smallest normal results), and within 0.7 of mpmath's values
// at 26 points (measured by f64_tanh_atan_erf_are_accurate_on_an_adapter). NaN stays NaN,
// ±0 stay ±0.
const F64_ERX: f64 = 8.45062911510467529297e-01lf;

// (erf(x) − x)/x for |x| < 0.84375, of z = x².
fn erf_small64(z: f64) -> f64 {
    var p = -2.37630166566501626084e-05lf;
    p = p * z - 5.77027029648944159157e-03lf;
    p = p * z - 2.84817495755985104766e-02lf;
    p = p * z - 3.25042107247001499370e-01lf;
    p = p * z + 1.28379167095512558561e-01lf;
    var q = -3.96022827877536812320e-06lf;
    q = q * z + 1.32494738004321644526e-04lf;
    q = q * z + 5.08130628187576562776e-03lf;
    q = q * z + 6.50222499887672944485e-02lf;
    q = q * z + 3.97917223959155352819e-01lf;
    q = q * z + 1.0lf;
    return p / q;
}

// erf(1 + s) − erx for |1 + s| in [0.84375, 1.25].
fn erf_one64(s: f64) -> f64 {
    var p = -2.16637559486879084300e-03lf;
    p = p * s + 3.54783043256182359371e-02lf;
    p = p * s - 1.10894694282396677476e-01lf;
    p = p * s + 3.18346619901161753674e-01lf;
    p = p * s - 3.72207876035701323847e-01lf;
    p = p * s + 4.14856118683748331666e-01lf;
    p = p * s - 2.36211856075265944077e-03lf;
    var q = 1.19844998467991074170e-02lf;
    q = q * s + 1.36370839120290507362e-02lf;
    q = q * s + 1.26171219808761642112e-01lf;
    q = q * s + 7.18286544141962662868e-02lf;
    q = q * s + 5.40397917702171048937e-01lf;
    q = q * s + 1.06420880400844228286e-01lf;
    q = q * s + 1.0lf;
    return p / q;
}

// erfc(x) for 1.25 ≤ x < 28.
fn erfc_tail64(x: f64) -> f64 {
    let z = 1.0lf / (x * x);
    var r: f64;
    var s: f64;
    if (x < 2.857142857142857lf) {
        r = -9.81432934416914548592e+00lf;
        r = r * z - 8.12874355063065934246e+01lf;
        r = r * z - 1.84605092906711035994e+02lf;
        r = r * z - 1.62396669462573470355e+02lf;
        r = r * z - 6.23753324503260060396e+01lf;
        r = r * z - 1.05586262253232909814e+01lf;
        r = r * z - 6.93858572707181764372e-01lf;
        r = r * z - 9.86494403484714822705e-03lf;
        s = -6.04244152148580987438e-02lf;
        s = s * z + 6.57024977031928170135e+00lf;
        s = s * z + 1.08635005541779435134e+02lf;
        s = s * z + 4.29008140027567833386e+02lf;
        s = s * z + 6.45387271733267880336e+02lf;
        s = s * z + 4.34565877475229228821e+02lf;
        s = s * z + 1.37657754143519042600e+02lf;
        s = s * z + 1.96512716674392571292e+01lf;
        s = s * z + 1.0lf;
    } else {
        r = -4.83519191608651397019e+02lf;
        r = r * z - 1.02509513161107724954e+03lf;
        r = r * z - 6.37566443368389627722e+02lf;
        r = r * z - 1.60636384855821916062e+02lf;
        r = r * z - 1.77579549177547519889e+01lf;
        r = r * z - 7.99283237680523006574e-01lf;
        r = r * z - 9.86494292470009928597e-03lf;
        s = -2.24409524465858183362e+01lf;
        s = s * z + 4.74528541206955367215e+02lf;
        s = s * z + 2.55305040643316442583e+03lf;
        s = s * z + 3.19985821950859553908e+03lf;
        s = s * z + 1.53672958608443695994e+03lf;
        s = s * z + 3.25792512996573918826e+02lf;
        s = s * z + 3.03380607434824582924e+01lf;
        s = s * z + 1.0lf;
    }
    let h = f64(f32(x));
    return exp_ext(-h * h - 0.5625lf, (h - x) * (h + x) + r / s) / x;
}

fn erf_r(x: f64) -> f64 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    if (a < 0.84375lf) { return x + x * erf_small64(x * x); }
    var r = 1.0lf;
    if (a < 1.25lf) {
        r = F64_ERX + erf_one64(a - 1.0lf);
    } else if (a < 6.0lf) {
        r = 1.0lf - erfc_tail64(a);
    }
    return select(r, -r, x < 0.0lf);
}

fn erfc_r(x: f64) -> f64 {
    if (is_nan(x)) { return x; }
    let a = abs(x);
    if (a < 0.84375lf) {
        let y = x * erf_small64(x * x);
        if (x < 0.25lf) { return 1.0lf - (x + y); }
        return 0.5lf - ((x - 0.5lf) + y);
    }
    if (a < 1.25lf) {
        let p = erf_one64(a - 1.0lf);
        return select((1.0lf - F64_ERX) - p, 1.0lf + (F64_ERX + p), x < 0.0lf);
    }
    var r = 0.0lf;
    if (a < 28.0lf) { r = erfc_tail64(a); }
    return select(r, 2.0lf - r, x < 0.0lf);
}

// floor and ceil as IEEE's: the adapter's floor of an f64 (a GLSL.std.450 instruction that
// takes 64-bit floats), not relied on for ±0, non-finite values or |x| ≥ 2^52 (integers all),
// which pass through; ceil(x) = −floor(−x), which gives −0 for x in (−1, −0]. Exact
// (checked by f64_tanh_atan_erf_are_accurate_on_an_adapter).
fn floor_r(x: f64) -> f64 {
    if (!finite(x) || x == 0.0lf || abs(x) >= 4503599627370496.0lf) { return x; }
    return floor(x);
}

fn ceil_r(x: f64) -> f64 {
    return -floor_r(-x);
}
