//! A [`LuPlan`]'s solve as native code, compiled with Cranelift: straight-line code over the
//! factors' entries, as the GPU kernels run it (`src/backend/wsparse.rs`).
//!
//! The interpreted solve spends most of its time on what surrounds the arithmetic (the entries'
//! indices, loop bounds and their checks, rows of one or two entries each); here the indices are
//! offsets in the instructions and the components stay in registers between the rows that
//! compute and read them. The operations are [`LuPlan::solve`]'s, one IEEE operation each, in
//! the same order (Cranelift neither fuses nor reassociates), so the results are the same bit
//! for bit (`cargo test --release --lib sparse_lu`). The factorisation stays interpreted:
//! compiled the same way, it took 20 % less time, too little to show in a trial's time.

use cranelift_codegen::ir::{types, InstBuilder, MemFlags, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};

use super::sparse_lu::LuPlan;
use crate::model::exec::jit::{declare, entry_block, finish, new_module, CodeMemory};

/// `f(v, inv, b)`: solves W x = b in place with the factors `v` and the pivots' reciprocals
/// `inv` of [`LuPlan::factor`].
type SolveFn = unsafe extern "C" fn(*const f64, *const f64, *mut f64);

/// Plans with more multiply-subtracts in their solve than this are interpreted: the code (and
/// its compile time) grows with them, and so large a system spends its time elsewhere.
const MAX_OPS: usize = 20_000;

/// A plan's solve as native code.
pub struct NativeSolve {
    f: SolveFn,
    /// The sizes the code reads: factors' values, components.
    nnz: usize,
    n: usize,
    _memory: CodeMemory,
}

impl std::fmt::Debug for NativeSolve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeSolve")
    }
}

impl NativeSolve {
    /// Compiles `plan`'s solve; `Err` with why not (a host Cranelift cannot target, a plan
    /// too large), in which case [`LuPlan::solve`] is to run.
    pub fn new(plan: &LuPlan) -> Result<NativeSolve, String> {
        let n = plan.dim();
        let ops: usize = (0..n)
            .map(|k| plan.l_row(k).len() + plan.u_row(k).len())
            .sum();
        if ops > MAX_OPS {
            return Err(format!("{ops} operations in the solve"));
        }
        let mut module = new_module()?;
        let id = define(&mut module, plan);
        let (code, memory) = finish(module, id)?;
        // SAFETY: the function was defined with `SolveFn`'s signature (`define`).
        let f = unsafe { std::mem::transmute::<*const u8, SolveFn>(code) };
        Ok(NativeSolve {
            f,
            nnz: plan.nnz(),
            n,
            _memory: memory,
        })
    }

    /// [`LuPlan::solve`] of the plan this was compiled from.
    #[inline]
    pub fn solve(&self, v: &[f64], inv: &[f64], b: &mut [f64]) {
        assert!(
            v.len() >= self.nnz && inv.len() >= self.n && b.len() >= self.n,
            "factors of another plan"
        );
        // SAFETY: the code reads `v[..nnz]` and `inv[..n]` and reads and writes `b[..n]`, all
        // checked above; `NativeSolve::new` made it from the plan with these sizes.
        unsafe { (self.f)(v.as_ptr(), inv.as_ptr(), b.as_mut_ptr()) }
    }
}

/// Byte offset of the i-th f64.
fn offset(i: u32) -> i32 {
    8 * i as i32
}

/// Declares and defines the solve in `module`.
fn define(module: &mut JITModule, plan: &LuPlan) -> Result<FuncId, String> {
    let (id, mut ctx) = declare(module, "vpop_lu_solve", &[None; 3])?;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let args = entry_block(&mut b);
        let (v, inv, rhs) = (args[0], args[1], args[2]);
        // The factors and reciprocals are not written during the call; b is read first and
        // written last.
        let read = MemFlags::trusted().with_readonly();
        let n = plan.dim();
        // x in elimination positions.
        let mut x: Vec<Value> = plan
            .order()
            .iter()
            .map(|&c| {
                b.ins()
                    .load(types::F64, MemFlags::trusted(), rhs, offset(c))
            })
            .collect();
        for k in 0..n {
            let mut s = x[k];
            for &[c, sl] in plan.l_row(k) {
                let l = b.ins().load(types::F64, read, v, offset(sl));
                let p = b.ins().fmul(l, x[c as usize]);
                s = b.ins().fsub(s, p);
            }
            x[k] = s;
        }
        for k in (0..n).rev() {
            let mut s = x[k];
            for &[c, sl] in plan.u_row(k) {
                let u = b.ins().load(types::F64, read, v, offset(sl));
                let p = b.ins().fmul(u, x[c as usize]);
                s = b.ins().fsub(s, p);
            }
            let r = b.ins().load(types::F64, read, inv, offset(k as u32));
            x[k] = b.ins().fmul(s, r);
        }
        for (k, &c) in plan.order().iter().enumerate() {
            b.ins().store(MemFlags::trusted(), x[k], rhs, offset(c));
        }
        b.ins().return_(&[]);
        b.finalize();
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|err| format!("{err:?}"))?;
    Ok(id)
}
