#!/usr/bin/env bash
# tpde's main job, end to end, on the real example pair shipped in the repo
# (examples/silero-vad: base v6.2 -> a later 16 kHz export, see PROVENANCE.md):
# build the release binary, pack the target as a delta against the base,
# inspect the archive, verify it, unpack it, and show that the unpacked file
# has the same sha256 as the original.
#
# Outputs go to target/demo/ (recreated on every run). Run from anywhere:
#   bash examples/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tpde-cli
tpde=target/release/tpde
ex=examples/silero-vad
out=target/demo
rm -rf "$out"
mkdir -p "$out"

run() {
    printf '\n$ %s\n' "$*"
    "$@"
}

run "$tpde" pack --target "$ex/v6.2-16k.safetensors" --base "$ex/v6.2.safetensors" \
    --external-base -o "$out/v6.2-16k.tpde"
run "$tpde" inspect "$out/v6.2-16k.tpde"
run "$tpde" verify "$out/v6.2-16k.tpde" --base "$ex/v6.2.safetensors" \
    --against "$ex/v6.2-16k.safetensors"
run "$tpde" unpack "$out/v6.2-16k.tpde" --base "$ex/v6.2.safetensors" \
    -o "$out/v6.2-16k.safetensors"
run sha256sum "$ex/v6.2-16k.safetensors" "$out/v6.2-16k.safetensors"

original=$(sha256sum <"$ex/v6.2-16k.safetensors" | cut -d' ' -f1)
unpacked=$(sha256sum <"$out/v6.2-16k.safetensors" | cut -d' ' -f1)
if [ "$original" = "$unpacked" ]; then
    printf '\nbyte-identical: the unpacked file has the original sha256 %s\n' "$original"
else
    printf '\nMISMATCH: original %s, unpacked %s\n' "$original" "$unpacked" >&2
    exit 1
fi
