//! Shared objects: a module's kernels, its constants and a C entry point in
//! one object file, linked with `cc -shared`, plus the C header.
//!
//! The entry point, `int NAME_run(const float *in..., float *out..., int64_t
//! size...)`, checks its arguments before it touches memory (sizes ≤ 0 or
//! buffers whose byte counts overflow: `NAME_ERR_BAD_SIZE`; a null buffer:
//! `NAME_ERR_NULL_BUFFER`), allocates scratch memory with `aligned_alloc`
//! for this call only (so concurrent calls are safe), runs the kernels in
//! order and frees it. Constants are read-only data in the object: the
//! library needs nothing but libc and libm. Scratch memory and constants
//! start on a cache line ([`BUFFER_ALIGN`]): a vector load at a 16-byte
//! boundary that straddles two lines made a sparse layer several times
//! slower, depending on where `malloc` happened to put its scratch.

use super::codegen::{declare_libm, define_kernel, kernel_signature, verified_isa};
use crate::BackendError;
use crate::{CodegenOptions, Target};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module as ClifModule};
use cranelift_object::{ObjectBuilder, ObjectModule};
use lopper_ir::loops::{BufferKind, Module};
use lopper_ir::Dim;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Return codes of the entry point.
pub const OK: i64 = 0;
/// A size is ≤ 0, or a buffer's byte count overflows.
pub const ERR_BAD_SIZE: i64 = 1;
/// `aligned_alloc` failed.
pub const ERR_OUT_OF_MEMORY: i64 = 2;
/// A buffer pointer is null.
pub const ERR_NULL_BUFFER: i64 = 3;

/// Where scratch memory and constants start: a cache line, and the width
/// of an AVX-512 vector.
pub const BUFFER_ALIGN: u64 = 64;

/// A compiled object and its header.
pub struct Artifact {
    /// The relocatable object file.
    pub object: Vec<u8>,
    /// The C header.
    pub header: String,
    /// The exported entry point's name.
    pub entry: String,
    /// The Cranelift IR of every function, as given to the code generator.
    pub clif: String,
}

/// A C identifier made from `name`.
pub fn c_identifier(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.as_bytes()[0].is_ascii_digit() {
        s.insert(0, '_');
    }
    s
}

/// Compiles `m` for the host into an object whose entry point is
/// `{prefix}_run`.
pub fn compile_object(m: &Module, prefix: &str, source: &str) -> Result<Artifact, BackendError> {
    compile_object_with(m, prefix, source, &CodegenOptions::default())
}

/// [`compile_object`] with `options`: run-time bounds checks in every
/// kernel (`--bounds-check`), another CPU (`--target-cpu`).
pub fn compile_object_with(
    m: &Module,
    prefix: &str,
    source: &str,
    options: &CodegenOptions,
) -> Result<Artifact, BackendError> {
    build_object(
        m,
        prefix,
        source,
        &options.target,
        Kernels::Defined {
            bounds_check: options.bounds_check,
        },
    )
}

/// Whether an object defines its kernels (and how) or leaves them to
/// another code generator.
#[derive(Clone, Copy)]
enum Kernels {
    Defined { bounds_check: bool },
    Imported,
}

/// The entry point, constants and helpers of `m` without its kernels:
/// the entry point calls `{prefix}__KERNEL` symbols that another code
/// generator (LLVM) defines, with the same signature.
pub fn compile_entry_object(
    m: &Module,
    prefix: &str,
    source: &str,
    target: &Target,
) -> Result<Artifact, BackendError> {
    build_object(m, prefix, source, target, Kernels::Imported)
}

fn build_object(
    m: &Module,
    prefix: &str,
    source: &str,
    target: &Target,
    kernels: Kernels,
) -> Result<Artifact, BackendError> {
    let isa = verified_isa(m, target, true)?;
    let prefix = c_identifier(prefix);
    let codegen = |e: &dyn std::fmt::Display| BackendError::Codegen(e.to_string());
    let builder = ObjectBuilder::new(
        isa,
        prefix.clone(),
        cranelift_module::default_libcall_names(),
    )?;
    let mut module = ObjectModule::new(builder);
    let libm = declare_libm(&mut module)?;

    // Constants as read-only data.
    let mut data_ids = Vec::new();
    for b in m.buffers_of(BufferKind::Const) {
        let id = module.declare_data(
            &format!("{prefix}__const_{}", c_identifier(&b.name)),
            Linkage::Local,
            false,
            false,
        )?;
        let mut d = DataDescription::new();
        let bytes: Vec<u8> = match (&b.index_data, &b.data) {
            (Some(indices), _) => crate::index_bytes(indices, b.ty.dtype),
            (None, Some(p)) => p.data.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            (None, None) => Vec::new(),
        };
        d.define(bytes.into_boxed_slice());
        d.set_align(BUFFER_ALIGN);
        module.define_data(id, &d)?;
        data_ids.push((b.name.clone(), id));
    }

    // Kernels.
    let mut clif = String::new();
    let mut ctx = module.make_context();
    let mut kernel_ids = Vec::new();
    for k in &m.kernels {
        let sig = kernel_signature(&module);
        let symbol = format!("{prefix}__{}", k.name);
        let Kernels::Defined { bounds_check } = kernels else {
            kernel_ids.push(module.declare_function(&symbol, Linkage::Import, &sig)?);
            continue;
        };
        let id = module.declare_function(&symbol, Linkage::Local, &sig)?;
        define_kernel(&mut module, m, k, &libm, &mut ctx, bounds_check)?;
        clif.push_str(&format!("; kernel @{}\n{}\n", k.name, ctx.func.display()));
        module
            .define_function(id, &mut ctx)
            .map_err(|e| BackendError::Codegen(format!("@{}: {e:?}", k.name)))?;
        module.clear_context(&mut ctx);
        kernel_ids.push(id);
    }

    // aligned_alloc and free.
    let mut alloc_sig = module.make_signature();
    alloc_sig.params.push(AbiParam::new(types::I64));
    alloc_sig.params.push(AbiParam::new(types::I64));
    alloc_sig.returns.push(AbiParam::new(types::I64));
    let aligned_alloc = module.declare_function("aligned_alloc", Linkage::Import, &alloc_sig)?;
    let mut free_sig = module.make_signature();
    free_sig.params.push(AbiParam::new(types::I64));
    let free = module.declare_function("free", Linkage::Import, &free_sig)?;

    // The entry point.
    let inputs: Vec<_> = m.buffers_of(BufferKind::In).collect();
    let outputs: Vec<_> = m.buffers_of(BufferKind::Out).collect();
    let mut sig = module.make_signature();
    for _ in inputs.iter().chain(&outputs) {
        sig.params.push(AbiParam::new(types::I64));
    }
    for _ in &m.sizes {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let entry = format!("{prefix}_run");
    let entry_id = module.declare_function(&entry, Linkage::Export, &sig)?;
    ctx.func.signature = sig;
    let frontend_config = module.target_config();
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let start = b.create_block();
        b.append_block_params_for_function_params(start);
        b.switch_to_block(start);
        let params: Vec<Value> = b.block_params(start).to_vec();
        let mut pointers: HashMap<String, Value> = HashMap::new();
        for (i, buf) in inputs.iter().chain(&outputs).enumerate() {
            pointers.insert(buf.name.clone(), params[i]);
        }
        let size_values: Vec<Value> = params[inputs.len() + outputs.len()..].to_vec();
        let sizes: HashMap<&str, Value> = m
            .sizes
            .iter()
            .map(String::as_str)
            .zip(size_values.iter().copied())
            .collect();
        // The error exits are filled in at the end: the entry block must be
        // the first one laid out.
        let bad_size = b.create_block();
        let null_buffer = b.create_block();
        // Sizes must be positive.
        for &s in &size_values {
            let ok = b.create_block();
            let bad = b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, s, 0);
            b.ins().brif(bad, bad_size, &[], ok, &[]);
            b.switch_to_block(ok);
        }
        // Byte counts of every buffer must fit: multiply with overflow checks.
        let mut bytes_of: HashMap<String, Value> = HashMap::new();
        for buf in &m.buffers {
            let mut bytes = b.ins().iconst(types::I64, 4);
            for d in &buf.ty.shape.0 {
                let extent = match d {
                    Dim::Static(n) => b.ins().iconst(types::I64, *n as i64),
                    Dim::Symbol(s) => sizes[s.as_str()],
                };
                let (product, overflow) = b.ins().umul_overflow(bytes, extent);
                let ok = b.create_block();
                b.ins().brif(overflow, bad_size, &[], ok, &[]);
                b.switch_to_block(ok);
                bytes = product;
            }
            // Keep byte counts below 2^62 so that index arithmetic cannot wrap.
            let ok = b.create_block();
            let too_big = b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThan, bytes, 1i64 << 62);
            b.ins().brif(too_big, bad_size, &[], ok, &[]);
            b.switch_to_block(ok);
            bytes_of.insert(buf.name.clone(), bytes);
        }
        // Buffers must not be null.
        for buf in inputs.iter().chain(&outputs) {
            let ok = b.create_block();
            let null = b.ins().icmp_imm_s(IntCC::Equal, pointers[&buf.name], 0);
            b.ins().brif(null, null_buffer, &[], ok, &[]);
            b.switch_to_block(ok);
        }
        for (name, id) in &data_ids {
            let gv = module.declare_data_in_func(*id, b.func);
            let p = b.ins().symbol_value(types::I64, gv);
            pointers.insert(name.clone(), p);
        }
        // Scratch memory for this call.
        let alloc_ref = module.declare_func_in_func(aligned_alloc, b.func);
        let free_ref = module.declare_func_in_func(free, b.func);
        // Only scratch buffers with memory of their own are allocated; the
        // others reuse theirs (plan-memory).
        let scratch: Vec<&str> = m
            .buffers_of(BufferKind::Scratch)
            .filter(|s| s.view_of.is_none())
            .map(|s| s.name.as_str())
            .collect();
        let mut scratch_vars = Vec::new();
        for _ in &scratch {
            let v = b.declare_var(types::I64);
            let zero = b.ins().iconst(types::I64, 0);
            b.def_var(v, zero);
            scratch_vars.push(v);
        }
        let out_of_memory = b.create_block();
        for (name, &v) in scratch.iter().zip(&scratch_vars) {
            // Whole cache lines (aligned_alloc wants a multiple of the
            // alignment), at least one; byte counts are below 2^62, so
            // rounding up cannot wrap.
            let bytes = bytes_of[*name];
            let align = b.ins().iconst(types::I64, BUFFER_ALIGN as i64);
            let rounded = b.ins().iadd_imm_s(bytes, BUFFER_ALIGN as i64 - 1);
            let rounded = b.ins().band_imm_s(rounded, -(BUFFER_ALIGN as i64));
            let at_least_one = b.ins().umax(rounded, align);
            let call = b.ins().call(alloc_ref, &[align, at_least_one]);
            let p = b.inst_results(call)[0];
            b.def_var(v, p);
            let ok = b.create_block();
            let null = b.ins().icmp_imm_s(IntCC::Equal, p, 0);
            b.ins().brif(null, out_of_memory, &[], ok, &[]);
            b.switch_to_block(ok);
            pointers.insert(name.to_string(), p);
        }
        // Views and reusing scratch buffers point at their storage.
        for buf in m.buffers.iter().filter(|b| b.view_of.is_some()) {
            let source = pointers.get(m.storage_of(&buf.name)).copied();
            let p = source
                .ok_or_else(|| BackendError::Codegen(format!("%{} has no memory", buf.name)))?;
            pointers.insert(buf.name.clone(), p);
        }
        let most = m
            .kernels
            .iter()
            .map(|k| k.params.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let table = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * most) as u32,
            3,
        ));
        let size_slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (8 * m.sizes.len().max(1)) as u32,
            3,
        ));
        let flags = MemFlagsData::trusted();
        let sizes_addr = b.ins().stack_addr(types::I64, size_slot, 0);
        for (i, &s) in size_values.iter().enumerate() {
            b.ins().store(flags, s, sizes_addr, (8 * i) as i32);
        }
        let table_addr = b.ins().stack_addr(types::I64, table, 0);
        for (k, id) in m.kernels.iter().zip(&kernel_ids) {
            for (i, p) in k.params.iter().enumerate() {
                b.ins()
                    .store(flags, pointers[p], table_addr, (8 * i) as i32);
            }
            let f = module.declare_func_in_func(*id, b.func);
            b.ins().call(f, &[table_addr, sizes_addr]);
        }
        for &v in &scratch_vars {
            let p = b.use_var(v);
            b.ins().call(free_ref, &[p]);
        }
        let ok = b.ins().iconst(types::I32, OK);
        b.ins().return_(&[ok]);
        b.switch_to_block(out_of_memory);
        for &v in &scratch_vars {
            let p = b.use_var(v);
            b.ins().call(free_ref, &[p]);
        }
        let code = b.ins().iconst(types::I32, ERR_OUT_OF_MEMORY);
        b.ins().return_(&[code]);
        for (block, code) in [(bad_size, ERR_BAD_SIZE), (null_buffer, ERR_NULL_BUFFER)] {
            b.switch_to_block(block);
            let v = b.ins().iconst(types::I32, code);
            b.ins().return_(&[v]);
        }
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    clif.push_str(&format!("; entry point {entry}\n{}", ctx.func.display()));
    module
        .define_function(entry_id, &mut ctx)
        .map_err(|e| BackendError::Codegen(format!("{entry}: {e:?}")))?;
    module.clear_context(&mut ctx);
    define_packed_entry(
        &mut module,
        &mut ctx,
        entry_id,
        &prefix,
        inputs.len() + outputs.len(),
        m.sizes.len(),
    )?;
    define_description(&mut module, &prefix, m)?;
    let object = module.finish().emit().map_err(|e| codegen(&e))?;
    Ok(Artifact {
        object,
        header: super::header::header(m, &prefix, source),
        entry,
        clif,
    })
}

/// Links an object into a shared library with the system C compiler.
pub fn link_shared(object: &[u8], output: &Path) -> Result<(), BackendError> {
    link_shared_objects(&[object], output)
}

/// Links several objects into one shared object (`cc -shared ... -lm`).
pub fn link_shared_objects(objects: &[&[u8]], output: &Path) -> Result<(), BackendError> {
    static LINKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lopper-link-{}-{}",
        std::process::id(),
        LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackendError::Link(format!("cannot create `{}`: {e}", dir.display())))?;
    let mut files = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        let obj = dir.join(format!("model{i}.o"));
        std::fs::write(&obj, object)
            .map_err(|e| BackendError::Link(format!("cannot write `{}`: {e}", obj.display())))?;
        files.push(obj);
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let result = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(output)
        .args(&files)
        .arg("-lm")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = result.map_err(|e| {
        BackendError::Link(format!(
            "cannot run the C compiler `{cc}` (install gcc or set CC): {e}"
        ))
    })?;
    if !out.status.success() {
        return Err(BackendError::Link(format!(
            "`{cc} -shared` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// `int NAME_run_packed(float **buffers, const int64_t *sizes)`: the entry
/// point with its arguments in two arrays, for callers (like `lopper run`)
/// that only know the signature at run time.
fn define_packed_entry(
    module: &mut ObjectModule,
    ctx: &mut cranelift_codegen::Context,
    entry: cranelift_module::FuncId,
    prefix: &str,
    buffers: usize,
    sizes: usize,
) -> Result<(), BackendError> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.returns.push(AbiParam::new(types::I32));
    let id = module.declare_function(&format!("{prefix}_run_packed"), Linkage::Export, &sig)?;
    ctx.func.signature = sig;
    let frontend_config = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    let (table, size_table) = (b.block_params(block)[0], b.block_params(block)[1]);
    let flags = MemFlagsData::trusted();
    let mut args = Vec::new();
    for i in 0..buffers {
        args.push(b.ins().load(types::I64, flags, table, (8 * i) as i32));
    }
    for i in 0..sizes {
        args.push(b.ins().load(types::I64, flags, size_table, (8 * i) as i32));
    }
    let f = module.declare_func_in_func(entry, b.func);
    let call = b.ins().call(f, &args);
    let rc = b.inst_results(call)[0];
    b.ins().return_(&[rc]);
    b.seal_all_blocks();
    b.finalize(frontend_config);
    module
        .define_function(id, ctx)
        .map_err(|e| BackendError::Codegen(format!("{prefix}_run_packed: {e:?}")))?;
    module.clear_context(ctx);
    Ok(())
}

/// The signature as text, one line per item (`in x f32[batch,64]`,
/// `out y f32[batch,10]`, `size batch`), in the exported, NUL-terminated
/// string `NAME_signature`, so that a library describes itself.
fn define_description(
    module: &mut ObjectModule,
    prefix: &str,
    m: &Module,
) -> Result<(), BackendError> {
    let id = module.declare_data(
        &format!("{prefix}_signature"),
        Linkage::Export,
        false,
        false,
    )?;
    let mut d = DataDescription::new();
    let mut bytes = signature_text(m).into_bytes();
    bytes.push(0);
    d.define(bytes.into_boxed_slice());
    module.define_data(id, &d)?;
    Ok(())
}

/// The signature text of a module (see [`define_description`]).
pub fn signature_text(m: &Module) -> String {
    let mut text = String::new();
    for b in m.buffers_of(BufferKind::In) {
        text.push_str(&format!("in {} {}\n", b.name, b.ty));
    }
    for b in m.buffers_of(BufferKind::Out) {
        text.push_str(&format!("out {} {}\n", b.name, b.ty));
    }
    for s in &m.sizes {
        text.push_str(&format!("size {s}\n"));
    }
    text
}
