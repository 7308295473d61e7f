"""Peak f32 matmul FLOP/s of this machine, and the fraction of it that planning and
training reach; plan time against horizon and batch.

    python benchmarks/peak_flops.py [--preset default] [--matmul-size 2048] [--repeats 10]
        [--plan-batch 64] [--horizons 10,20,40,80] [--batches 1,4,16,64] [--smoke]

* peak: best of ``--repeats`` jitted ``(n, n) @ (n, n)`` f32 matmuls (2 n^3 FLOPs each);
* gradient planner hot loop: ``jit(vmap(plan))`` over ``--plan-batch`` problems at the
  config's gradient-planner settings (random-init model; speed does not depend on training);
* one training step: ``Experiment(config).update``, the jitted step the trainer runs;
* scaling: plan time (batch 1) over ``--horizons``, and over ``--batches`` at the config
  horizon.

FLOPs per call are the matmul and convolution FLOPs of the jaxpr with scan trip counts
(``flop_count.py``: XLA's ``cost_analysis`` counts a loop body once, so it is reported too,
as ``xla_cost_analysis_flops``, but not used for the rates). Times are the best of
``--repeats`` synced calls after compilation. Writes
``benchmarks/results/peak_flops.json`` (``--smoke``: small sizes, to the temp dir).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import flop_count  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def best_time(fn, args, repeats: int) -> float:
    """Best wall time of ``fn(*args)`` over ``repeats`` synced calls (after one warm-up)."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def measure(fn, args, repeats: int, peak: float | None = None) -> dict:
    """Compile time, FLOPs (jaxpr and XLA), best time and FLOP/s of ``fn(*args)``."""
    import jax

    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    flops, approx = flop_count.count_flops(fn, *args)
    try:
        xla = flop_count.xla_flops(compiled)
    except Exception as exc:  # noqa: BLE001 - backend-dependent
        xla = common.error_string(exc)
    seconds = best_time(compiled, args, repeats)
    out = {"compile_s": compile_s, "flops": flops, "flops_approximate": approx,
           "xla_cost_analysis_flops": xla, "best_s": seconds, "flops_per_s": flops / seconds}
    if peak:
        out["fraction_of_peak"] = out["flops_per_s"] / peak
    return out


def peak_matmul(n: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    seconds = best_time(jax.jit(jnp.matmul), (a, b), repeats)
    return {"n": n, "flops": 2 * n**3, "best_s": seconds, "flops_per_s": 2 * n**3 / seconds}


def planning_problems(config, batch: int, horizon: int | None = None):
    """(plan function of (params, obs, goal, keys, state), its arguments) for ``batch``
    problems; the predictor's zero-initialised last layer is randomised so that the
    gradients are not all zero."""
    import jax
    import jax.numpy as jnp

    from jepa_jax.cost import make_cost
    from jepa_jax.envs import two_rooms
    from jepa_jax.evaluation import make_episodes
    from jepa_jax.planning import make_planner
    from jepa_jax.training.loop import env_params_from_config
    from jepa_jax.world_model import make_world_model

    env = env_params_from_config(config.env)
    wm = make_world_model(config.model, (env.img_size, env.img_size, 2), action_dim=2)
    k_init, k_last, k_ep, k_plan = jax.random.split(jax.random.key(0), 4)
    params = wm.init(k_init)
    pred = params["predictor"]["params"]
    last = pred[f"Dense_{len(pred) - 1}"]
    last["kernel"] = 0.1 * jax.random.normal(k_last, last["kernel"].shape) / jnp.sqrt(
        last["kernel"].shape[0])
    pcfg = config.planning.gradient.to_dict()
    pcfg["action_bound"] = float(config.env.action_bound)
    if horizon is not None:
        pcfg["horizon"] = horizon
    planner = make_planner("gradient", wm, make_cost(config.planning.cost), pcfg)
    ep = make_episodes(k_ep, batch, env, config.planning.start_goal_margin)
    render = jax.vmap(lambda p, lay: two_rooms.render(
        two_rooms.make_state(p, lay[0], lay[1]), env))
    args = (params, render(ep.start, ep.layout), render(ep.goal, ep.layout),
            jax.random.split(k_plan, batch), planner.init_state(2, (batch,)))
    return jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0)), args


def training_step(config):
    """(the trainer's update function, (state, data))."""
    from jepa_jax.training.loop import Experiment

    exp = Experiment(config)
    # The un-jitted step: measure() jits it (no donation, so repeated calls may reuse state).
    return exp._update, (exp.init_state(), exp.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--plan-batch", type=int, default=64)
    parser.add_argument("--horizons", type=_ints, default=[10, 20, 40, 80])
    parser.add_argument("--batches", type=_ints, default=[1, 4, 16, 64])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny preset and small sizes, to check that the script works")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if args.smoke:
        args.preset, args.matmul_size, args.repeats, args.plan_batch = "tiny", 256, 2, 4
        args.horizons, args.batches = [4, 8], [1, 2]
    xla = common.setup_xla_flags()
    import jax

    config = common.load_config(args.preset)
    results = {"benchmark": "peak_flops", **common.metadata(args.preset, xla),
               "device": str(jax.devices()[0]),
               "flop_counting": "matmul and convolution FLOPs of the jaxpr, scan bodies x "
                                "their length; element-wise work excluded"}
    results["peak_matmul"] = peak_matmul(args.matmul_size, args.repeats)
    peak = results["peak_matmul"]["flops_per_s"]
    fn, fargs = planning_problems(config, args.plan_batch)
    results["gradient_planner"] = {"batch": args.plan_batch,
                                   **measure(fn, fargs, args.repeats, peak)}
    fn, fargs = training_step(config)
    results["training_step"] = {"batch_size": config.train.batch_size,
                                **measure(fn, fargs, args.repeats, peak)}
    results["plan_time_vs_horizon"] = [
        {"horizon": h, "batch": 1, **measure(*planning_problems(config, 1, h), args.repeats)}
        for h in args.horizons]
    results["plan_time_vs_batch"] = [
        {"horizon": config.planning.gradient.horizon, "batch": b,
         **measure(*planning_problems(config, b), args.repeats)}
        for b in args.batches]
    results["load_average_at_end"] = list(os.getloadavg())
    results["note"] = ("smoke run (small sizes); not a measurement" if args.smoke else
                       "check load_average: on a shared CPU the figures are lower bounds")
    path = Path(args.output) if args.output else common.default_output("peak_flops",
                                                                       args.smoke)
    common.write_results(path, results)
    rows = [("peak matmul", f"n={args.matmul_size}", f"{peak / 1e9:.1f}", "1.00")]
    for name, key in (("gradient planner", "gradient_planner"), ("training step",
                                                                 "training_step")):
        r = results[key]
        rows.append((name, f"{r['flops'] / 1e9:.2f} GFLOP", f"{r['flops_per_s'] / 1e9:.1f}",
                     f"{r['fraction_of_peak']:.2f}"))
    common.print_table(rows, ("what", "size", "GFLOP/s", "of peak"))
    for key, label in (("plan_time_vs_horizon", "horizon"), ("plan_time_vs_batch", "batch")):
        print(f"plan time vs {label}: " + ", ".join(
            f"{r[label]}: {1e3 * r['best_s']:.1f} ms" for r in results[key]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
