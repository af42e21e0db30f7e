//! The device side of streaming: the copy stream and its events, the slot buffers a
//! streamed block is copied into, the quantized kernels launched on a slot's raw pointer,
//! and the fused decode ops. Without the `cuda` feature every type here has a twin that
//! compiles and reports "built without CUDA" (as Candle's `dummy_cuda_backend` does), so
//! no `cfg` reaches the rest of the crate.

pub mod copy_stream;
pub mod fused_ops;
pub(crate) mod routed;
pub mod sizes;
#[cfg(feature = "cuda")]
pub mod slot_kernels;
pub mod slots;

/// The kernels of `kernels/decode.cu` (`DECODE`) and `kernels/moe.cu` (`MOE`), compiled
/// to PTX by the build script.
#[cfg(feature = "cuda")]
pub(crate) mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
    /// The name the module is cached under on each device.
    pub const MODULE: &str = "cardinfer_decode";
    /// The name the mixture-of-experts module is cached under on each device.
    pub const MOE_MODULE: &str = "cardinfer_moe";
}
