//! The WGSL backend: model code generation and the wgpu runtime.
//!
//! Every wgpu call of the crate lives in this module (its API moves between versions): the
//! integrator backend ([`WgpuBackend`], f32 everywhere, f64 where the adapter has
//! `SHADER_F64`), the model evaluation kernel that checks generated code against the CPU
//! evaluator, and adapter listing.

pub mod codegen;
pub mod kernel;

use crate::backend::Precision;
use crate::model::ModelPrograms;

/// The model evaluation kernel template.
pub const MODEL_EVAL_WGSL: &str = include_str!("../../../shaders/model_eval.wgsl");

/// The full WGSL source of the model evaluation kernel for a model.
pub fn model_eval_source(m: &ModelPrograms, p: Precision) -> Result<String, String> {
    let sizes = codegen::sizes(m);
    let funcs = codegen::model_functions(m, p);
    let ns = m.n_states.max(1).to_string();
    // The parameters, then what model_prepare computes from them.
    let nq = crate::backend::hoist::q_len(m).max(1).to_string();
    let body = codegen::fill(
        MODEL_EVAL_WGSL,
        &[
            ("SIZES", &sizes),
            ("T", codegen::scalar(p)),
            ("PRECISION", codegen::precision_helpers(p)),
            ("MODEL", &funcs),
            ("NS", &ns),
            ("NQ", &nq),
        ],
    )?;
    Ok(body)
}

/// Checks a generated shader with naga (the WGSL front end and validator wgpu itself uses)
/// before an adapter compiles it, so that an error in code generated from a model is reported
/// at the model statement it came from (`file:line:col`, see
/// [`codegen::generated_line`]); other errors carry naga's own report. `what` names the
/// shader in messages.
#[cfg(feature = "wgpu")]
pub fn check_source(src: &str, p: Precision, m: &ModelPrograms, what: &str) -> Result<(), String> {
    use wgpu::naga;
    let failed = format!("the {} {what} does not compile", p.name());
    let locate = |offset: usize, message: String| -> String {
        match codegen::generated_line(src, offset, m) {
            Some(line) => format!("{}: {message}", line.message(&failed)),
            None => format!("{failed}: {message}"),
        }
    };
    let module = match naga::front::wgsl::parse_str(src) {
        Ok(module) => module,
        Err(e) => {
            return Err(match e.location(src) {
                Some(at) => locate(at.offset as usize, e.message().to_string()),
                None => format!("{failed}: {}", e.emit_to_string(src)),
            })
        }
    };
    let caps = match p {
        Precision::F32 => naga::valid::Capabilities::empty(),
        Precision::F64 => naga::valid::Capabilities::FLOAT64,
    };
    match naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&module) {
        Ok(_) => Ok(()),
        Err(e) => {
            // The error and its causes, innermost last.
            let mut message = e.as_inner().to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e.as_inner());
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            // The spans go from the function to the expression: the narrowest one that is a
            // line of a generated model function says most.
            let mut spans: Vec<_> = e.spans().map(|(span, _)| span.location(src)).collect();
            spans.sort_by_key(|at| at.length);
            let at = spans
                .iter()
                .find(|at| {
                    codegen::generated_line(src, at.offset as usize, m)
                        .is_some_and(|g| g.instr.is_some())
                })
                .or(spans.first());
            Err(match at {
                Some(at) => locate(at.offset as usize, message),
                None => format!("{failed}: {}", e.emit_to_string(src)),
            })
        }
    }
}

/// An adapter as `vpop devices` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub f64: bool,
    pub f16: bool,
}

/// The checks wgpu compiles into the integrator kernels (its `ShaderRuntimeChecks`), read
/// from `VPOP_WGPU_CHECKS` when a backend opens (docs/gpu.md, "Runtime checks in the WGSL
/// kernels"). The default keeps every check. The kernels end every loop by a budget or an
/// iteration cap and index their arrays within bounds, so the others compute the same
/// results; they exist to measure what the checks cost on an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShaderChecks {
    /// Every check: loops bounded by a 64-bit counter of their own, array and buffer indices
    /// clamped where the driver does not check them, integer division guarded.
    #[default]
    Checked,
    /// Every check but the loop counter.
    UnboundedLoops,
    /// None of them.
    Unchecked,
}

impl ShaderChecks {
    /// The environment variable a run's setting is read from.
    pub const ENV: &'static str = "VPOP_WGPU_CHECKS";

    const ALL: [ShaderChecks; 3] = [
        ShaderChecks::Checked,
        ShaderChecks::UnboundedLoops,
        ShaderChecks::Unchecked,
    ];

    /// A [`ShaderChecks::label`], `default` or nothing (the default).
    pub fn parse(s: &str) -> Result<ShaderChecks, String> {
        let s = s.trim();
        if s.is_empty() || s == "default" {
            return Ok(ShaderChecks::Checked);
        }
        ShaderChecks::ALL
            .into_iter()
            .find(|c| c.label() == s)
            .ok_or_else(|| format!("'{s}': expected checked, unbounded-loops or unchecked"))
    }

    /// The setting named by `VPOP_WGPU_CHECKS`, or the default where it is unset.
    pub fn from_env() -> Result<ShaderChecks, String> {
        match std::env::var(Self::ENV) {
            Ok(v) => ShaderChecks::parse(&v).map_err(|e| format!("{}={v:?}: {e}", Self::ENV)),
            Err(_) => Ok(ShaderChecks::Checked),
        }
    }

    /// The text [`ShaderChecks::parse`] reads back.
    pub fn label(self) -> &'static str {
        match self {
            ShaderChecks::Checked => "checked",
            ShaderChecks::UnboundedLoops => "unbounded-loops",
            ShaderChecks::Unchecked => "unchecked",
        }
    }

    #[cfg(feature = "wgpu")]
    fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::Checked => wgpu::ShaderRuntimeChecks::checked(),
            ShaderChecks::UnboundedLoops => wgpu::ShaderRuntimeChecks {
                force_loop_bounding: false,
                ..wgpu::ShaderRuntimeChecks::checked()
            },
            ShaderChecks::Unchecked => wgpu::ShaderRuntimeChecks::unchecked(),
        }
    }
}

/// The environment variable that keeps the kernels' loops over the model's sizes and the
/// metrics as loops (`0`) instead of unrolling them (`1`, the default;
/// `codegen::unroll_loops`).
pub const UNROLL_ENV: &str = "VPOP_WGSL_UNROLL";

/// The sizes whose loops a kernel has unrolled (`codegen::unroll_loops`):
/// the states, the integrated vector, the quadratures, the outputs, the parameters and the
/// metrics. A loop over the metrics is unrolled even where its body calls the kernel's
/// functions: each metric's kind and output are compiled in (`metric_kind`, `metric_output`),
/// so each copy keeps its own kind's code only.
#[cfg(feature = "wgpu")]
const UNROLLED_SIZES: [&str; 6] = ["NS", "NY", "NA", "NO", "NP", "NM"];

/// A switch read from the environment variable `name`: true unset, empty, `default` or `on`;
/// false for `off`; otherwise an error that says what was `expected`.
fn env_switch(name: &str, on: &str, off: &str, expected: &str) -> Result<bool, String> {
    match std::env::var(name) {
        Err(_) => Ok(true),
        Ok(v) => match v.trim() {
            "" | "default" => Ok(true),
            v if v == on => Ok(true),
            v if v == off => Ok(false),
            other => Err(format!("{name}={other:?}: expected {expected}")),
        },
    }
}

/// Whether `VPOP_WGSL_UNROLL` asks for unrolled loops (unset: yes).
pub fn unroll_from_env() -> Result<bool, String> {
    env_switch(UNROLL_ENV, "1", "0", "1 (unroll) or 0 (keep the loops)")
}

/// The environment variable that chooses the order subjects are handed to invocations in:
/// `cost` (the default: the costliest first, as learnt from earlier calls) or `natural` (as
/// sampled). Results are the same either way.
pub const ORDER_ENV: &str = "VPOP_WGPU_ORDER";

/// Whether [`ORDER_ENV`] asks for subjects in the order of their cost.
pub fn order_from_env() -> Result<bool, String> {
    env_switch(
        ORDER_ENV,
        "cost",
        "natural",
        "cost (the default) or natural",
    )
}

/// A scalar type the WGSL kernels are built for.
#[cfg(feature = "wgpu")]
pub(crate) trait Real: bytemuck::Pod + Default + Send + Sync + 'static {
    const PRECISION: Precision;
    /// The largest finite value.
    const MAX: f64;
    fn of(x: f64) -> Self;
    fn to(self) -> f64;
}

#[cfg(feature = "wgpu")]
impl Real for f32 {
    const PRECISION: Precision = Precision::F32;
    const MAX: f64 = f32::MAX as f64;
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn to(self) -> f64 {
        f64::from(self)
    }
}

#[cfg(feature = "wgpu")]
impl Real for f64 {
    const PRECISION: Precision = Precision::F64;
    const MAX: f64 = f64::MAX;
    fn of(x: f64) -> f64 {
        x
    }
    fn to(self) -> f64 {
        self
    }
}

#[cfg(feature = "wgpu")]
mod runtime {
    use super::*;
    use crate::backend::BackendError;

    fn instance() -> wgpu::Instance {
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
    }

    /// Every adapter wgpu can see (WGPU_BACKEND restricts the backends).
    pub fn list_adapters() -> Vec<AdapterInfo> {
        let inst = instance();
        pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .map(|a| {
                let info = a.get_info();
                let f = a.features();
                AdapterInfo {
                    name: info.name,
                    backend: format!("{:?}", info.backend),
                    device_type: format!("{:?}", info.device_type),
                    f64: f.contains(wgpu::Features::SHADER_F64),
                    f16: f.contains(wgpu::Features::SHADER_F16),
                }
            })
            .collect()
    }

    /// A device and queue.
    pub struct Gpu {
        pub device: wgpu::Device,
        pub queue: wgpu::Queue,
        pub info: AdapterInfo,
        /// Whether the device was opened with `SHADER_F64` (f64 kernels run).
        pub shader_f64: bool,
    }

    impl Gpu {
        /// The high-performance adapter, with SHADER_F64 when asked for and available.
        pub fn new(want_f64: bool) -> Result<Gpu, BackendError> {
            let unavailable = |m: String| BackendError::Unavailable("wgpu", m);
            let inst = instance();
            let adapter = pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                ..Default::default()
            }))
            .map_err(|e| unavailable(format!("no adapter: {e}")))?;
            let info = adapter.get_info();
            let has_f64 = adapter.features().contains(wgpu::Features::SHADER_F64);
            if want_f64 && !has_f64 {
                return Err(unavailable(format!(
                    "adapter '{}' ({:?}) has no SHADER_F64 (column f64 of `vpop devices`)",
                    info.name, info.backend
                )));
            }
            let (device, queue) =
                pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                    label: Some("vpop"),
                    required_features: if want_f64 {
                        wgpu::Features::SHADER_F64
                    } else {
                        wgpu::Features::empty()
                    },
                    required_limits: adapter.limits(),
                    experimental_features: wgpu::ExperimentalFeatures::disabled(),
                    memory_hints: wgpu::MemoryHints::Performance,
                    trace: wgpu::Trace::Off,
                }))
                .map_err(|e| unavailable(format!("device: {e}")))?;
            let f = adapter.features();
            Ok(Gpu {
                device,
                queue,
                info: AdapterInfo {
                    name: info.name,
                    backend: format!("{:?}", info.backend),
                    device_type: format!("{:?}", info.device_type),
                    f64: f.contains(wgpu::Features::SHADER_F64),
                    f16: f.contains(wgpu::Features::SHADER_F16),
                },
                shader_f64: want_f64,
            })
        }

        /// Evaluates a model's generated functions at `n` points (f32): returns, per point,
        /// rhs (NS), Jacobian (NS²), ∂f/∂t (NS), outputs (NO), output gradient (NO·NS).
        pub fn eval_model_f32(
            &self,
            m: &ModelPrograms,
            states: &[f32],
            params: &[f32],
            times: &[f32],
        ) -> Result<Vec<f32>, BackendError> {
            self.eval_model(m, states, params, times)
        }

        /// As [`Gpu::eval_model_f32`], in f64 (a device opened with `Gpu::new(true)`).
        pub fn eval_model_f64(
            &self,
            m: &ModelPrograms,
            states: &[f64],
            params: &[f64],
            times: &[f64],
        ) -> Result<Vec<f64>, BackendError> {
            self.eval_model(m, states, params, times)
        }

        fn eval_model<T: Real>(
            &self,
            m: &ModelPrograms,
            states: &[T],
            params: &[T],
            times: &[T],
        ) -> Result<Vec<T>, BackendError> {
            use wgpu::util::DeviceExt;
            let fail = |m: String| BackendError::Failed(m);
            if T::PRECISION == Precision::F64 && !self.shader_f64 {
                return Err(fail(
                    "f64 evaluation needs a device opened with SHADER_F64 (Gpu::new(true))".into(),
                ));
            }
            let n = times.len();
            let (ns, no) = (m.n_states.max(1), m.n_outputs.max(1));
            let width = ns + ns * ns + ns + no + no * ns;
            let src = model_eval_source(m, T::PRECISION).map_err(fail)?;
            check_source(&src, T::PRECISION, m, "model evaluation shader").map_err(fail)?;
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("model_eval"),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("model_eval"),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(fail(format!("shader: {e}")));
            }
            let empty = [T::default()];
            let storage = |label: &str, data: &[T]| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::cast_slice(if data.is_empty() { &empty } else { data }),
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            };
            let (b_y, b_p, b_t) = (
                storage("states", states),
                storage("params", params),
                storage("times", times),
            );
            let bytes = (n * width * std::mem::size_of::<T>()).max(8) as u64;
            let b_out = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("results"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let meta = self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("meta"),
                    contents: bytemuck::cast_slice(&[n as u32, width as u32]),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: b_y.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: b_p.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: b_t.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: b_out.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: meta.as_entire_binding(),
                    },
                ],
            });
            let groups = (n as u32).div_ceil(64).max(1);
            let max_dim = self.device.limits().max_compute_workgroups_per_dimension;
            let (gx, gy) = if groups <= max_dim {
                (groups, 1)
            } else {
                let y = groups.div_ceil(max_dim);
                (groups.div_ceil(y), y)
            };
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
            self.queue.submit([enc.finish()]);
            let out: Vec<T> = self.read(&b_out)?;
            Ok(out[..n * width].to_vec())
        }

        /// Copies a storage buffer back to the host.
        pub fn read<T: bytemuck::Pod>(&self, src: &wgpu::Buffer) -> Result<Vec<T>, BackendError> {
            let fail = |m: String| BackendError::Failed(format!("wgpu: {m}"));
            let device = &self.device;
            let size = src.size();
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc =
                device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            enc.copy_buffer_to_buffer(src, 0, &staging, 0, size);
            self.queue.submit([enc.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| fail(format!("poll: {e}")))?;
            rx.recv()
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(format!("map: {e}")))?;
            let v: Vec<T> = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| fail(format!("map range: {e}")))?;
                bytemuck::cast_slice(&view).to_vec()
            };
            staging.unmap();
            Ok(v)
        }
    }
}

#[cfg(feature = "wgpu")]
mod integrate {
    use std::collections::HashMap;
    use std::sync::Arc;

    use sha2::{Digest, Sha256};
    use wgpu::util::DeviceExt;

    use super::kernel::{
        arm_carry, arm_data, arm_source_located, records_carry_f, records_source_located,
        KernelSizes, RECORDS_CARRY_U,
    };
    use super::{Gpu, Real, ShaderChecks};
    use crate::backend::gpu::{
        located_switches, pack_params, pack_scale, param_sets, prepare_chunk, records_data,
        steady_state_admin, step_samples, take_counters, take_records, take_values, Driver, Rows,
        INSTR_STRIDE,
    };
    use crate::backend::order::{records_in_order, sample_every, Round, SubjectOrder};
    use crate::backend::records::{Op, Program, RecordsOutcome};
    use crate::backend::{
        ArmPlan, Backend, BackendError, BackendInfo, ChunkInput, ChunkOutput, Precision,
    };
    use crate::model::CompiledModel;
    use crate::solver::SolverOptions;

    /// The kernel's uniform block, `struct Meta` in shaders/integrate.wgsl: twelve u32 (n,
    /// n_admin, n_fixed, n_times, first_dispatch, wants_extrema, max_steps, off_fixed,
    /// off_times, off_metrics, step_budget, stop_budget), then eight scalars of the kernel's
    /// precision (rtol, atol, dt, h_max, h_min_rel, end_time, trough, a pad): 80 bytes in f32,
    /// 112 in f64 (the first f64 at offset 48, aligned). `counts` are the u32s but max_steps,
    /// which comes from the solver with the scalars.
    fn meta_bytes<T: Real>(counts: [u32; 11], s: &SolverOptions, end: f64, trough: f64) -> Vec<u8> {
        let max_steps = s.max_steps.min(u64::from(u32::MAX)) as u32;
        let mut b = Vec::with_capacity(48 + 8 * std::mem::size_of::<T>());
        for (i, c) in counts.iter().enumerate() {
            if i == 6 {
                b.extend_from_slice(bytemuck::bytes_of(&max_steps));
            }
            b.extend_from_slice(bytemuck::bytes_of(c));
        }
        let reals = [
            s.rtol,
            s.atol,
            s.dt.unwrap_or(0.0),
            s.h_max.min(T::MAX),
            s.h_min_rel,
            end,
            trough,
            0.0,
        ];
        for r in reals {
            b.extend_from_slice(bytemuck::bytes_of(&T::of(r)));
        }
        b
    }

    /// Status the kernel gives a subject whose loops the shader compiler cut short.
    const CUT_SHORT: u32 = 254;
    /// Per-dispatch budgets on a hardware adapter: short dispatches keep desktop watchdogs
    /// quiet, and a subject that needs more is resumed by the next dispatch.
    const GPU_STEP_BUDGET: u32 = 1024;
    const GPU_STOP_BUDGET: u32 = 64;
    /// Loop iterations per invocation a software rasteriser allows (llvmpipe: 65 535 back
    /// edges, after which every loop exits); budgets keep well below.
    const SOFTWARE_LOOP_ITERATIONS: usize = 40_000;

    /// Steps and stopping points per dispatch and subject.
    fn budgets(
        software: bool,
        method: crate::solver::Method,
        z: &KernelSizes,
        ad: &crate::backend::gpu::ArmData,
        arm: &ArmPlan,
        ss_reach: usize,
    ) -> (u32, u32) {
        if !software {
            return (GPU_STEP_BUDGET, GPU_STOP_BUDGET);
        }
        // Upper estimates of loop iterations (see shaders/integrate.wgsl).
        let (ns, no, ny, nm) = (z.ns, z.no, z.ny(), z.nm);
        let stages = crate::backend::stepgen::stages(method) + 1;
        let searches = 2 * no
            + arm
                .metrics
                .iter()
                .filter(|s| matches!(s.metric.kind, crate::metrics::MetricKind::TimeAbove(_)))
                .count();
        let per_step = stages * (3 * ny + 2 * ns + 2 * no + ns * ns + no * ns)
            + ns * ns * ns
            + 6 * ny
            + searches * 62 * (ny + ns + no)
            + 8 * nm
            + ad.n_times.min(64) * (ny + ns + no);
        // A steady-state start: tail events join the administrations, and each interval of its
        // iterations looks for its inputs among 2(reach + 1) candidates per input.
        let n_events = ad.n_admin + if ss_reach > 0 { ss_reach + 2 } else { 0 };
        let window = if ss_reach > 0 {
            8 * (ss_reach + 1) * (ss_reach + 1) + 8 * (ny + ns)
        } else {
            0
        };
        let per_stop =
            4 * n_events + ad.n_fixed.min(64) + 8 * nm + 4 * (ny + ns + no) + 16 + window;
        let fixed_cost = ad.n_times * no + 4 * (ny + ns + 2 * nm) + ad.n_admin + 64;
        let avail = SOFTWARE_LOOP_ITERATIONS.saturating_sub(fixed_cost).max(1);
        let stops = (avail / 4 / per_stop).clamp(1, 64);
        let steps = ((avail - (stops * per_stop).min(avail)) / per_step).max(1);
        (steps as u32, stops as u32)
    }

    /// The most intervals any subject's steady-state dose reaches back (its lag plus duration
    /// over the interval, plus one) among subjects `s0..s0 + n` of a chunk.
    fn steady_state_reach(
        model: &CompiledModel,
        arm: &ArmPlan,
        input: &ChunkInput<'_>,
        rows: &crate::backend::gpu::Rows,
    ) -> usize {
        let Some(line) = arm.regimen.lines.iter().find(|l| l.steady_state) else {
            return 0;
        };
        let mut p = vec![0.0; input.params.len()];
        (0..rows.len())
            .map(|j| {
                let i = rows.at(j);
                for (k, col) in input.params.iter().enumerate() {
                    p[k] = col[i];
                }
                let scale = input.amount_scale.map_or(1.0, |s| s[i]);
                let d = model.bind(&p).state_dosing()[line.state];
                line.resolve(scale, &d).map_or(1, |r| {
                    let dur = if r.bolus { 0.0 } else { r.duration };
                    ((line.start + r.lag + dur) / line.interval).ceil().min(1e6) as usize + 1
                })
            })
            .max()
            .unwrap_or(1)
    }

    /// Steps and instructions (or steady-state rounds) per dispatch and subject of the records
    /// kernel.
    fn records_budgets(
        software: bool,
        method: crate::solver::Method,
        z: &KernelSizes,
        programs: &[&Program],
    ) -> (u32, u32) {
        if !software {
            return (GPU_STEP_BUDGET, GPU_STOP_BUDGET);
        }
        let (ns, no, ny) = (z.ns, z.no, z.ny());
        let stages = crate::backend::stepgen::stages(method) + 1;
        let per_step =
            stages * (3 * ny + 2 * ns + 2 * no + ns * ns + no * ns) + ns * ns * ns + 6 * ny;
        let window = programs
            .iter()
            .flat_map(|p| &p.ops)
            .map(|op| op.kernel_instructions().saturating_sub(2))
            .max()
            .unwrap_or(0);
        let per_round = 4 * window + 12 * (ny + ns) + z.np + no + 32;
        let fixed_cost = 8 * (ny + ns) + z.np + 64;
        let avail = SOFTWARE_LOOP_ITERATIONS.saturating_sub(fixed_cost).max(1);
        let rounds = (avail / 4 / per_round).clamp(1, 64);
        let steps = ((avail - (rounds * per_round).min(avail)) / per_step).max(1);
        (steps as u32, rounds as u32)
    }

    /// Every binding the records kernel uses (shaders/records_driver.wgsl): parameter sets,
    /// program, carry, counters, outputs, `Meta`, suspended count, index.
    fn records_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
        let buffer = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("records"),
            entries: &[
                buffer(0, storage(true)),
                buffer(2, storage(true)),
                buffer(3, storage(false)),
                buffer(4, storage(false)),
                buffer(5, storage(false)),
                buffer(7, wgpu::BufferBindingType::Uniform),
                buffer(8, storage(false)),
                buffer(9, storage(true)),
            ],
        })
    }

    /// The WGSL backend: one invocation per subject on a wgpu adapter, in f32, or in f64 on
    /// an adapter with `SHADER_F64`.
    pub struct WgpuBackend {
        gpu: Gpu,
        model: Arc<CompiledModel>,
        precision: Precision,
        pipelines: HashMap<[u8; 32], (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
        /// The checks compiled into the kernels.
        checks: ShaderChecks,
        /// Whether the kernels' loops over the model's sizes and the metrics are unrolled
        /// ([`super::UNROLLED_SIZES`], `codegen::unroll_loops`), so that their per-subject
        /// arrays are indexed by constants.
        unroll: bool,
        /// Overrides the per-dispatch budgets (steps, stopping points).
        budget_override: Option<(u32, u32)>,
        /// The software adapter's budgets are divided by this: doubled each time a dispatch
        /// ran past the adapter's loop limit (see [`WgpuBackend::cut_budget`]).
        budget_divisor: u32,
        /// The order subjects are handed to invocations in (`crate::backend::order`, shared
        /// with the siblings); `None`: as sampled.
        order: Option<Arc<SubjectOrder>>,
    }

    fn failed(m: impl std::fmt::Display) -> BackendError {
        BackendError::Failed(format!("wgpu: {m}"))
    }

    impl WgpuBackend {
        /// On the high-performance adapter, in `precision`; f64 needs an adapter with
        /// `SHADER_F64` and is refused with a clear error (never a panic) without one.
        pub fn new(
            model: Arc<CompiledModel>,
            precision: Precision,
        ) -> Result<WgpuBackend, BackendError> {
            let gpu = Gpu::new(precision == Precision::F64)?;
            WgpuBackend::with_gpu(gpu, model, precision)
        }

        /// On a device already opened (with `SHADER_F64` for f64).
        pub fn with_gpu(
            gpu: Gpu,
            model: Arc<CompiledModel>,
            precision: Precision,
        ) -> Result<WgpuBackend, BackendError> {
            if precision == Precision::F64 && !gpu.shader_f64 {
                return Err(BackendError::Unavailable(
                    "wgpu",
                    format!(
                        "the device of adapter '{}' was opened without SHADER_F64",
                        gpu.info.name
                    ),
                ));
            }
            let checks = ShaderChecks::from_env().map_err(failed)?;
            let unroll = super::unroll_from_env().map_err(failed)?;
            let order = super::order_from_env()
                .map_err(failed)?
                .then(|| Arc::new(SubjectOrder::new()));
            Ok(WgpuBackend {
                gpu,
                model,
                precision,
                pipelines: HashMap::new(),
                checks,
                unroll,
                budget_override: None,
                budget_divisor: 1,
                order,
            })
        }

        /// Subjects handed to invocations in the order they were sampled in (for tests that
        /// results do not depend on the order).
        pub fn in_natural_order(mut self) -> WgpuBackend {
            self.order = None;
            self
        }

        /// The budgets of a batch: the override, or the estimate divided by the divisor.
        fn batch_budget(&self, estimate: (u32, u32)) -> (u32, u32) {
            self.budget_override.unwrap_or_else(|| {
                let d = self.budget_divisor;
                ((estimate.0 / d).max(1), (estimate.1 / d).max(1))
            })
        }

        /// A batch whose dispatches ran past the software adapter's loop limit (a subject with
        /// `CUT_SHORT`, which the kernel gives every subject of an invocation group that reached
        /// it): Ok after halving the budgets of this and later batches, so that the batch can
        /// be run again from its start; an error when the budgets were set explicitly or can
        /// shrink no further. `subject` names the subject for the message.
        fn cut_budget(&mut self, budget: (u32, u32), subject: String) -> Result<(), BackendError> {
            if self.budget_override.is_some() || budget == (1, 1) || self.budget_divisor >= 1 << 16
            {
                return Err(failed(format!(
                    "adapter '{}' cut the kernel's loops short ({subject}) with a budget of {} \
                     steps and {} stopping points per dispatch: its loop limit is below that",
                    self.gpu.info.name, budget.0, budget.1
                )));
            }
            self.budget_divisor *= 2;
            Ok(())
        }

        /// Steps and stopping points each subject may do per dispatch (at least 1 each);
        /// `None` restores the defaults for the adapter.
        pub fn set_dispatch_budget(&mut self, budget: Option<(u32, u32)>) {
            self.budget_override = budget.map(|(a, b)| (a.max(1), b.max(1)));
        }

        /// The checks compiled into later kernels (`VPOP_WGPU_CHECKS`'s by default).
        pub fn set_shader_checks(&mut self, checks: ShaderChecks) {
            if checks != self.checks {
                self.checks = checks;
                self.pipelines.clear();
            }
        }

        /// Whether later kernels have their loops over the model's sizes and the metrics
        /// unrolled (the default; `VPOP_WGSL_UNROLL=0` keeps them).
        pub fn set_unroll_loops(&mut self, unroll: bool) {
            self.unroll = unroll;
        }

        pub fn adapter(&self) -> &super::AdapterInfo {
            &self.gpu.info
        }

        /// The compiled kernel for a source and its bind group layout, cached by the source's
        /// SHA-256 and whether its loops are unrolled (`codegen::unroll_loops`, done on a miss
        /// only). The source is checked with naga first, so that an error in generated model
        /// code names the model statement it came from. `explicit`: the layout of every
        /// binding the records kernel has, used or not (else derived from the shader).
        fn pipeline(
            &mut self,
            src: &str,
            explicit: bool,
            unroll: bool,
        ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout), BackendError> {
            let key: [u8; 32] = Sha256::new()
                .chain_update(src.as_bytes())
                .chain_update([u8::from(unroll)])
                .finalize()
                .into();
            if let Some(p) = self.pipelines.get(&key) {
                return Ok(p.clone());
            }
            // Unrolled once, when the kernel is first compiled.
            let unrolled;
            let src = if unroll {
                unrolled = super::codegen::unroll_loops(src, &super::UNROLLED_SIZES, &["NM"]);
                &unrolled
            } else {
                src
            };
            let m = crate::backend::wsparse::kernel_programs(&self.model.programs);
            super::check_source(src, self.precision, &m, "wgpu kernel")
                .map_err(BackendError::Failed)?;
            let device = &self.gpu.device;
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some("integrate"),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            };
            // SAFETY: wgpu's checks guard against infinite loops and out-of-bounds indices.
            // Every loop of the kernels ends by a step or stop budget, an iteration cap or a
            // bounded index, and every index stays within its array or the buffers the host
            // sized for the batch (`ShaderChecks`; the checked and unchecked kernels give
            // bit-identical results: wgpu_integrate `runtime_checks_change_nothing`).
            let module =
                unsafe { device.create_shader_module_trusted(desc, self.checks.runtime_checks()) };
            let layout = explicit.then(|| records_layout(device));
            let pipeline_layout = layout.as_ref().map(|l| {
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("records"),
                    bind_group_layouts: &[Some(l)],
                    immediate_size: 0,
                })
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("integrate"),
                layout: pipeline_layout.as_ref(),
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(failed(format!("kernel does not compile: {e}")));
            }
            let layout = layout.unwrap_or_else(|| pipeline.get_bind_group_layout(0));
            self.pipelines
                .insert(key, (pipeline.clone(), layout.clone()));
            Ok((pipeline, layout))
        }

        /// The largest storage buffer a kernel can bind, in bytes.
        fn max_binding(&self) -> u64 {
            let lim = self.gpu.device.limits();
            lim.max_storage_buffer_binding_size
                .min(lim.max_buffer_size)
                .max(4)
        }

        /// Subjects per dispatch within the adapter's buffer limits.
        fn batch_size(
            &self,
            z: &KernelSizes,
            param_columns: usize,
            n_times: usize,
            bytes: u64,
            nsw: usize,
        ) -> usize {
            let max_binding = self.max_binding();
            let (cw, cu) = arm_carry(z, true, nsw);
            let widest = [param_columns, 1, cw, cu, z.nm, z.no * n_times]
                .into_iter()
                .max()
                .unwrap_or(1) as u64;
            let by_limit = max_binding / (bytes * widest);
            // 65 535 workgroups of 64 per dimension, two dimensions.
            by_limit.clamp(1, 1 << 22) as usize
        }

        /// Dispatches `pipeline` over `n` subjects until none is suspended: `buffers` at their
        /// bindings, binding 7 the `Meta` block `meta(first dispatch)` gives, 8 the count of
        /// suspended subjects.
        fn dispatch(
            &self,
            pipeline: &wgpu::ComputePipeline,
            layout: &wgpu::BindGroupLayout,
            buffers: &[(u32, &wgpu::Buffer)],
            n: usize,
            meta: impl Fn(bool) -> Vec<u8>,
        ) -> Result<(), BackendError> {
            let device = &self.gpu.device;
            let queue = &self.gpu.queue;
            let b_pending = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pending"),
                size: 4,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let groups = (n as u32).div_ceil(64).max(1);
            let max_dim = device.limits().max_compute_workgroups_per_dimension;
            let (gx, gy) = if groups <= max_dim {
                (groups, 1)
            } else {
                let y = groups.div_ceil(max_dim);
                (groups.div_ceil(y), y)
            };
            let mut first = true;
            loop {
                let b_meta = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("meta"),
                    contents: &meta(first),
                    usage: wgpu::BufferUsages::UNIFORM,
                });
                let entries: Vec<wgpu::BindGroupEntry> = buffers
                    .iter()
                    .copied()
                    .chain([(7, &b_meta), (8, &b_pending)])
                    .map(|(binding, b)| wgpu::BindGroupEntry {
                        binding,
                        resource: b.as_entire_binding(),
                    })
                    .collect();
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout,
                    entries: &entries,
                });
                queue.write_buffer(&b_pending, 0, bytemuck::bytes_of(&0u32));
                let mut enc =
                    device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(gx, gy, 1);
                }
                queue.submit([enc.finish()]);
                first = false;
                let pending: Vec<u32> = self.gpu.read(&b_pending)?;
                if pending[0] == 0 {
                    return Ok(());
                }
            }
        }

        /// Programs split into batches whose buffers fit the adapter's limits.
        fn records_batches<'p>(
            &self,
            programs: &'p [&'p Program],
            z: &KernelSizes,
            bytes: u64,
            nsw: usize,
        ) -> Vec<&'p [&'p Program]> {
            let max_values = (self.max_binding() / bytes) as usize;
            let per_subject = (records_carry_f(z, nsw) * bytes as usize).max(RECORDS_CARRY_U * 4)
                / bytes as usize;
            let (mut batches, mut start) = (Vec::new(), 0);
            let (mut prog, mut params, mut rows) = (0usize, 0usize, 0usize);
            for (i, p) in programs.iter().enumerate() {
                let instrs: usize = p.ops.iter().map(Op::kernel_instructions).sum();
                let (dp, dq, dr) = (
                    instrs * INSTR_STRIDE,
                    p.params.len() * z.np,
                    p.n_records * z.no,
                );
                let subjects = i - start + 1;
                let full = prog + dp > max_values
                    || params + dq > max_values
                    || rows + dr > max_values
                    || subjects * per_subject > max_values
                    || subjects > 1 << 22;
                if full && i > start {
                    batches.push(&programs[start..i]);
                    start = i;
                    (prog, params, rows) = (0, 0, 0);
                }
                prog += dp;
                params += dq;
                rows += dr;
            }
            batches.push(&programs[start..]);
            batches
        }

        fn run_records_batch<T: Real>(
            &mut self,
            (pipeline, layout): &(wgpu::ComputePipeline, wgpu::BindGroupLayout),
            programs: &[&Program],
            z: &KernelSizes,
            solver: &SolverOptions,
        ) -> Result<Vec<RecordsOutcome>, BackendError> {
            let device = &self.gpu.device;
            let n = programs.len();
            let data = records_data(programs, z.np, &|t| T::of(t).to()).map_err(failed)?;
            let init = |label: &str, bytes: &[u8]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let cast = |v: &[f64]| -> Vec<T> { v.iter().map(|x| T::of(*x)).collect() };
            let b_params = init("params", bytemuck::cast_slice(&cast(&data.params)));
            let b_prog = init("program", bytemuck::cast_slice(&cast(&data.prog)));
            let b_index = init("index", bytemuck::cast_slice(&data.index));
            let real = std::mem::size_of::<T>();
            let rw = |label: &str, words: usize, bytes: usize| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: (bytes * words.max(1)) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            };
            let nsw = located_switches(&self.model, solver).map_or(0, |s| s.len());
            let b_carry = rw("carry", records_carry_f(z, nsw) * n, real);
            let b_carry_u = rw("carry_u", RECORDS_CARRY_U * n, 4);
            // Every record's outputs start as NaN, what a failed subject's records after its
            // failure keep (the kernel writes only the records it reaches).
            let nan = vec![T::of(f64::NAN); (z.no * data.rows).max(1)];
            let b_out = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("outputs"),
                contents: bytemuck::cast_slice(&nan),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            });
            let software = self.gpu.info.device_type == "Cpu";
            let estimate = records_budgets(software, solver.method, z, programs);
            let s = solver;
            let buffers = [
                (0, &b_params),
                (2, &b_prog),
                (3, &b_carry),
                (4, &b_carry_u),
                (5, &b_out),
                (9, &b_index),
            ];
            let counters = loop {
                let (step_budget, stop_budget) = self.batch_budget(estimate);
                self.dispatch(pipeline, layout, &buffers, n, |first| {
                    meta_bytes::<T>(
                        [
                            n as u32,
                            0,
                            0,
                            0,
                            first as u32,
                            0,
                            0,
                            0,
                            0,
                            step_budget,
                            stop_budget,
                        ],
                        s,
                        0.0,
                        0.0,
                    )
                })?;
                let counters: Vec<u32> = self.gpu.read(&b_carry_u)?;
                match counters
                    .chunks_exact(RECORDS_CARRY_U)
                    .position(|c| c[0] == CUT_SHORT)
                {
                    None => break counters,
                    Some(i) => self.cut_budget(
                        (step_budget, stop_budget),
                        format!("subject {i} of a batch"),
                    )?,
                }
            };
            let outputs: Vec<T> = self.gpu.read(&b_out)?;
            Ok(take_records(
                programs,
                &data,
                &outputs,
                &counters,
                RECORDS_CARRY_U,
                self.model.programs.n_outputs,
                T::to,
            ))
        }

        #[allow(clippy::too_many_arguments)]
        fn run_batch<T: Real>(
            &mut self,
            (pipeline, layout): &(wgpu::ComputePipeline, wgpu::BindGroupLayout),
            arm: &ArmPlan,
            ad: &crate::backend::gpu::ArmData,
            z: &KernelSizes,
            input: &ChunkInput<'_>,
            own: &[crate::backend::gpu::OwnStops],
            rows: &Rows,
            out: &mut ChunkOutput,
        ) -> Result<Vec<(u32, u32)>, BackendError> {
            let device = &self.gpu.device;
            let nt = ad.n_times;
            let n = rows.len();
            let params = pack_params(input, arm, z.np, rows, own, T::of);
            let scale: Vec<T> = pack_scale(input, rows, T::of);
            let init = |label: &str, bytes: &[u8]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let b_params = init("params", bytemuck::cast_slice(&params));
            let b_scale = init("scale", bytemuck::cast_slice(&scale));
            let arm_v: Vec<T> = ad.data.iter().map(|v| T::of(*v)).collect();
            let b_arm = init("arm", bytemuck::cast_slice(&arm_v));
            let real = std::mem::size_of::<T>();
            let rw = |label: &str, words: usize, bytes: usize| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: (bytes * words.max(1)) as u64,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                })
            };
            let s = &arm.solver;
            let ss = steady_state_admin(arm);
            let nsw = located_switches(&self.model, s).map_or(0, |s| s.len());
            let (cw, cu) = arm_carry(z, ss.is_some(), nsw);
            let b_carry = rw("carry", cw * n, real);
            let b_carry_u = rw("carry_u", cu * n, 4);
            let b_metrics = rw("metrics", z.nm * n, real);
            let b_prof = rw("profiles", z.no * n * nt, real);
            let software = self.gpu.info.device_type == "Cpu";
            let reach = match (software, ss) {
                (true, Some(_)) => steady_state_reach(&self.model, arm, input, rows),
                _ => 0,
            };
            let estimate = budgets(software, s.method, z, ad, arm, reach);
            let t0 = std::time::Instant::now();
            let buffers = [
                &b_params, &b_scale, &b_arm, &b_carry, &b_carry_u, &b_metrics, &b_prof,
            ];
            let buffers: Vec<(u32, &wgpu::Buffer)> = (0..).zip(buffers).collect();
            let counters = loop {
                let (step_budget, stop_budget) = self.batch_budget(estimate);
                self.dispatch(pipeline, layout, &buffers, n, |first| {
                    meta_bytes::<T>(
                        [
                            n as u32,
                            ad.n_admin as u32,
                            ad.n_fixed as u32,
                            nt as u32,
                            first as u32,
                            ad.wants_extrema as u32,
                            ad.off_fixed as u32,
                            ad.off_times as u32,
                            ad.off_metrics as u32,
                            step_budget,
                            stop_budget,
                        ],
                        s,
                        arm.end,
                        ad.trough,
                    )
                })?;
                let counters: Vec<u32> = self.gpu.read(&b_carry_u)?;
                match counters.chunks_exact(cu).position(|c| c[0] == CUT_SHORT) {
                    None => break counters,
                    Some(i) => self.cut_budget(
                        (step_budget, stop_budget),
                        format!("subject {}", input.first_subject + rows.at(i) as u64),
                    )?,
                }
            };
            out.kernel_time += t0.elapsed();
            let metrics: Vec<T> = self.gpu.read(&b_metrics)?;
            take_counters(out, &counters, cu, rows);
            let prof: Vec<T> = if nt > 0 {
                self.gpu.read(&b_prof)?
            } else {
                Vec::new()
            };
            take_values(out, &metrics, &prof, rows, T::to);
            // Some invocations' steps, for the subject order.
            Ok(match self.order {
                Some(_) => step_samples(&counters, cu, rows, sample_every(n)),
                None => Vec::new(),
            })
        }
    }

    impl Backend for WgpuBackend {
        fn info(&self) -> BackendInfo {
            BackendInfo {
                name: "wgpu",
                device: format!(
                    "{} ({}, {}){}",
                    self.gpu.info.name,
                    self.gpu.info.backend,
                    self.gpu.info.device_type,
                    match (self.checks, self.unroll) {
                        (ShaderChecks::Checked, true) => String::new(),
                        (ShaderChecks::Checked, false) => " [loops kept]".to_string(),
                        (c, true) => format!(" [{} kernels]", c.label()),
                        (c, false) => format!(" [{} kernels, loops kept]", c.label()),
                    }
                ),
                precision: self.precision,
            }
        }

        fn run_chunk(
            &mut self,
            arm: &ArmPlan,
            input: &ChunkInput<'_>,
            out: &mut ChunkOutput,
        ) -> Result<(), BackendError> {
            let model = self.model.clone();
            let progs = &model.programs;
            let n = input.n;
            let hint = "use rtol ≥ 1e-7, or precision = \"f64\" (on an adapter with f64 in `vpop \
                        devices`, or backend = \"cpu\")";
            let f32_kernel = self.precision == Precision::F32;
            prepare_chunk(progs, arm, input, f32_kernel, hint, out).map_err(failed)?;
            if n == 0 {
                return Ok(());
            }
            let p = self.precision;
            let switches = located_switches(&model, &arm.solver);
            let src = arm_source_located(
                progs,
                arm.solver.method,
                &arm.metrics,
                Driver::of_arm(arm),
                p,
                switches,
            )
            .map_err(failed)?;
            let pipeline = self.pipeline(&src, false, self.unroll)?;
            let jumps = crate::backend::gpu::arm_jumps(progs, arm, p).map_err(failed)?;
            let ad = arm_data(arm, &jumps);
            let own = crate::backend::gpu::own_stops(progs, arm, input, p).map_err(failed)?;
            let z = KernelSizes::new(progs, &arm.metrics);
            let bytes = match p {
                Precision::F32 => 4,
                Precision::F64 => 8,
            };
            let columns =
                param_sets(arm) * z.np + crate::backend::gpu::own_columns(&own, &Rows::Range(0..n));
            let nsw = switches.map_or(0, |s| s.len());
            let batch = self.batch_size(&z, columns, ad.n_times, bytes, nsw);
            // Batch by batch: in the order learnt for the arm (planned, for the rest of the
            // call, at the first batch that has one), else as sampled; each batch learnt from.
            // With nothing learnt, a large enough call's first batch is a pilot, as on CUDA.
            let mut ordered: Option<(usize, Vec<u32>)> = None;
            let mut piloted = false;
            let mut s0 = 0;
            while s0 < n {
                let mut len = batch.min(n - s0);
                if let (None, Some(o)) = (&ordered, &self.order) {
                    match o.round(&arm.name, input, s0..n, !piloted) {
                        Round::Ordered(v) => ordered = Some((s0, v)),
                        Round::AsSampled { rows, pilot } => {
                            piloted |= pilot;
                            len = len.min(rows.len());
                        }
                    }
                }
                let rows = match &ordered {
                    Some((from, v)) => Rows::List(v[s0 - from..s0 - from + len].to_vec()),
                    None => Rows::Range(s0..s0 + len),
                };
                let samples = match p {
                    Precision::F32 => {
                        self.run_batch::<f32>(&pipeline, arm, &ad, &z, input, &own, &rows, out)?
                    }
                    Precision::F64 => {
                        self.run_batch::<f64>(&pipeline, arm, &ad, &z, input, &own, &rows, out)?
                    }
                };
                if let Some(o) = &self.order {
                    o.learn(&arm.name, input, &samples);
                }
                s0 += len;
            }
            Ok(())
        }

        fn run_records(
            &mut self,
            programs: &[&Program],
            solver: &SolverOptions,
        ) -> Result<Vec<RecordsOutcome>, BackendError> {
            if programs.is_empty() {
                return Ok(Vec::new());
            }
            let model = self.model.clone();
            let progs = &model.programs;
            let p = self.precision;
            p.check_rtol(solver)
                .map_err(|e| failed(format!("{e}; use rtol ≥ 1e-7, or precision = \"f64\"")))?;
            let switches = located_switches(&model, solver);
            let nsw = switches.map_or(0, |s| s.len());
            let src = records_source_located(progs, solver.method, p, switches).map_err(failed)?;
            let pipeline = self.pipeline(&src, true, self.unroll)?;
            let z = KernelSizes::new(progs, &[]);
            let bytes = match p {
                Precision::F32 => 4,
                Precision::F64 => 8,
            };
            let order = self.order.clone();
            let mut run = |programs: &[&Program]| {
                let mut outcomes = Vec::with_capacity(programs.len());
                for batch in self.records_batches(programs, &z, bytes, nsw) {
                    let part = match p {
                        Precision::F32 => {
                            self.run_records_batch::<f32>(&pipeline, batch, &z, solver)?
                        }
                        Precision::F64 => {
                            self.run_records_batch::<f64>(&pipeline, batch, &z, solver)?
                        }
                    };
                    outcomes.extend(part);
                }
                Ok(outcomes)
            };
            // In the order of the programs' cost (`VPOP_WGPU_ORDER=natural`: as given).
            match order {
                Some(o) => records_in_order(&o, programs, run),
                None => run(programs),
            }
        }

        /// 2^20 subjects on a hardware adapter; chunk by chunk on a software one (no gain
        /// there, and less memory).
        fn preferred_batch(&self) -> usize {
            if self.gpu.info.device_type == "Cpu" {
                1
            } else {
                1 << 20
            }
        }

        /// Another instance on the same device and queue, with buffers and pipelines of its
        /// own and the same settings (one host thread still drives wgpu by default: the gain
        /// of two has not been measured on a hardware adapter).
        fn sibling(&self) -> Option<Result<Box<dyn Backend>, BackendError>> {
            Some(Ok(Box::new(WgpuBackend {
                gpu: Gpu {
                    device: self.gpu.device.clone(),
                    queue: self.gpu.queue.clone(),
                    info: self.gpu.info.clone(),
                    shader_f64: self.gpu.shader_f64,
                },
                model: self.model.clone(),
                precision: self.precision,
                pipelines: HashMap::new(),
                checks: self.checks,
                unroll: self.unroll,
                budget_override: self.budget_override,
                budget_divisor: self.budget_divisor,
                order: self.order.clone(),
            })))
        }
    }
}

#[cfg(feature = "wgpu")]
pub use integrate::WgpuBackend;

#[cfg(feature = "wgpu")]
pub use runtime::{list_adapters, Gpu};

/// Without the `wgpu` feature there are no adapters.
#[cfg(not(feature = "wgpu"))]
pub fn list_adapters() -> Vec<AdapterInfo> {
    Vec::new()
}
