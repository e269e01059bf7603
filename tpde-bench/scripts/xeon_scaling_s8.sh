#!/usr/bin/env bash
# Session 8: format 1.6 vs 1.7 (chunk digests) on the GPU host's 16 Xeon
# cores. gpu_parity first (1.7 archives through the device), then for the ft
# pair and a synthetic 832 MB bf16 model: pack both formats (wall and CPU),
# and decode wall time at 1..16 threads (tpde-bench child tpde-decode), best
# of 3, alternating the variants within each thread count:
#   1.6 file  = a 1.6 archive, the file's SHA-256 (unpack's policy before 1.7)
#   1.6 parts = a 1.6 archive, tensor digests where decoded (no chunk digests)
#   1.7 parts = a 1.7 archive, chunk digests (unpack's policy now)
#   1.7 all   = a 1.7 archive, every digest (what verify checks)
# then `tpde unpack` of the synthetic model at 1 and 16 threads, 1.6 vs 1.7.
# Runs from the repo root on the GPU machine with release binaries in
# .gpu-carry/ (git-ignored) and ft.tpde beside them; results go to $OUT.
set -uo pipefail
nproc; grep -m1 "model name" /proc/cpuinfo; grep -o -m1 'sha_ni' /proc/cpuinfo; df -h /tmp | tail -1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if [ "${PARITY:-1}" = 1 ]; then
  echo "== gpu_parity"
  .gpu-carry/gpu_parity --test-threads 1 > $OUT/gpu_parity.log 2>&1; echo "rc=$?"
  grep -E "test result" $OUT/gpu_parity.log | tail -3
fi
D=/tmp/s8; rm -rf $D; mkdir -p $D
X=.gpu-carry
scale() { # label archive base
  for th in 1 2 4 8 16; do
    for v in "$@"; do
      read -r label archive base digests <<< "$v"
      best=999999
      for r in 1 2 3; do
        s=$(date +%s%N)
        $X/tpde-bench child tpde-decode $archive --base $base --threads $th --digests $digests > /dev/null || echo "FAIL $v"
        e=$(( ($(date +%s%N) - s) / 1000000 ))
        [ $e -lt $best ] && best=$e
      done
      echo "$label threads=$th best_ms=$best"
    done
  done
}
$X/tpde-gpu-bench gen --dir $D --small --corpus $X/ft.tpde --planes rans --modes inline > $D/gen.log 2>&1; tail -1 $D/gen.log
T=$D/corpus/target.safetensors; B=$D/corpus/base.safetensors
ls -l $T
for f in 1.6 1.7; do
  /usr/bin/time -f "pack ft $f: %e s wall, %U+%S s CPU" $X/tpde pack -q -t $T -b $B --external-base -o $D/ft$f.tpde --format $f --force
done
ls -l $D/ft1.6.tpde $D/ft1.7.tpde
scale "ft:1.6-file $D/ft1.6.tpde $B file" "ft:1.6-parts $D/ft1.6.tpde $B parts" \
      "ft:1.7-parts $D/ft1.7.tpde $B parts" "ft:1.7-all $D/ft1.7.tpde $B all" | tee $OUT/scaling.txt
G=$D/g; mkdir -p $G
$X/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
ls -l $T
for f in 1.6 1.7; do
  /usr/bin/time -f "pack synth $f: %e s wall, %U+%S s CPU" $X/tpde pack -q -t $T -b $B --external-base -o $G/s$f.tpde --format $f --force
done
ls -l $G/s1.6.tpde $G/s1.7.tpde
scale "synth:1.6-file $G/s1.6.tpde $B file" "synth:1.6-parts $G/s1.6.tpde $B parts" \
      "synth:1.7-parts $G/s1.7.tpde $B parts" "synth:1.7-all $G/s1.7.tpde $B all" | tee -a $OUT/scaling.txt
for th in 1 16; do
  for f in 1.6 1.7; do
    rm -f $G/out.safetensors
    /usr/bin/time -f "unpack synth $f threads=$th: %e s wall, %U+%S s CPU" \
      $X/tpde-bench child tpde-unpack $G/s$f.tpde --base $B -o $G/out.safetensors --threads $th
    cmp $G/out.safetensors $T && echo "identical"
  done
done 2>&1 | tee -a $OUT/scaling.txt
