//! ONNX graph to graph IR: the value table, inputs, initializers, outputs,
//! and the walk over nodes that hands each one to [`super::ops`].
//!
//! Values are either graph-IR tensors (`f32`, computed at run time or
//! params) or small integer constants known at import time ([`Ints`]): the
//! shapes, axes and indices that `Shape`, `Gather`, `Concat` and friends
//! compute before a `Reshape`. Symbolic sizes ride along in those
//! constants, so `Shape → Gather → Concat → Reshape` of a symbolic batch
//! becomes `reshape(x, shape = [batch, -1])`.
//!
//! Not done here: subgraphs (`If`, `Loop`), sequences, non-`f32` run-time
//! tensors, training-mode ops.

use super::proto::{attribute_type, data_type, GraphProto, ModelProto, NodeProto};
use super::tensor::{decode_tensor, TensorData};
use lopper_ir::graph::op::Attrs;
use lopper_ir::graph::{infer_type, AttrValue, NodeIndex, Op, Output, Param, UnaryOp};
use lopper_ir::{Diagnostic, Dim, Graph, Shape, Tensor, TensorType};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub(super) type Result<T> = std::result::Result<T, String>;

/// The ONNX operators the importer maps (default domain).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Erf",
    "Exp",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LayerNormalization",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pow",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// The oldest default-domain opset the importer reads.
pub const MIN_OPSET: i64 = 13;

/// One element of an integer constant: a number, or a symbolic size that a
/// `Shape` read off a tensor.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum IntElem {
    Known(i64),
    Symbol(String),
}

/// An integer tensor known at import time.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ints {
    pub shape: Vec<usize>,
    pub values: Vec<IntElem>,
}

impl Ints {
    pub fn known(shape: Vec<usize>, values: Vec<i64>) -> Ints {
        Ints {
            shape,
            values: values.into_iter().map(IntElem::Known).collect(),
        }
    }

    /// The values, all of which must be numbers.
    pub fn numbers(&self, what: &str) -> Result<Vec<i64>> {
        self.values
            .iter()
            .map(|v| match v {
                IntElem::Known(n) => Ok(*n),
                IntElem::Symbol(s) => Err(format!(
                    "{what} depends on the symbolic size `{s}`, which is not known at compile time"
                )),
            })
            .collect()
    }
}

/// A value of the ONNX graph.
#[derive(Clone, Debug)]
pub(super) enum Value {
    /// An `f32` tensor of the graph IR.
    Tensor(NodeIndex),
    /// An integer constant.
    Ints(Ints),
}

/// The state of one import.
pub(super) struct Importer {
    pub g: Graph,
    values: HashMap<String, Value>,
    used_names: HashSet<String>,
    unknown_dims: usize,
}

/// Maps a decoded model to graph IR; `model_dir` is where external data
/// files are found. Every unsupported operator is reported at once.
pub fn import_model(
    model: &ModelProto,
    model_dir: &Path,
) -> std::result::Result<Graph, Vec<Diagnostic>> {
    let bare = |m: String| vec![Diagnostic::bare(m)];
    if model.graph.is_none() && model.opset_import.is_empty() {
        return Err(bare(
            "not a valid ONNX model: it has no graph and imports no opset".into(),
        ));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| bare("the model imports no version of the default ONNX opset".into()))?;
    if opset < MIN_OPSET {
        return Err(bare(format!(
            "the model uses ONNX opset {opset}; lopper reads opsets {MIN_OPSET} and up \
             (convert it with `onnx.version_converter.convert_version(model, {MIN_OPSET})`)"
        )));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bare("the model has no graph".into()))?;
    check_supported(model, graph, opset)?;
    let name = sanitize(if graph.name.is_empty() {
        "model"
    } else {
        &graph.name
    });
    let mut im = Importer {
        g: Graph::new(name.replace('.', "_")),
        values: HashMap::new(),
        used_names: HashSet::new(),
        unknown_dims: 0,
    };
    im.import(graph, model_dir).map_err(bare)?;
    super::gelu::fuse_gelu(&mut im.g);
    // Constants that only fed shapes or attributes (and GELU's leftovers).
    remove_dead(&mut im.g);
    lopper_ir::graph::verify(&im.g).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                Diagnostic::bare(format!(
                    "internal error: the imported graph fails verification: {e}"
                ))
            })
            .collect::<Vec<_>>()
    })?;
    Ok(im.g)
}

/// Removes nodes (not inputs) that nothing uses and no output names.
fn remove_dead(g: &mut Graph) {
    loop {
        let dead: Vec<NodeIndex> = g
            .graph
            .node_indices()
            .filter(|&n| g.node(n).op != Op::Input && !g.is_output(n) && g.users(n).is_empty())
            .collect();
        if dead.is_empty() {
            return;
        }
        for n in dead {
            g.remove(n);
        }
    }
}

/// One error naming every node whose operator lopper does not map.
fn check_supported(
    model: &ModelProto,
    graph: &GraphProto,
    opset: i64,
) -> std::result::Result<(), Vec<Diagnostic>> {
    let mut unsupported = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if default_domain && SUPPORTED_OPS.contains(&node.op_type.as_str()) {
            continue;
        }
        let version = if default_domain {
            opset.to_string()
        } else {
            model
                .opset_import
                .iter()
                .find(|o| o.domain == node.domain)
                .map_or("?".to_string(), |o| o.version.to_string())
        };
        let op = if default_domain {
            node.op_type.clone()
        } else {
            format!("{}::{}", node.domain, node.op_type)
        };
        unsupported.push(format!(
            "node {}: {op} (opset {version})",
            node_label(node, i)
        ));
    }
    if unsupported.is_empty() {
        return Ok(());
    }
    let mut d = Diagnostic::bare(format!(
        "the model uses {} node(s) of operators lopper does not import",
        unsupported.len()
    ));
    for u in unsupported {
        d = d.with_note(u);
    }
    Err(vec![d.with_note(format!(
        "supported: {}",
        SUPPORTED_OPS.join(", ")
    ))])
}

/// How errors name a node: its name, or its position when it has none.
pub(super) fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index}")
    } else {
        format!("`{}`", node.name)
    }
}

/// `raw` as a name of the model language: dot-separated segments of
/// letters, digits and `_`, each starting with a letter or `_`.
pub fn sanitize(raw: &str) -> String {
    let segments: Vec<String> = raw
        .split('.')
        .map(|seg| {
            let s = word_characters(seg);
            let s = s.trim_matches('_').to_string();
            match s.chars().next() {
                Some(c) if c.is_ascii_digit() => format!("_{s}"),
                _ => s,
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    let joined = segments.join(".");
    if joined.is_empty() {
        "v".to_string()
    } else {
        joined
    }
}

impl Importer {
    fn import(&mut self, graph: &GraphProto, model_dir: &Path) -> Result<()> {
        for t in &graph.initializer {
            if t.name.is_empty() {
                return Err("an initializer has no name".into());
            }
            let data =
                decode_tensor(t, model_dir).map_err(|e| format!("initializer `{}` {e}", t.name))?;
            let value = match data {
                TensorData::Float(tensor) => Value::Tensor(self.param(&t.name, tensor)),
                TensorData::Int(shape, values) => Value::Ints(Ints::known(shape, values)),
            };
            self.values.insert(t.name.clone(), value);
        }
        for input in &graph.input {
            if self.values.contains_key(&input.name) {
                continue; // an initializer listed as an input (IR version < 4)
            }
            let ty = self.input_type(input)?;
            let name = self.unique(&input.name);
            let n = self.g.add(name, Op::Input, ty, &[]);
            self.g.inputs.push(n);
            self.values.insert(input.name.clone(), Value::Tensor(n));
        }
        for (i, node) in graph.node.iter().enumerate() {
            let context =
                |e: String| format!("node {} ({}): {e}", node_label(node, i), node.op_type);
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                if !self.values.contains_key(input) {
                    return Err(context(format!(
                        "reads `{input}`, which no node before it, graph input or initializer defines"
                    )));
                }
            }
            let outputs = super::ops::import_node(self, node).map_err(context)?;
            for (name, value) in node.output.iter().zip(outputs) {
                if let Some(value) = value {
                    if !name.is_empty() {
                        self.values.insert(name.clone(), value);
                    }
                }
            }
        }
        if graph.output.is_empty() {
            return Err("the graph has no outputs".into());
        }
        let mut taken = HashSet::new();
        for out in &graph.output {
            let value = self
                .values
                .get(&out.name)
                .ok_or_else(|| format!("output `{}` is not computed by any node", out.name))?
                .clone();
            let Value::Tensor(mut n) = value else {
                return Err(format!(
                    "output `{}` is an integer tensor computed from shapes; lopper's outputs are f32",
                    out.name
                ));
            };
            let name = sanitize(&out.name);
            let needs_copy =
                matches!(self.g.node(n).op, Op::Input | Op::Param(_)) || !taken.insert(n);
            if needs_copy {
                n = self.add(
                    &format!("{}.copy", out.name),
                    Op::Unary(UnaryOp::Identity),
                    &[n],
                )?;
            }
            self.g.outputs.push(Output { name, node: n });
        }
        Ok(())
    }

    fn input_type(&mut self, input: &super::proto::ValueInfoProto) -> Result<TensorType> {
        let tensor = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| format!("graph input `{}` is not a tensor", input.name))?;
        if tensor.elem_type != data_type::FLOAT {
            return Err(format!(
                "graph input `{}` has element type {}; lopper computes in FLOAT (f32)",
                input.name,
                data_type::name(tensor.elem_type)
            ));
        }
        let shape = tensor.shape.as_ref().ok_or_else(|| {
            format!(
                "graph input `{}` has no shape; lopper needs at least its rank",
                input.name
            )
        })?;
        let mut dims = Vec::new();
        for d in &shape.dim {
            use super::proto::Dimension;
            dims.push(match &d.value {
                Some(Dimension::Value(v)) if *v > 0 => Dim::Static(*v as usize),
                Some(Dimension::Value(v)) => {
                    return Err(format!(
                        "graph input `{}` has a dimension of {v}",
                        input.name
                    ))
                }
                Some(Dimension::Param(p)) if !p.is_empty() => Dim::Symbol(symbol_name(p)),
                _ => {
                    self.unknown_dims += 1;
                    Dim::Symbol(format!("dim{}", self.unknown_dims))
                }
            });
        }
        Ok(TensorType::f32(Shape(dims)))
    }

    /// A graph-IR name not used yet, made from an ONNX name.
    pub fn unique(&mut self, raw: &str) -> String {
        let base = sanitize(raw);
        let mut name = base.clone();
        let mut k = 1;
        while self.used_names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used_names.insert(name.clone());
        name
    }

    /// Adds a node, typing it with the graph IR's rules.
    pub fn add(&mut self, name: &str, op: Op, operands: &[NodeIndex]) -> Result<NodeIndex> {
        let types: Vec<&TensorType> = operands.iter().map(|&o| &self.g.node(o).ty).collect();
        let ty = infer_type(&op, &types)?;
        let name = self.unique(name);
        Ok(self.g.add(name, op, ty, operands))
    }

    /// Adds a node built from a graph-IR op name and attributes.
    pub fn build(
        &mut self,
        name: &str,
        op: &str,
        attrs: Attrs,
        operands: &[NodeIndex],
    ) -> Result<NodeIndex> {
        let types: Vec<&TensorType> = operands.iter().map(|&o| &self.g.node(o).ty).collect();
        let op = Op::from_attrs(op, &attrs, &types).map_err(|e| match e.attr {
            Some(a) => format!("{} (`{a}` of the graph IR's `{op}`)", e.message),
            None => e.message,
        })?;
        self.add(name, op, operands)
    }

    /// A constant tensor.
    pub fn param(&mut self, name: &str, tensor: Tensor) -> NodeIndex {
        let ty = TensorType::f32(Shape::from_static(&tensor.shape));
        let name = self.unique(name);
        self.g.add(name, Op::Param(Param::literal(tensor)), ty, &[])
    }

    /// The type of a tensor value.
    pub fn ty(&self, n: NodeIndex) -> &TensorType {
        &self.g.node(n).ty
    }

    /// Input `i` of `node`, `None` when absent or empty.
    pub fn input(&self, node: &NodeProto, i: usize) -> Option<&Value> {
        node.input.get(i).filter(|s| !s.is_empty()).map(|s| {
            self.values
                .get(s)
                .expect("inputs checked before import_node")
        })
    }

    /// Input `i` as an `f32` tensor; integer constants are refused.
    pub fn tensor(&mut self, node: &NodeProto, i: usize) -> Result<NodeIndex> {
        match self.input(node, i) {
            Some(Value::Tensor(n)) => Ok(*n),
            Some(Value::Ints(_)) => Err(format!(
                "input {i} (`{}`) is an integer tensor; lopper computes in f32",
                node.input[i]
            )),
            None => Err(format!("needs input {i}")),
        }
    }

    /// Input `i` as a tensor when present.
    pub fn optional_tensor(&mut self, node: &NodeProto, i: usize) -> Result<Option<NodeIndex>> {
        if self.input(node, i).is_none() {
            return Ok(None);
        }
        self.tensor(node, i).map(Some)
    }

    /// Input `i` as an integer constant known at import time, if present.
    pub fn ints(&self, node: &NodeProto, i: usize) -> Result<Option<Ints>> {
        match self.input(node, i) {
            Some(Value::Ints(v)) => Ok(Some(v.clone())),
            Some(Value::Tensor(_)) => Err(format!(
                "input {i} (`{}`) must be an integer constant known at compile time",
                node.input[i]
            )),
            None => Ok(None),
        }
    }

    /// The data of a tensor value that is a constant, if it is one.
    pub fn constant_data(&self, n: NodeIndex) -> Option<&Tensor> {
        match &self.g.node(n).op {
            Op::Param(p) => Some(&p.data),
            _ => None,
        }
    }
}

/// `raw` with every character but ASCII letters, digits and `_` made `_`.
fn word_characters(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A symbolic size's name from an ONNX `dim_param`.
pub(super) fn symbol_name(raw: &str) -> String {
    let s = word_characters(raw);
    match s.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => s,
        _ => format!("n{s}"),
    }
}

/// Typed access to a node's attributes.
pub(super) struct Attributes<'a>(pub &'a NodeProto);

impl Attributes<'_> {
    fn get(
        &self,
        name: &str,
        ty: i32,
        what: &str,
    ) -> Result<Option<&super::proto::AttributeProto>> {
        match self.0.attribute.iter().find(|a| a.name == name) {
            None => Ok(None),
            Some(a) if !a.ref_attr_name.is_empty() => Err(format!(
                "attribute `{name}` refers to a function attribute; lopper does not import functions"
            )),
            Some(a) if a.r#type == ty || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute `{name}` should be {what} (type {ty}), found type {}",
                a.r#type
            )),
        }
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .get(name, attribute_type::INT, "an INT")?
            .map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .get(name, attribute_type::FLOAT, "a FLOAT")?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .get(name, attribute_type::INTS, "INTS")?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .get(name, attribute_type::FLOATS, "FLOATS")?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .get(name, attribute_type::STRING, "a STRING")?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&super::proto::TensorProto>> {
        Ok(self
            .get(name, attribute_type::TENSOR, "a TENSOR")?
            .and_then(|a| a.t.as_ref()))
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.attribute.iter().any(|a| a.name == name)
    }
}

/// A list attribute value of integers.
pub(super) fn int_list(v: &[i64]) -> AttrValue {
    AttrValue::List(v.iter().map(|&x| AttrValue::Int(x)).collect())
}
