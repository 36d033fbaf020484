//! Backends: where a chunk of subjects is integrated.
//!
//! The [`Backend`] trait is deliberately small: a backend receives one chunk of subjects of one
//! arm (their parameters as structure-of-arrays, their dose scaling) and fills per-subject metric
//! columns, status codes and optional profiles. Sampling, scheduling semantics and output
//! encoding live elsewhere, so every backend computes the same thing.

pub mod cpu;
pub mod cuda;
pub mod gpu;
pub mod hoist;
pub mod order;
pub mod records;
pub mod stepgen;
pub mod wgpu;
pub mod wsparse;

use crate::dosing::Regimen;
use crate::metrics::MetricSpec;
use crate::solver::{SolverOptions, Stats};

/// Floating-point precision a backend integrates in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// `f32` or `f64`, in any case (as method and backend names are).
    pub fn parse(s: &str) -> Option<Precision> {
        [Precision::F32, Precision::F64]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }

    /// What is left of a compartment's infusion rate when an input changes it, relative to
    /// that input's rate, below which it is taken as exactly zero (round-off of the rates'
    /// sum): 1e-12 in f64 (the CPU reference and the f64 kernels); in f32, where a sum of rates
    /// keeps errors of ~1e-7, 1e-6.
    pub fn rate_cancel(self) -> f64 {
        match self {
            Precision::F32 => 1e-6,
            Precision::F64 => 1e-12,
        }
    }

    /// Refuses a tolerance tighter than this precision resolves: rtol below 1e-7 for an
    /// adaptive method in f32. Every backend checks it before a call, and a run before it
    /// writes anything, so a refused run leaves no manifest.
    pub fn check_rtol(self, solver: &SolverOptions) -> Result<(), String> {
        if self == Precision::F32 && solver.method.is_adaptive() && solver.rtol < 1e-7 {
            return Err(format!("rtol {:e} is below what f32 resolves", solver.rtol));
        }
        Ok(())
    }
}

/// What a backend is and where it runs, for logs and provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// `cpu`, `wgpu`, `cuda` or `cuda-emulated` (the CUDA kernels run on the host, for checks).
    pub name: &'static str,
    /// The device, e.g. "2 CPU threads" or an adapter name.
    pub device: String,
    pub precision: Precision,
}

/// Everything about an arm that is the same for all its subjects.
#[derive(Debug, Clone)]
pub struct ArmPlan {
    pub name: String,
    pub regimen: Regimen,
    pub metrics: Vec<MetricSpec>,
    pub end: f64,
    /// Sorted profile sampling times (empty: no profile).
    pub sample_times: Vec<f64>,
    pub solver: SolverOptions,
    /// Start times of the second, third, … occasion (sorted, > 0; empty: one occasion). The
    /// parameters switch to the next occasion's values at each.
    pub occasions: Vec<f64>,
}

/// One chunk of subjects of one arm.
#[derive(Debug, Clone, Copy)]
pub struct ChunkInput<'a> {
    /// Global index of the first subject (for logs; draws are already made).
    pub first_subject: u64,
    pub n: usize,
    /// `params[p][i]`: model parameter p of subject i, for every model parameter.
    pub params: &'a [Vec<f64>],
    /// Per-subject multiplier of every dose amount (e.g. body weight for mg/kg), or `None`.
    pub amount_scale: Option<&'a [f64]>,
    /// `occasion_params[k][p][i]`: parameter p of subject i at occasion k + 2, for at least
    /// as many occasions as the arm has (empty for arms of one occasion).
    pub occasion_params: &'a [Vec<Vec<f64>>],
}

impl ChunkInput<'_> {
    /// Whether the chunk holds parameters (`n_params` columns of at least `n` values) for
    /// every later occasion of `arm`; the error names the arm otherwise.
    pub fn check_occasions(&self, arm: &ArmPlan, n_params: usize) -> Result<(), String> {
        let n_later = arm.occasions.len();
        if self.occasion_params.len() < n_later
            || self.occasion_params[..n_later]
                .iter()
                .any(|o| o.len() != n_params || o.iter().any(|p| p.len() < self.n))
        {
            return Err(format!(
                "arm '{}' has {} occasions but the chunk holds parameters for {}",
                arm.name,
                n_later + 1,
                self.occasion_params.len() + 1
            ));
        }
        Ok(())
    }
}

/// Per-subject results of a chunk, structure of arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkOutput {
    /// `metrics[m][i]`: metric m (in the arm's metric order) of subject i.
    pub metrics: Vec<Vec<f64>>,
    /// `crate::solver::Status` codes.
    pub status: Vec<u8>,
    /// `profiles[k][i * n_times + j]`: output k of subject i at sample time j.
    pub profiles: Vec<Vec<f64>>,
    /// Work summed over the chunk.
    pub stats: Stats,
    /// Time the device spent integrating (kernel launches to completion, transfers excluded);
    /// zero for the CPU backend, where it is the whole call.
    pub kernel_time: std::time::Duration,
}

impl ChunkOutput {
    /// Resizes every column for `n` subjects.
    pub fn reset(&mut self, n: usize, n_metrics: usize, n_outputs: usize, n_times: usize) {
        self.metrics.resize_with(n_metrics, Vec::new);
        for m in &mut self.metrics {
            m.clear();
            m.resize(n, f64::NAN);
        }
        self.status.clear();
        self.status.resize(n, 0);
        let n_prof = if n_times == 0 { 0 } else { n_outputs };
        self.profiles.resize_with(n_prof, Vec::new);
        for p in &mut self.profiles {
            p.clear();
            p.resize(n * n_times, f64::NAN);
        }
        self.stats = Stats::default();
        self.kernel_time = std::time::Duration::ZERO;
    }

    /// The results of subjects `range` (profiles of `n_times` samples per subject), without a
    /// copy.
    pub fn view(&self, range: std::ops::Range<usize>, n_times: usize) -> OutputView<'_> {
        OutputView {
            metrics: self.metrics.iter().map(|m| &m[range.clone()]).collect(),
            status: &self.status[range.clone()],
            profiles: self
                .profiles
                .iter()
                .map(|p| &p[range.start * n_times..range.end * n_times])
                .collect(),
        }
    }

    /// Every subject's results.
    pub fn view_all(&self) -> OutputView<'_> {
        OutputView {
            metrics: self.metrics.iter().map(|m| &m[..]).collect(),
            status: &self.status,
            profiles: self.profiles.iter().map(|p| &p[..]).collect(),
        }
    }
}

/// A run of consecutive subjects' results in a [`ChunkOutput`] (the same layout, borrowed).
#[derive(Debug, Clone)]
pub struct OutputView<'a> {
    pub metrics: Vec<&'a [f64]>,
    pub status: &'a [u8],
    pub profiles: Vec<&'a [f64]>,
}

/// A backend failure (not a subject failure: those are status codes).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend '{0}' is not available: {1}")]
    Unavailable(&'static str, String),
    #[error("{0}")]
    Failed(String),
}

/// Integrates chunks of subjects.
pub trait Backend: Send {
    fn info(&self) -> BackendInfo;
    /// Integrates every subject of the chunk; subjects that fail are flagged in `out.status`
    /// and get NaN metrics, the chunk always completes.
    fn run_chunk(
        &mut self,
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        out: &mut ChunkOutput,
    ) -> Result<(), BackendError>;
    /// Runs dataset subjects' record programs ([`records::record_program`]); one outcome per
    /// program, in order. Subjects that fail are flagged in their outcome, the batch always
    /// completes.
    fn run_records(
        &mut self,
        programs: &[&records::Program],
        solver: &SolverOptions,
    ) -> Result<Vec<records::RecordsOutcome>, BackendError>;
    /// Subjects per call this backend runs best with: the trial pipeline merges consecutive
    /// chunks into calls of up to this many (a GPU needs hundreds of thousands of threads to
    /// be busy; the CPU is as fast chunk by chunk). Part files do not depend on it.
    fn preferred_batch(&self) -> usize {
        1
    }
    /// Host threads that drive this backend's calls by default, each with an instance of its
    /// own ([`Backend::sibling`]): one call's host side (packing parameters, staging, copying
    /// and unpacking results) then runs while another call's kernels keep the device busy. A
    /// GPU call of a million subjects spends about as long on the host as in its kernels
    /// (docs/gpu.md, "Where a call's time goes"). One for backends whose calls keep every
    /// core busy (the CPU reference).
    fn integrators(&self) -> usize {
        1
    }
    /// Another instance of this backend on the same devices with the same settings, for a
    /// further host thread; `None` where the backend has none to offer.
    fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
        None
    }
    /// Why [`Backend::sibling`] offers no further instance, for a run that asked for more
    /// host threads than it got.
    fn no_sibling(&self) -> &'static str {
        "it offers no further instance"
    }
    /// The operations its kernels performed so far, by kind, for a backend that counts them
    /// (the counting build of the emulated CUDA kernel); None for the others.
    fn op_counts(&self) -> Option<cuda::OpCounts> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkOutput;

    /// A reset chunk holds NaN metrics and profiles and zero statuses for exactly its
    /// subjects, whatever it held before.
    #[test]
    fn a_reset_chunk_holds_nothing_but_its_size() {
        let mut out = ChunkOutput::default();
        for (n, metrics, times) in [(10, 3, 2), (200_000, 2, 0), (70_000, 1, 3), (5, 2, 0)] {
            out.reset(n, metrics, 2, times);
            assert_eq!(out.metrics.len(), metrics);
            assert!(out
                .metrics
                .iter()
                .all(|m| m.len() == n && m.iter().all(|v| v.is_nan())));
            assert_eq!(out.status, vec![0; n]);
            assert_eq!(out.profiles.len(), if times == 0 { 0 } else { 2 });
            assert!(out
                .profiles
                .iter()
                .all(|p| p.len() == n * times && p.iter().all(|v| v.is_nan())));
            out.metrics.iter_mut().for_each(|m| m.fill(1.0));
            out.profiles.iter_mut().for_each(|p| p.fill(1.0));
            out.status.fill(3);
        }
    }
}
