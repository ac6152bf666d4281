//! The graph IR: a `StableDiGraph` of operation nodes.
//!
//! Each node defines one value: a name (`%fc1.weight`, `%h1`, `%7`), an op and
//! the value's type. Edges run from an operand to its user and carry the
//! operand's position. Inputs are `input` nodes listed in signature order;
//! outputs are nodes listed in return order. Node indices stay valid across
//! removals, so passes may hold them while they edit.

mod dot;
mod infer;
pub mod op;
pub mod param;
pub(crate) mod parser;
mod printer;
pub mod reference;
pub mod sparsity;
mod verify;
pub mod weights;

pub use dot::to_dot;
pub use infer::{flops, infer_type};
pub use op::{AttrValue, BinaryOp, Op, ReduceKind, UnaryOp};
pub use param::{Initializer, Param, ParamSource};
pub use parser::{attr_value_of as parse_number, parse_gir};
pub use petgraph::stable_graph::NodeIndex;
pub use printer::print_gir;
pub use sparsity::{SparseFormat, Sparsity};

/// Parses a tensor type written as in `.gir` text (`f32[batch,784]`).
pub fn parse_type(text: &str) -> Result<TensorType, crate::Diagnostic> {
    parser::parse_tensor_type(text.trim(), 0)
}
pub use verify::verify;

use crate::types::TensorType;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeSet, BinaryHeap, HashSet};

/// One value of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique name, printed with a `%`.
    pub name: String,
    /// What computes the value.
    pub op: Op,
    /// The value's type.
    pub ty: TensorType,
}

/// A returned value and its name in the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The name callers use (`y`), independent of the node's name.
    pub name: String,
    /// The node whose value is returned.
    pub node: NodeIndex,
}

/// A model as a dataflow graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The model's name (`@mlp`).
    pub name: String,
    /// Nodes and operand edges (weight = operand position).
    pub graph: StableDiGraph<Node, usize>,
    /// The `input` nodes in signature order.
    pub inputs: Vec<NodeIndex>,
    /// The returned values in order, with the names callers know them by.
    pub outputs: Vec<Output>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node computing `op` on `operands`.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        op: Op,
        ty: TensorType,
        operands: &[NodeIndex],
    ) -> NodeIndex {
        let n = self.graph.add_node(Node {
            name: name.into(),
            op,
            ty,
        });
        for (i, &o) in operands.iter().enumerate() {
            self.graph.add_edge(o, n, i);
        }
        n
    }

    /// The node at `n`.
    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.graph[n]
    }

    /// The operands of `n`, in position order.
    pub fn operands(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(usize, NodeIndex)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, s)| s).collect()
    }

    /// The distinct nodes that use `n`.
    pub fn users(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let set: BTreeSet<NodeIndex> = self
            .graph
            .neighbors_directed(n, Direction::Outgoing)
            .collect();
        set.into_iter().collect()
    }

    /// True if `n` is returned by the graph.
    pub fn is_output(&self, n: NodeIndex) -> bool {
        self.outputs.iter().any(|o| o.node == n)
    }

    /// Replaces the operands of `n`.
    pub fn set_operands(&mut self, n: NodeIndex, operands: &[NodeIndex]) {
        let old: Vec<_> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.graph.remove_edge(e);
        }
        for (i, &o) in operands.iter().enumerate() {
            self.graph.add_edge(o, n, i);
        }
    }

    /// Makes every user of `old` (and the outputs) use `new` instead.
    ///
    /// Outputs keep their names (they live in the signature).
    pub fn replace_all_uses(&mut self, old: NodeIndex, new: NodeIndex) {
        if old == new {
            return;
        }
        let uses: Vec<_> = self
            .graph
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (id, target, pos) in uses {
            self.graph.remove_edge(id);
            self.graph.add_edge(new, target, pos);
        }
        for o in &mut self.outputs {
            if o.node == old {
                o.node = new;
            }
        }
    }

    /// Removes a node and its edges.
    pub fn remove(&mut self, n: NodeIndex) {
        self.graph.remove_node(n);
    }

    /// A name not used by any node: the next free number.
    pub fn fresh_name(&self) -> String {
        let next = self
            .graph
            .node_weights()
            .filter_map(|n| n.name.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        next.to_string()
    }

    /// Nodes in a topological order that keeps creation order where it can
    /// (the smallest ready index first), or the nodes on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, Vec<NodeIndex>> {
        let mut indegree: std::collections::HashMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|n| (n, self.graph.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<std::cmp::Reverse<NodeIndex>> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| std::cmp::Reverse(n))
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(std::cmp::Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let d = indegree
                    .get_mut(&e.target())
                    .expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(e.target()));
                }
            }
        }
        if order.len() == indegree.len() {
            Ok(order)
        } else {
            let done: HashSet<_> = order.into_iter().collect();
            let mut stuck: Vec<_> = self
                .graph
                .node_indices()
                .filter(|n| !done.contains(n))
                .collect();
            stuck.sort();
            Err(stuck)
        }
    }

    /// The node named `name`.
    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|&n| self.graph[n].name == name)
    }

    /// Output names, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|o| o.name.clone()).collect()
    }

    /// Operand types of `n`, in order.
    pub fn operand_types(&self, n: NodeIndex) -> Vec<&TensorType> {
        self.operands(n)
            .into_iter()
            .map(|o| &self.graph[o].ty)
            .collect()
    }
}
