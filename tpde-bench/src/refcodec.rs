//! Reference codecs the issue asks tpde to beat, implemented here so that
//! they run on the same files in the same run: per tensor, a delta against
//! the base (XOR, or wrapping integer SUB followed by zigzag), split into byte
//! planes (most significant plane first), then one zstd frame per plane. This
//! reproduces the reference ratios in `../shared/README.md` (measured there per
//! tensor and plane; one frame per tensor of concatenated planes is ~1% worse).
//! `planes` is the same without a base (the target alone).
//!
//! They are deliberately independent of `tpde-format` (their own safetensors
//! header parsing, their own file layout) so a bug in tpde cannot make its
//! baselines look worse. The file layout is private to this harness:
//!
//! ```text
//! "TBREF1\0\0"  codec:u8  level:i32 LE
//! prefix_frame_len:u64  prefix_frame   (zstd of the 8-byte length + JSON header)
//! per tensor, in data order: used_base:u8  planes:u8  then per plane
//!   frame_len:u64  frame
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;

const MAGIC: &[u8; 8] = b"TBREF1\0\0";

/// A reference codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Codec {
    /// Byte planes of the target alone.
    Planes,
    /// `target XOR base`, byte planes.
    Xor,
    /// `zigzag(target - base mod 2^w)`, byte planes.
    Sub,
}

impl Codec {
    fn id(self) -> u8 {
        match self {
            Codec::Planes => 0,
            Codec::Xor => 1,
            Codec::Sub => 2,
        }
    }
    fn from_id(id: u8) -> Result<Codec> {
        Ok(match id {
            0 => Codec::Planes,
            1 => Codec::Xor,
            2 => Codec::Sub,
            _ => bail!("unknown reference codec id {id}"),
        })
    }
}

/// One tensor of a safetensors file: where its bytes are and how to read them.
#[derive(Debug, Clone)]
struct TensorInfo {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    start: usize,
    end: usize,
}

/// A parsed safetensors file held in memory.
#[derive(Debug)]
struct StFile {
    bytes: Vec<u8>,
    /// Length of the 8-byte prefix plus the JSON header.
    prefix_len: usize,
    /// Tensors in data order; they tile the data region exactly.
    tensors: Vec<TensorInfo>,
}

fn parse_prefix(bytes: &[u8]) -> Result<(usize, Vec<TensorInfo>)> {
    let n = bytes.get(..8).context("file shorter than 8 bytes")?;
    let n = u64::from_le_bytes(n.try_into().context("prefix")?) as usize;
    let prefix_len = n.checked_add(8).context("header length overflows")?;
    let header = bytes
        .get(8..prefix_len)
        .context("header runs past the end of the file")?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).context("safetensors header is not a JSON object")?;
    let mut tensors = Vec::with_capacity(json.len());
    for (name, v) in json {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().context("dtype")?.to_owned();
        let shape = v["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .map(|d| d.as_u64().context("shape entry"))
            .collect::<Result<Vec<_>>>()?;
        let off = v["data_offsets"].as_array().context("data_offsets")?;
        let (Some(s), Some(e)) = (
            off.first().and_then(|x| x.as_u64()),
            off.get(1).and_then(|x| x.as_u64()),
        ) else {
            bail!("tensor {name:?}: bad data_offsets");
        };
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            start: prefix_len + s as usize,
            end: prefix_len + e as usize,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.end));
    Ok((prefix_len, tensors))
}

impl StFile {
    fn read(path: &Path) -> Result<StFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (prefix_len, tensors) =
            parse_prefix(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        let mut at = prefix_len;
        for t in &tensors {
            ensure!(
                t.start == at && t.end >= t.start,
                "{}: tensor {:?} does not follow the previous one (the reference codecs need back-to-back tensors)",
                path.display(),
                t.name
            );
            at = t.end;
        }
        ensure!(
            at == bytes.len(),
            "{}: {} bytes after the last tensor",
            path.display(),
            bytes.len() - at
        );
        Ok(StFile {
            bytes,
            prefix_len,
            tensors,
        })
    }
}

/// Bytes per element of a safetensors dtype (1 for unknown names: a width-1
/// delta is still exact, just not planed).
pub fn dtype_width(dtype: &str) -> usize {
    match dtype {
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => 1,
    }
}

/// f16 bits to the f32 bits of the same value (exact: every f16 is an f32).
fn f16_to_f32_bits(h: u16) -> u32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        0 if man == 0 => sign,
        // Subnormal: man * 2^-24, exact in f32.
        0 => sign | (man as f32 * f32::powi(2.0, -24)).to_bits(),
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    }
}

/// The base tensor as a predictor for a target tensor: the same bytes when the
/// dtypes match, an exact widening for BF16/F16 → F32, else none.
pub fn predictor(base_dtype: &str, base: &[u8], target_dtype: &str) -> Option<Vec<u8>> {
    if base_dtype == target_dtype {
        return Some(base.to_vec());
    }
    let widen = |f: &dyn Fn(u16) -> u32| -> Vec<u8> {
        base.chunks_exact(2)
            .flat_map(|c| f(u16::from_le_bytes([c[0], c[1]])).to_le_bytes())
            .collect()
    };
    match (base_dtype, target_dtype) {
        ("BF16", "F32") => Some(widen(&|b| u32::from(b) << 16)),
        ("F16", "F32") => Some(widen(&f16_to_f32_bits)),
        _ => None,
    }
}

macro_rules! sub_zigzag {
    ($t:ty, $s:ty, $w:expr, $tgt:expr, $base:expr, $out:expr) => {
        for ((o, t), b) in $out
            .chunks_exact_mut($w)
            .zip($tgt.chunks_exact($w))
            .zip($base.chunks_exact($w))
        {
            let t = <$t>::from_le_bytes(t.try_into().unwrap_or_default());
            let b = <$t>::from_le_bytes(b.try_into().unwrap_or_default());
            let d = t.wrapping_sub(b) as $s;
            let z = ((d << 1) ^ (d >> (<$t>::BITS - 1))) as $t;
            o.copy_from_slice(&z.to_le_bytes());
        }
    };
}

macro_rules! add_unzigzag {
    ($t:ty, $w:expr, $delta:expr, $base:expr) => {
        for (d, b) in $delta.chunks_exact_mut($w).zip($base.chunks_exact($w)) {
            let z = <$t>::from_le_bytes((&*d).try_into().unwrap_or_default());
            let b = <$t>::from_le_bytes(b.try_into().unwrap_or_default());
            let v = (z >> 1) ^ (z & 1).wrapping_neg();
            d.copy_from_slice(&b.wrapping_add(v).to_le_bytes());
        }
    };
}

/// `zigzag(target - base)` element-wise on `w`-byte little-endian integers.
pub fn sub_delta(target: &[u8], base: &[u8], w: usize) -> Vec<u8> {
    let mut out = vec![0u8; target.len()];
    match w {
        2 => sub_zigzag!(u16, i16, 2, target, base, out),
        4 => sub_zigzag!(u32, i32, 4, target, base, out),
        8 => sub_zigzag!(u64, i64, 8, target, base, out),
        _ => sub_zigzag!(u8, i8, 1, target, base, out),
    }
    out
}

/// Inverse of [`sub_delta`], in place: `delta` becomes the target.
pub fn sub_apply(delta: &mut [u8], base: &[u8], w: usize) {
    match w {
        2 => add_unzigzag!(u16, 2, delta, base),
        4 => add_unzigzag!(u32, 4, delta, base),
        8 => add_unzigzag!(u64, 8, delta, base),
        _ => add_unzigzag!(u8, 1, delta, base),
    }
}

/// Byte planes, most significant plane first.
pub fn to_planes(data: &[u8], w: usize) -> Vec<u8> {
    if w == 1 {
        return data.to_vec();
    }
    let n = data.len() / w;
    let mut out = vec![0u8; data.len()];
    for (p, plane) in out.chunks_exact_mut(n.max(1)).take(w).enumerate() {
        let byte = w - 1 - p;
        for (o, e) in plane.iter_mut().zip(data.chunks_exact(w)) {
            *o = e[byte];
        }
    }
    out
}

/// Inverse of [`to_planes`].
pub fn from_planes(planes: &[u8], w: usize) -> Vec<u8> {
    if w == 1 {
        return planes.to_vec();
    }
    let n = planes.len() / w;
    let mut out = vec![0u8; planes.len()];
    for (p, plane) in planes.chunks_exact(n.max(1)).take(w).enumerate() {
        let byte = w - 1 - p;
        for (e, &v) in out.chunks_exact_mut(w).zip(plane) {
            e[byte] = v;
        }
    }
    out
}

fn base_map(base: &StFile) -> HashMap<&str, &TensorInfo> {
    base.tensors.iter().map(|t| (t.name.as_str(), t)).collect()
}

/// The predictor for target tensor `t`, if the base has a usable counterpart.
fn base_for(
    t: &TensorInfo,
    base: Option<(&StFile, &HashMap<&str, &TensorInfo>)>,
) -> Option<Vec<u8>> {
    let (bf, map) = base?;
    let b = map.get(t.name.as_str())?;
    if b.shape != t.shape {
        return None;
    }
    let p = predictor(&b.dtype, bf.bytes.get(b.start..b.end)?, &t.dtype)?;
    (p.len() == t.end - t.start).then_some(p)
}

/// Compresses `target` (against `base` for XOR/SUB) into `out`. Tensors are
/// encoded in parallel on the current rayon pool.
pub fn pack(
    codec: Codec,
    target: &Path,
    base: Option<&Path>,
    out: &Path,
    level: i32,
) -> Result<()> {
    let tf = StFile::read(target)?;
    let bf = match (codec, base) {
        (Codec::Planes, _) | (_, None) => None,
        (_, Some(b)) => Some(StFile::read(b)?),
    };
    let map = bf.as_ref().map(base_map);
    let base = bf.as_ref().zip(map.as_ref());
    let frames: Vec<(bool, Vec<Vec<u8>>)> = tf
        .tensors
        .par_iter()
        .map(|t| -> Result<(bool, Vec<Vec<u8>>)> {
            let data = &tf.bytes[t.start..t.end];
            let w = dtype_width(&t.dtype);
            ensure!(
                data.len() % w == 0,
                "tensor {:?}: {} bytes is not a whole number of {w}-byte elements",
                t.name,
                data.len()
            );
            let pred = base_for(t, base);
            let delta = match (&pred, codec) {
                (None, _) | (_, Codec::Planes) => data.to_vec(),
                (Some(p), Codec::Xor) => data.iter().zip(p).map(|(a, b)| a ^ b).collect(),
                (Some(p), Codec::Sub) => sub_delta(data, p, w),
            };
            let planes = to_planes(&delta, w);
            let frames = planes
                .par_chunks((planes.len() / w).max(1))
                .map(|p| zstd::bulk::compress(p, level))
                .collect::<std::io::Result<Vec<_>>>()
                .with_context(|| format!("zstd on tensor {:?}", t.name))?;
            Ok((pred.is_some(), frames))
        })
        .collect::<Result<_>>()?;
    let prefix = zstd::bulk::compress(&tf.bytes[..tf.prefix_len], level)?;
    let mut w = BufWriter::new(File::create(out)?);
    w.write_all(MAGIC)?;
    w.write_all(&[codec.id()])?;
    w.write_all(&level.to_le_bytes())?;
    w.write_all(&(prefix.len() as u64).to_le_bytes())?;
    w.write_all(&prefix)?;
    for (used, planes) in &frames {
        w.write_all(&[u8::from(*used), planes.len() as u8])?;
        for f in planes {
            w.write_all(&(f.len() as u64).to_le_bytes())?;
            w.write_all(f)?;
        }
    }
    // No fsync: like the zstd CLI, unlike tpde (which syncs before its rename).
    w.flush()?;
    Ok(())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    ensure!(buf.len() >= n, "reference archive is truncated");
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

fn take_u64(buf: &mut &[u8]) -> Result<usize> {
    let b = take(buf, 8)?;
    Ok(u64::from_le_bytes(b.try_into()?) as usize)
}

/// Reconstructs the target file from a reference archive (and the base it was
/// packed against) into `out`.
pub fn unpack(archive: &Path, base: Option<&Path>, out: &Path) -> Result<()> {
    let bytes = std::fs::read(archive)?;
    let mut buf = bytes.as_slice();
    ensure!(take(&mut buf, 8)? == MAGIC, "not a reference archive");
    let codec = Codec::from_id(take(&mut buf, 1)?[0])?;
    take(&mut buf, 4)?;
    let plen = take_u64(&mut buf)?;
    let prefix = zstd::stream::decode_all(take(&mut buf, plen)?)?;
    let (_, tensors) = parse_prefix(&prefix)?;
    let mut frames = Vec::with_capacity(tensors.len());
    for _ in &tensors {
        let head = take(&mut buf, 2)?;
        let mut planes = Vec::with_capacity(usize::from(head[1]));
        for _ in 0..head[1] {
            let n = take_u64(&mut buf)?;
            planes.push(take(&mut buf, n)?);
        }
        frames.push((head[0] != 0, planes));
    }
    ensure!(buf.is_empty(), "trailing bytes in reference archive");
    let bf = match base {
        Some(b) if codec != Codec::Planes => Some(StFile::read(b)?),
        _ => None,
    };
    let map = bf.as_ref().map(base_map);
    let basep = bf.as_ref().zip(map.as_ref());
    let parts: Vec<Vec<u8>> = tensors
        .par_iter()
        .zip(&frames)
        .map(|(t, (used, frames))| -> Result<Vec<u8>> {
            let len = t.end - t.start;
            let w = dtype_width(&t.dtype);
            let plane_len = len / w;
            let parts = frames
                .par_iter()
                .map(|f| zstd::bulk::decompress(f, plane_len))
                .collect::<std::io::Result<Vec<_>>>()?;
            let planes = parts.concat();
            ensure!(planes.len() == len, "tensor {:?}: wrong length", t.name);
            let mut data = from_planes(&planes, w);
            if *used {
                let p = base_for(t, basep)
                    .with_context(|| format!("tensor {:?} needs the base", t.name))?;
                match codec {
                    Codec::Xor => data.iter_mut().zip(&p).for_each(|(a, b)| *a ^= b),
                    Codec::Sub => sub_apply(&mut data, &p, w),
                    Codec::Planes => bail!("planes archive marks a base"),
                }
            }
            Ok(data)
        })
        .collect::<Result<_>>()?;
    let mut w = BufWriter::with_capacity(4 << 20, File::create(out)?);
    w.write_all(&prefix)?;
    for p in &parts {
        w.write_all(p)?;
    }
    // No fsync: like the zstd CLI, unlike tpde (which syncs before its rename).
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_round_trips_every_width() {
        for w in [1usize, 2, 4, 8] {
            let t: Vec<u8> = (0..64u32).map(|i| (i * 37 + 5) as u8).collect();
            let b: Vec<u8> = (0..64u32).map(|i| (i * 91 + 200) as u8).collect();
            let mut d = sub_delta(&t, &b, w);
            sub_apply(&mut d, &b, w);
            assert_eq!(d, t, "width {w}");
        }
    }

    #[test]
    fn zigzag_keeps_small_negative_deltas_small() {
        // target = base - 1 on f32 bit patterns: zigzag gives 1, high bytes zero.
        let b = 0x3f80_0000u32.to_le_bytes();
        let t = 0x3f7f_ffffu32.to_le_bytes();
        assert_eq!(sub_delta(&t, &b, 4), 1u32.to_le_bytes());
    }

    #[test]
    fn planes_round_trip_and_put_msb_first() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let p = to_planes(&d, 4);
        assert_eq!(p, [4, 8, 3, 7, 2, 6, 1, 5]);
        assert_eq!(from_planes(&p, 4), d);
    }

    #[test]
    fn widening_is_exact() {
        for h in [
            0u16, 0x8000, 0x0001, 0x03ff, 0x3c00, 0xc000, 0x7bff, 0x7c00, 0x7e01,
        ] {
            let f = f32::from_bits(f16_to_f32_bits(h));
            // Reference: decode the f16 by its definition.
            let s = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let e = i32::from((h >> 10) & 0x1f);
            let m = f64::from(h & 0x3ff);
            let want = match e {
                0 => s * m * 2f64.powi(-24),
                31 if m == 0.0 => s * f64::INFINITY,
                31 => f64::NAN,
                _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
            };
            if want.is_nan() {
                assert!(f.is_nan());
            } else {
                assert_eq!(f64::from(f), want, "{h:#06x}");
            }
        }
        let p = predictor("BF16", &0x3f80u16.to_le_bytes(), "F32");
        assert_eq!(p, Some(0x3f80_0000u32.to_le_bytes().to_vec()));
    }
}
