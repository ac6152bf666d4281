//! `lower-to-loops`: the graph IR becomes a loop-IR module.
//!
//! Every graph value gets a buffer: inputs `in`, params `const` (their data
//! shared), results `out`, the rest `scratch`; `reshape` and `flatten` become
//! `view`s of their operand's memory and cost nothing. Every other op becomes
//! a plain loop nest over its output, written for clarity and generality, not
//! speed (the locality passes transform these nests):
//!
//! - elementwise ops index each operand through NumPy broadcasting;
//! - `matmul`, `linear` and `conv2d` accumulate with `fma` in a local;
//!   convolution and pooling guard padded taps with an `if` that also lets the
//!   verifier prove the access in bounds;
//! - `softmax` and `log_softmax` subtract the row maximum; `layer_norm` takes
//!   the mean first and then the variance of the differences (two passes).
//!
//! Told the backend's vector width (`lanes`), a convolution whose output
//! channels fill vectors better than its output rows is computed
//! channels-last and transposed back, after the pooling that follows it if
//! any (`channels_last.rs`).
//!
//! Fusion: an elementwise consumer (unary, or binary with the producer's
//! shape) whose producer has no other user runs in the producer's loop nest,
//! at its final store, so `linear → + bias → relu` is one kernel. The nests do
//! not tile, vectorize or reuse scratch memory; those are later passes.

mod build;
mod channels_last;
mod ops;
mod sparse;

use crate::pass::PassError;
use build::{binary_expr, broadcast_index, load, nest, unary_expr, vars};
use lopper_ir::graph::NodeIndex;
use lopper_ir::loops::{Buffer, BufferKind, Expr, Kernel, Module, ScalarType, Stmt};
use lopper_ir::{Dim, Graph, Op, TensorType};
use std::collections::{HashMap, HashSet};

const PASS: &str = "lower-to-loops";

/// Lowers a verified graph to a loop-IR module; with `fuse`, elementwise
/// consumers run in their producer's nest; `lanes` (0: unknown) is the
/// vector width the layout choices plan for.
pub fn lower_to_loops(g: &Graph, fuse: bool, lanes: usize) -> Result<Module, PassError> {
    let mut lowering = Lowering::new(g)?;
    lowering.fuse = fuse;
    lowering.lanes = lanes;
    lowering.run()
}

struct Lowering<'g> {
    g: &'g Graph,
    module: Module,
    /// The buffer holding each node's value.
    buffer_of: HashMap<NodeIndex, String>,
    /// Nodes computed inside their producer's kernel: producer → consumers.
    epilogues: HashMap<NodeIndex, Vec<NodeIndex>>,
    fused: HashSet<NodeIndex>,
    used_names: HashSet<String>,
    fuse: bool,
    /// The zero-bordered copy of a padded conv2d's input.
    padded: HashMap<NodeIndex, String>,
    /// Values kept transposed (`[features, rows..]`) between two sparse
    /// linear layers, by the chain tail that computes them.
    transposed: HashMap<NodeIndex, String>,
    /// Vector lanes of the backend, 0 when unknown (no layout choices).
    lanes: usize,
    /// The channels-last scratch of a convolution (or pooling) computed
    /// that way.
    channels_last: HashMap<NodeIndex, String>,
    /// A pooling that reads its operand channels-last: the `[n, h, w, c]`
    /// view of that operand's scratch.
    channels_last_input: HashMap<NodeIndex, String>,
}

impl<'g> Lowering<'g> {
    fn new(g: &'g Graph) -> Result<Self, PassError> {
        let mut sizes = Vec::new();
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(PASS, "the graph has a cycle"))?;
        for &n in g.inputs.iter().chain(&order) {
            for d in &g.node(n).ty.shape.0 {
                if let Dim::Symbol(s) = d {
                    if !sizes.contains(s) {
                        sizes.push(s.clone());
                    }
                }
            }
        }
        Ok(Lowering {
            g,
            module: Module {
                name: g.name.clone(),
                sizes,
                ..Module::default()
            },
            buffer_of: HashMap::new(),
            epilogues: HashMap::new(),
            fused: HashSet::new(),
            used_names: HashSet::new(),
            fuse: true,
            padded: HashMap::new(),
            transposed: HashMap::new(),
            lanes: 0,
            channels_last: HashMap::new(),
            channels_last_input: HashMap::new(),
        })
    }

    fn unique(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_string();
        let mut k = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{wanted}.{k}");
            k += 1;
        }
        name
    }

    fn add_buffer(
        &mut self,
        wanted: &str,
        kind: BufferKind,
        ty: &TensorType,
        view_of: Option<String>,
    ) -> String {
        let name = self.unique(wanted);
        let data = match (
            &kind,
            &self
                .g
                .graph
                .node_weights()
                .find(|n| n.name == wanted)
                .map(|n| &n.op),
        ) {
            (BufferKind::Const, Some(Op::Param(p))) => Some(p.clone()),
            _ => None,
        };
        self.module.buffers.push(Buffer {
            name: name.clone(),
            kind,
            ty: ty.clone(),
            data,
            index_data: None,
            view_of,
        });
        name
    }

    /// A consumer `c` of `p` can run in `p`'s nest.
    fn fusible(&self, p: NodeIndex, c: NodeIndex) -> bool {
        let (pn, cn) = (self.g.node(p), self.g.node(c));
        let elementwise = self.fuse && matches!(cn.op, Op::Unary(_) | Op::Binary(_));
        let producer_ok = !matches!(
            pn.op,
            Op::Input | Op::Param(_) | Op::Reshape { .. } | Op::Flatten { .. }
        );
        let operands = self.g.operands(c);
        elementwise
            && producer_ok
            && pn.ty == cn.ty
            && self.g.users(p) == [c]
            && !self.g.is_output(p)
            && operands.iter().filter(|&&o| o == p).count() == 1
    }

    fn run(mut self) -> Result<Module, PassError> {
        let g = self.g;
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(PASS, "the graph has a cycle"))?;
        // Fusion chains: a consumer joins the chain whose tail is its producer.
        let mut tail_of_root: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut root_of: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        for &n in &order {
            let producer = g.operands(n).into_iter().find(|&p| {
                root_of.get(&p).is_some_and(|r| tail_of_root[r] == p) && self.fusible(p, n)
            });
            match producer {
                Some(p) => {
                    let root = root_of[&p];
                    self.epilogues.entry(root).or_default().push(n);
                    self.fused.insert(n);
                    tail_of_root.insert(root, n);
                    root_of.insert(n, root);
                }
                None => {
                    root_of.insert(n, n);
                    tail_of_root.insert(n, n);
                }
            }
        }
        // Buffers: inputs, then results, then params, views and scratch in
        // order; a chain's buffer is its tail's. A result computed by its
        // own chain is written directly; anything else (an input, a param, a
        // view, a value returned twice) is copied into its out buffer.
        let computed = |n: NodeIndex| {
            !matches!(
                g.node(n).op,
                Op::Input | Op::Param(_) | Op::Reshape { .. } | Op::Flatten { .. }
            )
        };
        let is_tail = |n: NodeIndex| root_of.get(&n).is_some_and(|r| tail_of_root[r] == n);
        for &i in &g.inputs {
            let name =
                self.add_buffer(&g.node(i).name.clone(), BufferKind::In, &g.node(i).ty, None);
            self.buffer_of.insert(i, name);
        }
        let mut output_buffers: Vec<(String, NodeIndex)> = Vec::new();
        for o in &g.outputs {
            let name = self.add_buffer(&o.name, BufferKind::Out, &g.node(o.node).ty, None);
            if computed(o.node) && is_tail(o.node) && !self.buffer_of.contains_key(&o.node) {
                self.buffer_of.insert(o.node, name);
            } else {
                output_buffers.push((name, o.node));
            }
        }
        for &n in &order {
            let node = g.node(n);
            match &node.op {
                Op::Input => {}
                Op::Param(_) => {
                    let name =
                        self.add_buffer(&node.name.clone(), BufferKind::Const, &node.ty, None);
                    self.buffer_of.insert(n, name);
                }
                Op::Reshape { .. } | Op::Flatten { .. } => {
                    let source = self.buffer_of[&g.operands(n)[0]].clone();
                    let root = self
                        .module
                        .buffer(&source)
                        .and_then(|b| b.view_of.clone())
                        .unwrap_or(source);
                    let name =
                        self.add_buffer(&node.name.clone(), BufferKind::View, &node.ty, Some(root));
                    self.buffer_of.insert(n, name);
                }
                _ if is_tail(n) && !self.buffer_of.contains_key(&n) => {
                    let name =
                        self.add_buffer(&node.name.clone(), BufferKind::Scratch, &node.ty, None);
                    self.buffer_of.insert(n, name);
                }
                _ => {}
            }
        }
        // Kernels, one per chain, where its tail is in the order: by then
        // every operand of every member has been computed.
        for &n in &order {
            if !computed(n) || !is_tail(n) {
                continue;
            }
            let root = root_of[&n];
            let chain = self.epilogues.get(&root).cloned().unwrap_or_default();
            let out = self.buffer_of[&n].clone();
            if let Op::Conv2d(c) = &g.node(root).op {
                if c.padding.iter().any(|&p| p > 0) {
                    self.pad_input(root, c);
                }
                if self.pays_channels_last(root, c) {
                    self.add_channels_last(root, &out);
                }
            }
            if self.channels_last_input.contains_key(&root) {
                self.add_channels_last(root, &out);
            }
            let body = match self.sparse_format(root) {
                Some(format) => match self.lower_sparse_linear(root, &out, &chain, format)? {
                    Some(finish) => finish,
                    None => continue,
                },
                None => self.lower_op(root, &out, &chain)?,
            };
            let mut kernel_name: Vec<&str> = vec![g.node(root).op.name()];
            kernel_name.extend(chain.iter().map(|&c| g.node(c).op.name()));
            self.push_kernel(&kernel_name.join("_"), body);
            if self.channels_last.contains_key(&root) {
                match self.channels_last_consumer(n) {
                    Some(pool) => self.read_channels_last(root, pool),
                    None => self.push_channels_last_transpose(root, &out),
                }
            }
        }
        for (name, source) in output_buffers {
            let ty = g.node(source).ty.clone();
            let from = self.buffer_of[&source].clone();
            let idx = vars("i", ty.shape.rank());
            let body = nest(
                "i",
                &ty.shape.0,
                vec![Stmt::Store {
                    buffer: name,
                    indices: idx.clone(),
                    value: load(&from, idx),
                }],
            );
            self.push_kernel("copy", body);
        }
        // A value kept transposed between sparse layers leaves its
        // row-major scratch buffer unused. A buffer that kernels touch
        // only through views (a channels-last convolution's result, written
        // by its transpose and read flattened) is used.
        let mut used: HashSet<String> = self
            .module
            .kernels
            .iter()
            .flat_map(|k| k.params.iter().cloned())
            .collect();
        used.extend(
            self.module
                .buffers
                .iter()
                .filter(|b| used.contains(&b.name))
                .filter_map(|b| b.view_of.clone())
                .collect::<Vec<_>>(),
        );
        self.module
            .buffers
            .retain(|b| b.kind != BufferKind::Scratch || used.contains(&b.name));
        lopper_ir::loops::verify_module(&self.module).map_err(|errs| {
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            PassError::new(
                PASS,
                format!("the lowered module fails verification: {}", text.join("; ")),
            )
        })?;
        Ok(self.module)
    }

    /// Copies a conv2d's input into a zero-bordered scratch buffer, so the
    /// convolution itself reads without bounds tests (and vectorizes).
    fn pad_input(&mut self, conv: NodeIndex, c: &lopper_ir::graph::op::Conv2dAttrs) {
        let (x, xt) = self.operand(conv, 0);
        let [top, left, bottom, right] = c.padding;
        let mut dims = xt.shape.0.clone();
        let (h, w) = (
            dims[2].as_static().expect("verified: static conv dims"),
            dims[3].as_static().expect("verified: static conv dims"),
        );
        dims[2] = Dim::Static(h + top + bottom);
        dims[3] = Dim::Static(w + left + right);
        let ty = TensorType::f32(lopper_ir::Shape(dims.clone()));
        let name = self.add_buffer(&format!("{x}.pad"), BufferKind::Scratch, &ty, None);
        // Zeros everywhere, then the input over the interior: two plain
        // nests that vectorize, where one nest with a bounds test per
        // element stayed scalar.
        let all = vars("i", 4);
        let zeros = nest(
            "i",
            &dims,
            vec![Stmt::Store {
                buffer: name.clone(),
                indices: all.clone(),
                value: Expr::Float(0.0),
            }],
        );
        self.push_kernel("fill", zeros);
        let shifted = vec![
            all[0].clone(),
            all[1].clone(),
            build::add(all[2].clone(), build::int(top)),
            build::add(all[3].clone(), build::int(left)),
        ];
        let copy = nest(
            "i",
            &xt.shape.0,
            vec![Stmt::Store {
                buffer: name.clone(),
                indices: shifted,
                value: load(&x, all),
            }],
        );
        self.push_kernel("pad", copy);
        self.padded.insert(conv, name);
    }

    /// Adds a kernel, listing as params every buffer its body touches.
    fn push_kernel(&mut self, base: &str, body: Vec<Stmt>) {
        let used = lopper_ir::loops::buffers_used(&body);
        let params = self
            .module
            .buffers
            .iter()
            .filter(|b| used.contains(&b.name))
            .map(|b| b.name.clone())
            .collect();
        let name = format!("{base}_{}", self.module.kernels.len());
        self.module.kernels.push(Kernel { name, params, body });
    }

    fn operand(&self, n: NodeIndex, i: usize) -> (String, TensorType) {
        let o = self.g.operands(n)[i];
        (self.buffer_of[&o].clone(), self.g.node(o).ty.clone())
    }

    /// Statements that finish a value `value` at output index `idx`: the
    /// fused consumers applied in order, then the store.
    fn finish(
        &self,
        value: Expr,
        out: &str,
        idx: &[Expr],
        chain: &[NodeIndex],
        producer: NodeIndex,
    ) -> Vec<Stmt> {
        self.finish_in("r", value, out, idx, chain, producer)
    }

    /// [`Self::finish`] in the local `local`, for bodies that finish
    /// several values.
    fn finish_in(
        &self,
        local: &str,
        value: Expr,
        out: &str,
        idx: &[Expr],
        chain: &[NodeIndex],
        producer: NodeIndex,
    ) -> Vec<Stmt> {
        let mut stmts = vec![Stmt::Let {
            var: local.into(),
            ty: ScalarType::F32,
            init: value,
        }];
        let mut previous = producer;
        for &c in chain {
            let r = Expr::var(local);
            let value = match &self.g.node(c).op {
                Op::Unary(u) => unary_expr(*u, r),
                Op::Binary(b) => {
                    let ops = self.g.operands(c);
                    let other_pos = usize::from(ops[0] == previous);
                    let (buf, ty) = self.operand(c, other_pos);
                    let other = load(&buf, broadcast_index(&ty, idx));
                    if other_pos == 1 {
                        binary_expr(*b, r, other)
                    } else {
                        binary_expr(*b, other, r)
                    }
                }
                _ => unreachable!("only elementwise ops are fused"),
            };
            stmts.push(Stmt::Assign {
                var: local.into(),
                value,
            });
            previous = c;
        }
        stmts.push(Stmt::Store {
            buffer: out.to_string(),
            indices: idx.to_vec(),
            value: Expr::var(local),
        });
        stmts
    }
}
