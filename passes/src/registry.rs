//! The one list of passes, by name.
//!
//! `--passes`, `--print-after`, `--print-before`, `--stop-after` and
//! `--disable-pass` are all checked against it; an unknown name gets the list
//! of valid ones.

use crate::pass::{Pass, PassOptions};
use lopper_ir::Graph;

/// Builds a graph pass from its options, or says which option is wrong.
pub type CreateGraphPass = fn(&PassOptions) -> Result<Box<dyn Pass<Graph>>, String>;

/// A registered graph pass.
pub struct PassInfo {
    /// Name on the command line.
    pub name: &'static str,
    /// What it does, for `--help` and `lopper passes`.
    pub description: &'static str,
    /// Option names it takes, with a note each.
    pub options: &'static [(&'static str, &'static str)],
    /// Builds the pass from its options.
    pub create: CreateGraphPass,
}

macro_rules! no_options {
    ($name:literal, $ty:expr) => {
        |o: &PassOptions| -> Result<Box<dyn Pass<Graph>>, String> {
            o.check_known($name, &[])?;
            Ok(Box::new($ty))
        }
    };
}

/// Every graph pass, in the order `lopper passes` lists them.
pub static GRAPH_PASSES: &[PassInfo] = &[
    PassInfo {
        name: "shape-infer",
        description: "recompute every op's result type from its operands",
        options: &[],
        create: no_options!("shape-infer", crate::shape_infer::ShapeInfer),
    },
    PassInfo {
        name: "simplify",
        description:
            "algebraic identities: x*1, x+0, transpose∘transpose, reshape∘reshape, identity",
        options: &[],
        create: no_options!("simplify", crate::simplify::Simplify),
    },
    PassInfo {
        name: "fold-constants",
        description: "evaluate ops whose operands are all params",
        options: &[],
        create: no_options!("fold-constants", crate::fold_constants::FoldConstants),
    },
    PassInfo {
        name: "fold-batchnorm",
        description: "fold inference batch_norm into the preceding conv2d or linear",
        options: &[],
        create: no_options!("fold-batchnorm", crate::fold_batchnorm::FoldBatchNorm),
    },
    PassInfo {
        name: "cse",
        description: "merge nodes that compute the same value",
        options: &[],
        create: no_options!("cse", crate::cse::CommonSubexpressionElimination),
    },
    PassInfo {
        name: "dce",
        description: "remove nodes no output depends on",
        options: &[],
        create: no_options!("dce", crate::dce::DeadCodeElimination),
    },
];

/// The pass named `name`, or an error listing the valid names.
pub fn lookup(name: &str) -> Result<&'static PassInfo, String> {
    GRAPH_PASSES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = GRAPH_PASSES.iter().map(|p| p.name).collect();
        format!(
            "unknown pass `{name}`; the passes are: {}",
            names.join(", ")
        )
    })
}
