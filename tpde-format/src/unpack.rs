//! Reconstructing target files: unpack to disk, or verify against digests
//! (and optionally the original bytes) without writing anything.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::digest::FileDigest;
use crate::error::{hex, Error, Result};
use crate::read::{check_tensor_digest, Archive, BaseProvider};
use crate::safetensors::{header_describes, make_header, Checkpoint};
use crate::write::{temp_dir_in, temp_file_in};

/// The decode window: the bytes of one pipeline segment (a run of small
/// tensors, or a window of a large one's chunks). Memory during unpack is
/// at most [`pipeline_depth`]` + 1` windows whatever the model size.
/// Windows are the pipeline's stages, so small ones overlap the serial part
/// sooner and stay in cache: on the 2-core development machine 8 MiB
/// instead of 64 MiB made unpack 30-100% and decode 30-60% faster on 1
/// thread (BENCHMARKS.md, session 4); on the 16-core Xeon, 16 windows of
/// 8 MiB in flight decoded 1.2-1.3× faster on 16 threads than 4 of 32 MiB
/// (session 8).
const WINDOW_BYTES: u64 = 8 << 20;

/// Options for [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Replace an existing output.
    pub overwrite: bool,
    /// Extract only these tensors into one new safetensors file (empty: all, byte-identical).
    pub tensors: Vec<String>,
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Files written (relative to the output).
    pub files: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
    /// True when the output is a directory.
    pub directory: bool,
}

/// Streams the bytes of target tensor `t` to `sink` window by window, and
/// checks its digest (its chunks', in parallel, where it records them) and
/// its external base's. Memory stays at one window whatever the tensor
/// size.
fn stream_tensor<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    t: usize,
    base: &dyn BaseProvider,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let rec = &a.index().tensors[t];
    let view = a.resolve_base(t, base)?;
    let n = a.chunk_count(t);
    let by_chunk = rec.payload.has_chunk_digests();
    let mut sha = Sha256::new();
    let mut buf = Vec::new();
    let mut first = 0;
    while first < n {
        // Up to WINDOW_BYTES of uniform chunks (at least one).
        let per = (WINDOW_BYTES / a.chunks_byte_len(t, 0..1).max(1)).max(1) as usize;
        let last = (first + per).min(n);
        let len = a.chunks_byte_len(t, first..last) as usize;
        buf.clear();
        buf.resize(len, 0);
        if by_chunk {
            a.decode_chunks_checked(t, first..last, view, &mut buf)?;
        } else {
            a.decode_chunks_into(t, first..last, view, &mut buf)?;
            sha.update(&buf);
        }
        sink(&buf)?;
        first = last;
    }
    if by_chunk {
        return Ok(());
    }
    check_tensor_digest(rec, &sha.finalize().into())
}

/// `err`, a digest mismatch or decode error of target tensor `t` found
/// without checking its external base's digest, or the base's own mismatch
/// when that is the cause (spec §4.5: the base's digest MAY wait for such a
/// mismatch). A wrong base fails digests, and also decodes, where a plane's
/// context is the base's byte (§5.7).
fn blame_base<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    t: usize,
    base: &dyn BaseProvider,
    err: Error,
) -> Error {
    if !matches!(
        err,
        Error::TensorDigest { .. } | Error::ChunkDigest { .. } | Error::ChunkDecode { .. }
    ) {
        return err;
    }
    match a.resolve_base_checked(t, base, true) {
        Err(b) => b,
        Ok(_) => err,
    }
}

/// Which digests [`stream_file_with`] computes as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digests {
    /// Every tensor proven where it is decoded, in parallel (spec §10.2):
    /// by its chunk digests where it records them (v1.7), else by its own
    /// digest; the file's digest is not recomputed. The file is its
    /// length, its header (index bytes, under the header CRC) and its
    /// tensors in recorded order, so proving every tensor proves the file;
    /// the file's SHA-256 is one serial stream, which capped unpack at one
    /// core's hashing speed (1.3 GB/s on a 16-core Xeon, BENCHMARKS.md
    /// session 7). External base digests are computed only on a mismatch,
    /// to name the base as its cause. What [`stream_file`] and [`unpack`]
    /// check.
    Parts,
    /// The file's digest only: it covers every byte of every tensor, so the
    /// output is as proven as with all of them. Tensor and external base
    /// digests are computed only when the file's does not match, to name
    /// the tensor (or base) at fault. One SHA-256 pass instead of three.
    File,
    /// Every chunk's (v1.7), every tensor's and every external base
    /// tensor's digest as well, each before the file's (what `verify`
    /// reports).
    All,
}

/// Streams target file `fi` (8-byte length, header, tensors) to `sink`,
/// proving every tensor by its recorded digests ([`Digests::Parts`]).
pub fn stream_file<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    fi: usize,
    base: &dyn BaseProvider,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    stream_file_with(a, fi, base, Digests::Parts, sink)
}

/// [`stream_file`] with a choice of the digests checked as it goes. A
/// mismatch is an error either way, and names the first tensor (or base
/// tensor) whose digest fails, in file order, when there is one.
pub fn stream_file_with<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    fi: usize,
    base: &dyn BaseProvider,
    digests: Digests,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    stream_file_windowed(a, fi, base, digests, WINDOW_BYTES, sink)
}

/// Segments [`pipelined`] keeps decoding while it consumes the oldest: two
/// per pool thread, at least 4 and at most 16. Segments are the pool's
/// top-level tasks, so threads that finish one take the next instead of
/// waiting at a window's end (with one segment at a time, decode scaled to
/// 8× on 16 cores; BENCHMARKS.md, session 8).
fn pipeline_depth() -> usize {
    (2 * rayon::current_num_threads()).clamp(4, 16)
}

/// [`stream_file`] with decode windows of `window` bytes instead of
/// [`WINDOW_BYTES`], so tests can drive the windowed path with small
/// tensors.
#[doc(hidden)]
pub fn stream_file_windowed<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    fi: usize,
    base: &dyn BaseProvider,
    digests: Digests,
    window: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let rec = &a.index().files[fi];
    // Proving the tensors proves the file only with a header that says
    // where they are (spec §10.2); with any other header, the file digest.
    let digests = match digests {
        Digests::Parts => {
            let tensors: Vec<_> = rec
                .tensors
                .iter()
                .map(|&t| &a.index().tensors[t as usize])
                .collect();
            if header_describes(&rec.header, &tensors) {
                Digests::Parts
            } else {
                Digests::File
            }
        }
        d => d,
    };
    let mut sha = match digests {
        Digests::Parts => FileDigest::tensors_only(),
        Digests::File | Digests::All => FileDigest::new(),
    };
    let len = (rec.header.len() as u64).to_le_bytes();
    for part in [&len[..], &rec.header] {
        sha.update_file(part);
        sink(part)?;
    }
    pipelined(a, &rec.tensors, base, window, digests, &mut sha, sink)?;
    let Some(actual) = sha.finish() else {
        return Ok(()); // Parts: every tensor was proven.
    };
    if actual != rec.sha256 {
        if digests == Digests::File {
            // Name the culprit: the first tensor whose own (or whose base's)
            // digest fails. Only on this error path are they computed.
            for &t in &rec.tensors {
                stream_tensor(a, t as usize, base, &mut |_| Ok(()))?;
            }
        }
        return Err(Error::FileDigest {
            file: rec.name.clone(),
            expected: hex(&rec.sha256),
            actual: hex(&actual),
        });
    }
    Ok(())
}

/// One unit of decode work in [`pipelined`]: a run of small tensors
/// (indices into the file's tensor list), or a window of one large
/// tensor's chunks.
enum Segment {
    Run(Range<usize>),
    Window(usize, Range<usize>),
}

/// Output buffers handed back after their bytes were consumed, reused by
/// later segments: a fresh buffer per tensor or window costs a page fault
/// and a kernel page clear per 4 KiB (about 10% of single-thread unpack
/// time, measured with perf), a reused one nothing. Only buffers of at
/// least [`BufPool::MIN_POOLED`] bytes are kept (small ones are cheap to
/// allocate), at most [`BufPool::MAX_HELD`] of them and `cap` bytes in all,
/// so taking and giving are O(1) whatever the number of tensors. A reused
/// buffer keeps stale bytes: every decode path overwrites its whole output
/// (base bytes, zeros or a plain payload first, or, for a dense chunk over
/// an external or zero base, every element once).
struct BufPool {
    /// The held buffers and their total capacity.
    free: std::sync::Mutex<(Vec<Vec<u8>>, u64)>,
    cap: u64,
}

impl BufPool {
    /// Smallest buffer worth keeping.
    const MIN_POOLED: usize = 1 << 20;
    /// Most buffers held (the segments in flight, a few tensors each).
    const MAX_HELD: usize = 24;

    fn new(cap: u64) -> Self {
        BufPool {
            free: std::sync::Mutex::new((Vec::new(), 0)),
            cap,
        }
    }

    /// A buffer of exactly `len` bytes: the smallest pooled one that holds
    /// them without growing, else a pooled one grown, else a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = if len < Self::MIN_POOLED {
            None
        } else {
            self.free.lock().ok().and_then(|mut g| {
                let (free, held) = &mut *g;
                let fit = (0..free.len())
                    .filter(|&i| free[i].capacity() >= len)
                    .min_by_key(|&i| free[i].capacity());
                let i = fit.or_else(|| (0..free.len()).max_by_key(|&i| free[i].capacity()))?;
                let b = free.swap_remove(i);
                *held -= b.capacity() as u64;
                Some(b)
            })
        };
        let mut buf = reused.unwrap_or_default();
        if buf.len() > len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// Returns `buf` to the pool unless it is small or the pool is full.
    fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < Self::MIN_POOLED {
            return;
        }
        if let Ok(mut g) = self.free.lock() {
            let (free, held) = &mut *g;
            let c = buf.capacity() as u64;
            if free.len() < Self::MAX_HELD && *held + c <= self.cap {
                *held += c;
                free.push(buf);
            }
        }
    }
}

/// Decodes the tensors `list` (whole-file order) and feeds their bytes to
/// `consume`, checking the digests `digests` asks for (the file's is
/// `file`'s outer stream, which the caller checks). Most tensors of a
/// checkpoint are one chunk, so parallelism inside a tensor alone leaves
/// cores idle: runs of small
/// tensors (up to one window of bytes) decode in parallel, and a larger
/// tensor streams window by window, chunk-parallel. Decoding the next
/// [`pipeline_depth`] segments on the pool overlaps consuming segment `k`
/// (the write, and any serial digest) on this thread, so the serial part
/// does not cap the speed-up from more threads. At most that many plus one
/// segments (of up to a window each) are held; errors come in file order,
/// as a serial decode's would.
fn pipelined<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    list: &[u32],
    base: &dyn BaseProvider,
    window: u64,
    digests: Digests,
    file: &mut FileDigest,
    consume: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let all = digests == Digests::All;
    let len = |t: u32| a.index().tensors[t as usize].byte_len().unwrap_or(0);
    // A windowed tensor whose digest runs over its windows in order, on
    // this thread (beside the file's, see `FileDigest`): with `All`, every
    // one; with `Parts`, one without chunk digests, which cannot be proven
    // any other way. Other tensors are checked where they are decoded.
    let serial = |t: usize| match digests {
        Digests::All => true,
        Digests::Parts => !a.index().tensors[t].payload.has_chunk_digests(),
        Digests::File => false,
    };
    let mut segments = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let t = list[i] as usize;
        if len(list[i]) > window {
            let n = a.chunk_count(t);
            // Chunks are uniform (all but the last): the window's chunk
            // count follows from one chunk's size.
            let per = (window / a.chunks_byte_len(t, 0..1).max(1)).max(1) as usize;
            let mut first = 0;
            while first < n {
                let last = (first + per).min(n);
                segments.push(Segment::Window(t, first..last));
                first = last;
            }
            i += 1;
            continue;
        }
        let mut total = 0;
        let run = list[i..]
            .iter()
            .take_while(|&&t| {
                total += len(t);
                len(t) <= window && total <= window
            })
            .count()
            .max(1);
        segments.push(Segment::Run(i..i + run));
        i += run;
    }
    let depth = pipeline_depth();
    let pool = BufPool::new((depth as u64 + 1) * window);
    let decode = |seg: &Segment| -> Vec<Result<Vec<u8>>> {
        match seg {
            Segment::Run(r) => list[r.clone()]
                .par_iter()
                .map(|&t| {
                    let t = t as usize;
                    let mut buf = pool.take(len(t as u32) as usize);
                    let view = a.resolve_base_checked(t, base, all)?;
                    let chunks = 0..a.chunk_count(t);
                    match digests {
                        Digests::All => {
                            a.decode_chunks_checked(t, chunks, view, &mut buf)?;
                            check_tensor_digest(
                                &a.index().tensors[t],
                                &Sha256::digest(&buf).into(),
                            )?;
                        }
                        Digests::Parts => a
                            .decode_proven(t, view, &mut buf)
                            .map_err(|e| blame_base(a, t, base, e))?,
                        Digests::File => a
                            .decode_chunks_into(t, chunks, view, &mut buf)
                            .map_err(|e| blame_base(a, t, base, e))?,
                    }
                    Ok(buf)
                })
                .collect(),
            Segment::Window(t, chunks) => {
                let mut buf = pool.take(a.chunks_byte_len(*t, chunks.clone()) as usize);
                // The base's digest once per tensor, with its first window.
                let check = all && chunks.start == 0;
                let r = a.resolve_base_checked(*t, base, check).and_then(|view| {
                    let r = if digests == Digests::File {
                        a.decode_chunks_into(*t, chunks.clone(), view, &mut buf)
                    } else {
                        a.decode_chunks_checked(*t, chunks.clone(), view, &mut buf)
                    };
                    // With `All` the base was checked with the first window.
                    r.map_err(|e| if all { e } else { blame_base(a, *t, base, e) })
                });
                vec![r.map(|()| buf)]
            }
        }
    };
    // Hands a decoded segment's bytes on, in order, through the digests
    // computed here (the file's, and a serial tensor digest).
    let mut consume_segment = |results: Vec<Result<Vec<u8>>>, done: &Segment| -> Result<()> {
        for bytes in results {
            let bytes = bytes?;
            match done {
                Segment::Window(t, chunks) if serial(*t) => {
                    if chunks.start == 0 {
                        file.begin_tensor();
                    }
                    file.update_tensor(&bytes);
                    if chunks.end == a.chunk_count(*t) {
                        let r = check_tensor_digest(&a.index().tensors[*t], &file.end_tensor());
                        r.map_err(|e| match digests {
                            Digests::Parts => blame_base(a, *t, base, e),
                            _ => e,
                        })?;
                    }
                }
                _ => file.update_file(&bytes),
            }
            consume(&bytes)?;
            pool.give(bytes);
        }
        Ok(())
    };
    // Up to `depth` segments decode at once (on the pool, each
    // chunk-parallel inside) while this thread consumes the oldest, in
    // order. With one segment at a time, every window ended in a barrier:
    // threads that finished their chunks idled until the slowest did
    // (decode scaled to 8× on 16 cores); with several, they go on to the
    // next segment's chunks.
    let stop = std::sync::atomic::AtomicBool::new(false);
    rayon::in_place_scope(|s| {
        let mut ahead = std::collections::VecDeque::new();
        let mut next = 0;
        for done in &segments {
            while next < segments.len() && ahead.len() < depth {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let (decode, stop, seg) = (&decode, &stop, &segments[next]);
                s.spawn(move |_| {
                    // After an error nothing more is consumed: skip the work.
                    let out = if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        Vec::new()
                    } else {
                        decode(seg)
                    };
                    let _ = tx.send(out);
                });
                ahead.push_back(rx);
                next += 1;
            }
            let Some(rx) = ahead.pop_front() else {
                break;
            };
            let r = consume_segment(wait_for(&rx), done);
            if r.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return r;
            }
        }
        Ok(())
    })
}

/// The result on `rx`, sent by a task on the thread pool. On a pool thread
/// (a caller inside `ThreadPool::install`) this runs other pool work while
/// it waits, so a pool of one thread cannot deadlock on its own task.
fn wait_for<T>(rx: &std::sync::mpsc::Receiver<Vec<Result<T>>>) -> Vec<Result<T>> {
    use std::sync::mpsc::TryRecvError;
    loop {
        match rx.try_recv() {
            Ok(v) => return v,
            Err(TryRecvError::Disconnected) => {
                return vec![Err(Error::Usage(
                    "a decoding task stopped without a result (it panicked)".into(),
                ))]
            }
            Err(TryRecvError::Empty) => match rayon::yield_now() {
                // Not a pool thread: nothing to run here, block.
                None => {
                    return rx.recv().unwrap_or_else(|_| {
                        vec![Err(Error::Usage(
                            "a decoding task stopped without a result (it panicked)".into(),
                        ))]
                    })
                }
                Some(rayon::Yield::Executed) => {}
                Some(rayon::Yield::Idle) => std::thread::yield_now(),
            },
        }
    }
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files reconstructed and matched to their digests.
    pub files: usize,
    /// Tensors reconstructed and matched.
    pub tensors: usize,
    /// Bytes reconstructed.
    pub bytes: u64,
    /// True when the bytes were also compared with the original checkpoint.
    pub compared: bool,
}

/// Checks every CRC, reconstructs every file and tensor and checks their
/// digests; with `against`, also compares byte for byte with the original.
/// `progress` gets the bytes rebuilt as it goes (see [`verify_with`] for
/// progress during the checksum pass too).
pub fn verify<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    base: &dyn BaseProvider,
    against: Option<&Checkpoint>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    verify_with(a, base, against, &mut |_| {}, progress)
}

/// [`verify`], with `checked` called with the stored bytes whose CRCs were
/// checked during its first pass (before anything is rebuilt).
pub fn verify_with<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    base: &dyn BaseProvider,
    against: Option<&Checkpoint>,
    checked: &mut dyn FnMut(u64),
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport> {
    a.check_crcs_with(checked)?;
    let mut report = VerifyReport {
        compared: against.is_some(),
        ..VerifyReport::default()
    };
    for (fi, rec) in a.index().files.iter().enumerate() {
        let orig = match against {
            // A single file is compared whatever its name (it may have been
            // renamed or unpacked under another name); shards go by name.
            Some(c) if !c.sharded && c.files.len() == 1 && a.index().files.len() == 1 => {
                c.files.first()
            }
            Some(c) => Some(c.files.iter().find(|f| f.name == rec.name).ok_or_else(|| {
                Error::NotIdentical {
                    path: c.root.clone(),
                    reason: format!("has no file {:?} to compare with", rec.name),
                }
            })?),
            None => None,
        };
        if let Some(o) = orig {
            if o.size() != rec.size {
                return Err(Error::NotIdentical {
                    path: o.path.clone(),
                    reason: format!(
                        "is {} bytes, the archive reconstructs {}",
                        o.size(),
                        rec.size
                    ),
                });
            }
        }
        let mut off = 0u64;
        stream_file_with(a, fi, base, Digests::All, &mut |bytes| {
            if let Some(o) = orig {
                let mut buf = vec![0u8; bytes.len()];
                o.file
                    .read_exact_at(&mut buf, off)
                    .map_err(|e| Error::io(&o.path, e))?;
                if buf != bytes {
                    let at = buf.iter().zip(bytes).position(|(x, y)| x != y).unwrap_or(0) as u64;
                    return Err(Error::NotIdentical {
                        path: o.path.clone(),
                        reason: format!("differs from the reconstruction at byte {}", off + at),
                    });
                }
            }
            off += bytes.len() as u64;
            progress(bytes.len() as u64);
            Ok(())
        })?;
        report.files += 1;
        report.tensors += rec.tensors.len();
        report.bytes += rec.size;
    }
    Ok(report)
}

/// Writes the target back as safetensors: to the file `out` when the archive
/// holds one file, else into the directory `out`. Output is built in a temp
/// file or directory beside `out` and renamed into place only when every
/// digest checked, so a failure (or a kill) leaves nothing at `out`.
pub fn unpack<D: AsRef<[u8]> + Sync>(
    a: &Archive<D>,
    base: &dyn BaseProvider,
    out: &Path,
    opts: &UnpackOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<UnpackReport> {
    if !opts.overwrite && out.exists() {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
        });
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let idx = a.index();
    if !opts.tensors.is_empty() {
        let mut ids = Vec::with_capacity(opts.tensors.len());
        for name in &opts.tensors {
            let t = a.tensor_index(name)?;
            // A name asked for twice is written once: safetensors names are unique.
            if !ids.contains(&t) {
                ids.push(t);
            }
        }
        let list: Vec<_> = ids
            .iter()
            .map(|&t| {
                let r = &idx.tensors[t];
                (r.name.as_str(), r.dtype, r.shape.as_slice())
            })
            .collect();
        let header = make_header(&list);
        let bytes = write_atomic(
            &parent,
            out,
            opts.overwrite,
            &mut |sink| {
                sink(&(header.len() as u64).to_le_bytes())?;
                sink(&header)?;
                for &t in &ids {
                    stream_tensor(a, t, base, &mut *sink)?;
                }
                Ok(())
            },
            progress,
        )?;
        return Ok(UnpackReport {
            files: vec![PathBuf::from(out.file_name().unwrap_or_default())],
            bytes,
            directory: false,
        });
    }
    if idx.files.len() == 1 && idx.extra_files.is_empty() {
        let bytes = write_atomic(
            &parent,
            out,
            opts.overwrite,
            &mut |sink| stream_file(a, 0, base, sink),
            progress,
        )?;
        return Ok(UnpackReport {
            files: vec![PathBuf::from(out.file_name().unwrap_or_default())],
            bytes,
            directory: false,
        });
    }
    // A directory: build it beside `out`, then rename.
    let tmp = temp_dir_in(&parent)?;
    let mut report = UnpackReport {
        directory: true,
        ..UnpackReport::default()
    };
    for fi in 0..idx.files.len() {
        // Names were validated as single path components at open.
        let name = &idx.files[fi].name;
        report.bytes += write_atomic(
            tmp.path(),
            &tmp.path().join(name),
            false,
            &mut |sink| stream_file(a, fi, base, sink),
            progress,
        )?;
        report.files.push(PathBuf::from(name));
    }
    for x in &idx.extra_files {
        let actual: [u8; 32] = Sha256::digest(&x.contents).into();
        if actual != x.sha256 {
            return Err(Error::FileDigest {
                file: x.name.clone(),
                expected: hex(&x.sha256),
                actual: hex(&actual),
            });
        }
        let p = tmp.path().join(&x.name);
        std::fs::write(&p, &x.contents).map_err(|e| Error::io(&p, e))?;
        report.bytes += x.contents.len() as u64;
        report.files.push(PathBuf::from(&x.name));
    }
    if opts.overwrite && out.exists() {
        // Move the old output into a fresh temp directory of our own (never a
        // name beside `out` that could belong to the user), put the new one
        // in its place, then delete the old one with its temp directory.
        let trash = temp_dir_in(&parent)?;
        let old = trash.path().join("old");
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
        let kept = tmp.keep();
        if let Err(e) = std::fs::rename(&kept, out) {
            let _ = std::fs::rename(&old, out); // put the old output back
            let _ = std::fs::remove_dir_all(&kept);
            return Err(Error::io(out, e));
        }
        drop(trash);
    } else {
        let kept = tmp.keep();
        std::fs::rename(&kept, out).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            Error::io(out, e)
        })?;
    }
    Ok(report)
}

type Producer<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + 'a;

/// Runs `produce` into a temp file in `dir`, then renames it to `dest`.
fn write_atomic(
    dir: &Path,
    dest: &Path,
    overwrite: bool,
    produce: &mut Producer<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let tmp = temp_file_in(dir)?;
    let (file, tmp) = tmp.into_parts();
    let mut w = BufWriter::with_capacity(4 << 20, file);
    let mut written = 0u64;
    produce(&mut |bytes| {
        w.write_all(bytes).map_err(|e| Error::io(&*tmp, e))?;
        written += bytes.len() as u64;
        progress(bytes.len() as u64);
        Ok(())
    })?;
    let file: File = w
        .into_inner()
        .map_err(|e| Error::io(&*tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&*tmp, e))?;
    drop(file);
    let res = if overwrite {
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))
    } else {
        tmp.persist_noclobber(dest)
            .map_err(|e| match e.error.kind() {
                std::io::ErrorKind::AlreadyExists => Error::OutputExists {
                    path: dest.to_path_buf(),
                },
                _ => Error::io(dest, e.error),
            })
    };
    res.map(|()| written)
}
