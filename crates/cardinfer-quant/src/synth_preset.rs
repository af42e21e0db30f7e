//! Synthetic GGUF files of real architectures, for benchmarks: the shapes and quant mix
//! of a Q4_K_M file (Q4_K matrices, Q6_K for `attn_v`, `ffn_down` and the output head,
//! F32 norms) filled with random but valid blocks. Speed does not depend on weight
//! values, so such a file stands in for the real model in timing and memory runs; it
//! says nothing about output quality. llama.cpp loads these files too.

use crate::gguf::{GgufValue, GgufWriter};
use crate::hf_to_gguf::ArchMetadata;
use crate::QuantError;
use cardinfer_core::StorageType;
use std::path::Path;

pub use cardinfer_core::presets::ArchPreset;
use cardinfer_core::presets::PRESETS;

/// GGUF architectures this writer lays out (gpt-oss has tensors it does not write).
const WRITABLE: [&str; 4] = ["qwen3", "llama", "qwen3moe", "gemma3"];

/// The presets this writer can write, from `cardinfer_core::presets::PRESETS`.
pub fn presets() -> impl Iterator<Item = ArchPreset> {
    PRESETS.into_iter().filter(|p| WRITABLE.contains(&p.arch))
}

/// The writable preset whose key is `key` (case-insensitive).
pub fn preset(key: &str) -> Result<ArchPreset, QuantError> {
    presets().find(|p| p.key.eq_ignore_ascii_case(key)).ok_or_else(|| QuantError::UnknownPreset {
        name: key.to_string(),
        known: presets().map(|p| p.key).collect::<Vec<_>>().join(", "),
    })
}

/// One tensor of a synthetic file: name, shape (outermost first), storage.
pub type SynthTensor = (String, Vec<usize>, StorageType);

/// Writing a synthetic GGUF of an [`ArchPreset`].
pub trait SynthGguf {
    /// The tensors a GGUF of this preset holds, in streaming order.
    fn tensors(&self) -> Vec<SynthTensor>;
    /// Stored bytes of all tensors.
    fn file_bytes(&self) -> u64;
    /// Writes a GGUF of this preset to `path` (temporary name, renamed at the end) with
    /// random blocks from `seed`, a placeholder vocabulary and llama.cpp's metadata;
    /// reports `(bytes written, bytes in all)` after each tensor. Routers route uniformly.
    fn write_gguf(&self, path: &Path, seed: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<(), QuantError> {
        self.write_gguf_with(path, &SynthOptions { seed, hot_experts: 0 }, progress)
    }
    /// [`SynthGguf::write_gguf`] with every option.
    fn write_gguf_with(
        &self,
        path: &Path,
        options: &SynthOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), QuantError>;
}

/// How a synthetic file's random values are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynthOptions {
    /// Seed of the random values.
    pub seed: u64,
    /// Mixture-of-experts presets: experts per layer whose router rows are
    /// [`HOT_ROUTER_SCALE`] times larger, so that they are routed to far more often than
    /// the rest (a few hot experts, the case a cache of experts is made for); 0: every
    /// expert alike (tokens spread evenly, the worst case for a cache).
    pub hot_experts: usize,
}

/// How much larger a hot expert's router row is than the others.
pub const HOT_ROUTER_SCALE: f32 = 8.0;

/// Whether expert `expert` of layer `layer` is one of the `hot` hot experts: a different
/// set per layer (consecutive experts from a per-layer start).
pub fn is_hot_expert(layer: usize, expert: usize, experts: usize, hot: usize) -> bool {
    let start = (layer * 37) % experts.max(1);
    (expert + experts - start) % experts.max(1) < hot
}

impl SynthGguf for ArchPreset {
    fn tensors(&self) -> Vec<SynthTensor> {
        use StorageType::{F32, Q4_K, Q6_K};
        let (h, hd, ff) = (self.hidden, self.head_dim, self.ffn);
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        let mut t: Vec<SynthTensor> = vec![("token_embd.weight".into(), vec![self.vocab, h], Q4_K)];
        for i in 0..self.layers {
            let b = |s: &str| format!("blk.{i}.{s}");
            t.push((b("attn_norm.weight"), vec![h], F32));
            t.push((b("attn_q.weight"), vec![q, h], Q4_K));
            t.push((b("attn_k.weight"), vec![kv, h], Q4_K));
            t.push((b("attn_v.weight"), vec![kv, h], Q6_K));
            t.push((b("attn_output.weight"), vec![h, q], Q4_K));
            let gemma = self.arch == "gemma3";
            if self.arch.starts_with("qwen3") || gemma {
                t.push((b("attn_q_norm.weight"), vec![hd], F32));
                t.push((b("attn_k_norm.weight"), vec![hd], F32));
            }
            if gemma {
                t.push((b("post_attention_norm.weight"), vec![h], F32));
            }
            t.push((b("ffn_norm.weight"), vec![h], F32));
            match self.experts {
                None => {
                    t.push((b("ffn_gate.weight"), vec![ff, h], Q4_K));
                    t.push((b("ffn_up.weight"), vec![ff, h], Q4_K));
                    t.push((b("ffn_down.weight"), vec![h, ff], Q6_K));
                    if gemma {
                        t.push((b("post_ffw_norm.weight"), vec![h], F32));
                    }
                }
                Some((experts, _)) => {
                    t.push((b("ffn_gate_inp.weight"), vec![experts, h], F32));
                    t.push((b("ffn_gate_exps.weight"), vec![experts, ff, h], Q4_K));
                    t.push((b("ffn_up_exps.weight"), vec![experts, ff, h], Q4_K));
                    t.push((b("ffn_down_exps.weight"), vec![experts, h, ff], Q6_K));
                }
            }
        }
        t.push(("output_norm.weight".into(), vec![h], F32));
        if !self.tied {
            t.push(("output.weight".into(), vec![self.vocab, h], Q6_K));
        }
        t
    }

    fn file_bytes(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|(n, s, st)| {
                st.tensor_bytes(n, *s.last().unwrap_or(&1), s.iter().rev().skip(1).product()).unwrap_or(0)
            })
            .sum()
    }

    fn write_gguf_with(
        &self,
        path: &Path,
        options: &SynthOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), QuantError> {
        let arch = self.arch;
        let mut w = GgufWriter::new();
        let u32_of = |v: usize| GgufValue::U32(v as u32);
        ArchMetadata {
            arch,
            context_length: 40960,
            hidden: self.hidden,
            ffn: self.ffn,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            rms_eps: self.rms_eps,
            rope_theta: self.rope_theta,
        }
        .write(&mut w, &format!("synthetic-{}", self.key));
        w.metadata("general.file_type", GgufValue::U32(15));
        w.metadata("general.quantization_version", GgufValue::U32(2));
        if let Some(g) = self.spec(40960).gemma {
            // As llama.cpp's converter writes Gemma 3: the window and the global layers'
            // linear RoPE scaling (the layer pattern and the local base are its defaults).
            w.metadata(format!("{arch}.attention.sliding_window"), u32_of(g.sliding_window));
            w.metadata(format!("{arch}.rope.scaling.type"), GgufValue::String("linear".into()));
            w.metadata(format!("{arch}.rope.scaling.factor"), GgufValue::F32(g.global_rope_factor as f32));
        }
        if let Some((experts, used)) = self.experts {
            w.metadata(format!("{arch}.expert_count"), u32_of(experts));
            w.metadata(format!("{arch}.expert_used_count"), u32_of(used));
            w.metadata(format!("{arch}.expert_feed_forward_length"), u32_of(self.ffn));
        }
        let (tokens, types) = placeholder_vocab(self.vocab);
        w.metadata("tokenizer.ggml.model", GgufValue::String("llama".into()));
        w.metadata("tokenizer.ggml.tokens", GgufValue::Array(tokens));
        w.metadata("tokenizer.ggml.scores", GgufValue::Array(vec![GgufValue::F32(0.0); self.vocab]));
        w.metadata("tokenizer.ggml.token_type", GgufValue::Array(types));
        w.metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1));
        w.metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
        let tensors = self.tensors();
        for (name, shape, storage) in &tensors {
            w.declare(name.clone(), shape, *storage)?;
        }
        let total = w.tensor_bytes();
        let mut done = 0u64;
        let mut rng = SplitMix(options.seed);
        w.write_with(path, |index| {
            let (name, shape, storage) = &tensors[index];
            let mut bytes = random_tensor(&mut rng, name, shape, *storage)?;
            if options.hot_experts > 0 && name.ends_with("ffn_gate_inp.weight") {
                heat_router(&mut bytes, name, shape, options.hot_experts);
            }
            done += bytes.len() as u64;
            progress(done, total);
            Ok(bytes)
        })
    }
}

/// A SentencePiece vocabulary that can tokenize any text: `<unk>`, `<s>`, `</s>`, the
/// 256 byte tokens `<0x00>`…`<0xFF>`, then placeholders `t259`, `t260`, ….
fn placeholder_vocab(vocab: usize) -> (Vec<GgufValue>, Vec<GgufValue>) {
    const UNKNOWN: i32 = 2;
    const CONTROL: i32 = 3;
    const BYTE: i32 = 6;
    (0..vocab)
        .map(|i| {
            let (token, kind) = match i {
                0 => ("<unk>".to_string(), UNKNOWN),
                1 => ("<s>".to_string(), CONTROL),
                2 => ("</s>".to_string(), CONTROL),
                3..=258 => (format!("<0x{:02X}>", i - 3), BYTE),
                _ => (format!("t{i}"), 1),
            };
            (GgufValue::String(token), GgufValue::I32(kind))
        })
        .unzip()
}

/// Half-width of a synthetic router's uniform entries: with unit-RMS inputs of width
/// 2048, logits of standard deviation about 1.3, so routes spread over the experts.
const ROUTER_SCALE: f32 = 0.05;

/// Random valid bytes for a tensor: norms are 1.0; a router's entries uniform in
/// ±[`ROUTER_SCALE`]; quantized blocks are random with
/// their f16 super-scales set small (1e-4), as `synth_gguf.py` does, so activations stay finite.
fn random_tensor(rng: &mut SplitMix, name: &str, shape: &[usize], storage: StorageType) -> Result<Vec<u8>, QuantError> {
    let row_len = *shape.last().unwrap_or(&1);
    let rows = shape.iter().rev().skip(1).product();
    let len = storage.tensor_bytes(name, row_len, rows).map_err(|e| QuantError::Tensor {
        path: "<synth>".into(),
        tensor: name.to_string(),
        reason: e.to_string(),
    })?;
    if storage == StorageType::F32 && name.ends_with("ffn_gate_inp.weight") {
        // A router of random rows: tokens spread over the experts (all-equal rows would
        // tie every logit and route every token to the same experts).
        let unit = |r: u64| (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        return Ok((0..len / 4).flat_map(|_| (ROUTER_SCALE * unit(rng.next_u64())).to_le_bytes()).collect());
    }
    if storage == StorageType::F32 {
        return Ok(1.0f32.to_le_bytes().repeat(len as usize / 4));
    }
    let mut bytes = vec![0u8; len as usize];
    for chunk in bytes.chunks_mut(8) {
        let r = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let small = half::f16::from_f32(1e-4).to_le_bytes();
    let (block, scale_offsets): (usize, &[usize]) = match storage {
        StorageType::Q4_K => (144, &[0, 2]),
        StorageType::Q6_K => (210, &[208]),
        StorageType::Q8_0 => (34, &[0]),
        other => {
            return Err(QuantError::Tensor {
                path: "<synth>".into(),
                tensor: name.to_string(),
                reason: format!("synthetic blocks of {other:?} are not supported"),
            })
        }
    };
    for b in bytes.chunks_mut(block) {
        for &o in scale_offsets {
            b[o..o + 2].copy_from_slice(&small);
        }
    }
    Ok(bytes)
}

/// Scales the rows of the hot experts of router `name` (`blk.N.ffn_gate_inp.weight`, F32
/// `[experts, hidden]`) by [`HOT_ROUTER_SCALE`].
fn heat_router(bytes: &mut [u8], name: &str, shape: &[usize], hot: usize) {
    let layer = name.split('.').nth(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let (experts, hidden) = (shape.first().copied().unwrap_or(0), shape.get(1).copied().unwrap_or(0));
    for (expert, row) in bytes.chunks_exact_mut(hidden * 4).enumerate().take(experts) {
        if is_hot_expert(layer, expert, experts, hot) {
            for v in row.chunks_exact_mut(4) {
                let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]) * HOT_ROUTER_SCALE;
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// SplitMix64: fast, deterministic, no dependency.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_sizes_match_the_q4_k_m_files_llama_cpp_was_timed_on() {
        // ANCHORS.md: Qwen3-14B 8.83 GiB, Qwen3-4B 2.35 GiB (file sizes, metadata included).
        let gib = |p: &str| preset(p).unwrap().file_bytes() as f64 / (1u64 << 30) as f64;
        assert!((gib("qwen3-14b") - 8.83).abs() < 0.02, "{}", gib("qwen3-14b"));
        assert!((gib("qwen3-4b") - 2.35).abs() < 0.02, "{}", gib("qwen3-4b"));
    }

    #[test]
    fn unknown_presets_list_the_known_ones() {
        let err = preset("qwen9-1t").unwrap_err().to_string();
        assert!(err.contains("qwen9-1t") && err.contains("llama-3-8b"), "{err}");
    }

    #[test]
    fn a_gemma_preset_reads_back_as_the_spec_it_describes() {
        // A small Gemma 3 shape (the real presets are gigabytes): the file's metadata and
        // tensors must give back the preset's spec, post-norms included.
        let tiny = ArchPreset {
            key: "gemma3-tiny",
            hidden: 256,
            layers: 7,
            heads: 2,
            kv_heads: 1,
            head_dim: 256,
            ffn: 512,
            vocab: 300,
            sliding_window: Some(8),
            ..preset("gemma3-4b").unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.gguf");
        tiny.write_gguf(&path, 3, &mut |_, _| {}).unwrap();
        let file = crate::gguf::GgufFile::open(&path).unwrap();
        let spec = file.model_spec().unwrap();
        let want = tiny.spec(spec.context_length);
        assert_eq!(spec.family, cardinfer_core::Family::Gemma3);
        assert_eq!(spec.gemma, want.gemma);
        assert_eq!(spec.gemma.as_ref().unwrap().global_layers, vec![false, false, false, false, false, true, false]);
        assert_eq!((spec.head_dim, spec.num_kv_heads, spec.qk_norm), (256, 1, true));
        for name in ["blk.6.post_attention_norm.weight", "blk.6.post_ffw_norm.weight", "blk.0.attn_k_norm.weight"] {
            assert!(file.tensor(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn moe_presets_hold_expert_tensors() {
        let names: Vec<String> = preset("qwen3-30b-a3b").unwrap().tensors().into_iter().map(|t| t.0).collect();
        assert!(names.contains(&"blk.47.ffn_down_exps.weight".to_string()));
        assert!(!names.iter().any(|n| n == "blk.0.ffn_down.weight"));
        let router =
            random_tensor(&mut SplitMix(1), "blk.0.ffn_gate_inp.weight", &[128, 2048], StorageType::F32).unwrap();
        let values: Vec<f32> = router.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let distinct = values.iter().map(|v| v.to_bits()).collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > values.len() / 2 && values.iter().all(|v| v.abs() <= ROUTER_SCALE), "a random router");
        // Hot experts: their rows scaled, a different set per layer, `hot` of them.
        let mut hot = router.clone();
        heat_router(&mut hot, "blk.3.ffn_gate_inp.weight", &[128, 2048], 4);
        let scaled: Vec<usize> =
            (0..128).filter(|&e| hot[e * 8192..e * 8192 + 4] != router[e * 8192..e * 8192 + 4]).collect();
        assert_eq!(scaled.len(), 4, "{scaled:?}");
        assert!(scaled.iter().all(|&e| is_hot_expert(3, e, 128, 4)));
        assert_ne!((0..128).filter(|&e| is_hot_expert(0, e, 128, 4)).collect::<Vec<_>>(), scaled);
    }
}
