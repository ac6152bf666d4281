//! Block pruning: split each weight's `[outputs, reduction]` matrix into
//! `rows x cols` blocks (edge blocks smaller) and zero the blocks with the
//! smallest norm, a fraction `sparsity` of them, per layer or ranked over
//! all selected params (`scope=global`). The norm is the L2 (default) or L1
//! norm divided by the block's size, so edge blocks rank fairly. Zero blocks
//! are what the `bsr` kernel skips.

use super::{as_rows, from_rows, param_tensor, set_param, smallest, Norm, Prune, Weight};
use lopper_ir::Graph;

/// Blocks of a `rows x cols` matrix: (first row, first column) of each.
fn blocks(rows: usize, cols: usize, br: usize, bc: usize) -> Vec<(usize, usize)> {
    (0..rows.div_ceil(br))
        .flat_map(|b| (0..cols.div_ceil(bc)).map(move |c| (b * br, c * bc)))
        .collect()
}

pub(super) fn prune(p: &Prune, g: &mut Graph, weights: &[Weight], br: usize, bc: usize) {
    // Per weight: its matrix and the score of each block.
    let mut matrices = Vec::new();
    let mut scores: Vec<Vec<f64>> = Vec::new();
    for w in weights {
        let (rows, cols, data) = as_rows(param_tensor(g, w.node), w.reduction_first);
        let score = blocks(rows, cols, br, bc)
            .into_iter()
            .map(|(r0, c0)| {
                let (r1, c1) = ((r0 + br).min(rows), (c0 + bc).min(cols));
                let values = (r0..r1).flat_map(|r| data[r * cols + c0..r * cols + c1].iter());
                let size = ((r1 - r0) * (c1 - c0)) as f64;
                match p.norm {
                    Norm::L1 => values.map(|v| v.abs() as f64).sum::<f64>() / size,
                    Norm::L2 => (values.map(|v| (*v as f64).powi(2)).sum::<f64>() / size).sqrt(),
                }
            })
            .collect();
        matrices.push((rows, cols, data));
        scores.push(score);
    }
    // Which blocks of which weight go.
    let mut dropped: Vec<Vec<usize>> = vec![Vec::new(); weights.len()];
    if p.global {
        let all: Vec<f64> = scores.iter().flatten().copied().collect();
        let owner: Vec<(usize, usize)> = scores
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.len()).map(move |j| (i, j)))
            .collect();
        let k = (p.sparsity * all.len() as f64).round() as usize;
        for at in smallest(&all, k) {
            dropped[owner[at].0].push(owner[at].1);
        }
    } else {
        for (i, w) in weights.iter().enumerate() {
            let s = p.sparsity_of(&g.node(w.node).name);
            let k = (s * scores[i].len() as f64).round() as usize;
            dropped[i] = smallest(&scores[i], k);
        }
    }
    for ((w, (rows, cols, mut data)), gone) in weights.iter().zip(matrices).zip(dropped) {
        let all = blocks(rows, cols, br, bc);
        for b in gone {
            let (r0, c0) = all[b];
            for r in r0..(r0 + br).min(rows) {
                data[r * cols + c0..r * cols + (c0 + bc).min(cols)].fill(0.0);
            }
        }
        let shape = param_tensor(g, w.node).shape.clone();
        set_param(g, w.node, from_rows(&shape, w.reduction_first, data));
    }
}
