//! `simplify`: algebraic identities that remove work without changing values.
//!
//! - `x * 1`, `1 * x`, `x / 1`, `x + 0`, `0 + x`, `x - 0` → `x`, when the
//!   constant is a param of all ones or zeros and the result has `x`'s type
//!   (a broadcast that widens `x` is kept);
//! - `transpose(transpose(x))` → one transpose, or `x` when the perms cancel;
//!   a transpose with the identity perm → `x`;
//! - `reshape`/`flatten` of a `reshape`/`flatten` → one reshape; a reshape or
//!   flatten to the same type → `x`;
//! - `identity(x)` and a slice covering its whole axis → `x`.
//!
//! It runs to a fixed point. Nodes left without users are `dce`'s to remove.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::op::{BinaryOp, ReshapeDim, UnaryOp};
use lopper_ir::graph::NodeIndex;
use lopper_ir::{Dim, Graph, Op};

/// The `simplify` pass.
pub struct Simplify;

/// True if `n` is a param whose every element is `value`.
fn is_splat(g: &Graph, n: NodeIndex, value: f32) -> bool {
    matches!(&g.graph[n].op, Op::Param(p) if p.data.data.iter().all(|&v| v == value))
}

/// The node that `n` can be replaced by, or a rewrite applied in place.
fn simplify_node(g: &mut Graph, n: NodeIndex) -> Option<NodeIndex> {
    let ops = g.operands(n);
    let ty = g.graph[n].ty.clone();
    let same_type = |g: &Graph, x: NodeIndex| g.graph[x].ty == ty;
    match g.graph[n].op.clone() {
        Op::Unary(UnaryOp::Identity) => Some(ops[0]),
        Op::Binary(b) => {
            let (a, c) = (ops[0], ops[1]);
            let candidates: &[(NodeIndex, NodeIndex, f32)] = match b {
                BinaryOp::Mul => &[(a, c, 1.0), (c, a, 1.0)],
                BinaryOp::Add => &[(a, c, 0.0), (c, a, 0.0)],
                BinaryOp::Div => &[(a, c, 1.0)],
                BinaryOp::Sub => &[(a, c, 0.0)],
                BinaryOp::Pow => &[(a, c, 1.0)],
            };
            candidates
                .iter()
                .find(|(keep, constant, v)| is_splat(g, *constant, *v) && same_type(g, *keep))
                .map(|(keep, _, _)| *keep)
        }
        Op::Transpose { perm } => {
            if perm.iter().enumerate().all(|(i, &p)| i == p) {
                return Some(ops[0]);
            }
            let Op::Transpose { perm: inner } = g.graph[ops[0]].op.clone() else {
                return None;
            };
            let source = g.operands(ops[0])[0];
            let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
            if composed.iter().enumerate().all(|(i, &p)| i == p) {
                return Some(source);
            }
            g.graph[n].op = Op::Transpose { perm: composed };
            g.set_operands(n, &[source]);
            Some(n)
        }
        Op::Reshape { .. } | Op::Flatten { .. } => {
            if same_type(g, ops[0]) {
                return Some(ops[0]);
            }
            if !matches!(g.graph[ops[0]].op, Op::Reshape { .. } | Op::Flatten { .. }) {
                return None;
            }
            let source = g.operands(ops[0])[0];
            let shape = ty
                .shape
                .0
                .iter()
                .map(|d| ReshapeDim::Dim(d.clone()))
                .collect();
            g.graph[n].op = Op::Reshape { shape };
            g.set_operands(n, &[source]);
            Some(n)
        }
        Op::Slice { axis, start, end } => {
            let full = g.graph[ops[0]].ty.shape.0[axis] == Dim::Static(end - start) && start == 0;
            full.then_some(ops[0])
        }
        _ => None,
    }
}

impl Pass<Graph> for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn description(&self) -> &'static str {
        "apply algebraic identities: x*1, x+0, transpose of transpose, reshape of reshape, identity"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut rewrites = 0;
        loop {
            let order = g
                .topo_order()
                .map_err(|_| PassError::new(self.name(), "the graph has a cycle"))?;
            let mut changed = false;
            for n in order {
                if !g.graph.contains_node(n) || g.inputs.contains(&n) {
                    continue;
                }
                if let Some(replacement) = simplify_node(g, n) {
                    if replacement != n {
                        g.replace_all_uses(n, replacement);
                        g.remove(n);
                    }
                    changed = true;
                    rewrites += 1;
                }
            }
            if !changed || rewrites > 10_000 {
                break;
            }
        }
        if rewrites > 0 {
            cx.remark(format!("simplify: {rewrites} rewrite(s)"));
        }
        Ok(Changed::from(rewrites > 0))
    }
}
