//! x86-64 vector kernels (AVX-512 VNNI), detected at run time; each has a portable
//! fallback in its caller.

pub(crate) mod legacy_dot;
pub(crate) mod legacy_vnni;
#[cfg(target_arch = "x86_64")]
pub(crate) mod mmvq_avx512;
pub(crate) mod q4k_packed;
pub mod vnni_dot;
