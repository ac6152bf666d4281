//! The pass interface: [`Pass`], its context, options and errors.

use std::collections::BTreeMap;
use std::fmt;

/// Whether a pass changed the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The IR is different.
    Yes,
    /// The IR is untouched.
    No,
}

impl Changed {
    /// `Yes` if `b`.
    pub fn from(b: bool) -> Changed {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

/// A transformation of some IR, run by the pass manager.
pub trait Pass<IR> {
    /// Kebab-case name, as typed on the command line.
    fn name(&self) -> &'static str;
    /// One line saying what the pass does.
    fn description(&self) -> &'static str;
    /// Transforms `ir` in place.
    fn run(&mut self, ir: &mut IR, cx: &mut PassContext) -> Result<Changed, PassError>;
}

/// What passes may read and report besides the IR.
#[derive(Debug, Default)]
pub struct PassContext {
    /// Notes for the user (`folded 2 batch_norm into conv2d`), in order.
    pub remarks: Vec<String>,
}

impl PassContext {
    /// Records a remark.
    pub fn remark(&mut self, text: impl Into<String>) {
        self.remarks.push(text.into());
    }
}

/// A failed pass: which pass, which node, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassError {
    /// The pass that failed (or after which verification failed).
    pub pass: String,
    /// The node concerned, if one.
    pub node: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl PassError {
    /// An error of `pass` at `node`.
    pub fn at(pass: &str, node: &str, message: impl Into<String>) -> PassError {
        PassError {
            pass: pass.to_string(),
            node: Some(node.to_string()),
            message: message.into(),
        }
    }

    /// An error of `pass` with no node.
    pub fn new(pass: &str, message: impl Into<String>) -> PassError {
        PassError {
            pass: pass.to_string(),
            node: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in pass `{}`", self.pass)?;
        if let Some(n) = &self.node {
            write!(f, " at %{n}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PassError {}

/// Options of one pass in a pipeline: `prune{method=nm,n=2,m=4}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassOptions(pub BTreeMap<String, String>);

impl PassOptions {
    /// Rejects options not in `known`, naming the valid ones.
    pub fn check_known(&self, pass: &str, known: &[&str]) -> Result<(), String> {
        for k in self.0.keys() {
            if !known.contains(&k.as_str()) {
                return Err(if known.is_empty() {
                    format!("pass `{pass}` takes no options, got `{k}`")
                } else {
                    format!(
                        "pass `{pass}` has no option `{k}`; its options are: {}",
                        known.join(", ")
                    )
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for PassOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{{{}}}", parts.join(","))
    }
}
