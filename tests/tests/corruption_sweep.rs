//! Corruption sweep (issue 4): a real archive (the shipped example pair,
//! inline base, default writer options) with one bit flipped at positions spread over every region —
//! header, every chunk, padding, index — and truncated at many lengths.
//!
//! Every case must end in a typed corruption error or in a verified-correct
//! result: each tensor the reader hands back as good is compared with the
//! original bytes, and a file it streams as good with the original file.
//! Never a panic, never a hang (a watchdog aborts the run naming the case),
//! never a wrong tensor returned as good.
//!
//! Two kinds of flip: *raw* (as a disk or a download would corrupt it: the
//! covering checksum stays as it was), and *re-fixed* (the covering CRC —
//! header/index or chunk — recomputed after the flip, as an attacker would),
//! which gets past the checksum to the validator and the decoders behind it.
//!
//! Each case is opened under `ReadLimits::default()` and
//! `ReadLimits::strict()`; limits act only while opening (the decode path
//! has no limit-dependent behaviour), so both must agree on whether the
//! archive opens, and the decode runs once.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tpde_format::format::{Payload, HEADER_LEN};
use tpde_format::pack::BaseMode;
use tpde_format::safetensors::SourceFile;
use tpde_format::unpack::{stream_file, stream_file_with, Digests};
use tpde_format::{Archive, Error, NoBase, ReadLimits};
use tpde_tests::example;
use tpde_tests::hostile::*;

/// The archive under test and what it must reconstruct.
struct Fixture {
    archive: Vec<u8>,
    /// The original target file.
    file: Vec<u8>,
    /// Original bytes of each target tensor, in the archive's table order
    /// (a single flip can rename a tensor but not reorder the table).
    tensors: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // What `tpde pack` writes by default: the newest minor's features
        // (per-plane value streams where they pay).
        let archive = pack_minor(
            &example("v6.2-16k.safetensors"),
            Some(&example("v6.2.safetensors")),
            BaseMode::Inline,
            4096,
            tpde_format::format::VERSION_MINOR,
        );
        let path = example("v6.2-16k.safetensors");
        let file = std::fs::read(&path).unwrap();
        let src = SourceFile::open(Path::new(&path)).unwrap();
        let p = Parts::parse(&archive);
        let tensors = p
            .index
            .tensors
            .iter()
            .map(|rec| {
                let t = src.tensors.iter().find(|t| t.name == rec.name).unwrap();
                file[t.offset as usize..(t.offset + t.len) as usize].to_vec()
            })
            .collect();
        Fixture {
            archive,
            file,
            tensors,
        }
    })
}

/// How a case ended.
#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    refused_at_open: u64,
    refused_at_decode: u64,
    verified_good: u64,
    /// Returned by unpack with only the header's metadata differing, and
    /// refused by `verify` (see `check`).
    header_only: u64,
    variants: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, e: &Error) {
        let name = format!("{e:?}");
        let name = name.split([' ', '(', '{']).next().unwrap_or("?").to_owned();
        *self.variants.entry(name).or_default() += 1;
    }
}

/// Aborts the process if one case runs longer than a minute: a hang must
/// fail loudly and name its case rather than stall CI.
struct Watchdog {
    tick: Arc<AtomicU64>,
    case: Arc<Mutex<String>>,
}

impl Watchdog {
    fn start() -> Watchdog {
        let tick = Arc::new(AtomicU64::new(0));
        let case = Arc::new(Mutex::new(String::new()));
        let (t, c) = (Arc::clone(&tick), Arc::clone(&case));
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            loop {
                std::thread::sleep(Duration::from_secs(1));
                let now = t.load(Ordering::Relaxed);
                if now == u64::MAX {
                    return;
                }
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(60) {
                    eprintln!("HANG: case {:?} ran over 60 s", c.lock().unwrap());
                    std::process::abort();
                }
            }
        });
        Watchdog { tick, case }
    }

    fn enter(&self, case: &str) {
        *self.case.lock().unwrap() = case.to_owned();
        self.tick.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.tick.store(u64::MAX, Ordering::Relaxed);
    }
}

/// Runs one case: open under both limits, then decode every tensor and the
/// file, checking every good result against the originals.
fn check(bytes: &[u8], case: &str, tally: &mut Tally, dog: &Watchdog) {
    dog.enter(case);
    tally.cases += 1;
    let f = fixture();
    let strict = Archive::from_bytes(bytes, ReadLimits::strict());
    let a = match Archive::from_bytes(bytes, ReadLimits::default()) {
        Err(e) => {
            assert!(e.is_corruption(), "{case}: not a corruption error: {e:?}");
            assert!(
                strict.is_err(),
                "{case}: strict limits accepted what default refused"
            );
            tally.refused_at_open += 1;
            tally.error(&e);
            return;
        }
        Ok(a) => a,
    };
    if let Err(e) = &strict {
        panic!("{case}: strict limits refused a small archive: {e:?}");
    }
    let mut failed = false;
    for (i, rec) in a.index().tensors.iter().enumerate() {
        match a.decode_tensor(&rec.name, &NoBase) {
            Ok(v) => assert!(
                v == f.tensors[i],
                "{case}: tensor {} returned as good but differs from the original",
                rec.name
            ),
            Err(e) => {
                assert!(e.is_corruption(), "{case}: not a corruption error: {e:?}");
                if !failed {
                    tally.error(&e);
                }
                failed = true;
            }
        }
    }
    for fi in 0..a.index().files.len() {
        let mut out = Vec::new();
        match stream_file(&a, fi, &NoBase, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        }) {
            Ok(()) if out == f.file => {}
            Ok(()) => {
                // Unpack's policy (Digests::Parts, spec §10.2) proves the
                // tensors and checks that the header describes them; a flip
                // elsewhere in the header (its `__metadata__`), with the
                // index CRC recomputed, only the file digest finds, which
                // `verify` (Digests::All) checks.
                let header = 8..8 + a.index().files[fi].header.len();
                let at = out.iter().zip(&f.file).position(|(x, y)| x != y);
                assert!(
                    out.len() == f.file.len() && at.is_some_and(|i| header.contains(&i)),
                    "{case}: file returned as good but its tensors differ from the original"
                );
                let all = stream_file_with(&a, fi, &NoBase, Digests::All, &mut |_| Ok(()));
                assert!(
                    matches!(all, Err(Error::FileDigest { .. })),
                    "{case}: a header differing from the original passed verify: {all:?}"
                );
                tally.header_only += 1;
            }
            Err(e) => {
                assert!(e.is_corruption(), "{case}: not a corruption error: {e:?}");
                if !failed {
                    tally.error(&e);
                }
                failed = true;
            }
        }
    }
    if failed {
        tally.refused_at_decode += 1;
    } else {
        tally.verified_good += 1;
    }
}

fn report(what: &str, t: &Tally) {
    eprintln!(
        "{what}: {} cases, {} refused at open, {} refused at decode, {} verified good, {} header-only (refused by verify); errors {:?}",
        t.cases, t.refused_at_open, t.refused_at_decode, t.verified_good, t.header_only, t.variants
    );
}

/// `n` positions spread evenly over `range`, ends included.
fn spread(range: std::ops::Range<usize>, n: usize) -> Vec<usize> {
    let len = range.end - range.start;
    if len == 0 {
        return Vec::new();
    }
    let mut v: Vec<usize> = (0..n)
        .map(|k| range.start + k * (len - 1) / (n - 1).max(1))
        .collect();
    v.dedup();
    v
}

#[test]
fn header_bit_flips() {
    let f = fixture();
    let dog = Watchdog::start();
    let mut tally = Tally::default();
    for byte in 0..HEADER_LEN {
        for bit in [byte % 8, (byte * 5 + 3) % 8] {
            let mut b = f.archive.clone();
            b[byte] ^= 1 << bit;
            check(
                &b,
                &format!("header byte {byte} bit {bit}"),
                &mut tally,
                &dog,
            );
            if byte < 60 {
                refix_crc(&mut b);
                let case = format!("header byte {byte} bit {bit}, CRC re-fixed");
                check(&b, &case, &mut tally, &dog);
            }
        }
    }
    report("header", &tally);
    // Raw flips of the header can never pass: every byte is checked.
    assert!(tally.refused_at_open >= 128);
}

#[test]
fn chunk_bit_flips() {
    let f = fixture();
    let p = Parts::parse(&f.archive);
    let dog = Watchdog::start();
    let mut tally = Tally::default();
    let blobs = p.blobs();
    for (k, &blob) in blobs.iter().enumerate() {
        let (offset, len) = p.blob_range(blob);
        // One position per chunk, walking from its first byte to its last
        // over successive chunks, alternating raw and CRC re-fixed flips.
        let at = offset + (k as u64 * 7919) % len;
        let bit = k % 8;
        if k % 2 == 0 {
            let mut b = f.archive.clone();
            b[at as usize] ^= 1 << bit;
            check(
                &b,
                &format!("{blob:?} byte {at} bit {bit}"),
                &mut tally,
                &dog,
            );
        } else {
            let mut q = p.clone();
            q.data[at as usize - HEADER_LEN] ^= 1 << bit;
            let new = q.blob_bytes(blob);
            match blob {
                Blob::Chunk(table, t, c) => q.chunks_mut(table, t)[c].crc32 = crc32fast::hash(&new),
                Blob::Plain(table, t) => {
                    if let Payload::Plain { crc32, .. } = &mut q.table_mut(table)[t].payload {
                        *crc32 = crc32fast::hash(&new);
                    }
                }
            }
            let case = format!("{blob:?} byte {at} bit {bit}, chunk CRC re-fixed");
            check(&q.to_bytes(), &case, &mut tally, &dog);
        }
    }
    report("chunks", &tally);
    assert_eq!(tally.cases, blobs.len() as u64);
    // No flip inside a chunk can be harmless: its bytes are covered by a CRC
    // or, CRC re-fixed, by the tensor digest.
    assert_eq!(tally.verified_good, 0);
}

#[test]
fn padding_bit_flips() {
    let f = fixture();
    let p = Parts::parse(&f.archive);
    let dog = Watchdog::start();
    let mut tally = Tally::default();
    let index_offset = (f.archive.len() as u64) - p.header.index_len;
    let mut ends: Vec<u64> = p
        .blobs()
        .iter()
        .map(|&b| {
            let (o, l) = p.blob_range(b);
            o + l
        })
        .collect();
    ends.push(HEADER_LEN as u64);
    for end in ends {
        let next = end.next_multiple_of(64);
        if next == end || end > index_offset {
            continue;
        }
        for at in [end, next - 1] {
            let mut b = f.archive.clone();
            b[at as usize] ^= 0x20;
            check(&b, &format!("padding byte {at}"), &mut tally, &dog);
        }
    }
    report("padding", &tally);
    assert!(
        tally.cases > 20,
        "the example has padding after most chunks"
    );
    assert_eq!(tally.refused_at_open, tally.cases, "padding must be zero");
}

#[test]
fn index_bit_flips() {
    let f = fixture();
    let dog = Watchdog::start();
    let mut tally = Tally::default();
    let len = f.archive.len();
    let index_offset = len - Parts::parse(&f.archive).header.index_len as usize;
    for (k, at) in spread(index_offset..len, 300).into_iter().enumerate() {
        let bit = (k * 3) % 8;
        let mut b = f.archive.clone();
        b[at] ^= 1 << bit;
        check(&b, &format!("index byte {at} bit {bit}"), &mut tally, &dog);
        if k % 2 == 0 {
            refix_crc(&mut b);
            let case = format!("index byte {at} bit {bit}, CRC re-fixed");
            check(&b, &case, &mut tally, &dog);
        }
    }
    report("index", &tally);
}

#[test]
fn truncations() {
    let f = fixture();
    let dog = Watchdog::start();
    let mut tally = Tally::default();
    let len = f.archive.len();
    let mut cuts: Vec<usize> = (0..=130).collect();
    cuts.extend(spread(130..len, 2000));
    cuts.extend(len - 130..len);
    for &cut in &cuts {
        check(
            &f.archive[..cut],
            &format!("truncated to {cut}"),
            &mut tally,
            &dog,
        );
    }
    // Truncated *and re-sealed*: the data section cut short, the index and a
    // consistent header put back after it (what a careless repair tool might
    // write). Blobs then point past the data.
    let p = Parts::parse(&f.archive);
    for cut in spread(0..p.data.len(), 60) {
        let b = seal(&p.header, &p.data[..cut], &p.index_bytes());
        if b == f.archive {
            continue; // only trailing padding was cut, and sealing put it back
        }
        check(
            &b,
            &format!("data cut to {cut}, re-sealed"),
            &mut tally,
            &dog,
        );
    }
    report("truncation", &tally);
    assert_eq!(tally.verified_good, 0);
}
