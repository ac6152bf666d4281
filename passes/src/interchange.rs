//! `interchange`: swaps two perfectly nested loops when that is legal.
//!
//! `interchange{loops=[i0.o,i1.o]}` turns `for %i0.o { for %i1.o { S } }`
//! into `for %i1.o { for %i0.o { S } }`. After tiling a matmul this puts
//! the loop over column panels outside the loop over row blocks, so one
//! packed panel of the weights stays in cache while every row block uses
//! it.
//!
//! It refuses, saying why, when the loops are not perfectly nested, when
//! the inner loop's bounds depend on the outer loop, or when iterations
//! might depend on each other ([`reorder_hazard`]: every written buffer
//! must tell the iterations of at least one of the two loops apart, and no
//! local declared outside may carry a value between iterations).

use crate::loop_nest::{list_option, reorder_hazard, rewrite_loops, selected, uses};
use crate::pass::{Changed, Pass, PassContext, PassError, PassOptions};
use lopper_ir::loops::{Module, Stmt};

/// The `interchange` pass.
pub struct Interchange {
    /// Kernels to change (all when `None`).
    pub kernels: Option<Vec<String>>,
    /// The outer and the inner loop.
    pub outer: String,
    /// The inner loop.
    pub inner: String,
}

impl Interchange {
    /// Reads `interchange{loops=[outer,inner],kernel=..}`.
    pub fn from_options(o: &PassOptions) -> Result<Interchange, String> {
        o.check_known("interchange", &["loops", "kernel"])?;
        let loops = list_option(
            o.0.get("loops")
                .ok_or("`interchange` needs `loops=[outer,inner]`")?,
        );
        let [outer, inner] = <[String; 2]>::try_from(loops)
            .map_err(|_| "`interchange` swaps two loops: `loops=[outer,inner]`".to_string())?;
        Ok(Interchange {
            kernels: o.0.get("kernel").map(|k| list_option(k)),
            outer,
            inner,
        })
    }
}

impl Pass<Module> for Interchange {
    fn name(&self) -> &'static str {
        "interchange"
    }

    fn description(&self) -> &'static str {
        "swap two perfectly nested loops, when no iteration depends on another"
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut total = 0;
        for kernel in selected(m, &self.kernels) {
            let count = rewrite_loops(&mut kernel.body, &self.outer, &mut |s| {
                swap(s, &self.inner).map(|s| vec![s])
            })
            .map_err(|e| PassError::new("interchange", format!("@{}: {e}", kernel.name)))?;
            if count > 0 {
                cx.remark(format!(
                    "@{}: interchanged %{} and %{} ({count} nest(s))",
                    kernel.name, self.outer, self.inner
                ));
            }
            total += count;
        }
        Ok(Changed::from(total > 0))
    }
}

/// `for outer { for inner { S } }` → `for inner { for outer { S } }`.
pub fn swap(s: Stmt, inner_var: &str) -> Result<Stmt, String> {
    if let Some(why) = interchange_hazard(&s, inner_var) {
        return Err(why);
    }
    let Stmt::For {
        var,
        lo,
        hi,
        kind,
        body,
    } = s
    else {
        unreachable!("checked")
    };
    let Ok(
        [Stmt::For {
            var: ivar,
            lo: ilo,
            hi: ihi,
            kind: ikind,
            body: ibody,
        }],
    ) = <[Stmt; 1]>::try_from(body)
    else {
        unreachable!("checked")
    };
    Ok(Stmt::For {
        var: ivar,
        lo: ilo,
        hi: ihi,
        kind: ikind,
        body: vec![Stmt::For {
            var,
            lo,
            hi,
            kind,
            body: ibody,
        }],
    })
}

/// Why `s` (a loop) cannot be swapped with the loop over `inner_var` inside
/// it, if it cannot.
pub fn interchange_hazard(s: &Stmt, inner_var: &str) -> Option<String> {
    let Stmt::For { var, body, .. } = s else {
        return Some("not a loop".into());
    };
    let [Stmt::For {
        var: ivar, lo, hi, ..
    }] = &body[..]
    else {
        return Some(format!(
            "%{var} holds more than the loop over %{inner_var}: only perfectly nested loops are interchanged"
        ));
    };
    if ivar != inner_var {
        return Some(format!(
            "the loop directly inside %{var} is %{ivar}, not %{inner_var}"
        ));
    }
    if uses(lo, var) || uses(hi, var) {
        return Some(format!("the bounds of %{ivar} depend on %{var}"));
    }
    reorder_hazard(std::slice::from_ref(s), &[var, ivar], 1)
        .map(|why| format!("cannot interchange %{var} and %{ivar}: {why}"))
}
