//! The ONNX importer: a `.onnx` file to graph IR.
//!
//! [`load_onnx`] decodes the protobuf ([`proto`], prost structs written from
//! the format's field numbers), maps every node to graph-IR ops
//! (`import`, `ops`, `shapes`, `spatial`), folds exact GELU written with
//! `Erf` back into `gelu`, and verifies the result. Initializers, inline or
//! in external data files, become literal params; symbolic input dims
//! become symbolic sizes. A model with unsupported operators gets one error
//! listing each such node. `docs/onnx.md` lists the operators and what
//! each maps to.

mod gelu;
mod import;
mod ops;
pub mod proto;
mod shapes;
mod spatial;
mod tensor;

pub use import::{import_model, sanitize, MIN_OPSET, SUPPORTED_OPS};
pub use tensor::{decode_tensor, TensorData};

use crate::LoadError;
use lopper_ir::{Diagnostic, Graph};
use prost::Message;
use std::path::Path;

/// Reads and imports the ONNX model at `path`.
pub fn load_onnx(path: &Path) -> Result<Graph, LoadError> {
    let file = path.display().to_string();
    let fail = |message: String| LoadError {
        file: file.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic::bare(message)],
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read `{file}`: {e}")))?;
    let model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        fail(format!(
            "`{file}` is not a valid ONNX model (protobuf decoding failed: {e})"
        ))
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    import_model(&model, dir).map_err(|diagnostics| LoadError {
        file: file.clone(),
        source: String::new(),
        diagnostics: diagnostics
            .into_iter()
            .map(|mut d| {
                d.message = format!("{file}: {}", d.message);
                d
            })
            .collect(),
    })
}
