//! The speculative sampling rule (Leviathan et al. 2023; Chen et al. 2023): drafted tokens
//! are kept or replaced so that the tokens that come out are distributed exactly as the
//! target model's own samples, whatever the draft proposed.

use crate::text::sampling::Sampler;
use crate::Result;

/// What verification kept of a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Drafted tokens kept, from the first.
    pub accepted: usize,
    /// The token after them: the correction at the first rejection, or a token drawn from
    /// the target's distribution after the last drafted one when all were kept.
    pub next: u32,
}

/// Checks `drafts` (drawn from the draft's distributions `draft_probs`) against the
/// target's distributions: `target_probs(i)` is the target's distribution for the token
/// at drafted position `i` (so `target_probs(drafts.len())` is the one after the last
/// drafted token), computed only where needed. Drafted token `d` at position `i` is kept
/// with probability `min(1, p_i(d) / q_i(d))`; at the first rejection the token is drawn
/// from `max(0, p_i − q_i)` renormalised. With one-hot (greedy) distributions this keeps
/// exactly the drafted tokens equal to the target's argmax, and corrects with the argmax.
pub(crate) fn verify(
    drafts: &[u32],
    draft_probs: &[Vec<f32>],
    mut target_probs: impl FnMut(usize) -> Result<Vec<f32>>,
    sampler: &mut Sampler,
) -> Result<Verdict> {
    for (i, (&d, q)) in drafts.iter().zip(draft_probs).enumerate() {
        let p = target_probs(i)?;
        let (pd, qd) = (p[d as usize], q[d as usize]);
        // A drafted token has q(d) > 0; p(d) ≥ q(d) keeps it without drawing.
        if pd >= qd || (sampler.uniform() as f32) < pd / qd {
            continue;
        }
        let residual: Vec<f32> = p.iter().zip(q).map(|(p, q)| (p - q).max(0.0)).collect();
        // Rounding can leave nothing where p and q nearly agree: then p itself.
        let next = match residual.iter().any(|&r| r > 0.0) {
            true => sampler.draw(&residual)?,
            false => sampler.draw(&p)?,
        };
        return Ok(Verdict { accepted: i, next });
    }
    let p = target_probs(drafts.len())?;
    Ok(Verdict { accepted: drafts.len(), next: sampler.draw(&p)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::sampling::SamplingParams;

    fn sampler(seed: u64) -> Sampler {
        Sampler::new(SamplingParams { temperature: 1.0, seed, ..Default::default() }).unwrap()
    }

    #[test]
    fn greedy_keeps_the_drafts_that_equal_the_argmax_and_corrects_with_it() {
        let one_hot = |i: usize| (0..4).map(|j| if j == i { 1.0 } else { 0.0 }).collect::<Vec<f32>>();
        let target = [1usize, 2, 3, 0];
        let drafts = [1u32, 2, 0];
        let q: Vec<_> = drafts.iter().map(|&d| one_hot(d as usize)).collect();
        let v = verify(&drafts, &q, |i| Ok(one_hot(target[i])), &mut sampler(1)).unwrap();
        assert_eq!(v, Verdict { accepted: 2, next: 3 });
        let v = verify(&drafts[..2], &q[..2], |i| Ok(one_hot(target[i])), &mut sampler(1)).unwrap();
        assert_eq!(v, Verdict { accepted: 2, next: 3 }, "all kept: the next token is the target's");
    }

    /// One drafted token from q, verified against p: the token that comes out first is
    /// distributed as p (chi-square over 4 outcomes, 3 degrees of freedom; 16.27 is the
    /// 0.1 % critical value), although q is far from p.
    #[test]
    fn the_first_token_out_is_distributed_as_the_target() {
        let p = vec![0.5f32, 0.3, 0.15, 0.05];
        let q = vec![0.1f32, 0.2, 0.3, 0.4];
        let mut drafter = sampler(11);
        let mut checker = sampler(12);
        let n = 40_000;
        let mut counts = [0usize; 4];
        let mut kept = 0;
        for _ in 0..n {
            let d = drafter.draw(&q).unwrap();
            let v = verify(&[d], std::slice::from_ref(&q), |_| Ok(p.clone()), &mut checker).unwrap();
            let first = if v.accepted == 1 { d } else { v.next };
            kept += v.accepted;
            counts[first as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&p)
            .map(|(&c, &p)| {
                let e = n as f64 * p as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 16.27, "chi-square {chi2:.2} for counts {counts:?}");
        // Acceptance is sum min(p, q) = 0.1 + 0.2 + 0.15 + 0.05 = 0.5.
        let rate = kept as f64 / n as f64;
        assert!((rate - 0.5).abs() < 0.02, "acceptance {rate:.3}");
    }
}
