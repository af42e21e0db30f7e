//! Attention of a prompt chunk over a long cache in tiles of keys (flash-attention's
//! online softmax, in Candle ops), so the chunk's score matrix never holds more than
//! [`ATTENTION_KEY_TILE`] keys per query row: at a 32k context a 512-token chunk of a
//! 32-head model would otherwise hold 2 GiB of scores (and as much again for their
//! exponentials), which small budgets answer with tiny prefill chunks.
//!
//! Each tile of keys gives its scores, their running maximum per query row, and the
//! exponentials' sum and weighted values, rescaled as the maximum moves; the result is the
//! softmax attention up to rounding (checked against the whole-matrix softmax in the tests).
//! The device's plain prefill path takes it for causal layers once the cache holds
//! [`TILED_FROM_KEYS`] keys; the CPU attends row by row (`cpu::attention`) and has no score
//! matrix.

use crate::Result;
use candle_core::{DType, Tensor, D};
pub(crate) use cardinfer_plan::ATTENTION_KEY_TILE;

/// Caches of at least this many keys are attended in tiles (below it, one score matrix of
/// at most this many keys per row is no larger than two tiles' scores and exponentials).
pub(crate) const TILED_FROM_KEYS: usize = 2 * ATTENTION_KEY_TILE;

/// Causal softmax attention of `q` (`[b, kv_heads, group · seq, d]`: row `r` is a query at
/// position `pos + r % seq`) over the keys and values `k`, `v` (`[b, kv_heads, total, d]`,
/// key `j` at position `j`), scores scaled by `scale`, `tile` keys at a time. Returns
/// `[b, kv_heads, group · seq, d]`.
pub(crate) fn tiled_attention(
    q: &Tensor,
    (k, v): (&Tensor, &Tensor),
    (seq, pos): (usize, usize),
    scale: f64,
    tile: usize,
) -> Result<Tensor> {
    let rows = q.dim(2)?;
    let device = q.device();
    // Keys after the last query's position are never seen.
    let keys = k.dim(2)?.min(pos + seq);
    let row_pos: Vec<f32> = (0..rows).map(|r| (pos + r % seq.max(1)) as f32).collect();
    let row_pos = Tensor::from_vec(row_pos, (rows, 1), device)?;
    // (running max, sum of exponentials, weighted values) per query row.
    let mut state: Option<(Tensor, Tensor, Tensor)> = None;
    for start in (0..keys).step_by(tile.max(1)) {
        let n = tile.max(1).min(keys - start);
        let k_tile = k.narrow(2, start, n)?.contiguous()?;
        let v_tile = v.narrow(2, start, n)?.contiguous()?;
        let mut scores = (q.matmul(&k_tile.t()?)? * scale)?;
        if start + n > pos + 1 {
            // Some row comes before some key of this tile: mask what it must not see.
            let key_pos = Tensor::arange(start as f32, (start + n) as f32, device)?.reshape((1, n))?;
            let visible = key_pos.broadcast_le(&row_pos)?;
            let open = Tensor::zeros((rows, n), DType::F32, device)?;
            let closed = Tensor::full(f32::NEG_INFINITY, (rows, n), device)?;
            scores = scores.broadcast_add(&visible.where_cond(&open, &closed)?)?;
        }
        // Key 0 is visible to every row, so after the first tile every row's maximum is
        // finite and a tile a row cannot see adds e^-inf = 0.
        let tile_max = scores.max_keepdim(D::Minus1)?;
        let max = match &state {
            Some((m, _, _)) => m.maximum(&tile_max)?,
            None => tile_max,
        };
        let p = scores.broadcast_sub(&max)?.exp()?;
        let (tile_sum, tile_values) = (p.sum_keepdim(D::Minus1)?, p.matmul(&v_tile)?);
        state = Some(match state {
            Some((m, l, acc)) => {
                let correction = (m - &max)?.exp()?;
                let l = (l * &correction)?.add(&tile_sum)?;
                let acc = acc.broadcast_mul(&correction)?.add(&tile_values)?;
                (max, l, acc)
            }
            None => (max, tile_sum, tile_values),
        });
    }
    let Some((_, l, acc)) = state else {
        return Err(crate::StreamError::InvalidParameter { name: "attention", reason: "no keys to attend".into() });
    };
    Ok(acc.broadcast_div(&l)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::ops::softmax_last_dim;

    fn random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let values: Vec<f32> =
            (0..n as u64).map(|i| (((i * 2654435761 + seed * 40503) % 1000) as f32 / 500.0) - 1.0).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// The whole score matrix, masked and normalized at once.
    fn whole(q: &Tensor, k: &Tensor, v: &Tensor, seq: usize, pos: usize, scale: f64) -> Tensor {
        let (rows, total) = (q.dim(2).unwrap(), k.dim(2).unwrap());
        let mask: Vec<f32> = (0..rows)
            .flat_map(|r| (0..total).map(move |j| if j <= pos + r % seq { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mask = Tensor::from_vec(mask, (rows, total), &Device::Cpu).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap().broadcast_add(&mask).unwrap();
        softmax_last_dim(&scores).unwrap().matmul(v).unwrap()
    }

    #[test]
    fn tiles_give_the_whole_softmax() {
        // Two KV heads of a group of 3 query heads; a chunk of 5 tokens after 37 cached.
        let (kv_heads, group, seq, pos, d) = (2, 3, 5, 37, 16);
        let total = pos + seq;
        let q = random((1, kv_heads, group * seq, d), 1);
        let (k, v) = (random((1, kv_heads, total, d), 2), random((1, kv_heads, total, d), 3));
        let want = whole(&q, &k, &v, seq, pos, 0.25).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for tile in [1, 7, 16, 40, 64] {
            let got = tiled_attention(&q, (&k, &v), (seq, pos), 0.25, tile).unwrap();
            assert_eq!(got.dims(), &[1, kv_heads, group * seq, d]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "tile {tile}: max difference {diff}");
        }
        // A cache holding more positions than the chunk reaches: the later keys are unseen.
        let (k2, v2) = (random((1, kv_heads, total + 9, d), 2), random((1, kv_heads, total + 9, d), 3));
        let (k2, v2) = (
            Tensor::cat(&[&k, &k2.narrow(2, total, 9).unwrap()], 2).unwrap(),
            Tensor::cat(&[&v, &v2.narrow(2, total, 9).unwrap()], 2).unwrap(),
        );
        let got = tiled_attention(&q, (&k2, &v2), (seq, pos), 0.25, 8).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "keys past the chunk: {diff}");
    }
}
