//! GGUF v2/v3 reader over a memory map, with every offset and size checked.

use super::GgufValue;
use crate::QuantError;
use cardinfer_core::{StorageType, TensorInfo};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Largest number of dimensions a GGUF tensor may have.
const MAX_DIMS: u32 = 4;
/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// An open GGUF file: metadata, tensor table with exact byte ranges, and the mapped bytes.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
    alignment: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates `path`. Nothing but the header is read; tensor data stays mapped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QuantError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| QuantError::io(&path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process while we read
        // it is outside what any mmap-based reader can defend against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| QuantError::io(&path, e))?;
        Self::parse(path, mmap)
    }

    /// Parses a GGUF file held in memory (a copy of `bytes`), named `name` in errors. For
    /// tests and fuzzing; models are read with [`GgufFile::open`], which maps the file.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, QuantError> {
        let path = PathBuf::from(name);
        let mut anon = memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(|e| QuantError::io(&path, e))?;
        anon[..bytes.len()].copy_from_slice(bytes);
        let mmap = anon.make_read_only().map_err(|e| QuantError::io(&path, e))?;
        // An empty input maps one zero byte: parse exactly the bytes given.
        if bytes.is_empty() {
            return Err(QuantError::Truncated { path, what: "magic".into(), offset: 0, needed: 4, file_len: 0 });
        }
        Self::parse(path, mmap)
    }

    fn parse(path: PathBuf, mmap: Mmap) -> Result<Self, QuantError> {
        let mut cur = Cursor { path: &path, bytes: &mmap, pos: 0 };
        let magic: [u8; 4] = cur.take(4, "magic")?.try_into().unwrap_or([0; 4]);
        if &magic != b"GGUF" {
            return Err(QuantError::BadMagic { path: path.clone(), found: magic });
        }
        let version = cur.u32("version")?;
        if version != 2 && version != 3 {
            return Err(QuantError::UnsupportedVersion { path: path.clone(), version });
        }
        let tensor_count = cur.u64("tensor count")?;
        let kv_count = cur.u64("metadata count")?;
        // Each entry needs well over 8 bytes: a count larger than the file is corrupt.
        cur.check_count(tensor_count, 8 + 4 + 8 + 4 + 8, "tensor count")?;
        cur.check_count(kv_count, 8 + 4, "metadata count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = cur.string("metadata key")?;
            let type_id = cur.u32(&format!("type of `{key}`"))?;
            let value = cur.value(type_id, &key, 0)?;
            metadata.insert(key, value);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(QuantError::Metadata {
                        path: path.clone(),
                        key: "general.alignment".into(),
                        reason: format!("must be a power of two, found {v:?}"),
                    })
                }
            },
        };

        let mut raw = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = cur.string("tensor name")?;
            let n_dims = cur.u32(&format!("dimension count of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(tensor_err(&path, &name, format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(cur.u64(&format!("dimensions of `{name}`"))?);
            }
            let type_id = cur.u32(&format!("type of `{name}`"))?;
            let offset = cur.u64(&format!("offset of `{name}`"))?;
            raw.push((name, dims, type_id, offset));
        }
        let data_offset = align_up(cur.pos as u64, alignment);
        let file_len = mmap.len() as u64;

        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, type_id, rel_offset) in raw {
            let storage = StorageType::from_gguf_id(type_id).map_err(|e| tensor_err(&path, &name, e.to_string()))?;
            let mut elems: u64 = 1;
            for &d in &dims {
                elems = elems
                    .checked_mul(d)
                    .filter(|&e| e <= file_len.saturating_mul(8))
                    .ok_or_else(|| tensor_err(&path, &name, format!("shape {dims:?} is too large for the file")))?;
            }
            let row_len = dims[0] as usize;
            let rows = (elems / dims[0].max(1)) as usize;
            let len =
                storage.tensor_bytes(&name, row_len, rows).map_err(|e| tensor_err(&path, &name, e.to_string()))?;
            if rel_offset % alignment != 0 {
                return Err(tensor_err(&path, &name, format!("offset {rel_offset} is not aligned to {alignment}")));
            }
            let offset = data_offset
                .checked_add(rel_offset)
                .ok_or_else(|| tensor_err(&path, &name, "offset overflows".into()))?;
            if offset.checked_add(len).is_none_or(|end| end > file_len) {
                return Err(QuantError::Truncated {
                    path: path.clone(),
                    what: format!("data of tensor `{name}`"),
                    offset,
                    needed: len,
                    file_len,
                });
            }
            // GGUF lists ne[0] (innermost) first; Candle wants outermost first.
            let shape = dims.iter().rev().map(|&d| d as usize).collect();
            tensors.push(TensorInfo { name, shape, storage, file: 0, offset, len });
        }
        check_disjoint(&path, &tensors)?;
        Ok(Self { path, mmap, version, metadata, tensors, data_offset, alignment })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of `info` (validated at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset as usize..info.end() as usize]
    }

    /// A metadata value, or an error naming the key.
    pub fn require(&self, key: &str) -> Result<&GgufValue, QuantError> {
        self.metadata.get(key).ok_or_else(|| QuantError::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            reason: "missing".into(),
        })
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str, QuantError> {
        self.require(key)?.as_str().ok_or_else(|| self.wrong_type(key, "a string"))
    }

    /// An integer metadata value (any integer width), if present.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, QuantError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.wrong_type(key, "an integer")),
        }
    }

    /// A numeric metadata value, if present.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, QuantError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong_type(key, "a number")),
        }
    }

    pub(crate) fn wrong_type(&self, key: &str, expected: &str) -> QuantError {
        QuantError::Metadata { path: self.path.clone(), key: key.to_string(), reason: format!("expected {expected}") }
    }
}

fn tensor_err(path: &Path, name: &str, reason: String) -> QuantError {
    QuantError::Tensor { path: path.to_path_buf(), tensor: name.to_string(), reason }
}

/// Rounds `pos` up to a multiple of `alignment` (a power of two).
pub fn align_up(pos: u64, alignment: u64) -> u64 {
    pos.div_ceil(alignment) * alignment
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], QuantError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(QuantError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(slice)
    }

    fn check_count(&self, count: u64, min_entry: u64, what: &str) -> Result<(), QuantError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_entry) > remaining {
            return Err(QuantError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{what} {count}"),
                offset: self.pos as u64,
                needed: count.saturating_mul(min_entry),
                file_len: self.bytes.len() as u64,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], QuantError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, QuantError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, QuantError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, QuantError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, type_id: u32, key: &str, depth: u32) -> Result<GgufValue, QuantError> {
        let what = || format!("value of `{key}`");
        let value = match type_id {
            0 => GgufValue::U8(self.array::<1>(&what())?[0]),
            1 => GgufValue::I8(self.array::<1>(&what())?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&what())?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&what())?)),
            4 => GgufValue::U32(self.u32(&what())?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&what())?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&what())?)),
            7 => GgufValue::Bool(self.array::<1>(&what())?[0] != 0),
            8 => GgufValue::String(self.string(&what())?),
            9 if depth == 0 => {
                let item_type = self.u32(&what())?;
                let count = self.u64(&what())?;
                let min_size = match item_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                self.check_count(count, min_size, &format!("array length of `{key}`"))?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(&what())?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&what())?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&what())?)),
            other => {
                return Err(QuantError::Metadata {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                    reason: format!("unknown or nested value type {other}"),
                })
            }
        };
        Ok(value)
    }
}

/// Every tensor has a name of its own and bytes of its own: two tensors with one name,
/// or whose byte ranges overlap, make a corrupt file (each would read the other's data).
fn check_disjoint(path: &Path, tensors: &[TensorInfo]) -> Result<(), QuantError> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.len));
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.len > 0 && b.len > 0 && a.offset + a.len > b.offset {
            let reason = format!(
                "its bytes {}..{} overlap those of `{}` ({}..{})",
                b.offset,
                b.end(),
                a.name,
                a.offset,
                a.end()
            );
            return Err(tensor_err(path, &b.name, reason));
        }
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
        return Err(tensor_err(path, pair[0], "the file lists this tensor twice".into()));
    }
    Ok(())
}
