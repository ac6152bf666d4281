//! The pass manager: runs a pipeline with the instrumentation compiler
//! engineers expect from LLVM and MLIR.
//!
//! - the verifier after every pass (`verify_each`, on in debug builds and tests);
//! - IR printed before or after chosen passes or all of them, optionally only
//!   when a pass changed something;
//! - numbered dumps (`00-input.gir`, `01-shape-infer.gir`, …), each starting
//!   with the command that reproduces it from the previous one;
//! - `stop_after`, `disable`, and a `--time-passes` report;
//! - every error names the pass it happened in or after.

use crate::ir::Ir;
use crate::lower_to_loops::lower_to_loops;
use crate::pass::{Changed, PassContext, PassError};
use crate::pipeline::{parse_pipeline, PassSpec};
use crate::registry::{lookup, AnyPass};
use lopper_ir::Graph;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to print, dump, time and check while a pipeline runs.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    /// Print the IR before these passes.
    pub print_before: Vec<String>,
    /// Print the IR after these passes.
    pub print_after: Vec<String>,
    /// Print the IR before every pass.
    pub print_before_all: bool,
    /// Print the IR after every pass.
    pub print_after_all: bool,
    /// With the print options: only when the pass changed the IR.
    pub print_changed_only: bool,
    /// Write numbered dumps into this folder.
    pub dump_dir: Option<PathBuf>,
    /// Stop after the first run of this pass.
    pub stop_after: Option<String>,
    /// Skip these passes.
    pub disable: Vec<String>,
    /// Report the time of each pass.
    pub time_passes: bool,
    /// Print each pass's remarks (what it did or declined, and why) to the log.
    pub remarks: bool,
    /// Run the verifier after each pass.
    pub verify_each: bool,
    /// The command that produced the input, for the first dump's header.
    pub origin: String,
}

/// Timing of one pass run.
#[derive(Clone, Debug)]
pub struct PassTiming {
    /// The pass as written in the pipeline.
    pub pass: String,
    /// Wall time.
    pub time: Duration,
    /// Whether it changed the IR.
    pub changed: bool,
}

/// A pipeline ready to run.
pub struct PassManager {
    passes: Vec<(PassSpec, AnyPass)>,
    instrumentation: Instrumentation,
}

impl PassManager {
    /// Builds the passes of `pipeline`; every name given to `instrumentation`
    /// is checked against the registry.
    pub fn new(pipeline: &str, instrumentation: Instrumentation) -> Result<PassManager, String> {
        let specs = parse_pipeline(pipeline)?;
        let mut passes = Vec::new();
        for spec in specs {
            let info = lookup(&spec.name)?;
            let pass = (info.create)(&spec.options)?;
            passes.push((spec, pass));
        }
        let i = &instrumentation;
        for name in i
            .print_before
            .iter()
            .chain(&i.print_after)
            .chain(&i.disable)
            .chain(&i.stop_after)
        {
            lookup(name)?;
        }
        if let Some(stop) = &i.stop_after {
            if !passes.iter().any(|(s, _)| &s.name == stop) {
                return Err(format!(
                    "--stop-after `{stop}`: the pipeline does not run it"
                ));
            }
        }
        Ok(PassManager {
            passes,
            instrumentation,
        })
    }

    /// Runs a pipeline of graph passes on `g` (one that lowers is an error:
    /// use [`PassManager::run_ir`]).
    pub fn run(
        &mut self,
        g: &mut Graph,
        log: &mut dyn Write,
    ) -> Result<(Vec<PassTiming>, Vec<String>), PassError> {
        let mut ir = Ir::Graph(std::mem::take(g));
        let result = self.run_ir(&mut ir, log);
        match ir {
            Ir::Graph(done) => *g = done,
            Ir::Loops(_) => {
                return Err(PassError::new(
                    "pass-manager",
                    "this pipeline lowers to loops; the caller expected a graph",
                ))
            }
        }
        result
    }

    /// Runs the pipeline on `ir`. Printed IR and the timing report go to
    /// `log`; dumps go to the dump folder. Returns the timings and remarks.
    pub fn run_ir(
        &mut self,
        ir: &mut Ir,
        log: &mut dyn Write,
    ) -> Result<(Vec<PassTiming>, Vec<String>), PassError> {
        let i = self.instrumentation.clone();
        let io = |e: std::io::Error| PassError::new("pass-manager", format!("cannot write: {e}"));
        let mut step = 0usize;
        let mut previous_dump: Option<PathBuf> = None;
        if let Some(dir) = &i.dump_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                PassError::new(
                    "pass-manager",
                    format!("cannot create dump folder `{}`: {e}", dir.display()),
                )
            })?;
            let path = dir.join(format!("00-input.{}", ir.extension()));
            write_dump(&path, &i.origin, ir)?;
            previous_dump = Some(path);
        }
        let mut timings = Vec::new();
        let mut cx = PassContext::default();
        for (spec, pass) in &mut self.passes {
            if i.disable.contains(&spec.name) {
                continue;
            }
            if i.print_before_all || i.print_before.contains(&spec.name) {
                writeln!(
                    log,
                    "// -----// IR Dump Before {spec} //----- //\n{}",
                    ir.print()
                )
                .map_err(io)?;
            }
            let start = Instant::now();
            let seen = cx.remarks.len();
            let changed = match (&mut *ir, pass) {
                (Ir::Graph(g), AnyPass::Graph(p)) => p.run(g, &mut cx)? == Changed::Yes,
                (Ir::Loops(m), AnyPass::Loops(p)) => p.run(m, &mut cx)? == Changed::Yes,
                (Ir::Graph(g), AnyPass::Lower { fuse, lanes }) => {
                    *ir = Ir::Loops(lower_to_loops(g, *fuse, *lanes)?);
                    true
                }
                (current, _) => {
                    return Err(PassError::new(
                        &spec.name,
                        format!(
                            "this pass does not work on {}, which the pipeline holds at this point",
                            current.stage()
                        ),
                    ))
                }
            };
            let time = start.elapsed();
            if i.remarks {
                for r in &cx.remarks[seen..] {
                    writeln!(log, "remark: [{}] {r}", spec.name).map_err(io)?;
                }
            }
            timings.push(PassTiming {
                pass: spec.to_string(),
                time,
                changed,
            });
            if i.verify_each {
                ir.verify().map_err(|text| {
                    PassError::new(
                        &spec.name,
                        format!("the IR fails verification after this pass: {text}"),
                    )
                })?;
            }
            let wants_print = i.print_after_all || i.print_after.contains(&spec.name);
            if wants_print && (changed || !i.print_changed_only) {
                writeln!(
                    log,
                    "// -----// IR Dump After {spec} //----- //\n{}",
                    ir.print()
                )
                .map_err(io)?;
            }
            step += 1;
            if let Some(dir) = &i.dump_dir {
                let path = dir.join(format!("{step:02}-{}.{}", spec.name, ir.extension()));
                let from = previous_dump
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string());
                write_dump(&path, &format!("lopper opt {from} --passes '{spec}'"), ir)?;
                previous_dump = Some(path);
            }
            if i.stop_after.as_deref() == Some(spec.name.as_str()) {
                break;
            }
        }
        if i.time_passes {
            let total: Duration = timings.iter().map(|t| t.time).sum();
            let rule =
                "===-------------------------------------------------------------------------===";
            writeln!(
                log,
                "{rule}\n{:>58}\n{rule}",
                "... Pass execution timing report ..."
            )
            .map_err(io)?;
            writeln!(
                log,
                "  Total Execution Time: {:.4} seconds\n",
                total.as_secs_f64()
            )
            .map_err(io)?;
            writeln!(log, "   ---Wall Time---  ---Name---").map_err(io)?;
            for t in &timings {
                let share = 100.0 * t.time.as_secs_f64() / total.as_secs_f64().max(1e-12);
                writeln!(
                    log,
                    "   {:.4} ({share:5.1}%)  {}",
                    t.time.as_secs_f64(),
                    t.pass
                )
                .map_err(io)?;
            }
            writeln!(log, "   {:.4} (100.0%)  Total", total.as_secs_f64()).map_err(io)?;
        }
        Ok((timings, cx.remarks))
    }
}

fn write_dump(path: &std::path::Path, command: &str, ir: &Ir) -> Result<(), PassError> {
    let text = format!("// {command}\n{}", ir.print());
    std::fs::write(path, text).map_err(|e| {
        PassError::new(
            "pass-manager",
            format!("cannot write dump `{}`: {e}", path.display()),
        )
    })
}
