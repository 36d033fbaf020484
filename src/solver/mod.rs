//! ODE integrators: the tableau table (the single source of every coefficient for every backend),
//! step-size control and the CPU f64 reference integrators.
//!
//! This module knows nothing of models, doses or metrics: it integrates an [`OdeSystem`] over one
//! segment between stopping points and reports every accepted step, with its dense output, to a
//! [`StepObserver`].

use serde::{Deserialize, Serialize};

/// A first-order ODE system y' = f(t, y). Methods take `&mut self` so that implementations can
/// keep scratch space (derived quantities, evaluation registers) without allocation.
pub trait OdeSystem {
    fn dim(&self) -> usize;
    /// dy = f(t, y)
    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]);
    /// Row-major Jacobian, `jac[i * dim + j] = ∂f_i/∂y_j`.
    fn jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]);
    /// ∂f/∂t.
    fn dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]);
    /// Where the Jacobian can be nonzero (row-major, `dim × dim`), when that is known (a
    /// model's symbolic derivatives): large systems are then factorised along it
    /// ([`sparse_lu`]). None: anywhere.
    fn jacobian_pattern(&self) -> Option<&[bool]> {
        None
    }
    /// The Jacobian's entries where [`OdeSystem::jacobian_pattern`] is true, row-major, into
    /// `vals`: without computing the others. False (nothing written) where the system cannot.
    fn jacobian_nonzeros(&mut self, _t: f64, _y: &[f64], _vals: &mut [f64]) -> bool {
        false
    }
    /// How many switches the system has: step functions of the states across which it
    /// jumps, which it can hold at a value over a step ([`OdeSystem::set_modes`]) and
    /// evaluate apart ([`OdeSystem::switch_values`]) so that the integration locates where
    /// they change (`events = "locate"`). 0: none.
    fn switches(&self) -> usize {
        0
    }
    /// The switches' values at (t, y), evaluated.
    fn switch_values(&mut self, _t: f64, _y: &[f64], _out: &mut [f64]) {}
    /// The switches' arguments at (t, y): continuous values whose sign changes where the
    /// switches do (NaN where there is none; the change is then bisected).
    fn switch_args(&mut self, _t: f64, _y: &[f64], out: &mut [f64]) {
        out.fill(f64::NAN);
    }
    /// [`OdeSystem::switch_values`] and [`OdeSystem::switch_args`] at one point (what a
    /// located change's narrowing reads): the same values, in one evaluation where the system
    /// can.
    fn switch_values_and_args(&mut self, t: f64, y: &[f64], values: &mut [f64], args: &mut [f64]) {
        self.switch_values(t, y, values);
        self.switch_args(t, y, args);
    }
    /// How many of the first components of y the switches read (the rest need not be
    /// interpolated to evaluate them): all of them unless the system knows better.
    fn switch_reach(&self) -> usize {
        self.dim()
    }
    /// Holds the switches at `modes` in every later evaluation; `None`: evaluates them.
    fn set_modes(&mut self, _modes: Option<&[f64]>) {}
    /// What the system adds to the integration's time before it evaluates itself (the
    /// interval of a steady state's iterations, integrated from 0, is to the model the one
    /// before the dose): the left limit of a segment's end is taken on that time's scale too.
    fn time_shift(&self) -> f64 {
        0.0
    }
}

/// Changes of the switches located in one integration call before they are no longer held
/// (a model that slides along a switch, changing it at every step, is then integrated with
/// its switches evaluated, as with `events = "cross"`); the kernels' alike.
pub const MAX_EVENTS: u32 = 1000;

/// What the adaptive methods do at a jump of the right-hand side with the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Events {
    /// Cross it by shortening their steps until the step that holds it passes the error test.
    #[default]
    Cross,
    /// Hold each switch at its value over a step, locate where it changes on the step's dense
    /// output, and end the step there (the CPU reference and the CUDA kernels).
    Locate,
}

impl Events {
    pub fn name(self) -> &'static str {
        match self {
            Events::Cross => "cross",
            Events::Locate => "locate",
        }
    }
    pub fn parse(s: &str) -> Option<Events> {
        match s {
            "cross" => Some(Events::Cross),
            "locate" => Some(Events::Locate),
            _ => None,
        }
    }
}

/// Integration methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Classical 4th-order Runge–Kutta, fixed step.
    Rk4,
    /// Dormand–Prince 5(4), adaptive, FSAL, 4th-order dense output.
    Dopri5,
    /// Tsitouras 5(4), adaptive, FSAL, 4th-order dense output.
    Tsit5,
    /// Rosenbrock 2(3) (Shampine & Reichelt), L-stable, for stiff problems.
    Rosenbrock23,
    /// Rodas4 (Hairer & Wanner), stiffly accurate, for stiff problems.
    Rodas4,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Rk4,
        Method::Dopri5,
        Method::Tsit5,
        Method::Rosenbrock23,
        Method::Rodas4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Rk4 => "rk4",
            Method::Dopri5 => "dopri5",
            Method::Tsit5 => "tsit5",
            Method::Rosenbrock23 => "rosenbrock23",
            Method::Rodas4 => "rodas4",
        }
    }
    pub fn from_name(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
    /// [`Method::from_name`], or the message every input format gives for an unknown name.
    pub fn parse(s: &str) -> Result<Method, String> {
        Method::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            let hint = crate::diag::did_you_mean(s, names.iter().copied());
            format!("unknown method '{s}' ({}){hint}", names.join(", "))
        })
    }
    pub fn is_adaptive(self) -> bool {
        !matches!(self, Method::Rk4)
    }
    pub fn is_rosenbrock(self) -> bool {
        matches!(self, Method::Rosenbrock23 | Method::Rodas4)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a subject's integration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    MaxSteps = 1,
    StepTooSmall = 2,
    NonFinite = 3,
    /// A steady-state dose whose steady state was not found: the iterations over its interval
    /// (or a steady-state infusion's spans) did not converge within their limits. A dosed
    /// state that nothing eliminates, or a model that grows without bound, has none.
    NoSteadyState = 4,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::MaxSteps => "max_steps",
            Status::StepTooSmall => "step_too_small",
            Status::NonFinite => "non_finite",
            Status::NoSteadyState => "no_steady_state",
        }
    }
    pub fn from_code(c: u8) -> Option<Status> {
        Some(match c {
            0 => Status::Ok,
            1 => Status::MaxSteps,
            2 => Status::StepTooSmall,
            3 => Status::NonFinite,
            4 => Status::NoSteadyState,
            _ => return None,
        })
    }
}

/// The rules for the settings a user gives (trial specs, `vpop simulate` files and flags,
/// `vpop bench`): each names what is wrong, and the caller says where.
pub mod check {
    /// A relative tolerance in (0, 1).
    pub fn rtol(x: f64) -> Result<(), &'static str> {
        if x > 0.0 && x < 1.0 {
            Ok(())
        } else {
            Err("rtol must be in (0, 1)")
        }
    }
    /// A positive, finite absolute tolerance.
    pub fn atol(x: f64) -> Result<(), &'static str> {
        if x > 0.0 && x.is_finite() {
            Ok(())
        } else {
            Err("atol must be a positive number")
        }
    }
    /// A positive, finite step (in the model's time unit).
    pub fn dt(x: f64) -> Result<(), &'static str> {
        if x > 0.0 && x.is_finite() {
            Ok(())
        } else {
            Err("dt must be a positive number (in the model's time unit)")
        }
    }
}

/// Solver settings for one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverOptions {
    pub method: Method,
    /// Relative tolerance (adaptive methods).
    pub rtol: f64,
    /// Absolute tolerance (adaptive methods).
    pub atol: f64,
    /// Step size for RK4; the initial step for adaptive methods when `Some`.
    pub dt: Option<f64>,
    /// Maximum accepted + rejected steps over the whole integration of one subject.
    pub max_steps: u64,
    /// Smallest step allowed, relative to |t| (plus an absolute floor); below it → `StepTooSmall`.
    pub h_min_rel: f64,
    /// Largest step allowed (`f64::INFINITY` for none).
    pub h_max: f64,
    /// At a jump with the states: cross it, or locate it ([`Events`]).
    pub events: Events,
}

impl Default for SolverOptions {
    fn default() -> Self {
        SolverOptions {
            method: Method::Tsit5,
            rtol: 1e-6,
            atol: 1e-9,
            dt: None,
            max_steps: 1_000_000,
            h_min_rel: 1e-14,
            h_max: f64::INFINITY,
            events: Events::Cross,
        }
    }
}

/// Work counters, pinned by snapshot tests so that changes in behaviour are visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub rhs_evals: u64,
    pub jac_evals: u64,
    pub lu_decomps: u64,
    pub accepted: u64,
    pub rejected: u64,
}

/// One accepted step with its continuous extension.
pub trait DenseOutput {
    fn t0(&self) -> f64;
    fn t1(&self) -> f64;
    fn y0(&self) -> &[f64];
    fn y1(&self) -> &[f64];
    /// f(t0, y0).
    fn f0(&self) -> &[f64];
    /// f(t1, y1).
    fn f1(&self) -> &[f64];
    /// The interpolated solution at `t` in [t0, t1].
    fn eval(&self, t: f64, out: &mut [f64]);
    /// The latest time at which the step's segment evaluates the model: the left limit of the
    /// segment's end ([`left_limit`]) where the step ends the segment, so that the model's
    /// outputs read there are before a jump at the stop, as the right-hand side was.
    fn t_left(&self) -> f64 {
        self.t1()
    }
}

/// Receives every accepted step, in order.
pub trait StepObserver {
    fn on_step(&mut self, step: &dyn DenseOutput);
}

/// An observer that ignores every step.
pub struct NoObserver;

impl StepObserver for NoObserver {
    fn on_step(&mut self, _step: &dyn DenseOutput) {}
}

pub mod integrator;
#[cfg(feature = "jit")]
pub mod sparse_jit;
pub mod sparse_lu;
pub mod tableau;
// Coefficients keep the digits of their published sources.
#[allow(clippy::excessive_precision)]
pub mod tableau_data;

pub use integrator::{lu_factor, lu_solve, Integrator};

/// The least offset [`left_limit`] takes, where |t1|·ε is smaller (t1 near 0).
pub const LEFT_OF_TINY: f64 = 1e-30;

/// The latest time at which the steps of a segment [t0, t1) evaluate the system: four to
/// eight ulps before `t1`, and not before `t0`. A segment ends at a stopping point, where a
/// model that reads `t` may jump (`floor(t / 24)` at 24); the step that ends there integrates
/// the left limit, as every step before it does, and the jump belongs to the next segment.
/// Four ulps, not one: a GPU's f32 division may be 2.5 ulps off under Vulkan, and `t / 24`
/// must still fall short of 1. Not before `t0`: a segment a few ulps long (a dose lagged to
/// just before a jump's stop) starts on the new side of a jump at or before its start, where
/// its first evaluation is; stages before its start would see the old side, disagree with it,
/// and no step could make the error estimate small. The kernels compute the same value
/// (`left_limit` in kernels/integrate.cu and shaders/integrate.wgsl): 4·|t1|·ε is exact (ε a
/// power of two), so contraction into a fused multiply-add changes nothing.
#[inline]
pub fn left_limit(t0: f64, t1: f64) -> f64 {
    left_limit_shifted(t0, t1, 0.0)
}

/// [`left_limit`] for a system that evaluates itself at `t + shift`
/// ([`OdeSystem::time_shift`]): four to eight ulps of the larger of `t1` and `t1 + shift`
/// before `t1`, so that the model's time there is on the old side of a jump whose stop the
/// end is, where the model's time has the coarser ulps (a steady state's interval of 0 to 24
/// h standing for the one from 976 to 1000 h). The same as [`left_limit`] where `shift` is 0;
/// the kernels' `left_limit` takes `q[T_SLOT]` alike.
#[inline]
pub fn left_limit_shifted(t0: f64, t1: f64, shift: f64) -> f64 {
    let scale = t1.abs().max((t1 + shift).abs());
    (t1 - (4.0 * scale * f64::EPSILON).max(LEFT_OF_TINY)).max(t0)
}

/// `dst.copy_from_slice(src)` for the short vectors of a model's state: a loop of constant
/// length for up to eight values (a call to `memcpy` costs more than the copy there).
#[inline(always)]
pub fn copy_short(dst: &mut [f64], src: &[f64]) {
    assert_eq!(dst.len(), src.len(), "copy_short: lengths differ");
    if src.len() <= 8 {
        for i in 0..8 {
            if i < src.len() {
                dst[i] = src[i];
            }
        }
    } else {
        dst.copy_from_slice(src);
    }
}
