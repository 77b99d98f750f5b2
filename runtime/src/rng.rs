//! Philox4x32-10, the counter-based RNG of Random123 (Salmon et al., SC'11).
//!
//! Counter-based means random numbers are a pure function of `(counter, key)`: any thread or
//! GPU lane can draw the value for any `(sample, neuron, step)` without shared state, and the
//! CPU and CUDA back ends produce bit-identical streams. Generated kernels compute the same
//! function (`snn_uniform` in kernels/rust/prelude.rs and kernels/cuda/snn_prelude.cuh: the
//! Bernoulli and Poisson encoders draw word `idx % 4` of `philox4x32_10([q lo, q hi, t, 0],
//! [seed, 0x5EED5EED])`, `q = idx / 4`, mapped by [`uniform01`]), so this implementation must
//! match Random123 exactly; the tests check its known-answer vectors.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

#[inline(always)]
fn round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(M0, ctr[0]);
    let (hi1, lo1) = mulhilo(M1, ctr[2]);
    [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0]
}

/// Philox4x32 with 10 rounds: four independent uniform `u32` from a 128-bit counter and a
/// 64-bit key.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    c = round(c, k);
    for _ in 1..10 {
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        c = round(c, k);
    }
    c
}

/// A `u32` to a uniform `f32` in `[0, 1)` using its top 24 bits (exactly representable).
#[inline]
pub fn uniform01(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Splits a 64-bit seed into a Philox key.
#[inline]
pub fn key_from_seed(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Counter domains (word 3 of the counter) that keep the runtime's streams apart.
pub mod stream {
    /// Weight initialisation: counter `[block lo, block hi, weight index, WEIGHTS]`.
    pub const WEIGHTS: u32 = 0x5745_0000;
    /// Random inputs: counter `[block lo, block hi, input index, INPUTS]`.
    pub const INPUTS: u32 = 0x494E_0000;
    /// Normal initialisation of plastic layers by `snnc train`'s local learning: counter
    /// `[block lo, block hi, weight index, LOCAL_INIT]` and `LOCAL_INIT + 1` (Box-Muller).
    pub const LOCAL_INIT: u32 = 0x4C49_0000;
}

/// Fills `out` with uniform `[0, 1)` values of the stream `(seed, id, domain)`: element `e`
/// is word `e % 4` of `philox4x32_10([b as u32, (b >> 32) as u32, id, domain], seed)` with
/// `b = e / 4`, mapped by [`uniform01`].
pub fn fill_uniform01(out: &mut [f32], seed: u64, id: u32, domain: u32) {
    let key = key_from_seed(seed);
    for (b, chunk) in out.chunks_mut(4).enumerate() {
        let b = b as u64;
        let r = philox4x32_10([b as u32, (b >> 32) as u32, id, domain], key);
        for (o, x) in chunk.iter_mut().zip(r) {
            *o = uniform01(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123 `kat_vectors`, philox4x32 10.
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([0xffff_ffff; 4], [0xffff_ffff; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_range() {
        assert_eq!(uniform01(0), 0.0);
        assert_eq!(uniform01(0xff), 0.0);
        assert_eq!(uniform01(0x100), 1.0 / 16_777_216.0);
        assert!(uniform01(u32::MAX) < 1.0);
        assert_eq!(uniform01(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        assert_eq!(uniform01(0x8000_0000), 0.5);
    }

    #[test]
    fn fill_is_deterministic_and_spread() {
        let mut a = vec![0.0; 1001];
        let mut b = vec![0.0; 1001];
        fill_uniform01(&mut a, 42, 3, stream::INPUTS);
        fill_uniform01(&mut b, 42, 3, stream::INPUTS);
        assert_eq!(a, b);
        fill_uniform01(&mut b, 43, 3, stream::INPUTS);
        assert_ne!(a, b);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
        assert!(a.iter().all(|&x| (0.0..1.0).contains(&x)));
        // element 5 = word 1 of block 1
        let r = philox4x32_10([1, 0, 3, stream::INPUTS], key_from_seed(42));
        assert_eq!(a[5], uniform01(r[1]));
    }
}
