//! Pipelines written as text: `shape-infer,fold-constants,prune{method=nm,n=2,m=4}`.
//!
//! A pipeline is a comma-separated list of pass names, each optionally
//! followed by `{key=value,...}`; values may hold brackets (`sizes=[32,32]`).
//! The `-O` levels are named pipelines of the same form.

use crate::pass::PassOptions;
use std::fmt;

/// One pass of a pipeline with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassSpec {
    /// The pass name.
    pub name: String,
    /// Its options.
    pub options: PassOptions,
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.options)
    }
}

/// The graph pipeline of an optimization level (0 to 3).
///
/// O0 only infers shapes; O1 and up simplify, fold and clean up; O2 and up
/// also measure weight sparsity and choose sparse kernels
/// (`analyze-sparsity`), which leaves weights with no zeros alone.
pub const fn graph_pipeline(level: u8) -> &'static str {
    match level {
        0 => "shape-infer",
        1 => "shape-infer,simplify,fold-constants,fold-batchnorm,cse,dce",
        _ => "shape-infer,simplify,fold-constants,fold-batchnorm,cse,dce,analyze-sparsity",
    }
}

/// The passes from the graph to the loop IR at an optimization level, run
/// after [`graph_pipeline`] when the model is compiled.
///
/// O0 lowers each op to its own naive loop nest; O1 fuses elementwise
/// consumers into their producers and simplifies the loops; O2 (and O3,
/// reserved for sparsity and tuning) lower with the vector width in mind
/// (a convolution may be computed channels-last) and add `auto-schedule`
/// (tiling, packing, vectorization, unrolling) and `hoist`.
/// Every level ends with `plan-memory`.
pub const fn loop_pipeline(level: u8) -> &'static str {
    match level {
        0 => "lower-to-loops{fuse=false},plan-memory",
        1 => "lower-to-loops,simplify-loops,plan-memory",
        _ => "lower-to-loops{lanes=4},auto-schedule,simplify-loops,hoist,plan-memory",
    }
}

/// [`loop_pipeline`] for a backend whose vectors hold `lanes` floats (the
/// lowering and the schedule chooser are told the width: 4 for Cranelift,
/// 8 for LLVM on AVX, 16 on AVX-512).
pub fn loop_pipeline_for(level: u8, lanes: u32) -> String {
    let base = loop_pipeline(level).to_string();
    if lanes == 4 {
        base
    } else {
        let base = base.replace(
            "lower-to-loops{lanes=4}",
            &format!("lower-to-loops{{lanes={lanes}}}"),
        );
        with_schedule_option(&base, "lanes", &lanes.to_string())
    }
}

/// `pipeline` with `key=value` added to the options of its `auto-schedule`
/// (if it has one).
pub fn with_schedule_option(pipeline: &str, key: &str, value: &str) -> String {
    if pipeline.contains("auto-schedule{") {
        pipeline.replace("auto-schedule{", &format!("auto-schedule{{{key}={value},"))
    } else {
        pipeline.replace("auto-schedule", &format!("auto-schedule{{{key}={value}}}"))
    }
}

/// The default optimization level.
pub const DEFAULT_LEVEL: u8 = 2;

/// The pipeline used when none is given (`-O2`).
pub const DEFAULT_PIPELINE: &str = graph_pipeline(2);

/// Splits `text` at top-level commas (outside `{}` and `[]`).
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced `{c}` at column {} of `{text}`", i + 1));
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed bracket in `{text}`"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// Parses a pipeline; an empty string is the empty pipeline.
pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut specs = Vec::new();
    for part in split_top_level(text)? {
        let part = part.trim();
        let (name, opts) = match part.find('{') {
            Some(i) => {
                let body = part[i + 1..]
                    .strip_suffix('}')
                    .ok_or_else(|| format!("options of `{}` must end with `}}`", &part[..i]))?;
                (&part[..i], Some(body))
            }
            None => (part, None),
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "`{part}` is not a pass name (expected kebab-case, like `fold-constants`)"
            ));
        }
        let mut options = PassOptions::default();
        if let Some(body) = opts {
            for kv in split_top_level(body)? {
                if kv.trim().is_empty() {
                    continue;
                }
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("option `{kv}` of `{name}` must be `key=value`"))?;
                if options
                    .0
                    .insert(k.trim().to_string(), v.trim().to_string())
                    .is_some()
                {
                    return Err(format!("option `{}` of `{name}` is given twice", k.trim()));
                }
            }
        }
        specs.push(PassSpec {
            name: name.to_string(),
            options,
        });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_may_hold_lists() {
        let p = parse_pipeline("dce, tile{sizes=[32,32],levels=2},cse").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].options.0["sizes"], "[32,32]");
        assert_eq!(p[1].to_string(), "tile{levels=2,sizes=[32,32]}");
    }

    #[test]
    fn malformed_pipelines_are_errors() {
        assert!(parse_pipeline("dce,tile{sizes=[32,32}").is_err());
        assert!(parse_pipeline("Fold").is_err());
        assert!(parse_pipeline("prune{method}").is_err());
        assert!(parse_pipeline("prune{a=1,a=2}").is_err());
    }
}
