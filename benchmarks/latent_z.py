"""Latent variable z on Windy Two-Rooms: does z model the world's randomness, and does planning
that samples it do better than planning with a deterministic model?

    python benchmarks/latent_z.py [--world bridge|two_doors] [--workdir-z runs/windy_z]
                                  [--workdir-det runs/windy_det] [--episodes 100]
                                  [--plans det,z_select] [--batch-size 20]

Trains (or resumes, or reuses) two models on the same data with the same schedule:
``experiments/stochastic_rooms.py`` (z_dim 2) and its ``deterministic`` preset (z_dim 0),
or, with ``--world two_doors``, its ``two_doors`` and ``two_doors_deterministic`` presets
(a calm door beside the bridge, and a stronger wind).
Then measures, on held-out Windy Two-Rooms data and in closed loop:

(a) prediction: one-step and 8-step position error (through a linear probe fitted on each
    model's own latents) of the deterministic model, and best-of-K of the z model over K
    futures drawn from z's prior, overall and for transitions on the windy bridge; whether
    z copies the next state: R^2 of probes from z alone (the posterior's mean) to the next
    position, against a probe from the current latent;
(b) planning: success over ``--episodes`` closed-loop episodes (PLDM's protocol) of the
    gradient planner on each model, and how many episodes ended in a pit;
plus a PNG of sampled futures from one state (true world, z model, deterministic model).

The planning evaluations print a line per batch of ``--batch-size`` episodes and, killed,
resume from the workdir's ``eval_gradient.partial.npz`` (``python -m jepa_jax.evaluate``'s
file, which they share; they also write its ``eval_gradient.json``).

Writes ``benchmarks/results/latent_z.json`` and ``latent_z.png`` (``--world two_doors``:
``latent_z_two_doors.json`` and ``latent_z_two_doors.png``; ``--seed N``: ``_seedN``
added to the stem).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "stochastic_rooms.py"
RESULTS = ROOT / "benchmarks" / "results"
# --world: (z preset, deterministic preset, results file stem)
WORLDS = {"bridge": ("default", "deterministic", "latent_z"),
          "two_doors": ("two_doors", "two_doors_deterministic", "latent_z_two_doors")}

# Planner variants: (workdir key, overrides). "det" and "z_select" are the comparison of
# issue #4: the same search (8 restarts and 16 detour variants of the plan, see
# planning/gradient.py), the z model's choice made on 64 fresh futures, and the experiment's
# cost (squared goal distance plus the bounded reach cost). The "_squared" variants plan with
# the squared goal distance alone (sessions 5-9); "_plain" / "z_mean" variants also leave
# out the detour variants and the fresh futures (the planner of session 5). Each names its
# cost, so a workdir trained with another stored cost is evaluated the same way.
_SEARCH = ["--config.planning.gradient.num_perturbations=16"]
_PLAIN = ["--config.planning.gradient.num_perturbations=0",
          "--config.planning.gradient.select_samples=0"]


def _experiment_reach_cost() -> list[str]:
    """The experiment's reach_* cost weights as overrides, read from its config (no copy)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stochastic_rooms", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cost = module.get_config().planning.cost
    return [f"--config.planning.cost.{k}={v}" for k, v in cost.items() if k.startswith("reach_")]


_REACH = _experiment_reach_cost()
_SQUARED = ["--config.planning.cost.reach_weight=0.0"]
_SELECT = ["--config.planning.gradient.select_samples=64"]
PLANS = {
    "det": ("det", _SEARCH + _REACH),
    "z_select": ("z", _SEARCH + _SELECT + _REACH + ["--config.planning.gradient.risk=mean"]),
    "det_squared": ("det", _SEARCH + _SQUARED),
    "z_select_squared": ("z", _SEARCH + _SELECT + _SQUARED
                         + ["--config.planning.gradient.risk=mean"]),
    "det_plain": ("det", _SQUARED + ["--config.planning.gradient.num_perturbations=0"]),
    "det_64_restarts": ("det", _SQUARED + ["--config.planning.gradient.num_restarts=64"]),
    "z_select_cvar": ("z", _SEARCH + _SELECT + _SQUARED
                      + ["--config.planning.gradient.risk=cvar"]),
    # Gradient steps on the mean, the final choice on the value at risk (the 16th worst of
    # 64 futures): a plan that only its lucky futures carry through does not win.
    "z_select_var": ("z", _SEARCH + _SELECT + _SQUARED
                     + ["--config.planning.gradient.risk=mean",
                        "--config.planning.gradient.select_risk=var",
                        "--config.planning.gradient.cvar_alpha=0.25"]),
    "z_mean": ("z", _PLAIN + _SQUARED + ["--config.planning.gradient.risk=mean"]),
    "z_cvar": ("z", _PLAIN + _SQUARED + ["--config.planning.gradient.risk=cvar"]),
    "z_worst": ("z", _PLAIN + _SQUARED + ["--config.planning.gradient.risk=worst"]),
    "z_k1": ("z", _PLAIN + _SQUARED + ["--config.planning.gradient.z_samples=1"]),
}


def train(preset: str, workdir: Path, seed: int | None = None) -> dict:
    """Trains (or resumes) ``preset`` (with ``config.seed = seed`` unless None) in
    ``workdir``; returns timing (from this call, or the one stored by the call that trained
    it). A workdir that holds another preset or seed is refused."""
    from jepa_jax import configs
    from jepa_jax.training import loop

    overrides = [] if seed is None else [f"--config.seed={seed}"]
    config = configs.load_config(f"{CONFIG}:{preset}", overrides)
    stored = workdir / "config.json"
    if stored.exists():
        old = json.loads(stored.read_text())
        if (old.get("preset"), old.get("seed")) != (config.preset, config.seed):
            raise SystemExit(f"error: {workdir} holds preset {old.get('preset')!r} seed "
                             f"{old.get('seed')}, not {config.preset!r} seed {config.seed}")
    timing_file = workdir / "bench_timing.json"
    if (workdir / "final_metrics.json").exists():  # trained already: no new timing
        if timing_file.exists():
            return json.loads(timing_file.read_text())
        return {"train_seconds": None, "preset": preset,
                "note": "trained before this script ran (no timing recorded)"}
    t0 = time.perf_counter()
    loop.train_and_evaluate(config, workdir, progress=False)
    timing = {"train_seconds": time.perf_counter() - t0, "preset": preset,
              "note": "wall time of data generation, both phases, compilation and diagnostics"}
    timing_file.write_text(json.dumps(timing, indent=2))
    return timing


def _probe_fit(x, y, ridge=1e-4):
    from jepa_jax.diagnostics import fit_linear_probe

    return fit_linear_probe(x, y, ridge)


def _r2(pred, target):
    from jepa_jax.diagnostics import r2_score

    return r2_score(pred, target)


def _knn_r2(x_train, y_train, x_test, y_test, k=16):
    """R^2 of a k-nearest-neighbour regressor (a nonlinear probe) from x to y."""
    import numpy as np

    preds = []
    for i in range(0, len(x_test), 500):
        d = ((x_test[i:i + 500, None, :] - x_train[None]) ** 2).sum(-1)
        idx = np.argpartition(d, k, axis=1)[:, :k]
        preds.append(y_train[idx].mean(1))
    return _r2(np.concatenate(preds), y_test)


def prediction_metrics(exp_z, params_z, exp_d, params_d, num=1500, length=9, k=16,
                       seed=777) -> dict:
    """(a): best-of-K vs deterministic prediction error, and the z-copy probes."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jepa_jax.data import offline
    from jepa_jax.diagnostics import _encode_frames
    from jepa_jax.envs import windy_rooms

    env = exp_z.env
    policy = exp_z.policy
    k_fit, k_test, k_z = jax.random.split(jax.random.key(seed), 3)
    fit = offline.generate(k_fit, num, length, env, policy)
    test = offline.generate(k_test, num, length, env, policy)
    pos = np.asarray(test.pos)  # (N, T, 2)
    wall_x = np.asarray(test.layout[:, 0])[:, None]
    on_bridge = np.asarray(windy_rooms.in_wind(jnp.asarray(pos), jnp.asarray(wall_x), env))
    in_pit = np.asarray(windy_rooms.in_pit(jnp.asarray(pos), jnp.asarray(wall_x), env))
    free = ~in_pit[:, :-1]
    bridge = on_bridge[:, :-1] & free  # transitions that start on the bridge
    acts = np.asarray(test.actions)
    # Where a gust blew: the y move differs from what the (clipped) action gives.
    gusted = bridge & (np.abs((pos[:, 1:, 1] - pos[:, :-1, 1]) - acts[..., 1]) > 1.0)
    out = {"num_test_trajectories": num, "length": length, "k": k,
           "transitions": int(free.sum()), "bridge_transitions": int(bridge.sum()),
           "gust_transitions": int(gusted.sum())}

    def model_errors(exp, params, name):
        wm = exp.wm
        emb_fit = _encode_frames(wm, params, fit, env)
        probe = _probe_fit(np.asarray(emb_fit).reshape(-1, wm.latent_dim),
                           np.asarray(fit.pos).reshape(-1, 2))
        emb = _encode_frames(wm, params, test, env)  # (N, T, D)
        s, s1 = emb[:, :-1], emb[:, 1:]
        a = test.actions
        res = {"probe_r2": _r2(np.asarray(probe(emb)).reshape(-1, 2), pos.reshape(-1, 2))}

        def px(pred, target):
            return np.linalg.norm(np.asarray(probe(pred)) - target, axis=-1)

        if not wm.z_dim:
            one = px(jax.jit(wm.predict)(params, s, a), pos[:, 1:])
            roll = px(jax.jit(wm.rollout)(params, emb[:, 0], a), pos[:, 1:])
            best_one, best_roll, zero_one = one, roll, one
        else:
            noise = wm.sample_noise(k_z, (k, *a.shape[:-1]))  # (K, N, T-1, noise_dim)
            one_step = jax.jit(lambda n: wm.predict(params, s, a, wm.z_from_noise(params, s, n, a)))
            one_k = np.stack([px(one_step(noise[i]), pos[:, 1:]) for i in range(k)])
            roll_k = np.stack([px(jax.jit(wm.rollout_noise)(params, emb[:, 0], a, noise[i]),
                                  pos[:, 1:]) for i in range(k)])
            best_one, best_roll = one_k.min(0), roll_k.min(0)
            zero = jnp.zeros((*a.shape[:-1], wm.z_dim))
            zero_one = px(jax.jit(wm.predict)(params, s, a, zero), pos[:, 1:])
            # Calibration: how often does one step sampled from the prior gust on the bridge?
            p0 = np.asarray(probe(s))[bridge]

            def gust_rate(pred):
                g = (np.asarray(probe(pred))[bridge][:, 1] - p0[:, 1]) - acts[..., 1][bridge]
                return float(np.mean(np.abs(g) > 3.0))

            true_g = ((pos[:, 1:, 1] - pos[:, :-1, 1]) - acts[..., 1])[bridge]
            res["bridge_gust_rate"] = {
                "true": float(np.mean(np.abs(true_g) > 3.0)),
                "sampled_from_model_prior": float(np.mean([gust_rate(one_step(noise[i]))
                                                           for i in range(k)])),
                "sampled_from_n01": float(np.mean([gust_rate(jax.jit(wm.predict)(
                    params, s, a, wm.sample_z(jax.random.fold_in(k_z, i), a.shape[:-1])))
                    for i in range(k)])),
                "z_prior": "mixture" if wm.prior_net is not None else "normal",
            }
            # Does z copy the next state? Probes from the posterior's mean z alone.
            zq, _ = jax.jit(wm.posterior)(params, s, a, s1)
            zq = np.asarray(zq)[free]
            nxt, cur = pos[:, 1:][free], np.asarray(s)[free]
            half = len(zq) // 2
            lin_z = _probe_fit(zq[:half], nxt[:half])
            lin_s = _probe_fit(cur[:half], nxt[:half])
            res["copy_check"] = {
                "r2_next_pos_from_z_linear": _r2(np.asarray(lin_z(zq[half:])), nxt[half:]),
                "r2_next_pos_from_z_knn": _knn_r2(zq[:half][:6000], nxt[:half][:6000],
                                                  zq[half:][:3000], nxt[half:][:3000]),
                "r2_next_pos_from_current_latent_linear": _r2(np.asarray(lin_s(cur[half:])),
                                                               nxt[half:]),
            }
            # ... and does it carry the gust? R^2 of a k-NN probe from z to the y gust.
            zb = np.asarray(jax.jit(wm.posterior)(params, s, a, s1)[0])[bridge]
            gust_y = ((pos[:, 1:, 1] - pos[:, :-1, 1]) - acts[..., 1])[bridge][:, None]
            hb = len(zb) // 2
            res["copy_check"]["r2_bridge_gust_from_z_knn"] = _knn_r2(
                zb[:hb], gust_y[:hb], zb[hb:], gust_y[hb:])
            res["copy_check"]["posterior_std_mean"] = float(np.exp(0.5 * np.asarray(
                jax.jit(wm.posterior)(params, s, a, s1)[1])).mean())
        for label, mask in (("all", free), ("bridge", bridge), ("gust", gusted)):
            res[f"one_step_px_{label}"] = float(best_one[mask].mean())
            res[f"one_step_px_z0_{label}"] = float(zero_one[mask].mean())
        # 8-step open-loop rollouts from frame 0: error at the last step, for all
        # trajectories and for those that start on the bridge or within 8 px of it.
        near = np.asarray(windy_rooms.near_hazard(jnp.asarray(pos[:, 0]), jnp.asarray(
            wall_x[:, 0]), env, 6.0)) & ~in_pit[:, 0]
        res[f"rollout_h{length - 1}_px_all"] = float(best_roll[:, -1].mean())
        res[f"rollout_h{length - 1}_px_near_bridge"] = float(best_roll[near, -1].mean())
        res["near_bridge_trajectories"] = int(near.sum())
        out[name] = res
        return probe

    model_errors(exp_d, params_d, "deterministic")
    probe_z = model_errors(exp_z, params_z, "z_model")
    out["note"] = ("z_model errors are best-of-K over K futures drawn from the model's prior "
                   "(one_step_px_z0_*: at z = 0, the prior's mean); deterministic errors "
                   "are its single prediction. px: linear-probe position error.")
    return out, probe_z


def pit_futures(exp, params, num=256, steps=6, seed=5) -> dict:
    """Does a sampled future stay in a pit? In the true world it always does (every move
    from a pit leaves the agent in place). From the middle of each pit, ``steps`` full
    pushes in each of four directions; returns the share of the model's ``num`` futures
    (its single prediction for a deterministic model) that end more than 3 px from the
    start, positions read by a linear probe fitted on 4000 random positions."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jepa_jax import evaluation
    from jepa_jax.planning.base import rollout

    env, wm = exp.env, exp.wm
    layout = jnp.array([env.wall_x, env.door_y], jnp.float32)

    def encode(p):
        return wm.encode(params, evaluation._render(p, layout, env))

    k_pos, k_z = jax.random.split(jax.random.key(seed))
    pos = jax.random.uniform(k_pos, (4000, 2), minval=env.low + 1, maxval=env.high - 1)
    probe = _probe_fit(np.asarray(jax.jit(jax.vmap(encode))(pos)), np.asarray(pos))
    reach = env.windy_half_width + env.pit_width / 2
    out = {}
    for side, dy in (("upper_pit", -reach), ("lower_pit", reach)):
        start = jnp.array([env.wall_x - env.wind_half_length / 2, env.windy_door_y + dy])
        s0 = encode(start)
        for push, a in (("right", (1, 0)), ("left", (-1, 0)), ("up", (0, -1)),
                        ("down", (0, 1))):
            acts = jnp.tile(env.action_bound * jnp.array(a, jnp.float32)[None], (steps, 1))
            if wm.z_dim:
                noise = wm.sample_noise(k_z, (num, steps))
                final = jax.vmap(lambda n, s0=s0, acts=acts: wm.rollout_noise(
                    params, s0, acts, n))(noise)[:, -1]
            else:
                final = rollout(wm, params, s0, acts)[-1:]
            moved = np.linalg.norm(np.asarray(probe(final)) - np.asarray(start), axis=-1)
            out[f"{side}_push_{push}"] = float(np.mean(moved > 3.0))
    out["mean"] = float(np.mean(list(out.values())))
    return out


def sampled_futures_png(path, exp_z, params_z, exp_d, params_d, num=48, steps=10) -> dict:
    """Sampled futures of two action sequences across the windy bridge (in its middle and
    near a corner of the door): the true world, the z model and the deterministic model."""
    import jax
    import jax.numpy as jnp
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jepa_jax import envs
    from jepa_jax.data import offline
    from jepa_jax.diagnostics import _encode_frames, fit_linear_probe
    from jepa_jax.envs import windy_rooms
    from jepa_jax.training.plots import draw_layout

    env = exp_z.env
    wall_x, door_y, wy = float(env.wall_x), float(env.door_y), float(env.windy_door_y)
    lanes = {"middle": wy, "corner": wy + env.windy_half_width - 1.5}
    action = jnp.array([2.2, 0.0])
    actions = jnp.tile(action[None], (steps, 1))
    fit = offline.generate(jax.random.key(5), 512, 9, env, exp_z.policy)
    probes = {}
    for name, exp, params in (("z", exp_z, params_z), ("det", exp_d, params_d)):
        emb = _encode_frames(exp.wm, params, fit, env)
        probes[name] = fit_linear_probe(np.asarray(emb).reshape(-1, exp.wm.latent_dim),
                                        np.asarray(fit.pos).reshape(-1, 2))
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    summary = {"steps": steps, "num_futures": num, "action": [2.2, 0.0]}
    for row, (lane, y0) in enumerate(lanes.items()):
        start = jnp.array([wall_x - 12.0, y0])

        def true_future(key, start=start):
            def body(p, k):
                p = envs.transition(p, action, wall_x, door_y, env, k)
                return p, p
            return jax.lax.scan(body, start, jax.random.split(key, steps))[1]

        panels = {"true": np.asarray(jax.vmap(true_future)(
            jax.random.split(jax.random.key(row), num)))}
        obs0 = envs.render_positions(start, wall_x, door_y, env)
        for name, exp, params in (("z", exp_z, params_z), ("det", exp_d, params_d)):
            wm = exp.wm
            s0 = wm.encode(params, obs0)
            if wm.z_dim:
                noise = wm.sample_noise(jax.random.key(10 + row), (num, steps))
                traj = jax.vmap(lambda n, wm=wm, params=params, s0=s0: wm.rollout_noise(
                    params, s0, actions, n))(noise)
            else:
                traj = wm.rollout(params, s0, actions)[None]
            panels[name] = np.asarray(probes[name](traj))
        titles = {"true": f"true world: {num} futures",
                  "z": f"z model: {num} futures sampled from its prior",
                  "det": "deterministic model: its one prediction"}
        sp = np.asarray(start)
        for col, key in enumerate(("true", "z", "det")):
            ax = axes[row, col]
            draw_layout(ax, wall_x, door_y, env)
            trajs = panels[key]
            for tr in trajs:
                full = np.concatenate([sp[None], tr], 0)
                ax.plot(full[:, 0], full[:, 1], "-", color="tab:red",
                        alpha=min(1.0, 6 / len(trajs)), lw=1)
                ax.plot(full[-1, 0], full[-1, 1], ".", color="tab:red", ms=3)
            ax.plot(*sp, "go", ms=5)
            fell = float(np.mean(np.asarray(windy_rooms.in_pit(
                jnp.asarray(trajs[:, -1]), wall_x, env))))
            summary[f"{lane}_fell_{key}"] = fell
            ax.set_title(f"{titles[key]}\n{lane} of the door: {fell:.0%} end in a pit",
                         fontsize=9)
            ax.set_xlim(10, 54)
            ax.set_ylim(52, 12)
            ax.set_aspect("equal")
    fig.suptitle(f"{steps} pushes of 2.2 px to the right across the windy bridge "
                 f"(hatched: pits; shaded: the bridge, where gusts of {env.gust:.0f} px blow "
                 f"up or down with probability {env.gust_prob:.2f} each)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="bridge", choices=sorted(WORLDS),
                        help="bridge: the experiment's default world; two_doors: with a calm "
                             "door beside the bridge")
    parser.add_argument("--workdir-z", default="runs/windy_z")
    parser.add_argument("--workdir-det", default="runs/windy_det")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--plans", default="det,z_select",
                        help=f"comma-separated planner variants of {sorted(PLANS)}")
    parser.add_argument("--seed", type=int, default=None,
                        help="config.seed of both models (their data too); results go to "
                             "<stem>_seed<N>.json (default: the presets' seed, 0)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="episodes per jitted batch (progress and resume points); "
                             "0: the config's planning.batch_size")
    parser.add_argument("--skip-prediction", action="store_true")
    args = parser.parse_args()
    if args.batch_size < 0:
        parser.error(f"--batch-size must be >= 0, got {args.batch_size}")
    unknown = [p for p in args.plans.split(",") if p and p not in PLANS]
    if unknown:
        parser.error(f"unknown plans {unknown}; expected some of {sorted(PLANS)}")
    z_preset, det_preset, stem = WORLDS[args.world]
    if args.seed is not None:
        stem += f"_seed{args.seed}"
    sys.path.insert(0, str(ROOT))
    from jepa_jax import runtime

    runtime.setup()
    import jax

    from jepa_jax.evaluation import paired_comparison
    from jepa_jax.planning_eval import evaluate_workdir
    from jepa_jax.training.loop import load_trained

    out_json = RESULTS / f"{stem}.json"
    result = json.loads(out_json.read_text()) if out_json.exists() else {}
    workdirs = {"z": Path(args.workdir_z), "det": Path(args.workdir_det)}
    result.setdefault("training", {}).update(
        z=train(z_preset, workdirs["z"], args.seed),
        det=train(det_preset, workdirs["det"], args.seed))
    for key, w in workdirs.items():
        result["training"][key]["final_metrics"] = json.loads(
            (w / "final_metrics.json").read_text())
    _, exp_z, params_z = load_trained(workdirs["z"])
    _, exp_d, params_d = load_trained(workdirs["det"])
    if not args.skip_prediction:
        t0 = time.perf_counter()
        result["prediction"], _ = prediction_metrics(exp_z, params_z, exp_d, params_d)
        result["prediction"]["seconds"] = time.perf_counter() - t0
        result["futures_png"] = sampled_futures_png(RESULTS / f"{stem}.png", exp_z, params_z,
                                                    exp_d, params_d)
        # Share of sampled futures that leave a pit (true world: none).
        result["pit_futures"] = {"z": pit_futures(exp_z, params_z),
                                 "det": pit_futures(exp_d, params_d)}
        print("futures that leave a pit:", {k: round(v["mean"], 2)
                                            for k, v in result["pit_futures"].items()})
        _save(out_json, result)
    planning = result.setdefault("planning", {})
    for name in [p for p in args.plans.split(",") if p]:
        key, overrides = PLANS[name]
        batch = [f"--config.planning.batch_size={args.batch_size}"] if args.batch_size else []
        print(f"{name}: {args.episodes} episodes", flush=True)
        r = evaluate_workdir(workdirs[key], "gradient", episodes=args.episodes,
                             overrides=overrides + batch, progress=True, plot=False)
        planning[name] = {k: r[k] for k in ("success_rate", "goal_room_rate", "pit_rate",
                                            "pit_from_bridge_rate", "pit_walked_in_rate",
                                            "stalled_rate", "bridge_rate",
                                            "mean_final_distance_px",
                                            "ms_per_plan", "eval_seconds", "num_episodes",
                                            "success")
                          if k in r}
        planning[name]["budget"] = {k: r["budget"].get(k) for k in (
            "horizon", "num_restarts", "num_iters", "z_samples", "risk", "cvar_alpha",
            "num_perturbations", "select_samples", "select_risk", "replan_every",
            "env_steps")}
        planning[name]["command"] = (f"python -m jepa_jax.evaluate --workdir {workdirs[key]} "
                                     f"--planner gradient --episodes {args.episodes} "
                                     + " ".join(overrides + batch)).strip()
        print(f"{name:>16}: success {r['success_rate']:.0%}, pit {r.get('pit_rate', 0):.0%} "
              f"(from the bridge {r.get('pit_from_bridge_rate', 0):.0%}), stalled "
              f"{r.get('stalled_rate', 0):.0%}, on the bridge {r.get('bridge_rate', 0):.0%}, "
              f"goal room {r['goal_room_rate']:.0%}, "
              f"{r['ms_per_plan']:.0f} ms/plan", flush=True)
        _save(out_json, result)
    for name in [p for p in args.plans.split(",") if p.startswith("z")]:
        if "det" in planning and name in planning:
            result[f"{name}_minus_det_success_pp"] = 100 * (planning[name]["success_rate"]
                                                            - planning["det"]["success_rate"])
            z_ok, det_ok = planning[name].get("success"), planning["det"].get("success")
            if z_ok and det_ok and len(z_ok) == len(det_ok):  # the same episodes, paired
                result[f"{name}_vs_det_paired"] = paired_comparison(z_ok, det_ok)
    result.update(jax=jax.__version__, backend=jax.default_backend(), cpus=os.cpu_count(),
                  machine=platform.processor() or platform.machine(),
                  xla_flags=os.environ.get("XLA_FLAGS", ""),
                  date=datetime.datetime.now().isoformat(timespec="seconds"),
                  command="python benchmarks/latent_z.py " + " ".join(sys.argv[1:]))
    _save(out_json, result)
    print(json.dumps({k: v for k, v in result.items() if k != "training"}, indent=1)[:3000])
    print(f"wrote {out_json}")
    return 0


def _save(path: Path, result: dict) -> None:
    path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
