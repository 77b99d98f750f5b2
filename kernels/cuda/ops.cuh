// Hand-written library kernels of the CUDA device (runtime/src/cuda): im2col for conv2d,
// bias broadcast for GEMM and conv2d, 2-D pooling, the event-driven (spike-input) GEMM and
// conv2d and their weight gradients; for training, col2im (the conv's
// input gradient after its GEMM), the conv bias gradient and the pooling backward. NVRTC
// compiles this file once per process and architecture (runtime/src/cuda/mod.rs includes
// it with include_str!); compiler/tests/cuda_shim.rs runs it on the host through
// host_shim.h against the CPU device.
//
// Each kernel is one thread per output element over a flat index `i < n`; the semantics are
// those of runtime/src/cpu/ops.rs, operation for operation (pooling is bit-identical: the
// same loop order, the same reciprocal for the average). Sizes are 64-bit; signed
// arithmetic only where padding makes coordinates negative. No headers (NVRTC has none).

#ifndef SNN_OPS_CUH
#define SNN_OPS_CUH

typedef unsigned long long snn_u64;
typedef long long snn_i64;

#define SNN_FLAT_INDEX ((snn_u64)blockIdx.x * blockDim.x + threadIdx.x)

/// Unfolds `images` contiguous `[c_in, h, w]` images into `col[images, c_in*kh*kw, h_out*w_out]`
/// (row `(c*kh + i)*kw + j`, column `oy*w_out + ox`; zero outside the image).
extern "C" __global__ void snn_im2col(
    const float* __restrict__ x,
    float* __restrict__ col,
    snn_u64 n, // images * kk * p
    snn_u64 c_in, snn_u64 h, snn_u64 w, snn_u64 kh, snn_u64 kw,
    snn_u64 stride, snn_u64 pad, snn_u64 h_out, snn_u64 w_out)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 p = h_out * w_out;
    const snn_u64 kk = c_in * kh * kw;
    const snn_u64 img = i / (kk * p);
    const snn_u64 r = (i / p) % kk;
    const snn_u64 q = i % p;
    const snn_u64 c = r / (kh * kw);
    const snn_u64 ki = (r / kw) % kh;
    const snn_u64 kj = r % kw;
    const snn_u64 oy = q / w_out;
    const snn_u64 ox = q % w_out;
    const snn_i64 iy = (snn_i64)(oy * stride + ki) - (snn_i64)pad;
    const snn_i64 ix = (snn_i64)(ox * stride + kj) - (snn_i64)pad;
    float v = 0.0f;
    if (iy >= 0 && iy < (snn_i64)h && ix >= 0 && ix < (snn_i64)w) {
        v = x[img * c_in * h * w + (c * h + (snn_u64)iy) * w + (snn_u64)ix];
    }
    col[i] = v;
}

/// `y[i] = (accumulate ? y[i] : 0) + b[(i / inner) % channels]` for `i < n`: a dense bias
/// (`inner = 1`, `channels = n_out`) or a conv bias (`inner = h_out * w_out`).
extern "C" __global__ void snn_bias(
    float* __restrict__ y,
    const float* __restrict__ b,
    snn_u64 n, snn_u64 inner, snn_u64 channels, snn_u64 accumulate)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const float v = b[(i / inner) % channels];
    y[i] = accumulate ? y[i] + v : v;
}

/// Bias gradient: `db[j] += sum over rows of dy[r, j]` (one thread per output; threads
/// of a warp read consecutive addresses of each row).
extern "C" __global__ void snn_bias_grad(
    float* __restrict__ db,
    const float* __restrict__ dy,
    snn_u64 rows, snn_u64 n)
{
    const snn_u64 j = SNN_FLAT_INDEX;
    if (j >= n) return;
    float acc = 0.0f;
    for (snn_u64 r = 0; r < rows; ++r) acc += dy[r * n + j];
    db[j] += acc;
}

/// Max (`kind = 0`) or average (`kind = 1`, padding counted as zeros) pooling over `planes`
/// contiguous `[h, w]` planes -> `[h_out, w_out]`; torch semantics, floor mode. The top and
/// left padding place the windows; the bottom and right only count in `h_out`, `w_out`.
extern "C" __global__ void snn_pool2d(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 n, // planes * h_out * w_out
    snn_u64 h, snn_u64 w, snn_u64 k, snn_u64 stride, snn_u64 pad_top, snn_u64 pad_left,
    snn_u64 h_out, snn_u64 w_out, snn_u64 kind)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 pout = h_out * w_out;
    const snn_u64 plane = i / pout;
    const snn_u64 q = i % pout;
    const snn_u64 oy = q / w_out;
    const snn_u64 ox = q % w_out;
    const float* xp = x + plane * h * w;
    const snn_i64 y0 = (snn_i64)(oy * stride) - (snn_i64)pad_top;
    const snn_i64 x0 = (snn_i64)(ox * stride) - (snn_i64)pad_left;
    const snn_i64 ys = y0 > 0 ? y0 : 0;
    snn_i64 ye = y0 + (snn_i64)k < (snn_i64)h ? y0 + (snn_i64)k : (snn_i64)h;
    ye = ye > 0 ? ye : 0;
    const snn_i64 xs = x0 > 0 ? x0 : 0;
    snn_i64 xe = x0 + (snn_i64)k < (snn_i64)w ? x0 + (snn_i64)k : (snn_i64)w;
    xe = xe > 0 ? xe : 0;
    float out;
    if (kind == 0) {
        float m = __int_as_float(0xff800000); // -inf
        for (snn_i64 iy = ys; iy < ye; ++iy)
            for (snn_i64 ix = xs; ix < xe; ++ix)
                m = fmaxf(m, xp[iy * (snn_i64)w + ix]);
        out = m;
    } else {
        const float inv = 1.0f / (float)(k * k);
        float s = 0.0f;
        for (snn_i64 iy = ys; iy < ye; ++iy)
            for (snn_i64 ix = xs; ix < xe; ++ix)
                s = __fadd_rn(s, xp[iy * (snn_i64)w + ix]);
        out = __fmul_rn(s, inv);
    }
    y[i] = out;
}

/// Conv input gradient, second half: folds `col[images, c_in*kh*kw, h_out*w_out]` (the
/// layout of snn_im2col, holding W^T @ dy) back onto `dx[images, c_in, h, w]`, one thread
/// per input cell. Each cell gathers its entries (kernel row, then column, ascending) from
/// zero, then stores or adds: no atomics, the order of `col2im` in runtime/src/cpu/ops.rs.
extern "C" __global__ void snn_col2im(
    const float* __restrict__ col,
    float* __restrict__ dx,
    snn_u64 n, // images * c_in * h * w
    snn_u64 c_in, snn_u64 h, snn_u64 w, snn_u64 kh, snn_u64 kw,
    snn_u64 stride, snn_u64 pad, snn_u64 h_out, snn_u64 w_out, snn_u64 accumulate)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 p = h_out * w_out;
    const snn_u64 kk = c_in * kh * kw;
    const snn_u64 img = i / (c_in * h * w);
    const snn_u64 c = (i / (h * w)) % c_in;
    const snn_u64 ty = (i / w) % h + pad;
    const snn_u64 tx = i % w + pad;
    const float* ci = col + img * kk * p;
    float acc = 0.0f;
    for (snn_u64 ki = 0; ki < kh; ++ki) {
        if (ty < ki || (ty - ki) % stride != 0) continue;
        const snn_u64 oy = (ty - ki) / stride;
        if (oy >= h_out) continue;
        for (snn_u64 kj = 0; kj < kw; ++kj) {
            if (tx < kj || (tx - kj) % stride != 0) continue;
            const snn_u64 ox = (tx - kj) / stride;
            if (ox >= w_out) continue;
            acc = __fadd_rn(acc, ci[((c * kh + ki) * kw + kj) * p + oy * w_out + ox]);
        }
    }
    dx[i] = accumulate ? __fadd_rn(dx[i], acc) : acc;
}

/// Conv bias gradient: `db[c] += sum over images and positions of dy[img, c, q]`, one
/// thread per output channel, summed image by image from zero (the CPU's order).
extern "C" __global__ void snn_conv_bias_grad(
    float* __restrict__ db,
    const float* __restrict__ dy,
    snn_u64 images, snn_u64 channels, snn_u64 p)
{
    const snn_u64 c = SNN_FLAT_INDEX;
    if (c >= channels) return;
    float acc = 0.0f;
    for (snn_u64 img = 0; img < images; ++img) {
        const float* row = dy + (img * channels + c) * p;
        for (snn_u64 q = 0; q < p; ++q) acc = __fadd_rn(acc, row[q]);
    }
    db[c] = __fadd_rn(db[c], acc);
}

/// The cell (index into the plane) that max pooling picks in window (oy, ox): the first
/// maximum in row-major order, never a padded cell; -1 for an empty window.
__device__ __forceinline__ snn_i64 snn_pool_argmax(
    const float* xp, snn_i64 h, snn_i64 w, snn_i64 k, snn_i64 stride, snn_i64 pad_top,
    snn_i64 pad_left, snn_i64 oy, snn_i64 ox)
{
    const snn_i64 y0 = oy * stride - pad_top;
    const snn_i64 x0 = ox * stride - pad_left;
    const snn_i64 ys = y0 > 0 ? y0 : 0;
    snn_i64 ye = y0 + k < h ? y0 + k : h;
    ye = ye > 0 ? ye : 0;
    const snn_i64 xs = x0 > 0 ? x0 : 0;
    snn_i64 xe = x0 + k < w ? x0 + k : w;
    xe = xe > 0 ? xe : 0;
    snn_i64 best = -1;
    float bv = 0.0f;
    for (snn_i64 iy = ys; iy < ye; ++iy)
        for (snn_i64 ix = xs; ix < xe; ++ix) {
            const float v = xp[iy * w + ix];
            if (best < 0 || v > bv) {
                best = iy * w + ix;
                bv = v;
            }
        }
    return best;
}

/// Pooling backward over `planes` contiguous `[h, w]` planes, one thread per input cell:
/// the cell gathers, over the windows that contain it (row, then column, ascending), `dy`
/// of the window (max, `kind = 0`: if the window picks this cell, recomputed from the
/// forward input `x`) or `dy / k^2` (average, `kind = 1`), from zero; then stores or adds.
/// The order of `pool2d_dx` in runtime/src/cpu/ops.rs.
extern "C" __global__ void snn_pool2d_dx(
    const float* __restrict__ x,
    const float* __restrict__ dy,
    float* __restrict__ dx,
    snn_u64 n, // planes * h * w
    snn_u64 h, snn_u64 w, snn_u64 k, snn_u64 stride, snn_u64 pad_top, snn_u64 pad_left,
    snn_u64 h_out, snn_u64 w_out, snn_u64 kind, snn_u64 accumulate)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 plane = i / (h * w);
    const snn_u64 me = i % (h * w);
    const snn_u64 ty = me / w + pad_top;
    const snn_u64 tx = me % w + pad_left;
    const float* xp = x + plane * h * w;
    const float* dp = dy + plane * h_out * w_out;
    const snn_u64 oy_lo = ty + 1 > k ? (ty + 1 - k + stride - 1) / stride : 0;
    const snn_u64 oy_hi = ty / stride < h_out - 1 ? ty / stride : h_out - 1;
    const snn_u64 ox_lo = tx + 1 > k ? (tx + 1 - k + stride - 1) / stride : 0;
    const snn_u64 ox_hi = tx / stride < w_out - 1 ? tx / stride : w_out - 1;
    const float inv = 1.0f / (float)(k * k);
    float acc = 0.0f;
    for (snn_u64 oy = oy_lo; oy <= oy_hi; ++oy)
        for (snn_u64 ox = ox_lo; ox <= ox_hi; ++ox) {
            const float d = dp[oy * w_out + ox];
            if (kind == 0) {
                if (snn_pool_argmax(xp, (snn_i64)h, (snn_i64)w, (snn_i64)k, (snn_i64)stride,
                                    (snn_i64)pad_top, (snn_i64)pad_left, (snn_i64)oy,
                                    (snn_i64)ox) == (snn_i64)me)
                    acc = __fadd_rn(acc, d);
            } else {
                acc = __fadd_rn(acc, __fmul_rn(d, inv));
            }
        }
    dx[i] = accumulate ? __fadd_rn(dx[i], acc) : acc;
}

/// `wt[i, o] = w[o, i]`: the `[k, n]` transposed copy of a `[n, k]` weight that
/// `snn_spike_gemm` reads (one thread per element, `i = j * n + o`).
extern "C" __global__ void snn_transpose(
    const float* __restrict__ w,
    float* __restrict__ wt,
    snn_u64 n, snn_u64 k)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n * k) return;
    wt[i] = w[(i % n) * k + i / n];
}

/// Event-driven dense layer (runtime/src/cpu/spike.rs): `y[r, o] = (read_dst ? y[r, o] : 0)
/// + sum over the non-zero x[r, j], j ascending, of x[r, j] * wt[j, o]` (one thread per
/// output; the threads of a warp share `r`, so `x[r, j]` is one broadcast load, and read
/// consecutive `o` of `wt`: coalesced). The summation order is the CPU's: bit-identical.
extern "C" __global__ void snn_spike_gemm(
    const float* __restrict__ x,
    const float* __restrict__ wt,
    float* __restrict__ y,
    snn_u64 rows, snn_u64 k, snn_u64 n, snn_u64 read_dst)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= rows * n) return;
    const snn_u64 r = i / n;
    const snn_u64 o = i % n;
    const float* xr = x + r * k;
    float acc = read_dst ? y[i] : 0.0f;
    for (snn_u64 j = 0; j < k; ++j) {
        const float v = xr[j];
        if (v != 0.0f) acc = __fadd_rn(acc, __fmul_rn(v, wt[j * n + o]));
    }
    y[i] = acc;
}

/// Event-driven weight gradient: `dw[o, j] += sum over rows r with x[r, j] != 0, r ascending,
/// of x[r, j] * dy[r, o]` (one thread per weight, `i = o * k + j`: a warp reads consecutive
/// `x[r, j]` and one broadcast `dy[r, o]`). The CPU's order: bit-identical.
extern "C" __global__ void snn_spike_gemm_dw(
    const float* __restrict__ x,
    const float* __restrict__ dy,
    float* __restrict__ dw,
    snn_u64 rows, snn_u64 k, snn_u64 n)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n * k) return;
    const snn_u64 o = i / k;
    const snn_u64 j = i % k;
    float acc = 0.0f;
    for (snn_u64 r = 0; r < rows; ++r) {
        const float v = x[r * k + j];
        if (v != 0.0f) acc = __fadd_rn(acc, __fmul_rn(v, dy[r * n + o]));
    }
    dw[i] += acc;
}

/// Event-driven conv2d (runtime/src/cpu/spike.rs, `spike_conv2d`) over `images` images:
/// `y[img, o, q] = (read_dst ? y : 0) + sum over the taps (c, ki, kj) ascending whose input
/// cell x[img, c, oy*stride + ki - pad, ox*stride + kj - pad] is inside the image and
/// non-zero, of x * wgt[o, (c*kh + ki)*kw + kj]`. One thread per output; the threads of a
/// warp share `o` (a broadcast weight load) and read neighbouring cells. The CPU scatters
/// the active cells in increasing (c, iy, ix), which is this order: bit-identical.
extern "C" __global__ void snn_spike_conv2d(
    const float* __restrict__ x,
    const float* __restrict__ wgt,
    float* __restrict__ y,
    snn_u64 n, // images * c_out * p
    snn_u64 c_in, snn_u64 h, snn_u64 w, snn_u64 kh, snn_u64 kw,
    snn_u64 stride, snn_u64 pad, snn_u64 h_out, snn_u64 w_out, snn_u64 c_out,
    snn_u64 read_dst)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 p = h_out * w_out;
    const snn_u64 img = i / (c_out * p);
    const snn_u64 o = (i / p) % c_out;
    const snn_u64 q = i % p;
    const snn_i64 y0 = (snn_i64)((q / w_out) * stride) - (snn_i64)pad;
    const snn_i64 x0 = (snn_i64)((q % w_out) * stride) - (snn_i64)pad;
    const float* xi = x + img * c_in * h * w;
    const float* wo = wgt + o * c_in * kh * kw;
    float acc = read_dst ? y[i] : 0.0f;
    for (snn_u64 c = 0; c < c_in; ++c) {
        for (snn_u64 ki = 0; ki < kh; ++ki) {
            const snn_i64 iy = y0 + (snn_i64)ki;
            if (iy < 0 || iy >= (snn_i64)h) continue;
            for (snn_u64 kj = 0; kj < kw; ++kj) {
                const snn_i64 ix = x0 + (snn_i64)kj;
                if (ix < 0 || ix >= (snn_i64)w) continue;
                const float v = xi[(c * h + (snn_u64)iy) * w + (snn_u64)ix];
                if (v != 0.0f) acc = __fadd_rn(acc, __fmul_rn(v, wo[(c * kh + ki) * kw + kj]));
            }
        }
    }
    y[i] = acc;
}

/// First-spike map of a sequence for the wave conv2d (runtime/src/cpu/wave_conv.rs
/// `first_spike_map`): one thread per input `i < n` (`batch * xi`) of `x` (`[t_len, batch,
/// xi]`) writes its first step with value 1 into `fs[i]` (as a float; `t_len` = never) and
/// sets `bad[b] = 1` when its column is not a cumulative 0/1 wave (`bad` zeroed before).
extern "C" __global__ void snn_first_spike_map(
    const float* __restrict__ x,
    float* __restrict__ fs,
    float* __restrict__ bad,
    snn_u64 n, // batch * xi
    snn_u64 xi, snn_u64 t_len)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    snn_u64 first = t_len;
    bool wave = true;
    for (snn_u64 t = 0; t < t_len; ++t) {
        const float v = x[t * n + i];
        if (v == 1.0f) {
            if (first == t_len) first = t;
        } else if (v != 0.0f || first != t_len) {
            wave = false;
        }
    }
    fs[i] = (float)first;
    if (!wave) bad[i / xi] = 1.0f;
}

/// Steps of the wave conv2d's per-thread accumulator; longer sequences run in windows.
#define SNN_WAVE_WINDOW 32

/// Wave conv2d (runtime/src/cpu/wave_conv.rs `wave_conv2d`): one thread per output
/// `i < n` (`batch * c_out * p`) of a sample with `bad[b] == 0` reads the first-spike map
/// `fs` (`[batch, c_in, h, w]`), adds, taps ascending, the weight of each tap whose input
/// first fires at `t'` into `acc[t']`, and writes `y[t, b, o, q] (+)= prefix + bias[o]`
/// with `prefix = prefix + acc[t]`: the CPU's order, bit-identical. Samples with
/// `bad[b] != 0` are left to the dense conv of every step.
extern "C" __global__ void snn_wave_conv2d(
    const float* __restrict__ fs,
    const float* __restrict__ bad,
    const float* __restrict__ wgt,
    const float* __restrict__ bias,
    float* __restrict__ y,
    snn_u64 n, // batch * c_out * p
    snn_u64 c_in, snn_u64 h, snn_u64 w, snn_u64 kh, snn_u64 kw,
    snn_u64 stride, snn_u64 pad, snn_u64 h_out, snn_u64 w_out, snn_u64 c_out,
    snn_u64 t_len, snn_u64 has_bias, snn_u64 accumulate)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 p = h_out * w_out;
    const snn_u64 img = i / (c_out * p);
    if (bad[img] != 0.0f) return;
    const snn_u64 o = (i / p) % c_out;
    const snn_u64 q = i % p;
    const snn_i64 y0 = (snn_i64)((q / w_out) * stride) - (snn_i64)pad;
    const snn_i64 x0 = (snn_i64)((q % w_out) * stride) - (snn_i64)pad;
    const float* fi = fs + img * c_in * h * w;
    const float* wo = wgt + o * c_in * kh * kw;
    const float b = has_bias ? bias[o] : 0.0f;
    float prefix = 0.0f;
    for (snn_u64 t0 = 0; t0 < t_len; t0 += SNN_WAVE_WINDOW) {
        float acc[SNN_WAVE_WINDOW];
        for (int k = 0; k < SNN_WAVE_WINDOW; ++k) acc[k] = 0.0f;
        for (snn_u64 c = 0; c < c_in; ++c) {
            for (snn_u64 ki = 0; ki < kh; ++ki) {
                const snn_i64 iy = y0 + (snn_i64)ki;
                if (iy < 0 || iy >= (snn_i64)h) continue;
                for (snn_u64 kj = 0; kj < kw; ++kj) {
                    const snn_i64 ix = x0 + (snn_i64)kj;
                    if (ix < 0 || ix >= (snn_i64)w) continue;
                    const snn_u64 tf = (snn_u64)fi[(c * h + (snn_u64)iy) * w + (snn_u64)ix];
                    if (tf < t0 || tf >= t0 + SNN_WAVE_WINDOW || tf >= t_len) continue;
                    acc[tf - t0] = __fadd_rn(acc[tf - t0], wo[(c * kh + ki) * kw + kj]);
                }
            }
        }
        const snn_u64 t1 = t0 + SNN_WAVE_WINDOW < t_len ? t0 + SNN_WAVE_WINDOW : t_len;
        for (snn_u64 t = t0; t < t1; ++t) {
            prefix = __fadd_rn(prefix, acc[t - t0]);
            const float v = has_bias ? __fadd_rn(prefix, b) : prefix;
            float* d = y + t * n + i;
            *d = accumulate ? __fadd_rn(*d, v) : v;
        }
    }
}

/// Event-driven conv2d weight gradient (`spike_conv2d_dw` in runtime/src/cpu/spike.rs):
/// `dw[o, r] += sum over images ascending, then positions q ascending, of x * dy[img, o, q]`
/// where the input cell of tap `r = (c*kh + ki)*kw + kj` at `q` is inside the image and
/// non-zero; the sum starts at zero. One thread per weight. The CPU's order: bit-identical.
extern "C" __global__ void snn_spike_conv2d_dw(
    const float* __restrict__ x,
    const float* __restrict__ dy,
    float* __restrict__ dw,
    snn_u64 n, // c_out * kk
    snn_u64 images,
    snn_u64 c_in, snn_u64 h, snn_u64 w, snn_u64 kh, snn_u64 kw,
    snn_u64 stride, snn_u64 pad, snn_u64 h_out, snn_u64 w_out, snn_u64 c_out)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 kk = c_in * kh * kw;
    const snn_u64 p = h_out * w_out;
    const snn_u64 o = i / kk;
    const snn_u64 r = i % kk;
    const snn_u64 c = r / (kh * kw);
    const snn_u64 ki = (r / kw) % kh;
    const snn_u64 kj = r % kw;
    float acc = 0.0f;
    for (snn_u64 img = 0; img < images; ++img) {
        const float* xc = x + (img * c_in + c) * h * w;
        const float* dyo = dy + (img * c_out + o) * p;
        for (snn_u64 oy = 0; oy < h_out; ++oy) {
            const snn_i64 iy = (snn_i64)(oy * stride + ki) - (snn_i64)pad;
            if (iy < 0 || iy >= (snn_i64)h) continue;
            for (snn_u64 ox = 0; ox < w_out; ++ox) {
                const snn_i64 ix = (snn_i64)(ox * stride + kj) - (snn_i64)pad;
                if (ix < 0 || ix >= (snn_i64)w) continue;
                const float v = xc[(snn_u64)iy * w + (snn_u64)ix];
                if (v != 0.0f) acc = __fadd_rn(acc, __fmul_rn(v, dyo[oy * w_out + ox]));
            }
        }
    }
    dw[i] = __fadd_rn(dw[i], acc);
}

/// `out[ch, img * p + q] = in[img, ch, q]`: `[m, c, p]` to channel-major `[c, m*p]` (one
/// thread per output element), so that one GEMM with K = m*p gives a conv's weight
/// gradient over a batch of m images (runtime/src/cuda/mod.rs, conv2d_dw).
extern "C" __global__ void snn_to_channel_major(
    const float* __restrict__ in,
    float* __restrict__ out,
    snn_u64 m, snn_u64 c, snn_u64 p)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= m * c * p) return;
    const snn_u64 q = i % p;
    const snn_u64 img = (i / p) % m;
    const snn_u64 ch = i / (p * m);
    out[i] = in[(img * c + ch) * p + q];
}

// ---------------------------------------------------------------------------------------
// The optimizer on the device (runtime/src/train/optim.rs, `Update::apply`): the same f32
// operations in the same order, compiled without contractions, so a step is bit-identical
// to the CPU's. Every argument is a 64-bit word; f32 coefficients travel in the low 32 bits.

#define SNN_F32(word) __int_as_float((int)(unsigned int)(word))

/// torch SGD on one element per thread. flags: 1 weight decay, 2 momentum, 4 Nesterov,
/// 8 first update (the buffer starts as the gradient), 16 scale the gradient (clipping).
extern "C" __global__ void snn_sgd(
    float* __restrict__ p,
    const float* __restrict__ g,
    float* __restrict__ buf,
    snn_u64 n, snn_u64 neg_lr_w, snn_u64 wd_w, snn_u64 momentum_w, snn_u64 scale_w,
    snn_u64 flags)
{
    const snn_u64 j = SNN_FLAT_INDEX;
    if (j >= n) return;
    const float neg_lr = SNN_F32(neg_lr_w), wd = SNN_F32(wd_w);
    const float momentum = SNN_F32(momentum_w);
    float d = g[j];
    if (flags & 16) d = d * SNN_F32(scale_w);
    if (flags & 1) d = d + wd * p[j];
    if (flags & 2) {
        const float b = (flags & 8) ? d : buf[j] * momentum + d;
        buf[j] = b;
        d = (flags & 4) ? d + momentum * b : b;
    }
    p[j] = p[j] + neg_lr * d;
}

/// torch Adam / AdamW (amsgrad off) on one element per thread, in torch's order. flags:
/// 1 weight decay, 2 decoupled (AdamW), 4 `lerp_`'s small-weight formula, 8 first update
/// (the moments start at zero), 16 scale the gradient (clipping).
extern "C" __global__ void snn_adam(
    float* __restrict__ p,
    const float* __restrict__ g,
    float* __restrict__ m,
    float* __restrict__ v,
    snn_u64 n, snn_u64 neg_step_size_w, snn_u64 bc2_sqrt_w, snn_u64 decay_w, snn_u64 wd_w,
    snn_u64 w_w, snn_u64 one_minus_w_w, snn_u64 beta2_w, snn_u64 one_minus_b2_w,
    snn_u64 eps_w, snn_u64 scale_w, snn_u64 flags)
{
    const snn_u64 j = SNN_FLAT_INDEX;
    if (j >= n) return;
    float gj = g[j];
    if (flags & 16) gj = gj * SNN_F32(scale_w);
    float pj = p[j];
    if (flags & 1) {
        if (flags & 2) pj = pj * SNN_F32(decay_w);
        else gj = gj + SNN_F32(wd_w) * pj;
    }
    float mj = (flags & 8) ? 0.0f : m[j];
    float vj = (flags & 8) ? 0.0f : v[j];
    const float w = SNN_F32(w_w);
    mj = (flags & 4) ? mj + w * (gj - mj) : gj - (gj - mj) * SNN_F32(one_minus_w_w);
    vj = vj * SNN_F32(beta2_w) + SNN_F32(one_minus_b2_w) * gj * gj;
    const float denom = sqrtf(vj) / SNN_F32(bc2_sqrt_w) + SNN_F32(eps_w);
    m[j] = mj;
    v[j] = vj;
    p[j] = pj + SNN_F32(neg_step_size_w) * mj / denom;
}

/// Sums of squares for gradient clipping's norm: thread `i < parts` adds, in f64, the
/// squares of elements `i, i + parts, ...` (adjacent threads read adjacent elements) into
/// `partial[i]`; the host adds the partials in order.
extern "C" __global__ void snn_sq_sum(
    const float* __restrict__ g,
    double* __restrict__ partial,
    snn_u64 n, snn_u64 parts)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= parts) return;
    double s = 0.0;
    for (snn_u64 j = i; j < n; j += parts) {
        const double x = (double)g[j];
        s += x * x;
    }
    partial[i] = s;
}

/// The output step of Spyker's filters (runtime/src/op/filter.rs) over `images` images of
/// `groups` input channels: one thread per output element `i < n`. `step` 0 (DoG):
/// `max(raw[c] - raw[filters + c], 0)`; 1 (LoG): ON `max(d, 0)` in channels `< filters`,
/// OFF `max(-d, 0)` above; 2: `raw[c]` as is. With `has_thr`, values `<= thr` become 0
/// (Spyker's `threshold`). Same arithmetic as the CPU: one subtraction, a comparison.
extern "C" __global__ void snn_filter_out(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 n, // images * groups * out_channels * plane
    snn_u64 filters, snn_u64 plane, snn_u64 step, snn_u64 has_thr, snn_u64 thr_bits)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 out_c = step == 1 ? 2 * filters : filters;
    const snn_u64 raw_c = step == 2 ? filters : 2 * filters;
    const snn_u64 q = i % plane;
    const snn_u64 c = (i / plane) % out_c;
    const snn_u64 g = i / (plane * out_c); // image * groups + group
    const float* xg = x + g * raw_c * plane;
    float v;
    if (step == 2) {
        v = xg[c * plane + q];
    } else {
        const snn_u64 f = c % filters;
        const float d = xg[f * plane + q] - xg[(filters + f) * plane + q];
        const float s = (step == 1 && c >= filters) ? -d : d;
        v = s > 0.0f ? s : 0.0f;
    }
    if (has_thr && v <= __int_as_float((unsigned int)thr_bits)) v = 0.0f;
    y[i] = v;
}

/// Spyker's f32 -> u16 time as the x86 wheel converts it (runtime/src/op/wave.rs
/// `to_u16`): through a 32-bit integer, NaN and out-of-range values giving 0.
__device__ __forceinline__ snn_u64 snn_time_u16(float t)
{
    if (!(t >= -2147483648.0f && t < 2147483648.0f)) return 0;
    return (snn_u64)((unsigned int)(int)t & 0xffffu);
}

/// Rank-order latency coding (Spyker's `code`, runtime/src/op/wave.rs
/// `first_spike_times`): one thread per value `i < n` of `x` (`[batch, features]`), which
/// scans its own sample for the minimum, maximum and (`sort`) its rank (descending, ties
/// to the lower index: O(features) per thread, O(features^2) per sample, fine for
/// MNIST-sized maps), computes its first-spike time in f32 and writes its column of the
/// cumulative wave `y` (`[t_len, batch, features]`: 1 from that time on).
extern "C" __global__ void snn_rank_code(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 n, // batch * features
    snn_u64 features, snn_u64 t_len, snn_u64 sort)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    const snn_u64 j = i % features;
    const float* xs = x + (i - j);
    const float v = xs[j];
    const float end = __fadd_rn((float)t_len, 1e-5f);
    float lo = xs[0], hi = xs[0];
    for (snn_u64 k = 1; k < features; ++k) {
        lo = fminf(lo, xs[k]);
        hi = fmaxf(hi, xs[k]);
    }
    snn_u64 time;
    if (sort) {
        snn_u64 above = 0, rank = 0;
        for (snn_u64 k = 0; k < features; ++k) {
            const float u = xs[k];
            above += u > lo;
            rank += (u > v) || (u == v && k < j);
        }
        const float scale = end / (float)above;
        time = snn_time_u16(__fmul_rn((float)rank, scale));
    } else {
        const float scale = end / (hi - lo);
        time = snn_time_u16(fmaf(-scale, v - lo, end));
    }
    for (snn_u64 t = 0; t < t_len; ++t) y[t * n + i] = time <= t ? 1.0f : 0.0f;
}

/// Spyker's point-wise lateral inhibition (runtime/src/op/wave.rs `inhibit_keep`): one
/// thread per (sample, pixel) `i < pixels` of `x` (`[t_len, batch, channels, plane]`). It
/// scans every step's channel maximum (lowest channel on ties, strict `>`), counts the steps
/// whose maximum is above `thr`, keeps the maximum's channel at step
/// `t_len - max(count, 1)` and writes its column of `y` with every other channel
/// multiplied by 0, as the CPU does.
extern "C" __global__ void snn_inhibit(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 pixels, // batch * plane
    snn_u64 batch, snn_u64 channels, snn_u64 plane, snn_u64 t_len, snn_u64 thr_bits)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= pixels) return;
    const snn_u64 b = i / plane, p = i % plane;
    const snn_u64 row = batch * channels * plane;
    const float thr = __int_as_float((unsigned int)thr_bits);
    const float* xb = x + b * channels * plane + p;
    snn_u64 count = 0;
    for (snn_u64 t = 0; t < t_len; ++t) {
        float best = xb[t * row];
        for (snn_u64 c = 1; c < channels; ++c) {
            const float v = xb[t * row + c * plane];
            if (v > best) best = v;
        }
        count += best > thr;
    }
    const snn_u64 step = t_len - (count > 1 ? count : 1);
    float best = xb[step * row];
    snn_u64 keep = 0;
    for (snn_u64 c = 1; c < channels; ++c) {
        const float v = xb[step * row + c * plane];
        if (v > best) {
            best = v;
            keep = c;
        }
    }
    float* yb = y + b * channels * plane + p;
    for (snn_u64 t = 0; t < t_len; ++t)
        for (snn_u64 c = 0; c < channels; ++c)
            yb[t * row + c * plane] = __fmul_rn(xb[t * row + c * plane], c == keep ? 1.0f : 0.0f);
}

/// Spyker's k-WTA (runtime/src/op/wave.rs `wta_scores`, `wta_select`): one thread per
/// sample `b < batch` of `x` (`[t_len, batch, features]`, `features = channels * height *
/// width`), which works in its row of the static `y` (`[batch, features]`). It writes the
/// scores there (the CPU's f32 operations, in its order), selects up to `k` winners as the
/// CPU does (first maximum, a later score wins only when greater; stop at the sentinel),
/// sets the radius square in every map and the winner's whole map to the sentinel, and
/// marks the winner with -inf (below every score and the sentinel, so it never wins again
/// and `std::max_element`'s choice among the others is unchanged); then `y` is 1 at the
/// marks and 0 elsewhere. Serial per sample: O(T * features + k * features).
extern "C" __global__ void snn_wta(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 batch, snn_u64 channels, snn_u64 height, snn_u64 width, snn_u64 t_len,
    snn_u64 k, snn_u64 radius, snn_u64 thr_bits, snn_u64 spikes)
{
    const snn_u64 b = SNN_FLAT_INDEX;
    if (b >= batch) return;
    const snn_u64 plane = height * width, f = channels * plane, row = batch * f;
    const float* xb = x + b * f;
    float* s = y + b * f;
    const float thr = __int_as_float((unsigned int)thr_bits);
    const float sentinel = spikes ? 0.0f : __int_as_float(0xff7fffffu); // -FLT_MAX
    const float mark = __int_as_float(0xff800000u);                      // -inf
    if (spikes) {
        for (snn_u64 i = 0; i < f; ++i) {
            snn_u64 t = 0;
            while (t < t_len && xb[t * row + i] == 0.0f) ++t;
            s[i] = t < t_len ? (float)(unsigned short)(t_len - t) : 0.0f;
        }
    } else {
        float lo = __int_as_float(0x7f800000u), hi = mark;
        for (snn_u64 t = 0; t < t_len; ++t)
            for (snn_u64 i = 0; i < f; ++i) {
                lo = fminf(lo, xb[t * row + i]);
                hi = fmaxf(hi, xb[t * row + i]);
            }
        const float diff = __fmul_rn(hi - lo, 2.0f);
        for (snn_u64 i = 0; i < f; ++i) {
            snn_u64 t = 0;
            while (t < t_len && !(xb[t * row + i] > thr)) ++t;
            s[i] = t < t_len ? __fadd_rn((float)(t_len - 1 - t), (xb[t * row + i] - lo) / diff)
                             : sentinel;
        }
    }
    const snn_u64 rounds = k < channels ? k : channels;
    for (snn_u64 r = 0; r < rounds && f > 0; ++r) {
        snn_u64 idx = 0;
        for (snn_u64 i = 1; i < f; ++i)
            if (s[idx] < s[i]) idx = i;
        if (s[idx] == mark || fabsf(s[idx] - sentinel) < 1e-5f) break;
        const snn_u64 z = idx / plane, wy = idx % plane / width, wx = idx % width;
        const snn_u64 y0 = wy > radius ? wy - radius : 0, x0 = wx > radius ? wx - radius : 0;
        const snn_u64 y1 = wy + radius < height ? wy + radius : height - 1;
        const snn_u64 x1 = wx + radius < width ? wx + radius : width - 1;
        for (snn_u64 c = 0; c < channels; ++c)
            for (snn_u64 yy = y0; yy <= y1; ++yy)
                for (snn_u64 xx = x0; xx <= x1; ++xx)
                    if (s[c * plane + yy * width + xx] != mark) s[c * plane + yy * width + xx] = sentinel;
        for (snn_u64 i = z * plane; i < (z + 1) * plane; ++i) s[i] = sentinel;
        s[idx] = mark;
    }
    for (snn_u64 i = 0; i < f; ++i) s[i] = s[i] == mark ? 1.0f : 0.0f;
}

/// Spyker's "infinite threshold" (runtime/src/op/wave.rs `Infinite`): one thread per
/// element of `y` (`[t_len, batch, features]`, `n` of them): `value` before the last step
/// (`i < last = (t_len - 1) * batch * features`), `x` at it.
extern "C" __global__ void snn_infinite(
    const float* __restrict__ x,
    float* __restrict__ y,
    snn_u64 n, snn_u64 last, snn_u64 value_bits)
{
    const snn_u64 i = SNN_FLAT_INDEX;
    if (i >= n) return;
    y[i] = i < last ? __int_as_float((unsigned int)value_bits) : x[i];
}

#endif // SNN_OPS_CUH
