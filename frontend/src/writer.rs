//! Graph IR back to the model language: what `lopper import` writes.
//!
//! Every param becomes a `param` declaration whose data goes to a weights
//! file (returned beside the text, to be written as safetensors); every
//! other node a `let` (or `output`) calling its op by name with its
//! attributes as named arguments, in topological order. Building the text
//! gives back the same graph. Names must already be names of the language
//! (the ONNX importer makes them so).

use lopper_ir::graph::Op;
use lopper_ir::{Graph, Tensor};
use std::fmt::Write;

/// A model's text and the tensors its `weights` file must hold.
pub struct WrittenModel {
    /// The `.lop` text.
    pub text: String,
    /// Param name and data, in declaration order.
    pub weights: Vec<(String, Tensor)>,
}

/// Writes `g` as a model whose params come from `weights_file` (as written
/// in the `weights` line, relative to the model file).
pub fn write_model(g: &Graph, weights_file: &str) -> WrittenModel {
    let mut text = String::new();
    let mut weights = Vec::new();
    let _ = writeln!(text, "model {} {{", g.name);
    let order = g.topo_order().expect("a verified graph has no cycle");
    let has_params = order.iter().any(|&n| matches!(g.node(n).op, Op::Param(_)));
    if has_params {
        let _ = writeln!(text, "    weights {weights_file:?}");
    }
    for &n in &g.inputs {
        let node = g.node(n);
        let _ = writeln!(text, "    input {}: {}", node.name, node.ty);
    }
    for &n in &order {
        let node = g.node(n);
        if let Op::Param(p) = &node.op {
            let _ = writeln!(text, "    param {}: {}", node.name, node.ty);
            weights.push((node.name.clone(), (*p.data).clone()));
        }
    }
    let mut written_outputs = Vec::new();
    for &n in &order {
        let node = g.node(n);
        if matches!(node.op, Op::Input | Op::Param(_)) {
            continue;
        }
        let operands: Vec<String> = g
            .operands(n)
            .iter()
            .map(|&o| g.node(o).name.clone())
            .collect();
        let attrs: Vec<String> = node
            .op
            .attrs()
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let args = [operands, attrs].concat().join(", ");
        let output = g
            .outputs
            .iter()
            .position(|o| o.node == n && o.name == node.name);
        let keyword = if let Some(i) = output {
            written_outputs.push(i);
            "output"
        } else {
            "let"
        };
        let _ = writeln!(
            text,
            "    {keyword} {} = {}({args})",
            node.name,
            node.op.name()
        );
    }
    for (i, o) in g.outputs.iter().enumerate() {
        if !written_outputs.contains(&i) {
            let _ = writeln!(text, "    output {} = {}", o.name, g.node(o.node).name);
        }
    }
    text.push_str("}\n");
    WrittenModel { text, weights }
}
