// Host shim: runs generated CUDA C (compiler/src/back/cuda.rs) as plain C++20 on the CPU,
// so CPU-only CI can check the CUDA back end's numerics against the Rust kernels.
//
// Include it before the generated source and compile with
//   g++ -std=c++20 -O2 -ffp-contract=off -I kernels/cuda ...
// (-ffp-contract=off: no fused multiply-adds, the same arithmetic as the Rust kernels and
// as NVRTC with --fmad=false).
//
// What it provides: the CUDA function qualifiers as ordinary C++, `dim3`, thread-local
// `threadIdx/blockIdx/blockDim/gridDim`, the float math functions from <math.h>, the
// `__fadd_rn`/`__fmul_rn`/`__int_as_float` intrinsics that ops.cuh uses, and
// `snn_shim_launch(kernel, grid, block, args...)`, which runs every thread of every block in
// turn on the calling thread, and `atomicAdd` on floats (a real atomic: the CPU device calls
// a launch's chunks from several host threads at once). That is enough for kernels whose
// threads talk to each other only through atomics (all kernels snnc generates today); there
// is no __syncthreads and no warp intrinsic.
// The indices are thread_local, so several host threads may launch at once.

#ifndef SNN_HOST_SHIM_H
#define SNN_HOST_SHIM_H

#if __cplusplus < 202002L
#error "kernels/cuda/host_shim.h needs C++20 (-std=c++20)"
#endif

#if defined(__CUDACC__)
#error "kernels/cuda/host_shim.h is for plain C++ compilers, not nvcc or NVRTC"
#endif

#include <atomic>
#include <bit>
#include <cstdint>
#include <math.h>
#include <type_traits>
#include <utility>

#define SNN_HOST_SHIM 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Per host thread, like one block at a time per launching thread.
#define __shared__ static thread_local
// g++ and clang++ accept __restrict__ themselves.

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

/// CUDA's `atomicAdd(float*, float)`: returns the old value.
inline float atomicAdd(float* p, float v) {
    return std::atomic_ref<float>(*p).fetch_add(v, std::memory_order_relaxed);
}

/// The round-to-nearest intrinsics and bit casts of the runtime's library kernels
/// (kernels/cuda/ops.cuh): plain IEEE operations on the host (-ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline float __int_as_float(unsigned int v) { return std::bit_cast<float>(v); }

/// `kernel<<<grid, block>>>(args...)`, sequentially: blocks in order, threads in order
/// (x fastest); in reverse order with `-DSNN_SHIM_REVERSE`. Arguments convert to the kernel's parameter types as in a call.
template <class... P, class... A>
void snn_shim_launch(void (*kernel)(P...), dim3 grid, dim3 block, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "snn_shim_launch: wrong number of kernel arguments");
    const dim3 saved_grid = gridDim, saved_block = blockDim;
    const dim3 saved_bi = blockIdx, saved_ti = threadIdx;
    gridDim = grid;
    blockDim = block;
#ifdef SNN_SHIM_REVERSE
    // Last block and thread first: a kernel whose result depends on the order its threads
    // run in (a thread reading what another writes in the same launch, a race on a GPU)
    // computes something else here.
    for (unsigned int bz = grid.z; bz-- > 0;)
        for (unsigned int by = grid.y; by-- > 0;)
            for (unsigned int bx = grid.x; bx-- > 0;) {
                blockIdx = dim3(bx, by, bz);
                for (unsigned int tz = block.z; tz-- > 0;)
                    for (unsigned int ty = block.y; ty-- > 0;)
                        for (unsigned int tx = block.x; tx-- > 0;) {
                            threadIdx = dim3(tx, ty, tz);
                            kernel(static_cast<P>(args)...);
                        }
            }
#else
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                for (unsigned int tz = 0; tz < block.z; ++tz)
                    for (unsigned int ty = 0; ty < block.y; ++ty)
                        for (unsigned int tx = 0; tx < block.x; ++tx) {
                            threadIdx = dim3(tx, ty, tz);
                            kernel(static_cast<P>(args)...);
                        }
            }
#endif
    gridDim = saved_grid;
    blockDim = saved_block;
    blockIdx = saved_bi;
    threadIdx = saved_ti;
}

/// One kernel parameter from a 64-bit word, as the runtime's CUDA device pushes every
/// argument (runtime/src/cuda): a device pointer or a 64-bit integer. A parameter of another
/// size would be read wrongly by cuLaunchKernel on a GPU, so it does not compile here.
template <class T>
T snn_shim_word(unsigned long long w) {
    static_assert(sizeof(T) == 8 && (std::is_pointer_v<T> || std::is_integral_v<T>),
                  "kernel parameters must be pointers or 64-bit integers (one word each)");
    if constexpr (std::is_pointer_v<T>) {
        return reinterpret_cast<T>(static_cast<std::uintptr_t>(w));
    } else {
        return static_cast<T>(w);
    }
}

template <class... P, std::size_t... I>
void snn_shim_launch_words_(void (*kernel)(P...), dim3 grid, dim3 block,
                            const unsigned long long* words, std::index_sequence<I...>) {
    snn_shim_launch(kernel, grid, block, snn_shim_word<P>(words[I])...);
}

/// `snn_shim_launch` with the arguments as `n` words (the ShimGpu of runtime/src/cuda/shim.rs).
/// Returns 0, or -1 when `n` is not the kernel's parameter count.
template <class... P>
int snn_shim_launch_words(void (*kernel)(P...), dim3 grid, dim3 block,
                          const unsigned long long* words, unsigned long long n) {
    if (n != sizeof...(P)) return -1;
    snn_shim_launch_words_(kernel, grid, block, words, std::index_sequence_for<P...>{});
    return 0;
}

#endif // SNN_HOST_SHIM_H
