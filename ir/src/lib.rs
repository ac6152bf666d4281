//! lopper's intermediate representations.
//!
//! - [`types`]: dtypes, dims (static or symbolic), shapes and symbolic sizes;
//! - [`tensor`]: concrete `f32` tensors, the data that params carry;
//! - [`graph`]: the high-level graph IR on petgraph, with its `.gir` text form,
//!   parser, verifier, Graphviz output and the reference semantics of every op;
//! - [`diagnostic`]: source-located errors shared by every text format.
//!
//! The loop IR arrives with the lowering issue; this crate does not lower.
#![deny(missing_docs)]

pub mod diagnostic;
pub mod graph;
pub mod loops;
pub mod tensor;
pub mod types;

pub use diagnostic::{Diagnostic, Label};
pub use graph::{Graph, Node, Op};
pub use tensor::Tensor;
pub use types::{DType, Dim, Shape, Size, TensorType};
