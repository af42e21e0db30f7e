//! The cost model: predicted decode and prefill speed of a plan on a profiled machine,
//! and which resource bounds it.
//!
//! Decode (batch 1), per token: host overhead per layer, resident weights read at the
//! device's rate, streamed bytes over the link. Without overlapped copies link time adds
//! to the rest; with them the larger of link and compute counts. Hybrid plans (layers
//! computed on the host) are timed by the schedule simulation ([`crate::schedule`]).
//! Prefill, per chunk: 2 FLOP per weight per token at the profile's rate for the model's
//! width, the non-matmul work per layer per token, plus one pass of streamed bytes per chunk.

use crate::plan::StreamPlan;
use crate::profile::Profile;
use crate::schedule::{simulate_decode_at, DecodeRates};
use cardinfer_core::ModelSpec;
use serde::Serialize;
use std::fmt;

/// The resource that bounds a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Bound {
    /// Host→device copies of streamed blocks.
    Link,
    /// Reading resident weights on the device.
    DeviceMemory,
    /// Device arithmetic (prefill).
    DeviceCompute,
    /// Host computation of layers placed on the host (hybrid decode).
    HostCompute,
    /// Host-side per-token overhead (kernel launches, synchronization).
    Overhead,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Link => "host→device link",
            Self::DeviceMemory => "device memory bandwidth",
            Self::DeviceCompute => "device compute",
            Self::HostCompute => "host compute",
            Self::Overhead => "per-token overhead",
        })
    }
}

/// Predicted speed of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Decode tokens per second at batch 1 over an empty cache.
    pub decode_tok_s: f64,
    /// Decode tokens per second at batch 1 with the cache full (the context's last token).
    pub decode_tok_s_at_context: f64,
    /// Prefill tokens per second for a prompt of whole chunks.
    pub prefill_tok_s: f64,
    /// Bytes copied over the link per decoded token.
    pub streamed_bytes_per_token: u64,
    /// Decode milliseconds per token over an empty cache: overhead, resident reads, link.
    pub decode_ms: DecodeBreakdown,
    /// The same with the cache full.
    pub decode_ms_at_context: DecodeBreakdown,
    /// What bounds decode.
    pub decode_bound: Bound,
    /// What bounds prefill.
    pub prefill_bound: Bound,
    /// Peak device bytes the plan holds.
    pub peak_device_bytes: u64,
}

/// Where a decoded token's time goes, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DecodeBreakdown {
    /// Host overhead (per layer × layers).
    pub overhead: f64,
    /// Reading resident weights.
    pub resident_read: f64,
    /// Device attention reading the cache (the layers it computes).
    pub attention: f64,
    /// Copying streamed blocks.
    pub link: f64,
    /// Computing host-placed layers on the CPU (overlapped with the link).
    pub host: f64,
}

/// One decoded token at one depth.
struct DecodeAt {
    total_ms: f64,
    breakdown: DecodeBreakdown,
    bound: Bound,
}

/// Decode tokens per second of `plan` (batch 1) over a cache of `depth` positions.
pub fn predict_decode_at(
    spec: &ModelSpec,
    plan: &StreamPlan,
    profile: &Profile,
    overlapped_copies: bool,
    depth: usize,
) -> f64 {
    1e3 / decode_at(spec, plan, profile, overlapped_copies, depth).total_ms
}

fn decode_at(
    spec: &ModelSpec,
    plan: &StreamPlan,
    profile: &Profile,
    overlapped_copies: bool,
    depth: usize,
) -> DecodeAt {
    let ms = DecodeRates::ms;
    let streamed = plan.streamed_bytes_per_pass();
    let overhead = profile.decode_overhead_ms_per_layer * spec.num_layers as f64;
    let resident_read = ms(plan.resident_bytes, profile.device_read_gb_s);
    // Attention reads every layer's cache (`depth` positions) on the device; a cache in
    // host memory crosses the link both ways first.
    let kv_read = plan.kv_position.bytes * depth as u64 * spec.num_layers as u64;
    let kv_traffic = if plan.kv_on_host { 2 * kv_read } else { 0 };
    let attention = ms(kv_read, profile.device_read_gb_s);
    let link = ms(streamed + kv_traffic, profile.h2d_gb_s);
    // Streamed blocks are also read by the kernels once in the slot.
    let compute = overhead + resident_read + attention + ms(streamed, profile.device_read_gb_s);
    // Host layers run on the CPU while uploads for the next streamed layers are in flight.
    let host = ms(plan.host_bytes_per_pass(), profile.cpu_matvec_gb_s);
    // Hybrid: the CPU's blocks, hops and device work share the hidden state's path while
    // the link fills slots; the schedule simulation counts what overlaps (and where each
    // layer's attention runs).
    let hybrid = (host > 0.0).then(|| simulate_decode_at(plan, &DecodeRates::from_profile(profile), depth));
    let total_ms = match hybrid {
        Some(schedule) => schedule.token_ms,
        None if overlapped_copies && plan.slots >= 2 => compute.max(link),
        None => compute + link,
    };
    let bound = match hybrid {
        Some(s) if s.host_ms + s.device_ms >= s.link_ms => Bound::HostCompute,
        Some(_) => Bound::Link,
        None if link >= overhead.max(resident_read + attention) => Bound::Link,
        None if overhead >= resident_read + attention => Bound::Overhead,
        None => Bound::DeviceMemory,
    };
    DecodeAt { total_ms, breakdown: DecodeBreakdown { overhead, resident_read, attention, link, host }, bound }
}

/// Weight matrix parameters of one transformer layer: q/k/v/o projections and the
/// three MLP matrices (norms and biases are negligible).
pub fn layer_params(spec: &ModelSpec) -> u64 {
    let (h, hd, ff) = (spec.hidden_size as u64, spec.head_dim as u64, spec.intermediate_size as u64);
    h * hd * (2 * spec.num_heads as u64 + 2 * spec.num_kv_heads as u64) + 3 * h * ff
}

/// Weights of a model, for FLOP counts: every parameter of every block but the
/// embedding (a lookup).
pub fn compute_params(spec: &ModelSpec) -> f64 {
    spec.num_layers as f64 * layer_params(spec) as f64 + spec.vocab_size as f64 * spec.hidden_size as f64
}

/// Predicts the speed of `plan` for a model of `spec` on a machine of `profile`;
/// `overlapped_copies` as in the plan request. Decode is at batch 1.
pub fn predict(spec: &ModelSpec, plan: &StreamPlan, profile: &Profile, overlapped_copies: bool) -> Prediction {
    predict_batch(spec, plan, profile, overlapped_copies, 1)
}

/// [`predict`] for a decode batch of `batch` sequences: one weight pass serves every
/// sequence of the batch, so at small batches decode tok/s grows with the batch (the
/// executor decodes batch 1 today; this is the planner's projection).
pub fn predict_batch(
    spec: &ModelSpec,
    plan: &StreamPlan,
    profile: &Profile,
    overlapped_copies: bool,
    batch: usize,
) -> Prediction {
    let streamed = plan.streamed_bytes_per_pass();
    let at_zero = decode_at(spec, plan, profile, overlapped_copies, 0);
    let at_context = decode_at(spec, plan, profile, overlapped_copies, plan.context);
    let kv_traffic =
        if plan.kv_on_host { 2 * spec.kv_bytes_per_token(plan.kv_type) * spec.context_length as u64 } else { 0 };
    let chunk = plan.prefill_chunk.max(1) as f64;
    let chunk_compute = chunk * 2.0 * compute_params(spec) / profile.prefill_flops(spec.hidden_size) * 1e3
        + chunk * spec.num_layers as f64 * profile.prefill_ms_per_layer_token;
    // Prefill chunks stream the host layers as well.
    let prefill_link = (streamed + plan.host_bytes_per_pass() + kv_traffic) as f64 / (profile.h2d_gb_s * 1e9) * 1e3;
    let chunk_total = if overlapped_copies && plan.slots >= 2 {
        chunk_compute.max(prefill_link)
    } else {
        chunk_compute + prefill_link
    };
    let batch = batch.max(1) as f64;
    let batch_compute = (batch - 1.0) * 2.0 * compute_params(spec) / profile.prefill_flops(spec.hidden_size) * 1e3;
    Prediction {
        decode_tok_s: batch * 1e3 / (at_zero.total_ms + batch_compute),
        decode_tok_s_at_context: batch * 1e3 / (at_context.total_ms + batch_compute),
        prefill_tok_s: chunk * 1e3 / chunk_total,
        streamed_bytes_per_token: streamed,
        decode_ms: at_zero.breakdown,
        decode_ms_at_context: at_context.breakdown,
        decode_bound: at_zero.bound,
        prefill_bound: if prefill_link > chunk_compute { Bound::Link } else { Bound::DeviceCompute },
        peak_device_bytes: plan.device_bytes(),
    }
}
