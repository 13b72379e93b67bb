"""Time srd-evaluate's generation metrics: N MP-20-sized crystals against the MP-20 test split.

    python benchmarks/bench_evaluate.py --n 500          # measure 500, extrapolate to 10,000
    python benchmarks/bench_evaluate.py                  # the full 10,000

The "generated" crystals are rows of data/mp_20/val.csv.gz (repeated when N exceeds its 9,047 rows),
written to a temporary CSV so that parsing is timed too. The reference is data/mp_20/test.csv.gz, the
complete MP-20 test split (9,046 rows, recovered; see data/README.md). The timing in docs/results.md was
measured before it was recovered, against the former partial test split (7,342 rows).
The reference is evaluated first with an empty cache (cold: what the first run on a new reference costs)
and then served from the cache (what every later run costs).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (the worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="number of generated crystals to evaluate")
    p.add_argument("--reference", default=str(ROOT / "data" / "mp_20" / "test.csv.gz"))
    p.add_argument("--source", default=str(ROOT / "data" / "mp_20" / "val.csv.gz"),
                   help="where the 'generated' crystals come from")  # fmt: skip
    p.add_argument("--reference-limit", type=int, default=None,
                   help="time only the first K reference crystals (cold) and scale to the full split")  # fmt: skip
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--target", type=int, default=10000, help="extrapolate the timings to this many crystals")
    p.add_argument("--cache-dir", default=None,
                   help="fingerprint cache to use (default: a fresh temporary one, so the reference is timed cold)")  # fmt: skip
    args = p.parse_args(argv)

    import pandas as pd

    from srd.metrics import evaluate_file, generation_metrics
    from srd.metrics.crystals import metrics_cache_dir

    with tempfile.TemporaryDirectory(prefix="srd-bench-") as tmp:
        os.environ["SRD_CACHE_DIR"] = args.cache_dir or str(Path(tmp) / "cache")
        src = pd.read_csv(args.source)
        reps = -(-args.n // len(src))
        gen_df = pd.concat([src] * reps, ignore_index=True).head(args.n)
        gen_df["material_id"] = [f"g{i}" for i in range(len(gen_df))]
        gen_csv = Path(tmp) / "generated.csv"
        gen_df.to_csv(gen_csv, index=False)
        ref_path = Path(args.reference)
        n_ref_total = len(pd.read_csv(ref_path))
        if args.reference_limit:
            ref_path = Path(tmp) / "reference.csv"
            pd.read_csv(args.reference).head(args.reference_limit).to_csv(ref_path, index=False)
        print(f"workers={args.workers} cpu_count={os.cpu_count()} load={os.getloadavg()}", flush=True)

        t0, c0 = time.perf_counter(), _cpu()
        ref = evaluate_file(ref_path, reference=True, workers=args.workers, show_progress=False)
        t_ref_cold, c_ref = time.perf_counter() - t0, _cpu() - c0
        if ref.source.get("cache_hit"):
            print(
                f"note: the reference came from the cache {metrics_cache_dir()}: the cold timing is not measured"
            )
        t0 = time.perf_counter()
        ref = evaluate_file(ref_path, reference=True, workers=args.workers, show_progress=False)
        t_ref_warm = time.perf_counter() - t0
        assert ref.source.get("cache_hit"), f"expected a cache hit in {metrics_cache_dir()}"

        t0, c0 = time.perf_counter(), _cpu()
        gen = evaluate_file(
            gen_csv, reference=False, workers=args.workers, use_cache=False, show_progress=False
        )
        t_gen, c_gen = time.perf_counter() - t0, _cpu() - c0
        t0, c0 = time.perf_counter(), _cpu()
        m = generation_metrics(gen, ref, dataset="mp_20", n_samples=1000, seeds=[0, 1, 2])
        t_metrics, c_metrics = time.perf_counter() - t0, _cpu() - c0

    n_ref = len(ref)
    scale_ref = n_ref_total / n_ref
    scale_gen = args.target / len(gen)
    print(f"reference: {n_ref} crystals, cold {t_ref_cold:.1f} s wall / {c_ref:.1f} CPU-s "
          f"({c_ref / n_ref * 1000:.1f} CPU-ms/crystal), from the cache {t_ref_warm:.2f} s")  # fmt: skip
    print(f"generated: {len(gen)} crystals, {t_gen:.1f} s wall / {c_gen:.1f} CPU-s ({c_gen / len(gen) * 1000:.1f} "
          f"CPU-ms/crystal), {m['validity']['n_valid']} valid")  # fmt: skip
    print(
        f"metrics (validity, 3 EMD draws, COV with 2 threshold sets): {t_metrics:.2f} s wall / {c_metrics:.2f} CPU-s"
    )
    print(f"table: {m['table']}")
    wall_warm = t_gen * scale_gen + t_metrics * scale_gen + t_ref_warm
    wall_cold = wall_warm + t_ref_cold * scale_ref
    cpu_warm = c_gen * scale_gen + c_metrics * scale_gen
    cpu_cold = cpu_warm + c_ref * scale_ref
    w = max(1, min(args.workers, os.cpu_count() or 1))
    print(
        f"extrapolated to {args.target} generated crystals vs the {n_ref_total}-row reference {args.reference}:"
    )
    print(
        f"  reference cached: {wall_warm:.0f} s wall as measured; {cpu_warm:.0f} CPU-s = {cpu_warm / w:.0f} s on {w} idle cores"
    )
    print(
        f"  reference cold:   {wall_cold:.0f} s wall as measured; {cpu_cold:.0f} CPU-s = {cpu_cold / w:.0f} s on {w} idle cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
