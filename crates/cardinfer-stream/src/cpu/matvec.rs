//! Products of block-quantized weights with activations on the CPU: the decode step of
//! host-placed layers (one row) and, so that chunking never changes the bits, every other
//! CPU product of the built-in decoder too.
//!
//! Candle's CPU path repacks Q4_K weights on x86 into 16-row tiles with the scales unpacked
//! to f32: 3072 bytes where the file holds 2304 for the same 16 rows × 256 values, so a
//! decode step that is bound by memory reads a third more bytes — and the tiles are a
//! second copy of every host layer. Here each output row is a dot product straight over
//! the file's blocks with Candle's own SIMD block kernels ([`GgmlType::vec_dot`]), or for
//! Q4_K and Q6_K on CPUs with AVX-512 VNNI ours ([`crate::cpu::x86::vnni_dot`]), and for
//! Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 on CPUs with AVX2 ours
//! ([`crate::cpu::x86::legacy_dot`], where Candle's are scalar); the rows are split
//! into contiguous ranges, tasks of the host pool ([`crate::cpu::host_pool`]), so each thread
//! streams one region of memory.
//!
//! The activations are quantized to the weight type's dot-product partner (Q8_K for the
//! k-quants, Q8_0 for the legacy types) exactly as Candle does, so with Candle's block
//! kernels a row's value is Candle's unpacked-path value for that row (ours sum in another
//! order: the last bits can differ).
//!
//! [`CpuKernels::CandleMatmul`](crate::cpu::kernels::CpuKernels::CandleMatmul) sends every
//! product to Candle's matmul instead (to compare the two on a machine).

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QTensor};
use candle_core::{DType, Device, Tensor};

use std::sync::Mutex;

use crate::cpu::packed_rows;

/// Output rows per task: enough work (a few hundred KB of weights) to amortize the task,
/// small enough that every thread of a 16-core pool gets several.
const ROWS_PER_TASK: usize = 64;

/// `x @ Wᵀ` for a block-quantized `W` `[n, k]` held in host memory and an f32 `x`
/// `[.., k]` on the CPU; `None` when this path does not apply (another device, an
/// unsupported type or layout) and the caller should use Candle's matmul. Every row count
/// goes through the same per-row dot products, so a prompt computed in chunks of any
/// size (or token by token) gives the same bits.
pub fn try_matvec(w: &QTensor, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
    Ok(try_matvec_many(&[w], x)?.and_then(|mut ys| ys.pop()))
}

/// `x @ Wᵢᵀ` for several weights that share the input (a layer's q, k and v; its gate and
/// up), as one parallel job: one wake-up of the pool instead of one per weight, and the
/// work of the small ones (k, v) balanced with the large. `None` when any of them is not
/// covered (see [`try_matvec`]); then the caller computes each on its own.
pub fn try_matvec_many(ws: &[&QTensor], x: &Tensor) -> candle_core::Result<Option<Vec<Tensor>>> {
    matvec_job(ws, &[x], &vec![0; ws.len()])
}

/// `xᵢ @ Wᵢᵀ` for several weights each with its own input (the down projections of a
/// token's routed experts), as one parallel job; each product's rows are the same bits
/// as [`try_matvec`] of that pair. `None` when any pair is not covered.
pub fn try_matvec_pairs(pairs: &[(&QTensor, &Tensor)]) -> candle_core::Result<Option<Vec<Tensor>>> {
    let ws: Vec<&QTensor> = pairs.iter().map(|(w, _)| *w).collect();
    let xs: Vec<&Tensor> = pairs.iter().map(|(_, x)| *x).collect();
    let input_of: Vec<usize> = (0..pairs.len()).collect();
    matvec_job(&ws, &xs, &input_of)
}

/// A block-quantized matrix `[rows, cols]` as bytes in host memory (a tensor's storage,
/// or a range of a page-locked buffer), in the file's block layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostMatrix<'a> {
    /// Quantization of the blocks.
    pub dtype: GgmlDType,
    /// The blocks, row after row.
    pub bytes: &'a [u8],
    /// Output rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
}

/// [`try_matvec_pairs`] for matrices given as bytes: the same kernels, the same bits.
pub(crate) fn try_matvec_host_pairs(pairs: &[(HostMatrix<'_>, &Tensor)]) -> candle_core::Result<Option<Vec<Tensor>>> {
    let ws: Vec<HostMatrix<'_>> = pairs.iter().map(|(w, _)| *w).collect();
    let xs: Vec<&Tensor> = pairs.iter().map(|(_, x)| *x).collect();
    let input_of: Vec<usize> = (0..pairs.len()).collect();
    host_matvec_job(&ws, &xs, &input_of)
}

/// The products `inputs[input_of[i]] @ ws[i]ᵀ` as one job of the host pool.
fn matvec_job(ws: &[&QTensor], inputs: &[&Tensor], input_of: &[usize]) -> candle_core::Result<Option<Vec<Tensor>>> {
    if ws.iter().any(|w| !matches!(w.device(), Device::Cpu) || w.shape().dims().len() != 2) {
        return Ok(None);
    }
    let data = ws.iter().map(|w| w.data()).collect::<candle_core::Result<Vec<_>>>()?;
    let matrices: Vec<HostMatrix<'_>> = ws
        .iter()
        .zip(&data)
        .map(|(w, bytes)| {
            let dims = w.shape().dims();
            HostMatrix { dtype: w.dtype(), bytes, rows: dims[0], cols: dims[1] }
        })
        .collect();
    host_matvec_job(&matrices, inputs, input_of)
}

/// The products `inputs[input_of[i]] @ ws[i]ᵀ` as one job of the host pool.
fn host_matvec_job(
    ws: &[HostMatrix<'_>],
    inputs: &[&Tensor],
    input_of: &[usize],
) -> candle_core::Result<Option<Vec<Tensor>>> {
    if !enabled() || ws.is_empty() || ws.len() != input_of.len() {
        return Ok(None);
    }
    // Each input as f32 values with its leading dims, row count and row length.
    let mut flat = Vec::with_capacity(inputs.len());
    for x in inputs {
        if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
            return Ok(None);
        }
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else { return Ok(None) };
        let rows: usize = lead.iter().product();
        if rows == 0 {
            return Ok(None);
        }
        flat.push((x.contiguous()?.flatten_all()?.to_vec1::<f32>()?, lead.to_vec(), rows, k));
    }
    let mut shapes = Vec::with_capacity(ws.len());
    for (w, &input) in ws.iter().zip(input_of) {
        let Some((_, _, _, k)) = flat.get(input) else { return Ok(None) };
        if w.cols != *k {
            return Ok(None);
        }
        shapes.push(w.rows);
    }
    let mut kernels = Vec::with_capacity(ws.len());
    for ((w, &n), &input) in ws.iter().zip(&shapes).zip(input_of) {
        let (xs, _, rows, k) = &flat[input];
        match kernel_for(w.dtype, w.bytes, n, *k, xs, *rows) {
            Some(kernel) => kernels.push(kernel),
            None => return Ok(None),
        }
    }
    // Outputs in [n, rows] order so a task owns one contiguous range; transposed after.
    let rows_of = |i: usize| flat[input_of[i]].2;
    let mut outs: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, &n)| vec![0f32; n * rows_of(i)]).collect();
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for (i, (kernel, out)) in kernels.iter().zip(outs.iter_mut()).enumerate() {
        let rows = rows_of(i);
        for (t, chunk) in out.chunks_mut(ROWS_PER_TASK * rows).enumerate() {
            tasks.push((kernel.as_ref(), t * ROWS_PER_TASK, rows, chunk));
        }
    }
    run_tasks(tasks, |(kernel, first, _, out)| kernel.dot_rows(*first, out));
    let mut ys = Vec::with_capacity(outs.len());
    for (i, (out, &n)) in outs.into_iter().zip(&shapes).enumerate() {
        let (_, lead, rows, _) = &flat[input_of[i]];
        let mut shape = lead.clone();
        shape.push(n);
        ys.push(Tensor::from_vec(transpose(out, n, *rows), shape, &Device::Cpu)?);
    }
    Ok(Some(ys))
}

/// Runs `work` on every task, each once, as one job of the host pool
/// ([`crate::cpu::host_pool`]): its workers spin briefly between jobs, so a layer's products do
/// not each wait for threads to wake up (measured on the H100 machine with Candle's
/// barrier pool, which works the same way: hybrid decode 15.9 → 18.4 tok/s (14B), 15.5 →
/// 19.7 (4B) against Rayon's pool; BENCHMARKS.md, run55), and its thread count can change
/// between jobs. A task is taken by exactly one thread; its lock only hands the task (and
/// the output it fills) over.
pub(crate) fn run_tasks<T: Send>(tasks: Vec<T>, work: impl Fn(&mut T) + Sync) {
    let tasks: Vec<Mutex<T>> = tasks.into_iter().map(Mutex::new).collect();
    crate::cpu::host_pool::global().for_each_range(tasks.len(), |range| {
        for task in &tasks[range] {
            work(&mut task.lock().unwrap_or_else(|e| e.into_inner()));
        }
    });
}

/// `[n, rows]` → `[rows, n]` (nothing to do for one row).
fn transpose(by_weight_row: Vec<f32>, n: usize, rows: usize) -> Vec<f32> {
    if rows == 1 {
        return by_weight_row;
    }
    // In tiles of TILE × TILE values, so both sides stay in cache: a plain loop writes
    // one value per cache line of a stride-`n` column, and took 12 % of a 128-token CPU
    // prefill (synthetic Qwen3-0.6B, 2 threads).
    const TILE: usize = 32;
    let mut out = vec![0f32; n * rows];
    for j0 in (0..n).step_by(TILE) {
        for r0 in (0..rows).step_by(TILE) {
            for j in j0..(j0 + TILE).min(n) {
                let values = &by_weight_row[j * rows..(j + 1) * rows];
                for r in r0..(r0 + TILE).min(rows) {
                    out[r * n + j] = values[r];
                }
            }
        }
    }
    out
}

/// Runs `f` — one host layer's computation for a decode step — on a one-thread Rayon
/// pool. Candle's CPU norms, RoPE and softmax split their rows over Rayon's pool; for one
/// token that is microseconds of work per op, and a pool asleep since the last layer (or
/// competing for cores with the matrix products' spinning pool) costs more to wake than
/// the op itself. The matrix products inside still run on all the pool's threads.
/// Measured on the H100 machine, one CPU layer at 14 threads (`cardinfer-dev host-layer`,
/// run58): 14B-shaped 4.08 → 3.48 ms, 4B-shaped 1.28 → 1.25 ms.
pub fn with_serial_small_ops<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "cardinfer-host-layer".into()).build().ok()
    });
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// Whether this module computes the products (else Candle's matmul does).
fn enabled() -> bool {
    crate::cpu::kernels::selected() != crate::cpu::kernels::CpuKernels::CandleMatmul
}

/// Rows `first..` of one weight, the number of input rows, and the output they fill
/// (`[rows of the weight, input rows]`).
type Task<'a> = (&'a dyn RowDot, usize, usize, &'a mut [f32]);

/// One weight row's dot products with every input row.
pub(crate) trait RowDot: Sync {
    /// Writes row `row`'s product with input row `r` into `out[r]`.
    fn dot(&self, row: usize, out: &mut [f32]);

    /// [`Self::dot`] for rows `first..`, as many as `out` holds (each row's values one
    /// after another); a kernel that serves several rows at once overrides it.
    fn dot_rows(&self, first: usize, out: &mut [f32]) {
        let inputs = self.inputs();
        for (i, out_row) in out.chunks_exact_mut(inputs).enumerate() {
            self.dot(first + i, out_row);
        }
    }

    /// The number of input rows.
    fn inputs(&self) -> usize;
}

/// A weight's blocks, the input quantized to their dot-product partner, and our block
/// dot products where there are some ([`crate::cpu::x86::vnni_dot`]; `None` / `false` from them, or
/// no kernel, means Candle's).
struct Blocks<'a, T: GgmlType> {
    w: &'a [T],
    xq: Vec<T::VecDotType>,
    k: usize,
    kernels: Kernels<T>,
}

/// A weight row's dot products with several input rows at once, into one output each;
/// `false` where the kernel does not run.
type ManyDot<T> = fn(&[T], &[<T as GgmlType>::VecDotType], &mut [f32]) -> bool;

/// Our dot products of a weight type: one input row, and several at once (the same bits
/// per row, the weights unpacked once).
struct Kernels<T: GgmlType> {
    one: fn(&[T], &[T::VecDotType]) -> Option<f32>,
    many: ManyDot<T>,
}

impl<T: GgmlType> RowDot for Blocks<'_, T> {
    fn dot(&self, row: usize, out: &mut [f32]) {
        let w_blocks = self.k / T::BLCK_SIZE;
        let x_blocks = self.k / T::VecDotType::BLCK_SIZE;
        let w = &self.w[row * w_blocks..(row + 1) * w_blocks];
        if out.len() > 1 && (self.kernels.many)(w, &self.xq, out) {
            return;
        }
        for (value, q) in out.iter_mut().zip(self.xq.chunks_exact(x_blocks)) {
            *value = (self.kernels.one)(w, q).unwrap_or_else(|| T::vec_dot(self.k, w, q));
        }
    }

    fn inputs(&self) -> usize {
        self.xq.len() / (self.k / T::VecDotType::BLCK_SIZE)
    }
}

/// No kernels of ours for this type: Candle's block dot product runs.
fn candle_only<T: GgmlType>() -> Kernels<T> {
    Kernels { one: |_, _| None, many: |_, _, _| false }
}

/// The row kernel for a weight of `dtype`, `None` for types and layouts not covered.
fn kernel_for<'a>(
    dtype: GgmlDType,
    bytes: &'a [u8],
    n: usize,
    k: usize,
    xs: &[f32],
    rows: usize,
) -> Option<Box<dyn RowDot + 'a>> {
    fn make<'a, T: GgmlType + 'a>(
        (bytes, n, k, xs, rows): (&'a [u8], usize, usize, &[f32], usize),
        kernels: Kernels<T>,
    ) -> Option<Box<dyn RowDot + 'a>> {
        let w = blocks_of::<T>(bytes, n, k)?;
        Some(Box::new(Blocks { w, xq: quantize_rows(xs, k, rows), k, kernels }))
    }
    use crate::cpu::x86::legacy_dot as legacy;
    let args = (bytes, n, k, xs, rows);
    if crate::cpu::x86::legacy_vnni::available() {
        let packed = match dtype {
            GgmlDType::Q8_0 => packed_rows::legacy::<BlockQ8_0, legacy::Q8_0>(args),
            GgmlDType::Q4_0 => packed_rows::legacy::<BlockQ4_0, legacy::Q4_0>(args),
            GgmlDType::Q4_1 => packed_rows::legacy::<BlockQ4_1, legacy::Q4_1>(args),
            GgmlDType::Q5_0 => packed_rows::legacy::<BlockQ5_0, legacy::Q5_0>(args),
            GgmlDType::Q5_1 => packed_rows::legacy::<BlockQ5_1, legacy::Q5_1>(args),
            _ => None,
        };
        if packed.is_some() {
            return packed;
        }
    }
    if dtype == GgmlDType::Q4K && crate::cpu::x86::q4k_packed::available() {
        return packed_rows::q4k(args);
    }
    match dtype {
        // Where AVX-512 VNNI runs, Q4_K took `packed_rows::q4k` above.
        GgmlDType::Q4K => make::<BlockQ4K>(args, candle_only()),
        GgmlDType::Q6K => make::<BlockQ6K>(
            args,
            Kernels { one: crate::cpu::x86::vnni_dot::dot_q6k, many: crate::cpu::x86::vnni_dot::dot_q6k_many },
        ),
        GgmlDType::Q5K => make::<BlockQ5K>(args, candle_only()),
        GgmlDType::Q3K => make::<BlockQ3K>(args, candle_only()),
        GgmlDType::Q2K => make::<BlockQ2K>(args, candle_only()),
        GgmlDType::Q8_0 => make::<BlockQ8_0>(args, Kernels { one: legacy::dot_q8_0, many: legacy::dot_q8_0_many }),
        GgmlDType::Q4_0 => make::<BlockQ4_0>(args, Kernels { one: legacy::dot_q4_0, many: legacy::dot_q4_0_many }),
        GgmlDType::Q4_1 => make::<BlockQ4_1>(args, Kernels { one: legacy::dot_q4_1, many: legacy::dot_q4_1_many }),
        GgmlDType::Q5_0 => make::<BlockQ5_0>(args, Kernels { one: legacy::dot_q5_0, many: legacy::dot_q5_0_many }),
        GgmlDType::Q5_1 => make::<BlockQ5_1>(args, Kernels { one: legacy::dot_q5_1, many: legacy::dot_q5_1_many }),
        _ => None,
    }
}

/// A weight's bytes, its rows and row length, the f32 inputs (row after row) and their
/// count: what a row kernel is made from.
pub(crate) type KernelArgs<'a, 'x> = (&'a [u8], usize, usize, &'x [f32], usize);

/// `rows` input rows of `k` values (`xs`, row after row) quantized to `X` blocks as
/// Candle quantizes a product's input (each row's blocks after the previous row's).
pub(crate) fn quantize_rows<X: GgmlType>(xs: &[f32], k: usize, rows: usize) -> Vec<X> {
    let blocks = k / X::BLCK_SIZE;
    let mut xq = vec![X::zeros(); rows * blocks];
    for (x, q) in xs.chunks_exact(k).zip(xq.chunks_exact_mut(blocks)) {
        X::from_float(x, q);
    }
    xq
}

/// The blocks of `bytes` as `T`, if the length and alignment are those of `n` rows of `k`.
pub(crate) fn blocks_of<T: GgmlType>(bytes: &[u8], n: usize, k: usize) -> Option<&[T]> {
    if !k.is_multiple_of(T::BLCK_SIZE) || !k.is_multiple_of(T::VecDotType::BLCK_SIZE) {
        return None;
    }
    let count = n * (k / T::BLCK_SIZE);
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
    if !aligned || bytes.len() != count * std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length and alignment were checked above, and every Candle block type is
    // plain old data (integers and f16 scales, any bit pattern valid).
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), count) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    #[test]
    fn transpose_tiles_cover_every_value() {
        for (n, rows) in [(1, 1), (37, 45), (64, 32), (5, 100)] {
            let by_weight_row: Vec<f32> = (0..n * rows).map(|i| i as f32).collect();
            let out = transpose(by_weight_row, n, rows);
            for r in 0..rows {
                for j in 0..n {
                    assert_eq!(out[r * n + j], (j * rows + r) as f32, "{n}x{rows} at ({r}, {j})");
                }
            }
        }
    }

    fn weights(dtype: GgmlDType, n: usize, k: usize) -> QTensor {
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.2).collect();
        let w = Tensor::from_vec(values, (n, k), &Device::Cpu).expect("tensor");
        QTensor::quantize(&w, dtype).expect("quantize")
    }

    fn input(rows: usize, k: usize) -> Tensor {
        let values: Vec<f32> = (0..rows * k).map(|i| ((i * 104729 % 997) as f32 / 997.0 - 0.5) * 2.0).collect();
        Tensor::from_vec(values, (1, rows, k), &Device::Cpu).expect("tensor")
    }

    /// Every supported type, one and several rows: the same values as Candle's matmul
    /// within its own cross-kernel tolerance, and bit-identical to Candle's unpacked
    /// per-row dot product.
    #[test]
    fn matches_candle_for_every_type() {
        let (n, k) = (200, 512); // 200 rows: several tasks and a partial last one
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::Q5K,
            GgmlDType::Q3K,
            GgmlDType::Q2K,
            GgmlDType::Q8_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
        ] {
            let w = weights(dtype, n, k);
            for rows in [1, 3] {
                let x = input(rows, k);
                let ours = try_matvec(&w, &x).expect("runs").expect("applies");
                assert_eq!(ours.dims(), &[1, rows, n]);
                let candle = QMatMul::QTensor(std::sync::Arc::new(weights(dtype, n, k))).forward(&x).expect("candle");
                let diff = (&ours - &candle).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let scale = candle.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-4 * scale.max(1.0), "{dtype:?} rows {rows}: max diff {diff} (scale {scale})");
            }
        }
    }

    /// Each output is the per-row dot product of the kernel in use: Candle's block
    /// kernel, or ours for Q4_K where the CPU has AVX-512 VNNI (`q4k_packed`).
    #[test]
    fn rows_equal_the_per_row_dot_product() {
        let (n, k) = (70, 768);
        let w = weights(GgmlDType::Q4K, n, k);
        let x = input(1, k);
        let ours = try_matvec(&w, &x).unwrap().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bytes = w.data().unwrap();
        let blocks = blocks_of::<BlockQ4K>(&bytes, n, k).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut xq = vec![<BlockQ4K as GgmlType>::VecDotType::zeros(); k / 256];
        <BlockQ4K as GgmlType>::VecDotType::from_float(&xs, &mut xq);
        let packed = crate::cpu::x86::q4k_packed::PackedQ8K::new(&xq, 1, k / 256);
        for (j, v) in ours.iter().enumerate() {
            let row = &blocks[j * 3..(j + 1) * 3];
            let mut expected = [f32::NAN];
            // SAFETY: the mirror has Candle's layout (checked at compile time in vnni_dot).
            let mirrored = unsafe { crate::cpu::x86::vnni_dot::mirror(row) };
            if !crate::cpu::x86::q4k_packed::dot_rows(mirrored, &packed, 0, &mut expected) {
                expected[0] = BlockQ4K::vec_dot(k, row, &xq);
            }
            assert_eq!(v.to_bits(), expected[0].to_bits(), "row {j}");
        }
    }

    /// A prompt chunk's product (several input rows at once, the weights unpacked once
    /// for them where our kernels run) has each row's bits from that row alone.
    #[test]
    fn a_chunk_of_rows_equals_its_rows_one_by_one() {
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            let (n, k, rows) = (70, 512, 7);
            let w = weights(dtype, n, k);
            let x = input(rows, k);
            let chunk = try_matvec(&w, &x).unwrap().unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            for (r, values) in chunk.iter().enumerate() {
                let alone = try_matvec(&w, &x.narrow(1, r, 1).unwrap()).unwrap().unwrap();
                let alone = alone.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(values), bits(&alone), "{dtype:?}, input row {r}");
            }
        }
    }

    /// Weights of different types and heights sharing one input (Q4_K_M's q/k with Q6_K
    /// v): each output equals its own single-weight product.
    #[test]
    fn several_weights_in_one_job_equal_each_alone() {
        let ws =
            [weights(GgmlDType::Q4K, 300, 512), weights(GgmlDType::Q6K, 70, 512), weights(GgmlDType::Q8_0, 64, 512)];
        let refs: Vec<&QTensor> = ws.iter().collect();
        for rows in [1, 2] {
            let x = input(rows, 512);
            let many = try_matvec_many(&refs, &x).unwrap().unwrap();
            for (w, y) in ws.iter().zip(&many) {
                let alone = try_matvec(w, &x).unwrap().unwrap();
                assert_eq!(y.dims(), alone.dims());
                let (a, b) = (
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                assert_eq!(a, b, "{:?}, rows {rows}", w.dtype());
            }
        }
        let wide = weights(GgmlDType::Q4K, 16, 768);
        assert!(try_matvec_many(&[&ws[0], &wide], &input(1, 512)).unwrap().is_none(), "widths differ");
    }

    #[test]
    fn pairs_with_their_own_inputs_equal_each_alone() {
        let ws =
            [weights(GgmlDType::Q4K, 300, 512), weights(GgmlDType::Q6K, 70, 768), weights(GgmlDType::Q8_0, 64, 512)];
        let xs = [input(1, 512), input(3, 768), input(2, 512)];
        let pairs: Vec<(&QTensor, &Tensor)> = ws.iter().zip(&xs).collect();
        let ys = try_matvec_pairs(&pairs).unwrap().unwrap();
        for ((w, x), y) in ws.iter().zip(&xs).zip(&ys) {
            let alone = try_matvec(w, x).unwrap().unwrap();
            assert_eq!(y.dims(), alone.dims());
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(y), flat(&alone), "{:?}", w.dtype());
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        let w = weights(GgmlDType::Q4K, 32, 256);
        // Chunking does not change a row's bits: 9 rows at once equal each row alone.
        let nine = input(9, 256);
        let all = try_matvec(&w, &nine).unwrap().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in 0..9 {
            let one = try_matvec(&w, &nine.narrow(1, r, 1).unwrap()).unwrap().unwrap();
            assert_eq!(one.flatten_all().unwrap().to_vec1::<f32>().unwrap(), all[r * 32..(r + 1) * 32], "row {r}");
        }
        assert!(
            try_matvec(&w, &input(1, 512).narrow(2, 0, 256).unwrap()).unwrap().is_some(),
            "strided input is made contiguous"
        );
        let f16 =
            QTensor::quantize(&Tensor::zeros((32, 256), DType::F32, &Device::Cpu).unwrap(), GgmlDType::F16).unwrap();
        assert!(try_matvec(&f16, &input(1, 256)).unwrap().is_none(), "float weights");
        let wrong_width = input(1, 512);
        assert!(try_matvec(&w, &wrong_width).unwrap().is_none(), "width mismatch is left to Candle's error");
    }
}
