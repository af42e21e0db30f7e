//! Chat templates: the model's own Jinja template where it has one (GGUF
//! `tokenizer.chat_template`, `tokenizer_config.json`), else a built-in one for the family
//! (ChatML for Qwen / SmolLM2, the Llama 3 header format).

use crate::text::tokenizer::Tokenizer;
use crate::{Result, StreamError};
use serde::Serialize;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// Instructions a Jinja template may execute to render one conversation: about a hundred
/// times what real templates use for a long conversation, so a hostile template (a loop
/// over `range(10**9)`) ends with an error instead of hanging.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// The most text a chat template may render: far more than any context holds, so a
/// template that loops over long text ends with an error instead of exhausting memory.
pub const TEMPLATE_OUTPUT_BYTES: usize = 16 << 20;

/// Stack of the thread a chat template renders on.
const TEMPLATE_STACK_BYTES: usize = 32 << 20;

/// The longest a chat template may take to render (real ones take well under a
/// millisecond); see [`ChatTemplate::render`].
pub const TEMPLATE_SECONDS: u64 = 2;

/// A rendering's text, refused past [`TEMPLATE_OUTPUT_BYTES`] (the flag says it was).
struct CappedText(Vec<u8>, bool);

impl std::io::Write for CappedText {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > TEMPLATE_OUTPUT_BYTES {
            self.1 = true;
            return Err(std::io::Error::other(format!("the rendered prompt exceeds {TEMPLATE_OUTPUT_BYTES} bytes")));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a conversation becomes prompt text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// A Jinja template shipped with the model.
    Jinja {
        /// Template source.
        source: String,
        /// Text of the BOS token, exposed to the template as `bos_token`.
        bos_token: String,
        /// Text of the EOS token, exposed as `eos_token`.
        eos_token: String,
    },
    /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen, SmolLM2).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3).
    Llama3,
    /// `<start_of_turn>role\ncontent<end_of_turn>\n`, the assistant's role `model`, a system
    /// message's text put before the first user turn's (Gemma 3).
    Gemma,
}

impl ChatTemplate {
    /// The model's template if it has one that renders, else the built-in one its
    /// vocabulary implies.
    pub fn select(
        model_template: Option<String>,
        tokenizer: Option<&Tokenizer>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Self {
        Self::select_explained(model_template, tokenizer, bos, eos).0
    }

    /// [`ChatTemplate::select`], with a note saying why the model's own template was not
    /// used when it has one that does not render (for the user to see: the built-in
    /// format may not be the one the model was trained on).
    pub fn select_explained(
        model_template: Option<String>,
        tokenizer: Option<&Tokenizer>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> (Self, Option<String>) {
        let builtin = match tokenizer {
            Some(t) if t.token_to_id("<|start_header_id|>").is_some() => Self::Llama3,
            Some(t) if t.token_to_id("<start_of_turn>").is_some() => Self::Gemma,
            _ => Self::ChatMl,
        };
        let Some(source) = model_template else { return (builtin, None) };
        let jinja = Self::Jinja { source, bos_token: bos.unwrap_or_default(), eos_token: eos.unwrap_or_default() };
        // A template this engine cannot render falls back to the built-in format.
        match jinja.render(&[Message::new("user", "hi")], true) {
            Ok(_) => (jinja, None),
            Err(e) => {
                let name = match builtin {
                    Self::Llama3 => "Llama 3",
                    Self::Gemma => "Gemma",
                    _ => "ChatML",
                };
                (
                    builtin,
                    Some(format!("the model's chat template does not render ({e}); using the built-in {name} format")),
                )
            }
        }
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the assistant header.
    ///
    /// A Jinja template is code from the model file: it renders within
    /// [`TEMPLATE_FUEL`] instructions, [`TEMPLATE_OUTPUT_BYTES`] of output and
    /// [`TEMPLATE_SECONDS`], else this returns an error. Past the time limit the rendering
    /// thread is abandoned (Rust cannot stop a thread): it runs on until its work ends or
    /// the process does — a template that loops inside one instruction (`x in (() * 10**13)`,
    /// which the fuel does not count) costs one core, not the caller.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let Self::Jinja { .. } = self else { return self.render_here(messages, add_generation_prompt) };
        let (done, result) = std::sync::mpsc::channel();
        let (template, messages) = (self.clone(), messages.to_vec());
        std::thread::Builder::new()
            .name("chat-template".into())
            // minijinja bounds its recursion for a main thread's stack (8 MiB); a spawned
            // thread's default 2 MiB overflowed on nested templates (the fuzz target,
            // unoptimized): give it more.
            .stack_size(TEMPLATE_STACK_BYTES)
            .spawn(move || {
                let _ = done.send(template.render_here(&messages, add_generation_prompt));
            })
            .map_err(|e| StreamError::Internal(format!("cannot start the chat-template thread: {e}")))?;
        match result.recv_timeout(std::time::Duration::from_secs(TEMPLATE_SECONDS)) {
            Ok(rendered) => rendered,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(StreamError::ChatTemplate(format!(
                "the template did not finish rendering within {TEMPLATE_SECONDS} s (it loops without end)"
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(StreamError::Internal("the chat-template thread stopped without a result".into()))
            }
        }
    }

    fn render_here(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match self {
            Self::ChatMl => {
                let mut out = String::new();
                for m in messages {
                    out += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    out += "<|im_start|>assistant\n";
                }
                Ok(out)
            }
            Self::Llama3 => {
                let mut out = String::from("<|begin_of_text|>");
                for m in messages {
                    out += &format!("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role, m.content.trim());
                }
                if add_generation_prompt {
                    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
                }
                Ok(out)
            }
            Self::Gemma => {
                // BOS is the tokenizer's to add (Gemma's files ask for it).
                let mut out = String::new();
                let mut system = None;
                for m in messages {
                    if m.role == "system" {
                        system = Some(m.content.trim());
                        continue;
                    }
                    let role = if m.role == "assistant" { "model" } else { m.role.as_str() };
                    let before = system.take().map(|s| format!("{s}\n\n")).unwrap_or_default();
                    out += &format!("<start_of_turn>{role}\n{before}{}<end_of_turn>\n", m.content.trim());
                }
                if add_generation_prompt {
                    out += "<start_of_turn>model\n";
                }
                Ok(out)
            }
            Self::Jinja { source, bos_token, eos_token } => {
                let mut env = minijinja::Environment::new();
                // A template is code from the model file: bound the work it may do.
                env.set_fuel(Some(TEMPLATE_FUEL));
                minijinja_contrib::add_to_environment(&mut env);
                env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
                env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
                    Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
                });
                let err = |e: minijinja::Error| StreamError::ChatTemplate(e.to_string());
                env.add_template("chat", source).map_err(err)?;
                let template = env.get_template("chat").map_err(err)?;
                let context = minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => bos_token,
                    eos_token => eos_token,
                };
                let mut out = CappedText(Vec::new(), false);
                if let Err(e) = template.render_captured_to(context, &mut out) {
                    return Err(match out.1 {
                        true => StreamError::ChatTemplate(format!(
                            "the rendered prompt exceeds {TEMPLATE_OUTPUT_BYTES} bytes (the template loops over long text)"
                        )),
                        false => err(e),
                    });
                }
                String::from_utf8(out.0).map_err(|e| StreamError::ChatTemplate(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn jinja_template_matches_builtin_chatml() {
        let messages = [Message::new("system", "Be brief."), Message::new("user", "What is 2+2?")];
        let jinja = ChatTemplate::select(Some(SMOLLM2.into()), None, None, None);
        assert!(matches!(jinja, ChatTemplate::Jinja { .. }));
        assert_eq!(jinja.render(&messages, true).unwrap(), ChatTemplate::ChatMl.render(&messages, true).unwrap());
        assert_eq!(
            ChatTemplate::ChatMl.render(&messages[1..], true).unwrap(),
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn broken_template_falls_back() {
        let (t, note) = ChatTemplate::select_explained(Some("{% for %}".into()), None, None, None);
        assert_eq!(t, ChatTemplate::ChatMl);
        let note = note.expect("the fallback is explained");
        assert!(note.contains("does not render") && note.contains("ChatML"), "{note}");
        assert_eq!(ChatTemplate::select_explained(Some(SMOLLM2.into()), None, None, None).1, None);
        let raising = "{{ raise_exception('no') }}";
        assert_eq!(ChatTemplate::select(Some(raising.into()), None, None, None), ChatTemplate::ChatMl);
    }

    #[test]
    fn hostile_templates_end_with_an_error() {
        let jinja = |source: &str| ChatTemplate::Jinja {
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let messages = [Message::new("user", "hi")];
        // Found by the chat_template fuzz target: 1.3M iterations of output.
        let slow = "{% for i in range(398) %}{% for j in range(3198) %}{{ 'es0]o' }}{% endfor %}{% endfor %}";
        let endless = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let huge = "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}";
        for source in [slow, endless, huge] {
            let err = jinja(source).render(&messages, true).unwrap_err().to_string();
            assert!(err.contains("fuel") || err.contains("exceeds"), "{source}: {err}");
        }
        // Found by the chat_template fuzz target: one `in` over an empty tuple repeated
        // 3.9·10^13 times, a single instruction that never ends.
        let spin = "{{ 4 < 44 in 4444531711 * 8885 * () }}";
        let err = jinja(spin).render(&messages, true).unwrap_err().to_string();
        assert!(err.contains("did not finish rendering within"), "{err}");
    }

    #[test]
    fn gemma_format() {
        let messages = [
            Message::new("system", "Be brief."),
            Message::new("user", " Hi "),
            Message::new("assistant", "Hello."),
            Message::new("user", "2+2?"),
        ];
        let text = ChatTemplate::Gemma.render(&messages, true).unwrap();
        assert_eq!(
            text,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn llama3_format() {
        let text = ChatTemplate::Llama3.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }
}
