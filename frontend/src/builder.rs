//! The builder: a checked [`ast::Model`](crate::ast::Model) becomes a graph.
//!
//! It resolves names, loads params (from the `weights` file or an
//! initializer), builds every op through [`Op::from_attrs`] and types it with
//! [`infer_type`], so a shape error is reported at the expression that causes
//! it. Errors do not stop the walk: a failed expression poisons its value, its
//! users stay silent, and every independent error of the file is reported.

use crate::ast::{BinaryOperator, Expr, Ident, Item, Model, Span};
use lopper_ir::diagnostic::line_col;
use lopper_ir::graph::op::{AttrValue, Attrs, BinaryOp, OP_NAMES};
use lopper_ir::graph::param::{Initializer, Param, ParamSource, MAX_PARAM_ELEMENTS};
use lopper_ir::graph::weights::WeightFiles;
use lopper_ir::graph::NodeIndex;
use lopper_ir::graph::{infer_type, Output};
use lopper_ir::{DType, Diagnostic, Graph, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

struct Builder<'a> {
    source: &'a str,
    graph: Graph,
    /// Name → value (`None` once its definition failed) and where it was defined.
    env: HashMap<String, (Option<NodeIndex>, Span)>,
    errors: Vec<Diagnostic>,
    next_temp: usize,
}

/// Builds the graph of `model`; `model_dir` is where relative weights paths
/// start, `source` the text (for notes that quote line numbers).
pub fn build_graph(
    model: &Model,
    model_dir: &Path,
    source: &str,
) -> Result<Graph, Vec<Diagnostic>> {
    let mut b = Builder {
        source,
        graph: Graph::new(model.name.name.clone()),
        env: HashMap::new(),
        errors: Vec::new(),
        next_temp: 0,
    };
    let weights = b.weights_path(model, model_dir);
    let mut files = WeightFiles::new();
    for item in &model.items {
        match item {
            Item::Weights { .. } => {}
            Item::Input { name, ty, ty_span } => b.input(name, ty, ty_span),
            Item::Param {
                name,
                ty,
                ty_span,
                init,
            } => b.param(
                name,
                ty,
                ty_span,
                init.as_ref(),
                weights.as_deref(),
                &mut files,
            ),
            Item::Let { name, value } => {
                let v = b.expr(value);
                if let Some(n) = v {
                    b.name_temp(n, &name.name);
                }
                b.define(name, v);
            }
            Item::Output { name, value } => b.output(name, value),
        }
    }
    if b.graph.outputs.is_empty() && b.errors.is_empty() {
        b.errors.push(Diagnostic::at(
            model.name.span.clone(),
            format!("model `{}` has no output", model.name.name),
            "declare one with `output NAME = ...`",
        ));
    }
    if !b.errors.is_empty() {
        return Err(b.errors);
    }
    b.renumber_temps();
    Ok(b.graph)
}

fn is_temp(name: &str) -> bool {
    name.bytes().all(|c| c.is_ascii_digit())
}

impl Builder<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, label: impl Into<String>) {
        self.errors.push(Diagnostic::at(span, message, label));
    }

    fn weights_path(&mut self, model: &Model, model_dir: &Path) -> Option<String> {
        let mut found: Option<(String, Span)> = None;
        for item in &model.items {
            if let Item::Weights { path, span } = item {
                if let Some((_, first)) = &found {
                    let (line, _) = line_col(self.source, first.start);
                    self.errors.push(
                        Diagnostic::at(
                            span.clone(),
                            "a model has one `weights` file",
                            "second `weights`",
                        )
                        .with_note(format!("the first is on line {line}")),
                    );
                } else {
                    let joined = model_dir.join(path);
                    found = Some((joined.to_string_lossy().into_owned(), span.clone()));
                }
            }
        }
        found.map(|(p, _)| p)
    }

    fn define(&mut self, name: &Ident, value: Option<NodeIndex>) {
        if let Some((_, first)) = self.env.get(&name.name) {
            let (line, col) = line_col(self.source, first.start);
            self.errors.push(
                Diagnostic::at(
                    name.span.clone(),
                    format!("`{}` is defined twice", name.name),
                    "defined again here",
                )
                .with_note(format!("first defined at {line}:{col}")),
            );
            return;
        }
        self.env
            .insert(name.name.clone(), (value, name.span.clone()));
    }

    fn temp(&mut self) -> String {
        self.next_temp += 1;
        (self.next_temp - 1).to_string()
    }

    /// Gives a freshly computed temporary a user's name.
    fn name_temp(&mut self, n: NodeIndex, name: &str) {
        let taken = self.graph.graph.node_weights().any(|w| w.name == name);
        if is_temp(&self.graph.graph[n].name) && !taken {
            self.graph.graph[n].name = name.to_string();
        }
    }

    /// Numbers the remaining temporaries 0, 1, 2 … in program order.
    fn renumber_temps(&mut self) {
        let order = self.graph.topo_order().unwrap_or_default();
        let mut next = 0;
        for n in order {
            if is_temp(&self.graph.graph[n].name) {
                self.graph.graph[n].name = next.to_string();
                next += 1;
            }
        }
    }

    fn check_size(&mut self, ty: &TensorType, span: &Span) -> bool {
        if ty.shape.numel().is_none()
            || ty
                .shape
                .as_static()
                .is_some_and(|s| lopper_ir::tensor::checked_numel(&s).is_none_or(|n| n > (1 << 40)))
        {
            self.error(
                span.clone(),
                format!("type {ty} is too large"),
                "too many elements",
            );
            return false;
        }
        true
    }

    fn input(&mut self, name: &Ident, ty: &TensorType, ty_span: &Span) {
        if ty.dtype != DType::F32 {
            self.error(
                ty_span.clone(),
                format!("input `{}` is {}; inputs must be f32", name.name, ty.dtype),
                "expected f32",
            );
            self.define(name, None);
            return;
        }
        if !self.check_size(ty, ty_span) {
            self.define(name, None);
            return;
        }
        let n = self
            .graph
            .add(name.name.clone(), Op::Input, ty.clone(), &[]);
        self.graph.inputs.push(n);
        self.define(name, Some(n));
    }

    fn param(
        &mut self,
        name: &Ident,
        ty: &TensorType,
        ty_span: &Span,
        init: Option<&Expr>,
        weights: Option<&str>,
        files: &mut WeightFiles,
    ) {
        let param = self.param_value(name, ty, ty_span, init, weights, files);
        let node = param.map(|p| {
            self.graph
                .add(name.name.clone(), Op::Param(p), ty.clone(), &[])
        });
        self.define(name, node);
    }

    fn param_value(
        &mut self,
        name: &Ident,
        ty: &TensorType,
        ty_span: &Span,
        init: Option<&Expr>,
        weights: Option<&str>,
        files: &mut WeightFiles,
    ) -> Option<Param> {
        if ty.dtype != DType::F32 {
            self.error(
                ty_span.clone(),
                format!("param `{}` is {}; params must be f32", name.name, ty.dtype),
                "expected f32",
            );
            return None;
        }
        let Some(shape) = ty.shape.as_static() else {
            self.error(
                ty_span.clone(),
                format!("param `{}` has symbolic dims in {}", name.name, ty.shape),
                "params need static shapes",
            );
            return None;
        };
        if lopper_ir::tensor::checked_numel(&shape).is_none_or(|n| n > MAX_PARAM_ELEMENTS) {
            self.error(
                ty_span.clone(),
                format!("param `{}` of type {ty} is too large", name.name),
                format!("at most {MAX_PARAM_ELEMENTS} elements"),
            );
            return None;
        }
        match init {
            None => {
                let Some(path) = weights else {
                    self.error(
                        name.span.clone(),
                        format!(
                            "param `{}` has no initializer and the model names no `weights` file",
                            name.name
                        ),
                        "no data for this param",
                    );
                    return None;
                };
                if files.known_unreadable(path) {
                    return None;
                }
                match files.load(path, &name.name, ty) {
                    Ok(t) => Some(Param {
                        data: Arc::new(t),
                        source: ParamSource::File {
                            path: path.to_string(),
                            tensor: name.name.clone(),
                        },
                        sparsity: None,
                    }),
                    Err(e) => {
                        self.error(name.span.clone(), e.0, "while loading this param");
                        None
                    }
                }
            }
            Some(Expr::List { items, span }) => {
                let mut values = Vec::new();
                for item in items {
                    match self.constant(item) {
                        Some(AttrValue::Int(i)) => values.push(i as f32),
                        Some(AttrValue::Float(f)) => values.push(f as f32),
                        Some(_) => {
                            self.error(
                                item.span(),
                                "a param literal holds numbers",
                                "not a number",
                            );
                            return None;
                        }
                        None => return None,
                    }
                }
                match Tensor::new(shape, values) {
                    Ok(t) => Some(Param::literal(t)),
                    Err(e) => {
                        self.error(
                            span.clone(),
                            format!("param `{}`: {e}", name.name),
                            "wrong number of values",
                        );
                        None
                    }
                }
            }
            Some(Expr::Call { callee, args, .. }) => {
                let Some(arg_names) = Initializer::arg_names(&callee.name) else {
                    self.error(
                        callee.span.clone(),
                        format!("unknown initializer `{}`", callee.name),
                        "expected zeros, ones, uniform, normal or kaiming",
                    );
                    return None;
                };
                let (named, spans) = self.named_args(&callee.name, arg_names, args)?;
                match Initializer::from_args(&callee.name, &named) {
                    Ok(init) => match init.generate(&shape) {
                        Ok(data) => Some(Param {
                            data: Arc::new(data),
                            source: ParamSource::Init(init),
                            sparsity: None,
                        }),
                        Err(message) => {
                            self.error(callee.span.clone(), message, "too many values");
                            None
                        }
                    },
                    Err(e) => {
                        let at = e
                            .attr
                            .and_then(|a| spans.get(&a).cloned())
                            .unwrap_or(callee.span.clone());
                        self.error(at, e.message, "here");
                        None
                    }
                }
            }
            Some(other) => {
                self.error(
                    other.span(),
                    "a param is initialized by a call like `normal(0, 0.1, seed = 1)` or a list",
                    "not an initializer",
                );
                None
            }
        }
    }

    /// Arguments of an initializer call as named attributes: positional
    /// arguments take the names in `positional` order.
    fn named_args(
        &mut self,
        callee: &str,
        positional: &[&str],
        args: &[crate::ast::Argument],
    ) -> Option<(Attrs, HashMap<String, Span>)> {
        let mut out = Vec::new();
        let mut spans = HashMap::new();
        let mut index = 0;
        for a in args {
            let key = match &a.name {
                Some(n) => n.name.clone(),
                None => {
                    let Some(k) = positional.get(index) else {
                        self.error(
                            a.value.span(),
                            format!(
                                "`{callee}` takes at most {} positional arguments",
                                positional.len()
                            ),
                            "extra argument",
                        );
                        return None;
                    };
                    index += 1;
                    k.to_string()
                }
            };
            let v = self.constant(&a.value)?;
            if spans.insert(key.clone(), a.value.span()).is_some() {
                self.error(
                    a.value.span(),
                    format!("argument `{key}` is given twice"),
                    "again here",
                );
                return None;
            }
            out.push((key, v));
        }
        Some((out, spans))
    }

    /// A compile-time constant argument: number, name, or list of them.
    fn constant(&mut self, e: &Expr) -> Option<AttrValue> {
        match e {
            Expr::Number { text, span } => match lopper_ir::graph::parse_number(text) {
                Some(v) => Some(v),
                None => {
                    self.error(
                        span.clone(),
                        format!("number `{text}` is out of range"),
                        "here",
                    );
                    None
                }
            },
            Expr::Neg { operand, .. } => match self.constant(operand)? {
                AttrValue::Int(i) => Some(AttrValue::Int(-i)),
                AttrValue::Float(f) => Some(AttrValue::Float(-f)),
                _ => {
                    self.error(e.span(), "only numbers can be negated here", "not a number");
                    None
                }
            },
            Expr::Name(i) => Some(AttrValue::Ident(i.name.clone())),
            Expr::List { items, .. } => {
                let mut v = Vec::new();
                for item in items {
                    v.push(self.constant(item)?);
                }
                Some(AttrValue::List(v))
            }
            _ => {
                self.error(
                    e.span(),
                    "this argument must be a constant (a number, a name or a list)",
                    "not a constant",
                );
                None
            }
        }
    }

    fn output(&mut self, name: &Ident, value: &Expr) {
        let Some(n) = self.expr(value) else { return };
        if let Some(prev) = self.graph.outputs.iter().find(|o| o.name == name.name) {
            let _ = prev;
            self.error(
                name.span.clone(),
                format!("output `{}` is declared twice", name.name),
                "again here",
            );
            return;
        }
        if !self.env.contains_key(&name.name) {
            self.name_temp(n, &name.name);
        }
        self.graph.outputs.push(Output {
            name: name.name.clone(),
            node: n,
        });
    }

    fn literal(&mut self, value: f32) -> NodeIndex {
        let name = self.temp();
        self.graph.add(
            name,
            Op::Param(Param::literal(Tensor::scalar(value))),
            TensorType::f32(lopper_ir::Shape(vec![])),
            &[],
        )
    }

    /// Adds `op` on `operands`, typing it; errors point at `span`.
    fn apply(&mut self, op: Op, operands: &[NodeIndex], span: Span) -> Option<NodeIndex> {
        let types: Vec<&TensorType> = operands.iter().map(|&o| &self.graph.graph[o].ty).collect();
        match infer_type(&op, &types) {
            Ok(ty) => {
                let name = self.temp();
                Some(self.graph.add(name, op, ty, operands))
            }
            Err(e) => {
                let described: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                self.errors.push(
                    Diagnostic::at(span, format!("`{}`: {e}", op.name()), "in this expression")
                        .with_note(format!("operand types: {}", described.join(", "))),
                );
                None
            }
        }
    }

    fn expr(&mut self, e: &Expr) -> Option<NodeIndex> {
        match e {
            Expr::Name(i) => match self.env.get(&i.name) {
                Some((v, _)) => *v,
                None => {
                    let mut d = Diagnostic::at(
                        i.span.clone(),
                        format!("unknown value `{}`", i.name),
                        "not defined before this line",
                    );
                    let names: Vec<&str> = self.env.keys().map(String::as_str).collect();
                    if let Some(s) = closest(&i.name, &names) {
                        d = d.with_note(format!("did you mean `{s}`?"));
                    }
                    self.errors.push(d);
                    None
                }
            },
            Expr::Number { text, span } => match lopper_ir::graph::parse_number(text) {
                Some(AttrValue::Int(i)) => Some(self.literal(i as f32)),
                Some(AttrValue::Float(f)) => Some(self.literal(f as f32)),
                _ => {
                    self.error(
                        span.clone(),
                        format!("number `{text}` is out of range"),
                        "here",
                    );
                    None
                }
            },
            Expr::Neg { operand, span } => {
                if let Expr::Number { .. } = operand.as_ref() {
                    if let Some(AttrValue::Int(_) | AttrValue::Float(_)) = self.constant(e).as_ref()
                    {
                        let v = match self.constant(e) {
                            Some(AttrValue::Int(i)) => i as f32,
                            Some(AttrValue::Float(f)) => f as f32,
                            _ => 0.0,
                        };
                        return Some(self.literal(v));
                    }
                }
                let x = self.expr(operand)?;
                let zero = self.literal(0.0);
                self.apply(Op::Binary(BinaryOp::Sub), &[zero, x], span.clone())
            }
            Expr::Binary { op, lhs, rhs, span } => {
                let (a, b) = (self.expr(lhs), self.expr(rhs));
                let op = match op {
                    BinaryOperator::Add => Op::Binary(BinaryOp::Add),
                    BinaryOperator::Sub => Op::Binary(BinaryOp::Sub),
                    BinaryOperator::Mul => Op::Binary(BinaryOp::Mul),
                    BinaryOperator::Div => Op::Binary(BinaryOp::Div),
                    BinaryOperator::MatMul => Op::MatMul,
                };
                self.apply(op, &[a?, b?], span.clone())
            }
            Expr::List { span, .. } => {
                self.error(
                    span.clone(),
                    "a list is not a tensor value here",
                    "lists are only arguments",
                );
                None
            }
            Expr::Call { callee, args, span } => self.call(callee, args, span),
        }
    }

    fn call(
        &mut self,
        callee: &Ident,
        args: &[crate::ast::Argument],
        span: &Span,
    ) -> Option<NodeIndex> {
        let name = callee.name.as_str();
        if matches!(name, "input" | "param") || !OP_NAMES.contains(&name) {
            let mut d = Diagnostic::at(
                callee.span.clone(),
                format!("unknown op `{name}`"),
                "not an op",
            );
            if Initializer::arg_names(name).is_some() {
                d = d.with_note("initializers are written in `param` declarations");
            } else {
                let ops: Vec<&str> = OP_NAMES
                    .iter()
                    .copied()
                    .filter(|o| !matches!(*o, "input" | "param"))
                    .collect();
                if let Some(s) = closest(name, &ops) {
                    d = d.with_note(format!("did you mean `{s}`?"));
                }
            }
            self.errors.push(d);
            return None;
        }
        let mut operands = Vec::new();
        let mut attrs = Vec::new();
        let mut attr_spans = HashMap::new();
        let mut ok = true;
        for a in args {
            match &a.name {
                None => match self.expr(&a.value) {
                    Some(n) => operands.push(n),
                    None => ok = false,
                },
                Some(key) => match self.constant(&a.value) {
                    Some(v) => {
                        attr_spans.insert(key.name.clone(), key.span.start..a.value.span().end);
                        attrs.push((key.name.clone(), v));
                    }
                    None => ok = false,
                },
            }
        }
        if !ok {
            return None;
        }
        let (min, max) = lopper_ir::graph::op::arity_of(name);
        if operands.len() < min || max.is_some_and(|m| operands.len() > m) {
            let expected = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            self.error(
                span.clone(),
                format!(
                    "`{name}` takes {expected} tensor operand(s), got {}",
                    operands.len()
                ),
                "wrong number of operands",
            );
            return None;
        }
        let types: Vec<&TensorType> = operands.iter().map(|&o| &self.graph.graph[o].ty).collect();
        match Op::from_attrs(name, &attrs, &types) {
            Ok(op) => self.apply(op, &operands, span.clone()),
            Err(e) => {
                let at = e
                    .attr
                    .and_then(|a| attr_spans.get(&a).cloned())
                    .unwrap_or(span.clone());
                self.error(at, e.message, "here");
                None
            }
        }
    }
}

/// The candidate within edit distance 2 of `name`, if any.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
