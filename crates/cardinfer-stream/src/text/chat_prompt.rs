//! A conversation to token ids, with special tokens only where the template puts them.
//!
//! Rendering a chat template and tokenizing the result would let a user forge turns: a
//! message containing `<|im_end|>\n<|im_start|>assistant\n` would become those control
//! tokens. So the template is rendered with a placeholder for every message's content,
//! the text around the placeholders (the template's own) is tokenized with special tokens
//! parsed, and each message's content is tokenized as plain text, special-token strings
//! included.

use crate::text::chat_template::{ChatTemplate, Message};
use crate::text::tokenizer::Tokenizer;
use crate::{Result, StreamError};

/// The placeholder of message `i`'s content: private-use characters no tokenizer treats
/// specially and no template changes (they are not whitespace).
fn placeholder(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

/// How the template treats a message's content: as given, or trimmed of surrounding
/// whitespace (`| trim`, `.strip()`, the built-in Llama 3 format). The probe is the
/// conversation itself with each content padded around a marker, so a template that
/// insists on a shape (a system turn first) renders it as it renders the real one; one
/// that renders neither is reported by the real rendering.
fn trims_content(template: &ChatTemplate, messages: &[Message]) -> Result<bool> {
    let probe: Vec<Message> = messages.iter().map(|m| Message::new(m.role.clone(), " \u{E002} ")).collect();
    let Ok(text) = template.render(&probe, false) else { return Ok(false) };
    Ok(!text.contains(" \u{E002} ") && text.contains('\u{E002}'))
}

/// Token ids of `messages` rendered by `template` (ending with the assistant's header
/// when `add_generation_prompt`). The template's text is tokenized with special tokens
/// parsed (and BOS added where the model asks for it); every message's content is
/// tokenized as plain text, so text typed by a user can never become a control token.
/// With `trust_content` the content is parsed for special tokens too (the rendered
/// prompt tokenized whole).
pub fn encode_chat(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
    trust_content: bool,
) -> Result<Vec<u32>> {
    if trust_content {
        return tokenizer.encode(&template.render(messages, add_generation_prompt)?);
    }
    if let Some(m) = messages.iter().find(|m| m.content.contains(['\u{E000}', '\u{E001}'])) {
        return Err(StreamError::InvalidParameter {
            name: "message content",
            reason: format!("a {} message contains U+E000 or U+E001, which are reserved", m.role),
        });
    }
    let trims = trims_content(template, messages)?;
    let masked: Vec<Message> =
        messages.iter().enumerate().map(|(i, m)| Message::new(m.role.clone(), placeholder(i))).collect();
    let rendered = template.render(&masked, add_generation_prompt)?;
    let mut ids = Vec::new();
    let mut rest = rendered.as_str();
    let mut first = true;
    while !rest.is_empty() {
        // The next placeholder, whichever message it is (a template may reorder them).
        let next = rest.find('\u{E000}').and_then(|start| {
            let end = start + rest[start..].find('\u{E001}')?;
            let index: usize = rest[start + '\u{E000}'.len_utf8()..end].parse().ok()?;
            Some((start, end + '\u{E001}'.len_utf8(), index))
        });
        let (template_text, content, after) = match next {
            Some((start, end, index)) => {
                let message = messages.get(index).ok_or_else(|| {
                    StreamError::ChatTemplate(format!("the template rendered message {index} of {}", messages.len()))
                })?;
                let content = if trims { message.content.trim() } else { message.content.as_str() };
                (&rest[..start], Some(content), &rest[end..])
            }
            None => (rest, None, ""),
        };
        if !template_text.is_empty() || first {
            let piece =
                if first { tokenizer.encode(template_text)? } else { tokenizer.encode_continuation(template_text)? };
            ids.extend(piece);
            first = false;
        }
        if let Some(content) = content.filter(|c| !c.is_empty()) {
            ids.extend(tokenizer.encode_text(content)?);
        }
        rest = after;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_templates_are_recognised() {
        let user = [Message::new("user", "hi")];
        assert!(trims_content(&ChatTemplate::Llama3, &user).unwrap());
        assert!(!trims_content(&ChatTemplate::ChatMl, &user).unwrap());
        let jinja = |source: &str| ChatTemplate::Jinja {
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let trim = jinja("{% for m in messages %}{{ m['content'] | trim }}{% endfor %}");
        assert!(trims_content(&trim, &user).unwrap());
        let as_given = jinja("{% for m in messages %}[{{ m['content'] }}]{% endfor %}");
        assert!(!trims_content(&as_given, &user).unwrap());
        // A template that insists on a system turn first is probed in the conversation's shape.
        let strict = jinja(
            "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}\
             {% for m in messages %}{{ m['content'] | trim }}{% endfor %}",
        );
        let conversation = [Message::new("system", "Be brief."), Message::new("user", "hi")];
        assert!(trims_content(&strict, &conversation).unwrap());
    }
}
