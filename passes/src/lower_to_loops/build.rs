//! Builders of loop-IR expressions and statements for the lowering: loop
//! nests, broadcast indices, the elementwise functions, guards.

use lopper_ir::graph::op::{BinaryOp, UnaryOp};
use lopper_ir::loops::{BinOp, Expr, LoopKind, Stmt, UnOp};
use lopper_ir::{Dim, TensorType};

pub(super) fn dim_expr(d: &Dim) -> Expr {
    match d {
        Dim::Static(n) => Expr::Int(*n as i64),
        Dim::Symbol(s) => Expr::Size(s.clone()),
    }
}

pub(super) fn int(v: usize) -> Expr {
    Expr::Int(v as i64)
}

pub(super) fn add(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(0)) => a,
        (Expr::Int(0), _) => b,
        _ => Expr::bin(BinOp::Add, a, b),
    }
}

pub(super) fn mul(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (_, Expr::Int(1)) => a,
        (Expr::Int(1), _) => b,
        _ => Expr::bin(BinOp::Mul, a, b),
    }
}

pub(super) fn sub(a: Expr, b: Expr) -> Expr {
    match &b {
        Expr::Int(0) => a,
        _ => Expr::bin(BinOp::Sub, a, b),
    }
}

pub(super) fn for_loop(var: &str, hi: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: var.to_string(),
        lo: Expr::Int(0),
        hi,
        kind: LoopKind::Serial,
        body,
    }
}

/// Wraps `body` in loops `%{prefix}0..` over `dims`, outermost first.
pub(super) fn nest(prefix: &str, dims: &[Dim], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut inner = body;
    for (i, d) in dims.iter().enumerate().rev() {
        inner = vec![for_loop(&format!("{prefix}{i}"), dim_expr(d), inner)];
    }
    inner
}

/// Wraps `body` in loops `%{prefix}N` over `dims`, outermost first in the
/// order `order` gives (indices into `dims`).
pub(super) fn nest_in_order(
    prefix: &str,
    dims: &[Dim],
    order: &[usize],
    body: Vec<Stmt>,
) -> Vec<Stmt> {
    let mut inner = body;
    for &i in order.iter().rev() {
        inner = vec![for_loop(&format!("{prefix}{i}"), dim_expr(&dims[i]), inner)];
    }
    inner
}

pub(super) fn vars(prefix: &str, n: usize) -> Vec<Expr> {
    (0..n).map(|i| Expr::var(&format!("{prefix}{i}"))).collect()
}

pub(super) fn load(buffer: &str, indices: Vec<Expr>) -> Expr {
    Expr::Load {
        buffer: buffer.to_string(),
        indices,
    }
}

/// The index into an operand of type `ty` that NumPy broadcasting maps the
/// output index `out` to.
pub(super) fn broadcast_index(ty: &TensorType, out: &[Expr]) -> Vec<Expr> {
    let shift = out.len() - ty.shape.rank();
    ty.shape
        .0
        .iter()
        .enumerate()
        .map(|(j, d)| {
            if *d == Dim::Static(1) {
                Expr::Int(0)
            } else {
                out[j + shift].clone()
            }
        })
        .collect()
}

pub(super) fn unary_expr(u: UnaryOp, v: Expr) -> Expr {
    match u {
        UnaryOp::Relu => Expr::bin(BinOp::Max, v, Expr::Float(0.0)),
        UnaryOp::Sigmoid => Expr::bin(
            BinOp::Div,
            Expr::Float(1.0),
            Expr::bin(
                BinOp::Add,
                Expr::Float(1.0),
                Expr::unary(UnOp::Exp, Expr::unary(UnOp::Neg, v)),
            ),
        ),
        UnaryOp::Tanh => Expr::unary(UnOp::Tanh, v),
        UnaryOp::Exp => Expr::unary(UnOp::Exp, v),
        UnaryOp::Gelu => Expr::bin(
            BinOp::Mul,
            Expr::bin(BinOp::Mul, Expr::Float(0.5), v.clone()),
            Expr::bin(
                BinOp::Add,
                Expr::Float(1.0),
                Expr::unary(
                    UnOp::Erf,
                    Expr::bin(BinOp::Mul, v, Expr::Float(std::f32::consts::FRAC_1_SQRT_2)),
                ),
            ),
        ),
        UnaryOp::Erf => Expr::unary(UnOp::Erf, v),
        UnaryOp::Sqrt => Expr::unary(UnOp::Sqrt, v),
        UnaryOp::Pow(e) => pow_expr(v, e),
        UnaryOp::Identity => v,
    }
}

/// `v^e` exactly where it can be: products by repeated squaring for an
/// integer exponent (of either sign), a square root times that for a
/// half-integer, `exp(e·log v)` otherwise (NaN for a negative `v`, as
/// `powf` gives for a non-integer exponent).
fn pow_expr(v: Expr, e: f32) -> Expr {
    let mul = |a: Expr, b: Expr| Expr::bin(BinOp::Mul, a, b);
    let integer_power = |base: Expr, n: u32| -> Expr {
        let mut result: Option<Expr> = None;
        let mut square = base;
        let mut n = n;
        while n > 0 {
            if n & 1 == 1 {
                result = Some(match result {
                    None => square.clone(),
                    Some(r) => mul(r, square.clone()),
                });
            }
            n >>= 1;
            if n > 0 {
                square = mul(square.clone(), square);
            }
        }
        result.unwrap_or(Expr::Float(1.0))
    };
    let magnitude = e.abs();
    let twice = magnitude * 2.0;
    let positive = if magnitude.fract() == 0.0 && magnitude <= 64.0 {
        integer_power(v, magnitude as u32)
    } else if twice.fract() == 0.0 && twice <= 64.0 {
        let root = Expr::unary(UnOp::Sqrt, v.clone());
        match magnitude as u32 {
            0 => root,
            n => mul(integer_power(v, n), root),
        }
    } else {
        return Expr::unary(UnOp::Exp, mul(Expr::Float(e), Expr::unary(UnOp::Log, v)));
    };
    if e < 0.0 {
        Expr::bin(BinOp::Div, Expr::Float(1.0), positive)
    } else {
        positive
    }
}

pub(super) fn binary_expr(b: BinaryOp, x: Expr, y: Expr) -> Expr {
    let op = match b {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
        BinaryOp::Pow => return power_expr(x, y),
    };
    Expr::bin(op, x, y)
}

/// `powf(x, y)` for an exponent known only at run time: `e^(y·ln|x|)`,
/// negated for a negative `x` and an odd integer `y`, NaN for a negative
/// `x` and a non-integer `y`, and 1 whenever `y` is 0.
fn power_expr(x: Expr, y: Expr) -> Expr {
    let select = |c: Expr, a: Expr, b: Expr| Expr::Select(Box::new(c), Box::new(a), Box::new(b));
    let magnitude = Expr::bin(BinOp::Max, x.clone(), Expr::unary(UnOp::Neg, x.clone()));
    let power = Expr::unary(
        UnOp::Exp,
        Expr::bin(BinOp::Mul, y.clone(), Expr::unary(UnOp::Log, magnitude)),
    );
    let is_integer = Expr::bin(BinOp::Eq, Expr::unary(UnOp::Floor, y.clone()), y.clone());
    let half = Expr::bin(BinOp::Mul, y.clone(), Expr::Float(0.5));
    let is_odd = Expr::bin(
        BinOp::And,
        is_integer.clone(),
        Expr::bin(BinOp::Ne, Expr::unary(UnOp::Floor, half.clone()), half),
    );
    let negative_base = select(
        is_integer,
        select(is_odd, Expr::unary(UnOp::Neg, power.clone()), power.clone()),
        Expr::Float(f32::NAN),
    );
    let signed = select(
        Expr::bin(BinOp::Lt, x, Expr::Float(0.0)),
        negative_base,
        power,
    );
    select(
        Expr::bin(BinOp::Eq, y, Expr::Float(0.0)),
        Expr::Float(1.0),
        signed,
    )
}

/// The number of elements of `dims` as an `f32` expression: a constant when
/// every dim is static, `float(b * 7)` when some are symbolic.
pub(super) fn element_count(dims: &[Dim]) -> Expr {
    match dims
        .iter()
        .map(Dim::as_static)
        .collect::<Option<Vec<usize>>>()
    {
        Some(d) => Expr::Float(d.iter().product::<usize>() as f32),
        None => {
            let product = dims.iter().map(dim_expr).fold(Expr::Int(1), mul);
            Expr::unary(UnOp::ToFloat, product)
        }
    }
}

/// `%acc = fma(a, b, %acc)`.
pub(super) fn accumulate(a: Expr, b: Expr) -> Stmt {
    Stmt::Assign {
        var: "acc".into(),
        value: Expr::Fma(Box::new(a), Box::new(b), Box::new(Expr::var("acc"))),
    }
}

/// `if e0 >= 0 && e0 < n0 && e1 >= 0 && ... { body }`.
pub(super) fn guard(bounds: &[(Expr, usize)], body: Vec<Stmt>) -> Stmt {
    let mut cond: Option<Expr> = None;
    for (e, n) in bounds {
        for c in [
            Expr::bin(BinOp::Ge, e.clone(), Expr::Int(0)),
            Expr::bin(BinOp::Lt, e.clone(), int(*n)),
        ] {
            cond = Some(match cond {
                None => c,
                Some(prev) => Expr::bin(BinOp::And, prev, c),
            });
        }
    }
    Stmt::If {
        cond: cond.unwrap_or(Expr::bin(BinOp::Eq, Expr::Int(0), Expr::Int(0))),
        then: body,
        otherwise: Vec::new(),
    }
}

/// Loops over every dim but `skip`, outermost first.
pub(super) fn nest_except(prefix: &str, dims: &[Dim], skip: usize, body: Vec<Stmt>) -> Vec<Stmt> {
    let mut inner = body;
    for (i, d) in dims.iter().enumerate().rev() {
        if i != skip {
            inner = vec![for_loop(&format!("{prefix}{i}"), dim_expr(d), inner)];
        }
    }
    inner
}
