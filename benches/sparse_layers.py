#!/usr/bin/env python3
"""Sparse kernels against dense, one layer at a time, and the cost model's pick.

For each layer configuration (a layer of LeNet-300-100 pruned one way, a
batch size, a backend) it times the layer with every kernel format forced
(`--sparse dense|csr|bsr|nm|sell`) and with the cost model's own choice
(`--sparse auto`, which `lopper bench` tunes for the bound batch), in
interleaved rounds, and prints the median of the rounds' medians (and the
fastest single call, in parentheses), the fastest format by median and
whether the cost model picked it (a match within 5% of the fastest median:
the host is shared, and its load comes and goes). The last line also counts
the matches by the fastest single calls, which the neighbour's load moves
far less than the medians. The tables of
docs/pruning.md come from this script.

Usage (from the project root, after `cargo build --release [--features llvm]`):
    python3 benches/sparse_layers.py [--lopper target/release/lopper]
        [--backends cranelift,llvm] [--rounds 3] [--iters 300]
Standard library only.
"""
import argparse
import json
import re
import statistics
import subprocess

CONFIGS = [
    ("fc1", "sparsity=0.5"),
    ("fc1", "sparsity=0.7"),
    ("fc1", "sparsity=0.8"),
    ("fc1", "sparsity=0.9"),
    ("fc1", "sparsity=0.95"),
    ("fc1", "method=nm,n=2,m=4"),
    ("fc1", "method=block,block=4x4,sparsity=0.75"),
    ("fc1", "method=block,block=4x4,sparsity=0.9"),
    ("fc2", "sparsity=0.7"),
    ("fc2", "sparsity=0.9"),
]
FORMATS = ["dense", "csr", "bsr", "nm", "sell"]


def bench(lopper, layer, prune, batch, backend, sparse, iters):
    """(median, min) seconds per call and the cost model's choice (None when
    the format does not apply, such as N:M on unstructured weights)."""
    cmd = [lopper, "bench", f"benches/models/{layer}.lop", "--set", f"batch={batch}",
           "--backend", backend, "--prune", prune, "--sparse", sparse,
           "--iters", str(iters), "--json", "--remarks"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None, None
    latency = json.loads(p.stdout)["latency"]
    seconds = (latency["median_s"], latency["min_s"])
    choice = re.search(r"\[analyze-sparsity\] %w: density [^,]*, pattern [^,]*, kernel (\S+)", p.stderr)
    return seconds, choice.group(1) if choice else "dense"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lopper", default="target/release/lopper")
    ap.add_argument("--backends", default="cranelift,llvm")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    print("µs per call: median (fastest call)\n")
    print("| backend | batch | layer | pruning | dense | CSR | BSR 4x4 | N:M | SELL | fastest | cost model | match |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---|")
    matches = matches_best = total = 0
    for backend in args.backends.split(","):
        for batch in [int(b) for b in args.batches.split(",")]:
            for layer, prune in CONFIGS:
                times = {f: [] for f in FORMATS + ["auto"]}
                picked = None
                for _ in range(args.rounds):
                    for f in FORMATS + ["auto"]:
                        t, choice = bench(args.lopper, layer, prune, batch, backend, f, args.iters)
                        if t is not None:
                            times[f].append(t)
                        if f == "auto":
                            picked = choice
                med = {f: statistics.median(t[0] for t in v) for f, v in times.items() if v}
                best = {f: min(t[1] for t in v) for f, v in times.items() if v}
                fastest = min((f for f in FORMATS if f in med), key=lambda f: med[f])
                family = ("bsr" if picked.startswith("bsr") else "sell" if picked.startswith("sell")
                          else {"csr": "csr", "dense": "dense"}.get(picked, "nm"))
                ok = family == fastest or med.get(family, 1e9) <= 1.05 * med[fastest]
                matches += ok
                # The same test on the fastest single calls, which a busy
                # neighbour on the shared host disturbs far less.
                quickest = min((f for f in FORMATS if f in best), key=lambda f: best[f])
                matches_best += family == quickest or best.get(family, 1e9) <= 1.05 * best[quickest]
                total += 1
                cell = lambda f: f"{med[f] * 1e6:.1f} ({best[f] * 1e6:.1f})" if f in med else "n/a"
                print(f"| {backend} | {batch} | {layer} | `{prune}` | {cell('dense')} | {cell('csr')} | "
                      f"{cell('bsr')} | {cell('nm')} | {cell('sell')} | {fastest} | {picked} | {'yes' if ok else 'no'} |",
                      flush=True)
    print(f"\ncost model matches the fastest kernel (within 5%) in {matches} of {total} configurations"
          f" by median, in {matches_best} of {total} by fastest call")


if __name__ == "__main__":
    main()
