//! `pack`: gives an operand a tile-friendly layout for one kernel.
//!
//! `pack{buffer=fc1.weight,dim=0,size=8,kernel=linear_relu_0}` makes
//! `%fc1.weight.packed`, the buffer with dimension 0 split into panels of 8
//! (`f32[300,784]` → `f32[38,784,8]`: panel, the other dimensions, lane;
//! zero-padded), and rewrites the kernel's accesses `%w[e0, e1]` into
//! `%w.packed[e0 / 8, e1, e0 % 8]`; a matmul's `%b[k, j]` packed along
//! dimension 1 becomes `%b.packed[j / 8, k, j % 8]`. When `e0` is a tile base plus a point in
//! `0..8` (what `tile` writes) the division and remainder fold away, so the
//! weights of a linear layer, read down a column by a vectorized output
//! loop, become unit-stride: each tile of 8 output neurons is one
//! contiguous panel.
//!
//! A constant is packed at compile time (the packed values are what the
//! artifact embeds; the text form names the source and the packing, not the
//! values). Any other buffer gets a scratch copy filled by a packing kernel
//! that runs just before the kernel. The original buffer stays for the
//! other kernels that use it; an unused constant is dropped.

use crate::loop_nest::{fold, list_option, map_block, map_expr};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::graph::param::{pack_tensor, Param, ParamSource};
use lopper_ir::loops::{BinOp, Buffer, BufferKind, Expr, Kernel, LoopKind, Module, Stmt};
use lopper_ir::{Dim, Shape, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// The `pack` pass.
pub struct Pack {
    /// Kernels whose accesses change (all that use the buffer when `None`).
    pub kernels: Option<Vec<String>>,
    /// The buffer to pack.
    pub buffer: String,
    /// The dimension to split.
    pub dim: usize,
    /// The tile size.
    pub size: i64,
}

impl Pack {
    /// Reads `pack{buffer=..,dim=..,size=..,kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Pack, String> {
        o.check_known("pack", &["buffer", "dim", "size", "kernel"])?;
        let buffer =
            o.0.get("buffer")
                .map(|b| b.trim().trim_start_matches('%').to_string())
                .ok_or("`pack` needs `buffer=NAME`")?;
        let int = |k: &str| -> Result<i64, String> {
            o.0.get(k)
                .ok_or(format!("`pack` needs `{k}=N`"))?
                .parse::<i64>()
                .map_err(|_| format!("`{k}` of `pack` must be an integer"))
        };
        let (dim, size) = (int("dim")?, int("size")?);
        if dim < 0 || size < 1 {
            return Err("`pack` needs `dim >= 0` and `size >= 1`".into());
        }
        Ok(Pack {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            buffer,
            dim: dim as usize,
            size,
        })
    }
}

impl Pass<Module> for Pack {
    fn name(&self) -> &'static str {
        "pack"
    }

    fn description(&self) -> &'static str {
        "copy an operand into a tiled layout for a kernel (constants at compile time)"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let err = |e: String| PassError::at("pack", &self.buffer, e);
        let Some(source) = m.buffer(&self.buffer).cloned() else {
            return Err(err("no such buffer".into()));
        };
        let rank = source.ty.shape.rank();
        if self.dim >= rank {
            return Err(err(format!(
                "has {rank} dimension(s); cannot pack dimension {}",
                self.dim
            )));
        }
        if source.index_data.is_some() {
            return Err(err("index arrays are not packed".into()));
        }
        let packed_name = unique(m, &format!("{}.packed", self.buffer));
        let extent = source.ty.shape.0[self.dim].clone();
        let tiles = match &extent {
            Dim::Static(n) => Dim::Static(n.div_ceil(self.size as usize)),
            Dim::Symbol(_) => {
                return Err(err(format!(
                    "dimension {} is symbolic; only static dimensions are packed",
                    self.dim
                )))
            }
        };
        let mut dims = vec![tiles];
        dims.extend(
            source
                .ty
                .shape
                .0
                .iter()
                .enumerate()
                .filter(|&(d, _)| d != self.dim)
                .map(|(_, n)| n.clone()),
        );
        dims.push(Dim::Static(self.size as usize));
        let ty = TensorType {
            dtype: source.ty.dtype,
            shape: Shape(dims),
        };
        let targets: Vec<usize> = m
            .kernels
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                k.params.contains(&self.buffer)
                    && self
                        .kernels
                        .as_ref()
                        .is_none_or(|names| names.contains(&k.name))
            })
            .map(|(i, _)| i)
            .collect();
        if targets.is_empty() {
            return Ok(Changed::No);
        }
        for &k in &targets {
            let mut writes = false;
            map_block(&m.kernels[k].body, &mut |e| e, &mut |n| {
                writes |= n == self.buffer;
                n.to_string()
            });
            if writes {
                return Err(err(format!(
                    "@{} writes it; only operands that a kernel reads are packed",
                    m.kernels[k].name
                )));
            }
        }
        for &k in &targets {
            let kernel = &mut m.kernels[k];
            kernel.body = rewrite_accesses(
                &kernel.body,
                &self.buffer,
                &packed_name,
                self.dim,
                self.size,
            );
            for p in kernel.params.iter_mut() {
                if *p == self.buffer {
                    *p = packed_name.clone();
                }
            }
        }
        let packed = match (&source.kind, &source.data) {
            (BufferKind::Const, Some(param)) => {
                let shape = param.data.shape.clone();
                Buffer {
                    name: packed_name.clone(),
                    kind: BufferKind::Const,
                    ty,
                    data: Some(Param {
                        data: Arc::new(pack_tensor(&param.data, self.dim, self.size as usize)),
                        source: ParamSource::Packed {
                            of: Box::new(param.source.clone()),
                            source_shape: shape,
                            dim: self.dim,
                            size: self.size as usize,
                        },
                        sparsity: None,
                    }),
                    index_data: None,
                    view_of: None,
                }
            }
            _ => {
                // Filled at run time, before the first kernel that reads it.
                let kernel = packing_kernel(m, &source, &packed_name, &ty, self.dim, self.size);
                m.kernels.insert(targets[0], kernel);
                Buffer {
                    name: packed_name.clone(),
                    kind: BufferKind::Scratch,
                    ty,
                    data: None,
                    index_data: None,
                    view_of: None,
                }
            }
        };
        m.buffers.push(packed);
        let still_used = m.kernels.iter().any(|k| k.params.contains(&self.buffer));
        if !still_used && source.kind == BufferKind::Const {
            m.buffers.retain(|b| b.name != self.buffer);
        }
        cx.remark(format!(
            "%{} packed along dimension {} by {} for {} kernel(s)",
            self.buffer,
            self.dim,
            self.size,
            targets.len()
        ));
        Ok(Changed::Yes)
    }
}

fn unique(m: &Module, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while m.buffer(&name).is_some() {
        name = format!("{base}{n}");
        n += 1;
    }
    name
}

/// Rewrites the accesses to `from` in `body` into `to`'s packed layout,
/// folding the tile arithmetic where loop ranges allow.
fn rewrite_accesses(body: &[Stmt], from: &str, to: &str, dim: usize, size: i64) -> Vec<Stmt> {
    let mut ranges = HashMap::new();
    rewrite_block(body, from, to, dim, size, &mut ranges)
}

fn rewrite_block(
    body: &[Stmt],
    from: &str,
    to: &str,
    dim: usize,
    size: i64,
    ranges: &mut HashMap<String, (i64, i64)>,
) -> Vec<Stmt> {
    body.iter()
        .map(|s| match s {
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            } => {
                if let (Expr::Int(l), Expr::Int(h)) = (lo, hi) {
                    ranges.insert(var.clone(), (*l, h - 1));
                }
                let inner = rewrite_block(body, from, to, dim, size, ranges);
                ranges.remove(var);
                Stmt::For {
                    var: var.clone(),
                    lo: lo.clone(),
                    hi: hi.clone(),
                    kind: *kind,
                    body: inner,
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => Stmt::If {
                cond: cond.clone(),
                then: rewrite_block(then, from, to, dim, size, ranges),
                otherwise: rewrite_block(otherwise, from, to, dim, size, ranges),
            },
            other => {
                let ranges = ranges.clone();
                let mut f = |e: Expr| match e {
                    Expr::Load { buffer, indices } if buffer == from => Expr::Load {
                        buffer: to.to_string(),
                        indices: packed_indices(&indices, dim, size, &ranges),
                    },
                    other => other,
                };
                map_block(std::slice::from_ref(other), &mut f, &mut |n| n.to_string())
                    .pop()
                    .expect("one statement")
            }
        })
        .collect()
}

/// `[.., e / size, .., e % size]` for `e` at `dim`, folded.
fn packed_indices(
    indices: &[Expr],
    dim: usize,
    size: i64,
    ranges: &HashMap<String, (i64, i64)>,
) -> Vec<Expr> {
    let e = &indices[dim];
    let (quotient, remainder) = split(e, size, ranges).unwrap_or_else(|| {
        (
            Expr::bin(BinOp::Div, e.clone(), Expr::Int(size)),
            Expr::bin(BinOp::Rem, e.clone(), Expr::Int(size)),
        )
    });
    let mut out = vec![map_expr(&quotient, &mut fold)];
    out.extend(
        indices
            .iter()
            .enumerate()
            .filter(|&(d, _)| d != dim)
            .map(|(_, i)| i.clone()),
    );
    out.push(map_expr(&remainder, &mut fold));
    out
}

/// `e = size · q + r` with `r` provably in `0..size`, as `(q, r)`.
fn split(e: &Expr, size: i64, ranges: &HashMap<String, (i64, i64)>) -> Option<(Expr, Expr)> {
    let (q, r) = split_terms(e, size)?;
    let (lo, hi) = range(&r, ranges)?;
    (lo >= 0 && hi < size).then_some((q, r))
}

fn split_terms(e: &Expr, size: i64) -> Option<(Expr, Expr)> {
    match e {
        Expr::Int(c) if *c >= 0 => Some((Expr::Int(c / size), Expr::Int(c % size))),
        Expr::Binary(BinOp::Mul, x, k) => match **k {
            Expr::Int(k) if k % size == 0 => Some((
                fold(Expr::bin(BinOp::Mul, (**x).clone(), Expr::Int(k / size))),
                Expr::Int(0),
            )),
            _ => Some((Expr::Int(0), e.clone())),
        },
        Expr::Binary(BinOp::Add, a, b) => {
            let (qa, ra) = split_terms(a, size)?;
            let (qb, rb) = split_terms(b, size)?;
            Some((
                fold(Expr::bin(BinOp::Add, qa, qb)),
                fold(Expr::bin(BinOp::Add, ra, rb)),
            ))
        }
        _ => Some((Expr::Int(0), e.clone())),
    }
}

/// The constant range of an index expression over constant loop ranges.
fn range(e: &Expr, ranges: &HashMap<String, (i64, i64)>) -> Option<(i64, i64)> {
    match e {
        Expr::Int(c) => Some((*c, *c)),
        Expr::Var(v) => ranges.get(v).copied(),
        Expr::Binary(BinOp::Add, a, b) => {
            let ((al, ah), (bl, bh)) = (range(a, ranges)?, range(b, ranges)?);
            Some((al + bl, ah + bh))
        }
        Expr::Binary(BinOp::Mul, a, b) => match **b {
            Expr::Int(k) if k >= 0 => {
                let (l, h) = range(a, ranges)?;
                Some((l * k, h * k))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A kernel that fills `packed` from `source` (zero in the padding).
fn packing_kernel(
    m: &Module,
    source: &Buffer,
    packed: &str,
    ty: &TensorType,
    dim: usize,
    size: i64,
) -> Kernel {
    let rank = ty.shape.rank();
    let vars: Vec<String> = (0..rank).map(|i| format!("p{i}")).collect();
    let var = |i: usize| Expr::var(&vars[i]);
    let element = Expr::bin(
        BinOp::Add,
        Expr::bin(BinOp::Mul, var(0), Expr::Int(size)),
        var(rank - 1),
    );
    // The other dimensions keep their order between the tile and the lane.
    let mut others = (1..rank - 1).map(var);
    let source_index: Vec<Expr> = (0..rank - 1)
        .map(|d| {
            if d == dim {
                element.clone()
            } else {
                others.next().expect("one variable per dimension")
            }
        })
        .collect();
    let extent = match &source.ty.shape.0[dim] {
        Dim::Static(n) => Expr::Int(*n as i64),
        Dim::Symbol(s) => Expr::Size(s.clone()),
    };
    let out_index: Vec<Expr> = (0..rank).map(var).collect();
    let mut body = vec![Stmt::If {
        cond: Expr::bin(BinOp::Lt, element, extent),
        then: vec![Stmt::Store {
            buffer: packed.to_string(),
            indices: out_index.clone(),
            value: Expr::Load {
                buffer: source.name.clone(),
                indices: source_index,
            },
        }],
        otherwise: vec![Stmt::Store {
            buffer: packed.to_string(),
            indices: out_index,
            value: Expr::Float(0.0),
        }],
    }];
    for (i, d) in ty.shape.0.iter().enumerate().rev() {
        body = vec![Stmt::For {
            var: vars[i].clone(),
            lo: Expr::Int(0),
            hi: match d {
                Dim::Static(n) => Expr::Int(*n as i64),
                Dim::Symbol(s) => Expr::Size(s.clone()),
            },
            kind: LoopKind::Serial,
            body,
        }];
    }
    let mut name = format!("pack_{}", source.name.replace('.', "_"));
    while m.kernels.iter().any(|k| k.name == name) {
        name.push('_');
    }
    Kernel {
        name,
        params: vec![source.name.clone(), packed.to_string()],
        body,
    }
}
