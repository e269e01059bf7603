#!/usr/bin/env bash
# Session 8 (4): the pipeline's depth and window, same call: tpde-bench
# (4 segments of up to 32 MiB), -d8w16 (8 of 16 MiB), -d16w8 (16 of 8 MiB),
# each built from the same commit with only those two constants changed.
# Synthetic 832 MB bf16 model, format 1.7, decode passes at 1..16 threads
# (--repeat 3, best pass), variants alternated, twice.
set -uo pipefail
X=.gpu-carry; G=/tmp/s8d; rm -rf $G; mkdir -p $G
$X/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
$X/tpde pack -q -t $T -b $B --external-base -o $G/s.tpde --force > /dev/null
for r in 1 2; do
  for th in 1 4 8 16; do
    for v in tpde-bench tpde-bench-d8w16 tpde-bench-d16w8; do
      p=$($X/$v child tpde-decode $G/s.tpde --base $B --threads $th --repeat 3 | sed 's/.*passes_ms":\[\(.*\)\]}/\1/')
      best=$(echo $p | tr ',' '\n' | sort -n | head -1)
      echo "$v threads=$th passes=[$p] best=$best"
    done
  done
done | tee $OUT/depth.txt
