//! Quantization schemes: which storage type each tensor of a model gets, following
//! llama.cpp's `llama_tensor_get_type` for the schemes CardInfer writes.

use crate::QuantError;
use cardinfer_core::StorageType;
use std::fmt;
use std::str::FromStr;

/// A whole-model quantization scheme, as named by llama.cpp's `llama-quantize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    /// Every matrix in F16.
    F16,
    /// Every matrix in Q8_0.
    Q8_0,
    /// Every matrix in Q6_K.
    Q6K,
    /// Q5_K, with Q6_K for the output head and for `attn_v` / `ffn_down` of the layers
    /// llama.cpp's `use_more_bits` picks.
    Q5KM,
    /// Q4_K, with Q6_K for the output head and for `attn_v` / `ffn_down` of the layers
    /// `use_more_bits` picks.
    Q4KM,
    /// Q3_K, with Q4_K for `attn_output`, Q5_K/Q4_K for `attn_v` and `ffn_down`, Q6_K head.
    Q3KM,
    /// Q2_K, with Q3_K (Q4_K at GQA ≥ 4) for `attn_v`, Q3_K for `ffn_down` and
    /// `attn_output`, Q6_K head.
    Q2K,
}

/// What a tensor does in the model, as far as choosing its storage type goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// `token_embd.weight`.
    TokenEmbedding,
    /// `output.weight`, or the token embedding when the model ties them.
    Output,
    /// `blk.N.attn_v.weight`.
    AttnV {
        /// Layer index.
        layer: usize,
    },
    /// `blk.N.attn_output.weight`.
    AttnOutput,
    /// `blk.N.ffn_down.weight`.
    FfnDown {
        /// Layer index.
        layer: usize,
    },
    /// Any other matrix (q, k, gate, up).
    OtherMatrix,
    /// Norms, biases and other 1-D tensors: always F32.
    Vector,
}

impl TensorRole {
    /// The role of the GGUF tensor `name` of `shape` (outermost first) in a model whose
    /// output head is tied to its embedding when `tied`.
    pub fn of(name: &str, shape: &[usize], tied: bool) -> Self {
        let layer = || {
            name.strip_prefix("blk.").and_then(|rest| rest.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        if shape.len() < 2 {
            Self::Vector
        } else if name == "output.weight" || (tied && name == "token_embd.weight") {
            Self::Output
        } else if name == "token_embd.weight" {
            Self::TokenEmbedding
        } else if name.ends_with("attn_v.weight") {
            Self::AttnV { layer: layer() }
        } else if name.ends_with("attn_output.weight") {
            Self::AttnOutput
        } else if name.ends_with("ffn_down.weight") || name.ends_with("ffn_down_exps.weight") {
            Self::FfnDown { layer: layer() }
        } else {
            Self::OtherMatrix
        }
    }
}

/// The shape facts a scheme needs: layer count and grouped-query factor.
#[derive(Debug, Clone, Copy)]
pub struct SchemeContext {
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Query heads per KV head.
    pub gqa: usize,
}

/// llama.cpp's choice of layers that get more bits in the `_M` schemes: the first and
/// last eighth, and every third layer in between.
pub fn use_more_bits(layer: usize, num_layers: usize) -> bool {
    let eighth = num_layers / 8;
    layer < eighth || layer >= 7 * num_layers / 8 || (layer as isize - eighth as isize).rem_euclid(3) == 2
}

impl QuantScheme {
    /// Every scheme, in order of decreasing size.
    pub const ALL: [QuantScheme; 7] = [Self::F16, Self::Q8_0, Self::Q6K, Self::Q5KM, Self::Q4KM, Self::Q3KM, Self::Q2K];

    /// The scheme's name on the command line (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q6K => "q6_k",
            Self::Q5KM => "q5_k_m",
            Self::Q4KM => "q4_k_m",
            Self::Q3KM => "q3_k_m",
            Self::Q2K => "q2_k",
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`) for this scheme.
    pub fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q2K => 10,
            Self::Q3KM => 12,
            Self::Q4KM => 15,
            Self::Q5KM => 17,
            Self::Q6K => 18,
        }
    }

    fn base(self) -> StorageType {
        match self {
            Self::F16 => StorageType::F16,
            Self::Q8_0 => StorageType::Q8_0,
            Self::Q6K => StorageType::Q6_K,
            Self::Q5KM => StorageType::Q5_K,
            Self::Q4KM => StorageType::Q4_K,
            Self::Q3KM => StorageType::Q3_K,
            Self::Q2K => StorageType::Q2_K,
        }
    }

    /// The storage type of a tensor of `role` whose rows are `row_len` wide. Rows that do
    /// not fit the type's block fall back as llama.cpp's do (Q4_K → Q5_0, Q5_K → Q5_1,
    /// Q6_K → Q8_0, Q2_K/Q3_K → Q4_0; the output head → Q8_0), then to F16.
    pub fn storage_for(self, role: TensorRole, row_len: usize, ctx: SchemeContext) -> StorageType {
        use StorageType::*;
        let chosen = match (self, role) {
            (_, TensorRole::Vector) => return F32,
            (Self::F16, _) => F16,
            (Self::Q8_0, _) => Q8_0,
            (_, TensorRole::Output) => {
                if !row_len.is_multiple_of(Q6_K.block_elems()) {
                    Q8_0
                } else {
                    Q6_K
                }
            }
            (Self::Q4KM | Self::Q5KM, TensorRole::AttnV { layer } | TensorRole::FfnDown { layer })
                if use_more_bits(layer, ctx.num_layers) =>
            {
                Q6_K
            }
            (Self::Q3KM, TensorRole::AttnV { layer }) => {
                if layer < 2 {
                    Q5_K
                } else {
                    Q4_K
                }
            }
            (Self::Q3KM, TensorRole::FfnDown { layer }) => {
                if layer < ctx.num_layers / 16 {
                    Q5_K
                } else {
                    Q4_K
                }
            }
            (Self::Q3KM, TensorRole::AttnOutput) => Q4_K,
            (Self::Q2K, TensorRole::AttnV { .. }) => {
                if ctx.gqa >= 4 {
                    Q4_K
                } else {
                    Q3_K
                }
            }
            (Self::Q2K, TensorRole::FfnDown { .. } | TensorRole::AttnOutput) => Q3_K,
            _ => self.base(),
        };
        fallback(chosen, row_len)
    }
}

fn fallback(storage: StorageType, row_len: usize) -> StorageType {
    use StorageType::*;
    if row_len.is_multiple_of(storage.block_elems()) {
        return storage;
    }
    let smaller = match storage {
        Q2_K | Q3_K => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        other => other,
    };
    if row_len.is_multiple_of(smaller.block_elems()) {
        smaller
    } else {
        F16
    }
}

impl fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantScheme {
    type Err = QuantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|q| q.name() == lower).ok_or_else(|| QuantError::UnknownScheme {
            name: s.to_string(),
            known: Self::ALL.iter().map(|q| q.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StorageType::*;

    const CTX: SchemeContext = SchemeContext { num_layers: 36, gqa: 4 };

    #[test]
    fn use_more_bits_matches_llama_cpp_for_36_layers() {
        // n/8 = 4, 7n/8 = 31: layers 0-3, 31-35, and 4 + 2 + 3k.
        let picked: Vec<usize> = (0..36).filter(|&l| use_more_bits(l, 36)).collect();
        assert_eq!(picked, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35]);
    }

    #[test]
    fn q4_k_m_mixes_like_llama_cpp() {
        let s = QuantScheme::Q4KM;
        assert_eq!(s.storage_for(TensorRole::AttnV { layer: 0 }, 2560, CTX), Q6_K);
        assert_eq!(s.storage_for(TensorRole::AttnV { layer: 4 }, 2560, CTX), Q4_K);
        assert_eq!(s.storage_for(TensorRole::FfnDown { layer: 6 }, 9728, CTX), Q6_K);
        assert_eq!(s.storage_for(TensorRole::OtherMatrix, 2560, CTX), Q4_K);
        assert_eq!(s.storage_for(TensorRole::Output, 2560, CTX), Q6_K);
        assert_eq!(s.storage_for(TensorRole::TokenEmbedding, 2560, CTX), Q4_K);
        assert_eq!(s.storage_for(TensorRole::Vector, 2560, CTX), F32);
    }

    #[test]
    fn rows_not_a_multiple_of_256_fall_back_like_llama_cpp() {
        // Qwen2.5-0.5B: d = 896 = 3.5 × 256.
        assert_eq!(QuantScheme::Q4KM.storage_for(TensorRole::OtherMatrix, 896, CTX), Q5_0);
        assert_eq!(QuantScheme::Q5KM.storage_for(TensorRole::OtherMatrix, 896, CTX), Q5_1);
        assert_eq!(QuantScheme::Q6K.storage_for(TensorRole::OtherMatrix, 896, CTX), Q8_0);
        assert_eq!(QuantScheme::Q2K.storage_for(TensorRole::OtherMatrix, 896, CTX), Q4_0);
        assert_eq!(QuantScheme::Q4KM.storage_for(TensorRole::Output, 896, CTX), Q8_0);
        assert_eq!(QuantScheme::Q8_0.storage_for(TensorRole::OtherMatrix, 40, CTX), F16);
    }

    #[test]
    fn low_bit_schemes_protect_attention_and_down_projections() {
        assert_eq!(QuantScheme::Q3KM.storage_for(TensorRole::AttnOutput, 2560, CTX), Q4_K);
        assert_eq!(QuantScheme::Q3KM.storage_for(TensorRole::AttnV { layer: 1 }, 2560, CTX), Q5_K);
        assert_eq!(QuantScheme::Q3KM.storage_for(TensorRole::FfnDown { layer: 1 }, 9728, CTX), Q5_K);
        assert_eq!(QuantScheme::Q3KM.storage_for(TensorRole::FfnDown { layer: 9 }, 9728, CTX), Q4_K);
        assert_eq!(QuantScheme::Q2K.storage_for(TensorRole::AttnV { layer: 9 }, 2560, CTX), Q4_K);
        let mha = SchemeContext { gqa: 1, ..CTX };
        assert_eq!(QuantScheme::Q2K.storage_for(TensorRole::AttnV { layer: 9 }, 2560, mha), Q3_K);
        assert_eq!(QuantScheme::Q2K.storage_for(TensorRole::OtherMatrix, 2560, CTX), Q2_K);
    }

    #[test]
    fn roles_come_from_names_and_tied_embeddings_are_the_output() {
        assert_eq!(TensorRole::of("blk.7.attn_v.weight", &[8, 8], false), TensorRole::AttnV { layer: 7 });
        assert_eq!(TensorRole::of("token_embd.weight", &[8, 8], true), TensorRole::Output);
        assert_eq!(TensorRole::of("token_embd.weight", &[8, 8], false), TensorRole::TokenEmbedding);
        assert_eq!(TensorRole::of("blk.0.attn_norm.weight", &[8], false), TensorRole::Vector);
    }

    #[test]
    fn names_parse_case_insensitively_and_unknown_names_list_the_known() {
        assert_eq!("Q4_K_M".parse::<QuantScheme>().unwrap(), QuantScheme::Q4KM);
        let err = "q4_x".parse::<QuantScheme>().unwrap_err().to_string();
        assert!(err.contains("q4_x") && err.contains("q5_k_m"), "{err}");
    }
}
