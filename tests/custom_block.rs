//! A block type defined outside the library (the `custom_block` example's), streamed
//! through the pool by `LoadedModel::load_with_block`, equals the built-in resident model
//! bit for bit for every family (both on Candle's quantized matmul); a block asking for a tensor the layer lacks is a clear
//! error naming it.

mod common;

#[path = "../examples/custom_block/block.rs"]
mod block;

use candle_core::{Device, Tensor};
use cardinfer_core::{Family, StorageType};
use cardinfer_plan::Budget;
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_stream::executor::Mode;
use cardinfer_stream::load::LoadOptions;
use cardinfer_stream::model::block_adapter::{BlockVars, StreamableBlock};
use cardinfer_stream::{CpuKernels, GenerateOptions, KvSlot, LoadedModel, Logits, Session, TextModel};
use std::path::PathBuf;

const PROMPT: [u32; 9] = [5, 17, 250, 3, 99, 42, 7, 128, 31];

/// A tiny synthetic model of `family` in `storage`, in a directory removed when the
/// returned guard is dropped.
fn model_file(test: &str, family: Family, storage: StorageType) -> (tempfile::TempDir, PathBuf) {
    let prefix = format!("cardinfer-custom-{test}-{family:?}-{storage:?}-");
    let dir = tempfile::Builder::new().prefix(&prefix).tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let spec = common::tiny_spec(family, family == Family::Qwen3, 3, 256);
    SyntheticModel::random(&spec, 5).write_gguf(&path, storage, StorageType::Q8_0).unwrap();
    (dir, path)
}

/// The example block attends with Candle's matrix products, the built-in decoder with its
/// row kernel (`cpu::attention`): on f32 caches the two give the same bits on these tiny
/// models; on f16 caches they do not always (Mistral in f16: rows 6–7 of the prompt 4e-3
/// apart, measured), so the comparison keeps f32 caches.
const KV: cardinfer_core::KvType = cardinfer_core::KvType::F32;

fn streamed_options(budget: u64, slots: usize, chunk: usize) -> LoadOptions {
    LoadOptions {
        budget: Budget::Bytes(cardinfer_core::ByteSize(budget)),
        mode: Mode::Stream,
        slots: Some(slots),
        prefill_chunk: chunk,
        cpu_kernels: CpuKernels::CandleMatmul,
        kv_type: KV,
        ..Default::default()
    }
}

fn logits_and_ids(model: &dyn TextModel, chunk: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
    let mut kv = model.new_cache();
    let mut rows = Vec::new();
    for piece in PROMPT.chunks(chunk) {
        rows.extend(model.forward(piece, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
    }
    let options = GenerateOptions { max_tokens: 10, ..Default::default() };
    (rows, Session::new(model, None).generate(&PROMPT, &options, |_| {}).unwrap().generated_ids)
}

#[test]
fn a_streamed_custom_block_equals_the_builtin_resident_model() {
    // The custom block multiplies with Candle's quantized matmul; so does the built-in
    // decoder here (its own CPU products round differently).
    let resident = LoadOptions {
        budget: Budget::Bytes(cardinfer_core::ByteSize(u64::MAX)),
        mode: Mode::Resident,
        context: Some(usize::MAX),
        cpu_kernels: CpuKernels::CandleMatmul,
        kv_type: KV,
        ..Default::default()
    };
    for (family, storage) in [
        (Family::Llama, StorageType::Q4_K),
        (Family::Qwen2, StorageType::Q8_0),
        (Family::Qwen3, StorageType::Q6_K),
        (Family::Mistral, StorageType::F16),
    ] {
        let (_dir, path) = model_file("equal", family, storage);
        let builtin = LoadedModel::load_with(&path, &Device::Cpu, &resident, |_, _| {}).unwrap();
        let (ref_logits, ref_ids) = logits_and_ids(&builtin.model, PROMPT.len());
        for (slots, chunk) in [(1, 4), (2, 9)] {
            let options = streamed_options(u64::MAX / 2, slots, chunk);
            let custom =
                LoadedModel::load_with_block::<block::LlamaStyleBlock>(&path, &Device::Cpu, &options, |_, _| {})
                    .unwrap();
            assert_eq!(custom.model.metrics().mode, "stream");
            assert!(custom.model.metrics().bytes_streamed_per_token > 0, "{family:?}: blocks streamed");
            let (logits, ids) = logits_and_ids(&custom.model, chunk);
            assert!(logits == ref_logits, "{family:?} {storage:?} S={slots} chunk={chunk}: logits differ");
            assert_eq!(ids, ref_ids, "{family:?} {storage:?} S={slots}");
        }
    }
}

/// A block that asks for a tensor no layer has.
struct NeedsMissingTensor;

impl StreamableBlock for NeedsMissingTensor {
    fn load(vars: &BlockVars<'_>) -> cardinfer_stream::Result<Self> {
        vars.linear("attn_qkv.weight")?;
        Ok(Self)
    }

    fn forward(&self, x: &Tensor, _kv: &mut KvSlot, _pos: usize) -> cardinfer_stream::Result<Tensor> {
        Ok(x.clone())
    }
}

#[test]
fn a_block_asking_for_a_missing_tensor_is_an_error_naming_it() {
    let (_dir, path) = model_file("missing", Family::Llama, StorageType::Q4_K);
    let model = LoadedModel::load_with_block::<NeedsMissingTensor>(
        &path,
        &Device::Cpu,
        &streamed_options(u64::MAX / 2, 2, 16),
        |_, _| {},
    )
    .unwrap();
    let mut kv = model.model.new_cache();
    let err = model.model.forward(&PROMPT, &mut kv, Logits::Last).unwrap_err().to_string();
    assert!(err.contains("layer 0 has no tensor `attn_qkv.weight`"), "{err}");
    assert!(err.contains("attn_q.weight"), "the error lists what the layer has: {err}");
}
