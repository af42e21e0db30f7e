//! The routed MLP of a mixture-of-experts layer in the fused decode path: the router's
//! logits, the top-k routing, the chosen experts' products and their weighted sum, all on
//! the device (`kernels/moe.cu`), so a token needs no round trip to the host and the
//! whole stack stays one CUDA graph.
//!
//! Each expert product launches Candle's MMVQ core once for the `k` chosen experts, with
//! the experts' addresses read from a device table by the routed ids: the table of
//! layer `l` holds the gate, up and down matrices' addresses of its `E` experts
//! (`[l][projection][expert]`), written once when the decoder is built. Before, a decode
//! step's experts took ~10 launches each and one synchronisation with the host per layer.

use super::{cuda_err, matrix, unsupported, Dims, FusedDecoder, HostExperts, Matrix};
use crate::cuda::copy_stream::dense_address;
use crate::cuda::routed::{product_kernel, PRODUCT_TYPES};
use crate::cuda::sizes::{pad, MATRIX_ROW_PADDING, QK8_1};
use crate::cuda::slot_kernels;
use crate::model::names::{ExpertProj, Role};
use crate::model::weights::{BlockWeights, Weight};
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::{
    result, CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::quantized::GgmlDType;
use candle_core::{CudaDevice, DType};
use cardinfer_core::ModelSpec;

/// Limits of the routing kernel (`MOE_MAX_EXPERTS`, `MOE_MAX_TOP_K` in moe.cu).
const MAX_EXPERTS: usize = 1024;
const MAX_TOP_K: usize = 32;
/// Threads of the router, routing and sum kernels (`MOE_THREADS`).
const THREADS: u32 = 256;

/// A routed layer's router: float rows (GGUF keeps `ffn_gate_inp` in f32) or quantized.
#[derive(Debug, Clone, Copy)]
pub(super) enum Router {
    Float(u64),
    Quantized(Matrix),
}

/// What the kernels need of one routed layer: its router and its experts' quantizations
/// (one per projection: a GGUF stores each projection's experts as one tensor).
#[derive(Debug, Clone, Copy)]
pub(super) struct RoutedLayer {
    pub(super) router: Router,
    pub(super) dtypes: [GgmlDType; 3],
}

/// The routing sizes the kernels take.
#[derive(Debug, Clone, Copy)]
pub(super) struct MoeDims {
    pub(super) experts: usize,
    pub(super) top_k: usize,
    pub(super) expert_ffn: usize,
    pub(super) norm_topk_prob: bool,
}

impl MoeDims {
    /// The model's routing sizes, checked against the kernels' limits; `None` for a dense model.
    pub(super) fn of(spec: &ModelSpec) -> Result<Option<Self>> {
        let Some(moe) = spec.moe.as_ref() else { return Ok(None) };
        if moe.experts > MAX_EXPERTS || moe.experts_per_token > MAX_TOP_K || moe.experts_per_token == 0 {
            return Err(unsupported(format!(
                "{} experts, {} per token (the routing kernel takes up to {MAX_EXPERTS} and {MAX_TOP_K})",
                moe.experts, moe.experts_per_token
            )));
        }
        Ok(Some(Self {
            experts: moe.experts,
            top_k: moe.experts_per_token,
            expert_ffn: moe.expert_intermediate_size,
            norm_topk_prob: moe.norm_topk_prob,
        }))
    }
}

/// The router and expert addresses of routed layer `w`: the layer's description and its
/// `3 × experts` matrix addresses (gate, up, down; each projection in one quantization).
pub(super) fn routed_layer(spec: &ModelSpec, w: &BlockWeights, m: &MoeDims) -> Result<(RoutedLayer, Vec<u64>)> {
    let hidden = spec.hidden_size;
    let router = router(spec, w, m)?;
    let mut dtypes = [GgmlDType::F32; 3];
    let mut addresses = Vec::with_capacity(3 * m.experts);
    for (p, proj) in ExpertProj::ALL.into_iter().enumerate() {
        let (rows, cols) = if proj == ExpertProj::Down { (hidden, m.expert_ffn) } else { (m.expert_ffn, hidden) };
        for e in 0..m.experts {
            let mat = matrix(w, Role::Expert(proj, e as u16), rows, cols)?;
            if e == 0 {
                dtypes[p] = mat.dtype;
            } else if mat.dtype != dtypes[p] {
                return Err(unsupported(format!("{proj:?} experts of mixed types ({:?}, {:?})", dtypes[p], mat.dtype)));
            }
            addresses.push(mat.address);
        }
    }
    Ok((RoutedLayer { router, dtypes }, addresses))
}

/// Routed layer `w`'s router, checked against the spec.
pub(super) fn router(spec: &ModelSpec, w: &BlockWeights, m: &MoeDims) -> Result<Router> {
    let hidden = spec.hidden_size;
    Ok(match w.get(Role::FfnRouter)? {
        Weight::Dense(t) => {
            if t.dtype() != DType::F32 || t.dims() != [m.experts, hidden] || !t.is_contiguous() {
                return Err(unsupported(format!(
                    "the router is {:?} {:?}, not [{}, {hidden}] f32",
                    t.dtype(),
                    t.dims(),
                    m.experts
                )));
            }
            Router::Float(dense_address(t).ok_or_else(|| unsupported("the router is not on the CUDA device"))?)
        }
        _ => Router::Quantized(matrix(w, Role::FfnRouter, m.experts, hidden)?),
    })
}

/// The routing kernels, the per-type expert products, the per-token buffers and the
/// expert tables of every routed layer, allocated once.
pub(super) struct MoeState {
    dims: MoeDims,
    route: CudaFunction,
    router_f32: CudaFunction,
    weighted_sum: CudaFunction,
    products: Vec<(GgmlDType, CudaFunction)>,
    _slices: Vec<CudaSlice<f32>>,
    _ids: CudaSlice<i32>,
    _tables: CudaSlice<u64>,
    tables: u64,
    logits: u64,
    ids: u64,
    weights: u64,
    gate: u64,
    up: u64,
    act: u64,
    outputs: u64,
}

impl MoeState {
    /// Loads the kernels and allocates the buffers; `tables` holds, layer by layer, the
    /// `3 × experts` expert addresses of every layer (zeros for dense layers).
    pub(super) fn new(device: &CudaDevice, d: &Dims, m: MoeDims, tables: &[u64]) -> Result<Self> {
        use crate::cuda::ptx::{MOE, MOE_MODULE};
        let f = |name: &str| -> Result<CudaFunction> {
            Ok(device.get_or_load_custom_func(name, MOE_MODULE, MOE)?.into_cuda_function())
        };
        let mut products = Vec::new();
        for dtype in PRODUCT_TYPES {
            if let Some(name) = product_kernel(dtype) {
                products.push((dtype, f(name)?));
            }
        }
        let stream = device.cuda_stream();
        let (k, ef) = (m.top_k, m.expert_ffn);
        let sizes = [m.experts, k, k * ef, k * ef, k * ef, k * d.hidden];
        let slices =
            sizes.iter().map(|&n| stream.alloc_zeros::<f32>(n).map_err(cuda_err)).collect::<Result<Vec<_>>>()?;
        let a: Vec<u64> = slices.iter().map(|s| s.device_ptr(&stream).0).collect();
        let ids = stream.alloc_zeros::<i32>(k).map_err(cuda_err)?;
        let table_slice = stream.clone_htod(tables).map_err(cuda_err)?;
        let ids_address = ids.device_ptr(&stream).0;
        let tables_address = table_slice.device_ptr(&stream).0;
        Ok(Self {
            dims: m,
            route: f("moe_route")?,
            router_f32: f("moe_router_f32")?,
            weighted_sum: f("moe_weighted_sum")?,
            products,
            ids: ids_address,
            tables: tables_address,
            logits: a[0],
            weights: a[1],
            gate: a[2],
            up: a[3],
            act: a[4],
            outputs: a[5],
            _slices: slices,
            _ids: ids,
            _tables: table_slice,
        })
    }

    fn product(&self, dtype: GgmlDType) -> Result<&CudaFunction> {
        self.products
            .iter()
            .find(|(d, _)| *d == dtype)
            .map(|(_, f)| f)
            .ok_or_else(|| unsupported(format!("no expert product for {dtype:?}")))
    }
}

impl FusedDecoder {
    /// Launches routed layer `layer`'s MLP on the normed hidden state, already quantized
    /// in the workspace; the weighted sum of its experts lands in `down`, where the next
    /// norm adds it to the residual stream.
    pub(super) fn enqueue_routed(&self, layer: usize, routed: &RoutedLayer) -> Result<()> {
        let moe = self.moe.as_ref().ok_or_else(|| unsupported("a routed layer in a dense decoder"))?;
        let (b, d, m) = (&self.buffers, self.dims, moe.dims);
        self.router_logits(moe, &routed.router)?;
        self.launch(
            &moe.route,
            (1, 1),
            THREADS,
            &[&moe.logits, &moe.ids, &moe.weights],
            &[m.experts as i32, m.top_k as i32, m.norm_topk_prob as i32],
            &[],
        )?;
        let table = |p: usize| moe.tables + 8 * ((layer * 3 + p) * m.experts) as u64;
        let scratch = self.workspace.scratch_address();
        self.expert_product(moe, routed.dtypes[0], table(0), scratch, moe.gate, d.hidden, m.expert_ffn, 0)?;
        self.expert_product(moe, routed.dtypes[1], table(1), scratch, moe.up, d.hidden, m.expert_ffn, 0)?;
        if !self.matvec_only {
            let n = m.top_k * m.expert_ffn;
            let kernel = if d.gelu { &self.kernels.gelu_mul } else { &self.kernels.silu_mul_exact };
            self.launch(kernel, (n.div_ceil(256) as u32, 1), 256, &[&moe.gate, &moe.up, &moe.act], &[n as i32], &[])?;
        }
        // SAFETY: `act` holds top_k × expert_ffn f32; the workspace was sized for top_k rows.
        unsafe {
            slot_kernels::quantize_q8_1(&self.workspace, moe.act, m.expert_ffn, m.top_k, self.stream_ptr());
        }
        let stride = (pad(m.expert_ffn, MATRIX_ROW_PADDING) / QK8_1) as i32;
        self.expert_product(moe, routed.dtypes[2], table(2), scratch, moe.outputs, m.expert_ffn, d.hidden, stride)?;
        self.launch(
            &moe.weighted_sum,
            (d.hidden.div_ceil(THREADS as usize) as u32, 1),
            THREADS,
            &[&moe.outputs, &0, &moe.weights, &b.down],
            &[d.hidden as i32, m.top_k as i32],
            &[],
        )
    }

    /// The router's logits of the normed hidden state `h` (quantized in the workspace
    /// already, for a quantized router) into the logits buffer.
    fn router_logits(&self, moe: &MoeState, router: &Router) -> Result<()> {
        let (b, d) = (&self.buffers, self.dims);
        match *router {
            Router::Float(w) => self.launch(
                &moe.router_f32,
                (moe.dims.experts as u32, 1),
                THREADS,
                &[&w, &b.h, &moe.logits],
                &[d.hidden as i32],
                &[],
            ),
            Router::Quantized(r) => self.matvec(&r, moe.logits),
        }
    }

    /// Layer `layer`'s MLP with its experts in host memory: the router's logits on the
    /// device, then `experts` (the host's placement: cache, uploads, CPU) on the normed
    /// hidden state; their sum is copied into `down` for the next norm to add.
    pub(super) fn host_routed_layer(&self, layer: usize, router: &Router, experts: &HostExperts<'_>) -> Result<()> {
        let moe = self.moe.as_ref().ok_or_else(|| unsupported("a routed layer in a dense decoder"))?;
        let (b, d) = (&self.buffers, self.dims);
        self.router_logits(moe, router)?;
        let h = self.copy_out(b.h, (1, d.hidden))?;
        let logits = self.copy_out(moe.logits, (1, moe.dims.experts))?;
        let y = experts(layer, &h, &logits)?.contiguous()?;
        if y.elem_count() != d.hidden || y.dtype() != DType::F32 {
            return Err(unsupported(format!("layer {layer}'s experts returned {:?} {:?}", y.dtype(), y.dims())));
        }
        let source = dense_address(&y).ok_or_else(|| unsupported("the experts' output is not on the device"))?;
        // SAFETY: both hold `hidden` f32 on this device; the copy is ordered on the stream
        // before the next layer's kernels, and `y`'s memory is freed in stream order.
        unsafe { result::memcpy_dtod_async(b.down, source, d.hidden * 4, self.stream.cu_stream()) }
            .map_err(cuda_err)?;
        Ok(())
    }

    /// `out[task] = W_{ids[task]} · input[task]` for the `top_k` routed experts of the
    /// projection whose addresses start at `table`; inputs `stride` Q8_1 blocks apart
    /// (0: one shared input).
    #[allow(clippy::too_many_arguments)]
    fn expert_product(
        &self,
        moe: &MoeState,
        dtype: GgmlDType,
        table: u64,
        input: u64,
        out: u64,
        cols: usize,
        rows: usize,
        stride: i32,
    ) -> Result<()> {
        let f = moe.product(dtype)?;
        let mut builder = self.stream.launch_builder(f);
        let (cols, rows) = (cols as i32, rows as i32);
        builder.arg(&table).arg(&moe.ids).arg(&input).arg(&out).arg(&cols).arg(&rows).arg(&stride);
        let config = LaunchConfig {
            grid_dim: (rows as u32, moe.dims.top_k as u32, 1),
            block_dim: (32, 4, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match moe_mmvq_*'s signature; the table holds `experts`
        // addresses of `rows × cols` matrices of `dtype`, the ids are below `experts`
        // (written by moe_route), the input holds top_k rows (or one, stride 0) of Q8_1
        // blocks of `cols` and `out` holds top_k × rows f32.
        unsafe { builder.launch(config) }.map_err(cuda_err)?;
        Ok(())
    }
}
