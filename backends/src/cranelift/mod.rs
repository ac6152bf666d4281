//! The Cranelift backend: loop IR to native code.
//!
//! Every kernel becomes one function with a uniform C signature,
//! `void kernel(float **buffers, const int64_t *sizes)`: `buffers` holds the
//! kernel's buffer parameters in order (a view gets its source's memory),
//! `sizes` the module's symbolic sizes in order. Loops become blocks with a
//! loop variable, locals become Cranelift variables, local arrays stack slots;
//! `exp`, `log`, `tanh` and `erf` call the C library's `expf`, `logf`,
//! `tanhf` and `erff`; `fma` is Cranelift's `fma` (a `vfmadd` on hosts with
//! FMA). Addresses are computed from row-major strides in elements.
//!
//! [`jit`] compiles a module in memory and runs it; [`artifact`] writes an
//! object with a C entry point, links it into a shared object and writes its
//! header. Both emit scalar code: the vectorized forms arrive with the
//! `vectorize` pass.

pub mod artifact;
mod codegen;
mod header;
pub mod jit;

pub use artifact::{
    compile_entry_object, compile_object, compile_object_with, link_shared, link_shared_objects,
    Artifact,
};
pub use jit::{compile_jit, compile_jit_with, JitModule, KernelFn};
