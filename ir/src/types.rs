//! Data types, dimensions and shapes of graph values.
//!
//! A dimension is either a static extent or a symbolic size (`batch`) bound at
//! run time. [`Size`] is a product of a constant and symbols: the element count
//! of a shape, a FLOP count, or the extent a `reshape` infers for `-1`.

use std::collections::BTreeMap;
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float: the type every op computes in.
    F32,
    /// 64-bit signed integer: labels and indices in data files.
    I64,
    /// 32-bit signed integer: a loop-IR index array whose values fit.
    I32,
    /// 16-bit signed integer: a loop-IR index array whose values fit.
    I16,
    /// 8-bit signed integer: a loop-IR index array whose values fit.
    I8,
}

impl DType {
    /// The name used in both text formats.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
        }
    }

    /// Parses a dtype name (`f32`, `i64`, `i32`, `i16`, `i8`).
    pub fn from_name(name: &str) -> Option<DType> {
        match name {
            "f32" => Some(DType::F32),
            "i64" => Some(DType::I64),
            "i32" => Some(DType::I32),
            "i16" => Some(DType::I16),
            "i8" => Some(DType::I8),
            _ => None,
        }
    }

    /// The size of one element in bytes.
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::I16 => 2,
            DType::I8 => 1,
        }
    }

    /// True for the integer types.
    pub fn is_integer(self) -> bool {
        self != DType::F32
    }

    /// True if the integer type holds `value` (false for `f32`).
    pub fn holds(self, value: i64) -> bool {
        match self {
            DType::F32 => false,
            DType::I64 => true,
            DType::I32 => i32::try_from(value).is_ok(),
            DType::I16 => i16::try_from(value).is_ok(),
            DType::I8 => i8::try_from(value).is_ok(),
        }
    }

    /// The narrowest integer type that holds every one of `values`.
    pub fn narrowest_holding(values: &[i64]) -> DType {
        let (lo, hi) = values
            .iter()
            .fold((0, 0), |(lo, hi), &v| (v.min(lo), v.max(hi)));
        [DType::I8, DType::I16, DType::I32]
            .into_iter()
            .find(|t| t.holds(lo) && t.holds(hi))
            .unwrap_or(DType::I64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension: a static extent or a named symbolic size.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Known at compile time.
    Static(usize),
    /// Bound at run time, for example `batch`.
    Symbol(String),
}

impl Dim {
    /// The static extent, if known.
    pub fn as_static(&self) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Symbol(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// The dimensions of a tensor, outermost first (row-major).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of static extents.
    pub fn from_static(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The static extents, if every dimension is static.
    pub fn as_static(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    /// The element count as a symbolic product; `None` on overflow.
    pub fn numel(&self) -> Option<Size> {
        let mut size = Size::constant(1);
        for d in &self.0 {
            size = size.mul(&Size::of_dim(d))?;
        }
        Some(size)
    }

    /// Substitutes run-time bindings for the symbols.
    pub fn bind(&self, bindings: &BTreeMap<String, usize>) -> Result<Vec<usize>, String> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Ok(*n),
                Dim::Symbol(s) => bindings
                    .get(s)
                    .copied()
                    .ok_or_else(|| format!("symbolic size `{s}` is not bound")),
            })
            .collect()
    }

    /// Resolves a possibly negative axis against this rank.
    pub fn axis(&self, axis: i64) -> Result<usize, String> {
        normalize_axis(axis, self.rank())
    }
}

/// Resolves a possibly negative axis (`-1` is the last) against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    } else {
        Ok(a as usize)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: dtype and shape, printed `f32[batch,784]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Shape,
}

impl TensorType {
    /// An `f32` tensor of the given shape.
    pub fn f32(shape: Shape) -> TensorType {
        TensorType {
            dtype: DType::F32,
            shape,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// A product `constant × symbol × symbol …`: element counts, FLOPs, bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size {
    /// The constant factor.
    pub constant: u64,
    /// The symbolic factors, sorted, with repetition.
    pub symbols: Vec<String>,
}

impl Size {
    /// A constant size.
    pub fn constant(n: u64) -> Size {
        Size {
            constant: n,
            symbols: Vec::new(),
        }
    }

    /// The size of one dimension.
    pub fn of_dim(d: &Dim) -> Size {
        match d {
            Dim::Static(n) => Size::constant(*n as u64),
            Dim::Symbol(s) => Size {
                constant: 1,
                symbols: vec![s.clone()],
            },
        }
    }

    /// The product; `None` if the constant overflows.
    pub fn mul(&self, other: &Size) -> Option<Size> {
        let mut symbols = self.symbols.clone();
        symbols.extend(other.symbols.iter().cloned());
        symbols.sort();
        Some(Size {
            constant: self.constant.checked_mul(other.constant)?,
            symbols,
        })
    }

    /// Multiplies by a constant; `None` on overflow.
    pub fn scale(&self, k: u64) -> Option<Size> {
        self.mul(&Size::constant(k))
    }

    /// Exact quotient `self / other`, if `other` divides `self`.
    pub fn div_exact(&self, other: &Size) -> Option<Size> {
        if other.constant == 0 || !self.constant.is_multiple_of(other.constant) {
            return None;
        }
        let mut rest = self.symbols.clone();
        for s in &other.symbols {
            let at = rest.iter().position(|r| r == s)?;
            rest.remove(at);
        }
        Some(Size {
            constant: self.constant / other.constant,
            symbols: rest,
        })
    }

    /// The value with every symbol bound.
    pub fn eval(&self, bindings: &BTreeMap<String, usize>) -> Option<u64> {
        let mut v = self.constant;
        for s in &self.symbols {
            v = v.checked_mul(*bindings.get(s)? as u64)?;
        }
        Some(v)
    }

    /// This size as a single dimension: static, or one bare symbol.
    pub fn as_dim(&self) -> Option<Dim> {
        match (self.constant, self.symbols.as_slice()) {
            (n, []) => Some(Dim::Static(n as usize)),
            (1, [s]) => Some(Dim::Symbol(s.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for Size {
    /// Human form with SI prefixes: `2.4M`, `470.6K·batch`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.constant as f64;
        let text = if n >= 1e9 {
            format!("{:.2}G", n / 1e9)
        } else if n >= 1e6 {
            format!("{:.2}M", n / 1e6)
        } else if n >= 1e4 {
            format!("{:.1}K", n / 1e3)
        } else {
            format!("{}", self.constant)
        };
        f.write_str(&text)?;
        for s in &self.symbols {
            write!(f, "·{s}")?;
        }
        Ok(())
    }
}

/// Adds sizes with the same symbols; keeps one term per symbol set.
pub fn sum_sizes<'a>(sizes: impl IntoIterator<Item = &'a Size>) -> Vec<Size> {
    let mut terms: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for s in sizes {
        let e = terms.entry(s.symbols.clone()).or_insert(0);
        *e = e.saturating_add(s.constant);
    }
    terms
        .into_iter()
        .map(|(symbols, constant)| Size { constant, symbols })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_arrays_take_the_narrowest_type_that_holds_them() {
        assert_eq!(DType::narrowest_holding(&[]), DType::I8);
        assert_eq!(DType::narrowest_holding(&[0, 127]), DType::I8);
        assert_eq!(DType::narrowest_holding(&[-129, 3]), DType::I16);
        assert_eq!(DType::narrowest_holding(&[0, 783]), DType::I16);
        assert_eq!(DType::narrowest_holding(&[40_000]), DType::I32);
        assert_eq!(DType::narrowest_holding(&[1 << 40]), DType::I64);
        assert!(!DType::I8.holds(128) && DType::I16.holds(-32_768));
        assert!(!DType::F32.holds(0));
        for t in [DType::I8, DType::I16, DType::I32, DType::I64] {
            assert_eq!(DType::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn size_division_cancels_symbols() {
        let total = Shape(vec![
            Dim::Symbol("batch".into()),
            Dim::Static(64),
            Dim::Static(384),
        ])
        .numel()
        .unwrap();
        let known = Shape(vec![Dim::Symbol("batch".into()), Dim::Static(64)])
            .numel()
            .unwrap();
        assert_eq!(total.div_exact(&known), Some(Size::constant(384)));
        assert_eq!(Size::constant(10).div_exact(&Size::constant(3)), None);
    }

    #[test]
    fn negative_axis_resolves() {
        assert_eq!(normalize_axis(-1, 3), Ok(2));
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
    }
}
