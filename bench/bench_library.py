"""Library build throughput on this machine: molecules a second, features only and with ``--simulate``.

    python bench/bench_library.py [--features 512] [--simulate 16] [--out out/bench-library.json]

Builds libraries of the first molecules of the training catalogue into a temporary folder with
:func:`raypipe.pipelines.library.build_library` on a local Ray (every CPU of the machine): ``--features``
molecules with features only (shards of 64), then ``--simulate`` molecules with their simulations and
depictions (shards of 4, so that every CPU has shards). Reports molecules a second of each build (Ray's start
included, as a user sees it), the cache's bytes per molecule, and what a library of 100,000 molecules would
take at these rates. Prints one JSON report and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CATALOG = Path(__file__).resolve().parents[1] / "raypipe" / "chem" / "data" / "training_molecules.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--simulate", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("out/bench-library.json"))
    args = parser.parse_args()

    import ray

    from raypipe.pipelines.library import build_library

    report: dict = {"cpus": os.cpu_count(), "catalogue": CATALOG.name}
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, shard, simulate in (("features", args.features, 64, False),
                                         ("simulate", args.simulate, 4, True)):
            if n <= 0:
                continue
            out = Path(tmp) / name
            summary = build_library(str(CATALOG), str(out), simulate=simulate, shard_size=shard, limit=n,
                                    progress=lambda _: None)
            cache = sum(p.stat().st_size for p in (out / "cache").rglob("*") if p.is_file()) if simulate else 0
            rate = summary.molecules_per_second
            report[name] = {"molecules": summary.rows, "refused": summary.rejects, "seconds": round(summary.seconds, 1),
                            "molecules_per_s": round(rate, 2),
                            "hours_for_100k": round(100_000 / rate / 3600, 1) if rate else None,
                            **({"cache_kb_per_molecule": round(cache / 1024 / max(summary.rows, 1), 1)}
                               if simulate else {})}
            print(name, json.dumps(report[name]), flush=True)
    if ray.is_initialized():
        ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
