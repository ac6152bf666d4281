//! `plan-memory`: scratch buffers reuse the memory of dead ones.
//!
//! A scratch buffer is live from the first kernel that touches it (or a view
//! of it) to the last. Taking buffers in the order they come alive, each one
//! reuses the memory of a buffer that already owns memory, is dead by then,
//! and is at least as large for every value of the symbolic sizes (same
//! symbols, no smaller constant factor), the smallest such; otherwise it keeps
//! its own. A reusing buffer is printed `scratch ... of %owner`; the
//! verifier checks that sharers never overlap in time. It does not resize
//! buffers or reorder kernels, and it leaves inputs, outputs and constants
//! alone.

use crate::pass::{Changed, Pass, PassContext, PassError};
use lopper_ir::loops::{BufferKind, Module};
use lopper_ir::Size;
use std::collections::HashMap;

/// The `plan-memory` pass.
pub struct PlanMemory;

/// First and last kernel that use each buffer (views count for their source).
pub fn live_ranges(m: &Module) -> HashMap<String, (usize, usize)> {
    let mut ranges: HashMap<String, (usize, usize)> = HashMap::new();
    for (k, kernel) in m.kernels.iter().enumerate() {
        for p in &kernel.params {
            let logical = match m.buffer(p) {
                Some(b) if b.kind == BufferKind::View => {
                    b.view_of.clone().unwrap_or_else(|| p.clone())
                }
                _ => p.clone(),
            };
            let r = ranges.entry(logical).or_insert((k, k));
            r.1 = k;
        }
    }
    ranges
}

fn fits(size: &Size, owner: &Size) -> bool {
    size.symbols == owner.symbols && size.constant <= owner.constant
}

impl Pass<Module> for PlanMemory {
    fn name(&self) -> &'static str {
        "plan-memory"
    }

    fn description(&self) -> &'static str {
        "let scratch buffers reuse the memory of dead ones (liveness over the kernel order)"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let ranges = live_ranges(m);
        let mut scratch: Vec<(String, Size, (usize, usize))> = m
            .buffers
            .iter()
            .filter(|b| b.kind == BufferKind::Scratch && b.view_of.is_none())
            .filter_map(|b| Some((b.name.clone(), b.ty.shape.numel()?, *ranges.get(&b.name)?)))
            .collect();
        scratch.sort_by_key(|(_, _, r)| *r);
        // Owners with their size and the last kernel of their current occupant.
        let mut owners: Vec<(String, Size, usize)> = Vec::new();
        let mut reuse: HashMap<String, String> = HashMap::new();
        for (name, size, (first, last)) in scratch {
            let best = owners
                .iter_mut()
                .filter(|(_, owner_size, busy_until)| {
                    *busy_until < first && fits(&size, owner_size)
                })
                .min_by_key(|(_, owner_size, _)| owner_size.constant);
            match best {
                Some(owner) => {
                    reuse.insert(name, owner.0.clone());
                    owner.2 = last;
                }
                None => owners.push((name, size, last)),
            }
        }
        for b in &mut m.buffers {
            if let Some(owner) = reuse.get(&b.name) {
                b.view_of = Some(owner.clone());
            }
        }
        if !reuse.is_empty() {
            cx.remark(format!(
                "plan-memory: {} scratch buffer(s) reuse memory",
                reuse.len()
            ));
        }
        Ok(Changed::from(!reuse.is_empty()))
    }
}
