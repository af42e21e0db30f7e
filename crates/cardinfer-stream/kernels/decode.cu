// Fused kernels of the decode path (one token, batch 1). src/exact/kernels.rs holds a
// CPU twin of each decode layer kernel with the same operations, giving the same bits;
// src/fused/reference.rs composes the same steps with Candle's CPU arithmetic, and its
// tests check that composition against the plain Candle block.
//
// Nothing here takes the position or the KV buffers as launch arguments: the position is
// read from `pos_ptr`, a device word written before each replay, and the KV buffers of
// layer `l` from `kv_table[2l]` (keys) and `kv_table[2l + 1]` (values), so one recorded
// CUDA graph serves every token and every KV cache.

#include <cuda_fp16.h>
#include <stdint.h>

#define WARP 32

// The decode layer's kernels below (add_rms_norm_exact, qk_norm_rope_append, the two
// attention kernels, silu_mul_exact) write every multiply, add, division and square root
// with an explicitly rounded intrinsic, and e^x with exact_expf, so the compiler cannot
// fuse or approximate anything: src/exact/ repeats the same operations on the CPU and
// gets the same bits (a host layer of a hybrid model computes what the device would).

__device__ __forceinline__ float warp_sum_rn(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// e^x from fused multiply-adds and scalings by powers of two only (rsqrtf/expf use the
// GPU's approximate special-function unit, which the CPU cannot reproduce). About 1 ulp.
__device__ __forceinline__ float exact_expf(float x) {
    if (!(x > -104.0f)) return (x != x) ? x : 0.0f;
    if (x > 88.72f) return INFINITY;
    const float k = rintf(__fmul_rn(x, 1.44269504f));
    float r = __fmaf_rn(k, -0.693145752f, x);
    r = __fmaf_rn(k, -1.42860677e-6f, r);
    float p = 1.98412701e-4f;  // 1/5040
    p = __fmaf_rn(p, r, 1.38888892e-3f);  // 1/720
    p = __fmaf_rn(p, r, 8.33333377e-3f);  // 1/120
    p = __fmaf_rn(p, r, 4.16666679e-2f);  // 1/24
    p = __fmaf_rn(p, r, 1.66666672e-1f);  // 1/6
    p = __fmaf_rn(p, r, 0.5f);
    p = __fmaf_rn(p, r, 1.0f);
    p = __fmaf_rn(p, r, 1.0f);
    const int ki = (int)k;
    const int k1 = ki / 2, k2 = ki - k1;  // each within the normal exponent range
    p = __fmul_rn(p, __int_as_float((k1 + 127) << 23));
    return __fmul_rn(p, __int_as_float((k2 + 127) << 23));
}

// 1 / sqrt(mean + eps), correctly rounded at each step.
__device__ __forceinline__ float inv_rms_rn(float sum_sq, int n, float eps) {
    return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(sum_sq, (float)n), eps)));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float partial[WARP];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x / WARP;
    v = (lane < warps) ? partial[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();  // `partial` may be reused by the caller's next block_sum
    return v;
}

// The norm weight of element i: w[i], or 1 + w[i] for Gemma's norms (`plus_one`), rounded
// as the plain path's f32 `w + 1` is.
__device__ __forceinline__ float norm_weight(const float* w, int i, int plus_one) {
    return plus_one ? __fadd_rn(w[i], 1.0f) : w[i];
}

// x += delta (when delta is not null); out = x * rsqrt(mean(x²) + eps) * w.
// One block, of 32 threads under 1024 elements and 1024 threads from there on: the
// block sizes Candle's rmsnorm kernel uses, so the sum is added in the same order.
extern "C" __global__ void add_rms_norm(float* x, const float* delta, const float* w, float* out, int n, int plus_one,
                                        float eps) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (delta) {
            v += delta[i];
            x[i] = v;
        }
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss) / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = scale * x[i] * norm_weight(w, i, plus_one);
}

// Sum over the whole block with rounded adds (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum_rn(float v) {
    __shared__ float partial[WARP];
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    v = warp_sum_rn(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x / WARP;
    v = (lane < warps) ? partial[lane] : 0.f;
    v = warp_sum_rn(v);
    __syncthreads();
    return v;
}

// add_rms_norm of the decode layers, reproducible on the CPU: the same block sizes and
// order, each thread's squares added with fused multiply-adds, 1/sqrt correctly rounded.
// (The head keeps add_rms_norm above, which gives the bits of Candle's rmsnorm kernel.)
// `out` may be `x` (Gemma's norms after attention and the MLP normalize in place).
extern "C" __global__ void add_rms_norm_exact(float* x, const float* delta, const float* w, float* out, int n,
                                              int plus_one, float eps) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (delta) {
            v = __fadd_rn(v, delta[i]);
            x[i] = v;
        }
        ss = __fmaf_rn(v, v, ss);
    }
    const float scale = inv_rms_rn(block_sum_rn(ss), n, eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[i] = __fmul_rn(__fmul_rn(scale, x[i]), norm_weight(w, i, plus_one));
}

// One block per head: `heads` query heads, then `kv_heads` key heads, then `kv_heads`
// value heads; blockDim.x = head_dim / 2 (one thread per rotated pair).
// q/k/v: + bias (when given), q/k: per-head RMS norm (when given) and RoPE at *pos_ptr;
// queries go to q_out [heads, d], keys and values into the caches [kv_heads, cap, d].
// The KV cache's storage types: f32, f16 rounded to nearest even (`__float2half_rn`, as
// the CPU's `half::f16::from_f32` and Candle's cast; a stored f16 widens exactly), or
// llama.cpp's q8_0 blocks (`q8_0_t`: per 32 values an f16 scale d = max|x| / 127 and 32
// bytes round(x / d), read back as q · d; src/model/kv_q8.rs takes the same steps).
struct q8_0_t {};
#define Q8_0_VALUES 32
#define Q8_0_BYTES 34

#define MAX_DIMS_PER_LANE 8  // head_dim up to 256

template <class A, class B> struct same_type { static const bool value = false; };
template <class A> struct same_type<A, A> { static const bool value = true; };
// The element type a row of T is read and written as (q8_0 rows never take that branch).
template <class T> struct element { typedef T type; };
template <> struct element<q8_0_t> { typedef float type; };

// Bytes of one head's row of d values.
template <typename T> __device__ __forceinline__ size_t kv_row_bytes(int d) {
    if (same_type<T, q8_0_t>::value) return (size_t)(d / Q8_0_VALUES) * Q8_0_BYTES;
    return (size_t)d * sizeof(T);
}

__device__ __forceinline__ void store_kv(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_kv(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float load_kv(const float* p) { return *p; }
__device__ __forceinline__ float load_kv(const __half* p) { return __half2float(*p); }

// The q8_0 block of the 32 values x into out (34 bytes).
__device__ __forceinline__ void quantize_block_q8_0(const float* x, uint8_t* out) {
    float amax = 0.f;
    for (int j = 0; j < Q8_0_VALUES; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = __fdiv_rn(amax, 127.f);
    const float id = d != 0.f ? __fdiv_rn(1.f, d) : 0.f;
    *(__half*)out = __float2half_rn(d);
    int8_t* q = (int8_t*)(out + 2);
    for (int j = 0; j < Q8_0_VALUES; j++) q[j] = (int8_t)roundf(__fmul_rn(x[j], id));
}

// n values first, first + 1, ... of a stored row (n <= 8, within one q8_0 block) as f32.
template <typename T>
__device__ __forceinline__ void load_row(const uint8_t* row, int first, int n, float* out) {
    if (same_type<T, q8_0_t>::value) {
        const uint8_t* block = row + (size_t)(first / Q8_0_VALUES) * Q8_0_BYTES;
        const float d = __half2float(*(const __half*)block);
        const int8_t* q = (const int8_t*)(block + 2) + first % Q8_0_VALUES;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; j++)
            if (j < n) out[j] = __fmul_rn((float)q[j], d);
    } else {
        const typename element<T>::type* p = (const typename element<T>::type*)row + first;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; j++)
            if (j < n) out[j] = load_kv(p + j);
    }
}

// Rows x rows of d values (contiguous) into q8_0 blocks: one thread per block.
extern "C" __global__ void kv_quantize_q8_0(const float* x, uint8_t* out, int blocks) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < blocks) quantize_block_q8_0(x + (size_t)b * Q8_0_VALUES, out + (size_t)b * Q8_0_BYTES);
}

// q8_0 blocks back to n values: one thread per value.
extern "C" __global__ void kv_dequantize_q8_0(const uint8_t* blocks, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const uint8_t* block = blocks + (size_t)(i / Q8_0_VALUES) * Q8_0_BYTES;
    out[i] = __fmul_rn((float)((const int8_t*)(block + 2))[i % Q8_0_VALUES], __half2float(*(const __half*)block));
}

#define QK_PARAMS                                                                        \
    const float *q, const float *k, const float *v, const float *q_bias,                \
        const float *k_bias, const float *v_bias, const float *q_norm, const float *k_norm, \
        const float *cos_table, const float *sin_table, const uint32_t *pos_ptr,        \
        float *q_out, const uint64_t *kv_table, int layer, int heads, int kv_heads, int d, \
        int cap, int interleaved, int plus_one, float eps
#define QK_ARGS                                                                          \
    q, k, v, q_bias, k_bias, v_bias, q_norm, k_norm, cos_table, sin_table, pos_ptr, q_out, \
        kv_table, layer, heads, kv_heads, d, cap, interleaved, plus_one, eps

template <typename T>
__device__ __forceinline__ void qk_norm_rope_append_impl(QK_PARAMS) {
    const int h = blockIdx.x, i = threadIdx.x, half = d / 2;
    const int pos = (int)*pos_ptr;
    const size_t row_bytes = kv_row_bytes<T>(d);
    uint8_t* k_cache = (uint8_t*)kv_table[2 * layer];
    uint8_t* v_cache = (uint8_t*)kv_table[2 * layer + 1];
    const float *src, *bias, *norm;
    float* dst = nullptr;      // a query head's output, or
    uint8_t* kv_dst = nullptr;  // a key or value head's cache row
    bool rotate = true;
    if (h < heads) {
        src = q + h * d;
        bias = q_bias ? q_bias + h * d : nullptr;
        norm = q_norm;
        dst = q_out + h * d;
    } else if (h < heads + kv_heads) {
        const int kh = h - heads;
        src = k + kh * d;
        bias = k_bias ? k_bias + kh * d : nullptr;
        norm = k_norm;
        kv_dst = k_cache + ((size_t)kh * cap + pos) * row_bytes;
    } else {
        const int kh = h - heads - kv_heads;
        src = v + kh * d;
        bias = v_bias ? v_bias + kh * d : nullptr;
        norm = nullptr;
        rotate = false;
        kv_dst = v_cache + ((size_t)kh * cap + pos) * row_bytes;
    }
    const int a = interleaved ? 2 * i : i;
    const int b = interleaved ? 2 * i + 1 : i + half;
    float xa = src[a], xb = src[b];
    if (bias) {
        xa = __fadd_rn(xa, bias[a]);
        xb = __fadd_rn(xb, bias[b]);
    }
    if (norm) {  // the same for the whole block: every thread reaches the barriers
        // One warp sums the squares, lane l adding elements l, l+32, ...
        __shared__ float vals[512];
        __shared__ float scale;
        vals[a] = xa;
        vals[b] = xb;
        __syncthreads();
        if (threadIdx.x < WARP) {
            float ss = 0.f;
            for (int col = threadIdx.x; col < d; col += WARP) ss = __fmaf_rn(vals[col], vals[col], ss);
            ss = warp_sum_rn(ss);
            if (threadIdx.x == 0) scale = inv_rms_rn(ss, d, eps);
        }
        __syncthreads();
        xa = __fmul_rn(__fmul_rn(scale, xa), norm_weight(norm, a, plus_one));
        xb = __fmul_rn(__fmul_rn(scale, xb), norm_weight(norm, b, plus_one));
    }
    if (rotate) {
        const float c = cos_table[(size_t)pos * half + i], s = sin_table[(size_t)pos * half + i];
        const float ra = __fmaf_rn(xa, c, -__fmul_rn(xb, s));
        const float rb = __fmaf_rn(xa, s, __fmul_rn(xb, c));
        xa = ra;
        xb = rb;
    }
    if (dst) {
        dst[a] = xa;
        dst[b] = xb;
    } else if (same_type<T, q8_0_t>::value) {
        // The whole row first (the same for the whole block: every thread reaches the
        // barrier), then one thread per q8_0 block.
        __shared__ float row[512];
        row[a] = xa;
        row[b] = xb;
        __syncthreads();
        if (i < d / Q8_0_VALUES) quantize_block_q8_0(row + i * Q8_0_VALUES, kv_dst + (size_t)i * Q8_0_BYTES);
    } else {
        typedef typename element<T>::type E;
        store_kv((E*)kv_dst + a, xa);
        store_kv((E*)kv_dst + b, xb);
    }
}

extern "C" __global__ void qk_norm_rope_append(QK_PARAMS) { qk_norm_rope_append_impl<float>(QK_ARGS); }
extern "C" __global__ void qk_norm_rope_append_f16(QK_PARAMS) { qk_norm_rope_append_impl<__half>(QK_ARGS); }
extern "C" __global__ void qk_norm_rope_append_q8_0(QK_PARAMS) { qk_norm_rope_append_impl<q8_0_t>(QK_ARGS); }



// The first key a query at position len - 1 sees: 0, or len - window on a sliding-window
// layer (window > 0; Gemma 3's local layers).
__device__ __forceinline__ int first_key(int len, int window) {
    return (window > 0 && len > window) ? len - window : 0;
}

// Grid (heads, chunks); blockDim.x = 128 (4 warps). Block (h, c) reads keys
// [max(c*chunk, first), min((c+1)*chunk, len)) of its KV head, len = *pos_ptr + 1, and
// writes the partial max score, sum of exponentials and weighted value sum of its chunk.
// Chunks wholly before the window's first key write nothing (the combine skips them).
// Lane `l` of a warp holds dims l*per .. l*per+per-1 (per = d / 32).
#define PARTIAL_PARAMS                                                                   \
    const float *q, const uint64_t *kv_table, const uint32_t *pos_ptr, float *part_max,   \
        float *part_sum, float *part_acc, int layer, int heads, int kv_heads, int d, int cap, \
        int chunk, int chunks, int window, float scale
#define PARTIAL_ARGS                                                                     \
    q, kv_table, pos_ptr, part_max, part_sum, part_acc, layer, heads, kv_heads, d, cap, chunk, \
        chunks, window, scale

template <typename T>
__device__ __forceinline__ void decode_attention_partial_impl(PARTIAL_PARAMS) {
    const int h = blockIdx.x, c = blockIdx.y;
    const int len = (int)*pos_ptr + 1;
    const int first = first_key(len, window);
    const int start = max(c * chunk, first);
    if (start >= len || (c + 1) * chunk <= first) return;
    const int end = min((c + 1) * chunk, len);
    const int kh = h / (heads / kv_heads);
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
    const int per = d / WARP;
    float qv[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; j++) {
        qv[j] = j < per ? q[h * d + lane * per + j] : 0.f;
        acc[j] = 0.f;
    }
    const size_t row_bytes = kv_row_bytes<T>(d);
    const uint8_t* kb = (const uint8_t*)kv_table[2 * layer] + (size_t)kh * cap * row_bytes;
    const uint8_t* vb = (const uint8_t*)kv_table[2 * layer + 1] + (size_t)kh * cap * row_bytes;
    float kv_vals[MAX_DIMS_PER_LANE];
    float m = -INFINITY, l = 0.f;
    for (int t = start + warp; t < end; t += warps) {
        load_row<T>(kb + (size_t)t * row_bytes, lane * per, per, kv_vals);
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; j++)
            if (j < per) s = __fmaf_rn(qv[j], kv_vals[j], s);
        s = __fmul_rn(warp_sum_rn(s), scale);
        const float m_new = fmaxf(m, s);
        const float correction = exact_expf(__fsub_rn(m, m_new)), p = exact_expf(__fsub_rn(s, m_new));
        l = __fmaf_rn(l, correction, p);
        load_row<T>(vb + (size_t)t * row_bytes, lane * per, per, kv_vals);
#pragma unroll
        for (int j = 0; j < MAX_DIMS_PER_LANE; j++)
            if (j < per) acc[j] = __fmaf_rn(p, kv_vals[j], __fmul_rn(acc[j], correction));
        m = m_new;
    }
    // Combine the warps of this block.
    __shared__ float w_max[WARP], w_sum[WARP];
    __shared__ float w_acc[4][MAX_DIMS_PER_LANE * WARP];
    if (lane == 0) {
        w_max[warp] = m;
        w_sum[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < MAX_DIMS_PER_LANE; j++)
        if (j < per && warp < 4) w_acc[warp][lane * per + j] = acc[j];
    __syncthreads();
    float mm = -INFINITY;
    for (int w = 0; w < warps; w++) mm = fmaxf(mm, w_max[w]);
    const size_t slot = (size_t)h * chunks + c;
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        float a = 0.f;
        for (int w = 0; w < warps; w++)
            if (w_max[w] > -INFINITY) a = __fmaf_rn(w_acc[w][i], exact_expf(__fsub_rn(w_max[w], mm)), a);
        part_acc[slot * d + i] = a;
    }
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < warps; w++)
            if (w_max[w] > -INFINITY) total = __fmaf_rn(w_sum[w], exact_expf(__fsub_rn(w_max[w], mm)), total);
        part_max[slot] = mm;
        part_sum[slot] = total;
    }
}

extern "C" __global__ void decode_attention_partial(PARTIAL_PARAMS) {
    decode_attention_partial_impl<float>(PARTIAL_ARGS);
}
extern "C" __global__ void decode_attention_partial_f16(PARTIAL_PARAMS) {
    decode_attention_partial_impl<__half>(PARTIAL_ARGS);
}
extern "C" __global__ void decode_attention_partial_q8_0(PARTIAL_PARAMS) {
    decode_attention_partial_impl<q8_0_t>(PARTIAL_ARGS);
}

// One block per head, blockDim.x = d: out[h] = Σ_c acc_c e^(m_c - M) / Σ_c l_c e^(m_c - M).
extern "C" __global__ void decode_attention_combine(
    const float* part_max, const float* part_sum, const float* part_acc, const uint32_t* pos_ptr,
    float* out, int d, int chunk, int chunks, int window) {
    const int h = blockIdx.x, i = threadIdx.x;
    const int len = (int)*pos_ptr + 1;
    const int used = (len + chunk - 1) / chunk, skipped = first_key(len, window) / chunk;
    const size_t base = (size_t)h * chunks;
    float mm = -INFINITY;
    for (int c = skipped; c < used; c++) mm = fmaxf(mm, part_max[base + c]);
    float total = 0.f, a = 0.f;
    for (int c = skipped; c < used; c++) {
        const float e = exact_expf(__fsub_rn(part_max[base + c], mm));
        total = __fmaf_rn(part_sum[base + c], e, total);
        a = __fmaf_rn(part_acc[(base + c) * d + i], e, a);
    }
    out[h * d + i] = __fdiv_rn(a, total);
}

// out = silu(gate) * up, reproducible on the CPU (the decode layers' SwiGLU).
extern "C" __global__ void silu_mul_exact(const float* gate, const float* up, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.f, exact_expf(-g))), up[i]);
    }
}

// out = gelu(gate) * up with GeLU's tanh form (Gemma's MLP), reproducible on the CPU:
// tanh(a) = 1 - 2 / (e^(2a) + 1) with exact_expf, every operation explicitly rounded.
extern "C" __global__ void gelu_mul(const float* gate, const float* up, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        const float cube = __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, g), g), g);
        const float a = __fmul_rn(0.7978845608028654f, __fadd_rn(g, cube));
        const float t = __fsub_rn(1.f, __fdiv_rn(2.f, __fadd_rn(exact_expf(__fmul_rn(2.f, a)), 1.f)));
        out[i] = __fmul_rn(__fmul_rn(__fmul_rn(0.5f, g), __fadd_rn(1.f, t)), up[i]);
    }
}

// out = silu(gate) * up, as Candle's ops compute it (prefill's SwiGLU).
extern "C" __global__ void silu_mul(const float* gate, const float* up, float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        out[i] = g / (1.f + expf(-g)) * up[i];
    }
}

// Prefill attention: scores → probabilities. Each row is one query at position
// pos + row % seq; keys after it are masked. The same arithmetic, in the same order, as
// Candle's affine (x * scale), the causal mask add and softmax_last_dim (one warp per
// row, lane l taking columns l, l+32, ...), so the result is the same bits in one pass
// instead of three (and without materializing the broadcast mask).
extern "C" __global__ void scale_mask_softmax(const float* x, float* dst, int ncols, int seq, int pos, float scale) {
    const int row = blockIdx.x, lane = threadIdx.x;
    const int visible = pos + row % seq;
    const float* xr = x + (size_t)row * ncols;
    float* dr = dst + (size_t)row * ncols;
    float max_val = -INFINITY;
    for (int col = lane; col < ncols; col += WARP)
        max_val = fmaxf(max_val, col <= visible ? __fmul_rn(xr[col], scale) : -INFINITY);
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) max_val = fmaxf(max_val, __shfl_xor_sync(0xffffffff, max_val, mask, 32));
    float tmp = 0.f;
    for (int col = lane; col < ncols; col += WARP) {
        // __fmul_rn: the scaled score is rounded before the subtraction (no fused
        // multiply-add), as when Candle stores it between kernels.
        const float val = expf((col <= visible ? __fmul_rn(xr[col], scale) : -INFINITY) - max_val);
        tmp += val;
        dr[col] = val;
    }
#pragma unroll
    for (int mask = 16; mask > 0; mask >>= 1) tmp += __shfl_xor_sync(0xffffffff, tmp, mask, 32);
    const float inv_tmp = 1. / tmp;  // as Candle writes it: a double division, rounded
    for (int col = lane; col < ncols; col += WARP) dr[col] *= inv_tmp;
}

// RoPE of a prefill chunk fused with the head transpose: x is [b, t, h, d] (the
// projection's layout, per-head norms already applied), out is [b, h, t, d] as attention
// reads it; cos/sin are [t, d/2]. One thread per rotated pair; the arithmetic is Candle's
// rope / rope_i kernels', so the result is the same bits as transposing first.
extern "C" __global__ void rope_transpose(const float* x, const float* cos_table, const float* sin_table, float* out,
                                          int b, int t, int h, int d, int interleaved) {
    const int half = d / 2;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)b * t * h * half) return;
    const int i = idx % half;
    const int hh = (idx / half) % h;
    const int tt = (idx / ((size_t)half * h)) % t;
    const int bb = idx / ((size_t)half * h * t);
    const int a = interleaved ? 2 * i : i;
    const int bi = interleaved ? 2 * i + 1 : i + half;
    const float* src = x + (((size_t)bb * t + tt) * h + hh) * d;
    float* dst = out + (((size_t)bb * h + hh) * t + tt) * d;
    const float c = cos_table[(size_t)tt * half + i], s = sin_table[(size_t)tt * half + i];
    dst[a] = src[a] * c - src[bi] * s;
    dst[bi] = src[a] * s + src[bi] * c;
}
