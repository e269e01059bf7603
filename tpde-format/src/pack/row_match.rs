//! Row-level matching (spec §6.3): a target tensor whose rows are, for the
//! most part, verbatim rows of a base tensor of another row count (a
//! vocabulary pruned or extended, rows inserted or removed) is stored
//! against a row map of that base, so the matched rows cost nothing.
//!
//! Rows are matched by a 64-bit hash and then compared byte for byte, so a
//! hash collision can only lose a match, never make a wrong one. The map is
//! order-preserving (the format requires runs increasing in both tensors):
//! each target row takes the next base row when that one is equal (runs
//! continue), else the first equal base row after the last one matched.
//!
//! (v1.5) Targets still without a base then get a *sliced* base (spec
//! §6.3.4) when one is worth it: both tensors read as rows of a length the
//! writer picks, base rows taken in any order. That finds rows reordered (an
//! RNN's gates exported in another order), a tensor reshaped (`[1, 128]` as
//! `[128, 1]`), and a slice of a fused tensor (one bias of a `[1, 768]`
//! concatenation), whatever the names.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};

use crate::error::{Error, Result};
use crate::format::RowRun;
use crate::safetensors::{Checkpoint, SourceFile, SourceTensor};
use crate::write::ByteSource;

/// A row map is used when at least this share of the target's rows match:
/// below it the index entry and the base it pins cost more than it saves.
const MIN_MATCHED_SHARE: f64 = 0.25;
/// Rows read per block while hashing, in bytes (bounds memory).
const BLOCK_BYTES: u64 = 8 << 20;
/// Equal-hash base rows compared before a target row is left unmatched.
const MAX_PROBES: usize = 8;

/// A chosen row map: base tensor `(file, tensor)` indices and the runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMatch {
    /// Index of the base file.
    pub file: usize,
    /// Index of the tensor in that file.
    pub tensor: usize,
    /// The runs.
    pub rows: Vec<RowRun>,
    /// `None`: rows along the first dimension, runs increasing in both
    /// tensors (a row-mapped base, v1.2); `Some(r)`: rows of `r` elements,
    /// base rows in any order (a sliced base, v1.5).
    pub row_elems: Option<u64>,
    /// Target bytes in rows equal to their base row.
    pub matched_bytes: u64,
    /// Target bytes in rows some base row predicts (equal, or edited in
    /// place); the others are predicted by zero.
    pub covered_bytes: u64,
}

/// The rows of one base tensor by hash: `(hash, row)` pairs sorted, so the
/// rows of one hash are adjacent and ascending. 16 bytes a row (a hash map
/// of lists took about 60).
struct RowIndex(Vec<(u64, u64)>);

impl RowIndex {
    /// Hashes every row of `rb` bytes of the `len` bytes of `src`.
    fn build(src: &dyn ByteSource, len: u64, rb: u64) -> Result<RowIndex> {
        let mut v = Vec::with_capacity((len / rb.max(1)) as usize);
        for_rows(src, len, rb, &mut |r, row| {
            v.push((hash_row(row), r));
            Ok(())
        })?;
        v.sort_unstable();
        Ok(RowIndex(v))
    }

    /// The rows whose hash is `h` (as `(h, row)` pairs), ascending.
    fn get(&self, h: u64) -> &[(u64, u64)] {
        let lo = self.0.partition_point(|p| p.0 < h);
        let hi = lo + self.0[lo..].partition_point(|p| p.0 == h);
        &self.0[lo..hi]
    }
}

/// Finds row maps for the target tensors `wanted` (file name, tensor),
/// which have no base tensor of the same name and shape nor an identical
/// one. Candidates are base tensors of the same dtype, rank >= 2, and the
/// same trailing dimensions; one of the same name is preferred, else the
/// one matching the most rows.
pub fn find_row_maps(
    base: &Checkpoint,
    wanted: &[(&SourceFile, &SourceTensor)],
) -> Result<HashMap<(String, String), RowMatch>> {
    let mut indexes: HashMap<(usize, usize), RowIndex> = HashMap::new();
    let mut found = HashMap::new();
    for &(f, t) in wanted {
        if t.shape.len() < 2 || t.len == 0 || t.shape[0] == 0 {
            continue;
        }
        let mut candidates: Vec<(usize, usize)> = Vec::new();
        for (bfi, bf) in base.files.iter().enumerate() {
            for (bti, bt) in bf.tensors.iter().enumerate() {
                if bt.dtype == t.dtype
                    && bt.shape.len() == t.shape.len()
                    && bt.shape[1..] == t.shape[1..]
                    && bt.len > 0
                {
                    candidates.push((bfi, bti));
                }
            }
        }
        // Same name first: when it matches enough rows, it is the one.
        candidates.sort_by_key(|&(bfi, bti)| base.files[bfi].tensors[bti].name != t.name);
        let mut best: Option<(u64, RowMatch)> = None;
        for (bfi, bti) in candidates {
            let bf = &base.files[bfi];
            let bt = &bf.tensors[bti];
            let index = match indexes.entry((bfi, bti)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(RowIndex::build(&bf.source(bt), bt.len, row_bytes(bt))?)
                }
            };
            let same_name = bt.name == t.name;
            // Another name: a sample of the target's rows must hit first, so
            // a model whose tensors were all renamed (every tensor unmatched,
            // dozens of candidates each) costs hashes of samples, not of
            // every row against every candidate.
            if !same_name && !sample_hits(&f.source(t), t.len, row_bytes(t), index)? {
                continue;
            }
            let (matched, mut rows) = match_rows(
                &f.source(t),
                t.len,
                row_bytes(t),
                &bf.source(bt),
                index,
                true,
            )?;
            let enough = matched as f64 >= MIN_MATCHED_SHARE * t.shape[0] as f64;
            if !enough && same_name {
                // Few verbatim rows, same name: a resized vocabulary whose
                // rows were also trained. Row i still predicts row i (token
                // ids keep their rows when a vocabulary grows or is cut at
                // the end); the delta stores what changed.
                rows = vec![RowRun {
                    start: 0,
                    base_start: 0,
                    count: t.shape[0].min(bt.shape[0]),
                }];
            } else {
                fill_aligned_gaps(&mut rows, t.shape[0], bt.shape[0]);
            }
            if (enough || same_name) && best.as_ref().is_none_or(|(m, _)| matched > *m) {
                let covered: u64 = rows.iter().map(|r| r.count).sum();
                best = Some((
                    matched,
                    RowMatch {
                        file: bfi,
                        tensor: bti,
                        rows,
                        row_elems: None,
                        matched_bytes: matched * row_bytes(t),
                        covered_bytes: covered * row_bytes(t),
                    },
                ));
                if same_name {
                    break;
                }
            }
        }
        if let Some((_, m)) = best {
            found.insert((f.name.clone(), t.name.clone()), m);
        }
    }
    Ok(found)
}

/// Target rows sampled by [`sample_hits`].
const SAMPLE_ROWS: u64 = 32;

/// True when one of up to [`SAMPLE_ROWS`] evenly spaced rows of `t` has a
/// hash in `index` (a quarter of the rows matching makes a miss on all of
/// them unlikely: (3/4)^32 < 10^-4).
fn sample_hits(src: &dyn ByteSource, len: u64, rb: u64, index: &RowIndex) -> Result<bool> {
    let rows = len / rb;
    let step = (rows / SAMPLE_ROWS).max(1);
    let mut row = vec![0u8; rb as usize];
    for r in (0..rows).step_by(step as usize).take(SAMPLE_ROWS as usize) {
        src.read_at(r * rb, &mut row)
            .map_err(|e| Error::io(src.path(), e))?;
        if !index.get(hash_row(&row)).is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn row_bytes(t: &SourceTensor) -> u64 {
    // safetensors checked len == product(shape) × width, so this divides.
    t.len / t.shape[0]
}

fn hash_row(row: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    row.hash(&mut h);
    h.finish()
}

/// Calls `each(row, bytes)` for every row of `rb` bytes of the `len` bytes
/// of `src`, reading a block at a time.
fn for_rows(
    src: &dyn ByteSource,
    len: u64,
    rb: u64,
    each: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let rows = len / rb;
    let per_block = (BLOCK_BYTES / rb.max(1)).max(1);
    let mut buf = Vec::new();
    let mut r = 0;
    while r < rows {
        let n = per_block.min(rows - r);
        buf.resize((n * rb) as usize, 0);
        src.read_at(r * rb, &mut buf)
            .map_err(|e| Error::io(src.path(), e))?;
        for (i, row) in buf.chunks_exact(rb as usize).enumerate() {
            each(r + i as u64, row)?;
        }
        r += n;
    }
    Ok(())
}

/// Maps the target's rows of `rb` bytes (`len` bytes in all) onto base
/// rows: each continues the current run when the next base row is equal,
/// else takes the first equal base row — after the last one used when
/// `ordered` (a row-mapped base's runs increase in both tensors), anywhere
/// otherwise (a sliced base). Returns the number of matched rows and the runs.
fn match_rows(
    tsrc: &dyn ByteSource,
    len: u64,
    rb: u64,
    bsrc: &dyn ByteSource,
    index: &RowIndex,
    ordered: bool,
) -> Result<(u64, Vec<RowRun>)> {
    let mut runs: Vec<RowRun> = Vec::new();
    let mut next_base = 0u64; // the lowest base row still free, when ordered
    let mut matched = 0u64;
    let mut probe = vec![0u8; rb as usize];
    for_rows(tsrc, len, rb, &mut |r, row| {
        let list = index.get(hash_row(row));
        if list.is_empty() {
            return Ok(());
        }
        // Prefer continuing the current run, then the first equal row after it.
        let cont = runs
            .last()
            .filter(|x| x.start + x.count == r)
            .map(|x| x.base_start + x.count);
        let from = if ordered {
            list.partition_point(|p| p.1 < next_base)
        } else {
            0
        };
        let tries = cont
            .filter(|c| list.binary_search_by_key(c, |p| p.1).is_ok())
            .into_iter()
            .chain(list[from..].iter().map(|p| p.1).take(MAX_PROBES));
        for b in tries {
            bsrc.read_at(b * rb, &mut probe)
                .map_err(|e| Error::io(bsrc.path(), e))?;
            if probe != row {
                continue; // a hash collision
            }
            matched += 1;
            match runs.last_mut() {
                Some(x) if x.start + x.count == r && x.base_start + x.count == b => x.count += 1,
                _ => runs.push(RowRun {
                    start: r,
                    base_start: b,
                    count: 1,
                }),
            }
            next_base = b + 1;
            break;
        }
        Ok(())
    })?;
    Ok((matched, runs))
}

/// (v1.5) Targets and base rows this small are not sliced: the index entry
/// costs more than such a target stores.
const MIN_SLICE_TARGET_BYTES: u64 = 64;
/// Nor are rows under this many bytes matched: equal short rows are common
/// by chance (zeros, ones), and an index of short rows costs more memory
/// per base byte (a `[d, 1, 4]` F32 convolution's 16-byte rows are matched
/// only as a whole tensor).
const MIN_SLICE_ROW_BYTES: u64 = 64;
/// A 1-d target is tried as up to this many equal rows (the gates of an
/// RNN bias: 3 for a GRU, 4 for an LSTM; a fused QKV bias: 3).
const MAX_SLICE_PARTS: u64 = 8;
/// A row length that is not the target's own row (a 1-d target's parts, a
/// whole tensor) is looked for only in base tensors at most this many times
/// the target's size: a fused tensor holds a few such parts, and indexing
/// every large base tensor for every small target would cost more than it finds.
const MAX_SLICE_SPREAD: u64 = 16;
/// Base bytes the sliced search indexes, at most, besides as many as the
/// targets it looks for hold: bounds the time and memory (16 bytes a row of
/// at least 64 bytes) of a pack against an unrelated base, where every
/// target is looked for and none is found. A whole tensor of the target's
/// size is compared directly and counts nothing.
const SLICE_BUDGET_BYTES: u64 = 64 << 20;

/// (v1.5) Finds sliced maps (spec §6.3.4) for the target tensors `wanted`
/// (file, tensor, and the one base tensor `(file, tensor)` to try, if
/// restricted), which have no base of any other kind, or a row map that
/// leaves rows unmatched (retried against its own base tensor, rows in any
/// order; the caller keeps whichever matches more). Each target
/// is tried with the row lengths [`slice_lengths`] lists, longest first,
/// against base tensors of its dtype whose length they divide; the map
/// matching the most bytes is kept when it covers at least a quarter of the
/// target's rows (ties: the longer rows, which need fewer runs). A map that
/// a row-mapped base (v1.2) can state is returned as one (`row_elems:
/// None`), its gaps filled as [`find_row_maps`] fills them.
pub fn find_slice_maps(
    base: &Checkpoint,
    wanted: &[SliceWanted<'_>],
) -> Result<HashMap<(String, String), RowMatch>> {
    let mut budget = wanted
        .iter()
        .fold(SLICE_BUDGET_BYTES, |a, (_, t, _)| a.saturating_add(t.len));
    let mut indexes: HashMap<(usize, usize, u64), RowIndex> = HashMap::new();
    let mut found = HashMap::new();
    for &(f, t, only) in wanted {
        if t.len < MIN_SLICE_TARGET_BYTES {
            continue;
        }
        let w = t.dtype.width() as u64;
        let natural = t.shape.first().filter(|&&d| d > 0).map(|&d| t.len / d / w);
        let mut best: Option<(u64, RowMatch)> = None;
        for r in slice_lengths(t) {
            let rb = r * w;
            let t_rows = t.len / rb;
            for (bfi, bf) in base.files.iter().enumerate() {
                for (bti, bt) in bf.tensors.iter().enumerate() {
                    if only.is_some_and(|o| o != (bfi, bti))
                        || bt.dtype != t.dtype
                        || bt.len < rb
                        || bt.len % rb != 0
                        || (Some(r) != natural || t.shape.len() < 2)
                            && bt.len > t.len.saturating_mul(MAX_SLICE_SPREAD)
                    {
                        continue;
                    }
                    let tsrc = f.source(t);
                    if bt.len == t.len && r == t.len / w {
                        // The whole tensor under another shape: compare.
                        if best.as_ref().is_none_or(|(m, _)| t.len > *m)
                            && super::same_bytes(&tsrc, &bf.source(bt), t.len)?
                        {
                            best = Some((t.len, whole_tensor(bfi, bti, r, t.len)));
                        }
                        continue;
                    }
                    let index = match indexes.entry((bfi, bti, rb)) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            if bt.len > budget {
                                continue;
                            }
                            budget -= bt.len;
                            e.insert(RowIndex::build(&bf.source(bt), bt.len, rb)?)
                        }
                    };
                    if t_rows > SAMPLE_ROWS && !sample_hits(&tsrc, t.len, rb, index)? {
                        continue;
                    }
                    let (matched, mut rows) =
                        match_rows(&tsrc, t.len, rb, &bf.source(bt), index, false)?;
                    let enough = matched as f64 >= MIN_MATCHED_SHARE * t_rows as f64;
                    if enough && best.as_ref().is_none_or(|(m, _)| matched * rb > *m) {
                        let ordered = rows
                            .windows(2)
                            .all(|p| p[0].base_start + p[0].count <= p[1].base_start);
                        let v12 = ordered
                            && Some(r) == natural
                            && t.shape.len() == bt.shape.len()
                            && t.shape[1..] == bt.shape[1..];
                        if v12 {
                            fill_aligned_gaps(&mut rows, t_rows, bt.len / rb);
                        }
                        let covered: u64 = rows.iter().map(|r| r.count).sum();
                        let m = RowMatch {
                            file: bfi,
                            tensor: bti,
                            rows,
                            row_elems: (!v12).then_some(r),
                            matched_bytes: matched * rb,
                            covered_bytes: covered * rb,
                        };
                        best = Some((matched * rb, m));
                    }
                }
            }
            if best.as_ref().is_some_and(|(m, _)| *m == t.len) {
                break; // every byte found: shorter rows only add runs
            }
        }
        if let Some((_, m)) = best {
            found.insert((f.name.clone(), t.name.clone()), m);
        }
    }
    Ok(found)
}

/// A sliced map of one row: a whole base tensor of `len` bytes predicts the
/// whole target, `r` elements.
fn whole_tensor(file: usize, tensor: usize, r: u64, len: u64) -> RowMatch {
    RowMatch {
        file,
        tensor,
        rows: vec![RowRun::new(0, 0, 1)],
        row_elems: Some(r),
        matched_bytes: len,
        covered_bytes: len,
    }
}

/// A target file and tensor for [`find_slice_maps`], and the one base
/// tensor (file, tensor indices) to try, if restricted.
pub type SliceWanted<'a> = (&'a SourceFile, &'a SourceTensor, Option<(usize, usize)>);

/// Row lengths (elements) the sliced search tries for `t`, longest first:
/// its own rows (along the first dimension) and the whole tensor for a
/// tensor of rank >= 2; the whole tensor and its equal parts, up to
/// [`MAX_SLICE_PARTS`], for a 1-d one. Rows under [`MIN_SLICE_ROW_BYTES`]
/// are left out.
fn slice_lengths(t: &SourceTensor) -> Vec<u64> {
    let w = t.dtype.width() as u64;
    let n = t.len / w;
    let mut out: Vec<u64> = match t.shape.len() {
        0 => vec![],
        1 => (1..=MAX_SLICE_PARTS)
            .filter(|k| n % k == 0)
            .map(|k| n / k)
            .collect(),
        _ => vec![n, n / t.shape[0].max(1)],
    };
    out.retain(|&r| r > 0 && r * w >= MIN_SLICE_ROW_BYTES);
    out.dedup();
    out
}

/// Maps unmatched target rows lying between two matched runs onto the base
/// rows between them when both gaps have the same length (rows edited in
/// place, e.g. trained, keep their base row as predictor instead of zero).
/// The start of the tensors counts as a run boundary. After the last run,
/// as many rows as both tensors still have are mapped in place (an
/// extended vocabulary whose last old rows were trained).
fn fill_aligned_gaps(runs: &mut Vec<RowRun>, t_rows: u64, b_rows: u64) {
    let (t_end, b_end) = runs
        .last()
        .map_or((0, 0), |r| (r.start + r.count, r.base_start + r.count));
    let tail = (t_rows - t_end).min(b_rows - b_end);
    if tail > 0 && !runs.is_empty() {
        runs.push(RowRun {
            start: t_end,
            base_start: b_end,
            count: tail,
        });
    }
    let mut out = Vec::with_capacity(runs.len() * 2 + 1);
    let (mut t, mut b) = (0u64, 0u64);
    for r in runs.iter().copied().chain([RowRun {
        start: t_rows,
        base_start: b_rows,
        count: 0,
    }]) {
        if r.start > t && r.start - t == r.base_start - b {
            out.push(RowRun {
                start: t,
                base_start: b,
                count: r.start - t,
            });
        }
        if r.count > 0 {
            out.push(r);
        }
        (t, b) = (r.start + r.count, r.base_start + r.count);
    }
    // Merge runs that now touch in both tensors.
    let mut merged: Vec<RowRun> = Vec::with_capacity(out.len());
    for r in out {
        match merged.last_mut() {
            Some(m) if m.start + m.count == r.start && m.base_start + m.count == r.base_start => {
                m.count += r.count
            }
            _ => merged.push(r),
        }
    }
    *runs = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, base_start: u64, count: u64) -> RowRun {
        RowRun::new(start, base_start, count)
    }

    #[test]
    fn aligned_gaps_are_filled_and_runs_merged() {
        // Rows 0..2 and 5..8 matched in place; rows 2..5 edited: one run.
        let mut r = vec![run(0, 0, 2), run(5, 5, 3)];
        fill_aligned_gaps(&mut r, 10, 8);
        assert_eq!(r, [run(0, 0, 8)]);
        // A pruned row (base row 2 gone): the gaps differ, nothing is added.
        let mut r = vec![run(0, 0, 2), run(2, 3, 3)];
        fill_aligned_gaps(&mut r, 5, 6);
        assert_eq!(r, [run(0, 0, 2), run(2, 3, 3)]);
        // Leading edited rows before an aligned run, and trailing ones.
        let mut r = vec![run(3, 3, 1)];
        fill_aligned_gaps(&mut r, 6, 6);
        assert_eq!(r, [run(0, 0, 6)]);
        // Extended by 10 rows, the last old row edited: it stays mapped.
        let mut r = vec![run(0, 0, 39)];
        fill_aligned_gaps(&mut r, 50, 40);
        assert_eq!(r, [run(0, 0, 40)]);
        // Nothing matched: nothing mapped (the caller decides on a prefix run).
        let mut r = vec![];
        fill_aligned_gaps(&mut r, 50, 40);
        assert_eq!(r, []);
    }
}
