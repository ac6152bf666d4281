//! `fold-batchnorm`: merges inference batch_norm into the conv2d or linear
//! before it.
//!
//! `batch_norm(conv2d(x, w, b), scale, bias, mean, var)` computes
//! `conv2d(x, w·s, (b − mean)·s + bias)` with `s = scale / sqrt(var + eps)`
//! per output channel, so the pair becomes one conv2d with new literal
//! weights (likewise a rank-2 `linear`, whose output features are dim 1).
//! It folds only when the weights and all batch-norm operands are params and
//! the conv2d/linear has no other user; the old params are left for `dce`.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::graph::param::Param;
use lopper_ir::graph::NodeIndex;
use lopper_ir::{Graph, Op, Tensor, TensorType};
use std::sync::Arc;

/// The `fold-batchnorm` pass.
pub struct FoldBatchNorm;

fn param_data(g: &Graph, n: NodeIndex) -> Option<Arc<Tensor>> {
    match &g.graph[n].op {
        Op::Param(p) => Some(p.data.clone()),
        _ => None,
    }
}

impl Pass<Graph> for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold-batchnorm"
    }

    fn description(&self) -> &'static str {
        "fold inference batch_norm into the preceding conv2d or linear's weights and bias"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(self.name(), "the graph has a cycle"))?;
        let mut folded = 0;
        for bn in order {
            let Op::BatchNorm { eps } = g.graph[bn].op else {
                continue;
            };
            let ops = g.operands(bn);
            let producer = ops[0];
            let foldable = match &g.graph[producer].op {
                Op::Conv2d(_) => true,
                Op::Linear => g.graph[producer].ty.shape.rank() == 2,
                _ => false,
            };
            if !foldable || g.users(producer).len() != 1 || g.is_output(producer) {
                continue;
            }
            let stats: Option<Vec<_>> = ops[1..].iter().map(|&o| param_data(g, o)).collect();
            let inner = g.operands(producer);
            let weight = param_data(g, inner[1]);
            let bias = match inner.get(2) {
                Some(&b) => param_data(g, b).map(Some),
                None => Some(None),
            };
            let (Some(stats), Some(weight), Some(bias)) = (stats, weight, bias) else {
                continue;
            };
            let (scale, shift, mean, var) = (&stats[0], &stats[1], &stats[2], &stats[3]);
            let channels = weight.shape[0];
            let per_channel = weight.numel() / channels.max(1);
            let factor: Vec<f64> = (0..channels)
                .map(|c| scale.data[c] as f64 / (var.data[c] as f64 + eps).sqrt())
                .collect();
            let new_weight: Vec<f32> = weight
                .data
                .iter()
                .enumerate()
                .map(|(i, &w)| (w as f64 * factor[i / per_channel]) as f32)
                .collect();
            let new_bias: Vec<f32> = (0..channels)
                .map(|c| {
                    let b = bias.as_ref().map_or(0.0, |b| b.data[c] as f64);
                    ((b - mean.data[c] as f64) * factor[c] + shift.data[c] as f64) as f32
                })
                .collect();
            let base = g.graph[inner[1]].name.clone();
            let w_node = add_literal(
                g,
                &base,
                "folded",
                Tensor {
                    shape: weight.shape.clone(),
                    data: new_weight,
                },
            );
            let b_node = add_literal(
                g,
                &base,
                "folded_bias",
                Tensor {
                    shape: vec![channels],
                    data: new_bias,
                },
            );
            g.set_operands(producer, &[inner[0], w_node, b_node]);
            g.replace_all_uses(bn, producer);
            let bn_name = g.graph[bn].name.clone();
            g.remove(bn);
            cx.remark(format!(
                "fold-batchnorm: folded %{bn_name} into %{}",
                g.graph[producer].name
            ));
            folded += 1;
        }
        Ok(Changed::from(folded > 0))
    }
}

/// Adds a literal param named `<base>.<suffix>` (or a fresh number if taken).
fn add_literal(g: &mut Graph, base: &str, suffix: &str, t: Tensor) -> NodeIndex {
    let wanted = format!("{base}.{suffix}");
    let name = if g.find(&wanted).is_some() {
        g.fresh_name()
    } else {
        wanted
    };
    let ty = TensorType::f32(lopper_ir::Shape::from_static(&t.shape));
    g.add(name, Op::Param(Param::literal(t)), ty, &[])
}
