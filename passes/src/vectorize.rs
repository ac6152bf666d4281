//! `vectorize`: turns a loop with a constant trip count into vector lanes.
//!
//! `vectorize{loop=i1.i,lanes=4}` rewrites `for %v in lo..hi { B }` into
//! `for %v.v in 0..n/4 { B' }` plus, for the last `n % 4` iterations, one
//! more vector that ends at the last iteration (when an iteration may run
//! twice: it reads nothing it writes, so lanes shared with the previous
//! vector store the same values again; with one whole vector, the loop
//! itself runs twice, its second vector starting `n - 4` in, so that
//! `unroll` jams both into one block) or else a scalar remainder loop. A
//! loop shorter than one vector (a tiled loop's last tile) takes 8 or 4
//! lanes instead when it has that many iterations. In `B'` lane `l` does what iteration `lo + 4·%v.v + l`
//! did:
//!
//! - loads and stores whose last index moves by exactly 1 with `%v` (and no
//!   other index moves) become `vload<4>` / `vstore<4>`; loads whose last
//!   index moves by 2 (stride-2 pools and convolutions) become two
//!   `vload`s and a `shuffle` of their even or odd lanes;
//! - values that do not depend on `%v` are computed once and `broadcast`;
//! - `f32` locals that take a lane-dependent value become `f32x4` locals,
//!   so a reduction inside (the `k` loop of a matmul) accumulates in vector
//!   registers;
//! - inner loops and `if`s stay, as long as their bounds and conditions do
//!   not depend on `%v`.
//!
//! The loop need not be innermost: vectorizing the output columns of a
//! matmul around its `k` loop is the point. It refuses (with the reason)
//! anything else: another strided or a gathered access (pack the operand first), an
//! index computed from `%v` other than as the last index, a condition or
//! bound that depends on `%v`, lanes that would all store to one element.
//! - a local declared outside the loop that the body only reduces into
//!   (`%s = %s + e`, `max(%s, e)`, `min(%s, e)`: a softmax's row maximum
//!   and sum) gets a vector of partial results, lane `l` taking every
//!   `lanes`-th term from the `l`-th, combined after the loop by `hsum`,
//!   `hmax` or `hmin`. For a maximum or minimum that is the same result;
//!   for a sum, the same terms added in another association (what
//!   `-ffast-math` lets a C compiler do, TVM's `rfactor`), so rounding may
//!   differ in the last bits. The remainder stays scalar and runs after.
//!
//! It does not reorder loops; apart from such reductions each lane sums
//! its terms in the original order.

use crate::loop_nest::{coefficient, fold_all, list_option, rewrite_loops, selected, uses};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::loops::{expr_text, BinOp, Expr, LoopKind, Module, ScalarType, Stmt, UnOp};
use std::collections::HashSet;

/// The `vectorize` pass.
pub struct Vectorize {
    /// Kernels to change (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The loop to vectorize.
    pub var: String,
    /// Lanes per vector.
    pub lanes: u32,
}

impl Vectorize {
    /// Reads `vectorize{loop=..,lanes=4,kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Vectorize, String> {
        o.check_known("vectorize", &["loop", "lanes", "kernel"])?;
        let var = crate::loop_nest::loop_option("vectorize", o)?;
        let lanes = match o.0.get("lanes").map(|l| l.parse::<u32>()) {
            None => 4,
            Some(Ok(n)) if n == 4 || n == 8 || n == 16 => n,
            Some(_) => return Err("`lanes` of `vectorize` must be 4, 8 or 16".into()),
        };
        Ok(Vectorize {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            var,
            lanes,
        })
    }
}

impl Pass<Module> for Vectorize {
    fn name(&self) -> &'static str {
        "vectorize"
    }

    fn description(&self) -> &'static str {
        "turn a loop into vector lanes, with a scalar remainder"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut total = 0;
        for kernel in selected(m, &self.kernels) {
            let mut used = crate::loop_nest::names_in(kernel);
            let vector_var = crate::loop_nest::fresh(&mut used, &format!("{}.v", self.var));
            let count = rewrite_loops(&mut kernel.body, &self.var, &mut |s| {
                vectorize_loop(s, &vector_var, self.lanes)
            })
            .map_err(|e| PassError::new("vectorize", format!("@{}: {e}", kernel.name)))?;
            if count > 0 {
                cx.remark(format!(
                    "@{}: vectorized {count} loop(s) %{} by {}",
                    kernel.name, self.var, self.lanes
                ));
            }
            total += count;
        }
        Ok(Changed::from(total > 0))
    }
}

/// Why the loop cannot be vectorized, if it cannot (for `auto-schedule`).
pub fn vectorize_hazard(s: &Stmt, lanes: u32) -> Option<String> {
    vectorize_loop(s.clone(), "probe.v", lanes).err()
}

/// The vector loop and the scalar remainder for one `for` statement.
pub fn vectorize_loop(s: Stmt, vector_var: &str, lanes: u32) -> Result<Vec<Stmt>, String> {
    let Stmt::For {
        var, lo, hi, body, ..
    } = s
    else {
        unreachable!("called on loops")
    };
    let (Expr::Int(l), Expr::Int(h)) = (&lo, &hi) else {
        return Err(format!(
            "%{var} runs from `{}` to `{}`: vectorize needs a constant trip count (tile the loop first)",
            expr_text(&lo),
            expr_text(&hi)
        ));
    };
    let n = (h - l).max(0);
    let full = n / lanes as i64;
    if full == 0 && n >= 4 && lanes > 4 {
        // Too short for one vector but not for a narrower one (the last
        // 12 columns of a tiled loop on 16 lanes take 8 and 4): every
        // lane width handles the same loop.
        let narrower = if n >= 8 { 8 } else { 4 };
        let s = Stmt::For {
            var,
            lo,
            hi,
            kind: LoopKind::Serial,
            body,
        };
        return vectorize_loop(s, vector_var, narrower);
    }
    if full == 0 {
        // Too short for any vector: it stays scalar.
        return Ok(vec![Stmt::For {
            var,
            lo,
            hi,
            kind: LoopKind::Serial,
            body,
        }]);
    }
    // One whole vector and a part (a conv2d's 28 output columns on 16
    // lanes): when an iteration may run twice, one loop of two vectors,
    // the second ending at the last iteration, so that unrolling it jams
    // both into one register block rather than two passes.
    let two_overlapping = full == 1 && n % lanes as i64 != 0 && recomputable(&body);
    let step = if two_overlapping {
        n - lanes as i64
    } else {
        lanes as i64
    };
    let mut w = Widen {
        var: &var,
        lanes,
        vector_locals: HashSet::new(),
        first_lane: fold_all(&Expr::bin(
            BinOp::Add,
            lo.clone(),
            Expr::bin(BinOp::Mul, Expr::var(vector_var), Expr::Int(step)),
        )),
    };
    // Reductions into locals declared outside: a vector of partial results
    // per local, one lane per residue of the iteration, combined after.
    let reductions = outer_reductions(&body);
    let mut lane_body = body.clone();
    let mut out = Vec::new();
    for (local, op) in &reductions {
        let partial = format!("{local}.{vector_var}");
        lane_body = crate::loop_nest::rename_var(&lane_body, local, &partial);
        w.vector_locals.insert(partial.clone());
        out.push(Stmt::Let {
            var: partial,
            ty: ScalarType::Vector(lanes),
            init: Expr::Broadcast(Box::new(Expr::Float(identity(*op))), lanes),
        });
    }
    w.find_vector_locals(&lane_body);
    let vector_body = w.block(&lane_body)?;
    out.push(Stmt::For {
        var: vector_var.to_string(),
        lo: Expr::Int(0),
        hi: Expr::Int(if two_overlapping { 2 } else { full }),
        kind: LoopKind::Serial,
        body: vector_body,
    });
    for (local, op) in &reductions {
        let lanes_combined =
            Expr::Horizontal(*op, Box::new(Expr::var(&format!("{local}.{vector_var}"))));
        out.push(Stmt::Assign {
            var: local.clone(),
            value: Expr::bin(*op, Expr::var(local), lanes_combined),
        });
    }
    if two_overlapping {
        // Its second vector was the tail.
        return Ok(out);
    }
    if n % lanes as i64 != 0 {
        if recomputable(&body) {
            // One more vector ending at the last iteration: the lanes it
            // shares with the previous vector store the same values again.
            let tail = Widen {
                first_lane: Expr::Int(h - lanes as i64),
                ..w
            };
            out.push(Stmt::For {
                var: format!("{vector_var}.tail"),
                lo: Expr::Int(0),
                hi: Expr::Int(1),
                kind: LoopKind::Serial,
                body: tail.block(&body)?,
            });
        } else {
            out.push(Stmt::For {
                var: var.clone(),
                lo: Expr::Int(l + full * lanes as i64),
                hi: hi.clone(),
                kind: LoopKind::Serial,
                body,
            });
        }
    }
    Ok(out)
}

/// Locals declared outside `body` that it only updates by one reduction:
/// every assignment is `%s = %s + e` (or `e + %s`, `fma(a, b, %s)`),
/// `max(%s, e)` or `min(%s, e)`, one op per local, and `%s` is read
/// nowhere else. Each with its op.
fn outer_reductions(body: &[Stmt]) -> Vec<(String, BinOp)> {
    fn updates(body: &[Stmt], out: &mut Vec<(String, Option<BinOp>)>) {
        for s in body {
            match s {
                Stmt::Assign { var, value } => out.push((var.clone(), reduction_op(var, value))),
                Stmt::For { body, .. } => updates(body, out),
                Stmt::If {
                    then, otherwise, ..
                } => {
                    updates(then, out);
                    updates(otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut inside = HashSet::new();
    crate::loop_nest::declared(body, &mut inside);
    let mut all = Vec::new();
    updates(body, &mut all);
    let mut found: Vec<(String, BinOp)> = Vec::new();
    for (local, _) in all.iter().filter(|(v, _)| !inside.contains(v)) {
        if found.iter().any(|(f, _)| f == local) {
            continue;
        }
        let ops: Vec<Option<BinOp>> = all
            .iter()
            .filter(|(v, _)| v == local)
            .map(|(_, op)| *op)
            .collect();
        let Some(Some(op)) = ops.first().copied() else {
            continue;
        };
        let mut reads = 0;
        crate::loop_nest::map_block(
            body,
            &mut |e| {
                if matches!(&e, Expr::Var(v) if v == local) {
                    reads += 1;
                }
                e
            },
            &mut |n| n.to_string(),
        );
        if ops.iter().all(|o| *o == Some(op)) && reads == ops.len() {
            found.push((local.clone(), op));
        }
    }
    found
}

/// True if `body` reduces into a local declared outside it (as the taps of
/// a convolution do into their output's accumulator).
pub(crate) fn reduces_outside(body: &[Stmt]) -> bool {
    !outer_reductions(body).is_empty()
}

/// The reduction `value` applies to `%s`, if it is `%s ⊕ e` for ⊕ one of
/// `+`, `max`, `min` (or an `fma` adding to `%s`) with no other `%s` in it.
fn reduction_op(s: &str, value: &Expr) -> Option<BinOp> {
    let is_s = |e: &Expr| matches!(e, Expr::Var(v) if v == s);
    match value {
        Expr::Binary(op @ (BinOp::Add | BinOp::Max | BinOp::Min), a, b)
            if (is_s(a) && !uses(b, s)) || (is_s(b) && !uses(a, s)) =>
        {
            Some(*op)
        }
        Expr::Fma(a, b, c) if is_s(c) && !uses(a, s) && !uses(b, s) => Some(BinOp::Add),
        _ => None,
    }
}

/// The value a reduction by `op` starts from.
fn identity(op: BinOp) -> f32 {
    match op {
        BinOp::Max => f32::NEG_INFINITY,
        BinOp::Min => f32::INFINITY,
        _ => 0.0,
    }
}

/// True if running an iteration of `body` twice stores the same values:
/// it reads no buffer it writes and updates no local declared outside it.
fn recomputable(body: &[Stmt]) -> bool {
    fn walk(body: &[Stmt], declared: &mut HashSet<String>, stored: &mut HashSet<String>) -> bool {
        body.iter().all(|s| match s {
            Stmt::For { var, body, .. } => {
                declared.insert(var.clone());
                walk(body, declared, stored)
            }
            Stmt::Let { var, .. } => {
                declared.insert(var.clone());
                true
            }
            Stmt::Alloc { name, .. } => {
                declared.insert(name.clone());
                true
            }
            Stmt::Assign { var, .. } => declared.contains(var),
            Stmt::Store { buffer, .. } | Stmt::VStore { buffer, .. } => {
                stored.insert(buffer.clone());
                true
            }
            Stmt::If {
                then, otherwise, ..
            } => walk(then, declared, stored) && walk(otherwise, declared, stored),
        })
    }
    let (mut declared, mut stored) = (HashSet::new(), HashSet::new());
    walk(body, &mut declared, &mut stored)
        && !lopper_ir::loops::buffers_used(body)
            .iter()
            .any(|b| stored.contains(b) && loads(body, b))
}

/// True if `body` loads from `buffer`.
pub(crate) fn loads(body: &[Stmt], buffer: &str) -> bool {
    let mut found = false;
    crate::loop_nest::map_block(
        body,
        &mut |e| {
            if matches!(&e, Expr::Load { buffer: b, .. } | Expr::VLoad { buffer: b, .. } | Expr::Permute { buffer: b, .. } if b == buffer)
            {
                found = true;
            }
            e
        },
        &mut |n| n.to_string(),
    );
    found
}

struct Widen<'a> {
    var: &'a str,
    lanes: u32,
    vector_locals: HashSet<String>,
    /// The index of lane 0: `lo + lanes·%v.v`.
    first_lane: Expr,
}

impl Widen<'_> {
    /// True if `e` takes a different value in each lane.
    fn varies(&self, e: &Expr) -> bool {
        uses(e, self.var) || self.vector_locals.iter().any(|l| uses(e, l))
    }

    /// `f32` locals that some lane-dependent value flows into.
    fn find_vector_locals(&mut self, body: &[Stmt]) {
        loop {
            let before = self.vector_locals.len();
            self.scan(body);
            if self.vector_locals.len() == before {
                break;
            }
        }
    }

    fn scan(&mut self, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::Let {
                    var,
                    ty: ScalarType::F32,
                    init: value,
                }
                | Stmt::Assign { var, value }
                    if self.varies(value) =>
                {
                    self.vector_locals.insert(var.clone());
                }
                Stmt::For { body, .. } => self.scan(body),
                Stmt::If {
                    then, otherwise, ..
                } => {
                    self.scan(then);
                    self.scan(otherwise);
                }
                _ => {}
            }
        }
    }

    fn block(&self, body: &[Stmt]) -> Result<Vec<Stmt>, String> {
        body.iter().map(|s| self.stmt(s)).collect()
    }

    fn stmt(&self, s: &Stmt) -> Result<Stmt, String> {
        Ok(match s {
            Stmt::For {
                var,
                lo,
                hi,
                kind,
                body,
            } => {
                if self.varies(lo) || self.varies(hi) {
                    return Err(format!("the bounds of %{var} depend on %{}", self.var));
                }
                Stmt::For {
                    var: var.clone(),
                    lo: lo.clone(),
                    hi: hi.clone(),
                    kind: *kind,
                    body: self.block(body)?,
                }
            }
            Stmt::Let { var, ty, init } => {
                if self.vector_locals.contains(var) {
                    Stmt::Let {
                        var: var.clone(),
                        ty: ScalarType::Vector(self.lanes),
                        init: self.expr(init)?,
                    }
                } else if self.varies(init) {
                    return Err(format!(
                        "%{var}: {} depends on %{} (only f32 values can become lanes)",
                        ty.name(),
                        self.var
                    ));
                } else {
                    s.clone()
                }
            }
            Stmt::Assign { var, value } => {
                if self.vector_locals.contains(var) {
                    Stmt::Assign {
                        var: var.clone(),
                        value: self.expr(value)?,
                    }
                } else {
                    s.clone()
                }
            }
            Stmt::Store {
                buffer,
                indices,
                value,
            } => {
                if indices.iter().any(|i| uses(i, self.var)) {
                    Stmt::VStore {
                        buffer: buffer.clone(),
                        indices: self.lane_indices(buffer, indices)?,
                        value: self.expr(value)?,
                        lanes: self.lanes,
                    }
                } else if self.varies(value) {
                    return Err(format!(
                        "every lane stores to %{buffer}[{}]: a reduction over %{} into memory",
                        indices.iter().map(expr_text).collect::<Vec<_>>().join(", "),
                        self.var
                    ));
                } else {
                    s.clone()
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                if self.varies(cond) {
                    return Err(format!(
                        "the condition `{}` depends on %{}",
                        expr_text(cond),
                        self.var
                    ));
                }
                Stmt::If {
                    cond: cond.clone(),
                    then: self.block(then)?,
                    otherwise: self.block(otherwise)?,
                }
            }
            Stmt::Alloc { .. } => s.clone(),
            Stmt::VStore { .. } => return Err("the loop is already vectorized".into()),
        })
    }

    /// The indices of lane 0 for an access that moves by one element per
    /// lane along its last dimension.
    fn lane_indices(&self, buffer: &str, indices: &[Expr]) -> Result<Vec<Expr>, String> {
        let last = indices.len() - 1;
        for (axis, index) in indices.iter().enumerate() {
            let c = coefficient(index, self.var);
            let ok = if axis == last {
                c == Some(1)
            } else {
                c == Some(0)
            };
            if !ok {
                return Err(format!(
                    "%{buffer}[{}] does not move by one element along its last dimension per step of %{} (pack it first)",
                    indices.iter().map(expr_text).collect::<Vec<_>>().join(", "),
                    self.var
                ));
            }
        }
        Ok(indices
            .iter()
            .map(|i| {
                fold_all(&crate::loop_nest::substitute_expr(
                    i,
                    self.var,
                    &self.first_lane,
                ))
            })
            .collect())
    }

    /// A load as lanes: one `vload` when its last index moves by one
    /// element per lane; when it moves by two (a pool or a convolution of
    /// stride 2), two `vload`s of the `2·lanes` elements from the even
    /// index at or below lane 0's and a `shuffle` of their even or odd
    /// lanes, which needs that index's parity (every variable in it with
    /// an even coefficient). The two loads end at most one element past
    /// the last one the lanes read; the verifier decides whether that is
    /// in bounds.
    fn load(&self, buffer: &str, indices: &[Expr]) -> Result<Expr, String> {
        let last = indices.len() - 1;
        let strided = coefficient(&indices[last], self.var) == Some(2)
            && indices[..last]
                .iter()
                .all(|i| coefficient(i, self.var) == Some(0));
        if !strided {
            return Ok(Expr::VLoad {
                buffer: buffer.to_string(),
                indices: self.lane_indices(buffer, indices)?,
                lanes: self.lanes,
            });
        }
        let mut at: Vec<Expr> = indices
            .iter()
            .map(|i| {
                fold_all(&crate::loop_nest::substitute_expr(
                    i,
                    self.var,
                    &self.first_lane,
                ))
            })
            .collect();
        let odd = parity(&at[last]).ok_or_else(|| {
            format!(
                "%{buffer}[{}] moves by two elements per step of %{}, from an index of unknown parity",
                indices.iter().map(expr_text).collect::<Vec<_>>().join(", "),
                self.var
            )
        })?;
        at[last] = fold_all(&Expr::bin(BinOp::Add, at[last].clone(), Expr::Int(-odd)));
        let mut next = at.clone();
        next[last] = fold_all(&Expr::bin(
            BinOp::Add,
            at[last].clone(),
            Expr::Int(self.lanes as i64),
        ));
        let vload = |indices: Vec<Expr>| {
            Box::new(Expr::VLoad {
                buffer: buffer.to_string(),
                indices,
                lanes: self.lanes,
            })
        };
        let mask = (0..self.lanes).map(|l| 2 * l + odd as u32).collect();
        Ok(Expr::Shuffle(vload(at), vload(next), mask))
    }

    /// `e` as a vector of lanes.
    fn expr(&self, e: &Expr) -> Result<Expr, String> {
        if !self.varies(e) {
            return Ok(Expr::Broadcast(Box::new(e.clone()), self.lanes));
        }
        let w = |x: &Expr| self.expr(x).map(Box::new);
        Ok(match e {
            Expr::Var(v) if self.vector_locals.contains(v) => e.clone(),
            Expr::Load { buffer, indices } => self.load(buffer, indices)?,
            Expr::Binary(
                op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Min | BinOp::Max),
                a,
                b,
            ) => Expr::Binary(*op, w(a)?, w(b)?),
            Expr::Unary(op, a) if *op != UnOp::ToFloat => Expr::Unary(*op, w(a)?),
            Expr::Fma(a, b, c) => Expr::Fma(w(a)?, w(b)?, w(c)?),
            Expr::Select(c, a, b) if !self.varies(c) => Expr::Select(c.clone(), w(a)?, w(b)?),
            other => {
                return Err(format!(
                    "`{}` depends on %{} in a way that has no vector form",
                    expr_text(other),
                    self.var
                ))
            }
        })
    }
}

/// `e mod 2` for an affine index whose variables all have even
/// coefficients; `None` otherwise.
fn parity(e: &Expr) -> Option<i64> {
    let mut vars = Vec::new();
    crate::loop_nest::map_expr(e, &mut |x| {
        if let Expr::Var(v) = &x {
            vars.push(v.clone());
        }
        x
    });
    let mut constant = e.clone();
    for v in &vars {
        if coefficient(e, v)? % 2 != 0 {
            return None;
        }
        constant = crate::loop_nest::substitute_expr(&constant, v, &Expr::Int(0));
    }
    match fold_all(&constant) {
        Expr::Int(c) => Some(c.rem_euclid(2)),
        _ => None,
    }
}
