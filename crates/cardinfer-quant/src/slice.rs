//! Slicing a checkpoint into a streaming-ordered GGUF: tensors grouped block by block
//! (embedding, layer 0, layer 1, …, output), so each transformer block is one contiguous
//! byte range that a streaming reader fetches in one go. Optionally quantized.

use crate::candle::quantize;
use crate::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::hf_to_gguf::{
    gguf_expert_tensor, gguf_tensor_name, permute_qk_rows, qk_permutation_heads, rope_freq_divisors,
    write_model_metadata,
};
use crate::quant_math::{dequantize, quantize_parallel};
use crate::scheme::{QuantScheme, SchemeContext, TensorRole};
use crate::tokenizer_meta::tokenizer_metadata;
use crate::{Checkpoint, HfCheckpoint, QuantError};
use cardinfer_core::{BlockId, ModelSpec, StorageType, TensorInfo};
use std::collections::BTreeMap;
use std::path::Path;

/// What [`slice()`] does.
#[derive(Debug, Clone)]
pub struct SliceOptions {
    /// The quantization scheme; `None` keeps every tensor's stored type and bytes (a
    /// pure re-pack of a GGUF; F32/F16/BF16 as stored for a Hugging Face checkpoint).
    pub scheme: Option<QuantScheme>,
    /// Threads that quantize each tensor's rows.
    pub threads: usize,
    /// Embed the tokenizer of a Hugging Face checkpoint (`tokenizer.json`) when present.
    pub tokenizer: bool,
}

impl Default for SliceOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Self { scheme: None, threads, tokenizer: true }
    }
}

/// Progress of a running [`slice()`], reported after each tensor.
#[derive(Debug, Clone, Copy)]
pub struct SliceProgress<'a> {
    /// The tensor just written.
    pub tensor: &'a str,
    /// Tensors written so far.
    pub done: usize,
    /// Tensors in all.
    pub total: usize,
    /// Output bytes written so far.
    pub done_bytes: u64,
    /// Output bytes in all.
    pub total_bytes: u64,
}

/// What [`slice()`] wrote.
#[derive(Debug, Clone)]
pub struct SliceReport {
    /// Number of tensors.
    pub tensors: usize,
    /// Stored tensor bytes of the input.
    pub input_bytes: u64,
    /// Stored tensor bytes of the output.
    pub output_bytes: u64,
    /// Tensor count and bytes per storage type in the output.
    pub by_type: BTreeMap<&'static str, (usize, u64)>,
    /// Tokenizer embedded (`false` when the input had none or it was not asked for).
    pub tokenizer: bool,
}

/// Where one output tensor's values come from.
enum Source<'a> {
    /// Stored bytes of the input, with an optional q/k row permutation (HF → GGUF).
    Input { info: &'a TensorInfo, permute_heads: Option<usize> },
    /// Values computed here (`rope_freqs.weight`).
    Computed(Vec<f32>),
    /// A Gemma norm's `w`, written as the `1 + w` llama.cpp's files hold (HF → GGUF).
    PlusOne(&'a TensorInfo),
    /// One projection of every routed expert of a layer, each a tensor of the input,
    /// stacked in expert order into llama.cpp's 3-D `ffn_*_exps` tensor (HF → GGUF).
    Experts(Vec<&'a TensorInfo>),
}

struct Planned<'a> {
    name: String,
    shape: Vec<usize>,
    storage: StorageType,
    source: Source<'a>,
}

/// Writes `input` to `output` as a block-ordered GGUF (temporary name, renamed at the
/// end; nothing is left at `output` on error), reporting each tensor to `progress`.
pub fn slice(
    input: &Checkpoint,
    output: &Path,
    options: &SliceOptions,
    progress: &mut dyn FnMut(SliceProgress<'_>),
) -> Result<SliceReport, QuantError> {
    let spec = input.spec()?;
    let mut writer = GgufWriter::new();
    let (mut planned, tokenizer) = match input {
        Checkpoint::Gguf(gguf) => (plan_gguf(gguf, &spec, options, &mut writer)?, has_tokenizer(gguf)),
        Checkpoint::Hf(hf) => plan_hf(hf, &spec, options, &mut writer)?,
    };
    planned.sort_by_key(|p| order_key(&p.name));
    if let Some(scheme) = options.scheme {
        writer.metadata("general.file_type", GgufValue::U32(scheme.file_type()));
        writer.metadata("general.quantization_version", GgufValue::U32(2));
    }
    for p in &planned {
        writer.declare(p.name.clone(), &p.shape, p.storage)?;
    }
    let total_bytes = writer.tensor_bytes();
    let input_bytes = planned
        .iter()
        .map(|p| match &p.source {
            Source::Input { info, .. } | Source::PlusOne(info) => info.len,
            Source::Computed(v) => 4 * v.len() as u64,
            Source::Experts(infos) => infos.iter().map(|t| t.len).sum(),
        })
        .sum();
    let mut done_bytes = 0;
    writer.write_with(output, |index| {
        let p = &planned[index];
        let bytes = produce(input, p, options.threads)?;
        done_bytes += bytes.len() as u64;
        progress(SliceProgress { tensor: &p.name, done: index + 1, total: planned.len(), done_bytes, total_bytes });
        Ok(bytes)
    })?;
    let mut by_type: BTreeMap<&'static str, (usize, u64)> = BTreeMap::new();
    for p in &planned {
        let entry = by_type.entry(p.storage.name()).or_default();
        entry.0 += 1;
        entry.1 += p.storage.tensor_bytes(&p.name, *p.shape.last().unwrap_or(&1), rows(&p.shape)).unwrap_or(0);
    }
    Ok(SliceReport { tensors: planned.len(), input_bytes, output_bytes: total_bytes, by_type, tokenizer })
}

fn has_tokenizer(gguf: &GgufFile) -> bool {
    gguf.metadata().contains_key("tokenizer.ggml.model")
}

fn rows(shape: &[usize]) -> usize {
    shape.iter().rev().skip(1).product()
}

fn scheme_context(spec: &ModelSpec) -> SchemeContext {
    SchemeContext { num_layers: spec.num_layers, gqa: spec.num_heads / spec.num_kv_heads.max(1) }
}

fn target_storage(
    options: &SliceOptions,
    spec: &ModelSpec,
    name: &str,
    shape: &[usize],
    stored: StorageType,
) -> StorageType {
    match options.scheme {
        None => stored,
        Some(scheme) => {
            let tied = spec.tie_word_embeddings;
            scheme.storage_for(TensorRole::of(name, shape, tied), *shape.last().unwrap_or(&1), scheme_context(spec))
        }
    }
}

fn plan_gguf<'a>(
    gguf: &'a GgufFile,
    spec: &ModelSpec,
    options: &SliceOptions,
    writer: &mut GgufWriter<'_>,
) -> Result<Vec<Planned<'a>>, QuantError> {
    for (key, value) in gguf.metadata() {
        writer.metadata(key.clone(), value.clone());
    }
    let has_output = gguf.tensor("output.weight").is_some();
    let spec = ModelSpec { tie_word_embeddings: !has_output, ..spec.clone() };
    Ok(gguf
        .tensors()
        .iter()
        .map(|info| Planned {
            name: info.name.clone(),
            shape: info.shape.clone(),
            storage: if info.name == "rope_freqs.weight" {
                info.storage
            } else {
                target_storage(options, &spec, &info.name, &info.shape, info.storage)
            },
            source: Source::Input { info, permute_heads: None },
        })
        .collect())
}

fn plan_hf<'a>(
    hf: &'a HfCheckpoint,
    spec: &ModelSpec,
    options: &SliceOptions,
    writer: &mut GgufWriter<'_>,
) -> Result<(Vec<Planned<'a>>, bool), QuantError> {
    let name = hf.dir().file_name().and_then(|n| n.to_str()).unwrap_or("model");
    write_model_metadata(writer, spec, name);
    let mut tokenizer = false;
    if options.tokenizer {
        if let Some(path) = hf.tokenizer_path() {
            let config = hf.dir().join("tokenizer_config.json");
            let config = config.is_file().then_some(config);
            for (key, value) in tokenizer_metadata(&path, config.as_deref(), spec.vocab_size)? {
                writer.metadata(key, value);
            }
            if let Some(template) = hf.chat_template() {
                writer.metadata("tokenizer.chat_template", GgufValue::String(template));
            }
            tokenizer = true;
        }
    }
    let mut planned = Vec::new();
    let mut experts: BTreeMap<String, Vec<(usize, &TensorInfo)>> = BTreeMap::new();
    for info in hf.tensors() {
        if info.name.ends_with("rotary_emb.inv_freq") || (spec.tie_word_embeddings && info.name == "lm_head.weight") {
            continue;
        }
        if let Some((_, merged, expert)) = gguf_expert_tensor(&info.name) {
            experts.entry(merged).or_default().push((expert, info));
            continue;
        }
        let gguf_name = gguf_tensor_name(&info.name, spec.family).ok_or_else(|| QuantError::Tensor {
            path: hf.dir().to_path_buf(),
            tensor: info.name.clone(),
            reason: format!("not a tensor of a {:?} model this slicer knows", spec.family),
        })?;
        let storage = target_storage(options, spec, &gguf_name, &info.shape, info.storage);
        let permute_heads = qk_permutation_heads(spec, &info.name);
        let plus_one = spec.norms_plus_one() && gguf_name.ends_with("norm.weight");
        let source = match plus_one {
            true => Source::PlusOne(info),
            false => Source::Input { info, permute_heads },
        };
        planned.push(Planned { name: gguf_name, shape: info.shape.clone(), storage, source });
    }
    for (name, mut parts) in experts {
        parts.sort_by_key(|(expert, _)| *expert);
        let shape = stacked_expert_shape(hf.dir(), spec, &name, &parts)?;
        let storage = target_storage(options, spec, &name, &shape, parts[0].1.storage);
        let infos = parts.into_iter().map(|(_, info)| info).collect();
        planned.push(Planned { name, shape, storage, source: Source::Experts(infos) });
    }
    if let Some(divisors) = rope_freq_divisors(spec) {
        let shape = vec![divisors.len()];
        planned.push(Planned {
            name: "rope_freqs.weight".into(),
            shape,
            storage: StorageType::F32,
            source: Source::Computed(divisors),
        });
    }
    Ok((planned, tokenizer))
}

/// The shape `[experts, rows, cols]` of the stacked tensor `name` made of `parts` (sorted
/// by expert): exactly the spec's experts, `0..n` each once, all of one shape and type.
fn stacked_expert_shape(
    dir: &Path,
    spec: &ModelSpec,
    name: &str,
    parts: &[(usize, &TensorInfo)],
) -> Result<Vec<usize>, QuantError> {
    let bad = |reason: String| QuantError::Tensor { path: dir.to_path_buf(), tensor: name.to_string(), reason };
    let Some(moe) = &spec.moe else {
        return Err(bad(format!("expert tensors in a {:?} model, whose configuration has no experts", spec.family)));
    };
    if let Some(missing) = (0..moe.experts).find(|e| parts.get(*e).map(|(i, _)| *i) != Some(*e)) {
        return Err(bad(format!(
            "expert {missing} of {} is missing (or repeated) among the checkpoint's {} expert tensors",
            moe.experts,
            parts.len()
        )));
    }
    if parts.len() != moe.experts {
        return Err(bad(format!("{} expert tensors, but the configuration has {} experts", parts.len(), moe.experts)));
    }
    let first = parts[0].1;
    if let Some((_, odd)) = parts.iter().find(|(_, t)| t.shape != first.shape || t.storage != first.storage) {
        return Err(bad(format!(
            "`{}` is {:?} {:?}, unlike `{}` ({:?} {:?})",
            odd.name, odd.storage, odd.shape, first.name, first.storage, first.shape
        )));
    }
    if first.shape.len() != 2 {
        return Err(bad(format!("`{}` has shape {:?}; an expert's projection is a matrix", first.name, first.shape)));
    }
    Ok(vec![moe.experts, first.shape[0], first.shape[1]])
}

fn produce(input: &Checkpoint, p: &Planned<'_>, threads: usize) -> Result<Vec<u8>, QuantError> {
    let values = match &p.source {
        Source::Experts(infos) if infos.iter().all(|t| t.storage == p.storage) => {
            return Ok(infos.iter().flat_map(|t| input.tensor_bytes(t).iter().copied()).collect());
        }
        Source::Experts(infos) => {
            let mut values = Vec::new();
            for t in infos {
                values.extend(dequantize(&t.name, input.tensor_bytes(t), &t.shape, t.storage)?);
            }
            let cols = *p.shape.last().unwrap_or(&1);
            return quantize_parallel(&p.name, &values, &[values.len() / cols.max(1), cols], p.storage, threads);
        }
        Source::Computed(values) => return quantize(&p.name, values, &p.shape, p.storage),
        Source::PlusOne(info) => {
            let values = dequantize(&info.name, input.tensor_bytes(info), &info.shape, info.storage)?;
            values.into_iter().map(|v| 1.0 + v).collect()
        }
        Source::Input { info, permute_heads: None } if info.storage == p.storage => {
            return Ok(input.tensor_bytes(info).to_vec());
        }
        Source::Input { info, permute_heads } => {
            let values = dequantize(&info.name, input.tensor_bytes(info), &info.shape, info.storage)?;
            match permute_heads {
                Some(heads) => permute_qk_rows(&values, info.shape[0], values.len() / info.shape[0], *heads),
                None => values,
            }
        }
    };
    quantize_parallel(&p.name, &values, &p.shape, p.storage, threads)
}

/// Sort key putting tensors in streaming order: the embedding (and RoPE factors) first,
/// then each layer's tensors together, then the final norm and output head.
fn order_key(name: &str) -> (u8, usize, String) {
    if let Some(layer) = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok()) {
        return (1, layer, name.to_string());
    }
    match name {
        "output_norm.weight" => (2, 0, name.to_string()),
        "output.weight" => (2, 1, name.to_string()),
        _ => (0, 0, name.to_string()),
    }
}

/// The byte range `[start, end)` each block occupies in a GGUF file, or an error naming
/// the first block whose tensors are interleaved with another block's.
pub fn block_ranges(gguf: &GgufFile) -> Result<Vec<(BlockId, u64, u64)>, QuantError> {
    let mut tensors: Vec<&TensorInfo> = gguf.tensors().iter().collect();
    tensors.sort_by_key(|t| t.offset);
    let mut ranges: Vec<(BlockId, u64, u64)> = Vec::new();
    for t in tensors {
        let block = block_of(&t.name);
        match ranges.last_mut() {
            Some((last, _, end)) if *last == block => *end = t.end(),
            _ => {
                if ranges.iter().any(|(b, _, _)| *b == block) {
                    return Err(QuantError::Tensor {
                        path: gguf.path().to_path_buf(),
                        tensor: t.name.clone(),
                        reason: format!("block {block} is not one contiguous byte range"),
                    });
                }
                ranges.push((block, t.offset, t.end()));
            }
        }
    }
    Ok(ranges)
}

fn block_of(name: &str) -> BlockId {
    match order_key(name) {
        (1, layer, _) => BlockId::Layer(layer),
        (2, _, _) => BlockId::Head,
        _ => BlockId::Embed,
    }
}
