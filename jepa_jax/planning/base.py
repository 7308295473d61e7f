"""One interface for the planners: ``make_planner(name, world_model, cost_fn, config)``.

A ``Planner`` optimises an action sequence (H, A) so that the world model's predicted latent
trajectory minimises ``cost_fn(states, actions, goal)``::

    planner = make_planner("gradient", world_model, cost_fn, {"horizon": 16})
    state = planner.init_state(action_dim=2)
    plan = jax.jit(planner.plan)
    actions, info = plan(params, obs, goal_obs, key, state)   # actions (H, A)
    state = info["state"]                                      # warm start for the next call

``plan`` encodes ``obs`` and ``goal_obs`` once per call, rolls out with ``lax.scan`` (fixed
shapes), is pure, jits once and vmaps over a batch of problems
(``jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0))``).

Each planner module (``gradient``, ``cem``, ``mppi``) provides ``DEFAULTS``, ``validate(cfg)``
and ``optimize(cfg, objective, init_actions, key) -> (actions, cost_per_iter, extra_info)``,
where ``objective(actions (H, A)) -> scalar`` already closes over the encoded start and goal.

Planning under uncertainty: with a world model that has a latent variable
(``world_model.z_dim > 0``), each ``plan`` call draws ``z_samples`` = K futures from the
model's prior (K noise sequences; z_t is drawn from the prior at each predicted state s_t,
so a learned prior ``p(z | s)`` gives each state its own spread), and the objective of an
action sequence becomes a risk measure (``risk``: "mean", "cvar" at level ``cvar_alpha``,
or "worst"; see :func:`jepa_jax.cost.risk_measure`) of the costs of the K sampled futures.
The noise is drawn once per call and shared by every iterate and restart (common random
numbers), so the objective is a deterministic function of the actions (differentiable but
for a learned prior's choice of mixture component) and restarts compare fairly. The
gradient planner can make its final choice on ``select_samples`` futures drawn afresh (see
:mod:`jepa_jax.planning.gradient`). With ``z_dim == 0`` nothing of this is traced and
``z_samples`` must be 1 and ``select_samples`` 0.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from jepa_jax.cost import RISK_MEASURES, CostFn, risk_measure

PLANNER_NAMES = ("cem", "gradient", "mppi")
SHIFT_FILLS = ("repeat", "zero")

COMMON_DEFAULTS: dict[str, Any] = {
    "horizon": 16,  # H, number of planned actions
    "action_bound": 2.45,  # norm-ball radius per step (PLDM's max_step); math.inf: unbounded
    "shift": 1,  # warm start = plan shifted by this many steps (= replanning period)
    "shift_fill": "repeat",  # "repeat" the last action or "zero" in the freed steps
    "z_samples": 1,  # K futures sampled from the prior of z (world models with z_dim > 0)
    "risk": "mean",  # how the K futures' costs become one: "mean", "cvar", "var", "worst"
    "cvar_alpha": 0.25,  # tail fraction of "cvar" (mean of the worst ceil(alpha * K) costs)
    # and "var" (the ceil(alpha * K)-th worst)
}

Objective = Callable[[jax.Array], jax.Array]
"""``objective(actions (H, A)) -> scalar``."""


class WorldModelLike(Protocol):
    """What planners use of a world model: pure functions of explicit ``params``, unbatched.

    A world model with a latent variable also has ``z_dim > 0``, ``sample_noise(key,
    shape) -> (*shape, noise_dim)`` and ``rollout_noise(params, s0, actions (H, A), noise
    (H, noise_dim)) -> (H, D)``, a future sampled from its prior (see
    ``jepa_jax.world_model.WorldModel``); without ``z_dim`` it counts as deterministic.
    """

    def encode(self, params: Any, obs: jax.Array) -> jax.Array:
        """One observation (e.g. (H, W, C)) -> latent (D,)."""
        ...

    def predict(self, params: Any, s: jax.Array, a: jax.Array, z: Any = None) -> jax.Array:
        """Latent (D,), action (A,), optional latent variable z -> next latent (D,)."""
        ...


@struct.dataclass
class PlannerState:
    """Fixed-shape state carried between ``plan`` calls.

    Attributes:
      actions: (H, A) warm-start action sequence (or (..., H, A) when batched).
    """

    actions: jax.Array


def clip_by_norm(actions: jax.Array, bound: float) -> jax.Array:
    """Projects each action onto the norm ball of radius ``bound`` (vectors inside unchanged).

    Args:
      actions: (..., A).
      bound: radius > 0; ``math.inf`` or None leaves actions unchanged.

    Returns:
      (..., A) with ``|a| <= bound`` (up to rounding).
    """
    if bound is None or math.isinf(bound):
        return actions
    n2 = jnp.sum(jnp.square(actions), axis=-1, keepdims=True)
    # Double `where` keeps the gradient finite at a = 0.
    safe = jnp.sqrt(jnp.where(n2 > 0, n2, 1.0))
    return actions * jnp.where(n2 > bound**2, bound / safe, 1.0)


def rollout(
    world_model: WorldModelLike, params: Any, s0: jax.Array, actions: jax.Array, z: Any = None
) -> jax.Array:
    """Predicts the latent trajectory of an action sequence with ``lax.scan``.

    Args:
      world_model: see ``WorldModelLike``.
      params: world-model parameters.
      s0: (D,) start latent.
      actions: (H, A).
      z: optional latent variable, (H, z_dim): ``z[t]`` drives the step from s_t.

    Returns:
      (H, D) predicted latents s_1..s_H (s_0 excluded).
    """
    if z is None:

        def step(s, a):
            s_next = world_model.predict(params, s, a)
            return s_next, s_next

        _, states = jax.lax.scan(step, s0, actions)
        return states

    def step_z(s, inputs):
        a, zt = inputs
        s_next = world_model.predict(params, s, a, zt)
        return s_next, s_next

    _, states = jax.lax.scan(step_z, s0, (actions, z))
    return states


def shift_plan(actions: jax.Array, shift: int, fill: str = "repeat") -> jax.Array:
    """Warm start for the next call: drops the ``shift`` executed steps and pads the end.

    Args:
      actions: (H, A) plan.
      shift: steps executed before replanning, >= 0 (static); >= H leaves only padding.
      fill: "repeat" the last action or "zero".

    Returns:
      (H, A) shifted plan.
    """
    horizon = actions.shape[0]
    shift = min(shift, horizon)
    if shift == 0:
        return actions
    pad = actions[-1:] if fill == "repeat" else jnp.zeros_like(actions[-1:])
    return jnp.concatenate([actions[shift:], jnp.repeat(pad, shift, axis=0)], axis=0)


@dataclasses.dataclass(frozen=True, eq=False)
class Planner:
    """A configured planner; build it with ``make_planner``.

    Hashes by identity (``eq=False``), so it can be a static argument of ``jax.jit``.

    Attributes:
      name: one of ``PLANNER_NAMES``.
      world_model: see ``WorldModelLike``.
      cost_fn: ``(states (H, D), actions (H, A), goal (D,)) -> scalar``.
      config: validated settings, defaults filled in.
      optimize: the planner's ``optimize(cfg, objective, init_actions, key)``.
    """

    name: str
    world_model: WorldModelLike
    cost_fn: CostFn
    config: ml_collections.FrozenConfigDict
    optimize: Callable[..., tuple[jax.Array, jax.Array, dict[str, jax.Array]]]

    @property
    def horizon(self) -> int:
        return self.config.horizon

    def init_state(self, action_dim: int, batch_shape: tuple[int, ...] = ()) -> PlannerState:
        """Zero warm start.

        Args:
          action_dim: A.
          batch_shape: leading batch dims, e.g. ``(num_envs,)`` for a vmapped ``plan``.

        Returns:
          ``PlannerState`` with actions of shape ``(*batch_shape, H, A)``.
        """
        return PlannerState(actions=jnp.zeros((*batch_shape, self.horizon, action_dim)))

    def plan(
        self,
        params: Any,
        obs: jax.Array,
        goal_obs: jax.Array,
        key: jax.Array,
        state: PlannerState,
        z: Any = None,
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Plans H actions from ``obs`` toward ``goal_obs`` (one unbatched problem).

        Args:
          params: world-model parameters.
          obs: one observation, the shape ``world_model.encode`` takes.
          goal_obs: goal observation, same shape as ``obs``.
          key: PRNG key.
          state: ``PlannerState`` with actions (H, A), e.g. ``info["state"]`` of the last call.
          z: only for world models with a latent variable: the futures to plan against,
            (K, H, z_dim) or (H, z_dim) (K = 1); None draws ``z_samples`` of them from the
            prior with ``key``.

        Returns:
          ``(actions, info)``: actions (H, A) within the bound; info has ``cost_per_iter``
          (num_iters,) (cost of the current iterate before each update), ``final_cost`` (cost
          of the returned plan), ``states`` (H, D) its predicted latents, ``state`` (the next
          ``PlannerState``: the plan shifted by ``shift`` steps), plus planner-specific entries.
          With a latent variable, ``states`` is the rollout at z = 0 (the prior's mean),
          ``final_cost`` the risk measure over the samples, and ``sample_states`` (K, H, D)
          and ``sample_costs`` (K,) are the sampled futures of the plan and their costs.

        Raises:
          ValueError: at trace time, on mismatched shapes or a z the model cannot take.
        """
        cfg = self.config
        obs, goal_obs = jnp.asarray(obs), jnp.asarray(goal_obs)
        if obs.shape != goal_obs.shape:
            raise ValueError(f"goal_obs shape {goal_obs.shape} differs from obs shape {obs.shape}")
        init_actions = state.actions
        if init_actions.ndim != 2 or init_actions.shape[0] != cfg.horizon:
            raise ValueError(
                f"state.actions must have shape (horizon={cfg.horizon}, A), got "
                f"{init_actions.shape}; build it with init_state and vmap plan over batches"
            )
        z_dim = getattr(self.world_model, "z_dim", 0)
        if z_dim or z is not None:
            return self._plan_z(params, obs, goal_obs, key, init_actions, z, z_dim)
        # Encoded once per call: the objective closes over the latents, never over obs.
        s0 = self.world_model.encode(params, obs)
        goal = self.world_model.encode(params, goal_obs)

        def objective(actions: jax.Array) -> jax.Array:
            states = rollout(self.world_model, params, s0, actions, z)
            return self.cost_fn(states, actions, goal)

        kwargs = {}
        if cfg.get("num_perturbations", 0):  # gradient: a final choice among more candidates
            kwargs["select"] = lambda candidates, _: jax.vmap(objective)(candidates)
        actions, cost_per_iter, extra = self.optimize(cfg, objective, init_actions, key,
                                                      **kwargs)
        actions = clip_by_norm(actions, cfg.action_bound)  # guards rounding of the planners
        states = rollout(self.world_model, params, s0, actions, z)
        info = {
            "cost_per_iter": cost_per_iter,
            "final_cost": self.cost_fn(states, actions, goal),
            "states": states,
            "state": PlannerState(actions=shift_plan(actions, cfg.shift, cfg.shift_fill)),
            **extra,
        }
        return actions, info


    def _plan_z(self, params, obs, goal_obs, key, init_actions, z, z_dim):
        """``plan`` for a world model with a latent variable: K sampled futures per plan."""
        cfg = self.config
        if not z_dim:
            raise ValueError("z was given, but the world model has no latent variable "
                             "(z_dim=0)")
        wm = self.world_model
        s0 = wm.encode(params, obs)
        goal = wm.encode(params, goal_obs)
        if z is None:  # K futures from the prior, drawn along each rollout
            key, k_z = jax.random.split(key)
            noise = wm.sample_noise(k_z, (cfg.z_samples, cfg.horizon))

            def future(actions, n):
                return wm.rollout_noise(params, s0, actions, n)
        else:  # the given z sequences
            noise = jnp.asarray(z)
            if noise.ndim == 2:
                noise = noise[None]
            if noise.ndim != 3 or noise.shape[1:] != (cfg.horizon, z_dim):
                raise ValueError(f"z must have shape (K, horizon={cfg.horizon}, z_dim={z_dim}) "
                                 f"or (horizon, z_dim), got {tuple(noise.shape)}")

            def future(actions, zk):
                return rollout(wm, params, s0, actions, zk)

        def sample_costs(actions, noises=noise):
            states = jax.vmap(lambda n: future(actions, n))(noises)
            costs = jax.vmap(lambda st: self.cost_fn(st, actions, goal))(states)
            return costs, states

        def objective(actions: jax.Array, noises=noise) -> jax.Array:
            return risk_measure(sample_costs(actions, noises)[0], cfg.risk, cfg.cvar_alpha)

        kwargs = {}
        if z is None and cfg.get("z_resample", False):  # fresh futures for each step
            kwargs["sample_objective"] = lambda actions, k: objective(
                actions, wm.sample_noise(k, (cfg.z_samples, cfg.horizon)))
        if cfg.get("select_samples", 0) or cfg.get("num_perturbations", 0):
            num_select = cfg.select_samples or cfg.z_samples

            select_risk = cfg.get("select_risk", "") or cfg.risk

            def select(candidates, k):  # fresh futures, shared by all candidates
                fresh = (wm.sample_noise(k, (num_select, cfg.horizon)) if z is None
                         else noise)
                costs = jax.vmap(lambda actions: sample_costs(actions, fresh)[0])(candidates)
                return risk_measure(costs, select_risk, cfg.cvar_alpha)

            kwargs["select"] = select
        actions, cost_per_iter, extra = self.optimize(cfg, objective, init_actions, key,
                                                      **kwargs)
        actions = clip_by_norm(actions, cfg.action_bound)
        costs, sample_states = sample_costs(actions)
        mean_states = rollout(wm, params, s0, actions, jnp.zeros((cfg.horizon, z_dim)))
        info = {
            "cost_per_iter": cost_per_iter,
            "final_cost": risk_measure(costs, cfg.risk, cfg.cvar_alpha),
            "states": mean_states,
            "sample_states": sample_states,
            "sample_costs": costs,
            "state": PlannerState(actions=shift_plan(actions, cfg.shift, cfg.shift_fill)),
            **extra,
        }
        return actions, info


def default_config(name: str) -> ml_collections.ConfigDict:
    """The full default config of a planner (common keys plus its own), to edit and pass on."""
    return ml_collections.ConfigDict({**COMMON_DEFAULTS, **_module(name).DEFAULTS})


def make_planner(
    name: str, world_model: WorldModelLike, cost_fn: CostFn, config: Any = None
) -> Planner:
    """Builds a planner, validating its config before anything is traced.

    Args:
      name: "gradient", "cem" or "mppi".
      world_model: see ``WorldModelLike``.
      cost_fn: ``(states (H, D), actions (H, A), goal (D,)) -> scalar``, e.g. from ``make_cost``.
      config: ConfigDict / mapping overriding ``default_config(name)``, or None.

    Returns:
      The ``Planner``.

    Raises:
      ValueError: unknown name, unknown keys or bad values (one line each).
    """
    module = _module(name)
    cfg = merged_config(config, {**COMMON_DEFAULTS, **module.DEFAULTS}, f"{name} planner")
    _validate_common(cfg)
    module.validate(cfg)
    z_dim = getattr(world_model, "z_dim", 0)
    if cfg["z_samples"] > 1 and not z_dim:
        raise ValueError(f"z_samples={cfg['z_samples']} needs a world model with a latent "
                         f"variable; this one has z_dim=0 (use z_samples=1)")
    if cfg.get("select_samples", 0) and not z_dim:
        raise ValueError(f"select_samples={cfg['select_samples']} needs a world model with a "
                         f"latent variable; this one has z_dim=0 (use select_samples=0)")
    return Planner(
        name=name,
        world_model=world_model,
        cost_fn=cost_fn,
        config=ml_collections.FrozenConfigDict(cfg),
        optimize=module.optimize,
    )


def check_int(cfg: Mapping[str, Any], key: str, minimum: int) -> None:
    """Raises a one-line ValueError unless ``cfg[key]`` is an int >= minimum."""
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def check_float(
    cfg: Mapping[str, Any], key: str, *, minimum: float = 0.0, strict: bool = False
) -> None:
    """Raises a one-line ValueError unless ``cfg[key]`` is a number >= (or > if strict) minimum."""
    value = cfg[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        op = ">" if strict else ">="
        raise ValueError(f"{key} must be a number {op} {minimum}, got {value!r}")


def check_choice(cfg: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> None:
    """Raises a one-line ValueError unless ``cfg[key]`` is one of ``choices``."""
    if cfg[key] not in choices:
        raise ValueError(f"unknown {key} {cfg[key]!r}; valid values: {', '.join(choices)}")


def _validate_common(cfg: dict[str, Any]) -> None:
    check_int(cfg, "horizon", 1)
    check_int(cfg, "shift", 0)
    check_float(cfg, "action_bound", strict=True)
    check_choice(cfg, "shift_fill", SHIFT_FILLS)
    check_int(cfg, "z_samples", 1)
    check_choice(cfg, "risk", RISK_MEASURES)
    check_float(cfg, "cvar_alpha", minimum=0.0, strict=True)
    if cfg["cvar_alpha"] > 1:
        raise ValueError(f"cvar_alpha must be in (0, 1], got {cfg['cvar_alpha']!r}")


def _module(name: str):
    if name not in PLANNER_NAMES:
        raise ValueError(f"unknown planner {name!r}; valid names: {', '.join(PLANNER_NAMES)}")
    # Imported lazily: the planner modules import helpers from this one.
    return importlib.import_module(f"jepa_jax.planning.{name}")


def merged_config(config: Any, defaults: dict[str, Any], what: str) -> dict[str, Any]:
    """``defaults`` overridden by ``config`` (a ConfigDict, a mapping or None); one-line
    ValueError naming unknown keys (``what``: e.g. "gradient planner")."""
    values = _to_dict(config)
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; valid keys: "
                         f"{', '.join(defaults)}")
    return {**defaults, **values}


def _to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):  # ml_collections ConfigDict / FrozenConfigDict
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    raise ValueError(f"config must be a ConfigDict, a mapping or None, got {type(config).__name__}")
