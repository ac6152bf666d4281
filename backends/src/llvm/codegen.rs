//! Loop-IR kernels to LLVM IR through inkwell, optimized with LLVM's
//! `default<O3>` pipeline and emitted as a position-independent object for
//! the host CPU (its name and features, AVX2 or AVX-512 included).
//!
//! Every kernel becomes `void PREFIX__NAME(float **buffers, const int64_t
//! *sizes)`, the signature the Cranelift kernels have, so the entry point
//! of `crate::cranelift::artifact` calls either. Locals and loop variables
//! live in `alloca`s that LLVM's SROA turns into registers; buffers are
//! addressed with `getelementptr` from row-major strides; `fma` is
//! `llvm.fma`, `min`/`max` are `llvm.minnum`/`llvm.maxnum` (a NaN operand
//! gives the other one, as the other engines do), `sqrt` is `llvm.sqrt`,
//! `exp` and `erf` are polynomials in registers (the Cranelift backend's
//! vector algorithms, for scalars too), and `log` and `tanh` call the C
//! library, lane by lane for vectors. Vectors of any width are LLVM vectors (`f32x8` is one AVX
//! register).

use crate::BackendError;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module as LlvmModule};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::types::{BasicTypeEnum, VectorType};
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate, OptimizationLevel};
use lopper_ir::loops::{BinOp, Expr, Kernel, Module, ScalarType, Stmt, UnOp};
use lopper_ir::types::DType;
use lopper_ir::Dim;
use std::collections::HashMap;

/// The result of compiling a module's kernels.
pub struct LlvmKernels {
    /// The relocatable object.
    pub object: Vec<u8>,
    /// The LLVM IR as generated, before the optimizer.
    pub ir: String,
    /// The LLVM IR after `default<O3>` (or the level's pipeline).
    pub optimized_ir: String,
    /// The host assembly.
    pub assembly: String,
}

fn err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen(format!("LLVM: {e}"))
}

/// The target machine for `cpu` (the host's when it is the host): the
/// host's triple, the CPU's name and features.
pub fn target_machine(
    cpu: &crate::Target,
    level: OptimizationLevel,
) -> Result<TargetMachine, BackendError> {
    Target::initialize_native(&InitializationConfig::default()).map_err(err)?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(err)?;
    let (name, features) = cpu.llvm_cpu();
    target
        .create_target_machine(
            &triple,
            &name,
            &features,
            level,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| err(format!("cannot create a target machine for CPU `{name}`")))
}

/// Compiles every kernel of `m` (verified first) into one object; kernel
/// `@k` is the exported symbol `{prefix}__k`. `opt` is the `-O` level
/// (0: no optimizer, else LLVM's `default<O{opt}>`), for the CPU of
/// `options`. With `options.bounds_check`, every load and store first
/// checks its indices against the buffer's extents and, out of bounds,
/// prints which kernel and buffer and aborts.
pub fn compile_kernels(
    m: &Module,
    prefix: &str,
    opt: u8,
    options: &crate::CodegenOptions,
) -> Result<LlvmKernels, BackendError> {
    lopper_ir::loops::verify_module(m).map_err(|errs| {
        BackendError::Codegen(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    emit_kernels(m, prefix, opt, options)
}

/// [`compile_kernels`] for a module the caller has verified.
pub(crate) fn emit_kernels(
    m: &Module,
    prefix: &str,
    opt: u8,
    options: &crate::CodegenOptions,
) -> Result<LlvmKernels, BackendError> {
    let context = Context::create();
    let module = context.create_module(prefix);
    let level = match opt {
        0 => OptimizationLevel::None,
        1 => OptimizationLevel::Less,
        2 => OptimizationLevel::Default,
        _ => OptimizationLevel::Aggressive,
    };
    let tm = target_machine(&options.target, level)?;
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    for k in &m.kernels {
        let mut l = Lowerer::new(&context, &module, m, k, &format!("{prefix}__{}", k.name))?;
        l.bounds_check = options.bounds_check;
        l.kernel()?;
    }
    module.verify().map_err(|e| err(e.to_string()))?;
    let ir = module.print_to_string().to_string();
    if opt > 0 {
        module
            .run_passes(
                &format!("default<O{}>", opt.min(3)),
                &tm,
                PassBuilderOptions::create(),
            )
            .map_err(|e| err(e.to_string()))?;
    }
    let optimized_ir = module.print_to_string().to_string();
    let object = tm
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| err(e.to_string()))?
        .as_slice()
        .to_vec();
    let assembly = tm
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map(|b| String::from_utf8_lossy(b.as_slice()).into_owned())
        .unwrap_or_default();
    Ok(LlvmKernels {
        object,
        ir,
        optimized_ir,
        assembly,
    })
}

struct Array<'ctx> {
    base: PointerValue<'ctx>,
    extents: Vec<IntValue<'ctx>>,
    strides: Vec<IntValue<'ctx>>,
    /// The integer type of an index array; `None` for `f32` data.
    index: Option<DType>,
}

struct Lowerer<'a, 'ctx> {
    context: &'ctx Context,
    module: &'a LlvmModule<'ctx>,
    lir: &'a Module,
    kernel: &'a Kernel,
    function: FunctionValue<'ctx>,
    b: Builder<'ctx>,
    sizes: HashMap<String, IntValue<'ctx>>,
    arrays: Vec<HashMap<String, Array<'ctx>>>,
    vars: Vec<HashMap<String, (PointerValue<'ctx>, ScalarType)>>,
    /// Check every access at run time (`--bounds-check`).
    bounds_check: bool,
    /// The message of each buffer's failed check.
    messages: HashMap<String, (PointerValue<'ctx>, usize)>,
}

impl<'a, 'ctx> Lowerer<'a, 'ctx> {
    fn new(
        context: &'ctx Context,
        module: &'a LlvmModule<'ctx>,
        lir: &'a Module,
        kernel: &'a Kernel,
        symbol: &str,
    ) -> Result<Self, BackendError> {
        let ptr = context.ptr_type(AddressSpace::default());
        let fn_type = context
            .void_type()
            .fn_type(&[ptr.into(), ptr.into()], false);
        let function = module.add_function(symbol, fn_type, Some(Linkage::External));
        for i in 0..2 {
            let noalias = context.create_enum_attribute(
                inkwell::attributes::Attribute::get_named_enum_kind_id("noalias"),
                0,
            );
            function.add_attribute(inkwell::attributes::AttributeLoc::Param(i), noalias);
        }
        let b = context.create_builder();
        let entry = context.append_basic_block(function, "entry");
        b.position_at_end(entry);
        Ok(Lowerer {
            context,
            module,
            lir,
            kernel,
            function,
            b,
            sizes: HashMap::new(),
            arrays: vec![HashMap::new()],
            vars: vec![HashMap::new()],
            bounds_check: false,
            messages: HashMap::new(),
        })
    }

    fn i64(&self, v: i64) -> IntValue<'ctx> {
        self.context.i64_type().const_int(v as u64, true)
    }

    fn kernel(&mut self) -> Result<(), BackendError> {
        let ptr = self.context.ptr_type(AddressSpace::default());
        let buffers = self
            .function
            .get_nth_param(0)
            .ok_or_else(|| err("no buffers parameter"))?
            .into_pointer_value();
        let sizes_ptr = self
            .function
            .get_nth_param(1)
            .ok_or_else(|| err("no sizes parameter"))?
            .into_pointer_value();
        for (i, s) in self.lir.sizes.iter().enumerate() {
            let at = unsafe {
                self.b.build_in_bounds_gep(
                    self.context.i64_type(),
                    sizes_ptr,
                    &[self.i64(i as i64)],
                    "",
                )
            }
            .map_err(err)?;
            let v = self
                .b
                .build_load(self.context.i64_type(), at, s)
                .map_err(err)?
                .into_int_value();
            self.sizes.insert(s.clone(), v);
        }
        for (i, p) in self.kernel.params.iter().enumerate() {
            let buffer = self
                .lir
                .buffer(p)
                .ok_or_else(|| err(format!("unknown buffer %{p}")))?;
            let at = unsafe {
                self.b
                    .build_in_bounds_gep(ptr, buffers, &[self.i64(i as i64)], "")
            }
            .map_err(err)?;
            let base = self
                .b
                .build_load(ptr, at, p)
                .map_err(err)?
                .into_pointer_value();
            let extents: Vec<IntValue<'ctx>> = buffer
                .ty
                .shape
                .0
                .iter()
                .map(|d| match d {
                    Dim::Static(n) => self.i64(*n as i64),
                    Dim::Symbol(s) => self.sizes[s],
                })
                .collect();
            let strides = self.strides(&extents)?;
            self.arrays[0].insert(
                p.clone(),
                Array {
                    base,
                    extents,
                    strides,
                    index: buffer.index_data.is_some().then_some(buffer.ty.dtype),
                },
            );
        }
        let body = self.kernel.body.clone();
        self.block(&body)?;
        self.b.build_return(None).map_err(err)?;
        Ok(())
    }

    fn strides(&self, extents: &[IntValue<'ctx>]) -> Result<Vec<IntValue<'ctx>>, BackendError> {
        let mut strides = vec![self.i64(1); extents.len()];
        for d in (0..extents.len().saturating_sub(1)).rev() {
            strides[d] = self
                .b
                .build_int_mul(strides[d + 1], extents[d + 1], "")
                .map_err(err)?;
        }
        Ok(strides)
    }

    fn llvm_type(&self, t: ScalarType) -> BasicTypeEnum<'ctx> {
        match t {
            ScalarType::Index => self.context.i64_type().into(),
            ScalarType::F32 => self.context.f32_type().into(),
            ScalarType::Bool => self.context.bool_type().into(),
            ScalarType::Vector(n) => self.context.f32_type().vec_type(n).into(),
        }
    }

    /// An `alloca` in the entry block, where SROA finds it.
    fn alloca(
        &self,
        ty: BasicTypeEnum<'ctx>,
        name: &str,
    ) -> Result<PointerValue<'ctx>, BackendError> {
        let entry = self
            .function
            .get_first_basic_block()
            .ok_or_else(|| err("no entry block"))?;
        let at = self.context.create_builder();
        match entry.get_first_instruction() {
            Some(i) => at.position_before(&i),
            None => at.position_at_end(entry),
        }
        at.build_alloca(ty, name).map_err(err)
    }

    fn declare(&mut self, name: &str, ty: ScalarType) -> Result<PointerValue<'ctx>, BackendError> {
        let p = self.alloca(self.llvm_type(ty), name)?;
        self.vars
            .last_mut()
            .expect("a scope is open")
            .insert(name.to_string(), (p, ty));
        Ok(p)
    }

    fn var(&self, name: &str) -> Result<(PointerValue<'ctx>, ScalarType), BackendError> {
        self.vars
            .iter()
            .rev()
            .find_map(|s| s.get(name).copied())
            .ok_or_else(|| err(format!("unknown variable %{name}")))
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), BackendError> {
        self.vars.push(HashMap::new());
        self.arrays.push(HashMap::new());
        for s in body {
            self.stmt(s)?;
        }
        self.vars.pop();
        self.arrays.pop();
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), BackendError> {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                let lo = self.expr(lo)?.into_int_value();
                let hi = self.expr(hi)?.into_int_value();
                self.vars.push(HashMap::new());
                let slot = self.declare(var, ScalarType::Index)?;
                self.b.build_store(slot, lo).map_err(err)?;
                let (inner, exit) = (
                    self.context.append_basic_block(self.function, "body"),
                    self.context.append_basic_block(self.function, "exit"),
                );
                let enter = self
                    .b
                    .build_int_compare(IntPredicate::SLT, lo, hi, "")
                    .map_err(err)?;
                self.b
                    .build_conditional_branch(enter, inner, exit)
                    .map_err(err)?;
                self.b.position_at_end(inner);
                self.block(body)?;
                let i64t = self.context.i64_type();
                let current = self
                    .b
                    .build_load(i64t, slot, "")
                    .map_err(err)?
                    .into_int_value();
                let next = self
                    .b
                    .build_int_nsw_add(current, self.i64(1), "")
                    .map_err(err)?;
                self.b.build_store(slot, next).map_err(err)?;
                let more = self
                    .b
                    .build_int_compare(IntPredicate::SLT, next, hi, "")
                    .map_err(err)?;
                self.b
                    .build_conditional_branch(more, inner, exit)
                    .map_err(err)?;
                self.b.position_at_end(exit);
                self.vars.pop();
            }
            Stmt::Let { var, ty, init } => {
                let v = self.expr(init)?;
                let slot = self.declare(var, *ty)?;
                self.b.build_store(slot, v).map_err(err)?;
            }
            Stmt::Assign { var, value } => {
                let v = self.expr(value)?;
                let (slot, _) = self.var(var)?;
                self.b.build_store(slot, v).map_err(err)?;
            }
            Stmt::Store {
                buffer,
                indices,
                value,
            } => {
                let v = self.expr(value)?;
                self.check_access(buffer, indices, 1)?;
                let p = self.address(buffer, indices)?;
                let store = self.b.build_store(p, v).map_err(err)?;
                store.set_alignment(4).map_err(err)?;
            }
            Stmt::VStore {
                buffer,
                indices,
                value,
                lanes,
            } => {
                let v = self.expr(value)?;
                self.check_access(buffer, indices, *lanes)?;
                let p = self.address(buffer, indices)?;
                let store = self.b.build_store(p, v).map_err(err)?;
                store.set_alignment(4).map_err(err)?;
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.expr(cond)?.into_int_value();
                let (t, e, merge) = (
                    self.context.append_basic_block(self.function, "then"),
                    self.context.append_basic_block(self.function, "else"),
                    self.context.append_basic_block(self.function, "merge"),
                );
                self.b.build_conditional_branch(c, t, e).map_err(err)?;
                self.b.position_at_end(t);
                self.block(then)?;
                self.b.build_unconditional_branch(merge).map_err(err)?;
                self.b.position_at_end(e);
                self.block(otherwise)?;
                self.b.build_unconditional_branch(merge).map_err(err)?;
                self.b.position_at_end(merge);
            }
            Stmt::Alloc { name, dims } => {
                let n: usize = dims.iter().product();
                let ty = self.context.f32_type().array_type(n as u32);
                let base = self.alloca(ty.into(), name)?;
                let extents: Vec<IntValue<'ctx>> =
                    dims.iter().map(|&d| self.i64(d as i64)).collect();
                let strides = self.strides(&extents)?;
                self.arrays.last_mut().expect("a scope is open").insert(
                    name.clone(),
                    Array {
                        base,
                        extents,
                        strides,
                        index: None,
                    },
                );
            }
        }
        Ok(())
    }

    fn array(&self, buffer: &str) -> Result<&Array<'ctx>, BackendError> {
        self.arrays
            .iter()
            .rev()
            .find_map(|s| s.get(buffer))
            .ok_or_else(|| err(format!("unknown buffer %{buffer}")))
    }

    /// With bounds checks on: every index of an access of `lanes` elements
    /// along the last dimension lies in its extent, or the kernel writes
    /// which access failed to standard error and aborts.
    fn check_access(
        &mut self,
        buffer: &str,
        indices: &[Expr],
        lanes: u32,
    ) -> Result<(), BackendError> {
        if !self.bounds_check {
            return Ok(());
        }
        let extents = self.array(buffer)?.extents.clone();
        let mut inside: Option<IntValue<'ctx>> = None;
        for (i, (e, &extent)) in indices.iter().zip(&extents).enumerate() {
            let mut v = self.expr(e)?.into_int_value();
            if i + 1 == indices.len() && lanes > 1 {
                v = self
                    .b
                    .build_int_add(v, self.i64(i64::from(lanes) - 1), "")
                    .map_err(err)?;
            }
            // Unsigned: a negative index is a huge one.
            let ok = self
                .b
                .build_int_compare(inkwell::IntPredicate::ULT, v, extent, "in_bounds")
                .map_err(err)?;
            inside = Some(match inside {
                None => ok,
                Some(all) => self.b.build_and(all, ok, "").map_err(err)?,
            });
        }
        let Some(inside) = inside else {
            return Ok(());
        };
        let fine = self.context.append_basic_block(self.function, "in_bounds");
        let fail = self
            .context
            .append_basic_block(self.function, "out_of_bounds");
        self.b
            .build_conditional_branch(inside, fine, fail)
            .map_err(err)?;
        self.b.position_at_end(fail);
        let (text, length) = match self.messages.get(buffer) {
            Some(m) => *m,
            None => {
                let message = format!(
                    "lopper: out-of-bounds access to %{buffer} in kernel @{} (compiled with --bounds-check)\n",
                    self.kernel.name
                );
                let global = self
                    .b
                    .build_global_string_ptr(&message, "bounds_message")
                    .map_err(err)?;
                let m = (global.as_pointer_value(), message.len());
                self.messages.insert(buffer.to_string(), m);
                m
            }
        };
        let i64t = self.context.i64_type();
        let ptr = self.context.ptr_type(AddressSpace::default());
        let write = self.module.get_function("write").unwrap_or_else(|| {
            let ty = i64t.fn_type(&[i64t.into(), ptr.into(), i64t.into()], false);
            self.module
                .add_function("write", ty, Some(Linkage::External))
        });
        let abort = self.module.get_function("abort").unwrap_or_else(|| {
            let ty = self.context.void_type().fn_type(&[], false);
            self.module
                .add_function("abort", ty, Some(Linkage::External))
        });
        let args = [
            self.i64(2).into(),
            text.into(),
            self.i64(length as i64).into(),
        ];
        self.b.build_call(write, &args, "").map_err(err)?;
        self.b.build_call(abort, &[], "").map_err(err)?;
        self.b.build_unreachable().map_err(err)?;
        self.b.position_at_end(fine);
        Ok(())
    }

    fn address(
        &mut self,
        buffer: &str,
        indices: &[Expr],
    ) -> Result<PointerValue<'ctx>, BackendError> {
        let mut offset = self.i64(0);
        let (base, strides, index) = {
            let a = self.array(buffer)?;
            (a.base, a.strides.clone(), a.index)
        };
        for (i, e) in indices.iter().enumerate() {
            let v = self.expr(e)?.into_int_value();
            let term = self.b.build_int_nsw_mul(v, strides[i], "").map_err(err)?;
            offset = self.b.build_int_nsw_add(offset, term, "").map_err(err)?;
        }
        let element: BasicTypeEnum = match index {
            Some(dtype) => self.index_type(dtype).into(),
            None => self.context.f32_type().into(),
        };
        unsafe { self.b.build_in_bounds_gep(element, base, &[offset], "") }.map_err(err)
    }

    /// The LLVM integer type an index array of `dtype` is stored as.
    fn index_type(&self, dtype: DType) -> inkwell::types::IntType<'ctx> {
        match dtype {
            DType::I8 => self.context.i8_type(),
            DType::I16 => self.context.i16_type(),
            DType::I32 => self.context.i32_type(),
            DType::I64 | DType::F32 => self.context.i64_type(),
        }
    }

    fn type_of(&self, e: &Expr) -> ScalarType {
        crate::expr_type(e, &|v| self.var(v).ok().map(|(_, t)| t), &|b| {
            self.array(b).is_ok_and(|a| a.index.is_some())
        })
    }

    fn intrinsic(
        &self,
        name: &str,
        ty: BasicTypeEnum<'ctx>,
        args: &[BasicValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>, BackendError> {
        let f = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[ty]))
            .ok_or_else(|| err(format!("no intrinsic {name}")))?;
        let args: Vec<_> = args.iter().map(|a| (*a).into()).collect();
        self.b
            .build_call(f, &args, "")
            .map_err(err)?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| err(format!("{name} returned nothing")))
    }

    fn libm(&self, name: &str) -> FunctionValue<'ctx> {
        self.module.get_function(name).unwrap_or_else(|| {
            let f32t = self.context.f32_type();
            self.module.add_function(
                name,
                f32t.fn_type(&[f32t.into()], false),
                Some(Linkage::External),
            )
        })
    }

    fn expr(&mut self, e: &Expr) -> Result<BasicValueEnum<'ctx>, BackendError> {
        let f32t = self.context.f32_type();
        Ok(match e {
            Expr::Int(v) => self.i64(*v).into(),
            Expr::Float(v) => f32t.const_float(*v as f64).into(),
            Expr::Size(s) => (*self
                .sizes
                .get(s)
                .ok_or_else(|| err(format!("unknown size {s}")))?)
            .into(),
            Expr::Var(v) => {
                let (slot, ty) = self.var(v)?;
                self.b
                    .build_load(self.llvm_type(ty), slot, v)
                    .map_err(err)?
            }
            Expr::Load { buffer, indices } => {
                let index = self.array(buffer)?.index;
                self.check_access(buffer, indices, 1)?;
                let p = self.address(buffer, indices)?;
                match index {
                    Some(dtype) => {
                        let narrow = self
                            .b
                            .build_load(self.index_type(dtype), p, "")
                            .map_err(err)?
                            .into_int_value();
                        self.b
                            .build_int_s_extend_or_bit_cast(narrow, self.context.i64_type(), "")
                            .map_err(err)?
                            .into()
                    }
                    None => self.b.build_load(f32t, p, "").map_err(err)?,
                }
            }
            Expr::VLoad {
                buffer,
                indices,
                lanes,
            } => {
                self.check_access(buffer, indices, *lanes)?;
                let p = self.address(buffer, indices)?;
                let load = self
                    .b
                    .build_load(f32t.vec_type(*lanes), p, "")
                    .map_err(err)?;
                inkwell::values::BasicValue::as_instruction_value(&load)
                    .ok_or_else(|| err("a load is an instruction"))?
                    .set_alignment(4)
                    .map_err(err)?;
                load
            }
            Expr::Broadcast(v, lanes) => {
                let x = self.expr(v)?.into_float_value();
                let vt = f32t.vec_type(*lanes);
                let one = self
                    .b
                    .build_insert_element(vt.get_undef(), x, self.i64(0), "")
                    .map_err(err)?;
                let zeros = self.context.i32_type().vec_type(*lanes).const_zero();
                self.b
                    .build_shuffle_vector(one, vt.get_undef(), zeros, "")
                    .map_err(err)?
                    .into()
            }
            Expr::Horizontal(op, v) => {
                let x = self.expr(v)?.into_vector_value();
                let lanes = x.get_type().get_size();
                let mut acc: BasicValueEnum = self
                    .b
                    .build_extract_element(x, self.i64(0), "")
                    .map_err(err)?;
                for l in 1..lanes {
                    let e = self
                        .b
                        .build_extract_element(x, self.i64(l as i64), "")
                        .map_err(err)?;
                    acc = self.float_binary(*op, ScalarType::F32, acc, e)?;
                }
                acc
            }
            Expr::Permute {
                table,
                buffer,
                indices,
            } => {
                // Lane by lane: LLVM's x86 back end turns the extracts of
                // a vector of lane numbers into one `vpermps` (`vpermilps`
                // for four lanes).
                let t = self.expr(table)?.into_vector_value();
                let lanes = t.get_type().get_size();
                self.check_access(buffer, indices, lanes)?;
                let p = self.address(buffer, indices)?;
                let numbers = self
                    .b
                    .build_load(self.context.i8_type().vec_type(lanes), p, "")
                    .map_err(err)?;
                inkwell::values::BasicValue::as_instruction_value(&numbers)
                    .ok_or_else(|| err("a load is an instruction"))?
                    .set_alignment(1)
                    .map_err(err)?;
                let numbers = self
                    .b
                    .build_int_z_extend(
                        numbers.into_vector_value(),
                        self.context.i32_type().vec_type(lanes),
                        "",
                    )
                    .map_err(err)?;
                let mut out = t.get_type().get_undef();
                for l in 0..lanes {
                    let at = self.i64(l as i64);
                    let lane = self
                        .b
                        .build_extract_element(numbers, at, "")
                        .map_err(err)?
                        .into_int_value();
                    let value = self.b.build_extract_element(t, lane, "").map_err(err)?;
                    out = self
                        .b
                        .build_insert_element(out, value, at, "")
                        .map_err(err)?;
                }
                out.into()
            }
            Expr::Shuffle(a, b, mask) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                let i32t = self.context.i32_type();
                let lanes: Vec<_> = mask
                    .iter()
                    .map(|&l| i32t.const_int(u64::from(l), false))
                    .collect();
                self.b
                    .build_shuffle_vector(
                        x.into_vector_value(),
                        y.into_vector_value(),
                        VectorType::const_vector(&lanes),
                        "",
                    )
                    .map_err(err)?
                    .into()
            }
            Expr::Fma(a, b, c) => {
                let ty = self.llvm_type(self.type_of(a));
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                self.intrinsic("llvm.fma", ty, &[x, y, z])?
            }
            Expr::Select(c, a, d) => {
                let cond = self.expr(c)?.into_int_value();
                let (x, y) = (self.expr(a)?, self.expr(d)?);
                self.b.build_select(cond, x, y, "").map_err(err)?
            }
            Expr::Unary(op, a) => {
                let t = self.type_of(a);
                let x = self.expr(a)?;
                match (op, t) {
                    (UnOp::Neg, ScalarType::Index) => self
                        .b
                        .build_int_neg(x.into_int_value(), "")
                        .map_err(err)?
                        .into(),
                    (UnOp::ToFloat, _) => self
                        .b
                        .build_signed_int_to_float(x.into_int_value(), f32t, "")
                        .map_err(err)?
                        .into(),
                    (UnOp::Neg, ScalarType::Vector(_)) => self
                        .b
                        .build_float_neg(x.into_vector_value(), "")
                        .map_err(err)?
                        .into(),
                    (UnOp::Neg, _) => self
                        .b
                        .build_float_neg(x.into_float_value(), "")
                        .map_err(err)?
                        .into(),
                    (UnOp::Sqrt, _) => self.intrinsic("llvm.sqrt", self.llvm_type(t), &[x])?,
                    (UnOp::Floor, _) => self.intrinsic("llvm.floor", self.llvm_type(t), &[x])?,
                    (UnOp::Exp, _) => self.exp_poly(t, x)?,
                    (UnOp::Erf, _) => self.erf_poly(t, x)?,
                    (other, _) => {
                        let name = match other {
                            UnOp::Exp => "expf",
                            UnOp::Log => "logf",
                            UnOp::Tanh => "tanhf",
                            _ => "erff",
                        };
                        let f = self.libm(name);
                        match t {
                            ScalarType::Vector(lanes) => {
                                let v = x.into_vector_value();
                                let mut out = v;
                                for l in 0..lanes {
                                    let i = self.i64(l as i64);
                                    let s = self.b.build_extract_element(v, i, "").map_err(err)?;
                                    let r = self
                                        .b
                                        .build_call(f, &[s.into()], "")
                                        .map_err(err)?
                                        .try_as_basic_value()
                                        .basic()
                                        .ok_or_else(|| err("libm returned nothing"))?;
                                    out =
                                        self.b.build_insert_element(out, r, i, "").map_err(err)?;
                                }
                                out.into()
                            }
                            _ => self
                                .b
                                .build_call(f, &[x.into()], "")
                                .map_err(err)?
                                .try_as_basic_value()
                                .basic()
                                .ok_or_else(|| err("libm returned nothing"))?,
                        }
                    }
                }
            }
            Expr::Binary(op, a, c) => {
                let t = self.type_of(a);
                let (x, y) = (self.expr(a)?, self.expr(c)?);
                let b = &self.b;
                match t {
                    ScalarType::Index => {
                        let (x, y) = (x.into_int_value(), y.into_int_value());
                        match op {
                            BinOp::Add => b.build_int_nsw_add(x, y, "").map_err(err)?.into(),
                            BinOp::Sub => b.build_int_nsw_sub(x, y, "").map_err(err)?.into(),
                            BinOp::Mul => b.build_int_nsw_mul(x, y, "").map_err(err)?.into(),
                            BinOp::Div => b.build_int_signed_div(x, y, "").map_err(err)?.into(),
                            BinOp::Rem => b.build_int_signed_rem(x, y, "").map_err(err)?.into(),
                            BinOp::Min | BinOp::Max => {
                                let pred = if *op == BinOp::Min {
                                    IntPredicate::SLT
                                } else {
                                    IntPredicate::SGT
                                };
                                let c = b.build_int_compare(pred, x, y, "").map_err(err)?;
                                b.build_select(c, x, y, "").map_err(err)?
                            }
                            cmp => {
                                let pred = match cmp {
                                    BinOp::Lt => IntPredicate::SLT,
                                    BinOp::Le => IntPredicate::SLE,
                                    BinOp::Gt => IntPredicate::SGT,
                                    BinOp::Ge => IntPredicate::SGE,
                                    BinOp::Eq => IntPredicate::EQ,
                                    _ => IntPredicate::NE,
                                };
                                b.build_int_compare(pred, x, y, "").map_err(err)?.into()
                            }
                        }
                    }
                    ScalarType::Bool => {
                        let (x, y) = (x.into_int_value(), y.into_int_value());
                        match op {
                            BinOp::And => b.build_and(x, y, "").map_err(err)?.into(),
                            BinOp::Or => b.build_or(x, y, "").map_err(err)?.into(),
                            _ => return Err(err("only && and || combine conditions")),
                        }
                    }
                    _ => self.float_binary(*op, t, x, y)?,
                }
            }
        })
    }

    /// `v` as a constant of type `t` (`f32`, or every lane of a vector).
    fn constant(&self, t: ScalarType, v: f32) -> BasicValueEnum<'ctx> {
        let c = self.context.f32_type().const_float(v as f64);
        match t {
            ScalarType::Vector(n) => VectorType::const_vector(&vec![c; n as usize]).into(),
            _ => c.into(),
        }
    }

    fn int_constant(&self, t: ScalarType, v: u64) -> BasicValueEnum<'ctx> {
        let c = self.context.i32_type().const_int(v, false);
        match t {
            ScalarType::Vector(n) => VectorType::const_vector(&vec![c; n as usize]).into(),
            _ => c.into(),
        }
    }

    fn arith(
        &self,
        op: BinOp,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, BackendError> {
        self.float_binary(op, t, x, y)
    }

    /// `e^x` in registers, the algorithm of the Cranelift backend's vector
    /// `exp` (range reduction by ln 2, a degree-6 polynomial, `2^n` in the
    /// exponent bits; relative error about 2e-7), for scalars too, so LLVM
    /// can inline and vectorize it. NaN stays NaN.
    fn exp_poly(
        &mut self,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, BackendError> {
        let ty = self.llvm_type(t);
        let lo = self.constant(t, -87.3);
        let hi = self.constant(t, 88.7);
        let x = self.intrinsic("llvm.maximum", ty, &[x, lo])?;
        let x = self.intrinsic("llvm.minimum", ty, &[x, hi])?;
        let log2e = self.constant(t, std::f32::consts::LOG2_E);
        let scaled = self.arith(BinOp::Mul, t, x, log2e)?;
        let n = self.intrinsic("llvm.rint", ty, &[scaled])?;
        let ln2_hi = self.constant(t, -0.693_145_75);
        let ln2_lo = self.constant(t, -1.428_606_8e-6);
        let r = self.intrinsic("llvm.fma", ty, &[n, ln2_hi, x])?;
        let r = self.intrinsic("llvm.fma", ty, &[n, ln2_lo, r])?;
        let mut p = self.constant(t, 1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            let c = self.constant(t, c);
            p = self.intrinsic("llvm.fma", ty, &[p, r, c])?;
        }
        let int_ty: BasicTypeEnum = match t {
            ScalarType::Vector(lanes) => self.context.i32_type().vec_type(lanes).into(),
            _ => self.context.i32_type().into(),
        };
        let bits = match (n, int_ty) {
            (BasicValueEnum::VectorValue(v), BasicTypeEnum::VectorType(it)) => {
                let i = self.b.build_float_to_signed_int(v, it, "").map_err(err)?;
                let i = self
                    .b
                    .build_int_add(i, self.int_constant(t, 127).into_vector_value(), "")
                    .map_err(err)?;
                let i = self
                    .b
                    .build_left_shift(i, self.int_constant(t, 23).into_vector_value(), "")
                    .map_err(err)?;
                BasicValueEnum::from(i)
            }
            (BasicValueEnum::FloatValue(f), BasicTypeEnum::IntType(it)) => {
                let i = self.b.build_float_to_signed_int(f, it, "").map_err(err)?;
                let i = self
                    .b
                    .build_int_add(i, self.int_constant(t, 127).into_int_value(), "")
                    .map_err(err)?;
                let i = self
                    .b
                    .build_left_shift(i, self.int_constant(t, 23).into_int_value(), "")
                    .map_err(err)?;
                BasicValueEnum::from(i)
            }
            _ => return Err(err("exp of a non-float")),
        };
        let two_n = self.b.build_bit_cast(bits, ty, "").map_err(err)?;
        self.arith(BinOp::Mul, t, p, two_n)
    }

    /// `erf(x)` in registers: Abramowitz and Stegun 7.1.26 (absolute error
    /// below 1.5e-7), as the Cranelift backend computes it for vectors.
    fn erf_poly(
        &mut self,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, BackendError> {
        let ty = self.llvm_type(t);
        let ax = self.intrinsic("llvm.fabs", ty, &[x])?;
        let p = self.constant(t, 0.327_591_1);
        let one = self.constant(t, 1.0);
        let d = self.intrinsic("llvm.fma", ty, &[p, ax, one])?;
        let tt = self.arith(BinOp::Div, t, one, d)?;
        let mut poly = self.constant(t, 1.061_405_4);
        for c in [-1.453_152, 1.421_413_7, -0.284_496_72, 0.254_829_6] {
            let c = self.constant(t, c);
            poly = self.intrinsic("llvm.fma", ty, &[poly, tt, c])?;
        }
        poly = self.arith(BinOp::Mul, t, poly, tt)?;
        let square = self.arith(BinOp::Mul, t, ax, ax)?;
        let zero = self.constant(t, 0.0);
        let minus = self.arith(BinOp::Sub, t, zero, square)?;
        let e = self.exp_poly(t, minus)?;
        let tail = self.arith(BinOp::Mul, t, poly, e)?;
        let y = self.arith(BinOp::Sub, t, one, tail)?;
        self.intrinsic("llvm.copysign", ty, &[y, x])
    }

    fn float_binary(
        &self,
        op: BinOp,
        t: ScalarType,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, BackendError> {
        let b = &self.b;
        let ty = self.llvm_type(t);
        if let BinOp::Min | BinOp::Max = op {
            let name = if op == BinOp::Min {
                "llvm.minnum"
            } else {
                "llvm.maxnum"
            };
            return self.intrinsic(name, ty, &[x, y]);
        }
        if let ScalarType::Vector(_) = t {
            let (x, y) = (x.into_vector_value(), y.into_vector_value());
            return Ok(match op {
                BinOp::Add => b.build_float_add(x, y, "").map_err(err)?.into(),
                BinOp::Sub => b.build_float_sub(x, y, "").map_err(err)?.into(),
                BinOp::Mul => b.build_float_mul(x, y, "").map_err(err)?.into(),
                BinOp::Div => b.build_float_div(x, y, "").map_err(err)?.into(),
                _ => return Err(err("no vector comparison")),
            });
        }
        let (x, y) = (x.into_float_value(), y.into_float_value());
        Ok(match op {
            BinOp::Add => b.build_float_add(x, y, "").map_err(err)?.into(),
            BinOp::Sub => b.build_float_sub(x, y, "").map_err(err)?.into(),
            BinOp::Mul => b.build_float_mul(x, y, "").map_err(err)?.into(),
            BinOp::Div => b.build_float_div(x, y, "").map_err(err)?.into(),
            BinOp::Rem => return Err(err("`%` on f32")),
            cmp => {
                let pred = match cmp {
                    BinOp::Lt => FloatPredicate::OLT,
                    BinOp::Le => FloatPredicate::OLE,
                    BinOp::Gt => FloatPredicate::OGT,
                    BinOp::Ge => FloatPredicate::OGE,
                    BinOp::Eq => FloatPredicate::OEQ,
                    _ => FloatPredicate::UNE,
                };
                b.build_float_compare(pred, x, y, "").map_err(err)?.into()
            }
        })
    }
}
