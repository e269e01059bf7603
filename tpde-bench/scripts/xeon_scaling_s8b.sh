#!/usr/bin/env bash
# Session 8 (2): the decode pipeline with several segments in flight
# (tpde-bench, new; run 3: 4 of 32 MiB, run 6: up to 16 of 8 MiB) against one
# at a time (tpde-bench-s8a, the build of xeon_scaling_s8.sh), same machine,
# same call, on the synthetic 832 MB bf16
# model: decode wall ms at 1..16 threads, best of 3, variants alternated; then
# pack CPU time on 1 thread, format 1.6 vs 1.7 (chunk digests), alternated.
set -uo pipefail
lscpu | grep -E "^CPU\(s\)|Thread|Core|Socket|Model name|L3"
X=.gpu-carry; G=/tmp/s8b; rm -rf $G; mkdir -p $G
$X/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
for f in 1.6 1.7; do $X/tpde pack -q -t $T -b $B --external-base -o $G/s$f.tpde --format $f --force > /dev/null; done
ls -l $G/s1.6.tpde $G/s1.7.tpde
for th in 1 2 4 8 16; do
  for v in "old:1.6-file tpde-bench-s8a s1.6 file" "old:1.7-parts tpde-bench-s8a s1.7 parts" \
           "new:1.6-file tpde-bench s1.6 file" "new:1.7-parts tpde-bench s1.7 parts"; do
    read -r label bin arch digests <<< "$v"
    best=999999
    for r in 1 2 3; do
      s=$(date +%s%N)
      $X/$bin child tpde-decode $G/$arch.tpde --base $B --threads $th --digests $digests > /dev/null || echo "FAIL $v"
      e=$(( ($(date +%s%N) - s) / 1000000 ))
      [ $e -lt $best ] && best=$e
    done
    echo "synth $label threads=$th best_ms=$best"
  done
done | tee $OUT/scaling_b.txt
for th in 1 16; do
  rm -f $G/out.safetensors
  /usr/bin/time -f "unpack synth 1.7 new threads=$th: %e s wall, %U+%S s CPU, %M KB RSS" \
    $X/tpde-bench child tpde-unpack $G/s1.7.tpde --base $B -o $G/out.safetensors --threads $th
  cmp $G/out.safetensors $T && echo identical
done 2>&1 | tee -a $OUT/scaling_b.txt
[ "${PACK:-1}" = 1 ] && for r in 1 2 3; do
  for f in 1.6 1.7; do
    /usr/bin/time -f "pack synth $f threads=1: %e s wall, %U+%S s CPU" \
      $X/tpde pack --threads 1 -q -t $T -b $B --external-base -o $G/p$f.tpde --format $f --force 2>&1 >/dev/null | tail -1
  done
done 2>&1 | tee -a $OUT/scaling_b.txt
