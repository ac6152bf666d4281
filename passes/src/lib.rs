//! lopper's passes: the [`Pass`] trait, the registry of names, pipelines as
//! text, the pass manager and its instrumentation, the graph passes, one
//! file each (`shape-infer`, `simplify`, `fold-constants`, `fold-batchnorm`,
//! `cse`, `dce`), and `lower-to-loops`, which turns the graph into the loop IR.
//!
//! The loop passes (tiling, vectorization, memory planning) register here the
//! same way.
#![deny(missing_docs)]

pub mod analyze_sparsity;
pub mod auto_schedule;
pub mod cse;
pub mod dce;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod hoist;
pub mod interchange;
pub mod ir;
pub mod loop_nest;
pub mod lower_to_loops;
pub mod manager;
pub mod pack;
pub mod pass;
pub mod pipeline;
pub mod plan_memory;
pub mod prune;
pub mod registry;
pub mod shape_infer;
pub mod simplify;
pub mod simplify_loops;
pub mod sparse_cost;
pub mod tile;
pub mod unroll;
pub mod vectorize;
pub mod vectorize_transpose;

pub use ir::Ir;
pub use manager::{Instrumentation, PassManager, PassTiming};
pub use pass::{Changed, Pass, PassContext, PassError, PassOptions};
pub use pipeline::{
    graph_pipeline, loop_pipeline, loop_pipeline_for, parse_pipeline, with_schedule_option,
    PassSpec, DEFAULT_LEVEL, DEFAULT_PIPELINE,
};
pub use registry::{lookup, AnyPass, PassInfo, PASSES};
