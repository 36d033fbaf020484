//! The CPU evaluator: runs a model's lowered programs in f64.

use super::ir::Model;
use super::lower::ModelPrograms;
use crate::dosing::StateDosing;
use crate::metrics::OutputEval;
use crate::solver::OdeSystem;

/// A model compiled for the CPU: its lowered programs. Shared read-only across threads.
#[derive(Debug, Clone)]
pub struct CompiledModel {
    pub programs: ModelPrograms,
    max_regs: usize,
}

impl CompiledModel {
    pub fn new(model: &Model) -> CompiledModel {
        let programs = ModelPrograms::new(model);
        let p = &programs;
        let max_regs = [
            &p.rhs,
            &p.jacobian,
            &p.dfdt,
            &p.outputs,
            &p.output_jacobian,
            &p.init,
            &p.dosing,
        ]
        .iter()
        .map(|q| q.instrs.len())
        .max()
        .unwrap_or(0);
        CompiledModel { programs, max_regs }
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

    /// A model instance with one subject's parameters and its own scratch registers.
    pub fn bind(&self, params: &[f64]) -> BoundModel<'_> {
        BoundModel {
            m: self,
            params: params.to_vec(),
            regs: vec![0.0; self.max_regs],
        }
    }
}

/// A compiled model with a subject's parameters bound; implements [`OdeSystem`].
#[derive(Debug, Clone)]
pub struct BoundModel<'a> {
    m: &'a CompiledModel,
    params: Vec<f64>,
    regs: Vec<f64>,
}

impl BoundModel<'_> {
    pub fn set_params(&mut self, params: &[f64]) {
        self.params.clear();
        self.params.extend_from_slice(params);
    }
    pub fn params(&self) -> &[f64] {
        &self.params
    }
    pub fn initial_state(&mut self, y0: &mut [f64]) {
        self.m
            .programs
            .init
            .run(0.0, &[], &self.params, &[], &mut self.regs, y0);
    }
    /// Per state: lag, bioavailability, modelled rate and duration.
    pub fn state_dosing(&mut self) -> Vec<StateDosing> {
        let n = self.m.n_states();
        let mut v = vec![0.0; 4 * n];
        self.m
            .programs
            .dosing
            .run(0.0, &[], &self.params, &[], &mut self.regs, &mut v);
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
        self.m
            .programs
            .rhs
            .run(t, y, &self.params, &[], &mut self.regs, dy);
    }
    fn jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.m
            .programs
            .jacobian
            .run(t, y, &self.params, &[], &mut self.regs, jac);
    }
    fn dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m
            .programs
            .dfdt
            .run(t, y, &self.params, &[], &mut self.regs, out);
    }
}

impl OutputEval for BoundModel<'_> {
    fn n_outputs(&self) -> usize {
        self.m.n_outputs()
    }
    fn outputs(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m
            .programs
            .outputs
            .run(t, y, &self.params, &[], &mut self.regs, out);
    }
    fn output_jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.m
            .programs
            .output_jacobian
            .run(t, y, &self.params, &[], &mut self.regs, jac);
    }
    fn output_dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m
            .programs
            .output_dfdt
            .run(t, y, &self.params, &[], &mut self.regs, out);
    }
}
