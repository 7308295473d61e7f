"""Speed of one training step in float32 vs bfloat16 compute (``model.compute_dtype``).

    python benchmarks/precision.py [--preset default] [--seconds 20] [--smoke]

Builds ``Experiment(config).update`` twice, once per compute dtype (parameters are float32
in both), checks that the two losses on the first batch agree to bf16 rounding, then times
interleaved windows of steps (round-robin, so a changing load hits both alike) and reports
the median frames/s of each. Writes ``benchmarks/results/precision.json`` (``--smoke``:
the tiny preset with short windows, to the temp dir). On CPUs without native bf16 matmuls
XLA emulates them, so bf16 is usually slower there; the option is for GPUs and TPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NUM_WINDOWS = 5
DTYPES = ("float32", "bfloat16")


def _setup(preset: str, dtype: str):
    """(run, sync, facts) for one compute dtype: the jitted step, compiled and warmed up."""
    import jax

    from jepa_jax import configs
    from jepa_jax.training.loop import Experiment

    config = configs.load_config(f"{common.CONFIG_FILE}:{preset}",
                                 [f"--config.model.compute_dtype={dtype}"])
    exp = Experiment(config)
    data = jax.block_until_ready(exp.data)
    state = exp.init_state()
    compiled, compile_s = common.timed(lambda: exp.update.lower(state, data).compile(),
                                       lambda _: None)
    holder = {"state": state}
    first_loss = None

    def run():
        holder["state"], aux = compiled(holder["state"], data)
        return aux

    for _ in range(2):  # warm-up
        aux = jax.block_until_ready(run())
        first_loss = float(aux["loss"]) if first_loss is None else first_loss
    frames = config.train.batch_size * config.data.length
    facts = {"compile_s": compile_s, "first_loss": first_loss, "frames_per_step": frames}
    return run, jax.block_until_ready, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per dtype")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, short windows")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    preset = "tiny" if args.smoke else args.preset
    seconds = 1.0 if args.smoke else args.seconds
    xla = common.setup_xla_flags()
    import jax

    results = {"benchmark": "precision", **common.metadata(preset, xla)}
    runners, facts = {}, {}
    for dtype in DTYPES:
        run, sync, facts[dtype] = _setup(preset, dtype)
        runners[dtype] = (run, sync)
    rates = common.interleaved_windows(runners, seconds / NUM_WINDOWS, NUM_WINDOWS)
    for dtype in DTYPES:
        steps_per_s = statistics.median(rates[dtype])
        facts[dtype].update(steps_per_s=steps_per_s, window_steps_per_s=rates[dtype],
                            frames_per_s=steps_per_s * facts[dtype]["frames_per_step"])
    loss32, loss16 = facts["float32"]["first_loss"], facts["bfloat16"]["first_loss"]
    results.update(
        device=str(jax.devices()[0]),
        dtypes=facts,
        bf16_speedup=facts["bfloat16"]["steps_per_s"] / facts["float32"]["steps_per_s"],
        first_loss_rel_diff=abs(loss16 - loss32) / max(abs(loss32), 1e-12),
        load_average_at_end=list(os.getloadavg()),
        note=("measured on a shared 2-core CPU while other timing-sensitive jobs ran "
              "(contention); rerun on a quiet machine for reference figures"),
    )
    path = Path(args.output) if args.output else common.default_output("precision", args.smoke)
    common.write_results(path, results)
    common.print_table(
        [(d, f"{facts[d]['steps_per_s']:.2f}", f"{facts[d]['frames_per_s']:.0f}",
          f"{facts[d]['compile_s']:.1f}") for d in DTYPES],
        ("compute dtype", "steps/s", "frames/s", "compile s"))
    print(f"bf16 / f32 speed: {results['bf16_speedup']:.2f}; first-step loss relative "
          f"difference {results['first_loss_rel_diff']:.1e}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
