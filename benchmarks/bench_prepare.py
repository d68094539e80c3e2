"""Benchmark: `prepare` on the real IMDB archive and GloVe file into a fresh temp cache.

Prints wall-clock seconds of a cold prepare and of the cached re-run, peak resident memory
(ru_maxrss), the prepared statistics, the machine and the git commit.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_prepare.py [--data DIR] [--glove FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qrnn.sentiment.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--glove", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qrnn-bench-") as cache:
        t0 = time.perf_counter()
        p = prepare(args.data, args.glove, Path(cache), limit=args.limit, progress=False, download=False)
        cold = time.perf_counter() - t0
        peak = peak_rss_mib()
        t0 = time.perf_counter()
        again = prepare(args.data, args.glove, Path(cache), limit=args.limit, progress=False, download=False)
        warm = time.perf_counter() - t0
        assert again.reused and again.dir == p.dir

    m = p.meta
    print(f"machine  {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"{os.cpu_count()} CPUs | Python {platform.python_version()}")
    print(f"commit   {commit()}")
    print(f"inputs   {m['imdb_source']} + {m['glove_path']} (limit={args.limit})")
    print()
    print(f"{'step':<22}{'seconds':>10}{'peak RSS MiB':>15}")
    print(f"{'prepare (cold)':<22}{cold:>10.2f}{peak:>15.0f}")
    print(f"{'prepare (cached)':<22}{warm:>10.2f}{'':>15}")
    print(f"{'ratio cold/cached':<22}{cold / warm:>10.1f}")
    print()
    print(f"vocab {m['vocab_size']:,} (GloVe {m['glove_types']:,}, random {m['random_types']:,}); "
          f"unknown types {m['unk_types']:,} of {m['train_types']:,}")
    print(f"GloVe coverage: train tokens {m['train_glove_token_coverage']:.2%}, types "
          f"{m['train_glove_type_coverage']:.2%}, test tokens {m['test_glove_token_coverage']:.2%}; "
          f"unknown-token rate train {m['train_unk_token_rate']:.2%}, test {m['test_unk_token_rate']:.2%}")


if __name__ == "__main__":
    main()
