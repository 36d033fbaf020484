//! The CPU evaluator: runs a model's lowered programs in f64.

use super::exec::{Exec, Inputs};
use super::ir::Model;
use super::lower::ModelPrograms;
use crate::dosing::StateDosing;
use crate::metrics::OutputEval;
use crate::solver::OdeSystem;

/// A model compiled for the CPU: its lowered programs, and each compiled for [`Exec`]. Shared
/// read-only across threads.
#[derive(Debug, Clone)]
pub struct CompiledModel {
    pub programs: ModelPrograms,
    exec: Execs,
}

/// The model's programs compiled for [`Exec`], in [`ModelPrograms`] order.
#[derive(Debug, Clone)]
struct Execs {
    rhs: Exec,
    jacobian: Exec,
    dfdt: Exec,
    outputs: Exec,
    output_jacobian: Exec,
    output_dfdt: Exec,
    init: Exec,
    dosing: Exec,
    /// The right-hand side and the outputs in one program.
    rhs_outputs: Exec,
}

impl Execs {
    fn all(&self) -> [&Exec; 9] {
        [
            &self.rhs,
            &self.jacobian,
            &self.dfdt,
            &self.outputs,
            &self.output_jacobian,
            &self.output_dfdt,
            &self.init,
            &self.dosing,
            &self.rhs_outputs,
        ]
    }
}

impl CompiledModel {
    pub fn new(model: &Model) -> CompiledModel {
        let programs = ModelPrograms::new(model);
        let p = &programs;
        let inputs = Inputs {
            states: p.n_states,
            params: p.n_params,
            slots: 0,
        };
        let exec = Execs {
            rhs: Exec::new(&p.rhs, inputs),
            jacobian: Exec::new(&p.jacobian, inputs),
            dfdt: Exec::new(&p.dfdt, inputs),
            outputs: Exec::new(&p.outputs, inputs),
            output_jacobian: Exec::new(&p.output_jacobian, inputs),
            output_dfdt: Exec::new(&p.output_dfdt, inputs),
            init: Exec::new(&p.init, inputs),
            dosing: Exec::new(&p.dosing, inputs),
            rhs_outputs: Exec::new(&p.rhs.concat(&p.outputs), inputs),
        };
        CompiledModel { programs, exec }
    }

    pub fn n_states(&self) -> usize {
        self.programs.n_states
    }
    pub fn n_params(&self) -> usize {
        self.programs.n_params
    }
    pub fn n_outputs(&self) -> usize {
        self.programs.n_outputs
    }

    /// A model instance with one subject's parameters and its own environments.
    pub fn bind(&self, params: &[f64]) -> BoundModel<'_> {
        let mut b = BoundModel {
            m: self,
            params: Vec::new(),
            envs: self.exec.all().map(|e| e.env()),
        };
        b.set_params(params);
        b
    }
}

/// A compiled model with a subject's parameters bound; implements [`OdeSystem`].
#[derive(Debug, Clone)]
pub struct BoundModel<'a> {
    m: &'a CompiledModel,
    params: Vec<f64>,
    /// One environment per program (as [`Execs::all`]), the parameters in place.
    envs: [Vec<f64>; 9],
}

const RHS: usize = 0;
const JACOBIAN: usize = 1;
const DFDT: usize = 2;
const OUTPUTS: usize = 3;
const OUTPUT_JACOBIAN: usize = 4;
const OUTPUT_DFDT: usize = 5;
const INIT: usize = 6;
const DOSING: usize = 7;
const RHS_OUTPUTS: usize = 8;

impl BoundModel<'_> {
    pub fn set_params(&mut self, params: &[f64]) {
        self.params.clear();
        self.params.extend_from_slice(params);
        for (e, env) in self.m.exec.all().iter().zip(&mut self.envs) {
            e.set_params(env, params);
        }
    }
    pub fn params(&self) -> &[f64] {
        &self.params
    }
    pub fn initial_state(&mut self, y0: &mut [f64]) {
        self.m.exec.init.run(&mut self.envs[INIT], y0);
    }
    /// Per state: lag, bioavailability, modelled rate and duration.
    pub fn state_dosing(&mut self) -> Vec<StateDosing> {
        let n = self.m.n_states();
        let mut v = vec![0.0; 4 * n];
        self.m.exec.dosing.run(&mut self.envs[DOSING], &mut v);
        (0..n)
            .map(|i| StateDosing {
                lag: v[4 * i],
                bioavailability: v[4 * i + 1],
                rate: (!v[4 * i + 2].is_nan()).then_some(v[4 * i + 2]),
                duration: (!v[4 * i + 3].is_nan()).then_some(v[4 * i + 3]),
            })
            .collect()
    }
}

impl OdeSystem for BoundModel<'_> {
    fn dim(&self) -> usize {
        self.m.n_states()
    }
    fn rhs(&mut self, t: f64, y: &[f64], dy: &mut [f64]) {
        self.m.exec.rhs.eval(&mut self.envs[RHS], t, y, dy);
    }
    fn jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.m
            .exec
            .jacobian
            .eval(&mut self.envs[JACOBIAN], t, y, jac);
    }
    fn dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m.exec.dfdt.eval(&mut self.envs[DFDT], t, y, out);
    }
}

impl OutputEval for BoundModel<'_> {
    fn n_outputs(&self) -> usize {
        self.m.n_outputs()
    }
    fn outputs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m.exec.outputs.eval(&mut self.envs[OUTPUTS], t, y, out);
    }
    fn rhs_and_outputs(&mut self, t: f64, y: &[f64], dy: &mut [f64]) {
        self.m
            .exec
            .rhs_outputs
            .eval(&mut self.envs[RHS_OUTPUTS], t, y, dy);
    }
    fn output_is_affine(&self, k: usize) -> bool {
        self.m.programs.affine_outputs[k]
    }
    fn output_jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.m
            .exec
            .output_jacobian
            .eval(&mut self.envs[OUTPUT_JACOBIAN], t, y, jac);
    }
    fn output_dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m
            .exec
            .output_dfdt
            .eval(&mut self.envs[OUTPUT_DFDT], t, y, out);
    }
}
