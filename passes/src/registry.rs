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
    /// Turns the graph IR into the loop IR; `fuse` runs elementwise
    /// consumers inside their producer's nest.
    Lower {
        /// Fuse elementwise consumers.
        fuse: bool,
        /// Vector lanes of the backend (0: unknown, no layout choices).
        lanes: usize,
    },
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
        name: "prune",
        description: "prune constant weights: magnitude, N:M, block, or structured (neurons and filters removed)",
        options: crate::prune::OPTIONS,
        create: |o| Ok(AnyPass::Graph(Box::new(crate::prune::Prune::from_options(o)?))),
    },
    PassInfo {
        name: "analyze-sparsity",
        description: "measure each layer's weight sparsity; choose dense, CSR, BSR or N:M kernels (cost model)",
        options: &[
            ("format", "auto (cost model, default), dense, csr, bsr, bsrRxC, nm, N:M, sell or sell4|8|16: the format of every linear layer"),
            ("lanes", "vector lanes of the backend: 4 (Cranelift, the default), 8 or 16 (set from --backend)"),
            ("rows", "rows per call (batch) to choose kernels for: 1 by default (set by --tune-batch, bench and run)"),
            ("panel", "columns per panel of CSR and N:M kernels, 0 for whole rows (default: from lanes, rows and the L1 cache)"),
        ],
        create: |o| {
            Ok(AnyPass::Graph(Box::new(
                crate::analyze_sparsity::AnalyzeSparsity::from_options(o)?,
            )))
        },
    },
    PassInfo {
        name: "lower-to-loops",
        description: "lower the graph IR to loop nests (elementwise consumers fused), the loop IR",
        options: &[
            ("fuse", "run elementwise consumers in their producer's nest: true (default) or false (-O0)"),
            ("lanes", "vector lanes of the backend (set at -O2): a conv2d whose output channels fill them better than its rows is computed channels-last and transposed back; 0 (default): never"),
        ],
        create: |o: &PassOptions| -> Result<AnyPass, String> {
            o.check_known("lower-to-loops", &["fuse", "lanes"])?;
            let fuse = match o.0.get("fuse").map(String::as_str) {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => return Err(format!("`fuse` of `lower-to-loops` is true or false, got `{v}`")),
            };
            let lanes = match o.0.get("lanes").map(|l| l.parse::<usize>()) {
                None => 0,
                Some(Ok(l @ (0 | 4 | 8 | 16))) => l,
                Some(_) => return Err("`lanes` of `lower-to-loops` must be 0, 4, 8 or 16".into()),
            };
            Ok(AnyPass::Lower { fuse, lanes })
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
    PassInfo {
        name: "tile",
        description: "split loops of a band into tile loops and point loops, full and partial tiles (loop IR)",
        options: &[
            ("loops", "the loops of the band to tile, outermost first: [i0,i1]"),
            ("sizes", "one tile size per loop: [4,8]"),
            ("kernel", "only these kernels: [matmul_0] (default: every kernel with the loops)"),
        ],
        create: |o| Ok(AnyPass::Loops(Box::new(crate::tile::Tile::from_options(o)?))),
    },
    PassInfo {
        name: "vectorize",
        description: "turn a loop into vector lanes (vload, vstore, broadcast, vector accumulators), scalar remainder (loop IR)",
        options: &[
            ("loop", "the loop to vectorize: i1.i"),
            ("lanes", "lanes per vector: 4 (Cranelift's f32x4, the default) or 8"),
            ("kernel", "only these kernels (default: every kernel with the loop)"),
        ],
        create: |o| Ok(AnyPass::Loops(Box::new(crate::vectorize::Vectorize::from_options(o)?))),
    },
    PassInfo {
        name: "vectorize-transpose",
        description: "vectorize a transposing copy: tiles of lanes x lanes loaded as rows, transposed in registers with shuffles, stored as columns (loop IR)",
        options: &[
            ("loops", "the two point loops of each tile, outer first: [k.i,i0.i]"),
            ("lanes", "lanes per vector and the tile's side: 4 (the default), 8 or 16"),
            ("kernel", "only these kernels (default: every kernel with the loops)"),
        ],
        create: |o| {
            Ok(AnyPass::Loops(Box::new(
                crate::vectorize_transpose::VectorizeTranspose::from_options(o)?,
            )))
        },
    },
    PassInfo {
        name: "unroll",
        description: "copy a loop's body fully or by a factor, jamming inner loops (register blocking) (loop IR)",
        options: &[
            ("loop", "the loop to unroll: i0.i"),
            ("factor", "copies per iteration, with a remainder loop (default: unroll fully)"),
            ("chains", "with a factor: split accumulators so the loop has up to this many (default: none)"),
            ("kernel", "only these kernels (default: every kernel with the loop)"),
        ],
        create: |o| Ok(AnyPass::Loops(Box::new(crate::unroll::Unroll::from_options(o)?))),
    },
    PassInfo {
        name: "pack",
        description: "copy an operand into a tiled layout for a kernel; constants at compile time (loop IR)",
        options: &[
            ("buffer", "the operand: fc1.weight"),
            ("dim", "the dimension to split into tiles"),
            ("size", "the tile size, moved to a new last dimension"),
            ("kernel", "only these kernels (default: every kernel that reads it)"),
        ],
        create: |o| Ok(AnyPass::Loops(Box::new(crate::pack::Pack::from_options(o)?))),
    },
    PassInfo {
        name: "auto-schedule",
        description: "choose tile, pack, vectorize and unroll for every kernel and run them (loop IR; -O2)",
        options: &[
            ("lanes", "vector lanes of the backend: 4 (Cranelift, the default) or 8"),
            ("l2-cache", "bytes of level-2 cache a packed panel may use half of (default: the host's)"),
        ],
        create: |o| {
            Ok(AnyPass::Loops(Box::new(
                crate::auto_schedule::AutoSchedule::from_options(o)?,
            )))
        },
    },
    PassInfo {
        name: "interchange",
        description: "swap two perfectly nested loops when no iteration depends on another (loop IR)",
        options: &[
            ("loops", "the outer and the inner loop: [i0.o,i1.o]"),
            ("kernel", "only these kernels (default: every kernel with the loops)"),
        ],
        create: |o| Ok(AnyPass::Loops(Box::new(crate::interchange::Interchange::from_options(o)?))),
    },
    PassInfo {
        name: "simplify-loops",
        description: "fold index arithmetic; drop empty loops, inline one-iteration loops and constant ifs (loop IR)",
        options: &[],
        create: |o| {
            o.check_known("simplify-loops", &[])?;
            Ok(AnyPass::Loops(Box::new(crate::simplify_loops::SimplifyLoops)))
        },
    },
    PassInfo {
        name: "hoist",
        description: "move loop-invariant lets out of loops (loop IR)",
        options: &[],
        create: |o| {
            o.check_known("hoist", &[])?;
            Ok(AnyPass::Loops(Box::new(crate::hoist::Hoist)))
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
