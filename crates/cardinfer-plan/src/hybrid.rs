//! Hybrid plans keep the KV cache of their host layers in host memory, and give the
//! device room that frees to the head or to more resident layers.
//!
//! A layer computed on the CPU at decode reads and writes its cache there; only a prefill
//! chunk (which streams host layers to the device) needs it on the device, one layer at a
//! time (the executor moves it back after the layer). So a hybrid plan reserves device
//! room for the device layers' caches and one visiting layer's. At small budgets that is
//! a large share: the Qwen3-4B at 500 MiB reserves 180 MiB for all 36 layers' caches at
//! context 640, and with 16 layers on the host 80 MiB come free — enough, with a smaller
//! prefill chunk, for its 209 MiB head to stay resident instead of crossing the link
//! every token.

use crate::plan::{Mode, Placement, StreamPlan};
use crate::schedule::{simulate_decode, DecodeRates};
use cardinfer_core::{BlockId, ByteSize};

/// What a cache in host memory adds per device layer and token besides its copies: such
/// plans decode on the plain path (Candle's operations per block) instead of the fused
/// kernels. Measured on an H200 (2026-12-06, issue 25): Qwen3-4B within 500 MiB decoded
/// 32.8 tok/s with its cache on the device and 20.1 with it in host memory, 19 ms per
/// token over 36 layers, at a depth of a few tokens (so not the copies).
pub const PLAIN_PATH_MS_PER_LAYER: f64 = 0.5;

impl StreamPlan {
    /// Hybrid placement: [`StreamPlan::assign_host_layers`], then the host layers' KV
    /// caches leave the device reservation and the room freed goes, in order, to slots
    /// (up to `wanted_slots` — a plan left with fewer by the full cache gets them back,
    /// since the link overlaps a host layer only with free slots — or one more when that
    /// simulates faster), a streamed head, then streamed layers; blocks become resident
    /// only in [`Mode::Auto`] (a streaming mode asked for keeps them streamed). The host
    /// layers are then chosen again for the new placement, kept only if the plan still
    /// fits and simulates faster. Plans with the whole cache in host memory (`kv_on_host`)
    /// only get the split.
    /// Last, where the head streams in chunks, the CPU takes the chunks at the end that
    /// simulate fastest ([`StreamPlan::head_host_chunks`]).
    pub fn place_hybrid(&mut self, rates: &DecodeRates, host_layers: Option<usize>, wanted_slots: usize, mode: Mode) {
        self.place_hybrid_layers(rates, host_layers, wanted_slots, mode);
        self.choose_head_host_chunks(rates);
    }

    /// How many of the streamed head's last chunks the CPU computes: the count (fewer
    /// than all) that simulates fastest, none unless the plan has host layers (the CPU is
    /// then already in use, its rate measured) and a head in two or more chunks.
    fn choose_head_host_chunks(&mut self, rates: &DecodeRates) {
        self.head_host_chunks = 0;
        if !self.head_streamed() || self.head_chunks.len() < 2 || self.host_layer_count() == 0 {
            return;
        }
        let token_ms = |plan: &StreamPlan| simulate_decode(plan, rates).token_ms;
        let mut trial = self.clone();
        let (mut best, mut best_ms) = (0, token_ms(self));
        for count in 1..self.head_chunks.len() {
            trial.head_host_chunks = count;
            let ms = token_ms(&trial);
            if ms < best_ms {
                (best, best_ms) = (count, ms);
            }
        }
        if best > 0 {
            self.head_host_chunks = best;
            self.reasons.push(format!(
                "hybrid: the last {best} of the head's {} chunks computed on the host in decode steps, while the link streams the others; simulated {best_ms:.1} ms per token",
                self.head_chunks.len()
            ));
        }
    }

    fn place_hybrid_layers(
        &mut self,
        rates: &DecodeRates,
        host_layers: Option<usize>,
        wanted_slots: usize,
        mode: Mode,
    ) {
        if self.kv_on_host {
            let mut on_host = self.clone();
            on_host.assign_host_layers(rates, host_layers);
            match self.kv_split(rates, host_layers, &on_host) {
                Some(split) => *self = split,
                None => {
                    *self = on_host;
                    return;
                }
            }
        } else {
            self.assign_host_layers(rates, host_layers);
        }
        if self.host_layer_count() == 0 {
            return;
        }
        let full_kv = self.kv_bytes;
        self.kv_bytes = self.split_kv_bytes();
        let freed = full_kv - self.kv_bytes;
        // The room to the slots asked for first, or one slot more (the link can then run
        // further ahead of the CPU's layers): the one that simulates faster.
        let (mut more_slots, mut asked_slots) = (self.clone(), self.clone());
        let resident_ok = mode == Mode::Auto;
        let (more, asked) = (
            more_slots.use_free_room(wanted_slots + 1, resident_ok),
            asked_slots.use_free_room(wanted_slots, resident_ok),
        );
        let more_faster = simulate_decode(&more_slots, rates).token_ms < simulate_decode(&asked_slots, rates).token_ms;
        let upgraded = if more_faster {
            *self = more_slots;
            more
        } else {
            *self = asked_slots;
            asked
        };
        self.reasons.push(format!(
            "KV caches of the {} host layers in host memory (one visits the device per prefill chunk): {} freed{}",
            self.host_layer_count(),
            ByteSize(freed),
            if upgraded.is_empty() { String::new() } else { format!(", given to: {}", upgraded.join(", ")) },
        ));
        if upgraded.is_empty() {
            return;
        }
        // Fewer bytes cross the link now: choose the host layers again.
        let mut again = self.clone();
        for (block, placement) in again.blocks.iter_mut() {
            if *placement == Placement::Host && *block != BlockId::Embed {
                *placement = Placement::Streamed;
            }
        }
        again.assign_host_layers(rates, host_layers);
        again.kv_bytes = again.split_kv_bytes();
        let faster = simulate_decode(&again, rates).token_ms < simulate_decode(self, rates).token_ms;
        if again.device_bytes() <= again.budget_bytes && faster {
            *self = again;
        }
    }

    /// A plan whose whole cache lives in host memory (`kv_on_host`: each layer's part
    /// crosses the link twice per token, and decode leaves the fused path), split per
    /// layer instead: the host layers' caches in host memory, where the CPU reads them,
    /// and the device layers' caches on the device. Each count of host layers whose device
    /// caches fit beside this plan's pool and resident blocks is simulated at half the
    /// context; the fastest is returned (its `kv_bytes` the full cache, as the caller's
    /// accounting expects) if it beats `on_host` (this plan with its host layers assigned),
    /// else `None`.
    fn kv_split(&self, rates: &DecodeRates, host_layers: Option<usize>, on_host: &StreamPlan) -> Option<StreamPlan> {
        let layers = self.blocks.iter().filter(|(b, _)| matches!(b, BlockId::Layer(_))).count() as u64;
        let full_kv = layers * self.kv_position.bytes * self.context as u64;
        let on_host_ms = simulate_decode(on_host, rates).token_ms + PLAIN_PATH_MS_PER_LAYER * layers as f64;
        // Every layer's cache on the device costs room the plan gave to resident layers and
        // slots: start from every layer streamed through one slot (the caller spends what
        // is left on slots and resident blocks again).
        let mut base = self.clone();
        for i in 0..base.blocks.len() {
            if let (BlockId::Layer(_), Placement::Resident) = base.blocks[i] {
                base.blocks[i].1 = Placement::Streamed;
                base.resident_bytes -= base.bytes_of(base.blocks[i].0);
            }
        }
        base.slots = base.slots.min(1);
        base.reasons.retain(|r| !r.contains(" slot(s)") && !r.contains("layers resident in the room left"));
        base.reasons.push(format!(
            "KV per layer: every layer streamed through {} slot before the split (the room goes to the device layers' caches first)",
            base.slots
        ));
        let streamed =
            base.blocks.iter().filter(|(b, p)| *p == Placement::Streamed && matches!(b, BlockId::Layer(_))).count();
        let counts: Vec<usize> = match host_layers {
            Some(asked) => vec![asked.min(streamed)],
            None => (1..=streamed).collect(),
        };
        let mut best: Option<(StreamPlan, f64, usize)> = None;
        for count in counts {
            let mut split = base.clone();
            split.kv_on_host = false;
            split.reasons.retain(|r| !r.starts_with("KV cache in host memory"));
            split.assign_host_layers(rates, Some(count));
            split.kv_bytes = split.split_kv_bytes();
            if split.device_bytes() > split.budget_bytes {
                continue;
            }
            let ms = simulate_decode(&split, rates).token_ms;
            split.kv_bytes = full_kv;
            if best.as_ref().is_none_or(|(_, b, _)| ms < *b) {
                best = Some((split, ms, count));
            }
        }
        let (mut split, ms, count) = best?;
        if ms >= on_host_ms {
            return None;
        }
        if host_layers.is_none() {
            if let Some(r) = split.reasons.iter_mut().rev().find(|r| r.starts_with("hybrid: ")) {
                *r = r.replace(", count as asked", ", the count whose device caches fit that simulates fastest");
            }
        }
        split.reasons.push(format!(
            "KV cache split per layer: the {count} host layers' caches in host memory, the device layers' on the device (simulated {ms:.1} ms per token at depth {}, against {on_host_ms:.1} with the whole cache in host memory)",
            self.context / 2
        ));
        Some(split)
    }

    /// Device bytes of the KV cache when the host layers' caches live in host memory: the
    /// other layers' at the full context and, with host layers, one visiting host layer's
    /// (a prefill chunk streams it to the device).
    fn split_kv_bytes(&self) -> u64 {
        let layers = self.blocks.iter().filter(|(b, _)| matches!(b, BlockId::Layer(_))).count() as u64;
        let host = self.host_layer_count() as u64;
        (layers - host + u64::from(host > 0)) * self.kv_position.bytes * self.context as u64
    }

    /// Whether the head streams through the pool (whole or in row chunks).
    pub fn head_streamed(&self) -> bool {
        self.blocks.iter().any(|(b, p)| *b == BlockId::Head && *p == Placement::Streamed)
    }

    /// The head rows the CPU computes in decode steps: those of the last
    /// `head_host_chunks` of a streamed head's chunks (at most all but one); `None` when
    /// there are none.
    pub fn head_host_rows(&self) -> Option<std::ops::Range<usize>> {
        let chunks = &self.head_chunks;
        let count = self.head_host_chunks.min(chunks.len().saturating_sub(1));
        (count > 0 && self.head_streamed()).then(|| chunks[chunks.len() - count].start..chunks[chunks.len() - 1].end)
    }

    /// Layers computed on the host.
    pub fn host_layer_count(&self) -> usize {
        self.blocks.iter().filter(|(b, p)| *p == Placement::Host && matches!(b, BlockId::Layer(_))).count()
    }

    /// Spends the budget's free room: slots up to `wanted_slots`, then streamed blocks
    /// made resident — the head first (read every token, and streamed in chunks when
    /// larger than a slot), then layers in pass order (an early streamed layer makes the
    /// device wait for its copy). Returns what changed.
    fn use_free_room(&mut self, wanted_slots: usize, resident_ok: bool) -> Vec<String> {
        let mut upgraded = Vec::new();
        let mut room = self.budget_bytes.saturating_sub(self.device_bytes());
        while self.slots < wanted_slots && self.slot_bytes > 0 && self.slot_bytes <= room {
            room -= self.slot_bytes;
            self.slots += 1;
            upgraded.push(format!("slot {}", self.slots));
        }
        let mut candidates: Vec<usize> =
            (0..self.blocks.len()).filter(|&i| resident_ok && self.blocks[i].1 == Placement::Streamed).collect();
        candidates.sort_by_key(|&i| self.blocks[i].0 != BlockId::Head);
        for i in candidates {
            let block = self.blocks[i].0;
            let bytes = self.bytes_of(block);
            if bytes > room {
                continue;
            }
            room -= bytes;
            self.resident_bytes += bytes;
            self.blocks[i].1 = Placement::Resident;
            if block == BlockId::Head {
                self.head_chunks.clear();
                self.head_host_chunks = 0;
            }
            upgraded.push(block.to_string());
        }
        upgraded
    }
}
