//! `fold-constants`: evaluates ops whose operands are all params.
//!
//! Such an op becomes a literal param holding its value, computed by the
//! reference semantics (the same code the interpreter runs), so folding never
//! changes a result. Ops with symbolic result shapes and results over 16M
//! elements are left alone. The operands it no longer needs are for `dce`.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::param::Param;
use lopper_ir::graph::reference::evaluate;
use lopper_ir::{Graph, Op};

/// Largest result, in elements, that is folded into the IR.
const FOLD_LIMIT: usize = 1 << 24;

/// The `fold-constants` pass.
pub struct FoldConstants;

impl Pass<Graph> for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn description(&self) -> &'static str {
        "evaluate ops whose operands are all params into literal params"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(self.name(), "the graph has a cycle"))?;
        let mut folded = 0;
        for n in order {
            if matches!(g.graph[n].op, Op::Input | Op::Param(_)) {
                continue;
            }
            let operands = g.operands(n);
            let values: Option<Vec<_>> = operands
                .iter()
                .map(|&o| match &g.graph[o].op {
                    Op::Param(p) => Some(p.data.clone()),
                    _ => None,
                })
                .collect();
            let (Some(values), Some(shape)) = (values, g.graph[n].ty.shape.as_static()) else {
                continue;
            };
            if shape.iter().product::<usize>() > FOLD_LIMIT {
                continue;
            }
            let refs: Vec<_> = values.iter().map(|v| v.as_ref()).collect();
            let value = evaluate(&g.graph[n].op, &refs, &shape)
                .map_err(|e| PassError::at(self.name(), &g.graph[n].name, e))?;
            g.graph[n].op = Op::Param(Param::literal(value));
            g.set_operands(n, &[]);
            folded += 1;
        }
        if folded > 0 {
            cx.remark(format!("fold-constants: folded {folded} op(s)"));
        }
        Ok(Changed::from(folded > 0))
    }
}
