//! Native code for an [`Exec`]'s per-call instructions, compiled with Cranelift.
//!
//! The function reads time and the states from its arguments, the parameters and the values of
//! parameters alone from the environment, and takes the constants as immediates; every other
//! value stays in a register (or the stack), and only the results are stored. The operations
//! are the interpreter's own, one IEEE operation per operation (no fused multiply-add, no
//! reassociation: Cranelift keeps floating-point semantics), and the functions it calls (exp,
//! pow, erf, min, …) are the ones [`super::step`] calls, so results are bit for bit those of
//! the interpreter (`cargo test --release --lib native_code`).

use std::sync::Mutex;

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, AbiParam, FuncRef, InstBuilder, MemFlags, UserFuncName, Value};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};

use super::{nan_or, Code, Exec};

/// `f(env, t, y, out)`: the results of the per-call instructions into `out`.
pub(super) type NativeFn = unsafe extern "C" fn(*const f64, f64, *const f64, *mut f64);

/// The memory that holds compiled code, freed when this is dropped: whatever holds a pointer
/// into it holds this too.
pub(crate) struct CodeMemory {
    /// Only kept to be freed; never used after the code is made.
    module: Mutex<Option<JITModule>>,
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        let module = self.module.get_mut().ok().and_then(|m| m.take());
        if let Some(m) = module {
            // SAFETY: the pointers into this memory went with the value that owns this
            // `CodeMemory` (each call through them borrowed it).
            unsafe { m.free_memory() };
        }
    }
}

/// Compiled code and the memory that holds it.
pub(super) struct Native {
    pub(super) f: NativeFn,
    _memory: CodeMemory,
}

impl std::fmt::Debug for Native {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Native")
    }
}

/// The functions the code calls, one argument or two.
type Unary = extern "C" fn(f64) -> f64;
type Binary = extern "C" fn(f64, f64) -> f64;

/// `(symbol, function)` per entry: each an `extern "C"` copy of the function the interpreter
/// calls for that operation.
macro_rules! callees {
    ($($name:literal: |$($x:ident),+| $body:expr),+ $(,)?) => {
        [$({
            extern "C" fn f($($x: f64),+) -> f64 {
                $body
            }
            ($name, f as _)
        }),+]
    };
}

const UNARY: [(&str, Unary); 9] = callees![
    "vpop_exp": |x| x.exp(),
    "vpop_ln": |x| x.ln(),
    "vpop_log10": |x| x.log10(),
    "vpop_sin": |x| x.sin(),
    "vpop_cos": |x| x.cos(),
    "vpop_tanh": |x| x.tanh(),
    "vpop_atan": |x| x.atan(),
    "vpop_erf": |x| libm::erf(x),
    "vpop_erfc": |x| libm::erfc(x),
];
const BINARY: [(&str, Binary); 3] = callees![
    "vpop_pow": |x, y| x.powf(y),
    "vpop_min": |x, y| nan_or(x, y, f64::min),
    "vpop_max": |x, y| nan_or(x, y, f64::max),
];
extern "C" fn powi(x: f64, n: i32) -> f64 {
    x.powi(n)
}
const POWI: &str = "vpop_powi";

/// Which called function an instruction needs: its index in `UNARY`, then `BINARY`, then
/// `POWI`.
fn callee(code: Code) -> Option<usize> {
    Some(match code {
        Code::Exp => 0,
        Code::Log => 1,
        Code::Log10 => 2,
        Code::Sin => 3,
        Code::Cos => 4,
        Code::Tanh => 5,
        Code::Atan => 6,
        Code::Erf => 7,
        Code::Erfc => 8,
        Code::Pow => 9,
        Code::Min => 10,
        Code::Max => 11,
        Code::Powi => 12,
        _ => return None,
    })
}

/// Compiles `e`'s per-call instructions; `Err` with why not (a host Cranelift cannot
/// target, say), in which case the interpreter runs them.
pub(super) fn compile(e: &Exec) -> Result<Native, String> {
    let mut module = new_module()?;
    let id = define(&mut module, e);
    let (code, memory) = finish(module, id)?;
    // SAFETY: the function was defined with `NativeFn`'s signature (`define`).
    let f = unsafe { std::mem::transmute::<*const u8, NativeFn>(code) };
    Ok(Native { f, _memory: memory })
}

/// A module for the host, optimising for speed, where the functions the model language calls
/// can be imported by name.
pub(crate) fn new_module() -> Result<JITModule, String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|err| format!("setting {k}: {err}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|m| format!("this host: {m}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|err| err.to_string())?;
    let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
    for (name, f) in UNARY {
        jb.symbol(name, f as *const u8);
    }
    for (name, f) in BINARY {
        jb.symbol(name, f as *const u8);
    }
    jb.symbol(POWI, powi as extern "C" fn(f64, i32) -> f64 as *const u8);
    Ok(JITModule::new(jb))
}

/// The code of the function `id` defined in `module` (or why it could not be defined), and the
/// memory that holds it.
pub(crate) fn finish(
    mut module: JITModule,
    id: Result<FuncId, String>,
) -> Result<(*const u8, CodeMemory), String> {
    let done = id.and_then(|id| {
        module
            .finalize_definitions()
            .map_err(|err| err.to_string())?;
        Ok(module.get_finalized_function(id))
    });
    match done {
        Ok(code) => Ok((
            code,
            CodeMemory {
                module: Mutex::new(Some(module)),
            },
        )),
        Err(err) => {
            // SAFETY: nothing from this module was handed out.
            unsafe { module.free_memory() };
            Err(err)
        }
    }
}

/// Declares a function `name` in `module` taking `params` (`None` for a pointer) and returning
/// nothing, and makes the context to build it in.
pub(crate) fn declare(
    module: &mut JITModule,
    name: &str,
    params: &[Option<types::Type>],
) -> Result<(FuncId, Context), String> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for ty in params {
        sig.params.push(AbiParam::new(ty.unwrap_or(ptr)));
    }
    let id = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|err| err.to_string())?;
    let mut ctx: Context = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    Ok((id, ctx))
}

/// The entry block of `b`'s function, made current and sealed: the function's parameters.
pub(crate) fn entry_block(b: &mut FunctionBuilder) -> Vec<Value> {
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    b.seal_block(block);
    b.block_params(block).to_vec()
}

/// Declares and defines the function in `module`.
fn define(module: &mut JITModule, e: &Exec) -> Result<FuncId, String> {
    let (id, mut ctx) = declare(
        module,
        "vpop_program",
        &[None, Some(types::F64), None, None],
    )?;
    // The called functions, declared in the module as they are first needed.
    let mut sig1 = module.make_signature();
    sig1.params.push(AbiParam::new(types::F64));
    sig1.returns.push(AbiParam::new(types::F64));
    let mut sig2 = sig1.clone();
    sig2.params.push(AbiParam::new(types::F64));
    let mut sigi = sig1.clone();
    sigi.params.push(AbiParam::new(types::I32));
    let mut callees: [Option<FuncId>; 13] = [None; 13];
    for i in e.ins.iter() {
        if let Some(k) = callee(i.code) {
            if callees[k].is_none() {
                let (name, s) = match k {
                    0..=8 => (UNARY[k].0, &sig1),
                    9..=11 => (BINARY[k - 9].0, &sig2),
                    _ => (POWI, &sigi),
                };
                let f = module
                    .declare_function(name, Linkage::Import, s)
                    .map_err(|err| err.to_string())?;
                callees[k] = Some(f);
            }
        }
    }

    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let args = entry_block(&mut b);
        let (env, t, y, out) = (args[0], args[1], args[2], args[3]);
        let mut refs: [Option<FuncRef>; 13] = [None; 13];
        for (k, f) in callees.iter().enumerate() {
            if let Some(f) = f {
                refs[k] = Some(module.declare_func_in_func(*f, b.func));
            }
        }
        let flags = MemFlags::trusted().with_readonly();
        let y0 = 1;
        let p0 = y0 + e.inputs.states;
        let c0 = e.pre_base - e.consts.len();
        // The value at each environment index, loaded (or made) once.
        let mut at: Vec<Option<Value>> = vec![None; e.base + e.ins.len()];
        let value = |b: &mut FunctionBuilder, at: &mut Vec<Option<Value>>, j: u32| -> Value {
            let j = j as usize;
            if let Some(v) = at[j] {
                return v;
            }
            let v = if j == 0 {
                t
            } else if j < p0 {
                b.ins().load(types::F64, flags, y, 8 * (j - y0) as i32)
            } else if (c0..e.pre_base).contains(&j) {
                b.ins().f64const(e.consts[j - c0])
            } else {
                b.ins().load(types::F64, flags, env, 8 * j as i32)
            };
            at[j] = Some(v);
            v
        };
        let (zero, one) = (b.ins().f64const(0.0), b.ins().f64const(1.0));
        for (k, i) in e.ins.iter().enumerate() {
            let x = value(&mut b, &mut at, i.a);
            let mut op = |b: &mut FunctionBuilder, j: u32| value(b, &mut at, j);
            let cmp = |b: &mut FunctionBuilder, cc: FloatCC, x: Value, z: Value| {
                let c = b.ins().fcmp(cc, x, z);
                b.ins().select(c, one, zero)
            };
            let call = |b: &mut FunctionBuilder, args: &[Value]| -> Result<Value, String> {
                let k = callee(i.code).ok_or("not a call")?;
                let f = refs[k].ok_or("an undeclared function")?;
                let c = b.ins().call(f, args);
                Ok(b.inst_results(c)[0])
            };
            let v = match i.code {
                Code::Add | Code::Sub | Code::Mul | Code::Div => {
                    let z = op(&mut b, i.b);
                    match i.code {
                        Code::Add => b.ins().fadd(x, z),
                        Code::Sub => b.ins().fsub(x, z),
                        Code::Mul => b.ins().fmul(x, z),
                        _ => b.ins().fdiv(x, z),
                    }
                }
                Code::Neg => b.ins().fneg(x),
                Code::Not => cmp(&mut b, FloatCC::Equal, x, zero),
                Code::Lt | Code::Le | Code::Gt | Code::Ge | Code::Eq | Code::Ne => {
                    let cc = match i.code {
                        Code::Lt => FloatCC::LessThan,
                        Code::Le => FloatCC::LessThanOrEqual,
                        Code::Gt => FloatCC::GreaterThan,
                        Code::Ge => FloatCC::GreaterThanOrEqual,
                        Code::Eq => FloatCC::Equal,
                        _ => FloatCC::NotEqual,
                    };
                    let z = op(&mut b, i.b);
                    cmp(&mut b, cc, x, z)
                }
                Code::And | Code::Or => {
                    let z = op(&mut b, i.b);
                    let p = b.ins().fcmp(FloatCC::NotEqual, x, zero);
                    let q = b.ins().fcmp(FloatCC::NotEqual, z, zero);
                    let c = if i.code == Code::And {
                        b.ins().band(p, q)
                    } else {
                        b.ins().bor(p, q)
                    };
                    b.ins().select(c, one, zero)
                }
                Code::Select => {
                    let (u, w) = (op(&mut b, i.b), op(&mut b, i.c));
                    let c = b.ins().fcmp(FloatCC::NotEqual, x, zero);
                    b.ins().select(c, u, w)
                }
                Code::Sqrt => b.ins().sqrt(x),
                Code::Abs => b.ins().fabs(x),
                Code::Floor => b.ins().floor(x),
                Code::Ceil => b.ins().ceil(x),
                Code::Exp
                | Code::Log
                | Code::Log10
                | Code::Sin
                | Code::Cos
                | Code::Tanh
                | Code::Atan
                | Code::Erf
                | Code::Erfc => call(&mut b, &[x])?,
                Code::Pow | Code::Min | Code::Max => {
                    let z = op(&mut b, i.b);
                    call(&mut b, &[x, z])?
                }
                Code::Powi => {
                    let n = b.ins().iconst(types::I32, i64::from(i.b as i32));
                    call(&mut b, &[x, n])?
                }
                Code::MulAdd | Code::MulSub | Code::NegMulAdd => {
                    let (u, w) = (op(&mut b, i.b), op(&mut b, i.c));
                    let p = b.ins().fmul(x, u);
                    match i.code {
                        Code::MulAdd => b.ins().fadd(p, w),
                        Code::MulSub => b.ins().fsub(p, w),
                        _ => b.ins().fsub(w, p),
                    }
                }
                Code::MulMulAdd | Code::MulMulSub => {
                    let (u, w, z) = (op(&mut b, i.b), op(&mut b, i.c), op(&mut b, i.d));
                    let p = b.ins().fmul(x, u);
                    let q = b.ins().fmul(w, z);
                    if i.code == Code::MulMulAdd {
                        b.ins().fadd(p, q)
                    } else {
                        b.ins().fsub(p, q)
                    }
                }
            };
            at[e.base + k] = Some(v);
        }
        for (n, &r) in e.results.iter().enumerate() {
            let v = value(&mut b, &mut at, r);
            b.ins().store(MemFlags::trusted(), v, out, 8 * n as i32);
        }
        b.ins().return_(&[]);
        b.finalize();
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|err| format!("{err:?}"))?;
    Ok(id)
}
