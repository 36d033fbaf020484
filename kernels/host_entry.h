
// The host entry point (after the kernel's source, inside the prelude's namespace): runs the
// kernel as a launch of grid_dim blocks of block_dim threads would, for blocks
// [first_block, end_block), one thread after another. Calls for disjoint block ranges may run
// concurrently on different host threads: a thread writes only its own subject's outputs.
extern "C" __attribute__((visibility("default"))) void vpop_emulate_integrate(
    const real* params, const real* scale, const real* arm, const Meta* meta, real* metrics_out,
    unsigned* counters, real* profiles, unsigned block_dim, unsigned grid_dim,
    unsigned first_block, unsigned end_block) {
    blockDim = dim3{block_dim, 1, 1};
    gridDim = dim3{grid_dim, 1, 1};
    for (unsigned b = first_block; b < end_block; b++) {
        blockIdx = dim3{b, 0, 0};
        for (unsigned t = 0; t < block_dim; t++) {
            threadIdx = dim3{t, 0, 0};
            integrate(params, scale, arm, *meta, metrics_out, counters, profiles);
        }
    }
}

}  // namespace vpop_emulation
