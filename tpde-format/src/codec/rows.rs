//! Row-mapped (spec §6.3) and sliced (§6.3.4) bases: which base bytes
//! predict which target bytes when a tensor's rows are a subset, superset or
//! reordering of its base's rows (a vocabulary pruned or extended, RNN gates
//! exported in another order, a slice of a fused tensor).
//!
//! A row-mapped base's row is a slice along the first dimension; a sliced
//! base reads both tensors as flat sequences of rows of a length it states.
//! The row map is a list of runs `(start, base_start, count)`: target rows
//! from `start` on (`count` of them) are predicted by base rows from
//! `base_start` on; rows no run covers are predicted by zero bits. Runs
//! increase in the target, so the predictor of a target range is found by
//! one binary search; a row-mapped base's runs also increase in the base (a
//! sliced base's may take base rows in any order).

use std::ops::Range;

use crate::format::RowRun;

/// One contiguous copy of the predictor: `len` bytes from base byte offset
/// `base` to target byte offset `target` (both from the tensor's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Target byte offset.
    pub target: u64,
    /// Base byte offset.
    pub base: u64,
    /// Bytes to copy.
    pub len: u64,
}

/// Checks a row map against the target and base shapes (spec §6.3): both
/// have at least one dimension, the same rank and the same trailing
/// dimensions; runs are non-empty, in bounds, and strictly increasing in
/// target and in base rows.
pub fn check(
    target_shape: &[u64],
    base_shape: &[u64],
    rows: &[RowRun],
) -> Result<(), &'static str> {
    let (Some(&t_rows), Some(&b_rows)) = (target_shape.first(), base_shape.first()) else {
        return Err("a row-mapped tensor and its base need at least one dimension");
    };
    if base_shape.len() != target_shape.len() || base_shape[1..] != target_shape[1..] {
        return Err("row-mapped base differs from the tensor in more than its first dimension");
    }
    check_runs(rows, t_rows, b_rows, true)
}

/// (v1.5) Checks a sliced base's row map (spec §6.3.4): rows of `row_elems`
/// elements (at least 1) tile both tensors, of `target_elems` and
/// `base_elems` elements, exactly; runs are non-empty, in bounds, and
/// strictly increasing in target rows, their base rows in any order.
pub fn check_slices(
    target_elems: u64,
    base_elems: u64,
    row_elems: u64,
    rows: &[RowRun],
) -> Result<(), &'static str> {
    if row_elems == 0 {
        return Err("sliced base with rows of 0 elements");
    }
    if target_elems % row_elems != 0 || base_elems % row_elems != 0 {
        return Err("sliced base rows do not tile the tensor and its base");
    }
    check_runs(
        rows,
        target_elems / row_elems,
        base_elems / row_elems,
        false,
    )
}

/// The run rules shared by both maps; `base_ordered` adds row-mapped
/// bases' rule that runs also increase in the base.
fn check_runs(
    rows: &[RowRun],
    t_rows: u64,
    b_rows: u64,
    base_ordered: bool,
) -> Result<(), &'static str> {
    let (mut t_next, mut b_next) = (0u64, 0u64);
    for r in rows {
        let (Some(t_end), Some(b_end)) = (
            r.start.checked_add(r.count),
            r.base_start.checked_add(r.count),
        ) else {
            return Err("row run overflows");
        };
        if r.count == 0 {
            return Err("empty row run");
        }
        if r.start < t_next || (base_ordered && r.base_start < b_next) {
            return Err("row runs overlap or are out of order");
        }
        if t_end > t_rows || b_end > b_rows {
            return Err("row run past the last row");
        }
        (t_next, b_next) = (t_end, b_end);
    }
    Ok(())
}

/// Bytes per row of a tensor of `shape` and element width `width`: the
/// product of the trailing dimensions times the width (`None` on overflow
/// or for a 0-d tensor).
pub fn row_bytes(shape: &[u64], width: usize) -> Option<u64> {
    shape
        .get(1..)?
        .iter()
        .try_fold(width as u64, |a, &d| a.checked_mul(d))
}

/// The copies that build the predictor of target bytes `range`, in order.
/// Bytes of `range` no segment covers are zero in the predictor. `rows`
/// must have passed [`check`] for a tensor whose byte length fits in `u64`.
pub fn segments(
    rows: &[RowRun],
    row_bytes: u64,
    range: Range<u64>,
) -> impl Iterator<Item = Segment> + '_ {
    let first = rows.partition_point(|r| (r.start + r.count) * row_bytes <= range.start);
    rows[first..]
        .iter()
        .take_while(move |r| r.start * row_bytes < range.end)
        .filter_map(move |r| {
            let lo = (r.start * row_bytes).max(range.start);
            let hi = ((r.start + r.count) * row_bytes).min(range.end);
            (hi > lo).then(|| Segment {
                target: lo,
                base: r.base_start * row_bytes + (lo - r.start * row_bytes),
                len: hi - lo,
            })
        })
}

/// Builds the predictor of target bytes `range` from the whole base `base`
/// (zero where no run covers), into `out` (`range`'s length).
pub fn predict(rows: &[RowRun], row_bytes: u64, base: &[u8], range: Range<u64>, out: &mut [u8]) {
    out.fill(0);
    for s in segments(rows, row_bytes, range.clone()) {
        let t = (s.target - range.start) as usize;
        out[t..t + s.len as usize]
            .copy_from_slice(&base[s.base as usize..(s.base + s.len) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, base_start: u64, count: u64) -> RowRun {
        RowRun::new(start, base_start, count)
    }

    #[test]
    fn pruned_rows_predict_from_their_base_rows_and_gaps_are_zero() {
        // Base rows 0..5 of 2 bytes: [0,0],[1,1],...; target keeps rows 1, 3, 4
        // and has a new row at the end.
        let base: Vec<u8> = (0..5u8).flat_map(|r| [r, r]).collect();
        let rows = [run(0, 1, 1), run(1, 3, 2)];
        check(&[4, 2], &[5, 2], &rows).unwrap();
        let mut out = vec![9u8; 8];
        predict(&rows, 2, &base, 0..8, &mut out);
        assert_eq!(out, [1, 1, 3, 3, 4, 4, 0, 0]);
        // A range that starts and ends mid-row.
        let mut out = vec![9u8; 5];
        predict(&rows, 2, &base, 1..6, &mut out);
        assert_eq!(out, [1, 3, 3, 4, 4]);
    }

    #[test]
    fn segments_cover_only_the_asked_range() {
        let rows = [run(2, 0, 3), run(10, 5, 1)];
        let s: Vec<_> = segments(&rows, 4, 12..44).collect();
        assert_eq!(
            s,
            [
                Segment {
                    target: 12,
                    base: 4,
                    len: 8
                },
                Segment {
                    target: 40,
                    base: 20,
                    len: 4
                }
            ]
        );
        assert_eq!(segments(&rows, 4, 20..40).count(), 0);
    }

    #[test]
    fn sliced_maps_take_base_rows_in_any_order_and_must_tile_both_tensors() {
        // A [384] bias from a fused [1, 768] one, gates swapped: rows of 128.
        let gates = [run(0, 1, 1), run(1, 0, 1), run(2, 2, 1)];
        assert_eq!(check_slices(384, 768, 128, &gates), Ok(()));
        // The same base row twice is allowed too (a repeated slice).
        assert_eq!(
            check_slices(256, 128, 128, &[run(0, 0, 1), run(1, 0, 1)]),
            Ok(())
        );
        assert_eq!(
            check_slices(384, 768, 0, &[]),
            Err("sliced base with rows of 0 elements")
        );
        assert_eq!(
            check_slices(384, 700, 128, &[]),
            Err("sliced base rows do not tile the tensor and its base")
        );
        assert_eq!(
            check_slices(300, 768, 128, &[]),
            Err("sliced base rows do not tile the tensor and its base")
        );
        // Target rows still increase and never overlap.
        assert_eq!(
            check_slices(384, 768, 128, &[run(1, 0, 1), run(0, 1, 1)]),
            Err("row runs overlap or are out of order")
        );
        assert_eq!(
            check_slices(384, 768, 128, &[run(2, 5, 2)]),
            Err("row run past the last row")
        );
        assert_eq!(
            check_slices(384, 768, 128, &[run(0, 6, 1)]),
            Err("row run past the last row")
        );
        // Predicted bytes follow the runs, whatever their base order.
        let base: Vec<u8> = (0..6u8).flat_map(|r| [r, r]).collect();
        let mut out = vec![9u8; 6];
        predict(&gates, 2, &base, 0..6, &mut out);
        assert_eq!(out, [1, 1, 0, 0, 2, 2]);
    }

    #[test]
    fn check_refuses_every_malformed_map() {
        assert_eq!(
            check(&[], &[], &[]),
            Err("a row-mapped tensor and its base need at least one dimension")
        );
        assert!(check(&[4, 2], &[4, 3], &[]).is_err());
        assert!(check(&[4, 2], &[4, 2, 1], &[]).is_err());
        assert_eq!(
            check(&[4, 2], &[4, 2], &[run(0, 0, 0)]),
            Err("empty row run")
        );
        assert_eq!(
            check(&[4, 2], &[4, 2], &[run(0, 1, 2), run(1, 3, 1)]),
            Err("row runs overlap or are out of order")
        );
        assert_eq!(
            check(&[4, 2], &[4, 2], &[run(0, 2, 1), run(1, 1, 1)]),
            Err("row runs overlap or are out of order")
        );
        assert_eq!(
            check(&[4, 2], &[4, 2], &[run(3, 0, 2)]),
            Err("row run past the last row")
        );
        assert_eq!(
            check(&[4, 2], &[2, 2], &[run(0, 1, 2)]),
            Err("row run past the last row")
        );
        assert_eq!(
            check(&[4, 2], &[4, 2], &[run(u64::MAX, 0, 2)]),
            Err("row run overflows")
        );
        assert_eq!(
            check(&[4, 2], &[9, 2], &[run(0, 0, 1), run(2, 5, 2)]),
            Ok(())
        );
    }
}
