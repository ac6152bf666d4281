//! `unroll`: copies a loop's body, fully or by a factor, and jams the copies.
//!
//! `unroll{loop=i0.i}` replaces a loop with a constant trip count by one
//! copy of its body per iteration; `unroll{loop=k,factor=4}` keeps a loop
//! that runs a quarter as often, four copies per iteration, and a remainder
//! loop. Locals of each copy get a suffix (`%acc.2`).
//!
//! Copies are *jammed*: where every copy holds the same inner loop (same
//! bounds) or the same `if`, the copies share it, with their bodies merged
//! inside. Unrolling the rows and the vector columns of a matmul tile this
//! way gives an MR x NR block of accumulators updated in one `k` loop, the
//! register blocking of a GEMM micro-kernel. Jamming reorders the copies'
//! work, so it is done only when the copies are independent
//! ([`reorder_hazard`]); otherwise the copies follow one another.

use crate::loop_nest::{
    fold_all, list_option, reorder_hazard, rewrite_loops, selected, substitute,
};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::loops::{expr_text, BinOp, Expr, LoopKind, Module, Stmt};

/// The `unroll` pass.
pub struct Unroll {
    /// Kernels to change (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The loop to unroll.
    pub var: String,
    /// Copies per iteration; `None` unrolls fully.
    pub factor: Option<i64>,
}

/// Full unrolling refuses loops longer than this.
pub const MAX_FULL_UNROLL: i64 = 64;

impl Unroll {
    /// Reads `unroll{loop=..,factor=..,kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Unroll, String> {
        o.check_known("unroll", &["loop", "factor", "kernel"])?;
        let var = crate::loop_nest::loop_option("unroll", o)?;
        let factor = match o.0.get("factor").map(|f| f.parse::<i64>()) {
            None => None,
            Some(Ok(n)) if n >= 1 => Some(n),
            Some(_) => return Err("`factor` of `unroll` must be a positive integer".into()),
        };
        Ok(Unroll {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            var,
            factor,
        })
    }
}

impl Pass<Module> for Unroll {
    fn name(&self) -> &'static str {
        "unroll"
    }

    fn description(&self) -> &'static str {
        "copy a loop's body fully or by a factor, jamming the copies' inner loops"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut total = 0;
        for kernel in selected(m, &self.kernels) {
            let mut used = crate::loop_nest::names_in(kernel);
            let outer = crate::loop_nest::fresh(&mut used, &format!("{}.u", self.var));
            let count = rewrite_loops(&mut kernel.body, &self.var, &mut |s| {
                unroll_loop(s, self.factor, &outer)
            })
            .map_err(|e| PassError::new("unroll", format!("@{}: {e}", kernel.name)))?;
            if count > 0 {
                cx.remark(format!(
                    "@{}: unrolled {count} loop(s) %{}",
                    kernel.name, self.var
                ));
            }
            total += count;
        }
        Ok(Changed::from(total > 0))
    }
}

/// Unrolls one loop: fully when `factor` is `None`, else by `factor` with
/// `%outer` as the new loop's variable.
pub fn unroll_loop(s: Stmt, factor: Option<i64>, outer: &str) -> Result<Vec<Stmt>, String> {
    let jam_ok = reorder_hazard(std::slice::from_ref(&s), &[loop_var(&s)], 0).is_none();
    let Stmt::For {
        var, lo, hi, body, ..
    } = s
    else {
        unreachable!("called on loops")
    };
    let (Expr::Int(l), Expr::Int(h)) = (&lo, &hi) else {
        return Err(format!(
            "%{var} runs from `{}` to `{}`: unroll needs a constant trip count",
            expr_text(&lo),
            expr_text(&hi)
        ));
    };
    let n = (h - l).max(0);
    let copies = |first: &Expr, count: i64| -> Vec<Vec<Stmt>> {
        (0..count)
            .map(|c| {
                let at = fold_all(&Expr::bin(BinOp::Add, first.clone(), Expr::Int(c)));
                let renamed = rename_locals(&body, &format!(".{c}"));
                substitute(&renamed, &var, &at)
            })
            .collect()
    };
    let merge = |cs: Vec<Vec<Stmt>>| {
        if jam_ok {
            jam(cs)
        } else {
            cs.into_iter().flatten().collect()
        }
    };
    match factor {
        None => {
            if n > MAX_FULL_UNROLL {
                return Err(format!(
                    "%{var} has {n} iterations, more than {MAX_FULL_UNROLL} to unroll fully (give a factor)"
                ));
            }
            Ok(merge(copies(&Expr::Int(*l), n)))
        }
        Some(f) => {
            let full = n / f;
            let first = fold_all(&Expr::bin(
                BinOp::Add,
                Expr::Int(*l),
                Expr::bin(BinOp::Mul, Expr::var(outer), Expr::Int(f)),
            ));
            let mut out = vec![Stmt::For {
                var: outer.to_string(),
                lo: Expr::Int(0),
                hi: Expr::Int(full),
                kind: LoopKind::Serial,
                body: merge(copies(&first, f)),
            }];
            if n % f != 0 {
                out.push(Stmt::For {
                    var,
                    lo: Expr::Int(l + full * f),
                    hi,
                    kind: LoopKind::Serial,
                    body,
                });
            }
            Ok(out)
        }
    }
}

fn loop_var(s: &Stmt) -> &str {
    match s {
        Stmt::For { var, .. } => var,
        _ => "",
    }
}

/// `body` with its locals and local arrays (not its loop variables, which
/// jammed copies share) suffixed.
fn rename_locals(body: &[Stmt], suffix: &str) -> Vec<Stmt> {
    let mut loops = std::collections::HashSet::new();
    collect_loop_vars(body, &mut loops);
    let renamed = crate::loop_nest::rename_declared(body, suffix);
    // Put the loop variables' names back.
    let mut out = renamed;
    for v in loops {
        out = crate::loop_nest::rename_var(&out, &format!("{v}{suffix}"), &v);
    }
    out
}

fn collect_loop_vars(body: &[Stmt], out: &mut std::collections::HashSet<String>) {
    for s in body {
        match s {
            Stmt::For { var, body, .. } => {
                out.insert(var.clone());
                collect_loop_vars(body, out);
            }
            Stmt::If {
                then, otherwise, ..
            } => {
                collect_loop_vars(then, out);
                collect_loop_vars(otherwise, out);
            }
            _ => {}
        }
    }
}

/// Merges copies of one body: shared loops and `if`s hold the merged
/// bodies; other statements follow one another, copy by copy.
fn jam(copies: Vec<Vec<Stmt>>) -> Vec<Stmt> {
    let Some(first) = copies.first() else {
        return Vec::new();
    };
    let same_shape = copies.iter().all(|c| c.len() == first.len());
    if !same_shape {
        return copies.into_iter().flatten().collect();
    }
    let mut out = Vec::new();
    for p in 0..first.len() {
        let at: Vec<&Stmt> = copies.iter().map(|c| &c[p]).collect();
        match at[0] {
            Stmt::For {
                var, lo, hi, kind, ..
            } if at.iter().all(|s| {
                matches!(s, Stmt::For { var: v, lo: l, hi: h, kind: k, .. }
                    if v == var && l == lo && h == hi && k == kind)
            }) =>
            {
                let bodies = at
                    .iter()
                    .map(|s| match s {
                        Stmt::For { body, .. } => body.clone(),
                        _ => unreachable!(),
                    })
                    .collect();
                out.push(Stmt::For {
                    var: var.clone(),
                    lo: lo.clone(),
                    hi: hi.clone(),
                    kind: *kind,
                    body: jam(bodies),
                });
            }
            Stmt::If { cond, .. }
                if at
                    .iter()
                    .all(|s| matches!(s, Stmt::If { cond: c, .. } if c == cond)) =>
            {
                let (thens, elses) = at
                    .iter()
                    .map(|s| match s {
                        Stmt::If {
                            then, otherwise, ..
                        } => (then.clone(), otherwise.clone()),
                        _ => unreachable!(),
                    })
                    .unzip();
                out.push(Stmt::If {
                    cond: cond.clone(),
                    then: jam(thens),
                    otherwise: jam(elses),
                });
            }
            _ => out.extend(at.into_iter().cloned()),
        }
    }
    out
}
