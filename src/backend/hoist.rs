//! What the GPU kernels compute once per subject: the values of the right-hand side and the
//! outputs that depend on parameters and constants alone (a model's rate constants,
//! `(cl + q) / v1`, the reciprocal `1/v1` that lowering made of a division, `ec50 ^ hill`).
//!
//! The kernels' `model_prepare` computes them when a subject's parameters are loaded (and at
//! each change of occasion or record parameters) into the parameter array after the
//! parameters, `q[NP + k]`, one place per distinct expression; the model functions read them
//! there instead of computing them at every evaluation. The same operations on the same
//! values as before, so the same bits: the CPU reference evaluates the programs as they are
//! ([`crate::model::exec`]). This module decides what is stored and where; the CUDA and WGSL
//! generators print it in their languages.

use std::collections::HashMap;

use crate::model::{ModelPrograms, Op, Program};

/// How one program reads the values computed once per subject.
#[derive(Debug, Clone, Default)]
pub struct ProgramHoist {
    /// Register → index into `q` of its value.
    pub read: HashMap<u32, usize>,
    /// Instructions left out: they depend on parameters and constants alone and only such
    /// instructions read them.
    pub skip: Vec<bool>,
}

/// One value `model_prepare` computes: instruction `instr` of the program tagged `tag`, named
/// `{tag}{instr}` there (its operands likewise), and stored at `q[store]` when other code reads
/// it.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareLine {
    pub tag: &'static str,
    pub instr: u32,
    pub op: Op,
    pub store: Option<usize>,
}

impl PrepareLine {
    /// The name of instruction `x` of this line's program in `model_prepare`.
    pub fn name(&self, x: u32) -> String {
        format!("{}{x}", self.tag)
    }
}

/// The values of a model's functions computed once per subject.
#[derive(Debug, Clone, Default)]
pub struct Hoisted {
    /// Values after the parameters in `q`.
    pub slots: usize,
    pub rhs: ProgramHoist,
    pub outputs: ProgramHoist,
    pub output_jacobian: ProgramHoist,
    pub output_dfdt: ProgramHoist,
    pub jacobian: ProgramHoist,
    pub dfdt: ProgramHoist,
    /// The body of `model_prepare`, in order.
    pub prepare: Vec<PrepareLine>,
}

/// The program of the model whose instructions `model_prepare` names with `tag`, and what it
/// computes ("right-hand side", …), for tracing a line of generated code back to the model.
pub fn tagged_program<'a>(m: &'a ModelPrograms, tag: &str) -> Option<(&'a Program, &'static str)> {
    Some(match tag {
        "f" => (&m.rhs, "right-hand side"),
        "g" => (&m.outputs, "value"),
        "h" => (&m.output_jacobian, "gradient"),
        "u" => (&m.output_dfdt, "time derivative"),
        "j" => (&m.jacobian, "Jacobian"),
        "v" => (&m.dfdt, "time derivative"),
        _ => return None,
    })
}

/// Which values of `prog` depend on parameters and constants alone and are read by an
/// instruction that does not, or are results: those are computed once per subject and stored
/// after the parameters, one place per distinct expression (`keys`). With `new_slots` false,
/// only values already stored for another program are read from `q`; the rest are computed
/// where they are used (the Jacobian: its n² values would hold as many registers).
fn hoist_program(
    prog: &Program,
    tag: &'static str,
    n_params: usize,
    keys: &mut HashMap<String, usize>,
    prepare: &mut Vec<PrepareLine>,
    new_slots: bool,
) -> ProgramHoist {
    let n = prog.instrs.len();
    let load = |op: &Op| matches!(op, Op::Const(_) | Op::Param(_));
    let fixed = prog.on_parameters_alone();
    let mut key: Vec<String> = vec![String::new(); n];
    for (i, op) in prog.instrs.iter().enumerate() {
        if fixed[i] {
            key[i] = match *op {
                Op::Const(v) => format!("c{:x}", v.to_bits()),
                Op::Param(j) => format!("p{j}"),
                _ => {
                    let name = format!("{op:?}");
                    let name = name.split('(').next().unwrap_or("");
                    let extra = match *op {
                        Op::Powi(_, e) => format!(";{e}"),
                        _ => String::new(),
                    };
                    let args: Vec<&str> = op.args().map(|a| key[a as usize].as_str()).collect();
                    format!("{name}({}{extra})", args.join(","))
                }
            };
        }
    }
    // Fixed values that something else reads.
    let mut wanted = vec![false; n];
    for (i, op) in prog.instrs.iter().enumerate() {
        if !fixed[i] {
            for a in op.args() {
                wanted[a as usize] = true;
            }
        }
    }
    for &r in &prog.results {
        wanted[r as usize] = true;
    }
    let mut h = ProgramHoist {
        read: HashMap::new(),
        skip: vec![false; n],
    };
    if !new_slots {
        for i in 0..n {
            if fixed[i] && !load(&prog.instrs[i]) {
                if let Some(&k) = keys.get(&key[i]) {
                    h.read.insert(i as u32, n_params + k);
                }
            }
        }
        // What only the values read from q needed is left out.
        let mut live = vec![false; n];
        for &r in &prog.results {
            live[r as usize] = true;
        }
        for i in (0..n).rev() {
            if live[i] && !h.read.contains_key(&(i as u32)) {
                for a in prog.instrs[i].args() {
                    live[a as usize] = true;
                }
            }
        }
        h.skip = live.iter().map(|l| !l).collect();
        return h;
    }
    // What the stored values need, computed in model_prepare.
    let mut needed = vec![false; n];
    for i in (0..n).rev() {
        // Values another program stored already are read, not computed again.
        let store = fixed[i] && !load(&prog.instrs[i]) && wanted[i] && !keys.contains_key(&key[i]);
        if store || (needed[i] && fixed[i]) {
            needed[i] = true;
            for a in prog.instrs[i].args() {
                needed[a as usize] = true;
            }
        }
    }
    for (i, op) in prog.instrs.iter().enumerate() {
        if !fixed[i] {
            continue;
        }
        let line = needed[i].then(|| {
            prepare.push(PrepareLine {
                tag,
                instr: i as u32,
                op: *op,
                store: None,
            });
            prepare.len() - 1
        });
        if load(op) {
            continue;
        }
        if wanted[i] {
            let next = keys.len();
            let k = *keys.entry(key[i].clone()).or_insert(next);
            if k == next {
                // A new key: nothing stored it, so this program's backward pass needed it.
                let line = line.expect("a value stored first is computed in model_prepare");
                prepare[line].store = Some(n_params + k);
            }
            h.read.insert(i as u32, n_params + k);
        } else {
            h.skip[i] = true;
        }
    }
    h
}

/// The right-hand side's and the outputs' values that depend on parameters and constants
/// alone, and the Jacobian's and ∂f/∂t's reads of them.
pub fn hoisted(m: &ModelPrograms) -> Hoisted {
    let mut keys = HashMap::new();
    let mut prepare = Vec::new();
    let np = m.n_params;
    let (k, pre) = (&mut keys, &mut prepare);
    let rhs = hoist_program(&m.rhs, "f", np, k, pre, true);
    let outputs = hoist_program(&m.outputs, "g", np, k, pre, true);
    let output_jacobian = hoist_program(&m.output_jacobian, "h", np, k, pre, true);
    let output_dfdt = hoist_program(&m.output_dfdt, "u", np, k, pre, true);
    let jacobian = hoist_program(&m.jacobian, "j", np, k, pre, false);
    let dfdt = hoist_program(&m.dfdt, "v", np, k, pre, false);
    Hoisted {
        slots: keys.len(),
        rhs,
        outputs,
        output_jacobian,
        output_dfdt,
        jacobian,
        dfdt,
        prepare,
    }
}

/// The parameters and, after them, what `model_prepare` computes: the length of `q`.
pub fn q_len(m: &ModelPrograms) -> usize {
    m.n_params + hoisted(m).slots
}
