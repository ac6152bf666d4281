//! `dce`: removes nodes whose values no output needs.
//!
//! Walks backwards from the outputs and deletes every node not reached,
//! params and ops alike. Graph inputs are kept even when unused: they are
//! part of the signature callers rely on.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::Graph;
use std::collections::HashSet;

/// The `dce` pass.
pub struct DeadCodeElimination;

impl Pass<Graph> for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn description(&self) -> &'static str {
        "remove nodes that no output depends on (inputs stay)"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut live: HashSet<_> = g.inputs.iter().copied().collect();
        let mut work: Vec<_> = g.outputs.iter().map(|o| o.node).collect();
        while let Some(n) = work.pop() {
            if live.insert(n) || g.inputs.contains(&n) {
                work.extend(g.operands(n).into_iter().filter(|o| !live.contains(o)));
            }
        }
        let dead: Vec<_> = g
            .graph
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            g.remove(n);
        }
        if !dead.is_empty() {
            cx.remark(format!("dce: removed {} node(s)", dead.len()));
        }
        Ok(Changed::from(!dead.is_empty()))
    }
}
