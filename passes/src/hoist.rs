//! `hoist`: moves loop-invariant work out of loops (loop IR).
//!
//! A `let` at the top of a loop body whose value does not change from one
//! iteration to the next moves in front of the loop: its value must not
//! mention the loop variable or anything declared or assigned in the loop,
//! nor load from a buffer the loop stores to, and the local itself must not
//! be assigned in the loop. Loops are visited innermost first, so a value
//! rises as far as it can. Index arithmetic inside addresses is left to the
//! code generators (Cranelift's address folding); this pass moves whole
//! values, such as a weight broadcast or a `1 / n` computed per row.

use crate::loop_nest::{declared, map_expr, uses};
use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::loops::{Expr, Module, Stmt};
use std::collections::HashSet;

/// The `hoist` pass.
pub struct Hoist;

impl Pass<Module> for Hoist {
    fn name(&self) -> &'static str {
        "hoist"
    }

    fn description(&self) -> &'static str {
        "move loop-invariant lets out of loops"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut moved = 0;
        for k in &mut m.kernels {
            let body = std::mem::take(&mut k.body);
            k.body = hoist_block(body, &mut moved);
        }
        if moved > 0 {
            cx.remark(format!("hoisted {moved} loop-invariant value(s)"));
        }
        Ok(Changed::from(moved > 0))
    }
}

fn hoist_block(body: Vec<Stmt>, moved: &mut usize) -> Vec<Stmt> {
    // What each statement of this block declares, at any depth: a hoisted
    // `let` must not share its name with another statement's locals (two
    // loops of one block, each with an invariant `%r`), which would then
    // sit in its scope.
    let declares: Vec<HashSet<String>> = body
        .iter()
        .map(|s| {
            let mut names = HashSet::new();
            declared(std::slice::from_ref(s), &mut names);
            names
        })
        .collect();
    let mut hoisted_here: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(body.len());
    for (i, s) in body.into_iter().enumerate() {
        match s {
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            } => {
                let body = hoist_block(body, moved);
                let (invariant, rest) = split_invariant(&var, body);
                let clashes = |name: &str| {
                    hoisted_here.contains(name)
                        || declares
                            .iter()
                            .enumerate()
                            .any(|(j, names)| j != i && names.contains(name))
                };
                let mut before = Vec::new();
                let mut body = Vec::new();
                for s in invariant {
                    match &s {
                        Stmt::Let { var: local, .. } if clashes(local) => body.push(s),
                        _ => before.push(s),
                    }
                }
                for s in &before {
                    if let Stmt::Let { var: local, .. } = s {
                        hoisted_here.insert(local.clone());
                    }
                }
                body.extend(rest);
                *moved += before.len();
                out.extend(before);
                out.push(Stmt::For {
                    var,
                    lo,
                    hi,
                    kind,
                    body,
                });
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => out.push(Stmt::If {
                cond,
                then: hoist_block(then, moved),
                otherwise: hoist_block(otherwise, moved),
            }),
            other => out.push(other),
        }
    }
    out
}

/// The invariant lets at the top level of a loop body over `var`, and the
/// body without them.
fn split_invariant(var: &str, body: Vec<Stmt>) -> (Vec<Stmt>, Vec<Stmt>) {
    let mut inside = HashSet::new();
    declared(&body, &mut inside);
    inside.insert(var.to_string());
    let (assigned, stored) = writes(&body);
    let mut hoisted = Vec::new();
    let mut rest = Vec::new();
    for s in body {
        let invariant = match &s {
            Stmt::Let {
                var: local, init, ..
            } => {
                !assigned.contains(local)
                    && !inside.iter().any(|n| n != local && uses(init, n))
                    && !loads_any(init, &stored)
            }
            _ => false,
        };
        if invariant {
            hoisted.push(s);
        } else {
            rest.push(s);
        }
    }
    (hoisted, rest)
}

/// The locals `body` assigns and the buffers it stores to, at any depth.
fn writes(body: &[Stmt]) -> (HashSet<String>, HashSet<String>) {
    let (mut locals, mut buffers) = (HashSet::new(), HashSet::new());
    lopper_ir::loops::for_each_stmt(body, &mut |s| match s {
        Stmt::Assign { var, .. } => {
            locals.insert(var.clone());
        }
        Stmt::Store { buffer, .. } | Stmt::VStore { buffer, .. } => {
            buffers.insert(buffer.clone());
        }
        _ => {}
    });
    (locals, buffers)
}

fn loads_any(e: &Expr, buffers: &HashSet<String>) -> bool {
    let mut found = false;
    map_expr(e, &mut |x| {
        if let Expr::Load { buffer, .. }
        | Expr::VLoad { buffer, .. }
        | Expr::Permute { buffer, .. } = &x
        {
            found |= buffers.contains(buffer);
        }
        x
    });
    found
}
