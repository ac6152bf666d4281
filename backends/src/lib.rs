//! lopper's code generators.
//!
//! - [`cranelift`]: loop IR to native code with Cranelift, run in memory
//!   (JIT) or written as a shared object with a C header;
//! - the LLVM backend (feature `llvm`) arrives with its issue.
//!
//! [`Backend`] names what `lopper run` and `lopper eval` can execute on.
#![deny(missing_docs)]

pub mod cranelift;

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
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interpreter" => Ok(Backend::Interpreter),
            "cranelift" => Ok(Backend::Cranelift),
            "llvm" => {
                Err("backend `llvm` is not built yet; use `cranelift` or `interpreter`".into())
            }
            _ => Err(format!(
                "unknown backend `{s}`; expected cranelift or interpreter"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Interpreter => "interpreter",
            Backend::Cranelift => "cranelift",
        })
    }
}
