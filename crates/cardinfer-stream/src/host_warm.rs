//! Reading a host layer's first weights into the CPU's caches while the device finishes
//! the work queued before it.
//!
//! In a hybrid decode step the CPU waits at each host layer for its input: the device
//! computes the layer before it (0.1–0.3 ms on the H100 machine, hop included) while the
//! host pool's threads spin. The layer's first job then reads its q, k and v matrices from
//! memory (8.8 MB for a Qwen3-4B layer). [`warm_first_products`] reads them during the
//! wait instead, one byte per cache line on every thread in use, so that job finds them in
//! the caches (each core's L2, and the others' through the shared last level). It only
//! reads: results never change.
//!
//! `CARDINFER_HOST_WARM` sets the KiB warmed per thread (`0` turns it off, to compare on
//! a machine; default [`BYTES_PER_THREAD`]).

use crate::names::Role;
use crate::weights::{BlockWeights, Weight};
use std::sync::OnceLock;

/// Bytes of one cache line (the x86 and Arm server cores').
pub const CACHE_LINE: usize = 64;

/// Bytes warmed per thread in use by default: half of a 2 MiB L2 (the H100 machine's Xeon
/// cores), so the job that follows keeps what was read.
pub const BYTES_PER_THREAD: usize = 1 << 20;

/// Bytes per task of the host pool.
const PIECE: usize = 64 << 10;

/// Bytes warmed per thread in use (0: off).
pub fn bytes_per_thread() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("CARDINFER_HOST_WARM")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(BYTES_PER_THREAD, |kib| kib << 10)
    })
}

/// Reads the first bytes of `weights`' q, k and v matrices (in that order, as their job
/// takes them) into the caches, up to [`bytes_per_thread`] per thread of the host pool;
/// returns the bytes read (0 when warming is off or the matrices are not quantized in host
/// memory).
pub fn warm_first_products(weights: &BlockWeights) -> usize {
    let per_thread = bytes_per_thread();
    if per_thread == 0 {
        return 0;
    }
    let mut datas = Vec::with_capacity(3);
    for role in [Role::AttnQ, Role::AttnK, Role::AttnV] {
        if let Ok(Weight::Quantized(q)) = weights.get(role) {
            if q.device().is_cpu() {
                if let Ok(data) = q.data() {
                    datas.push(data);
                }
            }
        }
    }
    let regions: Vec<&[u8]> = datas.iter().map(|d| d.as_ref()).collect();
    warm(&regions, per_thread * crate::host_pool::threads())
}

/// Reads one byte of every cache line of `regions`, in order, up to `max_bytes` in all, on
/// the host pool's threads; returns the bytes covered.
pub fn warm(regions: &[&[u8]], max_bytes: usize) -> usize {
    let pieces = pieces_of(regions, max_bytes);
    let covered = pieces.iter().map(|p| p.len()).sum();
    crate::host_pool::global().for_each_range(pieces.len(), |range| {
        let mut sum = 0u8;
        for piece in &pieces[range] {
            sum = piece.iter().step_by(CACHE_LINE).fold(sum, |s, b| s.wrapping_add(*b));
        }
        std::hint::black_box(sum);
    });
    covered
}

/// `regions` cut into slices of at most [`PIECE`] bytes, in order, until `max_bytes`.
fn pieces_of<'a>(regions: &[&'a [u8]], max_bytes: usize) -> Vec<&'a [u8]> {
    let mut left = max_bytes;
    let mut pieces = Vec::new();
    for region in regions {
        let take = region.len().min(left);
        pieces.extend(region[..take].chunks(PIECE));
        left -= take;
        if left == 0 {
            break;
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_regions_in_order_up_to_the_budget() {
        let (a, b, c) = (vec![1u8; PIECE + 10], vec![2u8; 30], vec![3u8; PIECE]);
        let regions: Vec<&[u8]> = vec![&a, &b, &c];
        let all = pieces_of(&regions, usize::MAX);
        assert_eq!(all.iter().map(|p| p.len()).collect::<Vec<_>>(), [PIECE, 10, 30, PIECE]);
        assert_eq!((all[1][0], all[2][0], all[3][0]), (1, 2, 3));
        let some = pieces_of(&regions, PIECE + 20);
        assert_eq!(some.iter().map(|p| p.len()).collect::<Vec<_>>(), [PIECE, 10, 10]);
        assert!(pieces_of(&regions, 0).is_empty());
    }
}
