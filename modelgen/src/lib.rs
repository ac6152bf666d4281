//! Random valid models for differential testing, in the spirit of Csmith,
//! YARPGen and NNSmith: [`generate`] draws a model of 2 to 30 ops from every
//! op of the language with compatible random shapes (symbolic batch, odd
//! sizes, broadcasting, conv strides, padding, dilation and groups), seeded
//! and reproducible; [`differential`] runs it on the reference interpreter,
//! Cranelift and LLVM (when built) at -O0 and -O2, pruned or not, and
//! [`minimize`] shrinks a failing model by dropping ops.
//!
//! The generator writes model text (`.lop`), so every failure is a file a
//! person can read and rerun with `lopper run`.
#![deny(missing_docs)]

mod differential;
mod generate;
mod minimize;

pub use differential::{differential, Config, Failure};
pub use generate::{generate, Model};
pub use minimize::minimize;
