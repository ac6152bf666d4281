//! lopper's code generators and artifact builder.
//!
//! This crate will hold the Cranelift backend (the default), the LLVM
//! backend behind the `llvm` feature, object linking with `cc -shared` and the
//! C header writer, all compiling the loop IR. The loop IR and lowering come
//! first (their own issue), so today it only names the backends the CLI
//! accepts; it generates no code yet.
#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// A code generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (runs the graph IR directly).
    Interpreter,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "interpreter" => Ok(Backend::Interpreter),
            "cranelift" | "llvm" => Err(format!(
                "backend `{s}` is not built yet: code generation arrives with the loop IR; use `interpreter`"
            )),
            _ => Err(format!("unknown backend `{s}`; expected interpreter")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Interpreter => "interpreter",
        })
    }
}
