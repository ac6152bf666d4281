//! Symbolic intervals for the bounds proofs of the loop-IR verifier.
//!
//! A bound is an affine form in the module's symbolic sizes,
//! `c + Σ kᵢ·sizeᵢ`, and every size is at least 1. An [`Interval`] holds an
//! inclusive lower and upper bound, either of which may be unknown. The
//! arithmetic is sound (the true value always lies inside) and deliberately
//! simple: products of two non-constant terms, divisions that do not divide
//! evenly and the like give unknown bounds, and the verifier then refuses the
//! access rather than guessing.

use std::collections::BTreeMap;
use std::fmt;

/// `constant + Σ coefficient · size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affine {
    /// The constant term.
    pub constant: i64,
    /// Coefficients of symbolic sizes (no zeros).
    pub terms: BTreeMap<String, i64>,
}

impl Affine {
    /// A constant.
    pub fn constant(c: i64) -> Affine {
        Affine {
            constant: c,
            terms: BTreeMap::new(),
        }
    }

    /// One symbolic size.
    pub fn size(name: &str) -> Affine {
        Affine {
            constant: 0,
            terms: BTreeMap::from([(name.to_string(), 1)]),
        }
    }

    /// The value if it has no symbolic part.
    pub fn as_constant(&self) -> Option<i64> {
        self.terms.is_empty().then_some(self.constant)
    }

    fn combine(&self, other: &Affine, sign: i64) -> Option<Affine> {
        let mut terms = self.terms.clone();
        for (s, k) in &other.terms {
            let e = terms.entry(s.clone()).or_insert(0);
            *e = e.checked_add(k.checked_mul(sign)?)?;
            if *e == 0 {
                terms.remove(s);
            }
        }
        Some(Affine {
            constant: self
                .constant
                .checked_add(other.constant.checked_mul(sign)?)?,
            terms,
        })
    }

    /// `self + other`.
    pub fn add(&self, other: &Affine) -> Option<Affine> {
        self.combine(other, 1)
    }

    /// `self - other`.
    pub fn sub(&self, other: &Affine) -> Option<Affine> {
        self.combine(other, -1)
    }

    /// `k · self`.
    pub fn scale(&self, k: i64) -> Option<Affine> {
        if k == 0 {
            return Some(Affine::constant(0));
        }
        let mut terms = BTreeMap::new();
        for (s, c) in &self.terms {
            terms.insert(s.clone(), c.checked_mul(k)?);
        }
        Some(Affine {
            constant: self.constant.checked_mul(k)?,
            terms,
        })
    }

    /// `⌊self / k⌋` when every coefficient is a multiple of `k > 0`.
    pub fn div_floor(&self, k: i64) -> Option<Affine> {
        if k <= 0 || self.terms.values().any(|c| c % k != 0) {
            return None;
        }
        Some(Affine {
            constant: self.constant.div_euclid(k),
            terms: self.terms.iter().map(|(s, c)| (s.clone(), c / k)).collect(),
        })
    }

    /// True if `self ≤ other` for every assignment of sizes ≥ 1.
    pub fn provably_le(&self, other: &Affine) -> bool {
        match other.sub(self) {
            Some(d) => {
                d.terms.values().all(|&k| k >= 0)
                    && d.terms
                        .values()
                        .try_fold(d.constant, |acc, &k| acc.checked_add(k))
                        .is_some_and(|m| m >= 0)
            }
            None => false,
        }
    }
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (s, k) in &self.terms {
            let sign = if *k < 0 {
                "-"
            } else if first {
                ""
            } else {
                "+"
            };
            let sep = if first { "" } else { " " };
            let mag = k.abs();
            let coef = if mag == 1 {
                String::new()
            } else {
                format!("{mag}*")
            };
            let gap = if first || sign.is_empty() { "" } else { " " };
            write!(f, "{sep}{sign}{gap}{coef}{s}")?;
            first = false;
        }
        if first {
            write!(f, "{}", self.constant)
        } else if self.constant != 0 {
            let sign = if self.constant < 0 { "-" } else { "+" };
            write!(f, " {sign} {}", self.constant.abs())
        } else {
            Ok(())
        }
    }
}

/// Inclusive bounds, each possibly unknown.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Interval {
    /// The least value, if known.
    pub lo: Option<Affine>,
    /// The greatest value, if known.
    pub hi: Option<Affine>,
}

impl Interval {
    /// Exactly `a`.
    pub fn point(a: Affine) -> Interval {
        Interval {
            lo: Some(a.clone()),
            hi: Some(a),
        }
    }

    /// Nothing known.
    pub fn unknown() -> Interval {
        Interval::default()
    }

    /// The constant value, if the interval is one point with no symbols.
    pub fn as_constant(&self) -> Option<i64> {
        match (&self.lo, &self.hi) {
            (Some(l), Some(h)) if l == h => l.as_constant(),
            _ => None,
        }
    }

    /// `self + other`.
    pub fn add(&self, o: &Interval) -> Interval {
        Interval {
            lo: both(&self.lo, &o.lo, Affine::add),
            hi: both(&self.hi, &o.hi, Affine::add),
        }
    }

    /// `self - other`.
    pub fn sub(&self, o: &Interval) -> Interval {
        Interval {
            lo: both(&self.lo, &o.hi, Affine::sub),
            hi: both(&self.hi, &o.lo, Affine::sub),
        }
    }

    /// `-self`.
    pub fn neg(&self) -> Interval {
        Interval {
            lo: self.hi.as_ref().and_then(|h| h.scale(-1)),
            hi: self.lo.as_ref().and_then(|l| l.scale(-1)),
        }
    }

    /// `self * other`, known when one side is a constant.
    pub fn mul(&self, o: &Interval) -> Interval {
        let (x, k) = match (self.as_constant(), o.as_constant()) {
            (_, Some(k)) => (self, k),
            (Some(k), _) => (o, k),
            _ => return Interval::unknown(),
        };
        let lo = x.lo.as_ref().and_then(|l| l.scale(k));
        let hi = x.hi.as_ref().and_then(|h| h.scale(k));
        if k >= 0 {
            Interval { lo, hi }
        } else {
            Interval { lo: hi, hi: lo }
        }
    }

    fn non_negative(&self) -> bool {
        self.lo
            .as_ref()
            .is_some_and(|l| Affine::constant(0).provably_le(l))
    }

    /// `⌊self / k⌋` for a constant `k > 0` and a non-negative `self`.
    pub fn div(&self, o: &Interval) -> Interval {
        match o.as_constant() {
            Some(k) if k > 0 && self.non_negative() => Interval {
                lo: Some(
                    self.lo
                        .as_ref()
                        .and_then(|l| l.div_floor(k))
                        .unwrap_or(Affine::constant(0)),
                ),
                hi: self.hi.as_ref().and_then(|h| h.div_floor(k)),
            },
            _ => Interval::unknown(),
        }
    }

    /// `self % k` for a constant `k > 0` and a non-negative `self`.
    pub fn rem(&self, o: &Interval) -> Interval {
        match o.as_constant() {
            Some(k) if k > 0 && self.non_negative() => Interval {
                lo: Some(Affine::constant(0)),
                hi: Some(Affine::constant(k - 1)),
            },
            _ => Interval::unknown(),
        }
    }

    /// `min(self, other)`.
    pub fn min(&self, o: &Interval) -> Interval {
        Interval {
            lo: lesser(&self.lo, &o.lo, false),
            hi: lesser(&self.hi, &o.hi, true),
        }
    }

    /// `max(self, other)`.
    pub fn max(&self, o: &Interval) -> Interval {
        self.neg().min(&o.neg()).neg()
    }

    /// Keeps the tighter of two sound bounds on each side.
    pub fn meet(&self, o: &Interval) -> Interval {
        let pick = |a: &Option<Affine>, b: &Option<Affine>, upper: bool| match (a, b) {
            (Some(x), Some(y)) => {
                let x_tighter = if upper {
                    x.provably_le(y)
                } else {
                    y.provably_le(x)
                };
                Some(if x_tighter { x.clone() } else { y.clone() })
            }
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        };
        Interval {
            lo: pick(&self.lo, &o.lo, false),
            hi: pick(&self.hi, &o.hi, true),
        }
    }
}

fn both(
    a: &Option<Affine>,
    b: &Option<Affine>,
    f: fn(&Affine, &Affine) -> Option<Affine>,
) -> Option<Affine> {
    f(a.as_ref()?, b.as_ref()?)
}

/// The smaller of two bounds. For an upper bound either one is sound
/// (`min(a, b) ≤ a`); for a lower bound only a provably smaller one is.
fn lesser(a: &Option<Affine>, b: &Option<Affine>, upper: bool) -> Option<Affine> {
    match (a, b) {
        (Some(x), Some(y)) if x.provably_le(y) => Some(x.clone()),
        (Some(x), Some(y)) if y.provably_le(x) => Some(y.clone()),
        (Some(x), _) if upper => Some(x.clone()),
        (_, Some(y)) if upper => Some(y.clone()),
        _ => None,
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |b: &Option<Affine>| b.as_ref().map_or("?".to_string(), |a| a.to_string());
        write!(f, "[{}, {}]", show(&self.lo), show(&self.hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_hold_for_every_size() {
        let batch = Affine::size("batch");
        let last = batch.sub(&Affine::constant(1)).unwrap();
        assert!(last.provably_le(&batch));
        assert!(Affine::constant(0).provably_le(&last));
        assert!(!batch.provably_le(&last));
        assert!(!Affine::constant(2).provably_le(&last));
        assert_eq!(
            last.scale(784)
                .unwrap()
                .add(&Affine::constant(783))
                .unwrap()
                .to_string(),
            "784*batch - 1"
        );
    }
}
