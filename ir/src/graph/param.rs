//! Params: constant tensors with the record of where their data came from.
//!
//! A param's data is loaded once and shared (`Arc`) by every copy of the
//! graph; passes that make new constants (folding) record them as literals.
//! The source is what the printer writes, so a printed graph parses back to
//! the same data: a weights file and tensor name, a seeded initializer, or the
//! values themselves (in decimal up to 16 elements, in hex bits beyond).

use super::op::{AttrError, AttrValue};
use super::sparsity::Sparsity;
use super::weights::WeightFiles;
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::sync::Arc;

/// The largest param, in elements (1 GiB of f32): params are loaded and
/// embedded whole, so a larger one is refused rather than allocated.
pub const MAX_PARAM_ELEMENTS: usize = 1 << 28;

/// Literals with more elements than this print as hex bits.
const DECIMAL_LITERAL_LIMIT: usize = 16;

/// A seeded initializer, for experiments without a weights file.
#[derive(Clone, Debug, PartialEq)]
pub enum Initializer {
    /// All 0.
    Zeros,
    /// All 1.
    Ones,
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Generator seed.
        seed: u64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Generator seed.
        seed: u64,
    },
    /// He (Kaiming) normal: mean 0, std `sqrt(2 / fan_in)`, with `fan_in`
    /// the product of all dims but the first.
    Kaiming {
        /// Generator seed.
        seed: u64,
    },
}

impl Initializer {
    /// The initializer's name in text.
    pub fn name(&self) -> &'static str {
        match self {
            Initializer::Zeros => "zeros",
            Initializer::Ones => "ones",
            Initializer::Uniform { .. } => "uniform",
            Initializer::Normal { .. } => "normal",
            Initializer::Kaiming { .. } => "kaiming",
        }
    }

    /// The names of the initializer's arguments, positional order.
    pub fn arg_names(name: &str) -> Option<&'static [&'static str]> {
        Some(match name {
            "zeros" | "ones" => &[],
            "uniform" => &["low", "high", "seed"],
            "normal" => &["mean", "std", "seed"],
            "kaiming" => &["seed"],
            _ => return None,
        })
    }

    /// Builds an initializer from its name and named arguments.
    pub fn from_args(name: &str, args: &[(String, AttrValue)]) -> Result<Initializer, AttrError> {
        let allowed = Initializer::arg_names(name).ok_or_else(|| AttrError {
            attr: None,
            message: format!(
                "unknown initializer `{name}`; expected one of: zeros, ones, uniform, normal, kaiming"
            ),
        })?;
        for (k, _) in args {
            if !allowed.contains(&k.as_str()) {
                return Err(AttrError {
                    attr: Some(k.clone()),
                    message: format!("`{name}` has no argument `{k}`"),
                });
            }
        }
        let float = |k: &str, default: f64| -> Result<f64, AttrError> {
            match args.iter().find(|(n, _)| n == k).map(|(_, v)| v) {
                None => Ok(default),
                Some(AttrValue::Int(v)) => Ok(*v as f64),
                Some(AttrValue::Float(v)) if v.is_finite() => Ok(*v),
                Some(_) => Err(AttrError {
                    attr: Some(k.into()),
                    message: format!("`{k}` must be a finite number"),
                }),
            }
        };
        let seed = match args.iter().find(|(n, _)| n == "seed").map(|(_, v)| v) {
            None => 0,
            Some(AttrValue::Int(v)) if *v >= 0 => *v as u64,
            Some(_) => {
                return Err(AttrError {
                    attr: Some("seed".into()),
                    message: "`seed` must be a non-negative integer".into(),
                })
            }
        };
        Ok(match name {
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "uniform" => {
                let (low, high) = (float("low", -1.0)?, float("high", 1.0)?);
                if low >= high {
                    return Err(AttrError {
                        attr: Some("high".into()),
                        message: format!("`uniform` needs low < high, got {low} and {high}"),
                    });
                }
                Initializer::Uniform { low, high, seed }
            }
            "normal" => {
                let std = float("std", 1.0)?;
                if std < 0.0 {
                    return Err(AttrError {
                        attr: Some("std".into()),
                        message: "`std` must not be negative".into(),
                    });
                }
                Initializer::Normal {
                    mean: float("mean", 0.0)?,
                    std,
                    seed,
                }
            }
            _ => Initializer::Kaiming { seed },
        })
    }

    /// The initializer's arguments, in printing order.
    pub fn args(&self) -> Vec<(&'static str, AttrValue)> {
        match self {
            Initializer::Zeros | Initializer::Ones => vec![],
            Initializer::Uniform { low, high, seed } => vec![
                ("low", AttrValue::Float(*low)),
                ("high", AttrValue::Float(*high)),
                ("seed", AttrValue::Int(*seed as i64)),
            ],
            Initializer::Normal { mean, std, seed } => vec![
                ("mean", AttrValue::Float(*mean)),
                ("std", AttrValue::Float(*std)),
                ("seed", AttrValue::Int(*seed as i64)),
            ],
            Initializer::Kaiming { seed } => vec![("seed", AttrValue::Int(*seed as i64))],
        }
    }

    /// Generates the values for a static shape, refusing more than
    /// [`MAX_INITIALIZED_ELEMENTS`].
    pub fn generate(&self, shape: &[usize]) -> Result<Tensor, String> {
        let n = crate::tensor::checked_numel(shape)
            .filter(|&n| n <= MAX_INITIALIZED_ELEMENTS)
            .ok_or_else(|| {
                format!(
                    "an initializer makes at most {MAX_INITIALIZED_ELEMENTS} values (256 MiB); \
                     larger weights belong in a weights file"
                )
            })?;
        let data = match self {
            Initializer::Zeros => vec![0.0; n],
            Initializer::Ones => vec![1.0; n],
            Initializer::Uniform { low, high, seed } => {
                let mut rng = SplitMix64::new(*seed);
                (0..n)
                    .map(|_| (low + (high - low) * rng.unit()) as f32)
                    .collect()
            }
            Initializer::Normal { mean, std, seed } => {
                let mut rng = SplitMix64::new(*seed);
                (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
            }
            Initializer::Kaiming { seed } => {
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let std = (2.0 / fan_in as f64).sqrt();
                let mut rng = SplitMix64::new(*seed);
                (0..n).map(|_| (std * rng.normal()) as f32).collect()
            }
        };
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// The most values an initializer generates: 2^26 (256 MiB of f32).
pub const MAX_INITIALIZED_ELEMENTS: usize = 1 << 26;

/// A small seeded generator (SplitMix64): reproducible on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Where a param's data came from.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamSource {
    /// A tensor of a safetensors file (path as written, tensor name).
    File {
        /// The file's path, relative to the working directory or absolute.
        path: String,
        /// The tensor's name in the file.
        tensor: String,
    },
    /// A seeded initializer.
    Init(Initializer),
    /// Values held in the IR text (written by folding passes or by hand).
    Literal,
    /// Another param's values in a tiled layout (what the `pack` loop pass
    /// makes): dimension `dim` split into tiles of `size`, the tile moved
    /// last, zero-padded ([`pack_tensor`]).
    Packed {
        /// Where the unpacked values come from.
        of: Box<ParamSource>,
        /// The unpacked shape.
        source_shape: Vec<usize>,
        /// The split dimension.
        dim: usize,
        /// The tile size.
        size: usize,
    },
}

/// The shape of a tensor of shape `shape` packed along `dim` by `size`:
/// `[ceil(n / size), the other dimensions in order, size]`, so that each
/// tile of `size` along `dim` is one contiguous panel.
pub fn packed_shape(shape: &[usize], dim: usize, size: usize) -> Vec<usize> {
    let mut out = vec![shape[dim].div_ceil(size)];
    out.extend(
        shape
            .iter()
            .enumerate()
            .filter(|&(d, _)| d != dim)
            .map(|(_, &n)| n),
    );
    out.push(size);
    out
}

/// Where element `index` of a tensor of shape `shape` goes when packed along
/// `dim` by `size`, as a flat offset into [`packed_shape`].
fn packed_offset(shape: &[usize], index: &[usize], dim: usize, size: usize) -> usize {
    let mut flat = index[dim] / size;
    for (d, (&i, &n)) in index.iter().zip(shape).enumerate() {
        if d != dim {
            flat = flat * n + i;
        }
    }
    flat * size + index[dim] % size
}

/// `t` packed along `dim` by `size` ([`packed_shape`]): element
/// `[.., i, ..]` moves to `[i / size, .., i % size]`; the padding of the
/// last panel is zero.
pub fn pack_tensor(t: &Tensor, dim: usize, size: usize) -> Tensor {
    let shape = packed_shape(&t.shape, dim, size);
    let mut data = vec![0.0; shape.iter().product()];
    for_each_index(&t.shape, |flat, index| {
        data[packed_offset(&t.shape, index, dim, size)] = t.data[flat];
    });
    Tensor { shape, data }
}

/// Calls `f` with the flat offset and the index of every element, in order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let n: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    for flat in 0..n {
        f(flat, &index);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// A constant tensor and its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// The values, shared between copies of the graph.
    pub data: Arc<Tensor>,
    /// How to print it.
    pub source: ParamSource,
    /// What `analyze-sparsity` measured and chose (printed as
    /// `density = 0.100, format = "csr"`).
    pub sparsity: Option<Sparsity>,
}

impl Param {
    /// A literal param holding `tensor`.
    pub fn literal(tensor: Tensor) -> Param {
        Param {
            data: Arc::new(tensor),
            source: ParamSource::Literal,
            sparsity: None,
        }
    }

    /// The attributes the printer writes: the source, then the sparsity.
    pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
        let mut v = self.source_attrs();
        if let Some(s) = &self.sparsity {
            v.push(("density", AttrValue::Str(format!("{:.3}", s.density))));
            v.push(("format", AttrValue::Str(s.format.to_string())));
            if let Some(panel) = s.panel {
                v.push(("panel", AttrValue::Int(panel as i64)));
            }
            if let Some(accumulators) = s.accumulators {
                v.push(("accumulators", AttrValue::Int(accumulators as i64)));
            }
            if s.batch_outer {
                v.push(("batch_outer", AttrValue::Ident("true".into())));
            }
        }
        v
    }

    /// The attributes that say where the values come from.
    fn source_attrs(&self) -> Vec<(&'static str, AttrValue)> {
        if let ParamSource::Packed {
            of,
            source_shape,
            dim,
            size,
        } = &self.source
        {
            // Print the source and how to pack it, not the packed values.
            let unpacked = Param {
                data: Arc::new(Tensor {
                    shape: source_shape.clone(),
                    data: unpack_tensor(&self.data, source_shape, *dim, *size),
                }),
                source: (**of).clone(),
                sparsity: None,
            };
            let mut v = unpacked.source_attrs();
            v.push((
                "packed_from",
                AttrValue::List(
                    source_shape
                        .iter()
                        .map(|&d| AttrValue::Int(d as i64))
                        .collect(),
                ),
            ));
            v.push(("packed_dim", AttrValue::Int(*dim as i64)));
            v.push(("packed_size", AttrValue::Int(*size as i64)));
            return v;
        }
        match &self.source {
            ParamSource::Packed { .. } => unreachable!("handled above"),
            ParamSource::File { path, tensor } => vec![
                ("file", AttrValue::Str(path.clone())),
                ("tensor", AttrValue::Str(tensor.clone())),
            ],
            ParamSource::Init(init) => {
                let mut v = vec![("init", AttrValue::Str(init.name().into()))];
                v.extend(init.args());
                v
            }
            ParamSource::Literal if self.data.numel() <= DECIMAL_LITERAL_LIMIT => vec![(
                "data",
                AttrValue::List(
                    self.data
                        .data
                        .iter()
                        .map(|&x| AttrValue::Float32(x))
                        .collect(),
                ),
            )],
            ParamSource::Literal => {
                let hex: String = self
                    .data
                    .data
                    .iter()
                    .map(|x| format!("{:08x}", x.to_bits()))
                    .collect();
                vec![("hex", AttrValue::Str(hex))]
            }
        }
    }

    /// Rebuilds a param from printed attributes and its declared type,
    /// reading weights files through `files`.
    pub fn from_attrs(
        attrs: &[(String, AttrValue)],
        ty: &TensorType,
        files: &mut WeightFiles,
    ) -> Result<Param, AttrError> {
        let err = |attr: Option<&str>, message: String| AttrError {
            attr: attr.map(str::to_string),
            message,
        };
        let shape = ty.shape.as_static().ok_or_else(|| {
            err(
                None,
                format!("a param needs a static shape, not {}", ty.shape),
            )
        })?;
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        if get("density").is_some() || get("format").is_some() {
            let sparsity = Sparsity {
                density: match get("density") {
                    Some(AttrValue::Str(d)) => d
                        .parse::<f64>()
                        .ok()
                        .filter(|d| (0.0..=1.0).contains(d))
                        .ok_or_else(|| {
                            err(Some("density"), "`density` is a fraction in quotes".into())
                        })?,
                    _ => return Err(err(Some("density"), "`density` must be a string".into())),
                },
                format: match get("format") {
                    Some(AttrValue::Str(f)) => f.parse().map_err(|e| err(Some("format"), e))?,
                    _ => return Err(err(Some("format"), "`format` must be a string".into())),
                },
                panel: match get("panel") {
                    None => None,
                    Some(AttrValue::Int(n)) if *n > 0 => Some(*n as usize),
                    Some(_) => {
                        return Err(err(
                            Some("panel"),
                            "`panel` is a positive number of columns".into(),
                        ))
                    }
                },
                accumulators: match get("accumulators") {
                    None => None,
                    Some(AttrValue::Int(n)) if (1..=4).contains(n) => Some(*n as usize),
                    Some(_) => {
                        return Err(err(
                            Some("accumulators"),
                            "`accumulators` is a number of registers from 1 to 4".into(),
                        ))
                    }
                },
                batch_outer: match get("batch_outer") {
                    None => false,
                    Some(AttrValue::Ident(b)) if b == "true" || b == "false" => b == "true",
                    Some(_) => {
                        return Err(err(
                            Some("batch_outer"),
                            "`batch_outer` is `true` or `false`".into(),
                        ))
                    }
                },
            };
            let rest: Vec<(String, AttrValue)> = attrs
                .iter()
                .filter(|(k, _)| {
                    !["density", "format", "panel", "accumulators", "batch_outer"]
                        .contains(&k.as_str())
                })
                .cloned()
                .collect();
            let mut p = Param::from_attrs(&rest, ty, files)?;
            p.sparsity = Some(sparsity);
            return Ok(p);
        }
        if let Some(from) = get("packed_from") {
            let int = |k: &str| match get(k) {
                Some(AttrValue::Int(v)) if *v > 0 || (k == "packed_dim" && *v >= 0) => {
                    Ok(*v as usize)
                }
                _ => Err(err(
                    Some(k),
                    format!("`{k}` must be a non-negative integer"),
                )),
            };
            let (dim, size) = (int("packed_dim")?, int("packed_size")?);
            let source_shape: Vec<usize> = match from {
                AttrValue::List(items) => items
                    .iter()
                    .map(|v| match v {
                        AttrValue::Int(d) if *d >= 0 => Ok(*d as usize),
                        _ => Err(err(Some("packed_from"), "`packed_from` holds dims".into())),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(err(Some("packed_from"), "`packed_from` is a list".into())),
            };
            if dim >= source_shape.len() || packed_shape(&source_shape, dim, size) != shape {
                return Err(err(
                    Some("packed_from"),
                    format!(
                        "{:?} packed along {dim} by {size} does not give {}",
                        source_shape, ty.shape
                    ),
                ));
            }
            let rest: Vec<(String, AttrValue)> = attrs
                .iter()
                .filter(|(k, _)| !k.starts_with("packed_"))
                .cloned()
                .collect();
            let source_ty = TensorType {
                dtype: ty.dtype,
                shape: crate::types::Shape::from_static(&source_shape),
            };
            let unpacked = Param::from_attrs(&rest, &source_ty, files)?;
            return Ok(Param {
                data: Arc::new(pack_tensor(&unpacked.data, dim, size)),
                source: ParamSource::Packed {
                    of: Box::new(unpacked.source),
                    source_shape,
                    dim,
                    size,
                },
                sparsity: None,
            });
        }
        let string = |k: &str| match get(k) {
            Some(AttrValue::Str(s)) => Ok(s.clone()),
            _ => Err(err(Some(k), format!("`{k}` must be a string"))),
        };
        let numel = crate::tensor::checked_numel(&shape)
            .filter(|&n| n <= MAX_PARAM_ELEMENTS)
            .ok_or_else(|| err(None, format!("param shape {} is too large", ty.shape)))?;
        if get("file").is_some() {
            let path = string("file")?;
            let tensor = string("tensor")?;
            let data = files
                .load(&path, &tensor, ty)
                .map_err(|e| err(Some("file"), e.to_string()))?;
            return Ok(Param {
                data: Arc::new(data),
                source: ParamSource::File { path, tensor },
                sparsity: None,
            });
        }
        if get("init").is_some() {
            let name = string("init")?;
            let args: Vec<(String, AttrValue)> =
                attrs.iter().filter(|(k, _)| k != "init").cloned().collect();
            let init = Initializer::from_args(&name, &args)?;
            let data = init.generate(&shape).map_err(|m| err(Some("init"), m))?;
            return Ok(Param {
                data: Arc::new(data),
                source: ParamSource::Init(init),
                sparsity: None,
            });
        }
        let values: Vec<f32> = match (get("data"), get("hex")) {
            (Some(AttrValue::List(items)), None) => items
                .iter()
                .map(|v| match v {
                    AttrValue::Int(i) => Ok(*i as f32),
                    AttrValue::Float(f) => Ok(*f as f32),
                    AttrValue::Float32(f) => Ok(*f),
                    _ => Err(err(Some("data"), "`data` holds numbers".into())),
                })
                .collect::<Result<_, _>>()?,
            (None, Some(AttrValue::Str(hex))) => parse_hex(hex)
                .ok_or_else(|| err(Some("hex"), "`hex` must hold 8 hex digits per value".into()))?,
            _ => {
                return Err(err(
                    None,
                    "a param needs `file` and `tensor`, `init`, `data` or `hex`".into(),
                ))
            }
        };
        if values.len() != numel {
            return Err(err(
                None,
                format!(
                    "{} has {numel} elements but {} values are given",
                    ty,
                    values.len()
                ),
            ));
        }
        Ok(Param::literal(Tensor {
            shape,
            data: values,
        }))
    }
}

/// The inverse of [`pack_tensor`]: the values of the unpacked tensor.
fn unpack_tensor(packed: &Tensor, shape: &[usize], dim: usize, size: usize) -> Vec<f32> {
    let mut data = vec![0.0; shape.iter().product()];
    for_each_index(shape, |flat, index| {
        data[flat] = packed.data[packed_offset(shape, index, dim, size)];
    });
    data
}

fn parse_hex(hex: &str) -> Option<Vec<f32>> {
    if !hex.len().is_multiple_of(8) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len() / 8)
        .map(|i| {
            u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16)
                .ok()
                .map(f32::from_bits)
        })
        .collect()
}
