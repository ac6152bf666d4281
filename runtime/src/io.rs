//! Tensors in and out of safetensors files, and seeded random inputs.

use lopper_ir::graph::param::SplitMix64;
use lopper_ir::graph::weights::{read_tensor, RawTensor};
use lopper_ir::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// A failure to read or write a tensor file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file system said no.
    #[error("cannot {action} `{path}`: {reason}")]
    File {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        reason: std::io::Error,
    },
    /// The file is not what was expected.
    #[error("{0}")]
    Format(String),
}

/// Reads tensor `name` of a safetensors file; without a name the file must
/// hold exactly one tensor.
pub fn read_tensor_file(path: &Path, name: Option<&str>) -> Result<RawTensor, IoError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|reason| IoError::File {
        action: "read",
        path: shown.clone(),
        reason,
    })?;
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
                IoError::Format(format!("`{shown}` is not a valid safetensors file: {e}"))
            })?;
            let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
            names.sort();
            if names.len() != 1 {
                return Err(IoError::Format(format!(
                    "`{shown}` holds {} tensors ({}); name one with FILE:TENSOR",
                    names.len(),
                    names.join(", ")
                )));
            }
            names.remove(0)
        }
    };
    read_tensor(&bytes, &shown, &name).map_err(|e| IoError::Format(e.0))
}

/// Writes named `f32` tensors to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(String, &Tensor)]) -> Result<(), IoError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            let b: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), b, t.shape.clone())
        })
        .collect();
    let mut views = Vec::new();
    for (n, b, s) in &bytes {
        let view = TensorView::new(Dtype::F32, s.clone(), b)
            .map_err(|e| IoError::Format(format!("cannot store `{n}`: {e}")))?;
        views.push((n.clone(), view));
    }
    let data = safetensors::serialize(views, None)
        .map_err(|e| IoError::Format(format!("cannot serialize tensors: {e}")))?;
    std::fs::write(path, data).map_err(|reason| IoError::File {
        action: "write",
        path: path.display().to_string(),
        reason,
    })
}

/// A tensor of values uniform in `[-1, 1)` from a seed.
pub fn random_tensor(shape: Vec<usize>, seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n = shape.iter().product();
    Tensor {
        shape,
        data: (0..n).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect(),
    }
}
