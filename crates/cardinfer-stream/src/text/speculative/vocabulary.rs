//! Whether a draft model's token ids mean what the target's mean.

use crate::load::LoadedModel;
use crate::model::text_model::TextModel;
use crate::{Result, StreamError};

/// Checks that `draft` can draft for `target`: the same number of logits, and — where
/// both have a tokenizer — the same token string for every id (special tokens included).
/// The error names both files and the first id that differs.
pub fn check_draft_vocabulary(target: &LoadedModel, draft: &LoadedModel) -> Result<()> {
    let mismatch = |reason: String| StreamError::VocabularyMismatch {
        target: target.path.display().to_string(),
        draft: draft.path.display().to_string(),
        reason,
    };
    let (tv, dv) = (target.model.spec().vocab_size, draft.model.spec().vocab_size);
    if tv != dv {
        return Err(mismatch(format!("the target scores {tv} tokens, the draft {dv}")));
    }
    match (&target.tokenizer, &draft.tokenizer) {
        (Some(t), Some(d)) => {
            if t.vocab_size() != d.vocab_size() {
                return Err(mismatch(format!(
                    "the target's tokenizer has {} tokens, the draft's {}",
                    t.vocab_size(),
                    d.vocab_size()
                )));
            }
            for id in 0..t.vocab_size() as u32 {
                let (a, b) = (t.id_to_token(id), d.id_to_token(id));
                if a != b {
                    let show = |s: Option<String>| s.map_or("nothing".into(), |s| format!("{s:?}"));
                    return Err(mismatch(format!("token {id} is {} in the target, {} in the draft", show(a), show(b))));
                }
            }
            Ok(())
        }
        (Some(_), None) => Err(mismatch("the draft has no tokenizer to compare".into())),
        (None, Some(_)) => Err(mismatch("the target has no tokenizer to compare".into())),
        (None, None) => Ok(()),
    }
}
