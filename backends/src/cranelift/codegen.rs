//! Loop-IR kernels to Cranelift IR (CLIF), shared by the JIT and (later)
//! object emission.

use crate::BackendError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, BlockArg, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind,
    Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module as ClifModule};
use lopper_ir::loops::{
    buffers_stored, for_each_stmt, BinOp, BufferKind, Expr, Kernel, Module, ScalarType, Stmt, UnOp,
};
use lopper_ir::types::DType;
use lopper_ir::Dim;
use std::collections::{HashMap, HashSet};

/// Verifies `m` and builds the ISA of `target` (`opt_level = speed`):
/// position independent for shared objects, not for the JIT.
pub fn verified_isa(
    m: &Module,
    target: &crate::Target,
    pic: bool,
) -> Result<cranelift_codegen::isa::OwnedTargetIsa, BackendError> {
    lopper_ir::loops::verify_module(m).map_err(|errs| {
        BackendError::Codegen(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    target.cranelift_isa(pic)
}

/// The C library functions kernels may call.
const LIBM: [(UnOp, &str); 4] = [
    (UnOp::Exp, "expf"),
    (UnOp::Log, "logf"),
    (UnOp::Tanh, "tanhf"),
    (UnOp::Erf, "erff"),
];

/// Declares the C library functions in `module`.
pub fn declare_libm(module: &mut dyn ClifModule) -> Result<Vec<(UnOp, FuncId)>, BackendError> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::F32));
    sig.returns.push(AbiParam::new(types::F32));
    LIBM.iter()
        .map(|(op, name)| Ok((*op, module.declare_function(name, Linkage::Import, &sig)?)))
        .collect()
}

/// The signature every kernel has: two pointers.
pub fn kernel_signature(module: &dyn ClifModule) -> cranelift_codegen::ir::Signature {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// The flags of a `bitcast` between vector types of different lanes
/// (Cranelift asks for the byte order).
fn lane_bitcast() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Where a buffer name points inside a kernel: a base address and strides.
struct Array {
    base: Value,
    /// The extent of each dimension (what bounds checks compare with).
    extents: Vec<Value>,
    strides: Vec<Value>,
    /// The strides in elements where they do not depend on a symbolic size.
    static_strides: Vec<Option<i64>>,
    /// The integer type of an index array; `None` for `f32` data.
    index: Option<DType>,
}

struct Lowerer<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    sizes: HashMap<String, Value>,
    arrays: Vec<HashMap<String, Array>>,
    vars: Vec<HashMap<String, (Variable, ScalarType)>>,
    libm: HashMap<UnOp, FuncRef>,
    checks: Option<BoundsChecks>,
    /// For each open block, how many of its FMAs take each factor.
    fma_factors: Vec<HashMap<String, usize>>,
    /// The locals that never hold NaN (`never_nan_locals`).
    never_nan: HashSet<String>,
    /// The buffers this kernel never writes (`readonly_buffers`).
    readonly: HashSet<String>,
    /// The statements around the current one, innermost last: a loop's
    /// variable, or `None` for the branch of an `if`.
    scopes: Vec<Option<String>>,
    /// The loops around the current statement, innermost last: each one's
    /// variable and first value.
    loop_starts: Vec<(Variable, Value)>,
}

/// How many FMAs assigned by the statements of `body` (not of blocks
/// inside) take each expression as a factor, by its text.
fn fma_factor_uses(body: &[Stmt]) -> HashMap<String, usize> {
    let mut uses = HashMap::new();
    for s in body {
        if let Stmt::Let {
            init: Expr::Fma(a, c, _),
            ..
        }
        | Stmt::Assign {
            value: Expr::Fma(a, c, _),
            ..
        } = s
        {
            for factor in [a, c] {
                *uses.entry(lopper_ir::loops::expr_text(factor)).or_insert(0) += 1;
            }
        }
    }
    uses
}

/// What `--bounds-check` code calls when an access is out of bounds: the C
/// library's `write` (the message, to standard error) and `abort`, and one
/// message per buffer of the kernel.
struct BoundsChecks {
    write: FuncRef,
    abort: FuncRef,
    messages: HashMap<String, (cranelift_codegen::ir::GlobalValue, usize)>,
}

/// Declares what bounds checks call in kernel `k` and the messages they
/// print (one per buffer: the kernel and the buffer by name).
fn declare_bounds_checks(
    module: &mut dyn ClifModule,
    k: &Kernel,
    func: &mut cranelift_codegen::ir::Function,
) -> Result<BoundsChecks, BackendError> {
    let mut write_sig = module.make_signature();
    for _ in 0..3 {
        write_sig.params.push(AbiParam::new(types::I64));
    }
    write_sig.returns.push(AbiParam::new(types::I64));
    let write = module.declare_function("write", Linkage::Import, &write_sig)?;
    let abort = module.declare_function("abort", Linkage::Import, &module.make_signature())?;
    let mut messages = HashMap::new();
    let mut buffers = lopper_ir::loops::buffers_used(&k.body);
    buffers.sort();
    buffers.dedup();
    for buffer in buffers {
        let text = format!(
            "lopper: out-of-bounds access to %{buffer} in kernel @{} (compiled with --bounds-check)\n",
            k.name
        );
        let id = module.declare_anonymous_data(false, false)?;
        let mut data = cranelift_module::DataDescription::new();
        data.define(text.clone().into_bytes().into_boxed_slice());
        module.define_data(id, &data)?;
        messages.insert(buffer, (module.declare_data_in_func(id, func), text.len()));
    }
    Ok(BoundsChecks {
        write: module.declare_func_in_func(write, func),
        abort: module.declare_func_in_func(abort, func),
        messages,
    })
}

/// Strides in elements of a row-major array, where no symbolic extent
/// enters them.
fn static_strides(extents: &[Option<usize>]) -> Vec<Option<i64>> {
    let mut out = vec![Some(1i64); extents.len()];
    for d in (0..extents.len().saturating_sub(1)).rev() {
        out[d] = match (out[d + 1], extents[d + 1]) {
            (Some(s), Some(n)) => s.checked_mul(n as i64),
            _ => None,
        };
    }
    out
}

/// Splits `scale · e` into `Σ kᵢ·atomᵢ + constant`, where atoms are the
/// parts of `e` that are not sums, differences or products by constants;
/// `None` on overflow.
fn affine_terms(e: &Expr, scale: i64, out: &mut Vec<(Expr, i64)>) -> Option<i64> {
    match e {
        Expr::Int(c) => c.checked_mul(scale),
        Expr::Binary(BinOp::Add, a, b) => {
            affine_terms(a, scale, out)?.checked_add(affine_terms(b, scale, out)?)
        }
        Expr::Binary(BinOp::Sub, a, b) => {
            affine_terms(a, scale, out)?.checked_add(affine_terms(b, scale.checked_neg()?, out)?)
        }
        Expr::Binary(BinOp::Mul, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, Expr::Int(k)) | (Expr::Int(k), x) => affine_terms(x, scale.checked_mul(*k)?, out),
            _ => {
                out.push((e.clone(), scale));
                Some(0)
            }
        },
        Expr::Unary(UnOp::Neg, a) => affine_terms(a, scale.checked_neg()?, out),
        _ => {
            out.push((e.clone(), scale));
            Some(0)
        }
    }
}

/// The buffers kernel `k` reads but never writes, through any name: the
/// constants and inputs, and the buffers whose memory none of the kernel's
/// stores reach (a scratch buffer an earlier kernel wrote).
fn readonly_buffers(lir: &Module, k: &Kernel) -> HashSet<String> {
    let stored = buffers_stored(&k.body);
    let written: HashSet<&str> = stored
        .iter()
        .filter(|b| lir.buffer(b).is_some())
        .map(|b| lir.storage_of(b))
        .collect();
    lir.buffers
        .iter()
        .filter(|b| {
            let storage = lir.storage_of(&b.name);
            let kind = lir.buffer(storage).map(|s| s.kind);
            matches!(kind, Some(BufferKind::Const | BufferKind::In))
                || (kind == Some(BufferKind::Scratch) && !written.contains(storage))
        })
        .map(|b| b.name.clone())
        .collect()
}

/// The locals of `body` that never hold NaN: every `let` of the name starts
/// it at a number (or a broadcast one) and every assignment takes the max
/// or min of it and something else, which `float_min_max` keeps a number
/// (a max pool's accumulator).
fn never_nan_locals(body: &[Stmt]) -> HashSet<String> {
    fn number(e: &Expr) -> bool {
        match e {
            Expr::Float(v) => !v.is_nan(),
            Expr::Broadcast(v, _) => number(v),
            _ => false,
        }
    }
    let mut kept: HashMap<String, bool> = HashMap::new();
    for_each_stmt(body, &mut |s| {
        let (var, ok) = match s {
            Stmt::Let { var, init, .. } => (var, number(init)),
            Stmt::Assign { var, value } => (
                var,
                matches!(value, Expr::Binary(BinOp::Max | BinOp::Min, a, b)
                    if [a, b].iter().any(|e| matches!(&***e, Expr::Var(v) if v == var))),
            ),
            _ => return,
        };
        *kept.entry(var.clone()).or_insert(ok) &= ok;
    });
    kept.into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(v, _)| v)
        .collect()
}

/// Fills `ctx` with the CLIF of kernel `k`; with `bounds_check`, every load
/// and store first checks its indices against the buffer's extents and, out
/// of bounds, prints which kernel and buffer and aborts.
pub fn define_kernel(
    module: &mut dyn ClifModule,
    lir: &Module,
    k: &Kernel,
    libm: &[(UnOp, FuncId)],
    ctx: &mut Context,
    bounds_check: bool,
) -> Result<(), BackendError> {
    ctx.func.signature = kernel_signature(module);
    let checks = if bounds_check {
        Some(declare_bounds_checks(module, k, &mut ctx.func)?)
    } else {
        None
    };
    let frontend_config = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let (buffers, sizes_ptr) = (b.block_params(entry)[0], b.block_params(entry)[1]);
    let flags = MemFlagsData::trusted();
    let mut sizes = HashMap::new();
    for (i, s) in lir.sizes.iter().enumerate() {
        let v = b.ins().load(types::I64, flags, sizes_ptr, (8 * i) as i32);
        sizes.insert(s.clone(), v);
    }
    let mut refs = HashMap::new();
    for (op, id) in libm {
        refs.insert(*op, module.declare_func_in_func(*id, b.func));
    }
    let mut l = Lowerer {
        b: &mut b,
        sizes,
        arrays: vec![HashMap::new()],
        vars: vec![HashMap::new()],
        libm: refs,
        readonly: readonly_buffers(lir, k),
        never_nan: never_nan_locals(&k.body),
        scopes: Vec::new(),
        loop_starts: Vec::new(),
        checks,
        fma_factors: Vec::new(),
    };
    for (i, p) in k.params.iter().enumerate() {
        let buffer = lir
            .buffer(p)
            .ok_or_else(|| BackendError::Codegen(format!("@{}: unknown buffer %{p}", k.name)))?;
        let base = l.b.ins().load(types::I64, flags, buffers, (8 * i) as i32);
        let extents: Vec<Value> = buffer
            .ty
            .shape
            .0
            .iter()
            .map(|d| match d {
                Dim::Static(n) => l.b.ins().iconst(types::I64, *n as i64),
                Dim::Symbol(s) => l.sizes[s],
            })
            .collect();
        let strides = l.strides(&extents);
        let static_extents: Vec<Option<usize>> =
            buffer.ty.shape.0.iter().map(Dim::as_static).collect();
        let index = buffer.index_data.is_some().then_some(buffer.ty.dtype);
        l.arrays[0].insert(
            p.clone(),
            Array {
                base,
                extents,
                strides,
                static_strides: static_strides(&static_extents),
                index,
            },
        );
    }
    l.block(&k.body)?;
    l.b.ins().return_(&[]);
    l.b.seal_all_blocks();
    b.finalize(frontend_config);
    Ok(())
}

impl Lowerer<'_, '_> {
    fn strides(&mut self, extents: &[Value]) -> Vec<Value> {
        let mut strides = vec![self.b.ins().iconst(types::I64, 1); extents.len()];
        for d in (0..extents.len().saturating_sub(1)).rev() {
            strides[d] = self.b.ins().imul(strides[d + 1], extents[d + 1]);
        }
        strides
    }

    fn err(&self, message: String) -> BackendError {
        BackendError::Codegen(message)
    }

    fn var(&self, name: &str) -> Result<(Variable, ScalarType), BackendError> {
        self.vars
            .iter()
            .rev()
            .find_map(|s| s.get(name).copied())
            .ok_or_else(|| self.err(format!("undefined %{name}")))
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), BackendError> {
        self.vars.push(HashMap::new());
        self.arrays.push(HashMap::new());
        self.fma_factors.push(fma_factor_uses(body));
        // The variables assigned since the last sequence point, in order.
        let mut assigned: Vec<&str> = Vec::new();
        for s in body {
            if let Stmt::Assign { var, .. } = s {
                if assigned.contains(&var.as_str()) {
                    // One variable's chain is ordered by its data already.
                    if assigned.len() > 1 {
                        self.sequence_point(&assigned)?;
                    }
                    assigned.clear();
                }
                assigned.push(var);
            }
            self.stmt(s)?;
        }
        self.vars.pop();
        self.arrays.pop();
        self.fma_factors.pop();
        Ok(())
    }

    /// Ends the current Cranelift block with a branch that passes `vars` to
    /// the next, where they are block parameters.
    ///
    /// Cranelift's optimizer places a pure value where it is first used, and
    /// it elaborates a block's jump arguments one after another, each with
    /// everything it depends on. An unrolled reduction whose results are
    /// first used by the loop's back edge is then rebuilt one accumulator's
    /// whole chain after another: every value the chains share is live
    /// across all of them, and they spill. A sequence point before a
    /// variable's second assignment in a statement list keeps the order the
    /// loop IR gives: each step's multiply-adds are placed by the branch that
    /// ends the step. The branch has a second edge, never taken (the loop's
    /// variable below its start), passing zeros: a block parameter with one
    /// incoming value would be folded away, and the steps merged again.
    fn sequence_point(&mut self, vars: &[&str]) -> Result<(), BackendError> {
        let Some(&(loop_var, start)) = self.loop_starts.last() else {
            return Ok(());
        };
        let next = self.b.create_block();
        let (mut values, mut zeros, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for name in vars {
            let (v, ty) = self.var(name)?;
            let clif_type = self.clif_type(ty)?;
            values.push(BlockArg::Value(self.b.use_var(v)));
            let zero = match ty {
                ScalarType::F32 => self.b.ins().f32const(0.0),
                ScalarType::Vector(_) => {
                    let zero = self.b.ins().f32const(0.0);
                    self.b.ins().splat(clif_type, zero)
                }
                ScalarType::Index | ScalarType::Bool => self.b.ins().iconst(clif_type, 0),
            };
            zeros.push(BlockArg::Value(zero));
            targets.push((v, self.b.append_block_param(next, clif_type)));
        }
        let i = self.b.use_var(loop_var);
        let never = self.b.ins().icmp(IntCC::SignedLessThan, i, start);
        self.b.ins().brif(never, next, &zeros, next, &values);
        self.b.seal_block(next);
        self.b.switch_to_block(next);
        for (v, param) in targets {
            self.b.def_var(v, param);
        }
        Ok(())
    }

    fn clif_type(&self, ty: ScalarType) -> Result<types::Type, BackendError> {
        Ok(match ty {
            ScalarType::Index => types::I64,
            ScalarType::F32 => types::F32,
            ScalarType::Bool => types::I8,
            ScalarType::Vector(4) => types::F32X4,
            ScalarType::Vector(n) => {
                return Err(self.err(format!(
                    "Cranelift vectors are 128 bits (f32x4); f32x{n} needs another backend"
                )))
            }
        })
    }

    fn vector_type(&self, lanes: u32) -> Result<types::Type, BackendError> {
        self.clif_type(ScalarType::Vector(lanes))
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), BackendError> {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                // Rotated: a guard, then a body that tests at its end. The
                // body block heads the loop and runs whenever the loop is
                // entered, so Cranelift can hoist loop-invariant address
                // arithmetic out of it.
                let lo = self.expr(lo)?;
                let hi = self.expr(hi)?;
                let v = self.b.declare_var(types::I64);
                self.b.def_var(v, lo);
                let (inner, exit) = (self.b.create_block(), self.b.create_block());
                let enter = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
                self.b.ins().brif(enter, inner, &[], exit, &[]);
                self.b.switch_to_block(inner);
                self.vars
                    .push(HashMap::from([(var.clone(), (v, ScalarType::Index))]));
                self.scopes.push(Some(var.clone()));
                self.loop_starts.push((v, lo));
                self.block(body)?;
                self.loop_starts.pop();
                self.scopes.pop();
                self.vars.pop();
                let current = self.b.use_var(v);
                let next = self.b.ins().iadd_imm_s(current, 1);
                self.b.def_var(v, next);
                let more = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
                self.b.ins().brif(more, inner, &[], exit, &[]);
                self.b.switch_to_block(exit);
            }
            Stmt::Let { var, ty, init } => {
                let value = self.expr(init)?;
                let clif_type = self.clif_type(*ty)?;
                let v = self.b.declare_var(clif_type);
                self.b.def_var(v, value);
                self.vars
                    .last_mut()
                    .expect("a scope is open")
                    .insert(var.clone(), (v, *ty));
            }
            Stmt::Assign { var, value } => {
                let value = self.expr(value)?;
                let (v, _) = self.var(var)?;
                self.b.def_var(v, value);
            }
            Stmt::Store {
                buffer,
                indices,
                value,
            } => {
                let value = self.expr(value)?;
                self.check_access(buffer, indices, 1)?;
                let (addr, disp) = self.address(buffer, indices)?;
                self.b
                    .ins()
                    .store(MemFlagsData::trusted(), value, addr, disp);
            }
            Stmt::VStore {
                buffer,
                indices,
                value,
                lanes,
            } => {
                self.vector_type(*lanes)?;
                let value = self.expr(value)?;
                self.check_access(buffer, indices, *lanes)?;
                let (addr, disp) = self.address(buffer, indices)?;
                // Lanes need not be 16-byte aligned.
                self.b
                    .ins()
                    .store(MemFlagsData::new().with_notrap(), value, addr, disp);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(cond)?;
                let (t, e, merge) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().brif(c, t, &[], e, &[]);
                self.scopes.push(None);
                self.b.switch_to_block(t);
                self.block(then)?;
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(e);
                self.block(otherwise)?;
                self.b.ins().jump(merge, &[]);
                self.scopes.pop();
                self.b.switch_to_block(merge);
            }
            Stmt::Alloc { name, dims } => {
                let bytes = dims.iter().product::<usize>() * 4;
                let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    bytes as u32,
                    4,
                ));
                let base = self.b.ins().stack_addr(types::I64, slot, 0);
                let extents: Vec<Value> = dims
                    .iter()
                    .map(|&d| self.b.ins().iconst(types::I64, d as i64))
                    .collect();
                let strides = self.strides(&extents);
                let static_extents: Vec<Option<usize>> = dims.iter().map(|&d| Some(d)).collect();
                self.arrays.last_mut().expect("a scope is open").insert(
                    name.clone(),
                    Array {
                        base,
                        extents,
                        strides,
                        static_strides: static_strides(&static_extents),
                        index: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// With bounds checks on: every index of an access of `lanes` elements
    /// along the last dimension lies in its extent, or the kernel prints
    /// which access failed and aborts.
    fn check_access(
        &mut self,
        buffer: &str,
        indices: &[Expr],
        lanes: u32,
    ) -> Result<(), BackendError> {
        let Some(checks) = &self.checks else {
            return Ok(());
        };
        let (write, abort) = (checks.write, checks.abort);
        let (message, length) = *checks
            .messages
            .get(buffer)
            .ok_or_else(|| self.err(format!("no bounds message for %{buffer}")))?;
        let extents = self.array(buffer)?.extents.clone();
        let mut inside = None;
        for (i, (e, &extent)) in indices.iter().zip(&extents).enumerate() {
            let mut v = self.expr(e)?;
            if i + 1 == indices.len() && lanes > 1 {
                v = self.b.ins().iadd_imm_s(v, i64::from(lanes) - 1);
            }
            // Unsigned: a negative index is a huge one.
            let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, v, extent);
            inside = Some(match inside {
                None => ok,
                Some(all) => self.b.ins().band(all, ok),
            });
        }
        let Some(inside) = inside else {
            return Ok(());
        };
        let (fine, fail) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(inside, fine, &[], fail, &[]);
        self.b.switch_to_block(fail);
        self.b.set_cold_block(fail);
        let stderr = self.b.ins().iconst(types::I64, 2);
        let text = self.b.ins().symbol_value(types::I64, message);
        let length = self.b.ins().iconst(types::I64, length as i64);
        self.b.ins().call(write, &[stderr, text, length]);
        self.b.ins().call(abort, &[]);
        self.b
            .ins()
            .trap(cranelift_codegen::ir::TrapCode::HEAP_OUT_OF_BOUNDS);
        self.b.switch_to_block(fine);
        Ok(())
    }

    fn array(&self, buffer: &str) -> Result<&Array, BackendError> {
        self.arrays
            .iter()
            .rev()
            .find_map(|s| s.get(buffer))
            .ok_or_else(|| self.err(format!("unknown buffer %{buffer}")))
    }

    /// The address of an element and a constant byte displacement.
    ///
    /// Indices are split into affine terms over the kernel's variables
    /// (`%i0.o * 4 + 2` is 4·`%i0.o` + 2): the constant goes into the
    /// displacement of the load or store, and the terms are added to the
    /// base outermost-scope first. Accesses that differ only by constants
    /// (the rows and columns of an unrolled tile) then share one address
    /// computation, and its loop-invariant part sits apart from the
    /// changing one.
    fn address(&mut self, buffer: &str, indices: &[Expr]) -> Result<(Value, i32), BackendError> {
        let (base, strides, static_strides, index) = {
            let a = self.array(buffer)?;
            (a.base, a.strides.clone(), a.static_strides.clone(), a.index)
        };
        let element = index.map_or(4, |t| t.bytes() as i64);
        let mut terms: Vec<(Expr, i64)> = Vec::new();
        let mut constant: i64 = 0;
        let mut dynamic = Vec::new();
        for (i, e) in indices.iter().enumerate() {
            let split = static_strides[i].and_then(|s| {
                let mut t = Vec::new();
                let c = affine_terms(e, s.checked_mul(element)?, &mut t)?;
                Some((t, c))
            });
            match split {
                Some((t, c)) => {
                    constant = constant
                        .checked_add(c)
                        .ok_or_else(|| self.err("address overflow".into()))?;
                    for (atom, k) in t {
                        match terms.iter_mut().find(|(a, _)| *a == atom) {
                            Some(slot) => slot.1 += k,
                            None => terms.push((atom, k)),
                        }
                    }
                }
                None => dynamic.push((e, strides[i])),
            }
        }
        terms.retain(|(_, k)| *k != 0);
        // Outer scopes first, so the inner loop adds only its own terms.
        let mut ordered: Vec<(usize, Expr, i64)> = terms
            .into_iter()
            .map(|(a, k)| (self.depth(&a), a, k))
            .collect();
        ordered.sort_by_key(|(d, _, _)| *d);
        let mut addr = base;
        for (_, atom, k) in ordered {
            let v = self.expr(&atom)?;
            let term = self.b.ins().imul_imm_s(v, k);
            addr = self.b.ins().iadd(addr, term);
        }
        for (e, stride) in dynamic {
            let v = self.expr(e)?;
            let elements = self.b.ins().imul(v, stride);
            let bytes = self.b.ins().imul_imm_s(elements, element);
            addr = self.b.ins().iadd(addr, bytes);
        }
        match i32::try_from(constant) {
            Ok(disp) => Ok((addr, disp)),
            Err(_) => {
                let c = self.b.ins().iconst(types::I64, constant);
                Ok((self.b.ins().iadd(addr, c), 0))
            }
        }
    }

    /// `max(x, y)` (or `min`) without branches, with the semantics of
    /// Rust's `f32::max`: a NaN operand gives the other one. Cranelift's own
    /// `fmax` branches on equal operands (for signed zeros), which
    /// mispredicts on the runs of zeros a ReLU leaves. Scalars go through
    /// lane 0 of a vector. The comparison is written as Cranelift matches
    /// it to one `maxps` (`minps`): `y < x ? x : y`; only a NaN in `y`
    /// needs a second select, which a constant `y` (a ReLU's zero, a
    /// pool's `-inf`) never is.
    fn float_min_max(
        &mut self,
        max: bool,
        x: Value,
        y: Value,
        y_never_nan: bool,
        scalar: bool,
    ) -> Value {
        let (x, y) = if scalar {
            (
                self.b.ins().splat(types::F32X4, x),
                self.b.ins().splat(types::F32X4, y),
            )
        } else {
            (x, y)
        };
        let flags = lane_bitcast();
        let wins = if max {
            self.b.ins().fcmp(FloatCC::LessThan, y, x)
        } else {
            self.b.ins().fcmp(FloatCC::LessThan, x, y)
        };
        let wins = self.b.ins().bitcast(types::F32X4, flags, wins);
        let best = self.b.ins().bitselect(wins, x, y);
        if y_never_nan {
            return if scalar {
                self.b.ins().extractlane(best, 0u8)
            } else {
                best
            };
        }
        let y_nan = self.b.ins().fcmp(FloatCC::Unordered, y, y);
        let y_nan = self.b.ins().bitcast(types::F32X4, flags, y_nan);
        let r = self.b.ins().bitselect(y_nan, x, best);
        if scalar {
            self.b.ins().extractlane(r, 0u8)
        } else {
            r
        }
    }

    fn splat_f32(&mut self, v: f32) -> Value {
        let c = self.b.ins().f32const(v);
        self.b.ins().splat(types::F32X4, c)
    }

    /// `e^x` lane by lane in registers: `x = n·ln 2 + r` with `|r| <= ln 2 / 2`,
    /// a degree-6 Taylor polynomial for `e^r` (relative error about 2e-7)
    /// and `2^n` built in the exponent bits. Inputs are clamped to the
    /// range where the result is a normal `f32`; NaN stays NaN.
    fn vector_exp(&mut self, x: Value) -> Value {
        let (lo, hi) = (self.splat_f32(-87.3), self.splat_f32(88.7));
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let log2e = self.splat_f32(std::f32::consts::LOG2_E);
        let scaled = self.b.ins().fmul(x, log2e);
        let n = self.b.ins().nearest(scaled);
        // r = x - n·ln 2, with ln 2 split in two for precision.
        let ln2_hi = self.splat_f32(-0.693_145_75);
        let ln2_lo = self.splat_f32(-1.428_606_8e-6);
        let r = self.b.ins().fma(n, ln2_hi, x);
        let r = self.b.ins().fma(n, ln2_lo, r);
        let mut p = self.splat_f32(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            let c = self.splat_f32(c);
            p = self.b.ins().fma(p, r, c);
        }
        let n = self.b.ins().fcvt_to_sint_sat(types::I32X4, n);
        let bias = self.b.ins().iconst(types::I32, 127);
        let bias = self.b.ins().splat(types::I32X4, bias);
        let biased = self.b.ins().iadd(n, bias);
        let bits = self.b.ins().ishl_imm_u(biased, 23);
        let flags = lane_bitcast();
        let two_n = self.b.ins().bitcast(types::F32X4, flags, bits);
        self.b.ins().fmul(p, two_n)
    }

    /// `erf(x)` lane by lane: Abramowitz and Stegun 7.1.26,
    /// `1 - t·(a1 + t·(a2 + ...))·e^(-x²)` with `t = 1 / (1 + p·|x|)`,
    /// absolute error below 1.5e-7, sign restored at the end.
    fn vector_erf(&mut self, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        let p = self.splat_f32(0.327_591_1);
        let one = self.splat_f32(1.0);
        let d = self.b.ins().fma(p, ax, one);
        let t = self.b.ins().fdiv(one, d);
        let mut poly = self.splat_f32(1.061_405_4);
        for c in [-1.453_152, 1.421_413_7, -0.284_496_72, 0.254_829_6] {
            let c = self.splat_f32(c);
            poly = self.b.ins().fma(poly, t, c);
        }
        poly = self.b.ins().fmul(poly, t);
        let square = self.b.ins().fmul(ax, ax);
        let minus = self.b.ins().fneg(square);
        let e = self.vector_exp(minus);
        let tail = self.b.ins().fmul(poly, e);
        let y = self.b.ins().fsub(one, tail);
        // The sign bit of x, the rest of y (y >= 0).
        let sign = self.splat_f32(-0.0);
        self.b.ins().bitselect(sign, x, y)
    }

    /// How deep the innermost scope that `e` depends on is (0: the kernel).
    fn depth(&self, e: &Expr) -> usize {
        match e {
            Expr::Var(v) => self
                .vars
                .iter()
                .rposition(|scope| scope.contains_key(v))
                .unwrap_or(0),
            Expr::Binary(_, a, b) => self.depth(a).max(self.depth(b)),
            Expr::Unary(_, a) => self.depth(a),
            Expr::Load { indices, .. } => indices.iter().map(|i| self.depth(i)).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The flags of a load: free to move (and to be scheduled next to its
    /// use rather than where it was written, which spilled accumulators)
    /// when it reads memory no kernel writes, its address moves with the
    /// loop around it and no `if` lies between: it then cannot leave that
    /// loop, which sits inside every guard that keeps it in bounds. Never
    /// with bounds checks (it could move above its check).
    fn load_flags(&self, buffer: &str, indices: &[Expr]) -> MemFlagsData {
        let flags = MemFlagsData::new().with_notrap();
        let movable = self.checks.is_none()
            && self.readonly.contains(buffer)
            && match self.scopes.last() {
                Some(Some(var)) => indices.iter().any(|i| i.reads(&|v| v == var)),
                _ => false,
            };
        if movable {
            flags.with_readonly().with_can_move()
        } else {
            flags
        }
    }

    /// Cranelift's `shuffle` of the bytes of `x` and `y` (placed end to
    /// end) by the constant selector `bytes`.
    fn byte_shuffle(&mut self, x: Value, y: Value, bytes: Vec<u8>) -> Value {
        let mask = self
            .b
            .func
            .dfg
            .immediates
            .push(cranelift_codegen::ir::ConstantData::from(bytes));
        self.b.ins().shuffle(x, y, mask)
    }

    fn type_of(&self, e: &Expr) -> ScalarType {
        crate::expr_type(e, &|v| self.var(v).ok().map(|(_, t)| t), &|b| {
            self.array(b).is_ok_and(|a| a.index.is_some())
        })
    }

    fn expr(&mut self, e: &Expr) -> Result<Value, BackendError> {
        Ok(match e {
            Expr::Int(v) => self.b.ins().iconst(types::I64, *v),
            Expr::Float(v) => self.b.ins().f32const(*v),
            Expr::Size(s) => *self
                .sizes
                .get(s)
                .ok_or_else(|| self.err(format!("unknown size `{s}`")))?,
            Expr::Var(v) => {
                let (var, _) = self.var(v)?;
                self.b.use_var(var)
            }
            Expr::Load { buffer, indices } if self.array(buffer)?.index.is_some() => {
                let dtype = self.array(buffer)?.index;
                self.check_access(buffer, indices, 1)?;
                let (addr, disp) = self.address(buffer, indices)?;
                let (flags, ins) = (MemFlagsData::trusted(), self.b.ins());
                match dtype {
                    Some(DType::I8) => ins.sload8(types::I64, flags, addr, disp),
                    Some(DType::I16) => ins.sload16(types::I64, flags, addr, disp),
                    Some(DType::I32) => ins.sload32(flags, addr, disp),
                    _ => ins.load(types::I64, flags, addr, disp),
                }
            }
            Expr::Load { buffer, indices } => {
                self.check_access(buffer, indices, 1)?;
                let (addr, disp) = self.address(buffer, indices)?;
                self.b
                    .ins()
                    .load(types::F32, MemFlagsData::trusted(), addr, disp)
            }
            Expr::Binary(op @ (BinOp::Min | BinOp::Max), a, c)
                if matches!(self.type_of(a), ScalarType::F32 | ScalarType::Vector(_)) =>
            {
                let scalar = self.type_of(a) == ScalarType::F32;
                let (x, y) = (self.expr(a)?, self.expr(c)?);
                let never_nan = |e: &Expr| match e {
                    Expr::Float(v) => !v.is_nan(),
                    Expr::Broadcast(v, _) => matches!(&**v, Expr::Float(v) if !v.is_nan()),
                    Expr::Var(v) => self.never_nan.contains(v),
                    _ => false,
                };
                if never_nan(c) {
                    self.float_min_max(*op == BinOp::Max, x, y, true, scalar)
                } else if never_nan(a) {
                    // The same result but on ties of signed zeros, with
                    // the number as the operand kept when the other is NaN.
                    self.float_min_max(*op == BinOp::Max, y, x, true, scalar)
                } else {
                    self.float_min_max(*op == BinOp::Max, x, y, false, scalar)
                }
            }
            Expr::Binary(op, a, c) => {
                let float = matches!(self.type_of(a), ScalarType::F32 | ScalarType::Vector(_));
                let (x, y) = (self.expr(a)?, self.expr(c)?);
                let ins = self.b.ins();
                match (op, float) {
                    (BinOp::Add, false) => ins.iadd(x, y),
                    (BinOp::Sub, false) => ins.isub(x, y),
                    (BinOp::Mul, false) => ins.imul(x, y),
                    (BinOp::Div, false) => ins.sdiv(x, y),
                    (BinOp::Rem, false) => ins.srem(x, y),
                    (BinOp::Min, false) => ins.smin(x, y),
                    (BinOp::Max, false) => ins.smax(x, y),
                    (BinOp::Add, true) => ins.fadd(x, y),
                    (BinOp::Sub, true) => ins.fsub(x, y),
                    (BinOp::Mul, true) => ins.fmul(x, y),
                    (BinOp::Div, true) => ins.fdiv(x, y),
                    (BinOp::Min, true) => ins.fmin(x, y),
                    (BinOp::Max, true) => ins.fmax(x, y),
                    (BinOp::Rem, true) => return Err(self.err("`%` on f32".into())),
                    (BinOp::And, _) => ins.band(x, y),
                    (BinOp::Or, _) => ins.bor(x, y),
                    (cmp, false) => ins.icmp(
                        match cmp {
                            BinOp::Lt => IntCC::SignedLessThan,
                            BinOp::Le => IntCC::SignedLessThanOrEqual,
                            BinOp::Gt => IntCC::SignedGreaterThan,
                            BinOp::Ge => IntCC::SignedGreaterThanOrEqual,
                            BinOp::Eq => IntCC::Equal,
                            _ => IntCC::NotEqual,
                        },
                        x,
                        y,
                    ),
                    (cmp, true) => ins.fcmp(
                        match cmp {
                            BinOp::Lt => FloatCC::LessThan,
                            BinOp::Le => FloatCC::LessThanOrEqual,
                            BinOp::Gt => FloatCC::GreaterThan,
                            BinOp::Ge => FloatCC::GreaterThanOrEqual,
                            BinOp::Eq => FloatCC::Equal,
                            _ => FloatCC::NotEqual,
                        },
                        x,
                        y,
                    ),
                }
            }
            Expr::Unary(op, a) => {
                let operand_type = self.type_of(a);
                let x = self.expr(a)?;
                match op {
                    UnOp::Neg if operand_type == ScalarType::Index => self.b.ins().ineg(x),
                    UnOp::ToFloat => self.b.ins().fcvt_from_sint(types::F32, x),
                    UnOp::Neg => self.b.ins().fneg(x),
                    UnOp::Sqrt => self.b.ins().sqrt(x),
                    UnOp::Floor => self.b.ins().floor(x),
                    UnOp::Exp if operand_type == ScalarType::Vector(4) => self.vector_exp(x),
                    UnOp::Erf if operand_type == ScalarType::Vector(4) => self.vector_erf(x),
                    other => {
                        let f = *self.libm.get(other).ok_or_else(|| {
                            self.err(format!("no function for `{}`", other.name()))
                        })?;
                        match operand_type {
                            // The C library works lane by lane.
                            ScalarType::Vector(lanes) => {
                                let mut v = x;
                                for lane in 0..lanes as u8 {
                                    let scalar = self.b.ins().extractlane(x, lane);
                                    let call = self.b.ins().call(f, &[scalar]);
                                    let r = self.b.inst_results(call)[0];
                                    v = self.b.ins().insertlane(v, r, lane);
                                }
                                v
                            }
                            _ => {
                                let call = self.b.ins().call(f, &[x]);
                                self.b.inst_results(call)[0]
                            }
                        }
                    }
                }
            }
            Expr::VLoad {
                buffer,
                indices,
                lanes,
            } => {
                let ty = self.vector_type(*lanes)?;
                self.check_access(buffer, indices, *lanes)?;
                let flags = self.load_flags(buffer, indices);
                let (addr, disp) = self.address(buffer, indices)?;
                self.b.ins().load(ty, flags, addr, disp)
            }
            Expr::Broadcast(v, lanes) => {
                let ty = self.vector_type(*lanes)?;
                let x = self.expr(v)?;
                self.b.ins().splat(ty, x)
            }
            Expr::Horizontal(op, v) => {
                let ScalarType::Vector(lanes) = self.type_of(v) else {
                    return Err(self.err("a horizontal reduction of a scalar".into()));
                };
                let x = self.expr(v)?;
                let mut acc = self.b.ins().extractlane(x, 0u8);
                for lane in 1..lanes as u8 {
                    let e = self.b.ins().extractlane(x, lane);
                    acc = match op {
                        BinOp::Max | BinOp::Min => {
                            self.float_min_max(*op == BinOp::Max, acc, e, false, true)
                        }
                        _ => self.b.ins().fadd(acc, e),
                    };
                }
                acc
            }
            Expr::Shuffle(a, c, mask) => {
                // Cranelift shuffles bytes: each f32 lane is four of them.
                self.vector_type(mask.len() as u32)?;
                let bytes: Vec<u8> = mask
                    .iter()
                    .flat_map(|&l| (0..4).map(move |byte| (4 * l + byte) as u8))
                    .collect();
                let flags = lane_bitcast();
                let (x, y) = (self.expr(a)?, self.expr(c)?);
                let x = self.b.ins().bitcast(types::I8X16, flags, x);
                let y = self.b.ins().bitcast(types::I8X16, flags, y);
                let r = self.byte_shuffle(x, y, bytes);
                self.b.ins().bitcast(types::F32X4, flags, r)
            }
            Expr::Permute {
                table,
                buffer,
                indices,
            } => {
                // Four lane numbers, one byte each, become the byte
                // selector `4 * lane + k` of a byte swizzle (`pshufb`).
                let ScalarType::Vector(lanes) = self.type_of(table) else {
                    return Err(self.err("a permute of a scalar".into()));
                };
                self.vector_type(lanes)?;
                let t = self.expr(table)?;
                self.check_access(buffer, indices, lanes)?;
                let (addr, disp) = self.address(buffer, indices)?;
                let numbers = self
                    .b
                    .ins()
                    .load(types::I32, MemFlagsData::trusted(), addr, disp);
                let flags = lane_bitcast();
                let numbers = self.b.ins().scalar_to_vector(types::I32X4, numbers);
                let numbers = self.b.ins().bitcast(types::I8X16, flags, numbers);
                let each = self.byte_shuffle(numbers, numbers, (0..16).map(|b| b / 4).collect());
                let twice = self.b.ins().iadd(each, each);
                let four_times = self.b.ins().iadd(twice, twice);
                let within: Vec<u8> = (0..16).map(|byte| byte % 4).collect();
                let within = self
                    .b
                    .func
                    .dfg
                    .constants
                    .insert(cranelift_codegen::ir::ConstantData::from(within));
                let within = self.b.ins().vconst(types::I8X16, within);
                let selector = self.b.ins().iadd(four_times, within);
                let bytes = self.b.ins().bitcast(types::I8X16, flags, t);
                let picked = self.b.ins().swizzle(bytes, selector);
                self.b.ins().bitcast(types::F32X4, flags, picked)
            }
            Expr::Fma(a, c, d) => {
                let (x, y, z) = (self.expr(a)?, self.expr(c)?, self.expr(d)?);
                // x64's `vfmadd213` overwrites its first factor, which is
                // copied first when other FMAs still need it: make that a
                // factor this FMA alone uses (a matrix-vector product's
                // weights), not one its register block shares (the
                // broadcast input there; a GEMM's loaded vector).
                let uses = |e: &Expr| {
                    self.fma_factors
                        .last()
                        .and_then(|m| m.get(&lopper_ir::loops::expr_text(e)))
                        .copied()
                        .unwrap_or(1)
                };
                let (x, y) = if uses(a) > 1 && uses(c) == 1 {
                    (y, x)
                } else {
                    (x, y)
                };
                self.b.ins().fma(x, y, z)
            }
            Expr::Select(c, a, d) => {
                let (cond, x, y) = (self.expr(c)?, self.expr(a)?, self.expr(d)?);
                self.b.ins().select(cond, x, y)
            }
        })
    }
}
