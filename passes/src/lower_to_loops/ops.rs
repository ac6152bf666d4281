//! The loop nest of each op: the body of one kernel, with the fused
//! consumers applied at its final store.

use super::build::*;
use super::{Lowering, PASS};
use crate::pass::PassError;
use lopper_ir::graph::op::{Conv2dAttrs, Pool2dAttrs, ReduceKind};
use lopper_ir::graph::NodeIndex;
use lopper_ir::loops::{BinOp, Expr, ScalarType, Stmt, UnOp};
use lopper_ir::{Dim, Op, TensorType};

impl Lowering<'_> {
    /// The statements of the kernel that computes `n` into `out`, with the
    /// fused consumers `chain` applied before the store.
    pub(super) fn lower_op(
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
                let v = binary_expr(
                    *b,
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
                    // The exponentials were stored by the sum's loop.
                    Expr::bin(
                        BinOp::Div,
                        load(out, at(&format!("i{axis}"))),
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
                ];
                let add_to_sum = |term: Expr| Stmt::Assign {
                    var: "sum".into(),
                    value: Expr::bin(BinOp::Add, Expr::var("sum"), term),
                };
                let sum_loop = if log {
                    vec![add_to_sum(Expr::unary(UnOp::Exp, shifted("t")))]
                } else {
                    // softmax keeps each exponential in its output for the
                    // last loop: one `exp` per element, not two.
                    vec![
                        Stmt::Let {
                            var: "e".into(),
                            ty: ScalarType::F32,
                            init: Expr::unary(UnOp::Exp, shifted("t")),
                        },
                        Stmt::Store {
                            buffer: out.to_string(),
                            indices: at("t"),
                            value: Expr::var("e"),
                        },
                        add_to_sum(Expr::var("e")),
                    ]
                };
                row.push(for_loop("t", extent.clone(), sum_loop));
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
        // A padded input was copied into a zero-bordered buffer.
        let (x, shift) = match self.padded.get(&n) {
            Some(p) => (p.clone(), false),
            None => (x, true),
        };
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
                int(if shift { c.padding[axis] } else { 0 }),
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
        let padded = shift && c.padding.iter().any(|&p| p > 0);
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
        if self.channels_last.contains_key(&n) {
            // Output channels innermost, so they become the vector lanes.
            self.store_channels_last(n, &mut body, idx);
            return nest_in_order("i", &node.ty.shape.0, &[0, 2, 3, 1], body);
        }
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
                add(
                    mul(o.clone(), int(p.stride[axis])),
                    mul(Expr::var(k), int(p.dilation[axis])),
                ),
                int(p.padding[axis]),
            )
        };
        let iy = coord(&idx[2], "ky", 0);
        let ix = coord(&idx[3], "kx", 1);
        let at = [idx[0].clone(), idx[1].clone(), iy.clone(), ix.clone()];
        let v = self
            .load_channels_last(n, at.clone())
            .unwrap_or_else(|| load(&x, at.to_vec()));
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
        if self.channels_last.contains_key(&n) {
            self.store_channels_last(n, &mut body, idx);
            return nest_in_order("i", &node.ty.shape.0, &[0, 2, 3, 1], body);
        }
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
