#!/usr/bin/env bash
# lopper and its peers (ONNX Runtime, tuned TVM, NumPy/OpenBLAS) measured in
# one sitting, single-threaded and pinned to CPU 0, as docs/performance.md
# reports them. Needs the peers' virtual environment (see
# ../shared/peers/README.md):
#   python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install -r ../shared/peers/requirements.txt
# Run from the repository root: bash benches/peers.sh
set -euo pipefail
PEERS=${PEERS:-/tmp/peers}
PY=${PY:-/tmp/peers-venv/bin/python}
[ -d "$PEERS" ] || cp -r ../shared/peers "$PEERS"
run1() { env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TVM_NUM_THREADS=1 taskset -c 0 "$@"; }

cargo build --release --quiet
cargo bench --bench compare --no-run --quiet 2>/dev/null
echo "== lopper against matrixmultiply, and the models (-O2)"
run1 cargo bench --quiet --bench compare 2>/dev/null
if command -v llvm-config-19 >/dev/null; then
  echo "== lopper with LLVM (--features llvm)"
  cargo build --release --quiet --features llvm
  LOPPER_BACKEND=llvm run1 cargo bench --quiet --features llvm --bench compare 2>/dev/null
  echo "== compile time of lenet5 at -O2 with LLVM"
  target/release/lopper compile examples/lenet5.lop --backend llvm -o /tmp/lopper-bench/liblenet5.so --time-passes 2>&1 | tail -4
fi
echo "== -O0 against -O2"
for level in 0 2; do
  run1 target/release/lopper bench benches/models/gemm_512.lop -O$level --iters 5 --warmup 1 | head -2
  run1 target/release/lopper bench examples/lenet5.lop --set batch=64 -O$level --iters 20 --warmup 2 | head -2
done
echo "== compile time of lenet5 at -O2"
target/release/lopper compile examples/lenet5.lop -o /tmp/lopper-bench/liblenet5.so --time-passes 2>&1 | tail -4
echo "== peers: ORT (iobinding), tuned TVM, NumPy interleaved"
(cd "$PEERS" && run1 "$PY" headtohead.py)
echo "== peers: ORT session.run and iobinding, NumPy GEMM"
(cd "$PEERS" && run1 "$PY" bench.py ort --threads 1 && run1 "$PY" bench.py numpy --threads 1)
