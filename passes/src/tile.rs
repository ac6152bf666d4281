//! `tile`: splits loops of a perfectly nested band into tile loops and point
//! loops, tile loops outside.
//!
//! `tile{loops=[i0,i1],sizes=[4,8]}` turns the band `%i0, %i1` (any loops
//! between them stay, outside the points) into
//!
//! ```text
//! for %i0.o in 0..ceil(n0/4) { for %i1.o in 0..ceil(n1/8) {
//!   if %i0.o * 4 + 4 <= n0 { ... full tile: for %i0.i in 0..4 ... }
//!   else { ... partial tile: for %i0 in %i0.o * 4..min(%i0.o * 4 + 4, n0) ... }
//! } }
//! ```
//!
//! Each tiled loop gets a full and a partial version, so a later pass can
//! unroll and vectorize the constant-trip point loops of the full tiles
//! while the remainders (any size: 300, 784, 7, a symbolic batch) stay
//! correct. For a constant extent the partial tile is the last one and has
//! a known size, so its point loop (`for %i1.i in 0..4` for 300 by 8) is
//! a constant-trip loop of the same name that later passes treat alike. A loop whose constant extent the size divides has no partial
//! version. The guard `base + size <= extent` is also what proves the full
//! tile's accesses in bounds. Multi-level tiling is tiling a point or tile
//! loop again. The pass refuses a band whose bounds depend on each other or
//! whose iterations may depend on one another ([`reorder_hazard`]).

use crate::loop_nest::{
    fold, fold_all, list_option, names_in, reorder_hazard, rewrite_loops, selected, sizes_option,
    substitute,
};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::loops::{BinOp, Expr, LoopKind, Module, Stmt};
use std::collections::HashSet;

/// The `tile` pass.
pub struct Tile {
    /// Kernels to tile (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The loops, outermost first.
    pub loops: Vec<String>,
    /// One tile size per loop.
    pub sizes: Vec<i64>,
}

impl Tile {
    /// Reads `tile{loops=[..],sizes=[..],kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Tile, String> {
        o.check_known("tile", &["loops", "sizes", "kernel"])?;
        let loops = list_option(o.0.get("loops").ok_or("`tile` needs `loops=[...]`")?);
        let sizes = sizes_option(
            "tile",
            "sizes",
            o.0.get("sizes").ok_or("`tile` needs `sizes=[...]`")?,
        )?;
        if loops.len() != sizes.len() || loops.is_empty() {
            return Err(format!(
                "`tile` needs one size per loop: {} loop(s), {} size(s)",
                loops.len(),
                sizes.len()
            ));
        }
        Ok(Tile {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            loops,
            sizes,
        })
    }
}

/// One loop of the band.
struct BandLoop {
    var: String,
    lo: Expr,
    hi: Expr,
    /// The tile size if this loop is tiled.
    size: Option<i64>,
}

impl Pass<Module> for Tile {
    fn name(&self) -> &'static str {
        "tile"
    }

    fn description(&self) -> &'static str {
        "split loops of a band into tile and point loops (full and partial tiles)"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut total = 0;
        for kernel in selected(m, &self.kernels) {
            let mut used = names_in(kernel);
            if let Some(missing) = self.loops.iter().find(|l| !used.contains(*l)) {
                cx.remark(format!(
                    "@{}: left as it is: no loop %{missing}",
                    kernel.name
                ));
                continue;
            }
            let names: Vec<(String, String)> = self
                .loops
                .iter()
                .map(|l| {
                    (
                        crate::loop_nest::fresh(&mut used, &format!("{l}.o")),
                        crate::loop_nest::fresh(&mut used, &format!("{l}.i")),
                    )
                })
                .collect();
            let count = rewrite_loops(&mut kernel.body, &self.loops[0], &mut |s| {
                self.tile_band(s, &names)
            })
            .map_err(|e| PassError::new("tile", format!("@{}: {e}", kernel.name)))?;
            if count > 0 {
                cx.remark(format!(
                    "@{}: tiled {} band(s) of {:?} by {:?}",
                    kernel.name, count, self.loops, self.sizes
                ));
            }
            total += count;
        }
        Ok(Changed::from(total > 0))
    }
}

impl Tile {
    fn tile_band(&self, outer: Stmt, names: &[(String, String)]) -> Result<Vec<Stmt>, String> {
        // Walk down the perfect nest until the last tiled loop.
        let mut band = Vec::new();
        let mut current = outer.clone();
        let body = loop {
            let Stmt::For {
                var, lo, hi, body, ..
            } = current
            else {
                unreachable!("the band starts at a loop")
            };
            // A tile larger than a constant extent is the whole extent.
            let size = self
                .loops
                .iter()
                .position(|l| *l == var)
                .map(|i| match (&lo, &hi) {
                    (Expr::Int(l), Expr::Int(h)) if h - l >= 1 => self.sizes[i].min(h - l),
                    _ => self.sizes[i],
                });
            band.push(BandLoop { var, lo, hi, size });
            let found = band.iter().filter(|b| b.size.is_some()).count();
            if found == self.loops.len() {
                break body;
            }
            match <[Stmt; 1]>::try_from(body) {
                Ok([inner @ Stmt::For { .. }]) => current = inner,
                _ => {
                    let missing: Vec<&String> = self
                        .loops
                        .iter()
                        .filter(|l| !band.iter().any(|b| &b.var == *l))
                        .collect();
                    return Err(format!(
                        "%{} is not perfectly nested around %{}: tile needs a band of loops with nothing between them",
                        band.last().map(|b| b.var.as_str()).unwrap_or("?"),
                        missing[0]
                    ));
                }
            }
        };
        let order: Vec<&String> = band
            .iter()
            .filter(|b| b.size.is_some())
            .map(|b| &b.var)
            .collect();
        if order != self.loops.iter().collect::<Vec<_>>() {
            return Err(format!(
                "the loops must be listed outermost first: the nest has them in the order {}",
                order
                    .iter()
                    .map(|v| format!("%{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let vars: HashSet<&str> = band.iter().map(|b| b.var.as_str()).collect();
        for b in &band {
            for v in &vars {
                if crate::loop_nest::uses(&b.lo, v) || crate::loop_nest::uses(&b.hi, v) {
                    return Err(format!(
                        "the bounds of %{} depend on %{v}: only rectangular bands can be tiled",
                        b.var
                    ));
                }
            }
        }
        let band_vars: Vec<&str> = band.iter().map(|b| b.var.as_str()).collect();
        if let Some(why) = reorder_hazard(&[outer], &band_vars, 1) {
            return Err(format!("cannot tile: {why}"));
        }
        let tiled: Vec<(&BandLoop, &(String, String))> = band
            .iter()
            .filter(|b| b.size.is_some())
            .map(|b| {
                let i = self.loops.iter().position(|l| *l == b.var).expect("listed");
                (b, &names[i])
            })
            .collect();
        let inner = versions(&tiled, 0, &body, &mut Vec::new());
        // Tile loops (and the untiled loops of the band) outside, in order.
        let mut result = inner;
        for b in band.iter().rev() {
            let (var, lo, hi) = match b.size {
                None => (b.var.clone(), b.lo.clone(), b.hi.clone()),
                Some(t) => {
                    let i = self.loops.iter().position(|l| *l == b.var).expect("listed");
                    let extent = fold_all(&Expr::bin(BinOp::Sub, b.hi.clone(), b.lo.clone()));
                    let count = fold_all(&Expr::bin(
                        BinOp::Div,
                        Expr::bin(BinOp::Add, extent, Expr::Int(t - 1)),
                        Expr::Int(t),
                    ));
                    (names[i].0.clone(), Expr::Int(0), count)
                }
            };
            result = vec![Stmt::For {
                var,
                lo,
                hi,
                kind: LoopKind::Serial,
                body: result,
            }];
        }
        Ok(result)
    }
}

/// The first `base` of a tile: `lo + outer * size`.
fn tile_base(b: &BandLoop, outer: &str, size: i64) -> Expr {
    fold_all(&Expr::bin(
        BinOp::Add,
        b.lo.clone(),
        Expr::bin(BinOp::Mul, Expr::var(outer), Expr::Int(size)),
    ))
}

/// True if every tile of `b` is full: tiles of one iteration (whatever the
/// extent), or constant bounds the size divides.
fn always_full(b: &BandLoop, size: i64) -> bool {
    size == 1 || matches!((&b.lo, &b.hi), (Expr::Int(lo), Expr::Int(hi)) if (hi - lo) % size == 0)
}

/// The point loops around `body`, one version per combination of full and
/// partial tiles; `full[k]` says which version the `k`-th tiled loop takes.
fn versions(
    tiled: &[(&BandLoop, &(String, String))],
    k: usize,
    body: &[Stmt],
    full: &mut Vec<bool>,
) -> Vec<Stmt> {
    if k == tiled.len() {
        let mut inner = body.to_vec();
        for (j, (b, (outer, point))) in tiled.iter().enumerate().rev() {
            let size = b.size.expect("tiled");
            let base = tile_base(b, outer, size);
            // The last tile of a constant extent has a known size too.
            let last = match (&b.lo, &b.hi) {
                (Expr::Int(lo), Expr::Int(hi)) if !full[j] => Some((hi - lo) % size),
                _ => None,
            };
            inner = if full[j] || last.is_some() {
                let value = fold(Expr::bin(BinOp::Add, base, Expr::var(point)));
                vec![Stmt::For {
                    var: point.clone(),
                    lo: Expr::Int(0),
                    hi: Expr::Int(last.unwrap_or(size)),
                    kind: LoopKind::Serial,
                    body: substitute(&inner, &b.var, &value),
                }]
            } else {
                let end = fold(Expr::bin(BinOp::Add, base.clone(), Expr::Int(size)));
                vec![Stmt::For {
                    var: b.var.clone(),
                    lo: base,
                    hi: Expr::bin(BinOp::Min, end, b.hi.clone()),
                    kind: LoopKind::Serial,
                    body: inner,
                }]
            };
        }
        return inner;
    }
    let (b, (outer, _)) = tiled[k];
    let size = b.size.expect("tiled");
    full.push(true);
    let then = versions(tiled, k + 1, body, full);
    full.pop();
    if always_full(b, size) {
        return then;
    }
    full.push(false);
    let otherwise = versions(tiled, k + 1, body, full);
    full.pop();
    let base = tile_base(b, outer, size);
    vec![Stmt::If {
        cond: Expr::bin(
            BinOp::Le,
            Expr::bin(BinOp::Add, base, Expr::Int(size)),
            b.hi.clone(),
        ),
        then,
        otherwise,
    }]
}
