//! The CPU evaluator: runs a model's lowered programs in f64.

use std::sync::{Arc, Mutex};

use super::exec::{Exec, Inputs};
use super::ir::Model;
use super::lower::ModelPrograms;
use super::switches::Switches;
use crate::dosing::StateDosing;
use crate::metrics::OutputEval;
use crate::solver::OdeSystem;

/// A model compiled for the CPU: its lowered programs, and each compiled for [`Exec`]. Shared
/// read-only across threads.
#[derive(Debug)]
pub struct CompiledModel {
    pub programs: ModelPrograms,
    exec: Execs,
    /// The right-hand side with some of the outputs, per set of outputs asked for (see
    /// [`CompiledModel::rhs_with`]), compiled when first asked for.
    rhs_some: Mutex<Vec<(Vec<usize>, Arc<Exec>)>>,
    /// Where ∂f/∂y and ∂g/∂y can be nonzero (row-major).
    jacobian_pattern: Vec<bool>,
    output_jacobian_pattern: Vec<bool>,
    /// For a model large enough to be factorised along its Jacobian's structure: the Jacobian
    /// program with the entries that can be nonzero alone (row-major).
    jacobian_nonzeros: Option<Exec>,
    /// The switches of the states ([`Switches`]): the programs above that the integration
    /// evaluates read them from their modes where these are set ([`BoundModel::set_modes`]).
    switches: Switches,
    /// The switches' live values.
    switch_values: Exec,
    /// The switches' arguments ([`Switches::args`]).
    switch_args: Exec,
    /// The values, then the arguments, in one program (a located change's narrowing reads
    /// both at every point).
    switch_both: Exec,
}

impl Clone for CompiledModel {
    fn clone(&self) -> Self {
        CompiledModel {
            programs: self.programs.clone(),
            exec: self.exec.clone(),
            rhs_some: Mutex::new(self.rhs_some.lock().map(|v| v.clone()).unwrap_or_default()),
            jacobian_pattern: self.jacobian_pattern.clone(),
            output_jacobian_pattern: self.output_jacobian_pattern.clone(),
            jacobian_nonzeros: self.jacobian_nonzeros.clone(),
            switches: self.switches.clone(),
            switch_values: self.switch_values.clone(),
            switch_args: self.switch_args.clone(),
            switch_both: self.switch_both.clone(),
        }
    }
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
        let defaults: Vec<f64> = model.params.iter().map(|q| q.default).collect();
        let switches = Switches::find(p, &defaults);
        let inputs = Inputs {
            states: p.n_states,
            params: p.n_params,
            slots: 0,
        };
        // What the integration evaluates reads the switches from their modes where set.
        let modal = Inputs {
            slots: switches.slots(),
            ..inputs
        };
        let m = |prog: &super::lower::Program| Exec::new(&switches.modal(prog), modal);
        let exec = Execs {
            rhs: m(&p.rhs),
            jacobian: m(&p.jacobian),
            dfdt: m(&p.dfdt),
            outputs: Exec::new(&p.outputs, inputs),
            output_jacobian: m(&p.output_jacobian),
            output_dfdt: m(&p.output_dfdt),
            init: Exec::new(&p.init, inputs),
            dosing: Exec::new(&p.dosing, inputs),
            rhs_outputs: m(&p.rhs.concat(&p.outputs)),
        };
        let jacobian_pattern = programs.jacobian.nonzero_results();
        let jacobian_nonzeros = (p.n_states >= crate::solver::sparse_lu::MIN_DIM).then(|| {
            let keep: Vec<usize> = (0..jacobian_pattern.len())
                .filter(|&k| jacobian_pattern[k])
                .collect();
            m(&p.jacobian.keep_results(&keep))
        });
        let switch_values = Exec::new(&switches.values, inputs);
        let switch_args = Exec::new(&switches.args, inputs);
        let switch_both = Exec::new(&switches.values.concat(&switches.args), inputs);
        CompiledModel {
            jacobian_nonzeros,
            jacobian_pattern,
            output_jacobian_pattern: programs.output_jacobian.nonzero_results(),
            programs,
            exec,
            rhs_some: Mutex::new(Vec::new()),
            switches,
            switch_values,
            switch_args,
            switch_both,
        }
    }

    /// How many switches of the states the model has ([`Switches`]).
    pub fn n_switches(&self) -> usize {
        self.switches.len()
    }

    /// The switches of the states ([`Switches`]).
    pub fn switches(&self) -> &Switches {
        &self.switches
    }

    /// The right-hand side, then outputs `which` (in that order), as one program: what an
    /// integration with AUC quadratures for those outputs evaluates at every stage. Compiled
    /// once per set; the outputs no quadrature needs are not computed.
    pub fn rhs_with(&self, which: &[usize]) -> Arc<Exec> {
        let mut cache = self.rhs_some.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = cache.iter().find(|(w, _)| w == which) {
            return e.clone();
        }
        let p = &self.programs;
        let inputs = Inputs {
            states: p.n_states,
            params: p.n_params,
            slots: self.switches.slots(),
        };
        let e = Arc::new(Exec::new(
            &self
                .switches
                .modal(&p.rhs.concat(&p.outputs.keep_results(which))),
            inputs,
        ));
        cache.push((which.to_vec(), e.clone()));
        e
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
            nz_env: self
                .jacobian_nonzeros
                .as_ref()
                .map_or_else(Vec::new, |e| e.env()),
            some: None,
            switch_env: self.switch_values.env(),
            args_env: self.switch_args.env(),
            both_env: self.switch_both.env(),
            both_out: vec![0.0; 2 * self.switches.len()],
            modes: None,
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
    /// The environment of the Jacobian's nonzeros program, where there is one.
    nz_env: Vec<f64>,
    /// The outputs last asked for with the right-hand side ([`CompiledModel::rhs_with`]), its
    /// program and environment.
    some: Option<(Vec<usize>, Arc<Exec>, Vec<f64>)>,
    /// The environment of the switches' live values, and of their arguments.
    switch_env: Vec<f64>,
    args_env: Vec<f64>,
    /// The environment of the values and arguments together, and their results.
    both_env: Vec<f64>,
    both_out: Vec<f64>,
    /// The switches' modes where set ([`BoundModel::set_modes`]).
    modes: Option<Vec<f64>>,
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
        if let Some((_, e, env)) = &mut self.some {
            e.set_params(env, params);
        }
        if let Some(e) = &self.m.jacobian_nonzeros {
            e.set_params(&mut self.nz_env, params);
        }
        self.m
            .switch_values
            .set_params(&mut self.switch_env, params);
        self.m.switch_args.set_params(&mut self.args_env, params);
        self.m.switch_both.set_params(&mut self.both_env, params);
    }

    /// Holds the switches at `modes` in every program the integration evaluates (`None`:
    /// each evaluated where it is read).
    pub fn set_modes(&mut self, modes: Option<&[f64]>) {
        let k = self.m.switches.len();
        if k == 0 {
            return;
        }
        self.modes = modes.map(|m| m.to_vec());
        let write = |e: &Exec, env: &mut Vec<f64>| {
            let s = e.slots();
            if s.len() == k + 1 {
                match modes {
                    Some(m) => {
                        env[s.start..s.start + k].copy_from_slice(&m[..k]);
                        env[s.start + k] = 1.0;
                    }
                    None => env[s.start + k] = 0.0,
                }
            }
        };
        for (e, env) in self.m.exec.all().iter().zip(&mut self.envs) {
            write(e, env);
        }
        if let Some((_, e, env)) = &mut self.some {
            write(e, env);
        }
        if let Some(e) = &self.m.jacobian_nonzeros {
            write(e, &mut self.nz_env);
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
    fn jacobian_pattern(&self) -> Option<&[bool]> {
        Some(&self.m.jacobian_pattern)
    }
    fn jacobian_nonzeros(&mut self, t: f64, y: &[f64], vals: &mut [f64]) -> bool {
        match &self.m.jacobian_nonzeros {
            Some(e) => {
                e.eval(&mut self.nz_env, t, y, vals);
                true
            }
            None => false,
        }
    }
    fn switches(&self) -> usize {
        self.m.switches.len()
    }
    fn switch_values(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m.switch_values.eval(&mut self.switch_env, t, y, out);
    }
    fn switch_args(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m.switch_args.eval(&mut self.args_env, t, y, out);
    }
    fn switch_values_and_args(&mut self, t: f64, y: &[f64], values: &mut [f64], args: &mut [f64]) {
        let k = self.m.switches.len();
        self.m
            .switch_both
            .eval(&mut self.both_env, t, y, &mut self.both_out);
        values[..k].copy_from_slice(&self.both_out[..k]);
        args[..k].copy_from_slice(&self.both_out[k..2 * k]);
    }
    fn switch_reach(&self) -> usize {
        self.m.switches.reach()
    }
    fn set_modes(&mut self, modes: Option<&[f64]>) {
        BoundModel::set_modes(self, modes);
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
    fn rhs_and_some_outputs(&mut self, t: f64, y: &[f64], which: &[usize], dy: &mut [f64]) {
        if which.iter().copied().eq(0..self.m.n_outputs()) {
            return self.rhs_and_outputs(t, y, dy);
        }
        if self.some.as_ref().is_none_or(|(w, _, _)| w != which) {
            let e = self.m.rhs_with(which);
            let mut env = e.env();
            e.set_params(&mut env, &self.params);
            self.some = Some((which.to_vec(), e, env));
            let modes = self.modes.take();
            self.set_modes(modes.as_deref());
        }
        if let Some((_, e, env)) = &mut self.some {
            e.eval(env, t, y, dy);
        }
    }
    fn output_is_affine(&self, k: usize) -> bool {
        self.m.programs.affine_outputs[k]
    }
    fn output_uses_time(&self, k: usize) -> bool {
        self.m.programs.time_outputs[k]
    }
    fn output_jacobian(&mut self, t: f64, y: &[f64], jac: &mut [f64]) {
        self.m
            .exec
            .output_jacobian
            .eval(&mut self.envs[OUTPUT_JACOBIAN], t, y, jac);
    }
    fn output_jacobian_pattern(&self) -> Option<&[bool]> {
        Some(&self.m.output_jacobian_pattern)
    }
    fn output_dfdt(&mut self, t: f64, y: &[f64], out: &mut [f64]) {
        self.m
            .exec
            .output_dfdt
            .eval(&mut self.envs[OUTPUT_DFDT], t, y, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::library;

    /// A model large enough to be factorised along its Jacobian's structure evaluates the
    /// Jacobian's entries that can be nonzero alone: bit for bit the dense Jacobian's there,
    /// and the dense Jacobian is zero everywhere else. Small models have no such program.
    #[test]
    fn the_jacobians_nonzeros_alone() {
        let src = include_str!("../../tests/data/sparse_qsp.vpm");
        let ir = Model::parse("sparse_qsp", src).unwrap();
        let m = CompiledModel::new(&ir);
        let n = m.n_states();
        let p: Vec<f64> = ir.params.iter().map(|q| q.default * 1.1).collect();
        let mut b = m.bind(&p);
        let pattern = b.jacobian_pattern().unwrap().to_vec();
        let y: Vec<f64> = (0..n).map(|j| 0.3 + 0.7 * j as f64).collect();
        let mut dense = vec![f64::NAN; n * n];
        b.jacobian(2.0, &y, &mut dense);
        let mut vals = vec![f64::NAN; pattern.iter().filter(|z| **z).count()];
        assert!(b.jacobian_nonzeros(2.0, &y, &mut vals));
        let gathered: Vec<u64> = (0..n * n)
            .filter(|&k| pattern[k])
            .map(|k| dense[k].to_bits())
            .collect();
        assert_eq!(
            vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            gathered
        );
        assert!((0..n * n).all(|k| pattern[k] || dense[k] == 0.0));
        let lm = library::get("transit_oral").unwrap();
        let small = CompiledModel::new(&Model::parse(lm.name, lm.source).unwrap());
        let mut b = small.bind(&[1.0; 4]);
        assert!(!b.jacobian_nonzeros(0.0, &[1.0; 6], &mut [0.0; 36]));
    }

    /// The right-hand side with some outputs, in any order or none, gives what the right-hand
    /// side and the outputs give apart, bit for bit; a program per set, without the outputs it
    /// does not need; parameters set later reach it too.
    #[test]
    fn the_right_hand_side_with_some_outputs() {
        let lm = library::get("effect_emax").unwrap();
        let ir = Model::parse(lm.name, lm.source).unwrap();
        let m = CompiledModel::new(&ir);
        let (ns, no) = (m.n_states(), m.n_outputs());
        assert_eq!(no, 2);
        let mut p: Vec<f64> = ir.params.iter().map(|q| q.default).collect();
        let mut b = m.bind(&p);
        let y: Vec<f64> = (0..ns).map(|j| 1.5 + j as f64).collect();
        for round in 0..2 {
            let mut f = vec![0.0; ns];
            let mut g = vec![0.0; no];
            b.rhs(3.0, &y, &mut f);
            b.outputs(3.0, &y, &mut g);
            for which in [vec![], vec![1], vec![0], vec![1, 0], vec![0, 1]] {
                let mut dy = vec![f64::NAN; ns + which.len()];
                b.rhs_and_some_outputs(3.0, &y, &which, &mut dy);
                let want: Vec<f64> = f
                    .iter()
                    .copied()
                    .chain(which.iter().map(|&k| g[k]))
                    .collect();
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&dy), bits(&want), "{which:?} round {round}");
            }
            // Different parameters: every program follows.
            for v in p.iter_mut() {
                *v *= 1.25;
            }
            b.set_params(&p);
        }
        let cp = m.programs.outputs.keep_results(&[0]).instrs.len();
        let both = m.programs.outputs.instrs.len();
        assert!(cp < both, "{cp} of {both} instructions");
        // [], [1], [0] and [1, 0]; [0, 1] is every output, the fused program's.
        assert_eq!(m.rhs_some.lock().unwrap().len(), 4);
    }
}
