#!/usr/bin/env bash
# Whole-model latency of LeNet-300-100 (examples/mlp.lop) dense and pruned,
# batch 1 and 64, Cranelift and LLVM (when built with --features llvm):
# the median of the medians of `lopper bench` in interleaved rounds, and
# the fastest single call (docs/pruning.md).
# Usage: bash benches/pruning-models.sh [path/to/lopper] [rounds]   (from the project root)
set -euo pipefail
LOPPER=${1:-target/release/lopper}
ROUNDS=${2:-3}
CONFIGS=(
  "dense|"
  "magnitude 70%|sparsity=0.7"
  "magnitude 90%|sparsity=0.9"
  "magnitude 95%|sparsity=0.95"
  "2:4|method=nm,n=2,m=4"
  "block 4x4 75%|method=block,block=4x4,sparsity=0.75"
  "block 4x4 90%|method=block,block=4x4,sparsity=0.9"
  "structured 50%|method=structured,sparsity=0.5"
)
BACKENDS=(cranelift)
"$LOPPER" bench examples/mlp.lop --backend llvm --set batch=1 --iters 1 >/dev/null 2>&1 && BACKENDS+=(llvm)
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "| backend | batch | pruning | median | vs dense | fastest call | vs dense | kernels |"
echo "|---|---:|---|---:|---:|---:|---:|---|"
for backend in "${BACKENDS[@]}"; do
  for batch in 1 64; do
    # A sample lasts a few milliseconds: 3,000 calls of a batch of one
    # (pruned models take 3 µs), 300 of a batch of 64.
    iters=$(( batch == 1 ? 3000 : 300 ))
    declare -A samples=() bests=()
    for _ in $(seq "$ROUNDS"); do
      for c in "${CONFIGS[@]}"; do
        label=${c%%|*}; prune=${c#*|}
        args=(bench examples/mlp.lop --backend "$backend" --set "batch=$batch" --iters "$iters" --json)
        [ -n "$prune" ] && args+=(--prune "$prune")
        json=$("$LOPPER" "${args[@]}")
        t=$(echo "$json" | sed 's/.*"median_s": \([0-9.e-]*\).*/\1/')
        b=$(echo "$json" | sed 's/.*"min_s": \([0-9.e-]*\).*/\1/')
        samples[$label]="${samples[$label]:-} $t"
        bests[$label]="${bests[$label]:-} $b"
      done
    done
    dense=$(echo ${samples[dense]} | tr ' ' '\n' | median)
    dense_best=$(echo ${bests[dense]} | tr ' ' '\n' | sort -g | head -1)
    for c in "${CONFIGS[@]}"; do
      label=${c%%|*}; prune=${c#*|}
      m=$(echo ${samples[$label]} | tr ' ' '\n' | median)
      best=$(echo ${bests[$label]} | tr ' ' '\n' | sort -g | head -1)
      kernels=$("$LOPPER" bench examples/mlp.lop --backend "$backend" --set "batch=$batch" --iters 1 --warmup 0 \
          --remarks ${prune:+--prune "$prune"} 2>&1 >/dev/null \
        | sed -n 's/.*\[analyze-sparsity\] %\([^:]*\): density [^,]*, pattern [^,]*, kernel \([^ ]*\) .*/\1 \2/p' | tr '\n' ',' | sed 's/,$//')
      awk -v b="$backend" -v n="$batch" -v l="$label" -v m="$m" -v d="$dense" -v k="${kernels:-dense}" \
          -v x="$best" -v dx="$dense_best" \
        'BEGIN { printf "| %s | %d | %s | %.1f µs | %.2fx | %.1f µs | %.2fx | %s |\n", b, n, l, m*1e6, d/m, x*1e6, dx/x, k }'
    done
    unset samples bests
  done
done
