//! `shape-infer`: recomputes the type of every op from its operands.
//!
//! Types flow from the inputs and params through [`infer_type`] in
//! topological order: NumPy broadcasting, matmul batch dims, conv and pool
//! output sizes, symbolic sizes carried through. It repairs stale types after
//! a transformation changed an operand (a pruned layer's new width, say) and
//! fails at the first node whose operands no longer fit. It does not change
//! declared types of inputs or params.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::infer_type;
use lopper_ir::{Graph, Op};

/// The `shape-infer` pass.
pub struct ShapeInfer;

impl Pass<Graph> for ShapeInfer {
    fn name(&self) -> &'static str {
        "shape-infer"
    }

    fn description(&self) -> &'static str {
        "recompute every op's result type from its operands (broadcasting, conv/pool sizes, symbolic dims)"
    }

    fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(self.name(), "the graph has a cycle"))?;
        let mut changed = false;
        for n in order {
            if matches!(g.graph[n].op, Op::Input | Op::Param(_)) {
                continue;
            }
            let ty = infer_type(&g.graph[n].op, &g.operand_types(n))
                .map_err(|e| PassError::at(self.name(), &g.graph[n].name, e))?;
            if g.graph[n].ty != ty {
                g.graph[n].ty = ty;
                changed = true;
            }
        }
        Ok(Changed::from(changed))
    }
}
