//! The WGSL backend: model code generation and the wgpu runtime.
//!
//! Every wgpu call of the crate lives in this module (its API moves between versions). The
//! integrator kernels are not written yet; what exists is the code generator, the model
//! evaluation kernel that checks generated code against the CPU evaluator, and adapter listing.

pub mod codegen;

use crate::backend::Precision;
use crate::model::ModelPrograms;

/// The model evaluation kernel template.
pub const MODEL_EVAL_WGSL: &str = include_str!("../../../shaders/model_eval.wgsl");

/// The full WGSL source of the model evaluation kernel for a model.
pub fn model_eval_source(m: &ModelPrograms, p: Precision) -> Result<String, String> {
    let sizes = codegen::sizes(m);
    let funcs = codegen::model_functions(m, p);
    let (ns, np) = (m.n_states.max(1).to_string(), m.n_params.max(1).to_string());
    let body = codegen::fill(
        MODEL_EVAL_WGSL,
        &[
            ("SIZES", &sizes),
            ("T", codegen::scalar(p)),
            ("MODEL", &funcs),
            ("NS", &ns),
            ("NP", &np),
        ],
    )?;
    Ok(body)
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
                    "adapter '{}' has no SHADER_F64",
                    info.name
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
            use wgpu::util::DeviceExt;
            let fail = |m: String| BackendError::Failed(m);
            let n = times.len();
            let (ns, no) = (m.n_states.max(1), m.n_outputs.max(1));
            let width = ns + ns * ns + ns + no + no * ns;
            let src = model_eval_source(m, Precision::F32).map_err(fail)?;
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
            let storage = |label: &str, data: &[f32]| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::cast_slice(if data.is_empty() {
                            &[0.0f32]
                        } else {
                            data
                        }),
                        usage: wgpu::BufferUsages::STORAGE,
                    })
            };
            let (b_y, b_p, b_t) = (
                storage("states", states),
                storage("params", params),
                storage("times", times),
            );
            let bytes = (n * width * 4).max(4) as u64;
            let b_out = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("results"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
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
            enc.copy_buffer_to_buffer(&b_out, 0, &staging, 0, bytes);
            self.queue.submit([enc.finish()]);
            let (tx, rx) = std::sync::mpsc::channel();
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| fail(format!("poll: {e}")))?;
            rx.recv()
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(format!("map: {e}")))?;
            let out: Vec<f32> = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| fail(format!("map range: {e}")))?;
                bytemuck::cast_slice(&view).to_vec()
            };
            staging.unmap();
            Ok(out[..n * width].to_vec())
        }
    }
}

#[cfg(feature = "wgpu")]
pub use runtime::{list_adapters, Gpu};

/// Without the `wgpu` feature there are no adapters.
#[cfg(not(feature = "wgpu"))]
pub fn list_adapters() -> Vec<AdapterInfo> {
    Vec::new()
}
