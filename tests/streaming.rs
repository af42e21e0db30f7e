//! The streaming executor on the CPU: streamed output equals resident output bit for
//! bit, for every family, budgets from the smallest feasible to full residency, 1–3
//! slots, chunked prefill and a long generation; the pool never exceeds its budget;
//! slow or failing readers neither change the result nor hang.

mod common;

use candle_core::Device;
use cardinfer_core::{BlockId, Family, ModelSpec, StorageType};
use cardinfer_plan::{Budget, PlanError};
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::executor::{
    plan_on_device, BlockReader, CheckpointReader, Mode, Placement, PlanRequest, StagedReader, StreamPlan,
    StreamedModel, Uploader,
};
use cardinfer_stream::load::{HostTier, LoadOptions, Runner};
use cardinfer_stream::model::family::Decoder;
use cardinfer_stream::model::names::model_layout;
use cardinfer_stream::model::weights::BlockWeights;
use cardinfer_stream::{GenerateOptions, LoadedModel, Logits, ResidentModel, Session, StreamError, TextModel};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ALL_FAMILIES: [Family; 6] =
    [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3, Family::Qwen3Moe, Family::Mixtral];

fn spec(family: Family) -> ModelSpec {
    common::tiny_spec(family, matches!(family, Family::Qwen3 | Family::Qwen3Moe), 4, 320)
}

/// The test model of `family`, in a directory removed when the returned guard is dropped.
fn model_file(family: Family) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(&format!("cardinfer-stream-{family:?}-")).tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    SyntheticModel::random(&spec(family), 11).write_gguf(&path, StorageType::Q4_K, StorageType::Q8_0).unwrap();
    (dir, path)
}

const PROMPT: [u32; 13] = [5, 17, 250, 3, 99, 42, 7, 7, 128, 64, 1, 200, 31];

/// Logits of the prompt fed in `chunk`-sized pieces, then `n` greedy tokens.
fn run(model: &dyn TextModel, chunk: usize, n: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut kv = model.new_cache();
    let mut rows = Vec::new();
    for piece in PROMPT.chunks(chunk) {
        rows.extend(model.forward(piece, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
    }
    let options = GenerateOptions { max_tokens: n, ..Default::default() };
    let generated = Session::new(model, None).generate(&PROMPT, &options, |_| {}).unwrap().generated_ids;
    (rows, generated)
}

fn streamed(path: &Path, budget: u64, mode: Mode, slots: usize, chunk: usize) -> LoadedModel {
    streamed_from(path, budget, mode, slots, chunk, HostTier::Auto)
}

fn streamed_from(path: &Path, budget: u64, mode: Mode, slots: usize, chunk: usize, tier: HostTier) -> LoadedModel {
    let options = LoadOptions {
        budget: Budget::Bytes(cardinfer_core::ByteSize(budget)),
        mode,
        slots: Some(slots),
        prefill_chunk: chunk,
        context: None,
        hybrid: false,
        host_layers: None,
        tune_host_layers: true,
        host_tier: tier,
        ..Default::default()
    };
    LoadedModel::load_with(path, &Device::Cpu, &options, |_, _| {}).unwrap()
}

fn request(budget_bytes: u64, mode: Mode, slots: usize) -> PlanRequest {
    PlanRequest {
        budget_bytes,
        mode,
        slots: Some(slots),
        prefill_chunk: 4,
        runtime_bytes: 0,
        measured_workspace_bytes: None,
        overlapped_copies: true,
        kv_type: Default::default(),
    }
}

fn plan_of(path: &Path, budget: u64, mode: Mode, slots: usize) -> Result<StreamPlan, StreamError> {
    let ckpt = Checkpoint::open(path).unwrap();
    let spec = ckpt.spec().unwrap();
    let layout = model_layout(&ckpt, &spec).unwrap();
    plan_on_device(&spec, &layout, &Device::Cpu, &request(budget, mode, slots))
}

#[test]
fn streamed_equals_resident_bit_for_bit_for_every_family_and_budget() {
    for family in ALL_FAMILIES {
        let (_dir, path) = model_file(family);
        let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
        let chunk = 4;
        let (ref_logits, ref_ids) = run(&resident, chunk, 24);
        // The smallest feasible budget: one slot, everything streamed.
        let infeasible = match plan_of(&path, 1, Mode::Stream, 1) {
            Err(StreamError::Plan(PlanError::InfeasibleBudget { needed, .. })) => needed.bytes(),
            other => panic!("{family:?}: expected an infeasible budget, got {other:?}"),
        };
        let all_resident = plan_of(&path, u64::MAX / 2, Mode::Resident, 1).unwrap().device_bytes();
        let cases = [
            (infeasible, Mode::Stream, 1),
            (infeasible + 2 * (all_resident - infeasible) / 10, Mode::Stream, 2),
            (all_resident, Mode::Stream, 3),
            ((infeasible + all_resident) / 2, Mode::Auto, 2),
            (all_resident, Mode::Auto, 2),
        ];
        for (budget, mode, slots) in cases {
            let loaded = streamed(&path, budget, mode, slots, chunk);
            let (logits, ids) = run(&loaded.model, chunk, 24);
            assert_eq!(ids, ref_ids, "{family:?} budget {budget} {mode:?} S={slots}");
            assert!(logits == ref_logits, "{family:?} budget {budget} {mode:?} S={slots}: logits differ");
            if let Runner::Streamed(m) = &loaded.model {
                let stats = m.pool_stats();
                assert!(stats.peak_in_use <= m.plan().slots, "{stats:?}");
                assert!(stats.peak_bytes <= m.plan().slots as u64 * m.plan().slot_bytes);
                assert!(m.plan().device_bytes() <= budget, "plan {} exceeds budget {budget}", m.plan());
                assert!(m.accounted_peak_bytes() <= budget);
            }
        }
    }
}

#[test]
fn auto_mode_splits_between_resident_and_streamed() {
    let (_dir, path) = model_file(Family::Llama);
    let min = match plan_of(&path, 1, Mode::Stream, 2) {
        Err(StreamError::Plan(PlanError::InfeasibleBudget { needed, .. })) => needed.bytes(),
        other => panic!("{other:?}"),
    };
    let full = plan_of(&path, u64::MAX / 2, Mode::Resident, 1).unwrap().device_bytes();
    let plan = plan_of(&path, (min + full) / 2, Mode::Auto, 2).unwrap();
    let count = |p| plan.blocks.iter().filter(|(_, q)| *q == p).count();
    assert!(count(Placement::Resident) > 0 && count(Placement::Streamed) > 0, "{plan}");
    assert_eq!(plan.placement(BlockId::Embed), Placement::Host);
    // Deterministic, and more budget never streams more.
    assert_eq!(plan, plan_of(&path, (min + full) / 2, Mode::Auto, 2).unwrap());
    let bigger = plan_of(&path, full, Mode::Auto, 2).unwrap();
    assert_eq!(bigger.slots, 0, "everything fits: nothing streams");
}

#[test]
fn long_generation_streamed_equals_resident() {
    let (_dir, path) = model_file(Family::Qwen3);
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let loaded = streamed(&path, u64::MAX / 2, Mode::Stream, 2, 512);
    let options = GenerateOptions { max_tokens: 280, ..Default::default() };
    let a = Session::new(&resident, None).generate(&PROMPT, &options, |_| {}).unwrap();
    let b = Session::new(&loaded.model, None).generate(&PROMPT, &options, |_| {}).unwrap();
    assert!(a.generated_ids.len() >= 256);
    assert_eq!(a.generated_ids, b.generated_ids);
}

#[test]
fn infeasible_budget_is_an_error_naming_the_minimum() {
    let (_dir, path) = model_file(Family::Qwen2);
    let options = LoadOptions {
        budget: Budget::Bytes(cardinfer_core::ByteSize(1 << 20)),
        mode: Mode::Auto,
        slots: None,
        prefill_chunk: 512,
        context: None,
        hybrid: false,
        host_layers: None,
        tune_host_layers: true,
        host_tier: HostTier::Auto,
        ..Default::default()
    };
    let err =
        LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).err().expect("1 MiB cannot hold a block");
    let text = err.to_string();
    assert!(text.contains("at least") && text.contains("KV cache") && text.contains("1.00 MiB"), "{text}");
    let options = LoadOptions { mode: Mode::Resident, ..options };
    assert!(LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).is_err());
}

/// A reader that does extra work per block (a slow link) and counts reads in flight.
/// `overlapping` makes it claim a copy stream, so the inline executor reads ahead.
struct SlowReader {
    inner: CheckpointReader,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    fail_at: Option<BlockId>,
    overlapping: bool,
}

impl BlockReader for SlowReader {
    fn overlaps_copies(&self) -> bool {
        self.overlapping
    }

    fn read(&self, block: BlockId, device: &Device) -> cardinfer_stream::Result<BlockWeights> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if Some(block) == self.fail_at {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(StreamError::InvalidParameter { name: "test", reason: format!("injected failure at {block}") });
        }
        // Slow: read the block several times over, keeping the last.
        let mut weights = self.inner.read(block, device)?;
        for _ in 0..3 {
            weights = self.inner.read(block, device)?;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(weights)
    }
}

fn slow_model(
    path: &Path,
    slots: usize,
    fail_at: Option<BlockId>,
    overlapping: bool,
) -> (StreamedModel, Arc<SlowReader>) {
    let ckpt = Checkpoint::open(path).unwrap();
    let spec = ckpt.spec().unwrap();
    let layout = model_layout(&ckpt, &spec).unwrap();
    let plan = plan_on_device(&spec, &layout, &Device::Cpu, &request(u64::MAX / 2, Mode::Stream, slots)).unwrap();
    let reader = Arc::new(SlowReader {
        inner: CheckpointReader::new(Arc::new(ckpt), spec.clone()),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        fail_at,
        overlapping,
    });
    let model =
        StreamedModel::new(Decoder::new(spec, None), layout, plan, &Device::Cpu, reader.clone(), |_, _| {}).unwrap();
    (model, reader)
}

#[test]
fn a_slow_reader_changes_nothing_and_stays_within_the_pool() {
    let (_dir, path) = model_file(Family::Mistral);
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let (ref_logits, ref_ids) = run(&resident, 4, 12);
    let cases =
        [(1, true, false), (2, true, false), (3, true, false), (2, false, false), (2, false, true), (3, false, true)];
    for (slots, thread, overlapping) in cases {
        let (mut model, reader) = slow_model(&path, slots, None, overlapping);
        model.set_prefetch_thread(thread);
        let (logits, ids) = run(&model, 4, 12);
        assert_eq!(ids, ref_ids);
        assert!(logits == ref_logits);
        assert!(reader.max_in_flight.load(Ordering::SeqCst) <= 1, "one prefetch thread reads one block at a time");
        let stats = model.pool_stats();
        assert!(stats.peak_in_use <= slots, "S={slots}: {stats:?}");
        assert_eq!(stats.in_use, 0, "every slot given back");
        if overlapping {
            // Inline reads ran ahead into every slot (what lets a copy stream overlap).
            assert_eq!(stats.peak_in_use, slots, "S={slots}: {stats:?}");
        } else if !thread {
            assert_eq!(stats.peak_in_use, 1, "inline reads without overlap read just before use");
        }
    }
}

#[test]
fn a_failing_reader_is_an_error_not_a_hang() {
    let (_dir, path) = model_file(Family::Llama);
    for (slots, thread, overlapping) in [(1, true, false), (2, true, false), (2, false, false), (3, false, true)] {
        let (mut model, _) = slow_model(&path, slots, Some(BlockId::Layer(2)), overlapping);
        model.set_prefetch_thread(thread);
        let mut kv = model.new_cache();
        let err = model.forward(&PROMPT, &mut kv, Logits::Last).unwrap_err().to_string();
        assert!(err.contains("injected failure at layer 2"), "{err}");
        assert_eq!(model.pool_stats().in_use, 0, "slots released after the failure");
    }
}

/// A tiny model of `family` with a 4000-token vocabulary, written under a directory
/// named by `name` (removed when the returned guard is dropped): its Q8_0 head (~1.1 MB)
/// is larger than a layer (~0.25 MB), so it streams in row chunks. Also the model loaded
/// resident.
fn big_head_model(name: &str, family: Family, seed: u64) -> (tempfile::TempDir, PathBuf, ResidentModel) {
    let dir = tempfile::Builder::new().prefix(&format!("cardinfer-stream-{name}-")).tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let spec = ModelSpec { vocab_size: 4000, ..common::tiny_spec(family, family == Family::Qwen3, 3, 128) };
    SyntheticModel::random(&spec, seed).write_gguf(&path, StorageType::Q4_K, StorageType::Q8_0).unwrap();
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    (dir, path, resident)
}

#[test]
fn a_head_larger_than_a_layer_streams_in_row_chunks_with_identical_logits() {
    let (_dir, path, resident) = big_head_model("bighead", Family::Qwen2, 5);
    let (ref_logits, ref_ids) = run(&resident, 5, 10);
    for (slots, tier) in [(1, HostTier::Auto), (2, HostTier::Auto), (2, HostTier::Disk)] {
        let loaded = streamed_from(&path, u64::MAX / 2, Mode::Stream, slots, 5, tier);
        let Runner::Streamed(m) = &loaded.model else { panic!("expected a streamed model") };
        assert!(m.plan().head_chunks.len() > 1, "head should be chunked: {}", m.plan());
        assert_eq!(m.plan().head_chunks.last().unwrap().end, 4000);
        let (logits, ids) = run(&loaded.model, 5, 10);
        assert_eq!(ids, ref_ids);
        assert!(logits == ref_logits, "S={slots}: chunked head logits differ");
        let stats = m.pool_stats();
        assert!(stats.peak_bytes <= m.plan().slots as u64 * m.plan().slot_bytes, "{stats:?} vs {}", m.plan());
    }
}

/// The head's last row chunks computed on the CPU in decode steps (a hybrid plan's
/// `head_host_chunks`), CPU devices standing in for both sides: only the other chunks
/// pass through the pool, and logits and generated ids equal the resident run's.
#[test]
fn head_chunks_on_the_cpu_change_nothing() {
    let (_dir, path, resident) = big_head_model("hosthead", Family::Qwen3, 7);
    let expected = run(&resident, 5, 10);
    let ckpt = Checkpoint::open(&path).unwrap();
    let spec = ckpt.spec().unwrap();
    let layout = model_layout(&ckpt, &spec).unwrap();
    let mut plan = plan_on_device(&spec, &layout, &Device::Cpu, &request(u64::MAX / 2, Mode::Stream, 2)).unwrap();
    let chunks = plan.head_chunks.len();
    assert!(chunks > 2, "the head should stream in chunks: {plan}");
    for on_cpu in [1, chunks - 1] {
        plan.head_host_chunks = on_cpu;
        let reader = Arc::new(CheckpointReader::new(Arc::new(Checkpoint::open(&path).unwrap()), spec.clone()));
        let model = StreamedModel::new(
            Decoder::new(spec.clone(), None),
            layout.clone(),
            plan.clone(),
            &Device::Cpu,
            reader,
            |_, _| {},
        )
        .unwrap();
        let (logits, ids) = run(&model, 5, 10);
        assert_eq!(ids, expected.1, "{on_cpu} of {chunks} chunks on the CPU");
        assert!(logits == expected.0, "{on_cpu} of {chunks} chunks on the CPU: logits differ");
        assert!(model.timings().host_secs > 0.0, "the CPU computed no head rows");
        // What the CPU reads per token is those rows (no host layers here): a share of the
        // head's bytes, more with more chunks on the CPU.
        let (host, head) = (model.host_bytes_per_pass(), plan.bytes_of(BlockId::Head));
        assert!(host > 0 && host < head, "{host} of the head's {head} bytes on the CPU");
        assert!(host * chunks as u64 >= head * on_cpu as u64 * 9 / 10, "{host} bytes for {on_cpu} of {chunks} chunks");
        let stats = model.pool_stats();
        assert!(stats.peak_in_use <= 2, "{stats:?}");
        // Decode steps stream only the other chunks: fewer slot loads than a pass of all.
        let passes = model.timings().passes;
        assert!(stats.blocks_streamed < passes * (3 + chunks as u64), "{stats:?} over {passes} passes");
    }
}

/// Hybrid decode with CPU devices standing in for both sides: a share of the streamed
/// layers (two, as asked) is placed on the host, computed there for decode steps and streamed for
/// prefill chunks; logits and generated ids equal the resident run, and the pool stays
/// within its slots.
#[test]
fn hybrid_decode_equals_resident_for_every_family() {
    for family in ALL_FAMILIES {
        let (_dir, path) = model_file(family);
        let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
        let expected = run(&resident, 5, 24);
        let options = LoadOptions {
            budget: Budget::Bytes(cardinfer_core::ByteSize(u64::MAX / 2)),
            mode: Mode::Stream,
            slots: Some(2),
            prefill_chunk: 5,
            context: None,
            hybrid: true,
            host_layers: Some(2),
            tune_host_layers: true,
            host_tier: HostTier::Auto,
            ..Default::default()
        };
        let mut loaded = LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).unwrap();
        // Inline reads (as on CUDA) on odd families, the prefetch thread on even ones:
        // inline, host layers queue the next uploads before computing.
        if let Runner::Streamed(model) = &mut loaded.model {
            model.set_prefetch_thread(matches!(family, Family::Llama | Family::Qwen2));
        }
        let Runner::Streamed(model) = &loaded.model else { panic!("{family:?}: expected a streamed runner") };
        let host_layers =
            model.plan().blocks.iter().filter(|(b, p)| *p == Placement::Host && *b != BlockId::Embed).count();
        let streamed_layers = model.plan().blocks.iter().filter(|(_, p)| *p == Placement::Streamed).count();
        assert!(host_layers > 0 && streamed_layers > 0, "{family:?}: {host_layers} host, {streamed_layers} streamed");
        // Prompt pieces of 1 token (host compute) and 5 tokens (host layers streamed).
        let mut kv = loaded.model.new_cache();
        let mut rows = Vec::new();
        for piece in PROMPT.chunks(5) {
            for token in piece.chunks(if rows.len() % 2 == 0 { 1 } else { 5 }) {
                rows.extend(loaded.model.forward(token, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
            }
        }
        let mut kv = resident.new_cache();
        let mut expected_rows = Vec::new();
        for piece in PROMPT.chunks(5) {
            for token in piece.chunks(if expected_rows.len() % 2 == 0 { 1 } else { 5 }) {
                expected_rows.extend(resident.forward(token, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
            }
        }
        assert_eq!(rows, expected_rows, "{family:?}: logits differ");
        let (_, generated) = run(&loaded.model, 5, 24);
        assert_eq!(generated, expected.1, "{family:?}: generated ids differ");
        let stats = model.pool_stats();
        assert!(stats.peak_in_use <= 2, "{family:?}: {stats:?}");
        assert!(model.timings().host_secs > 0.0, "{family:?}: no layer ran on the host");
    }
}

/// A budget that holds one layer's KV cache but not the whole cache: the plan keeps the
/// cache in host memory, each layer's part visiting the device, and output is unchanged.
#[test]
fn a_kv_cache_in_host_memory_changes_nothing() {
    let (_dir, path) = model_file(Family::Qwen3);
    let full = plan_of(&path, u64::MAX / 2, Mode::Stream, 1).unwrap();
    let budget = full.slot_bytes + full.workspace_bytes + full.kv_bytes / 2;
    let plan = plan_of(&path, budget, Mode::Auto, 1).unwrap();
    assert!(plan.kv_on_host && plan.device_bytes() <= budget, "{plan}");
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let loaded = streamed(&path, budget, Mode::Auto, 1, 4);
    let Runner::Streamed(model) = &loaded.model else { panic!("expected a streamed runner") };
    assert!(model.plan().kv_on_host);
    assert_eq!(run(&loaded.model, 4, 16), run(&resident, 4, 16));
}

#[test]
fn the_disk_tier_equals_resident_for_every_family() {
    for family in ALL_FAMILIES {
        let (_dir, path) = model_file(family);
        let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
        let (ref_logits, ref_ids) = run(&resident, 4, 12);
        for (slots, chunk) in [(1, 4), (2, 13)] {
            let options = LoadOptions {
                budget: Budget::Bytes(cardinfer_core::ByteSize(u64::MAX / 2)),
                mode: Mode::Stream,
                slots: Some(slots),
                prefill_chunk: chunk,
                host_tier: HostTier::Disk,
                ..Default::default()
            };
            let loaded = LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).unwrap();
            assert_eq!(loaded.model.metrics().host_tier, "disk");
            let (logits, ids) = run(&loaded.model, chunk.min(4), 12);
            assert!(logits == ref_logits, "{family:?} S={slots}");
            assert_eq!(ids, ref_ids, "{family:?} S={slots}");
        }
    }
}

/// The disk tier's reader, failing once at one block (a pass that ends early).
struct FailOnce {
    inner: StagedReader,
    fail_at: BlockId,
    failed: std::sync::atomic::AtomicBool,
}

impl BlockReader for FailOnce {
    fn read(&self, block: BlockId, device: &Device) -> cardinfer_stream::Result<BlockWeights> {
        if block == self.fail_at && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(StreamError::InvalidParameter { name: "test", reason: "injected".into() });
        }
        self.inner.read(block, device)
    }

    fn read_head_rows(&self, rows: std::ops::Range<usize>, device: &Device) -> cardinfer_stream::Result<BlockWeights> {
        self.inner.read_head_rows(rows, device)
    }

    fn prepare(&self, pieces: &[(BlockId, Option<std::ops::Range<usize>>)]) {
        self.inner.prepare(pieces)
    }
}

#[test]
fn the_staging_ring_stays_bounded_and_recovers_from_a_pass_that_ended_early() {
    let (_dir, path) = model_file(Family::Qwen3);
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let (ref_logits, ref_ids) = run(&resident, 4, 12);
    for thread in [false, true] {
        let ckpt = Checkpoint::open(&path).unwrap();
        let spec = ckpt.spec().unwrap();
        let layout = model_layout(&ckpt, &spec).unwrap();
        let plan = plan_on_device(&spec, &layout, &Device::Cpu, &request(u64::MAX / 2, Mode::Stream, 2)).unwrap();
        let streamed: Vec<BlockId> =
            plan.blocks.iter().filter(|(_, p)| *p == Placement::Streamed).map(|(b, _)| *b).collect();
        let uploads = Uploader::new(&Device::Cpu, true);
        let staged = StagedReader::new(Arc::new(ckpt), spec.clone(), &layout, &streamed, &Device::Cpu, 3, uploads);
        let reader = Arc::new(FailOnce { inner: staged, fail_at: BlockId::Layer(2), failed: false.into() });
        let mut model =
            StreamedModel::new(Decoder::new(spec, None), layout, plan, &Device::Cpu, reader.clone(), |_, _| {})
                .unwrap();
        model.set_prefetch_thread(thread);
        let mut kv = model.new_cache();
        let err = model.forward(&PROMPT, &mut kv, Logits::Last).unwrap_err().to_string();
        assert!(err.contains("injected"), "{err}");
        // The next passes read through the same ring: pieces staged for the failed pass
        // are dropped, and the output is the resident model's.
        let (logits, ids) = run(&model, 4, 12);
        assert!(logits == ref_logits, "thread {thread}");
        assert_eq!(ids, ref_ids, "thread {thread}");
        assert!(reader.inner.peak_buffers_held() <= 3, "{}", reader.inner.peak_buffers_held());
        assert!(reader.inner.peak_buffers_held() >= 1);
    }
}

/// Hybrid decode at the smallest streaming budget, with the planner's own choice of host
/// layers and with every streamed layer forced onto the host: the device holds no more
/// than the budget by the executor's accounting (host layers cost no device memory), the
/// pool never holds more than its slots, and output equals the resident run.
#[test]
fn hybrid_at_the_smallest_budget_stays_within_it() {
    let (_dir, path) = model_file(Family::Qwen3);
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let (_, expected) = run(&resident, 4, 16);
    let budget = match plan_of(&path, 1, Mode::Stream, 2) {
        Err(StreamError::Plan(PlanError::InfeasibleBudget { needed, .. })) => needed.bytes(),
        other => panic!("expected an infeasible budget, got {other:?}"),
    };
    for host_layers in [None, Some(usize::MAX)] {
        let options = LoadOptions {
            budget: Budget::Bytes(cardinfer_core::ByteSize(budget)),
            mode: Mode::Stream,
            slots: Some(2),
            prefill_chunk: 4,
            context: None,
            hybrid: true,
            host_layers,
            tune_host_layers: true,
            host_tier: HostTier::Auto,
            ..Default::default()
        };
        let loaded = LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).unwrap();
        let (_, generated) = run(&loaded.model, 4, 16);
        assert_eq!(generated, expected, "{host_layers:?}: generated ids differ");
        let Runner::Streamed(model) = &loaded.model else { panic!("expected a streamed runner") };
        let plan = model.plan();
        let on_host = plan.blocks.iter().filter(|(b, p)| *p == Placement::Host && *b != BlockId::Embed).count();
        if host_layers.is_some() {
            let layers = plan.blocks.iter().filter(|(b, _)| matches!(b, BlockId::Layer(_))).count();
            assert_eq!(on_host, layers, "every layer streamed at this budget goes to the host: {plan}");
        }
        assert!(plan.device_bytes() <= budget, "{host_layers:?}: plan {plan} exceeds {budget}");
        assert!(model.accounted_peak_bytes() <= budget, "{host_layers:?}: accounted peak over {budget}");
        assert!(model.pool_stats().peak_in_use <= 2, "{:?}", model.pool_stats());
    }
}

/// The host-layer search (CPU devices standing in for both sides): the first decode
/// steps compute fewer of the planned host layers — the others stream through the pool,
/// their KV caches visiting the device — and the generated ids equal the resident run's
/// whichever counts were tried; the pool stays within its slots and the device within
/// the budget.
#[test]
fn host_layer_tuning_changes_where_layers_run_not_the_output() {
    let (_dir, path) = model_file(Family::Qwen3);
    let resident = ResidentModel::load(&Checkpoint::open(&path).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let steps = 40;
    let (_, expected) = run(&resident, 4, steps);
    let options = LoadOptions {
        budget: Budget::Bytes(cardinfer_core::ByteSize(u64::MAX / 2)),
        mode: Mode::Stream,
        slots: Some(2),
        prefill_chunk: 4,
        host_layers: Some(3),
        ..Default::default()
    };
    let mut loaded = LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).unwrap();
    let Runner::Streamed(model) = &mut loaded.model else { panic!("expected a streamed runner") };
    // A count the user gave is kept: nothing is searched.
    assert!(model.host_tuning().is_some_and(|r| r.settled && r.tried.is_empty() && r.in_use == 3));
    model.set_host_tuning(true);
    let (_, generated) = run(&loaded.model, 4, steps);
    assert_eq!(generated, expected, "generated ids differ while the split changed");
    let Runner::Streamed(model) = &loaded.model else { unreachable!() };
    let report = model.host_tuning().expect("a hybrid plan reports its search");
    assert!(report.tried.len() >= 2, "{steps} steps should measure at least two counts: {report}");
    assert_eq!(report.tried[0].0, 3, "{report}");
    assert!(report.in_use <= 3, "{report}");
    assert!(model.pool_stats().peak_in_use <= 2, "{:?}", model.pool_stats());
    let metrics = loaded.model.metrics();
    assert!(metrics.host_tuning.is_some_and(|line| line.starts_with("planned 3:")));
}
