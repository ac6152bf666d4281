//! Reading params from safetensors files, PyTorch names and layouts.
//!
//! Each file is read once per [`WeightFiles`] and parsed per lookup. Every
//! failure names the param, the file and, for a shape mismatch, both shapes.
//! This module reads; writing tensors is the runtime's business.

use crate::tensor::Tensor;
use crate::types::{DType, TensorType};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fmt;

/// A failure to load one param.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightError(pub String);

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WeightError {}

/// Weights files read so far, by path.
#[derive(Default)]
pub struct WeightFiles {
    files: HashMap<String, Vec<u8>>,
    unreadable: std::collections::HashSet<String>,
}

impl WeightFiles {
    /// An empty cache.
    pub fn new() -> Self {
        WeightFiles::default()
    }

    /// True if `path` failed to read before: its error was already given.
    pub fn known_unreadable(&self, path: &str) -> bool {
        self.unreadable.contains(path)
    }

    fn bytes(&mut self, path: &str) -> Result<&[u8], WeightError> {
        if !self.files.contains_key(path) {
            self.unreadable.insert(path.to_string());
            // A device or a pipe could be endless: only regular files.
            if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
                return Err(WeightError(format!(
                    "weights file `{path}` is not a regular file"
                )));
            }
            let bytes = std::fs::read(path)
                .map_err(|e| WeightError(format!("cannot read weights file `{path}`: {e}")))?;
            SafeTensors::deserialize(&bytes).map_err(|e| {
                WeightError(format!("`{path}` is not a valid safetensors file: {e}"))
            })?;
            self.unreadable.remove(path);
            self.files.insert(path.to_string(), bytes);
        }
        Ok(&self.files[path])
    }

    /// Loads tensor `name` of `path`, which must be `f32` with the static
    /// shape of `expected`.
    pub fn load(
        &mut self,
        path: &str,
        name: &str,
        expected: &TensorType,
    ) -> Result<Tensor, WeightError> {
        let bytes = self.bytes(path)?;
        let tensor = read_tensor(bytes, path, name)?;
        if expected.dtype != DType::F32 {
            return Err(WeightError(format!(
                "param `{name}` is declared {}, but only f32 params are supported",
                expected.dtype
            )));
        }
        let shape_text = format!("{:?}", tensor.shape).replace(' ', "");
        if tensor.dtype != DType::F32 {
            return Err(WeightError(format!(
                "param `{name}` in `{path}` has dtype {} {shape_text}, but the model declares {expected}",
                tensor.dtype
            )));
        }
        if expected.shape.as_static().as_deref() != Some(&tensor.shape[..]) {
            return Err(WeightError(format!(
                "param `{name}` is declared {expected}, but `{path}` holds f32{shape_text}"
            )));
        }
        Ok(Tensor {
            shape: tensor.shape,
            data: tensor.values,
        })
    }
}

/// A tensor read from a safetensors file, converted to `f32` values.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// The stored dtype.
    pub dtype: DType,
    /// The stored shape.
    pub shape: Vec<usize>,
    /// The values (i64 converted exactly when below 2^24).
    pub values: Vec<f32>,
}

/// Reads tensor `name` from the bytes of safetensors file `path`.
pub fn read_tensor(bytes: &[u8], path: &str, name: &str) -> Result<RawTensor, WeightError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| WeightError(format!("`{path}` is not a valid safetensors file: {e}")))?;
    let view = st.tensor(name).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        let shown = if names.len() > 12 {
            format!("{}, … ({} in all)", names[..12].join(", "), names.len())
        } else {
            names.join(", ")
        };
        WeightError(format!(
            "weights file `{path}` has no tensor `{name}` (it holds: {shown})"
        ))
    })?;
    let shape = view.shape().to_vec();
    let data = view.data();
    let (dtype, values) = match view.dtype() {
        Dtype::F32 => (
            DType::F32,
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::I64 => (
            DType::I64,
            data.chunks_exact(8)
                .map(|c| {
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
        ),
        other => {
            return Err(WeightError(format!(
                "tensor `{name}` in `{path}` has dtype {other:?}; lopper reads F32 and I64"
            )))
        }
    };
    Ok(RawTensor {
        dtype,
        shape,
        values,
    })
}
