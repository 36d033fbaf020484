// The scalar helpers of the f32 WGSL kernels (shaders/real_f64.wgsl is the f64 set): the
// builtins serve, and non-finite values are recognised by bits, because shader compilers may
// assume that floating-point comparisons never see NaN.

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
