//! Compiles the fused decode kernels (`kernels/decode.cu`, and `kernels/moe.cu` for routed
//! experts, which includes Candle's MMVQ core vendored under `kernels/vendor/`) to PTX with nvcc when the `cuda`
//! feature is on, as candle-kernels does; without it there is nothing to build (CI has no
//! CUDA toolkit).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    #[cfg(feature = "cuda")]
    build_kernels();
}

#[cfg(feature = "cuda")]
fn build_kernels() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_files(["kernels/decode.cu", "kernels/moe.cu"])
        .arg("--expt-relaxed-constexpr")
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()
        .unwrap_or_else(|e| panic!("nvcc could not build kernels/*.cu: {e}"));
    ptx.write(out_dir.join("ptx.rs")).unwrap_or_else(|e| panic!("writing ptx.rs: {e}"));
}
