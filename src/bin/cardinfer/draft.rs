//! `--draft MODEL`: speculative decoding for `run`, `chat` and `bench` — the flags, the
//! loading of a target with its draft in one budget, and one session type over both ways
//! of generating.

use anyhow::Result;
use cardinfer_stream::{
    GenerateOptions, Generation, LoadedModel, Session, SpeculativeOptions, SpeculativeSession, TextModel, Tokenizer,
};

/// The draft model and how it drafts.
#[derive(clap::Args, Debug, Clone)]
pub struct DraftArgs {
    /// A small model with the same vocabulary that drafts tokens for the model to check in
    /// one pass (speculative decoding; greedy output is unchanged, sampled output keeps
    /// the model's distribution). It is loaded resident; the model gets what it leaves of
    /// the budget.
    #[arg(long)]
    pub draft: Option<String>,
    /// Most tokens drafted before each verification pass (1 to 64).
    #[arg(long, default_value_t = 8)]
    pub draft_max: usize,
    /// Stop drafting when the draft's most likely token has a probability below this.
    #[arg(long, default_value_t = 0.4)]
    pub draft_min_confidence: f32,
    /// Always draft up to --draft-max tokens instead of choosing the length from the
    /// measured acceptance and pass costs.
    #[arg(long)]
    pub draft_fixed: bool,
}

impl DraftArgs {
    /// The library's options for these flags.
    pub fn options(&self) -> SpeculativeOptions {
        SpeculativeOptions {
            max_draft: self.draft_max,
            min_confidence: self.draft_min_confidence,
            adaptive: !self.draft_fixed,
        }
    }
}

/// The model (and its draft, when `--draft` is given), as `common::load` returns it.
pub struct Loaded {
    pub target: LoadedModel,
    pub draft: Option<LoadedModel>,
    pub device: candle_core::Device,
    pub watch: crate::common::MemoryWatch,
    pub load_secs: f64,
}

/// Loads the model, and with `--draft` the draft first (resident) and the model within
/// what it leaves of the budget.
pub fn load(args: &crate::common::ModelArgs, draft: &DraftArgs) -> Result<Loaded> {
    let Some(draft_arg) = &draft.draft else {
        let (target, device, watch, load_secs) = crate::common::load(args)?;
        return Ok(Loaded { target, draft: None, device, watch, load_secs });
    };
    draft.options().validate()?;
    let draft_path = crate::common::resolve_model(Some(draft_arg))?;
    let name = |path: &std::path::Path| format!("{} with draft {}", path.display(), draft_path.display());
    let ((target, draft), device, watch, load_secs) =
        crate::common::load_as(args, name, |path, device, options, progress| {
            Ok(LoadedModel::load_with_draft(path, &draft_path, device, options, progress)?)
        })?;
    crate::common::print_template_note(&target);
    Ok(Loaded { target, draft: Some(draft), device, watch, load_secs })
}

/// A conversation with the model alone or with its draft.
pub enum AnySession<'m> {
    Plain(Session<'m>),
    Speculative(SpeculativeSession<'m>),
}

impl<'m> AnySession<'m> {
    /// A session over `target`, speculative when there is a draft.
    pub fn new(target: &'m LoadedModel, draft: Option<&'m LoadedModel>, args: &DraftArgs) -> Result<Self> {
        let tokenizer: Option<&Tokenizer> = target.tokenizer.as_ref();
        let model: &dyn TextModel = &target.model;
        Ok(match draft {
            None => Self::Plain(Session::new(model, tokenizer)),
            Some(d) => Self::Speculative(SpeculativeSession::new(model, &d.model, tokenizer, args.options())?),
        })
    }

    pub fn generate(
        &mut self,
        ids: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        Ok(match self {
            Self::Plain(s) => s.generate(ids, options, on_text)?,
            Self::Speculative(s) => s.generate(ids, options, on_text)?,
        })
    }

    pub fn reuse_prefix(&mut self, ids: &[u32]) -> Result<Vec<u32>> {
        Ok(match self {
            Self::Plain(s) => s.reuse_prefix(ids)?,
            Self::Speculative(s) => s.reuse_prefix(ids)?,
        })
    }

    pub fn reset(&mut self) {
        match self {
            Self::Plain(s) => s.reset(),
            Self::Speculative(s) => s.reset(),
        }
    }
}

/// The one-line summary of what the draft did, for stderr.
pub fn summary(generation: &Generation) -> Option<String> {
    let s = generation.speculation.as_ref()?;
    Some(format!(
        "draft: {} of {} drafted tokens kept ({:.0} %), {:.2} tokens per pass of the model, draft {:.2} s, verification {:.2} s",
        s.accepted,
        s.drafted,
        100.0 * s.acceptance_rate(),
        s.tokens_per_pass(),
        s.draft_secs,
        s.verify_secs
    ))
}
