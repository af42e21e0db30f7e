//! The streamed head's last row chunks computed by the CPU in decode steps
//! ([`cardinfer_plan::StreamPlan::head_host_chunks`]): once the last layer is done the
//! CPU has nothing to do while the link still streams the head, so it computes those
//! vocabulary rows from host memory beside the device's chunks.
//!
//! The rows' logits are the device's bits where the device decodes with the fused
//! kernels: the input is normalized on the device (the same Candle op as the head's) and
//! brought to the host, then multiplied with Candle's MMVQ arithmetic
//! ([`crate::cpu::exact::mmvq`]). Elsewhere (a CPU device, types the twin does not cover) the
//! family's own head runs on the CPU.

use super::reader::BlockReader;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::{Device, Tensor};
use cardinfer_core::ModelSpec;
use std::ops::Range;

/// The CPU's rows of the head.
pub(crate) struct HostHead {
    /// Vocabulary rows computed here (the last of the plan's head chunks).
    pub(crate) rows: Range<usize>,
    /// The output norm and these rows of the output matrix, in host memory.
    weights: BlockWeights,
    /// The output norm on the device: the exact path normalizes there.
    device_norm: Tensor,
    eps: f32,
    /// Whether [`crate::cpu::exact::mmvq`] covers the output rows (type and width).
    exact_covers: bool,
}

/// What the CPU gets from the device for its rows.
pub(crate) enum HeadInput {
    /// The final hidden state normalized on the device (the exact path).
    Normed(Vec<f32>),
    /// The final hidden state as it is (the family's head runs on the CPU).
    Hidden(Tensor),
}

impl HostHead {
    /// Reads rows `rows` of the head of a `spec` model into host memory, and its norm onto
    /// `device` (as `1 + w` where the file stores Gemma's `w`, as the decoder's head takes it).
    pub(crate) fn load(
        reader: &dyn BlockReader,
        rows: Range<usize>,
        spec: &ModelSpec,
        device: &Device,
    ) -> Result<Self> {
        let weights = reader.read_head_rows(rows.clone(), &Device::Cpu)?;
        let mut device_norm = weights.get(Role::OutputNorm)?.dense()?.to_device(device)?;
        if spec.norms_plus_one() {
            device_norm = device_norm.affine(1.0, 1.0)?;
        }
        let exact_covers = match weights.get(Role::Output)? {
            Weight::Quantized(q) => {
                crate::cpu::exact::mmvq::covers(q.dtype()) && q.shape().dims().last().is_some_and(|k| k % 256 == 0)
            }
            _ => false,
        };
        Ok(Self { rows, weights, device_norm, eps: spec.rms_norm_eps as f32, exact_covers })
    }

    /// The input for [`HostHead::logits`] from the final hidden state `x` (`[1, 1,
    /// hidden]`, on the device): normalized there with the head's own op when `exact`
    /// and the output rows are of a type [`crate::cpu::exact::mmvq`] covers.
    pub(crate) fn input(&self, x: &Tensor, exact: bool) -> Result<HeadInput> {
        if exact && self.exact_covers {
            // `Decoder::head`'s norm: the same kernel on the same values, so the same bits.
            let normed = candle_nn::ops::rms_norm(&x.contiguous()?, &self.device_norm, self.eps)?;
            return Ok(HeadInput::Normed(normed.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok(HeadInput::Hidden(x.to_device(&Device::Cpu)?))
    }

    /// Logits of these rows, `[1, 1, rows]` in host memory.
    pub(crate) fn logits(&self, family: &dyn LayerStream, input: HeadInput) -> Result<Tensor> {
        match input {
            HeadInput::Hidden(x) => family.head(&self.weights, &x),
            HeadInput::Normed(x) => {
                let Weight::Quantized(q) = self.weights.get(Role::Output)? else {
                    return Err(self.not_covered());
                };
                let mut rows =
                    crate::cpu::exact::mmvq::products(&[q.as_ref()], &x)?.ok_or_else(|| self.not_covered())?;
                let values = rows.pop().ok_or_else(|| self.not_covered())?;
                let n = values.len();
                Ok(Tensor::from_vec(values, (1, 1, n), &Device::Cpu)?)
            }
        }
    }

    fn not_covered(&self) -> StreamError {
        StreamError::InvalidParameter {
            name: "head",
            reason: format!("rows {:?} of the output matrix are not a type the CPU's exact products cover", self.rows),
        }
    }
}
