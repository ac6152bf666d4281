//! The `.lop` parser: pest grammar to [`ast::Model`](crate::ast::Model).
//!
//! The header, each item and the footer are parsed one at a time. When an
//! item fails, its error is recorded and parsing resumes at the next line
//! that starts with a keyword (`let`, `param`, `input`, `output`, `weights`)
//! or the closing brace, so that one file reports all its syntax errors.

use crate::ast::{Argument, BinaryOperator, Expr, Ident, Item, Model};
use lopper_ir::diagnostic::from_pest;
use lopper_ir::types::{DType, Dim, Shape, TensorType};
use lopper_ir::Diagnostic;
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "model.pest"]
struct ModelParser;

const KEYWORDS: &[&str] = &["let", "param", "input", "output", "weights"];

fn describe(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of file",
        Rule::header => "`model NAME {`",
        Rule::footer => "`}`",
        Rule::item => "`let`, `param`, `input`, `output`, `weights` or `}`",
        Rule::next_item => "the end of the statement",
        Rule::comma => "`,`",
        Rule::colon => "`:`",
        Rule::equals => "`=`",
        Rule::rparen => "`)`",
        Rule::rbracket => "`]`",
        Rule::weights_decl => "`weights \"FILE\"`",
        Rule::input_decl => "an input declaration",
        Rule::param_decl => "a param declaration",
        Rule::let_decl => "`let`",
        Rule::output_decl => "`output`",
        Rule::expr | Rule::term | Rule::factor => "an expression",
        Rule::call => "a call",
        Rule::argument | Rule::named_arg => "an argument",
        Rule::list => "a list",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*`, `/` or `@`",
        Rule::neg => "`-`",
        Rule::tensor_type => "a type like `f32[batch, 784]`",
        Rule::dtype => "a dtype",
        Rule::dim => "a dimension (a number or a symbolic size)",
        Rule::string => "a string",
        Rule::number => "a number",
        Rule::name => "a name",
        _ => "a token",
    }
    .to_string()
}

/// Skips whitespace and comments from `pos`.
fn skip_trivia(src: &str, mut pos: usize) -> usize {
    loop {
        let rest = &src[pos..];
        let trimmed = rest.trim_start();
        pos += rest.len() - trimmed.len();
        if trimmed.starts_with("//") {
            pos += trimmed.find('\n').unwrap_or(trimmed.len());
        } else if trimmed.starts_with("/*") {
            pos += trimmed.find("*/").map_or(trimmed.len(), |e| e + 2);
        } else {
            return pos;
        }
    }
}

/// The start of the next line after `pos` that begins an item or the footer.
fn recover(src: &str, pos: usize) -> usize {
    let mut at = pos;
    while let Some(nl) = src[at..].find('\n') {
        at += nl + 1;
        let line = src[at..].trim_start();
        let starts_item = KEYWORDS.iter().any(|k| {
            line.starts_with(k)
                && !line[k.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        });
        if starts_item || line.starts_with('}') {
            return at;
        }
    }
    src.len()
}

/// Parses a model file; on failure, every syntax error found.
pub fn parse_model(src: &str) -> Result<Model, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let header = ModelParser::parse(Rule::header, src)
        .map_err(|e| vec![from_pest(&e, src, describe)])?
        .next()
        .expect("grammar: header");
    let name_pair = header.clone().into_inner().next().expect("grammar: name");
    let name = ident(&name_pair, 0);
    let mut pos = header.as_span().end();
    let mut items = Vec::new();
    loop {
        pos = skip_trivia(src, pos);
        if src[pos..].starts_with('}') {
            if let Err(e) = ModelParser::parse(Rule::footer, &src[pos..]) {
                errors.push(from_pest(&e, &src[pos..], describe).shifted(pos));
            }
            break;
        }
        if pos >= src.len() {
            errors.push(Diagnostic::at(
                src.len()..src.len(),
                "syntax error: the model is not closed; expected `}` at the end",
                "expected `}`",
            ));
            break;
        }
        match ModelParser::parse(Rule::item, &src[pos..]) {
            Ok(mut pairs) => {
                let pair = pairs.next().expect("grammar: item");
                let end = pair.as_span().end();
                match item(pair.into_inner().next().expect("grammar: declaration"), pos) {
                    Ok(it) => items.push(it),
                    Err(d) => errors.push(d),
                }
                pos += end;
            }
            Err(e) => {
                errors.push(from_pest(&e, &src[pos..], describe).shifted(pos));
                pos = recover(src, pos);
            }
        }
    }
    if errors.is_empty() {
        Ok(Model { name, items })
    } else {
        Err(errors)
    }
}

fn span(p: &Pair<Rule>, offset: usize) -> std::ops::Range<usize> {
    p.as_span().start() + offset..p.as_span().end() + offset
}

fn ident(p: &Pair<Rule>, offset: usize) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(p, offset),
    }
}

fn tensor_type(p: Pair<Rule>, offset: usize) -> Result<TensorType, Diagnostic> {
    let mut it = p.into_inner();
    let d = it.next().expect("grammar: dtype");
    let dtype = DType::from_name(d.as_str()).ok_or_else(|| {
        Diagnostic::at(
            span(&d, offset),
            format!("unknown dtype `{}`", d.as_str()),
            "expected `f32` or `i64`",
        )
    })?;
    let mut dims = Vec::new();
    for dim in it {
        let text = dim.as_str();
        if text.as_bytes()[0].is_ascii_digit() {
            let n: usize = text.parse().map_err(|_| {
                Diagnostic::at(
                    span(&dim, offset),
                    format!("dimension `{text}` is too large"),
                    "does not fit in 64 bits",
                )
            })?;
            dims.push(Dim::Static(n));
        } else {
            dims.push(Dim::Symbol(text.to_string()));
        }
    }
    Ok(TensorType {
        dtype,
        shape: Shape(dims),
    })
}

fn item(p: Pair<Rule>, offset: usize) -> Result<Item, Diagnostic> {
    let rule = p.as_rule();
    let whole = span(&p, offset);
    let mut it = p
        .into_inner()
        .filter(|p| !matches!(p.as_rule(), Rule::colon | Rule::equals));
    Ok(match rule {
        Rule::weights_decl => {
            let s = it.next().expect("grammar: string");
            Item::Weights {
                path: s.into_inner().next().map_or("", |i| i.as_str()).to_string(),
                span: whole,
            }
        }
        Rule::input_decl => {
            let name = ident(&it.next().expect("grammar: name"), offset);
            let t = it.next().expect("grammar: type");
            let ty_span = span(&t, offset);
            Item::Input {
                name,
                ty: tensor_type(t, offset)?,
                ty_span,
            }
        }
        Rule::param_decl => {
            let name = ident(&it.next().expect("grammar: name"), offset);
            let t = it.next().expect("grammar: type");
            let ty_span = span(&t, offset);
            let ty = tensor_type(t, offset)?;
            let init = it.next().map(|p| expr(p, offset));
            Item::Param {
                name,
                ty,
                ty_span,
                init,
            }
        }
        Rule::let_decl | Rule::output_decl => {
            let name = ident(&it.next().expect("grammar: name"), offset);
            let value = expr(it.next().expect("grammar: expr"), offset);
            if rule == Rule::let_decl {
                Item::Let { name, value }
            } else {
                Item::Output { name, value }
            }
        }
        _ => unreachable!("grammar: item alternatives"),
    })
}

fn expr(p: Pair<Rule>, offset: usize) -> Expr {
    let whole = span(&p, offset);
    match p.as_rule() {
        Rule::expr | Rule::term => {
            let mut it = p.into_inner();
            let mut lhs = expr(it.next().expect("grammar: operand"), offset);
            while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
                let op = match op.as_str() {
                    "+" => BinaryOperator::Add,
                    "-" => BinaryOperator::Sub,
                    "*" => BinaryOperator::Mul,
                    "/" => BinaryOperator::Div,
                    _ => BinaryOperator::MatMul,
                };
                let rhs = expr(rhs, offset);
                let span = lhs.span().start..rhs.span().end;
                lhs = Expr::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                    span,
                };
            }
            lhs
        }
        Rule::factor => {
            let parts: Vec<Pair<Rule>> = p.into_inner().collect();
            let (negs, primary) = parts.split_at(parts.len() - 1);
            let mut e = expr(primary[0].clone(), offset);
            for n in negs.iter().rev() {
                let span = span(n, offset).start..e.span().end;
                e = Expr::Neg {
                    operand: Box::new(e),
                    span,
                };
            }
            e
        }
        Rule::call => {
            let mut it = p.into_inner();
            let callee = ident(&it.next().expect("grammar: name"), offset);
            let args = it
                .filter(|a| a.as_rule() == Rule::argument)
                .map(|a| {
                    let inner = a.into_inner().next().expect("grammar: argument");
                    if inner.as_rule() == Rule::named_arg {
                        let mut kv = inner.into_inner().filter(|p| p.as_rule() != Rule::equals);
                        let name = ident(&kv.next().expect("grammar: name"), offset);
                        Argument {
                            name: Some(name),
                            value: expr(kv.next().expect("grammar: value"), offset),
                        }
                    } else {
                        Argument {
                            name: None,
                            value: expr(inner, offset),
                        }
                    }
                })
                .collect();
            Expr::Call {
                callee,
                args,
                span: whole,
            }
        }
        Rule::list => Expr::List {
            items: p
                .into_inner()
                .filter(|i| i.as_rule() == Rule::expr)
                .map(|i| expr(i, offset))
                .collect(),
            span: whole,
        },
        Rule::number => Expr::Number {
            text: p.as_str().to_string(),
            span: whole,
        },
        Rule::name => Expr::Name(ident(&p, offset)),
        _ => unreachable!("grammar: expression alternatives"),
    }
}
