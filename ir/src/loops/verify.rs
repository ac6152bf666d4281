//! The loop-IR verifier: names, types, and a proof that every access is in
//! bounds.
//!
//! Every expression is typed (`index`, `f32`, `bool`); names are resolved
//! (kernel params must be module buffers, variables must be in scope and not
//! shadowed, sizes must be the module's); inputs and constants are never
//! written. For each load and store, every index gets a symbolic interval
//! from the loop ranges around it and the conditions of enclosing `if`s (a
//! guard `e >= 0 && e < 28` bounds the expression `e` itself), and the
//! interval must lie within the dimension's extent for every value of the
//! symbolic sizes. An access that cannot be proved is an error naming the
//! kernel, the access, the buffer and the range found.

use super::interval::{Affine, Interval};
use super::printer::expr_text;
use super::{BinOp, BufferKind, Expr, Kernel, Module, ScalarType, Stmt, UnOp};
use crate::types::{DType, Dim};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// One violated rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopVerifyError {
    /// The kernel concerned, if one.
    pub kernel: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoopVerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kernel {
            Some(k) => write!(f, "kernel @{k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

struct Var {
    ty: ScalarType,
    range: Interval,
    assignable: bool,
}

struct Checker<'a> {
    module: &'a Module,
    kernel: &'a Kernel,
    scopes: Vec<HashMap<String, Var>>,
    allocs: Vec<HashMap<String, Vec<usize>>>,
    facts: Vec<HashMap<String, Interval>>,
    errors: Vec<LoopVerifyError>,
}

/// Checks `m`; returns every violation.
pub fn verify_module(m: &Module) -> Result<(), Vec<LoopVerifyError>> {
    let mut errors = Vec::new();
    let mut err = |message: String| {
        errors.push(LoopVerifyError {
            kernel: None,
            message,
        })
    };
    let mut seen = HashSet::new();
    for b in &m.buffers {
        if !seen.insert(b.name.as_str()) {
            err(format!("buffer %{} is declared twice", b.name));
        }
        for d in &b.ty.shape.0 {
            if let Dim::Symbol(s) = d {
                if !m.sizes.contains(s) {
                    err(format!(
                        "buffer %{} uses size `{s}`, which the module does not declare",
                        b.name
                    ));
                }
            }
        }
        match (&b.view_of, b.kind) {
            (Some(source), BufferKind::View) => match m.buffer(source) {
                Some(src) if src.kind != BufferKind::View => {
                    if src.ty.shape.numel() != b.ty.shape.numel() {
                        err(format!(
                            "view %{} ({}) has another element count than %{source} ({})",
                            b.name, b.ty, src.ty
                        ));
                    }
                }
                Some(_) => err(format!(
                    "view %{} shows another view; name the buffer itself",
                    b.name
                )),
                None => err(format!("view %{} shows unknown buffer %{source}", b.name)),
            },
            (None, BufferKind::View) => err(format!(
                "view %{} does not say which buffer it shows",
                b.name
            )),
            (Some(owner), BufferKind::Scratch) => match m.buffer(owner) {
                Some(o) if o.kind == BufferKind::Scratch && o.view_of.is_none() => {
                    let fits = match (b.ty.shape.numel(), o.ty.shape.numel()) {
                        (Some(a), Some(c)) => a.symbols == c.symbols && a.constant <= c.constant,
                        _ => false,
                    };
                    if !fits {
                        err(format!("scratch %{} ({}) may not fit in the memory of %{owner} ({})", b.name, b.ty, o.ty));
                    }
                }
                _ => err(format!("scratch %{} reuses %{owner}, which is not a scratch buffer with memory of its own", b.name)),
            },
            (Some(_), _) => err(format!(
                "buffer %{} is not a view but names a source",
                b.name
            )),
            (None, _) => {}
        }
        if b.ty.dtype.is_integer() {
            // Index arrays: constant, static, holding one integer per element
            // that the element type holds.
            let count =
                b.ty.shape
                    .as_static()
                    .and_then(|s| crate::tensor::checked_numel(&s));
            match (&b.index_data, b.kind, count) {
                (Some(values), BufferKind::Const, Some(n)) if values.len() == n => {
                    if let Some(v) = values.iter().find(|&&v| !b.ty.dtype.holds(v)) {
                        err(format!(
                            "index buffer %{} ({}) holds {v}, which does not fit in {}",
                            b.name, b.ty, b.ty.dtype
                        ));
                    }
                }
                (Some(values), BufferKind::Const, _) => err(format!(
                    "index buffer %{} holds {} integers, not what {} needs",
                    b.name,
                    values.len(),
                    b.ty
                )),
                _ => err(format!(
                    "buffer %{} is {}: integer buffers are constant index arrays with `indices`",
                    b.name, b.ty
                )),
            }
            continue;
        }
        if b.ty.dtype != DType::F32 || b.index_data.is_some() {
            err(format!(
                "buffer %{} must be f32 (integer types are for constant index arrays)",
                b.name
            ));
        }
        match (&b.data, b.kind) {
            (Some(p), BufferKind::Const) => {
                if b.ty.shape.as_static().as_deref() != Some(&p.data.shape[..]) {
                    err(format!(
                        "const buffer %{} holds data of shape {:?}, not {}",
                        b.name, p.data.shape, b.ty
                    ));
                }
            }
            (None, BufferKind::Const) => err(format!("const buffer %{} has no data", b.name)),
            (Some(_), _) => err(format!("buffer %{} is not const but has data", b.name)),
            (None, _) => {}
        }
    }
    check_shared_memory(m, &mut err);
    let mut kernels = HashSet::new();
    for k in &m.kernels {
        if !kernels.insert(k.name.as_str()) {
            err(format!("kernel @{} is defined twice", k.name));
        }
    }
    for k in &m.kernels {
        let mut c = Checker {
            module: m,
            kernel: k,
            scopes: vec![HashMap::new()],
            allocs: vec![HashMap::new()],
            facts: vec![HashMap::new()],
            errors: Vec::new(),
        };
        for p in &k.params {
            if m.buffer(p).is_none() {
                c.error(format!("parameter %{p} is not a module buffer"));
            }
        }
        c.block(&k.body);
        errors.extend(c.errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Buffers that share memory must never be live at the same time: each is
/// live from the first kernel that touches it (or a view of it) to the last.
fn check_shared_memory(m: &Module, err: &mut impl FnMut(String)) {
    let mut ranges: HashMap<&str, (usize, usize)> = HashMap::new();
    for (k, kernel) in m.kernels.iter().enumerate() {
        for p in &kernel.params {
            let logical = match m.buffer(p) {
                Some(b) if b.kind == BufferKind::View => b.view_of.as_deref().unwrap_or(p),
                _ => p.as_str(),
            };
            let r = ranges.entry(logical).or_insert((k, k));
            r.1 = k;
        }
    }
    let sharers: Vec<&str> = m
        .buffers
        .iter()
        .filter(|b| b.kind == BufferKind::Scratch)
        .map(|b| b.name.as_str())
        .collect();
    for (i, a) in sharers.iter().enumerate() {
        for b in &sharers[i + 1..] {
            if m.storage_of(a) != m.storage_of(b) {
                continue;
            }
            if let (Some(ra), Some(rb)) = (ranges.get(a), ranges.get(b)) {
                if ra.0 <= rb.1 && rb.0 <= ra.1 {
                    err(format!(
                        "scratch %{a} and %{b} share memory but are both live in kernel {}",
                        ra.0.max(rb.0)
                    ));
                }
            }
        }
    }
}

impl Checker<'_> {
    fn error(&mut self, message: String) {
        self.errors.push(LoopVerifyError {
            kernel: Some(self.kernel.name.clone()),
            message,
        });
    }

    fn lookup(&self, name: &str) -> Option<&Var> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn declare(&mut self, name: &str, var: Var) {
        if self.lookup(name).is_some() || self.alloc_dims(name).is_some() {
            self.error(format!("%{name} is already defined in this scope"));
        }
        self.scopes
            .last_mut()
            .expect("a scope is open")
            .insert(name.to_string(), var);
    }

    fn alloc_dims(&self, name: &str) -> Option<Vec<usize>> {
        self.allocs.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn block(&mut self, body: &[Stmt]) {
        self.scopes.push(HashMap::new());
        self.allocs.push(HashMap::new());
        for s in body {
            self.stmt(s);
        }
        self.scopes.pop();
        self.allocs.pop();
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                self.expect(lo, ScalarType::Index, "a loop bound");
                self.expect(hi, ScalarType::Index, "a loop bound");
                let (l, h) = (self.range(lo), self.range(hi));
                let range = Interval {
                    lo: l.lo,
                    hi: h.hi.and_then(|h| h.sub(&Affine::constant(1))),
                };
                self.scopes.push(HashMap::new());
                self.declare(
                    var,
                    Var {
                        ty: ScalarType::Index,
                        range,
                        assignable: false,
                    },
                );
                self.block(body);
                self.scopes.pop();
            }
            Stmt::Let { var, ty, init } => {
                self.expect(init, *ty, &format!("the value of %{var}"));
                let range = if *ty == ScalarType::Index {
                    self.range(init)
                } else {
                    Interval::unknown()
                };
                self.declare(
                    var,
                    Var {
                        ty: *ty,
                        range,
                        assignable: true,
                    },
                );
            }
            Stmt::Assign { var, value } => match self.lookup(var).map(|v| (v.ty, v.assignable)) {
                None => self.error(format!("assignment to undefined %{var}")),
                Some((_, false)) => {
                    self.error(format!("%{var} is a loop variable and cannot be assigned"))
                }
                Some((ty, true)) => {
                    self.expect(value, ty, &format!("the value of %{var}"));
                    // Its range is no longer the one of its first value.
                    for scope in self.scopes.iter_mut().rev() {
                        if let Some(v) = scope.get_mut(var) {
                            v.range = Interval::unknown();
                            break;
                        }
                    }
                }
            },
            Stmt::Store {
                buffer,
                indices,
                value,
            } => {
                self.expect(value, ScalarType::F32, "a stored value");
                self.store(buffer, indices, 1);
            }
            Stmt::VStore {
                buffer,
                indices,
                value,
                lanes,
            } => {
                self.expect(value, ScalarType::Vector(*lanes), "a stored vector");
                self.store(buffer, indices, *lanes);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                self.expect(cond, ScalarType::Bool, "a condition");
                let facts = self.guard_facts(cond);
                self.facts.push(facts);
                self.block(then);
                self.facts.pop();
                self.block(otherwise);
            }
            Stmt::Alloc { name, dims } => {
                if self.module.buffer(name).is_some() || self.alloc_dims(name).is_some() {
                    self.error(format!("alloc %{name} hides another buffer"));
                }
                if crate::tensor::checked_numel(dims).is_none_or(|n| n > 1 << 24) {
                    self.error(format!("alloc %{name} is too large for a local array"));
                }
                self.allocs
                    .last_mut()
                    .expect("a scope is open")
                    .insert(name.clone(), dims.clone());
            }
        }
    }

    /// Bounds implied by a condition: each conjunct `a < b` bounds `a` above
    /// by `b - 1` and `b` below by `a + 1` (likewise `<=`, `>`, `>=`).
    fn guard_facts(&mut self, cond: &Expr) -> HashMap<String, Interval> {
        let mut facts = HashMap::new();
        let mut conjuncts = vec![cond];
        while let Some(c) = conjuncts.pop() {
            let Expr::Binary(op, a, b) = c else { continue };
            let (small, large, strict) = match op {
                BinOp::And => {
                    conjuncts.push(a);
                    conjuncts.push(b);
                    continue;
                }
                BinOp::Lt => (a, b, 1),
                BinOp::Le => (a, b, 0),
                BinOp::Gt => (b, a, 1),
                BinOp::Ge => (b, a, 0),
                _ => continue,
            };
            let (rs, rl) = (self.range(small), self.range(large));
            let upper = rl.hi.and_then(|h| h.sub(&Affine::constant(strict)));
            let lower = rs.lo.and_then(|l| l.add(&Affine::constant(strict)));
            let mut bound = |e: &Expr, iv: Interval| {
                let key = expr_text(e);
                let merged = match facts.get(&key) {
                    Some(old) => iv.meet(old),
                    None => iv,
                };
                facts.insert(key, merged);
            };
            // `a + c < b` also bounds `a` (tiles guard their base this way),
            // and `v * k + c < b` bounds the variable `v` by `(b - c) / k`.
            if let Expr::Binary(BinOp::Add, base, c) = &**small {
                if let (Expr::Int(c), Some(u)) = (&**c, &upper) {
                    let hi = u.sub(&Affine::constant(*c));
                    if let (Expr::Binary(BinOp::Mul, v, k), Some(h)) = (&**base, &hi) {
                        if let (Expr::Var(_), Expr::Int(k)) = (&**v, &**k) {
                            if let Some(q) = h.div_floor(*k) {
                                bound(
                                    v,
                                    Interval {
                                        lo: None,
                                        hi: Some(q),
                                    },
                                );
                            }
                        }
                    }
                    bound(base, Interval { lo: None, hi });
                }
            }
            bound(
                small,
                Interval {
                    lo: None,
                    hi: upper,
                },
            );
            bound(
                large,
                Interval {
                    lo: lower,
                    hi: None,
                },
            );
        }
        facts
    }

    /// The values of `buffer` if it is a constant index array.
    fn index_data(&self, buffer: &str) -> Option<&[i64]> {
        self.module
            .buffer(buffer)
            .and_then(|b| b.index_data.as_deref())
    }

    /// Checks a store: the buffer must be writable (a view, when the buffer
    /// it shows is) and the access in bounds.
    fn store(&mut self, buffer: &str, indices: &[Expr], lanes: u32) {
        if let Some(b) = self.module.buffer(buffer) {
            let storage = self.module.buffer(self.module.storage_of(buffer));
            let kind = match (b.kind, storage) {
                (BufferKind::View, Some(s)) if s.kind != BufferKind::View => s.kind,
                (kind, _) => kind,
            };
            if matches!(kind, BufferKind::In | BufferKind::Const | BufferKind::View) {
                let what = if b.kind == kind {
                    b.kind.name().to_string()
                } else {
                    format!("a view of {} memory", kind.name())
                };
                self.error(format!("%{buffer} is {what} and cannot be written"));
            }
        }
        self.access(buffer, indices, lanes);
    }

    /// Checks an access of `lanes` consecutive elements (1 for a scalar)
    /// along the last dimension.
    fn access(&mut self, buffer: &str, indices: &[Expr], lanes: u32) {
        let dims: Vec<Affine> = if let Some(d) = self.alloc_dims(buffer) {
            d.iter().map(|&n| Affine::constant(n as i64)).collect()
        } else if let Some(b) = self.module.buffer(buffer) {
            if !self.kernel.params.iter().any(|p| p == buffer) {
                self.error(format!(
                    "%{buffer} is used but is not a parameter of the kernel"
                ));
            }
            b.ty.shape
                .0
                .iter()
                .map(|d| match d {
                    Dim::Static(n) => Affine::constant(*n as i64),
                    Dim::Symbol(s) => Affine::size(s),
                })
                .collect()
        } else {
            self.error(format!("unknown buffer %{buffer}"));
            return;
        };
        if dims.len() != indices.len() {
            self.error(format!(
                "%{buffer} has {} dimension(s) but is indexed with {}",
                dims.len(),
                indices.len()
            ));
            return;
        }
        if lanes > 1 && indices.is_empty() {
            self.error(format!("%{buffer} has no dimension to hold {lanes} lanes"));
            return;
        }
        for (axis, (index, extent)) in indices.iter().zip(&dims).enumerate() {
            self.expect(index, ScalarType::Index, "an index");
            let r = self.range(index);
            let width = if axis + 1 == indices.len() {
                lanes as i64
            } else {
                1
            };
            let last = extent.sub(&Affine::constant(width));
            let low_ok =
                r.lo.as_ref()
                    .is_some_and(|l| Affine::constant(0).provably_le(l));
            let high_ok = matches!((&r.hi, &last), (Some(h), Some(e)) if h.provably_le(e));
            if !(low_ok && high_ok) {
                let list: Vec<String> = indices.iter().map(expr_text).collect();
                let lanes_note = if width > 1 {
                    format!(" (with {width} lanes from each)")
                } else {
                    String::new()
                };
                self.error(format!(
                    "%{buffer}[{}]: index {axis} (`{}`) ranges over {r}{lanes_note}, outside 0..{extent} of dim {axis}",
                    list.join(", "),
                    expr_text(index)
                ));
            }
        }
    }

    fn expect(&mut self, e: &Expr, want: ScalarType, what: &str) {
        if let Some(got) = self.type_of(e) {
            if got != want {
                self.error(format!(
                    "{what} must be {}, but `{}` is {}",
                    want.name(),
                    expr_text(e),
                    got.name()
                ));
            }
        }
    }

    /// The type of `e`, reporting errors inside it (`None` after an error).
    fn type_of(&mut self, e: &Expr) -> Option<ScalarType> {
        use ScalarType::*;
        Some(match e {
            Expr::Int(_) => Index,
            Expr::Float(_) => F32,
            Expr::Size(s) => {
                if !self.module.sizes.contains(s) {
                    self.error(format!("unknown size `{s}`"));
                    return None;
                }
                Index
            }
            Expr::Var(v) => match self.lookup(v) {
                Some(var) => var.ty,
                None => {
                    self.error(format!("use of undefined %{v}"));
                    return None;
                }
            },
            Expr::Load { buffer, indices } => {
                self.access(buffer, indices, 1);
                if self.index_data(buffer).is_some() {
                    Index
                } else {
                    F32
                }
            }
            Expr::VLoad {
                buffer,
                indices,
                lanes,
            } => {
                self.access(buffer, indices, *lanes);
                if self.index_data(buffer).is_some() {
                    self.error(format!("%{buffer} holds indices; vectors load f32"));
                    return None;
                }
                Vector(*lanes)
            }
            Expr::Broadcast(v, lanes) => {
                self.expect(v, F32, "a broadcast value");
                Vector(*lanes)
            }
            Expr::Shuffle(a, b, mask) => {
                let (ta, tb) = (self.type_of(a)?, self.type_of(b)?);
                let Vector(lanes) = ta else {
                    self.error(format!("`shuffle` needs vectors, got {}", ta.name()));
                    return None;
                };
                if tb != ta {
                    self.error(format!("`shuffle` mixes {} and {}", ta.name(), tb.name()));
                    return None;
                }
                if mask.len() != lanes as usize {
                    self.error(format!(
                        "`shuffle` of {} gives {lanes} lanes, its mask has {}",
                        ta.name(),
                        mask.len()
                    ));
                    return None;
                }
                if let Some(bad) = mask.iter().find(|&&i| i >= 2 * lanes) {
                    self.error(format!(
                        "`shuffle` lane {bad} is past the {} lanes of its two vectors",
                        2 * lanes
                    ));
                    return None;
                }
                Vector(lanes)
            }
            Expr::Permute {
                table,
                buffer,
                indices,
            } => {
                let t = self.type_of(table)?;
                let Vector(lanes) = t else {
                    self.error(format!("`permute` needs a vector table, got {}", t.name()));
                    return None;
                };
                self.access(buffer, indices, lanes);
                let lane_numbers = self
                    .module
                    .buffer(buffer)
                    .filter(|b| b.ty.dtype == DType::I8)
                    .and_then(|b| b.index_data.as_deref());
                match lane_numbers {
                    None => {
                        self.error(format!(
                            "`permute` reads its lane numbers from an i8 index array, not %{buffer}"
                        ));
                        return None;
                    }
                    Some(values) => {
                        if let Some(bad) = values.iter().find(|&&v| !(0..lanes as i64).contains(&v))
                        {
                            self.error(format!(
                                "`permute` of {} lanes reads lane numbers from %{buffer}, which holds {bad}",
                                lanes
                            ));
                            return None;
                        }
                    }
                }
                Vector(lanes)
            }
            Expr::Horizontal(op, v) => match (op, self.type_of(v)?) {
                (BinOp::Add | BinOp::Max | BinOp::Min, Vector(_)) => F32,
                (BinOp::Add | BinOp::Max | BinOp::Min, other) => {
                    self.error(format!(
                        "`{}` needs a vector, got {}",
                        crate::loops::expr_text(e),
                        other.name()
                    ));
                    return None;
                }
                (op, _) => {
                    self.error(format!(
                        "a horizontal reduction combines lanes by +, max or min, not {}",
                        op.symbol()
                    ));
                    return None;
                }
            },
            Expr::Binary(op, a, b) => {
                let (ta, tb) = (self.type_of(a)?, self.type_of(b)?);
                if ta != tb {
                    self.error(format!(
                        "`{}` mixes {} and {}",
                        expr_text(e),
                        ta.name(),
                        tb.name()
                    ));
                    return None;
                }
                let comparison = matches!(
                    op,
                    BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
                );
                let ok = match op {
                    BinOp::And | BinOp::Or => ta == Bool,
                    BinOp::Rem => ta == Index,
                    _ if comparison => ta == Index || ta == F32,
                    _ => ta != Bool,
                };
                if !ok {
                    self.error(format!("`{}` is not defined on {}", op.symbol(), ta.name()));
                    return None;
                }
                // Compiled code divides with a machine instruction: a zero or
                // negative divisor must not reach it.
                if ta == Index
                    && matches!(op, BinOp::Div | BinOp::Rem)
                    && !matches!(**b, Expr::Int(d) if d > 0)
                {
                    self.error(format!(
                        "`{}`: index division needs a positive integer constant divisor",
                        expr_text(e)
                    ));
                    return None;
                }
                match op {
                    BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => Bool,
                    _ => ta,
                }
            }
            Expr::Unary(UnOp::ToFloat, a) => {
                let t = self.type_of(a)?;
                if t != Index {
                    self.error(format!("`float` needs an index, got {}", t.name()));
                    return None;
                }
                F32
            }
            Expr::Unary(op, a) => {
                let t = self.type_of(a)?;
                let allowed = matches!(t, F32 | Vector(_)) || (*op == UnOp::Neg && t == Index);
                if !allowed {
                    self.error(format!("`{}` needs f32, got {}", op.name(), t.name()));
                    return None;
                }
                t
            }
            Expr::Fma(a, b, c) => {
                let t = self.type_of(a)?;
                if !matches!(t, F32 | Vector(_)) {
                    self.error(format!("`fma` needs f32 or vectors, got {}", t.name()));
                    return None;
                }
                for x in [b, c] {
                    self.expect(x, t, "an fma operand");
                }
                t
            }
            Expr::Select(c, a, b) => {
                self.expect(c, Bool, "a select condition");
                let (ta, tb) = (self.type_of(a)?, self.type_of(b)?);
                if ta != tb {
                    self.error(format!(
                        "`{}` selects between {} and {}",
                        expr_text(e),
                        ta.name(),
                        tb.name()
                    ));
                    return None;
                }
                ta
            }
        })
    }

    /// The symbolic range of an `index` expression.
    fn range(&self, e: &Expr) -> Interval {
        let structural = match e {
            Expr::Int(v) => Interval::point(Affine::constant(*v)),
            Expr::Size(s) => Interval::point(Affine::size(s)),
            Expr::Var(v) => self
                .lookup(v)
                .map_or(Interval::unknown(), |var| var.range.clone()),
            Expr::Binary(op, a, b) => {
                let (ra, rb) = (self.range(a), self.range(b));
                match op {
                    BinOp::Add => ra.add(&rb),
                    BinOp::Sub => ra.sub(&rb),
                    BinOp::Mul => ra.mul(&rb),
                    BinOp::Div => ra.div(&rb),
                    BinOp::Rem => ra.rem(&rb),
                    BinOp::Min => ra.min(&rb),
                    BinOp::Max => ra.max(&rb),
                    _ => Interval::unknown(),
                }
            }
            Expr::Unary(UnOp::Neg, a) => self.range(a).neg(),
            // An index array's values are known: any element lies between
            // the smallest and the largest.
            Expr::Load { buffer, .. } => match self.index_data(buffer) {
                Some(values) if !values.is_empty() => Interval {
                    lo: values.iter().min().map(|&v| Affine::constant(v)),
                    hi: values.iter().max().map(|&v| Affine::constant(v)),
                },
                _ => Interval::unknown(),
            },
            _ => Interval::unknown(),
        };
        let key = expr_text(e);
        self.facts
            .iter()
            .filter_map(|f| f.get(&key))
            .fold(structural, |acc, fact| acc.meet(fact))
    }
}
