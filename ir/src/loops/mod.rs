//! The loop IR: kernels of loops over buffers.
//!
//! A [`Module`] is what a model lowers to: its buffers (inputs, outputs,
//! constants with their data, scratch) and the kernels that run in order,
//! each reading and writing module buffers. A kernel body is statements
//! (`for`, `let`, assignment, `store`, `if`, local `alloc`) over expressions
//! (constants, variables, loads, arithmetic, `min`/`max`/`select`, and the
//! intrinsics `exp`, `log`, `tanh`, `sqrt`, `erf`, `floor`, `fma`). Index expressions are
//! `index` (64-bit) values built from loop variables and symbolic sizes; data
//! are `f32`. The text form (`.lir`) prints and parses back exactly; the
//! verifier types every expression and proves every access in bounds.
//!
//! Vector forms (`f32xN` values, `vload`, `vstore`, `broadcast`, `hsum`,
//! `hmax`, `hmin`, `shuffle`, `permute`) are what the `vectorize` pass and
//! the sparse lowering write; they print, parse, verify, run in the
//! loop interpreter and compile with Cranelift (4 lanes) today.

mod cost;
mod interval;
mod parser;
mod printer;
mod verify;

pub use cost::{kernel_cost, KernelCost};
pub use parser::parse_lir;
pub use printer::{expr_text, print_lir};
pub use verify::{verify_module, LoopVerifyError};

use crate::graph::param::Param;
use crate::types::TensorType;

/// What a buffer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// A model input, read only.
    In,
    /// A model output, written by the kernels.
    Out,
    /// Constant data (weights), read only, embedded in the artifact.
    Const,
    /// Intermediate values, alive between kernels.
    Scratch,
    /// Another buffer's memory seen with a different shape of the same
    /// element count (what `reshape` and `flatten` lower to); read only.
    View,
}

impl BufferKind {
    /// The keyword in text.
    pub fn name(self) -> &'static str {
        match self {
            BufferKind::In => "in",
            BufferKind::Out => "out",
            BufferKind::Const => "const",
            BufferKind::Scratch => "scratch",
            BufferKind::View => "view",
        }
    }
}

/// A module-level buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// Unique name, printed with `%`.
    pub name: String,
    /// Its role.
    pub kind: BufferKind,
    /// Element type and shape (symbolic sizes allowed but for constants).
    pub ty: TensorType,
    /// The data of a constant `f32` buffer.
    pub data: Option<Param>,
    /// The data of a constant `i64` buffer: an index array (row pointers,
    /// column indices of a sparse format), used in index expressions.
    pub index_data: Option<Vec<i64>>,
    /// For a view, the buffer whose memory it shows; for a scratch buffer
    /// (after `plan-memory`), the scratch buffer whose memory it reuses.
    pub view_of: Option<String>,
}

/// How a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// One iteration after another.
    Serial,
    /// Iterations may run on different threads.
    Parallel,
    /// Fully unrolled by code generation.
    Unrolled,
    /// Lanes of a vector of the given width.
    Vectorized(u32),
}

/// Scalar types of expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// 64-bit signed index arithmetic.
    Index,
    /// 32-bit float data.
    F32,
    /// A condition.
    Bool,
    /// A vector of `f32` lanes (`f32x4`).
    Vector(u32),
}

impl ScalarType {
    /// The name in text.
    pub fn name(self) -> String {
        match self {
            ScalarType::Index => "index".into(),
            ScalarType::F32 => "f32".into(),
            ScalarType::Bool => "bool".into(),
            ScalarType::Vector(n) => format!("f32x{n}"),
        }
    }
}

/// Binary operators. Arithmetic works on `index` or `f32` (both operands
/// alike); `/` and `%` on `index` are floor division and remainder of
/// non-negative values; comparisons give `bool`; `&&` and `||` take `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    /// The operator's text (infix symbol or function name).
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Min => "min",
            BinOp::Max => "max",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength of the infix form (higher binds tighter); `None`
    /// for the function forms.
    pub fn precedence(self) -> Option<u8> {
        Some(match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
            BinOp::Min | BinOp::Max => return None,
        })
    }
}

/// Functions of one operand: of an `f32` but for `neg` (also `index`) and
/// `float` (`index` to `f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-x` (also on `index`).
    Neg,
    /// `e^x`
    Exp,
    /// Natural logarithm.
    Log,
    /// Hyperbolic tangent.
    Tanh,
    /// Square root.
    Sqrt,
    /// The error function.
    Erf,
    /// The largest integer not above `x`.
    Floor,
    /// An `index` as an `f32` (`float(n)`).
    ToFloat,
}

impl UnOp {
    /// The function's name (`-` for negation).
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Tanh => "tanh",
            UnOp::Sqrt => "sqrt",
            UnOp::Erf => "erf",
            UnOp::Floor => "floor",
            UnOp::ToFloat => "float",
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// An `index` constant.
    Int(i64),
    /// An `f32` constant.
    Float(f32),
    /// A loop variable, local, or symbolic size (sizes print bare, the
    /// others with `%`).
    Var(String),
    /// A symbolic size of the module.
    Size(String),
    /// `%buf[i, j]`.
    Load {
        /// The buffer (module buffer or local alloc).
        buffer: String,
        /// One index per dimension.
        indices: Vec<Expr>,
    },
    /// A binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A unary function.
    Unary(UnOp, Box<Expr>),
    /// `fma(a, b, c)` = `a * b + c` rounded once.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `select(c, a, b)`: `a` if `c` else `b`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `vload<N>(%buf[i, j])`: `N` consecutive elements along the last
    /// dimension, starting at the index, as an `f32xN`.
    VLoad {
        /// The buffer.
        buffer: String,
        /// The index of the first lane.
        indices: Vec<Expr>,
        /// The lane count.
        lanes: u32,
    },
    /// `broadcast<N>(x)`: an `f32` in every lane.
    Broadcast(Box<Expr>, u32),
    /// `hsum(v)`, `hmax(v)`, `hmin(v)`: a vector's lanes combined in lane
    /// order by `+`, `max` or `min` (the op), an `f32`.
    Horizontal(BinOp, Box<Expr>),
    /// `shuffle(a, b, [i, ...])`: lane `l` of the result is lane `mask[l]`
    /// of `a` and `b` placed end to end (`a`'s lanes first), as LLVM's
    /// `shufflevector`; the result has as many lanes as `a` and `b`.
    Shuffle(Box<Expr>, Box<Expr>, Vec<u32>),
    /// `permute(t, %lanes[i, j])`: lane `l` of the result is lane
    /// `%lanes[i, j + l]` of the vector `t` (a lookup of `N` lanes in a
    /// table of `N`, `vpermps` on x86); the lane numbers are `N`
    /// consecutive elements along the last dimension of an `i8` index
    /// array, each in `0..N`.
    Permute {
        /// The vector the lanes are taken from.
        table: Box<Expr>,
        /// The `i8` index array of lane numbers.
        buffer: String,
        /// The index of the first lane number.
        indices: Vec<Expr>,
    },
}

impl Expr {
    /// `a op b`.
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    /// True if the expression reads a variable (`%name`, not a symbolic
    /// size) for which `is` holds, in any operand or index.
    pub fn reads(&self, is: &impl Fn(&str) -> bool) -> bool {
        match self {
            Expr::Var(v) => is(v),
            Expr::Int(_) | Expr::Float(_) | Expr::Size(_) => false,
            Expr::Load { indices, .. } | Expr::VLoad { indices, .. } => {
                indices.iter().any(|i| i.reads(is))
            }
            Expr::Binary(_, a, b) | Expr::Shuffle(a, b, _) => a.reads(is) || b.reads(is),
            Expr::Permute { table, indices, .. } => {
                table.reads(is) || indices.iter().any(|i| i.reads(is))
            }
            Expr::Unary(_, a) | Expr::Broadcast(a, _) | Expr::Horizontal(_, a) => a.reads(is),
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => a.reads(is) || b.reads(is) || c.reads(is),
        }
    }

    /// A variable.
    pub fn var(name: &str) -> Expr {
        Expr::Var(name.to_string())
    }

    /// `f(a)`.
    pub fn unary(op: UnOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for %v in lo..hi { body }`.
    For {
        /// The loop variable.
        var: String,
        /// First value.
        lo: Expr,
        /// One past the last value.
        hi: Expr,
        /// How it runs.
        kind: LoopKind,
        /// The body.
        body: Vec<Stmt>,
    },
    /// `let %v: ty = init`: declares a mutable local.
    Let {
        /// The local.
        var: String,
        /// Its type.
        ty: ScalarType,
        /// Its first value.
        init: Expr,
    },
    /// `%v = value`: assigns a local.
    Assign {
        /// The local.
        var: String,
        /// The new value.
        value: Expr,
    },
    /// `%buf[i, j] = value`.
    Store {
        /// The buffer.
        buffer: String,
        /// One index per dimension.
        indices: Vec<Expr>,
        /// The value.
        value: Expr,
    },
    /// `if cond { then } else { otherwise }`.
    If {
        /// The condition.
        cond: Expr,
        /// Taken when true.
        then: Vec<Stmt>,
        /// Taken when false (may be empty).
        otherwise: Vec<Stmt>,
    },
    /// `vstore<N> %buf[i, j] = v`: the lanes of an `f32xN` into `N`
    /// consecutive elements along the last dimension.
    VStore {
        /// The buffer.
        buffer: String,
        /// The index of the first lane.
        indices: Vec<Expr>,
        /// The vector.
        value: Expr,
        /// The lane count.
        lanes: u32,
    },
    /// `alloc %t: f32[dims]`: a local array for the rest of the block.
    Alloc {
        /// Its name.
        name: String,
        /// Its static extents.
        dims: Vec<usize>,
    },
}

/// A kernel: a body over some module buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Its name (`@linear_relu_0`).
    pub name: String,
    /// The module buffers it uses.
    pub params: Vec<String>,
    /// The statements.
    pub body: Vec<Stmt>,
}

/// A lowered model.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    /// The model's name.
    pub name: String,
    /// Symbolic sizes, bound at run time, in order.
    pub sizes: Vec<String>,
    /// Every buffer; inputs and outputs in signature order.
    pub buffers: Vec<Buffer>,
    /// Kernels in execution order.
    pub kernels: Vec<Kernel>,
}

impl Module {
    /// The buffer named `name`.
    pub fn buffer(&self, name: &str) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.name == name)
    }

    /// The buffer whose memory `name` uses: itself, or the end of its
    /// `view_of` chain.
    pub fn storage_of<'a>(&'a self, name: &'a str) -> &'a str {
        let mut current = name;
        for _ in 0..self.buffers.len() {
            match self.buffer(current).and_then(|b| b.view_of.as_deref()) {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    /// The buffers of one kind, in order.
    pub fn buffers_of(&self, kind: BufferKind) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(move |b| b.kind == kind)
    }
}

/// The names of the buffers (module buffers and local arrays) that `body`
/// loads from or stores to, in order of appearance, with repeats.
pub fn buffers_used(body: &[Stmt]) -> Vec<String> {
    fn expr(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Load { buffer, indices }
            | Expr::VLoad {
                buffer, indices, ..
            } => {
                out.push(buffer.clone());
                indices.iter().for_each(|i| expr(i, out));
            }
            Expr::Binary(_, a, b) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::Unary(_, a) | Expr::Broadcast(a, _) | Expr::Horizontal(_, a) => expr(a, out),
            Expr::Shuffle(a, b, _) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::Permute {
                table,
                buffer,
                indices,
            } => {
                expr(table, out);
                out.push(buffer.clone());
                indices.iter().for_each(|i| expr(i, out));
            }
            Expr::Fma(a, b, c) | Expr::Select(a, b, c) => {
                expr(a, out);
                expr(b, out);
                expr(c, out);
            }
            Expr::Int(_) | Expr::Float(_) | Expr::Var(_) | Expr::Size(_) => {}
        }
    }
    fn block(body: &[Stmt], out: &mut Vec<String>) {
        for s in body {
            match s {
                Stmt::For { lo, hi, body, .. } => {
                    expr(lo, out);
                    expr(hi, out);
                    block(body, out);
                }
                Stmt::Let { init, .. } => expr(init, out),
                Stmt::Assign { value, .. } => expr(value, out),
                Stmt::Store {
                    buffer,
                    indices,
                    value,
                }
                | Stmt::VStore {
                    buffer,
                    indices,
                    value,
                    ..
                } => {
                    out.push(buffer.clone());
                    indices.iter().for_each(|i| expr(i, out));
                    expr(value, out);
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    expr(cond, out);
                    block(then, out);
                    block(otherwise, out);
                }
                Stmt::Alloc { .. } => {}
            }
        }
    }
    let mut out = Vec::new();
    block(body, &mut out);
    out
}

/// Calls `f` on every statement of `body` at any depth, each before the
/// statements inside it.
pub fn for_each_stmt(body: &[Stmt], f: &mut impl FnMut(&Stmt)) {
    for s in body {
        f(s);
        match s {
            Stmt::For { body, .. } => for_each_stmt(body, f),
            Stmt::If {
                then, otherwise, ..
            } => {
                for_each_stmt(then, f);
                for_each_stmt(otherwise, f);
            }
            Stmt::Let { .. }
            | Stmt::Assign { .. }
            | Stmt::Store { .. }
            | Stmt::VStore { .. }
            | Stmt::Alloc { .. } => {}
        }
    }
}

/// The names of the buffers (module buffers and local arrays) that `body`
/// stores to, at any depth, in order of appearance, with repeats.
pub fn buffers_stored(body: &[Stmt]) -> Vec<String> {
    let mut out = Vec::new();
    for_each_stmt(body, &mut |s| {
        if let Stmt::Store { buffer, .. } | Stmt::VStore { buffer, .. } = s {
            out.push(buffer.clone());
        }
    });
    out
}
