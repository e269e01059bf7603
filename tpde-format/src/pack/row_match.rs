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
//! Reordered rows (a shuffled vocabulary) are not matched.

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
}

/// Hashes of the rows of one base tensor: hash -> rows, ascending.
type RowIndex = HashMap<u64, Vec<u64>>;

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
                    e.insert(index_rows(&bf.source(bt), bt)?)
                }
            };
            let same_name = bt.name == t.name;
            // Another name: a sample of the target's rows must hit first, so
            // a model whose tensors were all renamed (every tensor unmatched,
            // dozens of candidates each) costs hashes of samples, not of
            // every row against every candidate.
            if !same_name && !sample_hits(&f.source(t), t, index)? {
                continue;
            }
            let (matched, mut rows) = match_rows(&f.source(t), t, &bf.source(bt), index)?;
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
                best = Some((
                    matched,
                    RowMatch {
                        file: bfi,
                        tensor: bti,
                        rows,
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
fn sample_hits(src: &dyn ByteSource, t: &SourceTensor, index: &RowIndex) -> Result<bool> {
    let rb = row_bytes(t);
    let rows = t.shape[0];
    let step = (rows / SAMPLE_ROWS).max(1);
    let mut row = vec![0u8; rb as usize];
    for r in (0..rows).step_by(step as usize).take(SAMPLE_ROWS as usize) {
        src.read_at(r * rb, &mut row)
            .map_err(|e| Error::io(src.path(), e))?;
        if index.contains_key(&hash_row(&row)) {
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

/// Calls `each(row, bytes)` for every row of `t`, reading a block at a time.
fn for_rows(
    src: &dyn ByteSource,
    t: &SourceTensor,
    each: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let rb = row_bytes(t);
    let rows = t.shape[0];
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

fn index_rows(src: &dyn ByteSource, t: &SourceTensor) -> Result<RowIndex> {
    let mut index: RowIndex = HashMap::new();
    for_rows(src, t, &mut |r, row| {
        index.entry(hash_row(row)).or_default().push(r);
        Ok(())
    })?;
    Ok(index)
}

/// Maps the rows of target `t` onto base `b` (order-preserving); returns the
/// number of matched rows and the runs.
fn match_rows(
    tsrc: &dyn ByteSource,
    t: &SourceTensor,
    bsrc: &dyn ByteSource,
    index: &RowIndex,
) -> Result<(u64, Vec<RowRun>)> {
    let rb = row_bytes(t);
    let mut runs: Vec<RowRun> = Vec::new();
    let mut next_base = 0u64; // the lowest base row still free
    let mut matched = 0u64;
    let mut probe = vec![0u8; rb as usize];
    for_rows(tsrc, t, &mut |r, row| {
        let Some(list) = index.get(&hash_row(row)) else {
            return Ok(());
        };
        // Prefer continuing the current run, then the first equal row after it.
        let cont = runs
            .last()
            .filter(|x| x.start + x.count == r)
            .map(|x| x.base_start + x.count);
        let from = list.partition_point(|&b| b < next_base);
        let tries = cont
            .filter(|c| list.binary_search(c).is_ok())
            .into_iter()
            .chain(list[from..].iter().copied().take(MAX_PROBES));
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
        RowRun {
            start,
            base_start,
            count,
        }
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
