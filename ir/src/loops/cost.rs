//! What a kernel costs for given sizes: floating-point operations and the
//! bytes of the buffers it touches (the compulsory traffic of a roofline).
//!
//! FLOPs count every `f32` operation a run executes: `fma` as 2 per lane,
//! other arithmetic, `min`/`max` and intrinsics as 1 per lane, `hsum`/`hmax`/`hmin` as
//! lanes − 1. Loops whose body does not branch on the loop variable are
//! counted once and multiplied; others (partial tiles, padding guards,
//! sparse rows) are walked iteration by iteration, so the count is exact
//! for the code as transformed. Index arithmetic is not counted.

use super::{BinOp, BufferKind, Expr, Kernel, Module, ScalarType, Stmt, UnOp};
use crate::types::Dim;
use std::collections::{BTreeMap, HashMap};

/// FLOPs and bytes of one kernel run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelCost {
    /// Floating-point operations.
    pub flops: f64,
    /// Bytes of every buffer the kernel reads or writes.
    pub bytes: f64,
}

/// The cost of `kernel` of `m` with the symbolic sizes bound by `sizes`.
pub fn kernel_cost(m: &Module, kernel: &Kernel, sizes: &BTreeMap<String, usize>) -> KernelCost {
    let mut counter = Counter {
        module: m,
        sizes,
        env: HashMap::new(),
        types: HashMap::new(),
    };
    let flops = counter.block(&kernel.body);
    let mut bytes = 0.0;
    let mut seen = Vec::new();
    for p in &kernel.params {
        let root = m.storage_of(p);
        if seen.contains(&root) {
            continue;
        }
        seen.push(root);
        if let Some(b) = m.buffer(p) {
            let n: f64 =
                b.ty.shape
                    .0
                    .iter()
                    .map(|d| match d {
                        Dim::Static(n) => *n as f64,
                        Dim::Symbol(s) => sizes.get(s).copied().unwrap_or(1) as f64,
                    })
                    .product();
            let width = b.ty.dtype.bytes() as f64;
            if b.kind != BufferKind::View {
                bytes += n * width;
            }
        }
    }
    KernelCost { flops, bytes }
}

struct Counter<'a> {
    module: &'a Module,
    sizes: &'a BTreeMap<String, usize>,
    env: HashMap<String, i64>,
    types: HashMap<String, ScalarType>,
}

impl Counter<'_> {
    fn block(&mut self, body: &[Stmt]) -> f64 {
        body.iter().map(|s| self.stmt(s)).sum()
    }

    fn stmt(&mut self, s: &Stmt) -> f64 {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                let (Some(lo), Some(hi)) = (self.eval(lo), self.eval(hi)) else {
                    return 0.0;
                };
                if hi <= lo {
                    return 0.0;
                }
                if branches_on(body, var) {
                    let mut total = 0.0;
                    for i in lo..hi {
                        self.env.insert(var.clone(), i);
                        total += self.block(body);
                    }
                    total
                } else {
                    self.env.insert(var.clone(), lo);
                    self.block(body) * (hi - lo) as f64
                }
            }
            Stmt::Let { var, ty, init } => {
                self.types.insert(var.clone(), *ty);
                if *ty == ScalarType::Index {
                    if let Some(v) = self.eval(init) {
                        self.env.insert(var.clone(), v);
                    }
                }
                self.flops(init)
            }
            Stmt::Assign { value, .. } => self.flops(value),
            Stmt::Store { value, .. } | Stmt::VStore { value, .. } => self.flops(value),
            Stmt::If {
                cond,
                then,
                otherwise,
            } => match self.eval_bool(cond) {
                Some(true) => self.block(then),
                Some(false) => self.block(otherwise),
                None => self.block(then),
            },
            Stmt::Alloc { .. } => 0.0,
        }
    }

    fn lanes(&self, e: &Expr) -> Option<f64> {
        match e {
            Expr::Float(_) => Some(1.0),
            Expr::Int(_) | Expr::Size(_) => None,
            Expr::Var(v) => match self.types.get(v) {
                Some(ScalarType::F32) => Some(1.0),
                Some(ScalarType::Vector(n)) => Some(*n as f64),
                _ => None,
            },
            Expr::Load { buffer, .. } => self
                .module
                .buffer(buffer)
                .is_none_or(|b| b.index_data.is_none())
                .then_some(1.0),
            Expr::VLoad { lanes, .. } | Expr::Broadcast(_, lanes) => Some(*lanes as f64),
            Expr::Horizontal(..) => Some(1.0),
            Expr::Shuffle(_, _, mask) => Some(mask.len() as f64),
            Expr::Permute { table, .. } => self.lanes(table),
            Expr::Binary(op, a, b) => match op {
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => None,
                BinOp::And | BinOp::Or => None,
                _ => self.lanes(a).or_else(|| self.lanes(b)),
            },
            Expr::Unary(UnOp::ToFloat, _) => Some(1.0),
            Expr::Unary(_, a) => self.lanes(a),
            Expr::Fma(a, _, _) => self.lanes(a),
            Expr::Select(_, a, _) => self.lanes(a),
        }
    }

    fn flops(&self, e: &Expr) -> f64 {
        let own = match e {
            Expr::Binary(op, _, _) if !matches!(op, BinOp::And | BinOp::Or) => {
                self.lanes(e).unwrap_or(0.0)
            }
            Expr::Unary(UnOp::ToFloat | UnOp::Neg, _) => 0.0,
            Expr::Unary(_, a) => self.lanes(a).unwrap_or(0.0),
            Expr::Fma(..) => 2.0 * self.lanes(e).unwrap_or(0.0),
            Expr::Horizontal(_, v) => self.lanes(v).unwrap_or(1.0) - 1.0,
            _ => 0.0,
        };
        let children = match e {
            Expr::Binary(_, a, b) => self.flops(a) + self.flops(b),
            Expr::Unary(_, a) | Expr::Broadcast(a, _) | Expr::Horizontal(_, a) => self.flops(a),
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
                self.flops(a) + self.flops(b) + self.flops(c)
            }
            Expr::Shuffle(a, b, _) => self.flops(a) + self.flops(b),
            Expr::Permute { table, .. } => self.flops(table),
            _ => 0.0,
        };
        own + children
    }

    fn eval(&self, e: &Expr) -> Option<i64> {
        Some(match e {
            Expr::Int(v) => *v,
            Expr::Size(s) => *self.sizes.get(s)? as i64,
            Expr::Var(v) => *self.env.get(v)?,
            Expr::Unary(UnOp::Neg, a) => -self.eval(a)?,
            Expr::Load { buffer, indices } => {
                let b = self.module.buffer(buffer)?;
                let data = b.index_data.as_ref()?;
                let mut flat = 0i64;
                for (i, d) in indices.iter().zip(&b.ty.shape.0) {
                    let n = match d {
                        Dim::Static(n) => *n as i64,
                        Dim::Symbol(_) => return None,
                    };
                    flat = flat * n + self.eval(i)?;
                }
                *data.get(usize::try_from(flat).ok()?)?
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.eval(a)?, self.eval(b)?);
                match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    BinOp::Div if y > 0 => x.div_euclid(y),
                    BinOp::Rem if y > 0 => x.rem_euclid(y),
                    BinOp::Min => x.min(y),
                    BinOp::Max => x.max(y),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn eval_bool(&self, e: &Expr) -> Option<bool> {
        let Expr::Binary(op, a, b) = e else {
            return None;
        };
        if let BinOp::And | BinOp::Or = op {
            let (x, y) = (self.eval_bool(a)?, self.eval_bool(b)?);
            return Some(if *op == BinOp::And { x && y } else { x || y });
        }
        let (x, y) = (self.eval(a)?, self.eval(b)?);
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

/// True if a loop bound, a condition or an index local in `body` mentions
/// `var` (directly or through index locals).
fn branches_on(body: &[Stmt], var: &str) -> bool {
    fn mentions(e: &Expr, names: &[String]) -> bool {
        e.reads(&|v| names.iter().any(|n| n == v))
    }
    fn walk(body: &[Stmt], names: &mut Vec<String>) -> bool {
        body.iter().any(|s| match s {
            Stmt::For { lo, hi, body, .. } => {
                mentions(lo, names) || mentions(hi, names) || walk(body, names)
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => mentions(cond, names) || walk(then, names) || walk(otherwise, names),
            Stmt::Let {
                var,
                ty: ScalarType::Index,
                init,
            } => {
                if mentions(init, names) {
                    names.push(var.clone());
                }
                false
            }
            _ => false,
        })
    }
    walk(body, &mut vec![var.to_string()])
}
