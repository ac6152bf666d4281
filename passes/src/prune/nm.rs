//! N:M pruning: in every group of `m` consecutive weights along the
//! reduction, keep the `n` largest `|w|` and zero the rest (2:4 is what
//! sparse tensor cores accelerate; here the `n:m` kernel reads only the kept
//! half). A last group shorter than `m` keeps its `n` largest too. Ties go
//! to the earlier position.

use super::{as_rows, from_rows, param_tensor, set_param, smallest, Weight};
use lopper_ir::Graph;

pub(super) fn prune(g: &mut Graph, weights: &[Weight], n: usize, m: usize) {
    for w in weights {
        let t = param_tensor(g, w.node);
        let shape = t.shape.clone();
        let (rows, cols, mut data) = as_rows(t, w.reduction_first);
        for r in 0..rows {
            for group in data[r * cols..(r + 1) * cols].chunks_mut(m) {
                let scores: Vec<f64> = group.iter().map(|v| -(v.abs() as f64)).collect();
                // The largest n survive: drop the rest, smallest first.
                let keep = smallest(&scores, n.min(group.len()));
                for (i, v) in group.iter_mut().enumerate() {
                    if !keep.contains(&i) {
                        *v = 0.0;
                    }
                }
            }
        }
        set_param(g, w.node, from_rows(&shape, w.reduction_first, data));
    }
}
