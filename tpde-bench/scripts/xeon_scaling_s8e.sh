#!/usr/bin/env bash
# Session 8 (5): chunk digests checked two chunks at a time with interleaved
# SHA-256 streams (tpde-bench) against one at a time (tpde-bench-single, the
# build before), same call. Synthetic 832 MB bf16 model, format 1.7, decode
# passes (--repeat 3, best), variants alternated, two rounds; then the final
# build's scaling table.
set -uo pipefail
X=.gpu-carry; G=/tmp/s8e; rm -rf $G; mkdir -p $G
$X/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
$X/tpde pack -q -t $T -b $B --external-base -o $G/s.tpde --force > /dev/null
for r in 1 2; do
  for th in 1 2 4 8 16; do
    for v in tpde-bench-single tpde-bench; do
      p=$($X/$v child tpde-decode $G/s.tpde --base $B --threads $th --repeat 3 | sed 's/.*passes_ms":\[\(.*\)\]}/\1/')
      best=$(echo $p | tr ',' '\n' | sort -n | head -1)
      echo "$v threads=$th passes=[$p] best=$best"
    done
  done
done | tee $OUT/pairs.txt
