//! A decode token's routed experts with the device cache, in a few launches: the experts
//! the device computes (cache hits, uploads, one-pass copies) take one launch per
//! projection together ([`crate::cuda::routed`]), and one launch adds theirs and the CPU's
//! outputs in ascending expert order — where each expert used to take ~10 launches and
//! the sum one per expert.

use super::decoder::Decoder;
use super::moe_host::{upload_expert, Pass};
use crate::cuda::copy_stream::UploadEvents;
use crate::cuda::routed::{self, DeviceExpert, ExpertShape};
use crate::executor::expert_cache::Source;
use crate::model::names::{ExpertProj, Role};
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;

/// A quantized matrix's device address and type; `None` for a float or host one.
fn address(w: &Weight) -> Option<(u64, GgmlDType)> {
    match w {
        Weight::InSlot(t) => Some((t.address(), t.dtype)),
        Weight::Quantized(q) if q.device().is_cuda() => Some((q.device_ptr().ok()? as u64, q.dtype())),
        _ => None,
    }
}

/// An expert's three matrices as the kernels take them, if all are quantized on the device.
fn matrices(weights: [&Weight; 3]) -> Option<([u64; 3], [GgmlDType; 3])> {
    let [g, u, d] = weights.map(address);
    let ((g, gt), (u, ut), (d, dt)) = (g?, u?, d?);
    Some(([g, u, d], [gt, ut, dt]))
}

fn roles(w: &BlockWeights, expert: u16) -> Result<[&Weight; 3]> {
    Ok([
        w.get(Role::Expert(ExpertProj::Gate, expert))?,
        w.get(Role::Expert(ExpertProj::Up, expert))?,
        w.get(Role::Expert(ExpertProj::Down, expert))?,
    ])
}

impl Decoder {
    /// The routed MLP of one token (`pass.xs` is `[1, hidden]`) whose experts the cache
    /// has assigned and whose uploads are queued: the device's experts in one launch per
    /// projection, the CPU's share meanwhile, the sum in ascending expert order. `None`
    /// where the batched kernels do not apply (the caller computes expert by expert).
    pub(super) fn one_token_on_device(
        &self,
        w: &BlockWeights,
        pass: &Pass<'_>,
        uploads: &[(usize, BlockWeights, UploadEvents)],
    ) -> Result<Option<Tensor>> {
        let moe = self.moe_spec()?;
        let hidden = pass.xs.dim(1)?;
        let mut device = Vec::new();
        let mut dtypes = None;
        let mut temporaries = Vec::new();
        // Per used expert: its row among the device's outputs, or None (the CPU's).
        let mut device_row = vec![None; pass.used.len()];
        for (i, source) in pass.sources.iter().enumerate() {
            let expert = pass.used[i].0;
            let found = match *source {
                Source::Cpu => continue,
                Source::Cached(slot) => {
                    let weights = pass
                        .cache
                        .weights(slot)
                        .ok_or_else(|| StreamError::Internal(format!("expert cache slot {slot} has no weights")))?;
                    matrices([&weights[0], &weights[1], &weights[2]])
                }
                Source::Upload(_) => {
                    let Some((.., weights, _)) = uploads.iter().find(|(at, ..)| *at == i) else {
                        return Err(StreamError::Internal(format!("expert {expert}'s upload was not queued")));
                    };
                    matrices(roles(weights, expert)?)
                }
                Source::Temporary => {
                    temporaries.push(upload_expert(w, expert, pass.xs.device())?);
                    let weights = temporaries.last().ok_or_else(|| StreamError::Internal("no temporary".into()))?;
                    matrices(roles(weights, expert)?)
                }
            };
            let Some((addresses, types)) = found else { return Ok(None) };
            if *dtypes.get_or_insert(types) != types {
                return Ok(None);
            }
            device_row[i] = Some(device.len() as u32);
            device.push(DeviceExpert { matrices: addresses });
        }
        for (_, _, events) in uploads {
            events.wait()?;
        }
        let device_rows = match dtypes {
            Some(dtypes) => {
                let shape = ExpertShape { hidden, ffn: moe.expert_intermediate_size, dtypes };
                match routed::expert_outputs(pass.xs, &device, shape, pass.cache.arena(), self.fused_ops())? {
                    Some(rows) => Some(rows),
                    None => return Ok(None),
                }
            }
            None => None,
        };
        // The CPU's share while the device computes; its outputs come weighted.
        let cpu = self.cpu_share(pass)?;
        let mut order = Vec::with_capacity(pass.used.len());
        let mut weights = Vec::with_capacity(pass.used.len());
        let mut cpu_rows = Vec::with_capacity(cpu.len());
        for (i, &(expert, _)) in pass.used.iter().enumerate() {
            let weight = pass.by_expert[expert as usize].first().map_or(0.0, |t| t.1);
            match device_row[i] {
                Some(row) => {
                    order.push(row);
                    weights.push(weight);
                }
                None => {
                    let Some((.., y)) = cpu.iter().find(|(e, ..)| *e == expert) else {
                        return Err(StreamError::Internal(format!("the CPU did not compute expert {expert}")));
                    };
                    order.push((device.len() + cpu_rows.len()) as u32);
                    weights.push(1.0);
                    cpu_rows.push(y.clone());
                }
            }
        }
        let rows = match (device_rows, cpu_rows.is_empty()) {
            (Some(rows), true) => rows,
            (rows, false) => {
                let cpu_rows = Tensor::cat(&cpu_rows, 0)?.to_device(pass.xs.device())?;
                match rows {
                    Some(rows) => Tensor::cat(&[&rows, &cpu_rows], 0)?,
                    None => cpu_rows,
                }
            }
            (None, true) => return Ok(Some(Tensor::zeros(pass.xs.dims(), candle_core::DType::F32, pass.xs.device())?)),
        };
        let out = routed::weighted_sum(&rows, &order, &weights)?;
        drop(temporaries);
        Ok(Some(out.reshape(pass.xs.dims())?))
    }
}
