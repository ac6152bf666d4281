//! `vectorize-transpose`: vectorizes a copy between two layouts (a
//! transpose) with an in-register transpose of vector tiles.
//!
//! `vectorize-transpose{loops=[k.i,i0.i],lanes=16}` rewrites every pair of
//! perfectly nested loops `for %k.i { for %i0.i { B } }` of exactly `lanes`
//! iterations each, where `B` computes a value from loads that move by one
//! element along one loop (here `%k.i`: `%x[.., %k]`) and stores it at an
//! index that moves by one element along the other (`%x.t[.., %i0]`). No
//! single loop can be vectorized there (`vectorize` refuses the strided
//! side); this pass instead
//!
//! 1. computes, for each value of the store's loop, a vector of `B`'s
//!    value along the load's loop (`vload` and `broadcast`, as `vectorize`
//!    does): a `lanes x lanes` tile as `lanes` row vectors;
//! 2. transposes the tile in registers: `log2(lanes)` rounds of `shuffle`s,
//!    each pairing vector `r` with vector `r + lanes/2` and interleaving
//!    their low halves and their high halves (after the last round, vector
//!    `q` holds column `q`: the classic butterfly of SIMD transposes);
//! 3. stores each column with one `vstore`.
//!
//! A 16 x 16 tile takes 16 vector loads, 64 shuffles and 16 vector stores
//! where the scalar loops took 256 loads and 256 stores. `tile` makes the
//! tiles first (`auto-schedule` does both for the transposes of the sparse
//! kernels and for the `transpose` op); partial tiles keep their scalar
//! loops.
//!
//! It refuses (with the reason) a body that is not straight-line `let`s and
//! one final store, a body that loads from the buffer it stores to (the
//! loads of the whole tile move before its stores), and anything
//! `vectorize` refuses along the load's loop. Values are copied, never
//! recomputed or reassociated: outputs are bit for bit those of the loops.

use crate::loop_nest::{
    coefficient, fold_all, fresh, list_option, names_in, rename_declared, rewrite_loops, selected,
    substitute, substitute_expr, uses,
};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use crate::vectorize::{loads, vectorize_loop};
use lopper_ir::loops::{expr_text, BinOp, Expr, LoopKind, Module, ScalarType, Stmt};
use std::collections::HashSet;

/// The `vectorize-transpose` pass.
pub struct VectorizeTranspose {
    /// Kernels to change (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The outer and the inner loop of each tile.
    pub loops: (String, String),
    /// Lanes per vector, and the tile's side.
    pub lanes: u32,
}

impl VectorizeTranspose {
    /// Reads `vectorize-transpose{loops=[a,b],lanes=4,kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<VectorizeTranspose, String> {
        o.check_known(PASS, &["loops", "lanes", "kernel"])?;
        let loops = match o.0.get("loops").map(|l| list_option(l)).as_deref() {
            Some([a, b]) => (a.clone(), b.clone()),
            _ => return Err(format!("`{PASS}` needs `loops=[OUTER,INNER]`")),
        };
        let lanes = match o.0.get("lanes").map(|l| l.parse::<u32>()) {
            None => 4,
            Some(Ok(n)) if n == 4 || n == 8 || n == 16 => n,
            Some(_) => return Err(format!("`lanes` of `{PASS}` must be 4, 8 or 16")),
        };
        Ok(VectorizeTranspose {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            loops,
            lanes,
        })
    }
}

const PASS: &str = "vectorize-transpose";

impl Pass<Module> for VectorizeTranspose {
    fn name(&self) -> &'static str {
        PASS
    }

    fn description(&self) -> &'static str {
        "vectorize a transposing copy with in-register transposes of vector tiles"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut total = 0;
        for kernel in selected(m, &self.kernels) {
            let mut used = names_in(kernel);
            let (outer, inner, lanes) = (&self.loops.0, &self.loops.1, self.lanes);
            // Loops that are not whole tiles (a partial tile's scalar
            // loops) stay; the pass fails only if no loop was a tile.
            let mut count = 0;
            let mut refused = None;
            rewrite_loops(&mut kernel.body, outer, &mut |s| match transpose_tile(
                s.clone(),
                inner,
                lanes,
                &mut used,
            ) {
                Ok(out) => {
                    count += 1;
                    Ok(out)
                }
                Err(why) => {
                    refused.get_or_insert(why);
                    Ok(vec![s])
                }
            })
            .map_err(|e| PassError::new(PASS, format!("@{}: {e}", kernel.name)))?;
            if let (0, Some(why)) = (count, refused) {
                return Err(PassError::new(PASS, format!("@{}: {why}", kernel.name)));
            }
            if count > 0 {
                cx.remark(format!(
                    "@{}: {count} tile(s) of {lanes} x {lanes} transposed in registers",
                    kernel.name
                ));
            }
            total += count;
        }
        Ok(Changed::from(total > 0))
    }
}

/// `for %v in lo..lo+n { body }`: the variable, `lo` and the body, if the
/// trip count is the constant `n`.
fn exact_loop(s: &Stmt, n: i64) -> Option<(&str, &Expr, &[Stmt])> {
    let Stmt::For {
        var, lo, hi, body, ..
    } = s
    else {
        return None;
    };
    let trip = fold_all(&Expr::bin(BinOp::Sub, hi.clone(), lo.clone()));
    (trip == Expr::Int(n)).then_some((var.as_str(), lo, body.as_slice()))
}

/// The straight-line statements and vector tile of one `outer` loop.
fn transpose_tile(
    s: Stmt,
    inner: &str,
    lanes: u32,
    used: &mut HashSet<String>,
) -> Result<Vec<Stmt>, String> {
    let n = lanes as i64;
    let (outer, outer_lo, outer_body) = exact_loop(&s, n).ok_or_else(|| {
        format!(
            "a tile of {lanes} lanes needs loops of exactly {lanes} iterations (tile them first)"
        )
    })?;
    let [inner_loop] = outer_body else {
        return Err(format!("%{outer} must hold only the loop %{inner}"));
    };
    let (inner_var, inner_lo, body) = exact_loop(inner_loop, n)
        .filter(|(v, _, _)| *v == inner)
        .ok_or_else(|| format!("%{outer} must hold only %{inner}, of {lanes} iterations"))?;
    let Some((
        Stmt::Store {
            buffer,
            indices,
            value,
        },
        lets,
    )) = body.split_last()
    else {
        return Err("the body must end with a store".into());
    };
    let straight = lets.iter().all(|s| {
        matches!(
            s,
            Stmt::Let {
                ty: ScalarType::F32,
                ..
            } | Stmt::Assign { .. }
        )
    });
    if !straight {
        return Err("the body must be f32 `let`s and assignments, then one store".into());
    }
    // Each copy of the body gets its own locals; a value carried from one
    // iteration to the next (a local declared outside) cannot be copied.
    let mut own = HashSet::new();
    crate::loop_nest::declared(lets, &mut own);
    if let Some(var) = lets.iter().find_map(|s| match s {
        Stmt::Assign { var, .. } if !own.contains(var) => Some(var),
        _ => None,
    }) {
        return Err(format!(
            "%{var} is declared outside the tile: its value would pass between iterations"
        ));
    }
    if indices.is_empty() {
        return Err(format!("%{buffer} has no dimension to transpose along"));
    }
    if loads(body, buffer) {
        return Err(format!("the body reads %{buffer}, which it stores to"));
    }
    // The store's loop moves the store by one element; the other loop is
    // the one its loads run along.
    let last = indices.len() - 1;
    let moves = |v: &str| coefficient(&indices[last], v);
    let ((store_var, store_lo), (load_var, load_lo)) = match (moves(outer), moves(inner_var)) {
        (Some(1), Some(0)) => ((outer, outer_lo), (inner_var, inner_lo)),
        (Some(0), Some(1)) => ((inner_var, inner_lo), (outer, outer_lo)),
        _ => {
            return Err(format!(
                "the last index of %{buffer}[{}] must move by one element along one loop and not at all along the other",
                indices.iter().map(expr_text).collect::<Vec<_>>().join(", ")
            ))
        }
    };
    if indices[..last].iter().any(|i| uses(i, store_var)) {
        return Err(format!(
            "only the last index of %{buffer} may depend on %{store_var}"
        ));
    }
    // 1. A row vector per value of the store's loop: copies of the body
    //    with that value, each ending in `let %row.c = value` (the copies'
    //    locals get the suffix `.c`), vectorized along the load's loop.
    let row = fresh(used, "row");
    let mut copies = Vec::new();
    let mut rows = Vec::new();
    for c in 0..n {
        let at = fold_all(&Expr::bin(BinOp::Add, store_lo.clone(), Expr::Int(c)));
        let mut copy = lets.to_vec();
        copy.push(Stmt::Let {
            var: row.clone(),
            ty: ScalarType::F32,
            init: value.clone(),
        });
        copies.extend(rename_declared(
            &substitute(&copy, store_var, &at),
            &format!(".{c}"),
        ));
        rows.push(format!("{row}.{c}"));
    }
    let vector_var = fresh(used, &format!("{load_var}.v"));
    let vectorized = vectorize_loop(
        Stmt::For {
            var: load_var.to_string(),
            lo: load_lo.clone(),
            hi: fold_all(&Expr::bin(BinOp::Add, load_lo.clone(), Expr::Int(n))),
            kind: LoopKind::Serial,
            body: copies,
        },
        &vector_var,
        lanes,
    )?;
    let [Stmt::For {
        body: vector_body, ..
    }] = &vectorized[..]
    else {
        return Err(format!("%{load_var} did not become one vector"));
    };
    let mut out = substitute(vector_body, &vector_var, &Expr::Int(0));
    for row in &rows {
        let is_vector = out
            .iter()
            .any(|s| matches!(s, Stmt::Let { var, ty: ScalarType::Vector(_), .. } if var == row));
        if !is_vector {
            return Err(format!(
                "the stored value does not change along %{load_var}: nothing to transpose"
            ));
        }
    }
    // 2. The butterfly: log2(lanes) rounds of interleaves.
    let half = lanes / 2;
    let low: Vec<u32> = (0..half).flat_map(|i| [i, i + lanes]).collect();
    let high: Vec<u32> = (half..lanes).flat_map(|i| [i, i + lanes]).collect();
    let mut current = rows;
    let rounds = lanes.trailing_zeros();
    for round in 1..=rounds {
        let mut next = Vec::with_capacity(current.len());
        for r in 0..half as usize {
            let (a, b) = (&current[r], &current[r + half as usize]);
            for mask in [&low, &high] {
                let name = fresh(used, if round == rounds { "col" } else { "mix" });
                out.push(Stmt::Let {
                    var: name.clone(),
                    ty: ScalarType::Vector(lanes),
                    init: Expr::Shuffle(
                        Box::new(Expr::var(a)),
                        Box::new(Expr::var(b)),
                        mask.clone(),
                    ),
                });
                next.push(name);
            }
        }
        current = next;
    }
    // 3. Column q is the store's lanes for the load's loop at `lo + q`.
    for (q, column) in current.iter().enumerate() {
        let at_load = fold_all(&Expr::bin(BinOp::Add, load_lo.clone(), Expr::Int(q as i64)));
        let indices: Vec<Expr> = indices
            .iter()
            .map(|i| {
                let i = substitute_expr(i, load_var, &at_load);
                substitute_expr(&i, store_var, store_lo)
            })
            .collect();
        out.push(Stmt::VStore {
            buffer: buffer.clone(),
            indices,
            value: Expr::var(column),
            lanes,
        });
    }
    Ok(out)
}
