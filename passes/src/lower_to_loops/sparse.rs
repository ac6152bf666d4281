//! Sparse `linear` layers: CSR, BSR, N:M and sliced-ELLPACK loop nests
//! over constant index arrays.
//!
//! A linear layer whose weight `analyze-sparsity` marked `csr`, `bsrRxC` or
//! `N:M` lowers to three kernels instead of one:
//!
//! 1. `transpose`: the activations `x[rows.., k]` copied to `x.t[k, rows..]`,
//!    so that the rows (the batch) are the contiguous dimension;
//! 2. the product, one output feature `j` at a time, over the rows: each
//!    stored weight is broadcast and multiplied with a whole row of `x.t`,
//!    so `auto-schedule` vectorizes along the batch, and `y.t[j, rows..]`
//!    is stored;
//! 3. the finish: `y[rows.., j] = y.t[j, rows..] + bias[j]`, with the fused
//!    consumers (relu, ...) applied as in the dense kernel.
//!
//! Formats, all built here from the weight's values at compile time:
//!
//! - CSR: each row's nonzeros in groups of four (a row is padded with zero
//!   weights to a multiple), `%w.rowptr[j]..%w.rowptr[j+1]` are the groups
//!   of row `j`; the four slots of a group accumulate separately, so even a
//!   batch of one has four independent chains, or into fewer registers
//!   where `analyze-sparsity` says so (`accumulators = 1` for a batch on
//!   Cranelift, whose tiles of it then give the independent chains);
//! - N:M: every row has the same number of slots (`n` per group of `m`),
//!   so the group loop has affine bounds and no row pointers;
//! - BSR `RxC`: dense blocks with a nonzero, `%w.blockptr` per block row and
//!   `%w.blockcol` per block; `R` accumulators, the `C` columns of a block
//!   share each loaded row of `x.t`; edge blocks are padded with zero
//!   weights (and `x.t` with zero rows).
//!
//! With `batch_outer = true` on the weight (`analyze-sparsity` tuned for
//! fewer rows than a vector tile) the layer is one kernel instead: for each
//! row of the batch and each output feature (block row for BSR), the
//! stored weights times the activations they pick out of `x[rows.., k]`,
//! then the bias and the fused consumers, stored at `y[rows.., j]`; no
//! transposes, scalar code. BSR takes it only where its blocks tile the
//! weight (no padded edge block reads past a row of `x`).
//!
//! Sliced ELLPACK (`sellN`) always runs a batch row at a time, vectorized
//! across slices of `N` output features: a slot is `N` weights, one per
//! row of the slice, times the activations each row picks (`permute`) out
//! of a window of `N` columns of `x`, which slides along with the nonzeros
//! ([`sliced_ell`]). The slice's sums then get the bias and the fused
//! consumers row by row, the last, partial slice in a loop of its own.
//!
//! With `panel = C` on the weight (`analyze-sparsity`), CSR and N:M run
//! panel by panel: the row pointers are `%w.rowptr[kp, j]` over panels of
//! `C` columns, the product loops over the panels outermost, each row's
//! first accumulator starts from the partial sum in `y.t` after the first
//! panel, and the fused consumers run after the last. A panel of `x.t` then
//! stays in the L1 cache while every output row reads it.
//!
//! Padding slots point at a column the row already reads (column 0 for an
//! N:M group with no nonzero), so they cost a multiply-add but rarely an
//! extra cache line. The verifier bounds every access
//! through the index arrays by their values.

use super::build::*;
use super::{Lowering, PASS};
use crate::pass::PassError;
use crate::sparse_cost::{batch_outer_fits, sell_slots, CSR_GROUP, SELL_GROUP};
use lopper_ir::graph::param::Param;
use lopper_ir::graph::{NodeIndex, SparseFormat, Sparsity};
use lopper_ir::loops::{BinOp, Buffer, BufferKind, Expr, LoopKind, ScalarType, Stmt};
use lopper_ir::types::DType;
use lopper_ir::{Dim, Op, Shape, Tensor, TensorType};

/// A loop `for %var in lo..hi`.
fn range(var: &str, lo: Expr, hi: Expr, body: Vec<Stmt>) -> Stmt {
    Stmt::For {
        var: var.to_string(),
        lo,
        hi,
        kind: LoopKind::Serial,
        body,
    }
}

fn zero_lets(names: &[String]) -> Vec<Stmt> {
    names
        .iter()
        .map(|a| Stmt::Let {
            var: a.clone(),
            ty: ScalarType::F32,
            init: Expr::Float(0.0),
        })
        .collect()
}

fn fma_into(acc: &str, a: Expr, b: Expr) -> Stmt {
    Stmt::Assign {
        var: acc.to_string(),
        value: Expr::Fma(Box::new(a), Box::new(b), Box::new(Expr::var(acc))),
    }
}

/// Accumulator locals `acc0`, `acc1`, ...
fn accumulators(count: usize) -> Vec<String> {
    (0..count).map(|a| format!("acc{a}")).collect()
}

/// The groups of CSR row `j`: `ptr[at.., j]..ptr[at.., j + 1]` (`at`: the
/// panel, when the row pointers have one row per panel).
fn csr_row_range(ptr: &str, at: &[Expr]) -> (Expr, Expr) {
    let index = |j: Expr| at.iter().cloned().chain([j]).collect();
    (
        load(ptr, index(Expr::var("j"))),
        load(ptr, index(add(Expr::var("j"), int(1)))),
    )
}

/// The groups of N:M row `j`: every row has `per_row` of them.
fn nm_row_range(per_row: usize) -> (Expr, Expr) {
    (
        mul(Expr::var("j"), int(per_row)),
        mul(add(Expr::var("j"), int(1)), int(per_row)),
    )
}

/// The loop over the groups `p in lo..hi` of a CSR or N:M row: slot `s`
/// of a group adds its weight times `read(its column)` into accumulator
/// `names[s mod names.len()]`.
fn group_loop(
    values: &str,
    columns: &str,
    names: &[String],
    (lo, hi): (Expr, Expr),
    read: impl Fn(Expr) -> Expr,
) -> Stmt {
    let slots = (0..CSR_GROUP)
        .map(|s| {
            let col = load(columns, vec![Expr::var("p"), int(s)]);
            fma_into(
                &names[s % names.len()],
                load(values, vec![Expr::var("p"), int(s)]),
                read(col),
            )
        })
        .collect();
    range("p", lo, hi, slots)
}

/// The accumulators of BSR block row `jb`, one per row of an `R x C` block
/// (`names`), zeroed, then summed over the row's blocks: each tap adds its
/// weight times `read(its column)`.
fn block_row(
    values: &str,
    (blockptr, blockcol): (&str, &str),
    names: &[String],
    block_cols: usize,
    read: impl Fn(Expr) -> Expr,
) -> Vec<Stmt> {
    let column = add(
        mul(load(blockcol, vec![Expr::var("b")]), int(block_cols)),
        Expr::var("c"),
    );
    let taps = names
        .iter()
        .enumerate()
        .map(|(row, a)| {
            fma_into(
                a,
                load(values, vec![Expr::var("b"), int(row), Expr::var("c")]),
                read(column.clone()),
            )
        })
        .collect();
    let mut body = zero_lets(names);
    body.push(range(
        "b",
        load(blockptr, vec![Expr::var("jb")]),
        load(blockptr, vec![add(Expr::var("jb"), int(1))]),
        vec![for_loop("c", int(block_cols), taps)],
    ));
    body
}

/// The body of slice `%s` of a sliced-ELLPACK product whose first `count`
/// rows are stored: four vector accumulators (one per slot of a group),
/// each slot adding its weights times `permute(window(its start), its
/// lanes)`, the activations its rows read; then the slice's sums through a
/// local array, and `finish(value, j)` for each stored row `j`.
fn sell_slice(
    values: &str,
    (sliceptr, start, lanes): (&str, &str, &str),
    slice: usize,
    count: usize,
    window: impl Fn(Expr) -> Expr,
    finish: impl Fn(Expr, Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let vector = ScalarType::Vector(slice as u32);
    let names = accumulators(SELL_GROUP);
    let mut body: Vec<Stmt> = names
        .iter()
        .map(|a| Stmt::Let {
            var: a.clone(),
            ty: vector,
            init: Expr::Broadcast(Box::new(Expr::Float(0.0)), slice as u32),
        })
        .collect();
    let slots = names
        .iter()
        .enumerate()
        .map(|(q, a)| {
            let at = |lane: Option<Expr>| {
                let mut index = vec![Expr::var("p"), int(q)];
                index.extend(lane);
                index
            };
            let weights = Expr::VLoad {
                buffer: values.to_string(),
                indices: at(Some(int(0))),
                lanes: slice as u32,
            };
            let picked = Expr::Permute {
                table: Box::new(window(load(start, at(None)))),
                buffer: lanes.to_string(),
                indices: at(Some(int(0))),
            };
            fma_into(a, weights, picked)
        })
        .collect();
    let s = Expr::var("s");
    body.push(range(
        "p",
        load(sliceptr, vec![s.clone()]),
        load(sliceptr, vec![add(s.clone(), int(1))]),
        slots,
    ));
    body.push(Stmt::Alloc {
        name: "sums".into(),
        dims: vec![slice],
    });
    body.push(Stmt::VStore {
        buffer: "sums".into(),
        indices: vec![int(0)],
        value: sum(&names),
        lanes: slice as u32,
    });
    let j = add(mul(s, int(slice)), Expr::var("l"));
    body.push(for_loop(
        "l",
        int(count),
        finish(load("sums", vec![Expr::var("l")]), j),
    ));
    body
}

/// The start of a sparse product kernel's name: `csr`, `nm`, `bsr` or
/// `sell`.
fn kernel_prefix(format: SparseFormat) -> &'static str {
    match format {
        SparseFormat::Csr => "csr",
        SparseFormat::NM { .. } => "nm",
        SparseFormat::Bsr { .. } => "bsr",
        SparseFormat::Sell { .. } => "sell",
        SparseFormat::Dense => "dense",
    }
}

/// `(a0 + a1) + (a2 + a3)`: a balanced sum.
fn sum(names: &[String]) -> Expr {
    match names {
        [one] => Expr::var(one),
        _ => {
            let (l, r) = names.split_at(names.len() / 2);
            Expr::bin(BinOp::Add, sum(l), sum(r))
        }
    }
}

/// The stored form of a weight: its values and index arrays, and how many
/// rows the transposed buffers need.
struct Stored {
    values: Tensor,
    indices: Vec<(&'static str, Vec<usize>, Vec<i64>)>,
    /// Rows of `y.t` (output features, padded to whole blocks).
    out_rows: usize,
    /// Rows of `x.t` (the reduction, padded to whole blocks).
    in_rows: usize,
}

/// Rows of `[rows, cols]` as groups of [`CSR_GROUP`] (value, column) slots,
/// `slots_of` giving each row's groups of columns; a short group is padded
/// with zero weights at its last column (column 0 if it is empty).
/// Returns the values, the columns and the row pointers (in groups).
fn grouped_rows(
    rows: usize,
    cols: usize,
    data: &[f32],
    slots_of: impl Fn(&[f32]) -> Vec<Vec<usize>>,
) -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let group = CSR_GROUP;
    let (mut values, mut columns, mut rowptr) = (Vec::new(), Vec::new(), vec![0i64]);
    for r in 0..rows {
        let row = &data[r * cols..(r + 1) * cols];
        for slots in slots_of(row) {
            let pad = slots.last().copied().unwrap_or(0);
            for s in 0..group {
                let c = slots.get(s).copied();
                values.push(c.map_or(0.0, |c| row[c]));
                columns.push(c.unwrap_or(pad) as i64);
            }
        }
        rowptr.push((columns.len() / group) as i64);
    }
    (values, columns, rowptr)
}

/// CSR by panels of `panel` columns: for each panel, each row's nonzeros
/// in it as groups of [`CSR_GROUP`], and row pointers `[panels, rows + 1]`
/// (in groups, counted from the first panel's first group), or `[rows +
/// 1]` when one panel holds every column (plain CSR).
fn csr_by_panels(w: &Tensor, panel: usize) -> Stored {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let panels = cols.div_ceil(panel).max(1);
    let (mut values, mut columns, mut rowptr) = (Vec::new(), Vec::new(), Vec::new());
    for kp in 0..panels {
        let range = kp * panel..((kp + 1) * panel).min(cols);
        let (v, c, ptr) = grouped_rows(rows, cols, &w.data, |row| {
            let nz: Vec<usize> = range.clone().filter(|&c| row[c] != 0.0).collect();
            nz.chunks(CSR_GROUP).map(<[usize]>::to_vec).collect()
        });
        let before = (columns.len() / CSR_GROUP) as i64;
        rowptr.extend(ptr.iter().map(|p| p + before));
        values.extend(v);
        columns.extend(c);
    }
    // An all-zero weight still gets one (never visited) group.
    if columns.is_empty() {
        values = vec![0.0; CSR_GROUP];
        columns = vec![0; CSR_GROUP];
    }
    let groups = columns.len() / CSR_GROUP;
    Stored {
        values: Tensor {
            shape: vec![groups, CSR_GROUP],
            data: values,
        },
        indices: vec![
            (
                "rowptr",
                if panels == 1 {
                    vec![rows + 1]
                } else {
                    vec![panels, rows + 1]
                },
                rowptr,
            ),
            ("colidx", vec![groups, CSR_GROUP], columns),
        ],
        out_rows: rows,
        in_rows: cols,
    }
}

fn build(w: &Tensor, format: SparseFormat, panel: Option<usize>) -> Stored {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    if let (Some(columns), SparseFormat::Csr | SparseFormat::NM { .. }) = (panel, format) {
        // N:M panels end on group boundaries, so that each holds whole
        // groups of m (its rows then have the same length but for the
        // padding of the last group; the row pointers say where).
        let columns = match format {
            SparseFormat::NM { m, .. } => (columns / m * m).max(m),
            _ => columns,
        };
        if columns < cols {
            return csr_by_panels(w, columns);
        }
    }
    match format {
        SparseFormat::Csr => csr_by_panels(w, cols.max(1)),
        SparseFormat::NM { n, m } => {
            // Every row: n slots per group of m, in groups of CSR_GROUP slots.
            let slots_per_row = cols.div_ceil(m) * n;
            let groups_per_row = slots_per_row.div_ceil(CSR_GROUP);
            let (values, columns, _) = grouped_rows(rows, cols, &w.data, |row| {
                let nz: Vec<usize> = (0..row.len()).filter(|&c| row[c] != 0.0).collect();
                let mut groups: Vec<Vec<usize>> =
                    nz.chunks(CSR_GROUP).map(<[usize]>::to_vec).collect();
                groups.resize(groups_per_row, Vec::new());
                groups
            });
            Stored {
                values: Tensor {
                    shape: vec![rows * groups_per_row, CSR_GROUP],
                    data: values,
                },
                indices: vec![("colidx", vec![rows * groups_per_row, CSR_GROUP], columns)],
                out_rows: rows,
                in_rows: cols,
            }
        }
        SparseFormat::Bsr { rows: br, cols: bc } => {
            let (block_rows, block_cols) = (rows.div_ceil(br), cols.div_ceil(bc));
            let (mut values, mut blockcol, mut blockptr) = (Vec::new(), Vec::new(), vec![0i64]);
            for b in 0..block_rows {
                for c in 0..block_cols {
                    let at = |r: usize, k: usize| {
                        let (r, k) = (b * br + r, c * bc + k);
                        if r < rows && k < cols {
                            w.data[r * cols + k]
                        } else {
                            0.0
                        }
                    };
                    let block: Vec<f32> = (0..br)
                        .flat_map(|r| (0..bc).map(move |k| (r, k)))
                        .map(|(r, k)| at(r, k))
                        .collect();
                    if block.iter().any(|&v| v != 0.0) {
                        values.extend(block);
                        blockcol.push(c as i64);
                    }
                }
                blockptr.push(blockcol.len() as i64);
            }
            let blocks = blockcol.len();
            Stored {
                values: Tensor {
                    shape: vec![blocks.max(1), br, bc],
                    data: if blocks == 0 {
                        vec![0.0; br * bc]
                    } else {
                        values
                    },
                },
                indices: vec![
                    ("blockptr", vec![block_rows + 1], blockptr),
                    ("blockcol", vec![blocks.max(1)], {
                        let mut v = blockcol;
                        v.resize(blocks.max(1), 0);
                        v
                    }),
                ],
                out_rows: block_rows * br,
                in_rows: block_cols * bc,
            }
        }
        SparseFormat::Sell { slice } => sliced_ell(w, slice),
        SparseFormat::Dense => unreachable!("dense weights take the dense nest"),
    }
}

/// Sliced ELLPACK with slices of `slice` rows: for each slice, the slots
/// of [`sell_slots`], each one weight per row of the slice (zero for a row
/// it takes nothing from), the lane of its column within the slot's window
/// of `slice` columns (`i8`), and the window's first column (`cols >=
/// slice`). A slice's slots come in groups of [`SELL_GROUP`], padded with
/// zero weights; `sliceptr[s]` is the first group of slice `s`.
fn sliced_ell(w: &Tensor, slice: usize) -> Stored {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let (mut values, mut lanes, mut starts, mut ptr) =
        (Vec::new(), Vec::new(), Vec::new(), vec![0i64]);
    for s in 0..rows.div_ceil(slice) {
        for (start, taken) in sell_slots(w, slice, s) {
            for (l, c) in taken.into_iter().enumerate() {
                values.push(c.map_or(0.0, |c| w.data[(s * slice + l) * cols + c]));
                lanes.push(c.map_or(0, |c| (c - start) as i64));
            }
            starts.push(start as i64);
        }
        while starts.len() % SELL_GROUP != 0 || starts.is_empty() {
            values.extend(std::iter::repeat_n(0.0, slice));
            lanes.extend(std::iter::repeat_n(0, slice));
            starts.push(0);
        }
        ptr.push((starts.len() / SELL_GROUP) as i64);
    }
    let groups = starts.len() / SELL_GROUP;
    Stored {
        values: Tensor {
            shape: vec![groups, SELL_GROUP, slice],
            data: values,
        },
        indices: vec![
            ("sliceptr", vec![ptr.len()], ptr),
            ("start", vec![groups, SELL_GROUP], starts),
            ("lanes", vec![groups, SELL_GROUP, slice], lanes),
        ],
        out_rows: rows.div_ceil(slice) * slice,
        in_rows: cols,
    }
}

/// `[first, rows..]`: an index into a transposed buffer.
fn transposed_index(first: Expr, rows: &[Expr]) -> Vec<Expr> {
    let mut index = vec![first];
    index.extend(rows.iter().cloned());
    index
}

impl Lowering<'_> {
    /// A scratch buffer `[rows_t, lead..]` named after `wanted`: a value
    /// with its features (or reduction) first and its rows last.
    fn add_transposed(&mut self, wanted: &str, rows_t: usize, lead: &[Dim]) -> String {
        let mut dims = vec![Dim::Static(rows_t)];
        dims.extend(lead.iter().cloned());
        self.add_buffer(
            &format!("{wanted}.t"),
            BufferKind::Scratch,
            &TensorType::f32(Shape(dims)),
            None,
        )
    }

    /// What `analyze-sparsity` recorded on a linear layer's weight (its
    /// format, panels and accumulators), if anything.
    fn weight_sparsity(&self, n: NodeIndex) -> Option<Sparsity> {
        let w = *self.g.operands(n).get(1)?;
        match &self.g.node(w).op {
            Op::Param(Param {
                sparsity: Some(s), ..
            }) => Some(*s),
            _ => None,
        }
    }

    /// The sparse format `analyze-sparsity` chose for a linear layer's
    /// weight, if not dense.
    pub(super) fn sparse_format(&self, n: NodeIndex) -> Option<SparseFormat> {
        if !matches!(self.g.node(n).op, Op::Linear) {
            return None;
        }
        let w = *self.g.operands(n).get(1)?;
        match &self.g.node(w).op {
            Op::Param(Param {
                sparsity: Some(s), ..
            }) if s.format != SparseFormat::Dense && self.g.node(w).ty.shape.rank() == 2 => {
                Some(s.format)
            }
            _ => None,
        }
    }

    /// Whether sparse linear `n` runs one batch row at a time:
    /// `analyze-sparsity` asked for it and the format fits the weight.
    fn by_batch_row(&self, n: NodeIndex) -> bool {
        let (Some(format), Some(s)) = (self.sparse_format(n), self.weight_sparsity(n)) else {
            return false;
        };
        let w = self.g.operands(n)[1];
        if let SparseFormat::Sell { .. } = format {
            return true;
        }
        s.batch_outer
            && (self.g.node(w).ty.shape.as_static())
                .is_some_and(|shape| batch_outer_fits(format, &shape))
    }

    fn add_constant(&mut self, wanted: &str, shape: Vec<usize>, data: ConstantData) -> String {
        let name = self.unique(wanted);
        let (dtype, data, index_data) = match data {
            ConstantData::Values(t) => (DType::F32, Some(Param::literal(t)), None),
            ConstantData::Indices(v) => (DType::narrowest_holding(&v), None, Some(v)),
        };
        self.module.buffers.push(Buffer {
            name: name.clone(),
            kind: BufferKind::Const,
            ty: TensorType {
                dtype,
                shape: Shape::from_static(&shape),
            },
            data,
            index_data,
            view_of: None,
        });
        name
    }

    /// The chain tail `tail` can hand its value to its only user, a sparse
    /// linear layer, transposed: the user reads `[features, rows..]` as is.
    fn stays_transposed(&self, tail: NodeIndex) -> bool {
        let g = self.g;
        let users = g.users(tail);
        let [user] = users[..] else { return false };
        if g.is_output(tail) || g.operands(user)[0] != tail {
            return false;
        }
        if self.by_batch_row(user) {
            return false;
        }
        match self.sparse_format(user) {
            Some(SparseFormat::Bsr { cols, .. }) => {
                let w = g.operands(user)[1];
                g.node(w).ty.shape.0[1]
                    .as_static()
                    .is_some_and(|k| k % cols == 0)
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Pushes the kernels of sparse linear `n` (transpose, product) and
    /// returns the body of the finishing kernel, which writes `out`, or
    /// `None` when the product kernel finishes the value itself (it stays
    /// transposed for the next sparse layer).
    pub(super) fn lower_sparse_linear(
        &mut self,
        n: NodeIndex,
        out: &str,
        chain: &[NodeIndex],
        format: SparseFormat,
    ) -> Result<Option<Vec<Stmt>>, PassError> {
        let g = self.g;
        let (x, _) = self.operand(n, 0);
        let w = g.operands(n)[1];
        let weight = match &g.node(w).op {
            Op::Param(p) => p.data.clone(),
            _ => unreachable!("sparse_format checked the weight is a param"),
        };
        let wname = g.node(w).name.clone();
        if let SparseFormat::NM { n: keep, m } = format {
            if !lopper_ir::graph::sparsity::conforms_to_nm(&weight, keep, m) {
                return Err(PassError::at(
                    PASS,
                    &wname,
                    format!("the weight is marked {keep}:{m} but has more nonzeros in a group"),
                ));
            }
        }
        if let SparseFormat::Sell { slice } = format {
            if weight.shape[1] < slice {
                return Err(PassError::at(
                    PASS,
                    &wname,
                    format!(
                        "the weight is marked {format} but has {} columns, fewer than a window of {slice}",
                        weight.shape[1]
                    ),
                ));
            }
        }
        if self.by_batch_row(n) {
            self.lower_sparse_by_batch_row(n, out, chain, format, &weight, &wname);
            return Ok(None);
        }
        let stored = build(
            &weight,
            format,
            self.weight_sparsity(n).and_then(|s| s.panel),
        );
        // Panels of the reduction, when the row pointers have one row per
        // panel: the kernel runs panel by panel, the accumulators starting
        // from the partial sums in y.t after the first.
        let panels = stored
            .indices
            .iter()
            .find(|(name, shape, _)| *name == "rowptr" && shape.len() == 2)
            .map(|(_, shape, _)| shape[0]);
        let dims = g.node(n).ty.shape.0.clone();
        let r = dims.len();
        let lead = &dims[..r - 1];
        let rows = vars("i", r - 1);
        let (features, reduction) = (weight.shape[0], weight.shape[1]);
        let at_t = |k: Expr| transposed_index(k, &rows);
        let producer = g.operands(n)[0];
        let x_t = match self.transposed.get(&producer) {
            Some(name) => name.clone(),
            None => self.transpose_input(&x, lead, reduction, stored.in_rows),
        };
        // The product into y.t[j, rows..]; finished in place when the value
        // stays transposed (CSR and N:M, which store one feature at a time).
        let tail = chain.last().copied().unwrap_or(n);
        let in_place = self.stays_transposed(tail) && !matches!(format, SparseFormat::Bsr { .. });
        let y_t = self.add_transposed(&g.node(tail).name, stored.out_rows, lead);
        let idx = vars("i", r);
        // Stores `value` of feature `j` (an expression) at y.t[j, rows..],
        // finished there when in place.
        let store = |me: &Self, value: Expr, j: Expr| -> Vec<Stmt> {
            let at = at_t(j.clone());
            if !in_place {
                return vec![Stmt::Store {
                    buffer: y_t.clone(),
                    indices: at,
                    value,
                }];
            }
            let mut out_idx = idx.clone();
            out_idx[r - 1] = j.clone();
            let value = match g.operands(n).get(2) {
                Some(_) => {
                    let (b, _) = me.operand(n, 2);
                    Expr::bin(BinOp::Add, value, load(&b, vec![j]))
                }
                None => value,
            };
            let mut stmts = me.finish(value, &y_t, &out_idx, chain, n);
            if let Some(Stmt::Store { indices, .. }) = stmts.last_mut() {
                *indices = at;
            }
            stmts
        };
        let per_row = stored.values.shape[0] / features.max(1);
        let (values, index_names) = self.add_stored(&wname, stored.values, stored.indices);
        let (kernel, loop_var, extent, body) = match format {
            SparseFormat::Csr | SparseFormat::NM { .. } => {
                let columns = index_names.last().expect("colidx").clone();
                // Slot `s` into accumulator `s mod count`.
                let count = self
                    .weight_sparsity(n)
                    .and_then(|s| s.accumulators)
                    .unwrap_or(CSR_GROUP);
                let names = accumulators(count.clamp(1, CSR_GROUP));
                let bounds = match (format, panels) {
                    (_, Some(_)) => csr_row_range(&index_names[0], &[Expr::var("kp")]),
                    (SparseFormat::Csr, None) => csr_row_range(&index_names[0], &[]),
                    _ => nm_row_range(per_row),
                };
                let mut body = zero_lets(&names);
                if panels.is_some() {
                    body.push(Stmt::If {
                        cond: Expr::bin(BinOp::Gt, Expr::var("kp"), int(0)),
                        then: vec![Stmt::Assign {
                            var: names[0].clone(),
                            value: load(&y_t, at_t(Expr::var("j"))),
                        }],
                        otherwise: vec![],
                    });
                }
                body.push(group_loop(&values, &columns, &names, bounds, |col| {
                    load(&x_t, at_t(col))
                }));
                let partial = Stmt::Store {
                    buffer: y_t.clone(),
                    indices: at_t(Expr::var("j")),
                    value: sum(&names),
                };
                match panels {
                    // Finished after the last panel only.
                    Some(count) if in_place => body.push(Stmt::If {
                        cond: Expr::bin(BinOp::Eq, Expr::var("kp"), int(count - 1)),
                        then: store(self, sum(&names), Expr::var("j")),
                        otherwise: vec![partial],
                    }),
                    Some(_) => body.push(partial),
                    None => body.extend(store(self, sum(&names), Expr::var("j"))),
                }
                (kernel_prefix(format), "j", features, body)
            }
            SparseFormat::Bsr { rows: br, cols: bc } => {
                let (ptr, blockcol) = (&index_names[0], &index_names[1]);
                let names = accumulators(br);
                let mut body = block_row(&values, (ptr, blockcol), &names, bc, |col| {
                    load(&x_t, at_t(col))
                });
                for (row, a) in names.iter().enumerate() {
                    let j = add(mul(Expr::var("jb"), int(br)), int(row));
                    body.extend(store(self, Expr::var(a), j));
                }
                (kernel_prefix(format), "jb", stored.out_rows / br, body)
            }
            SparseFormat::Sell { .. } => unreachable!("sliced ELLPACK runs by batch row"),
            SparseFormat::Dense => unreachable!("dense weights take the dense nest"),
        };
        let mut product = for_loop(loop_var, int(extent), nest("i", lead, body));
        if let Some(count) = panels {
            product = for_loop("kp", int(count), vec![product]);
        }
        let mut name: Vec<&str> = vec![kernel, "linear"];
        if in_place {
            name.extend(chain.iter().map(|&c| g.node(c).op.name()));
        }
        self.push_kernel(&name.join("_"), vec![product]);
        if in_place {
            self.transposed.insert(tail, y_t);
            return Ok(None);
        }
        // The finish: y[rows.., j] = y.t[j, rows..] (+ bias), then the chain,
        // features outermost: the rows of y.t are read along, and the
        // lines of y being written stay in cache from one feature to the
        // next (as in the transpose of the input).
        let j = idx[r - 1].clone();
        let mut value = load(&y_t, at_t(j.clone()));
        if g.operands(n).len() == 3 {
            let (b, _) = self.operand(n, 2);
            value = Expr::bin(BinOp::Add, value, load(&b, vec![j]));
        }
        let feature = format!("i{}", r - 1);
        Ok(Some(vec![for_loop(
            &feature,
            dim_expr(&dims[r - 1]),
            nest("i", lead, self.finish(value, out, &idx, chain, n)),
        )]))
    }

    /// Adds a stored weight's values and index arrays as constants named
    /// after the weight; returns their buffer names.
    fn add_stored(
        &mut self,
        wname: &str,
        values: Tensor,
        indices: Vec<(&'static str, Vec<usize>, Vec<i64>)>,
    ) -> (String, Vec<String>) {
        let values = self.add_constant(
            &format!("{wname}.values"),
            values.shape.clone(),
            ConstantData::Values(values),
        );
        let index_names = indices
            .into_iter()
            .map(|(suffix, shape, data)| {
                self.add_constant(
                    &format!("{wname}.{suffix}"),
                    shape,
                    ConstantData::Indices(data),
                )
            })
            .collect();
        (values, index_names)
    }

    /// Pushes the one kernel of sparse linear `n` for a batch of fewer rows
    /// than a vector tile (`batch_outer`): for each row of the batch, each
    /// output feature (block row for BSR) sums its stored weights times the
    /// activations they pick out of `x[rows.., k]`, adds the bias, runs the
    /// fused chain and stores `out[rows.., j]`. No transposes: the
    /// activations and the result keep their layout, and the reduction
    /// reads one row of `x`, which stays in the L1 cache.
    fn lower_sparse_by_batch_row(
        &mut self,
        n: NodeIndex,
        out: &str,
        chain: &[NodeIndex],
        format: SparseFormat,
        weight: &Tensor,
        wname: &str,
    ) {
        let g = self.g;
        let (x, _) = self.operand(n, 0);
        let stored = build(weight, format, None);
        let features = weight.shape[0];
        let per_row = stored.values.shape[0] / features.max(1);
        let (values, index_names) = self.add_stored(wname, stored.values, stored.indices);
        let dims = g.node(n).ty.shape.0.clone();
        let lead = &dims[..dims.len() - 1];
        let rows = vars("i", lead.len());
        let at_row = |k: Expr| {
            let mut index = rows.clone();
            index.push(k);
            index
        };
        let bias = g.operands(n).get(2).map(|_| self.operand(n, 2).0);
        // Finishes `value` of feature `j` in the local `local`.
        let finish = |me: &Self, local: &str, value: Expr, j: Expr| {
            let value = match &bias {
                Some(b) => Expr::bin(BinOp::Add, value, load(b, vec![j.clone()])),
                None => value,
            };
            me.finish_in(local, value, out, &at_row(j), chain, n)
        };
        // The loops under the batch rows' nest.
        let loops = match format {
            SparseFormat::Sell { slice } => {
                // Whole slices, then the partial one in a loop of its own.
                let (full, rest) = (features / slice, features % slice);
                let mut loops = Vec::new();
                for (slices, count) in [(0..full, slice), (full..full + 1, rest)] {
                    if !slices.is_empty() && count > 0 {
                        let body = sell_slice(
                            &values,
                            (&index_names[0], &index_names[1], &index_names[2]),
                            slice,
                            count,
                            |start| Expr::VLoad {
                                buffer: x.clone(),
                                indices: at_row(start),
                                lanes: slice as u32,
                            },
                            |value, j| finish(self, "r", value, j),
                        );
                        loops.push(range("s", int(slices.start), int(slices.end), body));
                    }
                }
                loops
            }
            SparseFormat::Csr | SparseFormat::NM { .. } => {
                let columns = index_names.last().expect("colidx");
                let names = accumulators(CSR_GROUP);
                let bounds = match format {
                    SparseFormat::Csr => csr_row_range(&index_names[0], &[]),
                    _ => nm_row_range(per_row),
                };
                let mut body = zero_lets(&names);
                body.push(group_loop(&values, columns, &names, bounds, |col| {
                    load(&x, at_row(col))
                }));
                body.extend(finish(self, "r", sum(&names), Expr::var("j")));
                vec![for_loop("j", int(features), body)]
            }
            SparseFormat::Bsr { rows: br, cols: bc } => {
                // by_batch_row: the blocks tile the weight, so no padded
                // block reads past x's row.
                let (ptr, blockcol) = (&index_names[0], &index_names[1]);
                let names = accumulators(br);
                let mut body = block_row(&values, (ptr, blockcol), &names, bc, |col| {
                    load(&x, at_row(col))
                });
                for (row, a) in names.iter().enumerate() {
                    let j = add(mul(Expr::var("jb"), int(br)), int(row));
                    body.extend(finish(self, &format!("r{row}"), Expr::var(a), j));
                }
                vec![for_loop("jb", int(features / br), body)]
            }
            SparseFormat::Dense => unreachable!("dense weights take the dense nest"),
        };
        let mut name: Vec<&str> = vec![kernel_prefix(format), "linear"];
        name.extend(chain.iter().map(|&c| g.node(c).op.name()));
        self.push_kernel(&name.join("_"), nest("i", lead, loops));
    }

    /// Pushes a kernel copying `x[rows.., k]` to a new `x.t[k, rows..]` with
    /// zero rows from `reduction` to `rows_t`; returns the new buffer. The
    /// reduction is the outer loop, so the stores run along a row.
    fn transpose_input(
        &mut self,
        x: &str,
        lead: &[Dim],
        reduction: usize,
        rows_t: usize,
    ) -> String {
        let x_t = self.add_transposed(x, rows_t, lead);
        let rows = vars("i", lead.len());
        let at_t = transposed_index(Expr::var("k"), &rows);
        let mut x_index = rows.clone();
        x_index.push(Expr::var("k"));
        let mut copy = vec![for_loop(
            "k",
            int(reduction),
            nest(
                "i",
                lead,
                vec![Stmt::Store {
                    buffer: x_t.clone(),
                    indices: at_t.clone(),
                    value: load(x, x_index),
                }],
            ),
        )];
        if rows_t > reduction {
            copy.push(range(
                "k",
                int(reduction),
                int(rows_t),
                nest(
                    "i",
                    lead,
                    vec![Stmt::Store {
                        buffer: x_t.clone(),
                        indices: at_t,
                        value: Expr::Float(0.0),
                    }],
                ),
            ));
        }
        self.push_kernel("transpose", copy);
        x_t
    }
}

enum ConstantData {
    Values(Tensor),
    Indices(Vec<i64>),
}
