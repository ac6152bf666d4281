//! The `.gir` printer.
//!
//! One line per node in topological order (creation order where free), the
//! inputs in the signature, the outputs named in the result list:
//!
//! ```text
//! graph @mlp(%x: f32[batch,784]) -> (y: f32[batch,10]) {
//!   %fc1.weight = param {file = "mlp.safetensors", tensor = "fc1.weight"} : f32[300,784]
//!   %0 = linear %x, %fc1.weight, %fc1.bias : f32[batch,300]
//!   return %y
//! }
//! ```
//!
//! Every attribute is printed, defaults included, so that the parser gives
//! back the same graph and printing it again gives the same text.

use super::Graph;
use std::fmt::Write;

/// Prints a graph as `.gir` text. A cyclic graph (which the verifier rejects)
/// prints its acyclic part followed by the nodes on cycles.
pub fn print_gir(g: &Graph) -> String {
    let mut out = String::new();
    let args: Vec<String> = g
        .inputs
        .iter()
        .map(|&n| format!("%{}: {}", g.graph[n].name, g.graph[n].ty))
        .collect();
    let results: Vec<String> = g
        .outputs
        .iter()
        .map(|o| format!("{}: {}", o.name, g.graph[o.node].ty))
        .collect();
    let _ = writeln!(
        out,
        "graph @{}({}) -> ({}) {{",
        g.name,
        args.join(", "),
        results.join(", ")
    );
    let order = g.topo_order().unwrap_or_else(|stuck| {
        let mut all: Vec<_> = g
            .graph
            .node_indices()
            .filter(|n| !stuck.contains(n))
            .collect();
        all.extend(stuck);
        all
    });
    for n in order {
        let node = &g.graph[n];
        if g.inputs.contains(&n) {
            continue;
        }
        let _ = write!(out, "  %{} = {}", node.name, node.op.name());
        let operands = g.operands(n);
        for (i, o) in operands.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let _ = write!(out, "{sep}%{}", g.graph[*o].name);
        }
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            let text: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let _ = write!(out, " {{{}}}", text.join(", "));
        }
        let _ = writeln!(out, " : {}", node.ty);
    }
    let rets: Vec<String> = g
        .outputs
        .iter()
        .map(|o| format!("%{}", g.graph[o.node].name))
        .collect();
    let _ = writeln!(out, "  return {}", rets.join(", "));
    out.push_str("}\n");
    out
}
