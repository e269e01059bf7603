//! SHA-256 of a file and of each tensor inside it, from one pass over its
//! bytes.
//!
//! Why: an archive records the SHA-256 of every target file and of every
//! tensor in it (and of an external base's file and tensors), so the writer
//! hashes each tensor byte twice, and `verify` checks both. One SHA-256
//! stream is bound by the latency of the SHA-NI round instruction; two
//! independent streams interleaved keep it busy, which makes the pair
//! 1.3–1.75× faster than one stream after the other on the development
//! machine (two 64 MiB streams: 1.75 GB/s one after the other, 2.3–3.1 GB/s
//! interleaved; `.dev` scratch `sha2x`, 2-core AMD EPYC). On a CPU without
//! SHA-NI (or not x86-64) the two streams are plain [`sha2::Sha256`]
//! hashers, one after the other; both paths give the same digests (tests
//! below compare them with `sha2` on every split).
//!
//! [`FileDigest`] is the outer stream (the file) with at most one inner
//! stream (the current tensor) nested in it: bytes of a tensor feed both,
//! other bytes (the safetensors length and header) the file's only.

/// A SHA-256 digest.
pub type Sha256Digest = [u8; 32];

/// The SHA-256 of a file and of the tensor currently being read in it.
#[derive(Debug, Clone)]
pub struct FileDigest {
    /// The file's stream; `None` when only tensors are hashed.
    outer: Option<Stream>,
    /// The current tensor's stream.
    inner: Option<Stream>,
}

impl FileDigest {
    /// Hashes a file (and, between [`FileDigest::begin_tensor`] and
    /// [`FileDigest::end_tensor`], a tensor in it).
    pub fn new() -> Self {
        FileDigest {
            outer: Some(Stream::new()),
            inner: None,
        }
    }

    /// Hashes tensors only (no file around them): [`FileDigest::finish`]
    /// then returns `None`.
    pub fn tensors_only() -> Self {
        FileDigest {
            outer: None,
            inner: None,
        }
    }

    /// Bytes of the file outside any tensor.
    pub fn update_file(&mut self, bytes: &[u8]) {
        if let Some(o) = &mut self.outer {
            o.update(bytes);
        }
    }

    /// Starts a tensor's stream (dropping one not ended).
    pub fn begin_tensor(&mut self) {
        self.inner = Some(Stream::new());
    }

    /// Bytes of the current tensor, which are also the file's; without a
    /// current tensor, the file's only.
    pub fn update_tensor(&mut self, bytes: &[u8]) {
        match (&mut self.outer, &mut self.inner) {
            (Some(o), Some(i)) => Stream::update_pair(o, i, bytes),
            (Some(s), None) | (None, Some(s)) => s.update(bytes),
            (None, None) => {}
        }
    }

    /// The current tensor's digest (of no bytes if none was begun).
    pub fn end_tensor(&mut self) -> Sha256Digest {
        self.inner.take().unwrap_or_else(Stream::new).finish()
    }

    /// The file's digest (`None` for [`FileDigest::tensors_only`]).
    pub fn finish(self) -> Option<Sha256Digest> {
        self.outer.map(Stream::finish)
    }
}

impl Default for FileDigest {
    fn default() -> Self {
        FileDigest::new()
    }
}

/// The SHA-256 of `x` and of `y`, computed together: with SHA-NI the two
/// streams' rounds interleave (see the module docs). For a reader checking
/// chunk digests (format 1.7) two chunks at a time.
pub fn sha256_two(x: &[u8], y: &[u8]) -> (Sha256Digest, Sha256Digest) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(mut a), Some(mut b)) = (ni::State::new(), ni::State::new()) {
        ni::State::update_two(&mut a, x, &mut b, y);
        return (a.finish(), b.finish());
    }
    (
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(x)).into(),
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(y)).into(),
    )
}

/// One SHA-256 stream: the SHA-NI kernel's state and partial block where
/// the CPU has SHA-NI, else a [`sha2::Sha256`].
#[derive(Debug, Clone)]
enum Stream {
    #[cfg(target_arch = "x86_64")]
    Ni(ni::State),
    Soft(sha2::Sha256),
}

impl Stream {
    fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(s) = ni::State::new() {
            return Stream::Ni(s);
        }
        Stream::Soft(<sha2::Sha256 as sha2::Digest>::new())
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Stream::Ni(s) => s.update(bytes),
            Stream::Soft(h) => sha2::Digest::update(h, bytes),
        }
    }

    /// The same bytes into two streams, interleaved where both use SHA-NI.
    fn update_pair(a: &mut Stream, b: &mut Stream, bytes: &[u8]) {
        match (a, b) {
            #[cfg(target_arch = "x86_64")]
            (Stream::Ni(a), Stream::Ni(b)) => ni::State::update_pair(a, b, bytes),
            (a, b) => {
                a.update(bytes);
                b.update(bytes);
            }
        }
    }

    fn finish(self) -> Sha256Digest {
        match self {
            #[cfg(target_arch = "x86_64")]
            Stream::Ni(s) => s.finish(),
            Stream::Soft(h) => sha2::Digest::finalize(h).into(),
        }
    }
}

/// SHA-256 with the x86 SHA extensions, one or two streams at a time.
#[cfg(target_arch = "x86_64")]
mod ni {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_set_epi64x,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
        _mm_shuffle_epi8,
    };

    /// The initial hash value (FIPS 180-4 §5.3.3).
    #[rustfmt::skip]
    const IV: [u32; 8] = [
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c,
        0x1f83_d9ab, 0x5be0_cd19,
    ];

    /// The round constants (FIPS 180-4 §4.2.2).
    #[rustfmt::skip]
    const K: [u32; 64] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1,
        0x923f_82a4, 0xab1c_5ed5, 0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3,
        0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174, 0xe49b_69c1, 0xefbe_4786,
        0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147,
        0x06ca_6351, 0x1429_2967, 0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13,
        0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85, 0xa2bf_e8a1, 0xa81a_664b,
        0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a,
        0x5b9c_ca4f, 0x682e_6ff3, 0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208,
        0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ];

    /// True when this CPU has the instructions [`compress2`] uses.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// A stream: the hash words, the bytes of a partial block, and the
    /// length so far. Only [`State::new`] makes one, and only where
    /// [`available`] says yes: the `unsafe` calls below rely on it.
    #[derive(Debug, Clone)]
    pub(super) struct State {
        h: [u32; 8],
        buf: [u8; 64],
        buffered: usize,
        len: u64,
    }

    impl State {
        /// A fresh stream, or `None` on a CPU without the instructions.
        pub(super) fn new() -> Option<Self> {
            available().then_some(State {
                h: IV,
                buf: [0; 64],
                buffered: 0,
                len: 0,
            })
        }

        /// Tops up the partial block from `bytes` and compresses it once
        /// full; returns the bytes taken (none when no block was partial).
        fn head(&mut self, bytes: &[u8]) -> usize {
            if self.buffered == 0 {
                return 0;
            }
            let take = (64 - self.buffered).min(bytes.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&bytes[..take]);
            self.buffered += take;
            if self.buffered == 64 {
                let block = self.buf;
                self.compress(&[block]);
                self.buffered = 0;
            }
            take
        }

        /// Keeps `bytes` (shorter than a block) as the partial block. Bytes
        /// are left only after [`State::head`] emptied the partial block;
        /// with none left, a partial block it topped up stays as it is.
        fn tail(&mut self, bytes: &[u8]) {
            if !bytes.is_empty() {
                self.buf[..bytes.len()].copy_from_slice(bytes);
                self.buffered = bytes.len();
            }
        }

        fn compress(&mut self, blocks: &[[u8; 64]]) {
            let mut spare = IV;
            // SAFETY: a `State` exists only where `available()` is true.
            unsafe { compress2(&mut self.h, blocks, &mut spare, &[]) }
        }

        pub(super) fn update(&mut self, bytes: &[u8]) {
            self.len += bytes.len() as u64;
            let rest = &bytes[self.head(bytes)..];
            let whole = rest.len() / 64 * 64;
            self.compress(bytemuck::cast_slice(&rest[..whole]));
            self.tail(&rest[whole..]);
        }

        /// `bytes` into both streams (see [`State::update_two`]).
        pub(super) fn update_pair(a: &mut State, b: &mut State, bytes: &[u8]) {
            State::update_two(a, bytes, b, bytes);
        }

        /// `x` into stream `a` and `y` into stream `b`: after each tops up
        /// its partial block, their whole blocks are compressed two at a
        /// time (the longer's rest alone).
        pub(super) fn update_two(a: &mut State, x: &[u8], b: &mut State, y: &[u8]) {
            a.len += x.len() as u64;
            b.len += y.len() as u64;
            let ra = &x[a.head(x)..];
            let rb = &y[b.head(y)..];
            let (wa, wb) = (ra.len() / 64 * 64, rb.len() / 64 * 64);
            let ba: &[[u8; 64]] = bytemuck::cast_slice(&ra[..wa]);
            let bb: &[[u8; 64]] = bytemuck::cast_slice(&rb[..wb]);
            // SAFETY: a `State` exists only where `available()` is true.
            unsafe { compress2(&mut a.h, ba, &mut b.h, bb) };
            a.tail(&ra[wa..]);
            b.tail(&rb[wb..]);
        }

        pub(super) fn finish(mut self) -> super::Sha256Digest {
            let bits = self.len.wrapping_mul(8);
            let mut pad = [0u8; 72];
            pad[0] = 0x80;
            // Padding up to 56 mod 64, then the length in bits.
            let zeros = (119 - self.buffered) % 64;
            pad[1 + zeros..9 + zeros].copy_from_slice(&bits.to_be_bytes());
            let len = self.len;
            self.update(&pad[..9 + zeros]);
            debug_assert_eq!(self.buffered, 0);
            self.len = len;
            let mut out = [0u8; 32];
            for (o, w) in out.chunks_exact_mut(4).zip(self.h) {
                o.copy_from_slice(&w.to_be_bytes());
            }
            out
        }
    }

    /// Compresses `a` into state `ha` and `b` into `hb`, two blocks at a
    /// time while both have one left, then the longer's rest alone. The
    /// round instruction's latency bounds one stream; the other stream's
    /// rounds fill the gaps.
    ///
    /// # Safety
    /// The CPU must have SHA, SSE2, SSSE3 and SSE4.1 ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress2(ha: &mut [u32; 8], a: &[[u8; 64]], hb: &mut [u32; 8], b: &[[u8; 64]]) {
        let both = a.len().min(b.len());
        let (a2, a1) = a.split_at(both);
        let (b2, b1) = b.split_at(both);
        // SAFETY: the caller guarantees the target features; every other
        // operation is on values (loads go through `bytemuck`). (Since Rust
        // 1.86 these intrinsics are safe inside this function, hence the
        // `allow`; the crate's minimum Rust, 1.85, needs the block.)
        #[allow(unused_unsafe)]
        unsafe {
            let mask = _mm_set_epi64x(
                0x0C0D_0E0F_0809_0A0Bu64 as i64,
                0x0405_0607_0001_0203u64 as i64,
            );
            // Macros, not closures: a closure would not inherit this
            // function's target features, and its intrinsics would become
            // calls.
            // Block words `4i..4i + 4`, big-endian.
            macro_rules! load {
                ($block:expr, $i:expr) => {
                    _mm_shuffle_epi8(
                        bytemuck::pod_read_unaligned::<__m128i>(&$block[16 * $i..16 * $i + 16]),
                        mask,
                    )
                };
            }
            // Round constants `4i..4i + 4`.
            macro_rules! kv {
                ($i:expr) => {
                    bytemuck::pod_read_unaligned::<__m128i>(bytemuck::cast_slice(
                        &K[4 * $i..4 * $i + 4],
                    ))
                };
            }
            // The message schedule's next four words.
            macro_rules! schedule {
                ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {{
                    let t1 = _mm_sha256msg1_epu32($v0, $v1);
                    let t2 = _mm_alignr_epi8($v3, $v2, 4);
                    _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), $v3)
                }};
            }
            // (a, b, c, d, e, f, g, h) -> the (a, b, e, f) / (c, d, g, h) halves.
            macro_rules! split {
                ($h:expr) => {{
                    let dcba: __m128i =
                        bytemuck::pod_read_unaligned(bytemuck::cast_slice(&$h[..4]));
                    let hgfe: __m128i =
                        bytemuck::pod_read_unaligned(bytemuck::cast_slice(&$h[4..]));
                    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
                    let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
                    (
                        _mm_alignr_epi8(cdab, efgh, 8),
                        _mm_blend_epi16(efgh, cdab, 0xF0),
                    )
                }};
            }
            // And back.
            macro_rules! join {
                ($h:expr, $abef:expr, $cdgh:expr) => {{
                    let feba = _mm_shuffle_epi32($abef, 0x1B);
                    let dchg = _mm_shuffle_epi32($cdgh, 0xB1);
                    let dcba: [u32; 4] = bytemuck::cast(_mm_blend_epi16(feba, dchg, 0xF0));
                    let hgfe: [u32; 4] = bytemuck::cast(_mm_alignr_epi8(dchg, feba, 8));
                    $h[..4].copy_from_slice(&dcba);
                    $h[4..].copy_from_slice(&hgfe);
                }};
            }
            let (mut abef_a, mut cdgh_a) = split!(ha);
            let (mut abef_b, mut cdgh_b) = split!(hb);
            // Four rounds of one stream on message words `w`.
            macro_rules! rounds {
                ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
                    let t = _mm_add_epi32($w, kv!($i));
                    $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t);
                    $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(t, 0x0E));
                }};
            }
            // One block of each stream, their rounds interleaved.
            for (x, y) in a2.iter().zip(b2) {
                let (sa, sc, sb, sd) = (abef_a, cdgh_a, abef_b, cdgh_b);
                let mut wa = [load!(x, 0), load!(x, 1), load!(x, 2), load!(x, 3)];
                let mut wb = [load!(y, 0), load!(y, 1), load!(y, 2), load!(y, 3)];
                macro_rules! step {
                    ($i:expr) => {{
                        if $i >= 4 {
                            let j = $i % 4;
                            wa[j] =
                                schedule!(wa[j], wa[(j + 1) % 4], wa[(j + 2) % 4], wa[(j + 3) % 4]);
                            wb[j] =
                                schedule!(wb[j], wb[(j + 1) % 4], wb[(j + 2) % 4], wb[(j + 3) % 4]);
                        }
                        rounds!(abef_a, cdgh_a, wa[$i % 4], $i);
                        rounds!(abef_b, cdgh_b, wb[$i % 4], $i);
                    }};
                }
                step!(0);
                step!(1);
                step!(2);
                step!(3);
                step!(4);
                step!(5);
                step!(6);
                step!(7);
                step!(8);
                step!(9);
                step!(10);
                step!(11);
                step!(12);
                step!(13);
                step!(14);
                step!(15);
                abef_a = _mm_add_epi32(abef_a, sa);
                cdgh_a = _mm_add_epi32(cdgh_a, sc);
                abef_b = _mm_add_epi32(abef_b, sb);
                cdgh_b = _mm_add_epi32(cdgh_b, sd);
            }
            // The longer stream's remaining blocks, alone.
            let (rest, abef, cdgh) = if a1.is_empty() {
                (b1, &mut abef_b, &mut cdgh_b)
            } else {
                (a1, &mut abef_a, &mut cdgh_a)
            };
            for x in rest {
                let (s0, s1) = (*abef, *cdgh);
                let mut w = [load!(x, 0), load!(x, 1), load!(x, 2), load!(x, 3)];
                macro_rules! step1 {
                    ($i:expr) => {{
                        if $i >= 4 {
                            let j = $i % 4;
                            w[j] = schedule!(w[j], w[(j + 1) % 4], w[(j + 2) % 4], w[(j + 3) % 4]);
                        }
                        let t = _mm_add_epi32(w[$i % 4], kv!($i));
                        *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, t);
                        *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_shuffle_epi32(t, 0x0E));
                    }};
                }
                step1!(0);
                step1!(1);
                step1!(2);
                step1!(3);
                step1!(4);
                step1!(5);
                step1!(6);
                step1!(7);
                step1!(8);
                step1!(9);
                step1!(10);
                step1!(11);
                step1!(12);
                step1!(13);
                step1!(14);
                step1!(15);
                *abef = _mm_add_epi32(*abef, s0);
                *cdgh = _mm_add_epi32(*cdgh, s1);
            }
            join!(ha, abef_a, cdgh_a);
            join!(hb, abef_b, cdgh_b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn sha(b: &[u8]) -> Sha256Digest {
        Sha256::digest(b).into()
    }

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Whether the SHA-NI path runs here (the soft path is tested either way).
    fn report_path() {
        #[cfg(target_arch = "x86_64")]
        if ni::available() {
            return;
        }
        println!("no SHA-NI on this CPU: only the sha2 fallback is tested");
    }

    #[test]
    fn a_file_and_its_tensors_hash_as_sha256_of_each() {
        report_path();
        // A header, then tensors of lengths around the block size, fed in
        // pieces of every length from 1 to 130 bytes.
        let header = data(77, 1);
        let tensors: Vec<Vec<u8>> = [0usize, 1, 63, 64, 65, 127, 128, 1000, 4097]
            .iter()
            .enumerate()
            .map(|(i, &n)| data(n, i as u64 + 2))
            .collect();
        for piece in 1..=130 {
            let mut d = FileDigest::new();
            d.update_file(&header);
            let mut whole = header.clone();
            for t in &tensors {
                d.begin_tensor();
                for p in t.chunks(piece) {
                    d.update_tensor(p);
                }
                assert_eq!(
                    d.end_tensor(),
                    sha(t),
                    "tensor of {} B, pieces of {piece}",
                    t.len()
                );
                whole.extend_from_slice(t);
            }
            assert_eq!(d.finish(), Some(sha(&whole)), "pieces of {piece}");
        }
    }

    #[test]
    fn every_pair_of_partial_offsets_and_lengths_matches() {
        // The two streams' partial blocks differ by every offset 0..64, and
        // the shared bytes end at every offset: the pair kernel's split into
        // interleaved and single blocks covers all cases.
        let bytes = data(64 * 5 + 63, 9);
        for outer_head in 0..64 {
            for len in (0..bytes.len()).step_by(7).chain([64, 128, 191, 192, 320]) {
                let mut d = FileDigest::new();
                d.update_file(&bytes[..outer_head]);
                d.begin_tensor();
                d.update_tensor(&bytes[outer_head..outer_head + len.min(bytes.len() - outer_head)]);
                let t = &bytes[outer_head..outer_head + len.min(bytes.len() - outer_head)];
                assert_eq!(d.end_tensor(), sha(t));
                assert_eq!(d.finish(), Some(sha(&bytes[..outer_head + t.len()])));
            }
        }
    }

    #[test]
    fn tensors_only_and_bytes_outside_a_tensor() {
        let a = data(300, 3);
        let mut d = FileDigest::tensors_only();
        d.update_file(&a); // no file: ignored
        d.begin_tensor();
        d.update_tensor(&a);
        assert_eq!(d.end_tensor(), sha(&a));
        assert_eq!(d.finish(), None);
        // Tensor bytes with no tensor begun go to the file only; an ended
        // tensor that was never begun is the digest of no bytes.
        let mut d = FileDigest::new();
        d.update_tensor(&a);
        assert_eq!(d.end_tensor(), sha(b""));
        assert_eq!(d.finish(), Some(sha(&a)));
    }

    #[test]
    fn a_sha2_file_stream_pairs_with_any_tensor_stream() {
        // The fallback (and a mixed pair, on a SHA-NI CPU): the file's
        // stream is a plain `sha2` hasher.
        let a = data(1000, 4);
        for piece in [1, 63, 64, 65, 999] {
            let mut d = FileDigest {
                outer: Some(Stream::Soft(Sha256::new())),
                inner: None,
            };
            d.update_file(&a[..10]);
            d.begin_tensor();
            for p in a[10..].chunks(piece) {
                d.update_tensor(p);
            }
            assert_eq!(d.end_tensor(), sha(&a[10..]));
            assert_eq!(d.finish(), Some(sha(&a)));
        }
    }

    #[test]
    fn two_streams_of_any_lengths_hash_as_each() {
        report_path();
        let x = data(3 * 64 + 17, 6);
        let y = data(5 * 64 + 63, 7);
        for lx in (0..x.len()).step_by(5).chain([64, 128, 192]) {
            for ly in (0..y.len()).step_by(11).chain([0, 64, 320]) {
                let (dx, dy) = sha256_two(&x[..lx], &y[..ly]);
                assert_eq!(
                    (dx, dy),
                    (sha(&x[..lx]), sha(&y[..ly])),
                    "{lx} and {ly} bytes"
                );
            }
        }
    }

    #[test]
    fn large_streams_match() {
        // Many blocks in one update (the interleaved loop's main case).
        let a = data(3 << 20, 5);
        let mut d = FileDigest::new();
        d.update_file(&a[..5]);
        d.begin_tensor();
        d.update_tensor(&a[5..]);
        assert_eq!(d.end_tensor(), sha(&a[5..]));
        assert_eq!(d.finish(), Some(sha(&a)));
    }
}
