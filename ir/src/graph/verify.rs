//! The graph verifier: the invariants every pass may rely on.
//!
//! It checks that names are unique, the graph is acyclic, inputs and outputs
//! are well formed, every op has the right number of operands, every declared
//! type is the one [`infer_type`](super::infer_type) gives, every param's
//! data has its declared shape, and no tensor's element count overflows.
//! It reports every violation found, each naming its node.

use super::op::Op;
use super::{infer_type, Graph};
use std::collections::HashMap;
use std::fmt;

/// One violated invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The node concerned, if one is.
    pub node: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some(n) => write!(f, "%{n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Checks every invariant of `g`; returns all violations.
pub fn verify(g: &Graph) -> Result<(), Vec<VerifyError>> {
    let mut errors = Vec::new();
    let mut err = |node: Option<&str>, message: String| {
        errors.push(VerifyError {
            node: node.map(str::to_string),
            message,
        })
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in g.graph.node_weights() {
        *seen.entry(n.name.as_str()).or_default() += 1;
    }
    let mut dups: Vec<_> = seen
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(n, _)| *n)
        .collect();
    dups.sort();
    for d in dups {
        err(Some(d), "the name is defined more than once".into());
    }
    if let Err(stuck) = g.topo_order() {
        let names: Vec<String> = stuck
            .iter()
            .map(|&n| format!("%{}", g.graph[n].name))
            .collect();
        err(
            Some(&g.graph[stuck[0]].name),
            format!("the graph has a cycle through {}", names.join(", ")),
        );
        return Err(errors);
    }
    if g.outputs.is_empty() {
        err(None, "the graph returns nothing".into());
    }
    for o in &g.outputs {
        if !g.graph.contains_node(o.node) {
            err(
                None,
                format!("output `{}` refers to a removed node", o.name),
            );
        }
    }
    for &i in &g.inputs {
        if !g.graph.contains_node(i) || g.graph[i].op != Op::Input {
            err(None, "a signature input is not an `input` node".into());
        }
    }
    let mut order: Vec<_> = g.graph.node_indices().collect();
    order.sort();
    for n in order {
        let node = &g.graph[n];
        let name = Some(node.name.as_str());
        if node.ty.shape.numel().is_none() {
            err(name, format!("type {} has too many elements", node.ty));
            continue;
        }
        match &node.op {
            Op::Input => {
                if !g.inputs.contains(&n) {
                    err(name, "an `input` node that is not in the signature".into());
                }
                if !g.operands(n).is_empty() {
                    err(name, "an input has no operands".into());
                }
            }
            Op::Param(p) => {
                if !g.operands(n).is_empty() {
                    err(name, "a param has no operands".into());
                }
                if node.ty.shape.as_static().as_deref() != Some(&p.data.shape[..]) {
                    err(
                        name,
                        format!(
                            "param data has shape {:?} but the type is {}",
                            p.data.shape, node.ty
                        ),
                    );
                }
            }
            op => {
                let operands = g.operand_types(n);
                match infer_type(op, &operands) {
                    Ok(ty) if ty == node.ty => {}
                    Ok(ty) => err(
                        name,
                        format!(
                            "`{}` is declared {} but its operands give {ty}",
                            op.name(),
                            node.ty
                        ),
                    ),
                    Err(e) => err(name, e),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
