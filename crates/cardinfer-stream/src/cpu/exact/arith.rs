//! The scalar building blocks shared with `kernels/decode.cu`: e^x, 1/rms, and the
//! reductions of a warp (32 lanes) and of a thread block, in the GPU's order.

/// The constants of `exact_expf` (`kernels/decode.cu`), as the bits its decimal literals
/// round to: log2(e), ln 2 split in a high part (exact in its product with k) and a low
/// part, and 1/7! … 1/2!.
const LOG2_E: u32 = 0x3fb8_aa3b; // 1.44269504f
const LN2_HIGH: u32 = 0x3f31_7200; // 0.693145752f
const LN2_LOW: u32 = 0x35bf_be8e; // 1.42860677e-6f
const POLY: [u32; 5] = [
    0x3950_0d01, // 1.98412701e-4f (1/5040)
    0x3ab6_0b61, // 1.38888892e-3f (1/720)
    0x3c08_8889, // 8.33333377e-3f (1/120)
    0x3d2a_aaab, // 4.16666679e-2f (1/24)
    0x3e2a_aaab, // 1.66666672e-1f (1/6)
];
/// Above this e^x overflows (88.72f).
const EXP_MAX: u32 = 0x42b1_70a4;

/// e^x as `exact_expf` in `kernels/decode.cu` computes it: Cody–Waite range reduction,
/// a degree-7 polynomial in fused multiply-adds, and two exact scalings by powers of two.
/// About one ulp from the true value; the same bits on both sides.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x <= -104.0 {
        return 0.0;
    }
    if x > f32::from_bits(EXP_MAX) {
        return f32::INFINITY;
    }
    let k = (x * f32::from_bits(LOG2_E)).round_ties_even();
    let mut r = k.mul_add(-f32::from_bits(LN2_HIGH), x);
    r = k.mul_add(-f32::from_bits(LN2_LOW), r);
    let mut p = f32::from_bits(POLY[0]);
    for c in &POLY[1..] {
        p = p.mul_add(r, f32::from_bits(*c));
    }
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    let ki = k as i32;
    let (k1, k2) = (ki / 2, ki - ki / 2);
    p * power_of_two(k1) * power_of_two(k2)
}

/// 2^k for k in the normal exponent range (-126..=127).
#[inline(always)]
fn power_of_two(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// `1 / sqrt(sum_sq / n + eps)`, each step correctly rounded (`inv_rms_rn`).
#[inline(always)]
pub fn inv_rms(sum_sq: f32, n: usize, eps: f32) -> f32 {
    1.0 / (sum_sq / n as f32 + eps).sqrt()
}

/// A warp's xor-butterfly sum (masks 16, 8, 4, 2, 1) of its 32 lanes: every lane ends
/// with the value returned.
#[inline(always)]
pub fn warp_sum(lanes: [f32; 32]) -> f32 {
    butterfly(lanes)
}

/// The xor butterfly over `N` lanes (a power of two): masks `N/2, …, 1`, lane `l` adding
/// lane `l ^ mask` (the same sum as `l ^ mask` adding `l`), lane 0's result.
#[inline(always)]
pub fn butterfly<const N: usize>(mut lanes: [f32; N]) -> f32 {
    let mut mask = N / 2;
    while mask > 0 {
        for lane in 0..mask {
            lanes[lane] += lanes[lane + mask];
        }
        mask /= 2;
    }
    lanes[0]
}

/// `block_sum_rn` of `kernels/decode.cu` over one value per thread (a multiple of 32
/// threads, at most 1024): each warp's butterfly, then one more over the warps' sums.
#[inline(always)]
pub fn block_sum(per_thread: &[f32]) -> f32 {
    let mut partial = [0f32; 32];
    for (w, slot) in partial.iter_mut().enumerate().take(per_thread.len().div_ceil(32)) {
        let mut lanes = [0f32; 32];
        let warp = &per_thread[32 * w..(32 * w + 32).min(per_thread.len())];
        lanes[..warp.len()].copy_from_slice(warp);
        *slot = warp_sum(lanes);
    }
    warp_sum(partial)
}

/// Whether the CPU has AVX2 and FMA: the twins then run compiled for them (a fused
/// multiply-add is one instruction instead of a library call; the results are the same).
#[inline]
pub fn fast_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 2 ulp of the correctly rounded e^x (computed in f64) over the range the
    /// kernels use, and the edges: underflow to 0, overflow to ∞, NaN kept.
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0u32;
        let mut x = -103.9f32;
        while x < 88.7 {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).unsigned_abs() as u32;
            if want.is_normal() {
                worst = worst.max(ulps);
            }
            x += 0.0137;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    /// The constants are the bits of the kernel's decimal literals.
    #[test]
    fn constants_are_the_kernels() {
        let bits = |s: &str| s.parse::<f32>().map(f32::to_bits).unwrap();
        assert_eq!(LOG2_E, bits("1.44269504"));
        assert_eq!(LN2_HIGH, bits("0.693145752"));
        assert_eq!(LN2_LOW, bits("1.42860677e-6"));
        let poly = ["1.98412701e-4", "1.38888892e-3", "8.33333377e-3", "4.16666679e-2", "1.66666672e-1"];
        assert_eq!(POLY.to_vec(), poly.map(bits).to_vec());
        assert_eq!(EXP_MAX, bits("88.72"));
    }

    #[test]
    fn reductions_follow_the_butterfly() {
        // 1e8 + 1 - 1e8 loses the 1 in one order and keeps it in another: the butterfly
        // adds lane 0 to lane 16 first.
        let mut lanes = [0f32; 32];
        lanes[0] = 1e8;
        lanes[16] = 1.0;
        lanes[8] = -1e8;
        assert_eq!(warp_sum(lanes), (1e8f32 + 1.0) + -1e8);
        let values: Vec<f32> = (0..1024).map(|i| i as f32).collect();
        assert_eq!(block_sum(&values), (1023 * 1024 / 2) as f32);
        assert_eq!(block_sum(&values[..32]), (31 * 32 / 2) as f32);
    }
}
