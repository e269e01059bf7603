#!/usr/bin/env bash
# Session 8 (3): where the 16-thread decode time goes. The synthetic 832 MB
# bf16 model (format 1.7), decoded 3 times in one process per thread count
# (`--repeat 3`: passes 2-3 find the archive's and base's pages mapped), with
# the process's wall and CPU time around it.
set -uo pipefail
X=.gpu-carry; G=/tmp/s8c; rm -rf $G; mkdir -p $G
which perf || echo "no perf"
$X/tpde-gpu-bench gen --dir $G --layers 2 --planes zstd --modes inline --chunk-elems 1048576 > $G/gen.log 2>&1; tail -1 $G/gen.log
T=$G/synth/target.safetensors; B=$G/synth/base.safetensors
$X/tpde pack -q -t $T -b $B --external-base -o $G/s.tpde --force > /dev/null
for r in 1 2; do
  for th in 1 2 4 8 16; do
    /usr/bin/time -f "  process: %e s wall, %U+%S s CPU, %F major %R minor faults" \
      $X/tpde-bench child tpde-decode $G/s.tpde --base $B --threads $th --repeat 3 2>&1 | sed "s/^/threads=$th /"
  done
done | tee $OUT/phases.txt
