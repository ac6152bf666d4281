//! Compiling a loop-IR module in memory and running it.

use super::codegen::{declare_libm, define_kernel, kernel_signature, verified_isa};
use crate::BackendError;
use crate::CodegenOptions;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module as ClifModule};
use lopper_ir::loops::{BufferKind, Module};
use lopper_ir::Tensor;
use std::collections::{BTreeMap, HashMap};

/// A compiled kernel: `void k(float **buffers, const int64_t *sizes)`.
pub type KernelFn = unsafe extern "C" fn(*const *mut f32, *const i64);

/// A module compiled to machine code in this process.
pub struct JitModule {
    // Owns the code the kernel pointers point into (a Cranelift JIT module
    // or a loaded shared object).
    _code: Box<dyn std::any::Any>,
    kernels: Vec<(KernelFn, Vec<String>)>,
    lir: Module,
}

/// Compiles every kernel of `m` with Cranelift (`opt_level = speed`, the
/// host's ISA features).
pub fn compile_jit(m: &Module) -> Result<JitModule, BackendError> {
    compile_jit_with(m, &CodegenOptions::default())
}

/// [`compile_jit`] with `options`: run-time bounds checks on every access
/// (`--bounds-check`), a target CPU this host can run (`--target-cpu`).
pub fn compile_jit_with(m: &Module, options: &CodegenOptions) -> Result<JitModule, BackendError> {
    options.target.check_runs_here()?;
    let isa = verified_isa(m, &options.target, false)?;
    build_jit(m, isa, options.bounds_check)
}

/// Compiles a module the caller has verified.
fn build_jit(
    m: &Module,
    isa: cranelift_codegen::isa::OwnedTargetIsa,
    bounds_check: bool,
) -> Result<JitModule, BackendError> {
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let libm = declare_libm(&mut module)?;
    let mut ids = Vec::new();
    let mut ctx = module.make_context();
    for k in &m.kernels {
        let sig = kernel_signature(&module);
        let id = module.declare_function(&k.name, Linkage::Local, &sig)?;
        define_kernel(&mut module, m, k, &libm, &mut ctx, bounds_check)?;
        module
            .define_function(id, &mut ctx)
            .map_err(|e| BackendError::Codegen(format!("@{}: {e:?}", k.name)))?;
        module.clear_context(&mut ctx);
        ids.push((id, k.params.clone()));
    }
    module.finalize_definitions()?;
    let kernels = ids
        .into_iter()
        .map(|(id, params)| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: every kernel was defined with `kernel_signature`, which
            // is this C signature.
            (
                unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) },
                params,
            )
        })
        .collect();
    Ok(JitModule {
        _code: Box::new(module),
        kernels,
        lir: m.clone(),
    })
}

impl JitModule {
    /// A module whose kernels (in `m`'s order) live in code that `owner`
    /// keeps alive.
    ///
    /// # Safety
    /// Each pointer must be a function with the kernel signature compiled
    /// from the kernel of `m` at the same position, valid while `owner`
    /// lives.
    pub unsafe fn from_parts(
        m: &Module,
        kernels: Vec<KernelFn>,
        owner: Box<dyn std::any::Any>,
    ) -> JitModule {
        JitModule {
            _code: owner,
            kernels: kernels
                .into_iter()
                .zip(&m.kernels)
                .map(|(f, k)| (f, k.params.clone()))
                .collect(),
            lir: m.clone(),
        }
    }
}

/// A buffer whose first element starts on a cache line
/// ([`crate::cranelift::artifact::BUFFER_ALIGN`], as in a compiled library):
/// a vector load from a `Vec`'s 16-byte boundary straddles two lines, which
/// made a sparse layer's timings depend on where the allocator put it.
struct Aligned<T> {
    raw: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    fn new(data: &[T]) -> Aligned<T> {
        let per_line = (super::artifact::BUFFER_ALIGN as usize / std::mem::size_of::<T>()).max(1);
        let mut raw = vec![T::default(); data.len() + per_line];
        let misaligned = raw.as_ptr() as usize % super::artifact::BUFFER_ALIGN as usize;
        let offset = if misaligned == 0 {
            0
        } else {
            (super::artifact::BUFFER_ALIGN as usize - misaligned) / std::mem::size_of::<T>()
        };
        raw[offset..offset + data.len()].copy_from_slice(data);
        Aligned {
            raw,
            offset,
            len: data.len(),
        }
    }

    fn as_mut_ptr(&mut self) -> *mut T {
        self.raw[self.offset..].as_mut_ptr()
    }

    fn to_vec(&self) -> Vec<T> {
        self.raw[self.offset..self.offset + self.len].to_vec()
    }
}

/// A compiled module bound to one set of inputs and sizes: its buffers are
/// allocated once, so [`BoundModule::execute`] only calls the kernels (what
/// `lopper bench` times).
pub struct BoundModule<'a> {
    module: &'a JitModule,
    storage: HashMap<String, Aligned<f32>>,
    index_storage: HashMap<String, Aligned<u8>>,
    shapes: HashMap<String, Vec<usize>>,
    size_values: Vec<i64>,
}

impl JitModule {
    /// Runs the module on `inputs` with the symbolic sizes `sizes` (already
    /// bound and checked against the inputs' shapes by the caller).
    pub fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
        sizes: &BTreeMap<String, usize>,
    ) -> Result<Vec<(String, Tensor)>, BackendError> {
        let mut bound = self.bind(inputs, sizes)?;
        bound.execute();
        Ok(bound.outputs())
    }

    /// The kernels' names, in order.
    pub fn kernel_names(&self) -> Vec<String> {
        self.lir.kernels.iter().map(|k| k.name.clone()).collect()
    }

    /// Allocates every buffer for `sizes` and copies the inputs in.
    pub fn bind(
        &self,
        inputs: &HashMap<String, Tensor>,
        sizes: &BTreeMap<String, usize>,
    ) -> Result<BoundModule<'_>, BackendError> {
        let mut storage: HashMap<String, Aligned<f32>> = HashMap::new();
        // Constant index arrays, read by the kernels as i64.
        let mut index_storage: HashMap<String, Aligned<u8>> = HashMap::new();
        let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
        for b in &self.lir.buffers {
            let shape = b.ty.shape.bind(sizes).map_err(BackendError::Run)?;
            let n = lopper_ir::tensor::checked_numel(&shape)
                .ok_or_else(|| BackendError::Run(format!("buffer %{} is too large", b.name)))?;
            let data = match b.kind {
                BufferKind::In => {
                    let t = inputs.get(&b.name).ok_or_else(|| {
                        BackendError::Run(format!("input `{}` is not given", b.name))
                    })?;
                    if t.shape != shape {
                        return Err(BackendError::Run(format!(
                            "input `{}` has shape {:?}, expected {shape:?}",
                            b.name, t.shape
                        )));
                    }
                    t.data.clone()
                }
                BufferKind::Const if b.index_data.is_some() => {
                    let indices = b.index_data.as_deref().unwrap_or_default();
                    let bytes = crate::index_bytes(indices, b.ty.dtype);
                    index_storage.insert(b.name.clone(), Aligned::new(&bytes));
                    continue;
                }
                BufferKind::Const => b
                    .data
                    .as_ref()
                    .map(|p| p.data.data.clone())
                    .unwrap_or_default(),
                BufferKind::Out | BufferKind::Scratch => vec![0.0; n],
                BufferKind::View => {
                    shapes.insert(b.name.clone(), shape);
                    continue;
                }
            };
            if self.lir.storage_of(&b.name) != b.name {
                // Scratch that reuses another's memory (plan-memory).
                shapes.insert(b.name.clone(), shape);
                continue;
            }
            if data.len() != n {
                return Err(BackendError::Run(format!(
                    "buffer %{} holds {} values, expected {n}",
                    b.name,
                    data.len()
                )));
            }
            storage.insert(b.name.clone(), Aligned::new(&data));
            shapes.insert(b.name.clone(), shape);
        }
        let size_values: Vec<i64> = self
            .lir
            .sizes
            .iter()
            .map(|s| sizes.get(s).map_or(0, |&v| v as i64))
            .collect();
        if self.lir.sizes.iter().any(|s| !sizes.contains_key(s)) {
            return Err(BackendError::Run("a symbolic size is not bound".into()));
        }
        Ok(BoundModule {
            module: self,
            storage,
            index_storage,
            shapes,
            size_values,
        })
    }
}

impl BoundModule<'_> {
    /// Runs every kernel once.
    pub fn execute(&mut self) {
        for k in 0..self.module.kernels.len() {
            self.execute_kernel(k);
        }
    }

    /// Runs kernel number `k` alone (for per-kernel timings).
    pub fn execute_kernel(&mut self, k: usize) {
        let (kernel, params) = &self.module.kernels[k];
        let lir = &self.module.lir;
        let pointers: Vec<*mut f32> = params
            .iter()
            .map(|p| {
                let root = lir.storage_of(p);
                if let Some(indices) = self.index_storage.get_mut(root) {
                    return indices.as_mut_ptr() as *mut f32;
                }
                self.storage
                    .get_mut(root)
                    .map_or(std::ptr::null_mut(), |v| v.as_mut_ptr())
            })
            .collect();
        // SAFETY: the module passed the verifier, so every access of the
        // kernel lies within the buffers' shapes, which `storage` holds at
        // their full size for these sizes.
        unsafe { kernel(pointers.as_ptr(), self.size_values.as_ptr()) };
    }

    /// The outputs after [`BoundModule::execute`].
    pub fn outputs(&self) -> Vec<(String, Tensor)> {
        self.module
            .lir
            .buffers_of(BufferKind::Out)
            .map(|b| {
                (
                    b.name.clone(),
                    Tensor {
                        shape: self.shapes[&b.name].clone(),
                        data: self.storage[&b.name].to_vec(),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_on_a_cache_line_and_keep_their_values() {
        for len in [0usize, 1, 5, 300, 4096] {
            let data: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            let mut b = Aligned::new(&data);
            assert_eq!(b.as_mut_ptr() as usize % 64, 0, "{len} floats");
            assert_eq!(b.to_vec(), data);
            let indices: Vec<i64> = (0..len as i64).collect();
            let mut i = Aligned::new(&indices);
            assert_eq!(i.as_mut_ptr() as usize % 64, 0, "{len} indices");
            assert_eq!(i.to_vec(), indices);
        }
    }

    /// A kernel that reads one element past its input, which the verifier
    /// would refuse: only a module built by hand (and never verified) has it.
    fn out_of_bounds_module() -> Module {
        let mut m = lopper_ir::loops::parse_lir(
            "module @oob() {\n  buffer %x: in f32[4]\n  buffer %y: out f32[4]\n\n  kernel @copy(%x, %y) {\n    for %i in 0..4 {\n      %y[%i] = %x[%i]\n    }\n  }\n}\n",
        )
        .expect("the in-bounds module parses");
        let lopper_ir::loops::Stmt::For { hi, .. } = &mut m.kernels[0].body[0] else {
            panic!("the kernel is one loop");
        };
        *hi = lopper_ir::loops::Expr::Int(5);
        m
    }

    /// `--bounds-check` code stops at the first access outside its buffer,
    /// naming the kernel and the buffer. It aborts the process, so the
    /// access runs in a child: this test binary again, with an environment
    /// variable that sends it down the failing path.
    #[test]
    fn checked_code_aborts_with_a_message_out_of_bounds() {
        let inputs = HashMap::from([("x".to_string(), Tensor::full(vec![4], 1.0))]);
        if std::env::var_os("LOPPER_BOUNDS_CHILD").is_some() {
            let isa = crate::Target::host().cranelift_isa(false).unwrap();
            let jit = build_jit(&out_of_bounds_module(), isa, true).expect("compiles");
            let _ = jit.run(&inputs, &BTreeMap::new());
            return; // not reached: the check aborts
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cranelift::jit::tests::checked_code_aborts_with_a_message_out_of_bounds",
                "--nocapture",
            ])
            .env("LOPPER_BOUNDS_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(
                "lopper: out-of-bounds access to %x in kernel @copy (compiled with --bounds-check)"
            ),
            "{stderr}"
        );
        // Checked code that stays in bounds runs as usual.
        let fine = lopper_ir::loops::parse_lir(
            "module @ok() {\n  buffer %x: in f32[4]\n  buffer %y: out f32[4]\n\n  kernel @copy(%x, %y) {\n    for %i in 0..4 {\n      %y[%i] = %x[%i]\n    }\n  }\n}\n",
        )
        .unwrap();
        let out = compile_jit_with(
            &fine,
            &CodegenOptions {
                bounds_check: true,
                ..Default::default()
            },
        )
        .unwrap()
        .run(&inputs, &BTreeMap::new())
        .unwrap();
        assert_eq!(out[0].1.data, vec![1.0; 4]);
    }
}
