//! What happens to each generated token, for every generation loop: it is recorded, its
//! text is decoded incrementally and handed on (holding back what could begin a stop
//! string), and the loop is told when to stop (EOS, a stop string, `max_tokens`).

use crate::text::generator::{GenerateOptions, StopReason};
use crate::text::tokenizer::{IncrementalDecoder, Tokenizer};
use crate::Result;

/// The generated tokens and their text so far.
pub(crate) struct Emitter<'a> {
    tokenizer: Option<&'a Tokenizer>,
    options: &'a GenerateOptions,
    eos: &'a [u32],
    detok: IncrementalDecoder,
    text: String,
    /// Bytes of `text` already handed on.
    emitted: usize,
    generated: Vec<u32>,
}

impl<'a> Emitter<'a> {
    /// An emitter for one generation; `eos` are the model's end-of-sequence ids.
    pub(crate) fn new(tokenizer: Option<&'a Tokenizer>, options: &'a GenerateOptions, eos: &'a [u32]) -> Self {
        Self {
            tokenizer,
            options,
            eos,
            detok: IncrementalDecoder::new(),
            text: String::new(),
            emitted: 0,
            generated: Vec::new(),
        }
    }

    /// Records `id`, hands on the text that is final, and says whether generation ends here.
    pub(crate) fn push(&mut self, id: u32, on_text: &mut impl FnMut(&str)) -> Result<Option<StopReason>> {
        self.generated.push(id);
        if self.eos.contains(&id) || self.options.extra_eos.contains(&id) {
            return Ok(Some(StopReason::Eos));
        }
        if let Some(tok) = self.tokenizer {
            if let Some(piece) = self.detok.push(tok, id)? {
                self.text += &piece;
            }
            if let Some(cut) = find_stop(&self.text, &self.options.stop_strings) {
                self.text.truncate(cut);
                return Ok(Some(StopReason::StopString));
            }
            // Hold back text that could be the start of a stop string.
            let safe = self.text.len() - partial_stop_len(&self.text, &self.options.stop_strings);
            if safe > self.emitted && self.text.is_char_boundary(safe) {
                on_text(&self.text[self.emitted..safe]);
                self.emitted = safe;
            }
        }
        Ok((self.generated.len() >= self.options.max_tokens).then_some(StopReason::MaxTokens))
    }

    /// Tokens generated so far.
    pub(crate) fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// Hands on the rest of the text and returns the tokens and the text.
    pub(crate) fn finish(mut self, stop: StopReason, on_text: &mut impl FnMut(&str)) -> Result<(Vec<u32>, String)> {
        if let (Some(tok), false) = (self.tokenizer, stop == StopReason::StopString) {
            if let Some(rest) = self.detok.finish(tok)? {
                self.text += &rest;
            }
        }
        if self.text.len() > self.emitted {
            on_text(&self.text[self.emitted..]);
        }
        Ok((self.generated, self.text))
    }
}

fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
}

/// Length of the longest suffix of `text` that is a proper prefix of a stop string.
fn partial_stop_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(move |&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
        .filter(|prefix| text.ends_with(prefix))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_helpers() {
        let stops = vec!["\n\nUser:".to_string()];
        assert_eq!(find_stop("Hi\n\nUser: x", &stops), Some(2));
        assert_eq!(find_stop("Hi", &stops), None);
        assert_eq!(partial_stop_len("Hi\n\nUs", &stops), 4);
        assert_eq!(partial_stop_len("Hi", &stops), 0);
    }

    #[test]
    fn eos_and_max_tokens_end_the_generation() {
        let options = GenerateOptions { max_tokens: 3, extra_eos: vec![9], ..Default::default() };
        let mut emitter = Emitter::new(None, &options, &[7]);
        let mut sink = |_: &str| {};
        assert_eq!(emitter.push(1, &mut sink).unwrap(), None);
        assert_eq!(emitter.push(9, &mut sink).unwrap(), Some(StopReason::Eos));
        let mut emitter = Emitter::new(None, &options, &[7]);
        assert_eq!(emitter.push(1, &mut sink).unwrap(), None);
        assert_eq!(emitter.push(2, &mut sink).unwrap(), None);
        assert_eq!(emitter.push(3, &mut sink).unwrap(), Some(StopReason::MaxTokens));
        assert_eq!(emitter.generated(), &[1, 2, 3]);
    }
}
