//! `lopper prune` and the sparsity tables of `check`: prune a model's
//! weights, write them back under the same names, and show per layer what
//! pruning removed and which kernel each layer gets.
//!
//! Structured pruning changes shapes, so besides the weights it writes the
//! model again: a `.lop` whose param declarations carry the new shapes and
//! whose `weights` line names the new file (a `.gir` model is written as
//! `.gir` with the weights inline).

use crate::driver::{load_graph, table};
use anyhow::{anyhow, bail, Context, Result};
use lopper_backends::Backend;
use lopper_ir::graph::print_gir;
use lopper_ir::{Graph, Op, Tensor};
use lopper_passes::analyze_sparsity::{analyze, LayerReport};
use lopper_passes::sparse_cost::{fills_vector_tile, relative_costs, Forced, RelativeCosts};
use lopper_passes::{Instrumentation, Ir, PassManager};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The per-layer table: shape, density (before and after, when both are
/// given), pattern, kernel and why, FLOPs and bytes.
pub fn sparsity_table(before: Option<&[LayerReport]>, after: &[LayerReport]) -> String {
    let mut rows = vec![[
        "layer".to_string(),
        "weight".into(),
        "shape".into(),
        "density".into(),
        "pattern".into(),
        "kernel".into(),
        "FLOPs per item dense -> kernel".into(),
        "weight bytes dense -> kernel".into(),
        "why".into(),
    ]];
    for r in after {
        let was = before
            .and_then(|b| b.iter().find(|x| x.param == r.param))
            .map(|b| format!("{:.3} -> ", b.density))
            .unwrap_or_default();
        rows.push([
            format!("%{} ({})", r.layer, r.op),
            format!("%{}", r.param),
            format!("{:?}", r.shape).replace(' ', ""),
            format!("{was}{:.3}", r.density),
            r.pattern.clone(),
            r.choice.format.to_string(),
            format!("{} -> {}", r.flops_dense, r.flops_chosen),
            format!("{} -> {}", r.bytes_dense, r.bytes_chosen),
            r.choice.why.clone(),
        ]);
    }
    table(&rows)
}

/// What `lopper prune` was asked to do.
pub struct PruneRequest<'a> {
    /// The model.
    pub file: &'a Path,
    /// The options of the `prune` pass, as on the CLI of `--prune`.
    pub options: String,
    /// Where the weights go (`None`: only report).
    pub output: Option<&'a Path>,
    /// Print the per-layer table.
    pub report: bool,
    /// Print the pass's remarks.
    pub remarks: bool,
    /// The backend the report chooses kernels for.
    pub backend: Backend,
}

/// The sparse costs of `backend` for `rows` rows per call, and the header
/// of a table of its choices: the kernel `-O2` chooses for each layer, the
/// backend's lanes and whether its sparse kernels run along the batch.
pub fn report_costs(backend: Backend, rows: usize) -> Result<(RelativeCosts, String)> {
    if backend == Backend::Interpreter {
        bail!("the sparse kernels are chosen for cranelift or llvm, not the interpreter");
    }
    let lanes = backend.lanes();
    let layout = if fills_vector_tile(lanes, rows) {
        "sparse kernels vectorized along the batch"
    } else {
        "sparse kernels a batch row at a time"
    };
    Ok((
        relative_costs(lanes, rows),
        format!(
            "the kernel -O2 chooses for each layer: {backend}, {lanes} lanes, {rows} row(s) per call, {layout}"
        ),
    ))
}

/// Prunes a model and writes its weights (and, when shapes changed, the
/// model) as asked.
pub fn prune_command(req: PruneRequest) -> Result<()> {
    let graph = load_graph(req.file)?;
    let (costs, header) = report_costs(req.backend, 1)?;
    let before = analyze(&graph, Forced::Auto, &costs).map_err(|e| anyhow!("{e}"))?;
    let shapes_before = param_shapes(&graph);
    let instrumentation = Instrumentation {
        remarks: req.remarks,
        verify_each: true,
        ..Default::default()
    };
    let pipeline = format!("shape-infer,prune{{{}}}", req.options);
    let mut pm = PassManager::new(&pipeline, instrumentation).map_err(|e| anyhow!(e))?;
    let mut ir = Ir::Graph(graph);
    crate::driver::run_pipeline(&mut pm, &mut ir)?;
    let Ir::Graph(g) = ir else {
        bail!("internal error: pruning lowered the graph")
    };
    let after = analyze(&g, Forced::Auto, &costs).map_err(|e| anyhow!("{e}"))?;
    if req.report || req.output.is_none() {
        println!("{header} (`lopper check --set` for a batch):");
        print!("{}", sparsity_table(Some(&before), &after));
    }
    let Some(output) = req.output else {
        return Ok(());
    };
    let tensors: Vec<(String, &Tensor)> = params(&g)
        .into_iter()
        .map(|(name, t)| (tensor_name(&g, &name), t))
        .collect();
    // Shapes changed: the model is written too, beside the weights (and
    // never over the model that was read).
    let model_out = (param_shapes(&g) != shapes_before).then(|| model_path(req.file, output));
    if model_out.as_deref() == Some(req.file) {
        bail!(
            "writing the pruned model would overwrite `{}`; choose another -o",
            req.file.display()
        );
    }
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder `{}`", dir.display()))?;
    }
    lopper_runtime::write_tensors(output, &tensors)?;
    println!("wrote {} ({} tensors)", output.display(), tensors.len());
    if let Some(model) = model_out {
        rewrite_model(req.file, &g, output, &model)?;
        println!("wrote {} (the model with the new shapes)", model.display());
    }
    Ok(())
}

/// Every param's name and values, in graph order.
fn params(g: &Graph) -> Vec<(String, &Tensor)> {
    let order = g.topo_order().unwrap_or_default();
    order
        .into_iter()
        .filter_map(|n| match &g.node(n).op {
            Op::Param(p) => Some((g.node(n).name.clone(), &*p.data)),
            _ => None,
        })
        .collect()
}

/// The name a param had in its weights file (its node name otherwise).
fn tensor_name(g: &Graph, name: &str) -> String {
    let source = g.find(name).and_then(|n| match &g.node(n).op {
        Op::Param(p) => match &p.source {
            lopper_ir::graph::ParamSource::File { tensor, .. } => Some(tensor.clone()),
            _ => None,
        },
        _ => None,
    });
    source.unwrap_or_else(|| name.to_string())
}

fn param_shapes(g: &Graph) -> BTreeMap<String, Vec<usize>> {
    params(g)
        .into_iter()
        .map(|(n, t)| (n, t.shape.clone()))
        .collect()
}

/// Where the pruned model goes: beside the weights, `.lop` or `.gir` like
/// the model read.
fn model_path(model: &Path, weights: &Path) -> PathBuf {
    let is_gir = model.extension().is_some_and(|e| e == "gir");
    weights.with_extension(if is_gir { "gir" } else { "lop" })
}

/// Writes the model to `out` with the pruned shapes, reading its weights
/// from `weights`: a `.lop` rewritten line by line (param declarations, the
/// weights line), or a `.gir` printed from the graph.
fn rewrite_model(model: &Path, g: &Graph, weights: &Path, out: &Path) -> Result<()> {
    if out.extension().is_some_and(|e| e == "gir") {
        std::fs::write(out, print_gir(g))
            .with_context(|| format!("cannot write `{}`", out.display()))?;
        return Ok(());
    }
    let file_name = weights
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| anyhow!("`{}` has no file name", weights.display()))?;
    if model.extension().is_some_and(|e| e == "onnx") {
        let text = lopper_frontend::writer::write_model(g, file_name).text;
        std::fs::write(out, text).with_context(|| format!("cannot write `{}`", out.display()))?;
        return Ok(());
    }
    let source = std::fs::read_to_string(model)
        .with_context(|| format!("cannot read `{}`", model.display()))?;
    let shapes = param_shapes(g);
    let mut text = String::new();
    let mut has_weights = source
        .lines()
        .any(|l| l.trim_start().starts_with("weights "));
    for line in source.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if trimmed.starts_with("weights ") {
            text.push_str(&format!("{indent}weights {file_name:?}\n"));
        } else if let Some(rest) = trimmed.strip_prefix("param ") {
            let name = rest.split(':').next().unwrap_or("").trim();
            match shapes.get(name) {
                Some(shape) => {
                    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
                    text.push_str(&format!("{indent}param {name}: f32[{}]\n", dims.join(", ")));
                }
                None => text.push_str(&format!("{line}\n")),
            }
        } else {
            text.push_str(&format!("{line}\n"));
            if !has_weights && trimmed.starts_with("model ") && trimmed.ends_with('{') {
                text.push_str(&format!("{indent}    weights {file_name:?}\n"));
                has_weights = true;
            }
        }
    }
    std::fs::write(out, text).with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(())
}
