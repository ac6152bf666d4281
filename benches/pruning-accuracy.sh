#!/usr/bin/env bash
# Test accuracy of examples/digits_mlp.lop on ../shared/data/digits after
# pruning without retraining, one row per configuration (docs/pruning.md).
# Usage: bash benches/pruning-accuracy.sh [path/to/lopper]   (from the project root)
set -euo pipefail
LOPPER=${1:-target/release/lopper}
DATA=../shared/data/digits/digits.safetensors
MODEL=examples/digits_mlp.lop
row() {  # label, prune options ('' for none)
    local args=()
    [ -n "$2" ] && args=(--prune "$2")
    local acc
    acc=$("$LOPPER" eval "$MODEL" --data "$DATA" "${args[@]}" | sed -n 's/^accuracy: \([0-9.]*\).*/\1/p')
    local options='—'
    [ -n "$2" ] && options="\`$2\`"
    printf '| %s | %s | %s |\n' "$1" "$options" "$acc"
}
echo '| pruning | `--prune` | test accuracy |'
echo '|---|---|---:|'
row "none (dense)" ""
for s in 0.5 0.7 0.8 0.9 0.95; do row "magnitude, per layer, $s" "sparsity=$s"; done
for s in 0.5 0.7 0.8 0.9 0.95; do row "magnitude, global, $s" "sparsity=$s,scope=global"; done
for s in 0.5 0.7 0.8 0.9 0.95; do row "magnitude, per layer, $s, last layer kept" "sparsity=$s,exclude=[fc3.weight]"; done
row "2:4" "method=nm,n=2,m=4"
row "1:4" "method=nm,n=1,m=4"
row "block 4x4, 0.5" "method=block,block=4x4,sparsity=0.5"
row "block 4x4, 0.75" "method=block,block=4x4,sparsity=0.75"
row "structured (L1), 0.25" "method=structured,sparsity=0.25"
row "structured (L1), 0.5" "method=structured,sparsity=0.5"
row "structured (L2), 0.5" "method=structured,sparsity=0.5,norm=l2"
