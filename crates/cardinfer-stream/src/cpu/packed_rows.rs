//! Row kernels ([`RowDot`]) whose inputs are repacked once per product for the AVX-512 VNNI
//! kernels: the legacy 32-value block types ([`crate::cpu::x86::legacy_vnni`]) and Q4_K
//! ([`crate::cpu::x86::q4k_packed`]). [`crate::cpu::matvec`] chooses them where the CPU has
//! the features.

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ8K};
use candle_core::quantized::GgmlType;

use crate::cpu::matvec::{blocks_of, quantize_rows, KernelArgs, RowDot};

/// A legacy-type weight (Candle's block `T`, our mirror `M`) with its inputs repacked for
/// the AVX-512 VNNI kernels ([`crate::cpu::x86::legacy_vnni`]); `None` for layouts not
/// covered.
pub(crate) fn legacy<'a, T, M>((bytes, n, k, xs, rows): KernelArgs<'a, '_>) -> Option<Box<dyn RowDot + 'a>>
where
    T: GgmlType + 'a,
    T::VecDotType: crate::cpu::x86::legacy_vnni::InputBlock,
    M: crate::cpu::x86::legacy_vnni::Unsigned + 'a,
{
    let w = blocks_of::<T>(bytes, n, k)?;
    let x_blocks = k / T::VecDotType::BLCK_SIZE;
    let xq: Vec<T::VecDotType> = quantize_rows(xs, k, rows);
    let inputs = crate::cpu::x86::legacy_vnni::PackedInputs::new::<M, _>(&xq, rows, x_blocks);
    // SAFETY: each mirror has its Candle type's size and no stricter alignment (checked at
    // compile time in legacy_dot), all plain data.
    let w: &[M] = unsafe { crate::cpu::x86::vnni_dot::mirror(w) };
    Some(Box::new(Packed { w, inputs, blocks: x_blocks }))
}

/// A legacy-type weight and its repacked inputs ([`legacy`]).
struct Packed<'a, M> {
    w: &'a [M],
    inputs: crate::cpu::x86::legacy_vnni::PackedInputs,
    blocks: usize,
}

impl<M: crate::cpu::x86::legacy_vnni::Unsigned> RowDot for Packed<'_, M> {
    fn dot(&self, row: usize, out: &mut [f32]) {
        self.dot_rows(row, out);
    }

    fn inputs(&self) -> usize {
        self.inputs.rows()
    }

    fn dot_rows(&self, first: usize, out: &mut [f32]) {
        let rows = out.len() / self.inputs.rows();
        let ws: Vec<&[M]> =
            (first..first + rows).map(|row| &self.w[row * self.blocks..(row + 1) * self.blocks]).collect();
        let done = crate::cpu::x86::legacy_vnni::dot_rows(&ws, &self.inputs, 0, out);
        debug_assert!(done, "checked when the kernel was chosen");
        if !done {
            out.fill(f32::NAN);
        }
    }
}

/// A Q4_K weight with its inputs repacked for [`crate::cpu::x86::q4k_packed`]; `None` for
/// layouts not covered.
pub(crate) fn q4k<'a>((bytes, n, k, xs, rows): KernelArgs<'a, '_>) -> Option<Box<dyn RowDot + 'a>> {
    let w = blocks_of::<BlockQ4K>(bytes, n, k)?;
    let blocks = k / BlockQ4K::BLCK_SIZE;
    let xq: Vec<BlockQ8K> = quantize_rows(xs, k, rows);
    let inputs = crate::cpu::x86::q4k_packed::PackedQ8K::new(&xq, rows, blocks);
    // SAFETY: the mirror has Candle's layout (checked at compile time in vnni_dot).
    let w = unsafe { crate::cpu::x86::vnni_dot::mirror(w) };
    Some(Box::new(PackedQ4K { w, inputs, blocks }))
}

/// A Q4_K weight and its repacked inputs ([`q4k`]).
struct PackedQ4K<'a> {
    w: &'a [crate::cpu::x86::vnni_dot::Q4K],
    inputs: crate::cpu::x86::q4k_packed::PackedQ8K,
    blocks: usize,
}

impl RowDot for PackedQ4K<'_> {
    fn dot(&self, row: usize, out: &mut [f32]) {
        let w = &self.w[row * self.blocks..(row + 1) * self.blocks];
        let done = crate::cpu::x86::q4k_packed::dot_rows(w, &self.inputs, 0, out);
        debug_assert!(done, "checked when the kernel was chosen");
        if !done {
            out.fill(f32::NAN);
        }
    }

    fn inputs(&self) -> usize {
        self.inputs.rows()
    }
}
