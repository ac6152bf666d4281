//! The loop-IR interpreter: runs a lowered module statement by statement.
//!
//! It gives lowering and every loop pass a test without code generation:
//! a module's outputs must equal the graph interpreter's. It computes in
//! `f32` as compiled code does (`fma` rounds once), binds symbolic sizes from
//! the inputs, and checks every access at run time, so even a module that
//! escaped the verifier ends in an error, never in a wrong read.

use crate::interpreter::{bind_sizes, RunError};
use lopper_ir::loops::{BinOp, BufferKind, Expr, Module, Stmt, UnOp};
use lopper_ir::tensor::strides;
use lopper_ir::{Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq)]
enum Val {
    I(i64),
    F(f32),
    B(bool),
    V(Vec<f32>),
}

/// How a buffer name indexes memory: its shape and the storage it shows
/// (its own, or a view's source).
struct Array {
    shape: Vec<usize>,
    strides: Vec<usize>,
    storage: String,
}

impl Array {
    fn new(shape: Vec<usize>, storage: &str) -> Array {
        Array {
            strides: strides(&shape),
            shape,
            storage: storage.to_string(),
        }
    }
}

struct Machine<'a> {
    sizes: &'a BTreeMap<String, usize>,
    arrays: HashMap<String, Array>,
    storage: HashMap<String, Vec<f32>>,
    /// Constant index arrays, by buffer name.
    index_arrays: HashMap<String, Vec<i64>>,
    vars: Vec<HashMap<String, Val>>,
    kernel: String,
}

fn fail(kernel: &str, message: String) -> RunError {
    RunError::Eval {
        node: format!("@{kernel}"),
        message,
    }
}

/// Runs module `m` on `inputs`; returns its outputs by name, in order.
pub fn run_module(
    m: &Module,
    inputs: &HashMap<String, Tensor>,
    given: &BTreeMap<String, usize>,
) -> Result<Vec<(String, Tensor)>, RunError> {
    let declared: Vec<(&str, &TensorType)> = m
        .buffers_of(BufferKind::In)
        .map(|b| (b.name.as_str(), &b.ty))
        .collect();
    let sizes = bind_sizes(&declared, inputs, given)?;
    let mut arrays = HashMap::new();
    let mut storage = HashMap::new();
    let mut index_arrays = HashMap::new();
    for b in &m.buffers {
        let shape =
            b.ty.shape
                .bind(&sizes)
                .map_err(|e| RunError::Input(format!("buffer %{}: {e}", b.name)))?;
        let n = shape.iter().product();
        let root = m.storage_of(&b.name);
        arrays.insert(b.name.clone(), Array::new(shape, root));
        if root != b.name {
            continue;
        }
        let data = match b.kind {
            BufferKind::In => inputs[&b.name].data.clone(),
            BufferKind::Const if b.index_data.is_some() => {
                index_arrays.insert(b.name.clone(), b.index_data.clone().unwrap_or_default());
                continue;
            }
            BufferKind::Const => {
                let p = b
                    .data
                    .as_ref()
                    .ok_or_else(|| RunError::Input(format!("const %{} has no data", b.name)))?;
                p.data.data.clone()
            }
            BufferKind::Out | BufferKind::Scratch => vec![0.0; n],
            BufferKind::View => continue,
        };
        storage.insert(b.name.clone(), data);
    }
    let mut machine = Machine {
        sizes: &sizes,
        arrays,
        storage,
        index_arrays,
        vars: Vec::new(),
        kernel: String::new(),
    };
    for k in &m.kernels {
        machine.kernel = k.name.clone();
        machine.vars = vec![HashMap::new()];
        machine.block(&k.body)?;
    }
    Ok(m.buffers_of(BufferKind::Out)
        .map(|b| {
            let a = &machine.arrays[&b.name];
            (
                b.name.clone(),
                Tensor {
                    shape: a.shape.clone(),
                    data: machine.storage[&a.storage].clone(),
                },
            )
        })
        .collect())
}

impl Machine<'_> {
    fn err(&self, message: String) -> RunError {
        fail(&self.kernel, message)
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), RunError> {
        self.vars.push(HashMap::new());
        let mut allocs = Vec::new();
        for s in body {
            if let Stmt::Alloc { name, .. } = s {
                allocs.push(name.clone());
            }
            self.stmt(s)?;
        }
        for a in allocs {
            self.arrays.remove(&a);
            self.storage.remove(&a);
        }
        self.vars.pop();
        Ok(())
    }

    fn set(&mut self, name: &str, v: Val) -> Result<(), RunError> {
        for scope in self.vars.iter_mut().rev() {
            if let Some(slot) = scope.get_mut(name) {
                *slot = v;
                return Ok(());
            }
        }
        Err(self.err(format!("assignment to undefined %{name}")))
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), RunError> {
        match s {
            Stmt::For {
                var, lo, hi, body, ..
            } => {
                let (lo, hi) = (self.index(lo)?, self.index(hi)?);
                for i in lo..hi {
                    self.vars.push(HashMap::from([(var.clone(), Val::I(i))]));
                    let r = self.block(body);
                    self.vars.pop();
                    r?;
                }
            }
            Stmt::Let { var, init, .. } => {
                let v = self.eval(init)?;
                self.vars
                    .last_mut()
                    .expect("a scope is open")
                    .insert(var.clone(), v);
            }
            Stmt::Assign { var, value } => {
                let v = self.eval(value)?;
                self.set(var, v)?;
            }
            Stmt::Store {
                buffer,
                indices,
                value,
            } => {
                let v = self.float(value)?;
                let (storage, at) = self.offset(buffer, indices, 1)?;
                self.storage
                    .get_mut(&storage)
                    .expect("every array has storage")[at] = v;
            }
            Stmt::VStore {
                buffer,
                indices,
                value,
                lanes,
            } => {
                let Val::V(v) = self.eval(value)? else {
                    return Err(self.err("vstore of a scalar".into()));
                };
                if v.len() != *lanes as usize {
                    return Err(self.err(format!("vstore<{lanes}> of {} lanes", v.len())));
                }
                let (storage, at) = self.offset(buffer, indices, *lanes as usize)?;
                self.storage
                    .get_mut(&storage)
                    .expect("every array has storage")[at..at + v.len()]
                    .copy_from_slice(&v);
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                if self.boolean(cond)? {
                    self.block(then)?;
                } else {
                    self.block(otherwise)?;
                }
            }
            Stmt::Alloc { name, dims } => {
                self.arrays
                    .insert(name.clone(), Array::new(dims.clone(), name));
                self.storage
                    .insert(name.clone(), vec![0.0; dims.iter().product()]);
            }
        }
        Ok(())
    }

    /// The storage and element offset of an access.
    fn offset(
        &mut self,
        buffer: &str,
        indices: &[Expr],
        lanes: usize,
    ) -> Result<(String, usize), RunError> {
        let mut idx = Vec::with_capacity(indices.len());
        for e in indices {
            idx.push(self.index(e)?);
        }
        let a = self
            .arrays
            .get(buffer)
            .ok_or_else(|| self.err(format!("unknown buffer %{buffer}")))?;
        if idx.len() != a.shape.len() {
            return Err(self.err(format!("%{buffer} indexed with {} indices", idx.len())));
        }
        let mut at = 0;
        if lanes > 1 && idx.is_empty() {
            return Err(self.err(format!("%{buffer} has no dimension for {lanes} lanes")));
        }
        for (d, (&i, &extent)) in idx.iter().zip(&a.shape).enumerate() {
            let width = if d + 1 == idx.len() { lanes } else { 1 };
            if i < 0 || i as usize + width > extent {
                return Err(self.err(format!(
                    "%{buffer}: index {i} is outside 0..{extent} in dim {d}"
                )));
            }
            at += i as usize * a.strides[d];
        }
        Ok((a.storage.clone(), at))
    }

    fn index(&mut self, e: &Expr) -> Result<i64, RunError> {
        match self.eval(e)? {
            Val::I(v) => Ok(v),
            other => Err(self.err(format!("expected an index, got {other:?}"))),
        }
    }

    fn float(&mut self, e: &Expr) -> Result<f32, RunError> {
        match self.eval(e)? {
            Val::F(v) => Ok(v),
            other => Err(self.err(format!("expected an f32, got {other:?}"))),
        }
    }

    fn boolean(&mut self, e: &Expr) -> Result<bool, RunError> {
        match self.eval(e)? {
            Val::B(v) => Ok(v),
            other => Err(self.err(format!("expected a bool, got {other:?}"))),
        }
    }

    fn eval(&mut self, e: &Expr) -> Result<Val, RunError> {
        Ok(match e {
            Expr::Int(v) => Val::I(*v),
            Expr::Float(v) => Val::F(*v),
            Expr::Size(s) => Val::I(
                *self
                    .sizes
                    .get(s)
                    .ok_or_else(|| self.err(format!("size `{s}` is not bound")))?
                    as i64,
            ),
            Expr::Var(v) => self
                .vars
                .iter()
                .rev()
                .find_map(|scope| scope.get(v).cloned())
                .ok_or_else(|| self.err(format!("use of undefined %{v}")))?,
            Expr::Load { buffer, indices } => {
                let (storage, at) = self.offset(buffer, indices, 1)?;
                match self.index_arrays.get(&storage) {
                    Some(values) => Val::I(values[at]),
                    None => Val::F(self.storage[&storage][at]),
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                binary(*op, a.clone(), b.clone())
                    .ok_or_else(|| self.err(format!("`{}` on {a:?} and {b:?}", op.symbol())))?
            }
            Expr::Unary(op, a) => match (op, self.eval(a)?) {
                (UnOp::Neg, Val::I(v)) => Val::I(
                    v.checked_neg()
                        .ok_or_else(|| self.err("index overflow".into()))?,
                ),
                (UnOp::ToFloat, Val::I(v)) => Val::F(v as f32),
                (UnOp::ToFloat, other) => return Err(self.err(format!("`float` of {other:?}"))),
                (op, Val::F(x)) => Val::F(unary_f32(*op, x)),
                (op, Val::V(v)) => Val::V(v.into_iter().map(|x| unary_f32(*op, x)).collect()),
                (_, other) => return Err(self.err(format!("`{}` on {other:?}", op.name()))),
            },
            Expr::Fma(a, b, c) => match (self.eval(a)?, self.eval(b)?, self.eval(c)?) {
                (Val::F(a), Val::F(b), Val::F(c)) => Val::F(a.mul_add(b, c)),
                (Val::V(a), Val::V(b), Val::V(c)) if a.len() == b.len() && b.len() == c.len() => {
                    Val::V(
                        a.iter()
                            .zip(&b)
                            .zip(&c)
                            .map(|((a, b), c)| a.mul_add(*b, *c))
                            .collect(),
                    )
                }
                other => return Err(self.err(format!("`fma` on {other:?}"))),
            },
            Expr::VLoad {
                buffer,
                indices,
                lanes,
            } => {
                let (storage, at) = self.offset(buffer, indices, *lanes as usize)?;
                Val::V(self.storage[&storage][at..at + *lanes as usize].to_vec())
            }
            Expr::Broadcast(v, lanes) => Val::V(vec![self.float(v)?; *lanes as usize]),
            Expr::Permute {
                table,
                buffer,
                indices,
            } => {
                let Val::V(table) = self.eval(table)? else {
                    return Err(self.err("`permute` of a scalar".into()));
                };
                let (storage, at) = self.offset(buffer, indices, table.len())?;
                let lanes = self
                    .index_arrays
                    .get(&storage)
                    .ok_or_else(|| self.err(format!("`permute` lanes from f32 %{buffer}")))?;
                let picked: Option<Vec<f32>> = lanes[at..at + table.len()]
                    .iter()
                    .map(|&l| usize::try_from(l).ok().and_then(|l| table.get(l).copied()))
                    .collect();
                Val::V(picked.ok_or_else(|| self.err("`permute` lane out of range".into()))?)
            }
            Expr::Shuffle(a, b, mask) => match (self.eval(a)?, self.eval(b)?) {
                (Val::V(mut lanes), Val::V(more)) => {
                    lanes.extend(more);
                    let picked: Option<Vec<f32>> = mask
                        .iter()
                        .map(|&i| lanes.get(i as usize).copied())
                        .collect();
                    Val::V(picked.ok_or_else(|| self.err("`shuffle` lane out of range".into()))?)
                }
                other => return Err(self.err(format!("`shuffle` of {other:?}"))),
            },
            Expr::Horizontal(op, v) => match self.eval(v)? {
                Val::V(lanes) => {
                    let combine = |a: f32, b: f32| match op {
                        BinOp::Max => a.max(b),
                        BinOp::Min => a.min(b),
                        _ => a + b,
                    };
                    let mut it = lanes.into_iter();
                    let first = it.next().unwrap_or(0.0);
                    Val::F(it.fold(first, combine))
                }
                other => return Err(self.err(format!("a horizontal reduction of {other:?}"))),
            },
            Expr::Select(c, a, b) => {
                if self.boolean(c)? {
                    self.eval(a)?
                } else {
                    self.eval(b)?
                }
            }
        })
    }
}

fn unary_f32(op: UnOp, x: f32) -> f32 {
    let v = x as f64;
    match op {
        UnOp::Neg => -x,
        UnOp::Exp => v.exp() as f32,
        UnOp::Log => v.ln() as f32,
        UnOp::Tanh => v.tanh() as f32,
        UnOp::Sqrt => x.sqrt(),
        UnOp::Erf => libm::erf(v) as f32,
        UnOp::Floor => x.floor(),
        UnOp::ToFloat => x,
    }
}

/// A comparison of two indices or two floats; `None` for other operators.
fn compare<T: PartialOrd>(op: BinOp, x: T, y: T) -> Option<bool> {
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

fn binary(op: BinOp, a: Val, b: Val) -> Option<Val> {
    use BinOp::*;
    Some(match (a, b) {
        (Val::V(x), Val::V(y))
            if x.len() == y.len()
                && !matches!(op, Lt | Le | Gt | Ge | Eq | Ne | And | Or | Rem) =>
        {
            let lanes: Option<Vec<f32>> = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| match binary(op, Val::F(a), Val::F(b)) {
                    Some(Val::F(r)) => Some(r),
                    _ => None,
                })
                .collect();
            Val::V(lanes?)
        }
        (Val::I(x), Val::I(y)) => match op {
            Add => Val::I(x.checked_add(y)?),
            Sub => Val::I(x.checked_sub(y)?),
            Mul => Val::I(x.checked_mul(y)?),
            Div => Val::I(x.checked_div_euclid(y)?),
            Rem => Val::I(x.checked_rem_euclid(y)?),
            Min => Val::I(x.min(y)),
            Max => Val::I(x.max(y)),
            And | Or => return None,
            _ => Val::B(compare(op, x, y)?),
        },
        (Val::F(x), Val::F(y)) => match op {
            Add => Val::F(x + y),
            Sub => Val::F(x - y),
            Mul => Val::F(x * y),
            Div => Val::F(x / y),
            Min => Val::F(x.min(y)),
            Max => Val::F(x.max(y)),
            Rem | And | Or => return None,
            _ => Val::B(compare(op, x, y)?),
        },
        (Val::B(x), Val::B(y)) => match op {
            And => Val::B(x && y),
            Or => Val::B(x || y),
            Eq => Val::B(x == y),
            Ne => Val::B(x != y),
            _ => return None,
        },
        _ => return None,
    })
}
