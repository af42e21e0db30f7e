//! CPU arithmetic that gives the CUDA decode path's bits: a host layer of a hybrid model
//! computes, for one decoded token, exactly what the device would have computed for it,
//! so a hybrid run's tokens and logits equal the resident run's.
//!
//! Two things make that possible:
//! - **the matrix products** ([`mmvq`]): Candle's MMVQ kernels quantize the input to Q8_1
//!   (blocks of 32, an f16 scale; [`q8_1`]) and give each of 128 threads a fixed share
//!   of every row; integer dot products are exact in any order, and the float steps (which
//!   multiply-adds the compiler fused was read from the kernels' SASS) are repeated here in
//!   the threads' order, then reduced as the kernel reduces them (4 warps, a butterfly);
//! - **our decode kernels** (`kernels/decode.cu`): the layer's kernels round every step
//!   explicitly (no contraction left to the compiler) and compute e^x and 1/√x without the
//!   GPU's approximate special-function unit ([`arith`]), so [`kernels`] can follow them
//!   step by step.
//!
//! `executor/host_layer/exact.rs` composes them into a layer in the order the CUDA path
//! launches its kernels.
//! Covered: Q4_K and Q6_K matrices (a Q4_K_M file), f32 norms and biases, head sizes that
//! are multiples of 64 up to 256 (those the CUDA path takes). Elsewhere the caller computes
//! the layer with Candle's CPU ops (the last bits may then differ from the device's).
//!
//! Checked on the GPU by `cardinfer-dev exact-check` (the products, bit for bit) and by hybrid
//! runs whose generated ids equal the resident run's (BENCHMARKS.md, session 9); the unit
//! tests here check the vector kernels against the scalar references bit for bit (the whole
//! layer's against Candle's CPU block are with the layer).

pub mod arith;
pub mod kernels;
pub mod layout;
pub mod mmvq;
pub mod q8_1;
