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
use crate::{BackendError, CodegenOptions};
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
    compile_artifact_with(m, prefix, source, opt, &CodegenOptions::default())
}

/// [`compile_artifact`] with `options`: run-time bounds checks on every
/// access (`--bounds-check`), another CPU (`--target-cpu`).
pub fn compile_artifact_with(
    m: &Module,
    prefix: &str,
    source: &str,
    opt: u8,
    options: &CodegenOptions,
) -> Result<LlvmArtifact, BackendError> {
    let prefix = crate::cranelift::artifact::c_identifier(prefix);
    let kernels = codegen::compile_kernels(m, &prefix, opt, options)?;
    let entry = compile_entry_object(m, &prefix, source, &options.target)?;
    Ok(LlvmArtifact { entry, kernels })
}

/// Compiles `m` with LLVM and loads it into this process.
pub fn compile_jit(m: &Module, opt: u8) -> Result<JitModule, BackendError> {
    compile_jit_with(m, opt, &CodegenOptions::default())
}

/// [`compile_jit`] with `options`: run-time bounds checks, a target CPU
/// this host can run.
pub fn compile_jit_with(
    m: &Module,
    opt: u8,
    options: &CodegenOptions,
) -> Result<JitModule, BackendError> {
    options.target.check_runs_here()?;
    static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let prefix = "lopper_jit";
    let artifact = compile_artifact_with(m, prefix, "jit", opt, options)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use lopper_ir::Tensor;
    use std::collections::{BTreeMap, HashMap};

    /// As the Cranelift test: a kernel reading one element past its input
    /// (built by hand, never verified) stops with a message when compiled
    /// with bounds checks; it runs in a child process, since it aborts.
    #[test]
    fn checked_code_aborts_with_a_message_out_of_bounds() {
        let text = "module @oob() {\n  buffer %x: in f32[4]\n  buffer %y: out f32[4]\n\n  kernel @copy(%x, %y) {\n    for %i in 0..4 {\n      %y[%i] = %x[%i]\n    }\n  }\n}\n";
        let inputs = HashMap::from([("x".to_string(), Tensor::full(vec![4], 1.0))]);
        if std::env::var_os("LOPPER_BOUNDS_CHILD").is_some() {
            let mut m = lopper_ir::loops::parse_lir(text).expect("parses");
            let lopper_ir::loops::Stmt::For { hi, .. } = &mut m.kernels[0].body[0] else {
                panic!("the kernel is one loop");
            };
            *hi = lopper_ir::loops::Expr::Int(5);
            let prefix = "lopper_jit";
            let checked = crate::CodegenOptions {
                bounds_check: true,
                ..Default::default()
            };
            let kernels = codegen::emit_kernels(&m, prefix, 0, &checked).expect("compiles");
            // The entry point (verified) is the same for the in-bounds module.
            let valid = lopper_ir::loops::parse_lir(text).expect("parses");
            let entry = compile_entry_object(&valid, prefix, "test", &crate::Target::host())
                .expect("entry");
            let dir = std::env::temp_dir().join(format!("lopper-oob-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let lib = dir.join("liboob.so");
            link_shared_objects(&[&entry.object, &kernels.object], &lib).unwrap();
            // SAFETY: built just above from this module.
            let library = unsafe { libloading::Library::new(&lib) }.unwrap();
            let f: libloading::Symbol<KernelFn> =
                unsafe { library.get(b"lopper_jit__copy\0") }.unwrap();
            let kernels = vec![*f];
            // SAFETY: the kernel has the kernel signature; the library lives on.
            let jit = unsafe { JitModule::from_parts(&m, kernels, Box::new(library)) };
            let _ = jit.run(&inputs, &BTreeMap::new());
            return; // not reached: the check aborts
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "llvm::tests::checked_code_aborts_with_a_message_out_of_bounds",
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
        let fine = lopper_ir::loops::parse_lir(text).unwrap();
        let out = compile_jit_with(
            &fine,
            3,
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
