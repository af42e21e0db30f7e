// Kernels of a mixture-of-experts layer's decode step (one token, batch 1), on the
// device end to end so the step needs no round trip to the host and fits the decode
// path's CUDA graph: the router's logits, the top-k routing, the chosen experts' products
// (one launch per projection for all k experts) and their weighted sum.
//
// The expert products are Candle's MMVQ core (vendored verbatim, vendor/) with the
// weight address of each of the k tasks read from a device table indexed by the routed
// expert ids, so an expert's product gives the bits of Candle's kernel on that expert
// alone — the plain path's bits.

#include <stdint.h>
#include "vendor/mmvq_gguf_core.cuh"

#define MOE_MAX_EXPERTS 1024
#define MOE_MAX_TOP_K 32
#define MOE_THREADS 256

// Sum (or maximum) over the block of MOE_THREADS threads; every thread gets the result.
__device__ float moe_block_reduce(float v, bool is_max) {
    __shared__ float partial[MOE_THREADS / WARP_SIZE];
    for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(0xffffffff, v, o);
        v = is_max ? fmaxf(v, other) : v + other;
    }
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = partial[0];
    for (int w = 1; w < MOE_THREADS / WARP_SIZE; ++w) v = is_max ? fmaxf(v, partial[w]) : v + partial[w];
    __syncthreads();
    return v;
}

// logits[e] = Σ_i w[e·n + i] · x[i] for a float router `w` ([experts, n] row-major):
// one block of MOE_THREADS per expert.
extern "C" __global__ void moe_router_f32(const float* w, const float* x, float* logits, int n) {
    const float* row = w + (size_t)blockIdx.x * n;
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += MOE_THREADS) s += row[i] * x[i];
    s = moe_block_reduce(s, false);
    if (threadIdx.x == 0) logits[blockIdx.x] = s;
}

// Routes one token, as the plain path's `route` does: the softmax of the logits over the
// experts, the `k` most probable (ties to the lower index), divided by their sum where
// `norm`. Writes the chosen experts in ascending order (`ids`) with their weights, the
// order their outputs are added in. One block of MOE_THREADS; `experts` ≤ MOE_MAX_EXPERTS,
// `k` ≤ MOE_MAX_TOP_K.
extern "C" __global__ void moe_route(const float* logits, int* ids, float* weights, int experts, int k, int norm) {
    __shared__ float exps[MOE_MAX_EXPERTS];
    __shared__ int chosen[MOE_MAX_TOP_K];
    __shared__ float best_value[MOE_THREADS / WARP_SIZE];
    __shared__ int best_index[MOE_THREADS / WARP_SIZE];
    float m = -INFINITY;
    for (int e = threadIdx.x; e < experts; e += MOE_THREADS) m = fmaxf(m, logits[e]);
    m = moe_block_reduce(m, true);
    float s = 0.f;
    for (int e = threadIdx.x; e < experts; e += MOE_THREADS) {
        exps[e] = expf(logits[e] - m);
        s += exps[e];
    }
    const float sum = moe_block_reduce(s, false);
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    for (int c = 0; c < k; ++c) {
        // The largest remaining value; ties to the lower index. Taken ones are -1.
        float v = -1.f;
        int at = experts;
        for (int e = threadIdx.x; e < experts; e += MOE_THREADS) {
            if (exps[e] > v) {
                v = exps[e];
                at = e;
            }
        }
        for (int o = WARP_SIZE / 2; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffff, v, o);
            const int oi = __shfl_xor_sync(0xffffffff, at, o);
            if (ov > v || (ov == v && oi < at)) {
                v = ov;
                at = oi;
            }
        }
        if (lane == 0) {
            best_value[warp] = v;
            best_index[warp] = at;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float bv = best_value[0];
            int bi = best_index[0];
            for (int w = 1; w < MOE_THREADS / WARP_SIZE; ++w) {
                if (best_value[w] > bv || (best_value[w] == bv && best_index[w] < bi)) {
                    bv = best_value[w];
                    bi = best_index[w];
                }
            }
            chosen[c] = bi;
            exps[bi] = -exps[bi] - 1.f;  // taken: below every remaining value, recoverable
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    // The weights best first (the plain path's order for the normalizing sum).
    float p[MOE_MAX_TOP_K];
    float total = 0.f;
    for (int c = 0; c < k; ++c) {
        p[c] = (-exps[chosen[c]] - 1.f) / sum;
        total += p[c];
    }
    if (norm)
        for (int c = 0; c < k; ++c) p[c] /= total;
    // Ascending expert order (insertion sort of at most MOE_MAX_TOP_K).
    for (int c = 1; c < k; ++c) {
        const int id = chosen[c];
        const float w = p[c];
        int j = c - 1;
        while (j >= 0 && chosen[j] > id) {
            chosen[j + 1] = chosen[j];
            p[j + 1] = p[j];
            --j;
        }
        chosen[j + 1] = id;
        p[j + 1] = w;
    }
    for (int c = 0; c < k; ++c) {
        ids[c] = chosen[c];
        weights[c] = p[c];
    }
}

// out[i] = Σ_c y[r_c·n + i] · weights[c], c ascending, r_c = rows[c] (c itself where
// `rows` is null), each product rounded before the add (the plain path multiplies each
// expert's rows by its weight, then adds them in ascending expert order).
extern "C" __global__ void moe_weighted_sum(const float* y, const int* rows, const float* weights, float* out, int n,
                                            int k) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float acc = __fmul_rn(y[(size_t)(rows ? rows[0] : 0) * n + i], weights[0]);
    for (int c = 1; c < k; ++c) {
        const size_t r = rows ? rows[c] : c;
        acc = __fadd_rn(acc, __fmul_rn(y[r * n + i], weights[c]));
    }
    out[i] = acc;
}

// dst[task·nrows + r] = W_{ids[task]} row r · y_task for the k tasks of a routed token:
// grid (nrows, k), block (WARP_SIZE, 4) as Candle's batch-1 MMVQ. `table[e]` is the device
// address of expert e's matrix; the task's Q8_1 input starts `stride_y` blocks after the
// previous task's (0: all tasks share one input).
#define MOE_MMVQ(tag, block_q_t, qk_val, qi_val, vdr_val, vec_dot)                                             \
    extern "C" __global__ void moe_mmvq_##tag(const uint64_t* table, const int* ids, const void* vy, float* dst, \
                                              const int ncols_x, const int nrows_x, const int stride_y) {      \
        const int task = blockIdx.y;                                                                            \
        const void* vx = (const void*)table[ids[task]];                                                        \
        const block_q8_1* y = (const block_q8_1*)vy + (size_t)task * stride_y;                                 \
        mmvq_core_impl<float, qk_val, qi_val, block_q_t, vdr_val, vec_dot, 1>(vx, y, dst + (size_t)task * nrows_x, \
                                                                             ncols_x, nrows_x, 0, 0);          \
    }

MOE_MMVQ(q4_0, block_q4_0, QK4_0, QI4_0, VDR_Q4_0_Q8_1_MMVQ, vec_dot_q4_0_q8_1)
MOE_MMVQ(q4_1, block_q4_1, QK4_1, QI4_1, VDR_Q4_1_Q8_1_MMVQ, vec_dot_q4_1_q8_1)
MOE_MMVQ(q5_0, block_q5_0, QK5_0, QI5_0, VDR_Q5_0_Q8_1_MMVQ, vec_dot_q5_0_q8_1)
MOE_MMVQ(q5_1, block_q5_1, QK5_1, QI5_1, VDR_Q5_1_Q8_1_MMVQ, vec_dot_q5_1_q8_1)
MOE_MMVQ(q8_0, block_q8_0, QK8_0, QI8_0, VDR_Q8_0_Q8_1_MMVQ, vec_dot_q8_0_q8_1)
MOE_MMVQ(q2_k, block_q2_K, QK_K, QI2_K, VDR_Q2_K_Q8_1_MMVQ, vec_dot_q2_K_q8_1)
MOE_MMVQ(q3_k, block_q3_K, QK_K, QI3_K, VDR_Q3_K_Q8_1_MMVQ, vec_dot_q3_K_q8_1)
MOE_MMVQ(q4_k, block_q4_K, QK_K, QI4_K, VDR_Q4_K_Q8_1_MMVQ, vec_dot_q4_K_q8_1)
MOE_MMVQ(q5_k, block_q5_K, QK_K, QI5_K, VDR_Q5_K_Q8_1_MMVQ, vec_dot_q5_K_q8_1)
MOE_MMVQ(q6_k, block_q6_K, QK_K, QI6_K, VDR_Q6_K_Q8_1_MMVQ, vec_dot_q6_K_q8_1)
