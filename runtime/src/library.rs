//! Loading and calling a shared object built by `lopper compile`.
//!
//! The library describes itself: `NAME_signature` lists its inputs,
//! outputs and symbolic sizes, and `NAME_run_packed` takes its buffers and
//! sizes in two arrays. Before a call, every input's shape is checked against
//! the signature and every output is allocated at its full size, so the
//! library never sees a buffer smaller than it will touch.

use crate::interpreter::{bind_sizes, RunError};
use lopper_ir::{Tensor, TensorType};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CStr;
use std::path::Path;

type RunPacked = unsafe extern "C" fn(*const *mut f32, *const i64) -> i32;

/// A compiled model loaded into this process.
pub struct SharedModel {
    _library: libloading::Library,
    run: RunPacked,
    /// Inputs in order.
    pub inputs: Vec<(String, TensorType)>,
    /// Outputs in order.
    pub outputs: Vec<(String, TensorType)>,
    /// Symbolic sizes in order.
    pub sizes: Vec<String>,
}

fn load_error(path: &Path, why: impl std::fmt::Display) -> RunError {
    RunError::Input(format!(
        "cannot use `{}` as a lopper library: {why}",
        path.display()
    ))
}

impl SharedModel {
    /// Opens `libNAME.so` and reads its signature.
    pub fn open(path: &Path) -> Result<SharedModel, RunError> {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| load_error(path, "no file name"))?;
        let prefix: String = stem
            .strip_prefix("lib")
            .unwrap_or(stem)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        // SAFETY: loading runs the library's initializers; a library built
        // by lopper has none beyond the C runtime's.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| load_error(path, e))?;
        // SAFETY: `NAME_signature` is a NUL-terminated string constant and
        // `NAME_run_packed` has the `RunPacked` signature in every library
        // lopper builds; a library without them is refused here.
        let (text, run) = unsafe {
            let signature: libloading::Symbol<*const std::ffi::c_char> = library
                .get(format!("{prefix}_signature\0").as_bytes())
                .map_err(|e| load_error(path, e))?;
            let text = CStr::from_ptr(*signature).to_string_lossy().into_owned();
            let run: libloading::Symbol<RunPacked> = library
                .get(format!("{prefix}_run_packed\0").as_bytes())
                .map_err(|e| load_error(path, e))?;
            (text, *run)
        };
        let mut model = SharedModel {
            _library: library,
            run,
            inputs: Vec::new(),
            outputs: Vec::new(),
            sizes: Vec::new(),
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (kind, name, ty) = (parts.next(), parts.next(), parts.next());
            let parse = |t: Option<&str>| {
                lopper_ir::graph::parse_type(t.unwrap_or_default()).map_err(|d| {
                    load_error(path, format!("bad signature line `{line}`: {}", d.message))
                })
            };
            match (kind, name) {
                (Some("in"), Some(n)) => model.inputs.push((n.to_string(), parse(ty)?)),
                (Some("out"), Some(n)) => model.outputs.push((n.to_string(), parse(ty)?)),
                (Some("size"), Some(n)) => model.sizes.push(n.to_string()),
                _ => return Err(load_error(path, format!("bad signature line `{line}`"))),
            }
        }
        Ok(model)
    }

    /// Runs the library on `inputs`, checking every shape first.
    pub fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
        given: &BTreeMap<String, usize>,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let declared: Vec<(&str, &TensorType)> =
            self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let sizes = bind_sizes(&declared, inputs, given)?;
        let mut outputs = Vec::new();
        for (name, ty) in &self.outputs {
            let shape = ty.shape.bind(&sizes).map_err(RunError::Input)?;
            let n = lopper_ir::tensor::checked_numel(&shape)
                .ok_or_else(|| RunError::Input(format!("output `{name}` is too large")))?;
            outputs.push((
                name.clone(),
                Tensor {
                    shape,
                    data: vec![0.0; n],
                },
            ));
        }
        let mut pointers: Vec<*mut f32> = self
            .inputs
            .iter()
            .map(|(n, _)| inputs[n].data.as_ptr() as *mut f32)
            .collect();
        pointers.extend(outputs.iter_mut().map(|(_, t)| t.data.as_mut_ptr()));
        let mut size_values = Vec::new();
        for s in &self.sizes {
            let v = sizes.get(s).ok_or_else(|| {
                RunError::Input(format!(
                    "symbolic size `{s}` is not bound; pass --set {s}=N"
                ))
            })?;
            size_values.push(*v as i64);
        }
        // SAFETY: every input was checked against its declared shape by
        // `bind_sizes` and every output allocated at its full size; the
        // library reads inputs only and writes within the outputs.
        let rc = unsafe { (self.run)(pointers.as_ptr(), size_values.as_ptr()) };
        match rc {
            0 => Ok(outputs),
            1 => Err(RunError::Input(
                "the library refused the sizes (≤ 0, or too large)".into(),
            )),
            2 => Err(RunError::Input("the library ran out of memory".into())),
            3 => Err(RunError::Input(
                "the library was given a null buffer".into(),
            )),
            other => Err(RunError::Input(format!(
                "the library returned error code {other}"
            ))),
        }
    }
}
