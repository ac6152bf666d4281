//! Tools the loop passes share: walking and rewriting loop nests by loop
//! name, substituting a variable, renaming the locals of a copied body,
//! fresh names, dependence on a variable, index folding, and the legality
//! test for reordering loops.
//!
//! Loop passes address loops by variable name (`%i1`), in every kernel or in
//! the kernels named by a `kernel=` option. These helpers do not decide
//! anything about schedules; they only rewrite what they are asked to.

use lopper_ir::loops::{BinOp, Expr, Kernel, Module, Stmt};
use std::collections::{HashMap, HashSet};

/// The kernels a loop pass applies to: every kernel, or those whose name is
/// in `filter` (without the `@`).
pub fn selected<'m>(
    m: &'m mut Module,
    filter: &Option<Vec<String>>,
) -> impl Iterator<Item = &'m mut Kernel> {
    let filter = filter.clone();
    m.kernels.iter_mut().filter(move |k| {
        filter
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == &k.name))
    })
}

/// Parses a list option: `[a,b]` or a single `a`.
pub fn list_option(value: &str) -> Vec<String> {
    let v = value.trim();
    let v = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(v);
    v.split(',')
        .map(|s| s.trim().trim_start_matches(['%', '@']).to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The loop a pass is given: `loop=NAME` (a leading `%` is allowed).
pub fn loop_option(pass: &str, o: &crate::pass::PassOptions) -> Result<String, String> {
    o.0.get("loop")
        .map(|l| l.trim().trim_start_matches('%').to_string())
        .ok_or_else(|| format!("`{pass}` needs `loop=NAME`"))
}

/// Parses a list of positive integers: `[4,8]`.
pub fn sizes_option(pass: &str, key: &str, value: &str) -> Result<Vec<i64>, String> {
    list_option(value)
        .iter()
        .map(|s| match s.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "option `{key}` of `{pass}` needs positive integers, got `{s}`"
            )),
        })
        .collect()
}

/// Rewrites every `for` over `var` in `body` (at any depth, including inside
/// the statements `f` returns) with `f`; returns how many it rewrote.
pub fn rewrite_loops(
    body: &mut Vec<Stmt>,
    var: &str,
    f: &mut dyn FnMut(Stmt) -> Result<Vec<Stmt>, String>,
) -> Result<usize, String> {
    let mut count = 0;
    let mut out = Vec::with_capacity(body.len());
    for s in std::mem::take(body) {
        match s {
            Stmt::For { var: ref v, .. } if v == var => {
                out.extend(f(s)?);
                count += 1;
            }
            Stmt::For {
                var: v,
                lo,
                hi,
                kind,
                body: mut inner,
            } => {
                count += rewrite_loops(&mut inner, var, f)?;
                out.push(Stmt::For {
                    var: v,
                    lo,
                    hi,
                    kind,
                    body: inner,
                });
            }
            Stmt::If {
                cond,
                mut then,
                mut otherwise,
            } => {
                count += rewrite_loops(&mut then, var, f)?;
                count += rewrite_loops(&mut otherwise, var, f)?;
                out.push(Stmt::If {
                    cond,
                    then,
                    otherwise,
                });
            }
            other => out.push(other),
        }
    }
    *body = out;
    Ok(count)
}

/// Applies `f` to every expression of `e`, bottom up.
pub fn map_expr(e: &Expr, f: &mut dyn FnMut(Expr) -> Expr) -> Expr {
    let b = |x: &Expr, f: &mut dyn FnMut(Expr) -> Expr| Box::new(map_expr(x, f));
    let mapped = match e {
        Expr::Load { buffer, indices } => Expr::Load {
            buffer: buffer.clone(),
            indices: indices.iter().map(|i| map_expr(i, f)).collect(),
        },
        Expr::VLoad {
            buffer,
            indices,
            lanes,
        } => Expr::VLoad {
            buffer: buffer.clone(),
            indices: indices.iter().map(|i| map_expr(i, f)).collect(),
            lanes: *lanes,
        },
        Expr::Binary(op, x, y) => Expr::Binary(*op, b(x, f), b(y, f)),
        Expr::Unary(op, x) => Expr::Unary(*op, b(x, f)),
        Expr::Fma(x, y, z) => Expr::Fma(b(x, f), b(y, f), b(z, f)),
        Expr::Select(x, y, z) => Expr::Select(b(x, f), b(y, f), b(z, f)),
        Expr::Broadcast(x, n) => Expr::Broadcast(b(x, f), *n),
        Expr::Horizontal(op, x) => Expr::Horizontal(*op, b(x, f)),
        Expr::Shuffle(x, y, mask) => Expr::Shuffle(b(x, f), b(y, f), mask.clone()),
        Expr::Permute {
            table,
            buffer,
            indices,
        } => Expr::Permute {
            table: b(table, f),
            buffer: buffer.clone(),
            indices: indices.iter().map(|i| map_expr(i, f)).collect(),
        },
        leaf => leaf.clone(),
    };
    f(mapped)
}

/// Applies `f` to every expression of every statement of `body`, and `g` to
/// every variable name a statement declares or assigns.
pub fn map_block(
    body: &[Stmt],
    f: &mut dyn FnMut(Expr) -> Expr,
    g: &mut dyn FnMut(&str) -> String,
) -> Vec<Stmt> {
    body.iter()
        .map(|s| match s {
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            } => Stmt::For {
                var: g(var),
                lo: map_expr(lo, f),
                hi: map_expr(hi, f),
                kind: *kind,
                body: map_block(body, f, g),
            },
            Stmt::Let { var, ty, init } => Stmt::Let {
                var: g(var),
                ty: *ty,
                init: map_expr(init, f),
            },
            Stmt::Assign { var, value } => Stmt::Assign {
                var: g(var),
                value: map_expr(value, f),
            },
            Stmt::Store {
                buffer,
                indices,
                value,
            } => Stmt::Store {
                buffer: g(buffer),
                indices: indices.iter().map(|i| map_expr(i, f)).collect(),
                value: map_expr(value, f),
            },
            Stmt::VStore {
                buffer,
                indices,
                value,
                lanes,
            } => Stmt::VStore {
                buffer: g(buffer),
                indices: indices.iter().map(|i| map_expr(i, f)).collect(),
                value: map_expr(value, f),
                lanes: *lanes,
            },
            Stmt::If {
                cond,
                then,
                otherwise,
            } => Stmt::If {
                cond: map_expr(cond, f),
                then: map_block(then, f, g),
                otherwise: map_block(otherwise, f, g),
            },
            Stmt::Alloc { name, dims } => Stmt::Alloc {
                name: g(name),
                dims: dims.clone(),
            },
        })
        .collect()
}

/// `body` with every use of the variable `var` replaced by `with`.
pub fn substitute(body: &[Stmt], var: &str, with: &Expr) -> Vec<Stmt> {
    map_block(
        body,
        &mut |e| match e {
            Expr::Var(ref v) if v == var => with.clone(),
            other => fold(other),
        },
        &mut |n| n.to_string(),
    )
}

/// `e` with every use of the variable `var` replaced by `with`, folded.
pub fn substitute_expr(e: &Expr, var: &str, with: &Expr) -> Expr {
    map_expr(e, &mut |x| match x {
        Expr::Var(ref v) if v == var => with.clone(),
        other => fold(other),
    })
}

/// The names `body` declares: loop variables, locals and local arrays.
pub fn declared(body: &[Stmt], out: &mut HashSet<String>) {
    for s in body {
        match s {
            Stmt::For { var, body, .. } => {
                out.insert(var.clone());
                declared(body, out);
            }
            Stmt::Let { var, .. } => {
                out.insert(var.clone());
            }
            Stmt::Alloc { name, .. } => {
                out.insert(name.clone());
            }
            Stmt::If {
                then, otherwise, ..
            } => {
                declared(then, out);
                declared(otherwise, out);
            }
            _ => {}
        }
    }
}

/// A copy of `body` whose declared names carry `suffix` (`%acc` → `%acc.3`),
/// so that copies can sit side by side.
pub fn rename_declared(body: &[Stmt], suffix: &str) -> Vec<Stmt> {
    let mut names = HashSet::new();
    declared(body, &mut names);
    let renamed: HashMap<String, String> = names
        .into_iter()
        .map(|n| {
            let new = format!("{n}{suffix}");
            (n, new)
        })
        .collect();
    map_block(
        body,
        &mut |e| match e {
            Expr::Var(v) => Expr::Var(renamed.get(&v).cloned().unwrap_or(v)),
            Expr::Load { buffer, indices } => Expr::Load {
                buffer: renamed.get(&buffer).cloned().unwrap_or(buffer),
                indices,
            },
            Expr::VLoad {
                buffer,
                indices,
                lanes,
            } => Expr::VLoad {
                buffer: renamed.get(&buffer).cloned().unwrap_or(buffer),
                indices,
                lanes,
            },
            Expr::Permute {
                table,
                buffer,
                indices,
            } => Expr::Permute {
                table,
                buffer: renamed.get(&buffer).cloned().unwrap_or(buffer),
                indices,
            },
            other => other,
        },
        &mut |n| renamed.get(n).cloned().unwrap_or_else(|| n.to_string()),
    )
}

/// A name based on `base` not yet used in `kernel`; records it as used.
pub fn fresh(used: &mut HashSet<String>, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while used.contains(&name) {
        name = format!("{base}{n}");
        n += 1;
    }
    used.insert(name.clone());
    name
}

/// Every name declared in a kernel.
pub fn names_in(kernel: &Kernel) -> HashSet<String> {
    let mut names = HashSet::new();
    declared(&kernel.body, &mut names);
    names
}

/// `body` with the name `from` (a local, a loop variable) changed to `to`
/// wherever it is declared, assigned or read.
pub fn rename_var(body: &[Stmt], from: &str, to: &str) -> Vec<Stmt> {
    map_block(
        body,
        &mut |e| match e {
            Expr::Var(x) if x == from => Expr::Var(to.to_string()),
            other => other,
        },
        &mut |n| {
            if n == from {
                to.to_string()
            } else {
                n.to_string()
            }
        },
    )
}

/// True if `e` mentions the variable `var`.
pub fn uses(e: &Expr, var: &str) -> bool {
    e.reads(&|v| v == var)
}

/// True if any statement of `body` mentions `var` in an expression.
pub fn block_uses(body: &[Stmt], var: &str) -> bool {
    let mut found = false;
    map_block(
        body,
        &mut |x| {
            if matches!(&x, Expr::Var(v) if v == var) {
                found = true;
            }
            x
        },
        &mut |n| n.to_string(),
    );
    found
}

/// Folds one level of index arithmetic: constants, `x + 0`, `x * 1`,
/// `x * 0`, `(x + c1) + c2`, `(x * a) * b`, `(x * k) / k`, `(x * k) % k`.
/// Children are expected to be folded already ([`map_expr`] order).
pub fn fold(e: Expr) -> Expr {
    use BinOp::*;
    let Expr::Binary(op, a, b) = e else { return e };
    match (op, *a, *b) {
        (Add, Expr::Int(x), Expr::Int(y)) => Expr::Int(x + y),
        (Sub, Expr::Int(x), Expr::Int(y)) => Expr::Int(x - y),
        (Mul, Expr::Int(x), Expr::Int(y)) => Expr::Int(x * y),
        (Div, Expr::Int(x), Expr::Int(y)) if y > 0 && x >= 0 => Expr::Int(x / y),
        (Rem, Expr::Int(x), Expr::Int(y)) if y > 0 && x >= 0 => Expr::Int(x % y),
        (Min, Expr::Int(x), Expr::Int(y)) => Expr::Int(x.min(y)),
        (Max, Expr::Int(x), Expr::Int(y)) => Expr::Int(x.max(y)),
        (Add | Sub, x, Expr::Int(0)) => x,
        (Add, Expr::Int(0), x) => x,
        (Mul, x, Expr::Int(1)) | (Mul, Expr::Int(1), x) => x,
        (Div, x, Expr::Int(1)) => x,
        (Mul, _, Expr::Int(0)) | (Mul, Expr::Int(0), _) => Expr::Int(0),
        (Rem, _, Expr::Int(1)) => Expr::Int(0),
        // Constants gather on the right: (x + c1) + c2 = x + (c1 + c2).
        (Add, Expr::Binary(Add, x, c1), Expr::Int(c2)) if matches!(*c1, Expr::Int(_)) => {
            let Expr::Int(c1) = *c1 else { unreachable!() };
            fold(Expr::bin(Add, *x, Expr::Int(c1 + c2)))
        }
        (Add, Expr::Binary(Sub, x, c1), Expr::Int(c2)) if matches!(*c1, Expr::Int(_)) => {
            let Expr::Int(c1) = *c1 else { unreachable!() };
            fold(Expr::bin(Add, *x, Expr::Int(c2 - c1)))
        }
        (Add, x, Expr::Int(c)) if c < 0 => Expr::bin(Sub, x, Expr::Int(-c)),
        (Mul, Expr::Binary(Mul, x, a), Expr::Int(b)) if matches!(*a, Expr::Int(_)) => {
            let Expr::Int(a) = *a else { unreachable!() };
            Expr::bin(Mul, *x, Expr::Int(a * b))
        }
        (Div, Expr::Binary(Mul, x, a), Expr::Int(k)) if *a == Expr::Int(k) && k > 0 => *x,
        (Rem, Expr::Binary(Mul, _, a), Expr::Int(k)) if *a == Expr::Int(k) && k > 0 => Expr::Int(0),
        (op, a, b) => Expr::bin(op, a, b),
    }
}

/// Folds a whole expression tree.
pub fn fold_all(e: &Expr) -> Expr {
    map_expr(e, &mut fold)
}

/// What a nest does with memory: for each buffer written inside, the index
/// tuples of all its accesses; and the locals assigned but declared outside.
struct Accesses {
    tuples: HashMap<String, Vec<Vec<Expr>>>,
    written: HashSet<String>,
    outer_locals: HashSet<String>,
}

fn collect_accesses(body: &[Stmt], declared_here: &mut HashSet<String>, acc: &mut Accesses) {
    fn expr(e: &Expr, acc: &mut Accesses) {
        map_expr(e, &mut |x| {
            if let Expr::Load { buffer, indices }
            | Expr::VLoad {
                buffer, indices, ..
            }
            | Expr::Permute {
                buffer, indices, ..
            } = &x
            {
                acc.tuples
                    .entry(buffer.clone())
                    .or_default()
                    .push(indices.clone());
            }
            x
        });
    }
    for s in body {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                expr(lo, acc);
                expr(hi, acc);
                declared_here.insert(var.clone());
                collect_accesses(body, declared_here, acc);
            }
            Stmt::Let { var, init, .. } => {
                expr(init, acc);
                declared_here.insert(var.clone());
            }
            Stmt::Assign { var, value } => {
                expr(value, acc);
                if !declared_here.contains(var) {
                    acc.outer_locals.insert(var.clone());
                }
            }
            Stmt::Store {
                buffer,
                indices,
                value,
            }
            | Stmt::VStore {
                buffer,
                indices,
                value,
                ..
            } => {
                expr(value, acc);
                indices.iter().for_each(|i| expr(i, acc));
                acc.written.insert(buffer.clone());
                acc.tuples
                    .entry(buffer.clone())
                    .or_default()
                    .push(indices.clone());
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                expr(cond, acc);
                collect_accesses(then, declared_here, acc);
                collect_accesses(otherwise, declared_here, acc);
            }
            Stmt::Alloc { name, .. } => {
                declared_here.insert(name.clone());
            }
        }
    }
}

/// Why the iterations of the loops over `vars` (nested, in `body`) may not
/// be reordered, or `None` when they may.
///
/// Sound and simple. For every buffer written in `body`, a loop of `vars` is
/// *pinned* when some index position holds the same expression in every
/// access to that buffer, and that expression is affine in the loop
/// variable with a non-zero coefficient and mentions no other loop of
/// `vars` and nothing declared inside `body`: two iterations that differ in
/// that loop then never touch the same element. All loops but `loose`
/// of them must be pinned for every buffer (one loose loop keeps its
/// order when the others are tiled or interchanged around it; copies
/// jammed by `unroll` need all pinned). Locals declared outside and
/// assigned inside carry values between iterations and forbid it;
/// reductions into a local declared inside are private to an iteration.
pub fn reorder_hazard(body: &[Stmt], vars: &[&str], loose: usize) -> Option<String> {
    let mut acc = Accesses {
        tuples: HashMap::new(),
        written: HashSet::new(),
        outer_locals: HashSet::new(),
    };
    let mut inner = HashSet::new();
    collect_accesses(body, &mut inner, &mut acc);
    if let Some(v) = acc.outer_locals.iter().next() {
        return Some(format!(
            "%{v} is declared outside the loops and updated inside: its value flows between iterations"
        ));
    }
    let mut written: Vec<&String> = acc.written.iter().collect();
    written.sort();
    for buffer in written {
        let tuples = &acc.tuples[buffer];
        let first = &tuples[0];
        let pinned = |v: &str| {
            first.iter().enumerate().any(|(d, index)| {
                tuples.iter().all(|t| t.get(d) == Some(index))
                    && coefficient(index, v).is_some_and(|c| c != 0)
                    && vars.iter().all(|w| *w == v || !uses(index, w))
                    && !inner.iter().any(|x| x != v && uses(index, x))
            })
        };
        let unpinned: Vec<&&str> = vars.iter().filter(|v| !pinned(v)).collect();
        if unpinned.len() > loose {
            let shown: Vec<String> = tuples
                .iter()
                .map(|t| {
                    let list: Vec<String> = t.iter().map(lopper_ir::loops::expr_text).collect();
                    format!("[{}]", list.join(", "))
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Some(format!(
                "%{buffer} is accessed at {}, which does not tell iterations of %{} apart: one may depend on another",
                shown.join(" and "),
                unpinned
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" and %")
            ));
        }
    }
    None
}

/// The coefficient of `var` in `e` if `e` is affine in `var` (sums,
/// differences and products by constants); `None` if `var` sits inside
/// anything else (a division, a `min`, a load).
pub fn coefficient(e: &Expr, var: &str) -> Option<i64> {
    match e {
        Expr::Var(v) if v == var => Some(1),
        Expr::Binary(BinOp::Add, a, b) => Some(coefficient(a, var)? + coefficient(b, var)?),
        Expr::Binary(BinOp::Sub, a, b) => Some(coefficient(a, var)? - coefficient(b, var)?),
        Expr::Binary(BinOp::Mul, a, b) => match (a.as_ref(), b.as_ref()) {
            (x, Expr::Int(k)) | (Expr::Int(k), x) => Some(coefficient(x, var)? * k),
            (x, y) if !uses(x, var) && !uses(y, var) => Some(0),
            _ => None,
        },
        Expr::Unary(lopper_ir::loops::UnOp::Neg, a) => Some(-coefficient(a, var)?),
        other if !uses(other, var) => Some(0),
        _ => None,
    }
}
