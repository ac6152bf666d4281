//! `auto-schedule`: picks tile, pack, vectorize and unroll steps for each
//! kernel and runs them, so that `-O2` is fast without hand tuning.
//!
//! For each kernel it looks at the outer band of perfectly nested loops and
//! the statements under it (the `let %acc`, reduction loops and store that
//! the lowering writes for matmul, linear, conv2d, pooling and elementwise
//! ops), and chooses:
//!
//! - the *column* loop: the band loop that moves the output store by one
//!   element (unit stride), vectorized with `lanes` lanes, two vectors wide
//!   when it is long enough;
//! - the *row* loop: the band loop nearest the column loop that some
//!   lane-varying load does not depend on (the rows of a matmul, the output
//!   channels of a conv2d), unrolled so that each loaded vector feeds
//!   several accumulators: an MR x NR register block (at most 12 vector
//!   accumulators of the 16 registers);
//! - `pack` for each constant matrix read along the column loop (a linear
//!   layer's `[out, in]` weights, read with a stride; a matmul's `[k, n]`
//!   weights), into contiguous panels of the column tile;
//! - `interchange` of the row-block and column-panel loops when they are
//!   adjacent, so that each panel is reused by every row block while it is
//!   in cache.
//!
//! The steps are the ordinary passes (`tile`, `pack`, `vectorize`,
//! `unroll`, with the options it prints as remarks), tried on a copy of the
//! kernel first: a kernel that one of them refuses (a reduction along the
//! store's last dimension, such as softmax; a strided access to a buffer
//! that is not constant) keeps its plain loops. The level-2 cache size (the
//! host's, or `l2-cache=`) bounds the column tile so that a packed panel
//! fits in half of it; the `k` loop itself is not blocked for the cache
//! yet.

use crate::loop_nest::{coefficient, uses};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::loops::{Expr, Module, Stmt};

/// The `auto-schedule` pass.
pub struct AutoSchedule {
    /// Vector lanes of the target backend (4 for Cranelift).
    pub lanes: u32,
    /// Bytes of the level-2 cache a packed panel of weights must fit in
    /// (half of it, leaving room for the activations).
    pub l2_bytes: usize,
}

/// The host's cache size at `level` in bytes, from Linux's sysfs.
pub fn host_cache_bytes(level: u32) -> Option<usize> {
    (0..8).find_map(|i| {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let kind = read("type")?;
        if read("level")?.trim() != level.to_string() || kind.trim() == "Instruction" {
            return None;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
        let n: usize = digits.parse().ok()?;
        Some(match unit {
            "K" => n << 10,
            "M" => n << 20,
            _ => n,
        })
    })
}

impl AutoSchedule {
    /// Reads `auto-schedule{lanes=4,l2-cache=2097152}`; the cache size
    /// defaults to the host's (1 MiB when it cannot be read).
    pub fn from_options(o: &PassOptions) -> Result<AutoSchedule, String> {
        o.check_known("auto-schedule", &["lanes", "l2-cache"])?;
        let lanes = match o.0.get("lanes").map(|l| l.parse::<u32>()) {
            None => 4,
            Some(Ok(n)) if n == 4 || n == 8 || n == 16 => n,
            Some(_) => return Err("`lanes` of `auto-schedule` must be 4, 8 or 16".into()),
        };
        let l2_bytes = match o.0.get("l2-cache").map(|l| l.parse::<usize>()) {
            None => host_cache_bytes(2).unwrap_or(1 << 20),
            Some(Ok(n)) if n >= 1024 => n,
            Some(_) => return Err("`l2-cache` of `auto-schedule` is a size in bytes".into()),
        };
        Ok(AutoSchedule { lanes, l2_bytes })
    }
}

/// The outer band of a kernel and the statements under it.
fn band(body: &[Stmt]) -> (Vec<(String, Expr, Expr)>, &[Stmt]) {
    let mut loops = Vec::new();
    let mut current = body;
    while let [Stmt::For {
        var, lo, hi, body, ..
    }] = current
    {
        loops.push((var.clone(), lo.clone(), hi.clone()));
        current = body;
    }
    (loops, current)
}

/// Every access (loads and stores) in `body`: buffer, indices, is a store.
fn accesses(body: &[Stmt]) -> Vec<(String, Vec<Expr>, bool)> {
    let mut out = Vec::new();
    crate::loop_nest::map_block(
        body,
        &mut |e| {
            if let Expr::Load { buffer, indices } = &e {
                out.push((buffer.clone(), indices.clone(), false));
            }
            e
        },
        &mut |n| n.to_string(),
    );
    fn stores(body: &[Stmt], out: &mut Vec<(String, Vec<Expr>, bool)>) {
        for s in body {
            match s {
                Stmt::Store {
                    buffer, indices, ..
                } => out.push((buffer.clone(), indices.clone(), true)),
                Stmt::For { body, .. } => stores(body, out),
                Stmt::If {
                    then, otherwise, ..
                } => {
                    stores(then, out);
                    stores(otherwise, out);
                }
                _ => {}
            }
        }
    }
    stores(body, &mut out);
    out
}

fn extent(lo: &Expr, hi: &Expr) -> Option<i64> {
    match (lo, hi) {
        (Expr::Int(l), Expr::Int(h)) => Some(h - l),
        _ => None,
    }
}

/// The pipeline of loop passes for one kernel, or why it has none.
pub fn plan(m: &Module, kernel: usize, lanes: u32, l2_bytes: usize) -> Result<String, String> {
    let short_taps = !short_innermost_loops(band(&m.kernels[kernel].body).1).is_empty();
    let k = &m.kernels[kernel];
    let (loops, inner) = band(&k.body);
    if loops.is_empty() {
        return Err("no loops".into());
    }
    let all = accesses(inner);
    let store = all.iter().find(|a| a.2).ok_or("no store under the band")?;
    let last = store.1.last().ok_or("a store of a scalar")?;
    let column = loops
        .iter()
        .rev()
        .find(|(v, _, _)| coefficient(last, v) == Some(1))
        .ok_or("no band loop moves the store by one element")?;
    // Narrower vectors for short columns (a conv2d's 10 output columns on
    // a 16-lane machine take 8 lanes): halve while one vector does not fit.
    let backend_lanes = lanes;
    let mut lanes = lanes;
    if let Some(n) = extent(&column.1, &column.2) {
        while lanes > 4 && n < lanes as i64 {
            lanes /= 2;
        }
    }
    let lanes_i = lanes as i64;
    let Some(column_extent) = extent(&column.1, &column.2) else {
        return Ok(symbolic_column(k, &column.0, inner, lanes));
    };
    if column_extent < lanes_i {
        return Err(format!(
            "%{} has {column_extent} iterations, fewer than {lanes} lanes",
            column.0
        ));
    }
    // Rows: the nearest other band loop that a lane-varying load ignores.
    let varying: Vec<&(String, Vec<Expr>, bool)> = all
        .iter()
        .filter(|a| !a.2 && a.1.iter().any(|i| uses(i, &column.0)))
        .collect();
    let position = loops
        .iter()
        .position(|l| l.0 == column.0)
        .expect("a band loop");
    let row = loops[..position]
        .iter()
        .rev()
        .chain(loops[position + 1..].iter())
        .find(|(v, _, _)| varying.iter().any(|a| !a.1.iter().any(|i| uses(i, v))));
    // Vectors wide: fewer when the loop is shorter; the last tile of a
    // constant extent is vectorized too, so remainders cost little.
    // With a symbolic row count (a batch, often 1) four vectors by two
    // rows: a single row then still has four independent accumulator
    // chains (mlp at batch 1 measured 24 µs against 30 µs for 3 x 3, at
    // batch 64 the same); with a constant row count three by three (GEMM
    // 512 measured 7 % faster than 2 x 4).
    let rows_symbolic = row.is_some_and(|(_, lo, hi)| extent(lo, hi).is_none());
    // An MR x NR block of at most 9 vector accumulators, leaving registers
    // for the loaded vectors and the broadcast; 12 where the reduction is
    // short unrolled taps (a conv2d's kernel window), which measured faster
    // there while long reductions (a linear layer's) measured slower. On
    // Cranelift, whose code keeps the loop IR's order of the taps, a
    // window's input vectors stay live from tap to tap: 8 (LeNet's conv1
    // 2 x 4 vectors: 6.7 against 7.6 µs in 3 x 4; conv2 2 pixels x 4
    // vectors: 13.0 against 13.8 µs in 5 x 2).
    let budget = if short_taps && backend_lanes == 4 {
        8
    } else if short_taps {
        12
    } else if rows_symbolic {
        8
    } else {
        9
    };
    // AVX-512 has 32 vector registers, not 16: three times the block
    // (mlp at batch 64 with LLVM: 336 µs with 6 x 4 accumulators, 738 µs
    // with 2 x 4).
    let budget = if lanes >= 16 { 3 * budget } else { budget };
    // One or two constant rows (a matrix-vector product, such as a model
    // exported for batch 1) share few broadcasts: up to eight column
    // vectors instead, as many independent accumulator chains.
    let few_rows = match row {
        None => Some(1),
        Some((_, lo, hi)) => extent(lo, hi).filter(|&e| e <= 2),
    };
    // Eight fit Cranelift's 16 registers since its loads of read-only
    // memory may sit by their FMAs (fc1 of mlp at batch 1: 14.8 µs with
    // eight); while every load came first, eight spilled (27 µs, 20 with
    // six).
    // Cranelift's FMA also overwrites a factor that its block shares (a
    // GEMM's broadcast row and loaded column are both shared in 3 x 3), so
    // each FMA there costs a copy: a product over rows, constant or
    // symbolic, is computed a row at a time like a matrix-vector product
    // instead, 8 column vectors that each FMA alone reads (GEMM 512: 7.4
    // against 8.4 ms; mlp.lop at batch 1, whose 2 x 4 blocks left one row
    // to a narrower remainder: 17.0 against 23.4 µs). Since the code keeps
    // the loop IR's order of the FMAs, the copies cost less than the reuse
    // of two rows saves: a constant count of rows (never a batch, which
    // is often 1) goes two at a time by 4 column vectors (GEMM 512: 6.6
    // against 7.1 ms a row at a time).
    let cranelift_product = backend_lanes == 4 && !short_taps;
    let row_pairs = cranelift_product && !rows_symbolic && few_rows != Some(1);
    let row_at_a_time = cranelift_product && !row_pairs;
    let widest = match few_rows {
        Some(rows) => (budget / rows).clamp(3, 8),
        None if row_pairs => 4,
        None if row_at_a_time => 8,
        None if rows_symbolic => 4,
        None => 3,
    };
    let mut vectors = (column_extent / lanes_i).clamp(1, widest);
    // A last tile narrower than 4 lanes (the narrowest vector `vectorize`
    // takes) would run scalar: narrower tiles instead, whose last one holds
    // a vector (30 columns of 4 lanes as 6 + 1.5 vectors, not 7 + 0.5).
    let scalar_tail = |v: i64| (1..4).contains(&(column_extent % (v * lanes_i)));
    while vectors > 1 && column_extent > vectors * lanes_i && scalar_tail(vectors) {
        vectors -= 1;
    }
    // A packed panel (the reduction's length times the column tile) stays
    // within half the level-2 cache while every row block reads it.
    let reduction: i64 = reduction_length(inner);
    let fitting = (l2_bytes as i64 / 2) / (reduction.max(1) * lanes_i * 4);
    let vectors = vectors.min(fitting.max(1));
    // Up to 8 rows; 12 for a kernel window's taps on AVX-512, where one
    // block then takes LeNet's rows of 10 whole.
    let most_rows = if short_taps && lanes >= 16 { 12 } else { 8 };
    // A kernel window over constant rows that whole vectors cover: the
    // block width (up to 4 vectors) whose tiles and row blocks take the
    // fewest estimated cycles (LeNet's first convolution on Cranelift:
    // 7 vectors of a row by 6 channels as 4 + 3 vectors by 3 + 3 rows, not
    // 3 + 3 + 1 by 3 + 3, where the last tile's 3 chains wait on latency).
    let vectors = match row.and_then(|(_, lo, hi)| extent(lo, hi)) {
        Some(rows) if short_taps && column_extent % lanes_i == 0 => {
            let whole = column_extent / lanes_i;
            (1..=widest.max(4).min(whole).min(fitting.max(1)))
                .rev()
                .min_by_key(|&v| {
                    let max_rows = (budget / v).min(most_rows).max(1);
                    block_cycles(&equal_parts(whole, v), &equal_parts(rows, max_rows))
                })
                .unwrap_or(vectors)
        }
        _ => vectors,
    };
    // A column loop that whole vectors cover: as few tiles as the widest
    // gives, of equal width where that costs no tile (16 columns of 4
    // lanes as 2 + 2 vectors, not 3 + 1; 100 as 5 x 5, not 4 x 6 + 1), so
    // no remainder tile runs with fewer accumulator chains.
    let vectors = if column_extent % lanes_i == 0 {
        let whole = column_extent / lanes_i;
        let tiles = (whole + vectors - 1) / vectors;
        (whole + tiles - 1) / tiles
    } else {
        vectors
    };
    // A short column loop that lanes do not divide (a conv2d's 10 output
    // columns) is one tile; its last vector overlaps the one before.
    let (vectors, column_tile) = if column_extent <= 4 * lanes_i && column_extent % lanes_i != 0 {
        ((column_extent + lanes_i - 1) / lanes_i, column_extent)
    } else {
        (vectors, vectors * lanes_i)
    };
    let max_rows = if row_at_a_time {
        1
    } else if row_pairs {
        2
    } else {
        (budget / vectors).min(most_rows)
    };
    let row_tile = row.map(|(_, lo, hi)| match extent(lo, hi) {
        Some(e) if e <= max_rows => e,
        // Equal row blocks for a kernel window: 10 rows as 5 + 5, not 6 + 4.
        Some(e) if short_taps => {
            let blocks = (e + max_rows - 1) / max_rows;
            (e + blocks - 1) / blocks
        }
        // The last tile of a constant extent is unrolled too, so no
        // divisor is needed.
        Some(_) => max_rows,
        None => max_rows,
    });
    let name = &k.name;
    let mut steps: Vec<String> = Vec::new();
    // Column panels outside row blocks: a packed panel of a constant stays
    // in cache while every row block reads it. Adjacent loops are swapped
    // before tiling, where the legality test sees plain indices.
    let mut order: Vec<(String, i64, usize)> = Vec::new();
    if let (Some(r), Some(t)) = (row, row_tile) {
        let ri = loops.iter().position(|l| l.0 == r.0).expect("a band loop");
        order.push((r.0.clone(), t, ri));
    }
    order.push((column.0.clone(), column_tile, position));
    if let [(r, _, ri), _] = &order[..] {
        if ri + 1 == position {
            steps.push(format!(
                "interchange{{kernel={name},loops=[{r},{}]}}",
                column.0
            ));
            order[0].2 = position + 1;
        }
    }
    order.sort_by_key(|o| o.2);
    steps.push(format!(
        "tile{{kernel={name},loops=[{}],sizes=[{}]}}",
        order
            .iter()
            .map(|o| o.0.clone())
            .collect::<Vec<_>>()
            .join(","),
        order
            .iter()
            .map(|o| o.1.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    // Constants read across the column loop with a stride: pack them.
    let mut packed = Vec::new();
    for (buffer, indices, _) in &varying {
        let last_ok = indices
            .last()
            .is_some_and(|i| coefficient(i, &column.0) == Some(1));
        let others_ok = indices[..indices.len() - 1]
            .iter()
            .all(|i| coefficient(i, &column.0) == Some(0));
        // Unit-stride vectors of a 1-D operand (a bias) are contiguous
        // already; a matrix is packed into panels even then, so that each
        // column tile reads one contiguous block.
        if last_ok && others_ok && indices.len() < 2 {
            continue;
        }
        let dims: Vec<usize> = indices
            .iter()
            .enumerate()
            .filter(|(_, i)| uses(i, &column.0))
            .map(|(d, _)| d)
            .collect();
        let constant = m
            .buffer(buffer)
            .is_some_and(|b| b.kind == lopper_ir::loops::BufferKind::Const);
        match dims[..] {
            [d] if constant && coefficient(&indices[d], &column.0) == Some(1) => {
                if !packed.contains(buffer) {
                    packed.push(buffer.clone());
                    steps.push(format!(
                        "pack{{kernel={name},buffer={buffer},dim={d},size={column_tile}}}"
                    ));
                }
            }
            _ if last_ok && others_ok => {}
            _ => {
                return Err(format!(
                    "%{buffer} is read with a stride along %{} and cannot be packed",
                    column.0
                ))
            }
        }
    }
    let point = |v: &str| format!("{v}.i");
    steps.push(format!(
        "vectorize{{kernel={name},loop={},lanes={lanes}}}",
        point(&column.0)
    ));
    // Rows first, then vector columns: the copies of the loop unrolled
    // last end up innermost, so the block's FMAs come row by row, each
    // row's broadcast meeting every column vector. Live at once: the
    // accumulators, NR column vectors and one broadcast (MR broadcasts in
    // the other order: an 8 x 3 block on AVX-512 then needed 33 registers
    // and LLVM spilled an accumulator in the `k` loop).
    if let Some(r) = row {
        steps.push(format!("unroll{{kernel={name},loop={}}}", point(&r.0)));
    }
    steps.push(format!(
        "unroll{{kernel={name},loop={}.v}}",
        point(&column.0)
    ));
    // Products on Cranelift: the reduction loop eight steps per iteration
    // a row at a time, two for pairs of rows. Cranelift's x64 FMA
    // overwrites a factor, not the addend, so every accumulator moves back
    // into place at each back edge; eight steps per iteration pay that
    // once per eight FMAs of an accumulator (mlp's fc1 at batch 1: 14.8 µs
    // with one, 13.4 with four before session 9's sequence points; 12.8
    // with four, 12.1 with eight, 12.2 with sixteen after). Pairs of rows
    // hold twice the loaded vectors: two steps (GEMM 512: 6.6 ms against
    // 7.4 with four, 8.4 with one). A kernel window's whole reduction
    // unrolled, its input channels too, measured slower (its taps are
    // unrolled below).
    let reduction_unroll = if row_at_a_time {
        8
    } else if row_pairs {
        2
    } else {
        1
    };
    if reduction_unroll > 1 {
        if let Some(k) = inner.iter().find_map(|s| match s {
            Stmt::For { var, lo, hi, .. } if extent(lo, hi).is_some_and(|n| n >= 16) => Some(var),
            _ => None,
        }) {
            steps.push(format!(
                "unroll{{kernel={name},loop={k},factor={reduction_unroll},chains=8}}"
            ));
        }
    }
    Ok(steps.join(","))
}

impl Pass<Module> for AutoSchedule {
    fn name(&self) -> &'static str {
        "auto-schedule"
    }

    fn description(&self) -> &'static str {
        "choose and run tile, pack, vectorize and unroll for every kernel"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = false;
        for k in 0..m.kernels.len() {
            let name = m.kernels[k].name.clone();
            // Short innermost reduction loops (the taps of a conv2d or a
            // pool) are unrolled whatever else happens.
            let (_, inner) = band(&m.kernels[k].body);
            let short = short_innermost_loops(inner);
            let planned = plan(m, k, self.lanes, self.l2_bytes);
            let scheduled = match &planned {
                Ok(pipeline) => apply(m, pipeline, &name, cx),
                Err(why) => {
                    cx.remark(format!("@{name}: not vectorized: {why}"));
                    false
                }
            };
            // A transposing copy, which no single loop vectorizes: tiles
            // transposed in registers (tried quietly: most kernels are not
            // transposes).
            let transposed = !scheduled
                && transpose_steps(m, k, self.lanes).is_some_and(|pipeline| {
                    let mut trial = m.clone();
                    let ok = run_steps(&mut trial, &pipeline).is_ok();
                    if ok {
                        cx.remark(format!("@{name}: {pipeline}"));
                        *m = trial;
                    }
                    ok
                });
            // A stride-2 reader (a max pool): its taps unrolled, then its
            // last band loop as lanes, each read two vectors and a shuffle.
            let strided = !scheduled
                && !transposed
                && strided_steps(m, k, self.lanes, &short)
                    .is_some_and(|pipeline| apply(m, &pipeline, &name, cx));
            changed |= scheduled || transposed || strided;
            if strided {
                // Then the window's rows: one straight run of loads and
                // maxima per output vector.
                changed |= unroll_window_rows(m, k, cx);
                continue;
            }
            if planned.is_err() && !transposed {
                // Scalar code still gains from independent chains: four
                // outputs of the innermost band loop at a time, their
                // reductions jammed (a max pool's running maximum is a
                // chain of dependent instructions otherwise).
                // Inner loops along a row (softmax's and layer norm's
                // reductions and their last step) are vectorized on their
                // own, a reduction into a local declared outside with a
                // vector of partial results (see `vectorize`).
                let (loops, inner) = band(&m.kernels[k].body);
                // Rows shorter than a vector take narrower ones (a softmax
                // over 10 classes: 8 lanes and 2 scalar).
                let shortest = i64::from(self.lanes.min(8));
                let mut steps: Vec<String> = innermost_loops(inner, shortest)
                    .iter()
                    .map(|v| format!("vectorize{{kernel={name},loop={v},lanes={}}}", self.lanes))
                    .collect();
                if let Some((v, lo, hi)) = loops.last() {
                    if extent(lo, hi).is_some_and(|n| n >= 8) {
                        steps.push(format!("unroll{{kernel={name},loop={v},factor=4}}"));
                    }
                }
                for pipeline in steps {
                    changed |= apply(m, &pipeline, &name, cx);
                }
            }
            let window = !short.is_empty();
            for l in short {
                changed |= apply(m, &format!("unroll{{kernel={name},loop={l}}}"), &name, cx);
            }
            if scheduled && window {
                // A register-blocked kernel window (a convolution's): its
                // rows too, which leaves one loop step per input channel
                // and fewer branches and address updates between the
                // multiply-adds.
                changed |= unroll_window_rows(m, k, cx);
            }
        }
        Ok(Changed::from(changed))
    }
}

/// Unrolls the short innermost loops of kernel `k` once its window's
/// columns are unrolled: the window's rows (a pool's, a convolution's).
fn unroll_window_rows(m: &mut Module, k: usize, cx: &mut PassContext) -> bool {
    let name = m.kernels[k].name.clone();
    let (_, inner) = band(&m.kernels[k].body);
    let mut changed = false;
    for l in short_innermost_loops(inner) {
        changed |= apply(m, &format!("unroll{{kernel={name},loop={l}}}"), &name, cx);
    }
    changed
}

/// Runs `pipeline` on a copy of `m` and keeps the result if every step
/// applies and the module verifies; says which in a remark.
fn apply(m: &mut Module, pipeline: &str, name: &str, cx: &mut PassContext) -> bool {
    let mut trial = m.clone();
    match run_steps(&mut trial, pipeline) {
        Ok(()) => {
            cx.remark(format!("@{name}: {pipeline}"));
            *m = trial;
            true
        }
        Err(why) => {
            cx.remark(format!("@{name}: not applied: {pipeline}: {why}"));
            false
        }
    }
}

/// The steps for a transposing copy (the transposes around a sparse
/// layer, the `transpose` op): its two innermost band loops tiled by the
/// vector width and each whole tile transposed in registers
/// (`vectorize-transpose`), with fewer lanes when a loop is shorter than a
/// vector. `None` when the band has fewer than two loops, its body other
/// statements than `let`s and one store, or a loop has fewer than 4
/// iterations; the pass itself checks the rest.
fn transpose_steps(m: &Module, kernel: usize, lanes: u32) -> Option<String> {
    let k = &m.kernels[kernel];
    let (loops, inner) = band(&k.body);
    let [.., (a, a_lo, a_hi), (b, b_lo, b_hi)] = &loops[..] else {
        return None;
    };
    let straight = inner.iter().all(|s| {
        matches!(
            s,
            Stmt::Let { .. } | Stmt::Assign { .. } | Stmt::Store { .. }
        )
    });
    let Some(Stmt::Store { indices, .. }) = inner.last() else {
        return None;
    };
    if !straight {
        return None;
    }
    // The shorter constant extent bounds the tile (a symbolic one, a
    // batch, does not: its partial tile stays scalar).
    let shortest = [extent(a_lo, a_hi), extent(b_lo, b_hi)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(i64::MAX);
    let mut lanes = lanes;
    while lanes > 4 && shortest < lanes as i64 {
        lanes /= 2;
    }
    if shortest < lanes as i64 {
        return None;
    }
    let name = &k.name;
    // The store's loop outside the loads' loop: each tile row then reads
    // on along its line of the source (a few sequential streams the
    // prefetcher follows) rather than one line of each of many rows (the
    // transpose of x[64, 784] at batch 64: 6.6 µs against 14.5 µs).
    let store_moves_along_b = indices.last().is_some_and(|i| coefficient(i, b) == Some(1));
    let (interchange, outer, inner) = if store_moves_along_b {
        (
            format!("interchange{{kernel={name},loops=[{a},{b}]}},"),
            b,
            a,
        )
    } else {
        (String::new(), a, b)
    };
    Some(format!(
        "{interchange}tile{{kernel={name},loops=[{outer},{inner}],sizes=[{lanes},{lanes}]}},\
         vectorize-transpose{{kernel={name},loops=[{outer}.i,{inner}.i],lanes={lanes}}}"
    ))
}

/// The steps for a kernel that reads with a stride of two along its last
/// band loop (a pool or convolution of stride 2, which `plan` refuses):
/// the short loops `taps` unrolled, so each read's offset is a constant,
/// then the last band loop vectorized, with fewer lanes when it is shorter
/// than a vector. `None` when no read has that stride or the loop has
/// fewer than 4 iterations.
fn strided_steps(m: &Module, kernel: usize, lanes: u32, taps: &[String]) -> Option<String> {
    let k = &m.kernels[kernel];
    let (loops, inner) = band(&k.body);
    let (column, lo, hi) = loops.last()?;
    let n = extent(lo, hi)?;
    let stride_two = accesses(inner).iter().any(|(_, indices, store)| {
        !store
            && indices
                .last()
                .is_some_and(|i| coefficient(i, column) == Some(2))
    });
    let mut lanes = lanes;
    while lanes > 4 && n < lanes as i64 {
        lanes /= 2;
    }
    if !stride_two || n < lanes as i64 {
        return None;
    }
    let name = &k.name;
    let mut steps: Vec<String> = taps
        .iter()
        .map(|t| format!("unroll{{kernel={name},loop={t}}}"))
        .collect();
    steps.push(format!(
        "vectorize{{kernel={name},loop={column},lanes={lanes}}}"
    ));
    Some(steps.join(","))
}

/// `n` split into as few parts of at most `most` as can be, of equal size
/// but for a smaller last one (10 by at most 6: 5 and 5).
fn equal_parts(n: i64, most: i64) -> Vec<i64> {
    let parts = (n + most - 1) / most;
    let size = (n + parts - 1) / parts;
    (0..parts).map(|p| size.min(n - p * size)).collect()
}

/// Estimated half-cycles per reduction step of a register-blocked kernel
/// with column tiles of `columns` vectors and row blocks of `rows` rows:
/// each block takes its accumulators' FMAs at two a cycle, or the four
/// cycles of one FMA's latency when it has fewer than eight chains.
fn block_cycles(columns: &[i64], rows: &[i64]) -> i64 {
    columns
        .iter()
        .flat_map(|c| rows.iter().map(move |r| (c * r).max(8)))
        .sum()
}

/// Vectors per tile of a symbolic column loop, at most ([`symbolic_column`]),
/// below the widest tiles of AVX-512.
pub const SYMBOLIC_COLUMN_VECTORS: usize = 2;

/// The steps for a kernel whose column loop runs over a symbolic size (a
/// sparse linear layer's product, vectorized along the batch): tiles of
/// whole vectors, the last partial tile scalar, and as many vectors per
/// tile as the registers hold accumulators for, at most two (fc1 at 90%
/// sparsity, batch 64, LLVM with 16 lanes, whole rows: 138 µs with two
/// vectors of four accumulators, 176 µs with four, 200 µs with one).
///
/// With AVX-512's 32 registers and few accumulators, tiles of four vectors
/// instead, each weight broadcast once for a whole batch of 64 and the
/// tile's rows of activations read from a panel in L1, with the rest of a
/// partial tile in tiles of one vector before the scalar rows (fc1 at
/// batch 64 with panels: CSR at 90% 52 against 58 µs, N:M 2:4 165
/// against 212 µs).
fn symbolic_column(
    k: &lopper_ir::loops::Kernel,
    column: &str,
    inner: &[Stmt],
    lanes: u32,
) -> String {
    // The accumulators: the lets before the first loop.
    let lets = inner
        .iter()
        .take_while(|s| !matches!(s, Stmt::For { .. }))
        .filter(|s| matches!(s, Stmt::Let { .. }))
        .count();
    let accumulators = lets.max(1);
    let budget = if lanes >= 16 { 24 } else { 8 };
    let name = &k.name;
    let lanes_u = lanes as usize;
    let vectorized = |tile: &str| {
        format!(
            "vectorize{{kernel={name},loop={tile},lanes={lanes}}},\
             unroll{{kernel={name},loop={tile}.v}}"
        )
    };
    // Cranelift with one accumulator per output (a sparse product whose
    // groups share one, `accumulators = 1` from `analyze-sparsity`): tiles
    // of 8 vectors, then of one.
    if lanes == 4 && lets == 1 {
        return format!(
            "tile{{kernel={name},loops=[{column}],sizes=[{}]}},\
             tile{{kernel={name},loops=[{column}],sizes=[{lanes}]}},{},{}",
            crate::sparse_cost::WIDE_COLUMN_VECTORS * lanes_u,
            vectorized(&format!("{column}.i")),
            vectorized(&format!("{column}.i1")),
        );
    }
    if lanes >= 16 && 4 * accumulators <= budget {
        return format!(
            "tile{{kernel={name},loops=[{column}],sizes=[{}]}},\
             tile{{kernel={name},loops=[{column}],sizes=[{lanes}]}},{},{}",
            4 * lanes_u,
            vectorized(&format!("{column}.i")),
            vectorized(&format!("{column}.i1")),
        );
    }
    let vectors = (budget / accumulators).clamp(1, SYMBOLIC_COLUMN_VECTORS);
    format!(
        "tile{{kernel={name},loops=[{column}],sizes=[{}]}},{}",
        vectors * lanes_u,
        vectorized(&format!("{column}.i"))
    )
}

/// The product of the constant trip counts of the loops under the band:
/// how many terms each output's reduction has.
fn reduction_length(body: &[Stmt]) -> i64 {
    body.iter()
        .map(|s| match s {
            Stmt::For { lo, hi, body, .. } => {
                extent(lo, hi).unwrap_or(1).max(1) * reduction_length(body)
            }
            Stmt::If {
                then, otherwise, ..
            } => reduction_length(then).max(reduction_length(otherwise)),
            _ => 1,
        })
        .max()
        .unwrap_or(1)
}

/// Loops with no loop inside and at least `lanes` iterations, by name.
fn innermost_loops(body: &[Stmt], lanes: i64) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(body: &[Stmt], lanes: i64, out: &mut Vec<String>) {
        for s in body {
            match s {
                Stmt::For {
                    var, lo, hi, body, ..
                } => {
                    let innermost = !body.iter().any(|s| matches!(s, Stmt::For { .. }));
                    // A kernel window's taps reducing into one output are
                    // unrolled instead.
                    let taps = extent(lo, hi).is_some_and(|n| n <= 8)
                        && crate::vectorize::reduces_outside(body);
                    if innermost && !taps && extent(lo, hi).is_some_and(|n| n >= lanes) {
                        if !out.contains(var) {
                            out.push(var.clone());
                        }
                    } else {
                        walk(body, lanes, out);
                    }
                }
                Stmt::If {
                    then, otherwise, ..
                } => {
                    walk(then, lanes, out);
                    walk(otherwise, lanes, out);
                }
                _ => {}
            }
        }
    }
    walk(body, lanes, &mut out);
    out
}

/// Loops with no loop inside and at most 8 iterations, by name.
fn short_innermost_loops(body: &[Stmt]) -> Vec<String> {
    fn walk(body: &[Stmt], out: &mut Vec<String>) {
        for s in body {
            match s {
                Stmt::For {
                    var, lo, hi, body, ..
                } => {
                    let innermost = !body.iter().any(|s| matches!(s, Stmt::For { .. }));
                    match extent(lo, hi) {
                        Some(n) if innermost && (2..=8).contains(&n) => {
                            if !out.contains(var) {
                                out.push(var.clone());
                            }
                        }
                        _ => walk(body, out),
                    }
                }
                Stmt::If {
                    then, otherwise, ..
                } => {
                    walk(then, out);
                    walk(otherwise, out);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(body, &mut out);
    out
}

fn run_steps(m: &mut Module, pipeline: &str) -> Result<(), String> {
    for spec in crate::pipeline::parse_pipeline(pipeline)? {
        let info = crate::registry::lookup(&spec.name)?;
        let crate::registry::AnyPass::Loops(mut pass) = (info.create)(&spec.options)? else {
            return Err(format!("`{}` is not a loop pass", spec.name));
        };
        let mut cx = PassContext::default();
        pass.run(m, &mut cx).map_err(|e| e.to_string())?;
    }
    lopper_ir::loops::verify_module(m).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}
