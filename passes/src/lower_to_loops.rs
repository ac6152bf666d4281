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
//! Fusion: an elementwise consumer (unary, or binary with the producer's
//! shape) whose producer has no other user runs in the producer's loop nest,
//! at its final store, so `linear → + bias → relu` is one kernel. The nests do
//! not tile, vectorize or reuse scratch memory; those are later passes.

use crate::pass::PassError;
use lopper_ir::graph::op::{BinaryOp, Conv2dAttrs, Pool2dAttrs, ReduceKind, UnaryOp};
use lopper_ir::graph::NodeIndex;
use lopper_ir::loops::{
    BinOp, Buffer, BufferKind, Expr, Kernel, LoopKind, Module, ScalarType, Stmt, UnOp,
};
use lopper_ir::{Dim, Graph, Op, TensorType};
use std::collections::{HashMap, HashSet};

const PASS: &str = "lower-to-loops";

/// Lowers a verified graph to a loop-IR module.
pub fn lower_to_loops(g: &Graph) -> Result<Module, PassError> {
    Lowering::new(g)?.run()
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
}

fn dim_expr(d: &Dim) -> Expr {
    match d {
        Dim::Static(n) => Expr::Int(*n as i64),
        Dim::Symbol(s) => Expr::Size(s.clone()),
    }
}

fn int(v: usize) -> Expr {
    Expr::Int(v as i64)
}

fn add(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(0)) => a,
        (Expr::Int(0), _) => b,
        _ => Expr::bin(BinOp::Add, a, b),
    }
}

fn mul(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(1)) => a,
        (Expr::Int(1), _) => b,
        _ => Expr::bin(BinOp::Mul, a, b),
    }
}

fn sub(a: Expr, b: Expr) -> Expr {
    match &b {
        Expr::Int(0) => a,
        _ => Expr::bin(BinOp::Sub, a, b),
    }
}

fn for_loop(var: &str, hi: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: var.to_string(),
        lo: Expr::Int(0),
        hi,
        kind: LoopKind::Serial,
        body,
    }
}

/// Wraps `body` in loops `%{prefix}0..` over `dims`, outermost first.
fn nest(prefix: &str, dims: &[Dim], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut inner = body;
    for (i, d) in dims.iter().enumerate().rev() {
        inner = vec![for_loop(&format!("{prefix}{i}"), dim_expr(d), inner)];
    }
    inner
}

fn vars(prefix: &str, n: usize) -> Vec<Expr> {
    (0..n).map(|i| Expr::var(&format!("{prefix}{i}"))).collect()
}

fn load(buffer: &str, indices: Vec<Expr>) -> Expr {
    Expr::Load {
        buffer: buffer.to_string(),
        indices,
    }
}

/// The index into an operand of type `ty` that NumPy broadcasting maps the
/// output index `out` to.
fn broadcast_index(ty: &TensorType, out: &[Expr]) -> Vec<Expr> {
    let shift = out.len() - ty.shape.rank();
    ty.shape
        .0
        .iter()
        .enumerate()
        .map(|(j, d)| {
            if *d == Dim::Static(1) {
                Expr::Int(0)
            } else {
                out[j + shift].clone()
            }
        })
        .collect()
}

fn unary_expr(u: UnaryOp, v: Expr) -> Expr {
    match u {
        UnaryOp::Relu => Expr::bin(BinOp::Max, v, Expr::Float(0.0)),
        UnaryOp::Sigmoid => Expr::bin(
            BinOp::Div,
            Expr::Float(1.0),
            Expr::bin(
                BinOp::Add,
                Expr::Float(1.0),
                Expr::unary(UnOp::Exp, Expr::unary(UnOp::Neg, v)),
            ),
        ),
        UnaryOp::Tanh => Expr::unary(UnOp::Tanh, v),
        UnaryOp::Exp => Expr::unary(UnOp::Exp, v),
        UnaryOp::Gelu => Expr::bin(
            BinOp::Mul,
            Expr::bin(BinOp::Mul, Expr::Float(0.5), v.clone()),
            Expr::bin(
                BinOp::Add,
                Expr::Float(1.0),
                Expr::unary(
                    UnOp::Erf,
                    Expr::bin(BinOp::Mul, v, Expr::Float(std::f32::consts::FRAC_1_SQRT_2)),
                ),
            ),
        ),
        UnaryOp::Identity => v,
    }
}

fn binary_op(b: BinaryOp) -> BinOp {
    match b {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
    }
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
            view_of,
        });
        name
    }

    /// A consumer `c` of `p` can run in `p`'s nest.
    fn fusible(&self, p: NodeIndex, c: NodeIndex) -> bool {
        let (pn, cn) = (self.g.node(p), self.g.node(c));
        let elementwise = matches!(cn.op, Op::Unary(_) | Op::Binary(_));
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
            let body = self.lower_op(root, &out, &chain)?;
            let mut kernel_name: Vec<&str> = vec![g.node(root).op.name()];
            kernel_name.extend(chain.iter().map(|&c| g.node(c).op.name()));
            self.push_kernel(&kernel_name.join("_"), body);
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
        lopper_ir::loops::verify_module(&self.module).map_err(|errs| {
            let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            PassError::new(
                PASS,
                format!("the lowered module fails verification: {}", text.join("; ")),
            )
        })?;
        Ok(self.module)
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
        let mut stmts = vec![Stmt::Let {
            var: "r".into(),
            ty: ScalarType::F32,
            init: value,
        }];
        let mut previous = producer;
        for &c in chain {
            let r = Expr::var("r");
            let value = match &self.g.node(c).op {
                Op::Unary(u) => unary_expr(*u, r),
                Op::Binary(b) => {
                    let ops = self.g.operands(c);
                    let other_pos = usize::from(ops[0] == previous);
                    let (buf, ty) = self.operand(c, other_pos);
                    let other = load(&buf, broadcast_index(&ty, idx));
                    if other_pos == 1 {
                        Expr::bin(binary_op(*b), r, other)
                    } else {
                        Expr::bin(binary_op(*b), other, r)
                    }
                }
                _ => unreachable!("only elementwise ops are fused"),
            };
            stmts.push(Stmt::Assign {
                var: "r".into(),
                value,
            });
            previous = c;
        }
        stmts.push(Stmt::Store {
            buffer: out.to_string(),
            indices: idx.to_vec(),
            value: Expr::var("r"),
        });
        stmts
    }

    fn lower_op(
        &self,
        n: NodeIndex,
        out: &str,
        chain: &[NodeIndex],
    ) -> Result<Vec<Stmt>, PassError> {
        let node = self.g.node(n);
        let dims = &node.ty.shape.0;
        let idx = vars("i", dims.len());
        let finish = |value: Expr, at: &[Expr]| self.finish(value, out, at, chain, n);
        Ok(match &node.op {
            Op::Unary(u) => {
                let (x, xt) = self.operand(n, 0);
                nest(
                    "i",
                    dims,
                    finish(unary_expr(*u, load(&x, broadcast_index(&xt, &idx))), &idx),
                )
            }
            Op::Binary(b) => {
                let (a, at) = self.operand(n, 0);
                let (c, ct) = self.operand(n, 1);
                let v = Expr::bin(
                    binary_op(*b),
                    load(&a, broadcast_index(&at, &idx)),
                    load(&c, broadcast_index(&ct, &idx)),
                );
                nest("i", dims, finish(v, &idx))
            }
            Op::MatMul => {
                let (a, at) = self.operand(n, 0);
                let (b, bt) = self.operand(n, 1);
                let r = dims.len();
                let k = at.shape.0[at.shape.rank() - 1].clone();
                let batch = &idx[..r - 2];
                let mut ai = broadcast_index(
                    &TensorType::f32(lopper_ir::Shape(at.shape.0[..at.shape.rank() - 2].to_vec())),
                    batch,
                );
                ai.extend([idx[r - 2].clone(), Expr::var("k")]);
                let mut bi = broadcast_index(
                    &TensorType::f32(lopper_ir::Shape(bt.shape.0[..bt.shape.rank() - 2].to_vec())),
                    batch,
                );
                bi.extend([Expr::var("k"), idx[r - 1].clone()]);
                let mut body = vec![Stmt::Let {
                    var: "acc".into(),
                    ty: ScalarType::F32,
                    init: Expr::Float(0.0),
                }];
                body.push(for_loop(
                    "k",
                    dim_expr(&k),
                    vec![accumulate(load(&a, ai), load(&b, bi))],
                ));
                body.extend(finish(Expr::var("acc"), &idx));
                nest("i", dims, body)
            }
            Op::Linear => {
                let (x, xt) = self.operand(n, 0);
                let (w, wt) = self.operand(n, 1);
                let r = dims.len();
                let mut xi = idx[..r - 1].to_vec();
                xi.push(Expr::var("k"));
                let j = idx[r - 1].clone();
                let mut body = vec![Stmt::Let {
                    var: "acc".into(),
                    ty: ScalarType::F32,
                    init: Expr::Float(0.0),
                }];
                body.push(for_loop(
                    "k",
                    dim_expr(&wt.shape.0[1]),
                    vec![accumulate(
                        load(&x, xi),
                        load(&w, vec![j.clone(), Expr::var("k")]),
                    )],
                ));
                let _ = xt;
                let value = if self.g.operands(n).len() == 3 {
                    let (b, _) = self.operand(n, 2);
                    Expr::bin(BinOp::Add, Expr::var("acc"), load(&b, vec![j]))
                } else {
                    Expr::var("acc")
                };
                body.extend(finish(value, &idx));
                nest("i", dims, body)
            }
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                let log = matches!(node.op, Op::LogSoftmax { .. });
                let (x, _) = self.operand(n, 0);
                let at = |v: &str| {
                    let mut i = idx.clone();
                    i[*axis] = Expr::var(v);
                    i
                };
                let extent = dim_expr(&dims[*axis]);
                let shifted = |v: &str| Expr::bin(BinOp::Sub, load(&x, at(v)), Expr::var("max"));
                let value = if log {
                    Expr::bin(
                        BinOp::Sub,
                        shifted(&format!("i{axis}")),
                        Expr::unary(UnOp::Log, Expr::var("sum")),
                    )
                } else {
                    Expr::bin(
                        BinOp::Div,
                        Expr::unary(UnOp::Exp, shifted(&format!("i{axis}"))),
                        Expr::var("sum"),
                    )
                };
                let mut row = vec![
                    Stmt::Let {
                        var: "max".into(),
                        ty: ScalarType::F32,
                        init: Expr::Float(f32::NEG_INFINITY),
                    },
                    for_loop(
                        "t",
                        extent.clone(),
                        vec![Stmt::Assign {
                            var: "max".into(),
                            value: Expr::bin(BinOp::Max, Expr::var("max"), load(&x, at("t"))),
                        }],
                    ),
                    Stmt::Let {
                        var: "sum".into(),
                        ty: ScalarType::F32,
                        init: Expr::Float(0.0),
                    },
                    for_loop(
                        "t",
                        extent.clone(),
                        vec![Stmt::Assign {
                            var: "sum".into(),
                            value: Expr::bin(
                                BinOp::Add,
                                Expr::var("sum"),
                                Expr::unary(UnOp::Exp, shifted("t")),
                            ),
                        }],
                    ),
                ];
                row.push(for_loop(&format!("i{axis}"), extent, finish(value, &idx)));
                nest_except("i", dims, *axis, row)
            }
            Op::Conv2d(c) => self.lower_conv(n, c, &idx, &finish),
            Op::MaxPool2d(p) => self.lower_pool(n, p, true, &idx, &finish),
            Op::AvgPool2d(p) => self.lower_pool(n, p, false, &idx, &finish),
            Op::GlobalAvgPool => {
                let (x, xt) = self.operand(n, 0);
                let (h, w) = (xt.shape.0[2].clone(), xt.shape.0[3].clone());
                let count = element_count(&[h.clone(), w.clone()]);
                let body = vec![
                    Stmt::Let {
                        var: "acc".into(),
                        ty: ScalarType::F32,
                        init: Expr::Float(0.0),
                    },
                    for_loop(
                        "y",
                        dim_expr(&h),
                        vec![for_loop(
                            "x",
                            dim_expr(&w),
                            vec![Stmt::Assign {
                                var: "acc".into(),
                                value: Expr::bin(
                                    BinOp::Add,
                                    Expr::var("acc"),
                                    load(
                                        &x,
                                        vec![
                                            idx[0].clone(),
                                            idx[1].clone(),
                                            Expr::var("y"),
                                            Expr::var("x"),
                                        ],
                                    ),
                                ),
                            }],
                        )],
                    ),
                ];
                let mut body = body;
                body.extend(finish(Expr::bin(BinOp::Div, Expr::var("acc"), count), &idx));
                nest("i", dims, body)
            }
            Op::Transpose { perm } => {
                let (x, _) = self.operand(n, 0);
                let mut xi = vec![Expr::Int(0); perm.len()];
                for (out_dim, &in_dim) in perm.iter().enumerate() {
                    xi[in_dim] = idx[out_dim].clone();
                }
                nest("i", dims, finish(load(&x, xi), &idx))
            }
            Op::Slice { axis, start, .. } => {
                let (x, _) = self.operand(n, 0);
                let mut xi = idx.clone();
                xi[*axis] = add(idx[*axis].clone(), int(*start));
                nest("i", dims, finish(load(&x, xi), &idx))
            }
            Op::LayerNorm { axis, eps } => self.lower_layer_norm(n, *axis, *eps, &idx, &finish),
            Op::BatchNorm { eps } => {
                let (x, xt) = self.operand(n, 0);
                let param = |i: usize| load(&self.operand(n, i).0, vec![idx[1].clone()]);
                let norm = Expr::bin(
                    BinOp::Div,
                    Expr::bin(BinOp::Sub, load(&x, broadcast_index(&xt, &idx)), param(3)),
                    Expr::unary(
                        UnOp::Sqrt,
                        Expr::bin(BinOp::Add, param(4), Expr::Float(*eps as f32)),
                    ),
                );
                let value = Expr::bin(BinOp::Add, Expr::bin(BinOp::Mul, norm, param(1)), param(2));
                nest("i", dims, finish(value, &idx))
            }
            Op::Concat { axis } => {
                let mut body = Vec::new();
                let mut offset = 0usize;
                for i in 0..self.g.operands(n).len() {
                    let (x, xt) = self.operand(n, i);
                    let mut oi = idx.clone();
                    oi[*axis] = add(idx[*axis].clone(), int(offset));
                    body.extend(nest("i", &xt.shape.0, finish(load(&x, idx.clone()), &oi)));
                    offset += xt.shape.0[*axis].as_static().unwrap_or(0);
                }
                body
            }
            Op::Reduce {
                kind,
                axes,
                keepdims,
            } => {
                let (x, xt) = self.operand(n, 0);
                let mut xi = Vec::new();
                let mut out_pos = 0;
                let mut reduced = Vec::new();
                for (d, extent) in xt.shape.0.iter().enumerate() {
                    if axes.contains(&d) {
                        let v = format!("k{d}");
                        xi.push(Expr::var(&v));
                        reduced.push((v, extent.clone()));
                        if *keepdims {
                            out_pos += 1;
                        }
                    } else {
                        xi.push(idx[out_pos].clone());
                        out_pos += 1;
                    }
                }
                let (init, combine): (f32, BinOp) = match kind {
                    ReduceKind::Max => (f32::NEG_INFINITY, BinOp::Max),
                    _ => (0.0, BinOp::Add),
                };
                let mut inner = vec![Stmt::Assign {
                    var: "acc".into(),
                    value: Expr::bin(combine, Expr::var("acc"), load(&x, xi)),
                }];
                let reduced_dims: Vec<Dim> = reduced.iter().map(|(_, d)| d.clone()).collect();
                let count = element_count(&reduced_dims);
                for (v, extent) in reduced.iter().rev() {
                    inner = vec![for_loop(v, dim_expr(extent), inner)];
                }
                let mut body = vec![Stmt::Let {
                    var: "acc".into(),
                    ty: ScalarType::F32,
                    init: Expr::Float(init),
                }];
                body.extend(inner);
                let value = match kind {
                    ReduceKind::Mean => Expr::bin(BinOp::Div, Expr::var("acc"), count),
                    _ => Expr::var("acc"),
                };
                body.extend(finish(value, &idx));
                nest("i", dims, body)
            }
            Op::Input | Op::Param(_) | Op::Reshape { .. } | Op::Flatten { .. } => {
                return Err(PassError::at(PASS, &node.name, "has no kernel of its own"))
            }
        })
    }

    fn lower_conv(
        &self,
        n: NodeIndex,
        c: &Conv2dAttrs,
        idx: &[Expr],
        finish: &dyn Fn(Expr, &[Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let node = self.g.node(n);
        let (x, xt) = self.operand(n, 0);
        let (w, wt) = self.operand(n, 1);
        let s = |d: usize| {
            xt.shape.0[d]
                .as_static()
                .expect("verified: static conv dims")
        };
        let (h, wd) = (s(2), s(3));
        let ws = wt.shape.as_static().expect("verified: static weight");
        let (cout, cpg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        let opg = cout / c.groups.max(1);
        let channel = if c.groups == 1 {
            Expr::var("c")
        } else {
            add(
                mul(Expr::bin(BinOp::Div, idx[1].clone(), int(opg)), int(cpg)),
                Expr::var("c"),
            )
        };
        let coord = |o: &Expr, k: &str, axis: usize| {
            sub(
                add(
                    mul(o.clone(), int(c.stride[axis])),
                    mul(Expr::var(k), int(c.dilation[axis])),
                ),
                int(c.padding[axis]),
            )
        };
        let iy = coord(&idx[2], "ky", 0);
        let ix = coord(&idx[3], "kx", 1);
        let tap = accumulate(
            load(&x, vec![idx[0].clone(), channel, iy.clone(), ix.clone()]),
            load(
                &w,
                vec![
                    idx[1].clone(),
                    Expr::var("c"),
                    Expr::var("ky"),
                    Expr::var("kx"),
                ],
            ),
        );
        let padded = c.padding.iter().any(|&p| p > 0);
        let tap = if padded {
            vec![guard(&[(iy, h), (ix, wd)], vec![tap])]
        } else {
            vec![tap]
        };
        let mut body = vec![Stmt::Let {
            var: "acc".into(),
            ty: ScalarType::F32,
            init: Expr::Float(0.0),
        }];
        body.push(for_loop(
            "c",
            int(cpg),
            vec![for_loop("ky", int(kh), vec![for_loop("kx", int(kw), tap)])],
        ));
        let value = if self.g.operands(n).len() == 3 {
            let (b, _) = self.operand(n, 2);
            Expr::bin(BinOp::Add, Expr::var("acc"), load(&b, vec![idx[1].clone()]))
        } else {
            Expr::var("acc")
        };
        body.extend(finish(value, idx));
        nest("i", &node.ty.shape.0, body)
    }

    fn lower_pool(
        &self,
        n: NodeIndex,
        p: &Pool2dAttrs,
        max: bool,
        idx: &[Expr],
        finish: &dyn Fn(Expr, &[Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let node = self.g.node(n);
        let (x, xt) = self.operand(n, 0);
        let s = |d: usize| {
            xt.shape.0[d]
                .as_static()
                .expect("verified: static pool dims")
        };
        let coord = |o: &Expr, k: &str, axis: usize| {
            sub(
                add(mul(o.clone(), int(p.stride[axis])), Expr::var(k)),
                int(p.padding[axis]),
            )
        };
        let iy = coord(&idx[2], "ky", 0);
        let ix = coord(&idx[3], "kx", 1);
        let v = load(
            &x,
            vec![idx[0].clone(), idx[1].clone(), iy.clone(), ix.clone()],
        );
        let mut tap = vec![Stmt::Assign {
            var: "acc".into(),
            value: Expr::bin(
                if max { BinOp::Max } else { BinOp::Add },
                Expr::var("acc"),
                v,
            ),
        }];
        if !max {
            tap.push(Stmt::Assign {
                var: "count".into(),
                value: Expr::bin(BinOp::Add, Expr::var("count"), Expr::Float(1.0)),
            });
        }
        let padded = p.padding.iter().any(|&q| q > 0);
        let tap = if padded {
            vec![guard(&[(iy, s(2)), (ix, s(3))], tap)]
        } else {
            tap
        };
        let init = if max { f32::NEG_INFINITY } else { 0.0 };
        let mut body = vec![Stmt::Let {
            var: "acc".into(),
            ty: ScalarType::F32,
            init: Expr::Float(init),
        }];
        if !max {
            body.push(Stmt::Let {
                var: "count".into(),
                ty: ScalarType::F32,
                init: Expr::Float(0.0),
            });
        }
        body.push(for_loop(
            "ky",
            int(p.kernel[0]),
            vec![for_loop("kx", int(p.kernel[1]), tap)],
        ));
        let value = if max {
            Expr::var("acc")
        } else {
            Expr::bin(BinOp::Div, Expr::var("acc"), Expr::var("count"))
        };
        body.extend(finish(value, idx));
        nest("i", &node.ty.shape.0, body)
    }

    fn lower_layer_norm(
        &self,
        n: NodeIndex,
        axis: usize,
        eps: f64,
        idx: &[Expr],
        finish: &dyn Fn(Expr, &[Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let node = self.g.node(n);
        let dims = &node.ty.shape.0;
        let (x, _) = self.operand(n, 0);
        let inner = &dims[axis..];
        let count = element_count(inner);
        // `%j..` index the normalized dims for the two reductions.
        let mut reduce_idx = idx[..axis].to_vec();
        reduce_idx.extend(vars("j", inner.len()));
        let sum_over = |var: &str, value: Expr| -> Vec<Stmt> {
            nest(
                "j",
                inner,
                vec![Stmt::Assign {
                    var: var.into(),
                    value: Expr::bin(BinOp::Add, Expr::var(var), value),
                }],
            )
        };
        let mut row = vec![Stmt::Let {
            var: "mean".into(),
            ty: ScalarType::F32,
            init: Expr::Float(0.0),
        }];
        row.extend(sum_over("mean", load(&x, reduce_idx.clone())));
        row.push(Stmt::Assign {
            var: "mean".into(),
            value: Expr::bin(BinOp::Div, Expr::var("mean"), count.clone()),
        });
        row.push(Stmt::Let {
            var: "var".into(),
            ty: ScalarType::F32,
            init: Expr::Float(0.0),
        });
        let diff = Expr::bin(BinOp::Sub, load(&x, reduce_idx), Expr::var("mean"));
        row.extend(sum_over("var", Expr::bin(BinOp::Mul, diff.clone(), diff)));
        row.push(Stmt::Let {
            var: "inv".into(),
            ty: ScalarType::F32,
            init: Expr::bin(
                BinOp::Div,
                Expr::Float(1.0),
                Expr::unary(
                    UnOp::Sqrt,
                    Expr::bin(
                        BinOp::Add,
                        Expr::bin(BinOp::Div, Expr::var("var"), count),
                        Expr::Float(eps as f32),
                    ),
                ),
            ),
        });
        let mut value = Expr::bin(
            BinOp::Mul,
            Expr::bin(BinOp::Sub, load(&x, idx.to_vec()), Expr::var("mean")),
            Expr::var("inv"),
        );
        let operands = self.g.operands(n).len();
        if operands >= 2 {
            value = Expr::bin(
                BinOp::Mul,
                value,
                load(&self.operand(n, 1).0, idx[axis..].to_vec()),
            );
        }
        if operands == 3 {
            value = Expr::bin(
                BinOp::Add,
                value,
                load(&self.operand(n, 2).0, idx[axis..].to_vec()),
            );
        }
        let store = finish(value, idx);
        let mut write = store;
        for (i, d) in dims.iter().enumerate().skip(axis).rev() {
            write = vec![for_loop(&format!("i{i}"), dim_expr(d), write)];
        }
        row.extend(write);
        let mut out = row;
        for (i, d) in dims.iter().enumerate().take(axis).rev() {
            out = vec![for_loop(&format!("i{i}"), dim_expr(d), out)];
        }
        out
    }
}

/// The number of elements of `dims` as an `f32` expression: a constant when
/// every dim is static, `float(b * 7)` when some are symbolic.
fn element_count(dims: &[Dim]) -> Expr {
    match dims
        .iter()
        .map(Dim::as_static)
        .collect::<Option<Vec<usize>>>()
    {
        Some(d) => Expr::Float(d.iter().product::<usize>() as f32),
        None => {
            let product = dims.iter().map(dim_expr).fold(Expr::Int(1), mul);
            Expr::unary(UnOp::ToFloat, product)
        }
    }
}

/// `%acc = fma(a, b, %acc)`.
fn accumulate(a: Expr, b: Expr) -> Stmt {
    Stmt::Assign {
        var: "acc".into(),
        value: Expr::Fma(Box::new(a), Box::new(b), Box::new(Expr::var("acc"))),
    }
}

/// `if e0 >= 0 && e0 < n0 && e1 >= 0 && ... { body }`.
fn guard(bounds: &[(Expr, usize)], body: Vec<Stmt>) -> Stmt {
    let mut cond: Option<Expr> = None;
    for (e, n) in bounds {
        for c in [
            Expr::bin(BinOp::Ge, e.clone(), Expr::Int(0)),
            Expr::bin(BinOp::Lt, e.clone(), int(*n)),
        ] {
            cond = Some(match cond {
                None => c,
                Some(prev) => Expr::bin(BinOp::And, prev, c),
            });
        }
    }
    Stmt::If {
        cond: cond.unwrap_or(Expr::bin(BinOp::Eq, Expr::Int(0), Expr::Int(0))),
        then: body,
        otherwise: Vec::new(),
    }
}

/// Loops over every dim but `skip`, outermost first.
fn nest_except(prefix: &str, dims: &[Dim], skip: usize, body: Vec<Stmt>) -> Vec<Stmt> {
    let mut inner = body;
    for (i, d) in dims.iter().enumerate().rev() {
        if i != skip {
            inner = vec![for_loop(&format!("{prefix}{i}"), dim_expr(d), inner)];
        }
    }
    inner
}
