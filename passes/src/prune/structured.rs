//! Structured pruning: remove whole output neurons of a linear layer (rows
//! of its `[out, in]` weight) or whole filters of a conv2d, ranked by the L1
//! (default) or L2 norm of their weights, and everything that belonged to
//! them downstream, so that the result is a smaller dense model:
//!
//! - the layer's bias entries;
//! - per-channel params on the way to the next layer (batch_norm's scale,
//!   shift, mean and variance; a `+ b` or `* s` param broadcast along the
//!   channels);
//! - the matching inputs of the next linear or conv2d: its weight's columns
//!   (for a conv2d → pool → flatten → linear chain, the block of columns each
//!   channel flattened into).
//!
//! It sees through elementwise unary ops, pooling and `flatten`. A layer is
//! kept whole (with a remark saying why) when its output is a result of the
//! model (the last layer), fans out, or reaches an op it cannot follow
//! (softmax, concat, a residual add, a grouped conv2d). Shapes are inferred
//! again afterwards, so every type in the graph shows the new widths.

use super::{param_tensor, set_param, Norm, Prune, Weight};
use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::NodeIndex;
use lopper_ir::{Graph, Op, Tensor};

/// What removing channels of one layer touches.
struct Plan {
    /// Params cut along a dimension: (param, dim, elements per channel
    /// along that dim).
    cuts: Vec<(NodeIndex, usize, usize)>,
    /// How many channels the layer has.
    channels: usize,
}

/// A param that only `user` reads, or why not.
fn own_param(g: &Graph, p: NodeIndex, user: NodeIndex) -> Result<NodeIndex, String> {
    if !matches!(g.node(p).op, Op::Param(_)) {
        return Err(format!("%{} is not a param", g.node(p).name));
    }
    if g.users(p) != [user] {
        return Err(format!("%{} is shared with another op", g.node(p).name));
    }
    Ok(p)
}

fn plan(g: &Graph, w: &Weight) -> Result<Plan, String> {
    let layer = w.layer;
    let (mut channel_axis, groups_ok) = match &g.node(layer).op {
        Op::Linear => (g.node(layer).ty.shape.rank() - 1, true),
        Op::Conv2d(c) => (1, c.groups == 1),
        other => {
            return Err(format!(
                "`{}` has no output neurons to remove",
                other.name()
            ))
        }
    };
    if !groups_ok {
        return Err("a grouped conv2d keeps its filters".into());
    }
    let ops = g.operands(layer);
    let weight = own_param(g, ops[1], layer)?;
    let channels = param_tensor(g, weight).shape[0];
    let mut cuts = vec![(weight, 0, 1)];
    if let Some(&b) = ops.get(2) {
        cuts.push((own_param(g, b, layer)?, 0, 1));
    }
    let mut current = layer;
    let mut spatial = 1;
    loop {
        if g.is_output(current) {
            return Err("its output is a result of the model".into());
        }
        let users = g.users(current);
        let [user] = users[..] else {
            return Err(format!(
                "%{} has {} users",
                g.node(current).name,
                users.len()
            ));
        };
        let user_ops = g.operands(user);
        let rank = g.node(current).ty.shape.rank();
        match &g.node(user).op {
            Op::Unary(_) => {}
            Op::Binary(_) => {
                let other = user_ops.iter().copied().find(|&o| o != current);
                let Some(other) = other.filter(|_| user_ops.len() == 2) else {
                    return Err("a binary op of the value with itself".into());
                };
                let p = own_param(g, other, user)?;
                let shape = &param_tensor(g, p).shape;
                // Aligned to the right: the param's dim facing the channels
                // has them all; every other dim is 1.
                let offset = rank.checked_sub(shape.len()).ok_or("a wider operand")?;
                let dim = channel_axis
                    .checked_sub(offset)
                    .ok_or_else(|| format!("%{} is the same for every channel", g.node(p).name))?;
                let ok =
                    shape.iter().enumerate().all(
                        |(d, &n)| {
                            if d == dim {
                                n == channels
                            } else {
                                n == 1
                            }
                        },
                    );
                if !ok {
                    return Err(format!("%{} is not one value per channel", g.node(p).name));
                }
                cuts.push((p, dim, 1));
            }
            Op::BatchNorm { .. } if user_ops[0] == current && channel_axis == 1 => {
                for &s in &user_ops[1..] {
                    cuts.push((own_param(g, s, user)?, 0, 1));
                }
            }
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool if channel_axis == 1 => {}
            Op::Flatten { axis: 1 } if channel_axis == 1 && spatial == 1 => {
                spatial = g.node(current).ty.shape.0[2..]
                    .iter()
                    .map(|d| d.as_static().ok_or("a symbolic image size"))
                    .product::<Result<usize, _>>()?;
            }
            // The next layer's inputs must be the channels: a linear reads
            // the last dim, a conv2d dim 1.
            Op::Linear if user_ops[0] == current && channel_axis + 1 == rank => {
                let next = own_param(g, user_ops[1], user)?;
                cuts.push((next, 1, spatial));
                return Ok(Plan { cuts, channels });
            }
            Op::Conv2d(c)
                if user_ops[0] == current && c.groups == 1 && spatial == 1 && channel_axis == 1 =>
            {
                let next = own_param(g, user_ops[1], user)?;
                cuts.push((next, 1, 1));
                return Ok(Plan { cuts, channels });
            }
            other => {
                return Err(format!(
                    "its output reaches `{}` (%{}), which structured pruning does not follow",
                    other.name(),
                    g.node(user).name
                ))
            }
        }
        if let Op::Flatten { .. } = g.node(user).op {
            channel_axis = 1;
        }
        current = user;
    }
}

/// `t` with only the `keep` channels of dimension `dim`, each channel
/// `block` consecutive entries of that dimension.
fn select(t: &Tensor, dim: usize, keep: &[usize], block: usize) -> Tensor {
    let outer: usize = t.shape[..dim].iter().product();
    let inner: usize = t.shape[dim + 1..].iter().product();
    let extent = t.shape[dim];
    let mut data = Vec::with_capacity(outer * keep.len() * block * inner);
    for o in 0..outer {
        for &c in keep {
            let start = (o * extent + c * block) * inner;
            data.extend_from_slice(&t.data[start..start + block * inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[dim] = keep.len() * block;
    Tensor { shape, data }
}

pub(super) fn prune(
    p: &Prune,
    g: &mut Graph,
    weights: &[Weight],
    cx: &mut PassContext,
) -> Result<Changed, PassError> {
    let mut changed = false;
    for w in weights {
        let name = g.node(w.node).name.clone();
        let plan = match plan(g, w) {
            Ok(plan) => plan,
            Err(why) => {
                cx.remark(format!("%{name} kept whole: {why}"));
                continue;
            }
        };
        let t = param_tensor(g, w.node);
        let per_channel = t.data.len() / plan.channels.max(1);
        let norms: Vec<f64> = t
            .data
            .chunks(per_channel.max(1))
            .map(|row| match p.norm {
                Norm::L1 => row.iter().map(|v| v.abs() as f64).sum(),
                Norm::L2 => row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt(),
            })
            .collect();
        let removed = (p.sparsity_of(&name) * plan.channels as f64).round() as usize;
        let removed = removed.min(plan.channels - 1);
        let mut keep: Vec<usize> = (0..plan.channels).collect();
        for gone in super::smallest(&norms, removed) {
            keep.retain(|&c| c != gone);
        }
        for &(param, dim, block) in &plan.cuts {
            let cut = select(param_tensor(g, param), dim, &keep, block);
            set_param(g, param, cut);
        }
        cx.remark(format!(
            "%{name}: {} of {} output channels kept",
            keep.len(),
            plan.channels
        ));
        changed = true;
    }
    if changed {
        crate::shape_infer::ShapeInfer.run(g, cx)?;
    }
    Ok(Changed::from(changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_channel_blocks() {
        let t = Tensor {
            shape: vec![2, 6],
            data: (0..12).map(|v| v as f32).collect(),
        };
        // Columns in blocks of 2: keep blocks 0 and 2.
        let s = select(&t, 1, &[0, 2], 2);
        assert_eq!(s.shape, vec![2, 4]);
        assert_eq!(s.data, vec![0., 1., 4., 5., 6., 7., 10., 11.]);
        let rows = select(&t, 0, &[1], 1);
        assert_eq!(rows.data, (6..12).map(|v| v as f32).collect::<Vec<_>>());
    }
}
