//! The one list of passes, by name.
//!
//! `--passes`, `--print-after`, `--print-before`, `--stop-after` and
//! `--disable-pass` are all checked against it; an unknown name gets the list
//! of valid ones.

use crate::pass::{Pass, PassOptions};
use lopper_ir::loops::Module;
use lopper_ir::Graph;

/// A pass of any stage, ready to run.
pub enum AnyPass {
    /// Transforms the graph IR.
    Graph(Box<dyn Pass<Graph>>),
    /// Turns the graph IR into the loop IR.
    Lower,
    /// Transforms the loop IR.
    Loops(Box<dyn Pass<Module>>),
}

/// Builds a pass from its options, or says which option is wrong.
pub type CreatePass = fn(&PassOptions) -> Result<AnyPass, String>;

/// A registered pass.
pub struct PassInfo {
    /// Name on the command line.
    pub name: &'static str,
    /// What it does, for `--help` and `lopper passes`.
    pub description: &'static str,
    /// Option names it takes, with a note each.
    pub options: &'static [(&'static str, &'static str)],
    /// Builds the pass from its options.
    pub create: CreatePass,
}

macro_rules! no_options {
    ($name:literal, $ty:expr) => {
        |o: &PassOptions| -> Result<AnyPass, String> {
            o.check_known($name, &[])?;
            Ok(AnyPass::Graph(Box::new($ty)))
        }
    };
}

/// Every pass, in the order `lopper passes` lists them.
pub static PASSES: &[PassInfo] = &[
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
    PassInfo {
        name: "lower-to-loops",
        description: "lower the graph IR to loop nests (elementwise consumers fused), the loop IR",
        options: &[],
        create: |o: &PassOptions| -> Result<AnyPass, String> {
            o.check_known("lower-to-loops", &[])?;
            Ok(AnyPass::Lower)
        },
    },
    PassInfo {
        name: "plan-memory",
        description: "let scratch buffers reuse the memory of dead ones (loop IR)",
        options: &[],
        create: |o: &PassOptions| -> Result<AnyPass, String> {
            o.check_known("plan-memory", &[])?;
            Ok(AnyPass::Loops(Box::new(crate::plan_memory::PlanMemory)))
        },
    },
];

/// The pass named `name`, or an error listing the valid names.
pub fn lookup(name: &str) -> Result<&'static PassInfo, String> {
    PASSES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        format!(
            "unknown pass `{name}`; the passes are: {}",
            names.join(", ")
        )
    })
}
