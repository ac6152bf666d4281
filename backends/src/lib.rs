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
pub mod target;

pub use target::{CodegenOptions, Target};

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

/// The type of a loop-IR expression in a kernel being compiled: `var`
/// gives the type of a variable in scope, `index_array` says whether a
/// buffer holds integer indices. Both code generators type expressions this
/// way; the verifier has checked the module already.
pub(crate) fn expr_type(
    e: &lopper_ir::loops::Expr,
    var: &dyn Fn(&str) -> Option<lopper_ir::loops::ScalarType>,
    index_array: &dyn Fn(&str) -> bool,
) -> lopper_ir::loops::ScalarType {
    use lopper_ir::loops::{BinOp, Expr, ScalarType, UnOp};
    let of = |x: &Expr| expr_type(x, var, index_array);
    match e {
        Expr::Int(_) | Expr::Size(_) => ScalarType::Index,
        Expr::Float(_) => ScalarType::F32,
        Expr::Load { buffer, .. } if index_array(buffer) => ScalarType::Index,
        Expr::Load { .. } => ScalarType::F32,
        Expr::Fma(a, _, _) | Expr::Shuffle(a, _, _) => of(a),
        Expr::VLoad { lanes, .. } | Expr::Broadcast(_, lanes) => ScalarType::Vector(*lanes),
        Expr::Permute { table, .. } => of(table),
        Expr::Horizontal(..) => ScalarType::F32,
        Expr::Var(v) => var(v).unwrap_or(ScalarType::F32),
        Expr::Binary(op, a, _) => match op {
            BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Eq
            | BinOp::Ne
            | BinOp::And
            | BinOp::Or => ScalarType::Bool,
            _ => of(a),
        },
        Expr::Unary(UnOp::ToFloat, _) => ScalarType::F32,
        Expr::Unary(_, a) => of(a),
        Expr::Select(_, a, _) => of(a),
    }
}

/// The bytes of a constant index array as stored in memory: each value
/// little-endian at the width of the buffer's integer type (the verifier has
/// checked that every value fits).
pub(crate) fn index_bytes(values: &[i64], dtype: lopper_ir::types::DType) -> Vec<u8> {
    let width = dtype.bytes();
    values
        .iter()
        .flat_map(|v| v.to_le_bytes().into_iter().take(width))
        .collect()
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
    /// Vector lanes of `f32` the backend's schedules should use on this
    /// host: 4 for Cranelift (128-bit vectors); for LLVM the host's widest,
    /// 16 with AVX-512, else 8 (AVX2). [`Target::lanes`] for another CPU.
    pub fn lanes(self) -> u32 {
        Target::host().lanes(self)
    }
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
