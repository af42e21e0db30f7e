//! Tensor names: the roles the decoder family uses, and how each format spells them.

use cardinfer_core::{BlockId, Family, ModelLayout, ModelSpec, TensorInfo};
use cardinfer_quant::hf_to_gguf::hf_expert_names;
use cardinfer_quant::{Checkpoint, QuantError};
use std::borrow::Cow;

/// One projection of a routed expert's SwiGLU MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpertProj {
    /// Gate projection (`w1` in Mixtral).
    Gate,
    /// Up projection (`w3` in Mixtral).
    Up,
    /// Down projection (`w2` in Mixtral).
    Down,
}

impl ExpertProj {
    /// The three projections, in the order an expert applies them.
    pub const ALL: [ExpertProj; 3] = [ExpertProj::Gate, ExpertProj::Up, ExpertProj::Down];

    fn gguf_stem(self) -> &'static str {
        match self {
            ExpertProj::Gate => "ffn_gate",
            ExpertProj::Up => "ffn_up",
            ExpertProj::Down => "ffn_down",
        }
    }
}

/// A weight's role in a block, independent of the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Token embedding table `[vocab, hidden]`.
    TokenEmbedding,
    /// RMS norm before attention.
    AttnNorm,
    /// Query projection.
    AttnQ,
    /// Key projection.
    AttnK,
    /// Value projection.
    AttnV,
    /// Query bias (Qwen2).
    AttnQBias,
    /// Key bias (Qwen2).
    AttnKBias,
    /// Value bias (Qwen2).
    AttnVBias,
    /// Per-head RMS norm of q (Qwen3).
    AttnQNorm,
    /// Per-head RMS norm of k (Qwen3).
    AttnKNorm,
    /// Attention output projection.
    AttnOutput,
    /// RMS norm before the MLP.
    FfnNorm,
    /// RMS norm of the attention's output, before the residual add (Gemma 3).
    PostAttnNorm,
    /// RMS norm of the MLP's output, before the residual add (Gemma 3).
    PostFfnNorm,
    /// MLP gate projection.
    FfnGate,
    /// MLP up projection.
    FfnUp,
    /// MLP down projection.
    FfnDown,
    /// The router of a mixture-of-experts layer: `[experts, hidden]`, one logit per expert.
    FfnRouter,
    /// One projection of routed expert `.1` of a mixture-of-experts layer. GGUF files
    /// store every expert's in one 3-D tensor (`ffn_gate_exps.weight`); the expert's part
    /// of it is one contiguous byte range ([`role_tensor`]).
    Expert(ExpertProj, u16),
    /// Final RMS norm.
    OutputNorm,
    /// Output projection `[vocab, hidden]` (absent when tied).
    Output,
}

impl Role {
    /// Whether this is a norm's weight vector (Gemma's files store `w` of its `1 + w`).
    pub(crate) fn is_norm(self) -> bool {
        matches!(
            self,
            Role::AttnNorm
                | Role::FfnNorm
                | Role::AttnQNorm
                | Role::AttnKNorm
                | Role::PostAttnNorm
                | Role::PostFfnNorm
                | Role::OutputNorm
        )
    }

    /// The roles of transformer layer `layer` for `spec` (biases and q/k norms only where
    /// the family has them; a router and every expert's projections in place of the MLP
    /// in a mixture-of-experts layer).
    pub fn layer_roles(spec: &ModelSpec, layer: usize) -> Vec<Role> {
        let mut roles = vec![Role::AttnNorm, Role::AttnQ, Role::AttnK, Role::AttnV];
        if spec.qkv_bias {
            roles.extend([Role::AttnQBias, Role::AttnKBias, Role::AttnVBias]);
        }
        if spec.qk_norm {
            roles.extend([Role::AttnQNorm, Role::AttnKNorm]);
        }
        roles.extend([Role::AttnOutput, Role::FfnNorm]);
        if spec.gemma.is_some() {
            roles.extend([Role::PostAttnNorm, Role::PostFfnNorm]);
        }
        match &spec.moe {
            Some(moe) if spec.is_moe_layer(layer) => {
                roles.push(Role::FfnRouter);
                for expert in 0..moe.experts.min(u16::MAX as usize + 1) {
                    roles.extend(ExpertProj::ALL.map(|proj| Role::Expert(proj, expert as u16)));
                }
            }
            _ => roles.extend([Role::FfnGate, Role::FfnUp, Role::FfnDown]),
        }
        roles
    }

    /// The roles of `block`.
    pub fn block_roles(spec: &ModelSpec, block: BlockId) -> Vec<Role> {
        match block {
            BlockId::Embed => vec![Role::TokenEmbedding],
            BlockId::Layer(layer) => Self::layer_roles(spec, layer),
            BlockId::Head => vec![Role::OutputNorm, Role::Output],
        }
    }

    /// The name of this role's tensor in layer `layer` (ignored for global roles) of a
    /// `family` checkpoint; for an expert in a GGUF file, the 3-D tensor holding it.
    pub fn tensor_name(self, format: Format, family: Family, layer: usize) -> String {
        let (router, experts, projs) = hf_expert_names(family);
        let hf: Cow<'static, str> = match self {
            Role::TokenEmbedding => return format.pick("token_embd.weight", "model.embed_tokens.weight"),
            Role::OutputNorm => return format.pick("output_norm.weight", "model.norm.weight"),
            Role::Output => return format.pick("output.weight", "lm_head.weight"),
            Role::AttnNorm => "input_layernorm.weight".into(),
            Role::AttnQ => "self_attn.q_proj.weight".into(),
            Role::AttnK => "self_attn.k_proj.weight".into(),
            Role::AttnV => "self_attn.v_proj.weight".into(),
            Role::AttnQBias => "self_attn.q_proj.bias".into(),
            Role::AttnKBias => "self_attn.k_proj.bias".into(),
            Role::AttnVBias => "self_attn.v_proj.bias".into(),
            Role::AttnQNorm => "self_attn.q_norm.weight".into(),
            Role::AttnKNorm => "self_attn.k_norm.weight".into(),
            Role::AttnOutput => "self_attn.o_proj.weight".into(),
            // Gemma 3 norms before and after attention and the MLP; its `post_attention_layernorm`
            // is the attention output's norm, where Llama's is the norm before the MLP.
            Role::FfnNorm if family == Family::Gemma3 => "pre_feedforward_layernorm.weight".into(),
            Role::FfnNorm => "post_attention_layernorm.weight".into(),
            Role::PostAttnNorm => "post_attention_layernorm.weight".into(),
            Role::PostFfnNorm => "post_feedforward_layernorm.weight".into(),
            Role::FfnGate => "mlp.gate_proj.weight".into(),
            Role::FfnUp => "mlp.up_proj.weight".into(),
            Role::FfnDown => "mlp.down_proj.weight".into(),
            Role::FfnRouter => router.into(),
            Role::Expert(proj, expert) => match format {
                Format::Gguf => return format!("blk.{layer}.{}_exps.weight", proj.gguf_stem()),
                Format::Hf => {
                    let [gate, up, down] = projs;
                    let name = match proj {
                        ExpertProj::Gate => gate,
                        ExpertProj::Up => up,
                        ExpertProj::Down => down,
                    };
                    format!("{experts}.{expert}.{name}").into()
                }
            },
        };
        match format {
            Format::Gguf => format!("blk.{layer}.{}", self.short_name()),
            Format::Hf => format!("model.layers.{layer}.{hf}"),
        }
    }

    /// The tensor's name within its block, as llama.cpp spells it without the
    /// `blk.N.` prefix (`attn_q.weight`, `output_norm.weight`), whatever the file format;
    /// an expert's projection as older llama.cpp files named it per expert
    /// (`ffn_gate.3.weight`).
    pub fn short_name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Role::TokenEmbedding => "token_embd.weight",
            Role::OutputNorm => "output_norm.weight",
            Role::Output => "output.weight",
            Role::AttnNorm => "attn_norm.weight",
            Role::AttnQ => "attn_q.weight",
            Role::AttnK => "attn_k.weight",
            Role::AttnV => "attn_v.weight",
            Role::AttnQBias => "attn_q.bias",
            Role::AttnKBias => "attn_k.bias",
            Role::AttnVBias => "attn_v.bias",
            Role::AttnQNorm => "attn_q_norm.weight",
            Role::AttnKNorm => "attn_k_norm.weight",
            Role::AttnOutput => "attn_output.weight",
            Role::FfnNorm => "ffn_norm.weight",
            Role::PostAttnNorm => "post_attention_norm.weight",
            Role::PostFfnNorm => "post_ffw_norm.weight",
            Role::FfnGate => "ffn_gate.weight",
            Role::FfnUp => "ffn_up.weight",
            Role::FfnDown => "ffn_down.weight",
            Role::FfnRouter => "ffn_gate_inp.weight",
            Role::Expert(proj, expert) => return Cow::Owned(format!("{}.{expert}.weight", proj.gguf_stem())),
        })
    }

    /// Every role of a dense model, and a mixture-of-experts layer's router and expert 0's
    /// projections, in declaration order.
    pub const ALL: [Role; 23] = [
        Role::TokenEmbedding,
        Role::AttnNorm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnQBias,
        Role::AttnKBias,
        Role::AttnVBias,
        Role::AttnQNorm,
        Role::AttnKNorm,
        Role::AttnOutput,
        Role::FfnNorm,
        Role::PostAttnNorm,
        Role::PostFfnNorm,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
        Role::FfnRouter,
        Role::Expert(ExpertProj::Gate, 0),
        Role::Expert(ExpertProj::Up, 0),
        Role::Expert(ExpertProj::Down, 0),
        Role::OutputNorm,
        Role::Output,
    ];
}

/// File naming convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// llama.cpp names (`blk.0.attn_q.weight`).
    Gguf,
    /// Hugging Face names (`model.layers.0.self_attn.q_proj.weight`).
    Hf,
}

impl Format {
    /// The convention of `ckpt`.
    pub fn of(ckpt: &Checkpoint) -> Self {
        match ckpt {
            Checkpoint::Gguf(_) => Format::Gguf,
            Checkpoint::Hf(_) => Format::Hf,
        }
    }

    fn pick(self, gguf: &str, hf: &str) -> String {
        match self {
            Format::Gguf => gguf.to_string(),
            Format::Hf => hf.to_string(),
        }
    }
}

/// The tensor name of `role` in `block`, resolving tied output heads to the embedding.
pub fn resolve_name(ckpt: &Checkpoint, spec: &ModelSpec, block: BlockId, role: Role) -> String {
    let format = Format::of(ckpt);
    let layer = match block {
        BlockId::Layer(i) => i,
        _ => 0,
    };
    let name = role.tensor_name(format, spec.family, layer);
    if role == Role::Output && (spec.tie_word_embeddings || ckpt.tensor(&name).is_none()) {
        return Role::TokenEmbedding.tensor_name(format, spec.family, 0);
    }
    name
}

/// The tensor of `role` in `block`: the checkpoint's own, or for a routed expert of a GGUF
/// file, the expert's part of the 3-D tensor that holds every expert's projection (one
/// contiguous byte range, shaped as a matrix, so an expert is copied and used alone).
///
/// Fails naming the tensor when it is missing, or when a 3-D expert tensor does not hold
/// the spec's number of experts.
pub fn role_tensor(ckpt: &Checkpoint, spec: &ModelSpec, block: BlockId, role: Role) -> Result<TensorInfo, QuantError> {
    let name = resolve_name(ckpt, spec, block, role);
    let info = ckpt.require(&name)?;
    let experts = spec.moe.as_ref().map_or(0, |moe| moe.experts);
    let bad = |reason: String| QuantError::Tensor { path: ckpt.path().to_path_buf(), tensor: name.clone(), reason };
    if role == Role::FfnRouter && info.shape.first() != Some(&experts) {
        return Err(bad(format!(
            "the router has shape {:?}: one row per expert, but the model declares {experts} experts \
             (num_experts in config.json, expert_count in GGUF)",
            info.shape
        )));
    }
    let (Role::Expert(_, expert), Format::Gguf) = (role, Format::of(ckpt)) else {
        return Ok(info.clone());
    };
    if info.shape.len() != 3 || info.shape[0] != experts || experts == 0 {
        return Err(bad(format!("shape {:?} does not hold {experts} experts ([experts, rows, columns])", info.shape)));
    }
    if !info.len.is_multiple_of(experts as u64) {
        return Err(bad(format!("{} bytes do not split into {experts} experts", info.len)));
    }
    let len = info.len / experts as u64;
    Ok(TensorInfo { shape: info.shape[1..].to_vec(), offset: info.offset + expert as u64 * len, len, ..info.clone() })
}

/// The model's layout: every block with its tensors' exact byte ranges.
///
/// Fails with the missing tensor's name when the checkpoint lacks one the spec needs.
pub fn model_layout(ckpt: &Checkpoint, spec: &ModelSpec) -> Result<ModelLayout, cardinfer_quant::QuantError> {
    layout_of(ckpt, spec, |_| true)
}

/// The layout of what stays on the device when a mixture-of-experts model's routed
/// experts live in host memory: every block without its experts' matrices.
pub fn layout_without_experts(ckpt: &Checkpoint, spec: &ModelSpec) -> Result<ModelLayout, QuantError> {
    layout_of(ckpt, spec, |role| !matches!(role, Role::Expert(..)))
}

fn layout_of(ckpt: &Checkpoint, spec: &ModelSpec, keep: impl Fn(Role) -> bool) -> Result<ModelLayout, QuantError> {
    let mut blocks = Vec::with_capacity(spec.num_layers + 2);
    let ids = std::iter::once(BlockId::Embed)
        .chain((0..spec.num_layers).map(BlockId::Layer))
        .chain(std::iter::once(BlockId::Head));
    for block in ids {
        let mut tensors = Vec::new();
        for role in Role::block_roles(spec, block).into_iter().filter(|&r| keep(r)) {
            tensors.push(role_tensor(ckpt, spec, block, role)?);
        }
        blocks.push((block, tensors));
    }
    Ok(ModelLayout { blocks })
}
