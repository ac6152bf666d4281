//! ONNX operators that move data without arithmetic: `Reshape`, `Flatten`,
//! `Transpose`, `Squeeze`, `Unsqueeze`, `Concat`, `Slice`, `Split`,
//! `Identity`, `Cast`, `Constant`, and the shape computations (`Shape`,
//! `Gather` on integer constants) that feed them.
//!
//! On integer constants these run at import time; on tensors they become
//! graph-IR `reshape`, `flatten`, `transpose`, `concat` and `slice`.

use super::import::{int_list, Attributes, Importer, IntElem, Ints, Result, Value};
use super::proto::{data_type, NodeProto};
use super::tensor::{decode_tensor, TensorData};
use lopper_ir::graph::op::ReshapeDim;
use lopper_ir::graph::{AttrValue, NodeIndex, Op};
use lopper_ir::types::normalize_axis;
use lopper_ir::{Dim, Tensor};
use std::path::Path;

/// Imports `node` if it is one of this module's operators.
pub(super) fn import_node(
    im: &mut Importer,
    node: &NodeProto,
) -> Option<Result<Vec<Option<Value>>>> {
    let out = node.output.first().cloned().unwrap_or_default();
    let result = match node.op_type.as_str() {
        "Identity" => im
            .input(node, 0)
            .cloned()
            .ok_or_else(|| "needs an input".to_string()),
        "Constant" => constant(im, node, &out),
        "Cast" => cast(im, node, &out),
        "Shape" => shape(im, node),
        "Gather" => gather(im, node),
        "Reshape" => reshape(im, node, &out),
        "Squeeze" | "Unsqueeze" => squeeze(im, node, &out),
        "Flatten" => im.tensor(node, 0).and_then(|x| {
            // ONNX counts a negative split point from the rank; the graph
            // IR's `flatten` takes it in 0..=rank.
            let axis = Attributes(node).int("axis", 1)?;
            let rank = im.ty(x).shape.rank() as i64;
            let axis = if axis < 0 { axis + rank } else { axis };
            Ok(Value::Tensor(im.build(
                &out,
                "flatten",
                vec![("axis".into(), AttrValue::Int(axis))],
                &[x],
            )?))
        }),
        "Transpose" => im.tensor(node, 0).and_then(|x| {
            let attrs = match Attributes(node).ints("perm")? {
                Some(p) => vec![("perm".into(), int_list(&p))],
                None => vec![],
            };
            Ok(Value::Tensor(im.build(&out, "transpose", attrs, &[x])?))
        }),
        "Concat" => concat(im, node, &out),
        "Slice" => slice(im, node, &out),
        "Split" => return Some(split(im, node)),
        _ => return None,
    };
    Some(result.map(|v| vec![Some(v)]))
}

/// `x` reshaped to `dims` (static or symbolic).
pub(super) fn reshape_to(
    im: &mut Importer,
    name: &str,
    x: NodeIndex,
    dims: Vec<Dim>,
) -> Result<NodeIndex> {
    let shape = dims.into_iter().map(ReshapeDim::Dim).collect();
    im.add(name, Op::Reshape { shape }, &[x])
}

fn constant(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let at = Attributes(node);
    if at.has("sparse_value") {
        return Err("a sparse `value` is not read".into());
    }
    if let Some(t) = at.tensor("value")? {
        return Ok(
            match decode_tensor(t, Path::new("")).map_err(|e| format!("`value` {e}"))? {
                TensorData::Float(t) => Value::Tensor(im.param(out, t)),
                TensorData::Int(shape, v) => Value::Ints(Ints::known(shape, v)),
            },
        );
    }
    if at.has("value_float") {
        return Ok(Value::Tensor(
            im.param(out, Tensor::scalar(at.float("value_float", 0.0)?)),
        ));
    }
    if let Some(v) = at.floats("value_floats")? {
        return Ok(Value::Tensor(im.param(
            out,
            Tensor {
                shape: vec![v.len()],
                data: v,
            },
        )));
    }
    if at.has("value_int") {
        return Ok(Value::Ints(Ints::known(
            vec![],
            vec![at.int("value_int", 0)?],
        )));
    }
    if let Some(v) = at.ints("value_ints")? {
        return Ok(Value::Ints(Ints::known(vec![v.len()], v)));
    }
    Err("has none of `value`, `value_float(s)`, `value_int(s)`".into())
}

fn cast(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let to = Attributes(node).int("to", 0)? as i32;
    let to_float = matches!(to, data_type::FLOAT | data_type::DOUBLE);
    match im.input(node, 0).cloned() {
        Some(Value::Tensor(x)) if to_float => Ok(Value::Tensor(x)),
        Some(Value::Ints(v)) if to_float => {
            let data = v
                .numbers("the cast tensor")?
                .into_iter()
                .map(|n| n as f32)
                .collect();
            Ok(Value::Tensor(im.param(
                out,
                Tensor {
                    shape: v.shape.clone(),
                    data,
                },
            )))
        }
        Some(Value::Ints(v)) if matches!(to, data_type::INT64 | data_type::INT32) => {
            Ok(Value::Ints(v))
        }
        Some(_) => Err(format!(
            "casts to {}; lopper's run-time tensors are FLOAT",
            data_type::name(to)
        )),
        None => Err("needs an input".into()),
    }
}

/// `Shape`: the dims of a tensor, symbolic ones included, from `start` to `end`.
fn shape(im: &mut Importer, node: &NodeProto) -> Result<Value> {
    let dims: Vec<IntElem> = match im.input(node, 0) {
        Some(Value::Tensor(x)) => im
            .ty(*x)
            .shape
            .0
            .iter()
            .map(|d| match d {
                Dim::Static(n) => IntElem::Known(*n as i64),
                Dim::Symbol(s) => IntElem::Symbol(s.clone()),
            })
            .collect(),
        Some(Value::Ints(v)) => v.shape.iter().map(|&n| IntElem::Known(n as i64)).collect(),
        None => return Err("needs an input".into()),
    };
    let at = Attributes(node);
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(at.int("start", 0)?);
    let end = clamp(at.int("end", rank)?);
    let values: Vec<IntElem> = dims[start..end.max(start)].to_vec();
    Ok(Value::Ints(Ints {
        shape: vec![values.len()],
        values,
    }))
}

/// `Gather` on an integer constant (picking dims out of a shape).
fn gather(im: &mut Importer, node: &NodeProto) -> Result<Value> {
    let Some(Value::Ints(data)) = im.input(node, 0).cloned() else {
        return Err("gathers from a run-time tensor; lopper imports Gather only on shapes and other integer constants".into());
    };
    let indices = im.ints(node, 1)?.ok_or("needs indices")?;
    let axis = Attributes(node).int("axis", 0)?;
    if data.shape.len() != 1 || (axis != 0 && axis != -1) {
        return Err("gathers from an integer constant of rank other than 1".into());
    }
    let n = data.values.len() as i64;
    let mut values = Vec::new();
    for i in indices.numbers("`indices`")? {
        let j = if i < 0 { i + n } else { i };
        if !(0..n).contains(&j) {
            return Err(format!("index {i} is out of range for {n} elements"));
        }
        values.push(data.values[j as usize].clone());
    }
    Ok(Value::Ints(Ints {
        shape: indices.shape,
        values,
    }))
}

fn reshape(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let target = im.ints(node, 1)?.ok_or("needs the target shape")?;
    let allow_zero = Attributes(node).int("allowzero", 0)? != 0;
    if let Some(Value::Ints(v)) = im.input(node, 0).cloned() {
        let dims = target.numbers("the target shape of an integer constant")?;
        let count = v.values.len();
        let known: usize = dims
            .iter()
            .filter(|&&d| d > 0)
            .map(|&d| d as usize)
            .product();
        let shape = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| match d {
                -1 => Ok(count / known.max(1)),
                0 if !allow_zero => v
                    .shape
                    .get(i)
                    .copied()
                    .ok_or_else(|| "0 copies a missing dim".to_string()),
                d if d > 0 => Ok(d as usize),
                _ => Err(format!("target dim {d} is not supported")),
            })
            .collect::<Result<Vec<usize>>>()?;
        if shape.iter().product::<usize>() != count {
            return Err(format!("cannot reshape {count} values to {shape:?}"));
        }
        return Ok(Value::Ints(Ints {
            shape,
            values: v.values,
        }));
    }
    let x = im.tensor(node, 0)?;
    let input_dims = im.ty(x).shape.0.clone();
    let mut shape = Vec::new();
    for (i, d) in target.values.iter().enumerate() {
        shape.push(match d {
            IntElem::Symbol(s) => ReshapeDim::Dim(Dim::Symbol(s.clone())),
            IntElem::Known(-1) => ReshapeDim::Infer,
            IntElem::Known(0) if !allow_zero => {
                ReshapeDim::Dim(input_dims.get(i).cloned().ok_or_else(|| {
                    format!(
                        "target dim {i} is 0 (copy) but the input has rank {}",
                        input_dims.len()
                    )
                })?)
            }
            IntElem::Known(n) if *n > 0 => ReshapeDim::Dim(Dim::Static(*n as usize)),
            IntElem::Known(n) => {
                return Err(format!(
                    "target dim {n} is not supported (no empty tensors)"
                ))
            }
        });
    }
    Ok(Value::Tensor(im.add(out, Op::Reshape { shape }, &[x])?))
}

/// `Squeeze` / `Unsqueeze` as a reshape; axes from the second input (or the
/// attribute some exporters still write).
fn squeeze(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let axes = match Attributes(node).ints("axes")? {
        Some(a) => Some(a),
        None => im.ints(node, 1)?.map(|v| v.numbers("`axes`")).transpose()?,
    };
    let (dims, ints): (Vec<Dim>, Option<Ints>) = match im.input(node, 0).cloned() {
        Some(Value::Tensor(x)) => (im.ty(x).shape.0.clone(), None),
        Some(Value::Ints(v)) => (v.shape.iter().map(|&n| Dim::Static(n)).collect(), Some(v)),
        None => return Err("needs an input".into()),
    };
    let new_dims = if node.op_type == "Squeeze" {
        let rank = dims.len();
        let axes: Vec<usize> = match axes {
            None => (0..rank).filter(|&i| dims[i] == Dim::Static(1)).collect(),
            Some(a) => a
                .iter()
                .map(|&a| normalize_axis(a, rank))
                .collect::<std::result::Result<_, _>>()?,
        };
        for &a in &axes {
            if dims[a] != Dim::Static(1) {
                return Err(format!("cannot squeeze axis {a} of extent {}", dims[a]));
            }
        }
        dims.iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>()
    } else {
        let axes = axes.ok_or("needs `axes`")?;
        let rank = dims.len() + axes.len();
        let mut axes: Vec<usize> = axes
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<std::result::Result<_, _>>()?;
        axes.sort_unstable();
        let mut rest = dims.into_iter();
        (0..rank)
            .map(|i| {
                if axes.contains(&i) {
                    Dim::Static(1)
                } else {
                    rest.next().unwrap_or(Dim::Static(1))
                }
            })
            .collect()
    };
    match ints {
        Some(v) => Ok(Value::Ints(Ints {
            shape: new_dims
                .iter()
                .map(|d| d.as_static().unwrap_or(1))
                .collect(),
            values: v.values,
        })),
        None => {
            let x = im.tensor(node, 0)?;
            Ok(Value::Tensor(reshape_to(im, out, x, new_dims)?))
        }
    }
}

fn concat(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let axis = Attributes(node).int("axis", 0)?;
    let inputs: Vec<Value> = (0..node.input.len())
        .filter_map(|i| im.input(node, i).cloned())
        .collect();
    if inputs.iter().all(|v| matches!(v, Value::Ints(_))) {
        let mut values = Vec::new();
        for v in &inputs {
            let Value::Ints(v) = v else {
                unreachable!("all integer")
            };
            if v.shape.len() != 1 {
                return Err("concatenates integer constants of rank other than 1".into());
            }
            values.extend(v.values.iter().cloned());
        }
        return Ok(Value::Ints(Ints {
            shape: vec![values.len()],
            values,
        }));
    }
    let mut operands = Vec::new();
    for i in 0..node.input.len() {
        if im.input(node, i).is_some() {
            operands.push(im.tensor(node, i)?);
        }
    }
    Ok(Value::Tensor(im.build(
        out,
        "concat",
        vec![("axis".into(), AttrValue::Int(axis))],
        &operands,
    )?))
}

/// Where a slice of `extent` elements from `start` to `end` (ONNX's
/// clamping of negative and out-of-range bounds) begins and ends.
fn clamp_range(start: i64, end: i64, extent: usize) -> (usize, usize) {
    let n = extent as i64;
    let fix = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
    (fix(start), fix(end))
}

/// `Slice` with unit steps: one graph-IR `slice` per sliced axis.
fn slice(im: &mut Importer, node: &NodeProto, out: &str) -> Result<Value> {
    let starts = im
        .ints(node, 1)?
        .ok_or("needs `starts`")?
        .numbers("`starts`")?;
    let ends = im.ints(node, 2)?.ok_or("needs `ends`")?.numbers("`ends`")?;
    let axes = match im.ints(node, 3)? {
        Some(a) => a.numbers("`axes`")?,
        None => (0..starts.len() as i64).collect(),
    };
    if let Some(steps) = im.ints(node, 4)? {
        if steps.numbers("`steps`")?.iter().any(|&s| s != 1) {
            return Err("steps other than 1 are not supported".into());
        }
    }
    if starts.len() != ends.len() || starts.len() != axes.len() {
        return Err("`starts`, `ends` and `axes` differ in length".into());
    }
    if let Some(Value::Ints(v)) = im.input(node, 0).cloned() {
        if v.shape.len() != 1 || axes.iter().any(|&a| a != 0 && a != -1) {
            return Err("slices an integer constant of rank other than 1".into());
        }
        let (s, e) = clamp_range(starts[0], ends[0], v.values.len());
        let values = v.values[s..e.max(s)].to_vec();
        return Ok(Value::Ints(Ints {
            shape: vec![values.len()],
            values,
        }));
    }
    let mut x = im.tensor(node, 0)?;
    let rank = im.ty(x).shape.rank();
    for (k, ((&start, &end), &axis)) in starts.iter().zip(&ends).zip(&axes).enumerate() {
        let axis = normalize_axis(axis, rank)?;
        let (s, e) = match &im.ty(x).shape.0[axis] {
            Dim::Static(n) => clamp_range(start, end, *n),
            // The whole of a symbolic dim (exporters write end = INT_MAX).
            Dim::Symbol(_) if start == 0 && end >= i32::MAX as i64 => continue,
            Dim::Symbol(sym) => return Err(format!("slices the symbolic dim `{sym}`")),
        };
        if s == 0 && im.ty(x).shape.0[axis] == Dim::Static(e) {
            continue;
        }
        if s >= e {
            return Err(format!(
                "axis {axis} slice {start}..{end} is empty (no empty tensors)"
            ));
        }
        let name = if k + 1 == starts.len() {
            out.to_string()
        } else {
            format!("{out}.axis{axis}")
        };
        x = im.add(
            &name,
            Op::Slice {
                axis,
                start: s,
                end: e,
            },
            &[x],
        )?;
    }
    Ok(Value::Tensor(x))
}

/// `Split` into slices along `axis`: sizes from the second input, or equal
/// parts (the last one smaller) for `num_outputs` or the output count.
fn split(im: &mut Importer, node: &NodeProto) -> Result<Vec<Option<Value>>> {
    let x = im.tensor(node, 0)?;
    let rank = im.ty(x).shape.rank();
    let axis = normalize_axis(Attributes(node).int("axis", 0)?, rank)?;
    let Dim::Static(extent) = im.ty(x).shape.0[axis].clone() else {
        return Err(format!(
            "splits the symbolic dim {}",
            im.ty(x).shape.0[axis]
        ));
    };
    let parts = node.output.len();
    let sizes: Vec<usize> = match Attributes(node).ints("split")?.map(Ok).or_else(|| {
        im.ints(node, 1)
            .transpose()
            .map(|v| v.and_then(|v| v.numbers("`split`")))
    }) {
        Some(v) => v?
            .into_iter()
            .map(|s| usize::try_from(s).map_err(|_| format!("split size {s}")))
            .collect::<Result<_>>()?,
        None => {
            let chunk = extent.div_ceil(parts.max(1));
            (0..parts)
                .map(|i| chunk.min(extent.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.len() != parts || sizes.iter().sum::<usize>() != extent || sizes.contains(&0) {
        return Err(format!(
            "split sizes {sizes:?} do not cut {extent} into {parts} non-empty parts"
        ));
    }
    let mut start = 0;
    let mut values = Vec::new();
    for (name, size) in node.output.iter().zip(sizes) {
        let end = start + size;
        values.push(if name.is_empty() {
            None
        } else {
            Some(Value::Tensor(im.add(
                name,
                Op::Slice { axis, start, end },
                &[x],
            )?))
        });
        start = end;
    }
    Ok(values)
}
