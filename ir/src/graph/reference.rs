//! The reference semantics of every op: plain loops over concrete tensors.
//!
//! This is the meaning of the graph IR, written for clarity, not speed:
//! sums and transcendental functions are evaluated in `f64` and rounded once,
//! so that it is a trustworthy oracle for compiled code. The runtime's
//! interpreter evaluates whole graphs with it; `fold-constants` evaluates ops
//! whose operands are all params. It assumes the verifier's invariants
//! (operand counts and shapes agree with the op); a violation is an error,
//! never a panic.

use super::op::{BinaryOp, Op, ReduceKind, UnaryOp};
use crate::tensor::{strides, Tensor};

type Result<T> = std::result::Result<T, String>;

/// Evaluates `op` on `inputs`, producing a tensor of `out_shape` (the node's
/// type with symbolic sizes bound).
pub fn evaluate(op: &Op, inputs: &[&Tensor], out_shape: &[usize]) -> Result<Tensor> {
    let out_len: usize = out_shape.iter().product();
    let input = |i: usize| -> Result<&Tensor> {
        inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("`{}` is missing operand {i}", op.name()))
    };
    let data = match op {
        Op::Input => return Err("an input has no reference semantics; bind it".into()),
        Op::Param(p) => p.data.data.clone(),
        Op::Unary(u) => input(0)?.data.iter().map(|&x| unary(*u, x)).collect(),
        Op::Binary(b) => binary(*b, input(0)?, input(1)?, out_shape),
        Op::MatMul => matmul(input(0)?, input(1)?, out_shape)?,
        Op::Linear => linear(input(0)?, input(1)?, inputs.get(2).copied(), out_len)?,
        Op::Softmax { axis } => softmax(input(0)?, *axis, false),
        Op::LogSoftmax { axis } => softmax(input(0)?, *axis, true),
        Op::Conv2d(c) => conv2d(input(0)?, input(1)?, inputs.get(2).copied(), c, out_shape)?,
        Op::MaxPool2d(p) => pool2d(input(0)?, p, out_shape, true)?,
        Op::AvgPool2d(p) => pool2d(input(0)?, p, out_shape, false)?,
        Op::GlobalAvgPool => {
            let x = input(0)?;
            let hw: usize = x.shape[2..].iter().product();
            x.data
                .chunks(hw.max(1))
                .map(|c| (c.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
                .collect()
        }
        Op::Flatten { .. } | Op::Reshape { .. } => input(0)?.data.clone(),
        Op::Transpose { perm } => transpose(input(0)?, perm),
        Op::Slice { axis, start, end } => {
            let x = input(0)?;
            let inner: usize = x.shape[axis + 1..].iter().product();
            let extent = x.shape[*axis];
            let mut out = Vec::with_capacity(out_len);
            for chunk in x.data.chunks(extent * inner) {
                out.extend_from_slice(&chunk[start * inner..end * inner]);
            }
            out
        }
        Op::LayerNorm { axis, eps } => {
            layer_norm(input(0)?, inputs.get(1), inputs.get(2), *axis, *eps)
        }
        Op::BatchNorm { eps } => batch_norm(inputs, *eps)?,
        Op::Concat { axis } => {
            let outer: usize = input(0)?.shape[..*axis].iter().product();
            let mut out = Vec::with_capacity(out_len);
            for o in 0..outer {
                for x in inputs {
                    let chunk: usize = x.shape[*axis..].iter().product();
                    out.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
                }
            }
            out
        }
        Op::Reduce { kind, axes, .. } => reduce(input(0)?, *kind, axes, out_len),
    };
    if data.len() != out_len {
        return Err(format!(
            "`{}` produced {} values for shape {:?}",
            op.name(),
            data.len(),
            out_shape
        ));
    }
    Ok(Tensor {
        shape: out_shape.to_vec(),
        data,
    })
}

fn unary(u: UnaryOp, x: f32) -> f32 {
    let v = x as f64;
    (match u {
        UnaryOp::Relu => v.max(0.0),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        UnaryOp::Tanh => v.tanh(),
        UnaryOp::Exp => v.exp(),
        UnaryOp::Gelu => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
        UnaryOp::Erf => libm::erf(v),
        UnaryOp::Sqrt => v.sqrt(),
        UnaryOp::Pow(e) => v.powf(e as f64),
        UnaryOp::Identity => v,
    }) as f32
}

/// For each element of `out_shape`, the offset of the element of `shape`
/// that NumPy broadcasting maps to it.
pub fn broadcast_offsets(shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let rank = out_shape.len();
    let own = strides(shape);
    let mut s = vec![0; rank];
    for (i, &d) in shape.iter().enumerate() {
        let j = rank - shape.len() + i;
        s[j] = if d == 1 { 0 } else { own[i] };
    }
    strided_offsets(out_shape, &s)
}

/// Walks `shape` in row-major order and gives, for each element, the sum of
/// its coordinates times `strides`: the offset of that element in a tensor
/// laid out with those strides (0 for a broadcast dim).
pub fn strided_offsets(shape: &[usize], strides: &[usize]) -> Vec<usize> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut index = vec![0usize; shape.len()];
    let mut offset = 0usize;
    for _ in 0..total {
        out.push(offset);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            offset += strides[d];
            if index[d] < shape[d] {
                break;
            }
            offset -= strides[d] * index[d];
            index[d] = 0;
        }
    }
    out
}

fn binary(b: BinaryOp, x: &Tensor, y: &Tensor, out_shape: &[usize]) -> Vec<f32> {
    let xo = broadcast_offsets(&x.shape, out_shape);
    let yo = broadcast_offsets(&y.shape, out_shape);
    xo.iter()
        .zip(&yo)
        .map(|(&i, &j)| b.apply(x.data[i], y.data[j]))
        .collect()
}

fn matmul(a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Vec<f32>> {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = a.shape[a.shape.len() - 1];
    if b.shape[b.shape.len() - 2] != k {
        return Err("matmul inner dimensions differ".into());
    }
    let batch = &out_shape[..r - 2];
    let a_batch = broadcast_offsets(&a.shape[..a.shape.len() - 2], batch);
    let b_batch = broadcast_offsets(&b.shape[..b.shape.len() - 2], batch);
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for (&ab, &bb) in a_batch.iter().zip(&b_batch) {
        let (abase, bbase) = (ab * m * k, bb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    acc += a.data[abase + i * k + p] as f64 * b.data[bbase + p * n + j] as f64;
                }
                out.push(acc as f32);
            }
        }
    }
    Ok(out)
}

fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, out_len: usize) -> Result<Vec<f32>> {
    let (outs, ins) = (w.shape[0], w.shape[1]);
    let rows = x.data.len() / ins.max(1);
    if rows * outs != out_len {
        return Err("linear output size mismatch".into());
    }
    let mut out = Vec::with_capacity(out_len);
    for r in 0..rows {
        let row = &x.data[r * ins..(r + 1) * ins];
        for o in 0..outs {
            let wrow = &w.data[o * ins..(o + 1) * ins];
            let mut acc: f64 = row
                .iter()
                .zip(wrow)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            if let Some(b) = bias {
                acc += b.data[o] as f64;
            }
            out.push(acc as f32);
        }
    }
    Ok(out)
}

/// Outer count, axis extent and inner count of `shape` around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn softmax(x: &Tensor, axis: usize, log: bool) -> Vec<f32> {
    let (outer, len, inner) = split_at_axis(&x.shape, axis);
    let mut out = vec![0.0; x.data.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            let max = (0..len)
                .map(|j| x.data[at(j)] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|j| (x.data[at(j)] as f64 - max).exp()).sum();
            for j in 0..len {
                let shifted = x.data[at(j)] as f64 - max;
                out[at(j)] = if log {
                    (shifted - sum.ln()) as f32
                } else {
                    (shifted.exp() / sum) as f32
                };
            }
        }
    }
    out
}

fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    c: &super::op::Conv2dAttrs,
    out_shape: &[usize],
) -> Result<Vec<f32>> {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cout, cpg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let opg = cout / c.groups;
    if cpg * c.groups != cin {
        return Err("conv2d channel mismatch".into());
    }
    let mut out = Vec::with_capacity(n * cout * oh * ow);
    for b in 0..n {
        for oc in 0..cout {
            let g = oc / opg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b.data[oc] as f64);
                    for icg in 0..cpg {
                        let ic = g * cpg + icg;
                        for ky in 0..kh {
                            let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize
                                - c.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize
                                    - c.padding[1] as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                let xv =
                                    x.data[((b * cin + ic) * h + iy as usize) * wd + ix as usize];
                                let wv = w.data[((oc * cpg + icg) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    Ok(out)
}

fn pool2d(
    x: &Tensor,
    p: &super::op::Pool2dAttrs,
    out_shape: &[usize],
    max: bool,
) -> Result<Vec<f32>> {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        let base = plane * h * w;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut sum = 0.0f64;
                let mut count = 0usize;
                for ky in 0..p.kernel[0] {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..p.kernel[1] {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                            - p.padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let v = x.data[base + iy as usize * w + ix as usize];
                        best = best.max(v);
                        sum += v as f64;
                        count += 1;
                    }
                }
                if count == 0 {
                    return Err("a pooling window lies entirely in the padding".into());
                }
                out.push(if max {
                    best
                } else {
                    (sum / count as f64) as f32
                });
            }
        }
    }
    Ok(out)
}

fn transpose(x: &Tensor, perm: &[usize]) -> Vec<f32> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let in_strides = strides(&x.shape);
    let permuted: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    strided_offsets(&out_shape, &permuted)
        .into_iter()
        .map(|o| x.data[o])
        .collect()
}

fn layer_norm(
    x: &Tensor,
    weight: Option<&&Tensor>,
    bias: Option<&&Tensor>,
    axis: usize,
    eps: f64,
) -> Vec<f32> {
    let inner: usize = x.shape[axis..].iter().product();
    let mut out = Vec::with_capacity(x.data.len());
    for row in x.data.chunks(inner.max(1)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            let mut y = (v as f64 - mean) * inv;
            if let Some(w) = weight {
                y *= w.data[j] as f64;
            }
            if let Some(b) = bias {
                y += b.data[j] as f64;
            }
            out.push(y as f32);
        }
    }
    out
}

fn batch_norm(inputs: &[&Tensor], eps: f64) -> Result<Vec<f32>> {
    let [x, scale, bias, mean, var] = inputs else {
        return Err("batch_norm takes 5 operands".into());
    };
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let mut out = Vec::with_capacity(x.data.len());
    for (i, &v) in x.data.iter().enumerate() {
        let ch = (i / inner.max(1)) % c;
        let norm = (v as f64 - mean.data[ch] as f64) / (var.data[ch] as f64 + eps).sqrt();
        out.push((norm * scale.data[ch] as f64 + bias.data[ch] as f64) as f32);
    }
    Ok(out)
}

fn reduce(x: &Tensor, kind: ReduceKind, axes: &[usize], out_len: usize) -> Vec<f32> {
    // Output offset of each input element: reduced coordinates dropped.
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let offsets = {
        let ks = strides(&kept);
        let mut s = vec![0; x.shape.len()];
        for i in 0..x.shape.len() {
            if !axes.contains(&i) {
                s[i] = ks[i];
            }
        }
        s
    };
    let mut acc = vec![
        match kind {
            ReduceKind::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        out_len
    ];
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    for (&v, o) in x.data.iter().zip(strided_offsets(&x.shape, &offsets)) {
        let v = v as f64;
        acc[o] = match kind {
            ReduceKind::Max => acc[o].max(v),
            _ => acc[o] + v,
        };
    }
    acc.into_iter()
        .map(|a| match kind {
            ReduceKind::Mean => (a / count.max(1) as f64) as f32,
            _ => a as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_axes() {
        let x = Tensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let t = evaluate(&Op::Transpose { perm: vec![1, 0] }, &[&x], &[3, 2]).unwrap();
        assert_eq!(t.data, vec![1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn reduce_over_middle_axis() {
        let x = Tensor::new(vec![2, 2, 2], (1..=8).map(|v| v as f32).collect()).unwrap();
        let op = Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keepdims: false,
        };
        assert_eq!(
            evaluate(&op, &[&x], &[2, 2]).unwrap().data,
            vec![4., 6., 12., 14.]
        );
    }

    #[test]
    fn broadcast_row_and_column() {
        let a = Tensor::new(vec![2, 1], vec![10., 20.]).unwrap();
        let b = Tensor::new(vec![3], vec![1., 2., 3.]).unwrap();
        let r = evaluate(&Op::Binary(BinaryOp::Add), &[&a, &b], &[2, 3]).unwrap();
        assert_eq!(r.data, vec![11., 12., 13., 21., 22., 23.]);
    }
}
