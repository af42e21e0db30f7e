//! GGUF: reader (mmap, validated tensor table), writer, and model spec from metadata.

mod reader;
mod spec;
mod value;
mod writer;

pub use reader::{align_up, GgufFile, DEFAULT_ALIGNMENT};
pub use spec::GLOBAL_LAYERS_KEY;
pub use value::GgufValue;
pub use writer::GgufWriter;

#[cfg(test)]
mod tests;
