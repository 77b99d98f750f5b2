//! GEMM on host slices through the `gemm` crate (explicit strides, no transposed copies),
//! and the size checks every CPU op shares.

use crate::error::{Result, RuntimeError};
use gemm::Parallelism;

/// Products with at least this many multiply-adds use all threads.
pub(crate) const PAR_MACS: usize = 1 << 20;

pub(crate) fn check_len(what: &str, found: usize, expected: usize) -> Result<()> {
    if found != expected {
        return Err(RuntimeError::Device(format!(
            "{what} has {found} elements, the operation needs {expected}"
        )));
    }
    Ok(())
}

pub(crate) fn mul(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

pub(crate) fn parallelism(macs: usize) -> Parallelism {
    if macs >= PAR_MACS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `dst[m, n] = (read_dst ? dst : 0) + lhs[m, k] @ rhs[k, n]`, `dst` row stride `dst_rs`,
/// column stride 1.
///
/// # Safety
/// Every pointer must be valid for the elements its strides address, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !read_dst {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * dst_rs), 0, n);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        read_dst,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        par,
    );
}
