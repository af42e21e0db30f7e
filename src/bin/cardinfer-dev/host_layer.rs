//! One transformer block computed on the CPU for one token, as a hybrid run's host layers
//! are: Candle's block with its small ops (norms, RoPE, softmax) on Candle's Rayon pool or
//! on one thread, or the device's bits ([`cardinfer_stream::cpu::exact`], the executor's way on
//! the fused path), with zeroed Q4_K weights cycled through 1 GiB so they come from
//! memory. Prints milliseconds per block for each, three rounds.
//!
//! ```text
//! RAYON_NUM_THREADS=14 cardinfer-dev host-layer --hidden 2560 --intermediate 9728 --heads 32
//! RAYON_NUM_THREADS=14 cardinfer-dev host-layer --model qwen3-4b.gguf --ways exact
//! ```
//!
//! With `--model`, the file's own first layers are timed instead, read into host memory
//! as a hybrid run's host layers are. `CARDINFER_HOST_STAGES=1` prints each exact layer's
//! steps (`cardinfer_stream::executor::host_layer::stages`).

use anyhow::Result;
use candle_core::{Device, Tensor};
use cardinfer_core::Family;
use cardinfer_stream::cpu::matvec::with_serial_small_ops;
use cardinfer_stream::executor::BlockReader;
use cardinfer_stream::LayerStream;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Hidden size.
    #[arg(long, default_value_t = 2560)]
    hidden: usize,
    /// MLP intermediate size.
    #[arg(long, default_value_t = 9728)]
    intermediate: usize,
    /// Query heads (8 KV heads, head size 128).
    #[arg(long, default_value_t = 32)]
    heads: usize,
    /// Decode steps per round (the cache grows by one position each).
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Time this GGUF file's own layers (its first `--layers`, read into host memory as a
    /// hybrid run's host layers are) instead of zeroed ones of the sizes above.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Layers of `--model` to cycle through.
    #[arg(long, default_value_t = 16)]
    layers: usize,
    /// Which ways to time: rayon, serial, exact (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "rayon,serial,exact", value_parser = ["rayon", "serial", "exact"])]
    ways: Vec<String>,
    /// Positions each layer's KV cache holds before the timed steps (attention's share of a
    /// host layer grows with it).
    #[arg(long, default_value_t = 0)]
    depth: usize,
    /// How the KV cache stores keys and values: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: String,
}

pub fn run(args: Args) -> Result<()> {
    let kv_type: cardinfer_core::KvType = args.kv_type.parse()?;
    let context = (args.depth + args.steps).max(512);
    let (spec, layers) = match &args.model {
        Some(path) => {
            if args.layers == 0 {
                anyhow::bail!("--layers must be at least 1");
            }
            let ckpt = std::sync::Arc::new(cardinfer_quant::Checkpoint::open(path)?);
            let spec = cardinfer_core::ModelSpec { context_length: context, ..ckpt.spec()? };
            let reader = cardinfer_stream::executor::CheckpointReader::new(ckpt, spec.clone());
            let layers = (0..args.layers.min(spec.num_layers))
                .map(|i| reader.read(cardinfer_core::BlockId::Layer(i), &Device::Cpu))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            (spec, layers)
        }
        None => {
            let spec = cardinfer_core::ModelSpec {
                hidden_size: args.hidden,
                intermediate_size: args.intermediate,
                num_heads: args.heads,
                num_kv_heads: 8,
                context_length: context,
                ..crate::common::probe_spec(Family::Qwen3, 1)
            };
            let (layers, _) = crate::common::cpu_blocks(&spec)?;
            (spec, layers)
        }
    };
    let count = layers.len();
    let decoder = cardinfer_stream::model::family::Decoder::new(spec.clone(), None);
    let x = Tensor::zeros((1, 1, spec.hidden_size), candle_core::DType::F32, &Device::Cpu)?;
    for round in 0..3 {
        for way in args.ways.iter().map(String::as_str) {
            let mut slots = vec![cardinfer_stream::KvSlot::with_capacity(context, kv_type); count];
            if args.depth > 0 {
                // `depth` positions of small values, as a prompt would leave them.
                let shape = (1, spec.num_kv_heads, args.depth, spec.head_dim);
                let held = Tensor::rand(-1f32, 1f32, shape, &Device::Cpu)?;
                for slot in &mut slots {
                    slot.append(&held, &held)?;
                }
            }
            let start = Instant::now();
            for step in 0..args.steps {
                let pos = args.depth + step;
                for (layer, slot) in layers.iter().zip(slots.iter_mut()) {
                    match way {
                        "rayon" => drop(decoder.block(0, layer, &x, slot, pos)?),
                        "serial" => drop(with_serial_small_ops(|| decoder.block(0, layer, &x, slot, pos))?),
                        _ => match cardinfer_stream::executor::host_layer::exact::decode_layer(
                            &decoder, 0, layer, &x, slot,
                        )? {
                            Some(_) => {}
                            None => anyhow::bail!("the exact layer does not cover this layer"),
                        },
                    }
                }
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / (args.steps * count) as f64;
            println!(
                "{}x{} depth {} {kv_type} round {round} {way}: {ms:.3} ms/layer",
                spec.hidden_size, spec.intermediate_size, args.depth
            );
        }
    }
    Ok(())
}
