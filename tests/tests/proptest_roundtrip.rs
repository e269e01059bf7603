//! proptest round trips through `pack` / `unpack` on temp safetensors files:
//! random dtypes and shapes (empty, 0-d, sizes not divisible by the chunk
//! size), identical / sparse / dense / mixed / unrelated deltas, tensors
//! missing from or extra in the base, dtype or shape changed, and every base
//! mode (none, inline, inline plain, external). Unpack must be byte-identical.

use proptest::prelude::*;
use tpde_format::format::BaseRef;
use tpde_format::pack::{pack, BaseMode, PackOptions};
use tpde_format::safetensors::Checkpoint;
use tpde_format::unpack::{unpack, verify, UnpackOptions};
use tpde_format::{Archive, BaseProvider, Dtype, NoBase, WriteOptions};
use tpde_tests::{safetensors_bytes, Rng, TensorData};

#[derive(Debug, Clone, Copy)]
enum Delta {
    Identical,
    Sparse,
    Dense,
    Mixed,
    Unrelated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Both,
    TargetOnly,
    BaseOnly,
    DtypeChanged,
    ShapeChanged,
}

#[derive(Debug, Clone)]
struct Spec {
    dtype: Dtype,
    shape: Vec<u64>,
    delta: Delta,
    presence: Presence,
    seed: u64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..Dtype::ALL.len(),
        // 0-d scalars, empty dimensions, and sizes rarely divisible by the chunk size.
        prop::collection::vec(0u64..=11, 0..=3),
        prop_oneof![
            Just(Delta::Identical),
            Just(Delta::Sparse),
            Just(Delta::Dense),
            Just(Delta::Mixed),
            Just(Delta::Unrelated)
        ],
        prop_oneof![
            4 => Just(Presence::Both),
            1 => Just(Presence::TargetOnly),
            1 => Just(Presence::BaseOnly),
            1 => Just(Presence::DtypeChanged),
            1 => Just(Presence::ShapeChanged)
        ],
        any::<u64>(),
    )
        .prop_map(|(d, shape, delta, presence, seed)| Spec {
            dtype: Dtype::ALL[d],
            shape,
            delta,
            presence,
            seed,
        })
}

fn mode() -> impl Strategy<Value = Option<BaseMode>> {
    prop_oneof![
        Just(None),
        Just(Some(BaseMode::Inline)),
        Just(Some(BaseMode::InlinePlain)),
        Just(Some(BaseMode::External)),
    ]
}

/// One changed element: XOR low bits, add a little, or anything.
fn change(rng: &mut Rng, e: &mut [u8]) {
    match rng.below(3) {
        0 => e[0] ^= 1 + rng.below(7) as u8,
        1 => {
            let mut carry = 1 + rng.below(5) as u16;
            for b in e.iter_mut() {
                let s = *b as u16 + carry;
                *b = s as u8;
                carry = s >> 8;
            }
        }
        _ => {
            for b in e.iter_mut() {
                *b = rng.next_u64() as u8;
            }
        }
    }
}

fn target_from(base: &[u8], w: usize, delta: Delta, rng: &mut Rng) -> Vec<u8> {
    let mut t = base.to_vec();
    for (i, e) in t.chunks_exact_mut(w).enumerate() {
        let p = match delta {
            Delta::Identical => 0,
            Delta::Sparse => 12,
            Delta::Dense => 100,
            // Runs of unchanged, sparse and fully changed elements.
            Delta::Mixed => [0, 10, 100][(i / 7) % 3],
            Delta::Unrelated => {
                for b in e.iter_mut() {
                    *b = rng.next_u64() as u8;
                }
                continue;
            }
        };
        if rng.below(100) < p {
            change(rng, e);
        }
    }
    t
}

fn elems(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

/// The target and base tensor lists for `specs`.
fn build(specs: &[Spec]) -> (Vec<TensorData>, Vec<TensorData>) {
    let (mut target, mut base) = (Vec::new(), Vec::new());
    for (i, s) in specs.iter().enumerate() {
        let mut rng = Rng(s.seed);
        let name = format!("t{i}");
        let w = s.dtype.width();
        let n = elems(&s.shape);
        let b = rng.bytes(n * w);
        let t = target_from(&b, w, s.delta, &mut rng);
        match s.presence {
            Presence::Both => {
                base.push((name.clone(), s.dtype, s.shape.clone(), b));
                target.push((name, s.dtype, s.shape.clone(), t));
            }
            Presence::TargetOnly => target.push((name, s.dtype, s.shape.clone(), t)),
            Presence::BaseOnly => base.push((name, s.dtype, s.shape.clone(), b)),
            Presence::DtypeChanged => {
                let other = Dtype::ALL[(Dtype::ALL.iter().position(|d| *d == s.dtype).unwrap()
                    + 1)
                    % Dtype::ALL.len()];
                let ob = rng.bytes(n * other.width());
                base.push((name.clone(), other, s.shape.clone(), ob));
                target.push((name, s.dtype, s.shape.clone(), t));
            }
            Presence::ShapeChanged => {
                let mut other = s.shape.clone();
                other.push(1);
                base.push((name.clone(), s.dtype, other, b));
                target.push((name, s.dtype, s.shape.clone(), t));
            }
        }
    }
    (target, base)
}

fn round_trip(specs: &[Spec], mode: Option<BaseMode>, chunk_elems: u64) {
    let (target, base) = build(specs);
    let dir = tempfile::tempdir().unwrap();
    let target_path = dir.path().join("target.safetensors");
    let target_bytes = safetensors_bytes(&target, None);
    std::fs::write(&target_path, &target_bytes).unwrap();
    let base_path = dir.path().join("base.safetensors");
    std::fs::write(&base_path, safetensors_bytes(&base, None)).unwrap();

    let t = Checkpoint::open(&target_path).unwrap();
    let b = mode.map(|_| Checkpoint::open(&base_path).unwrap());
    let archive = dir.path().join("a.tpde");
    let opts = PackOptions {
        write: WriteOptions::default().with_chunk_elems(chunk_elems),
        base_mode: mode.unwrap_or_default(),
    };
    pack(&t, b.as_ref(), &archive, &opts, &mut |_| {}).unwrap();

    let a = Archive::open(&archive).unwrap();
    let provider: &dyn BaseProvider = match (&b, mode) {
        (Some(b), Some(BaseMode::External)) => b,
        _ => &NoBase,
    };
    // Each tensor decodes to its bytes, against the base it should have.
    for (name, dtype, shape, data) in &target {
        assert_eq!(&a.decode_tensor(name, provider).unwrap(), data, "{name}");
        let i: usize = name[1..].parse().unwrap();
        let rec = &a.index().tensors[a.tensor_index(name).unwrap()];
        // A tensor is also stored against a base tensor of another name whose
        // bytes are identical (pack's rename detection; tiny tensors can collide).
        let renamed = base
            .iter()
            .any(|(_, d, s, b)| d == dtype && s == shape && b == data && !b.is_empty());
        let delta = mode.is_some() && (specs[i].presence == Presence::Both || renamed);
        match (&rec.base, delta, mode) {
            (BaseRef::None, false, _) => {}
            (BaseRef::Inline { .. }, true, Some(BaseMode::Inline | BaseMode::InlinePlain)) => {}
            (BaseRef::External { .. }, true, Some(BaseMode::External)) => {}
            // (v1.5) A tensor with no base of its own may take equal rows
            // of any base tensor (pack's sliced search: small random tensors
            // share rows by chance, e.g. zeros).
            (
                BaseRef::InlineSlices { .. },
                false,
                Some(BaseMode::Inline | BaseMode::InlinePlain),
            ) => {}
            (BaseRef::ExternalSlices { .. }, false, Some(BaseMode::External)) => {}
            (other, _, _) => panic!("{name}: base {other:?} with mode {mode:?}"),
        }
    }
    verify(&a, provider, Some(&t), &mut |_| {}).unwrap();
    let back = dir.path().join("back.safetensors");
    unpack(&a, provider, &back, &UnpackOptions::default(), &mut |_| {}).unwrap();
    assert!(
        std::fs::read(&back).unwrap() == target_bytes,
        "unpacked file differs from the target"
    );
}

proptest! {
    // Two cores: modest case counts, small tensors, small chunks.
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn pack_unpack_round_trips_byte_identically(
        specs in prop::collection::vec(spec(), 0..6),
        mode in mode(),
        chunk_elems in prop_oneof![Just(1u64), Just(3), Just(7), Just(16), Just(64), Just(1 << 20)],
    ) {
        round_trip(&specs, mode, chunk_elems);
    }
}

/// The edge cases proptest may not draw, every base mode, every dtype.
#[test]
fn every_dtype_empty_scalar_and_odd_shapes_round_trip() {
    let mut specs = Vec::new();
    for (i, d) in Dtype::ALL.into_iter().enumerate() {
        for (j, shape) in [vec![], vec![0], vec![3, 0], vec![5], vec![3, 7]]
            .into_iter()
            .enumerate()
        {
            specs.push(Spec {
                dtype: d,
                shape,
                delta: [Delta::Sparse, Delta::Dense, Delta::Mixed][(i + j) % 3],
                presence: Presence::Both,
                seed: (i * 10 + j) as u64,
            });
        }
    }
    for mode in [
        None,
        Some(BaseMode::Inline),
        Some(BaseMode::InlinePlain),
        Some(BaseMode::External),
    ] {
        round_trip(&specs, mode, 4);
    }
}
