//! The `.lir` printer.
//!
//! ```text
//! module @mlp(batch) {
//!   buffer %x: in f32[batch,784]
//!   buffer %fc1.weight: const f32[300,784] {file = "mlp.safetensors", tensor = "fc1.weight"}
//!   buffer %y: out f32[batch,300]
//!
//!   kernel @linear_0(%x, %fc1.weight, %y) {
//!     for %i in 0..batch {
//!       for %j in 0..300 {
//!         let %acc: f32 = 0.0
//!         for %k in 0..784 {
//!           %acc = fma(%x[%i, %k], %fc1.weight[%j, %k], %acc)
//!         }
//!         %y[%i, %j] = %acc
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! Infix operators print with the fewest parentheses that parse back to the
//! same tree (left-associative, a right operand of equal precedence is
//! parenthesized); negation prints as `neg(x)` so that `-1` is always a
//! literal.

use super::{Expr, LoopKind, Module, Stmt};
use std::fmt::Write;

/// Prints a module as `.lir` text.
pub fn print_lir(m: &Module) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "module @{}({}) {{", m.name, m.sizes.join(", "));
    for b in &m.buffers {
        let _ = write!(out, "  buffer %{}: {} {}", b.name, b.kind.name(), b.ty);
        if let Some(source) = &b.view_of {
            let _ = write!(out, " of %{source}");
        }
        if let Some(values) = &b.index_data {
            let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let _ = write!(out, " {{indices = [{}]}}", list.join(", "));
        }
        if let Some(p) = &b.data {
            let attrs: Vec<String> = p
                .attrs()
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            let _ = write!(out, " {{{}}}", attrs.join(", "));
        }
        out.push('\n');
    }
    for k in &m.kernels {
        let params: Vec<String> = k.params.iter().map(|p| format!("%{p}")).collect();
        let _ = writeln!(out, "\n  kernel @{}({}) {{", k.name, params.join(", "));
        print_block(&mut out, &k.body, 2);
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn print_block(out: &mut String, body: &[Stmt], depth: usize) {
    for s in body {
        print_stmt(out, s, depth);
    }
}

fn print_stmt(out: &mut String, s: &Stmt, depth: usize) {
    indent(out, depth);
    match s {
        Stmt::For {
            var,
            lo,
            hi,
            kind,
            body,
        } => {
            match kind {
                LoopKind::Serial => {}
                LoopKind::Parallel => out.push_str("parallel "),
                LoopKind::Unrolled => out.push_str("unroll "),
                LoopKind::Vectorized(n) => {
                    let _ = write!(out, "vectorize<{n}> ");
                }
            }
            let _ = writeln!(out, "for %{var} in {}..{} {{", expr_text(lo), expr_text(hi));
            print_block(out, body, depth + 1);
            indent(out, depth);
            out.push_str("}\n");
        }
        Stmt::Let { var, ty, init } => {
            let _ = writeln!(out, "let %{var}: {} = {}", ty.name(), expr_text(init));
        }
        Stmt::Assign { var, value } => {
            let _ = writeln!(out, "%{var} = {}", expr_text(value));
        }
        Stmt::Store {
            buffer,
            indices,
            value,
        } => {
            let _ = writeln!(out, "%{buffer}[{}] = {}", list(indices), expr_text(value));
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            let _ = writeln!(out, "if {} {{", expr_text(cond));
            print_block(out, then, depth + 1);
            indent(out, depth);
            if otherwise.is_empty() {
                out.push_str("}\n");
            } else {
                out.push_str("} else {\n");
                print_block(out, otherwise, depth + 1);
                indent(out, depth);
                out.push_str("}\n");
            }
        }
        Stmt::VStore {
            buffer,
            indices,
            value,
            lanes,
        } => {
            let _ = writeln!(
                out,
                "vstore<{lanes}> %{buffer}[{}] = {}",
                list(indices),
                expr_text(value)
            );
        }
        Stmt::Alloc { name, dims } => {
            let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(out, "alloc %{name}: f32[{}]", dims.join(","));
        }
    }
}

fn list(items: &[Expr]) -> String {
    items.iter().map(expr_text).collect::<Vec<_>>().join(", ")
}

/// An expression as text.
pub fn expr_text(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e);
    s
}

fn write_expr(out: &mut String, e: &Expr) {
    match e {
        Expr::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Expr::Float(v) => {
            let _ = write!(out, "{v:?}");
        }
        Expr::Var(v) => {
            let _ = write!(out, "%{v}");
        }
        Expr::Size(s) => out.push_str(s),
        Expr::Load { buffer, indices } => {
            let _ = write!(out, "%{buffer}[{}]", list(indices));
        }
        Expr::Binary(op, a, b) => match op.precedence() {
            None => {
                let _ = write!(out, "{}({}, {})", op.symbol(), expr_text(a), expr_text(b));
            }
            Some(p) => {
                write_operand(out, a, p, false);
                let _ = write!(out, " {} ", op.symbol());
                write_operand(out, b, p, true);
            }
        },
        Expr::Unary(op, a) => {
            let name = match op {
                super::UnOp::Neg => "neg",
                other => other.name(),
            };
            let _ = write!(out, "{name}({})", expr_text(a));
        }
        Expr::Fma(a, b, c) => {
            let _ = write!(
                out,
                "fma({}, {}, {})",
                expr_text(a),
                expr_text(b),
                expr_text(c)
            );
        }
        Expr::Select(c, a, b) => {
            let _ = write!(
                out,
                "select({}, {}, {})",
                expr_text(c),
                expr_text(a),
                expr_text(b)
            );
        }
        Expr::VLoad {
            buffer,
            indices,
            lanes,
        } => {
            let _ = write!(out, "vload<{lanes}>(%{buffer}[{}])", list(indices));
        }
        Expr::Broadcast(v, lanes) => {
            let _ = write!(out, "broadcast<{lanes}>({})", expr_text(v));
        }
        Expr::Horizontal(op, v) => {
            let name = match op {
                super::BinOp::Max => "hmax",
                super::BinOp::Min => "hmin",
                _ => "hsum",
            };
            let _ = write!(out, "{name}({})", expr_text(v));
        }
        Expr::Shuffle(a, b, mask) => {
            let mask: Vec<String> = mask.iter().map(u32::to_string).collect();
            let _ = write!(
                out,
                "shuffle({}, {}, [{}])",
                expr_text(a),
                expr_text(b),
                mask.join(", ")
            );
        }
        Expr::Permute {
            table,
            buffer,
            indices,
        } => {
            let _ = write!(
                out,
                "permute({}, %{buffer}[{}])",
                expr_text(table),
                list(indices)
            );
        }
    }
}

fn write_operand(out: &mut String, e: &Expr, parent: u8, right: bool) {
    let needs = match e {
        Expr::Binary(op, _, _) => match op.precedence() {
            Some(p) => p < parent || (right && p == parent) || (p == parent && parent == 3),
            None => false,
        },
        _ => false,
    };
    if needs {
        out.push('(');
        write_expr(out, e);
        out.push(')');
    } else {
        write_expr(out, e);
    }
}

#[cfg(test)]
mod tests {
    use super::super::BinOp;
    use super::*;

    #[test]
    fn parentheses_follow_the_tree() {
        let v = |n: &str| Expr::var(n);
        let e = Expr::bin(BinOp::Sub, v("a"), Expr::bin(BinOp::Sub, v("b"), v("c")));
        assert_eq!(expr_text(&e), "%a - (%b - %c)");
        let e = Expr::bin(
            BinOp::Mul,
            Expr::bin(BinOp::Add, v("a"), Expr::Int(1)),
            Expr::Int(-2),
        );
        assert_eq!(expr_text(&e), "(%a + 1) * -2");
        let e = Expr::bin(
            BinOp::Add,
            Expr::bin(BinOp::Mul, v("a"), Expr::Int(3)),
            v("b"),
        );
        assert_eq!(expr_text(&e), "%a * 3 + %b");
    }
}
