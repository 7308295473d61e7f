"""Mode-1: a reactive policy ``pi(s, g) -> a`` distilled from Mode-2's plans.

Behaviour cloning regresses the policy's action onto the planner's first action at states
the agent visited in closed loop; DAgger-style relabelling then runs the policy itself,
asks the planner what it would do at the states the *policy* reached, and refits on the
union (``jepa_jax.agent_training.train_policy_stage`` runs those rounds)::

    policy = make_policy(cfg, latent_dim=D, action_dim=2, action_bound=2.45)
    params = policy.init(key)
    params, metrics = train_policy(policy, params, demos, cfg, key)   # demos: (s, g, a*)
    a = policy.act(params, s, g)                                      # one MLP call

Or, amortised Mode-2 (``train_policy_on_cost``): the policy is trained to minimise Mode-2's own
cost of its H-step rollout through the world model, by gradient through the predictor and
the critic, on (state, goal) pairs drawn from encoded states of many layouts. There are no
labels to imitate: a planner's first action is noisy where many plans cost the same (far
from the goal, the reach cost is flat), and behaviour cloning averages those choices.
Measured on the default Two-Rooms model (``benchmarks/agent.py``): 4% success alone by
behaviour cloning and DAgger, 39% by the cost objective. ::

    params, metrics = train_policy_on_cost(policy, params, latents, predict, wm_params,
                                           cost_fn, horizon, cfg, key)

``warm_start_actions`` rolls the policy out through the world model for H steps; that
sequence initialises Mode-2's optimiser, which then needs fewer iterations.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jepa_jax import configs, head_checkpoint
from jepa_jax.networks.heads import PolicyNet

METHODS = ("cost", "bc")
"""How ``jepa_jax.agent_training`` fits Mode-1: on Mode-2's cost (``train_policy_on_cost``)
or by behaviour cloning of Mode-2 with DAgger (``train_policy``)."""

DEFAULTS: dict[str, Any] = {
    "method": "cost",  # see METHODS
    "pool_layouts": 256,  # "cost": layouts whose encoded states make the (s, g) pairs
    "pool_states": 256,  # "cost": encoded states per layout
    "door_fraction": 0.05,  # "cost": share of those states in the door's gap
    "hidden": (256, 256),
    "num_steps": 3000,  # Adam updates per fit
    "batch_size": 512,
    "learning_rate": 1e-3,
}


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
    """A configured Mode-1 policy (hashes by identity: a valid static jit argument)."""

    net: PolicyNet
    latent_dim: int

    @property
    def action_dim(self) -> int:
        return self.net.action_dim

    @property
    def action_bound(self) -> float:
        return self.net.action_bound

    def init(self, key: jax.Array) -> Any:
        s = jnp.zeros((1, self.latent_dim), jnp.float32)
        return self.net.init(key, s, s)

    def act(self, params: Any, s: jax.Array, g: jax.Array) -> jax.Array:
        """``pi(s, g)``: s, g (..., D) -> (..., A), inside the action bound."""
        if s.shape[-1] != self.latent_dim:
            raise ValueError(f"policy takes latents of dimension {self.latent_dim}, got "
                             f"{s.shape[-1]}")
        return self.net.apply(params, s, g)

    def meta(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "hidden": list(self.net.hidden),
                "action_dim": self.action_dim, "action_bound": self.action_bound}


def make_policy(cfg: Mapping[str, Any] | Any, latent_dim: int, action_dim: int,
                action_bound: float) -> Policy:
    """Builds a ``Policy`` from a config section (keys of ``DEFAULTS``; others ignored)."""
    c = configs.with_defaults(cfg, DEFAULTS)
    validate(c)
    if not action_bound > 0:
        raise ValueError(f"action_bound must be > 0, got {action_bound!r}")
    return Policy(net=PolicyNet(action_dim=int(action_dim), hidden=tuple(c["hidden"]),
                                action_bound=float(action_bound)), latent_dim=int(latent_dim))


def validate(c: Mapping[str, Any]) -> None:
    if c["method"] not in METHODS:
        raise ValueError(f"unknown agent.policy.method {c['method']!r}; valid: "
                         f"{', '.join(METHODS)}")
    for key, least in (("pool_layouts", 1), ("pool_states", 2)):
        if not isinstance(c[key], int) or c[key] < least:
            raise ValueError(f"agent.policy.{key} must be an integer >= {least}, got "
                             f"{c[key]!r}")
    if not 0.0 <= c["door_fraction"] <= 1.0:
        raise ValueError(f"agent.policy.door_fraction must be in [0, 1], got "
                         f"{c['door_fraction']!r}")
    for key in ("num_steps", "batch_size"):
        if not isinstance(c[key], int) or c[key] < 1:
            raise ValueError(f"policy {key} must be an integer >= 1, got {c[key]!r}")
    if not c["learning_rate"] > 0:
        raise ValueError(f"policy learning_rate must be > 0, got {c['learning_rate']!r}")


@struct.dataclass
class Demonstrations:
    """Labelled states: ``state`` (N, D), ``goal`` (N, D), ``action`` (N, A) (the planner's
    first action there)."""

    state: jax.Array
    goal: jax.Array
    action: jax.Array

    @property
    def size(self) -> int:
        return self.state.shape[0]


def concat_demos(parts: list[Demonstrations]) -> Demonstrations:
    return jax.tree.map(lambda *x: jnp.concatenate(x, 0), *parts)


def bc_loss(policy: Policy, params: Any, s: jax.Array, g: jax.Array, target: jax.Array,
            weights: jax.Array | None = None) -> jax.Array:
    """Distillation loss: the (weighted) mean over the batch of ``|pi(s, g) - a*|^2``.

    Args:
      s, g: (B, D). target: (B, A) the planner's actions. weights: optional (B,) >= 0.

    Returns:
      Scalar; with weights, ``sum_i w_i |.|^2 / sum_i w_i``.
    """
    if target.shape != (*s.shape[:-1], policy.action_dim):
        raise ValueError(f"targets have shape {target.shape}, expected "
                         f"{(*s.shape[:-1], policy.action_dim)}")
    err = jnp.sum(jnp.square(policy.act(params, s, g) - target), -1)
    if weights is None:
        return jnp.mean(err)
    if weights.shape != err.shape:
        raise ValueError(f"weights have shape {weights.shape}, expected {err.shape}")
    return jnp.sum(weights * err) / jnp.maximum(jnp.sum(weights), 1e-12)


def train_policy(policy: Policy, params: Any, demos: Demonstrations,
                 cfg: Mapping[str, Any] | Any, key: jax.Array,
                 progress_fn: Callable[[int, dict[str, float]], None] | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    """Behaviour cloning on ``demos``: ``num_steps`` Adam updates on random minibatches."""
    c = configs.with_defaults(cfg, DEFAULTS)
    validate(c)
    if demos.size == 0:
        raise ValueError("no demonstrations to train the policy on")
    params, losses = _fit(policy, float(c["learning_rate"]), c["num_steps"], c["batch_size"],
                          params, demos, key)
    losses = np.asarray(losses)
    metrics = {"num_demos": demos.size, "loss_first": float(losses[:50].mean()),
               "loss_last": float(losses[-50:].mean())}
    if progress_fn is not None:
        progress_fn(c["num_steps"], metrics)
    return params, metrics


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _fit(policy, lr, num, batch, params, demos, key):
    # Cosine decay to 5%: the last updates average over the minibatch noise of the labels.
    tx = optax.adam(optax.cosine_decay_schedule(lr, num, alpha=0.05))

    def step(carry, k):
        p, o = carry
        idx = jax.random.randint(k, (batch,), 0, demos.size)
        loss, grads = jax.value_and_grad(
            lambda q: bc_loss(policy, q, demos.state[idx], demos.goal[idx],
                              demos.action[idx]))(p)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), o), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                       jax.random.split(key, num))
    return params, losses


def warm_start_actions(policy: Policy, policy_params: Any, predict: Callable[..., jax.Array],
                       wm_params: Any, s0: jax.Array, goal: jax.Array, horizon: int
                       ) -> tuple[jax.Array, jax.Array]:
    """The policy rolled out through the world model: ``a_t = pi(s_t, g)``,
    ``s_{t+1} = predict(wm_params, s_t, a_t)``.

    Returns:
      ``(actions (H, A), states (H, D))``: an initial action sequence for a planner.
    """
    def body(s, _):
        a = policy.act(policy_params, s, goal)
        s_next = predict(wm_params, s, a)
        return s_next, (a, s_next)

    _, (actions, states) = jax.lax.scan(body, s0, None, length=horizon)
    return actions, states


def rollout_cost_loss(policy: Policy, params: Any, predict: Callable[..., jax.Array],
                      wm_params: Any, cost_fn: Callable[..., jax.Array], s: jax.Array,
                      g: jax.Array, horizon: int) -> jax.Array:
    """Amortised Mode-2: the batch mean of ``cost_fn(states, actions, g)`` of the policy's
    own ``horizon``-step rollout through the world model (``warm_start_actions``).

    Args:
      s, g: (B, D) start and goal latents. cost_fn: Mode-2's cost, ``(states (H, D),
        actions (H, A), goal (D,)) -> scalar``.

    Returns:
      Scalar, differentiable in ``params`` through the predictor and the cost.
    """
    if s.shape != g.shape or s.ndim != 2 or s.shape[-1] != policy.latent_dim:
        raise ValueError(f"s and g must both have shape (B, {policy.latent_dim}), got "
                         f"{s.shape} and {g.shape}")

    def one(s0, g0):
        actions, states = warm_start_actions(policy, params, predict, wm_params, s0, g0,
                                             horizon)
        return cost_fn(states, actions, g0)

    return jnp.mean(jax.vmap(one)(s, g))


def train_policy_on_cost(policy: Policy, params: Any, latents: jax.Array,
                         predict: Callable[..., jax.Array], wm_params: Any,
                         cost_fn: Callable[..., jax.Array], horizon: int,
                         cfg: Mapping[str, Any] | Any, key: jax.Array
                         ) -> tuple[Any, dict[str, Any]]:
    """Trains the policy on ``rollout_cost_loss``: ``num_steps`` Adam updates, each on
    ``batch_size`` pairs (s, g) of latents drawn from the same layout.

    Args:
      latents: (L, N, D) encoded states of L layouts (N each); the goal of a pair is another
        state of its start's layout.
      predict, wm_params: the world model's ``predict(wm_params, s, a)``.
      cost_fn: Mode-2's cost (see ``rollout_cost_loss``); horizon: its H.

    Returns:
      ``(params, metrics)`` with the mean loss of the first and last 50 updates.
    """
    c = configs.with_defaults(cfg, DEFAULTS)
    validate(c)
    latents = jnp.asarray(latents)
    if latents.ndim != 3 or latents.shape[-1] != policy.latent_dim or latents.shape[1] < 2:
        raise ValueError(f"latents must have shape (layouts, states >= 2, "
                         f"{policy.latent_dim}), got {latents.shape}")
    if int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    params, losses = _fit_cost(policy, predict, cost_fn, int(horizon), float(c["learning_rate"]),
                               c["num_steps"], c["batch_size"], params, latents, wm_params, key)
    losses = np.asarray(losses)
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"Mode-1's cost objective became non-finite at update "
                                 f"{int(np.argmin(np.isfinite(losses)))}")
    return params, {"num_pairs_seen": c["num_steps"] * c["batch_size"],
                    "loss_first": float(losses[:50].mean()),
                    "loss_last": float(losses[-50:].mean())}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _fit_cost(policy, predict, cost_fn, horizon, lr, num, batch, params, latents, wm_params,
              key):
    tx = optax.adam(optax.cosine_decay_schedule(lr, num, alpha=0.05))
    num_layouts, num_states = latents.shape[:2]

    def step(carry, k):
        p, o = carry
        kl, ks, kg = jax.random.split(k, 3)
        layout = jax.random.randint(kl, (batch,), 0, num_layouts)
        s = latents[layout, jax.random.randint(ks, (batch,), 0, num_states)]
        g = latents[layout, jax.random.randint(kg, (batch,), 0, num_states)]
        loss, grads = jax.value_and_grad(
            lambda q: rollout_cost_loss(policy, q, predict, wm_params, cost_fn, s, g,
                                        horizon))(p)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), o), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)),
                                       jax.random.split(key, num))
    return params, losses


def save_policy(directory: str | Path, policy: Policy, params: Any,
                extra: dict[str, Any] | None = None) -> Path:
    return head_checkpoint.save_head(directory, "policy", params,
                                     {**policy.meta(), **(extra or {})})


def load_policy(directory: str | Path, latent_dim: int) -> tuple[Policy, Any]:
    """``(policy, params)``; a one-line error if trained on another latent dimension."""
    params, meta = head_checkpoint.load_head(directory, "policy", latent_dim,
                                             in_dim=3 * latent_dim)
    policy = make_policy({"hidden": tuple(meta["hidden"])}, latent_dim, meta["action_dim"],
                         meta["action_bound"])
    return policy, params
