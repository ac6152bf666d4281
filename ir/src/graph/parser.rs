//! The `.gir` parser: text back into a [`Graph`], then the verifier.
//!
//! Values may be used before the line that defines them, so that a cycle in
//! hand-written text is reported as a cycle rather than as an undefined name.
//! Every error found is reported, each at its line and column: syntax errors
//! stop the parse, name and attribute errors are collected, and the verifier's
//! findings point at the node they concern.

use super::op::{AttrValue, Op};
use super::param::Param;
use super::weights::WeightFiles;
use super::{verify, Graph, Output};
use crate::diagnostic::{from_pest, Diagnostic};
use crate::types::{DType, Dim, Shape, TensorType};
use pest::iterators::Pair;
use pest::Parser;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::ops::Range;

#[derive(pest_derive::Parser)]
#[grammar = "graph/gir.pest"]
struct GirParser;

fn describe(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of file",
        Rule::gir => "`graph @name(...)`",
        Rule::arguments | Rule::argument => "an argument `%name: f32[...]`",
        Rule::results | Rule::result => "a result `name: f32[...]`",
        Rule::statement => "a statement `%name = op ...`",
        Rule::operands | Rule::value => "a value `%name`",
        Rule::ret => "`return`",
        Rule::attributes => "attributes `{...}`",
        Rule::attribute => "an attribute `name = value`",
        Rule::list => "a list",
        Rule::colon => "`:`",
        Rule::string => "a string",
        Rule::number => "a number",
        Rule::tensor_type => "a type `f32[...]`",
        Rule::dtype => "a dtype",
        Rule::dim => "a dimension",
        Rule::op_name => "an op name",
        Rule::name => "a name",
        _ => "a token",
    }
    .to_string()
}

fn span(p: &Pair<Rule>) -> Range<usize> {
    p.as_span().start()..p.as_span().end()
}

/// Parses a tensor type pair (`f32[batch,784]`).
fn tensor_type(p: Pair<Rule>) -> Result<TensorType, Diagnostic> {
    let mut inner = p.into_inner();
    let d = inner.next().expect("grammar: dtype");
    let dtype = DType::from_name(d.as_str()).ok_or_else(|| {
        Diagnostic::at(
            span(&d),
            format!("unknown dtype `{}`", d.as_str()),
            "expected f32 or i64",
        )
    })?;
    let mut dims = Vec::new();
    for dim in inner {
        let text = dim.as_str();
        dims.push(if text.as_bytes()[0].is_ascii_digit() {
            Dim::Static(text.parse().map_err(|_| {
                Diagnostic::at(
                    span(&dim),
                    format!("dimension `{text}` is too large"),
                    "too large",
                )
            })?)
        } else {
            Dim::Symbol(text.to_string())
        });
    }
    Ok(TensorType {
        dtype,
        shape: Shape(dims),
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses an attribute value pair (shared with the DSL through [`attr_value_of`]).
fn attr_value(p: Pair<Rule>) -> Result<AttrValue, Diagnostic> {
    Ok(match p.as_rule() {
        Rule::list => AttrValue::List(p.into_inner().map(attr_value).collect::<Result<_, _>>()?),
        Rule::string => AttrValue::Str(unescape(p.into_inner().next().map_or("", |s| s.as_str()))),
        Rule::number => attr_value_of(p.as_str()).ok_or_else(|| {
            Diagnostic::at(
                span(&p),
                format!("bad number `{}`", p.as_str()),
                "not a number",
            )
        })?,
        _ => AttrValue::Ident(p.as_str().to_string()),
    })
}

/// Parses `{name = value, ...}` text (the attributes of a statement) at
/// byte `offset` of a larger source, for the loop IR's parser.
pub(crate) fn parse_attributes(
    text: &str,
    offset: usize,
) -> Result<Vec<(String, AttrValue)>, Diagnostic> {
    let mut pairs = GirParser::parse(Rule::attributes, text)
        .map_err(|e| from_pest(&e, text, describe).shifted(offset))?;
    let mut out = Vec::new();
    for a in pairs.next().expect("grammar: attributes").into_inner() {
        let mut ai = a.into_inner();
        let key = ai.next().expect("grammar: name").as_str().to_string();
        let value =
            attr_value(ai.next().expect("grammar: value")).map_err(|d| d.shifted(offset))?;
        out.push((key, value));
    }
    Ok(out)
}

/// Parses a tensor type (`f32[batch,784]`) at byte `offset` of a larger source.
pub(crate) fn parse_tensor_type(text: &str, offset: usize) -> Result<TensorType, Diagnostic> {
    let mut pairs = GirParser::parse(Rule::tensor_type, text)
        .map_err(|e| from_pest(&e, text, describe).shifted(offset))?;
    tensor_type(pairs.next().expect("grammar: type")).map_err(|d| d.shifted(offset))
}

/// The value of a number literal: an integer when it has no `.`, exponent,
/// `inf` or `NaN`, otherwise a float.
pub fn attr_value_of(text: &str) -> Option<AttrValue> {
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        text.parse().ok().map(AttrValue::Int)
    } else {
        text.parse().ok().map(AttrValue::Float)
    }
}

struct Statement {
    name: String,
    name_span: Range<usize>,
    op: String,
    op_span: Range<usize>,
    operands: Vec<(String, Range<usize>)>,
    attrs: Vec<(String, AttrValue)>,
    attr_spans: HashMap<String, Range<usize>>,
    ty: TensorType,
}

/// Parses `.gir` text into a verified graph, or every error found.
pub fn parse_gir(source: &str) -> Result<Graph, Vec<Diagnostic>> {
    let mut pairs =
        GirParser::parse(Rule::gir, source).map_err(|e| vec![from_pest(&e, source, describe)])?;
    let top = pairs.next().expect("grammar: gir");
    let mut errors = Vec::new();
    let mut g = Graph::default();
    let mut names: HashMap<String, NodeIndex> = HashMap::new();
    let mut spans: HashMap<String, Range<usize>> = HashMap::new();
    let mut statements = Vec::new();
    let mut results = Vec::new();
    let mut returns = Vec::new();
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::name => g.name = p.as_str().to_string(),
            Rule::arguments => {
                for arg in p.into_inner() {
                    let mut it = arg.into_inner().filter(|p| p.as_rule() != Rule::colon);
                    let v = it.next().expect("grammar: value");
                    let name = v.as_str()[1..].to_string();
                    match tensor_type(it.next().expect("grammar: type")) {
                        Ok(ty) => {
                            if names.contains_key(&name) {
                                errors.push(Diagnostic::at(
                                    span(&v),
                                    format!("duplicate name `%{name}`"),
                                    "defined again here",
                                ));
                                continue;
                            }
                            let n = g.add(name.clone(), Op::Input, ty, &[]);
                            g.inputs.push(n);
                            names.insert(name.clone(), n);
                            spans.insert(name, span(&v));
                        }
                        Err(d) => errors.push(d),
                    }
                }
            }
            Rule::results => {
                for r in p.into_inner() {
                    let mut it = r.into_inner().filter(|p| p.as_rule() != Rule::colon);
                    let name = it.next().expect("grammar: name").as_str().to_string();
                    match tensor_type(it.next().expect("grammar: type")) {
                        Ok(ty) => results.push((name, ty)),
                        Err(d) => errors.push(d),
                    }
                }
            }
            Rule::statement => match statement(p) {
                Ok(s) => statements.push(s),
                Err(d) => errors.push(d),
            },
            Rule::ret => {
                for v in p.into_inner() {
                    returns.push((v.as_str()[1..].to_string(), span(&v)));
                }
            }
            _ => {}
        }
    }
    // Nodes first, with placeholder ops, so that operands may refer forward.
    let mut created = Vec::new();
    for s in &statements {
        if let Some(prev) = spans.get(&s.name) {
            errors.push(
                Diagnostic::at(
                    s.name_span.clone(),
                    format!("duplicate name `%{}`", s.name),
                    "defined again here",
                )
                .with_note({
                    let (line, col) = crate::diagnostic::line_col(source, prev.start);
                    format!("first defined at {line}:{col}")
                }),
            );
            continue;
        }
        let n = g.add(s.name.clone(), Op::Input, s.ty.clone(), &[]);
        names.insert(s.name.clone(), n);
        spans.insert(s.name.clone(), s.name_span.clone());
        created.push((n, s));
    }
    let mut files = WeightFiles::new();
    for (n, s) in created {
        let mut operands = Vec::new();
        for (name, sp) in &s.operands {
            match names.get(name) {
                Some(&o) => operands.push(o),
                None => errors.push(Diagnostic::at(
                    sp.clone(),
                    format!("use of undefined value `%{name}`"),
                    "not defined in this graph",
                )),
            }
        }
        if operands.len() != s.operands.len() {
            continue;
        }
        let operand_types: Vec<TensorType> =
            operands.iter().map(|&o| g.graph[o].ty.clone()).collect();
        let refs: Vec<&TensorType> = operand_types.iter().collect();
        let op = match s.op.as_str() {
            "param" => Param::from_attrs(&s.attrs, &s.ty, &mut files).map(Op::Param),
            "input" => {
                errors.push(Diagnostic::at(
                    s.op_span.clone(),
                    "`input` values belong in the graph signature",
                    "not allowed in the body",
                ));
                continue;
            }
            other => Op::from_attrs(other, &s.attrs, &refs),
        };
        match op {
            Ok(op) => {
                g.graph[n].op = op;
                g.set_operands(n, &operands);
            }
            Err(e) => {
                let at = e
                    .attr
                    .as_ref()
                    .and_then(|a| s.attr_spans.get(a))
                    .cloned()
                    .unwrap_or_else(|| s.op_span.clone());
                errors.push(Diagnostic::at(
                    at,
                    format!("%{}: {}", s.name, e.message),
                    "here",
                ));
            }
        }
    }
    for ((name, sp), (i, result)) in returns.iter().zip(results.iter().enumerate()) {
        match names.get(name) {
            Some(&node) => {
                let _ = i;
                g.outputs.push(Output {
                    name: result.0.clone(),
                    node,
                });
                if g.graph[node].ty != result.1 {
                    errors.push(Diagnostic::at(
                        sp.clone(),
                        format!(
                            "result `{}` is declared {} but `%{name}` is {}",
                            result.0, result.1, g.graph[node].ty
                        ),
                        "type differs from the signature",
                    ));
                }
            }
            None => errors.push(Diagnostic::at(
                sp.clone(),
                format!("use of undefined value `%{name}`"),
                "not defined in this graph",
            )),
        }
    }
    if returns.len() != results.len() {
        let at = returns.last().map_or(0..0, |r| r.1.clone());
        errors.push(Diagnostic::at(
            at,
            format!(
                "the signature declares {} result(s) but `return` gives {}",
                results.len(),
                returns.len()
            ),
            "here",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    verify(&g).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                let at = e.node.as_ref().and_then(|n| spans.get(n)).cloned();
                match at {
                    Some(sp) => Diagnostic::at(sp, e.to_string(), "here"),
                    None => Diagnostic::bare(e.to_string()),
                }
            })
            .collect::<Vec<_>>()
    })?;
    Ok(g)
}

fn statement(p: Pair<Rule>) -> Result<Statement, Diagnostic> {
    let mut it = p.into_inner();
    let v = it.next().expect("grammar: value");
    let op = it.next().expect("grammar: op name");
    let mut s = Statement {
        name: v.as_str()[1..].to_string(),
        name_span: span(&v),
        op: op.as_str().to_string(),
        op_span: span(&op),
        operands: Vec::new(),
        attrs: Vec::new(),
        attr_spans: HashMap::new(),
        ty: TensorType::f32(Shape::default()),
    };
    for part in it {
        match part.as_rule() {
            Rule::operands => {
                for o in part.into_inner() {
                    s.operands.push((o.as_str()[1..].to_string(), span(&o)));
                }
            }
            Rule::attributes => {
                for a in part.into_inner() {
                    let sp = span(&a);
                    let mut ai = a.into_inner();
                    let key = ai.next().expect("grammar: name").as_str().to_string();
                    let value = attr_value(ai.next().expect("grammar: value"))?;
                    s.attr_spans.insert(key.clone(), sp);
                    s.attrs.push((key, value));
                }
            }
            Rule::tensor_type => s.ty = tensor_type(part)?,
            _ => {}
        }
    }
    Ok(s)
}
