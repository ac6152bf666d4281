//! `simplify-loops`: folds index arithmetic and removes control flow that
//! does nothing (loop IR).
//!
//! It folds constant index arithmetic everywhere (`%i0.o * 4 + 0` →
//! `%i0.o * 4`, `(x + 2) + 3` → `x + 5`), drops loops that never run,
//! replaces a loop that runs once by its body (with the variable replaced
//! by its one value), and replaces an `if` whose condition is a constant by
//! the branch taken. A body is spliced into the enclosing block only if
//! none of the names it declares is declared there already. It does not
//! move or reorder work (see `hoist`).

use crate::loop_nest::{declared, fold_all, map_block, substitute};
use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::loops::{BinOp, Expr, Module, Stmt};
use std::collections::HashSet;

/// The `simplify-loops` pass.
pub struct SimplifyLoops;

impl Pass<Module> for SimplifyLoops {
    fn name(&self) -> &'static str {
        "simplify-loops"
    }

    fn description(&self) -> &'static str {
        "fold index arithmetic; drop empty loops, inline one-iteration loops and constant ifs"
    }

    fn run(&mut self, m: &mut Module, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let before = m.kernels.clone();
        for k in &mut m.kernels {
            let folded = map_block(&k.body, &mut |e| fold_all(&e), &mut |n| n.to_string());
            k.body = simplify_block(folded);
        }
        Ok(Changed::from(m.kernels != before))
    }
}

fn simplify_block(body: Vec<Stmt>) -> Vec<Stmt> {
    let mut out: Vec<Stmt> = Vec::with_capacity(body.len());
    // What each statement declares, so that a spliced body does not clash
    // with its siblings.
    let per_statement: Vec<HashSet<String>> = body
        .iter()
        .map(|s| {
            let mut n = HashSet::new();
            declared_here(std::slice::from_ref(s), &mut n);
            n
        })
        .collect();
    for (i, s) in body.into_iter().enumerate() {
        let mut names: HashSet<String> = per_statement
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, n)| n.iter().cloned())
            .collect();
        match s {
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            } => {
                let body = simplify_block(body);
                match (&lo, &hi) {
                    (Expr::Int(l), Expr::Int(h)) if h <= l => {}
                    (Expr::Int(l), Expr::Int(h)) if h - l == 1 && splice_ok(&body, &names) => {
                        let inner = substitute(&body, &var, &Expr::Int(*l));
                        declared_here(&inner, &mut names);
                        out.extend(simplify_block(inner));
                    }
                    _ if body.is_empty() => {}
                    _ => out.push(Stmt::For {
                        var,
                        lo,
                        hi,
                        kind,
                        body,
                    }),
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let (then, otherwise) = (simplify_block(then), simplify_block(otherwise));
                match constant_truth(&cond) {
                    Some(taken) => {
                        let branch = if taken { then } else { otherwise };
                        if splice_ok(&branch, &names) {
                            declared_here(&branch, &mut names);
                            out.extend(branch);
                        } else {
                            // Keep a scope for it.
                            out.push(Stmt::If {
                                cond: Expr::bin(BinOp::Eq, Expr::Int(0), Expr::Int(0)),
                                then: branch,
                                otherwise: Vec::new(),
                            });
                        }
                    }
                    None if then.is_empty() && otherwise.is_empty() => {}
                    None => out.push(Stmt::If {
                        cond,
                        then,
                        otherwise,
                    }),
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The names a block declares at its own level and below.
fn declared_here(body: &[Stmt], names: &mut HashSet<String>) {
    declared(body, names);
}

/// True if `body` declares nothing that `names` holds.
fn splice_ok(body: &[Stmt], names: &HashSet<String>) -> bool {
    let mut mine = HashSet::new();
    declared(body, &mut mine);
    mine.is_disjoint(names)
}

/// The value of a condition made of constants, if it is one.
fn constant_truth(e: &Expr) -> Option<bool> {
    let Expr::Binary(op, a, b) = e else {
        return None;
    };
    match op {
        BinOp::And => Some(constant_truth(a)? && constant_truth(b)?),
        BinOp::Or => Some(constant_truth(a)? || constant_truth(b)?),
        _ => {
            let (Expr::Int(x), Expr::Int(y)) = (&**a, &**b) else {
                return None;
            };
            Some(match op {
                BinOp::Lt => x < y,
                BinOp::Le => x <= y,
                BinOp::Gt => x > y,
                BinOp::Ge => x >= y,
                BinOp::Eq => x == y,
                BinOp::Ne => x != y,
                _ => return None,
            })
        }
    }
}
