//! Graphviz output of the graph IR (`--emit dot`).
//!
//! Inputs are ellipses, params grey boxes, ops white boxes labelled with the
//! op, its attributes and result type; edges carry the operand position when
//! an op has more than one operand. Outputs are double octagons.

use super::op::Op;
use super::Graph;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders `g` in the DOT language.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    let _ = writeln!(
        out,
        "  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];"
    );
    let mut order: Vec<_> = g.graph.node_indices().collect();
    order.sort();
    for n in &order {
        let node = &g.graph[*n];
        let (shape, style) = match node.op {
            Op::Input => ("ellipse", ""),
            Op::Param(_) => ("box", ", style=filled, fillcolor=\"#dddddd\""),
            _ => ("box", ""),
        };
        let mut label = format!("%{} = {}", node.name, node.op.name());
        if !matches!(node.op, Op::Param(_)) {
            for (k, v) in node.op.attrs() {
                let _ = write!(label, "\\n{k} = {}", escape(&v.to_string()));
            }
        }
        let _ = write!(label, "\\n{}", node.ty);
        let _ = writeln!(
            out,
            "  n{} [shape={shape}{style}, label=\"{}\"];",
            n.index(),
            escape(&label).replace("\\\\n", "\\n")
        );
    }
    for n in &order {
        let operands = g.operands(*n);
        for (i, o) in operands.iter().enumerate() {
            let label = if operands.len() > 1 {
                format!(" [label=\"{i}\"]")
            } else {
                String::new()
            };
            let _ = writeln!(out, "  n{} -> n{}{label};", o.index(), n.index());
        }
    }
    for (i, o) in g.outputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  out{i} [shape=doubleoctagon, label=\"{}\"];\n  n{} -> out{i};",
            escape(&o.name),
            o.node.index()
        );
    }
    out.push_str("}\n");
    out
}
