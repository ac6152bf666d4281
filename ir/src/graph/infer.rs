//! Type inference of one op from its operands' types, and its FLOP count.
//!
//! These are the typing rules of the graph IR: NumPy broadcasting for the
//! elementwise ops, NumPy `matmul`, PyTorch layouts for `linear` and
//! `conv2d`, and output sizes of convolution and pooling. Symbolic sizes flow
//! through wherever they can be proved equal; a rule that would need arithmetic
//! on a symbol (a symbolic spatial dim, a concat along a symbolic axis) is an
//! error rather than a guess. The verifier, the DSL builder and `shape-infer`
//! all call [`infer_type`]; nothing else decides a shape.

use super::op::{Op, UnaryOp};
use crate::types::{DType, Dim, Shape, Size, TensorType};

type Result<T> = std::result::Result<T, String>;

fn broadcast(a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map(|j| &b.0[j]);
        out.push(match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Static(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Static(1))) => x.clone(),
            _ => return Err(format!("shapes {a} and {b} do not broadcast")),
        });
    }
    Ok(Shape(out))
}

fn static_dim(shape: &Shape, i: usize, what: &str) -> Result<usize> {
    shape.0[i]
        .as_static()
        .ok_or_else(|| format!("{what} (dim {i} of {shape}) must be static"))
}

fn expect_rank(ty: &TensorType, rank: usize, what: &str) -> Result<()> {
    if ty.shape.rank() == rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank {rank}, got {ty}"))
    }
}

fn expect_shape(ty: &TensorType, shape: &Shape, what: &str) -> Result<()> {
    if &ty.shape == shape {
        Ok(())
    } else {
        Err(format!("{what} must be f32{shape}, got {ty}"))
    }
}

fn window_output(
    input: usize,
    pad: usize,
    extent: usize,
    stride: usize,
    what: &str,
) -> Result<usize> {
    let padded = input.saturating_add(pad);
    if padded < extent {
        return Err(format!(
            "{what}: the window ({extent}) is larger than the padded input ({padded})"
        ));
    }
    Ok((padded - extent) / stride + 1)
}

/// The type of `op`'s result on operands of the given types.
///
/// Operand counts are the verifier's to check; this assumes the op's arity.
pub fn infer_type(op: &Op, operands: &[&TensorType]) -> Result<TensorType> {
    if let Some(bad) = operands.iter().find(|t| t.dtype != DType::F32) {
        return Err(format!("`{}` computes on f32, got {bad}", op.name()));
    }
    let (min, max) = op.arity();
    if operands.len() < min || max.is_some_and(|m| operands.len() > m) {
        return Err(format!(
            "`{}` takes {}, got {} operand(s)",
            op.name(),
            match max {
                Some(m) if m == min => format!("{min} operand(s)"),
                Some(m) => format!("{min} to {m} operands"),
                None => format!("at least {min} operand(s)"),
            },
            operands.len()
        ));
    }
    let x = operands.first().copied();
    let shape = match op {
        Op::Input | Op::Param(_) => {
            return Err(format!(
                "`{}` has a declared type, not an inferred one",
                op.name()
            ))
        }
        Op::Unary(_) => x.expect("arity checked").shape.clone(),
        Op::Binary(_) => broadcast(&operands[0].shape, &operands[1].shape)?,
        Op::MatMul => {
            let (a, b) = (&operands[0].shape, &operands[1].shape);
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!(
                    "matmul needs operands of rank 2 or more, got {a} and {b}"
                ));
            }
            let (m, k) = (&a.0[a.rank() - 2], &a.0[a.rank() - 1]);
            let (k2, n) = (&b.0[b.rank() - 2], &b.0[b.rank() - 1]);
            if k != k2 {
                return Err(format!(
                    "matmul of {a} and {b}: inner dimensions {k} and {k2} differ"
                ));
            }
            let batch = broadcast(
                &Shape(a.0[..a.rank() - 2].to_vec()),
                &Shape(b.0[..b.rank() - 2].to_vec()),
            )
            .map_err(|e| format!("matmul batch dims: {e}"))?;
            let mut out = batch.0;
            out.push(m.clone());
            out.push(n.clone());
            Shape(out)
        }
        Op::Linear => {
            let (x, w) = (&operands[0].shape, &operands[1].shape);
            if x.rank() < 1 || w.rank() != 2 {
                return Err(format!(
                    "linear needs x of rank ≥ 1 and a weight [out, in], got {x} and {w}"
                ));
            }
            if x.0[x.rank() - 1] != w.0[1] {
                return Err(format!(
                    "linear of {x} with weight {w}: x has {} features, the weight expects {} (PyTorch layout [out, in])",
                    x.0[x.rank() - 1],
                    w.0[1]
                ));
            }
            if let Some(b) = operands.get(2) {
                expect_shape(b, &Shape(vec![w.0[0].clone()]), "linear bias")?;
            }
            let mut out = x.0.clone();
            *out.last_mut().expect("rank ≥ 1") = w.0[0].clone();
            Shape(out)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let s = &x.expect("arity").shape;
            if *axis >= s.rank() {
                return Err(format!("axis {axis} is out of range for {s}"));
            }
            s.clone()
        }
        Op::Conv2d(c) => {
            let (x, w) = (operands[0], operands[1]);
            expect_rank(x, 4, "conv2d input (NCHW)")?;
            expect_rank(w, 4, "conv2d weight [out, in/groups, kh, kw]")?;
            let cin = static_dim(&x.shape, 1, "conv2d input channels")?;
            let (h, wd) = (
                static_dim(&x.shape, 2, "conv2d input height")?,
                static_dim(&x.shape, 3, "conv2d input width")?,
            );
            let ws = w
                .shape
                .as_static()
                .ok_or("conv2d weight must have a static shape")?;
            let (cout, cpg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
            if cin % c.groups != 0 || cout % c.groups != 0 {
                return Err(format!(
                    "conv2d groups = {} must divide input channels {cin} and output channels {cout}",
                    c.groups
                ));
            }
            if cpg * c.groups != cin {
                return Err(format!(
                    "conv2d weight {} expects {} input channels (× groups {}), the input has {cin}",
                    w.shape, cpg, c.groups
                ));
            }
            if let Some(b) = operands.get(2) {
                expect_shape(b, &Shape::from_static(&[cout]), "conv2d bias")?;
            }
            let eh = c.dilation[0]
                .saturating_mul(kh.max(1) - 1)
                .saturating_add(1);
            let ew = c.dilation[1]
                .saturating_mul(kw.max(1) - 1)
                .saturating_add(1);
            let oh = window_output(
                h,
                c.padding[0].saturating_add(c.padding[2]),
                eh,
                c.stride[0],
                "conv2d height",
            )?;
            let ow = window_output(
                wd,
                c.padding[1].saturating_add(c.padding[3]),
                ew,
                c.stride[1],
                "conv2d width",
            )?;
            Shape(vec![
                x.shape.0[0].clone(),
                Dim::Static(cout),
                Dim::Static(oh),
                Dim::Static(ow),
            ])
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let x = operands[0];
            expect_rank(x, 4, "pooling input (NCHW)")?;
            let h = static_dim(&x.shape, 2, "pooling input height")?;
            let w = static_dim(&x.shape, 3, "pooling input width")?;
            let oh = window_output(
                h,
                p.padding[0].saturating_add(p.padding[2]),
                p.extent(0),
                p.stride[0],
                "pooling height",
            )?;
            let ow = window_output(
                w,
                p.padding[1].saturating_add(p.padding[3]),
                p.extent(1),
                p.stride[1],
                "pooling width",
            )?;
            Shape(vec![
                x.shape.0[0].clone(),
                x.shape.0[1].clone(),
                Dim::Static(oh),
                Dim::Static(ow),
            ])
        }
        Op::GlobalAvgPool => {
            let x = operands[0];
            expect_rank(x, 4, "global_avg_pool input (NCHW)")?;
            Shape(vec![
                x.shape.0[0].clone(),
                x.shape.0[1].clone(),
                Dim::Static(1),
                Dim::Static(1),
            ])
        }
        Op::Flatten { axis } => {
            let s = &operands[0].shape;
            if *axis > s.rank() {
                return Err(format!("flatten axis {axis} is out of range for {s}"));
            }
            let part = |dims: &[Dim]| -> Result<Dim> {
                Shape(dims.to_vec())
                    .numel()
                    .and_then(|n| n.as_dim())
                    .ok_or_else(|| {
                        format!("flatten of {s} at axis {axis} needs a product of symbolic sizes")
                    })
            };
            Shape(vec![part(&s.0[..*axis])?, part(&s.0[*axis..])?])
        }
        Op::Reshape { shape } => {
            use super::op::ReshapeDim;
            let s = &operands[0].shape;
            let total = s.numel().ok_or("reshape input is too large")?;
            let known = Shape(
                shape
                    .iter()
                    .filter_map(|d| match d {
                        ReshapeDim::Dim(d) => Some(d.clone()),
                        ReshapeDim::Infer => None,
                    })
                    .collect(),
            );
            let known_size = known.numel().ok_or("reshape target is too large")?;
            let mut out = Vec::new();
            for d in shape {
                out.push(match d {
                    ReshapeDim::Dim(d) => d.clone(),
                    ReshapeDim::Infer => total
                        .div_exact(&known_size)
                        .and_then(|q| q.as_dim())
                        .ok_or_else(|| {
                            format!("reshape of {s}: cannot infer -1 from the other dims {known}")
                        })?,
                });
            }
            let out = Shape(out);
            if out.numel().as_ref() != Some(&total) {
                return Err(format!(
                    "reshape of {s} ({total} elements) to {out} changes the element count"
                ));
            }
            out
        }
        Op::Transpose { perm } => {
            let s = &operands[0].shape;
            if perm.len() != s.rank() || perm.iter().any(|&p| p >= s.rank()) {
                return Err(format!("transpose perm {perm:?} does not fit {s}"));
            }
            Shape(perm.iter().map(|&p| s.0[p].clone()).collect())
        }
        Op::Slice { axis, start, end } => {
            let s = &operands[0].shape;
            if *axis >= s.rank() {
                return Err(format!("slice axis {axis} is out of range for {s}"));
            }
            let extent = static_dim(s, *axis, "the sliced dim")?;
            if start >= end || *end > extent {
                return Err(format!(
                    "slice {start}..{end} is out of range for extent {extent} of {s}"
                ));
            }
            let mut out = s.0.clone();
            out[*axis] = Dim::Static(end - start);
            Shape(out)
        }
        Op::LayerNorm { axis, .. } => {
            let s = &operands[0].shape;
            if *axis >= s.rank() {
                return Err(format!("layer_norm axis {axis} is out of range for {s}"));
            }
            let normalized = Shape(s.0[*axis..].to_vec());
            for (i, p) in operands.iter().enumerate().skip(1) {
                let what = if i == 1 {
                    "layer_norm weight"
                } else {
                    "layer_norm bias"
                };
                expect_shape(p, &normalized, what)?;
            }
            s.clone()
        }
        Op::BatchNorm { .. } => {
            let s = &operands[0].shape;
            if s.rank() < 2 {
                return Err(format!(
                    "batch_norm needs rank ≥ 2 (channels at dim 1), got {s}"
                ));
            }
            let c = Shape(vec![s.0[1].clone()]);
            for (p, what) in operands[1..].iter().zip(["scale", "bias", "mean", "var"]) {
                expect_shape(p, &c, &format!("batch_norm {what}"))?;
            }
            s.clone()
        }
        Op::Concat { axis } => {
            let first = &operands[0].shape;
            if *axis >= first.rank() {
                return Err(format!("concat axis {axis} is out of range for {first}"));
            }
            let mut total = 0usize;
            for t in operands {
                let s = &t.shape;
                let same_elsewhere = s.rank() == first.rank()
                    && (0..s.rank()).all(|i| i == *axis || s.0[i] == first.0[i]);
                if !same_elsewhere {
                    return Err(format!(
                        "concat along axis {axis}: {s} does not match {first} in the other dims"
                    ));
                }
                total += static_dim(s, *axis, "the concat dim")?;
            }
            let mut out = first.0.clone();
            out[*axis] = Dim::Static(total);
            Shape(out)
        }
        Op::Reduce { axes, keepdims, .. } => {
            let s = &operands[0].shape;
            if axes.iter().any(|&a| a >= s.rank()) {
                return Err(format!("reduction axes {axes:?} are out of range for {s}"));
            }
            let mut out = Vec::new();
            for (i, d) in s.0.iter().enumerate() {
                if !axes.contains(&i) {
                    out.push(d.clone());
                } else if *keepdims {
                    out.push(Dim::Static(1));
                }
            }
            Shape(out)
        }
    };
    Ok(TensorType::f32(shape))
}

/// Floating-point operations of one evaluation of `op` (a multiply-add
/// counts 2), as a product of a constant and symbolic sizes.
pub fn flops(op: &Op, operands: &[&TensorType], result: &TensorType) -> Size {
    let out = result.shape.numel().unwrap_or(Size::constant(u64::MAX));
    let input = operands
        .first()
        .and_then(|t| t.shape.numel())
        .unwrap_or(Size::constant(0));
    let scaled = |s: &Size, k: u64| s.scale(k).unwrap_or(Size::constant(u64::MAX));
    let last_static = |t: &TensorType, from_end: usize| -> u64 {
        let r = t.shape.rank();
        t.shape
            .0
            .get(r.wrapping_sub(from_end))
            .and_then(Dim::as_static)
            .unwrap_or(1) as u64
    };
    match op {
        Op::Input
        | Op::Param(_)
        | Op::Unary(UnaryOp::Identity)
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. } => Size::constant(0),
        Op::Unary(_) | Op::Binary(_) => out,
        Op::MatMul => scaled(&out, 2 * last_static(operands[0], 1)),
        Op::Linear => {
            let k = last_static(operands[0], 1);
            scaled(&out, 2 * k + u64::from(operands.len() == 3))
        }
        Op::Conv2d(_) => {
            let w = operands[1].shape.as_static().unwrap_or_default();
            let taps: usize = w.iter().skip(1).product();
            scaled(&out, 2 * taps as u64 + u64::from(operands.len() == 3))
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => scaled(&out, (p.kernel[0] * p.kernel[1]) as u64),
        Op::GlobalAvgPool | Op::Reduce { .. } => input,
        Op::Softmax { .. } | Op::LogSoftmax { .. } => scaled(&out, 4),
        Op::LayerNorm { .. } => scaled(&out, 8),
        Op::BatchNorm { .. } => scaled(&out, 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Dim;

    fn t(dims: &[&str]) -> TensorType {
        TensorType::f32(Shape(
            dims.iter()
                .map(|d| {
                    d.parse()
                        .map(Dim::Static)
                        .unwrap_or(Dim::Symbol(d.to_string()))
                })
                .collect(),
        ))
    }

    #[test]
    fn broadcasting_follows_numpy() {
        let add = Op::Binary(super::super::op::BinaryOp::Add);
        let r = infer_type(&add, &[&t(&["batch", "1", "5"]), &t(&["4", "1"])]).unwrap();
        assert_eq!(r, t(&["batch", "4", "5"]));
        assert!(infer_type(&add, &[&t(&["3"]), &t(&["4"])]).is_err());
        assert!(infer_type(&add, &[&t(&["batch"]), &t(&["4"])]).is_err());
    }

    #[test]
    fn reshape_infers_through_symbols() {
        use super::super::op::ReshapeDim;
        let op = Op::Reshape {
            shape: vec![
                ReshapeDim::Dim(Dim::Symbol("batch".into())),
                ReshapeDim::Infer,
            ],
        };
        let r = infer_type(&op, &[&t(&["batch", "16", "5", "5"])]).unwrap();
        assert_eq!(r, t(&["batch", "400"]));
    }
}
