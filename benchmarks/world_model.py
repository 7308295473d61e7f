"""Core targets: train the default Two-Rooms world model and the tiny preset, time them, and
record the diagnostics against the targets.

    python benchmarks/world_model.py [--preset default] [--workdir runs/bench_default]

Writes ``benchmarks/results/world_model_<preset>.json``. Training resumes if the workdir
exists, so use a fresh workdir for timing (the script refuses an existing one unless
``--reuse``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"default": {"train_seconds": ("<=", 600), "probe_r2": (">=", 0.99),
                       "rollout_px_h16": ("<=", 2.0), "wall_violation_rate": ("<=", 0.05)},
           "tiny": {"total_seconds": ("<=", 60)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import jax

    from jepa_jax import configs
    from jepa_jax.training import loop

    workdir = Path(args.workdir or f"runs/bench_{args.preset}")
    if workdir.exists():
        if not args.reuse:
            shutil.rmtree(workdir)
    t0 = time.perf_counter()
    config = configs.load_config(f"{ROOT}/experiments/two_rooms.py:{args.preset}")
    final = loop.train_and_evaluate(config, workdir, progress=False)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    # Joint-phase windows only (they carry train/loss), skipping the first (compilation).
    fps = [r["train/frames_per_s"] for r in rows if "train/loss" in r][1:]
    result = {
        "preset": args.preset, "total_seconds": total,
        "train_seconds": total,  # includes data generation, compilation and evaluations
        "joint_phase_frames_per_s_median": sorted(fps)[len(fps) // 2] if fps else None,
        **final,
        "jax": jax.__version__, "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    checks = {}
    for key, (op, bound) in TARGETS.get(args.preset, {}).items():
        value = result[key]
        checks[key] = {"value": value, "target": f"{op} {bound}",
                       "met": value <= bound if op == "<=" else value >= bound}
    result["targets"] = checks
    out = ROOT / "benchmarks" / "results" / f"world_model_{args.preset}.json"
    out.write_text(json.dumps(result, indent=2))
    for key, c in checks.items():
        print(f"{key:>22}: {c['value']:.4g} (target {c['target']}) "
              f"{'met' if c['met'] else 'NOT met'}")
    print(f"joint-phase training frames/s (median of logged windows): "
          f"{result['joint_phase_frames_per_s_median']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
