//! The scalar building blocks shared with `kernels/decode.cu`: e^x, 1/rms, and the
//! reductions of a warp (32 lanes) and of a thread block, in the GPU's order.

/// e^x as `exact_expf` in `kernels/decode.cu` computes it: Cody–Waite range reduction,
/// a degree-7 polynomial in fused multiply-adds, and two exact scalings by powers of two.
/// About one ulp from the true value; the same bits on both sides.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if !(x > -104.0) {
        return if x.is_nan() { x } else { 0.0 };
    }
    if x > 88.72 {
        return f32::INFINITY;
    }
    let k = (x * 1.442_695_04).round_ties_even();
    let mut r = k.mul_add(-0.693_145_752, x);
    r = k.mul_add(-1.428_606_77e-6, r);
    let mut p = 1.984_127_01e-4f32;
    p = p.mul_add(r, 1.388_888_92e-3);
    p = p.mul_add(r, 8.333_333_77e-3);
    p = p.mul_add(r, 4.166_666_79e-2);
    p = p.mul_add(r, 1.666_666_72e-1);
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
pub fn warp_sum(mut lanes: [f32; 32]) -> f32 {
    let mut mask = 16;
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
