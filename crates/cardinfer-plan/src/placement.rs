//! The search for a [`StreamPlan`]: which blocks stay resident on the device, which
//! stream through the pool, which the host computes, how many pool slots, and the
//! prefill chunk. Pure: the caller gives the device bytes of every block (quant-aware,
//! with the device's row padding), so the same plan can be computed for the real device
//! or projected onto another.

use crate::plan::{workspace_bytes, Mode, Placement, PlanRequest, StreamPlan, Workload};
use crate::schedule::{simulate_decode, spread, spread_from_first, DecodeRates};
use crate::PlanError;
use cardinfer_core::{BlockId, ByteSize, KvType, ModelSpec};

impl StreamPlan {
    /// Hybrid decode: moves some of the streamed layers to the host, to be computed there
    /// while the link fills slots for the others. Each count of host layers from none to
    /// all of them, spread evenly between the streamed ones (so each CPU block overlaps
    /// the copy of the next streamed one), is simulated at `rates`
    /// ([`crate::schedule::simulate_decode`]); the fastest count is kept, or `host_layers`
    /// when given (at most the streamed layers).
    pub fn assign_host_layers(&mut self, rates: &DecodeRates, host_layers: Option<usize>) {
        let streamed: Vec<usize> = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, (b, p))| *p == Placement::Streamed && matches!(b, BlockId::Layer(_)))
            .map(|(i, _)| i)
            .collect();
        let n = streamed.len();
        if n == 0 {
            return;
        }
        // `count` host layers spread over the streamed ones, the first or the last of
        // them on the host; the simulation keeps the faster.
        let with_count = |count: usize, from_first: bool| -> StreamPlan {
            let mut plan = self.clone();
            let picks: Vec<bool> =
                if from_first { spread_from_first(n, count).collect() } else { spread(n, count).collect() };
            for (&index, host) in streamed.iter().zip(picks) {
                if host {
                    plan.blocks[index].1 = Placement::Host;
                }
            }
            plan
        };
        let best_of = |count: usize| -> (StreamPlan, f64) {
            let from_first = with_count(count, true);
            let from_last = with_count(count, false);
            let (a, b) = (simulate_decode(&from_first, rates).token_ms, simulate_decode(&from_last, rates).token_ms);
            if a <= b {
                (from_first, a)
            } else {
                (from_last, b)
            }
        };
        // No host layers: this plan as it is.
        let stream_only = simulate_decode(self, rates).token_ms;
        let (count, (plan, token_ms)) = match host_layers {
            Some(asked) => (asked.min(n), best_of(asked.min(n))),
            None => (1..=n).map(|count| (count, best_of(count))).fold((0, (self.clone(), stream_only)), |best, c| {
                if c.1 .1 < best.1 .1 {
                    c
                } else {
                    best
                }
            }),
        };
        *self = plan;
        // The slots stay: prefill chunks stream the host layers too (the device is far
        // faster at many tokens).
        self.reasons.push(format!(
            "hybrid: {count} of {n} streamed layers computed on the host ({} per token at {:.0} GB/s) \
             while the link streams the rest ({} at {:.0} GB/s); simulated {token_ms:.1} ms per token \
             ({stream_only:.1} streaming all){}",
            ByteSize(self.host_bytes_per_pass()),
            rates.cpu_gb_s,
            ByteSize(self.streamed_bytes_per_pass()),
            rates.link_gb_s,
            match host_layers {
                Some(asked) if asked > n => format!(", {asked} asked: at most the {n} streamed ones"),
                Some(_) => ", count as asked".to_string(),
                None => String::new(),
            },
        ));
    }

    /// Plans a model of `spec` whose blocks take `block_bytes` on the device, within
    /// `request.budget_bytes`.
    ///
    /// The embedding stays in host memory (a lookup needs a few KB per token). Resident
    /// mode needs everything to fit. Otherwise the pool gets its slots and as many
    /// blocks as still fit become resident, layers first; the head stays resident when
    /// that still leaves room for a layer slot (it is often the largest block), and a
    /// streamed head larger than a layer goes through the slots in row chunks. When the
    /// workspace of the asked prefill chunk does not fit, the chunk is halved (down to
    /// 16 tokens) before giving up.
    pub fn place(spec: &ModelSpec, block_bytes: &[(BlockId, u64)], request: &PlanRequest) -> Result<Self, PlanError> {
        Self::place_first_chunk_that_fits(spec, block_bytes, request, chunk_candidates(request))
    }

    /// Plans every block resident (the embedding in host memory, as always) with the
    /// largest prefill chunk whose workspace fits beside them: the asked one, then
    /// halvings down to 16 tokens, as [`StreamPlan::place`] lowers it. Resident mode
    /// itself never lowers the chunk; this is for a model whose other part runs elsewhere
    /// (a mixture of experts with its experts in host memory: `block_bytes` without them).
    pub fn place_resident(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
    ) -> Result<Self, PlanError> {
        let resident = PlanRequest { mode: Mode::Resident, ..*request };
        Self::place_first_chunk_that_fits(spec, block_bytes, &resident, halvings(request.prefill_chunk))
    }

    fn place_first_chunk_that_fits(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
        chunks: impl Iterator<Item = usize>,
    ) -> Result<Self, PlanError> {
        let mut last_err = None;
        for chunk in chunks {
            match Self::place_with_chunk(spec, block_bytes, request, chunk) {
                Ok(mut plan) => {
                    if chunk != request.prefill_chunk.max(1) {
                        plan.reasons.push(format!(
                            "prefill chunk lowered from {} to {chunk} tokens so its workspace fits",
                            request.prefill_chunk
                        ));
                    }
                    return Ok(plan);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(no_chunk_tried))
    }

    /// Plans like [`StreamPlan::place`], but when the asked prefill chunk does not fit,
    /// chooses among the chunks that do (halvings down to 16 tokens) the one whose plan
    /// the cost model predicts fastest for `workload`: a smaller chunk leaves room for
    /// resident layers (faster decode) but costs a weight pass per fewer prompt tokens.
    pub fn place_for_workload(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
        profile: &crate::Profile,
        workload: Workload,
    ) -> Result<(Self, crate::Prediction), PlanError> {
        // Decoded tokens attend to the prompt and to half the decoded ones on average.
        let depth = workload.prompt_tokens + workload.decode_tokens / 2;
        let time = |plan: &Self, p: &crate::Prediction| {
            let decode = crate::cost::predict_decode_at(spec, plan, profile, request.overlapped_copies, depth);
            workload.prompt_tokens as f64 / p.prefill_tok_s + workload.decode_tokens as f64 / decode
        };
        let mut best: Option<(Self, crate::Prediction, f64)> = None;
        let mut first_err = None;
        for chunk in chunk_candidates(request) {
            match Self::place_with_chunk(spec, block_bytes, request, chunk) {
                Ok(plan) => {
                    let prediction = crate::cost::predict(spec, &plan, profile, request.overlapped_copies);
                    let seconds = time(&plan, &prediction);
                    if best.as_ref().is_none_or(|(_, _, b)| seconds < *b) {
                        best = Some((plan, prediction, seconds));
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let Some((mut plan, prediction, _)) = best else {
            return Err(first_err.unwrap_or_else(no_chunk_tried));
        };
        if plan.prefill_chunk != request.prefill_chunk.max(1) {
            plan.reasons.push(format!(
                "prefill chunk {} tokens (asked {}): the fastest for {} prompt + {} decoded tokens that fits",
                plan.prefill_chunk, request.prefill_chunk, workload.prompt_tokens, workload.decode_tokens
            ));
        }
        Ok((plan, prediction))
    }

    /// Plans with exactly `request.prefill_chunk` (never lowered).
    pub fn place_with_fixed_chunk(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
    ) -> Result<Self, PlanError> {
        Self::place_with_chunk(spec, block_bytes, request, request.prefill_chunk.max(1))
    }

    fn place_with_chunk(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
        prefill_chunk: usize,
    ) -> Result<Self, PlanError> {
        let on_device = Self::place_kv(spec, block_bytes, request, prefill_chunk, false);
        if request.mode != Mode::Auto || on_device.is_ok() {
            return on_device;
        }
        // The cache does not fit beside a slot: keep it in host memory if that fits.
        let mut plan = Self::place_kv(spec, block_bytes, request, prefill_chunk, true).map_err(|_| {
            on_device.err().unwrap_or_else(|| PlanError::InvalidParameter { name: "budget", reason: "no plan".into() })
        })?;
        // Say so when a smaller cache type would keep it on the device.
        let smaller = [KvType::F16, KvType::Q8_0].into_iter().filter(|t| {
            t.row_bytes(spec.head_dim) < request.kv_type.row_bytes(spec.head_dim) && t.supports(spec.head_dim)
        });
        for kv_type in smaller {
            let asked = PlanRequest { kv_type, ..*request };
            if Self::place_kv(spec, block_bytes, &asked, prefill_chunk, false).is_ok() {
                plan.reasons.push(format!(
                    "--kv-type {kv_type} would keep the cache on the device ({} at full context)",
                    ByteSize(spec.kv_bytes_per_token(kv_type) * spec.context_length as u64)
                ));
                break;
            }
        }
        Ok(plan)
    }

    /// In auto mode the head may stay resident or stream; both are planned and the one
    /// that streams fewer bytes per token wins (the cost model's decode time falls with
    /// streamed bytes; ties keep the head resident).
    fn place_kv(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
        prefill_chunk: usize,
        kv_on_host: bool,
    ) -> Result<Self, PlanError> {
        let with_head = Self::place_head(spec, block_bytes, request, prefill_chunk, true, kv_on_host);
        if request.mode != Mode::Auto {
            return with_head;
        }
        let without_head = Self::place_head(spec, block_bytes, request, prefill_chunk, false, kv_on_host);
        match (with_head, without_head) {
            (Ok(a), Ok(b)) if b.streamed_bytes_per_pass() < a.streamed_bytes_per_pass() => Ok(b),
            (Ok(a), _) => Ok(a),
            (Err(_), b) => b,
        }
    }

    fn place_head(
        spec: &ModelSpec,
        block_bytes: &[(BlockId, u64)],
        request: &PlanRequest,
        prefill_chunk: usize,
        try_head_resident: bool,
        kv_on_host: bool,
    ) -> Result<Self, PlanError> {
        let PlanRequest { budget_bytes, mode, runtime_bytes, kv_type, .. } = *request;
        let full_kv = spec.kv_bytes_per_token(kv_type) * spec.context_length as u64;
        let kv_bytes = if kv_on_host { 2 * full_kv / spec.num_layers.max(1) as u64 } else { full_kv };
        let workspace_bytes = chunk_workspace_bytes(spec, request, prefill_chunk);
        let fixed = kv_bytes + workspace_bytes + runtime_bytes;
        let candidates: Vec<(BlockId, u64)> =
            block_bytes.iter().copied().filter(|(b, _)| *b != BlockId::Embed).collect();
        let all_resident: u64 = candidates.iter().map(|(_, n)| n).sum();
        let mut plan = Self {
            blocks: vec![(BlockId::Embed, Placement::Host)],
            block_bytes: block_bytes.to_vec(),
            slots: 0,
            slot_bytes: 0,
            resident_bytes: 0,
            kv_bytes,
            kv_on_host,
            kv_type,
            context: spec.context_length,
            kv_position: crate::plan::KvPosition::of(spec, kv_type),
            workspace_bytes,
            budget_bytes,
            prefill_chunk,
            runtime_bytes,
            head_chunks: Vec::new(),
            head_host_chunks: 0,
            reasons: vec!["embedding in host memory: a lookup moves a few KB per token".into()],
        };
        if kv_on_host {
            plan.reasons.push(format!(
                "KV cache in host memory ({} at full context does not fit beside a slot); each layer's part visits the device",
                ByteSize(full_kv)
            ));
        }
        let stream_all = match mode {
            Mode::Resident => {
                if all_resident + fixed > budget_bytes {
                    return Err(plan.infeasible(
                        all_resident + fixed,
                        0,
                        "--mode auto or stream to stream blocks through a pool",
                    ));
                }
                false
            }
            Mode::Auto => all_resident + fixed > budget_bytes,
            Mode::Stream => true,
        };
        if !stream_all {
            plan.blocks.extend(candidates.iter().map(|&(b, _)| (b, Placement::Resident)));
            plan.resident_bytes = all_resident;
            plan.reasons.push(format!("everything fits: {} of weights resident", ByteSize(all_resident)));
            return Ok(plan);
        }
        plan.place_streamed(spec, &candidates, request, try_head_resident, fixed)?;
        Ok(plan)
    }

    /// Places `candidates` (every block but the embedding) when not all of them fit: the
    /// head resident or in row chunks, the pool's slots, and as many layers resident as
    /// the room left holds, spread among the streamed ones. `fixed` is the KV cache,
    /// workspace and runtime bytes.
    fn place_streamed(
        &mut self,
        spec: &ModelSpec,
        candidates: &[(BlockId, u64)],
        request: &PlanRequest,
        try_head_resident: bool,
        fixed: u64,
    ) -> Result<(), PlanError> {
        let PlanRequest { budget_bytes, mode, slots, .. } = *request;
        let largest = candidates.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let plan = self;
        let head = candidates.iter().find(|(b, _)| *b == BlockId::Head).map_or(0, |(_, n)| *n);
        let largest_layer = candidates.iter().filter(|(b, _)| *b != BlockId::Head).map(|(_, n)| *n).max().unwrap_or(0);
        let head_resident = try_head_resident && mode == Mode::Auto && fixed + head + largest_layer <= budget_bytes;
        let chunk_head = !head_resident && head > largest_layer && largest_layer > 0;
        let slot = if head_resident || chunk_head { largest_layer } else { largest };
        if chunk_head {
            let vocab = spec.vocab_size;
            let pieces = head.div_ceil(largest_layer) as usize + 1;
            let rows = vocab.div_ceil(pieces);
            plan.head_chunks = (0..vocab).step_by(rows.max(1)).map(|r| r..(r + rows).min(vocab)).collect();
            plan.reasons.push(format!(
                "head ({}) streams in {} row chunks so a slot stays layer-sized",
                ByteSize(head),
                plan.head_chunks.len()
            ));
        }
        let reserved = fixed + if head_resident { head } else { 0 };
        if slot + reserved > budget_bytes {
            let needed = slot + reserved;
            return Err(plan.infeasible(
                needed,
                slot,
                &cheapest_change(spec, budget_bytes, needed, (plan.kv_bytes, plan.kv_type), slot),
            ));
        }
        // Two slots by default: one computes while the next fills (the prefetch thread on
        // the CPU; on CUDA, uploads queued ahead while a host layer computes). Where copies
        // are issued in line, one slot is as fast (H100, BENCHMARKS.md) and `--slots 1`
        // gives its room to resident layers.
        let wanted_slots = slots.unwrap_or(2).max(1);
        let fitting_slots = ((budget_bytes - reserved) / slot.max(1)) as usize;
        plan.slots = wanted_slots.min(fitting_slots).max(1);
        plan.slot_bytes = slot;
        plan.reasons.push(match slots {
            Some(n) if n > plan.slots => format!("{} slot(s): only that many fit, {n} were asked", plan.slots),
            Some(_) => format!("{} slot(s) as asked", plan.slots),
            None => format!("{} slot(s): one computes while the next fills", plan.slots),
        });
        let free = budget_bytes - reserved - plan.slots as u64 * slot;
        if head_resident {
            plan.resident_bytes += head;
            plan.reasons.push(format!("head resident ({}): it is read every token", ByteSize(head)));
        }
        let layers: Vec<u64> = candidates.iter().filter(|(b, _)| *b != BlockId::Head).map(|(_, n)| *n).collect();
        let keep = match mode {
            Mode::Auto => spread_resident_layers(&layers, free),
            _ => vec![false; layers.len()],
        };
        let resident_layers = keep.iter().filter(|k| **k).count();
        let mut keep = keep.into_iter();
        for &(b, n) in candidates {
            let placement = match b {
                BlockId::Head if head_resident => Placement::Resident,
                BlockId::Head => Placement::Streamed,
                _ if keep.next() == Some(true) => {
                    plan.resident_bytes += n;
                    Placement::Resident
                }
                _ => Placement::Streamed,
            };
            plan.blocks.push((b, placement));
        }
        if !plan.blocks.iter().any(|(_, p)| *p == Placement::Streamed) {
            plan.slots = 0;
            plan.slot_bytes = 0;
        }
        let streamed = plan.blocks.iter().filter(|(_, p)| *p == Placement::Streamed).count();
        plan.reasons.push(format!(
            "{resident_layers} layers resident in the room left; {streamed} block(s) stream ({} per token)",
            ByteSize(plan.streamed_bytes_per_pass())
        ));
        Ok(())
    }

    /// The error for a plan that needs `needed` bytes (`pool` of them slots) beyond the
    /// budget, with `hint`, the cheapest change.
    fn infeasible(&self, needed: u64, pool: u64, hint: &str) -> PlanError {
        PlanError::InfeasibleBudget {
            budget: ByteSize(self.budget_bytes),
            needed: ByteSize(needed),
            pool: ByteSize(pool),
            kv: ByteSize(self.kv_bytes),
            workspace: ByteSize(self.workspace_bytes),
            hint: hint.to_string(),
        }
    }
}

/// Which layers stay resident in `free` bytes, given each layer's bytes in order: as many
/// as fit, spread evenly among the streamed ones (layer `i` is resident when
/// `⌊(i+1)k/n⌋ > ⌊ik/n⌋`). Spread out, every streamed block's copy can run while a
/// resident layer before it computes; with the resident layers first, the link would idle
/// through all of them and then the streamed ones would queue behind it (measured on the
/// 14B at 6 GiB: BENCHMARKS.md).
pub fn spread_resident_layers(layers: &[u64], free: u64) -> Vec<bool> {
    let n = layers.len();
    let pattern = |k: usize| -> Vec<bool> { spread(n, k).collect() };
    let bytes = |keep: &[bool]| -> u64 { layers.iter().zip(keep).filter(|(_, k)| **k).map(|(b, _)| b).sum() };
    // The most layers that could fit: the smallest ones first.
    let mut sorted = layers.to_vec();
    sorted.sort_unstable();
    let mut room = free;
    let most = sorted.iter().take_while(|b| room.checked_sub(**b).map(|r| room = r).is_some()).count();
    (0..=most).rev().map(pattern).find(|keep| bytes(keep) <= free).unwrap_or_else(|| vec![false; n])
}

/// Activation bytes of a `prefill_chunk`-token chunk: a measurement is for the asked
/// chunk; a lowered chunk scales it down, never below the estimate.
fn chunk_workspace_bytes(spec: &ModelSpec, request: &PlanRequest, prefill_chunk: usize) -> u64 {
    let estimate = workspace_bytes(spec, prefill_chunk);
    let asked = request.prefill_chunk.max(1) as u64;
    match request.measured_workspace_bytes {
        Some(measured) if prefill_chunk as u64 == asked => measured,
        Some(measured) => estimate.max(measured * prefill_chunk as u64 / asked),
        None => estimate,
    }
}

/// The prefill chunks a plan may use: the asked one, then (except in resident mode,
/// where the chunk does not decide placement) halvings down to 16 tokens.
fn chunk_candidates(request: &PlanRequest) -> impl Iterator<Item = usize> {
    let lower = request.mode != Mode::Resident;
    halvings(request.prefill_chunk).take(if lower { usize::MAX } else { 1 })
}

/// `asked` (at least 1), then its halvings down to 16 tokens.
fn halvings(asked: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(asked.max(1)), |&c| (c > 16).then_some(c / 2))
}

fn no_chunk_tried() -> PlanError {
    PlanError::InvalidParameter { name: "prefill_chunk", reason: "no chunk size could be tried".into() }
}

/// The cheapest change that makes a plan needing `needed` bytes fit `budget`: the longest
/// context whose KV cache fits, else a quantization that shrinks the largest block.
fn cheapest_change(
    spec: &ModelSpec,
    budget: u64,
    needed: u64,
    (kv_bytes, kv_type): (u64, KvType),
    slot: u64,
) -> String {
    let per_token = spec.kv_bytes_per_token(kv_type).max(1);
    let without_kv = needed - kv_bytes;
    if budget > without_kv && (budget - without_kv) / per_token >= 16 {
        let context = (budget - without_kv) / per_token;
        return format!(
            "--context {context} (a KV cache of {} instead of {} for {} tokens){}, or a smaller quant",
            ByteSize(context * per_token),
            ByteSize(kv_bytes),
            spec.context_length,
            if kv_type == KvType::F32 { ", --kv-type f16 (half the KV cache)" } else { "" }
        );
    }
    let short = needed - budget;
    format!(
        "a smaller quant: even at a 16-token context the plan is {} over, and the largest block alone takes {}",
        ByteSize(short.saturating_sub(kv_bytes.saturating_sub(16 * per_token))),
        ByteSize(slot)
    )
}
