"""Training H-JEPA on mazes in two stages: level 1 (the Core JEPA), then level 2 on it.

``python -m jepa_jax.train --config experiments/mazes.py --workdir W`` calls
:func:`train_and_evaluate` (``jepa_jax.train`` dispatches on ``config.env.name``):

1. offline walks across the training layouts (:mod:`jepa_jax.data.mazes`);
2. **stage 1**: level 1 with the Core objective (``jepa_jax.training.objective``, the same
   ``jepa`` loss as Two-Rooms) on random windows of ``train.window`` frames;
3. **stage 2**: the level-1 embeddings of every frame are computed once (level 1 frozen)
   and level 2 is trained on them: ``level2.kind="grid"`` with
   :func:`jepa_jax.hierarchy_grid.grid_level2_objective`, ``"mlp"`` with
   :func:`jepa_jax.hierarchy.level2_objective`;
4. a linear probe of the agent's position from level-1 embeddings, fitted and scored on
   held-out layouts (``probe_r2``), as a health check.

``W`` then holds ``config.json``, ``params.msgpack`` (``{"l1": ..., "l2": ...}``) and
``train_metrics.json``. Re-running on a finished workdir retrains from scratch (the runs
take minutes; there is no mid-run checkpoint).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization

from jepa_jax import diagnostics, hierarchy, hierarchy_grid
from jepa_jax.data import mazes as maze_data
from jepa_jax.envs import mazes
from jepa_jax.training import checkpoint as ckpt_lib
from jepa_jax.training.objective import get_objective
from jepa_jax.world_model import make_world_model

PARAMS_FILE = "params.msgpack"
METRICS_FILE = "train_metrics.json"


def is_maze_config(config: ml_collections.ConfigDict) -> bool:
    return config.get("env", {}).get("name", "") == "mazes"


def env_from_config(cfg: ml_collections.ConfigDict) -> mazes.MazeParams:
    """``MazeParams`` from the ``env`` section (validated)."""
    params = mazes.MazeParams(
        grid=int(cfg.grid), cell_px=int(cfg.cell_px), braid=float(cfg.braid),
        action_bound=float(cfg.action_bound), dot_std=float(cfg.dot_std),
        num_train_layouts=int(cfg.num_train_layouts), heldout_offset=int(cfg.heldout_offset),
        wall_clearance=float(cfg.wall_clearance))
    mazes.validate_params(params)
    return params


def build(config: ml_collections.ConfigDict):
    """``(env, wm, l2)``: the maze family, level 1 and level 2 described by ``config``."""
    env = env_from_config(config.env)
    obs_shape = (env.img_size, env.img_size, 2)
    wm = make_world_model(config.model, obs_shape, action_dim=2)
    kind = config.level2.get("kind", "mlp")
    if kind == "grid":
        l2 = hierarchy_grid.make_grid_level2(config.level2, config.model, wm, obs_shape,
                                             env.action_bound)
    elif kind == "mlp":
        l2 = hierarchy.make_level2(config.level2, wm, hierarchy.raw_pixel_dims(config.model,
                                                                              obs_shape))
    else:
        raise ValueError(f"unknown level2.kind {kind!r}; expected 'mlp' or 'grid'")
    if config.data.length < 2 * l2.span + 1:
        raise ValueError(f"data.length ({config.data.length}) must be >= 2 * level2.span + 1 "
                         f"= {2 * l2.span + 1}")
    if not 2 <= config.train.window <= config.data.length:
        raise ValueError(f"train.window must lie in [2, data.length], got "
                         f"{config.train.window}")
    return env, wm, l2


def make_data(config, env, key=None, seeds=None, num=None) -> maze_data.MazeTrajectories:
    d = config.data
    walk = maze_data.WalkParams(step_min=d.step_min, step_max=d.step_max,
                                angle_noise=d.angle_noise, push_prob=d.get("push_prob", 0.0))
    key = jax.random.key(config.seed) if key is None else key
    seeds = mazes.train_seeds(env) if seeds is None else seeds
    return maze_data.generate(key, num or d.num_trajectories, d.length, env, seeds, walk)


def _adam(lr: float, clip: float):
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))


def train_level1(config, env, wm, data, key, log=print):
    """Stage 1: returns level-1 params and the last logged metrics."""
    tc = config.train
    objective = get_objective(config.loss.name)
    tx = _adam(tc.learning_rate, tc.grad_clip)
    k_init, k_run = jax.random.split(key)
    params = wm.init(k_init)
    opt_state = tx.init(params)
    n, t = data.pos.shape[:2]

    @jax.jit
    def update(params, opt_state, step):
        k = jax.random.fold_in(k_run, step)
        k_idx, k_start, k_loss = jax.random.split(k, 3)
        idx = jax.random.randint(k_idx, (tc.batch_size,), 0, n)
        start = jax.random.randint(k_start, (), 0, t - tc.window + 1)
        batch = maze_data.get_batch(data, idx, env, start, tc.window)
        (_, aux), grads = jax.value_and_grad(
            lambda p: objective(wm, p, batch, k_loss, config.loss), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    metrics = {}
    for step in range(tc.num_steps):
        params, opt_state, aux = update(params, opt_state, step)
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.num_steps:
            metrics = {k: float(v) for k, v in aux.items()}
            if not np.isfinite(metrics["loss"]):
                raise RuntimeError(f"level-1 loss is not finite at step {step}")
            log(f"level1 step {step + 1}: loss={metrics['loss']:.4g} "
                f"invariance={metrics['invariance']:.4g}")
    return params, metrics


def encode_all(wm, params1, data, env, chunk: int = 256) -> jax.Array:
    """Level-1 embeddings of every frame: (N, T, D1), in jitted chunks of trajectories."""
    @jax.jit
    def enc(pos, walls):
        return wm.encode(params1, mazes.render_positions(pos, walls[:, None], env))

    out = [enc(data.pos[i:i + chunk], data.walls[i:i + chunk])
           for i in range(0, data.pos.shape[0], chunk)]
    return jnp.concatenate(out, 0)


def train_level2(config, l2, s1, actions, key, log=print):
    """Stage 2 on frozen level-1 embeddings ``s1`` (N, T, D1): returns level-2 params.

    The MLP level 2 trains on runs of M level-2 steps from a random offset; the grid level
    2 on single abstract steps ``(s1_t, a_t .. a_{t+k-1}, s1_{t+k})`` at random (n, t)."""
    tc, k = config.train, l2.span
    n, t = s1.shape[:2]
    m = max(1, (t - 1) // k - 1)  # level-2 steps per sample; leaves room for random offsets
    max_off = t - 1 - m * k
    tx = _adam(tc.level2_learning_rate, tc.grad_clip)
    k_init, k_run = jax.random.split(key)
    params = l2.init(k_init)
    opt_state = tx.init(params)
    bs = tc.level2_batch_size
    grid = l2.kind == "grid"

    def loss_fn(params, kk, s1, actions):
        k_idx, k_off, k_loss = jax.random.split(kk, 3)
        idx = jax.random.randint(k_idx, (bs,), 0, n)
        if grid:
            start = jax.random.randint(k_off, (bs,), 0, t - k)
            seg = jax.vmap(lambda i, j: jax.lax.dynamic_slice_in_dim(actions[i], j, k, 0))(
                idx, start)
            return hierarchy_grid.grid_level2_objective(l2, params, s1[idx, start], seg,
                                                        s1[idx, start + k])
        off = jax.random.randint(k_off, (), 0, max_off + 1)
        seg = jax.lax.dynamic_slice_in_dim(s1[idx], off, m * k + 1, axis=1)
        act = jax.lax.dynamic_slice_in_dim(actions[idx], off, m * k, axis=1)
        return hierarchy.level2_objective(l2, params, seg, act, k_loss, config.level2)

    @jax.jit
    def update(params, opt_state, step, s1, actions):  # data as arguments, not constants
        kk = jax.random.fold_in(k_run, step)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, kk, s1, actions)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    metrics = {}
    for step in range(tc.level2_steps):
        params, opt_state, aux = update(params, opt_state, step, s1, actions)
        if (step + 1) % tc.log_every == 0 or step + 1 == tc.level2_steps:
            metrics = {f"level2_{k_}": float(v) for k_, v in aux.items()}
            if not np.isfinite(metrics["level2_loss"]):
                raise RuntimeError(f"level-2 loss is not finite at step {step}")
            if grid:
                log(f"level2 step {step + 1}: cross_entropy="
                    f"{metrics['level2_cross_entropy']:.4g} (floor "
                    f"{metrics['level2_target_entropy']:.3g}) position_error="
                    f"{metrics['level2_position_error']:.3g} px")
            else:
                log(f"level2 step {step + 1}: loss={metrics['level2_loss']:.4g} "
                    f"invariance={metrics['level2_invariance']:.4g} "
                    f"action_kl={metrics['level2_action_kl']:.3g}")
    return params, metrics


def position_probe(config, env, wm, params, l2=None, num: int = 128):
    """Linear probe of the agent position on held-out layouts: ``(probe, r2)``; of level-2
    states when ``l2`` is given (``params`` then ``{"l1", "l2"}``), else of level 1."""
    data = make_data(config, env, jax.random.key(config.seed + 17),
                     mazes.heldout_seeds(env, 32), num)
    p1 = params["l1"] if l2 is not None else params
    emb = encode_all(wm, p1, data, env)
    if l2 is not None:
        emb = l2.encode(params["l2"], emb)
    x = emb.reshape(-1, emb.shape[-1])
    y = data.pos.reshape(-1, 2)
    half = x.shape[0] // 2
    probe = diagnostics.fit_linear_probe(x[:half], y[:half])
    r2 = diagnostics.r2_score(np.asarray(probe(x[half:])), np.asarray(y[half:]))
    return diagnostics.fit_linear_probe(x, y), r2


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       progress: bool = True) -> dict[str, float]:
    """Stages 1 and 2; writes the workdir; returns the final metrics."""
    log = print if progress else (lambda *_: None)
    env, wm, l2 = build(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_lib.save_config(workdir, config)
    t0 = time.perf_counter()
    data = make_data(config, env)
    jax.block_until_ready(data.pos)
    t_data = time.perf_counter() - t0
    k1, k2 = jax.random.split(jax.random.key(config.seed + 1))
    params1, m1 = train_level1(config, env, wm, data, k1, log)
    t1 = time.perf_counter() - t0
    s1 = encode_all(wm, params1, data, env)
    params2, m2 = train_level2(config, l2, s1, data.actions, k2, log)
    t2 = time.perf_counter() - t0
    params = {"l1": params1, "l2": params2}
    (workdir / PARAMS_FILE).write_bytes(serialization.to_bytes(params))
    _, r2 = position_probe(config, env, wm, params1)
    _, r2_l2 = position_probe(config, env, wm, params, l2)
    final = {**m1, **m2, "probe_r2": r2, "level2_probe_r2": r2_l2, "data_seconds": t_data,
             "level1_seconds": t1 - t_data, "level2_seconds": t2 - t1, "train_seconds": t2}
    (workdir / METRICS_FILE).write_text(json.dumps(final, indent=2))
    return final


def load_trained(workdir: str | Path, overrides=()) -> tuple[Any, ...]:
    """``(config, env, wm, l2, params)`` of a trained maze workdir (``overrides`` as on the
    command line change evaluation settings)."""
    from jepa_jax.configs import apply_overrides

    workdir = Path(workdir)
    config = ckpt_lib.load_config(workdir)
    _tuples(config)
    if "layouts" not in config.planning:  # workdirs from before the key existed
        config.planning.layouts = "heldout"
    if "max_cells" not in config.planning:
        config.planning.max_cells = 0
    if "kind" not in config.level2:  # workdirs from before the grid level 2
        config.level2.kind = "mlp"
    if "hierarchical_grid" not in config.planning:
        from jepa_jax.planning.hierarchical_grid import DEFAULTS as grid_defaults

        config.planning.hierarchical_grid = {
            k: v for k, v in grid_defaults.items()
            if k not in ("action_bound", "shift")}
    config.lock()
    apply_overrides(config, list(overrides))
    env, wm, l2 = build(config)
    path = workdir / PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {PARAMS_FILE} in {workdir}: train it first")
    template = {"l1": wm.init(jax.random.key(0)), "l2": l2.init(jax.random.key(0))}
    params = serialization.from_bytes(template, path.read_bytes())
    return config, env, wm, l2, params


def _tuples(config: ml_collections.ConfigDict) -> None:
    """JSON turns tuples into lists; the config's shapes and layer sizes are tuples."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            _tuples(value)
        elif isinstance(value, list):
            config[key] = tuple(value)
