//! The differential test of one model: the reference interpreter is the
//! oracle; Cranelift (and LLVM when built) at each optimization level must
//! agree with it at every batch size, and so must the pruned model through
//! the sparse kernels.
//!
//! Agreement: the same shapes, NaN where the oracle has NaN, and every
//! element within `1e-3·|expected| + 1e-4·(1 + max|expected|)`: loose enough
//! for f32 code against f64 sums and polynomial `exp`/`erf`, tight enough
//! that a wrong index or a missed element shows. Where the model itself is
//! ill-conditioned (a layer norm of almost constant rows, say of a `tanh`
//! that saturates), an element may also differ by four times what the
//! interpreter's output moves (at most, over the output) when the inputs
//! move by 1e-4 and every value an op computes by 1e-5, relative. A panic
//! anywhere is a failure too.

use lopper_backends::cranelift::JitModule;
use lopper_ir::{Dim, Graph, Tensor};
use lopper_passes::{Instrumentation, Ir, PassManager};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What to run each model on.
#[derive(Clone, Debug)]
pub struct Config {
    /// Values of the symbolic batch `b`; kernels are chosen for the
    /// largest (`analyze-sparsity{rows=...}`).
    pub batches: Vec<usize>,
    /// Optimization levels of the compiled runs.
    pub levels: Vec<u8>,
    /// Also compile with LLVM (needs the `llvm` feature).
    pub llvm: bool,
    /// Prune every fourth model (method, sparsity and kernel format drawn
    /// from the seed) and compare the pruned model.
    pub prune: bool,
    /// Compile with bounds checks in the generated code.
    pub bounds_check: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            batches: vec![1, 3],
            levels: vec![0, 2],
            llvm: cfg!(feature = "llvm"),
            prune: true,
            bounds_check: false,
        }
    }
}

/// A disagreement, a refusal or a panic.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Where: `build`, `interpreter`, `cranelift -O2 b=3`, ...
    pub stage: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.message)
    }
}

fn fail(stage: impl Into<String>, message: impl Into<String>) -> Failure {
    Failure {
        stage: stage.into(),
        message: message.into(),
    }
}

/// Runs `f`, turning a panic into a failure of `stage`.
fn guarded<T>(stage: &str, f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(fail(stage, format!("panicked: {message}")))
        }
    }
}

fn run_passes(ir: Ir, pipeline: &str) -> Result<Ir, String> {
    let mut ir = ir;
    let instrumentation = Instrumentation {
        verify_each: true,
        ..Default::default()
    };
    PassManager::new(pipeline, instrumentation)?
        .run_ir(&mut ir, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    Ok(ir)
}

/// How the pruned variant of model `seed` is pruned and compiled: the
/// options of `prune` and the forced kernel format.
fn pruning_of(seed: u64) -> (String, &'static str) {
    let formats = ["auto", "csr", "bsr", "dense"];
    let format = formats[(seed / 4 % 4) as usize];
    match seed / 16 % 4 {
        0 => ("method=magnitude,sparsity=0.8".into(), format),
        1 => (
            "method=nm,n=2,m=4".into(),
            if seed.is_multiple_of(2) { "nm" } else { format },
        ),
        2 => ("method=block,block=4x2,sparsity=0.5".into(), format),
        _ => ("method=structured,sparsity=0.4".into(), format),
    }
}

/// Runs model `text` (drawn from `seed`) through every configured backend
/// and level and compares each with the interpreter.
pub fn differential(text: &str, seed: u64, config: &Config) -> Result<(), Failure> {
    let graph = guarded("build", || {
        lopper_frontend::compile_source(text, std::path::Path::new("")).map_err(|d| {
            fail(
                "build",
                lopper_ir::diagnostic::render("model.lop", text, &d),
            )
        })
    })?;
    check_graph(&graph, seed, config, "")?;
    if config.prune && seed % 4 == 3 {
        let (options, format) = pruning_of(seed);
        let pruned = guarded("prune", || {
            match run_passes(
                Ir::Graph(graph.clone()),
                &format!("shape-infer,prune{{{options}}}"),
            ) {
                Ok(Ir::Graph(g)) => Ok(g),
                Ok(Ir::Loops(_)) => Err(fail("prune", "lowered")),
                Err(e) => Err(fail("prune", e)),
            }
        })?;
        check_graph(
            &pruned,
            seed,
            config,
            &format!("pruned ({options}, format={format}) "),
        )?;
    }
    Ok(())
}

fn check_graph(graph: &Graph, seed: u64, config: &Config, label: &str) -> Result<(), Failure> {
    let symbolic = graph.inputs.iter().any(|&i| {
        graph
            .node(i)
            .ty
            .shape
            .0
            .iter()
            .any(|d| matches!(d, Dim::Symbol(_)))
    });
    let batches: &[usize] = if symbolic { &config.batches } else { &[0] };
    let format = label
        .contains("format=")
        .then(|| pruning_of(seed).1)
        .filter(|f| *f != "auto");
    let mut compiled = Vec::new();
    for &level in &config.levels {
        for backend in backends(config) {
            let stage = format!("{label}{} -O{level}", backend.name());
            let module = guarded(&stage, || {
                let rows = config.batches.iter().copied().max().unwrap_or(1);
                let pipeline = pipeline_for(level, backend.lanes(), format, rows);
                match run_passes(Ir::Graph(graph.clone()), &pipeline) {
                    Ok(Ir::Loops(m)) => Ok(m),
                    Ok(Ir::Graph(_)) => Err(fail(&stage, "not lowered")),
                    Err(e) => Err(fail(&stage, e)),
                }
            })?;
            let runner = guarded(&stage, || {
                backend
                    .compile(&module, level, config.bounds_check)
                    .map_err(|e| fail(&stage, e))
            })?;
            compiled.push((stage, module, runner));
        }
    }
    for &b in batches {
        let bound = BTreeMap::from([("b".to_string(), b)]);
        let inputs: HashMap<String, Tensor> = graph
            .inputs
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let shape = graph
                    .node(i)
                    .ty
                    .shape
                    .bind(&bound)
                    .expect("only `b` is symbolic");
                let data_seed = seed.wrapping_mul(31).wrapping_add(k as u64 * 7 + b as u64);
                (
                    graph.node(i).name.clone(),
                    lopper_runtime::random_tensor(shape, data_seed),
                )
            })
            .collect();
        let want = guarded(&format!("{label}interpreter b={b}"), || {
            lopper_runtime::run_graph(graph, &inputs, &BTreeMap::new())
                .map_err(|e| fail(format!("{label}interpreter b={b}"), e.to_string()))
        })?;
        // Computed when first needed.
        let mut sensitivity: Option<Vec<(String, Tensor)>> = None;
        for (stage, module, runner) in &compiled {
            let stage = format!("{stage} b={b}");
            let sizes: BTreeMap<String, usize> =
                module.sizes.iter().map(|s| (s.clone(), b)).collect();
            let got = guarded(&stage, || {
                runner
                    .run(&inputs, &sizes)
                    .map_err(|e| fail(&stage, e.to_string()))
            })?;
            for (k, ((name, a), (_, e))) in got.iter().zip(&want).enumerate() {
                if compare(a, e, None).is_ok() {
                    continue;
                }
                if sensitivity.is_none() {
                    sensitivity =
                        Some(nearby_outputs(graph, &inputs, seed).map_err(|e| {
                            fail(format!("{label}interpreter b={b}"), e.to_string())
                        })?);
                }
                let nearby = &sensitivity.as_ref().expect("computed above")[k].1;
                compare(a, e, Some(nearby))
                    .map_err(|m| fail(&stage, format!("output `{name}`: {m}")))?;
            }
        }
    }
    Ok(())
}

/// The graph and loop pipelines of `lopper compile -O<level>` for a backend
/// with `lanes`, with a forced sparse format if asked, tuned for `rows`.
fn pipeline_for(level: u8, lanes: u32, format: Option<&str>, rows: usize) -> String {
    let mut graph = lopper_passes::graph_pipeline(level).to_string();
    let mut options = Vec::new();
    if let Some(f) = format {
        options.push(format!("format={f}"));
    }
    if lanes != 4 {
        options.push(format!("lanes={lanes}"));
    }
    if rows > 1 {
        options.push(format!("rows={rows}"));
    }
    if !options.is_empty() {
        let analysis = format!("analyze-sparsity{{{}}}", options.join(","));
        if graph.contains("analyze-sparsity") {
            graph = graph.replace("analyze-sparsity", &analysis);
        } else if format.is_some() {
            graph = format!("{graph},{analysis}");
        }
    }
    let loops = lopper_passes::loop_pipeline_for(level, lanes);
    format!("{graph},{loops}")
}

/// The interpreter's outputs with the inputs moved by 1e-4 and every value an
/// op computes moved by 1e-5 (relative; more than the rounding of any op in
/// generated code): how far the model itself carries small errors.
fn nearby_outputs(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    seed: u64,
) -> Result<Vec<(String, Tensor)>, lopper_runtime::RunError> {
    let moved: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t)| (n.clone(), perturbed(t, seed, 1e-4)))
        .collect();
    let nudge = |name: &str, t: &mut Tensor| *t = perturbed(t, seed ^ name_hash(name), 1e-5);
    lopper_runtime::run_graph_adjusted(graph, &moved, &BTreeMap::new(), nudge)
}

/// `t` with every element moved by up to `by` of itself (seeded).
fn perturbed(t: &Tensor, seed: u64, by: f32) -> Tensor {
    let noise = lopper_runtime::random_tensor(t.shape.clone(), seed ^ 0xA5A5);
    Tensor {
        shape: t.shape.clone(),
        data: t
            .data
            .iter()
            .zip(&noise.data)
            .map(|(v, u)| v * (1.0 + by * u))
            .collect(),
    }
}

/// FNV-1a of a node's name: a seed of its own per value.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Compares a compiled output with the interpreter's; with `nearby` (the
/// interpreter's output with inputs and values slightly moved), an element
/// may also differ by four times the most that move changed any element of
/// the output (one random move can leave a single element almost still): the
/// model, not the compiler, amplifies rounding there (a layer norm of almost
/// constant rows, a sum that cancels).
fn compare(got: &Tensor, want: &Tensor, nearby: Option<&Tensor>) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    let scale = want
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let spread = nearby.map_or(0.0, |n| {
        n.data
            .iter()
            .zip(&want.data)
            .map(|(m, e)| (m - e).abs())
            .filter(|d| d.is_finite())
            .fold(0.0f32, f32::max)
            * 4.0
    });
    for (i, (&a, &e)) in got.data.iter().zip(&want.data).enumerate() {
        let close = a == e
            || (a.is_nan() && e.is_nan())
            || (a - e).abs() <= 1e-3 * e.abs() + 1e-4 * (1.0 + scale) + spread;
        if !close {
            return Err(format!("element {i} is {a}, expected {e}"));
        }
    }
    Ok(())
}

/// A code generator under test.
#[derive(Clone, Copy)]
enum Backend {
    Cranelift,
    #[cfg(feature = "llvm")]
    Llvm,
}

fn backends(config: &Config) -> Vec<Backend> {
    #[cfg(feature = "llvm")]
    if config.llvm {
        return vec![Backend::Cranelift, Backend::Llvm];
    }
    let _ = config;
    vec![Backend::Cranelift]
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Cranelift => "cranelift",
            #[cfg(feature = "llvm")]
            Backend::Llvm => "llvm",
        }
    }

    fn lanes(self) -> u32 {
        match self {
            Backend::Cranelift => lopper_backends::Backend::Cranelift.lanes(),
            #[cfg(feature = "llvm")]
            Backend::Llvm => lopper_backends::Backend::Llvm.lanes(),
        }
    }

    #[cfg_attr(not(feature = "llvm"), allow(unused_variables))]
    /// Compiles `module` in memory (both backends give the same kind of
    /// module), with bounds checks in the code if asked.
    fn compile(
        self,
        module: &lopper_ir::loops::Module,
        level: u8,
        bounds_check: bool,
    ) -> Result<JitModule, String> {
        let options = lopper_backends::CodegenOptions {
            bounds_check,
            ..Default::default()
        };
        match self {
            Backend::Cranelift => lopper_backends::cranelift::compile_jit_with(module, &options),
            #[cfg(feature = "llvm")]
            Backend::Llvm => lopper_backends::llvm::compile_jit_with(
                module,
                if level == 0 { 0 } else { 3 },
                &options,
            ),
        }
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs_of(text: &str) -> (Graph, HashMap<String, Tensor>, Vec<(String, Tensor)>) {
        let graph = lopper_frontend::compile_source(text, std::path::Path::new("")).unwrap();
        let inputs = HashMap::from([(
            "x".to_string(),
            lopper_runtime::random_tensor(vec![2, 16], 7),
        )]);
        let want = lopper_runtime::run_graph(&graph, &inputs, &BTreeMap::new()).unwrap();
        (graph, inputs, want)
    }

    /// The allowance for ill-conditioned models must not hide a wrong
    /// element of a well-conditioned one.
    #[test]
    fn a_wrong_element_of_a_well_conditioned_model_fails() {
        let (graph, inputs, want) = outputs_of(
            "model m {
                input x: f32[2, 16]
                param w: f32[8, 16] = normal(0, 0.3, seed = 1)
                output y = tanh(linear(x, w))
            }",
        );
        let nearby = nearby_outputs(&graph, &inputs, 3).unwrap();
        let mut got = want[0].1.clone();
        got.data[5] += 0.01 * (1.0 + got.data[5].abs());
        assert!(compare(&want[0].1, &want[0].1, Some(&nearby[0].1)).is_ok());
        assert!(compare(&got, &want[0].1, Some(&nearby[0].1)).is_err());
    }

    /// A layer norm of rows that differ only by rounding magnifies it: the
    /// nearby run shows that, and so allows far more than the fixed
    /// tolerance.
    #[test]
    fn a_layer_norm_of_almost_constant_rows_is_found_ill_conditioned() {
        let (graph, inputs, want) = outputs_of(
            "model m {
                input x: f32[2, 16]
                output y = layer_norm(exp(tanh(x * 10 + 50)), axis = 1)
            }",
        );
        let nearby = nearby_outputs(&graph, &inputs, 3).unwrap();
        let moved = want[0]
            .1
            .data
            .iter()
            .zip(&nearby[0].1.data)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-3, "the nearby run moved the output by {moved}");
    }
}
