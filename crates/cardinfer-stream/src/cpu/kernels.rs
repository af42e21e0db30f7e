//! Which kernels compute quantized products on the CPU. A process-wide choice (the
//! products are reached from every weight, with no model at hand), made by the last
//! [`LoadOptions::cpu_kernels`](crate::LoadOptions::cpu_kernels) a model was loaded with.

use std::sync::atomic::{AtomicU8, Ordering};

/// Which kernels compute quantized products on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuKernels {
    /// Ours: row-parallel products on the host pool with the AVX-512 VNNI block dot
    /// products where the machine has them.
    #[default]
    Native,
    /// Our row-parallel products with Candle's per-block dot products (to compare the
    /// block kernels).
    CandleBlockDot,
    /// Every product through Candle's quantized matmul. Candle's x86 path sums in another
    /// order: a block written with Candle's ops (`block_adapter`) gives the built-in
    /// decoder's bits only with Candle's matmul on both sides.
    CandleMatmul,
}

impl std::str::FromStr for CpuKernels {
    type Err = crate::StreamError;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "native" => Ok(Self::Native),
            "candle-dot" => Ok(Self::CandleBlockDot),
            "candle-matmul" => Ok(Self::CandleMatmul),
            other => Err(crate::StreamError::InvalidParameter {
                name: "CPU kernels",
                reason: format!("`{other}` is not a kernel choice (native, candle-dot, candle-matmul)"),
            }),
        }
    }
}

static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Makes `kernels` the choice of this process (loading a model does this with its
/// options; tools that use the kernels without a model call it themselves).
pub fn select(kernels: CpuKernels) {
    CHOICE.store(kernels as u8, Ordering::Relaxed);
}

/// The choice in force.
pub(crate) fn selected() -> CpuKernels {
    match CHOICE.load(Ordering::Relaxed) {
        1 => CpuKernels::CandleBlockDot,
        2 => CpuKernels::CandleMatmul,
        _ => CpuKernels::Native,
    }
}
