//! Graph operations, their attributes and how attributes are written.
//!
//! Every op is built by [`Op::from_attrs`] from a name, named attributes and
//! its operands' types; the DSL builder and the `.gir` parser both go through
//! it, so defaults and validation live in one place. Attributes are stored
//! normalized (negative axes resolved, `padding = 1` expanded to four sides),
//! and [`Op::attrs`] gives them back in a fixed order for the printer.

use super::param::Param;
use crate::types::{normalize_axis, Dim, TensorType};
use std::fmt;

/// An attribute value as written in the DSL or in `.gir` text.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A float known to be single precision (param data), printed shortest.
    Float32(f32),
    /// A quoted string.
    Str(String),
    /// A bare name (a symbolic size in a reshape target).
    Ident(String),
    /// A bracketed list.
    List(Vec<AttrValue>),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::Float32(v) => write!(f, "{v:?}"),
            AttrValue::Str(s) => write!(f, "{s:?}"),
            AttrValue::Ident(s) => f.write_str(s),
            AttrValue::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl AttrValue {
    fn as_int(&self) -> Option<i64> {
        match self {
            AttrValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn as_float(&self) -> Option<f64> {
        match self {
            AttrValue::Int(v) => Some(*v as f64),
            AttrValue::Float(v) => Some(*v),
            AttrValue::Float32(v) => Some(*v as f64),
            _ => None,
        }
    }

    fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            AttrValue::Int(v) => Some(vec![*v]),
            AttrValue::List(items) => items.iter().map(AttrValue::as_int).collect(),
            _ => None,
        }
    }
}

/// Named attributes in the order written.
pub type Attrs = Vec<(String, AttrValue)>;

/// A wrong attribute: which one (if one) and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrError {
    /// The attribute at fault, `None` when the op or its operands are.
    pub attr: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn attr_err(attr: &str, message: impl Into<String>) -> AttrError {
    AttrError {
        attr: Some(attr.to_string()),
        message: message.into(),
    }
}

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `max(x, 0)`.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `e^x`.
    Exp,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))`.
    Gelu,
    /// The error function.
    Erf,
    /// Square root (NaN below zero).
    Sqrt,
    /// `x` to a constant power (`powf`: NaN for a negative `x` and a
    /// non-integer exponent).
    Pow(f32),
    /// The operand itself (an output that names an existing value).
    Identity,
}

/// Elementwise ops of two operands with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `a` to the power `b` (`powf`); a constant exponent is the unary
    /// [`UnaryOp::Pow`], computed exactly where it can be.
    Pow,
}

impl BinaryOp {
    /// Applies the op to two scalars.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
        }
    }
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
}

/// `conv2d` attributes (NCHW input, `[out, in/groups, kh, kw]` weight).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dAttrs {
    /// Step along height and width.
    pub stride: [usize; 2],
    /// Zero padding: top, left, bottom, right.
    pub padding: [usize; 4],
    /// Spacing of kernel taps along height and width.
    pub dilation: [usize; 2],
    /// Channel groups; `groups == in_channels` is depthwise.
    pub groups: usize,
}

/// `max_pool2d` / `avg_pool2d` attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dAttrs {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Step along height and width (defaults to the kernel).
    pub stride: [usize; 2],
    /// Padding: top, left, bottom, right. Padded cells never win a max and
    /// do not count in an average.
    pub padding: [usize; 4],
    /// Spacing of window taps along height and width (printed only when
    /// not 1).
    pub dilation: [usize; 2],
}

impl Pool2dAttrs {
    /// The span of the window along `axis`: `(kernel - 1)·dilation + 1`.
    pub fn extent(&self, axis: usize) -> usize {
        (self.kernel[axis] - 1) * self.dilation[axis] + 1
    }
}

/// One dimension of a `reshape` target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReshapeDim {
    /// A fixed extent or symbolic size.
    Dim(Dim),
    /// `-1`: whatever makes the element count match.
    Infer,
}

/// A graph operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input (its type is in the signature).
    Input,
    /// A constant tensor.
    Param(Param),
    /// Elementwise op of one operand.
    Unary(UnaryOp),
    /// Elementwise op of two broadcast operands.
    Binary(BinaryOp),
    /// NumPy `matmul`: `[..., m, k] @ [..., k, n]`, batch dims broadcast.
    MatMul,
    /// `x @ weight^T + bias` with a PyTorch `[out, in]` weight; bias optional.
    Linear,
    /// Softmax along one axis.
    Softmax {
        /// The normalized axis.
        axis: usize,
    },
    /// Log of softmax along one axis.
    LogSoftmax {
        /// The normalized axis.
        axis: usize,
    },
    /// 2-D convolution, NCHW; operands input, weight, optional bias.
    Conv2d(Conv2dAttrs),
    /// 2-D max pooling, NCHW.
    MaxPool2d(Pool2dAttrs),
    /// 2-D average pooling, NCHW.
    AvgPool2d(Pool2dAttrs),
    /// Mean over H and W: `[n, c, h, w] -> [n, c, 1, 1]`.
    GlobalAvgPool,
    /// Collapses dims before `axis` and from `axis` on into a matrix.
    Flatten {
        /// Split point, `0..=rank`.
        axis: usize,
    },
    /// Same data, new shape.
    Reshape {
        /// The target, possibly with one `-1`.
        shape: Vec<ReshapeDim>,
    },
    /// Permutes dimensions: output dim `i` is input dim `perm[i]`.
    Transpose {
        /// A permutation of `0..rank`.
        perm: Vec<usize>,
    },
    /// Elements `start..end` along one axis.
    Slice {
        /// The normalized axis.
        axis: usize,
        /// First index kept.
        start: usize,
        /// One past the last index kept.
        end: usize,
    },
    /// Normalizes over the dims from `axis` on; operands x, optional weight and bias.
    LayerNorm {
        /// First normalized dim.
        axis: usize,
        /// Added to the variance.
        eps: f64,
    },
    /// Inference batch normalization over channel dim 1; operands x, scale,
    /// bias, mean, var.
    BatchNorm {
        /// Added to the variance.
        eps: f64,
    },
    /// Joins operands along an axis.
    Concat {
        /// The normalized axis.
        axis: usize,
    },
    /// Sum, mean or max over axes.
    Reduce {
        /// Which reduction.
        kind: ReduceKind,
        /// Normalized, sorted, distinct axes.
        axes: Vec<usize>,
        /// Keep reduced dims as extent 1.
        keepdims: bool,
    },
}

/// Every op name, as written in both text formats.
pub const OP_NAMES: &[&str] = &[
    "input",
    "param",
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "gelu",
    "erf",
    "sqrt",
    "pow",
    "identity",
    "add",
    "sub",
    "mul",
    "div",
    "matmul",
    "linear",
    "softmax",
    "log_softmax",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool",
    "flatten",
    "reshape",
    "transpose",
    "slice",
    "layer_norm",
    "batch_norm",
    "concat",
    "sum",
    "mean",
    "max",
];

impl Op {
    /// The op's name in text.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Param(_) => "param",
            Op::Unary(u) => match u {
                UnaryOp::Relu => "relu",
                UnaryOp::Sigmoid => "sigmoid",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Exp => "exp",
                UnaryOp::Gelu => "gelu",
                UnaryOp::Erf => "erf",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Pow(_) => "pow",
                UnaryOp::Identity => "identity",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Pow => "pow",
            },
            Op::MatMul => "matmul",
            Op::Linear => "linear",
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Conv2d(_) => "conv2d",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Flatten { .. } => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::LayerNorm { .. } => "layer_norm",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Concat { .. } => "concat",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Sum => "sum",
                ReduceKind::Mean => "mean",
                ReduceKind::Max => "max",
            },
        }
    }

    /// How many operands the op takes: `(min, max)`, `max = None` for any.
    pub fn arity(&self) -> (usize, Option<usize>) {
        arity_of(self.name())
    }

    /// The attributes in printing order.
    pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
        let ints =
            |v: &[usize]| AttrValue::List(v.iter().map(|&x| AttrValue::Int(x as i64)).collect());
        let int = |v: usize| AttrValue::Int(v as i64);
        match self {
            Op::Unary(UnaryOp::Pow(e)) => vec![("exponent", AttrValue::Float32(*e))],
            Op::Input
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::MatMul
            | Op::Linear
            | Op::GlobalAvgPool => {
                vec![]
            }
            Op::Param(p) => p.attrs(),
            Op::Softmax { axis }
            | Op::LogSoftmax { axis }
            | Op::Concat { axis }
            | Op::Flatten { axis } => {
                vec![("axis", int(*axis))]
            }
            Op::Conv2d(c) => vec![
                ("stride", ints(&c.stride)),
                ("padding", ints(&c.padding)),
                ("dilation", ints(&c.dilation)),
                ("groups", int(c.groups)),
            ],
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                let mut attrs = vec![
                    ("kernel", ints(&p.kernel)),
                    ("stride", ints(&p.stride)),
                    ("padding", ints(&p.padding)),
                ];
                if p.dilation != [1, 1] {
                    attrs.push(("dilation", ints(&p.dilation)));
                }
                attrs
            }
            Op::Reshape { shape } => vec![(
                "shape",
                AttrValue::List(
                    shape
                        .iter()
                        .map(|d| match d {
                            ReshapeDim::Dim(Dim::Static(n)) => int(*n),
                            ReshapeDim::Dim(Dim::Symbol(s)) => AttrValue::Ident(s.clone()),
                            ReshapeDim::Infer => AttrValue::Int(-1),
                        })
                        .collect(),
                ),
            )],
            Op::Transpose { perm } => vec![("perm", ints(perm))],
            Op::Slice { axis, start, end } => {
                vec![
                    ("axis", int(*axis)),
                    ("start", int(*start)),
                    ("end", int(*end)),
                ]
            }
            Op::LayerNorm { axis, eps } => {
                vec![("axis", int(*axis)), ("eps", AttrValue::Float(*eps))]
            }
            Op::BatchNorm { eps } => vec![("eps", AttrValue::Float(*eps))],
            Op::Reduce { axes, keepdims, .. } => vec![
                ("axes", ints(axes)),
                ("keepdims", AttrValue::Ident(keepdims.to_string())),
            ],
        }
    }

    /// Builds an op from its name, named attributes and operand types.
    ///
    /// Attributes not given take their defaults; an unknown or ill-typed
    /// attribute is an [`AttrError`] naming it. `param` and `input` are not
    /// built here: they carry data or a signature slot, not attributes.
    pub fn from_attrs(
        name: &str,
        attrs: &[(String, AttrValue)],
        operands: &[&TensorType],
    ) -> Result<Op, AttrError> {
        let allowed: &[&str] = allowed_attrs(name).ok_or_else(|| AttrError {
            attr: None,
            message: format!("unknown op `{name}`"),
        })?;
        for (i, (k, _)) in attrs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                let expected = if allowed.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("expected one of: {}", allowed.join(", "))
                };
                return Err(attr_err(
                    k,
                    format!("`{name}` has no argument `{k}`; {expected}"),
                ));
            }
            if attrs[..i].iter().any(|(p, _)| p == k) {
                return Err(attr_err(k, format!("argument `{k}` is given twice")));
            }
        }
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let rank = operands.first().map_or(0, |t| t.shape.rank());
        let axis_of = |k: &str, default: i64, rank: usize| -> Result<usize, AttrError> {
            let v = match get(k) {
                None => default,
                Some(v) => v
                    .as_int()
                    .ok_or_else(|| attr_err(k, format!("`{k}` must be an integer")))?,
            };
            normalize_axis(v, rank).map_err(|m| attr_err(k, m))
        };
        let pair = |k: &str, default: [usize; 2]| -> Result<[usize; 2], AttrError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match non_negative(k, v)?.as_slice() {
                    [a] => Ok([*a, *a]),
                    [a, b] => Ok([*a, *b]),
                    _ => Err(attr_err(k, format!("`{k}` takes one or two integers"))),
                },
            }
        };
        let quad = |k: &str| -> Result<[usize; 4], AttrError> {
            match get(k) {
                None => Ok([0; 4]),
                Some(v) => match non_negative(k, v)?.as_slice() {
                    [a] => Ok([*a; 4]),
                    [h, w] => Ok([*h, *w, *h, *w]),
                    [t, l, b, r] => Ok([*t, *l, *b, *r]),
                    _ => Err(attr_err(
                        k,
                        format!("`{k}` takes 1, 2 (h, w) or 4 (top, left, bottom, right) integers"),
                    )),
                },
            }
        };
        let positive = |k: &str, v: [usize; 2]| -> Result<[usize; 2], AttrError> {
            if v.contains(&0) {
                Err(attr_err(k, format!("`{k}` must be positive")))
            } else {
                Ok(v)
            }
        };
        let eps = || -> Result<f64, AttrError> {
            match get("eps") {
                None => Ok(1e-5),
                Some(v) => match v.as_float() {
                    Some(e) if e >= 0.0 && e.is_finite() => Ok(e),
                    _ => Err(attr_err("eps", "`eps` must be a non-negative number")),
                },
            }
        };
        Ok(match name {
            "relu" => Op::Unary(UnaryOp::Relu),
            "sigmoid" => Op::Unary(UnaryOp::Sigmoid),
            "tanh" => Op::Unary(UnaryOp::Tanh),
            "exp" => Op::Unary(UnaryOp::Exp),
            "gelu" => Op::Unary(UnaryOp::Gelu),
            "erf" => Op::Unary(UnaryOp::Erf),
            "sqrt" => Op::Unary(UnaryOp::Sqrt),
            "pow" if operands.len() == 2 => {
                if get("exponent").is_some() {
                    return Err(attr_err(
                        "exponent",
                        "`pow` takes an exponent operand or `exponent = E`, not both",
                    ));
                }
                Op::Binary(BinaryOp::Pow)
            }
            "pow" => match get("exponent").map(AttrValue::as_float) {
                None => {
                    return Err(AttrError {
                        attr: None,
                        message: "`pow` needs `exponent = E`".into(),
                    })
                }
                Some(Some(e)) if (e as f32).is_finite() => Op::Unary(UnaryOp::Pow(e as f32)),
                Some(_) => return Err(attr_err("exponent", "`exponent` must be a finite number")),
            },
            "identity" => Op::Unary(UnaryOp::Identity),
            "add" => Op::Binary(BinaryOp::Add),
            "sub" => Op::Binary(BinaryOp::Sub),
            "mul" => Op::Binary(BinaryOp::Mul),
            "div" => Op::Binary(BinaryOp::Div),
            "matmul" => Op::MatMul,
            "linear" => Op::Linear,
            "global_avg_pool" => Op::GlobalAvgPool,
            "softmax" => Op::Softmax {
                axis: axis_of("axis", -1, rank)?,
            },
            "log_softmax" => Op::LogSoftmax {
                axis: axis_of("axis", -1, rank)?,
            },
            "concat" => Op::Concat {
                axis: axis_of("axis", 0, rank)?,
            },
            "flatten" => Op::Flatten {
                axis: axis_of("axis", 1, rank + 1)?,
            },
            "conv2d" => {
                let groups = match get("groups") {
                    None => 1,
                    Some(v) => match v.as_int() {
                        Some(g) if g > 0 => g as usize,
                        _ => return Err(attr_err("groups", "`groups` must be a positive integer")),
                    },
                };
                Op::Conv2d(Conv2dAttrs {
                    stride: positive("stride", pair("stride", [1, 1])?)?,
                    padding: quad("padding")?,
                    dilation: positive("dilation", pair("dilation", [1, 1])?)?,
                    groups,
                })
            }
            "max_pool2d" | "avg_pool2d" => {
                let kernel = match get("kernel") {
                    None => {
                        return Err(AttrError {
                            attr: None,
                            message: format!("`{name}` needs `kernel = [kh, kw]`"),
                        })
                    }
                    Some(_) => positive("kernel", pair("kernel", [1, 1])?)?,
                };
                let attrs = Pool2dAttrs {
                    kernel,
                    stride: positive("stride", pair("stride", kernel)?)?,
                    padding: quad("padding")?,
                    dilation: positive("dilation", pair("dilation", [1, 1])?)?,
                };
                if attrs.padding[0].max(attrs.padding[2]) >= attrs.extent(0)
                    || attrs.padding[1].max(attrs.padding[3]) >= attrs.extent(1)
                {
                    return Err(attr_err(
                        "padding",
                        "padding must be smaller than the (dilated) kernel",
                    ));
                }
                if name == "max_pool2d" {
                    Op::MaxPool2d(attrs)
                } else {
                    Op::AvgPool2d(attrs)
                }
            }
            "reshape" => {
                let v = get("shape").ok_or_else(|| AttrError {
                    attr: None,
                    message: "`reshape` needs `shape = [...]`".into(),
                })?;
                let AttrValue::List(items) = v else {
                    return Err(attr_err("shape", "`shape` must be a list"));
                };
                let mut shape = Vec::new();
                for item in items {
                    shape.push(match item {
                        AttrValue::Int(-1) => ReshapeDim::Infer,
                        AttrValue::Int(n) if *n >= 0 => ReshapeDim::Dim(Dim::Static(*n as usize)),
                        AttrValue::Ident(s) => ReshapeDim::Dim(Dim::Symbol(s.clone())),
                        _ => {
                            return Err(attr_err(
                                "shape",
                                "`shape` holds extents, symbolic sizes or one -1",
                            ))
                        }
                    });
                }
                if shape.iter().filter(|d| **d == ReshapeDim::Infer).count() > 1 {
                    return Err(attr_err("shape", "`shape` may hold at most one -1"));
                }
                Op::Reshape { shape }
            }
            "transpose" => {
                let perm = match get("perm") {
                    None => (0..rank).rev().collect(),
                    Some(v) => {
                        let raw = v
                            .as_ints()
                            .ok_or_else(|| attr_err("perm", "`perm` must be a list of integers"))?;
                        let mut perm = Vec::new();
                        for p in raw {
                            perm.push(normalize_axis(p, rank).map_err(|m| attr_err("perm", m))?);
                        }
                        let mut sorted = perm.clone();
                        sorted.sort_unstable();
                        if sorted != (0..rank).collect::<Vec<_>>() {
                            return Err(attr_err(
                                "perm",
                                format!("`perm` must be a permutation of 0..{rank}"),
                            ));
                        }
                        perm
                    }
                };
                Op::Transpose { perm }
            }
            "slice" => {
                let axis = axis_of("axis", 0, rank)?;
                let extent = operands
                    .first()
                    .and_then(|t| t.shape.0.get(axis))
                    .and_then(Dim::as_static);
                let bound = |k: &str, default: Option<usize>| -> Result<usize, AttrError> {
                    let v = match (get(k), default) {
                        (Some(v), _) => v
                            .as_int()
                            .ok_or_else(|| attr_err(k, format!("`{k}` must be an integer")))?,
                        (None, Some(d)) => return Ok(d),
                        (None, None) => return Err(attr_err(k, format!("`slice` needs `{k}`"))),
                    };
                    match (v < 0, extent) {
                        (false, _) => Ok(v as usize),
                        (true, Some(n)) if v.unsigned_abs() <= n as u64 => {
                            Ok(n - v.unsigned_abs() as usize)
                        }
                        _ => Err(attr_err(k, format!("`{k}` = {v} is out of range"))),
                    }
                };
                let start = bound("start", Some(0))?;
                let end = bound("end", extent)?;
                if start >= end {
                    return Err(attr_err("end", format!("empty slice {start}..{end}")));
                }
                Op::Slice { axis, start, end }
            }
            "layer_norm" => Op::LayerNorm {
                axis: axis_of("axis", -1, rank)?,
                eps: eps()?,
            },
            "batch_norm" => Op::BatchNorm { eps: eps()? },
            "sum" | "mean" | "max" => {
                let kind = match name {
                    "sum" => ReduceKind::Sum,
                    "mean" => ReduceKind::Mean,
                    _ => ReduceKind::Max,
                };
                let mut axes = match get("axes").or(get("axis")) {
                    None => (0..rank).collect(),
                    Some(v) => {
                        let raw = v
                            .as_ints()
                            .ok_or_else(|| attr_err("axes", "`axes` must be a list of integers"))?;
                        let mut axes = Vec::new();
                        for a in raw {
                            axes.push(normalize_axis(a, rank).map_err(|m| attr_err("axes", m))?);
                        }
                        axes
                    }
                };
                axes.sort_unstable();
                let before = axes.len();
                axes.dedup();
                if axes.len() != before {
                    return Err(attr_err("axes", "`axes` repeats an axis"));
                }
                let keepdims = match get("keepdims") {
                    None | Some(AttrValue::Int(0)) => false,
                    Some(AttrValue::Int(1)) => true,
                    Some(AttrValue::Ident(s)) if s == "false" => false,
                    Some(AttrValue::Ident(s)) if s == "true" => true,
                    Some(_) => return Err(attr_err("keepdims", "`keepdims` is true or false")),
                };
                Op::Reduce {
                    kind,
                    axes,
                    keepdims,
                }
            }
            _ => {
                return Err(AttrError {
                    attr: None,
                    message: format!("`{name}` cannot be built from attributes"),
                })
            }
        })
    }

    /// True for ops whose value is known at compile time without operands.
    pub fn is_constant(&self) -> bool {
        matches!(self, Op::Param(_))
    }
}

fn non_negative(k: &str, v: &AttrValue) -> Result<Vec<usize>, AttrError> {
    let ints = v
        .as_ints()
        .ok_or_else(|| attr_err(k, format!("`{k}` must be an integer or a list of integers")))?;
    ints.into_iter()
        .map(|i| usize::try_from(i).map_err(|_| attr_err(k, format!("`{k}` must not be negative"))))
        .collect()
}

fn allowed_attrs(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "relu" | "sigmoid" | "tanh" | "exp" | "gelu" | "erf" | "sqrt" | "identity" | "add"
        | "sub" | "mul" | "div" | "matmul" | "linear" | "global_avg_pool" => &[],
        "pow" => &["exponent"],
        "softmax" | "log_softmax" | "concat" | "flatten" => &["axis"],
        "conv2d" => &["stride", "padding", "dilation", "groups"],
        "max_pool2d" | "avg_pool2d" => &["kernel", "stride", "padding", "dilation"],
        "reshape" => &["shape"],
        "transpose" => &["perm"],
        "slice" => &["axis", "start", "end"],
        "layer_norm" => &["axis", "eps"],
        "batch_norm" => &["eps"],
        "sum" | "mean" | "max" => &["axes", "axis", "keepdims"],
        _ => return None,
    })
}

/// Operand counts of an op by name: `(min, max)`.
pub fn arity_of(name: &str) -> (usize, Option<usize>) {
    match name {
        "input" | "param" => (0, Some(0)),
        "add" | "sub" | "mul" | "div" | "matmul" => (2, Some(2)),
        "pow" => (1, Some(2)),
        "linear" | "conv2d" => (2, Some(3)),
        "layer_norm" => (1, Some(3)),
        "batch_norm" => (5, Some(5)),
        "concat" => (1, None),
        _ => (1, Some(1)),
    }
}
