//! The driver: loads models, runs pipelines, and reports what the CLI prints.
//!
//! Everything here is shared by the subcommands: reading a `.lop` or `.gir`
//! file into a graph (with rendered diagnostics on failure), building the
//! pass manager from the command-line flags, and the summary tables.

use anyhow::{anyhow, bail, Context, Result};
use lopper_ir::graph::{flops, parse_gir};
use lopper_ir::loops::{parse_lir, BufferKind};
use lopper_ir::types::sum_sizes;
use lopper_ir::{Graph, Op, Size, Tensor, TensorType};
use lopper_passes::{Ir, PassManager};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Diagnostics already rendered for the user (printed as they are).
#[derive(Debug)]
pub struct Rendered(pub String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for Rendered {}

/// Reads a file's text, refusing what is not UTF-8.
fn read_text(path: &Path) -> Result<(String, String)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{file}`"))?;
    let source = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "`{file}` is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((file, source))
}

/// Reads a model: graph IR (`.gir`), loop IR (`.lir`), ONNX (`.onnx`), or
/// the DSL for any other extension.
pub fn load_ir(path: &Path) -> Result<Ir> {
    let render = |file: &str, source: &str, d: Vec<lopper_ir::Diagnostic>| -> anyhow::Error {
        Rendered(lopper_ir::diagnostic::render(file, source, &d)).into()
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("gir") => {
            let (file, source) = read_text(path)?;
            parse_gir(&source)
                .map(Ir::Graph)
                .map_err(|d| render(&file, &source, d))
        }
        Some("lir") => {
            let (file, source) = read_text(path)?;
            parse_lir(&source)
                .map(Ir::Loops)
                .map_err(|d| render(&file, &source, d))
        }
        Some("onnx") => lopper_frontend::onnx::load_onnx(path)
            .map(Ir::Graph)
            .map_err(|e| Rendered(e.render()).into()),
        _ => lopper_frontend::load_model(path)
            .map(Ir::Graph)
            .map_err(|e| Rendered(e.render()).into()),
    }
}

/// Reads a model that must still be a graph (`.lop`, `.gir` or `.onnx`).
pub fn load_graph(path: &Path) -> Result<Graph> {
    match load_ir(path)? {
        Ir::Graph(g) => Ok(g),
        Ir::Loops(_) => bail!(
            "`{}` is loop IR; this command needs a model or graph IR",
            path.display()
        ),
    }
}

/// Runs a pass manager on `ir`; printed IR and timing go to standard error,
/// like LLVM's and MLIR's.
/// Returns how many passes ran (the number of the last dump).
pub fn run_pipeline(pm: &mut PassManager, ir: &mut Ir) -> Result<usize> {
    let mut err = std::io::stderr().lock();
    let (timings, _) = pm.run_ir(ir, &mut err).map_err(|e| anyhow!("{e}"))?;
    Ok(timings.len())
}

/// The inputs of a model at any stage, in order, with their types.
pub fn declared_inputs(ir: &Ir) -> Vec<(String, TensorType)> {
    match ir {
        Ir::Graph(g) => g
            .inputs
            .iter()
            .map(|&i| (g.node(i).name.clone(), g.node(i).ty.clone()))
            .collect(),
        Ir::Loops(m) => m
            .buffers_of(BufferKind::In)
            .map(|b| (b.name.clone(), b.ty.clone()))
            .collect(),
    }
}

/// Runs a model at any stage: the graph interpreter or the loop interpreter.
pub fn execute_ir(
    ir: &Ir,
    inputs: &std::collections::HashMap<String, Tensor>,
    sizes: &BTreeMap<String, usize>,
) -> Result<Vec<(String, Tensor)>> {
    Ok(match ir {
        Ir::Graph(g) => lopper_runtime::run_graph(g, inputs, sizes)?,
        Ir::Loops(m) => lopper_runtime::run_module(m, inputs, sizes)?,
    })
}

/// Parses `--set name=value` bindings of symbolic sizes.
pub fn parse_sizes(sets: &[String]) -> Result<BTreeMap<String, usize>> {
    let mut sizes = BTreeMap::new();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set `{s}`: expected NAME=SIZE, like batch=8"))?;
        let n: usize = v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("--set `{s}`: the size must be a positive integer"))?;
        sizes.insert(k.trim().to_string(), n);
    }
    Ok(sizes)
}

/// Bytes of scratch memory a module allocates per call (buffers with memory
/// of their own), as a sum of symbolic terms.
pub fn scratch_bytes(m: &lopper_ir::loops::Module) -> Vec<Size> {
    let sizes: Vec<Size> = m
        .buffers_of(BufferKind::Scratch)
        .filter(|b| b.view_of.is_none())
        .filter_map(|b| b.ty.shape.numel()?.scale(4))
        .collect();
    sum_sizes(&sizes)
}

/// A sum of sizes as text, evaluated where `bound` binds every symbol.
pub fn size_text(sizes: &[Size], bound: &BTreeMap<String, usize>) -> String {
    let terms: Vec<String> = sizes
        .iter()
        .filter(|s| s.constant > 0)
        .map(|s| match s.eval(bound) {
            Some(v) if !s.symbols.is_empty() => format!("{}", Size::constant(v)),
            _ => s.to_string(),
        })
        .collect();
    if terms.is_empty() {
        "0".into()
    } else {
        terms.join(" + ")
    }
}

/// The `check` report: each op with its shape and FLOPs, the params, totals.
pub fn summary(g: &Graph, bound: &BTreeMap<String, usize>) -> String {
    let mut out = String::new();
    let sig = |nodes: Vec<(String, String)>| -> String {
        nodes
            .into_iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "model {}", g.name);
    let inputs = g
        .inputs
        .iter()
        .map(|&i| (g.node(i).name.clone(), g.node(i).ty.to_string()))
        .collect();
    let outputs = g
        .outputs
        .iter()
        .map(|o| (o.name.clone(), g.node(o.node).ty.to_string()))
        .collect();
    let _ = writeln!(out, "  inputs:  {}", sig(inputs));
    let _ = writeln!(out, "  outputs: {}", sig(outputs));
    if !bound.is_empty() {
        let b: Vec<String> = bound.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let _ = writeln!(out, "  sizes:   {}", b.join(", "));
    }
    let order = g.topo_order().unwrap_or_default();
    let mut rows = vec![[
        "value".to_string(),
        "op".into(),
        "type".into(),
        "FLOPs".into(),
    ]];
    let mut all_flops = Vec::new();
    for &n in &order {
        let node = g.node(n);
        if matches!(node.op, Op::Input | Op::Param(_)) {
            continue;
        }
        let f = flops(&node.op, &g.operand_types(n), &node.ty);
        rows.push([
            format!("%{}", node.name),
            node.op.name().into(),
            node.ty.to_string(),
            size_text(std::slice::from_ref(&f), bound),
        ]);
        all_flops.push(f);
    }
    let _ = writeln!(out, "\nops ({}):", rows.len() - 1);
    out.push_str(&table(&rows));
    let mut prow = vec![[
        "param".to_string(),
        "type".into(),
        "elements".into(),
        "bytes".into(),
    ]];
    let (mut count, mut elements) = (0usize, 0usize);
    for &n in &order {
        if let Op::Param(p) = &g.node(n).op {
            count += 1;
            elements += p.data.numel();
            prow.push([
                format!("%{}", g.node(n).name),
                g.node(n).ty.to_string(),
                p.data.numel().to_string(),
                human_bytes(p.data.numel() * 4),
            ]);
        }
    }
    let _ = writeln!(out, "\nparams ({count}):");
    out.push_str(&table(&prow));
    let _ = writeln!(
        out,
        "\ntotal: {} ops, {} FLOPs, {} params ({} elements, {})",
        rows.len() - 1,
        size_text(&sum_sizes(&all_flops), bound),
        count,
        elements,
        human_bytes(elements * 4)
    );
    out
}

/// Bytes with a binary-free SI unit: `940.8 kB`.
pub fn human_bytes(n: usize) -> String {
    let f = n as f64;
    if f >= 1e6 {
        format!("{:.2} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line about a tensor: shape, range, mean and the first values.
pub fn describe_tensor(name: &str, t: &Tensor) -> String {
    let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
    for &v in &t.data {
        min = min.min(v);
        max = max.max(v);
        sum += v as f64;
    }
    let first: Vec<String> = t.data.iter().take(6).map(|v| format!("{v:.6}")).collect();
    let more = if t.data.len() > 6 { ", …" } else { "" };
    format!(
        "{name}: f32{:?}  min {min:.6}  max {max:.6}  mean {:.6}\n  [{}{more}]",
        t.shape,
        sum / t.data.len().max(1) as f64,
        first.join(", ")
    )
}

/// Index of the largest value of each row of the last axis.
pub fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let width = *t.shape.last().unwrap_or(&1);
    t.data
        .chunks(width.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// Reads an input spec `FILE.safetensors[:TENSOR]`.
pub fn read_input(spec: &str) -> Result<Tensor> {
    let (file, tensor) = match spec.rsplit_once(':') {
        Some((f, t)) if f.ends_with(".safetensors") => (f, Some(t)),
        _ => (spec, None),
    };
    let raw = lopper_runtime::read_tensor_file(Path::new(file), tensor)?;
    if raw.dtype != lopper_ir::DType::F32 {
        bail!("input `{spec}` is {}; model inputs are f32", raw.dtype);
    }
    Ok(Tensor {
        shape: raw.shape,
        data: raw.values,
    })
}
