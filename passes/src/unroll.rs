//! `unroll`: copies a loop's body, fully or by a factor, and jams the copies.
//!
//! `unroll{loop=i0.i}` replaces a loop with a constant trip count by one
//! copy of its body per iteration; `unroll{loop=k,factor=4}` keeps a loop
//! that runs a quarter as often, four copies per iteration, and a remainder
//! loop. Locals of each copy get a suffix (`%acc.2`).
//!
//! `unroll{loop=k,factor=4,chains=8}` also splits accumulators: where the
//! unrolled loop updates fewer than 8 of them (`%acc = fma(a, b, %acc)`,
//! `%acc = %acc + x`), successive copies update separate ones (`%acc.s1`,
//! zero before the loop, added back after it), so that up to 8 independent
//! chains hide the latency of the additions (the last, narrow column tile
//! of a matrix-vector product). It changes the order of the additions, as
//! any vectorized reduction does.
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
use lopper_ir::loops::{expr_text, BinOp, Expr, LoopKind, Module, ScalarType, Stmt};

/// The `unroll` pass.
pub struct Unroll {
    /// Kernels to change (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The loop to unroll.
    pub var: String,
    /// Copies per iteration; `None` unrolls fully.
    pub factor: Option<i64>,
    /// With a factor: split accumulators until the loop has this many
    /// independent chains.
    pub chains: Option<usize>,
}

/// Full unrolling refuses loops longer than this.
pub const MAX_FULL_UNROLL: i64 = 64;

impl Unroll {
    /// Reads `unroll{loop=..,factor=..,kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Unroll, String> {
        o.check_known("unroll", &["loop", "factor", "chains", "kernel"])?;
        let var = crate::loop_nest::loop_option("unroll", o)?;
        let factor = match o.0.get("factor").map(|f| f.parse::<i64>()) {
            None => None,
            Some(Ok(n)) if n >= 1 => Some(n),
            Some(_) => return Err("`factor` of `unroll` must be a positive integer".into()),
        };
        let chains = match o.0.get("chains").map(|c| c.parse::<usize>()) {
            None => None,
            Some(Ok(n)) if n >= 1 && factor.is_some() => Some(n),
            Some(Ok(_)) if factor.is_none() => {
                return Err("`chains` of `unroll` needs a `factor`".into())
            }
            Some(_) => return Err("`chains` of `unroll` must be a positive integer".into()),
        };
        Ok(Unroll {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            var,
            factor,
            chains,
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
            if let Some(chains) = self.chains {
                let split = split_accumulators(&mut kernel.body, &outer, chains, &mut used);
                if split > 0 {
                    cx.remark(format!(
                        "@{}: split {split} accumulator(s) of %{outer}",
                        kernel.name
                    ));
                }
            }
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

/// Splits the accumulators of every loop `%outer` in `body` (an unrolled
/// loop's copies, in order) so that the loop has up to `chains` of them;
/// returns how many accumulators were split.
fn split_accumulators(
    body: &mut Vec<Stmt>,
    outer: &str,
    chains: usize,
    used: &mut std::collections::HashSet<String>,
) -> usize {
    let mut split = 0;
    let mut i = 0;
    while i < body.len() {
        let (before, rest) = body.split_at_mut(i);
        match &mut rest[0] {
            Stmt::For {
                var, body: inner, ..
            } if var == outer => {
                let accumulators = accumulators(inner);
                let updates = accumulators.iter().map(|a| a.1).min().unwrap_or(0);
                let sets = (chains / accumulators.len().max(1)).min(updates);
                // The accumulators' types, from their declarations before
                // the loop (vectors and f32 only).
                let typed: Option<Vec<(String, ScalarType)>> = accumulators
                    .iter()
                    .map(|(v, _)| {
                        before.iter().rev().find_map(|s| match s {
                            Stmt::Let { var, ty, .. } if var == v => match ty {
                                ScalarType::F32 | ScalarType::Vector(_) => Some((v.clone(), *ty)),
                                _ => None,
                            },
                            _ => None,
                        })
                    })
                    .collect();
                let (Some(typed), true) = (typed, sets >= 2) else {
                    i += 1;
                    continue;
                };
                let mut lets = Vec::new();
                let mut sums = Vec::new();
                for (v, ty) in &typed {
                    let names: Vec<String> = (1..sets)
                        .map(|j| crate::loop_nest::fresh(used, &format!("{v}.s{j}")))
                        .collect();
                    // The j-th update of `v` is the j-th copy's.
                    let mut seen = 0;
                    for s in inner.iter_mut() {
                        if let Stmt::Assign { var, value } = s {
                            if var == v {
                                let set = seen % sets;
                                seen += 1;
                                if set > 0 {
                                    let to = &names[set - 1];
                                    *value = rename_in(value, v, to);
                                    *var = to.clone();
                                }
                            }
                        }
                    }
                    let zero = match ty {
                        ScalarType::Vector(lanes) => {
                            Expr::Broadcast(Box::new(Expr::Float(0.0)), *lanes)
                        }
                        _ => Expr::Float(0.0),
                    };
                    let mut total = Expr::var(v);
                    for n in &names {
                        lets.push(Stmt::Let {
                            var: n.clone(),
                            ty: *ty,
                            init: zero.clone(),
                        });
                        total = Expr::bin(BinOp::Add, total, Expr::var(n));
                    }
                    sums.push(Stmt::Assign {
                        var: v.clone(),
                        value: total,
                    });
                }
                split += typed.len();
                let (n_lets, n_sums) = (lets.len(), sums.len());
                body.splice(i + 1..i + 1, sums);
                body.splice(i..i, lets);
                i += n_lets + n_sums + 1;
                continue;
            }
            Stmt::For { body: inner, .. } => {
                split += split_accumulators(inner, outer, chains, used)
            }
            Stmt::If {
                then, otherwise, ..
            } => {
                split += split_accumulators(then, outer, chains, used);
                split += split_accumulators(otherwise, outer, chains, used);
            }
            _ => {}
        }
        i += 1;
    }
    split
}

/// The accumulators `body` updates at its top level and how many times:
/// variables it does not declare, assigned only as `%v = fma(a, b, %v)` or
/// `%v = %v + x` (either order) and read nowhere else.
fn accumulators(body: &[Stmt]) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for s in body {
        if let Stmt::Assign { var, .. } = s {
            if found.iter().any(|(v, _)| v == var) {
                continue;
            }
            let v = var.as_str();
            let is_v = |e: &Expr| matches!(e, Expr::Var(x) if x == v);
            let updates = |e: &Expr| match e {
                Expr::Fma(a, b, c) => is_v(c) && !a.reads(&|x| x == v) && !b.reads(&|x| x == v),
                Expr::Binary(BinOp::Add, a, b) => {
                    (is_v(a) && !b.reads(&|x| x == v)) || (is_v(b) && !a.reads(&|x| x == v))
                }
                _ => false,
            };
            let mut count = 0;
            let mut only_updates = true;
            for t in body {
                match t {
                    Stmt::Assign { var, value } if var == v => {
                        count += 1;
                        only_updates &= updates(value);
                    }
                    Stmt::Let { var, .. } if var == v => only_updates = false,
                    other => only_updates &= !mentions(other, v),
                }
            }
            if only_updates {
                found.push((v.to_string(), count));
            }
        }
    }
    found
}

/// `e` with the variable `from` read as `to`.
fn rename_in(e: &Expr, from: &str, to: &str) -> Expr {
    crate::loop_nest::map_expr(e, &mut |x| match x {
        Expr::Var(name) if name == from => Expr::Var(to.to_string()),
        other => other,
    })
}

/// True if `s` reads, assigns or declares the variable `v` anywhere.
fn mentions(s: &Stmt, v: &str) -> bool {
    let found = std::cell::Cell::new(false);
    crate::loop_nest::map_block(
        std::slice::from_ref(s),
        &mut |e| {
            if matches!(&e, Expr::Var(x) if x == v) {
                found.set(true);
            }
            e
        },
        &mut |n| {
            if n == v {
                found.set(true);
            }
            n.to_string()
        },
    );
    found.get()
}
