//! The device's cache of routed experts (issue 30): slots of one expert each (gate, up and
//! down matrices), filled on the copy stream from the page-locked host copy of the experts
//! ([`crate::model::host_experts`]). For each forward pass through a mixture-of-experts
//! layer it decides where every routed expert is computed:
//! - an expert already in a slot is computed there (a hit);
//! - a missing one is either uploaded into a slot (evicting the least recently used
//!   expert no earlier part of this pass still needs) and computed by the device, or
//!   computed by the CPU from host memory — for one token, split so that the CPU's share
//!   and the link's take about the same time at the rates measured on the previous passes;
//!   a prompt chunk (many tokens per expert) uploads every missing expert.
//!
//! The copies run on the copy stream while the CPU computes its share, so a decode step
//! reads experts over the link and from host memory at once. Which missing experts are
//! uploaded: the most used so far (a frequency count), since they are the likeliest to be
//! hits later.

use crate::cuda::copy_stream::CopyStream;
use crate::cuda::slots::SlotArena;
use crate::device::DeviceMarker;
use crate::model::weights::Weight;
use cardinfer_core::BlockId;
use std::collections::HashMap;
use std::sync::Mutex;

/// Tokens in a pass from which every missing expert is uploaded (the CPU computes none).
pub(crate) const UPLOAD_TOKENS: usize = 32;

/// Starting estimates of the two rates (bytes per second), replaced by measured ones after
/// the first passes.
const START_CPU_BYTES_PER_S: f64 = 20e9;
const START_LINK_BYTES_PER_S: f64 = 20e9;

/// Weight of a new measurement in the rates' moving averages.
const RATE_SMOOTHING: f64 = 0.1;

/// An expert of a layer.
type Key = (BlockId, u16);

/// Where one routed expert of a pass is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Already in this slot.
    Cached(usize),
    /// To be uploaded into this slot, then computed by the device.
    Upload(usize),
    /// Computed by the CPU from host memory.
    Cpu,
    /// Copied to the device for this pass only (no slot could be given).
    Temporary,
}

/// How the routed experts were computed since the model was loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ExpertStats {
    /// Expert computations served from the device cache.
    pub cached: u64,
    /// Experts uploaded into the cache (each then computed by the device).
    pub uploaded: u64,
    /// Expert computations done by the CPU from host memory.
    pub cpu: u64,
    /// Experts copied to the device for one pass only.
    pub temporary: u64,
    /// Slots of the cache (one expert each).
    pub slots: usize,
    /// Device bytes of the cache.
    pub device_bytes: u64,
    /// Measured CPU rate over expert bytes (GB/s), once measured.
    pub cpu_gbs: f64,
    /// Measured link rate (GB/s), once measured.
    pub link_gbs: f64,
}

impl ExpertStats {
    /// The fraction of expert computations served from the cache.
    pub fn hit_rate(&self) -> f64 {
        let all = self.cached + self.uploaded + self.cpu + self.temporary;
        if all == 0 {
            0.0
        } else {
            self.cached as f64 / all as f64
        }
    }
}

/// One slot's expert.
struct Entry {
    key: Key,
    last_used: u64,
    weights: Option<[Weight; 3]>,
}

struct State {
    entries: Vec<Option<Entry>>,
    index: HashMap<Key, usize>,
    uses: HashMap<Key, u64>,
    tick: u64,
    cpu_s_per_byte: f64,
    link_s_per_byte: f64,
    /// The last pass's uploads: first start, last end, bytes (read on the next pass, when
    /// the device has passed them).
    last_upload: Option<(DeviceMarker, DeviceMarker, u64)>,
    stats: ExpertStats,
}

impl State {
    fn new(slots: usize, device_bytes: u64) -> Self {
        State {
            entries: (0..slots).map(|_| None).collect(),
            index: HashMap::new(),
            uses: HashMap::new(),
            tick: 0,
            cpu_s_per_byte: 1.0 / START_CPU_BYTES_PER_S,
            link_s_per_byte: 1.0 / START_LINK_BYTES_PER_S,
            last_upload: None,
            stats: ExpertStats { slots, device_bytes, ..Default::default() },
        }
    }

    /// Where each of `used` (experts of `block` a pass routes tokens to, ascending, with
    /// their bytes) is computed, for a pass of `tokens` tokens; slots given to uploads are
    /// claimed for them.
    fn assign(&mut self, block: BlockId, used: &[(u16, u64)], tokens: usize) -> Vec<Source> {
        let state = self;
        state.tick += 1;
        let tick = state.tick;
        let mut sources = vec![Source::Cpu; used.len()];
        let mut misses = Vec::new();
        for (i, &(expert, _)) in used.iter().enumerate() {
            let key = (block, expert);
            *state.uses.entry(key).or_default() += 1;
            match state.index.get(&key) {
                Some(&slot) => {
                    if let Some(entry) = state.entries[slot].as_mut() {
                        entry.last_used = tick;
                    }
                    sources[i] = Source::Cached(slot);
                }
                None => misses.push(i),
            }
        }
        // The likeliest to be used again first.
        misses.sort_by_key(|&i| (std::cmp::Reverse(state.uses[&(block, used[i].0)]), used[i].0));
        let to_upload = match tokens >= UPLOAD_TOKENS {
            true => misses.len(),
            false => {
                let bytes = misses.iter().map(|&i| used[i].1).sum::<u64>() / misses.len().max(1) as u64;
                uploads_to_balance(
                    misses.len(),
                    bytes as f64 * state.cpu_s_per_byte,
                    bytes as f64 * state.link_s_per_byte,
                )
            }
        };
        for (n, &i) in misses.iter().enumerate() {
            let slot = match n < to_upload {
                true => free_slot(&state.entries, tick),
                false => None,
            };
            sources[i] = match (slot, tokens >= UPLOAD_TOKENS) {
                (Some(slot), _) => {
                    let key = (block, used[i].0);
                    if let Some(old) = state.entries[slot].take() {
                        state.index.remove(&old.key);
                    }
                    state.entries[slot] = Some(Entry { key, last_used: tick, weights: None });
                    state.index.insert(key, slot);
                    Source::Upload(slot)
                }
                (None, true) => Source::Temporary,
                (None, false) => Source::Cpu,
            };
        }
        for source in &sources {
            match source {
                Source::Cached(_) => state.stats.cached += 1,
                Source::Upload(_) => state.stats.uploaded += 1,
                Source::Cpu => state.stats.cpu += 1,
                Source::Temporary => state.stats.temporary += 1,
            }
        }
        sources
    }
}

/// The device cache of routed experts.
pub(crate) struct ExpertCache {
    arena: SlotArena,
    copy: CopyStream,
    state: Mutex<State>,
}

impl std::fmt::Debug for ExpertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExpertCache({} slots)", self.arena.len())
    }
}

impl ExpertCache {
    /// A cache of `slots` experts of up to `expert_bytes` each, for inputs of up to
    /// `max_cols` columns and `max_rows` rows; `None` on a device without copy streams and
    /// in-place kernels (the CPU) or when the allocation fails.
    pub fn new(
        device: &candle_core::Device,
        slots: usize,
        expert_bytes: u64,
        max_cols: usize,
        max_rows: usize,
    ) -> Option<Self> {
        if slots == 0 {
            return None;
        }
        let copy = CopyStream::new(device)?;
        let arena = SlotArena::new(device, slots, expert_bytes, max_cols, max_rows)?;
        let state = State::new(arena.len(), arena.device_bytes());
        Some(Self { arena, copy, state: Mutex::new(state) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots, to place uploads in.
    pub fn arena(&self) -> &SlotArena {
        &self.arena
    }

    /// The copy stream uploads run on.
    pub fn copy_stream(&self) -> &CopyStream {
        &self.copy
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> ExpertStats {
        let state = self.state();
        ExpertStats { cpu_gbs: 1e-9 / state.cpu_s_per_byte, link_gbs: 1e-9 / state.link_s_per_byte, ..state.stats }
    }

    /// Where each of `used` (experts of `block` a pass routes tokens to, ascending, with
    /// their bytes) is computed, for a pass of `tokens` tokens; slots given to uploads are
    /// claimed for them (fill them with [`ExpertCache::fill`]).
    pub fn assign(&self, block: BlockId, used: &[(u16, u64)], tokens: usize) -> Vec<Source> {
        let mut state = self.state();
        if let Some((start, end, bytes)) = state.last_upload.take() {
            if let Some(secs) = start.secs_until(&end).filter(|s| *s > 0.0 && bytes > 0) {
                state.link_s_per_byte = smooth(state.link_s_per_byte, secs / bytes as f64);
            }
        }
        state.assign(block, used, tokens)
    }

    /// The weights of the expert in `slot`, once filled.
    pub fn weights(&self, slot: usize) -> Option<[Weight; 3]> {
        self.state().entries.get(slot)?.as_ref()?.weights.clone()
    }

    /// Records that `slot` now holds `weights` (its upload queued).
    pub fn fill(&self, slot: usize, weights: [Weight; 3]) {
        if let Some(Some(entry)) = self.state().entries.get_mut(slot) {
            entry.weights = Some(weights);
        }
    }

    /// Forgets the expert of `slot` (its upload failed).
    pub fn evict(&self, slot: usize) {
        let mut state = self.state();
        if let Some(entry) = state.entries.get_mut(slot).and_then(Option::take) {
            state.index.remove(&entry.key);
        }
    }

    /// Records a pass's uploads (from the first copy's start to the last's end) to measure
    /// the link on the next pass.
    pub fn record_uploads(&self, span: (DeviceMarker, DeviceMarker), bytes: u64) {
        self.state().last_upload = Some((span.0, span.1, bytes));
    }

    /// Records the CPU's share of a pass: `bytes` of experts in `secs`.
    pub fn record_cpu(&self, secs: f64, bytes: u64) {
        if secs > 0.0 && bytes > 0 {
            let mut state = self.state();
            state.cpu_s_per_byte = smooth(state.cpu_s_per_byte, secs / bytes as f64);
        }
    }
}

fn smooth(average: f64, sample: f64) -> f64 {
    average + RATE_SMOOTHING * (sample - average)
}

/// A slot to upload into: an empty one, else the least recently used one no earlier part
/// of this pass (`tick`) uses.
fn free_slot(entries: &[Option<Entry>], tick: u64) -> Option<usize> {
    if let Some(empty) = entries.iter().position(Option::is_none) {
        return Some(empty);
    }
    entries
        .iter()
        .enumerate()
        .filter_map(|(slot, e)| e.as_ref().filter(|e| e.last_used < tick).map(|e| (e.last_used, slot)))
        .min()
        .map(|(_, slot)| slot)
}

/// Of `misses` experts, how many to upload so that the link's share (`link_s` each) and
/// the CPU's (`cpu_s` each) end about together: the split with the shortest longer side
/// (ties to more uploads, which fill the cache).
pub(crate) fn uploads_to_balance(misses: usize, cpu_s: f64, link_s: f64) -> usize {
    (0..=misses)
        .rev()
        .min_by(|&a, &b| {
            let cost = |up: usize| (up as f64 * link_s).max((misses - up) as f64 * cpu_s);
            cost(a).total_cmp(&cost(b))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{free_slot, uploads_to_balance, Entry, Source, State, UPLOAD_TOKENS};
    use cardinfer_core::BlockId;

    #[test]
    fn a_pass_hits_what_an_earlier_one_uploaded_and_splits_the_misses() {
        let layer = BlockId::Layer(3);
        let mut state = State::new(3, 0);
        // Equal rates: of two misses, one uploaded, one for the CPU.
        let first = state.assign(layer, &[(1, 100), (5, 100)], 1);
        assert_eq!(first.iter().filter(|s| matches!(s, Source::Upload(_))).count(), 1);
        assert_eq!(first.iter().filter(|s| **s == Source::Cpu).count(), 1);
        let uploaded = if matches!(first[0], Source::Upload(_)) { 1 } else { 5 };
        // The next pass finds it; the same expert of another layer is another expert.
        let second = state.assign(layer, &[(uploaded, 100)], 1);
        assert!(matches!(second[0], Source::Cached(_)));
        assert!(matches!(state.assign(BlockId::Layer(4), &[(uploaded, 100)], 1)[0], Source::Upload(_)));
        // A prompt chunk uploads every miss; with no slot left in the pass, a temporary copy.
        let chunk: Vec<(u16, u64)> = (10..14).map(|e| (e, 100)).collect();
        let sources = state.assign(layer, &chunk, UPLOAD_TOKENS);
        assert_eq!(sources.iter().filter(|s| matches!(s, Source::Upload(_))).count(), 3);
        assert_eq!(sources.iter().filter(|s| **s == Source::Temporary).count(), 1);
        assert_eq!(state.stats.cached, 1);
        assert_eq!(state.stats.uploaded, 5);
        assert_eq!(state.stats.cpu, 1);
        assert_eq!(state.stats.temporary, 1);
    }

    #[test]
    fn the_split_balances_the_cpu_and_the_link() {
        // Equal rates: half each (ties to the upload).
        assert_eq!(uploads_to_balance(8, 1.0, 1.0), 4);
        // A link twice as fast takes two thirds.
        assert_eq!(uploads_to_balance(9, 2.0, 1.0), 6);
        // A CPU far faster takes all of them.
        assert_eq!(uploads_to_balance(8, 0.01, 1.0), 0);
        assert_eq!(uploads_to_balance(0, 1.0, 1.0), 0);
    }

    #[test]
    fn slots_are_reused_least_recently_used_first_and_never_within_a_pass() {
        let entry =
            |expert: u16, last_used: u64| Some(Entry { key: (BlockId::Layer(0), expert), last_used, weights: None });
        assert_eq!(free_slot(&[entry(0, 3), None], 5), Some(1));
        assert_eq!(free_slot(&[entry(0, 3), entry(1, 2), entry(2, 4)], 5), Some(1));
        // Every slot used by this pass: none.
        assert_eq!(free_slot(&[entry(0, 5), entry(1, 5)], 5), None);
    }
}
