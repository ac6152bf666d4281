//! `cse`: merges nodes that compute the same value.
//!
//! Two nodes are the same when they have the same op, attributes, operands
//! and type; two params are the same when their data and source are. The
//! later node's uses move to the earlier one and the later node is removed.
//! Inputs are never merged. It does not reason about algebra (`a+b` and `b+a`
//! stay distinct); `simplify` is the place for identities.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::NodeIndex;
use lopper_ir::{Graph, Op};
use std::collections::HashMap;

/// The `cse` pass.
pub struct CommonSubexpressionElimination;

impl Pass<Graph> for CommonSubexpressionElimination {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn description(&self) -> &'static str {
        "merge nodes with the same op, attributes, operands and type"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(self.name(), "the graph has a cycle"))?;
        let mut seen: HashMap<String, Vec<NodeIndex>> = HashMap::new();
        let mut merged = 0;
        for n in order {
            let node = &g.graph[n];
            if node.op == Op::Input {
                continue;
            }
            // The text of op, attributes, type and operand indices: equal
            // text means equal computation. Params compare by data too,
            // since two literals print alike only when their values are alike.
            let attrs: Vec<String> = node
                .op
                .attrs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let operands: Vec<usize> = g.operands(n).iter().map(|o| o.index()).collect();
            let key = format!(
                "{}|{}|{}|{:?}",
                node.op.name(),
                attrs.join(","),
                node.ty,
                operands
            );
            let candidates = seen.entry(key).or_default();
            let twin = candidates
                .iter()
                .copied()
                .find(|&c| g.graph[c].op == g.graph[n].op);
            match twin {
                Some(existing) => {
                    g.replace_all_uses(n, existing);
                    g.remove(n);
                    merged += 1;
                }
                None => candidates.push(n),
            }
        }
        if merged > 0 {
            cx.remark(format!("cse: merged {merged} node(s)"));
        }
        Ok(Changed::from(merged > 0))
    }
}
