//! The LLVM backend (cargo feature `llvm`): the same loop IR and the same
//! artifact as Cranelift, with LLVM's optimizer and the host's full vector
//! width.
//!
//! [`compile_artifact`] emits the kernels with LLVM ([`codegen`]) and the
//! entry point, constants and header with the Cranelift artifact code, so
//! the shared object has exactly the Cranelift one's ABI and header.
//! [`compile_jit`] links them into a temporary shared object, loads it and
//! returns a [`JitModule`] (what `run`, `eval` and `bench` use).

pub mod codegen;

use crate::cranelift::{compile_entry_object, link_shared_objects, Artifact, JitModule, KernelFn};
use crate::BackendError;
use lopper_ir::loops::Module;
use std::path::Path;

/// An LLVM-built artifact: the Cranelift entry object and the LLVM kernels.
pub struct LlvmArtifact {
    /// Entry point, constants, header (Cranelift).
    pub entry: Artifact,
    /// The kernels (LLVM).
    pub kernels: codegen::LlvmKernels,
}

impl LlvmArtifact {
    /// Links both objects into `output`.
    pub fn link(&self, output: &Path) -> Result<(), BackendError> {
        link_shared_objects(&[&self.entry.object, &self.kernels.object], output)
    }
}

/// Compiles `m` with LLVM at optimization level `opt` into the objects of a
/// shared object whose entry point is `{prefix}_run`.
pub fn compile_artifact(
    m: &Module,
    prefix: &str,
    source: &str,
    opt: u8,
) -> Result<LlvmArtifact, BackendError> {
    let prefix = crate::cranelift::artifact::c_identifier(prefix);
    let kernels = codegen::compile_kernels(m, &prefix, opt)?;
    let entry = compile_entry_object(m, &prefix, source)?;
    Ok(LlvmArtifact { entry, kernels })
}

/// Compiles `m` with LLVM and loads it into this process.
pub fn compile_jit(m: &Module, opt: u8) -> Result<JitModule, BackendError> {
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let prefix = "lopper_jit";
    let artifact = compile_artifact(m, prefix, "jit", opt)?;
    let dir = std::env::temp_dir().join(format!(
        "lopper-llvm-{}-{}",
        std::process::id(),
        LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackendError::Link(format!("cannot create `{}`: {e}", dir.display())))?;
    let lib_path = dir.join("libjit.so");
    artifact.link(&lib_path)?;
    // SAFETY: the library was just built from verified loop IR; loading it
    // runs no initializers of ours.
    let library = unsafe { libloading::Library::new(&lib_path) }
        .map_err(|e| BackendError::Link(format!("cannot load `{}`: {e}", lib_path.display())));
    let _ = std::fs::remove_dir_all(&dir);
    let library = library?;
    let mut kernels = Vec::new();
    for k in &m.kernels {
        let symbol = format!("{prefix}__{}\0", k.name);
        // SAFETY: every kernel was compiled with the kernel signature.
        let f: libloading::Symbol<KernelFn> = unsafe { library.get(symbol.as_bytes()) }
            .map_err(|e| BackendError::Link(format!("kernel @{}: {e}", k.name)))?;
        kernels.push(*f);
    }
    // SAFETY: the pointers come from `library`, which the module keeps.
    Ok(unsafe { JitModule::from_parts(m, kernels, Box::new(library)) })
}
