//! lopper's model language (`.lop`): grammar, parser, syntax tree and the
//! builder that turns a model into graph IR.
//!
//! [`load_model`] is the whole front end: read, parse, build, verify. Every
//! error comes back as a located [`Diagnostic`]; the caller renders them with
//! [`lopper_ir::diagnostic::render`]. [`onnx::load_onnx`] reads ONNX models;
//! [`writer::write_model`] writes a graph back as model text.
#![deny(missing_docs)]

pub mod ast;
mod builder;
pub mod onnx;
mod parser;
pub mod writer;

pub use builder::build_graph;
pub use parser::parse_model;

use lopper_ir::{Diagnostic, Graph};
use std::path::Path;

/// Parses and builds model source text; relative weights paths start at `model_dir`.
pub fn compile_source(source: &str, model_dir: &Path) -> Result<Graph, Vec<Diagnostic>> {
    let model = parse_model(source)?;
    let graph = build_graph(&model, model_dir, source)?;
    lopper_ir::graph::verify(&graph).map_err(|errs| {
        errs.into_iter()
            .map(|e| {
                Diagnostic::bare(format!(
                    "internal error: the built graph fails verification: {e}"
                ))
            })
            .collect::<Vec<_>>()
    })?;
    Ok(graph)
}

/// A model file that failed to load: its text and what is wrong with it.
#[derive(Debug)]
pub struct LoadError {
    /// The file as named by the caller.
    pub file: String,
    /// Its text (empty if it could not be read).
    pub source: String,
    /// Every error found.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadError {
    /// The diagnostics rendered with file:line:col and carets.
    pub fn render(&self) -> String {
        lopper_ir::diagnostic::render(&self.file, &self.source, &self.diagnostics)
    }
}

/// Reads and builds the model at `path`.
pub fn load_model(path: &Path) -> Result<Graph, LoadError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LoadError {
        file: file.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic::bare(format!("cannot read `{file}`: {e}"))],
    })?;
    let source = String::from_utf8(bytes).map_err(|e| LoadError {
        file: file.clone(),
        source: String::new(),
        diagnostics: vec![Diagnostic::bare(format!(
            "`{file}` is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))],
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    compile_source(&source, dir).map_err(|diagnostics| LoadError {
        file,
        source,
        diagnostics,
    })
}
