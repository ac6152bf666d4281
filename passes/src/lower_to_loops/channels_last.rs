//! Convolutions computed channels-last.
//!
//! `conv2d` writes NCHW, so the unit-stride dimension of its store, the one
//! `vectorize` turns into lanes, is the output width. LeNet's second
//! convolution has 10 columns and 16 channels: two 8-lane vectors cover a
//! row of 10, one 16-lane vector covers the 16 channels exactly. When the
//! output channels fill vectors of the backend's width with less work than
//! the output rows do, and the reduction is long enough to pay for one more
//! pass over the result, the convolution is computed into a scratch buffer
//! `[n, oh·ow, c]` (channels innermost) and a second kernel, `transpose`,
//! copies it into the NCHW result through a `[n, c, oh·ow]` view of it,
//! which `auto-schedule` vectorizes as a transpose in registers.
//!
//! A pooling that is the only user of such a result reads the scratch
//! buffer (through a `[n, oh, ow, c]` view) and pools channels-last too
//! (its windows then vectorize along the channels, with no strided loads),
//! and the transpose moves to after it, over the smaller pooled result.
//!
//! The choice needs the vector width (`lower-to-loops{lanes=L}`, which the
//! -O2 pipeline sets for the backend); without it every convolution stays
//! NCHW. Grouped convolutions always do (their input channel depends on the
//! output channel, which would become the vector lanes).

use super::build::{add, int, load, mul, nest, vars};
use super::Lowering;
use lopper_ir::graph::op::Conv2dAttrs;
use lopper_ir::graph::NodeIndex;
use lopper_ir::loops::{BufferKind, Expr, Stmt};
use lopper_ir::Op;
use lopper_ir::{Dim, Shape, TensorType};

/// Vector instructions per value when `n` values are covered by vectors of
/// up to `lanes` lanes, halved while one vector is longer than `n` (as
/// `auto-schedule` does), the last vector partly wasted.
fn vector_work(n: usize, lanes: usize) -> f64 {
    let mut l = lanes.max(1);
    while l > 4 && n < l {
        l /= 2;
    }
    n.div_ceil(l) as f64 / n as f64
}

impl Lowering<'_> {
    /// Whether convolution `conv` pays to compute channels-last: the vector
    /// work its reduction saves per output value exceeds the one vector
    /// operation per value the transpose back costs.
    pub(super) fn pays_channels_last(&self, conv: NodeIndex, c: &Conv2dAttrs) -> bool {
        if self.lanes == 0 || c.groups != 1 {
            return false;
        }
        let shape = &self.g.node(conv).ty.shape.0;
        let (Some(channels), Some(width)) = (shape[1].as_static(), shape[3].as_static()) else {
            return false;
        };
        let (_, wt) = self.operand(conv, 1);
        let reduction: usize = wt.shape.0[1..].iter().filter_map(Dim::as_static).product();
        let saved = vector_work(width, self.lanes) - vector_work(channels, self.lanes);
        saved * reduction as f64 > 1.0
    }

    /// The pooling that reads the result of the chain ending at `tail`
    /// (computed channels-last) when it is that result's only use.
    pub(super) fn channels_last_consumer(&self, tail: NodeIndex) -> Option<NodeIndex> {
        match self.g.users(tail).as_slice() {
            [pool] if !self.g.is_output(tail) => {
                matches!(self.g.node(*pool).op, Op::MaxPool2d(_) | Op::AvgPool2d(_))
                    .then_some(*pool)
            }
            _ => None,
        }
    }

    /// Adds the channels-last scratch buffer `[n, oh·ow, c]` of the chain
    /// whose root is convolution or pooling `conv` and result buffer `out`.
    pub(super) fn add_channels_last(&mut self, conv: NodeIndex, out: &str) {
        let ty = self.channels_last_type(conv);
        let name = self.add_buffer(&format!("{out}.nhwc"), BufferKind::Scratch, &ty, None);
        self.channels_last.insert(conv, name);
    }

    /// `[n, oh·ow, c]` for a convolution with result `[n, c, oh, ow]`.
    fn channels_last_type(&self, conv: NodeIndex) -> TensorType {
        let d = &self.g.node(conv).ty.shape.0;
        let plane = d[2].as_static().unwrap_or(1) * d[3].as_static().unwrap_or(1);
        TensorType::f32(Shape(vec![d[0].clone(), Dim::Static(plane), d[1].clone()]))
    }

    /// Lets pooling `pool` read the channels-last result of `conv`: a
    /// `[n, oh, ow, c]` view of its scratch, so a padded window's guards
    /// bound the very indices it loads with.
    pub(super) fn read_channels_last(&mut self, conv: NodeIndex, pool: NodeIndex) {
        let scratch = self.channels_last[&conv].clone();
        let d = &self.g.node(conv).ty.shape.0;
        let ty = TensorType::f32(Shape(vec![
            d[0].clone(),
            d[2].clone(),
            d[3].clone(),
            d[1].clone(),
        ]));
        let view = self.add_buffer(&format!("{scratch}4"), BufferKind::View, &ty, Some(scratch));
        self.channels_last_input.insert(pool, view);
    }

    /// The load of element `idx` (NCHW) of the operand of pooling `pool`
    /// from the channels-last view it reads, if it reads one.
    pub(super) fn load_channels_last(&self, pool: NodeIndex, idx: [Expr; 4]) -> Option<Expr> {
        let view = self.channels_last_input.get(&pool)?;
        let [n, c, y, x] = idx;
        Some(load(view, vec![n, y, x, c]))
    }

    /// Sends the final store of a convolution's (or pooling's) kernel body
    /// (made for the NCHW index `idx`) to its channels-last scratch.
    pub(super) fn store_channels_last(&self, conv: NodeIndex, body: &mut [Stmt], idx: &[Expr]) {
        let scratch = &self.channels_last[&conv];
        let width = self.g.node(conv).ty.shape.0[3].as_static().unwrap_or(1);
        if let Some(Stmt::Store {
            buffer, indices, ..
        }) = body.last_mut()
        {
            *buffer = scratch.to_string();
            *indices = vec![
                idx[0].clone(),
                add(mul(idx[2].clone(), int(width)), idx[3].clone()),
                idx[1].clone(),
            ];
        }
    }

    /// The kernel copying the channels-last result of `conv` into `out`.
    pub(super) fn push_channels_last_transpose(&mut self, conv: NodeIndex, out: &str) {
        let scratch = self.channels_last[&conv].clone();
        let from = self.channels_last_type(conv);
        let d = &from.shape.0;
        let to = TensorType::f32(Shape(vec![d[0].clone(), d[2].clone(), d[1].clone()]));
        let root = self
            .module
            .buffer(out)
            .and_then(|b| b.view_of.clone())
            .unwrap_or_else(|| out.to_string());
        let view = self.add_buffer(&format!("{out}.nchw"), BufferKind::View, &to, Some(root));
        let i = vars("i", 3);
        let copy = Stmt::Store {
            buffer: view,
            indices: i.clone(),
            value: load(&scratch, vec![i[0].clone(), i[2].clone(), i[1].clone()]),
        };
        let dims = to.shape.0.clone();
        self.push_kernel("transpose", nest("i", &dims, vec![copy]));
    }
}
