//! Switches: the step functions of the states (`cp > 2`, `floor(x)`) across which a model's
//! right-hand side or outputs jump. With `events = "locate"` the CPU reference and the CUDA
//! kernels hold each at its value over an integration step (its mode), so that the step's
//! error estimate sees a smooth system, and end a step where a switch's live value changes,
//! located on the step's dense output (docs/model-language.md, "Jumps").

use std::collections::HashMap;

use super::lower::{key, Key, ModelPrograms, Op, Program, Reg, NO_ORIGIN};

/// Structural identities of instructions: equal for instructions that compute the same
/// expression, in any program interned with the same interner.
#[derive(Debug, Clone, Default)]
struct Interner(HashMap<Key, u32>);

impl Interner {
    fn ids(&mut self, p: &Program) -> Vec<u32> {
        let mut ids: Vec<u32> = Vec::with_capacity(p.instrs.len());
        for op in &p.instrs {
            let k = key(&op.map_args(|r| ids[r as usize]));
            let next = self.0.len() as u32;
            ids.push(*self.0.entry(k).or_insert(next));
        }
        ids
    }
}

/// A model's switches: the comparisons, `floor`s and `ceil`s of values of the states across
/// whose change the right-hand side or an output jumps ([`Program::jumps_with_states`]), and
/// the steps in time whose jumps are not stopping points (`sin(2 * pi * t / 24) > 0`:
/// `TimeJumps::not_affine_steps`).
#[derive(Debug, Clone, Default)]
pub struct Switches {
    /// The switches' live values at (t, y), one result each, in switch order.
    pub values: Program,
    /// Each switch's argument at (t, y), continuous where the switch changes: `a - b` of a
    /// comparison of a and b, which changes sign where it does (a root-finder's guide to the
    /// change); NaN for a `floor` or `ceil`, whose changes are bisected.
    pub args: Program,
    /// Each switch's structural identity in `interner`.
    ids: Vec<u32>,
    /// One past the last state the switches read (0: none, a step in time alone).
    reach: usize,
    interner: Interner,
}

impl Switches {
    /// The switches of the right-hand side and the outputs, found with the parameters
    /// `params` (the model's defaults: which steps jump is a matter of the model's form) and
    /// with each of them that is 0 set to 1 (a jump whose size or threshold is a parameter 0
    /// by default: `if(cp > 2, kmax, 0)` with kmax = 0, `if(x < x0, …)` with x0 = 0). None for
    /// a model without steps of the states.
    pub fn find(progs: &ModelPrograms, params: &[f64]) -> Switches {
        let mut sw = Switches::default();
        let not_affine = &progs.time_jumps.not_affine_steps;
        if params.len() != progs.n_params
            || !(progs.rhs.steps_of_states().contains(&true)
                || progs.outputs.steps_of_states().contains(&true)
                || !not_affine.is_empty())
        {
            return sw;
        }
        let both = progs.rhs.concat(&progs.outputs);
        let ids = sw.interner.ids(&both);
        let ones: Vec<f64> = params
            .iter()
            .map(|&p| if p == 0.0 { 1.0 } else { p })
            .collect();
        let search = |prog: &Program| {
            let (mut found, _) = prog.jumps_with_states(progs.n_states, params);
            if ones != params {
                let (more, _) = prog.jumps_with_states(progs.n_states, &ones);
                found.iter_mut().zip(more).for_each(|(f, m)| *f |= m);
            }
            found
        };
        let (in_rhs, in_outputs) = (search(&progs.rhs), search(&progs.outputs));
        let mut regs: Vec<Reg> = Vec::new();
        for (i, found) in in_rhs.iter().chain(&in_outputs).enumerate() {
            let located = matches!(
                both.instrs[i],
                Op::Lt(..) | Op::Le(..) | Op::Gt(..) | Op::Ge(..) | Op::Floor(_) | Op::Ceil(_)
            );
            // A step in time whose jumps are not located as stopping points (`sin(t) > 0`).
            let in_time = not_affine.contains(&(i as Reg));
            if (*found || in_time) && located && !sw.ids.contains(&ids[i]) {
                sw.ids.push(ids[i]);
                regs.push(i as Reg);
            }
        }
        sw.values = both.keep_registers(&regs);
        let mut ext = both.clone();
        let arg_regs: Vec<Reg> = regs
            .iter()
            .map(|&r| {
                let op = match ext.instrs[r as usize] {
                    Op::Lt(a, b) | Op::Le(a, b) | Op::Gt(a, b) | Op::Ge(a, b) => Op::Sub(a, b),
                    _ => Op::Const(f64::NAN),
                };
                let origin = ext.origins.get(r as usize).copied();
                ext.instrs.push(op);
                if let Some(o) = origin {
                    ext.origins.push(o);
                }
                (ext.instrs.len() - 1) as Reg
            })
            .collect();
        sw.args = ext.keep_registers(&arg_regs);
        sw.reach = sw
            .values
            .instrs
            .iter()
            .filter_map(|op| match op {
                Op::State(i) => Some(*i as usize + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        sw
    }

    /// One past the last state the switches read: the components of the states a located
    /// change is looked for on (0 where they read none, steps in time alone).
    pub fn reach(&self) -> usize {
        self.reach
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Slots a [`Switches::modal`] program reads: one mode per switch, then the flag.
    pub fn slots(&self) -> usize {
        if self.is_empty() {
            0
        } else {
            self.len() + 1
        }
    }

    /// `p` with each switch read from its mode (slot k) where the flag (slot
    /// [`Switches::len`]) is nonzero, and evaluated where it is 0. `p` itself where there is
    /// no switch.
    pub fn modal(&self, p: &Program) -> Program {
        if self.is_empty() {
            return p.clone();
        }
        let mut interner = self.interner.clone();
        let ids = interner.ids(p);
        let with_origins = p.origins.len() == p.instrs.len();
        let flag_slot = self.len() as u32;
        let mut out = Program::default();
        let mut map: Vec<Reg> = Vec::with_capacity(p.instrs.len());
        let mut flag: Option<Reg> = None;
        for (i, op) in p.instrs.iter().enumerate() {
            let origin = if with_origins {
                p.origins[i]
            } else {
                NO_ORIGIN
            };
            let push = |out: &mut Program, op: Op| {
                out.instrs.push(op);
                if with_origins {
                    out.origins.push(origin);
                }
                (out.instrs.len() - 1) as Reg
            };
            let live = push(&mut out, op.map_args(|r| map[r as usize]));
            match self.ids.iter().position(|&s| s == ids[i]) {
                Some(k) => {
                    let f = match flag {
                        Some(f) => f,
                        None => *flag.insert(push(&mut out, Op::Slot(flag_slot))),
                    };
                    let mode = push(&mut out, Op::Slot(k as u32));
                    map.push(push(&mut out, Op::Select(f, mode, live)));
                }
                None => map.push(live),
            }
        }
        out.results = p.results.iter().map(|r| map[*r as usize]).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ir::Model;

    const KILL: &str = "\
param cl = 2.8
param v = 35
param emax = 0.5
state central, bact
bact(0) = 1e6
cp = central / v
d/dt(central) = -cl / v * central
d/dt(bact) = 0.05 * bact - if(cp > 2, emax, 0) * bact
output conc = cp
output above = cp > 2
output whole = floor(cp)
";

    fn programs(src: &str) -> (ModelPrograms, Vec<f64>) {
        let m = Model::parse("kill", src).unwrap();
        let p = m.params.iter().map(|q| q.default).collect();
        (ModelPrograms::new(&m), p)
    }

    /// `cp > 2` is one switch wherever it appears (the right-hand side, its Jacobian, the
    /// outputs); `floor(cp)` of an output another; the modal programs read the modes where
    /// the flag is set and agree with the live ones where it is not.
    #[test]
    fn a_switch_is_read_from_its_mode_in_every_program() {
        let (progs, params) = programs(KILL);
        let sw = Switches::find(&progs, &params);
        assert_eq!(sw.len(), 2, "{:?}", sw.values);
        // Both read cp, of the first state alone.
        assert_eq!(sw.reach(), 1);
        let y = [100.0, 1e5];
        let mut regs = Vec::new();
        let mut v = [0.0; 2];
        sw.values.run(1.0, &y, &params, &[], &mut regs, &mut v);
        assert_eq!(v, [1.0, 2.0]); // cp = 100 / 35

        // The arguments: cp - 2 of the comparison, none (NaN) of the floor.
        let mut a = [0.0; 2];
        sw.args.run(1.0, &y, &params, &[], &mut regs, &mut a);
        assert_eq!(a[0], 100.0 / 35.0 - 2.0);
        assert!(a[1].is_nan());
        let rhs = sw.modal(&progs.rhs);
        let mut live = [0.0; 2];
        progs.rhs.run(1.0, &y, &params, &[], &mut regs, &mut live);
        let mut out = [0.0; 2];
        rhs.run(1.0, &y, &params, &[1.0, 2.0, 0.0], &mut regs, &mut out);
        assert_eq!(out, live);
        rhs.run(1.0, &y, &params, &[0.0, 2.0, 1.0], &mut regs, &mut out);
        assert_eq!(out[1], 0.05 * 1e5);
        let jac = sw.modal(&progs.jacobian);
        let mut j = [0.0; 4];
        jac.run(1.0, &y, &params, &[0.0, 2.0, 1.0], &mut regs, &mut j);
        assert_eq!(j[3], 0.05);
        jac.run(1.0, &y, &params, &[1.0, 2.0, 1.0], &mut regs, &mut j);
        assert_eq!(j[3], 0.05 - 0.5);
        let outs = sw.modal(&progs.outputs);
        let mut o = [0.0; 3];
        outs.run(1.0, &y, &params, &[0.0, 7.0, 1.0], &mut regs, &mut o);
        assert_eq!(o[1..], [0.0, 7.0]);
    }

    /// A jump whose size is a parameter 0 by default, and a threshold that only states of
    /// either sign cross, are switches too.
    #[test]
    fn switches_are_found_beyond_the_defaults() {
        let (progs, params) = programs(&KILL.replace("param emax = 0.5", "param emax = 0"));
        assert_eq!(Switches::find(&progs, &params).len(), 2);
        // Without the outputs' steps, the right-hand side's alone.
        let (progs, params) = programs(
            "param k = 1\nstate x, a\nx(0) = 1\na(0) = 0\nd/dt(x) = -k * x - 1\n\
             d/dt(a) = if(x < 0, 1, 0)\noutput c = a\n",
        );
        assert_eq!(Switches::find(&progs, &params).len(), 1);
        let (progs, params) = programs(
            "param k = 1\nparam x0 = 0\nstate x, a\nx(0) = 1\na(0) = 0\n\
             d/dt(x) = -k * x - 1\nd/dt(a) = if(x < x0, 1, 0)\noutput c = a\n",
        );
        assert_eq!(Switches::find(&progs, &params).len(), 1);
    }

    /// A step that selects between two forms of one value is no switch, nor is a model
    /// without steps of the states.
    #[test]
    fn continuous_selections_are_not_switches() {
        let (progs, params) = programs(
            "param k = 1\nstate a\na(0) = 1\nd/dt(a) = -if(a >= 1, k * a, k * a * a)\noutput c = a\n",
        );
        assert!(Switches::find(&progs, &params).is_empty());
        let (progs, params) = programs(
            "param k = 1\nstate a\na(0) = 1\nd/dt(a) = -if(t > 3, k, 0) * a\noutput c = a\n",
        );
        let sw = Switches::find(&progs, &params);
        assert!(sw.is_empty());
        assert_eq!(sw.modal(&progs.rhs), progs.rhs);
    }
}
