//! The `.lir` parser: text back into a [`Module`], then the verifier.
//!
//! Infix expressions are parsed with pest's Pratt parser (`||` < `&&` <
//! comparisons < `+ -` < `* / %`, all left-associative). Buffer types and
//! constant attributes use the graph IR's own parsers, so both text forms
//! write them alike.

use super::{BinOp, Buffer, BufferKind, Expr, Kernel, LoopKind, Module, ScalarType, Stmt, UnOp};
use crate::diagnostic::{from_pest, Diagnostic};
use crate::graph::param::Param;
use crate::graph::parser::{parse_attributes, parse_tensor_type};
use crate::graph::weights::WeightFiles;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::ops::Range;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "loops/lir.pest"]
struct LirParser;

fn describe(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of file",
        Rule::lir => "`module @name(...)`",
        Rule::buffer => "`buffer`",
        Rule::kernel => "`kernel`",
        Rule::block => "a block `{ ... }`",
        Rule::for_stmt
        | Rule::let_stmt
        | Rule::if_stmt
        | Rule::alloc_stmt
        | Rule::store_stmt
        | Rule::assign_stmt => "a statement",
        Rule::loop_kind => "a loop kind",
        Rule::scalar_type => "`index`, `f32` or `bool`",
        Rule::kind => "`in`, `out`, `const`, `scratch` or `view`",
        Rule::expr | Rule::call | Rule::load | Rule::float | Rule::int | Rule::size => {
            "an expression"
        }
        Rule::or
        | Rule::and
        | Rule::le
        | Rule::ge
        | Rule::eq
        | Rule::ne
        | Rule::lt
        | Rule::gt
        | Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::rem => "an operator",
        Rule::value => "a value `%name`",
        Rule::tensor_type => "a type `f32[...]`",
        Rule::attributes => "attributes `{...}`",
        _ => "a token",
    }
    .to_string()
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::or, Assoc::Left))
            .op(Op::infix(Rule::and, Assoc::Left))
            .op(Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left)
                | Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
    })
}

fn span(p: &Pair<Rule>) -> Range<usize> {
    p.as_span().start()..p.as_span().end()
}

fn name_of(p: &Pair<Rule>) -> String {
    p.as_str().trim_start_matches('%').to_string()
}

/// Parses `.lir` text into a verified module, or every error found.
pub fn parse_lir(source: &str) -> Result<Module, Vec<Diagnostic>> {
    let top = LirParser::parse(Rule::lir, source)
        .map_err(|e| vec![from_pest(&e, source, describe)])?
        .next()
        .expect("grammar: lir");
    let mut m = Module::default();
    let mut errors = Vec::new();
    let mut files = WeightFiles::new();
    for p in top.into_inner() {
        match p.as_rule() {
            Rule::name => m.name = p.as_str().to_string(),
            Rule::size => m.sizes.push(p.as_str().to_string()),
            Rule::buffer => match buffer(p, &mut files) {
                Ok(b) => m.buffers.push(b),
                Err(d) => errors.push(d),
            },
            Rule::kernel => {
                let mut it = p.into_inner();
                let name = it.next().expect("grammar: name").as_str().to_string();
                let mut params = Vec::new();
                let mut body = Vec::new();
                for part in it {
                    match part.as_rule() {
                        Rule::value => params.push(name_of(&part)),
                        _ => match block(part) {
                            Ok(b) => body = b,
                            Err(d) => errors.push(d),
                        },
                    }
                }
                m.kernels.push(Kernel { name, params, body });
            }
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    super::verify_module(&m).map_err(|errs| {
        errs.into_iter()
            .map(|e| Diagnostic::bare(e.to_string()))
            .collect::<Vec<_>>()
    })?;
    Ok(m)
}

fn buffer(p: Pair<Rule>, files: &mut WeightFiles) -> Result<Buffer, Diagnostic> {
    let mut it = p.into_inner();
    let v = it.next().expect("grammar: value");
    let kind = match it.next().expect("grammar: kind").as_str() {
        "in" => BufferKind::In,
        "out" => BufferKind::Out,
        "const" => BufferKind::Const,
        "view" => BufferKind::View,
        _ => BufferKind::Scratch,
    };
    let t = it.next().expect("grammar: type");
    let ty = parse_tensor_type(t.as_str(), t.as_span().start())?;
    let mut rest = it.peekable();
    let view_of = match rest.peek().map(|p| p.as_rule()) {
        Some(Rule::value) => Some(name_of(&rest.next().expect("peeked"))),
        _ => None,
    };
    let mut index_data = None;
    let data = match rest.next() {
        Some(a) if ty.dtype.is_integer() => {
            let attrs = parse_attributes(a.as_str(), a.as_span().start())?;
            let values = match attrs.as_slice() {
                [(k, crate::graph::op::AttrValue::List(items))] if k == "indices" => items
                    .iter()
                    .map(|v| match v {
                        crate::graph::op::AttrValue::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Option<Vec<i64>>>(),
                _ => None,
            };
            let values = values.ok_or_else(|| {
                Diagnostic::at(
                    span(&a),
                    format!(
                        "buffer %{}: an integer buffer holds `{{indices = [integers]}}`",
                        name_of(&v)
                    ),
                    "here",
                )
            })?;
            index_data = Some(values);
            None
        }
        Some(a) => {
            let attrs = parse_attributes(a.as_str(), a.as_span().start())?;
            let param = Param::from_attrs(&attrs, &ty, files).map_err(|e| {
                Diagnostic::at(
                    span(&a),
                    format!("buffer %{}: {}", name_of(&v), e.message),
                    "here",
                )
            })?;
            Some(param)
        }
        None => None,
    };
    Ok(Buffer {
        name: name_of(&v),
        kind,
        ty,
        data,
        index_data,
        view_of,
    })
}

fn block(p: Pair<Rule>) -> Result<Vec<Stmt>, Diagnostic> {
    p.into_inner().map(statement).collect()
}

fn statement(p: Pair<Rule>) -> Result<Stmt, Diagnostic> {
    let rule = p.as_rule();
    let mut it = p.into_inner().peekable();
    Ok(match rule {
        Rule::for_stmt => {
            let kind = match it.peek().map(|k| k.as_rule()) {
                Some(Rule::loop_kind) => {
                    let k = it.next().expect("peeked");
                    let text = k.as_str();
                    if text.starts_with("parallel") {
                        LoopKind::Parallel
                    } else if text.starts_with("unroll") {
                        LoopKind::Unrolled
                    } else {
                        let n = k.into_inner().next().expect("grammar: lanes");
                        let lanes = n
                            .as_str()
                            .parse()
                            .ok()
                            .filter(|&l: &u32| l > 0)
                            .ok_or_else(|| {
                                Diagnostic::at(
                                    span(&n),
                                    "the vector width must be a positive integer",
                                    "here",
                                )
                            })?;
                        LoopKind::Vectorized(lanes)
                    }
                }
                _ => LoopKind::Serial,
            };
            let var = name_of(&it.next().expect("grammar: var"));
            let lo = expr(it.next().expect("grammar: lo"))?;
            let hi = expr(it.next().expect("grammar: hi"))?;
            let body = block(it.next().expect("grammar: body"))?;
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            }
        }
        Rule::let_stmt => {
            let var = name_of(&it.next().expect("grammar: var"));
            let t = it.next().expect("grammar: type");
            let ty = match t.as_str() {
                "index" => ScalarType::Index,
                "f32" => ScalarType::F32,
                "bool" => ScalarType::Bool,
                _ => {
                    let vector = t.into_inner().next().expect("grammar: vector type");
                    let lanes = vector.into_inner().next().expect("grammar: lane count");
                    ScalarType::Vector(lane_count(&lanes)?)
                }
            };
            let init = expr(it.next().expect("grammar: init"))?;
            Stmt::Let { var, ty, init }
        }
        Rule::assign_stmt => Stmt::Assign {
            var: name_of(&it.next().expect("grammar: var")),
            value: expr(it.next().expect("grammar: value"))?,
        },
        Rule::store_stmt => {
            let buffer = name_of(&it.next().expect("grammar: buffer"));
            let mut parts: Vec<Expr> = it.map(expr).collect::<Result<_, _>>()?;
            let value = parts.pop().expect("grammar: value");
            Stmt::Store {
                buffer,
                indices: parts,
                value,
            }
        }
        Rule::vstore_stmt => {
            let lanes = lane_count(&it.next().expect("grammar: lanes"))?;
            let buffer = name_of(&it.next().expect("grammar: buffer"));
            let mut parts: Vec<Expr> = it.map(expr).collect::<Result<_, _>>()?;
            let value = parts.pop().expect("grammar: value");
            Stmt::VStore {
                buffer,
                indices: parts,
                value,
                lanes,
            }
        }
        Rule::if_stmt => {
            let cond = expr(it.next().expect("grammar: cond"))?;
            let then = block(it.next().expect("grammar: then"))?;
            let otherwise = match it.next() {
                Some(b) => block(b)?,
                None => Vec::new(),
            };
            Stmt::If {
                cond,
                then,
                otherwise,
            }
        }
        Rule::alloc_stmt => {
            let name = name_of(&it.next().expect("grammar: name"));
            let mut dims = Vec::new();
            for d in it {
                dims.push(d.as_str().parse().map_err(|_| {
                    Diagnostic::at(span(&d), "alloc extents are non-negative integers", "here")
                })?);
            }
            Stmt::Alloc { name, dims }
        }
        _ => unreachable!("grammar: statement alternatives"),
    })
}

/// A lane count: a positive integer up to 64.
fn lane_count(p: &Pair<Rule>) -> Result<u32, Diagnostic> {
    p.as_str()
        .parse()
        .ok()
        .filter(|&n: &u32| (1..=64).contains(&n))
        .ok_or_else(|| Diagnostic::at(span(p), "a lane count is an integer from 1 to 64", "here"))
}

fn expr(p: Pair<Rule>) -> Result<Expr, Diagnostic> {
    pratt()
        .map_primary(primary)
        .map_infix(|lhs, op, rhs| {
            let op = match op.as_rule() {
                Rule::or => BinOp::Or,
                Rule::and => BinOp::And,
                Rule::le => BinOp::Le,
                Rule::ge => BinOp::Ge,
                Rule::eq => BinOp::Eq,
                Rule::ne => BinOp::Ne,
                Rule::lt => BinOp::Lt,
                Rule::gt => BinOp::Gt,
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul => BinOp::Mul,
                Rule::div => BinOp::Div,
                _ => BinOp::Rem,
            };
            Ok(Expr::bin(op, lhs?, rhs?))
        })
        .parse(p.into_inner())
}

fn primary(p: Pair<Rule>) -> Result<Expr, Diagnostic> {
    let sp = span(&p);
    Ok(match p.as_rule() {
        Rule::expr => expr(p)?,
        Rule::int => Expr::Int(p.as_str().parse().map_err(|_| {
            Diagnostic::at(
                sp,
                format!("integer `{}` does not fit in 64 bits", p.as_str()),
                "too large",
            )
        })?),
        Rule::float => Expr::Float(
            p.as_str()
                .parse()
                .map_err(|_| Diagnostic::at(sp, format!("bad float `{}`", p.as_str()), "here"))?,
        ),
        Rule::size => Expr::Size(p.as_str().to_string()),
        Rule::value => Expr::Var(name_of(&p)),
        Rule::load => {
            let mut it = p.into_inner();
            let buffer = name_of(&it.next().expect("grammar: buffer"));
            let indices = it.map(expr).collect::<Result<_, _>>()?;
            Expr::Load { buffer, indices }
        }
        Rule::vload => {
            let mut it = p.into_inner();
            let lanes = lane_count(&it.next().expect("grammar: lanes"))?;
            match primary(it.next().expect("grammar: load"))? {
                Expr::Load { buffer, indices } => Expr::VLoad {
                    buffer,
                    indices,
                    lanes,
                },
                _ => unreachable!("grammar: vload holds a load"),
            }
        }
        Rule::shuffle => {
            let mut it = p.into_inner();
            let a = expr(it.next().expect("grammar: first vector"))?;
            let b = expr(it.next().expect("grammar: second vector"))?;
            let mask = it
                .map(|i| {
                    i.as_str().parse::<u32>().map_err(|_| {
                        Diagnostic::at(span(&i), "a shuffle index is a lane number", "here")
                    })
                })
                .collect::<Result<Vec<u32>, _>>()?;
            Expr::Shuffle(Box::new(a), Box::new(b), mask)
        }
        Rule::permute => {
            let mut it = p.into_inner();
            let table = Box::new(expr(it.next().expect("grammar: table"))?);
            match primary(it.next().expect("grammar: load"))? {
                Expr::Load { buffer, indices } => Expr::Permute {
                    table,
                    buffer,
                    indices,
                },
                _ => unreachable!("grammar: permute reads a load"),
            }
        }
        Rule::broadcast => {
            let mut it = p.into_inner();
            let lanes = lane_count(&it.next().expect("grammar: lanes"))?;
            Expr::Broadcast(Box::new(expr(it.next().expect("grammar: value"))?), lanes)
        }
        Rule::call => {
            let mut it = p.into_inner();
            let f = it.next().expect("grammar: function").as_str().to_string();
            let args: Vec<Expr> = it.map(expr).collect::<Result<_, _>>()?;
            let want = match f.as_str() {
                "min" | "max" => 2,
                "fma" | "select" => 3,
                _ => 1,
            };
            if args.len() != want {
                return Err(Diagnostic::at(
                    sp,
                    format!("`{f}` takes {want} argument(s), got {}", args.len()),
                    "here",
                ));
            }
            let mut a = args.into_iter();
            let mut next = || Box::new(a.next().expect("count checked"));
            match f.as_str() {
                "min" => Expr::Binary(BinOp::Min, next(), next()),
                "max" => Expr::Binary(BinOp::Max, next(), next()),
                "fma" => Expr::Fma(next(), next(), next()),
                "select" => Expr::Select(next(), next(), next()),
                "hsum" => Expr::Horizontal(BinOp::Add, next()),
                "hmax" => Expr::Horizontal(BinOp::Max, next()),
                "hmin" => Expr::Horizontal(BinOp::Min, next()),
                other => Expr::Unary(
                    match other {
                        "exp" => UnOp::Exp,
                        "log" => UnOp::Log,
                        "tanh" => UnOp::Tanh,
                        "sqrt" => UnOp::Sqrt,
                        "erf" => UnOp::Erf,
                        "floor" => UnOp::Floor,
                        "float" => UnOp::ToFloat,
                        _ => UnOp::Neg,
                    },
                    next(),
                ),
            }
        }
        _ => unreachable!("grammar: primary alternatives"),
    })
}
