#!/usr/bin/env bash
# Session 7: device entropy decoding at the writer's default chunk sizes
# (2^17..2^20 elements per tensor), format 1.5 (4-state planes) vs 1.6
# (32-state), against the CPU path, same run. 4 Llama-shaped layers (~1.75 GB bf16).
set -uo pipefail
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
D=/tmp/tbd; rm -rf $D; mkdir -p $D
B=.gpu-carry/tpde-gpu-bench
$B gen --dir $D --layers ${LAYERS:-4} --planes zstd --modes inline --chunk-elems 1048576 > $OUT/gen.log 2>&1; tail -1 $OUT/gen.log
rm -f $D/synth/*.tpde
for f in 1.5 1.6; do
  .gpu-carry/tpde pack -q --base $D/synth/base.safetensors --target $D/synth/target.safetensors \
    --format $f -o $D/synth/inline-rans-cdefault-f${f/./}.tpde --force
done
ls -la $D/synth
t0=$(date +%s)
$B run --dir $D --reps ${REPS:-5} --configs ${CONFIGS:-default,gpuent4,gpuenthuge} > $OUT/bench.log 2>&1; echo "bench rc=$? in $(( $(date +%s) - t0 )) s"
grep -E "streams|^\| synth|areas" $OUT/bench.log | cut -c1-300 | head -60
