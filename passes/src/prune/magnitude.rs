//! Magnitude pruning: zero the weights with the smallest `|w|`.
//!
//! Per layer, each param loses its own fraction (`sparsity` or its entry of
//! `layer-sparsity`); with `scope=global` one ranking over every selected
//! param decides, so layers with many small weights lose more. Exactly
//! `round(sparsity * count)` weights are zeroed, ties broken by position.
//! Weights that are zero already count as pruned first.

use super::{param_tensor, set_param, smallest, Prune, Weight};
use lopper_ir::Graph;

pub(super) fn prune(p: &Prune, g: &mut Graph, weights: &[Weight]) {
    if p.global {
        let mut scores: Vec<f64> = Vec::new();
        let mut owner: Vec<(usize, usize)> = Vec::new();
        for (i, w) in weights.iter().enumerate() {
            let t = param_tensor(g, w.node);
            scores.extend(t.data.iter().map(|v| v.abs() as f64));
            owner.extend((0..t.data.len()).map(|j| (i, j)));
        }
        let k = (p.sparsity * scores.len() as f64).round() as usize;
        let mut data: Vec<Vec<f32>> = weights
            .iter()
            .map(|w| param_tensor(g, w.node).data.clone())
            .collect();
        for at in smallest(&scores, k) {
            let (i, j) = owner[at];
            data[i][j] = 0.0;
        }
        for (w, values) in weights.iter().zip(data) {
            let shape = param_tensor(g, w.node).shape.clone();
            set_param(
                g,
                w.node,
                lopper_ir::Tensor {
                    shape,
                    data: values,
                },
            );
        }
        return;
    }
    for w in weights {
        let name = g.node(w.node).name.clone();
        let mut t = param_tensor(g, w.node).clone();
        let scores: Vec<f64> = t.data.iter().map(|v| v.abs() as f64).collect();
        let k = (p.sparsity_of(&name) * scores.len() as f64).round() as usize;
        for at in smallest(&scores, k) {
            t.data[at] = 0.0;
        }
        set_param(g, w.node, t);
    }
}
