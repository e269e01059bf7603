#!/bin/sh
# Regenerates the committed seed corpus under fuzz/seeds/ (deterministic:
# the writer's output does not depend on threads or time). The golden
# vectors in tests/vectors/v1/ are used as seeds directly by run.sh.
set -eu
cd "$(dirname "$0")"
cargo run --quiet --release --example make_seeds -- seeds
