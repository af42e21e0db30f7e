//! A target model and the draft model that speculates for it, within one device budget:
//! the draft resident (it runs once per drafted token), the target placed by the planner
//! in what the draft leaves.

use super::{resolve_budget, LoadOptions, LoadedModel};
use crate::executor::Mode;
use crate::model::text_model::TextModel;
use crate::text::speculative::check_draft_vocabulary;
use crate::{Result, StreamError};
use candle_core::Device;
use cardinfer_core::ByteSize;
use cardinfer_plan::Budget;
use std::path::Path;

impl LoadedModel {
    /// Loads `draft` fully resident on `device`, then `target` within what remains of
    /// `options.budget`: the device memory the draft took (measured where the device tells,
    /// else its weight bytes) and its KV cache at the context both run with. Fails with a
    /// clear error when the draft alone does not fit the budget or the vocabularies differ
    /// ([`check_draft_vocabulary`]). `progress(done, total)` reports the target's blocks.
    pub fn load_with_draft(
        target: &Path,
        draft: &Path,
        device: &Device,
        options: &LoadOptions,
        progress: impl FnMut(usize, usize),
    ) -> Result<(LoadedModel, LoadedModel)> {
        options.validate()?;
        let budget = resolve_budget(options.budget, device)?;
        let free_before = crate::device::device_memory(device).map(|(free, _)| free);
        let draft_options = LoadOptions {
            budget: Budget::Bytes(ByteSize(budget)),
            mode: Mode::Resident,
            hybrid: false,
            host_layers: None,
            ..options.clone()
        };
        let draft = LoadedModel::load_with(draft, device, &draft_options, |_, _| {}).map_err(|e| match e {
            StreamError::Plan(e) => StreamError::InvalidParameter {
                name: "budget",
                reason: format!("the draft model {} is loaded resident, and does not fit: {e}", draft.display()),
            },
            other => other,
        })?;
        let measured = free_before
            .zip(crate::device::device_memory(device))
            .map_or(0, |(before, (after, _))| before.saturating_sub(after));
        let spec = draft.model.spec();
        let kv = spec.kv_bytes_per_token(options.kv_type) * spec.context_length as u64;
        let used = measured.max(draft.model.metrics().weight_bytes) + kv;
        if used >= budget {
            return Err(StreamError::InvalidParameter {
                name: "budget",
                reason: format!(
                    "the draft model {} takes {} MiB with its KV cache, the whole budget of {} MiB: \
                     give a larger budget or a smaller draft",
                    draft.path.display(),
                    used >> 20,
                    budget >> 20
                ),
            });
        }
        // No limit (a percentage on the CPU) stays no limit.
        let rest = if budget == u64::MAX { budget } else { budget - used };
        let target_options = LoadOptions { budget: Budget::Bytes(ByteSize(rest)), ..options.clone() };
        let target = LoadedModel::load_with(target, device, &target_options, progress)?;
        check_draft_vocabulary(&target, &draft)?;
        Ok((target, draft))
    }
}
