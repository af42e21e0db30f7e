//! The decode schedule of a plan, simulated: when each block's weights arrive, when the
//! device, the CPU and the link are busy, and so how long a token takes in steady state.
//!
//! One token walks the blocks in order; the hidden state is the critical path:
//! - a resident block costs the device `overhead + bytes / device rate`;
//! - a streamed block waits for its copy, then costs the device the same. Its copy starts
//!   when the link is free and a slot is: the slot of the block `slots` copies earlier,
//!   freed once the device computed it (so the link runs at most `slots` blocks ahead);
//! - a host block costs a hop (hidden state to the host and back), the CPU's fixed cost
//!   of a block and `bytes / CPU rate`, while the link keeps copying into free slots.
//!
//! Each token starts with the link idle and every slot free, as the executor runs it: a
//! pass queues its first copies when it starts (nothing is copied ahead for the next
//! token), so a streamed block early in the pass makes the device wait for its copy —
//! measured on the H100 at 8 ms of a 55 ms hybrid token when the first two non-resident
//! layers were streamed (BENCHMARKS.md, run54). The planner uses the simulation to choose
//! the hybrid split and which layers of it run on the host: a formula that lets the link
//! and the CPU overlap perfectly overestimates hybrid speed, since device work and hops
//! sit on the same path as the CPU's blocks.
//!
//! Attention reads each layer's cache: `depth` positions, on the device at its memory
//! rate, on the CPU (host layers) at the profile's attention rate, and — when the plan
//! keeps the whole cache in host memory — over the link both ways first. The planner
//! chooses at the mean depth of a conversation that fills the context (half of it).

use crate::plan::{Placement, StreamPlan};
use crate::profile::Profile;
use cardinfer_core::BlockId;

/// The rates a simulated token runs at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeRates {
    /// Host→device copy rate, GB/s.
    pub link_gb_s: f64,
    /// Rate at which the CPU computes a block for one token, weight GB/s.
    pub cpu_gb_s: f64,
    /// Rate at which the device reads weights while decoding, GB/s.
    pub device_gb_s: f64,
    /// Fixed device-side cost of one block, milliseconds (launches, small kernels).
    pub device_block_ms: f64,
    /// One hop of the hidden state to the host and back around a host block, milliseconds.
    pub hop_ms: f64,
    /// What a host block costs the CPU besides its weight reads, milliseconds.
    pub host_block_ms: f64,
    /// Rate at which a host layer's attention reads its cache, G values/s.
    pub cpu_attention_gvalues_s: f64,
}

impl DecodeRates {
    /// The rates of `profile`.
    pub fn from_profile(profile: &Profile) -> Self {
        Self {
            link_gb_s: profile.h2d_gb_s,
            cpu_gb_s: profile.cpu_matvec_gb_s,
            device_gb_s: profile.device_read_gb_s,
            device_block_ms: profile.decode_overhead_ms_per_layer,
            hop_ms: profile.host_hop_ms,
            host_block_ms: profile.cpu_block_fixed_ms,
            cpu_attention_gvalues_s: profile.cpu_attention_gvalues_s,
        }
    }

    /// Milliseconds to move or read `bytes` at `gb_s`.
    pub(crate) fn ms(bytes: u64, gb_s: f64) -> f64 {
        bytes as f64 / (gb_s * 1e9) * 1e3
    }
}

/// What a simulated token costs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenSchedule {
    /// Milliseconds per token in steady state.
    pub token_ms: f64,
    /// Of which the device computed, milliseconds.
    pub device_ms: f64,
    /// Of which the CPU computed host blocks (hops included), milliseconds.
    pub host_ms: f64,
    /// Milliseconds the link was busy per token.
    pub link_ms: f64,
    /// Milliseconds the device's path waited for copies per token.
    pub wait_ms: f64,
}

/// Simulates decoding with `plan` at `rates` at the mean depth of a conversation that
/// fills the plan's context (half of it): what the planner chooses by.
pub fn simulate_decode(plan: &StreamPlan, rates: &DecodeRates) -> TokenSchedule {
    simulate_decode_at(plan, rates, plan.context / 2)
}

/// Simulates decoding one token with `plan` at `rates` over a cache of `depth` positions
/// (blocks in plan order; the embedding is a lookup and costs nothing).
pub fn simulate_decode_at(plan: &StreamPlan, rates: &DecodeRates, depth: usize) -> TokenSchedule {
    let kv_values = plan.kv_position.values * depth as u64;
    let kv_bytes = plan.kv_position.bytes * depth as u64;
    // A layer's attention: on the device (its cache there, or brought over the link both
    // ways when the whole cache lives in host memory), or on the CPU for host layers.
    let device_attention_ms = DecodeRates::ms(kv_bytes, rates.device_gb_s);
    let visit_ms = if plan.kv_on_host { 2.0 * DecodeRates::ms(kv_bytes, rates.link_gb_s) } else { 0.0 };
    let host_attention_ms = kv_values as f64 / (rates.cpu_attention_gvalues_s * 1e9) * 1e3;
    let slots = plan.slots.max(1);
    let mut slot_free_at: Vec<f64> = Vec::new();
    let (mut t, mut link_free, mut cpu_end) = (0.0f64, 0.0f64, 0.0f64);
    let mut token = TokenSchedule::default();
    {
        for &(block, placement) in &plan.blocks {
            if block == BlockId::Embed {
                continue;
            }
            let bytes = plan.bytes_of(block);
            let is_layer = matches!(block, BlockId::Layer(_));
            if is_layer && placement != Placement::Host && visit_ms > 0.0 {
                // The executor moves the cache on the hidden state's path.
                t = t.max(link_free) + visit_ms;
                link_free = t;
                token.link_ms += visit_ms;
            }
            let attention_ms = match (is_layer, placement) {
                (false, _) => 0.0,
                (true, Placement::Host) => host_attention_ms,
                (true, _) => device_attention_ms,
            };
            match placement {
                Placement::Resident => {
                    let ms = rates.device_block_ms + DecodeRates::ms(bytes, rates.device_gb_s) + attention_ms;
                    t += ms;
                    token.device_ms += ms;
                }
                Placement::Host => {
                    let ms = rates.hop_ms + rates.host_block_ms + DecodeRates::ms(bytes, rates.cpu_gb_s) + attention_ms;
                    t += ms;
                    token.host_ms += ms;
                }
                Placement::Streamed => {
                    // The head may stream in row chunks, one slot each; the last
                    // `head_host_chunks` of them the CPU computes meanwhile, from the
                    // moment the hidden state reaches it.
                    let (pieces, on_cpu) = match block {
                        BlockId::Head => {
                            let chunks = plan.head_chunks.len().max(1);
                            (chunks, plan.head_host_chunks.min(chunks - 1))
                        }
                        _ => (1, 0),
                    };
                    let piece = bytes / pieces as u64;
                    if on_cpu > 0 {
                        let cpu_ms = rates.hop_ms + DecodeRates::ms(piece * on_cpu as u64, rates.cpu_gb_s);
                        cpu_end = t + cpu_ms;
                        token.host_ms += cpu_ms;
                    }
                    for _ in 0..pieces - on_cpu {
                        let copies = slot_free_at.len();
                        let slot_free = if copies >= slots { slot_free_at[copies - slots] } else { 0.0 };
                        let copy_start = link_free.max(slot_free);
                        link_free = copy_start + DecodeRates::ms(piece, rates.link_gb_s);
                        token.link_ms += link_free - copy_start;
                        if link_free > t {
                            token.wait_ms += link_free - t;
                            t = link_free;
                        }
                        let ms = rates.device_block_ms + DecodeRates::ms(piece, rates.device_gb_s) + attention_ms;
                        t += ms;
                        token.device_ms += ms;
                        slot_free_at.push(t);
                    }
                }
            }
        }
    }
    token.token_ms = t.max(cpu_end);
    token
}

/// Layers `0..n` of which `count` are picked, spread evenly, the last one picked
/// (`⌊(j+1)k/n⌋ > ⌊jk/n⌋`).
pub fn spread(n: usize, count: usize) -> impl Iterator<Item = bool> {
    (0..n).map(move |j| (j + 1) * count / n > j * count / n)
}

/// As [`spread`], but the first one picked (`⌈(j+1)k/n⌉ > ⌈jk/n⌉`): host layers from the
/// start of the pass, so the CPU works while the link copies the first streamed block.
pub fn spread_from_first(n: usize, count: usize) -> impl Iterator<Item = bool> {
    (0..n).map(move |j| ((j + 1) * count).div_ceil(n) > (j * count).div_ceil(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StreamPlan;

    fn plan(placements: &[Placement], bytes: u64, slots: usize) -> StreamPlan {
        let mut blocks = vec![(BlockId::Embed, Placement::Host)];
        blocks.extend(placements.iter().enumerate().map(|(i, p)| (BlockId::Layer(i), *p)));
        let block_bytes = blocks.iter().map(|(b, _)| (*b, bytes)).collect();
        StreamPlan {
            blocks,
            block_bytes,
            slots,
            slot_bytes: bytes,
            resident_bytes: 0,
            kv_bytes: 0,
            kv_on_host: false,
            kv_type: cardinfer_core::KvType::default(),
            context: 0,
            kv_position: crate::plan::KvPosition::default(),
            workspace_bytes: 0,
            budget_bytes: u64::MAX,
            prefill_chunk: 1,
            runtime_bytes: 0,
            head_chunks: Vec::new(),
            head_host_chunks: 0,
            reasons: Vec::new(),
        }
    }

    const RATES: DecodeRates = DecodeRates {
        link_gb_s: 1.0,
        cpu_gb_s: 1.0,
        device_gb_s: 1000.0,
        device_block_ms: 0.0,
        hop_ms: 0.0,
        host_block_ms: 0.0,
        cpu_attention_gvalues_s: 1.0,
    };

    #[test]
    fn resident_blocks_cost_the_device_alone() {
        let p = plan(&[Placement::Resident; 4], 1_000_000_000, 0);
        let s = simulate_decode(&p, &RATES);
        assert!((s.token_ms - 4.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.link_ms, 0.0);
    }

    #[test]
    fn a_stream_only_token_is_bound_by_the_link() {
        // 1 MB per block at 1 GB/s: 1 ms per copy; the device is almost free.
        let p = plan(&[Placement::Streamed; 8], 1_000_000, 2);
        let s = simulate_decode(&p, &RATES);
        assert!((s.link_ms - 8.0).abs() < 1e-9, "{s:?}");
        assert!(s.token_ms >= 8.0 && s.token_ms < 8.1, "{s:?}");
    }

    #[test]
    fn host_blocks_overlap_the_link_only_up_to_the_slots() {
        // Alternating host and streamed blocks, CPU as fast as the link: the copies of
        // the streamed blocks hide behind the CPU's blocks, so a token takes about
        // what the CPU takes plus one copy it cannot hide.
        let alternating = [Placement::Host, Placement::Streamed].repeat(4);
        let s = simulate_decode(&plan(&alternating, 1_000_000, 2), &RATES);
        assert!(s.token_ms < 4.0 + 1.0 + 1e-6, "{s:?}");
        assert!(s.token_ms >= 4.0, "{s:?}");
        // All host blocks first: two copies overlap them, the other two wait.
        let grouped = [[Placement::Host; 4], [Placement::Streamed; 4]].concat();
        let g = simulate_decode(&plan(&grouped, 1_000_000, 2), &RATES);
        assert!(g.token_ms > s.token_ms + 0.5, "grouped {g:?} alternating {s:?}");
    }

    #[test]
    fn hops_and_device_time_add_to_the_host_path() {
        let alternating = [Placement::Host, Placement::Streamed].repeat(4);
        let slow = DecodeRates { hop_ms: 0.5, device_block_ms: 0.25, ..RATES };
        let fast = simulate_decode(&plan(&alternating, 1_000_000, 2), &RATES);
        let s = simulate_decode(&plan(&alternating, 1_000_000, 2), &slow);
        assert!(s.token_ms >= fast.token_ms + 4.0 * 0.5, "{s:?} vs {fast:?}");
    }

    /// A fixed cost per host block makes small blocks dearer on the CPU: the planner's
    /// simulation then favours fewer of them.
    #[test]
    fn a_host_blocks_fixed_cost_adds_per_block() {
        let alternating = [Placement::Host, Placement::Streamed].repeat(4);
        let p = plan(&alternating, 1_000_000, 2);
        let base = simulate_decode(&p, &RATES);
        let fixed = simulate_decode(&p, &DecodeRates { host_block_ms: 0.25, ..RATES });
        assert!((fixed.host_ms - base.host_ms - 4.0 * 0.25).abs() < 1e-9, "{fixed:?} vs {base:?}");
        assert!(fixed.token_ms > base.token_ms);
    }

    /// The head's last chunks on the CPU: it starts them when the last layer is done and
    /// the token ends when both sides have; the link carries only the others.
    #[test]
    fn head_chunks_on_the_cpu_run_beside_the_links() {
        let mut p = plan(&[Placement::Host, Placement::Streamed], 1_000_000, 2);
        p.blocks.push((BlockId::Head, Placement::Streamed));
        p.block_bytes.push((BlockId::Head, 4_000_000));
        p.head_chunks = (0..4).map(|i| i * 10..(i + 1) * 10).collect();
        let all_streamed = simulate_decode(&p, &RATES);
        p.head_host_chunks = 2;
        let half = simulate_decode(&p, &RATES);
        // 1 ms on the CPU, then the layer's copy (done by then) and four head copies of
        // 1 ms, the first of which started beside the CPU's layer: ~4 ms after it.
        assert!((all_streamed.link_ms - 5.0).abs() < 1e-9, "{all_streamed:?}");
        assert!((half.link_ms - 3.0).abs() < 1e-9, "{half:?}");
        assert!((half.host_ms - 3.0).abs() < 1e-9, "one layer and two chunks on the CPU: {half:?}");
        assert!(half.token_ms < all_streamed.token_ms, "{half:?} vs {all_streamed:?}");
        // Every chunk asked for the CPU still leaves one to the link.
        p.head_host_chunks = 9;
        let most = simulate_decode(&p, &RATES);
        assert!((most.link_ms - 2.0).abs() < 1e-9, "{most:?}");
    }

    #[test]
    fn spread_picks_the_count_asked_for_evenly() {
        let picked: Vec<bool> = spread(6, 2).collect();
        assert_eq!(picked, [false, false, true, false, false, true]);
        let first: Vec<bool> = spread_from_first(6, 2).collect();
        assert_eq!(first, [true, false, false, true, false, false]);
        for n in 1..20 {
            for k in 0..=n {
                assert_eq!(spread(n, k).filter(|p| *p).count(), k, "{n} {k}");
                assert_eq!(spread_from_first(n, k).filter(|p| *p).count(), k, "{n} {k}");
            }
        }
    }

    #[test]
    fn a_pass_starts_with_the_link_idle() {
        // The first block streamed: the device waits for its whole copy (nothing was
        // copied ahead during the previous token). A host block first hides that copy.
        let streamed_first = [Placement::Streamed, Placement::Host];
        let host_first = [Placement::Host, Placement::Streamed];
        let a = simulate_decode(&plan(&streamed_first, 1_000_000, 2), &RATES);
        let b = simulate_decode(&plan(&host_first, 1_000_000, 2), &RATES);
        assert!((a.wait_ms - 1.0).abs() < 1e-9 && (a.token_ms - 2.0).abs() < 1e-2, "{a:?}");
        assert!(b.wait_ms.abs() < 1e-9 && (b.token_ms - 1.0).abs() < 1e-2, "{b:?}");
    }

    /// Attention reads `depth` positions of each layer's cache: on the device at its rate,
    /// on the CPU at the attention rate for host layers, and over the link both ways first
    /// when the plan keeps the whole cache in host memory.
    #[test]
    fn attention_costs_grow_with_depth_where_the_cache_is_read() {
        let with_cache = |placements: &[Placement], kv_on_host: bool| StreamPlan {
            kv_on_host,
            context: 2000,
            kv_position: crate::plan::KvPosition { values: 1000, bytes: 2000 },
            ..plan(placements, 1_000_000, 2)
        };
        let resident = with_cache(&[Placement::Resident; 2], false);
        let (empty, deep) = (simulate_decode_at(&resident, &RATES, 0), simulate_decode_at(&resident, &RATES, 1000));
        // 2 layers × 1000 positions × 2000 bytes at 1000 GB/s: 0.004 ms.
        assert!((deep.token_ms - empty.token_ms - 0.004).abs() < 1e-9, "{empty:?} {deep:?}");
        // The planner's figure is at half the context.
        assert_eq!(simulate_decode(&resident, &RATES), deep);
        // A host layer reads 1000 × 1000 values at 1 G values/s: 1 ms.
        let host = with_cache(&[Placement::Host, Placement::Resident], false);
        let extra = simulate_decode_at(&host, &RATES, 1000).token_ms - simulate_decode_at(&host, &RATES, 0).token_ms;
        assert!((extra - 1.002).abs() < 1e-9, "{extra}");
        // A cache in host memory crosses the link (1 GB/s) both ways per device layer: 4 ms each.
        let visiting = with_cache(&[Placement::Resident; 2], true);
        let v = simulate_decode_at(&visiting, &RATES, 1000);
        assert!((v.token_ms - empty.token_ms - 2.0 * 4.002).abs() < 1e-9, "{v:?}");
        assert!((v.link_ms - 8.0).abs() < 1e-9, "{v:?}");
    }
}
