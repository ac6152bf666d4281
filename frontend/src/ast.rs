//! The syntax tree of a `.lop` file, every node with its byte span.

use lopper_ir::TensorType;
use std::ops::Range;

/// Byte offsets into the source.
pub type Span = Range<usize>;

/// A name and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    /// The name (`fc1.weight`).
    pub name: String,
    /// Where.
    pub span: Span,
}

/// A whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The model's name.
    pub name: Ident,
    /// Declarations and statements in source order.
    pub items: Vec<Item>,
}

/// One declaration or statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `weights "file.safetensors"`.
    Weights {
        /// The path as written, relative to the model file.
        path: String,
        /// Where.
        span: Span,
    },
    /// `input x: f32[batch, 784]`.
    Input {
        /// The input's name.
        name: Ident,
        /// Its type.
        ty: TensorType,
        /// Where the type is written.
        ty_span: Span,
    },
    /// `param w: f32[10, 4]` with an optional initializer.
    Param {
        /// The param's name (also its tensor name in the weights file).
        name: Ident,
        /// Its type.
        ty: TensorType,
        /// Where the type is written.
        ty_span: Span,
        /// `= normal(0, 0.05, seed = 1)` or `= [1, 2, 3]`.
        init: Option<Expr>,
    },
    /// `let h = expr`.
    Let {
        /// The bound name.
        name: Ident,
        /// The value.
        value: Expr,
    },
    /// `output y = expr`.
    Output {
        /// The output's name.
        name: Ident,
        /// The value.
        value: Expr,
    },
}

/// Binary operators of expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOperator {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `@`.
    MatMul,
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A named value.
    Name(Ident),
    /// A number literal (`text` as written).
    Number {
        /// The literal as written.
        text: String,
        /// Where.
        span: Span,
    },
    /// `-e`.
    Neg {
        /// The negated expression.
        operand: Box<Expr>,
        /// Where.
        span: Span,
    },
    /// `a op b`.
    Binary {
        /// Which operator.
        op: BinaryOperator,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
        /// Where the whole expression is.
        span: Span,
    },
    /// `f(a, b, key = value)`.
    Call {
        /// The function.
        callee: Ident,
        /// Positional then named arguments, in source order.
        args: Vec<Argument>,
        /// Where the whole call is.
        span: Span,
    },
    /// `[a, b, c]`.
    List {
        /// The items.
        items: Vec<Expr>,
        /// Where.
        span: Span,
    },
}

impl Expr {
    /// Where the expression is written.
    pub fn span(&self) -> Span {
        match self {
            Expr::Name(i) => i.span.clone(),
            Expr::Number { span, .. }
            | Expr::Neg { span, .. }
            | Expr::Binary { span, .. }
            | Expr::Call { span, .. }
            | Expr::List { span, .. } => span.clone(),
        }
    }
}

/// One argument of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct Argument {
    /// `Some` for `key = value`.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}
