//! # vpop — in-silico clinical trials
//!
//! vpop samples virtual populations, integrates a PK/PD/QSP ODE model for every subject under a
//! dosing regimen, computes exposure metrics inside the integrator and writes them to Parquet.
//!
//! - [`model`]: the model DSL, its IR, symbolic derivatives and the CPU evaluator; the built-in
//!   model library.
//! - [`solver`]: the tableau table and the CPU f64 reference integrators.
//! - [`diag`]: file:line:col diagnostics for every kind of user input.

// Numerical loops index several arrays at once, as the generated GPU kernels do.
#![allow(clippy::needless_range_loop)]

pub mod backend;
pub mod cli;
pub mod diag;
pub mod dosing;
pub mod metrics;
pub mod model;
pub mod output;
pub mod population;
pub mod sensitivity;
pub mod solver;
pub mod trial;

/// Keeps the C allocator from handing the pipeline's chunk-sized buffers back to the system
/// after every chunk. glibc serves allocations above a sliding threshold (from 128 KiB) with
/// fresh mappings and trims freed memory at the top of its heaps beyond another, so each chunk's
/// columns, Arrow arrays and Parquet pages cost page faults and zeroing again: a fifth of the
/// host pipeline's time (`cargo bench --bench pipeline -- host_end_to_end`). Fixed thresholds
/// of 32 MiB (mapped) and 256 MiB (trimmed) keep them in the heap; memory stays bounded by the
/// largest working set, as before. Call it early: it applies to later allocations. Elsewhere
/// than glibc it does nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters, under glibc's own arena locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
