//! The CUDA backend: model code generation, NVRTC compilation and the cudarc runtime.
//!
//! Kernels are generated per model × method × metric kinds × precision, compiled by NVRTC
//! for the device's own architecture and cached by the SHA-256 of their source. NVRTC needs no
//! GPU, so CI compiles every generated kernel; running them needs libcuda and a device, or the
//! host emulation ([`EmulatedCuda`]), which builds the same source with the system C++ compiler
//! and runs it on the CPU.

pub mod codegen;
pub mod kernel;

use crate::backend::Precision;
use crate::model::ModelPrograms;

/// The model evaluation kernel template.
pub const MODEL_EVAL_CU: &str = include_str!("../../../kernels/model_eval.cu");

/// The full CUDA C source of the model evaluation kernel for a model.
pub fn model_eval_source(m: &ModelPrograms, p: Precision) -> Result<String, String> {
    let real = codegen::real_type(p);
    let (ns, np, no) = (
        m.n_states.max(1).to_string(),
        m.n_params.max(1).to_string(),
        m.n_outputs.max(1).to_string(),
    );
    // The parameters and, after them, what model_prepare computes from them.
    let nq = crate::backend::hoist::q_len(m).max(1).to_string();
    crate::backend::wgpu::codegen::fill(
        MODEL_EVAL_CU,
        &[
            ("REAL", real),
            ("NS", &ns),
            ("NP", &np),
            ("NQ", &nq),
            ("NO", &no),
            ("TABLEAUS", crate::solver::tableau::TABLEAUS_CUH),
            ("MODEL", &codegen::model_functions(m, p)),
        ],
    )
}

/// Whether NVRTC can be loaded (it is looked up on the library path; compiling needs no GPU).
#[cfg(feature = "cuda")]
pub fn nvrtc_available() -> bool {
    // SAFETY: probes for the shared library without calling into it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
pub fn nvrtc_available() -> bool {
    false
}

/// Compiles CUDA C to PTX for `arch` (e.g. "sm_90") with the default tuning. Errors carry
/// NVRTC's log and the source.
pub fn compile_ptx(src: &str, arch: &'static str) -> Result<String, String> {
    compile_ptx_tuned(src, arch, &CudaTuning::default())
}

/// Compiles CUDA C to PTX for `arch` with the NVRTC options of `tuning`.
#[cfg(feature = "cuda")]
pub fn compile_ptx_tuned(
    src: &str,
    arch: &'static str,
    tuning: &CudaTuning,
) -> Result<String, String> {
    if !nvrtc_available() {
        return Err("NVRTC (libnvrtc) is not on the library path".into());
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        options: tuning.nvrtc_options(),
        ..Default::default()
    };
    // NVRTC's --maxrregcount reaches only the cubins it makes, not PTX (which the driver
    // compiles): a register cap and launch bounds go into the source, as attributes of the
    // kernel's entry that the PTX carries (.maxnreg, .maxntid, .minnctapersm).
    let bounds = tuning.launch_bounds();
    let tuned;
    let src = if bounds.is_empty() {
        src
    } else {
        tuned = format!("#define VPOP_LAUNCH_BOUNDS {bounds}\n{src}");
        &tuned
    };
    match cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(e) => Err(format!("NVRTC: {e:?}\n--- generated source ---\n{src}")),
    }
}

#[cfg(not(feature = "cuda"))]
pub fn compile_ptx_tuned(
    _src: &str,
    _arch: &'static str,
    _tuning: &CudaTuning,
) -> Result<String, String> {
    Err("vpop was built without the `cuda` feature".into())
}

/// How the CUDA integrator kernels are compiled and launched: threads per block and NVRTC's
/// options. The default is what `vpop run` uses; `VPOP_CUDA_TUNING` (e.g.
/// `block=256,fast-math`) changes it for a run, and `vpop bench --cuda-variants` times several
/// side by side (docs/gpu.md, "Tuning the kernels").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaTuning {
    /// Threads per block: a multiple of 32 from 32 to 1024.
    pub block: u32,
    /// A cap on registers per thread (16 to 255): the entry's `__maxnreg__`.
    pub maxrregcount: Option<u32>,
    /// Blocks of `block` threads that should fit on one multiprocessor at once: the entry's
    /// `__launch_bounds__(block, minblocks)`, which caps registers to allow it.
    pub min_blocks: Option<u32>,
    /// NVRTC's `--use_fast_math`: flush-to-zero and approximate division, square root and
    /// transcendental functions in f32 (f64 arithmetic is unchanged).
    pub fast_math: bool,
    /// Further NVRTC options, as given (e.g. `-ftz=true`, `-prec-div=false`).
    pub options: Vec<String>,
    /// `order=natural`: threads take subjects in the order they were sampled in, instead of
    /// the costliest first as learnt from earlier calls (`crate::backend::order`). Results are
    /// the same either way; only the time differs.
    pub natural_order: bool,
}

/// Threads per block of the default tuning.
pub const DEFAULT_BLOCK: u32 = 128;

impl Default for CudaTuning {
    fn default() -> CudaTuning {
        CudaTuning {
            block: DEFAULT_BLOCK,
            maxrregcount: None,
            min_blocks: None,
            fast_math: false,
            options: Vec::new(),
            natural_order: false,
        }
    }
}

impl CudaTuning {
    /// The environment variable a run's tuning is read from.
    pub const ENV: &'static str = "VPOP_CUDA_TUNING";

    /// Parses `key=value` items separated by commas: `block=N`, `maxrreg=N`, `minblocks=N`,
    /// `fast-math`, `opt=-NVRTC-OPTION` (repeatable), `order=natural` or `order=cost` (the
    /// default); `default` or nothing is the default.
    pub fn parse(s: &str) -> Result<CudaTuning, String> {
        let mut t = CudaTuning::default();
        let number = |key: &str, v: &str, lo: u32, hi: u32| -> Result<u32, String> {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{key}={v}: expected a whole number from {lo} to {hi}"))
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match (key, value) {
                ("default", None) => {}
                ("block", Some(v)) => {
                    let b = number("block", v, 32, 1024)?;
                    if b % 32 != 0 {
                        return Err(format!("block={b}: expected a multiple of 32 (a warp)"));
                    }
                    t.block = b;
                }
                ("maxrreg", Some(v)) => t.maxrregcount = Some(number("maxrreg", v, 16, 255)?),
                ("minblocks", Some(v)) => t.min_blocks = Some(number("minblocks", v, 1, 32)?),
                ("fast-math", None) => t.fast_math = true,
                ("order", Some("natural")) => t.natural_order = true,
                ("order", Some("cost")) => t.natural_order = false,
                ("order", _) => {
                    return Err(format!("'{item}': expected order=natural or order=cost"))
                }
                ("opt", Some(v)) if v.starts_with('-') && !v.contains(char::is_whitespace) => {
                    t.options.push(v.to_string())
                }
                ("opt", _) => {
                    return Err(format!(
                        "'{item}': expected one NVRTC option such as opt=-ftz=true"
                    ))
                }
                _ => {
                    return Err(format!(
                        "'{item}': expected block=N, maxrreg=N, minblocks=N, fast-math, \
                         opt=-OPTION, order=natural or default"
                    ))
                }
            }
        }
        if t.maxrregcount.is_some() && t.min_blocks.is_some() {
            return Err("maxrreg and minblocks both cap registers: give one of them".to_string());
        }
        Ok(t)
    }

    /// NVRTC's options besides the architecture.
    pub fn nvrtc_options(&self) -> Vec<String> {
        // (cudarc's `use_fast_math` field passes --fmad=true, not --use_fast_math.)
        let fast = self.fast_math.then(|| "--use_fast_math".to_string());
        fast.into_iter().chain(self.options.clone()).collect()
    }

    /// The attributes of the kernel's entry (`VPOP_LAUNCH_BOUNDS` in kernels/*_driver.cu):
    /// empty for the default.
    pub fn launch_bounds(&self) -> String {
        match (self.maxrregcount, self.min_blocks) {
            (Some(r), _) => format!("__maxnreg__({r})"),
            (None, Some(m)) => format!("__launch_bounds__({}, {m})", self.block),
            (None, None) => String::new(),
        }
    }

    /// The tuning named by `VPOP_CUDA_TUNING`, or the default where it is unset or empty.
    pub fn from_env() -> Result<CudaTuning, String> {
        match std::env::var(Self::ENV) {
            Ok(v) => CudaTuning::parse(&v).map_err(|e| format!("{}={v:?}: {e}", Self::ENV)),
            Err(_) => Ok(CudaTuning::default()),
        }
    }

    /// The canonical text of the tuning (what [`CudaTuning::parse`] reads back), `default` for
    /// the default.
    pub fn label(&self) -> String {
        let mut items = Vec::new();
        if self.block != DEFAULT_BLOCK {
            items.push(format!("block={}", self.block));
        }
        if let Some(r) = self.maxrregcount {
            items.push(format!("maxrreg={r}"));
        }
        if let Some(m) = self.min_blocks {
            items.push(format!("minblocks={m}"));
        }
        if self.fast_math {
            items.push("fast-math".to_string());
        }
        items.extend(self.options.iter().map(|o| format!("opt={o}")));
        if self.natural_order {
            items.push("order=natural".to_string());
        }
        if items.is_empty() {
            "default".to_string()
        } else {
            items.join(",")
        }
    }
}

/// Operations the integrator kernel performed, by kind (kernels/host_count.h), counted by a
/// counting build of the emulated kernel (`EmulatedCuda::counting`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    /// Additions and subtractions.
    pub add: u64,
    pub mul: u64,
    pub div: u64,
    /// Fused multiply-adds (two floating-point operations each).
    pub fma: u64,
    pub sqrt: u64,
    /// exp, log, log10 and pow.
    pub transcendental: u64,
    /// Comparisons, fmin and fmax.
    pub compare: u64,
    /// Negations, fabs, ceil, floor and finiteness tests.
    pub other: u64,
}

impl OpCounts {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn from_raw(r: &[u64; 8]) -> OpCounts {
        OpCounts {
            add: r[0],
            mul: r[1],
            div: r[2],
            fma: r[3],
            sqrt: r[4],
            transcendental: r[5],
            compare: r[6],
            other: r[7],
        }
    }

    /// Floating-point operations: additions, multiplications, divisions, square roots, and
    /// two per fused multiply-add (transcendental functions are counted apart).
    pub fn flops(&self) -> u64 {
        self.add + self.mul + self.div + self.sqrt + 2 * self.fma
    }

    /// Each count divided by `n` (per subject), rounded.
    pub fn per(&self, n: u64) -> OpCounts {
        let d = |v: u64| (v as f64 / n.max(1) as f64).round() as u64;
        OpCounts {
            add: d(self.add),
            mul: d(self.mul),
            div: d(self.div),
            fma: d(self.fma),
            sqrt: d(self.sqrt),
            transcendental: d(self.transcendental),
            compare: d(self.compare),
            other: d(self.other),
        }
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn add_raw(&mut self, r: &[u64; 8]) {
        let o = OpCounts::from_raw(r);
        self.add += o.add;
        self.mul += o.mul;
        self.div += o.div;
        self.fma += o.fma;
        self.sqrt += o.sqrt;
        self.transcendental += o.transcendental;
        self.compare += o.compare;
        self.other += o.other;
    }
}

#[cfg(feature = "cuda")]
pub mod cache;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
pub mod emulate;
#[cfg(feature = "cuda")]
mod host;

#[cfg(feature = "cuda")]
pub use device::{list_devices, CudaBackend, DeviceInfo};
#[cfg(feature = "cuda")]
pub use emulate::EmulatedCuda;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunings_parse_and_print_back() {
        assert_eq!(CudaTuning::parse("").unwrap(), CudaTuning::default());
        assert_eq!(CudaTuning::parse("default").unwrap().label(), "default");
        let t = CudaTuning::parse(" block=256 , maxrreg=64,fast-math,opt=-ftz=true,order=natural ")
            .unwrap();
        assert_eq!(
            t,
            CudaTuning {
                block: 256,
                maxrregcount: Some(64),
                min_blocks: None,
                fast_math: true,
                options: vec!["-ftz=true".into()],
                natural_order: true,
            }
        );
        assert_eq!(
            t.label(),
            "block=256,maxrreg=64,fast-math,opt=-ftz=true,order=natural"
        );
        assert_eq!(CudaTuning::parse(&t.label()).unwrap(), t);
        let t = CudaTuning::parse("block=64,minblocks=8").unwrap();
        assert_eq!(t.label(), "block=64,minblocks=8");
        assert_eq!(t.launch_bounds(), "__launch_bounds__(64, 8)");
        assert_eq!(CudaTuning::default().launch_bounds(), "");
        // The default block size, named, is the default.
        assert_eq!(CudaTuning::parse("block=128").unwrap().label(), "default");
        assert_eq!(CudaTuning::parse("order=cost").unwrap().label(), "default");
    }

    #[test]
    fn bad_tunings_are_explained() {
        for (text, says) in [
            ("block=100", "multiple of 32"),
            ("block=2048", "from 32 to 1024"),
            ("block=", "whole number"),
            ("maxrreg=8", "from 16 to 255"),
            ("opt=ftz", "one NVRTC option"),
            ("opt=-a -b", "one NVRTC option"),
            ("fastmath", "expected block=N"),
            ("minblocks=0", "from 1 to 32"),
            ("maxrreg=64,minblocks=2", "give one of them"),
            ("fast-math=1", "expected block=N"),
            ("order=random", "order=natural or order=cost"),
        ] {
            let e = CudaTuning::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
