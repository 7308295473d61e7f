"""Train a JEPA world model: ``python -m jepa_jax.train --config FILE[:preset] --workdir DIR``.

Any ``--config.a.b=value`` argument overrides the config. Running the same command on an
existing workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from jepa_jax import runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_jax.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, optionally :preset")
    parser.add_argument("--workdir", required=True, help="run directory (resumed if present)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args, overrides = parser.parse_known_args(argv)
    runtime.setup()
    from jepa_jax import configs
    from jepa_jax.training.loop import train_and_evaluate

    try:
        config = configs.load_config(args.config, overrides)
        if config.get("env", {}).get("name", "") == "mazes":  # H-JEPA, two stages
            from jepa_jax.hjepa_training import train_and_evaluate as train_hjepa

            final = train_hjepa(config, args.workdir, progress=not args.no_progress)
        else:
            final = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
    except (ValueError, RuntimeError) as e:  # one line, no traceback, for expected errors
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v:.4g}" for k, v in final.items()))
    print(f"probe R^2 = {final['probe_r2']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
