//! lopper's code generators.
//!
//! - [`cranelift`]: loop IR to native code with Cranelift, run in memory
//!   (JIT) or written as a shared object with a C header;
//! - [`llvm`] (feature `llvm`): the same loop IR through LLVM 19 (inkwell),
//!   with the host's full vector width, into the same artifact.
//!
//! [`Backend`] names what `lopper run` and `lopper eval` can execute on.
#![deny(missing_docs)]

pub mod cranelift;
#[cfg(feature = "llvm")]
pub mod llvm;

use std::fmt;
use std::str::FromStr;

/// A failure to compile or run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The code generator refused the module.
    #[error("code generation: {0}")]
    Codegen(String),
    /// Cranelift's module layer failed.
    #[error("code generation: {0}")]
    Module(Box<cranelift_module::ModuleError>),
    /// Running compiled code failed before the call.
    #[error("{0}")]
    Run(String),
    /// Linking the shared object failed.
    #[error("linking: {0}")]
    Link(String),
}

impl From<cranelift_module::ModuleError> for BackendError {
    fn from(e: cranelift_module::ModuleError) -> Self {
        BackendError::Module(Box::new(e))
    }
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (graph IR) or the loop interpreter (loop IR).
    Interpreter,
    /// Native code from Cranelift, compiled in memory.
    Cranelift,
    /// Native code from LLVM (feature `llvm`).
    Llvm,
}

impl Backend {
    /// Vector lanes of `f32` the backend's schedules should use: 4 for
    /// Cranelift (128-bit vectors); for LLVM the host's widest, 16 with
    /// AVX-512, else 8 (AVX2).
    pub fn lanes(self) -> u32 {
        match self {
            Backend::Llvm => host_lanes(),
            _ => 4,
        }
    }
}

/// The host's widest `f32` vector.
fn host_lanes() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return 16;
        }
        if std::is_x86_feature_detected!("avx2") {
            return 8;
        }
    }
    4
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interpreter" => Ok(Backend::Interpreter),
            "cranelift" => Ok(Backend::Cranelift),
            "llvm" if cfg!(feature = "llvm") => Ok(Backend::Llvm),
            "llvm" => Err(
                "this lopper was built without LLVM; rebuild with `--features llvm` (see the README)"
                    .into(),
            ),
            _ => Err(format!(
                "unknown backend `{s}`; expected cranelift, llvm or interpreter"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Interpreter => "interpreter",
            Backend::Cranelift => "cranelift",
            Backend::Llvm => "llvm",
        })
    }
}
