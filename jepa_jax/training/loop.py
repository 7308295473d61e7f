"""The training loop: ``train_and_evaluate(config, workdir)``.

One jitted ``update`` step on a plain train-state pytree; data order and randomness are pure
functions of the step number (``batch_indices(data_key, ..., step)``, ``fold_in(rng, step)``),
so a run killed at any moment and restarted from its last checkpoint replays exactly the
batches and random draws an uninterrupted run would have used, and ends with the same
metrics. Metrics go to ``metrics.jsonl`` and TensorBoard event files in the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from jepa_jax import cost as cost_lib
from jepa_jax import diagnostics, envs, parallel
from jepa_jax.data import offline
from jepa_jax.envs import two_rooms, windy_rooms
from jepa_jax.training import checkpoint as ckpt_lib
from jepa_jax.training import metrics as metrics_lib
from jepa_jax.training import online as online_lib
from jepa_jax.training import plots
from jepa_jax.training.objective import get_objective, infer_z, prior_nll
from jepa_jax.world_model import WorldModel, make_world_model

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped: non-finite values or representation collapse (message names both
    the step and the metric)."""


@struct.dataclass
class TrainState:
    """Everything that changes during training; saved whole in each checkpoint."""

    step: jax.Array
    params: Any
    opt_state: Any
    pred_opt_state: Any  # the predictor-only phase's optimizer (see ``Experiment``)
    rng: jax.Array
    # Trajectories collected by planning in the world during the predictor phase (see
    # ``training/online.py``); None when ``train.online_rounds`` is 0.
    online: Any = None


def env_params_from_config(cfg: ml_collections.ConfigDict):
    """``EnvParams`` of the world ``cfg.name`` (default "two_rooms") from the config's
    ``env`` section (validated)."""
    name = cfg.get("name", "two_rooms")
    envs.get_env(name)  # one-line error on an unknown name
    common = dict(
        img_size=cfg.img_size, border=cfg.border, wall_half_width=cfg.wall_half_width,
        door_half_width=cfg.door_half_width, wall_x_range=tuple(cfg.wall_x_range),
        door_y_range=tuple(cfg.door_y_range), random_layout=cfg.random_layout,
        wall_x=cfg.wall_x, door_y=cfg.door_y, action_bound=cfg.action_bound,
        dot_std=cfg.dot_std, max_steps=cfg.max_steps)
    if name == "windy_rooms":
        params = windy_rooms.EnvParams(
            **common, windy_door_y=cfg.windy_door_y, wind_half_length=cfg.wind_half_length,
            pit_width=cfg.pit_width, gust=cfg.gust, gust_prob=cfg.gust_prob,
            windy_half_width=cfg.windy_half_width, calm_door=cfg.calm_door)
    else:
        params = two_rooms.EnvParams(**common)
    envs.validate_params(params)
    return params


def policy_params_from_config(cfg: ml_collections.ConfigDict) -> offline.PolicyParams:
    """Exploration policy of the config's ``data`` section."""
    return offline.PolicyParams(
        step_mean=cfg.step_mean, step_std=cfg.step_std, step_min=cfg.step_min,
        step_max=cfg.step_max, angle_noise=cfg.angle_noise,
        cross_wall_rate=cfg.cross_wall_rate, wall_seek_rate=cfg.wall_seek_rate,
        wall_slide_rate=cfg.get("wall_slide_rate", 0.0))


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, after global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.num_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.final_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(schedule, weight_decay=cfg.weight_decay))


def make_predictor_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam with warmup and cosine decay for the predictor-only phase."""
    steps = max(cfg.predictor_steps, 2)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.predictor_learning_rate, min(100, steps - 1), steps,
        end_value=cfg.predictor_learning_rate * cfg.final_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(schedule))


def validate_config(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for values that would fail later, before anything is traced."""
    t, d = config.train, config.data
    checks = [
        (t.batch_size >= 2, f"train.batch_size must be >= 2 (batch statistics), got "
                            f"{t.batch_size}"),
        (t.num_steps >= 1, f"train.num_steps must be >= 1, got {t.num_steps}"),
        (t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}"),
        (d.length >= 2, f"data.length must be >= 2, got {d.length}"),
        (d.num_trajectories >= t.batch_size,
         f"data.num_trajectories ({d.num_trajectories}) must be >= train.batch_size "
         f"({t.batch_size})"),
        (t.log_every >= 1 and t.checkpoint_every >= 1,
         "train.log_every and train.checkpoint_every must be >= 1"),
        (t.eval_every >= 0, f"train.eval_every must be >= 0, got {t.eval_every}"),
        (t.predictor_steps >= 0, f"train.predictor_steps must be >= 0, got "
                                 f"{t.predictor_steps}"),
        (t.predictor_steps == 0 or d.num_trajectories >= t.predictor_batch_size,
         f"data.num_trajectories ({d.num_trajectories}) must be >= "
         f"train.predictor_batch_size ({t.predictor_batch_size})"),
    ]
    rates = {k: d.get(k, 0.0) for k in ("cross_wall_rate", "wall_seek_rate", "wall_slide_rate")}
    checks += [(0.0 <= v <= 1.0, f"data.{k} must be in [0, 1], got {v}") for k, v in rates.items()]
    checks.append((sum(rates.values()) <= 1.0 + 1e-9,
                   f"data.cross_wall_rate + wall_seek_rate + wall_slide_rate must be <= 1, got "
                   f"{sum(rates.values()):.3g}"))
    rounds = t.get("online_rounds", 0)
    if rounds:
        horizon = config.planning.gradient.horizon
        checks += [
            (rounds >= 0, f"train.online_rounds must be >= 0, got {rounds}"),
            (t.online_trajectories >= 1, f"train.online_trajectories must be >= 1, got "
                                         f"{t.online_trajectories}"),
            (0.0 < t.online_fraction < 1.0, f"train.online_fraction must be in (0, 1), got "
                                            f"{t.online_fraction}"),
            (0.0 <= t.get("online_near_wall_fraction", 0.0) <= 1.0,
             f"train.online_near_wall_fraction must be in [0, 1], got "
             f"{t.get('online_near_wall_fraction', 0.0)}"),
            (t.predictor_steps > rounds, "train.online_rounds needs train.predictor_steps > "
                                         "online_rounds (collection runs in that phase)"),
            (horizon >= d.length - 1, f"train.online_rounds needs planning.gradient.horizon "
                                      f">= data.length - 1 ({d.length - 1}), got {horizon}"),
            # training/online.py steps Two-Rooms' deterministic transition.
            (config.env.get("name", "two_rooms") == "two_rooms",
             f"train.online_rounds supports env.name='two_rooms' only, got "
             f"{config.env.get('name')!r}"),
        ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)
    get_objective(config.loss.name)
    z_dim = config.model.get("z_dim", 0)
    if z_dim and "z_kl_coeff" not in config.loss:
        raise ValueError(f"model.z_dim={z_dim} needs loss.z_kl_coeff (the weight of the KL "
                         f"of z's posterior to the prior)")
    if z_dim and not config.loss.z_kl_coeff >= 0:
        raise ValueError(f"loss.z_kl_coeff must be >= 0, got {config.loss.z_kl_coeff}")


class Experiment:
    """The pieces of a run built from a config: env, data, model, optimizer, jitted steps.

    Training has two phases. Steps ``[0, train.num_steps)`` train encoder and predictor
    jointly with the configured objective (the JEPA). Steps ``[num_steps, num_steps +
    train.predictor_steps)`` then refine the predictor alone on a cache of the frozen
    encoder's latents of the whole data set, with large batches: without convolutions a step
    costs a few percent of a joint one, and sharp rules of the dynamics (a wall stops the
    agent) need thousands of predictor updates (measured: with the true state as latent, a
    predictor still walked through the wall 61% of the time after 1200 steps of batch 64,
    and 0% after 3000 steps of batch 256). DINO-WM trains its predictor on a frozen encoder
    throughout; here the encoder is learned first.

    The mesh comes from the config's ``parallel`` section (default: every device on the
    ``data`` axis). The batch is split over that axis; train state and data set are
    replicated (or the state FSDP-split). With one device it is the same code.

    With a latent variable (``model.z_dim > 0``) the second phase trains the posterior
    ``q(z | s, a, s')`` along with the predictor, on the same cached latents, with the loss
    ``MSE + (z_kl_coeff / sim_coeff) * KL`` (+ ``(z_prior_coeff / sim_coeff) * NLL`` of a
    learned prior): the weights relative to the prediction error are those of the first
    phase.
    """

    def __init__(self, config: ml_collections.ConfigDict):
        validate_config(config)
        self.config = config
        self.pcfg = parallel.parallel_config(config)
        self.mesh = parallel.make_mesh(self.pcfg)
        axis = self.pcfg.data_axis
        parallel.check_divisible(config.train.batch_size, self.mesh, axis, "train.batch_size")
        if config.train.predictor_steps:
            parallel.check_divisible(config.train.predictor_batch_size, self.mesh, axis,
                                     "train.predictor_batch_size")
        self.replicated = parallel.replicated(self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh, axis)
        self.env = env_params_from_config(config.env)
        self.policy = policy_params_from_config(config.data)
        obs_shape = (self.env.img_size, self.env.img_size, 2)
        self.wm: WorldModel = make_world_model(config.model, obs_shape, action_dim=2)
        self.optimizer = make_optimizer(config.train)
        self.pred_optimizer = make_predictor_optimizer(config.train)
        self.objective = get_objective(config.loss.name)
        root = jax.random.key(config.seed)
        self.data_key, self.init_key, self.rng_key, self.order_key = jax.random.split(root, 4)
        self._data: offline.Trajectories | None = None
        self._collector = None  # online collection (built on first use)
        self.state_sharding = parallel.tree_shardings(jax.eval_shape(self._init_state),
                                                      self.mesh, self.pcfg)
        rep, st = self.replicated, self.state_sharding
        self.update = jax.jit(self._update, in_shardings=(st, rep), out_shardings=(st, rep),
                              donate_argnums=(0,))
        self.predictor_update = jax.jit(self._predictor_update,
                                        in_shardings=(st, rep, rep, rep),
                                        out_shardings=(st, rep), donate_argnums=(0,))

    @property
    def data(self) -> offline.Trajectories:
        """The offline data set, generated on first use (deterministic from the seed, so
        every process generates the same one), replicated over the mesh."""
        if self._data is None:
            d = self.config.data
            local = offline.generate(self.data_key, d.num_trajectories, d.length, self.env,
                                     self.policy)
            self._data = parallel.put_replicated(local, self.mesh)
        return self._data

    def phase2_params(self, params: Any) -> Any:
        """What the predictor-only phase trains: the predictor (and z's posterior and
        learned prior, if any)."""
        if self.wm.z_dim:
            return {k: params[k] for k in ("predictor", "posterior", "prior") if k in params}
        if self.wm.num_predictors > 1:  # stacked (K, ...), one optimizer state per member
            return self.wm.predictor_members(params)
        return params["predictor"]

    def _with_phase2_params(self, params: Any, trained: Any) -> Any:
        if self.wm.z_dim:
            return {**params, **trained}
        if self.wm.num_predictors > 1:
            return self.wm.with_predictor_members(params, trained)
        return {**params, "predictor": trained}

    def reinit_predictor(self, state: TrainState) -> TrainState:
        """The state with ``params["predictor"]`` drawn afresh (and its predictor-phase
        optimizer state reset), for ``train.predictor_reinit``: the predictor phase then
        trains it from scratch on the frozen latents. Why: measured on two runs, ensemble
        members trained from scratch in that phase let 0-2% of pushes at the wall through,
        the member that continued from the joint phase's predictor 6-8%. Deterministic
        (its own key), so resuming at the phase boundary redraws the same parameters."""
        if self.wm.z_dim:
            raise ValueError("train.predictor_reinit supports deterministic models only")
        fresh = jax.jit(self.wm.init_predictor, out_shardings=self.replicated)(
            jax.random.fold_in(self.init_key, 6))
        params = {**state.params, "predictor": fresh}
        state = state.replace(params=params, pred_opt_state=self._init_pred_opt_state(params))
        return jax.device_put(state, self.state_sharding)

    def _init_pred_opt_state(self, params: Any) -> Any:
        if self.wm.num_predictors > 1:
            return jax.vmap(self.pred_optimizer.init)(self.phase2_params(params))
        return self.pred_optimizer.init(self.phase2_params(params))

    def _init_state(self) -> TrainState:
        params = self.wm.init(self.init_key)
        t = self.config.train
        rounds = t.get("online_rounds", 0)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.optimizer.init(params),
                          pred_opt_state=self._init_pred_opt_state(params),
                          rng=self.rng_key,
                          online=(online_lib.empty(rounds * t.online_trajectories,
                                                   self.config.data.length)
                                  if rounds else None))

    def init_state(self) -> TrainState:
        """The initial state, laid out on the mesh (``state_sharding``)."""
        return jax.jit(self._init_state, out_shardings=self.state_sharding)()

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and mesh shardings of the state (checkpoint restore target)."""
        return parallel.with_shardings(jax.eval_shape(self._init_state), self.state_sharding)

    def _update(self, state: TrainState, data: offline.Trajectories):
        cfg = self.config
        idx = offline.batch_indices(self.order_key, cfg.data.num_trajectories,
                                    cfg.train.batch_size, state.step)
        # Split the indices over the data axis: each device gathers and renders only its
        # own rows of the (global) batch; every process computes the same indices.
        idx = jax.lax.with_sharding_constraint(idx, self.batch_sharding)
        batch = jax.lax.with_sharding_constraint(offline.get_batch(data, idx, self.env),
                                                 self.batch_sharding)
        key = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            return self.objective(self.wm, params, batch, key, cfg.loss)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        aux["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, aux

    def encode_dataset(self, params: Any, data: offline.Trajectories,
                       chunk: int = 256) -> jax.Array:
        """Latents (N, T, D) of every frame of the data set (for the predictor phase),
        replicated over the mesh; each chunk of trajectories is split over the data axis."""
        n_dev = parallel.axis_size(self.mesh, self.pcfg.data_axis)
        chunk = max(n_dev, chunk - chunk % n_dev)
        n = data.num_trajectories
        num_chunks = -(-n // chunk)

        def encode(params, data):
            def one(sub):
                sub = jax.lax.with_sharding_constraint(sub, self.batch_sharding)
                return self.wm.encode_trajectories(params, offline.render_batch(sub, self.env))

            # Pad to whole chunks (one compile), encode chunk by chunk to bound memory.
            padded = jax.tree.map(
                lambda x: jnp.pad(x, [(0, num_chunks * chunk - n)] + [(0, 0)] * (x.ndim - 1),
                                  mode="edge").reshape(num_chunks, chunk, *x.shape[1:]), data)
            latents = jax.lax.map(one, padded)
            return latents.reshape(num_chunks * chunk, *latents.shape[2:])[:n]

        return jax.jit(encode, out_shardings=self.replicated)(params, data)

    def _predictor_update(self, state: TrainState, latents: jax.Array, actions: jax.Array,
                          num_online: jax.Array):
        """One predictor step on ``latents`` (N + M, T, D) and ``actions`` (N + M, T-1, A):
        the offline data set's N rows, then the online buffer's M rows of which the first
        ``num_online`` are filled; a ``train.online_fraction`` of the batch comes from those
        once there are any."""
        cfg = self.config
        step = state.step - cfg.train.num_steps
        n, b = cfg.data.num_trajectories, cfg.train.predictor_batch_size
        n_on = int(round(b * cfg.train.get("online_fraction", 0.0))) if latents.shape[0] > n else 0

        def batch_rows(member):
            # Member 0 draws exactly the rows of a single predictor; the others their own.
            salt = (lambda k: k) if member == 0 else (
                lambda k: jax.random.fold_in(k, 1000 + member))
            idx = offline.batch_indices(salt(jax.random.fold_in(self.order_key, 1)), n, b, step)
            if n_on:
                k = salt(jax.random.fold_in(jax.random.fold_in(self.order_key, 2), step))
                on_idx = n + jax.random.randint(k, (n_on,), 0, jnp.maximum(num_online, 1))
                idx = idx.at[b - n_on:].set(jnp.where(num_online > 0, on_idx, idx[b - n_on:]))
            idx = jax.lax.with_sharding_constraint(idx, self.batch_sharding)
            return jax.lax.with_sharding_constraint((latents[idx], actions[idx]),
                                                    self.batch_sharding)

        if self.wm.num_predictors > 1:
            return self._predictor_ensemble_update(
                state, [batch_rows(m) for m in range(self.wm.num_predictors)])
        z, acts = batch_rows(0)
        if self.wm.z_dim:
            return self._predictor_z_update(state, z, acts)

        def loss_fn(pred_params):
            return self._rollout_mse(state.params, pred_params, z, acts)

        loss, grads = jax.value_and_grad(loss_fn)(state.params["predictor"])
        updates, pred_opt_state = self.pred_optimizer.update(grads, state.pred_opt_state,
                                                             state.params["predictor"])
        params = {**state.params,
                  "predictor": optax.apply_updates(state.params["predictor"], updates)}
        aux = {"predictor_loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params,
                             pred_opt_state=pred_opt_state), aux

    def _rollout_mse(self, params: Any, predictor: Any, lat: jax.Array,
                     acts: jax.Array) -> jax.Array:
        """The predictor phase's loss: MSE of ``predictor``'s rollout from the first latent
        of each row of ``lat`` (B, T, D), driven by ``acts`` (B, T-1, A), against the rest."""
        pred = self.wm.rollout({**params, "predictor": predictor}, lat[:, 0], acts)
        return jnp.mean((pred - lat[:, 1:]) ** 2)

    def _predictor_ensemble_update(self, state: TrainState, batches):
        """The predictor-only step of an ensemble: every member on its own batch, with its
        own optimizer state (and gradient clipping), i.e. trained as a lone predictor."""
        lat = jnp.stack([z for z, _ in batches])  # (K, B, T, D)
        acts = jnp.stack([a for _, a in batches])  # (K, B, T-1, A)
        members = self.phase2_params(state.params)  # (K, ...)

        def member_loss(p, z, a):
            return self._rollout_mse(state.params, p, z, a)

        losses, grads = jax.vmap(jax.value_and_grad(member_loss))(members, lat, acts)
        updates, pred_opt_state = jax.vmap(self.pred_optimizer.update)(
            grads, state.pred_opt_state, members)
        params = self._with_phase2_params(state.params, optax.apply_updates(members, updates))
        aux = {"predictor_loss": losses[0], "ensemble_loss": jnp.mean(losses),
               "grad_norm": optax.tree.norm(jax.tree.map(lambda g: g[0], grads))}
        return state.replace(step=state.step + 1, params=params,
                             pred_opt_state=pred_opt_state), aux

    def _predictor_z_update(self, state: TrainState, lat: jax.Array, acts: jax.Array):
        """The predictor-only step of a latent-variable model: predictor and posterior."""
        cfg = self.config
        key = jax.random.fold_in(state.rng, state.step)
        kl_coeff = cfg.loss.z_kl_coeff / cfg.loss.sim_coeff
        prior_coeff = cfg.loss.get("z_prior_coeff", 1.0) / cfg.loss.sim_coeff
        trained = self.phase2_params(state.params)

        def loss_fn(trained):
            params = self._with_phase2_params(state.params, trained)
            zs, kl = infer_z(self.wm, params, lat, acts, key)
            pred = self.wm.rollout(params, lat[:, 0], acts, zs)
            mse = jnp.mean((pred - lat[:, 1:]) ** 2)
            nll = (prior_nll(self.wm, params, lat[:, :-1], zs, acts)
                   if self.wm.prior_net is not None
                   else jnp.zeros(()))
            return mse + kl_coeff * kl + prior_coeff * nll, (mse, kl, nll)

        (_, (mse, kl, nll)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained)
        updates, pred_opt_state = self.pred_optimizer.update(grads, state.pred_opt_state,
                                                             trained)
        params = self._with_phase2_params(state.params, optax.apply_updates(trained, updates))
        aux = {"predictor_loss": mse, "z_kl": kl, "grad_norm": optax.tree.norm(grads)}
        if self.wm.prior_net is not None:
            aux["z_prior_nll"] = nll
        return state.replace(step=state.step + 1, params=params,
                             pred_opt_state=pred_opt_state), aux


def _collect_online(exp: Experiment, state: TrainState, round_index: int,
                    main: bool) -> TrainState:
    """Runs online collection round ``round_index`` and writes it into ``state.online``.

    With an ensemble of K predictors, round r plans through member r mod K alone: it costs
    what a single predictor's round costs (planning through all K costs K times as much),
    and the rounds collect the exploits of each member in turn."""
    from jepa_jax.planning_eval import build_planner  # imports this module

    t = exp.config.train
    if exp._collector is None:
        planner = build_planner(exp, exp.config, "gradient", ensemble=False)
        exp._collector = online_lib.make_collector(
            planner, exp.env, exp.config.data.length,
            margin=exp.config.planning.start_goal_margin,
            near_wall_fraction=t.get("online_near_wall_fraction", 0.0),
            near_wall_band=tuple(t.get("online_near_wall_band", (0.5, 6.0))))
    t0 = time.time()
    key = jax.random.fold_in(jax.random.fold_in(state.rng, 7), round_index)
    params = state.params
    if exp.wm.num_predictors > 1:
        member = round_index % exp.wm.num_predictors
        params = {**params, "predictor": jax.tree.map(
            lambda x: x[member], exp.wm.predictor_members(params))}
    trajs = jax.block_until_ready(exp._collector(params, key, t.online_trajectories))
    online = online_lib.write(state.online, trajs, round_index * t.online_trajectories)
    if main:
        print(f"online round {round_index + 1}: {t.online_trajectories} planned trajectories "
              f"executed in {time.time() - t0:.1f} s", flush=True)
    return state.replace(online=online)


def _check_health(step: int, metrics: dict[str, float], cfg: ml_collections.ConfigDict):
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingError(f"non-finite {name}={value} at step {step}; stopping "
                                f"(the last checkpoint holds finite parameters)")
    std = metrics.get("embedding_std")
    if std is not None and std < cfg.train.collapse_std_threshold:
        raise TrainingError(
            f"representation collapse at step {step}: embedding_std={std:.2e} < "
            f"train.collapse_std_threshold={cfg.train.collapse_std_threshold}")


def run_diagnostics(exp: Experiment, params: Any, data: diagnostics.DiagnosticData,
                    workdir: Path | None = None) -> dict[str, float]:
    """Diagnostics metrics; with a workdir also writes the PNGs there.

    They run on this process's first device, on a host copy of the parameters (every
    process computes the same numbers; no collectives).
    """
    params = jax.device_put(parallel.to_host(params), jax.local_devices()[0])
    metrics, arrays = diagnostics.evaluate_world_model(exp.wm, params, data, exp.env)
    if workdir is not None:
        plots.save_probe_plot(workdir / "probe.png", arrays, metrics)
        plots.save_rollout_plot(workdir / "rollouts.png", arrays, metrics, env=exp.env)
    return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       *, progress: bool = True,
                       stop_after: int | None = None) -> dict[str, float]:
    """Trains (or resumes) in ``workdir`` and returns the final metrics.

    ``stop_after``: simulate an interruption by raising ``KeyboardInterrupt`` once that
    step has run (tests use it to check that resuming reproduces an uninterrupted run).

    With several processes (``parallel.coordinator_address`` etc., or the ``JAX_*``
    variables) every process runs this same function on the same ``workdir``; all of them
    save and restore the checkpoints, and process 0 alone writes the logs and files.
    """
    parallel.initialize(parallel.parallel_config(config))  # before any JAX computation
    main = parallel.is_main_process()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_lib.check_config_compatible(workdir, config, keys=("model", "env", "data", "loss",
                                                           "seed"),
                                     ignore=("model.compute_dtype",))
    exp = Experiment(config)
    parallel.sync("config checked")  # before process 0 overwrites config.json
    if main:
        ckpt_lib.save_config(workdir, config)
    tcfg = config.train
    final_path = workdir / "final_metrics.json"
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=tcfg.max_to_keep)
    state = exp.init_state()
    start = 0
    if checkpointer.latest_step() is not None:
        start, state = checkpointer.restore(exp.abstract_state())
        log.info("resumed from step %d in %s", start, workdir)
        if main:
            print(f"resuming from step {start} in {workdir}", flush=True)
    writer = (metrics_lib.MetricsWriter(workdir, resume_step=start if start else None)
              if main else metrics_lib.NullWriter())
    diag = diagnostics.make_diagnostic_data(
        jax.random.key(config.diagnostics.seed), exp.env, exp.policy,
        num_probe=config.diagnostics.num_probe, num_heldout=config.diagnostics.num_heldout,
        num_wall=config.diagnostics.num_wall)
    data = exp.data
    total = tcfg.num_steps + tcfg.predictor_steps
    bar = metrics_lib.ProgressBar(total, initial=start, enabled=progress and main,
                                  desc="train")
    cache = None
    rounds = tcfg.get("online_rounds", 0)
    collect_at = online_lib.round_steps(tcfg.predictor_steps, rounds)
    pending: list[dict[str, jax.Array]] = []
    t_last, step_last = time.time(), start
    final: dict[str, float] = {}
    try:
        for step in range(start, total):
            if step < tcfg.num_steps:
                state, aux = exp.update(state, data)
            else:
                local = step - tcfg.num_steps
                if cache is None:  # entering the predictor phase (or resuming inside it)
                    if local == 0 and tcfg.get("predictor_reinit", False):
                        state = exp.reinit_predictor(state)
                    cache = exp.encode_dataset(state.params, data)
                    lat, acts = cache, data.actions
                if rounds and local in collect_at:
                    state = _collect_online(exp, state, collect_at.index(local), main)
                    lat = jnp.concatenate([cache, exp.encode_dataset(state.params,
                                                                     state.online)])
                    acts = jnp.concatenate([data.actions, state.online.actions])
                elif rounds and lat is cache:  # resumed: the buffer came with the state
                    lat = jnp.concatenate([cache, exp.encode_dataset(state.params,
                                                                     state.online)])
                    acts = jnp.concatenate([data.actions, state.online.actions])
                filled = sum(s <= local for s in collect_at) * tcfg.get("online_trajectories", 0)
                state, aux = exp.predictor_update(state, lat, acts, jnp.int32(filled))
            pending.append(aux)
            done = step + 1
            if done % tcfg.log_every == 0 or done in (tcfg.num_steps, total):
                host = jax.device_get(pending)
                mean = {k: float(np.mean([p[k] for p in host])) for k in host[0]}
                pending = []
                _check_health(done, mean, config)
                now = time.time()
                mean["steps_per_s"] = (done - step_last) / max(now - t_last, 1e-9)
                batch = tcfg.batch_size if done <= tcfg.num_steps else tcfg.predictor_batch_size
                mean["frames_per_s"] = mean["steps_per_s"] * batch * config.data.length
                t_last, step_last = now, done
                writer.write_scalars(done, {f"train/{k}": v for k, v in mean.items()})
                writer.flush()
                bar.update(done, {k: mean[k] for k in ("loss", "embedding_std",
                                                       "predictor_loss") if k in mean})
            else:
                bar.update(done)
            if done % tcfg.checkpoint_every == 0 or done in (tcfg.num_steps, total):
                checkpointer.save(done, state, force=True)
            if stop_after is not None and done >= stop_after:
                raise KeyboardInterrupt(f"stop_after={stop_after}")
            is_eval = tcfg.eval_every and done % tcfg.eval_every == 0
            if is_eval or done == total:
                final = run_diagnostics(exp, state.params, diag,
                                        workdir if done == total and main else None)
                writer.write_scalars(done, {f"eval/{k}": v for k, v in final.items()})
                writer.flush()
        if not final:  # resumed after the last step
            if final_path.exists():
                final = json.loads(final_path.read_text())
            else:
                final = run_diagnostics(exp, state.params, diag, workdir if main else None)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
    if main:
        final_path.write_text(json.dumps(final, indent=2))
    return final


def load_trained(workdir: str | Path, overrides=()) -> tuple[ml_collections.ConfigDict,
                                                              Experiment, Any]:
    """``(config, experiment, params)`` of the model trained in ``workdir`` (latest
    checkpoint). ``overrides`` (``--config.a.b=v`` strings) may change non-model settings,
    e.g. planning. Raises FileNotFoundError / CheckpointError with a one-line message."""
    from jepa_jax import configs

    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(f"no trained model in {workdir}: config.json is missing "
                                f"(train first with python -m jepa_jax.train)")
    config = ckpt_lib.load_config(workdir)
    _tuples(config)
    _add_planner_defaults(config)
    config.lock()
    stored_model = config.model.to_dict()
    configs.apply_overrides(config, overrides)
    for key, value in config.model.items():  # e.g. a z_dim that is not the checkpoint's
        if value != stored_model.get(key):
            raise ValueError(f"model.{key}={value!r} does not match the checkpoint in "
                             f"{workdir} (model.{key}={stored_model.get(key)!r}); the model "
                             f"section cannot be overridden")
    exp = Experiment(config)
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", max_to_keep=10 ** 6)
    try:
        if checkpointer.latest_step() is None:
            raise FileNotFoundError(f"no trained model in {workdir}: no checkpoint")
        _, state = checkpointer.restore(exp.abstract_state())
    finally:
        checkpointer.close()
    return config, exp, state.params


def _add_planner_defaults(config: ml_collections.ConfigDict) -> None:
    """Adds to each stored planner section (``config.planning.<name>``) the planner's own
    settings it does not list, and to ``config.planning.cost`` the cost weights
    (``cost.CostWeights``) it does not list, at their defaults: they change nothing (the
    planner would use the same defaults) but can then be overridden on the command line,
    also for a workdir trained before a setting existed."""
    from jepa_jax.planning import base as planning_base

    planning = config.get("planning")
    if planning is None:
        return
    for name in planning_base.PLANNER_NAMES:
        section = planning.get(name)
        if isinstance(section, ml_collections.ConfigDict):
            for key, value in planning_base.default_config(name).items():
                if key not in section and key not in planning_base.COMMON_DEFAULTS:
                    section[key] = value
    cost = planning.get("cost")
    if isinstance(cost, ml_collections.ConfigDict):  # the cost terms, e.g. reach_weight
        for key, value in dataclasses.asdict(cost_lib.CostWeights()).items():
            if key not in cost:
                cost[key] = value


def _tuples(config: ml_collections.ConfigDict) -> None:
    """JSON turns tuples into lists; the modules expect tuples (hashable, static)."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            _tuples(value)
        elif isinstance(value, list):
            config[key] = tuple(value)
