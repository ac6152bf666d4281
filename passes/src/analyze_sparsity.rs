//! `analyze-sparsity`: measures every layer's weights and chooses the kernel
//! format each one lowers to.
//!
//! For the weight of each `linear`, `conv2d` and `matmul` it measures the
//! density, the N:M pattern and the block structure
//! ([`lopper_ir::graph::sparsity`]), whether the zeros came from `prune` or
//! arrived in the weights file, and records `density` and `format` on the
//! param, where `lower-to-loops` reads them. The cost model
//! ([`crate::sparse_cost`]) picks dense, CSR, BSR or N:M for a linear layer;
//! `format=` (the CLI's `--sparse`) forces one. Sparse kernels exist for
//! `linear` only: a conv2d or matmul weight is measured and reported but
//! stays dense. Params with no zeros get no annotation, so dense models
//! print as before.

use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use crate::sparse_cost::{
    batch_outer_fits, choose, fills_vector_tile, panel_columns, panel_min_density, relative_costs,
    slot_accumulators, Choice, Forced, RelativeCosts,
};
use lopper_ir::graph::sparsity::{density, matrix_view, pattern};
use lopper_ir::graph::{NodeIndex, SparseFormat, Sparsity};
use lopper_ir::{Graph, Op};

const PASS: &str = "analyze-sparsity";

/// The `analyze-sparsity` pass.
#[derive(Clone, Debug)]
pub struct AnalyzeSparsity {
    /// The format every linear layer takes (`format=csr`), or the cost
    /// model's choice.
    pub forced: Forced,
    /// What the sparse kernels cost on the target, for the expected rows.
    pub costs: RelativeCosts,
    /// Columns per panel of the CSR and N:M kernels (`None`: whole rows).
    pub panel: Option<usize>,
    /// The least density that runs by panels.
    pub panel_min_density: f64,
    /// Registers a CSR or N:M group's slots accumulate into (`None`: one
    /// each).
    pub accumulators: Option<usize>,
    /// Sparse products run one row of the batch at a time (fewer rows than
    /// a vector tile).
    pub batch_outer: bool,
}

impl Default for AnalyzeSparsity {
    fn default() -> Self {
        AnalyzeSparsity {
            forced: Forced::Auto,
            costs: relative_costs(4, 1),
            panel: None,
            panel_min_density: panel_min_density(4),
            accumulators: None,
            batch_outer: true,
        }
    }
}

impl AnalyzeSparsity {
    /// Reads `analyze-sparsity{format=auto|dense|csr|bsr|bsrRxC|nm|N:M|sell|sellN,
    /// lanes=4|8|16,rows=N,panel=COLUMNS}`; `panel` defaults to
    /// [`panel_columns`] for the lanes, the rows and the host's level-1
    /// data cache, and `panel=0` asks for whole rows.
    pub fn from_options(o: &PassOptions) -> Result<AnalyzeSparsity, String> {
        o.check_known(PASS, &["format", "lanes", "rows", "panel"])?;
        let number = |k: &str, default: usize| -> Result<usize, String> {
            match o.0.get(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("`{k}` of `{PASS}` is a positive integer, got `{v}`")),
            }
        };
        let lanes = number("lanes", 4)?;
        if ![4, 8, 16].contains(&lanes) {
            return Err(format!("`lanes` of `{PASS}` must be 4, 8 or 16"));
        }
        let rows = number("rows", 1)?;
        let costs = relative_costs(lanes as u32, rows);
        let panel = match o.0.get("panel").map(|v| v.trim().parse::<usize>()) {
            None => {
                let l1 = crate::auto_schedule::host_cache_bytes(1).unwrap_or(32 << 10);
                panel_columns(lanes as u32, rows, l1)
            }
            Some(Ok(0)) => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(format!(
                    "`panel` of `{PASS}` is a number of columns (0 for whole rows)"
                ))
            }
        };
        let forced = match o.0.get("format").map(|s| s.trim()) {
            None | Some("auto") => Forced::Auto,
            Some("nm") => Forced::NM,
            Some("sell") => Forced::Sell,
            Some(f) => Forced::Format(f.parse()?),
        };
        Ok(AnalyzeSparsity {
            forced,
            costs,
            panel,
            panel_min_density: panel_min_density(lanes as u32),
            accumulators: slot_accumulators(lanes as u32, rows),
            batch_outer: !fills_vector_tile(lanes as u32, rows),
        })
    }
}

/// One row of the sparsity report: a layer, its weight and the decision.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// The layer node's name.
    pub layer: String,
    /// Its op (`linear`).
    pub op: &'static str,
    /// The weight param's name.
    pub param: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Fraction of nonzeros.
    pub density: f64,
    /// What the zeros look like (`unstructured`, `2:4`, `block 4x4`).
    pub pattern: String,
    /// The cost model's decision and its reason.
    pub choice: Choice,
    /// Multiply-adds ×2 per output row (per image for a conv2d): dense.
    pub flops_dense: u64,
    /// The same for the chosen kernel.
    pub flops_chosen: u64,
    /// Bytes of weights (and index arrays) read: dense.
    pub bytes_dense: u64,
    /// The same for the chosen kernel.
    pub bytes_chosen: u64,
}

/// The weight operand of a layer node, if it is a param of rank 2 or more.
fn layer_weight(g: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    if !matches!(g.node(n).op, Op::Linear | Op::Conv2d(_) | Op::MatMul) {
        return None;
    }
    let w = *g.operands(n).get(1)?;
    let node = g.node(w);
    (matches!(node.op, Op::Param(_)) && node.ty.shape.rank() >= 2).then_some(w)
}

/// Measures every layer's weight and chooses its format.
pub fn analyze(
    g: &Graph,
    forced: Forced,
    costs: &RelativeCosts,
) -> Result<Vec<LayerReport>, PassError> {
    let order = g
        .topo_order()
        .map_err(|_| PassError::new(PASS, "the graph has a cycle"))?;
    let mut out = Vec::new();
    for n in order {
        let Some(w) = layer_weight(g, n) else {
            continue;
        };
        let Op::Param(p) = &g.node(w).op else {
            unreachable!("layer_weight returns params")
        };
        let t = &p.data;
        let (rows, cols) = matrix_view(&t.shape);
        let op = g.node(n).op.name();
        // Output positions each weight element is used at, per item.
        let uses: u64 = match &g.node(n).op {
            Op::Conv2d(_) => g.node(n).ty.shape.0[2..]
                .iter()
                .map(|d| d.as_static().unwrap_or(1) as u64)
                .product(),
            _ => 1,
        };
        let linear = matches!(g.node(n).op, Op::Linear);
        let choice = choose(t, linear, forced, costs).map_err(|e| {
            PassError::at(
                PASS,
                &g.node(w).name,
                format!("{e} (weight of %{})", g.node(n).name),
            )
        })?;
        let stored = choice.stored_values;
        out.push(LayerReport {
            layer: g.node(n).name.clone(),
            op,
            param: g.node(w).name.clone(),
            shape: t.shape.clone(),
            density: density(t),
            pattern: pattern(t),
            flops_dense: 2 * (rows * cols) as u64 * uses,
            flops_chosen: 2 * stored * uses,
            bytes_dense: 4 * (rows * cols) as u64,
            bytes_chosen: choice.bytes,
            choice,
        });
    }
    Ok(out)
}

/// Panels of about `target` columns over `cols`, all of one width: the
/// nearest whole number of panels (`None` if that is one), each
/// `cols / panels` wide, rounded up. fc1's 784 columns with a target of
/// 192 take four panels of 196, not four of 192 and one of 16.
fn balanced_panel(cols: usize, target: usize) -> Option<usize> {
    let count = (cols as f64 / target.max(1) as f64).round() as usize;
    (count > 1).then(|| cols.div_ceil(count))
}

impl Pass<Graph> for AnalyzeSparsity {
    fn name(&self) -> &'static str {
        PASS
    }

    fn description(&self) -> &'static str {
        "measure each layer's weight sparsity and choose dense, CSR, BSR or N:M kernels"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let reports = analyze(g, self.forced, &self.costs)?;
        let mut changed = false;
        for r in reports {
            let w = g.find(&r.param).expect("reported params exist");
            let Op::Param(p) = &mut g.graph[w].op else {
                unreachable!("reported weights are params")
            };
            // The linear kernels that read the activations by column
            // (CSR, N:M) take panels and shared accumulators.
            let by_column = matches!(r.choice.format, SparseFormat::Csr | SparseFormat::NM { .. })
                && r.op == "linear";
            let batch_outer =
                self.batch_outer && r.op == "linear" && batch_outer_fits(r.choice.format, &r.shape);
            let note =
                (r.density < 1.0 || r.choice.format != SparseFormat::Dense).then_some(Sparsity {
                    density: r.density,
                    format: r.choice.format,
                    // Panels when narrower than the weight (a batch row at
                    // a time reads its activations once: no panels).
                    panel: self
                        .panel
                        .filter(|_| {
                            by_column && !batch_outer && r.density >= self.panel_min_density
                        })
                        .and_then(|columns| balanced_panel(r.shape[1], columns)),
                    accumulators: self.accumulators.filter(|_| by_column),
                    batch_outer,
                });
            cx.remark(format!(
                "%{}: density {:.3}, pattern {}, kernel {} ({})",
                r.param, r.density, r.pattern, r.choice.format, r.choice.why
            ));
            if p.sparsity != note {
                p.sparsity = note;
                changed = true;
            }
        }
        Ok(Changed::from(changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_fill_the_level_one_cache_and_come_in_equal_widths() {
        // Two thirds of 48 KiB of L1 over 64 rows of floats: 128 columns.
        assert_eq!(panel_columns(16, 64, 48 << 10), Some(128));
        assert_eq!(panel_columns(8, 16, 48 << 10), Some(512));
        // Too few rows for a vector tile, or Cranelift's 4 lanes without
        // a batch for its wide tiles: none.
        assert_eq!(panel_columns(16, 16, 48 << 10), None);
        assert_eq!(panel_columns(4, 16, 48 << 10), None);
        assert_eq!(panel_columns(4, 64, 48 << 10), Some(128));
        // Many rows: never narrower than 32 columns.
        assert_eq!(panel_columns(16, 4096, 48 << 10), Some(32));
        assert_eq!(balanced_panel(784, 192), Some(196));
        assert_eq!(balanced_panel(784, 128), Some(131));
        assert_eq!(balanced_panel(300, 192), Some(150));
        assert_eq!(balanced_panel(100, 192), None);
        assert_eq!(balanced_panel(10, 4), Some(4));
    }

    #[test]
    fn a_panel_option_forces_or_removes_panels() {
        let opts = |text: &str| {
            let spec = crate::pipeline::parse_pipeline(text).unwrap();
            AnalyzeSparsity::from_options(&spec[0].options)
        };
        assert_eq!(opts("analyze-sparsity{panel=64}").unwrap().panel, Some(64));
        assert_eq!(
            opts("analyze-sparsity{lanes=16,rows=64,panel=0}")
                .unwrap()
                .panel,
            None
        );
        assert!(opts("analyze-sparsity{lanes=4,rows=16}")
            .unwrap()
            .panel
            .is_none());
        // Cranelift with a batch of 64: one accumulator per group, panels.
        let wide = opts("analyze-sparsity{lanes=4,rows=64}").unwrap();
        assert_eq!(wide.accumulators, Some(1));
        assert!(wide.panel.is_some());
        assert_eq!(
            opts("analyze-sparsity{lanes=16,rows=64}")
                .unwrap()
                .accumulators,
            None
        );
        let err = opts("analyze-sparsity{panel=wide}").err().unwrap();
        assert!(err.contains("number of columns"), "{err}");
    }
}
