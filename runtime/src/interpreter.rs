//! The reference interpreter: evaluates a graph node by node.
//!
//! Symbolic sizes are bound from the shapes of the inputs (a size given
//! twice must agree); every node is then evaluated by the reference
//! semantics of its op, in topological order, and values are dropped as soon
//! as their last user has run. It is slow on purpose: plain loops, no
//! layout tricks, nothing to get wrong.

use lopper_ir::graph::reference::evaluate;
use lopper_ir::graph::NodeIndex;
use lopper_ir::{Dim, Graph, Op, Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A failure to run a graph.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    /// An input is missing, extra or of the wrong shape.
    #[error("{0}")]
    Input(String),
    /// An op failed while evaluating.
    #[error("while evaluating %{node}: {message}")]
    Eval {
        /// The node.
        node: String,
        /// What went wrong.
        message: String,
    },
}

/// Binds symbolic sizes from the shapes of the inputs, on top of `given`
/// (from `--set`); every input must match its declared type and every given
/// tensor must be a declared input.
pub fn bind_sizes(
    declared: &[(&str, &TensorType)],
    inputs: &HashMap<String, Tensor>,
    given: &BTreeMap<String, usize>,
) -> Result<BTreeMap<String, usize>, RunError> {
    let mut sizes = given.clone();
    for (name, ty) in declared {
        let t = inputs
            .get(*name)
            .ok_or_else(|| RunError::Input(format!("input `{name}` ({ty}) is not given")))?;
        let mismatch = |why: String| {
            RunError::Input(format!(
                "input `{name}` has shape {:?} but the model expects {ty}: {why}",
                t.shape
            ))
        };
        if t.shape.len() != ty.shape.rank() {
            return Err(mismatch(format!(
                "rank {} instead of {}",
                t.shape.len(),
                ty.shape.rank()
            )));
        }
        for (axis, (d, &actual)) in ty.shape.0.iter().zip(&t.shape).enumerate() {
            match d {
                Dim::Static(n) if *n != actual => {
                    return Err(mismatch(format!("dim {axis} is {actual}, expected {n}")))
                }
                Dim::Static(_) => {}
                Dim::Symbol(s) => match sizes.get(s) {
                    Some(&bound) if bound != actual => {
                        return Err(mismatch(format!(
                            "dim {axis} is {actual}, but `{s}` = {bound}"
                        )))
                    }
                    _ => {
                        if actual == 0 {
                            return Err(mismatch(format!("`{s}` must be positive")));
                        }
                        sizes.insert(s.clone(), actual);
                    }
                },
            }
        }
    }
    for name in inputs.keys() {
        if !declared.iter().any(|(d, _)| d == name) {
            let names: Vec<&str> = declared.iter().map(|(d, _)| *d).collect();
            return Err(RunError::Input(format!(
                "the model has no input `{name}`; its inputs are: {}",
                names.join(", ")
            )));
        }
    }
    Ok(sizes)
}

/// Runs `g` on `inputs` (by input name); returns the outputs by name, in order.
pub fn run_graph(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    given: &BTreeMap<String, usize>,
) -> Result<Vec<(String, Tensor)>, RunError> {
    run_graph_adjusted(g, inputs, given, |_, _| {})
}

/// [`run_graph`], handing each value an op computes to `adjust` (with the
/// node's name) before its users see it: a way to measure how much a model
/// amplifies per-op rounding, by moving every intermediate value a little.
pub fn run_graph_adjusted(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    given: &BTreeMap<String, usize>,
    mut adjust: impl FnMut(&str, &mut Tensor),
) -> Result<Vec<(String, Tensor)>, RunError> {
    let declared: Vec<(&str, &TensorType)> = g
        .inputs
        .iter()
        .map(|&i| (g.node(i).name.as_str(), &g.node(i).ty))
        .collect();
    let sizes = bind_sizes(&declared, inputs, given)?;
    let order = g
        .topo_order()
        .map_err(|_| RunError::Input("the graph has a cycle".into()))?;
    let mut remaining: HashMap<NodeIndex, usize> =
        order.iter().map(|&n| (n, g.users(n).len())).collect();
    for o in &g.outputs {
        *remaining.entry(o.node).or_default() += 1;
    }
    // Params are shared with the graph, not copied per run.
    let mut values: HashMap<NodeIndex, Arc<Tensor>> = HashMap::new();
    for n in order {
        let node = g.node(n);
        let fail = |message: String| RunError::Eval {
            node: node.name.clone(),
            message,
        };
        let value = match &node.op {
            Op::Input => Arc::new(inputs[&node.name].clone()),
            Op::Param(p) => p.data.clone(),
            op => {
                let shape = node.ty.shape.bind(&sizes).map_err(fail)?;
                let operands = g.operands(n);
                let args: Vec<&Tensor> = operands.iter().map(|o| values[o].as_ref()).collect();
                let mut result = evaluate(op, &args, &shape).map_err(fail)?;
                adjust(&node.name, &mut result);
                let mut distinct = operands;
                distinct.sort();
                distinct.dedup();
                for o in distinct {
                    let left = remaining.get_mut(&o).expect("every node is counted");
                    *left -= 1;
                    if *left == 0 {
                        values.remove(&o);
                    }
                }
                Arc::new(result)
            }
        };
        values.insert(n, value);
    }
    Ok(g.outputs
        .iter()
        .map(|o| (o.name.clone(), values[&o.node].as_ref().clone()))
        .collect())
}
