#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use cardinfer_core as core;
pub use cardinfer_plan as plan;
pub use cardinfer_quant as quant;
pub use cardinfer_stream as stream;
