//! Tensor names: the roles the decoder family uses, and how each format spells them.

use cardinfer_core::{BlockId, ModelLayout, ModelSpec};
use cardinfer_quant::Checkpoint;

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
    /// MLP gate projection.
    FfnGate,
    /// MLP up projection.
    FfnUp,
    /// MLP down projection.
    FfnDown,
    /// Final RMS norm.
    OutputNorm,
    /// Output projection `[vocab, hidden]` (absent when tied).
    Output,
}

impl Role {
    /// The roles of one transformer layer for `spec` (biases and q/k norms only where the
    /// family has them).
    pub fn layer_roles(spec: &ModelSpec) -> Vec<Role> {
        let mut roles = vec![Role::AttnNorm, Role::AttnQ, Role::AttnK, Role::AttnV];
        if spec.qkv_bias {
            roles.extend([Role::AttnQBias, Role::AttnKBias, Role::AttnVBias]);
        }
        if spec.qk_norm {
            roles.extend([Role::AttnQNorm, Role::AttnKNorm]);
        }
        roles.extend([Role::AttnOutput, Role::FfnNorm, Role::FfnGate, Role::FfnUp, Role::FfnDown]);
        roles
    }

    /// The roles of `block`.
    pub fn block_roles(spec: &ModelSpec, block: BlockId) -> Vec<Role> {
        match block {
            BlockId::Embed => vec![Role::TokenEmbedding],
            BlockId::Layer(_) => Self::layer_roles(spec),
            BlockId::Head => vec![Role::OutputNorm, Role::Output],
        }
    }

    /// The name of this role's tensor in layer `layer` (ignored for global roles).
    pub fn tensor_name(self, format: Format, layer: usize) -> String {
        let hf = match self {
            Role::TokenEmbedding => return format.pick("token_embd.weight", "model.embed_tokens.weight"),
            Role::OutputNorm => return format.pick("output_norm.weight", "model.norm.weight"),
            Role::Output => return format.pick("output.weight", "lm_head.weight"),
            Role::AttnNorm => "input_layernorm.weight",
            Role::AttnQ => "self_attn.q_proj.weight",
            Role::AttnK => "self_attn.k_proj.weight",
            Role::AttnV => "self_attn.v_proj.weight",
            Role::AttnQBias => "self_attn.q_proj.bias",
            Role::AttnKBias => "self_attn.k_proj.bias",
            Role::AttnVBias => "self_attn.v_proj.bias",
            Role::AttnQNorm => "self_attn.q_norm.weight",
            Role::AttnKNorm => "self_attn.k_norm.weight",
            Role::AttnOutput => "self_attn.o_proj.weight",
            Role::FfnNorm => "post_attention_layernorm.weight",
            Role::FfnGate => "mlp.gate_proj.weight",
            Role::FfnUp => "mlp.up_proj.weight",
            Role::FfnDown => "mlp.down_proj.weight",
        };
        match format {
            Format::Gguf => format!("blk.{layer}.{}", self.short_name()),
            Format::Hf => format!("model.layers.{layer}.{hf}"),
        }
    }

    /// The tensor's name within its block, as llama.cpp spells it without the
    /// `blk.N.` prefix (`attn_q.weight`, `output_norm.weight`), whatever the file format.
    pub fn short_name(self) -> &'static str {
        match self {
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
            Role::FfnGate => "ffn_gate.weight",
            Role::FfnUp => "ffn_up.weight",
            Role::FfnDown => "ffn_down.weight",
        }
    }

    /// Every role, in declaration order.
    pub const ALL: [Role; 17] = [
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
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
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
    let name = role.tensor_name(format, layer);
    if role == Role::Output && (spec.tie_word_embeddings || ckpt.tensor(&name).is_none()) {
        return Role::TokenEmbedding.tensor_name(format, 0);
    }
    name
}

/// The model's layout: every block with its tensors' exact byte ranges.
///
/// Fails with the missing tensor's name when the checkpoint lacks one the spec needs.
pub fn model_layout(ckpt: &Checkpoint, spec: &ModelSpec) -> Result<ModelLayout, cardinfer_quant::QuantError> {
    let mut blocks = Vec::with_capacity(spec.num_layers + 2);
    let ids = std::iter::once(BlockId::Embed)
        .chain((0..spec.num_layers).map(BlockId::Layer))
        .chain(std::iter::once(BlockId::Head));
    for block in ids {
        let mut tensors = Vec::new();
        for role in Role::block_roles(spec, block) {
            let name = resolve_name(ckpt, spec, block, role);
            tensors.push(ckpt.require(&name)?.clone());
        }
        blocks.push((block, tensors));
    }
    Ok(ModelLayout { blocks })
}
