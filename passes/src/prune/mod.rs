//! `prune`: zeroes (or removes) the weights that matter least.
//!
//! One pass, four methods, one file each:
//!
//! - `method=magnitude` ([`magnitude`]): the smallest `|w|`, per layer or with
//!   one global threshold (`scope=global`);
//! - `method=nm` ([`nm`]): the `m - n` smallest of every `m` consecutive
//!   weights along the reduction (`n=2,m=4`);
//! - `method=block` ([`block`]): whole `RxC` blocks with the smallest norm;
//! - `method=structured` ([`structured`]): whole output neurons of a linear
//!   layer or filters of a conv2d by L1 or L2 norm, and the matching inputs
//!   of the layer that reads them, so the model becomes a smaller dense one.
//!
//! The weights it prunes are the constant weight operands of `linear`,
//! `conv2d` and `matmul` (biases and norms are left alone), chosen with
//! `params=[fc*]` and `exclude=[fc3.weight]`. Pruned params become literals
//! of the same name; their sparsity annotation is dropped so that
//! `analyze-sparsity` measures them again. Nothing is retrained.

mod block;
mod magnitude;
mod nm;
mod structured;

use crate::loop_nest::list_option;
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::graph::sparsity::density;
use lopper_ir::graph::{NodeIndex, Param};
use lopper_ir::{Graph, Op, Shape, Tensor, TensorType};

const PASS: &str = "prune";

/// How weights are ranked and removed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The smallest magnitudes.
    Magnitude,
    /// Keep `n` of every `m` along the reduction.
    NM {
        /// Kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },
    /// Whole blocks of `rows x cols`.
    Block {
        /// Block height (along the outputs).
        rows: usize,
        /// Block width (along the reduction).
        cols: usize,
    },
    /// Whole output neurons / filters, and the next layer's inputs.
    Structured,
}

/// Norm used to rank blocks and neurons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// Sum of magnitudes.
    L1,
    /// Square root of the sum of squares.
    L2,
}

/// The `prune` pass.
#[derive(Clone, Debug)]
pub struct Prune {
    /// The method.
    pub method: Method,
    /// Fraction to remove, for every selected param without its own.
    pub sparsity: f64,
    /// Per-param fractions: `layer-sparsity=[fc1.weight:0.95]`.
    pub layer_sparsity: Vec<(String, f64)>,
    /// One threshold over all selected params (`scope=global`).
    pub global: bool,
    /// Name patterns (`*` matches any run) of the params to prune; empty is all.
    pub params: Vec<String>,
    /// Name patterns of params to leave alone.
    pub exclude: Vec<String>,
    /// Ranking norm of blocks and neurons.
    pub norm: Norm,
}

/// The option names of `prune`, with a note each (for `lopper passes`).
pub const OPTIONS: &[(&str, &str)] = &[
    ("method", "magnitude (default), nm, block or structured"),
    ("sparsity", "fraction of weights (blocks, neurons) to remove: 0.9"),
    ("layer-sparsity", "per-param fractions: [fc1.weight:0.95,fc2.weight:0.8]"),
    ("scope", "layer (default: each param its own threshold) or global (one threshold; magnitude, block)"),
    ("params", "name patterns of the params to prune: [fc*] (default: every weight of linear, conv2d, matmul)"),
    ("exclude", "name patterns to leave alone: [fc3.weight]"),
    ("n", "nm: weights kept per group (default 2)"),
    ("m", "nm: group length along the reduction (default 4)"),
    ("block", "block: RxC (default 4x4)"),
    ("norm", "block and structured ranking: l1 or l2 (default l2 for block, l1 for structured)"),
];

impl Prune {
    /// Reads the options of `prune{...}`.
    pub fn from_options(o: &PassOptions) -> Result<Prune, String> {
        let names: Vec<&str> = OPTIONS.iter().map(|(k, _)| *k).collect();
        o.check_known(PASS, &names)?;
        let get = |k: &str| o.0.get(k).map(|v| v.trim());
        let fraction = |what: &str, v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| (0.0..1.0).contains(s))
                .ok_or_else(|| format!("{what} of `prune` is a fraction in [0, 1), got `{v}`"))
        };
        let count =
            |k: &str, default: usize| -> Result<usize, String> {
                match get(k) {
                    None => Ok(default),
                    Some(v) => v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("`{k}` of `prune` is a positive integer, got `{v}`")
                    }),
                }
            };
        let method = match get("method").unwrap_or("magnitude") {
            "magnitude" => Method::Magnitude,
            "nm" => {
                let (n, m) = (count("n", 2)?, count("m", 4)?);
                if n >= m {
                    return Err(format!("`prune{{method=nm}}` needs n < m, got {n}:{m}"));
                }
                Method::NM { n, m }
            }
            "block" => {
                let spec = get("block").unwrap_or("4x4");
                let parsed = spec
                    .split_once('x')
                    .and_then(|(r, c)| Some((r.parse::<usize>().ok()?, c.parse::<usize>().ok()?)));
                match parsed {
                    Some((rows, cols)) if rows > 0 && cols > 0 => Method::Block { rows, cols },
                    _ => return Err(format!("`block` of `prune` is RxC (4x4), got `{spec}`")),
                }
            }
            "structured" => Method::Structured,
            other => {
                return Err(format!(
                "unknown method `{other}` of `prune`; expected magnitude, nm, block or structured"
            ))
            }
        };
        let only = |k: &str, allowed: bool| -> Result<(), String> {
            if get(k).is_some() && !allowed {
                return Err(format!(
                    "`{k}` does not apply to `prune{{method={}}}`",
                    get("method").unwrap_or("magnitude")
                ));
            }
            Ok(())
        };
        let is_nm = matches!(method, Method::NM { .. });
        only("n", is_nm)?;
        only("m", is_nm)?;
        only("block", matches!(method, Method::Block { .. }))?;
        only(
            "norm",
            matches!(method, Method::Block { .. } | Method::Structured),
        )?;
        only(
            "scope",
            matches!(method, Method::Magnitude | Method::Block { .. }),
        )?;
        only("sparsity", !is_nm)?;
        only("layer-sparsity", !is_nm)?;
        let sparsity = match get("sparsity") {
            Some(v) => fraction("`sparsity`", v)?,
            None if is_nm => 0.0,
            None => 0.5,
        };
        let mut layer_sparsity = Vec::new();
        for item in list_option(get("layer-sparsity").unwrap_or("")) {
            let (name, s) = item.rsplit_once(':').ok_or_else(|| {
                format!("`layer-sparsity` of `prune` holds name:fraction, got `{item}`")
            })?;
            layer_sparsity.push((name.to_string(), fraction(&format!("`{item}`"), s)?));
        }
        let global = match get("scope") {
            None | Some("layer") => false,
            Some("global") => true,
            Some(v) => return Err(format!("`scope` of `prune` is layer or global, got `{v}`")),
        };
        if global && !layer_sparsity.is_empty() {
            return Err("`scope=global` takes one `sparsity`, not `layer-sparsity`".into());
        }
        let norm = match get("norm") {
            None if method == Method::Structured => Norm::L1,
            None | Some("l2") => Norm::L2,
            Some("l1") => Norm::L1,
            Some(v) => return Err(format!("`norm` of `prune` is l1 or l2, got `{v}`")),
        };
        Ok(Prune {
            method,
            sparsity,
            layer_sparsity,
            global,
            params: list_option(get("params").unwrap_or("")),
            exclude: list_option(get("exclude").unwrap_or("")),
            norm,
        })
    }

    /// The fraction to remove from the param named `name`.
    fn sparsity_of(&self, name: &str) -> f64 {
        self.layer_sparsity
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.sparsity, |(_, s)| *s)
    }

    /// The weights this run prunes, in graph order.
    fn selected(&self, g: &Graph) -> Result<Vec<Weight>, PassError> {
        let order = g
            .topo_order()
            .map_err(|_| PassError::new(PASS, "the graph has a cycle"))?;
        let mut out: Vec<Weight> = Vec::new();
        for n in order {
            let (position, reduction_first) = match g.node(n).op {
                Op::Linear | Op::Conv2d(_) => (1, false),
                Op::MatMul => (1, true),
                _ => continue,
            };
            let Some(&w) = g.operands(n).get(position) else {
                continue;
            };
            let node = g.node(w);
            let Op::Param(_) = node.op else { continue };
            let name = node.name.as_str();
            if node.ty.shape.rank() < 2
                || out.iter().any(|x| x.node == w)
                || (!self.params.is_empty() && !self.params.iter().any(|p| glob(p, name)))
                || self.exclude.iter().any(|p| glob(p, name))
            {
                continue;
            }
            out.push(Weight {
                node: w,
                layer: n,
                reduction_first,
            });
        }
        for (name, _) in &self.layer_sparsity {
            if !out.iter().any(|w| g.node(w.node).name == *name) {
                return Err(PassError::new(
                    PASS,
                    format!("`layer-sparsity` names `{name}`, which is not a selected weight"),
                ));
            }
        }
        Ok(out)
    }
}

/// A weight to prune: its param, the layer that reads it, and whether its
/// reduction runs along the first dimension (a matmul's `[k, n]`).
#[derive(Clone, Copy, Debug)]
struct Weight {
    node: NodeIndex,
    layer: NodeIndex,
    reduction_first: bool,
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// The values of a weight as a matrix with the reduction along each row:
/// `[outputs, reduction]` (a matmul's `[k, n]` comes transposed).
fn as_rows(t: &Tensor, reduction_first: bool) -> (usize, usize, Vec<f32>) {
    let (rows, cols) = lopper_ir::graph::sparsity::matrix_view(&t.shape);
    if reduction_first && t.shape.len() == 2 {
        let mut data = vec![0.0; t.data.len()];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = t.data[r * cols + c];
            }
        }
        (cols, rows, data)
    } else {
        (rows, cols, t.data.clone())
    }
}

/// The inverse of [`as_rows`]: the values back in the weight's own layout.
fn from_rows(shape: &[usize], reduction_first: bool, data: Vec<f32>) -> Tensor {
    let data = if reduction_first && shape.len() == 2 {
        let (rows, cols) = (shape[0], shape[1]);
        let mut out = vec![0.0; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = data[c * rows + r];
            }
        }
        out
    } else {
        data
    };
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// Replaces a param's values (and type): a literal of the same name.
fn set_param(g: &mut Graph, n: NodeIndex, t: Tensor) {
    let node = &mut g.graph[n];
    node.ty = TensorType::f32(Shape::from_static(&t.shape));
    node.op = Op::Param(Param::literal(t));
}

fn param_tensor(g: &Graph, n: NodeIndex) -> &Tensor {
    match &g.node(n).op {
        Op::Param(p) => &p.data,
        _ => unreachable!("selected weights are params"),
    }
}

/// The indices of the `k` smallest scores, ties broken by position.
fn smallest(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

impl Pass<Graph> for Prune {
    fn name(&self) -> &'static str {
        PASS
    }

    fn description(&self) -> &'static str {
        "prune constant weights: magnitude, N:M, block or structured (neurons and filters)"
    }

    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        let weights = self.selected(g)?;
        if weights.is_empty() {
            cx.remark("no weight matches; nothing pruned");
            return Ok(Changed::No);
        }
        let before: Vec<(String, f64)> = weights
            .iter()
            .map(|w| {
                (
                    g.node(w.node).name.clone(),
                    density(param_tensor(g, w.node)),
                )
            })
            .collect();
        match self.method {
            Method::Magnitude => magnitude::prune(self, g, &weights),
            Method::NM { n, m } => nm::prune(g, &weights, n, m),
            Method::Block { rows, cols } => block::prune(self, g, &weights, rows, cols),
            Method::Structured => return structured::prune(self, g, &weights, cx),
        }
        for (w, (name, was)) in weights.iter().zip(before) {
            let t = param_tensor(g, w.node);
            cx.remark(format!(
                "%{name} {}: density {was:.3} -> {:.3}",
                lopper_ir::Shape::from_static(&t.shape),
                density(t)
            ));
        }
        Ok(Changed::Yes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> PassOptions {
        crate::parse_pipeline(&format!("prune{{{text}}}")).expect("parses")[0]
            .options
            .clone()
    }

    #[test]
    fn globs_match_runs() {
        assert!(glob("fc*", "fc1.weight"));
        assert!(glob("*.weight", "fc1.weight"));
        assert!(glob("fc*.weight", "fc12.weight"));
        assert!(!glob("fc*.bias", "fc1.weight"));
        assert!(glob("fc1.weight", "fc1.weight"));
        assert!(!glob("fc1", "fc1.weight"));
    }

    #[test]
    fn options_are_checked() {
        let p = Prune::from_options(&options("method=nm,n=1,m=8")).expect("valid");
        assert_eq!(p.method, Method::NM { n: 1, m: 8 });
        let p = Prune::from_options(&options(
            "sparsity=0.9,layer-sparsity=[fc1.weight:0.95],exclude=[fc3.*]",
        ))
        .expect("valid");
        assert_eq!(p.sparsity_of("fc1.weight"), 0.95);
        assert_eq!(p.sparsity_of("fc2.weight"), 0.9);
        for bad in [
            "method=nm,n=4,m=4",
            "method=nm,sparsity=0.5",
            "sparsity=1.0",
            "sparsity=-0.1",
            "method=block,block=4",
            "method=lottery",
            "scope=everywhere",
            "method=magnitude,n=2",
            "method=structured,scope=global",
            "layer-sparsity=[fc1.weight]",
            "scope=global,layer-sparsity=[a:0.5]",
            "norm=l3",
            "colour=red",
        ] {
            assert!(Prune::from_options(&options(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn smallest_breaks_ties_by_position() {
        assert_eq!(smallest(&[3.0, 1.0, 1.0, 0.5], 2), vec![3, 1]);
        assert_eq!(smallest(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }
}
