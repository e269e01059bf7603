#!/usr/bin/env bash
# GPU loading benchmark for tpde-gpu. Needs no cargo on the GPU machine:
# build the release binary where cargo is, carry it, run this there.
#
#   cargo build --release -p tpde-gpu --bin tpde-gpu-bench
#   mkdir -p .gpu-carry && cp target/release/tpde-gpu-bench .gpu-carry/ && strip .gpu-carry/tpde-gpu-bench
#   # optional: the real corpus pair as one archive (inline base), ~40 MB:
#   .gpu-carry/tpde-gpu-bench pack --base ../shared/corpus/ft/ftA.full.step0.bf16.safetensors \
#       --target ../shared/corpus/ft/ftA.full.step700.bf16.safetensors --out .gpu-carry/ft.tpde
#   # optional: the GPU parity tests, run first on the GPU machine:
#   cargo test --release -p tpde-gpu --test gpu_parity --no-run   # prints the binary's path
#   cp target/release/deps/gpu_parity-<hash> .gpu-carry/gpu_parity && strip .gpu-carry/gpu_parity
#   tpde-gpu/bench/run.sh            # on the GPU machine, from the repository root
#   # e.g. both plane coders in one call, well under 10 minutes:
#   LAYERS=8 REPS=5 CONFIGS=default,wide OUT=$OUT tpde-gpu/bench/run.sh
#
# Environment: BIN (the bench binary), CORPUS (corpus archive with its base
# inline, optional; its tensors are repacked with every coder), DATA
# (scratch directory for generated inputs, ~21 GB with both coders and both
# base modes), LAYERS (synthetic decoder layers, 8 = 3.5 GB of bf16 per
# checkpoint), REPS (timed runs per case, median reported), PLANES (plane
# coders to pack and compare, comma-separated: rans,zstd; the bench's own
# default is the library's, rans), MODES (inline base modes to pack:
# inline,plain), CONFIGS (pipeline configurations: default,wide,cpupos,gpuent),
# TESTS (a carried gpu_parity test binary to run first, optional; TESTS=
# skips it), CHUNKS (chunk sizes in elements, comma-separated: every size
# but the default 1048576 adds <mode>-rans-c<log2>.tpde archives, for the
# device entropy decoder's chunk-size trade-off), OUT (where logs go;
# defaults to the data directory).
set -uo pipefail

BIN=${BIN:-.gpu-carry/tpde-gpu-bench}
CORPUS=${CORPUS:-.gpu-carry/ft.tpde}
DATA=${DATA:-/tmp/tpde-gpu-bench}
LAYERS=${LAYERS:-8}
REPS=${REPS:-7}
PLANES=${PLANES:-rans,zstd}
MODES=${MODES:-inline,plain}
CONFIGS=${CONFIGS:-default,wide,cpupos}
CHUNKS=${CHUNKS:-1048576}
TESTS=${TESTS-.gpu-carry/gpu_parity}
LOG=${OUT:-$DATA}
mkdir -p "$DATA" "$LOG"

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | head -3
echo "cores: $(nproc), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(ldd --version | head -1)"
grep -m1 "model name" /proc/cpuinfo

# tpde-gpu loads libcuda and NVRTC at run time (cudarc, CUDA 12.0 API
# level: it looks for libnvrtc.so and libnvrtc.so.12). On a CUDA 13 machine
# NVRTC is libnvrtc.so.13: point an unversioned name at it.
libdirs=""
for d in /usr/local/nvidia/lib64 /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
  [ -d "$d" ] || continue
  for f in $(find "$d" -maxdepth 4 -name 'libnvrtc.so*' ! -name '*builtins*' ! -name '*alt*' ! -path '*stubs*' 2>/dev/null | sort); do
    libdirs="$libdirs:$(dirname "$f")"
  done
done
if ! ls $(echo "$libdirs" | tr ':' ' ') 2>/dev/null | grep -qx 'libnvrtc.so'; then
  real=$(for d in $(echo "$libdirs" | tr ':' ' '); do ls "$d"/libnvrtc.so.* 2>/dev/null; done | grep -v builtins | grep -v alt | sort | tail -1)
  if [ -n "$real" ]; then
    mkdir -p /tmp/tpde-nvrtc && ln -sf "$real" /tmp/tpde-nvrtc/libnvrtc.so
    libdirs="/tmp/tpde-nvrtc$libdirs"
    echo "NVRTC: $real (via /tmp/tpde-nvrtc/libnvrtc.so)"
  else
    echo "NVRTC: not found"
  fi
fi
# cudarc also asks for "libcuda.so" before "libcuda.so.1"; on some images
# that name is only the toolkit's stub. Point it at the real driver.
drv=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -z "$drv" ] && drv=$(ls /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null | head -1)
if [ -n "$drv" ]; then
  mkdir -p /tmp/tpde-nvrtc && ln -sf "$(readlink -f "$drv")" /tmp/tpde-nvrtc/libcuda.so
  echo "driver: $(readlink -f "$drv")"
  case "$libdirs" in /tmp/tpde-nvrtc*) ;; *) libdirs="/tmp/tpde-nvrtc$libdirs" ;; esac
fi
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

if [ -n "$TESTS" ] && [ -x "$TESTS" ]; then
  echo "== GPU parity tests"
  "$TESTS" --test-threads=1 2>&1 | tee "$LOG/gpu_parity.log" | grep -E "^test |test result|skipped|panicked|device:" | head -40
fi

echo "== inputs"
t0=$(date +%s)
rm -f "$DATA"/synth/*.tpde "$DATA"/corpus/*.tpde
gen_args=(gen --dir "$DATA" --layers "$LAYERS" --planes "$PLANES" --modes "$MODES" --chunk-elems "$CHUNKS")
[ -f "$CORPUS" ] && gen_args+=(--corpus "$CORPUS")
"$BIN" "${gen_args[@]}" 2>&1 | tee "$LOG/gen.log" || exit 1
echo "inputs ready in $(( $(date +%s) - t0 )) s"

echo "== bench"
"$BIN" run --dir "$DATA" --reps "$REPS" --configs "$CONFIGS" 2>&1 | tee "$LOG/bench.log"
