#!/usr/bin/env bash
# Session 7: (optional) gpu_parity on the final code, then the ft pair on the
# host's 16 Xeon cores: format 1.5 vs 1.6 archives, decode wall time at 1..16
# threads (tpde-bench child tpde-decode), alternated, best of 3; then the same
# for a synthetic 832 MB bf16 model. Runs on the GPU machine from the repo root,
# with release builds of tpde, tpde-bench, tpde-gpu-bench and the gpu_parity test
# binary copied into .gpu-carry/ (git-ignored) beside ft.tpde (an archive of the
# ft step0 -> full.step700 pair, from which `tpde-gpu-bench gen --corpus`
# rebuilds the safetensors); results go to $OUT (the device tool's folder).
set -uo pipefail
nproc; grep -m1 "model name" /proc/cpuinfo; grep -o -m1 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if [ "${PARITY:-1}" = 1 ]; then
  echo "== gpu_parity"
  .gpu-carry/gpu_parity --test-threads 1 > $OUT/gpu_parity.log 2>&1; echo "rc=$?"
  grep -E "^test |test result" $OUT/gpu_parity.log | tail -20
fi
D=/tmp/s7; rm -rf $D; mkdir -p $D
.gpu-carry/tpde-gpu-bench gen --dir $D --small --corpus .gpu-carry/ft.tpde --planes rans --modes inline > $D/gen.log 2>&1; tail -1 $D/gen.log
T=$D/corpus/target.safetensors; B=$D/corpus/base.safetensors
sha256sum $T $B
for f in 1.5 1.6; do
  /usr/bin/time -f "pack $f: %e s wall, %U+%S s CPU" .gpu-carry/tpde pack -q -t $T -b $B --external-base -o $D/ft$f.tpde --format $f --force
done
ls -l $D/ft1.5.tpde $D/ft1.6.tpde
for th in 1 2 4 8 16; do
  for f in 1.5 1.6; do
    best=999999
    for r in 1 2 3; do
      s=$(date +%s%N)
      .gpu-carry/tpde-bench child tpde-decode $D/ft$f.tpde --base $B --threads $th > /dev/null
      e=$(( ($(date +%s%N) - s) / 1000000 ))
      [ $e -lt $best ] && best=$e
    done
    echo "decode threads=$th format=$f best_ms=$best"
  done
done | tee $OUT/scaling.txt
# A larger model: the bench's synthetic bf16 layers (2 Llama-3-8B-shaped layers, ~0.87 GB).
G=$D/g; mkdir -p $G
.gpu-carry/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
ls -l $T $B
for f in 1.5 1.6; do
  /usr/bin/time -f "pack synth $f: %e s wall, %U+%S s CPU" .gpu-carry/tpde pack -q -t $T -b $B --external-base -o $G/s$f.tpde --format $f --force
done
ls -l $G/s1.5.tpde $G/s1.6.tpde
for th in 1 2 4 8 16; do
  for f in 1.5 1.6; do
    best=999999
    for r in 1 2 3; do
      s=$(date +%s%N)
      .gpu-carry/tpde-bench child tpde-decode $G/s$f.tpde --base $B --threads $th > /dev/null
      e=$(( ($(date +%s%N) - s) / 1000000 ))
      [ $e -lt $best ] && best=$e
    done
    echo "synth decode threads=$th format=$f best_ms=$best"
  done
done | tee -a $OUT/scaling.txt
