//! Shrinking a failing model (delta debugging by dropping ops).
//!
//! Three reductions, each kept only if the model still fails: one output
//! instead of several; the earliest value that fails as the output (what
//! comes after it is dropped); and, repeatedly, an op replaced by one of its
//! operands of the same shape (its uses rewired, the op dropped). What is
//! left is a model where every op matters to the failure.

use crate::generate::{Definition, Model};

/// The smallest model derived from `model` for which `fails` still holds.
pub fn minimize(model: &Model, fails: impl Fn(&Model) -> bool) -> Model {
    let mut best = model.clone();
    for &o in &model.outputs {
        let candidate = with_outputs(&best, vec![o]);
        if fails(&candidate) {
            best = candidate;
            break;
        }
    }
    for v in live_lets(&best) {
        if best.outputs == [v] {
            break;
        }
        let candidate = with_outputs(&best, vec![v]);
        if fails(&candidate) {
            best = candidate;
            break;
        }
    }
    loop {
        let mut shrunk = false;
        'search: for v in live_lets(&best) {
            let Definition::Let { operands, .. } = &best.values[v].definition else {
                continue;
            };
            for &o in operands.iter() {
                let same_shape = best.values[o].shape == best.values[v].shape;
                let is_param = matches!(best.values[o].definition, Definition::Param(_));
                if !same_shape || is_param || o == v {
                    continue;
                }
                let candidate = bypass(&best, v, o);
                if candidate.ops() < best.ops() && fails(&candidate) {
                    best = candidate;
                    shrunk = true;
                    break 'search;
                }
            }
        }
        if !shrunk {
            return best;
        }
    }
}

fn live_lets(m: &Model) -> Vec<usize> {
    let live = m.live();
    (0..m.values.len())
        .filter(|&i| live[i] && matches!(m.values[i].definition, Definition::Let { .. }))
        .collect()
}

fn with_outputs(m: &Model, outputs: Vec<usize>) -> Model {
    Model {
        outputs,
        ..m.clone()
    }
}

/// `m` with every use of `v` (and an output naming it) taking `o` instead.
fn bypass(m: &Model, v: usize, o: usize) -> Model {
    let mut out = m.clone();
    for value in &mut out.values {
        if let Definition::Let { operands, .. } = &mut value.definition {
            for operand in operands.iter_mut() {
                if *operand == v {
                    *operand = o;
                }
            }
        }
    }
    for output in &mut out.outputs {
        if *output == v {
            *output = o;
        }
    }
    // An output that became an input is copied by `identity`.
    out.outputs.dedup();
    out
}
