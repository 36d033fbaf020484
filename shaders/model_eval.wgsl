// Evaluates a model's generated functions at many points, one invocation per point: the
// right-hand side, its Jacobian, ∂f/∂t, the outputs and their gradient. It checks generated
// code against the CPU evaluator and is the smallest kernel built from the same pieces as the
// integrators.

{{SIZES}}
// Scalars are {{T}} everywhere (a type alias would give arrays of distinct types in naga).
// PRECISION: the scalar helpers (in f64 the exp, log, log10 and pow the model functions call).

struct Meta { n: u32, width: u32 }

@group(0) @binding(0) var<storage, read> states: array<{{T}}>;   // n × NS
@group(0) @binding(1) var<storage, read> params: array<{{T}}>;   // n × NP
@group(0) @binding(2) var<storage, read> times: array<{{T}}>;    // n
@group(0) @binding(3) var<storage, read_write> results: array<{{T}}>; // n × width
@group(0) @binding(4) var<uniform> meta_: Meta;

{{PRECISION}}

{{MODEL}}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= meta_.n) { return; }
    var y: array<{{T}}, {{NS}}>;
    for (var k = 0u; k < NS; k++) { y[k] = states[i * NS + k]; }
    var q: array<{{T}}, {{NQ}}>;
    for (var k = 0u; k < NP; k++) { q[k] = params[i * NP + k]; }
    q = model_prepare(q);
    let t = times[i];
    var o = i * meta_.width;
    var f = model_rhs(t, y, q);
    for (var k = 0u; k < NS; k++) { results[o] = f[k]; o++; }
    var j = model_jac(t, y, q);
    for (var k = 0u; k < NS * NS; k++) { results[o] = j[k]; o++; }
    var d = model_dfdt(t, y, q);
    for (var k = 0u; k < NS; k++) { results[o] = d[k]; o++; }
    var g = model_outputs(t, y, q);
    for (var k = 0u; k < NO; k++) { results[o] = g[k]; o++; }
    var gj = model_output_jac(t, y, q);
    for (var k = 0u; k < NO * NS; k++) { results[o] = gj[k]; o++; }
}
