//! `lopper`: the command-line driver of the lopper deep-learning compiler.
//!
//! Each subcommand is a thin shell over the driver: `check` reports a
//! model, `dump` and `opt` run pass pipelines and print IR, `run` and `eval`
//! execute a model. Errors print as diagnostics with file:line:col and exit
//! with status 1; bad flags exit with status 2.

mod bench;
mod driver;
mod prune;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use driver::{
    argmax_rows, declared_inputs, describe_tensor, execute_ir, load_graph, load_ir, parse_sizes,
    read_input, run_pipeline, summary, Rendered,
};
use lopper_backends::{Backend, CodegenOptions, Target};
use lopper_ir::graph::{print_gir, to_dot};
use lopper_ir::{Dim, Tensor};
use lopper_passes::{graph_pipeline, Instrumentation, Ir, Pass, PassManager, PASSES};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lopper",
    version,
    about = "A miniature deep-learning compiler that shows every step it takes",
    long_about = "lopper reads a model written in its DSL (.lop), an ONNX model (.onnx) or IR text (.gir, .lir), \
runs graph passes (shape inference, folding, simplification, ...), lowers it to \
loop nests and compiles them to native code with Cranelift: in memory for `run` \
and `eval`, or as a shared object with a C header for `compile`. Every stage \
can be printed, dumped and re-run by hand.",
    after_help = "Examples:\n  lopper check examples/mlp.lop\n  lopper dump examples/lenet5.lop --print-after-all\n  lopper compile examples/digits_mlp.lop -o build/libdigits_mlp.so\n  lopper eval examples/digits_mlp.lop --data ../shared/data/digits/digits.safetensors\n\nRun `lopper help <command>` for the flags of one command."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, verify and infer shapes; print each op with its type and FLOPs, and the params.
    Check {
        /// The model (.lop, .gir or .onnx).
        file: PathBuf,
        /// Bind a symbolic size for the totals, e.g. `--set batch=64` (repeatable).
        #[arg(long = "set", value_name = "NAME=SIZE")]
        set: Vec<String>,
        /// The backend whose sparse kernels the weights table chooses for:
        /// `cranelift` or `llvm` (16 lanes with AVX-512).
        #[arg(long, default_value = "cranelift")]
        backend: lopper_backends::Backend,
    },
    /// Prune a model's weights and write them (and, for structured pruning,
    /// the model with its new shapes); print what each layer lost.
    #[command(
        after_help = "Examples:\n  lopper prune examples/mlp.lop --sparsity 0.9 -o mlp-90.safetensors\n  lopper prune examples/mlp.lop --method nm --n 2 --m 4 --report\n  lopper prune examples/mlp.lop --method structured --sparsity 0.5 -o mlp-half.safetensors   # also writes mlp-half.lop\n  lopper prune examples/mlp.lop --sparsity 0.9 --scope global --exclude fc3.weight --report\n\nThe same pruning runs inside a compilation with `--prune 'method=magnitude,sparsity=0.9'`."
    )]
    Prune {
        /// The model (.lop, .gir or .onnx).
        file: PathBuf,
        /// magnitude (smallest |w|), nm (n of every m along the reduction),
        /// block (whole RxC blocks) or structured (whole neurons and filters).
        #[arg(long, default_value = "magnitude")]
        method: String,
        /// Fraction of weights (blocks, neurons) to remove (default 0.5;
        /// not for nm).
        #[arg(long)]
        sparsity: Option<f64>,
        /// layer (each weight its own threshold) or global (one threshold
        /// over all selected weights; magnitude and block).
        #[arg(long)]
        scope: Option<String>,
        /// A weight's own fraction, `fc1.weight:0.95` (repeatable).
        #[arg(long = "layer-sparsity", value_name = "NAME:FRACTION")]
        layer_sparsity: Vec<String>,
        /// Prune only weights matching these patterns (`*` matches any run;
        /// repeatable). Default: every weight of linear, conv2d and matmul.
        #[arg(long = "params", value_name = "PATTERN")]
        params: Vec<String>,
        /// Leave weights matching these patterns alone (repeatable).
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// nm: weights kept per group (default 2).
        #[arg(long)]
        n: Option<usize>,
        /// nm: group length along the reduction (default 4).
        #[arg(long)]
        m: Option<usize>,
        /// block: the block, RxC (default 4x4).
        #[arg(long, value_name = "RxC")]
        block: Option<String>,
        /// block and structured: rank by l1 or l2 norm.
        #[arg(long)]
        norm: Option<String>,
        /// Write the pruned weights here (safetensors, the same tensor names).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the per-layer table (always printed without -o).
        #[arg(long)]
        report: bool,
        /// Print what the pass did to each weight.
        #[arg(long)]
        remarks: bool,
        /// The backend whose sparse kernels the report chooses for:
        /// `cranelift` or `llvm`.
        #[arg(long, default_value = "cranelift")]
        backend: lopper_backends::Backend,
    },
    /// Import an ONNX model: write the same model in lopper's language (.lop)
    /// and its weights (.safetensors), so it can be read, edited and pruned.
    Import {
        /// The ONNX model (opset 13 or later).
        file: PathBuf,
        /// The model text to write (.lop).
        #[arg(short, long)]
        output: PathBuf,
        /// Where the weights go (default: the output with `.safetensors`).
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Run a pass pipeline on a model and print the resulting IR.
    Dump {
        /// The model (.lop, .gir or .onnx).
        file: PathBuf,
        /// What to print: graph IR text or Graphviz.
        #[arg(long, value_enum, default_value_t = Emit::Gir)]
        emit: Emit,
        /// Write the result here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Run passes on IR text (.gir or .lir) and print the result (like mlir-opt); no passes by default.
    Opt {
        /// The IR file (.gir or .lir).
        file: PathBuf,
        /// Write the result here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Emit::Gir)]
        emit: Emit,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Run a model on inputs and print a summary of each output.
    Run {
        /// The model (.lop, .gir, .lir, .onnx) or a library built by `lopper compile` (.so).
        file: PathBuf,
        /// An input: `NAME=FILE.safetensors[:TENSOR]` or `NAME=random:SEED` (repeatable).
        #[arg(long = "input", value_name = "NAME=SOURCE", required = true)]
        inputs: Vec<String>,
        /// Bind a symbolic size, e.g. `--set batch=8` (needed for random inputs).
        #[arg(long = "set", value_name = "NAME=SIZE")]
        set: Vec<String>,
        /// Write every output to this safetensors file.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Where to run it: `cranelift` (native code, compiled in memory) or
        /// `interpreter` (the graph interpreter, or the loop interpreter for loop IR).
        #[arg(
            long,
            default_value = "cranelift",
            default_value_if("interp", "true", "interpreter")
        )]
        backend: lopper_backends::Backend,
        /// Shorthand for `--backend interpreter`.
        #[arg(long)]
        interp: bool,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Measure classification accuracy on a labelled data set, with a confusion matrix.
    Eval {
        /// The model (.lop, .gir, .lir, .onnx, or a compiled .so); its first output holds class scores.
        file: PathBuf,
        /// A safetensors file with inputs and integer labels.
        #[arg(long, value_name = "FILE")]
        data: PathBuf,
        /// The inputs' tensor name.
        #[arg(long, default_value = "test_x")]
        x: String,
        /// The labels' tensor name.
        #[arg(long, default_value = "test_y")]
        y: String,
        /// Where to run it: `cranelift` or `interpreter` (see `lopper run --help`).
        #[arg(
            long,
            default_value = "cranelift",
            default_value_if("interp", "true", "interpreter")
        )]
        backend: lopper_backends::Backend,
        /// Shorthand for `--backend interpreter`.
        #[arg(long)]
        interp: bool,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Measure compiled code: latency (median, min, max), GFLOP/s, fraction of peak, roofline.
    Bench {
        /// The model (.lop, .gir, .lir or .onnx).
        file: PathBuf,
        /// Bind a symbolic size, e.g. `--set batch=64` (every size must be bound).
        #[arg(long = "set", value_name = "NAME=SIZE")]
        set: Vec<String>,
        /// The code generator: `cranelift` or `llvm` (built with `--features llvm`).
        #[arg(long, default_value = "cranelift")]
        backend: lopper_backends::Backend,
        /// Timed calls (default: as many as fit in about a second).
        #[arg(long, default_value_t = 0)]
        iters: usize,
        /// Untimed calls before timing.
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Time each kernel too: FLOPs, bytes, arithmetic intensity, and
        /// whether the roofline says it is bound by compute or memory.
        #[arg(long)]
        per_kernel: bool,
        /// The machine's peak GFLOP/s (default: measured with an FMA loop).
        #[arg(long, value_name = "GFLOPS")]
        peak_gflops: Option<f64>,
        /// The memory bandwidth in GB/s (default: measured).
        #[arg(long, value_name = "GBPS")]
        peak_gbps: Option<f64>,
        /// Draw the roofline with each kernel as a point into this SVG (implies --per-kernel).
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Compile a model to a shared object (`libNAME.so`) and its C header (`NAME.h`).
    Compile {
        /// The model (.lop, .gir, .lir or .onnx).
        file: PathBuf,
        /// The shared object to write; its name gives the entry point `NAME_run`.
        #[arg(short, long, value_name = "libNAME.so")]
        output: PathBuf,
        /// What to write beside it (comma-separated): so, h, obj (NAME.o), gir
        /// (NAME.gir, after the graph passes), lir (NAME.lir), clif (NAME.clif,
        /// the Cranelift IR), llvm-ir (NAME.ll and NAME.opt.ll, before and
        /// after LLVM's optimizer), asm (NAME.s, LLVM's assembly).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "so,h")]
        emit: Vec<Artifact>,
        /// The code generator: `cranelift` (the default) or `llvm` (built
        /// with `--features llvm`; the same artifact and header).
        #[arg(long, default_value = "cranelift")]
        backend: lopper_backends::Backend,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// List every pass with its description and options.
    Passes,
    /// Differential testing: generate random valid models from seeds, run each
    /// on the reference interpreter, Cranelift and (when built) LLVM at -O0 and
    /// -O2, pruned or not, and report any disagreement with a minimized model.
    FuzzDiff {
        /// How many models (seeds) to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Print each model's text instead of running it.
        #[arg(long)]
        show: bool,
        /// Leave out LLVM even when it is built.
        #[arg(long)]
        no_llvm: bool,
        /// Leave out the pruned variants.
        #[arg(long)]
        no_prune: bool,
        /// Compile with bounds checks in the generated code.
        #[arg(long)]
        bounds_check: bool,
        /// Values of the symbolic batch, comma-separated; the kernels are
        /// chosen for the largest (a batch of 37 fills LLVM's vector tiles
        /// and gives its sparse layers panels; transposes get whole tiles).
        #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_values_t = [1usize, 3])]
        batches: Vec<usize>,
        /// Threads running models at once.
        #[arg(long, default_value_t = 1)]
        jobs: u64,
        /// Write each minimized failing model here (`seed-N.lop`).
        #[arg(long, value_name = "DIR")]
        failures: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// Graph IR text (parses back with `lopper opt`).
    Gir,
    /// Graphviz DOT of the graph IR (render with `dot -Tsvg`).
    Dot,
    /// Loop IR text (lowers after the pipeline unless it already did).
    Lir,
    /// Cranelift IR of every kernel and of the C entry point (lowers first).
    Clif,
}

/// What `lopper compile` writes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Artifact {
    /// The shared object (`-o`).
    So,
    /// The C header `NAME.h`.
    H,
    /// The relocatable object `NAME.o`.
    Obj,
    /// The graph IR after the graph passes, `NAME.gir`.
    Gir,
    /// The loop IR that is compiled, `NAME.lir`.
    Lir,
    /// The Cranelift IR, `NAME.clif`.
    Clif,
    /// LLVM IR before and after the optimizer, `NAME.ll` and `NAME.opt.ll`.
    #[value(name = "llvm-ir")]
    LlvmIr,
    /// LLVM's assembly, `NAME.s`.
    Asm,
}

/// Flags shared by every command that runs passes, named as LLVM and MLIR name them.
#[derive(Args, Clone)]
struct PipelineArgs {
    /// The pass pipeline, e.g. `simplify,fold-constants,dce` (see `lopper passes`).
    #[arg(long, value_name = "PIPELINE", conflicts_with = "opt_level")]
    passes: Option<String>,
    /// Optimization level: 0 (shape inference, naive loops), 1 (graph
    /// simplification and folding, fused loops), 2 (default: plus tiling,
    /// packing, vectorization and unrolling chosen by `auto-schedule`), 3
    /// (as 2; reserved for sparsity and tuning).
    #[arg(short = 'O', value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: Option<u8>,
    /// Print the IR before this pass (repeatable, or comma-separated).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    print_before: Vec<String>,
    /// Print the IR after this pass (repeatable, or comma-separated).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    print_after: Vec<String>,
    /// Print the IR before every pass.
    #[arg(long)]
    print_before_all: bool,
    /// Print the IR after every pass.
    #[arg(long)]
    print_after_all: bool,
    /// With --print-after*: print only when the pass changed the IR.
    #[arg(long)]
    print_changed_only: bool,
    /// Write numbered dumps (00-input.gir, 01-shape-infer.gir, ...) into this folder.
    #[arg(long, value_name = "DIR")]
    dump_dir: Option<PathBuf>,
    /// Stop after this pass.
    #[arg(long, value_name = "PASS")]
    stop_after: Option<String>,
    /// Skip this pass (repeatable, or comma-separated).
    #[arg(long, value_name = "PASS", value_delimiter = ',')]
    disable_pass: Vec<String>,
    /// Print how long each pass took.
    #[arg(long)]
    time_passes: bool,
    /// Print what each pass did or declined to do, and why (like LLVM's -Rpass).
    #[arg(long)]
    remarks: bool,
    /// Verify the IR after every pass (always on in debug builds).
    #[arg(long)]
    verify_each: bool,
    /// Prune the weights first, with the options of the `prune` pass:
    /// `method=magnitude,sparsity=0.9`, `method=nm,n=2,m=4`,
    /// `method=block,block=4x4,sparsity=0.5`, `method=structured,sparsity=0.5`
    /// (see docs/pruning.md).
    #[arg(long, value_name = "OPTIONS", conflicts_with = "passes")]
    prune: Option<String>,
    /// Kernel format of linear layers with zeros: auto (the cost model's
    /// choice, the default at -O2), dense, csr, bsr (4x4), bsrRxC, nm (the
    /// weight's N:M), N:M such as 2:4, or sell (sliced ELLPACK, slices of
    /// the backend's vector lanes; sell4, sell8, sell16).
    #[arg(long, value_name = "FORMAT", conflicts_with = "passes")]
    sparse: Option<String>,
    /// The batch (rows per call) the sparse cost model chooses kernels for:
    /// 1 by default (latency); `bench` and `run` use the size bound with
    /// `--set`. Sparse kernels pay at lower sparsity on larger batches.
    #[arg(long, value_name = "ROWS", conflicts_with = "passes")]
    tune_batch: Option<usize>,
    /// Check every load and store of the generated code against its
    /// buffer's extents at run time: an out-of-bounds access prints the
    /// kernel and the buffer and aborts (a test mode; slower code).
    #[arg(long)]
    bounds_check: bool,
    /// The CPU to generate code for: `native` (this host, the default) or
    /// an x86-64 CPU by the name LLVM and Cranelift share (x86-64-v3,
    /// haswell, skylake-avx512, znver3, ...; an unknown name lists them).
    /// Sets the instruction set and the vector width the schedules use;
    /// code for a CPU with features this host lacks can be compiled, not
    /// run.
    #[arg(long, value_name = "CPU", default_value = "native", value_parser = Target::named)]
    target_cpu: Target,
    /// Level-2 cache the schedule chooser plans for, in bytes or with a
    /// K/M suffix (`1280K`, `2M`); the host's by default.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    l2_cache: Option<usize>,
    /// Vector lanes of the backend the loops are scheduled for (set from
    /// `--backend` and `--target-cpu`, not a flag of its own).
    #[arg(skip = 4u32)]
    lanes: u32,
}

/// A size in bytes: `2097152`, `2048K`, `2M` (K and M are powers of 1024;
/// `KiB`, `MiB`, `KB` and `MB` are read the same).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        _ => {
            return Err(format!(
                "`{text}` is not a size: use bytes or a K or M suffix"
            ))
        }
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{text}` is not a positive size"))
}

impl PipelineArgs {
    /// These flags for code generated by `backend`: the schedules use the
    /// vector width of its target CPU.
    fn for_backend(&self, backend: Backend) -> PipelineArgs {
        PipelineArgs {
            lanes: self.target_cpu.lanes(backend),
            ..self.clone()
        }
    }

    /// What the code generators are told.
    fn codegen(&self) -> CodegenOptions {
        CodegenOptions {
            bounds_check: self.bounds_check,
            target: self.target_cpu.clone(),
        }
    }

    fn pipeline(&self, default: &str) -> String {
        let base = match (&self.passes, self.opt_level) {
            (Some(p), _) => return p.clone(),
            (None, Some(level)) => graph_pipeline(level).to_string(),
            (None, None) => default.to_string(),
        };
        if base.is_empty() {
            return base;
        }
        // `--prune` runs before the sparsity analysis; `--sparse` sets its
        // format (and adds it at levels that do not have it).
        let mut passes: Vec<String> = base.split(',').map(str::to_string).collect();
        let analysis = passes.iter().position(|p| p == "analyze-sparsity");
        let analysis = match (analysis, &self.sparse) {
            (Some(at), _) => Some(at),
            (None, Some(_)) => {
                passes.push("analyze-sparsity".into());
                Some(passes.len() - 1)
            }
            (None, None) => None,
        };
        if let Some(at) = analysis {
            let mut options = Vec::new();
            if let Some(format) = &self.sparse {
                options.push(format!("format={format}"));
            }
            if self.lanes != 4 {
                options.push(format!("lanes={}", self.lanes));
            }
            if let Some(rows) = self.tune_batch {
                options.push(format!("rows={rows}"));
            }
            if !options.is_empty() {
                passes[at] = format!("analyze-sparsity{{{}}}", options.join(","));
            }
        }
        if let Some(options) = &self.prune {
            let at = analysis.unwrap_or(passes.len());
            passes.insert(at, format!("prune{{{options}}}"));
        }
        passes.join(",")
    }

    fn instrumentation(&self, origin: String) -> Instrumentation {
        Instrumentation {
            print_before: self.print_before.clone(),
            print_after: self.print_after.clone(),
            print_before_all: self.print_before_all,
            print_after_all: self.print_after_all,
            print_changed_only: self.print_changed_only,
            dump_dir: self.dump_dir.clone(),
            stop_after: self.stop_after.clone(),
            disable: self.disable_pass.clone(),
            time_passes: self.time_passes,
            remarks: self.remarks,
            verify_each: self.verify_each || cfg!(debug_assertions),
            origin,
        }
    }
}

fn emit_text(ir: &Ir, emit: Emit, output: Option<&Path>) -> Result<()> {
    let text = match (emit, ir) {
        (Emit::Gir, Ir::Graph(g)) => print_gir(g),
        (Emit::Dot, Ir::Graph(g)) => to_dot(g),
        (Emit::Lir, Ir::Loops(_)) => ir.print(),
        (Emit::Clif, Ir::Loops(m)) => {
            lopper_backends::cranelift::compile_object(m, &m.name, "the pipeline")?.clif
        }
        (_, Ir::Loops(_)) => {
            bail!("the pipeline lowered the model to loops; use --emit lir or clif")
        }
        (Emit::Lir | Emit::Clif, Ir::Graph(_)) => bail!("internal error: lowering did not run"),
    };
    match output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow!("cannot write `{}`: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Loads `file` and runs the pipeline of `args` (or `default`) on it, then
/// `lower-to-loops` when `lower` asks for loops and the pipeline did not.
fn load_and_optimize(file: &Path, args: &PipelineArgs, default: &str, lower: bool) -> Result<Ir> {
    Ok(load_and_optimize_counted(file, args, default, lower)?.0)
}

/// [`load_and_optimize`], also giving the number of passes that ran.
fn load_and_optimize_counted(
    file: &Path,
    args: &PipelineArgs,
    default: &str,
    lower: bool,
) -> Result<(Ir, usize)> {
    let origin = format!("lopper dump {} --passes ''", file.display());
    let is_loop_ir = file.extension().is_some_and(|e| e == "lir");
    // Graph passes do not apply to loop IR: it gets none unless asked.
    let mut pipeline = args.pipeline(if is_loop_ir { "" } else { default });
    let lowers = lopper_passes::parse_pipeline(&pipeline)
        .map_err(|e| anyhow!(e))?
        .iter()
        .any(|p| p.name == "lower-to-loops");
    if lower && !lowers && !is_loop_ir {
        // An explicit --passes pipeline gets the plain lowering; a level
        // gets its own loop passes.
        let mut loops = if args.passes.is_some() {
            "lower-to-loops,plan-memory".to_string()
        } else {
            lopper_passes::loop_pipeline_for(
                args.opt_level.unwrap_or(lopper_passes::DEFAULT_LEVEL),
                args.lanes,
            )
        };
        if let Some(bytes) = args.l2_cache {
            loops = lopper_passes::with_schedule_option(&loops, "l2-cache", &bytes.to_string());
        }
        pipeline = if pipeline.trim().is_empty() {
            loops
        } else {
            format!("{pipeline},{loops}")
        };
    }
    // The pipeline and its flags are checked before the model is read.
    let mut pm =
        PassManager::new(&pipeline, args.instrumentation(origin)).map_err(|e| anyhow!(e))?;
    let mut ir = load_ir(file)?;
    let steps = run_pipeline(&mut pm, &mut ir)?;
    Ok((ir, steps))
}

fn run_inputs(
    declared: &[(String, lopper_ir::TensorType)],
    specs: &[String],
    sizes: &std::collections::BTreeMap<String, usize>,
) -> Result<HashMap<String, Tensor>> {
    let mut inputs = HashMap::new();
    for spec in specs {
        let (name, source) = spec.split_once('=').ok_or_else(|| {
            anyhow!("--input `{spec}`: expected NAME=FILE.safetensors[:TENSOR] or NAME=random:SEED")
        })?;
        let (_, ty) = declared.iter().find(|(n, _)| n == name).ok_or_else(|| {
            let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
            anyhow!(
                "--input `{spec}`: the model has no input `{name}`; its inputs are: {}",
                names.join(", ")
            )
        })?;
        let tensor = if let Some(seed) = source.strip_prefix("random:") {
            let seed: u64 = seed.parse().map_err(|_| {
                anyhow!("--input `{spec}`: the seed must be a non-negative integer")
            })?;
            let mut shape = Vec::new();
            for d in &ty.shape.0 {
                shape.push(match d {
                    Dim::Static(n) => *n,
                    Dim::Symbol(s) => *sizes.get(s).ok_or_else(|| {
                        anyhow!("--input `{spec}`: random data needs `{s}`; pass --set {s}=N")
                    })?,
                });
            }
            if lopper_ir::tensor::checked_numel(&shape).is_none_or(|n| n > 1 << 31) {
                bail!("--input `{spec}`: {shape:?} is too large");
            }
            lopper_runtime::random_tensor(shape, seed)
        } else {
            read_input(source)?
        };
        if inputs.insert(name.to_string(), tensor).is_some() {
            bail!("--input `{name}` is given twice");
        }
    }
    Ok(inputs)
}

/// `lopper import`: the ONNX model as `.lop` text and a safetensors file of
/// its weights, named in the text relative to the text's folder.
fn import_command(file: &Path, output: &Path, weights: Option<&Path>) -> Result<()> {
    if output.extension().is_none_or(|e| e != "lop") {
        bail!("the output `{}` should end in .lop", output.display());
    }
    let g = load_graph(file)?;
    let weights = weights.map_or_else(|| output.with_extension("safetensors"), Path::to_path_buf);
    let out_dir = output.parent().unwrap_or(Path::new(""));
    let reference = match weights.parent() {
        Some(dir) if dir == out_dir => weights
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => std::path::absolute(&weights)?.display().to_string(),
    };
    let written = lopper_frontend::writer::write_model(&g, &reference);
    for dir in [out_dir, weights.parent().unwrap_or(Path::new(""))] {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow!("cannot create the folder `{}`: {e}", dir.display()))?;
        }
    }
    let tensors: Vec<(String, &Tensor)> = written
        .weights
        .iter()
        .map(|(n, t)| (n.clone(), t))
        .collect();
    lopper_runtime::write_tensors(&weights, &tensors)?;
    std::fs::write(output, &written.text)
        .map_err(|e| anyhow!("cannot write `{}`: {e}", output.display()))?;
    let ops = g
        .graph
        .node_weights()
        .filter(|n| !matches!(n.op, lopper_ir::Op::Input | lopper_ir::Op::Param(_)))
        .count();
    println!(
        "wrote {} ({ops} ops) and {} ({} tensors)",
        output.display(),
        weights.display(),
        tensors.len()
    );
    Ok(())
}

/// `lopper fuzz-diff`: runs the models of `seeds` (split over `jobs`
/// threads), prints progress and each failure with its minimized model.
fn fuzz_diff(
    seeds: std::ops::Range<u64>,
    show: bool,
    config: &lopper_modelgen::Config,
    jobs: u64,
    failures_dir: Option<&Path>,
) -> Result<()> {
    if show {
        for seed in seeds {
            print!("// seed {seed}\n{}", lopper_modelgen::generate(seed).text());
        }
        return Ok(());
    }
    let total = seeds.end - seeds.start;
    let started = std::time::Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    let ops = std::sync::atomic::AtomicU64::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for job in 0..jobs {
            let (done, ops, failed, seeds) = (&done, &ops, &failed, seeds.clone());
            scope.spawn(move || {
                for seed in seeds.filter(|s| s % jobs == job) {
                    let model = lopper_modelgen::generate(seed);
                    ops.fetch_add(model.ops() as u64, std::sync::atomic::Ordering::Relaxed);
                    if let Err(failure) = lopper_modelgen::differential(&model.text(), seed, config)
                    {
                        let small = lopper_modelgen::minimize(&model, |m| {
                            lopper_modelgen::differential(&m.text(), seed, config).is_err()
                        });
                        let again = lopper_modelgen::differential(&small.text(), seed, config)
                            .err()
                            .unwrap_or(failure.clone());
                        eprintln!(
                            "seed {seed}: {failure}\nminimized ({} ops; {again}):\n{}",
                            small.ops(),
                            small.text()
                        );
                        failed
                            .lock()
                            .expect("no panic holds the lock")
                            .push((seed, small.text()));
                    }
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % 100 == 0 || n == total {
                        eprintln!(
                            "[{n}/{total}] models, {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().expect("no panic holds the lock");
    if let Some(dir) = failures_dir {
        std::fs::create_dir_all(dir)?;
        for (seed, text) in &failed {
            std::fs::write(dir.join(format!("seed-{seed}.lop")), text)?;
        }
    }
    println!(
        "{total} models ({} ops) from seed {}: {} failed, {:.1} s",
        ops.into_inner(),
        seeds.start,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(s, _)| s.to_string()).collect();
        bail!("failing seeds: {}", list.join(", "));
    }
    Ok(())
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Check { file, set, backend } => {
            let sizes = parse_sizes(&set)?;
            let instrumentation = Instrumentation {
                verify_each: true,
                ..Default::default()
            };
            let mut pm =
                PassManager::new("shape-infer", instrumentation).map_err(|e| anyhow!(e))?;
            let mut ir = Ir::Graph(load_graph(&file)?);
            run_pipeline(&mut pm, &mut ir)?;
            let Ir::Graph(g) = ir else {
                bail!("internal error: shape-infer lowered the graph")
            };
            print!("{}", summary(&g, &sizes));
            let rows = sizes.values().copied().max().unwrap_or(1);
            let (costs, header) = prune::report_costs(backend, rows)?;
            let layers = lopper_passes::analyze_sparsity::analyze(
                &g,
                lopper_passes::sparse_cost::Forced::Auto,
                &costs,
            )
            .map_err(|e| anyhow!("{e}"))?;
            if !layers.is_empty() {
                println!("weights ({header}):");
                print!("{}", prune::sparsity_table(None, &layers));
            }
            // Scratch memory per call, before and after plan-memory.
            let mut lowered = Ir::Graph(g);
            PassManager::new("lower-to-loops", Instrumentation::default())
                .map_err(|e| anyhow!(e))?
                .run_ir(&mut lowered, &mut std::io::sink())
                .map_err(|e| anyhow!("{e}"))?;
            let Ir::Loops(mut m) = lowered else {
                bail!("internal error: lowering did not run")
            };
            let before = driver::scratch_bytes(&m);
            lopper_passes::plan_memory::PlanMemory
                .run(&mut m, &mut lopper_passes::PassContext::default())
                .map_err(|e| anyhow!("{e}"))?;
            let after = driver::scratch_bytes(&m);
            println!(
                "scratch memory per call: {} bytes after plan-memory ({} before)",
                driver::size_text(&after, &sizes),
                driver::size_text(&before, &sizes)
            );
        }
        Command::Prune {
            file,
            method,
            sparsity,
            scope,
            layer_sparsity,
            params,
            exclude,
            n,
            m,
            block,
            norm,
            output,
            report,
            remarks,
            backend,
        } => {
            let mut options = vec![format!("method={method}")];
            let mut add = |key: &str, value: Option<String>| {
                if let Some(v) = value {
                    options.push(format!("{key}={v}"));
                }
            };
            add("sparsity", sparsity.map(|s| s.to_string()));
            add("scope", scope);
            let list = |v: &[String]| (!v.is_empty()).then(|| format!("[{}]", v.join(",")));
            add("layer-sparsity", list(&layer_sparsity));
            add("params", list(&params));
            add("exclude", list(&exclude));
            add("n", n.map(|v| v.to_string()));
            add("m", m.map(|v| v.to_string()));
            add("block", block);
            add("norm", norm);
            prune::prune_command(prune::PruneRequest {
                file: &file,
                options: options.join(","),
                output: output.as_deref(),
                report,
                remarks,
                backend,
            })?;
        }
        Command::Import {
            file,
            output,
            weights,
        } => import_command(&file, &output, weights.as_deref())?,
        Command::Dump {
            file,
            emit,
            output,
            pipeline,
        } => {
            let ir = load_and_optimize(
                &file,
                &pipeline,
                lopper_passes::DEFAULT_PIPELINE,
                matches!(emit, Emit::Lir | Emit::Clif),
            )?;
            emit_text(&ir, emit, output.as_deref())?;
        }
        Command::Opt {
            file,
            output,
            emit,
            pipeline,
        } => {
            let ir =
                load_and_optimize(&file, &pipeline, "", matches!(emit, Emit::Lir | Emit::Clif))?;
            emit_text(&ir, emit, output.as_deref())?;
        }
        Command::Run {
            file,
            inputs,
            set,
            output,
            backend,
            pipeline,
            ..
        } => {
            let sizes = parse_sizes(&set)?;
            let pipeline = PipelineArgs {
                tune_batch: pipeline.tune_batch.or(sizes.values().copied().max()),
                ..pipeline
            };
            let model = Runnable::load(&file, &pipeline, backend)?;
            let inputs = run_inputs(&model.inputs(), &inputs, &sizes)?;
            let outputs = model.run(&inputs, &sizes)?;
            for (name, t) in &outputs {
                println!("{}", describe_tensor(name, t));
            }
            if let Some(path) = output {
                let named: Vec<(String, &Tensor)> =
                    outputs.iter().map(|(n, t)| (n.clone(), t)).collect();
                lopper_runtime::write_tensors(&path, &named)?;
                println!("wrote {}", path.display());
            }
        }
        Command::Eval {
            file,
            data,
            x,
            y,
            backend,
            pipeline,
            ..
        } => {
            let model = Runnable::load(&file, &pipeline, backend)?;
            evaluate_accuracy(&model, &data, &x, &y)?;
        }
        Command::Compile {
            file,
            output,
            emit,
            backend,
            pipeline,
        } => compile_model(
            &file,
            &output,
            &emit,
            backend,
            &pipeline.for_backend(backend),
        )?,
        Command::Bench {
            file,
            set,
            backend,
            iters,
            warmup,
            json,
            per_kernel,
            peak_gflops,
            peak_gbps,
            plot,
            pipeline,
        } => {
            if backend == Backend::Interpreter {
                bail!("bench measures compiled code: use --backend cranelift or llvm");
            }
            let sizes = parse_sizes(&set)?;
            let pipeline = PipelineArgs {
                tune_batch: pipeline.tune_batch.or(sizes.values().copied().max()),
                ..pipeline.for_backend(backend)
            };
            let ir = load_and_optimize(&file, &pipeline, lopper_passes::DEFAULT_PIPELINE, true)?;
            let Ir::Loops(m) = ir else {
                bail!("internal error: lowering did not run")
            };
            let options = bench::BenchOptions {
                iters,
                warmup,
                per_kernel: per_kernel || plot.is_some(),
                peak_gflops,
                peak_gbps,
                narrow: backend == Backend::Cranelift,
            };
            let level = llvm_level(&pipeline);
            let compiled = match backend {
                Backend::Llvm => compile_llvm(&m, level, &pipeline.codegen())?,
                _ => lopper_backends::cranelift::compile_jit_with(&m, &pipeline.codegen())?,
            };
            let report = bench::bench_module(&m, &compiled, &sizes, &options)?;
            if json {
                print!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if let Some(path) = plot {
                bench::write_plot(&report, &path)?;
                if !json {
                    println!("wrote {}", path.display());
                }
            }
        }
        Command::FuzzDiff {
            seeds,
            start,
            show,
            no_llvm,
            no_prune,
            bounds_check,
            batches,
            jobs,
            failures,
        } => {
            if batches.contains(&0) {
                bail!("--batches: a batch is at least 1");
            }
            let config = lopper_modelgen::Config {
                llvm: cfg!(feature = "llvm") && !no_llvm,
                prune: !no_prune,
                bounds_check,
                batches,
                ..Default::default()
            };
            fuzz_diff(
                start..start + seeds,
                show,
                &config,
                jobs.max(1),
                failures.as_deref(),
            )?;
        }
        Command::Passes => {
            for p in PASSES {
                println!("{:<16} {}", p.name, p.description);
                for (o, d) in p.options {
                    println!("    {o:<12} {d}");
                }
            }
        }
    }
    Ok(())
}

/// Runs a model on the chosen backend.
fn execute_on(
    backend: Backend,
    ir: &Ir,
    inputs: &HashMap<String, Tensor>,
    sizes: &std::collections::BTreeMap<String, usize>,
    options: &CodegenOptions,
) -> Result<Vec<(String, Tensor)>> {
    match (backend, ir) {
        (Backend::Interpreter, _) => execute_ir(ir, inputs, sizes),
        (Backend::Cranelift, Ir::Loops(m)) => {
            let declared = declared_inputs(ir);
            let declared: Vec<(&str, &lopper_ir::TensorType)> =
                declared.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let bound = lopper_runtime::bind_sizes(&declared, inputs, sizes)?;
            let jit = lopper_backends::cranelift::compile_jit_with(m, options)?;
            Ok(jit.run(inputs, &bound)?)
        }
        (Backend::Llvm, Ir::Loops(m)) => {
            let declared = declared_inputs(ir);
            let declared: Vec<(&str, &lopper_ir::TensorType)> =
                declared.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let bound = lopper_runtime::bind_sizes(&declared, inputs, sizes)?;
            let jit = compile_llvm(m, 3, options)?;
            Ok(jit.run(inputs, &bound)?)
        }
        (_, Ir::Graph(_)) => {
            bail!("internal error: a code generator needs loop IR")
        }
    }
}

/// The LLVM JIT, or an error saying how to get it.
fn compile_llvm(
    m: &lopper_ir::loops::Module,
    opt: u8,
    options: &CodegenOptions,
) -> Result<lopper_backends::cranelift::JitModule> {
    #[cfg(feature = "llvm")]
    {
        Ok(lopper_backends::llvm::compile_jit_with(m, opt, options)?)
    }
    #[cfg(not(feature = "llvm"))]
    {
        let _ = (m, opt, options);
        bail!("this lopper was built without LLVM; rebuild with `--features llvm`")
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| anyhow!("cannot write `{}`: {e}", path.display()))
}

/// `lopper compile`: the pipeline, lowering, code generation, and the files
/// `emit` asks for beside `output`.
fn compile_model(
    file: &Path,
    output: &Path,
    emit: &[Artifact],
    backend: Backend,
    pipeline: &PipelineArgs,
) -> Result<()> {
    if backend == Backend::Interpreter {
        bail!("compile needs a code generator: --backend cranelift or llvm");
    }
    let stem = output.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
        anyhow!(
            "-o `{}`: expected a file name like libNAME.so",
            output.display()
        )
    })?;
    let name = stem.strip_prefix("lib").unwrap_or(stem);
    let c_name = lopper_backends::cranelift::artifact::c_identifier(name);
    let beside = |ext: &str| output.with_file_name(format!("{c_name}.{ext}"));
    // `lopper compile m.lir --emit lir` would write `m.lir` over its input.
    let input = std::fs::canonicalize(file).ok();
    let overwrites_input = |p: &Path| input.is_some() && std::fs::canonicalize(p).ok() == input;
    let requested = |kind: Artifact, ext: &str| emit.contains(&kind).then(|| beside(ext));
    let clobbered = [
        requested(Artifact::So, "").map(|_| output.to_path_buf()),
        requested(Artifact::Gir, "gir"),
        requested(Artifact::Lir, "lir"),
        requested(Artifact::Clif, "clif"),
        requested(Artifact::H, "h"),
        requested(Artifact::Obj, "o"),
        requested(Artifact::LlvmIr, "ll"),
        requested(Artifact::Asm, "s"),
    ]
    .into_iter()
    .flatten()
    .find(|p| overwrites_input(p));
    if let Some(p) = clobbered {
        bail!(
            "`{}` would be written over the input `{}`: choose another -o (the files --emit asks for are named after it)",
            p.display(),
            file.display()
        );
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow!("cannot create `{}`: {e}", parent.display()))?;
    }
    let mut written = Vec::new();
    if emit.contains(&Artifact::Gir) && file.extension().is_none_or(|e| e != "lir") {
        // The graph after the graph passes, without printing or dumping again.
        let quiet = PipelineArgs {
            print_before: vec![],
            print_after: vec![],
            print_before_all: false,
            print_after_all: false,
            dump_dir: None,
            time_passes: false,
            ..pipeline.clone()
        };
        let ir = load_and_optimize(file, &quiet, lopper_passes::DEFAULT_PIPELINE, false)?;
        write_file(&beside("gir"), ir.print().as_bytes())?;
        written.push(beside("gir"));
    }
    let (ir, steps) =
        load_and_optimize_counted(file, pipeline, lopper_passes::DEFAULT_PIPELINE, true)?;
    let Ir::Loops(m) = &ir else {
        bail!("internal error: compile needs loop IR")
    };
    let codegen_start = std::time::Instant::now();
    let built = build_artifact(m, name, file, backend, pipeline)?;
    if pipeline.time_passes {
        eprintln!(
            "  {:.4} s  code generation ({backend}, {} kernels)",
            codegen_start.elapsed().as_secs_f64(),
            m.kernels.len()
        );
    }
    let mut files: Vec<(Artifact, String, Vec<u8>)> = vec![
        (Artifact::Lir, "lir".into(), ir.print().into_bytes()),
        (
            Artifact::Clif,
            "clif".into(),
            built.clif.clone().into_bytes(),
        ),
        (Artifact::H, "h".into(), built.header.clone().into_bytes()),
    ];
    for (i, object) in built.objects.iter().enumerate() {
        let ext = if i == 0 {
            "o".to_string()
        } else {
            format!("{i}.o")
        };
        files.push((Artifact::Obj, ext, object.clone()));
    }
    if let Some(llvm) = &built.llvm {
        files.push((Artifact::LlvmIr, "ll".into(), llvm.ir.clone().into_bytes()));
        files.push((
            Artifact::LlvmIr,
            "opt.ll".into(),
            llvm.optimized.clone().into_bytes(),
        ));
        files.push((
            Artifact::Asm,
            "s".into(),
            llvm.assembly.clone().into_bytes(),
        ));
    } else if emit
        .iter()
        .any(|e| matches!(e, Artifact::LlvmIr | Artifact::Asm))
    {
        bail!("--emit llvm-ir and asm need --backend llvm");
    }
    for (kind, ext, contents) in files {
        if emit.contains(&kind) {
            write_file(&beside(&ext), &contents)?;
            written.push(beside(&ext));
        }
    }
    if emit.contains(&Artifact::So) {
        let link_start = std::time::Instant::now();
        let objects: Vec<&[u8]> = built.objects.iter().map(Vec::as_slice).collect();
        lopper_backends::cranelift::link_shared_objects(&objects, output)?;
        if pipeline.time_passes {
            eprintln!(
                "  {:.4} s  link (cc -shared)",
                link_start.elapsed().as_secs_f64()
            );
        }
        written.insert(0, output.to_path_buf());
    }
    if let Some(dir) = &pipeline.dump_dir {
        // The numbering goes on from the last pass to code generation.
        let last = std::fs::read_dir(dir)
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with(&format!("{steps:02}-")))
                    .max()
            })
            .unwrap_or_default();
        let from = dir.join(last).display().to_string();
        let mut dumps = vec![(
            "cranelift.clif".to_string(),
            format!("; lopper dump {from} --emit clif\n{}", built.clif),
        )];
        if let Some(llvm) = &built.llvm {
            let again = format!("lopper compile {from} --backend llvm --emit llvm-ir");
            dumps = vec![
                (
                    "llvm.ll".into(),
                    format!("; {again} (NAME.ll)\n{}", llvm.ir),
                ),
                (
                    "llvm-opt.ll".into(),
                    format!("; {again} (NAME.opt.ll)\n{}", llvm.optimized),
                ),
                (
                    "s".into(),
                    format!(
                        "# lopper compile {from} --backend llvm --emit asm\n{}",
                        llvm.assembly
                    ),
                ),
            ];
        }
        for (i, (suffix, text)) in dumps.iter().enumerate() {
            let path = dir.join(format!("{:02}-{suffix}", steps + 1 + i));
            let path = if suffix == "s" {
                dir.join(format!("{:02}.s", steps + 1 + i))
            } else {
                path
            };
            write_file(&path, text.as_bytes())?;
        }
    }
    let list: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {} (entry point `{}`)", list.join(", "), built.entry);
    Ok(())
}

/// LLVM's optimizer level for a lopper level: -O0 none, -O1 `default<O1>`,
/// -O2 (the default) and -O3 `default<O3>`.
#[cfg_attr(not(feature = "llvm"), allow(dead_code))]
fn llvm_level(pipeline: &PipelineArgs) -> u8 {
    match pipeline.opt_level {
        Some(0) => 0,
        Some(1) => 1,
        _ => 3,
    }
}

/// LLVM's texts for `--emit llvm-ir,asm` and the dumps.
struct LlvmTexts {
    ir: String,
    optimized: String,
    assembly: String,
}

/// Objects and texts of a compiled model, from either code generator.
struct Built {
    objects: Vec<Vec<u8>>,
    header: String,
    entry: String,
    clif: String,
    llvm: Option<LlvmTexts>,
}

fn build_artifact(
    m: &lopper_ir::loops::Module,
    name: &str,
    file: &Path,
    backend: Backend,
    pipeline: &PipelineArgs,
) -> Result<Built> {
    let source = file.display().to_string();
    match backend {
        #[cfg(feature = "llvm")]
        Backend::Llvm => {
            let opt = llvm_level(pipeline);
            let a = lopper_backends::llvm::compile_artifact_with(
                m,
                name,
                &source,
                opt,
                &pipeline.codegen(),
            )?;
            Ok(Built {
                objects: vec![a.entry.object.clone(), a.kernels.object.clone()],
                header: a.entry.header.clone(),
                entry: a.entry.entry.clone(),
                clif: a.entry.clif.clone(),
                llvm: Some(LlvmTexts {
                    ir: a.kernels.ir,
                    optimized: a.kernels.optimized_ir,
                    assembly: a.kernels.assembly,
                }),
            })
        }
        _ => {
            let a = lopper_backends::cranelift::compile_object_with(
                m,
                name,
                &source,
                &pipeline.codegen(),
            )?;
            Ok(Built {
                objects: vec![a.object],
                header: a.header,
                entry: a.entry,
                clif: a.clif,
                llvm: None,
            })
        }
    }
}

/// A model ready to run: IR on a backend, or a compiled library.
enum Runnable {
    /// IR, the backend, and what its code generator is told.
    Ir(Ir, Backend, CodegenOptions),
    Library(lopper_runtime::SharedModel),
}

impl Runnable {
    /// A `.so` is loaded as it is; anything else goes through the pipeline
    /// (and lowering, for Cranelift).
    fn load(file: &Path, pipeline: &PipelineArgs, backend: Backend) -> Result<Runnable> {
        if file.extension().is_some_and(|e| e == "so") {
            return Ok(Runnable::Library(lopper_runtime::SharedModel::open(file)?));
        }
        let compiled = backend != Backend::Interpreter;
        let pipeline = pipeline.for_backend(backend);
        let ir = load_and_optimize(file, &pipeline, lopper_passes::DEFAULT_PIPELINE, compiled)?;
        Ok(Runnable::Ir(ir, backend, pipeline.codegen()))
    }

    fn inputs(&self) -> Vec<(String, lopper_ir::TensorType)> {
        match self {
            Runnable::Ir(ir, ..) => declared_inputs(ir),
            Runnable::Library(lib) => lib.inputs.clone(),
        }
    }

    fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
        sizes: &std::collections::BTreeMap<String, usize>,
    ) -> Result<Vec<(String, Tensor)>> {
        match self {
            Runnable::Ir(ir, backend, options) => execute_on(*backend, ir, inputs, sizes, options),
            Runnable::Library(lib) => Ok(lib.run(inputs, sizes)?),
        }
    }
}

fn evaluate_accuracy(model: &Runnable, data: &Path, x: &str, y: &str) -> Result<()> {
    let declared_inputs = model.inputs();
    let [(input, input_type)] = &declared_inputs[..] else {
        bail!(
            "eval needs a model with one input; this one has {}",
            declared_inputs.len()
        );
    };
    let features = lopper_runtime::read_tensor_file(data, Some(x))?;
    let labels = lopper_runtime::read_tensor_file(data, Some(y))?;
    let n = *features
        .shape
        .first()
        .ok_or_else(|| anyhow!("`{x}` must have a leading sample dimension"))?;
    if labels.shape != [n] {
        bail!(
            "labels `{y}` have shape {:?}; expected [{n}] to match `{x}`",
            labels.shape
        );
    }
    // Reshape per-sample features to the model's input (e.g. [N, 784] → [N, 1, 28, 28]).
    let declared = &input_type.shape;
    let per_sample: Option<Vec<usize>> = declared.0[1..].iter().map(Dim::as_static).collect();
    let per_sample = per_sample
        .ok_or_else(|| anyhow!("eval needs an input whose dims after the first are static"))?;
    let mut shape = vec![n];
    shape.extend(&per_sample);
    if lopper_ir::tensor::checked_numel(&shape) != Some(features.values.len()) {
        bail!(
            "`{x}` has shape {:?}, which does not hold {n} inputs of {declared}",
            features.shape
        );
    }
    let mut inputs = HashMap::new();
    inputs.insert(
        input.clone(),
        Tensor {
            shape,
            data: features.values,
        },
    );
    let outputs = model.run(&inputs, &Default::default())?;
    let (_, scores) = &outputs[0];
    let predicted = argmax_rows(scores);
    let classes = *scores.shape.last().unwrap_or(&1);
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut correct = 0;
    for (p, &l) in predicted.iter().zip(&labels.values) {
        let l = l as usize;
        if l >= classes {
            bail!("label {l} is out of range for {classes} classes");
        }
        confusion[l][*p] += 1;
        correct += usize::from(l == *p);
    }
    println!("accuracy: {:.4} ({correct}/{n})", correct as f64 / n as f64);
    println!("confusion matrix (rows: true class, columns: predicted):");
    let header: String = (0..classes).map(|c| format!("{c:>5}")).collect();
    println!("     {header}");
    for (c, row) in confusion.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!("{v:>5}")).collect();
        println!("{c:>5}{cells}");
    }
    Ok(())
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as with other Unix tools,
    // rather than with a panic on the failed write.
    // SAFETY: restoring the default disposition of one signal before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<Rendered>() {
                eprintln!("{r}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
