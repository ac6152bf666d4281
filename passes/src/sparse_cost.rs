//! The cost model that picks a linear layer's kernel: dense, CSR, BSR, N:M
//! or sliced ELLPACK.
//!
//! Each format's cost is the number of multiply-adds it performs (stored
//! values, padding included) times its measured cost per multiply-add
//! relative to the dense kernel's, plus a fixed cost per output row
//! ([`relative_costs`]); the cheapest wins.
//! The relative costs depend on the backend's vector width and on whether
//! a call has enough rows (batch) to fill the sparse kernel's vector tiles;
//! `analyze-sparsity{rows=N}` says how many to expect (1 by default: a
//! compiled library is tuned for latency; `bench` and `run` pass the bound
//! batch). They come from `benches/sparse_layers.py` on this machine and
//! give the break-even densities in `docs/pruning.md`: CSR pays below
//! `1 / csr`, BSR below `1 / bsr` of its blocks occupied, N:M when
//! `n / m < 1 / nm`. Only `linear` layers have sparse kernels.

use lopper_ir::graph::sparsity::{block_occupancy, conforms_to_nm, matrix_view};
use lopper_ir::graph::SparseFormat;
use lopper_ir::types::DType;
use lopper_ir::Tensor;

/// Time per stored multiply-add of each sparse kernel, relative to a
/// multiply-add of the dense kernel, for one target and batch regime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelativeCosts {
    /// CSR.
    pub csr: f64,
    /// BSR (4x4 blocks).
    pub bsr: f64,
    /// N:M.
    pub nm: f64,
    /// Fixed cost per output row (per block row for BSR), in dense
    /// multiply-adds: setting up a row's loops, its unpredictable exit.
    pub row: f64,
    /// Sliced ELLPACK, per stored lane (padding included), where it is
    /// offered: a batch row at a time, slices of `lanes` rows.
    pub sell: Option<f64>,
    /// Fixed cost per slice of sliced ELLPACK, in dense multiply-adds.
    pub slice: f64,
    /// Vector lanes of the target: the slice height of sliced ELLPACK.
    pub lanes: u32,
}

/// The measured relative costs (`benches/sparse_layers.py`, medians on
/// this machine, docs/pruning.md). With fewer rows than one vector tile
/// the sparse kernels run a batch row at a time: CSR, BSR and N:M scalar,
/// while the dense one is still vectorized along the reduction, so they
/// pay much later (below about 12% dense); sliced ELLPACK, vectorized
/// across a slice of rows, pays from half dense on LLVM. With a
/// batch, LLVM's dense kernels are faster than Cranelift's, so its
/// break-even densities are lower.
pub fn relative_costs(lanes: u32, rows: usize) -> RelativeCosts {
    let vectorized = fills_vector_tile(lanes, rows);
    let costs = |csr, bsr, nm, row| RelativeCosts {
        csr,
        bsr,
        nm,
        row,
        sell: None,
        slice: 0.0,
        lanes,
    };
    let with_sell = |c: RelativeCosts, sell, slice| RelativeCosts {
        sell: Some(sell),
        slice,
        ..c
    };
    match (lanes <= 4, vectorized) {
        // Cranelift, 128-bit vectors, a batch row at a time (no
        // transposes; session 11, Zen 4): least squares over the medians of
        // fc1 at 50-95% (CSR: 6.8 per stored value and 24 per row), 2:4
        // and 4x4 blocks at 75% and 90%. Sliced ELLPACK (session 12; slices
        // and windows of 4, a byte shuffle per slot): 3.7 per stored lane
        // and 166 per slice, least squares over the medians of fc1 at
        // 50-95%, 2:4, 4x4 blocks and fc2; it wins on 4x4 blocks only.
        (true, false) => with_sell(costs(6.8, 5.0, 6.7, 24.0), 3.7, 166.0),
        // A batch that fills tiles of 8 vectors, each group's slots into
        // one accumulator (session 9; fastest calls of fc1 at 50-95%, 2:4
        // and 4x4 blocks at 75-90%, fc2 at 70-90%): CSR 1.25 per stored
        // multiply-add, between the 1.47 of 90% and 95% (28 per row) and
        // the 1.2 of 50% with panels; BSR 0.87 of CSR's time on the same
        // blocks; N:M 3% under CSR at 2:4.
        (true, true) if slot_accumulators(lanes, rows).is_some() => costs(1.25, 1.05, 1.2, 28.0),
        (true, true) => costs(2.1, 1.4, 2.1, 30.0),
        // LLVM, 8 or 16 lanes, a batch row at a time: fitted as
        // Cranelift's (session 11); its dense matrix-vector product is
        // faster (fc1 10.2 against 12.2 µs), so every ratio is higher.
        // Sliced ELLPACK (session 12; slices of 16, sliding windows of 16,
        // `vpermd`): 1.17 per stored lane and 400 per slice by least
        // squares over the medians of fc1 at 50-95%, 2:4, 4x4 blocks and
        // fc2 at 70% and 90% (within 15% of each).
        (false, false) => with_sell(costs(7.7, 5.9, 7.6, 39.0), 1.17, 400.0),
        // With panels and the vectorized transposes (session 6): CSR and
        // N:M read their activations from L1; a row costs its set-up once
        // per panel. Refitted in session 8 after tiles of four vectors on
        // AVX-512 (fastest calls of fc1 at 50-95% and 2:4, fc2 at 70% and
        // 90%, BSR to fc1's 4x4 blocks at 75% and 90%): CSR now pays below
        // about 60% dense on fc1, where it paid below half.
        (false, true) => costs(1.42, 1.2, 1.38, 80.0),
    }
}

/// True when `rows` (the batch) fill one vector tile of a sparse kernel
/// (two vectors of `lanes`), which then runs vectorized along the batch
/// over transposed activations; fewer rows run one at a time
/// ([`lopper_ir::graph::Sparsity::batch_outer`]).
pub fn fills_vector_tile(lanes: u32, rows: usize) -> bool {
    rows >= lanes as usize * crate::auto_schedule::SYMBOLIC_COLUMN_VECTORS
}

/// Whether a `[features, reduction]` weight in `format` can run one batch
/// row at a time: CSR, N:M and sliced ELLPACK (which always does) always;
/// BSR when its blocks tile the weight (its padded edge blocks would read
/// past the activations' row and write past the output's).
pub fn batch_outer_fits(format: SparseFormat, shape: &[usize]) -> bool {
    match (format, shape) {
        (SparseFormat::Csr | SparseFormat::NM { .. } | SparseFormat::Sell { .. }, _) => true,
        (SparseFormat::Bsr { rows, cols }, [features, reduction]) => {
            features % rows == 0 && reduction % cols == 0
        }
        _ => false,
    }
}

/// Columns per panel for the CSR and N:M kernels, or `None` for whole
/// rows: with vectors of 8 or 16 lanes and at least one vector tile of rows
/// (two vectors), so many that a panel of the transposed activations
/// (columns x rows floats) fills two thirds of the level-1 data cache of
/// `l1_bytes` (the rest holds the weights and index arrays streaming
/// through), in multiples of 16 and at least 32. A sparse row reads rows of
/// the activations scattered over all of them; a panel keeps the ones it
/// reads in the L1 cache while every output row goes through it, instead
/// of fetching each from L2 once per nonzero. Measured on fc1 at batch 64
/// with LLVM: CSR at 90% 15-19% faster with panels of 196 columns, N:M 2:4
/// 30%; with tiles of four vectors (session 8) N:M 2:4 took 165 µs with
/// panels of 112 columns against 187 µs with 196, CSR at 90% the same with
/// either. With Cranelift's 4 lanes the same panels measured slower, so it
/// keeps whole rows.
pub fn panel_columns(lanes: u32, rows: usize, l1_bytes: usize) -> Option<usize> {
    let vectorized = fills_vector_tile(lanes, rows);
    if (lanes < 8 && slot_accumulators(lanes, rows).is_none()) || !vectorized {
        return None;
    }
    Some((l1_bytes * 2 / 3 / (4 * rows) / 16 * 16).max(32))
}

/// The least density at which a layer runs by panels: sparser rows have
/// so few nonzeros per panel that the rows' set-up costs what the cache
/// saves (the whole LeNet-300-100 at batch 64 with LLVM: 10% dense, 65
/// against 72 µs with panels; 5% dense, 43 against 42 µs). Cranelift's
/// wide tiles lose at 10% dense (174 against 162 µs) and gain at 30% (378
/// against 459 µs) and 50% (585 against 771 µs).
pub fn panel_min_density(lanes: u32) -> f64 {
    if lanes <= 4 {
        0.15
    } else {
        0.075
    }
}

/// Vector tiles of a batch in a CSR or N:M product on Cranelift whose
/// group's slots share one accumulator ([`slot_accumulators`]).
pub const WIDE_COLUMN_VECTORS: usize = 8;

/// Registers the four slots of a CSR or N:M group accumulate into, when
/// not one each: one on Cranelift (4 lanes) for a batch that fills a tile
/// of [`WIDE_COLUMN_VECTORS`]. A stored weight's index, address and
/// broadcast then serve 8 vectors of the batch, not 2 (LeNet-300-100 at
/// batch 64, whole model: CSR at 90% 236 -> 164 µs, N:M 2:4 1.25 -> 0.57
/// ms with panels). A smaller batch keeps four chains, which a batch of
/// one needs: its rows run scalar.
pub fn slot_accumulators(lanes: u32, rows: usize) -> Option<usize> {
    (lanes <= 4 && rows >= lanes as usize * WIDE_COLUMN_VECTORS).then_some(1)
}

/// Values per group of a CSR row: rows are padded to a multiple, and each
/// of the group's slots accumulates into its own register.
pub const CSR_GROUP: usize = 4;

/// A format the user asked for instead of the cost model's choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Forced {
    /// The cost model decides.
    #[default]
    Auto,
    /// N:M with the tightest N for M = 4 or 8 the weight conforms to.
    NM,
    /// Sliced ELLPACK with slices of the target's vector lanes.
    Sell,
    /// This format.
    Format(SparseFormat),
}

/// The chosen format, why, and what it stores.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The format.
    pub format: SparseFormat,
    /// One line of reasoning, for the report.
    pub why: String,
    /// Values the kernel multiplies (zeros of padding and blocks included).
    pub stored_values: u64,
    /// Bytes of values and index arrays it reads.
    pub bytes: u64,
}

/// Stored values and bytes of each format, for a `[rows, cols]` weight.
fn footprint(t: &Tensor, format: SparseFormat) -> (u64, u64) {
    let (rows, cols) = matrix_view(&t.shape);
    match format {
        SparseFormat::Dense => ((rows * cols) as u64, 4 * (rows * cols) as u64),
        SparseFormat::Csr => {
            let stored: usize = (0..rows)
                .map(|r| {
                    let nnz = t.data[r * cols..(r + 1) * cols]
                        .iter()
                        .filter(|&&v| v != 0.0)
                        .count();
                    nnz.div_ceil(CSR_GROUP) * CSR_GROUP
                })
                .sum();
            // f32 values, columns, row pointers (in groups).
            let ptr = index_width(stored / CSR_GROUP);
            (
                stored as u64,
                (4 + index_width(cols)) * stored as u64 + ptr * (rows + 1) as u64,
            )
        }
        SparseFormat::Bsr { rows: br, cols: bc } => {
            let blocks = rows.div_ceil(br) * cols.div_ceil(bc);
            let occupied = (block_occupancy(t, br, bc) * blocks as f64).round() as usize;
            let stored = occupied * br * bc;
            (
                stored as u64,
                4 * stored as u64
                    + index_width(cols.div_ceil(bc)) * occupied as u64
                    + index_width(occupied) * (rows.div_ceil(br) + 1) as u64,
            )
        }
        SparseFormat::NM { n, m } => {
            let stored = rows * cols.div_ceil(m) * n;
            (stored as u64, (4 + index_width(cols)) * stored as u64)
        }
        SparseFormat::Sell { slice } => {
            let slots: usize = (0..rows.div_ceil(slice))
                .map(|s| sell_slots(t, slice, s).len().div_ceil(SELL_GROUP) * SELL_GROUP)
                .sum();
            // f32 values and i8 lane numbers per lane, a window start per
            // slot, slice pointers (in groups).
            (
                (slots * slice) as u64,
                5 * (slots * slice) as u64
                    + index_width(cols) * slots as u64
                    + index_width(slots / SELL_GROUP) * (rows.div_ceil(slice) + 1) as u64,
            )
        }
    }
}

/// Slots per group of a sliced-ELLPACK slice: its slots are padded to a
/// multiple, and each slot of a group accumulates into its own vector.
pub const SELL_GROUP: usize = 4;

/// Columns a sliced-ELLPACK window starts on a multiple of (or of its
/// width, if less): 8 floats, 32 bytes, so that neither half of a 64-byte
/// window load crosses a cache line (on Zen 4 a window at an odd column
/// made fc1's kernel 28% slower, one at 8 columns past a line as fast as
/// an aligned one: `benches/proto/sliding_ell.c` with `-DOFF=1`, `=8`).
pub const SELL_ALIGN: usize = 8;

/// One slot of a sliced-ELLPACK slice: the first column of its window of
/// `slice` columns, and for each lane (row of the slice) the column of the
/// nonzero it takes, if any.
pub type SellSlot = (usize, Vec<Option<usize>>);

/// The slots of slice `s` (rows `s * slice..`) of a sliced-ELLPACK weight
/// `[rows, cols]` (`cols >= slice`), each taking at most one nonzero per
/// row, in column order. A slot's window starts at the leftmost nonzero
/// any row has left, rounded down to [`SELL_ALIGN`] columns (or at `cols -
/// slice`, so that it stays inside the weight), and takes each row's next
/// nonzero if the window holds it. The windows slide with the nonzeros
/// instead of sitting on a grid of `slice` columns: on LeNet-300-100's fc1
/// pruned at random, 19% fewer slots at 90% sparsity, 17% at 95%.
pub fn sell_slots(t: &Tensor, slice: usize, s: usize) -> Vec<SellSlot> {
    let (rows, cols) = matrix_view(&t.shape);
    let mut left: Vec<std::iter::Peekable<std::vec::IntoIter<usize>>> = (s * slice
        ..(s + 1) * slice)
        .map(|r| {
            let nonzeros: Vec<usize> = match r < rows {
                true => (0..cols).filter(|&c| t.data[r * cols + c] != 0.0).collect(),
                false => Vec::new(),
            };
            nonzeros.into_iter().peekable()
        })
        .collect();
    let align = SELL_ALIGN.min(slice);
    let mut slots = Vec::new();
    while let Some(first) = left.iter_mut().filter_map(|l| l.peek().copied()).min() {
        let start = (first / align * align).min(cols - slice);
        let lanes = left
            .iter_mut()
            .map(|l| l.next_if(|&c| c < start + slice))
            .collect();
        slots.push((start, lanes));
    }
    slots
}

/// Bytes per element of an index array whose values reach `max` (the
/// narrowest integer type that holds it, as `lower-to-loops` stores it).
fn index_width(max: usize) -> u64 {
    DType::narrowest_holding(&[max as i64]).bytes() as u64
}

/// The tightest `n:m` (m = 4 or 8) that `t` conforms to with `n < m`.
pub fn tightest_nm(t: &Tensor) -> Option<SparseFormat> {
    [4usize, 8]
        .iter()
        .flat_map(|&m| (1..m).map(move |n| (n, m)))
        .filter(|&(n, m)| conforms_to_nm(t, n, m))
        .min_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
        .map(|(n, m)| SparseFormat::NM { n, m })
}

fn relative_cost(format: SparseFormat, costs: &RelativeCosts) -> f64 {
    match format {
        SparseFormat::Dense => 1.0,
        SparseFormat::Csr => costs.csr,
        SparseFormat::Bsr { .. } => costs.bsr,
        SparseFormat::NM { .. } => costs.nm,
        SparseFormat::Sell { .. } => costs.sell.unwrap_or(costs.csr),
    }
}

/// Chooses the format of a weight; `linear` says whether its layer has
/// sparse kernels, `costs` what each kernel costs on the target.
pub fn choose(
    t: &Tensor,
    linear: bool,
    forced: Forced,
    costs: &RelativeCosts,
) -> Result<Choice, String> {
    let make = |format: SparseFormat, why: String| {
        let (stored_values, bytes) = footprint(t, format);
        Choice {
            format,
            why,
            stored_values,
            bytes,
        }
    };
    if forced == Forced::Auto && t.data.iter().all(|&v| v != 0.0) {
        return Ok(make(SparseFormat::Dense, "no zeros".into()));
    }
    if !linear {
        return Ok(make(
            SparseFormat::Dense,
            "sparse kernels cover linear layers only".into(),
        ));
    }
    let format = match forced {
        Forced::Auto => None,
        Forced::NM => Some(tightest_nm(t).ok_or("the weight is not N:M sparse for M = 4 or 8")?),
        Forced::Sell => Some(SparseFormat::Sell {
            slice: costs.lanes as usize,
        }),
        Forced::Format(f) => Some(f),
    };
    let (rows, cols) = matrix_view(&t.shape);
    if let Some(f) = format {
        match f {
            SparseFormat::NM { n, m } if !conforms_to_nm(t, n, m) => {
                return Err(format!("the weight is not {n}:{m} sparse"));
            }
            SparseFormat::Sell { slice } if cols < slice || t.shape.len() != 2 => {
                return Err(format!(
                    "{f} reads windows of {slice} columns: the weight has {cols}"
                ));
            }
            _ => {}
        }
        return Ok(make(f, "forced".into()));
    }
    let dense_cost = footprint(t, SparseFormat::Dense).0 as f64;
    let rows = rows as f64;
    let row_cost = |f: SparseFormat| match f {
        SparseFormat::Bsr { rows: br, .. } => (rows / br as f64).ceil() * costs.row,
        SparseFormat::Sell { slice } => (rows / slice as f64).ceil() * costs.slice,
        _ => rows * costs.row,
    };
    let mut candidates = vec![SparseFormat::Csr, SparseFormat::Bsr { rows: 4, cols: 4 }];
    candidates.extend(tightest_nm(t));
    let slice = costs.lanes as usize;
    if costs.sell.is_some() && cols >= slice && t.shape.len() == 2 {
        candidates.push(SparseFormat::Sell { slice });
    }
    let costs: Vec<(SparseFormat, f64)> = candidates
        .into_iter()
        .map(|f| {
            (
                f,
                (footprint(t, f).0 as f64 * relative_cost(f, costs) + row_cost(f)) / dense_cost,
            )
        })
        .collect();
    let (best, ratio) = costs
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("candidates are never empty");
    Ok(if ratio < 1.0 {
        make(best, format!("{ratio:.2}x the dense cost"))
    } else {
        make(
            SparseFormat::Dense,
            format!("the cheapest sparse kernel ({best}) costs {ratio:.2}x dense"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(rows: usize, cols: usize, keep: impl Fn(usize, usize) -> bool) -> Tensor {
        let data = (0..rows * cols)
            .map(|i| {
                if keep(i / cols, i % cols) {
                    1.0 + i as f32
                } else {
                    0.0
                }
            })
            .collect();
        Tensor {
            shape: vec![rows, cols],
            data,
        }
    }

    const BATCH: RelativeCosts = RelativeCosts {
        csr: 2.1,
        bsr: 1.4,
        nm: 2.1,
        row: 30.0,
        sell: None,
        slice: 0.0,
        lanes: 4,
    };

    #[test]
    fn dense_weights_stay_dense_and_sparse_ones_do_not() {
        let dense = weight(16, 64, |_, _| true);
        assert_eq!(
            choose(&dense, true, Forced::Auto, &BATCH).unwrap().format,
            SparseFormat::Dense
        );
        let sparse = weight(64, 256, |r, c| (r * 7 + c * 13) % 20 == 0);
        assert_eq!(
            choose(&sparse, true, Forced::Auto, &BATCH).unwrap().format,
            SparseFormat::Csr
        );
        assert_eq!(
            choose(&sparse, false, Forced::Auto, &BATCH).unwrap().format,
            SparseFormat::Dense
        );
        let blocks = weight(64, 256, |r, c| (r / 4 + c / 4) % 4 == 0);
        assert_eq!(
            choose(&blocks, true, Forced::Auto, &BATCH).unwrap().format,
            SparseFormat::Bsr { rows: 4, cols: 4 }
        );
    }

    #[test]
    fn forced_formats_are_checked() {
        let two_of_four = weight(4, 8, |_, c| c % 4 < 2);
        assert_eq!(
            tightest_nm(&two_of_four),
            Some(SparseFormat::NM { n: 2, m: 4 })
        );
        assert_eq!(
            choose(&two_of_four, true, Forced::NM, &BATCH)
                .unwrap()
                .format,
            SparseFormat::NM { n: 2, m: 4 }
        );
        let dense = weight(4, 8, |_, _| true);
        assert!(choose(&dense, true, Forced::NM, &BATCH).is_err());
        let f = Forced::Format(SparseFormat::NM { n: 1, m: 4 });
        // One row on Cranelift: sparse kernels pay only below about 1/7
        // density; with a batch, this 1:4 weight takes CSR (fewer slots
        // than N:M's fixed quarter).
        let one_row = relative_costs(4, 1);
        let fifth = weight(64, 256, |r, c| (r * 7 + c * 13) % 5 == 0);
        assert_eq!(
            choose(&fifth, true, Forced::Auto, &one_row).unwrap().format,
            SparseFormat::Dense
        );
        assert_eq!(
            choose(&fifth, true, Forced::Auto, &BATCH).unwrap().format,
            SparseFormat::Csr
        );
        assert_eq!(relative_costs(4, 8), BATCH);
        assert!(choose(&two_of_four, true, f, &BATCH).is_err());
        let csr = choose(&dense, true, Forced::Format(SparseFormat::Csr), &BATCH).unwrap();
        assert_eq!((csr.format, csr.stored_values), (SparseFormat::Csr, 32));
        // Sliced ELLPACK reads windows of a slice's width of columns.
        let err = choose(&dense, true, Forced::Sell, &relative_costs(16, 1)).unwrap_err();
        assert!(err.contains("windows of 16 columns"), "{err}");
        let sell = choose(&dense, true, Forced::Sell, &one_row).unwrap();
        assert_eq!(sell.format, SparseFormat::Sell { slice: 4 });
    }

    #[test]
    fn sliced_ellpack_windows_slide_with_the_nonzeros() {
        // Slices of 4 rows: windows on multiples of 4 columns. Slice 0
        // (rows 0-3): three slots at column 0 (row 0 has three nonzeros
        // there, row 2 one), one at 4 (row 3's column 6): one group.
        // Slice 1 (rows 4-5, padded): one slot, then padding to a group.
        let t = weight(6, 8, |r, c| {
            matches!((r, c), (0, 0..=2) | (2, 1) | (3, 6) | (4, 3) | (5, 0))
        });
        let slots = sell_slots(&t, 4, 0);
        let starts: Vec<usize> = slots.iter().map(|s| s.0).collect();
        assert_eq!(starts, [0, 0, 0, 4]);
        assert_eq!(slots[0].1, [Some(0), None, Some(1), None]);
        assert_eq!(slots[3].1, [None, None, None, Some(6)]);
        assert_eq!(
            sell_slots(&t, 4, 1),
            [(0, vec![Some(3), Some(0), None, None])]
        );
        // Slices of 16: a window starts at the leftmost nonzero left,
        // rounded down to 8 columns, so columns 9 and 20 share one (a grid
        // of 16 would take two); the last starts at 40 - 16 to stay inside.
        let wide = weight(16, 40, |r, c| matches!((r, c), (0, 9) | (1, 20) | (2, 39)));
        let slots = sell_slots(&wide, 16, 0);
        assert_eq!(slots.len(), 2);
        assert_eq!(
            (slots[0].0, slots[0].1[0], slots[0].1[1]),
            (8, Some(9), Some(20))
        );
        assert_eq!((slots[1].0, slots[1].1[2]), (24, Some(39)));
        let (stored, bytes) = footprint(&t, SparseFormat::Sell { slice: 4 });
        assert_eq!(stored, 2 * 4 * 4);
        // Values and lane numbers, i8 window starts, i8 slice pointers.
        assert_eq!(bytes, 5 * 32 + 8 + 3);
    }
}
