//! The hidden state of a streamed pass, and the fused decode kernels for the device
//! layers of streamed and hybrid models.
//!
//! In prefill (and without the kernels) the hidden state is a Candle tensor handed from
//! block to block. In decode on CUDA the device layers — resident or in a slot — run the
//! fused kernels of [`crate::executor::fused`] layer by layer on the decoder's own buffers; a layer on
//! the CPU and the head take the hidden state out as a tensor and (the CPU's) put it back.

use crate::executor::fused::DecodePath;
use crate::model::family::Decoder;
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::{Device, Tensor};

#[cfg(feature = "cuda")]
use crate::executor::fused::cuda::FusedDecoder;

/// The fused decode kernels of a streamed model, where they apply.
pub(crate) struct FusedLayers {
    #[cfg(feature = "cuda")]
    decoder: Option<std::sync::Mutex<FusedDecoder>>,
    status: String,
}

impl FusedLayers {
    /// No fused kernels: every pass runs the plain blocks.
    pub(crate) fn off(reason: &str) -> Self {
        Self {
            #[cfg(feature = "cuda")]
            decoder: None,
            status: format!("plain ({reason})"),
        }
    }

    /// The kernels for the built-in `decoder` on `device`, when `path` asks for them and
    /// the model suits them; `kv_on_host` plans keep the plain path (their caches move
    /// layer by layer).
    pub(crate) fn new(path: DecodePath, decoder: &Decoder, device: &Device, kv_on_host: bool) -> Self {
        if path == DecodePath::Plain {
            return Self::off("asked for");
        }
        if kv_on_host {
            return Self::off("the KV cache lives in host memory");
        }
        if decoder.spec().moe.is_some() {
            return Self::off("the fused path takes routed experts in resident models only");
        }
        Self::try_new(path, decoder, device)
    }

    #[cfg(feature = "cuda")]
    fn try_new(path: DecodePath, decoder: &Decoder, device: &Device) -> Self {
        match FusedDecoder::layerwise(decoder, device) {
            Ok(mut decoder) => {
                decoder.configure(path);
                Self { decoder: Some(std::sync::Mutex::new(decoder)), status: "fused (layer by layer)".into() }
            }
            Err(e) => Self::off(&e.to_string()),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn try_new(_path: DecodePath, _decoder: &Decoder, _device: &Device) -> Self {
        Self::off("the fused path needs the `cuda` feature")
    }

    /// How single tokens are decoded, and why when not fused.
    pub(crate) fn status(&self) -> &str {
        &self.status
    }

    /// Positions the KV cache must preallocate for the kernels, when they are on.
    pub(crate) fn capacity(&self) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(decoder) = &self.decoder {
            return Some(decoder.lock().unwrap_or_else(|e| e.into_inner()).capacity());
        }
        None
    }

    /// The hidden state of a pass over `tokens` tokens starting from embedding `x`: in the
    /// kernels' buffers for one decoded token when `kv` has their buffers for every layer
    /// `on_device`, a tensor otherwise.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn start(
        &self,
        x: Tensor,
        tokens: usize,
        kv: &KvCache,
        on_device: &dyn Fn(usize) -> bool,
    ) -> Result<HiddenState<'_>> {
        #[cfg(feature = "cuda")]
        if let (Some(decoder), 1) = (&self.decoder, tokens) {
            let mut decoder = decoder.lock().unwrap_or_else(|e| e.into_inner());
            if decoder.begin_token(&x, kv, on_device)? {
                return Ok(HiddenState::Fused(decoder));
            }
        }
        Ok(HiddenState::Tensor(x))
    }
}

/// Where a pass's hidden state lives.
pub(crate) enum HiddenState<'a> {
    /// A tensor handed from block to block (plain blocks).
    Tensor(Tensor),
    /// In the fused decoder's buffers (one decoded token on CUDA).
    #[cfg(feature = "cuda")]
    Fused(std::sync::MutexGuard<'a, FusedDecoder>),
    /// Without CUDA there is no fused state (the variant cannot be built; it only
    /// carries the lifetime).
    #[cfg(not(feature = "cuda"))]
    #[allow(dead_code)]
    Unreachable(std::marker::PhantomData<&'a ()>, std::convert::Infallible),
}

impl HiddenState<'_> {
    /// Runs device layer `i` with `weights`: the fused kernels, or `plain` on the tensor.
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn device_layer(
        &mut self,
        i: usize,
        weights: &BlockWeights,
        kv: &mut KvCache,
        plain: impl FnOnce(&Tensor, &mut KvCache) -> Result<Tensor>,
    ) -> Result<()> {
        match self {
            HiddenState::Tensor(x) => *x = plain(x, kv)?,
            #[cfg(feature = "cuda")]
            HiddenState::Fused(decoder) => decoder.layer(i, weights, kv)?,
            #[cfg(not(feature = "cuda"))]
            HiddenState::Unreachable(_, never) => match *never {},
        }
        Ok(())
    }

    /// Runs layer `i`, whose keys and values live in host memory, on the device: with the
    /// fused kernels, the cache visiting `device` for the layer (the bits of a device
    /// layer's decode step), or through `plain` on the hidden state as a tensor (prefill,
    /// or a cache not yet allocated).
    #[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
    pub(crate) fn visiting_layer(
        &mut self,
        i: usize,
        weights: &BlockWeights,
        kv: &mut KvCache,
        device: &Device,
        plain: impl FnOnce(&Tensor, &mut KvCache) -> Result<Tensor>,
    ) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let (HiddenState::Fused(decoder), true) = (&mut *self, kv.layer(i).buffers().is_some()) {
            kv.layer_mut(i).move_to(device)?;
            let queued = decoder.visiting_layer(i, weights, kv);
            kv.layer_mut(i).move_to(&Device::Cpu)?;
            return queued;
        }
        let x = self.get()?;
        let y = plain(&x, kv)?;
        self.set(y)
    }

    /// Whether the hidden state is in the fused kernels' buffers (a decode step on CUDA).
    pub(crate) fn is_fused(&self) -> bool {
        match self {
            HiddenState::Tensor(_) => false,
            #[cfg(feature = "cuda")]
            HiddenState::Fused(_) => true,
            #[cfg(not(feature = "cuda"))]
            HiddenState::Unreachable(_, never) => match *never {},
        }
    }

    /// The hidden state as a tensor on the device.
    pub(crate) fn get(&mut self) -> Result<Tensor> {
        match self {
            HiddenState::Tensor(x) => Ok(x.clone()),
            #[cfg(feature = "cuda")]
            HiddenState::Fused(decoder) => decoder.hidden(),
            #[cfg(not(feature = "cuda"))]
            HiddenState::Unreachable(_, never) => match *never {},
        }
    }

    /// Replaces the hidden state with `x` (on the device).
    pub(crate) fn set(&mut self, x: Tensor) -> Result<()> {
        match self {
            HiddenState::Tensor(old) => *old = x,
            #[cfg(feature = "cuda")]
            HiddenState::Fused(decoder) => decoder.set_hidden(&x)?,
            #[cfg(not(feature = "cuda"))]
            HiddenState::Unreachable(_, never) => match *never {},
        }
        Ok(())
    }
}
