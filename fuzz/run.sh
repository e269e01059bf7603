#!/bin/sh
# Runs every fuzz target for SECONDS each (default 60), one after another.
#
#   fuzz/run.sh [SECONDS]              short run (CI: fuzz/run.sh 60)
#   nice -n 10 fuzz/run.sh 1800        long run (the numbers in FUZZING.md)
#
# Needs the nightly toolchain; installs cargo-fuzz if it is missing. Each
# target's corpus grows in fuzz/corpus/<target>/ (git-ignored), seeded from
# fuzz/seeds/<target>/ (fuzz/make_seeds.sh; gpu_reference uses open_decode's)
# and, for the archive targets, the golden vectors in tests/vectors/v1/.
# libFuzzer prints its execution count at the end of each target
# ("stat::number_of_executed_units").
#
# A finding stops the run with a non-zero exit status and leaves the input
# in fuzz/artifacts/<target>/. Minimize it, fix the bug, and commit the
# minimized input as fuzz/regressions/<target>/<what-it-broke> so that
# `cargo test -p tpde-tests --test fuzz_regressions` replays it on stable:
#   cargo +nightly fuzz tmin <target> fuzz/artifacts/<target>/<file>
set -eu
cd "$(dirname "$0")"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build
for t in open_decode roundtrip equivalence rans_plane gpu_reference; do
    mkdir -p "corpus/$t"
    # gpu_reference takes open_decode's input (raw archive bytes) and seeds.
    seeds="seeds/$t"
    if [ "$t" = gpu_reference ]; then
        seeds=seeds/open_decode
    fi
    set -- "corpus/$t" "$seeds"
    if { [ "$t" = open_decode ] || [ "$t" = equivalence ] || [ "$t" = gpu_reference ]; } \
        && [ -d ../tests/vectors/v1 ]; then
        set -- "$@" ../tests/vectors/v1
    fi
    echo "== fuzz target $t: $secs s"
    cargo +nightly fuzz run "$t" "$@" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1
done
