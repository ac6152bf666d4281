//! The random model generator.
//!
//! A model is a list of values (inputs, params, `let`s) with their shapes,
//! and outputs. Each `let` is an expression template over earlier values
//! (`relu($0)`, `conv2d($0, $1, stride = [2, 1], ...)`), drawn so that the
//! shapes fit: the generator tracks every shape and only draws ops that
//! apply (a conv needs a 4-D value, a linear a static last dim, a pool
//! windows that each see the input). Magnitudes stay moderate (Kaiming
//! weights, `exp` of a `tanh`, powers of `sigmoid(x) + 0.5`), so that a
//! mismatch means a bug rather than an overflow.

use lopper_ir::graph::param::SplitMix64;
use std::fmt::Write;

/// A dimension: the symbolic batch `b` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dim {
    Batch,
    Fixed(usize),
}

impl Dim {
    fn fixed(self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(n),
            Dim::Batch => None,
        }
    }
}

/// How a value is defined.
#[derive(Clone, Debug)]
pub(crate) enum Definition {
    Input,
    /// A param and its initializer text (`kaiming(seed = 3)`).
    Param(String),
    /// An expression over earlier values: `$k` stands for `operands[k]`.
    Let {
        template: String,
        operands: Vec<usize>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub name: String,
    pub shape: Vec<Dim>,
    pub definition: Definition,
}

/// A generated model: its values in definition order and its outputs.
#[derive(Clone, Debug)]
pub struct Model {
    /// The seed it was drawn from.
    pub seed: u64,
    pub(crate) values: Vec<Value>,
    pub(crate) outputs: Vec<usize>,
}

impl Model {
    /// The number of `let`s the outputs depend on.
    pub fn ops(&self) -> usize {
        let live = self.live();
        self.values
            .iter()
            .enumerate()
            .filter(|(i, v)| live[*i] && matches!(v.definition, Definition::Let { .. }))
            .count()
    }

    /// Which values the outputs depend on (inputs always count).
    pub(crate) fn live(&self) -> Vec<bool> {
        let mut live = vec![false; self.values.len()];
        let mut stack = self.outputs.clone();
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut live[v], true) {
                continue;
            }
            if let Definition::Let { operands, .. } = &self.values[v].definition {
                stack.extend(operands);
            }
        }
        for (i, v) in self.values.iter().enumerate() {
            if matches!(v.definition, Definition::Input) {
                live[i] = true;
            }
        }
        live
    }

    /// The model as `.lop` text (values no output needs are left out).
    pub fn text(&self) -> String {
        let live = self.live();
        let mut out = format!("model fuzz_{} {{\n", self.seed);
        for (i, v) in self.values.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let ty = shape_text(&v.shape);
            let _ = match &v.definition {
                Definition::Input => writeln!(out, "    input {}: {ty}", v.name),
                Definition::Param(init) => writeln!(out, "    param {}: {ty} = {init}", v.name),
                Definition::Let { template, operands } => {
                    let mut expr = template.clone();
                    for (k, &o) in operands.iter().enumerate().rev() {
                        expr = expr.replace(&format!("${k}"), &self.values[o].name);
                    }
                    writeln!(out, "    let {} = {expr}", v.name)
                }
            };
        }
        for (k, &o) in self.outputs.iter().enumerate() {
            let _ = writeln!(out, "    output out{k} = {}", self.values[o].name);
        }
        out.push_str("}\n");
        out
    }
}

fn shape_text(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Batch => "b".to_string(),
            Dim::Fixed(n) => n.to_string(),
        })
        .collect();
    format!("f32[{}]", dims.join(", "))
}

/// The model drawn from `seed`: 1 or 2 inputs, 2 to 30 ops.
pub fn generate(seed: u64) -> Model {
    let mut g = Generator {
        rng: SplitMix64::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5EED),
        model: Model {
            seed,
            values: Vec::new(),
            outputs: Vec::new(),
        },
        next_seed: 1,
    };
    let inputs = if g.chance(0.3) { 2 } else { 1 };
    for _ in 0..inputs {
        let shape = g.input_shape();
        g.push(Definition::Input, shape, "x");
    }
    let target = 2 + g.below(29);
    let mut made = 0;
    let mut attempts = 0;
    while made < target && attempts < target * 40 {
        attempts += 1;
        let candidates: Vec<usize> = (0..g.model.values.len())
            .filter(|&i| !matches!(g.model.values[i].definition, Definition::Param(_)))
            .collect();
        let x = if g.chance(0.6) {
            *candidates.last().expect("an input exists")
        } else {
            candidates[g.below(candidates.len())]
        };
        if g.op(x) {
            made += 1;
        }
    }
    // Every value nothing else uses is an output, so every op is live.
    let mut used = vec![false; g.model.values.len()];
    for v in &g.model.values {
        if let Definition::Let { operands, .. } = &v.definition {
            for &o in operands {
                used[o] = true;
            }
        }
    }
    g.model.outputs = (0..g.model.values.len())
        .filter(|&i| !used[i] && matches!(g.model.values[i].definition, Definition::Let { .. }))
        .collect();
    if g.model.outputs.is_empty() {
        // No op applied (rare): one that always does.
        let x = g.model.values.len() - 1;
        let shape = g.model.values[x].shape.clone();
        let v = g.push_let("relu($0)".into(), vec![x], shape);
        g.model.outputs.push(v);
    }
    g.model
}

/// The largest value the generator makes, in elements per batch row.
const MAX_ELEMENTS: usize = 3000;

struct Generator {
    rng: SplitMix64,
    model: Model,
    next_seed: u64,
}

impl Generator {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.unit() < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed
    }

    fn push(&mut self, definition: Definition, shape: Vec<Dim>, prefix: &str) -> usize {
        let name = format!("{prefix}{}", self.model.values.len());
        self.model.values.push(Value {
            name,
            shape,
            definition,
        });
        self.model.values.len() - 1
    }

    fn push_let(&mut self, template: String, operands: Vec<usize>, shape: Vec<Dim>) -> usize {
        self.push(Definition::Let { template, operands }, shape, "v")
    }

    fn param(&mut self, shape: Vec<Dim>, init: String) -> usize {
        self.push(Definition::Param(init), shape, "p")
    }

    fn normal_param(&mut self, shape: Vec<Dim>, mean: f64, std: f64) -> usize {
        let s = self.seed();
        self.param(shape, format!("normal({mean}, {std}, seed = {s})"))
    }

    fn kaiming_param(&mut self, shape: Vec<Dim>) -> usize {
        let s = self.seed();
        self.param(shape, format!("kaiming(seed = {s})"))
    }

    fn input_shape(&mut self) -> Vec<Dim> {
        let batch = if self.chance(0.85) {
            Dim::Batch
        } else {
            Dim::Fixed(self.range(1, 3))
        };
        let odd = [1, 2, 3, 5, 7, 8, 9, 16, 17, 33];
        match self.below(3) {
            0 => vec![batch, Dim::Fixed(self.pick(&odd))],
            1 => vec![
                batch,
                Dim::Fixed(self.range(1, 6)),
                Dim::Fixed(self.pick(&odd)),
            ],
            _ => vec![
                batch,
                Dim::Fixed(self.pick(&[1, 2, 3, 4, 6])),
                Dim::Fixed(self.range(1, 9)),
                Dim::Fixed(self.range(1, 9)),
            ],
        }
    }

    /// Draws one op on value `x`; false when the drawn op does not apply.
    fn op(&mut self, x: usize) -> bool {
        let shape = self.model.values[x].shape.clone();
        // Half the time a pooling straight after a wide convolution
        // (LeNet's shape), which then pools channels-last too.
        let wide_conv = matches!(&self.model.values[x].definition,
            Definition::Let { template, .. } if template.starts_with("conv2d"))
            && shape.get(1).and_then(|c| c.fixed()).is_some_and(|c| c >= 4);
        let drawn = if wide_conv && self.chance(0.5) {
            9
        } else {
            self.below(17)
        };
        let made = match drawn {
            0..=2 => self.unary(x, &shape),
            3..=5 => self.binary(x, &shape),
            6 => self.linear(x, &shape),
            7 => self.matmul(x, &shape),
            8 => self.conv(x, &shape),
            9 => self.pool(x, &shape),
            10 => self.reshaping(x, &shape),
            11 => self.slice_or_concat(x, &shape),
            12 => self.normalization(x, &shape),
            13 => self.softmax(x, &shape),
            14 => self.reduce(x, &shape),
            15 => self.transpose(x, &shape),
            _ => self.global_pool(x, &shape),
        };
        made.is_some()
    }

    fn fits(shape: &[Dim]) -> bool {
        shape.iter().filter_map(|d| d.fixed()).product::<usize>() <= MAX_ELEMENTS
    }

    fn emit(&mut self, template: String, operands: Vec<usize>, shape: Vec<Dim>) -> Option<()> {
        if !Self::fits(&shape) || shape.contains(&Dim::Fixed(0)) {
            return None;
        }
        self.push_let(template, operands, shape);
        Some(())
    }

    fn unary(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let template = match self.below(11) {
            0 => "relu($0)".to_string(),
            1 => "sigmoid($0)".into(),
            2 => "tanh($0)".into(),
            3 => "gelu($0)".into(),
            4 => "erf($0)".into(),
            5 => "identity($0)".into(),
            6 => "exp(tanh($0))".into(),
            7 => "sqrt(sigmoid($0))".into(),
            8 => "-$0".into(),
            _ => {
                let e = self.pick(&["2", "3", "-1", "0.5", "-0.5", "1.5", "2.7", "-2", "4"]);
                format!("pow(sigmoid($0) + 0.5, exponent = {e})")
            }
        };
        self.emit(template, vec![x], shape.to_vec())
    }

    fn binary(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let ops = [
            "$0 + $1",
            "$0 - $1",
            "$0 * $1",
            "$1 - $0",
            "$0 / (sigmoid($1) + 0.5)",
            "pow(sigmoid($0) + 0.5, tanh($1))",
        ];
        let op = self.pick(&ops).to_string();
        let same: Vec<usize> = (0..self.model.values.len())
            .filter(|&i| {
                self.model.values[i].shape == shape
                    && !matches!(self.model.values[i].definition, Definition::Param(_))
            })
            .collect();
        // `x - x` is exactly zero, and a normalization of constant rows
        // magnifies rounding without bound: subtract other values only.
        let subtracts = op.contains('-');
        let same: Vec<usize> = same
            .into_iter()
            .filter(|&i| !(subtracts && i == x))
            .collect();
        let other = match self.below(3) {
            0 if !same.is_empty() => same[self.below(same.len())],
            0 => return None,
            1 => {
                // A param that broadcasts into x: some dims 1, maybe fewer dims.
                let drop = if self.chance(0.3) {
                    self.below(shape.len())
                } else {
                    0
                };
                let mut p: Vec<Dim> = Vec::new();
                for &d in &shape[drop..] {
                    p.push(match d {
                        Dim::Batch => Dim::Fixed(1),
                        Dim::Fixed(n) if self.chance(0.4) => Dim::Fixed(n.min(1)),
                        fixed => fixed,
                    });
                }
                self.normal_param(p, 0.0, 1.0)
            }
            _ => {
                let c = self.pick(&["0.5", "1.5", "2", "0.25", "3"]);
                let template = op.replace("$1", c);
                return self.emit(template, vec![x], shape.to_vec());
            }
        };
        self.emit(op, vec![x, other], shape.to_vec())
    }

    fn linear(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let k = shape.last()?.fixed()?;
        let n = self.pick(&[1, 2, 3, 5, 7, 8, 16, 17, 31]);
        let w = self.kaiming_param(vec![Dim::Fixed(n), Dim::Fixed(k)]);
        let mut out = shape.to_vec();
        *out.last_mut()? = Dim::Fixed(n);
        if self.chance(0.5) {
            let b = self.normal_param(vec![Dim::Fixed(n)], 0.0, 0.1);
            self.emit("linear($0, $1, $2)".into(), vec![x, w, b], out)
        } else {
            self.emit("linear($0, $1)".into(), vec![x, w], out)
        }
    }

    fn matmul(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let r = shape.len();
        if r < 2 {
            return None;
        }
        let k = shape[r - 1].fixed()?;
        if r >= 3 && self.chance(0.4) {
            // x @ xᵀ over the last two dims.
            let m = shape[r - 2];
            m.fixed()?;
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 1, r - 2);
            let perm: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
            let mut out = shape.to_vec();
            out[r - 1] = m;
            return self.emit(
                format!("$0 @ transpose($0, perm = [{}])", perm.join(", ")),
                vec![x],
                out,
            );
        }
        let n = self.pick(&[1, 3, 4, 9, 16, 19]);
        let w = self.normal_param(vec![Dim::Fixed(k), Dim::Fixed(n)], 0.0, 0.3);
        let mut out = shape.to_vec();
        out[r - 1] = Dim::Fixed(n);
        self.emit("$0 @ $1".into(), vec![x, w], out)
    }

    fn conv(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let [n, c, h, w] = shape else { return None };
        let (c, h, w) = (c.fixed()?, h.fixed()?, w.fixed()?);
        let divisors: Vec<usize> = (1..=c).filter(|&g| c.is_multiple_of(g)).collect();
        let groups = self.pick(&divisors);
        // Now and then as many filters as a vector has lanes or more, so
        // that a convolution (and a pooling after it) is computed
        // channels-last.
        let out_channels = if groups == 1 && self.chance(0.3) {
            self.pick(&[4, 8, 16])
        } else {
            groups * self.range(1, 3)
        };
        for _ in 0..8 {
            let kernel = [self.range(1, 3), self.range(1, 3)];
            let stride = [self.range(1, 2), self.range(1, 2)];
            let dilation = [self.range(1, 2), self.range(1, 2)];
            let pad = [
                self.range(0, 2),
                self.range(0, 2),
                self.range(0, 2),
                self.range(0, 2),
            ];
            let out = |extent: usize, k: usize, s: usize, d: usize, p: usize| {
                let span = d * (k - 1) + 1;
                (extent + p >= span).then(|| (extent + p - span) / s + 1)
            };
            let (Some(oh), Some(ow)) = (
                out(h, kernel[0], stride[0], dilation[0], pad[0] + pad[2]),
                out(w, kernel[1], stride[1], dilation[1], pad[1] + pad[3]),
            ) else {
                continue;
            };
            let weight = self.kaiming_param(vec![
                Dim::Fixed(out_channels),
                Dim::Fixed(c / groups),
                Dim::Fixed(kernel[0]),
                Dim::Fixed(kernel[1]),
            ]);
            let attrs = format!(
                "stride = [{}, {}], padding = [{}, {}, {}, {}], dilation = [{}, {}], groups = {groups}",
                stride[0], stride[1], pad[0], pad[1], pad[2], pad[3], dilation[0], dilation[1]
            );
            let out_shape = vec![*n, Dim::Fixed(out_channels), Dim::Fixed(oh), Dim::Fixed(ow)];
            return if self.chance(0.5) {
                let b = self.normal_param(vec![Dim::Fixed(out_channels)], 0.0, 0.1);
                self.emit(
                    format!("conv2d($0, $1, $2, {attrs})"),
                    vec![x, weight, b],
                    out_shape,
                )
            } else {
                self.emit(
                    format!("conv2d($0, $1, {attrs})"),
                    vec![x, weight],
                    out_shape,
                )
            };
        }
        None
    }

    fn pool(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let [n, c, h, w] = shape else { return None };
        let (h, w) = (h.fixed()?, w.fixed()?);
        for _ in 0..8 {
            let kernel = [self.range(1, 3), self.range(1, 3)];
            let stride = [self.range(1, 3), self.range(1, 3)];
            let dilation = [self.range(1, 2), self.range(1, 2)];
            let pad = [
                self.range(0, 1),
                self.range(0, 1),
                self.range(0, 1),
                self.range(0, 1),
            ];
            let (Some(oh), Some(ow)) = (
                pooled(h, kernel[0], stride[0], dilation[0], pad[0], pad[2]),
                pooled(w, kernel[1], stride[1], dilation[1], pad[1], pad[3]),
            ) else {
                continue;
            };
            let op = if self.chance(0.5) {
                "max_pool2d"
            } else {
                "avg_pool2d"
            };
            let template = format!(
                "{op}($0, kernel = [{}, {}], stride = [{}, {}], padding = [{}, {}, {}, {}], dilation = [{}, {}])",
                kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1], pad[2], pad[3], dilation[0], dilation[1]
            );
            return self.emit(
                template,
                vec![x],
                vec![*n, *c, Dim::Fixed(oh), Dim::Fixed(ow)],
            );
        }
        None
    }

    fn global_pool(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let [n, c, _, _] = shape else { return None };
        self.emit(
            "global_avg_pool($0)".into(),
            vec![x],
            vec![*n, *c, Dim::Fixed(1), Dim::Fixed(1)],
        )
    }

    fn reshaping(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let first = shape.first()?;
        let rest: Option<Vec<usize>> = shape[1..].iter().map(|d| d.fixed()).collect();
        let rest = rest?;
        let total: usize = rest.iter().product();
        let lead = match first {
            Dim::Batch => "b".to_string(),
            Dim::Fixed(n) => n.to_string(),
        };
        if shape.len() >= 3 {
            let template = if self.chance(0.5) {
                "flatten($0)".to_string()
            } else {
                format!("reshape($0, shape = [{lead}, -1])")
            };
            return self.emit(template, vec![x], vec![*first, Dim::Fixed(total)]);
        }
        let divisors: Vec<usize> = (2..total).filter(|&a| total.is_multiple_of(a)).collect();
        if shape.len() != 2 || divisors.is_empty() {
            return None;
        }
        let a = self.pick(&divisors);
        self.emit(
            format!("reshape($0, shape = [{lead}, {a}, -1])"),
            vec![x],
            vec![*first, Dim::Fixed(a), Dim::Fixed(total / a)],
        )
    }

    fn transpose(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let r = shape.len();
        if r < 3 {
            return None;
        }
        let mut rest: Vec<usize> = (1..r).collect();
        for i in (1..rest.len()).rev() {
            let j = self.below(i + 1);
            rest.swap(i, j);
        }
        let perm: Vec<usize> = std::iter::once(0).chain(rest).collect();
        let out: Vec<Dim> = perm.iter().map(|&p| shape[p]).collect();
        let text: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
        self.emit(
            format!("transpose($0, perm = [{}])", text.join(", ")),
            vec![x],
            out,
        )
    }

    fn static_axes(shape: &[Dim], min_extent: usize) -> Vec<usize> {
        (0..shape.len())
            .filter(|&a| shape[a].fixed().is_some_and(|n| n >= min_extent))
            .collect()
    }

    fn slice_or_concat(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        if self.chance(0.5) {
            let axes = Self::static_axes(shape, 2);
            if axes.is_empty() {
                return None;
            }
            let axis = self.pick(&axes);
            let extent = shape[axis].fixed()?;
            let start = self.below(extent - 1);
            let end = self.range(start + 1, extent);
            let end_text = if end < extent && self.chance(0.5) {
                format!("-{}", extent - end)
            } else {
                end.to_string()
            };
            let mut out = shape.to_vec();
            out[axis] = Dim::Fixed(end - start);
            return self.emit(
                format!("slice($0, axis = {axis}, start = {start}, end = {end_text})"),
                vec![x],
                out,
            );
        }
        let axes = Self::static_axes(shape, 1);
        if axes.is_empty() {
            return None;
        }
        let axis = self.pick(&axes);
        let partners: Vec<usize> = (0..self.model.values.len())
            .filter(|&i| {
                let s = &self.model.values[i].shape;
                !matches!(self.model.values[i].definition, Definition::Param(_))
                    && s.len() == shape.len()
                    && (0..s.len()).all(|d| d == axis || s[d] == shape[d])
                    && s[axis].fixed().is_some()
            })
            .collect();
        let other = partners[self.below(partners.len())];
        let mut out = shape.to_vec();
        out[axis] =
            Dim::Fixed(shape[axis].fixed()? + self.model.values[other].shape[axis].fixed()?);
        let axis_text = if self.chance(0.3) {
            format!("{}", axis as i64 - shape.len() as i64)
        } else {
            axis.to_string()
        };
        self.emit(
            format!("concat($0, $1, axis = {axis_text})"),
            vec![x, other],
            out,
        )
    }

    /// The op that computed `x`, looking through ops that only move or
    /// negate values (`identity`, `-`, `reshape`, `transpose`, ...).
    fn origin(&self, x: usize) -> &str {
        let mut v = x;
        loop {
            let Definition::Let { template, operands } = &self.model.values[v].definition else {
                return "";
            };
            let moves = [
                "identity(",
                "-$0",
                "reshape(",
                "transpose($0",
                "flatten(",
                "slice(",
            ];
            if moves.iter().any(|m| template.starts_with(m)) {
                v = operands[0];
            } else {
                return template;
            }
        }
    }

    /// Whether `x` may come out of a normalization (rows of sum 0, or of
    /// almost equal values), where a further normalization or a sum is so
    /// ill-conditioned that f32 rounding decides the result.
    fn normalized(&self, x: usize) -> bool {
        let o = self.origin(x);
        [
            "softmax",
            "log_softmax",
            "layer_norm",
            "batch_norm",
            "sum(",
            "mean(",
        ]
        .iter()
        .any(|n| o.starts_with(n))
    }

    fn normalization(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        if self.normalized(x) {
            return None;
        }
        let r = shape.len();
        if self.chance(0.5) {
            // layer_norm over the static dims from some axis on.
            let first = (1..r)
                .rev()
                .take_while(|&a| shape[a].fixed().is_some())
                .last()?;
            let axis = self.range(first, r - 1);
            let normalized = shape[axis..].to_vec();
            if self.chance(0.3) {
                return self.emit(
                    format!("layer_norm($0, axis = {axis})"),
                    vec![x],
                    shape.to_vec(),
                );
            }
            let w = self.normal_param(normalized.clone(), 1.0, 0.1);
            let b = self.normal_param(normalized, 0.0, 0.1);
            return self.emit(
                format!("layer_norm($0, $1, $2, axis = {axis})"),
                vec![x, w, b],
                shape.to_vec(),
            );
        }
        let c = shape.get(1)?.fixed()?;
        let scale = self.normal_param(vec![Dim::Fixed(c)], 1.0, 0.1);
        let bias = self.normal_param(vec![Dim::Fixed(c)], 0.0, 0.1);
        let mean = self.normal_param(vec![Dim::Fixed(c)], 0.0, 0.1);
        let s = self.seed();
        let var = self.param(vec![Dim::Fixed(c)], format!("uniform(0.5, 2, seed = {s})"));
        self.emit(
            "batch_norm($0, $1, $2, $3, $4)".into(),
            vec![x, scale, bias, mean, var],
            shape.to_vec(),
        )
    }

    fn softmax(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        // Over a single element softmax is the constant 1, and a later
        // normalization of constant rows is decided by f32 rounding.
        let axes = Self::static_axes(shape, 2);
        let axis = *axes.get(self.below(axes.len().max(1)))?;
        let op = if self.chance(0.5) {
            "softmax"
        } else {
            "log_softmax"
        };
        self.emit(format!("{op}($0, axis = {axis})"), vec![x], shape.to_vec())
    }

    fn reduce(&mut self, x: usize, shape: &[Dim]) -> Option<()> {
        let axes: Vec<usize> = Self::static_axes(shape, 1)
            .into_iter()
            .filter(|&a| a > 0)
            .collect();
        if axes.is_empty() {
            return None;
        }
        let chosen: Vec<usize> = {
            let mut c: Vec<usize> = axes.iter().copied().filter(|_| self.chance(0.5)).collect();
            if c.is_empty() {
                c.push(self.pick(&axes));
            }
            c
        };
        let keep = self.chance(0.5);
        let mut out = Vec::new();
        for (d, &dim) in shape.iter().enumerate() {
            if !chosen.contains(&d) {
                out.push(dim);
            } else if keep {
                out.push(Dim::Fixed(1));
            }
        }
        let op = if self.normalized(x) {
            "max"
        } else {
            self.pick(&["sum", "mean", "max"])
        };
        let text: Vec<String> = chosen.iter().map(|a| a.to_string()).collect();
        self.emit(
            format!("{op}($0, axes = [{}], keepdims = {keep})", text.join(", ")),
            vec![x],
            out,
        )
    }
}

/// The output size of a pooling window over `extent` cells, if every window
/// sees at least one of them.
fn pooled(
    extent: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    begin: usize,
    end: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    if begin >= span || end >= span || extent + begin + end < span {
        return None;
    }
    let outputs = (extent + begin + end - span) / stride + 1;
    let all_see_input = (0..outputs).all(|o| {
        (0..kernel).any(|k| {
            let at = (o * stride + k * dilation) as i64 - begin as i64;
            (0..extent as i64).contains(&at)
        })
    });
    all_see_input.then_some(outputs)
}
