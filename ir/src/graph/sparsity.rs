//! The sparsity of a param: what its zeros look like and which kernel format
//! the compiler chose for it.
//!
//! A weight is viewed as a matrix: its first dimension is the rows (a linear
//! layer's outputs, a conv2d's filters) and the product of the others the
//! columns (the reduction). The measures here (density, N:M conformance,
//! block occupancy) are what `analyze-sparsity` prints and what its cost
//! model reads; they do not decide anything themselves.

use crate::tensor::Tensor;
use std::fmt;

/// The storage and kernel a sparse param lowers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseFormat {
    /// The plain dense loops.
    Dense,
    /// Compressed sparse rows: the nonzeros of each row and their columns.
    Csr,
    /// Block sparse rows: dense `rows x cols` blocks, only those with a
    /// nonzero stored.
    Bsr {
        /// Block height.
        rows: usize,
        /// Block width.
        cols: usize,
    },
    /// At most `n` nonzeros in every `m` consecutive columns of a row.
    NM {
        /// Nonzeros kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },
    /// Sliced ELLPACK: slices of `slice` rows, each a vector of that many
    /// lanes, whose nonzeros are taken a window of `slice` columns at a
    /// time (a batch row at a time, with a lane permute).
    Sell {
        /// Rows per slice, lanes per vector and columns per window.
        slice: usize,
    },
}

impl fmt::Display for SparseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SparseFormat::Dense => f.write_str("dense"),
            SparseFormat::Csr => f.write_str("csr"),
            SparseFormat::Bsr { rows, cols } => write!(f, "bsr{rows}x{cols}"),
            SparseFormat::NM { n, m } => write!(f, "{n}:{m}"),
            SparseFormat::Sell { slice } => write!(f, "sell{slice}"),
        }
    }
}

impl std::str::FromStr for SparseFormat {
    type Err = String;

    /// Reads `dense`, `csr`, `bsr4x4` (or `bsr` for 4x4), `2:4` (or `nm`
    /// for 2:4), `sell4`, `sell8` or `sell16`.
    fn from_str(s: &str) -> Result<SparseFormat, String> {
        let bad = || {
            format!("unknown sparse format `{s}`; expected dense, csr, bsr, bsrRxC (bsr4x4), nm, N:M (2:4) or sell4, sell8, sell16")
        };
        let positive = |t: &str| t.parse::<usize>().ok().filter(|&v| v > 0);
        Ok(match s {
            "dense" => SparseFormat::Dense,
            "csr" => SparseFormat::Csr,
            "bsr" => SparseFormat::Bsr { rows: 4, cols: 4 },
            "nm" => SparseFormat::NM { n: 2, m: 4 },
            _ => {
                if let Some(slice) = s.strip_prefix("sell") {
                    match slice.parse::<usize>() {
                        Ok(slice @ (4 | 8 | 16)) => SparseFormat::Sell { slice },
                        _ => return Err(bad()),
                    }
                } else if let Some(block) = s.strip_prefix("bsr") {
                    let (r, c) = block.split_once('x').ok_or_else(bad)?;
                    SparseFormat::Bsr {
                        rows: positive(r).ok_or_else(bad)?,
                        cols: positive(c).ok_or_else(bad)?,
                    }
                } else {
                    let (n, m) = s.split_once(':').ok_or_else(bad)?;
                    let (n, m) = (positive(n).ok_or_else(bad)?, positive(m).ok_or_else(bad)?);
                    if n >= m {
                        return Err(format!("`{s}`: N:M needs N < M"));
                    }
                    SparseFormat::NM { n, m }
                }
            }
        })
    }
}

/// What `analyze-sparsity` recorded on a param.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sparsity {
    /// The fraction of nonzero values, as measured (printed with 3 decimals).
    pub density: f64,
    /// The kernel format chosen for it.
    pub format: SparseFormat,
    /// Columns per panel for a CSR or N:M kernel that runs panel by panel
    /// (so that a panel of the activations stays in the level-1 cache while
    /// every row reads it), or `None` for whole rows (printed as `panel =
    /// 196` when set).
    pub panel: Option<usize>,
    /// Registers the slots of a CSR or N:M group accumulate into, slot `s`
    /// into `s mod accumulators`, or `None` for one per slot (printed as
    /// `accumulators = 1` when set): fewer let a kernel over a batch take
    /// wider tiles of it.
    pub accumulators: Option<usize>,
    /// The product runs one row of the batch at a time, reading the
    /// activations and writing its result in their own layout (no
    /// transposes), for calls with fewer rows than a vector tile (printed
    /// as `batch_outer = true` when set).
    pub batch_outer: bool,
}

/// A weight of shape `shape` as a matrix: `(rows, columns)`.
pub fn matrix_view(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [rows, rest @ ..] => (*rows, rest.iter().product()),
    }
}

/// The fraction of nonzero values (1 for an empty tensor).
pub fn density(t: &Tensor) -> f64 {
    if t.data.is_empty() {
        return 1.0;
    }
    t.data.iter().filter(|&&v| v != 0.0).count() as f64 / t.data.len() as f64
}

/// True when every group of `m` consecutive columns of every row of `t`'s
/// matrix view holds at most `n` nonzeros (a last, shorter group too).
pub fn conforms_to_nm(t: &Tensor, n: usize, m: usize) -> bool {
    let (rows, cols) = matrix_view(&t.shape);
    (0..rows).all(|r| {
        t.data[r * cols..(r + 1) * cols]
            .chunks(m)
            .all(|g| g.iter().filter(|&&v| v != 0.0).count() <= n)
    })
}

/// The fraction of `rows x cols` blocks of `t`'s matrix view (edge blocks
/// included) that hold a nonzero.
pub fn block_occupancy(t: &Tensor, block_rows: usize, block_cols: usize) -> f64 {
    let (rows, cols) = matrix_view(&t.shape);
    let (br, bc) = (rows.div_ceil(block_rows), cols.div_ceil(block_cols));
    if br * bc == 0 {
        return 1.0;
    }
    let mut occupied = 0usize;
    for b in 0..br {
        for c in 0..bc {
            let any = (b * block_rows..((b + 1) * block_rows).min(rows)).any(|r| {
                t.data[r * cols + c * block_cols..r * cols + ((c + 1) * block_cols).min(cols)]
                    .iter()
                    .any(|&v| v != 0.0)
            });
            occupied += usize::from(any);
        }
    }
    occupied as f64 / (br * bc) as f64
}

/// A short name for the structure of `t`'s zeros: `dense`; `2:4` (an N:M
/// with M = 4 or 8 that it conforms to and that explains its density);
/// `block 4x4` (blocks that divide the matrix, the occupied ones at least
/// three quarters full); or `unstructured`.
pub fn pattern(t: &Tensor) -> String {
    let d = density(t);
    if d >= 1.0 {
        return "dense".into();
    }
    for m in [4, 8] {
        for n in 1..m {
            // The N:M bound explains the density (2:4 pruning leaves 0.5).
            let bound = n as f64 / m as f64;
            if bound >= d - 1e-9 && bound <= d * 1.25 + 1e-9 && conforms_to_nm(t, n, m) {
                return format!("{n}:{m}");
            }
        }
    }
    let (rows, cols) = matrix_view(&t.shape);
    for (r, c) in [(4, 4), (1, 4), (4, 1), (8, 8), (2, 2)] {
        if rows % r != 0 || cols % c != 0 {
            continue;
        }
        let occupancy = block_occupancy(t, r, c);
        // Every occupied block mostly full: the zeros come in blocks.
        if occupancy < 1.0 && d / occupancy >= 0.75 {
            return format!("block {r}x{c}");
        }
    }
    "unstructured".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).expect("shape matches")
    }

    #[test]
    fn formats_print_and_parse_back() {
        for s in [
            "dense", "csr", "bsr4x4", "bsr1x8", "2:4", "1:8", "sell4", "sell16",
        ] {
            let f: SparseFormat = s.parse().expect(s);
            assert_eq!(f.to_string(), s);
        }
        assert_eq!(
            "bsr".parse::<SparseFormat>(),
            Ok(SparseFormat::Bsr { rows: 4, cols: 4 })
        );
        for bad in [
            "", "coo", "bsr0x4", "bsr4", "4:4", "5:4", "a:b", "bsrxx", "sell", "sell5",
        ] {
            assert!(bad.parse::<SparseFormat>().is_err(), "{bad}");
        }
    }

    #[test]
    fn measures_density_nm_and_blocks() {
        // Row 0 keeps 2 of each 4, row 1 keeps 1 of the first 4 and 2 of the rest.
        let w = t(
            &[2, 8],
            &[
                1., 0., 2., 0., 0., 3., 0., 4., 0., 0., 5., 0., 6., 0., 0., 7.,
            ],
        );
        assert_eq!(density(&w), 7.0 / 16.0);
        assert!(conforms_to_nm(&w, 2, 4));
        assert!(!conforms_to_nm(&w, 1, 4));
        assert_eq!(pattern(&w), "2:4");
        // One of the two 2x4 blocks is empty.
        let b = t(
            &[2, 8],
            &[
                1., 1., 1., 1., 0., 0., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0.,
            ],
        );
        assert_eq!(block_occupancy(&b, 2, 4), 0.5);
        assert_eq!(block_occupancy(&b, 2, 3), 2.0 / 3.0);
        let conv = t(&[2, 1, 2, 2], &[0., 0., 0., 1., 1., 1., 1., 1.]);
        assert_eq!(matrix_view(&conv.shape), (2, 4));
        assert_eq!(pattern(&t(&[2, 2], &[1., 2., 3., 4.])), "dense");
        let mut row = [0.0f32; 16];
        row[..5].fill(1.0);
        let scattered = t(&[1, 16], &row);
        assert_eq!(pattern(&scattered), "unstructured");
    }
}
