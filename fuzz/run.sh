#!/usr/bin/env bash
# Runs lopper's fuzz targets with libFuzzer (cargo fuzz, nightly toolchain).
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 600 s each, every target
# fuzz/corpus/<target>/ is the corpus (committed minimized, after
# `cargo fuzz cmin`); new inputs go there too. fuzz/seeds/<target>/ holds the
# hand-picked seeds; crashes go to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(dsl gir lir safetensors onnx)
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    max_len=4096
    case $t in onnx|safetensors) max_len=65536 ;; esac
    echo "== $t: $seconds s"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
done
