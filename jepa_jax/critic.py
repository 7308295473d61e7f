"""The trainable critic: ``V(s, g)``, the discounted intrinsic cost still to come.

The intrinsic cost of a state is the bounded reach cost ``c(s) = 1 - exp(-|s - g|^2 /
reach_scale)`` (``jepa_jax.cost.step_reach_cost``): about 1 per step away from the goal, so
``V`` is a discounted time-to-goal, in ``[0, 1 / (1 - gamma)]``. ``V(s)`` counts the costs of
the states *after* s: ``V(s_t) = E[c(s_{t+1}) + gamma V(s_{t+1})]``. A plan's total is then
``sum_{t=1..H} gamma^(t-1) c(s_t) + gamma^H V(s_H)``, which is what ``cost_config`` asks the
planners for (``cost = intrinsic + critic``); every planner takes it through ``make_cost``.

Training data are transitions in short-term memory (``jepa_jax.memory``), collected by the
agent acting in closed loop; targets are TD(lambda) returns (or n-step returns) computed
along each episode's transitions with the current critic, refreshed every
``target_every`` updates (a target network that is the critic of the last round)::

    critic = make_critic(cfg, latent_dim=wm.latent_dim, reach_scale=scale)
    params = critic.init(key)
    data = transitions_from_memory(memories)          # (E, N) episodes of transitions
    params, metrics = train_critic(critic, params, data, cfg, key)
    cost_fn = make_cost(cost_config(critic, horizon=8, weight=1.0), critic_fn=...)

These are policy-evaluation targets: the critic learns the cost-to-go of the policy that
collected the data, and planning on top of it with a short horizon is one step of policy
improvement; collecting again with the improved agent and refitting is the next one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jepa_jax import configs, head_checkpoint
from jepa_jax.cost import CriticFn, step_reach_cost
from jepa_jax.memory import Memory, ordered
from jepa_jax.networks.heads import CriticNet

TARGETS = ("td_lambda", "n_step")
METHODS = ("value_iteration", "td")
"""How ``jepa_jax.agent_training`` fits the critic: regression on value iteration over
sampled states (``jepa_jax.value_iteration``), or TD targets on closed-loop memories."""

DEFAULTS: dict[str, Any] = {
    "method": "value_iteration",  # see METHODS
    "hidden": (256, 256),
    "gamma": 0.98,  # discount of the cost-to-go (horizon about 1 / (1 - gamma) steps)
    "target": "td_lambda",  # "td_lambda" or "n_step"
    "lam": 0.9,  # lambda of TD(lambda)
    "n_step": 8,  # n of n-step targets
    "num_steps": 3000,  # Adam updates
    "batch_size": 512,
    "learning_rate": 1e-3,
    "target_every": 500,  # updates between refreshes of the targets
}


@dataclasses.dataclass(frozen=True, eq=False)
class Critic:
    """A configured critic (hashes by identity, so it can be a static jit argument).

    Attributes:
      net: the Flax module (``CriticNet``).
      latent_dim: D of the world model it was built for.
      gamma: discount.
      reach_scale: scale of the intrinsic reach cost it predicts the sum of.
    """

    net: CriticNet
    latent_dim: int
    gamma: float
    reach_scale: float

    @property
    def v_max(self) -> float:
        return 1.0 / (1.0 - self.gamma)

    def init(self, key: jax.Array) -> Any:
        s = jnp.zeros((1, self.latent_dim), jnp.float32)
        return self.net.init(key, s, s)

    def value(self, params: Any, s: jax.Array, g: jax.Array) -> jax.Array:
        """``V(s, g)``: s (..., D), g (..., D) -> (...)."""
        if s.shape[-1] != self.latent_dim:
            raise ValueError(f"critic takes latents of dimension {self.latent_dim}, got "
                             f"{s.shape[-1]}")
        return self.net.apply(params, s, g)

    def step_cost(self, s: jax.Array, g: jax.Array) -> jax.Array:
        """The intrinsic cost ``c(s)`` whose discounted sum V predicts: (..., D) -> (...)."""
        return step_reach_cost(s, g, self.reach_scale)

    def critic_fn(self, params: Any) -> CriticFn:
        """``critic_fn(final_state, goal) -> scalar`` for ``make_cost``."""
        return lambda s, g: self.value(params, s, g)

    def meta(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "hidden": list(self.net.hidden),
                "gamma": self.gamma, "reach_scale": self.reach_scale}


def make_critic(cfg: Mapping[str, Any] | Any, latent_dim: int, reach_scale: float) -> Critic:
    """Builds a ``Critic`` from a config section (keys of ``DEFAULTS``; others ignored)."""
    c = configs.with_defaults(cfg, DEFAULTS)
    validate(c)
    if not reach_scale > 0 or not math.isfinite(reach_scale):
        raise ValueError(f"reach_scale must be a finite number > 0, got {reach_scale!r}")
    gamma = float(c["gamma"])
    net = CriticNet(hidden=tuple(c["hidden"]), v_max=1.0 / (1.0 - gamma))
    return Critic(net=net, latent_dim=int(latent_dim), gamma=gamma,
                  reach_scale=float(reach_scale))


def validate(c: Mapping[str, Any]) -> None:
    """One-line ValueErrors for a bad critic config."""
    if not 0.0 <= c["gamma"] < 1.0:
        raise ValueError(f"critic gamma must be in [0, 1), got {c['gamma']!r}")
    if not 0.0 <= c["lam"] <= 1.0:
        raise ValueError(f"critic lam must be in [0, 1], got {c['lam']!r}")
    if c["method"] not in METHODS:
        raise ValueError(f"unknown critic method {c['method']!r}; valid: {', '.join(METHODS)}")
    if c["target"] not in TARGETS:
        raise ValueError(f"unknown critic target {c['target']!r}; valid: {', '.join(TARGETS)}")
    for key in ("n_step", "num_steps", "batch_size", "target_every"):
        if not isinstance(c[key], int) or c[key] < 1:
            raise ValueError(f"critic {key} must be an integer >= 1, got {c[key]!r}")
    if not c["learning_rate"] > 0:
        raise ValueError(f"critic learning_rate must be > 0, got {c['learning_rate']!r}")


def cost_config(critic: Critic, horizon: int, weight: float = 1.0,
                goal_weight: float = 0.0, action_weight: float = 0.0) -> dict[str, Any]:
    """Cost weights for planning with the critic (``make_cost`` keys).

    ``reach_cost`` over the H planned states with the critic's discount, plus
    ``weight * gamma^H * V(s_H, g)``: with ``weight=1`` this is the critic's own estimate of a
    plan's total cost. ``goal_weight`` optionally keeps the dense squared-distance term.
    ``action_weight`` adds ``mean_t |a_t|^2``: far from the goal the reach cost is flat, so
    every path to the same end state costs the same; a small energy term picks the smooth one
    among them, which makes the plan's first action well defined (Mode-1 learns from it).
    """
    return {"goal_weight": float(goal_weight), "goal_mode": "dense",
            "reach_weight": 1.0, "reach_scale": critic.reach_scale,
            "reach_discount": critic.gamma, "action_weight": float(action_weight),
            "critic_weight": float(weight) * critic.gamma ** horizon}


# ----------------------------------------------------------------------------- targets


def td_lambda_targets(costs: jax.Array, next_values: jax.Array, continues: jax.Array,
                      gamma: float, lam: float) -> jax.Array:
    """TD(lambda) returns along a sequence of transitions, by a reverse ``lax.scan``.

    ``G_t = c_t + gamma ((1 - l_t) V'_t + l_t G_{t+1})`` with ``l_t = lam * continues_t``:
    where the next entry does not continue this one (an episode boundary, or the last
    entry), the return bootstraps on ``V'_t`` alone. ``lam=0`` is the one-step TD target;
    ``lam=1`` the Monte-Carlo return bootstrapped at the end of each run.

    Args:
      costs: (T,) ``c_t``, the intrinsic cost of the state transition t arrived in.
      next_values: (T,) ``V'_t = V(s_{t+1}, g)``.
      continues: (T,) bool, whether transition t+1 starts where transition t ended.
      gamma: discount in [0, 1).
      lam: in [0, 1].

    Returns:
      (T,) targets for ``V(s_t, g)``.
    """
    _check_seq(costs, next_values, continues)
    cont = continues.at[-1].set(False).astype(costs.dtype)

    def body(g_next, x):
        c, v, k = x
        g = c + gamma * ((1.0 - lam * k) * v + lam * k * g_next)
        return g, g

    _, out = jax.lax.scan(body, next_values[-1], (costs, next_values, cont), reverse=True)
    return out


def n_step_targets(costs: jax.Array, next_values: jax.Array, continues: jax.Array,
                   gamma: float, n: int) -> jax.Array:
    """n-step returns ``sum_{k<m} gamma^k c_{t+k} + gamma^m V(s_{t+m})``, m = min(n, run).

    Same arguments as ``td_lambda_targets``; ``n`` >= 1 (static). A run ends at an entry whose
    successor does not continue it, and the return bootstraps there.
    """
    _check_seq(costs, next_values, continues)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cont = continues.at[-1].set(False)
    g = costs + gamma * next_values  # n = 1
    for _ in range(n - 1):
        shifted = jnp.concatenate([g[1:], g[-1:]])
        g = costs + gamma * jnp.where(cont, shifted, next_values)
    return g


def _check_seq(costs, next_values, continues):
    if costs.ndim != 1 or next_values.shape != costs.shape or continues.shape != costs.shape:
        raise ValueError(f"expected costs, next_values and continues of one shape (T,), got "
                         f"{costs.shape}, {next_values.shape} and {continues.shape}")


# ----------------------------------------------------------------------------- data


@struct.dataclass
class Transitions:
    """Episodes of transitions: leading axes (E, N), entries oldest first.

    Attributes:
      state, next_state, goal: (E, N, D). cost: (E, N). valid, continues: (E, N) bool.
    """

    state: jax.Array
    next_state: jax.Array
    goal: jax.Array
    cost: jax.Array
    valid: jax.Array
    continues: jax.Array


def transitions_from_memory(memories: Memory) -> Transitions:
    """Orders a batch of per-episode memories (leading axis E) into ``Transitions``.

    ``continues`` marks entries whose successor was written right after them (consecutive
    writes of one episode's memory are consecutive steps).
    """
    def one(mem):
        m, _ = ordered(mem)
        nxt_written = jnp.concatenate([m.written[1:], jnp.full((1,), -1, m.written.dtype)])
        nxt_valid = jnp.concatenate([m.valid[1:], jnp.zeros((1,), bool)])
        cont = m.valid & nxt_valid & (nxt_written == m.written + 1)
        return Transitions(state=m.state, next_state=m.next_state, goal=m.goal, cost=m.cost,
                           valid=m.valid, continues=cont)

    return jax.jit(jax.vmap(one))(memories)


def concat_transitions(parts: list[Transitions]) -> Transitions:
    """Joins episode batches of the same N along E."""
    return jax.tree.map(lambda *x: jnp.concatenate(x, 0), *parts)


# ----------------------------------------------------------------------------- training


def compute_targets(critic: Critic, params: Any, data: Transitions, cfg: Mapping[str, Any]
                    ) -> jax.Array:
    """(E, N) targets of every entry under ``params`` (TD(lambda) or n-step, per ``cfg``)."""
    c = configs.with_defaults(cfg, DEFAULTS)
    return _targets(critic, params, data, c["target"], float(c["lam"]), int(c["n_step"]))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _targets(critic, params, data, kind, lam, n):
    next_v = critic.value(params, data.next_state, data.goal)
    if kind == "td_lambda":
        fn = lambda c, v, k: td_lambda_targets(c, v, k, critic.gamma, lam)
    else:
        fn = lambda c, v, k: n_step_targets(c, v, k, critic.gamma, n)
    return jax.vmap(fn)(data.cost, next_v, data.continues)


def critic_loss(critic: Critic, params: Any, s: jax.Array, g: jax.Array,
                targets: jax.Array) -> jax.Array:
    """``mean((V(s, g) - target)^2) / v_max^2``: s, g (B, D), targets (B,)."""
    if targets.shape != s.shape[:-1]:
        raise ValueError(f"targets have shape {targets.shape}, states {s.shape}")
    err = critic.value(params, s, g) - jax.lax.stop_gradient(targets)
    return jnp.mean(jnp.square(err)) / critic.v_max ** 2


def train_critic(critic: Critic, params: Any, data: Transitions, cfg: Mapping[str, Any] | Any,
                 key: jax.Array, progress_fn: Callable[[int, dict[str, float]], None] | None
                 = None) -> tuple[Any, dict[str, Any]]:
    """Fits the critic to TD targets on ``data``; returns ``(params, metrics)``.

    Every ``target_every`` updates the targets of all entries are recomputed with the
    current parameters; in between, Adam steps on minibatches drawn uniformly from the
    valid entries. ``progress_fn(step, metrics)`` is called after each round.
    """
    c = configs.with_defaults(cfg, DEFAULTS)
    validate(c)
    valid = np.asarray(data.valid).reshape(-1)
    flat_idx = jnp.asarray(np.flatnonzero(valid))
    if flat_idx.size == 0:
        raise ValueError("no valid transitions to train the critic on")
    lr = float(c["learning_rate"])
    opt_state = optax.adam(lr).init(params)
    d = data.state.shape[-1]
    states = data.state.reshape(-1, d)[flat_idx]
    goals = data.goal.reshape(-1, d)[flat_idx]
    history = []
    step = 0
    rounds = -(-c["num_steps"] // c["target_every"])
    for r in range(rounds):
        targets = compute_targets(critic, params, data, c).reshape(-1)[flat_idx]
        n = min(c["target_every"], c["num_steps"] - step)
        params, opt_state, losses = _fit_round(critic, lr, n, c["batch_size"], params,
                                               opt_state, states, goals, targets,
                                               jax.random.fold_in(key, r))
        step += n
        m = {"loss": float(jnp.mean(losses)), "target_mean": float(jnp.mean(targets)),
             "target_std": float(jnp.std(targets))}
        history.append({"step": step, **m})
        if progress_fn is not None:
            progress_fn(step, m)
    targets = compute_targets(critic, params, data, c).reshape(-1)[flat_idx]
    pred = critic.value(params, states, goals)
    resid = float(jnp.var(pred - targets))
    metrics = {"history": history, "num_transitions": int(flat_idx.size),
               "explained_variance": 1.0 - resid / max(float(jnp.var(targets)), 1e-12),
               "final_loss": history[-1]["loss"]}
    return params, metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _fit_round(critic, lr, num, batch, params, opt_state, states, goals, targets, key):
    tx = optax.adam(lr)

    def step(carry, k):
        p, o = carry
        idx = jax.random.randint(k, (batch,), 0, states.shape[0])
        loss, grads = jax.value_and_grad(
            lambda q: critic_loss(critic, q, states[idx], goals[idx], targets[idx]))(p)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), o), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                               jax.random.split(key, num))
    return params, opt_state, losses


# ----------------------------------------------------------------------------- checkpoints


def save_critic(directory: str | Path, critic: Critic, params: Any,
                extra: dict[str, Any] | None = None) -> Path:
    """Writes ``critic.msgpack`` and ``critic.json`` (its config) into ``directory``."""
    return head_checkpoint.save_head(directory, "critic", params,
                                     {**critic.meta(), **(extra or {})})


def load_critic(directory: str | Path, latent_dim: int) -> tuple[Critic, Any]:
    """``(critic, params)`` saved in ``directory``; a one-line error if it was trained on
    latents of another dimension than ``latent_dim`` (another encoder)."""
    params, meta = head_checkpoint.load_head(directory, "critic", latent_dim,
                                             in_dim=3 * latent_dim)
    critic = make_critic({"hidden": tuple(meta["hidden"]), "gamma": meta["gamma"]},
                         latent_dim, meta["reach_scale"])
    return critic, params
