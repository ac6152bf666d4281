//! The CPU code is generated for, and the options every code generator
//! takes.
//!
//! By default both backends compile for the host: its CPU name and every
//! instruction-set feature it reports. `--target-cpu NAME` names another
//! x86-64 CPU instead, by the names LLVM and Cranelift share (`x86-64-v3`,
//! `haswell`, `skylake-avx512`, `znver3`, ...): Cranelift enables that
//! CPU's feature preset, LLVM gets it as the target machine's CPU, and the
//! schedule chooser uses its vector width. Code for a CPU with features the
//! host lacks can be written to a shared object but not run here; the
//! in-memory (JIT) paths refuse it with the missing features named.
//!
//! It does not model caches or latencies: the schedule chooser reads the
//! cache sizes from the host unless told (`--l2-cache`).

use crate::BackendError;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable, SettingKind};

/// The CPU to generate code for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// A named CPU; `None` is the host.
    cpu: Option<String>,
}

/// What every code generator is told besides the module.
#[derive(Clone, Debug, Default)]
pub struct CodegenOptions {
    /// Check every load and store against its buffer at run time
    /// (`--bounds-check`).
    pub bounds_check: bool,
    /// The CPU to compile for.
    pub target: Target,
}

impl Target {
    /// The host CPU.
    pub fn host() -> Target {
        Target::default()
    }

    /// The CPU called `name`; `native` is the host. Unknown names are
    /// refused with the list of known ones.
    pub fn named(name: &str) -> Result<Target, String> {
        if name == "native" || name == "host" {
            return Ok(Target::host());
        }
        let known = cpu_names();
        if !known.iter().any(|n| n == name) {
            return Err(format!(
                "unknown CPU `{name}`; expected `native` or one of: {}",
                known.join(", ")
            ));
        }
        Ok(Target {
            cpu: Some(name.to_string()),
        })
    }

    /// The CPU's name as the user gave it, or `native`.
    pub fn name(&self) -> &str {
        self.cpu.as_deref().unwrap_or("native")
    }

    /// Whether this is the host.
    pub fn is_host(&self) -> bool {
        self.cpu.is_none()
    }

    /// The `f32` lanes the schedules of `backend` should use: 4 for
    /// Cranelift (128-bit vectors only), for LLVM the CPU's widest vector
    /// (16 with AVX-512, 8 with AVX2, else 4).
    pub fn lanes(&self, backend: crate::Backend) -> u32 {
        if backend != crate::Backend::Llvm {
            return 4;
        }
        let Ok(flags) = self.isa_flags() else {
            return 4;
        };
        let has = |f: &str| flags.iter().any(|(n, on)| n == f && *on);
        if has("has_avx512f") {
            16
        } else if has("has_avx2") {
            8
        } else {
            4
        }
    }

    /// Refuses a CPU with instruction-set features this host lacks: code
    /// for it cannot run in this process.
    pub fn check_runs_here(&self) -> Result<(), BackendError> {
        if self.is_host() {
            return Ok(());
        }
        let host = Target::host().isa_flags()?;
        let missing: Vec<String> = self
            .isa_flags()?
            .into_iter()
            .filter(|(name, on)| *on && host.iter().any(|(n, h)| n == name && !h))
            .map(|(name, _)| name.trim_start_matches("has_").to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(BackendError::Codegen(format!(
            "code for --target-cpu {} needs {}, which this host lacks; it can be \
             compiled to a shared object (`lopper compile`) but not run here",
            self.name(),
            missing.join(", ")
        )))
    }

    /// The instruction-set flags (`has_avx2`, ...) Cranelift would use.
    fn isa_flags(&self) -> Result<Vec<(String, bool)>, BackendError> {
        Ok(self
            .cranelift_isa(false)?
            .isa_flags()
            .iter()
            .filter_map(|v| v.as_bool().map(|b| (v.name.to_string(), b)))
            .collect())
    }

    /// Cranelift's ISA for this CPU (`opt_level = speed`; `pic` for shared
    /// objects).
    pub(crate) fn cranelift_isa(&self, pic: bool) -> Result<OwnedTargetIsa, BackendError> {
        let codegen = |e: settings::SetError| BackendError::Codegen(e.to_string());
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(codegen)?;
        flags
            .set("is_pic", if pic { "true" } else { "false" })
            .map_err(codegen)?;
        if !pic {
            // JIT code may lie far from the C library it calls.
            flags
                .set("use_colocated_libcalls", "false")
                .map_err(codegen)?;
        }
        let builder = match &self.cpu {
            None => cranelift_native::builder()
                .map_err(|e| BackendError::Codegen(format!("this host is not supported: {e}")))?,
            Some(cpu) => {
                let mut b = x86_64_builder()?;
                b.enable(cpu).map_err(codegen)?;
                b
            }
        };
        builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| BackendError::Codegen(e.to_string()))
    }

    /// LLVM's CPU name and feature string: the host's, or the named CPU
    /// with the features LLVM knows it has; either way with gathers
    /// avoided (`prefer-no-gather`): the vectorizers would otherwise turn a
    /// sparse row's four independent scalar slots into one gather feeding
    /// one vector accumulator, 17% slower at 95% sparse on fc1 at batch 1
    /// (Zen 4), and gathers are slow on Intel since the GDS mitigation.
    #[cfg(feature = "llvm")]
    pub(crate) fn llvm_cpu(&self) -> (String, String) {
        use inkwell::targets::TargetMachine;
        const TUNING: &str = "+prefer-no-gather,+prefer-no-scatter";
        match &self.cpu {
            None => (
                TargetMachine::get_host_cpu_name()
                    .to_str()
                    .unwrap_or("generic")
                    .to_string(),
                format!(
                    "{},{TUNING}",
                    TargetMachine::get_host_cpu_features()
                        .to_str()
                        .unwrap_or("")
                ),
            ),
            Some(cpu) => (cpu.clone(), TUNING.to_string()),
        }
    }
}

/// Cranelift's x86-64 ISA builder with no features enabled.
fn x86_64_builder() -> Result<isa::Builder, BackendError> {
    isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .map_err(|e| BackendError::Codegen(format!("Cranelift has no x86-64 support: {e}")))
}

/// The CPU names `--target-cpu` accepts: Cranelift's x86-64 presets, named
/// as LLVM names them (the SSE-level presets and Cranelift's own
/// `baseline` left out).
pub fn cpu_names() -> Vec<String> {
    let Ok(builder) = x86_64_builder() else {
        return Vec::new();
    };
    builder
        .iter()
        .filter(|s| {
            s.kind == SettingKind::Preset
                && !s.name.starts_with("sse")
                && !["ssse3", "baseline"].contains(&s.name)
        })
        .map(|s| s.name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    #[test]
    fn named_cpus_give_their_vector_width() {
        let haswell = Target::named("haswell").unwrap();
        assert_eq!(haswell.lanes(Backend::Llvm), 8);
        assert_eq!(haswell.lanes(Backend::Cranelift), 4);
        assert_eq!(
            Target::named("skylake-avx512")
                .unwrap()
                .lanes(Backend::Llvm),
            16
        );
        assert_eq!(Target::named("nehalem").unwrap().lanes(Backend::Llvm), 4);
        assert!(Target::named("native").unwrap().is_host());
    }

    #[test]
    fn unknown_cpus_are_refused_with_the_known_names() {
        let e = Target::named("pentium9").unwrap_err();
        assert!(e.contains("unknown CPU `pentium9`"), "{e}");
        assert!(e.contains("haswell") && e.contains("znver3"), "{e}");
        // A feature flag is not a CPU.
        assert!(Target::named("has_avx2").is_err());
    }

    #[test]
    fn a_cpu_older_than_any_x86_64_host_runs_here() {
        Target::named("x86-64").unwrap().check_runs_here().unwrap();
    }
}
