//! The fused decode path: one token through a resident model in a few custom kernels per
//! block instead of Candle's ~35 small ones, recorded once into a CUDA graph and replayed
//! for every token.
//!
//! Measured before this path (BENCHMARKS.md, issue 4): resident decode was bound by the
//! host queueing kernels — one 4B layer took 194 µs of host time for 139 µs of kernels,
//! ~3.3 µs per kernel however small. So the overhead is removed wholesale:
//! - **fewer kernels**: residual add + RMS norm in one kernel; bias + per-head q/k norm +
//!   RoPE + KV append in one; decode attention as chunk partials + one combine; SwiGLU in
//!   one; one Q8_1 quantization of each input shared by q/k/v and by gate/up. The matrix
//!   products stay Candle's own MMVQ kernels (same kernels, same inputs as before).
//! - **no allocation per token**: activations, the attention partials and the KV cache
//!   ([`KvCache::with_capacity`](crate::KvCache::with_capacity)) are preallocated; the
//!   kernels read the position from a device word, so nothing they are launched with
//!   changes between tokens.
//! - **one launch per token**: the whole stack (every block and the head) is captured in a
//!   CUDA graph on the first decode step and replayed afterwards.
//!
//! The plain path (Candle ops per block) stays for prefill, for other devices and for
//! debugging; on CUDA its attention softmax (scale, causal mask and softmax), RoPE (with
//! the head transpose) and SwiGLU each run as one kernel giving the same bits ([`crate::cuda::fused_ops`]). [`DecodePath::Plain`]
//! (`LoadOptions::decode_path`) switches all of this off.
//! [`reference`](mod@reference) holds CPU versions of the kernels; the tests check that a decode step
//! composed of them equals the plain block.
//!
//! The decode layers' kernels round every step explicitly and compute e^x and 1/√x
//! without the GPU's approximate special-function unit, so that [`crate::cpu::exact`] can
//! repeat a layer on the CPU with the same bits (hybrid decode's host layers); the head's
//! norm keeps the bits of Candle's rmsnorm kernel, as the streamed head computes it.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod reference;

use crate::{Result, StreamError};

/// How a resident model decodes one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodePath {
    /// Fused kernels replayed from a CUDA graph where the model and device allow it
    /// (CUDA, the built-in decoder with block-quantized matrices: dense models, Gemma 3
    /// included, and mixtures of experts — routed on the device; with the experts in host
    /// memory, launched layer by layer around the host's share), the plain path elsewhere.
    #[default]
    Fused,
    /// The fused kernels launched one by one for every token, without the CUDA graph
    /// (for comparison).
    FusedNoGraph,
    /// A timing diagnostic: the fused path launches only the quantizations and the matrix
    /// products, so a token's time is what reading the weights costs and the difference
    /// to a full token is the overhead. The output is meaningless.
    ProductsOnly,
    /// Candle ops per block, as for prefill (for debugging and comparison).
    Plain,
}

impl DecodePath {
    /// Whether the fused kernels are asked for (every variant but [`DecodePath::Plain`]).
    pub fn is_fused(self) -> bool {
        self != Self::Plain
    }
}

impl std::str::FromStr for DecodePath {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fused" => Ok(Self::Fused),
            "fused-no-graph" => Ok(Self::FusedNoGraph),
            "products-only" => Ok(Self::ProductsOnly),
            "plain" => Ok(Self::Plain),
            other => Err(StreamError::InvalidParameter {
                name: "decode path",
                reason: format!("`{other}` is not a decode path (fused, fused-no-graph, products-only, plain)"),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
