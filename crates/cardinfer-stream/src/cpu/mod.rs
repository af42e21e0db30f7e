//! The CPU side: the host thread pool, quantized matrix-vector products, and the exact
//! twins of the CUDA decode kernels that compute host layers in hybrid decode.

pub(crate) mod attention;
pub mod exact;
pub mod host_pool;
pub mod kernels;
pub(crate) mod kv_rows;
pub mod matvec;
pub(crate) mod packed_rows;
pub mod x86;
