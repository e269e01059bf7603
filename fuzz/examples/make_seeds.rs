//! Writes the committed seed corpus under `fuzz/seeds/<target>/`: small
//! archives covering every payload and chunk kind, base mode, dtype, empty
//! and 0-d tensors, several files — each a few KiB, so the fuzzer mutates
//! structure rather than bulk. Run by `fuzz/make_seeds.sh`; deterministic
//! (the writer's output does not depend on threads or time).
//!
//! The golden vectors in `tests/vectors/v1/` are further seeds; `run.sh`
//! passes that directory to libFuzzer directly rather than copying it.

use std::path::{Path, PathBuf};

use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::{make_header, Checkpoint};
use tpde_format::{Dtype, WriteOptions};

type Tensor = (String, Dtype, Vec<u64>, Vec<u8>);

fn write_st(path: &Path, tensors: &[Tensor]) {
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, _)| (n.as_str(), *d, s.as_slice()))
        .collect();
    let header = make_header(&list);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for t in tensors {
        out.extend_from_slice(&t.3);
    }
    std::fs::write(path, out).expect("write safetensors");
}

fn bytes(n: usize, f: impl Fn(usize) -> u8) -> Vec<u8> {
    (0..n).map(f).collect()
}

/// A target with sparse, dense and zero chunks against `base`, a tensor new
/// in the target, an empty tensor and a scalar.
fn pair() -> (Vec<Tensor>, Vec<Tensor>) {
    let n = 200;
    let f32b = bytes(n * 4, |i| (i * 37 % 251) as u8);
    let mut f32t = f32b.clone();
    for i in [3, 90, 91, 199] {
        f32t[i * 4 + 1] ^= 0x40;
    }
    let u16b = bytes(n * 2, |i| (i % 7) as u8);
    let u16t = bytes(n * 2, |i| (i * 13 % 256) as u8);
    let same = bytes(n, |i| (i % 3) as u8);
    let base = vec![
        ("a.f32".into(), Dtype::F32, vec![10, 20], f32b),
        ("b.u16".into(), Dtype::U16, vec![200], u16b),
        ("c.i8".into(), Dtype::I8, vec![200], same.clone()),
    ];
    let target = vec![
        ("a.f32".into(), Dtype::F32, vec![10, 20], f32t),
        ("b.u16".into(), Dtype::U16, vec![200], u16t),
        ("c.i8".into(), Dtype::I8, vec![200], same),
        (
            "d.bf16".into(),
            Dtype::BF16,
            vec![5, 8],
            bytes(80, |i| i as u8),
        ),
        ("e.empty".into(), Dtype::F64, vec![0, 4], Vec::new()),
        (
            "f.scalar".into(),
            Dtype::I64,
            vec![],
            bytes(8, |i| i as u8 + 1),
        ),
    ];
    (target, base)
}

/// xorshift bytes: incompressible low mantissa planes, so the writer picks
/// v1.1 per-plane value streams.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// v1.1 features: f32 targets over a bf16 base (widened), a tensor renamed
/// with the same content, noisy f32 values (per-plane streams).
fn pair_v11() -> (Vec<Tensor>, Vec<Tensor>) {
    let n = 256;
    // bf16 base values; the target is their exact f32 widening with a few
    // changes, so the widened base is the best match.
    let bf: Vec<u8> = (0..n)
        .flat_map(|i| (0x3f80u16 + (i as u16 % 97)).to_le_bytes())
        .collect();
    let mut wide: Vec<u8> = bf
        .chunks_exact(2)
        .flat_map(|h| (u32::from(u16::from_le_bytes([h[0], h[1]])) << 16).to_le_bytes())
        .collect();
    for i in [1usize, 77, 200] {
        wide[i * 4] ^= 0x21;
    }
    let mut noisy = noise(n * 4, 0x9e37_79b9_7f4a_7c15);
    for (i, e) in noisy.chunks_exact_mut(4).enumerate() {
        e[3] = 0x3f; // sign and exponent steady, mantissa noise
        e[2] = 0x80 | (i % 5) as u8;
    }
    let mut noisy_t = noisy.clone();
    for e in noisy_t.chunks_exact_mut(4) {
        e[0] ^= 0x5a;
        e[1] = e[1].wrapping_add(3);
    }
    let moved = bytes(64 * 2, |i| (i * 7) as u8);
    let base = vec![
        ("w".into(), Dtype::BF16, vec![16, 16], bf),
        ("noisy".into(), Dtype::F32, vec![256], noisy),
        ("old.name".into(), Dtype::U16, vec![64], moved.clone()),
    ];
    let target = vec![
        ("w".into(), Dtype::F32, vec![16, 16], wide),
        ("noisy".into(), Dtype::F32, vec![256], noisy_t),
        ("new.name".into(), Dtype::U16, vec![64], moved),
    ];
    (target, base)
}

fn pack_into(out: &Path, target: &Path, base: Option<&Path>, mode: BaseMode, ce: u64) {
    let t = Checkpoint::open(target).expect("target");
    let b = base.map(|b| Checkpoint::open(b).expect("base"));
    let opts = PackOptions {
        write: WriteOptions::default()
            .with_chunk_elems(ce)
            .with_overwrite(true),
        base_mode: mode,
    };
    pack(&t, b.as_ref(), out, &opts, &mut |_| {}).expect("pack");
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "seeds".into()));
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (target, base) = pair();
    let (tp, bp) = (dir.join("t.safetensors"), dir.join("b.safetensors"));
    write_st(&tp, &target);
    write_st(&bp, &base);

    // An all-zero base of the same shapes: the fuzz targets supply zero
    // external bases, so this archive's external path decodes for real.
    let zeros: Vec<Tensor> = target
        .iter()
        .map(|(n, d, s, b)| (n.clone(), *d, s.clone(), vec![0; b.len()]))
        .collect();
    let zp = dir.join("z.safetensors");
    write_st(&zp, &zeros);

    // Every dtype, one small tensor each, standalone.
    let every: Vec<Tensor> = Dtype::ALL
        .iter()
        .enumerate()
        .map(|(k, &d)| {
            let n = 3 + k;
            (
                format!("t{k}.{d}"),
                d,
                vec![n as u64],
                bytes(n * d.width(), |i| (i * 31 + k) as u8),
            )
        })
        .collect();
    let ep = dir.join("every.safetensors");
    write_st(&ep, &every);

    let (t11, b11) = pair_v11();
    let (tp11, bp11) = (dir.join("t11.safetensors"), dir.join("b11.safetensors"));
    write_st(&tp11, &t11);
    write_st(&bp11, &b11);

    // A fine-tune-like bf16 pair: small signed steps on most elements, so
    // the delta's planes are skewed and coded with context-modelled rANS.
    let fb = noise(4096 * 2, 7);
    let ft: Vec<u8> = fb
        .chunks_exact(2)
        .enumerate()
        .flat_map(|(i, h)| {
            let v = u16::from_le_bytes([h[0], h[1]]);
            let step = [0u16, 1, 0, 0xffff, 2, 0, 0xfffe, 0][i % 8];
            v.wrapping_add(step).to_le_bytes()
        })
        .collect();
    let (tft, bft) = (dir.join("tft.safetensors"), dir.join("bft.safetensors"));
    write_st(&tft, &[("ft".into(), Dtype::BF16, vec![64, 64], ft)]);
    write_st(&bft, &[("ft".into(), Dtype::BF16, vec![64, 64], fb)]);

    // A sharded checkpoint: two shards and the index naming them.
    let sh = dir.join("sharded");
    std::fs::create_dir(&sh).expect("mkdir");
    let s1 = "model-00001-of-00002.safetensors";
    let s2 = "model-00002-of-00002.safetensors";
    write_st(&sh.join(s1), &target[..2]);
    write_st(&sh.join(s2), &target[2..]);
    let map: Vec<String> = target
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{:?}: {:?}", t.0, if i < 2 { s1 } else { s2 }))
        .collect();
    std::fs::write(
        sh.join("model.safetensors.index.json"),
        format!(
            "{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}",
            map.join(", ")
        ),
    )
    .expect("index json");

    // External bases the fuzz targets can supply (`zero_base`: all zeros of
    // the recorded shape), read through a predictor: a row map (the
    // target's `emb` has more rows than the base's), a sliced base (`head`
    // has no same-name base; its zero rows are rows of `other`), and a
    // quantized one (`q.weight` from zero codes and scales). Without them the
    // mutated archives' row-mapped, sliced and quantized external paths fail
    // the base digest and stop there (session 6: 8 of the gpu_reference
    // corpus's inputs reached the host row-map staging).
    let mut emb = vec![0u8; 24 * 16 * 4];
    let mut head = vec![0u8; 16 * 32 * 4];
    let mut qw = vec![0u8; 8 * 16 * 4];
    for (k, e) in emb.iter_mut().enumerate().skip(20 * 64) {
        *e = (k * 37 % 251) as u8; // rows 20.. are new
    }
    for (k, e) in head.iter_mut().enumerate().skip(8 * 128) {
        *e = (k * 11 % 241) as u8; // rows 8.. match nothing
    }
    for (k, e) in qw.iter_mut().enumerate() {
        *e = (k * 13 % 239) as u8;
    }
    let zero_pred = [
        (
            "emb".into(),
            Dtype::F32,
            vec![20, 16],
            vec![0u8; 20 * 16 * 4],
        ),
        (
            "other".into(),
            Dtype::F32,
            vec![64, 16],
            vec![0u8; 64 * 16 * 4],
        ),
        (
            "q.weight.q".into(),
            Dtype::I8,
            vec![8, 16],
            vec![0u8; 8 * 16],
        ),
        (
            "q.weight.scale".into(),
            Dtype::F32,
            vec![8, 1],
            vec![0u8; 8 * 4],
        ),
    ];
    let pred_target = [
        ("emb".into(), Dtype::F32, vec![24, 16], emb),
        ("head".into(), Dtype::F32, vec![16, 32], head),
        ("q.weight".into(), Dtype::F32, vec![8, 16], qw),
    ];
    let (tzp, bzp) = (dir.join("tzp.safetensors"), dir.join("bzp.safetensors"));
    write_st(&tzp, &pred_target);
    write_st(&bzp, &zero_pred);

    let archives: Vec<(&str, PathBuf, Option<PathBuf>, BaseMode, u64)> = vec![
        ("inline", tp.clone(), Some(bp.clone()), BaseMode::Inline, 64),
        (
            "inline_plain",
            tp.clone(),
            Some(bp.clone()),
            BaseMode::InlinePlain,
            64,
        ),
        (
            "external",
            tp.clone(),
            Some(bp.clone()),
            BaseMode::External,
            64,
        ),
        (
            "external_zero",
            tp.clone(),
            Some(zp.clone()),
            BaseMode::External,
            50,
        ),
        ("standalone", tp.clone(), None, BaseMode::Inline, 128),
        ("every_dtype", ep.clone(), None, BaseMode::Inline, 4),
        ("sharded", sh.clone(), None, BaseMode::Inline, 100),
        (
            "one_chunk",
            tp.clone(),
            Some(bp.clone()),
            BaseMode::Inline,
            4096,
        ),
        (
            "rans_finetune",
            tft.clone(),
            Some(bft.clone()),
            BaseMode::Inline,
            1024,
        ),
        (
            "v11_inline",
            tp11.clone(),
            Some(bp11.clone()),
            BaseMode::Inline,
            64,
        ),
        (
            "v11_plain",
            tp11.clone(),
            Some(bp11.clone()),
            BaseMode::InlinePlain,
            128,
        ),
        (
            "v11_external",
            tp11.clone(),
            Some(bp11.clone()),
            BaseMode::External,
            100,
        ),
        (
            "external_zero_predictors",
            tzp.clone(),
            Some(bzp.clone()),
            BaseMode::External,
            64,
        ),
    ];
    for target in ["open_decode", "equivalence"] {
        std::fs::create_dir_all(root.join(target)).expect("mkdir seeds");
    }
    for (name, t, b, mode, ce) in &archives {
        let out = dir.join(format!("{name}.tpde"));
        pack_into(&out, t, b.as_deref(), *mode, *ce);
        let bytes = std::fs::read(&out).expect("read archive");
        for target in ["open_decode", "equivalence"] {
            std::fs::write(root.join(target).join(format!("{name}.tpde")), &bytes)
                .expect("write seed");
        }
        println!("{name}.tpde: {} bytes", bytes.len());
    }

    // rANS planes: [len u16][flags][coded plane], as the rans_plane target
    // reads them (its context plane is derived from len and flags).
    let rp = root.join("rans_plane");
    std::fs::create_dir_all(&rp).expect("mkdir seeds");
    let skewed = |i: usize| -> u8 {
        match (i * 2654435761) % 97 {
            0..=60 => 0,
            61..=90 => 0xff,
            k => k as u8,
        }
    };
    let planes: [(&str, usize, u8, Vec<u8>); 5] = [
        ("skewed_ctx", 3000, 1, bytes(3000, skewed)),
        ("skewed", 1000, 0, bytes(1000, skewed)),
        ("constant", 500, 0, vec![7; 500]),
        ("noise", 256, 0, noise(256, 42)),
        (
            "two_symbols_ctx",
            4096,
            1,
            bytes(4096, |i| (i % 3 == 0) as u8),
        ),
    ];
    for (name, n, flags, plane) in planes {
        let context: Vec<u8> = (0..n)
            .map(|i| (i as u8).wrapping_mul(37) ^ flags.rotate_left(3))
            .collect();
        let ctx = (flags & 1 == 1).then_some(&context[..]);
        let mut seed = (n as u16).to_le_bytes().to_vec();
        seed.push(flags);
        tpde_format::codec::entropy::encode_plane(&plane, ctx, &mut seed);
        std::fs::write(rp.join(name), seed).expect("write seed");
    }

    // Round trip: arbitrary-decoded bytes; a few shapes of input.
    let rt = root.join("roundtrip");
    std::fs::create_dir_all(&rt).expect("mkdir seeds");
    for (k, len) in [16usize, 64, 256, 1024].into_iter().enumerate() {
        let seed = bytes(len, |i| ((i * 131 + k * 17) ^ (i >> 3)) as u8);
        std::fs::write(rt.join(format!("pattern_{len}")), seed).expect("write seed");
    }
}
