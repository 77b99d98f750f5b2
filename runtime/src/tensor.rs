//! A plain host tensor: a shape and row-major `f32` data.
//!
//! Inputs, outputs and arrays read from files are `Tensor`s; they are deliberately simple
//! (no strides, no device) so that callers can build them from any source.

use crate::error::{fmt_shape, Result, RuntimeError};

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Tensor {
    /// Dimensions, outermost first; `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Row-major (C order) elements; `data.len() == shape.iter().product()`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and its data; an error when the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n = numel(&shape)?;
        if n != data.len() {
            return Err(RuntimeError::TensorData {
                shape,
                len: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A zero-filled tensor.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// A shape-`[]` tensor.
    pub fn scalar(value: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: vec![value],
        }
    }

    /// A tensor whose element at flat index `i` is `f(i)`.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: (0..n).map(f).collect(),
        }
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Checks that `data.len()` matches the shape.
    pub fn validate(&self) -> Result<()> {
        if numel(&self.shape)? != self.data.len() {
            return Err(RuntimeError::TensorData {
                shape: self.shape.clone(),
                len: self.data.len(),
            });
        }
        Ok(())
    }

    /// An error naming `what` unless the shape is `expected`.
    pub fn check_shape(&self, expected: &[usize], what: &str) -> Result<()> {
        if self.shape != expected {
            return Err(RuntimeError::Shape {
                what: what.to_string(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            });
        }
        self.validate()
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape)?;
        if n != self.data.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "cannot reshape a tensor of shape {} ({} elements) to {} ({n} elements)",
                fmt_shape(&self.shape),
                self.data.len(),
                fmt_shape(shape)
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Element at a multi-index; `None` when out of range.
    pub fn get(&self, index: &[usize]) -> Option<f32> {
        if index.len() != self.shape.len() {
            return None;
        }
        let mut flat = 0;
        for (&i, &d) in index.iter().zip(&self.shape) {
            if i >= d {
                return None;
            }
            flat = flat * d + i;
        }
        self.data.get(flat).copied()
    }

    /// Sum of all elements (f64 accumulation).
    pub fn sum(&self) -> f64 {
        self.data.iter().map(|&x| x as f64).sum()
    }

    /// Largest absolute elementwise difference, or `None` when the shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        if self.shape != other.shape || self.data.len() != other.data.len() {
            return None;
        }
        Some(
            self.data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max),
        )
    }
}

/// Product of a shape's dimensions, an error on overflow.
pub(crate) fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "shape {} has too many elements",
                fmt_shape(shape)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construct_and_check() {
        let t = Tensor::new(vec![2, 3], (0..6).map(|x| x as f32).collect()).unwrap();
        assert_eq!(t.numel(), 6);
        assert_eq!(t.get(&[1, 2]), Some(5.0));
        assert_eq!(t.get(&[2, 0]), None);
        assert!(t.check_shape(&[2, 3], "x").is_ok());
        let e = t.check_shape(&[3, 2], "input `x`").unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
        let e = Tensor::new(vec![2, 2], vec![1.0]).unwrap_err().to_string();
        assert!(e.contains("[2, 2]") && e.contains("4 elements"), "{e}");
        assert_eq!(Tensor::scalar(3.0).numel(), 1);
        let r = t.clone().reshape(&[6]).unwrap();
        assert_eq!(r.shape, vec![6]);
        assert!(t.reshape(&[4]).is_err());
        assert!(Tensor::new(vec![usize::MAX, 3], vec![]).is_err());
    }
}
