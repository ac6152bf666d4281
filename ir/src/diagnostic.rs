//! Source-located diagnostics shared by the DSL and both IR text formats.
//!
//! A [`Diagnostic`] holds a message, an optional primary [`Label`] (a byte
//! range of the source with a note) and free-form notes. [`render`] prints it
//! as `error: …` with `file:line:col`, the source line and a caret, through
//! codespan-reporting, without colour so that snapshots are stable.

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::NoColor};
use std::ops::Range;

/// A byte range of the source and what to say there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Byte offsets into the source.
    pub span: Range<usize>,
    /// Text shown under the caret.
    pub message: String,
}

/// One error, located in the source when a span is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The headline.
    pub message: String,
    /// Where it happened.
    pub label: Option<Label>,
    /// Extra lines (`= note: …`).
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error at `span` with a label text.
    pub fn at(span: Range<usize>, message: impl Into<String>, label: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            label: Some(Label {
                span,
                message: label.into(),
            }),
            notes: Vec::new(),
        }
    }

    /// An error with no location.
    pub fn bare(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            label: None,
            notes: Vec::new(),
        }
    }

    /// Adds a note line.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Shifts the span by `offset` bytes (for text parsed from a slice).
    pub fn shifted(mut self, offset: usize) -> Self {
        if let Some(l) = &mut self.label {
            l.span = l.span.start + offset..l.span.end + offset;
        }
        self
    }
}

/// Renders diagnostics for `source` (named `file_name`) as plain text.
pub fn render(file_name: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config::default();
    let mut out = NoColor::new(Vec::new());
    for d in diagnostics {
        let mut diag = cs::Diagnostic::error().with_message(&d.message);
        if let Some(l) = &d.label {
            let start = l.span.start.min(source.len());
            let end = l.span.end.clamp(start, source.len());
            diag = diag.with_labels(vec![
                cs::Label::primary((), start..end).with_message(&l.message)
            ]);
        }
        diag = diag.with_notes(d.notes.clone());
        if term::emit(&mut out, &config, &file, &diag).is_err() {
            return diagnostics
                .iter()
                .map(|d| format!("error: {}\n", d.message))
                .collect();
        }
    }
    String::from_utf8_lossy(&out.into_inner()).into_owned()
}

/// 1-based line and column of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Turns a pest syntax error into a diagnostic: `expected …, found …` at
/// the failing position. `describe` names a grammar rule for people.
pub fn from_pest<R: pest::RuleType>(
    err: &pest::error::Error<R>,
    source: &str,
    describe: impl Fn(&R) -> String,
) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let rest = &source[pos.min(source.len())..];
    let found = match rest.chars().next() {
        None => "end of file".to_string(),
        Some(c) if c.is_whitespace() => "whitespace".to_string(),
        Some(_) => {
            let token: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .take(24)
                .collect();
            if token.is_empty() {
                format!("`{}`", rest.chars().next().unwrap_or(' '))
            } else {
                format!("`{token}`")
            }
        }
    };
    let width = rest.chars().next().map_or(0, char::len_utf8).max(1);
    let span = pos..(pos + width).min(source.len().max(pos));
    match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<String> = positives.iter().map(&describe).collect();
            names.sort();
            names.dedup();
            let expected = match names.len() {
                0 => "something else".to_string(),
                1 => names[0].clone(),
                n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
            };
            Diagnostic::at(
                span,
                format!("syntax error: expected {expected}, found {found}"),
                format!("expected {expected}"),
            )
        }
        ErrorVariant::CustomError { message } => Diagnostic::at(span, message.clone(), ""),
    }
}
