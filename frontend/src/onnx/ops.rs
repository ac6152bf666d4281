//! ONNX operators to graph-IR ops: the dispatch, and the arithmetic,
//! matrix, normalization, reduction and activation operators.
//!
//! Shape-manipulating operators are in [`super::shapes`], convolution and
//! pooling in [`super::spatial`]. Each mapping checks the attributes it cannot
//! honour and says which, rather than importing something different.

use super::import::{int_list, Attributes, Importer, IntElem, Ints, Result, Value};
use super::proto::NodeProto;
use lopper_ir::graph::{AttrValue, BinaryOp, NodeIndex, Op, UnaryOp};
use lopper_ir::Tensor;

/// Imports one node; returns a value per output (`None` for an output
/// nobody may read).
pub(super) fn import_node(im: &mut Importer, node: &NodeProto) -> Result<Vec<Option<Value>>> {
    let out = node.output.first().cloned().unwrap_or_default();
    let at = Attributes(node);
    let one = |n: NodeIndex| Ok(vec![Some(Value::Tensor(n))]);
    let unary = |im: &mut Importer, u: UnaryOp| -> Result<Vec<Option<Value>>> {
        let x = im.tensor(node, 0)?;
        one(im.add(&out, Op::Unary(u), &[x])?)
    };
    match node.op_type.as_str() {
        "Relu" => unary(im, UnaryOp::Relu),
        "Sigmoid" => unary(im, UnaryOp::Sigmoid),
        "Tanh" => unary(im, UnaryOp::Tanh),
        "Exp" => unary(im, UnaryOp::Exp),
        "Erf" => unary(im, UnaryOp::Erf),
        "Sqrt" => unary(im, UnaryOp::Sqrt),
        "Gelu" => match at.string("approximate", "none")?.as_str() {
            "none" => unary(im, UnaryOp::Gelu),
            "tanh" => {
                let x = im.tensor(node, 0)?;
                one(tanh_gelu(im, &out, x)?)
            }
            other => Err(format!(
                "`approximate` = {other:?} is neither \"none\" nor \"tanh\""
            )),
        },
        "Pow" => {
            let x = im.tensor(node, 0)?;
            // One constant exponent: exact products and roots where it can;
            // otherwise the general power of two tensors.
            if let Some(exponent) = uniform_constant(im, node, 1) {
                return one(im.add(&out, Op::Unary(UnaryOp::Pow(exponent)), &[x])?);
            }
            let y = match im.input(node, 1).cloned() {
                Some(Value::Ints(v)) => {
                    let data = v
                        .numbers("the exponent")?
                        .into_iter()
                        .map(|n| n as f32)
                        .collect();
                    im.param(
                        &format!("{out}.exponent"),
                        Tensor {
                            shape: v.shape.clone(),
                            data,
                        },
                    )
                }
                _ => im.tensor(node, 1)?,
            };
            one(im.add(&out, Op::Binary(BinaryOp::Pow), &[x, y])?)
        }
        "Add" | "Sub" | "Mul" | "Div" => binary(im, node, &out),
        "MatMul" => {
            let a = im.tensor(node, 0)?;
            let b = im.tensor(node, 1)?;
            one(matmul(im, &out, a, b)?)
        }
        "Gemm" => one(gemm(im, node, &out)?),
        "Softmax" | "LogSoftmax" => {
            let x = im.tensor(node, 0)?;
            let name = if node.op_type == "Softmax" {
                "softmax"
            } else {
                "log_softmax"
            };
            one(im.build(
                &out,
                name,
                vec![("axis".into(), AttrValue::Int(at.int("axis", -1)?))],
                &[x],
            )?)
        }
        "BatchNormalization" => {
            if at.int("training_mode", 0)? != 0 {
                return Err(
                    "`training_mode` = 1 is not inference; lopper imports inference graphs".into(),
                );
            }
            only_first_output(node)?;
            let mut operands = Vec::new();
            for i in 0..5 {
                operands.push(im.tensor(node, i)?);
            }
            let eps = at.float("epsilon", 1e-5)?;
            one(im.build(
                &out,
                "batch_norm",
                vec![("eps".into(), AttrValue::Float(eps as f64))],
                &operands,
            )?)
        }
        "LayerNormalization" => layer_norm(im, node, &out),
        "ReduceMean" | "ReduceSum" | "ReduceMax" => reduce(im, node, &out),
        _ => super::shapes::import_node(im, node)
            .or_else(|| super::spatial::import_node(im, node))
            .unwrap_or_else(|| Err(format!("`{}` is not mapped", node.op_type))),
    }
}

/// Refuses a node whose second or later output is read (training
/// statistics, pooling indices).
pub(super) fn only_first_output(node: &NodeProto) -> Result<()> {
    match node.output.iter().skip(1).find(|o| !o.is_empty()) {
        Some(o) => Err(format!(
            "its output `{o}` is not computed by lopper (only the first output is)"
        )),
        None => Ok(()),
    }
}

/// The value of a constant input whose elements are all equal.
fn uniform_constant(im: &Importer, node: &NodeProto, i: usize) -> Option<f32> {
    let values: Vec<f32> = match im.input(node, i)? {
        Value::Ints(v) => v.numbers("").ok()?.into_iter().map(|n| n as f32).collect(),
        Value::Tensor(n) => im.constant_data(*n)?.data.clone(),
    };
    let (first, rest) = values.split_first()?;
    rest.iter()
        .all(|v| v.to_bits() == first.to_bits())
        .then_some(*first)
}

fn binary(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Vec<Option<Value>>> {
    if let (Some(Value::Ints(a)), Some(Value::Ints(b))) = (im.input(node, 0), im.input(node, 1)) {
        return Ok(vec![Some(Value::Ints(int_arithmetic(
            &node.op_type,
            a,
            b,
        )?))]);
    }
    let op = match node.op_type.as_str() {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        _ => BinaryOp::Div,
    };
    let a = im.tensor(node, 0)?;
    let b = im.tensor(node, 1)?;
    Ok(vec![Some(Value::Tensor(im.add(
        out,
        Op::Binary(op),
        &[a, b],
    )?))])
}

/// Shape arithmetic on integer constants: elementwise, one side may be a
/// single element.
fn int_arithmetic(op: &str, a: &Ints, b: &Ints) -> Result<Ints> {
    let x = a.numbers("shape arithmetic")?;
    let y = b.numbers("shape arithmetic")?;
    let (n, shape) = match (x.len(), y.len()) {
        (p, q) if p == q => (
            p,
            if a.shape.len() >= b.shape.len() {
                a.shape.clone()
            } else {
                b.shape.clone()
            },
        ),
        (1, q) => (q, b.shape.clone()),
        (p, 1) => (p, a.shape.clone()),
        (p, q) => {
            return Err(format!(
                "integer operands of {p} and {q} elements do not broadcast"
            ))
        }
    };
    let pick = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let (l, r) = (pick(&x, i), pick(&y, i));
        values.push(
            match op {
                "Add" => l.checked_add(r),
                "Sub" => l.checked_sub(r),
                "Mul" => l.checked_mul(r),
                _ => l.checked_div(r),
            }
            .ok_or_else(|| format!("integer {op} of {l} and {r} overflows or divides by zero"))?,
        );
    }
    Ok(Ints {
        shape,
        values: values.into_iter().map(IntElem::Known).collect(),
    })
}

/// NumPy matmul including the 1-D cases, which the graph IR's `matmul`
/// does not take: a vector becomes a one-row (or one-column) matrix and the
/// extra dim is dropped from the result.
fn matmul(im: &mut Importer, out: &str, a: NodeIndex, b: NodeIndex) -> Result<NodeIndex> {
    let a_vector = im.ty(a).shape.rank() == 1;
    let b_vector = im.ty(b).shape.rank() == 1;
    if !a_vector && !b_vector {
        return im.add(out, Op::MatMul, &[a, b]);
    }
    let a2 = if a_vector {
        let d = im.ty(a).shape.0.clone();
        super::shapes::reshape_to(
            im,
            &format!("{out}.lhs"),
            a,
            [vec![lopper_ir::Dim::Static(1)], d].concat(),
        )?
    } else {
        a
    };
    let b2 = if b_vector {
        let d = im.ty(b).shape.0.clone();
        super::shapes::reshape_to(
            im,
            &format!("{out}.rhs"),
            b,
            [d, vec![lopper_ir::Dim::Static(1)]].concat(),
        )?
    } else {
        b
    };
    let product = im.add(&format!("{out}.matrix"), Op::MatMul, &[a2, b2])?;
    let mut dims = im.ty(product).shape.0.clone();
    let rank = dims.len();
    if b_vector {
        dims.remove(rank - 1);
    }
    if a_vector {
        dims.remove(rank - 2);
    }
    super::shapes::reshape_to(im, out, product, dims)
}

/// `alpha · op(A) · op(B) + beta · C`: `linear` when B is a constant used
/// transposed (the PyTorch layout), `matmul` otherwise.
fn gemm(im: &mut Importer, node: &NodeProto, out: &str) -> Result<NodeIndex> {
    let at = Attributes(node);
    let mut a = im.tensor(node, 0)?;
    let b = im.tensor(node, 1)?;
    let c = im.optional_tensor(node, 2)?;
    let (alpha, beta) = (at.float("alpha", 1.0)?, at.float("beta", 1.0)?);
    let trans_b = at.int("transB", 0)? != 0;
    if im.ty(a).shape.rank() != 2 || im.ty(b).shape.rank() != 2 {
        return Err("A and B must be matrices".into());
    }
    if at.int("transA", 0)? != 0 {
        a = im.add(
            &format!("{out}.a_t"),
            Op::Transpose { perm: vec![1, 0] },
            &[a],
        )?;
    }
    let plain = alpha == 1.0 && (c.is_none() || beta == 1.0);
    let c_is_bias = c.is_some_and(|c| {
        let b_rows = &im.ty(b).shape.0[0];
        im.ty(c).shape.0.len() == 1 && &im.ty(c).shape.0[0] == b_rows
    });
    if trans_b && im.constant_data(b).is_some() && plain && (c.is_none() || c_is_bias) {
        let operands: Vec<NodeIndex> = [Some(a), Some(b), c].into_iter().flatten().collect();
        return im.add(out, Op::Linear, &operands);
    }
    let b = if trans_b {
        im.add(
            &format!("{out}.b_t"),
            Op::Transpose { perm: vec![1, 0] },
            &[b],
        )?
    } else {
        b
    };
    let product_name = if c.is_none() && alpha == 1.0 {
        out.to_string()
    } else {
        format!("{out}.product")
    };
    let mut y = im.add(&product_name, Op::MatMul, &[a, b])?;
    if alpha != 1.0 {
        let s = im.param(&format!("{out}.alpha"), Tensor::scalar(alpha));
        let name = if c.is_none() {
            out.to_string()
        } else {
            format!("{out}.scaled")
        };
        y = im.add(&name, Op::Binary(BinaryOp::Mul), &[y, s])?;
    }
    if let Some(mut c) = c {
        if beta != 1.0 {
            let s = im.param(&format!("{out}.beta"), Tensor::scalar(beta));
            c = im.add(&format!("{out}.c"), Op::Binary(BinaryOp::Mul), &[c, s])?;
        }
        y = im.add(out, Op::Binary(BinaryOp::Add), &[y, c])?;
    }
    Ok(y)
}

/// `LayerNormalization`: the graph IR's `layer_norm`, and, when read, the
/// mean and `1/√(var + ε)` outputs computed with reductions.
fn layer_norm(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Vec<Option<Value>>> {
    let at = Attributes(node);
    let x = im.tensor(node, 0)?;
    let mut operands = vec![x, im.tensor(node, 1)?];
    if let Some(b) = im.optional_tensor(node, 2)? {
        operands.push(b);
    }
    let axis = at.int("axis", -1)?;
    let eps = at.float("epsilon", 1e-5)?;
    let attrs = vec![
        ("axis".into(), AttrValue::Int(axis)),
        ("eps".into(), AttrValue::Float(eps as f64)),
    ];
    let y = im.build(out, "layer_norm", attrs, &operands)?;
    let mut values = vec![Some(Value::Tensor(y))];
    let wanted = |i: usize| node.output.get(i).is_some_and(|o| !o.is_empty());
    if wanted(1) || wanted(2) {
        let rank = im.ty(x).shape.rank() as i64;
        let first = if axis < 0 { axis + rank } else { axis };
        let axes: Vec<i64> = (first..rank).collect();
        let reduce = |im: &mut Importer, name: &str, v: NodeIndex| {
            let attrs = vec![
                ("axes".into(), int_list(&axes)),
                ("keepdims".into(), AttrValue::Int(1)),
            ];
            im.build(name, "mean", attrs, &[v])
        };
        let mean_name = node
            .output
            .get(1)
            .filter(|o| !o.is_empty())
            .cloned()
            .unwrap_or(format!("{out}.mean"));
        let mean = reduce(im, &mean_name, x)?;
        values.push(Some(Value::Tensor(mean)));
        if wanted(2) {
            let centered = im.add(
                &format!("{out}.centered"),
                Op::Binary(BinaryOp::Sub),
                &[x, mean],
            )?;
            let square = im.add(
                &format!("{out}.square"),
                Op::Binary(BinaryOp::Mul),
                &[centered, centered],
            )?;
            let var = reduce(im, &format!("{out}.var"), square)?;
            let e = im.param(&format!("{out}.eps"), Tensor::scalar(eps));
            let shifted = im.add(
                &format!("{out}.var_eps"),
                Op::Binary(BinaryOp::Add),
                &[var, e],
            )?;
            let inv = im.add(&node.output[2], Op::Unary(UnaryOp::Pow(-0.5)), &[shifted])?;
            values.push(Some(Value::Tensor(inv)));
        }
    }
    Ok(values)
}

/// `ReduceMean`, `ReduceSum`, `ReduceMax`: axes from the attribute (older
/// opsets) or the second input; no axes reduce everything unless
/// `noop_with_empty_axes`.
fn reduce(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Vec<Option<Value>>> {
    let at = Attributes(node);
    let x = im.tensor(node, 0)?;
    let axes = match at.ints("axes")? {
        Some(a) => a,
        None => match im.ints(node, 1)? {
            Some(v) => v.numbers("`axes`")?,
            None => Vec::new(),
        },
    };
    if axes.is_empty() && at.int("noop_with_empty_axes", 0)? != 0 {
        return Ok(vec![Some(Value::Tensor(x))]);
    }
    let rank = im.ty(x).shape.rank() as i64;
    let axes = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes
    };
    let kind = match node.op_type.as_str() {
        "ReduceMean" => "mean",
        "ReduceSum" => "sum",
        _ => "max",
    };
    let attrs = vec![
        ("axes".into(), int_list(&axes)),
        (
            "keepdims".into(),
            AttrValue::Int(i64::from(at.int("keepdims", 1)? != 0)),
        ),
    ];
    Ok(vec![Some(Value::Tensor(im.build(
        out,
        kind,
        attrs,
        &[x],
    )?))])
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` from graph-IR ops.
fn tanh_gelu(im: &mut Importer, out: &str, x: NodeIndex) -> Result<NodeIndex> {
    let scalar = |im: &mut Importer, suffix: &str, v: f32| {
        im.param(&format!("{out}.{suffix}"), Tensor::scalar(v))
    };
    let c3 = scalar(im, "c3", 0.044715);
    let k = scalar(im, "k", (2.0 / std::f32::consts::PI).sqrt());
    let one = scalar(im, "one", 1.0);
    let half = scalar(im, "half", 0.5);
    let cube = im.add(&format!("{out}.cube"), Op::Unary(UnaryOp::Pow(3.0)), &[x])?;
    let t = im.add(&format!("{out}.t0"), Op::Binary(BinaryOp::Mul), &[cube, c3])?;
    let t = im.add(&format!("{out}.t1"), Op::Binary(BinaryOp::Add), &[x, t])?;
    let t = im.add(&format!("{out}.t2"), Op::Binary(BinaryOp::Mul), &[t, k])?;
    let t = im.add(&format!("{out}.t3"), Op::Unary(UnaryOp::Tanh), &[t])?;
    let t = im.add(&format!("{out}.t4"), Op::Binary(BinaryOp::Add), &[t, one])?;
    let h = im.add(&format!("{out}.t5"), Op::Binary(BinaryOp::Mul), &[x, half])?;
    im.add(out, Op::Binary(BinaryOp::Mul), &[h, t])
}
