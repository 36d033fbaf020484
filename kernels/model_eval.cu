// Evaluates a model's generated functions at many points, one thread per point: right-hand
// side, Jacobian, ∂f/∂t, outputs and their gradient (structure of arrays in, rows out). It
// checks generated code and is the smallest kernel built from the integrators' pieces.

typedef {{REAL}} real;
#define NS {{NS}}
#define NP {{NP}}
// Parameters, then the values model_prepare computes from them.
#define NQ {{NQ}}
#define NO {{NO}}

{{TABLEAUS}}

{{MODEL}}

extern "C" __global__ void model_eval(const real* __restrict__ states, const real* __restrict__ params,
                                      const real* __restrict__ times, real* __restrict__ results, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    real y[NS], q[NQ];
    for (int k = 0; k < NS; k++) y[k] = states[(size_t)k * n + i];
    for (int k = 0; k < NP; k++) q[k] = params[(size_t)k * n + i];
    model_prepare(q);
    const real t = times[i];
    const int width = NS + NS * NS + NS + NO + NO * NS;
    real* out = results + (size_t)i * width;
    model_rhs(t, y, q, out);
    model_jac(t, y, q, out + NS);
    model_dfdt(t, y, q, out + NS + NS * NS);
    model_outputs(t, y, q, out + 2 * NS + NS * NS);
    model_output_jac(t, y, q, out + 2 * NS + NS * NS + NO);
}
