//! GGUF v3 writer. Output goes to a temporary name and is renamed when complete, so an
//! interrupted write never leaves a partial file under the final name.

use super::reader::{align_up, DEFAULT_ALIGNMENT};
use super::GgufValue;
use crate::QuantError;
use cardinfer_core::StorageType;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

struct PendingTensor<'a> {
    name: String,
    shape: Vec<usize>,
    storage: StorageType,
    /// Exact stored size, checked against `data` (or the produced bytes).
    len: u64,
    /// `None` for a tensor declared with [`GgufWriter::declare`]: produced while writing.
    data: Option<Cow<'a, [u8]>>,
}

/// Collects metadata and tensors, then writes one GGUF file.
///
/// Tensors are written in the order they were added. Their bytes are either given up
/// front ([`GgufWriter::tensor`]) or only declared ([`GgufWriter::declare`]) and produced
/// one at a time while the file is written ([`GgufWriter::write_with`]), so a model larger
/// than RAM can be converted.
///
/// ```
/// use cardinfer_quant::gguf::{GgufFile, GgufValue, GgufWriter};
/// use cardinfer_core::StorageType;
/// let dir = std::env::temp_dir().join(format!("gguf-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("tiny.gguf");
/// let mut w = GgufWriter::new();
/// w.metadata("general.architecture", GgufValue::String("llama".into()));
/// let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// w.tensor("x", &[2], StorageType::F32, data).unwrap();
/// w.write(&path).unwrap();
/// let file = GgufFile::open(&path).unwrap();
/// assert_eq!(file.tensors()[0].shape, vec![2]);
/// # drop(file);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata entry (replacing one with the same key).
    pub fn metadata(&mut self, key: impl Into<String>, value: GgufValue) {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value));
    }

    /// Adds a tensor. `shape` is outermost first (Candle order); `data` must be exactly
    /// the tensor's stored bytes.
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        storage: StorageType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), QuantError> {
        let name = name.into();
        let data = data.into();
        let len = stored_len(&name, shape, storage)?;
        if len != data.len() as u64 {
            let reason = format!("{} bytes given, {len} expected for {shape:?} {storage:?}", data.len());
            return Err(QuantError::Tensor { path: PathBuf::from("<writer>"), tensor: name, reason });
        }
        self.tensors.push(PendingTensor { name, shape: shape.to_vec(), storage, len, data: Some(data) });
        Ok(())
    }

    /// Declares a tensor whose bytes are produced later, by the closure given to
    /// [`GgufWriter::write_with`]. Returns its index in the file's tensor order.
    pub fn declare(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        storage: StorageType,
    ) -> Result<usize, QuantError> {
        let name = name.into();
        let len = stored_len(&name, shape, storage)?;
        self.tensors.push(PendingTensor { name, shape: shape.to_vec(), storage, len, data: None });
        Ok(self.tensors.len() - 1)
    }

    /// Total stored bytes of all tensors (without alignment padding).
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }

    /// Writes the file: to `<path>.tmp` first (replacing a `.tmp` file an interrupted
    /// write left), renamed to `path` once complete. Every tensor must have been given its
    /// bytes with [`GgufWriter::tensor`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), QuantError> {
        self.write_with(path, |index| {
            let t = &self.tensors[index];
            Err(QuantError::Tensor {
                path: PathBuf::from("<writer>"),
                tensor: t.name.clone(),
                reason: "declared without data and written without a producer".into(),
            })
        })
    }

    /// Writes the file like [`GgufWriter::write`], calling `produce(index)` for the bytes
    /// of each declared tensor, in file order. If `produce` fails (or returns the wrong
    /// number of bytes), the temporary file is removed and nothing is left at `path`.
    pub fn write_with<F>(&self, path: impl AsRef<Path>, mut produce: F) -> Result<(), QuantError>
    where
        F: FnMut(usize) -> Result<Vec<u8>, QuantError>,
    {
        let path = path.as_ref();
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        // A `<path>.tmp` file is what an interrupted write of this same output left: ours to
        // replace. Anything else by that name is not ours to remove.
        match std::fs::symlink_metadata(&tmp) {
            Ok(meta) if meta.is_file() => std::fs::remove_file(&tmp).map_err(|e| QuantError::io(&tmp, e))?,
            Ok(_) => {
                let reason = "is in the way of the temporary output and is not a file this writer left: remove it";
                return Err(QuantError::io(&tmp, std::io::Error::other(reason)));
            }
            Err(_) => {}
        }
        let result = self
            .write_to(&tmp, &mut produce)
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| QuantError::io(path, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(
        &self,
        path: &Path,
        produce: &mut dyn FnMut(usize) -> Result<Vec<u8>, QuantError>,
    ) -> Result<(), QuantError> {
        let io = |e| QuantError::io(path, e);
        let file = File::create(path).map_err(io)?;
        let mut out = BufWriter::new(file);
        self.write_into(&mut out, path, produce)?;
        out.flush().map_err(io)?;
        out.get_ref().sync_all().map_err(io)?;
        Ok(())
    }

    /// The whole file in memory, for small files (tests, fuzzing): every tensor must have
    /// been given its bytes with [`GgufWriter::tensor`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, QuantError> {
        let mut bytes = Vec::new();
        let path = Path::new("<memory>");
        self.write_into(&mut bytes, path, &mut |index| {
            let reason = "declared without data and written to memory".into();
            Err(QuantError::Tensor { path: path.to_path_buf(), tensor: self.tensors[index].name.clone(), reason })
        })?;
        Ok(bytes)
    }

    fn write_into<W: Write>(
        &self,
        inner: W,
        path: &Path,
        produce: &mut dyn FnMut(usize) -> Result<Vec<u8>, QuantError>,
    ) -> Result<(), QuantError> {
        let io = |e| QuantError::io(path, e);
        let mut out = Counting { inner, written: 0 };
        let alignment = self
            .metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT);
        out.put(b"GGUF").map_err(io)?;
        out.put(&3u32.to_le_bytes()).map_err(io)?;
        out.put(&(self.tensors.len() as u64).to_le_bytes()).map_err(io)?;
        out.put(&(self.metadata.len() as u64).to_le_bytes()).map_err(io)?;
        for (key, value) in &self.metadata {
            write_string(&mut out, key).map_err(io)?;
            out.put(&value.type_id().to_le_bytes()).map_err(io)?;
            write_value(&mut out, value).map_err(io)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(&mut out, &t.name).map_err(io)?;
            out.put(&(t.shape.len() as u32).to_le_bytes()).map_err(io)?;
            for &d in t.shape.iter().rev() {
                out.put(&(d as u64).to_le_bytes()).map_err(io)?;
            }
            out.put(&t.storage.gguf_id().to_le_bytes()).map_err(io)?;
            out.put(&offset.to_le_bytes()).map_err(io)?;
            offset = align_up(offset + t.len, alignment);
        }
        out.pad_to(alignment).map_err(io)?;
        for (index, t) in self.tensors.iter().enumerate() {
            match &t.data {
                Some(data) => out.put(data).map_err(io)?,
                None => {
                    let data = produce(index)?;
                    if data.len() as u64 != t.len {
                        let reason = format!("{} bytes produced, {} expected", data.len(), t.len);
                        return Err(QuantError::Tensor { path: path.to_path_buf(), tensor: t.name.clone(), reason });
                    }
                    out.put(&data).map_err(io)?;
                }
            }
            out.pad_to(alignment).map_err(io)?;
        }
        Ok(())
    }
}

fn stored_len(name: &str, shape: &[usize], storage: StorageType) -> Result<u64, QuantError> {
    let bad = |reason: String| QuantError::Tensor { path: PathBuf::from("<writer>"), tensor: name.to_string(), reason };
    let row_len = *shape.last().ok_or_else(|| bad("empty shape".into()))?;
    let rows = shape.iter().rev().skip(1).product();
    storage.tensor_bytes(name, row_len, rows).map_err(|e| bad(e.to_string()))
}

struct Counting<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, alignment: u64) -> std::io::Result<()> {
        let target = align_up(self.written, alignment);
        let zeros = vec![0u8; (target - self.written) as usize];
        self.put(&zeros)
    }
}

fn write_string<W: Write>(out: &mut Counting<W>, s: &str) -> std::io::Result<()> {
    out.put(&(s.len() as u64).to_le_bytes())?;
    out.put(s.as_bytes())
}

fn write_value<W: Write>(out: &mut Counting<W>, value: &GgufValue) -> std::io::Result<()> {
    match value {
        GgufValue::U8(v) => out.put(&[*v]),
        GgufValue::I8(v) => out.put(&v.to_le_bytes()),
        GgufValue::U16(v) => out.put(&v.to_le_bytes()),
        GgufValue::I16(v) => out.put(&v.to_le_bytes()),
        GgufValue::U32(v) => out.put(&v.to_le_bytes()),
        GgufValue::I32(v) => out.put(&v.to_le_bytes()),
        GgufValue::U64(v) => out.put(&v.to_le_bytes()),
        GgufValue::I64(v) => out.put(&v.to_le_bytes()),
        GgufValue::F32(v) => out.put(&v.to_le_bytes()),
        GgufValue::F64(v) => out.put(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.put(&[*v as u8]),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(items) => {
            let item_type = items.first().map(GgufValue::type_id).unwrap_or(4);
            out.put(&item_type.to_le_bytes())?;
            out.put(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(out, item))
        }
    }
}
