"""``python -m bench.front_profile DIR [--sort tottime|cumulative] [--top N]``: the merged profile."""

import argparse
import pstats
from pathlib import Path

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("directory", type=Path)
p.add_argument("--sort", default="tottime")
p.add_argument("--top", type=int, default=40)
args = p.parse_args()
files = sorted(str(f) for f in args.directory.glob("front-*.prof"))
if not files:
    raise SystemExit(f"no front-*.prof in {args.directory}")
stats = pstats.Stats(*files)
print(f"{len(files)} request threads, {stats.total_tt:.2f} s of profiled CPU")
stats.files = []  # one line per thread file says nothing
stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
