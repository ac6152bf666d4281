//! Concrete `f32` tensors: the data of params and of interpreter values.

use std::fmt;

/// A dense row-major `f32` tensor with a static shape.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and data; the lengths must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, String> {
        let n = checked_numel(&shape).ok_or("tensor size overflows")?;
        if n != data.len() {
            return Err(format!(
                "shape {:?} needs {n} elements but {} were given",
                shape,
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor filled with one value.
    pub fn full(shape: Vec<usize>, value: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![value; n],
        }
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: vec![value],
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// The element count of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Row-major strides of `shape` (in elements).
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape)?;
        let shown: Vec<f32> = self.data.iter().take(8).copied().collect();
        write!(f, "{shown:?}")?;
        if self.data.len() > 8 {
            write!(f, "…")?;
        }
        Ok(())
    }
}
