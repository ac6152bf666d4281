//! Recognizes exact GELU written out with `Erf`, as PyTorch and most
//! exporters write it (`x · 0.5 · (1 + erf(x / √2))` in any of its usual
//! orders), and replaces it by the graph IR's `gelu`.
//!
//! Only chains whose intermediate values have no other use are rewritten,
//! so the result is the same function; the constants must be the exact
//! `f32` values (within one rounding) of 1/√2 (or √2 for a division), 1 and
//! 0.5.

use lopper_ir::graph::{BinaryOp, NodeIndex, Op, UnaryOp};
use lopper_ir::Graph;

/// Rewrites every GELU pattern in `g`; returns whether one was found.
pub fn fuse_gelu(g: &mut Graph) -> bool {
    let erfs: Vec<NodeIndex> = g
        .graph
        .node_indices()
        .filter(|&n| g.node(n).op == Op::Unary(UnaryOp::Erf))
        .collect();
    let mut changed = false;
    for erf in erfs {
        if let Some((x, result)) = match_gelu(g, erf) {
            let name = g.node(result).name.clone();
            let ty = g.node(result).ty.clone();
            let gelu = g.add(format!("{name}.gelu"), Op::Unary(UnaryOp::Gelu), ty, &[x]);
            g.replace_all_uses(result, gelu);
            g.remove(result);
            g.graph[gelu].name = name;
            changed = true;
        }
    }
    changed
}

fn is_scalar(g: &Graph, n: NodeIndex, value: f32) -> bool {
    match &g.node(n).op {
        Op::Param(p) => {
            p.data.data.len() == 1 && {
                let v = p.data.data[0];
                (v - value).abs() <= value.abs() * 2.0 * f32::EPSILON
            }
        }
        _ => false,
    }
}

/// The single user of `n` if it has exactly one and is not an output.
fn only_user(g: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    match g.users(n).as_slice() {
        [u] if !g.is_output(n) => Some(*u),
        _ => None,
    }
}

/// The operand of binary node `n` other than `known`, when `n` is `op`.
fn other_operand(g: &Graph, n: NodeIndex, op: BinaryOp, known: NodeIndex) -> Option<NodeIndex> {
    if g.node(n).op != Op::Binary(op) {
        return None;
    }
    match g.operands(n).as_slice() {
        [a, b] if *a == known => Some(*b),
        [a, b] if *b == known => Some(*a),
        _ => None,
    }
}

/// For `erf(x/√2)` at `erf`, the input `x` and the node whose value is
/// `gelu(x)`.
fn match_gelu(g: &Graph, erf: NodeIndex) -> Option<(NodeIndex, NodeIndex)> {
    let scaled = *g.operands(erf).first()?;
    let [a, b] = g.operands(scaled)[..] else {
        return None;
    };
    let x = match g.node(scaled).op {
        Op::Binary(BinaryOp::Mul) if is_scalar(g, b, std::f32::consts::FRAC_1_SQRT_2) => a,
        Op::Binary(BinaryOp::Mul) if is_scalar(g, a, std::f32::consts::FRAC_1_SQRT_2) => b,
        Op::Binary(BinaryOp::Div) if is_scalar(g, b, std::f32::consts::SQRT_2) => a,
        _ => return None,
    };
    only_user(g, scaled).filter(|&u| u == erf)?;
    let plus_one = only_user(g, erf)?;
    if !is_scalar(g, other_operand(g, plus_one, BinaryOp::Add, erf)?, 1.0) {
        return None;
    }
    let product = only_user(g, plus_one)?;
    let factor = other_operand(g, product, BinaryOp::Mul, plus_one)?;
    if factor == x {
        // x · (1 + erf) · 0.5
        let half = only_user(g, product)?;
        let c = other_operand(g, half, BinaryOp::Mul, product)?;
        return is_scalar(g, c, 0.5).then_some((x, half));
    }
    // (x · 0.5) · (1 + erf)
    let c = other_operand(g, factor, BinaryOp::Mul, x)?;
    (is_scalar(g, c, 0.5) && only_user(g, factor) == Some(product)).then_some((x, product))
}
