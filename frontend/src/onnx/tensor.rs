//! The data of an ONNX `TensorProto`: inline typed fields, `raw_data`
//! (little-endian), or an external data file beside the model.
//!
//! Floating-point tensors (`FLOAT`, `DOUBLE`) become [`Tensor`]s of `f32`;
//! integer and boolean tensors become `i64` values, which the importer uses
//! for shapes, axes and indices. Other element types are refused by name.

use super::proto::{data_type, TensorProto};
use lopper_ir::Tensor;
use std::path::Path;

/// The decoded values of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `FLOAT` (or `DOUBLE`, rounded to `f32`).
    Float(Tensor),
    /// An integer or boolean tensor: its shape and values.
    Int(Vec<usize>, Vec<i64>),
}

/// Decodes `t`; `model_dir` is where external data paths start.
pub fn decode_tensor(t: &TensorProto, model_dir: &Path) -> Result<TensorData, String> {
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| format!("has a negative dimension {d}"))?);
    }
    let count = lopper_ir::tensor::checked_numel(&shape)
        .ok_or_else(|| format!("has a shape {shape:?} whose element count overflows"))?;
    let external;
    let raw: &[u8] = if t.data_location == 1 {
        external = read_external(t, model_dir)?;
        &external
    } else {
        &t.raw_data
    };
    let has_raw = t.data_location == 1 || !t.raw_data.is_empty();
    let width = match t.data_type {
        data_type::FLOAT | data_type::INT32 | data_type::UINT32 => 4,
        data_type::DOUBLE | data_type::INT64 | data_type::UINT64 => 8,
        data_type::UINT16 | data_type::INT16 => 2,
        data_type::UINT8 | data_type::INT8 | data_type::BOOL => 1,
        other => {
            return Err(format!(
                "has element type {} ({other}); lopper reads FLOAT, DOUBLE and integer tensors",
                data_type::name(other)
            ))
        }
    };
    let expect = |n: usize| -> Result<(), String> {
        if n == count {
            Ok(())
        } else {
            Err(format!(
                "holds {n} values but its shape {shape:?} needs {count}"
            ))
        }
    };
    if has_raw {
        if raw.len() != count.saturating_mul(width) {
            return Err(format!(
                "holds {} bytes of data but its shape {shape:?} of {} needs {}",
                raw.len(),
                data_type::name(t.data_type),
                count.saturating_mul(width)
            ));
        }
        let words = raw.chunks_exact(width);
        return Ok(match t.data_type {
            data_type::FLOAT => TensorData::Float(Tensor {
                shape,
                data: words
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect(),
            }),
            data_type::DOUBLE => TensorData::Float(Tensor {
                shape,
                data: words
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
            }),
            data_type::INT64 => TensorData::Int(
                shape,
                words
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            data_type::INT32 => TensorData::Int(
                shape,
                words
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                    .collect(),
            ),
            data_type::UINT32 => TensorData::Int(
                shape,
                words
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                    .collect(),
            ),
            data_type::UINT64 => TensorData::Int(
                shape,
                words
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64)
                    .collect(),
            ),
            data_type::INT16 => TensorData::Int(
                shape,
                words
                    .map(|b| i16::from_le_bytes(b.try_into().expect("2 bytes")) as i64)
                    .collect(),
            ),
            data_type::UINT16 => TensorData::Int(
                shape,
                words
                    .map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")) as i64)
                    .collect(),
            ),
            data_type::INT8 => {
                TensorData::Int(shape, raw.iter().map(|&b| b as i8 as i64).collect())
            }
            _ => TensorData::Int(shape, raw.iter().map(|&b| b as i64).collect()),
        });
    }
    Ok(match t.data_type {
        data_type::FLOAT => {
            expect(t.float_data.len())?;
            TensorData::Float(Tensor {
                shape,
                data: t.float_data.clone(),
            })
        }
        data_type::DOUBLE => {
            expect(t.double_data.len())?;
            TensorData::Float(Tensor {
                shape,
                data: t.double_data.iter().map(|&v| v as f32).collect(),
            })
        }
        data_type::INT64 => {
            expect(t.int64_data.len())?;
            TensorData::Int(shape, t.int64_data.clone())
        }
        data_type::UINT32 | data_type::UINT64 => {
            expect(t.uint64_data.len())?;
            TensorData::Int(shape, t.uint64_data.iter().map(|&v| v as i64).collect())
        }
        _ => {
            expect(t.int32_data.len())?;
            TensorData::Int(shape, t.int32_data.iter().map(|&v| v as i64).collect())
        }
    })
}

/// The bytes of an external tensor: `location` relative to the model's
/// folder, optional `offset` and `length`.
fn read_external(t: &TensorProto, model_dir: &Path) -> Result<Vec<u8>, String> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location = entry("location").ok_or("is stored externally but names no `location`")?;
    let number = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("has external `{key}` = {v:?}, not a number"))
            })
            .transpose()
    };
    let relative = Path::new(location);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "has external data at `{location}`, outside the model's folder"
        ));
    }
    let path = model_dir.join(relative);
    if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Err(format!(
            "has external data in `{}`, which is not a regular file",
            path.display()
        ));
    }
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "has external data in `{}` that cannot be read: {e}",
            path.display()
        )
    })?;
    let offset = number("offset")?.unwrap_or(0) as usize;
    let length = match number("length")? {
        Some(n) => n as usize,
        None => bytes.len().saturating_sub(offset),
    };
    let end = offset
        .checked_add(length)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "has external data at bytes {offset}..{} of `{}`, which holds {} bytes",
                offset.saturating_add(length),
                path.display(),
                bytes.len()
            )
        })?;
    Ok(bytes[offset..end].to_vec())
}
