#!/usr/bin/env bash
# Format 1.5 (4-state rANS planes) vs 1.6 (32-state planes, where the writer uses them) on the
# same pairs: archive sizes, then decode CPU time of the two archives alternated
# (tpde-bench child tpde-decode, 1 thread; N runs each). Session 7, BENCHMARKS.md.
# Needs: cargo build --release -p tpde-cli -p tpde-bench; bash ../shared/corpus/fetch.sh target/corpus
set -u
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
R=$ROOT/target/release
C=$ROOT/target/corpus/st
F=$ROOT/../shared/corpus/ft
D=${D:-/tmp/ab}; mkdir -p $D
N=${N:-7}
pairs=(
 "ft $F/ftA.full.step700.bf16.safetensors $F/ftA.full.step0.bf16.safetensors"
 "ftpart $F/ftA.partial.step700.bf16.safetensors $F/ftA.full.step0.bf16.safetensors"
 "bf16 $C/minilm6.fp32.safetensors $C/minilm6.bf16.safetensors"
 "fp16 $C/minilm6.fp32.safetensors $C/minilm6.fp16.safetensors"
 "int8 $C/minilm6.fp32.safetensors $C/minilm6.int8native.safetensors"
 "alone $C/minilm6.fp32.safetensors -"
 "silero $C/silero.16k.fp32.safetensors $C/silero.v62.fp32.safetensors"
)
for p in "${pairs[@]}"; do
  set -- $p; name=$1 t=$2 b=$3
  for f in 1.5 1.6; do
    out=$D/$name.$f.tpde
    if [ "$b" = - ]; then $R/tpde pack -q -t $t -o $out --format $f --force >/dev/null
    else $R/tpde pack -q -t $t -b $b --external-base -o $out --format $f --force >/dev/null; fi
  done
  s5=$(stat -c %s $D/$name.1.5.tpde); s6=$(stat -c %s $D/$name.1.6.tpde)
  echo "size $name: 1.5 $s5  1.6 $s6  diff $((s6-s5)) ($(python3 -c "print(f'{($s6-$s5)/$s5*100:+.3f}%')"))"
done
for p in "${pairs[@]}"; do
  set -- $p; name=$1 t=$2 b=$3
  ba=""; [ "$b" = - ] || ba="--base $b"
  r5=(); r6=()
  for i in $(seq $N); do
    for f in 1.5 1.6; do
      x=$( { /usr/bin/time -f "%U %S" $R/tpde-bench child tpde-decode $D/$name.$f.tpde $ba --threads 1 >/dev/null; } 2>&1 | tail -1 | awk '{printf "%.0f", ($1+$2)*1000}')
      if [ $f = 1.5 ]; then r5+=($x); else r6+=($x); fi
    done
  done
  m5=$(printf "%s\n" "${r5[@]}" | sort -n | head -1); d5=$(printf "%s\n" "${r5[@]}" | sort -n | sed -n "$(( (N+1)/2 ))p")
  m6=$(printf "%s\n" "${r6[@]}" | sort -n | head -1); d6=$(printf "%s\n" "${r6[@]}" | sort -n | sed -n "$(( (N+1)/2 ))p")
  echo "decode $name: 1.5 min/med $m5/$d5 ms  1.6 $m6/$d6 ms   all: ${r5[*]} | ${r6[*]}"
done
