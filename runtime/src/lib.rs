//! lopper's runtime: tensors in and out of safetensors files, the
//! reference interpreter that runs a graph directly, and the loop-IR
//! interpreter that runs a lowered module.
//!
//! The interpreter is the oracle every compiled result is checked against;
//! loading and calling compiled shared objects arrives with the backends.
#![deny(missing_docs)]

pub mod interpreter;
pub mod io;
pub mod library;
pub mod loop_interpreter;

pub use interpreter::{bind_sizes, run_graph, run_graph_adjusted, RunError};
pub use io::{random_tensor, read_tensor_file, write_tensors, IoError};
pub use library::SharedModel;
pub use loop_interpreter::run_module;
