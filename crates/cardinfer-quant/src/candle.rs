//! Turning stored bytes into Candle tensors, and quantizing floats into stored bytes.

use crate::QuantError;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use cardinfer_core::{StorageType, TensorInfo};

/// Candle's name for a storage type.
pub fn ggml_dtype(storage: StorageType) -> GgmlDType {
    match storage {
        StorageType::F32 => GgmlDType::F32,
        StorageType::F16 => GgmlDType::F16,
        StorageType::BF16 => GgmlDType::BF16,
        StorageType::Q4_0 => GgmlDType::Q4_0,
        StorageType::Q4_1 => GgmlDType::Q4_1,
        StorageType::Q5_0 => GgmlDType::Q5_0,
        StorageType::Q5_1 => GgmlDType::Q5_1,
        StorageType::Q8_0 => GgmlDType::Q8_0,
        StorageType::Q8_1 => GgmlDType::Q8_1,
        StorageType::Q2_K => GgmlDType::Q2K,
        StorageType::Q3_K => GgmlDType::Q3K,
        StorageType::Q4_K => GgmlDType::Q4K,
        StorageType::Q5_K => GgmlDType::Q5K,
        StorageType::Q6_K => GgmlDType::Q6K,
        StorageType::Q8_K => GgmlDType::Q8K,
    }
}

fn candle_err(info: &TensorInfo) -> impl Fn(candle_core::Error) -> QuantError + '_ {
    move |source| QuantError::Candle { tensor: info.name.clone(), source }
}

/// Builds a quantized tensor on `device` from its stored bytes (any storage type).
pub fn load_qtensor(info: &TensorInfo, bytes: &[u8], device: &Device) -> Result<QTensor, QuantError> {
    qtensor_from_ggml(ggml_dtype(info.storage), bytes, info.shape.clone(), device).map_err(candle_err(info))
}

/// Builds a float tensor of `dtype` on `device`; quantized storage is dequantized.
pub fn load_tensor(info: &TensorInfo, bytes: &[u8], dtype: DType, device: &Device) -> Result<Tensor, QuantError> {
    let err = candle_err(info);
    let tensor = match info.storage {
        StorageType::F32 => Tensor::from_raw_buffer(bytes, DType::F32, &info.shape, device),
        StorageType::F16 => Tensor::from_raw_buffer(bytes, DType::F16, &info.shape, device),
        StorageType::BF16 => Tensor::from_raw_buffer(bytes, DType::BF16, &info.shape, device),
        _ => load_qtensor(info, bytes, &Device::Cpu)?.dequantize(device),
    }
    .map_err(&err)?;
    tensor.to_dtype(dtype).map_err(err)
}

/// Quantizes row-major f32 `data` of `shape` into the stored bytes of `storage`
/// (Candle's reference quantizers, the same as ggml's).
pub fn quantize(name: &str, data: &[f32], shape: &[usize], storage: StorageType) -> Result<Vec<u8>, QuantError> {
    let err = |source| QuantError::Candle { tensor: name.to_string(), source };
    let tensor = Tensor::from_slice(data, shape, &Device::Cpu).map_err(err)?;
    match storage {
        StorageType::F32 => Ok(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        StorageType::F16 => Ok(data.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
        StorageType::BF16 => Ok(data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()),
        _ => {
            let q = QTensor::quantize(&tensor, ggml_dtype(storage)).map_err(err)?;
            Ok(q.data().map_err(err)?.into_owned())
        }
    }
}
