"""Planning speed, JAX vs PyTorch: gradient MPC plans per second on the Two-Rooms model.

    python benchmarks/planning_speed.py [--preset default] [--seconds 10] [--smoke]
        [--batch 64] [--reference both|single|none] [--torch-threads 2] [--no-compile]

Plans/s of one ``plan`` call (encode start and goal, optimise, final rollout) for a single
problem and for a batch of 64 problems, at the config's ``planning`` settings:

* JAX gradient MPC: ``make_planner("gradient", wm, make_cost(config.planning.cost), ...)``,
  jitted (single) and ``jit(vmap(plan))`` (batch);
* the PyTorch twin (``benchmarks/torch_twins.GradientPlanner``: same rollout, cost, restarts,
  Adam and projection), eager and ``torch.compile``; its batch is a leading problem axis;
* JAX CEM and MPPI at their config settings, for reference;
* JAX gradient MPC with the batch split over ``--cpu-devices`` CPU devices
  (``make_sharded_plan``; ``--xla_force_host_platform_device_count``, so in a subprocess,
  timed after the others, not interleaved): on a CPU, one device per core runs the
  problems of each core without the per-op thread hand-offs of one device on two threads.

World-model parameters are a random init (with a small random last predictor layer, which
is zero at init, so that the gradients are not all zero); speed does not depend on training.
Before timing, the twin is checked against JAX: costs of the same action sequences, and a
whole plan with a single restart (deterministic: restart 0 is the warm start). Each figure
is the median of 3 timed windows (``--seconds`` split between them) after compilation,
interleaved round-robin across the variants; every call is synced and chains its warm
start from the previous call, as in MPC.
Writes ``benchmarks/results/planning_speed.json`` and prints a table. ``--smoke``: the tiny
preset with 1 s windows.

Cost at the default config on a 2-core CPU: a batched JAX CEM or MPPI call is ~7 TFLOP (about
40 s), and ``torch.compile`` of the twin's iteration (the 40-step rollout and its backward,
unrolled) takes minutes per problem shape; ``--reference single`` and ``--no-compile``
shorten a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NUM_WINDOWS = 3


def _setup(config, batch: int):
    import jax
    import jax.numpy as jnp

    from jepa_jax.envs import two_rooms
    from jepa_jax.evaluation import make_episodes
    from jepa_jax.training.loop import env_params_from_config
    from jepa_jax.world_model import make_world_model

    env = env_params_from_config(config.env)
    obs_shape = (env.img_size, env.img_size, 2)
    wm = make_world_model(config.model, obs_shape, action_dim=2)
    k_init, k_last, k_ep = jax.random.split(jax.random.key(0), 3)
    params = wm.init(k_init)
    pred = params["predictor"]["params"]
    last = f"Dense_{len(pred) - 1}"
    kernel = pred[last]["kernel"]
    pred[last]["kernel"] = 0.1 * jax.random.normal(k_last, kernel.shape) / jnp.sqrt(
        kernel.shape[0])
    ep = make_episodes(k_ep, batch, env, config.planning.start_goal_margin)

    def render(pos, layout):
        return two_rooms.render(two_rooms.make_state(pos, layout[0], layout[1]), env)

    obs = jax.vmap(render)(ep.start, ep.layout)
    goal = jax.vmap(render)(ep.goal, ep.layout)
    return wm, params, obs, goal


def _shift(config) -> int:
    """Warm-start shift as ``jepa_jax.planning_eval.build_planner`` sets it."""
    return int(config.planning.get("replan_every", 1))


def _jax_planner(name, wm, config, overrides=None):
    from jepa_jax.cost import make_cost
    from jepa_jax.planning import make_planner

    pcfg = config.planning[name].to_dict()
    pcfg["action_bound"] = float(config.env.action_bound)
    pcfg["shift"] = _shift(config)
    pcfg.update(overrides or {})
    return make_planner(name, wm, make_cost(config.planning.cost), pcfg)


def _jax_runner(planner, params, obs, goal, batched: bool) -> tuple[dict, tuple, int]:
    """Compiles ``plan`` (vmapped when batched) and runs it once; returns (results so far,
    (run, sync), problems per call)."""
    import jax

    n = obs.shape[0] if batched else 1
    if batched:
        fn = jax.jit(jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0)))
        state = planner.init_state(action_dim=2, batch_shape=(n,))
        o, g = obs, goal
    else:
        fn = jax.jit(planner.plan)
        state = planner.init_state(action_dim=2)
        o, g = obs[0], goal[0]
    keys = _call_keys(n if batched else None)
    compiled, compile_s = common.timed(
        lambda: fn.lower(params, o, g, keys[0], state).compile(), lambda _: None)
    run = _chained(compiled, params, o, g, keys, state)
    _, first = common.timed(run, jax.block_until_ready)
    return {"compile_s": compile_s, "first_call_s": first}, (run, jax.block_until_ready), n


def _call_keys(batch: int | None):
    """1000 planner keys, one per timed call: (1000,) or, for a batch, (1000, batch)."""
    import jax

    keys = jax.random.split(jax.random.key(1), 1000)
    return keys if batch is None else jax.vmap(lambda k: jax.random.split(k, batch))(keys)


def _chained(plan, params, obs, goal, keys, state):
    """``run()``: the next ``plan`` call, warm-started from the previous call's plan as in
    MPC, with the next key."""
    holder = {"state": state, "i": 0}

    def run():
        holder["i"] += 1
        actions, info = plan(params, obs, goal, keys[holder["i"] % len(keys)], holder["state"])
        holder["state"] = info["state"]
        return actions

    return run


def _torch_inputs(config, params, obs, goal):
    import jax
    import numpy as np
    import torch
    import torch_twins as tt

    enc, pred, _, _, _ = tt.build_world_model(config.model, tuple(obs.shape[1:]), 2)
    tt.load_jax_params((enc, pred, None), jax.device_get(params))
    to_t = lambda x: torch.from_numpy(np.array(x))
    return enc, pred, to_t(obs), to_t(goal)


def _torch_runner(planner, obs, goal, n: int, horizon: int) -> tuple[dict, tuple, int]:
    """Runs the twin's ``plan`` twice (compilation, if any); returns (results so far,
    (run, sync), problems per call)."""
    import torch

    holder = {"state": torch.zeros(n, horizon, 2)}
    gen = torch.Generator().manual_seed(0)

    def run():
        actions, info = planner.plan(obs[:n], goal[:n], holder["state"], generator=gen)
        holder["state"] = info["state"]
        return actions

    def sync(_):
        return None  # torch on the CPU is synchronous

    _, first = common.timed(run, sync)
    _, second = common.timed(run, sync)
    return {"first_call_s": first, "second_call_s": second}, (run, sync), n


def _parity(config, wm, params, obs, goal, enc, pred, obs_t, goal_t) -> dict:
    """Costs of the same actions, and a one-restart plan, JAX vs twin."""
    import jax
    import ml_collections
    import numpy as np
    import torch
    import torch_twins as tt

    from jepa_jax.cost import make_cost
    from jepa_jax.planning import rollout

    g = config.planning.gradient
    bound = float(config.env.action_bound)
    cost_fn = make_cost(config.planning.cost)
    u = tt.clip_by_norm(torch.randn(1, g.num_restarts, g.horizon, 2) * 1.5, bound)

    @jax.jit
    def jax_costs(u):
        s0, gl = wm.encode(params, obs[0]), wm.encode(params, goal[0])
        return jax.vmap(lambda a: cost_fn(rollout(wm, params, s0, a), a, gl))(u)

    cj = np.asarray(jax_costs(u[0].numpy()))
    twin = tt.GradientPlanner(enc, pred, config.planning, bound, shift=_shift(config))
    with torch.no_grad():
        ct = twin.costs(u, twin.encoder(obs_t[:1]), twin.encoder(goal_t[:1]))[0].numpy()
    one = ml_collections.ConfigDict(config.planning.to_dict())
    one.gradient.num_restarts = 1
    jp = _jax_planner("gradient", wm, config, {"num_restarts": 1})
    a_j, info_j = jax.jit(jp.plan)(params, obs[0], goal[0], jax.random.key(0),
                                   jp.init_state(action_dim=2))
    tp = tt.GradientPlanner(enc, pred, one, bound, shift=_shift(config))
    a_t, info_t = tp.plan(obs_t[:1], goal_t[:1], torch.zeros(1, g.horizon, 2))
    fj, ft = float(info_j["final_cost"]), float(info_t["final_cost"][0])
    return {"cost_max_rel_diff": float(np.max(np.abs(ct - cj) / np.maximum(np.abs(cj), 1e-6))),
            "one_restart_plan": {
                "jax_final_cost": fj, "torch_final_cost": ft,
                "final_cost_rel_diff": abs(ft - fj) / max(abs(fj), 1e-6),
                "actions_max_abs_diff": float(np.max(np.abs(a_t[0].numpy() - np.asarray(a_j)))),
                "cost_first_iter": float(info_j["cost_per_iter"][0])}}


def _sharded_child(config, batch: int, window_s: float) -> dict:
    """Gradient MPC on ``batch`` problems split over every (CPU) device with
    ``make_sharded_plan``; run in a subprocess whose XLA_FLAGS set the device count."""
    import jax

    from jepa_jax import parallel
    from jepa_jax.planning import make_sharded_plan

    wm, params, obs, goal = _setup(config, batch)
    planner = _jax_planner("gradient", wm, config)
    mesh = parallel.make_mesh(parallel.parallel_config(config))  # every device on "data"
    run = _chained(make_sharded_plan(planner, mesh), params, obs, goal, _call_keys(batch),
                   planner.init_state(action_dim=2, batch_shape=(batch,)))
    _, compile_s = common.timed(run, jax.block_until_ready)  # compiles, and runs once
    _, first = common.timed(run, jax.block_until_ready)
    rates = common.interleaved_windows({"sharded": (run, jax.block_until_ready)}, window_s,
                                       NUM_WINDOWS)["sharded"]
    rate = statistics.median(rates)
    return {"devices": len(jax.devices()), "compile_s": compile_s - first,
            "first_call_s": first, "plans_per_s": rate * batch, "ms_per_call": 1e3 / rate,
            "window_plans_per_s": [r * batch for r in rates]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="timed seconds per measurement (split into 3 windows)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny preset, 1 s windows; checks that the script works")
    parser.add_argument("--batch", type=int, default=64, help="problems per batched call")
    parser.add_argument("--reference", choices=("both", "single", "none"), default="both",
                        help="JAX CEM and MPPI: single and batched calls, single only, or "
                             "skipped (at the default config a batched CEM or MPPI call is "
                             "~7 TFLOP, about a minute on a 2-core CPU)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--cpu-devices", type=int, default=os.cpu_count() or 1,
                        help="CPU devices for the sharded batch (0: skip it)")
    parser.add_argument("--sharded-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None,
                        help="results file (default benchmarks/results/planning_speed.json; "
                             "with --smoke a file in the temp dir)")
    args = parser.parse_args(argv)
    preset = "tiny" if args.smoke else args.preset
    window_s = 1.0 if args.smoke else args.seconds / NUM_WINDOWS
    if args.cpu_devices < 0 or (args.cpu_devices and args.batch % args.cpu_devices):
        parser.error(f"--cpu-devices must be 0 or divide --batch {args.batch}, got "
                     f"{args.cpu_devices}")

    xla = common.setup_xla_flags()
    config = common.load_config(preset)
    if args.sharded_child:
        print(json.dumps(_sharded_child(config, args.batch, window_s)))
        return 0
    common.fresh_torch_compile_cache()  # cold torch.compile times, like JAX's
    import torch
    import torch_twins as tt

    torch.set_num_threads(args.torch_threads)
    wm, params, obs, goal = _setup(config, args.batch)
    enc, pred, obs_t, goal_t = _torch_inputs(config, params, obs, goal)
    g = config.planning.gradient
    results = {"benchmark": "planning_speed", **common.metadata(preset, xla),
               "batch_problems": args.batch, "window_s": window_s, "num_windows": NUM_WINDOWS,
               "gradient": g.to_dict(), "cost": config.planning.cost.to_dict(),
               "cem": config.planning.cem.to_dict(), "mppi": config.planning.mppi.to_dict(),
               "action_bound": float(config.env.action_bound),
               "torch_thread_probe": common.torch_thread_probe()}
    results["parity"] = _parity(config, wm, params, obs, goal, enc, pred, obs_t, goal_t)

    # Build and compile everything first, then time all variants in interleaved windows.
    setups, runners, sizes, errors = {}, {}, {}, {}
    reference = {"both": ("single", "batch"), "single": ("single",), "none": ()}[args.reference]
    for name in ("gradient", "cem", "mppi"):
        planner = _jax_planner(name, wm, config)
        for kind in ("single", "batch") if name == "gradient" else reference:
            batched = kind == "batch"
            key = (f"jax_{name}", kind)
            setups[key], runners[key], sizes[key] = _jax_runner(planner, params, obs, goal,
                                                                batched)
    variants = [("torch_eager", False)] + ([] if args.no_compile else [("torch_compile", True)])
    for label, compile_ in variants:
        for kind, n in (("single", 1), ("batch", args.batch)):
            try:
                twin = tt.GradientPlanner(enc, pred, config.planning,
                                          float(config.env.action_bound),
                                          shift=_shift(config), compile=compile_)
                key = (label, kind)
                setups[key], runners[key], sizes[key] = _torch_runner(twin, obs_t, goal_t, n,
                                                                      g.horizon)
            except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                errors[(label, kind)] = common.error_string(exc)
    rates = common.interleaved_windows(runners, window_s, NUM_WINDOWS)
    for (label, kind), res in setups.items():
        rate, n = statistics.median(rates[(label, kind)]), sizes[(label, kind)]
        res.update(plans_per_s=rate * n, ms_per_call=1e3 / rate,
                   window_plans_per_s=[r * n for r in rates[(label, kind)]])
        if label == "torch_compile":  # the first two calls, less two steady-state calls
            res["compile_s"] = res["first_call_s"] + res["second_call_s"] - 2 / rate
        results.setdefault(label, {})[kind] = res
    for (label, kind), err in errors.items():
        results.setdefault(label, {})[kind] = {"error": err}

    rows = []
    for label in ("jax_gradient", "torch_eager", "torch_compile", "jax_cem", "jax_mppi"):
        if label not in results:
            continue
        res = results[label]
        cells = [res[k].get("plans_per_s", "error") if k in res else "-"
                 for k in ("single", "batch")]
        comp = [res[k].get("compile_s") for k in ("single", "batch") if k in res]
        name = label.replace("_", " ") + (" gradient" if label.startswith("torch") else "")
        rows.append((name, *cells, sum(comp) if None not in comp else "-"))

    results["torch_thread_probe_end"] = common.torch_thread_probe()
    if args.cpu_devices > 0 and results["jax_backend"] == "cpu":
        flags = (f"{xla['XLA_FLAGS']} "
                 f"--xla_force_host_platform_device_count={args.cpu_devices}").strip()
        sub_args = ["--sharded-child", "--preset", preset, "--batch", str(args.batch),
                    "--seconds", str(1.0 if args.smoke else args.seconds)]
        results["jax_gradient_sharded"] = {
            "cpu_devices": args.cpu_devices, "xla_flags": flags,
            **common.run_json_subprocess(Path(__file__), sub_args, flags, timeout=600)}
        sharded = results["jax_gradient_sharded"].get("plans_per_s")
        rows.append((f"jax gradient, batch on {args.cpu_devices} CPU devices", "-",
                     sharded if sharded is not None else "error",
                     results["jax_gradient_sharded"].get("compile_s", "-")))
    jg = results["jax_gradient"]
    sharded = results.get("jax_gradient_sharded", {}).get("plans_per_s")
    ratios = {}
    for label in ("torch_eager", "torch_compile"):
        for kind in ("single", "batch"):
            r = results.get(label, {}).get(kind, {})
            if "plans_per_s" in r:
                ratios[f"jax_over_{label}_{kind}"] = jg[kind]["plans_per_s"] / r["plans_per_s"]
        r = results.get(label, {}).get("batch", {})
        if "plans_per_s" in r and sharded is not None:
            ratios[f"jax_sharded_over_{label}_batch"] = sharded / r["plans_per_s"]
    results["ratios"] = ratios
    path = common.write_results(args.output or common.default_output("planning_speed",
                                                                     args.smoke), results)
    par = results["parity"]
    print(f"preset={preset} gradient H={g.horizon} iters={g.num_iters} "
          f"restarts={g.num_restarts}; parity: cost rel diff {par['cost_max_rel_diff']:.1e}, "
          f"1-restart plan cost rel diff {par['one_restart_plan']['final_cost_rel_diff']:.1e}")
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)
    common.print_table([tuple(fmt(v) for v in r) for r in rows],
                       ("planner", "plans/s single", f"plans/s batch {args.batch}",
                        "compile s"))
    common.print_report_tail(ratios, results,
                             max(par["cost_max_rel_diff"],
                                 par["one_restart_plan"]["final_cost_rel_diff"]),
                             "planning cost", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
