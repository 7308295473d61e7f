"""The autonomous agent: configurator, short-term memory, and a Mode-1 / Mode-2 actor.

The modules of LeCun's architecture, as pure functions over one state pytree:

* **perception**: the world model's encoder, ``s = Enc(obs)``;
* **world model**: its predictor, used by Mode-2 to imagine plans, by Mode-1's safety check,
  and for the one-step *surprise* ``|s_t - Pred(s_{t-1}, a_{t-1})|^2``;
* **cost** = intrinsic terms (goal, constraints from the task) + the trainable **critic**;
* **short-term memory** (``jepa_jax.memory``): every transition is written there; a read
  tells how familiar the current state is (a stuck agent keeps revisiting it);
* **actor**: Mode-1, the reactive policy ``pi(s, g)`` (``jepa_jax.policy``), and Mode-2, a
  planner (``jepa_jax.planning``) minimising the configured cost;
* **configurator**: ``configure(task, ...)`` turns a task specification into cost terms,
  weights and planner settings, and each step the agent picks Mode-1 or Mode-2 from
  confidence signals.

One step is ``agent.step(params, state, obs, key) -> (action, state, info)``, pure and
jittable; ``run_episodes`` scans it over an episode and runs a batch of episodes at once::

    agent = make_agent(wm, configure(task, cfg, critic=critic, policy=policy), ...)
    state = agent.init_state(params, goal_obs, task_params)
    action, state, info = agent.step(params, state, obs, key)

``params = {"world_model": ..., "critic": ... or None, "policy": ... or None,
"probe": {"w": (D, 2), "b": (2,)}}``.

Tasks are dicts of terms (``make_task``): ``{"reach": {}}``, ``{"reach": {}, "avoid":
{"shape": "circle"}}``, ``{"reach": {}, "stay_in": {}}``; the geometry of each episode's
region is data (``TaskParams``), so one compiled agent serves any region. Positions in a
region are read from latents by a linear probe fitted on the offline data.

Mode choice (``mode="auto"``): Mode-2 runs when the agent is surprised, when the memory says
it is stuck (many visits near the current state while away from the goal), when Mode-1's
imagined rollout would violate a task constraint, or every ``check_every`` steps as a check;
after each plan, the agent returns to Mode-1 only if Mode-1's action agrees with the plan's
first action (disagreement below ``disagreement_threshold``). Otherwise it follows the plan,
replanning every ``replan_every`` steps, until a plan agrees.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jepa_jax import memory as memory_lib
from jepa_jax.cost import make_cost, step_reach_cost
from jepa_jax.critic import Critic, cost_config
from jepa_jax.envs import two_rooms
from jepa_jax.planning.base import (
    PLANNER_NAMES,
    PlannerState,
    default_config,
    make_planner,
    shift_plan,
)
from jepa_jax.policy import Policy, warm_start_actions

TASK_TERMS = ("reach", "avoid", "stay_in")
FAMILIAR_TERMS = ("reach",)  # what Mode-1 was distilled on
REGION_SHAPES = ("circle", "box")
MODES = ("auto", "mode1", "mode2")
WARM_STARTS = ("auto", "shift", "policy")

_TERM_KEYS = {
    "reach": {"weight": 1.0},
    "avoid": {"shape": "circle", "weight": None, "margin": None},
    "stay_in": {"weight": None, "margin": None},
}


# ------------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The static part of a task: which terms, their weights and margins.

    Attributes:
      terms: the task's term names, in ``TASK_TERMS`` order.
      reach_weight: weight of the goal terms.
      avoid_shape: "circle" or "box" when the task avoids a region, else None.
      avoid_weight, avoid_margin: constraint weight and safety margin (px) of "avoid".
      stay_weight, stay_margin: the same for "stay_in".
    """

    terms: tuple[str, ...] = ("reach",)
    reach_weight: float = 1.0
    avoid_shape: str | None = None
    avoid_weight: float = 0.0
    avoid_margin: float = 0.0
    stay_weight: float = 0.0
    stay_margin: float = 0.0

    @property
    def constrained(self) -> bool:
        return self.avoid_shape is not None or "stay_in" in self.terms

    @property
    def familiar(self) -> bool:
        return set(self.terms) <= set(FAMILIAR_TERMS)


@struct.dataclass
class TaskParams:
    """The geometry of one episode's task, in pixels (zeros where unused).

    Attributes:
      avoid: (4,) the forbidden region: a circle ``(cx, cy, r, 0)`` or a box
        ``(x0, y0, x1, y1)``.
      stay: (4,) the box ``(x0, y0, x1, y1)`` the agent must stay in.
    """

    avoid: jax.Array
    stay: jax.Array


def empty_task_params(batch_shape: tuple[int, ...] = ()) -> TaskParams:
    return TaskParams(avoid=jnp.zeros((*batch_shape, 4)), stay=jnp.zeros((*batch_shape, 4)))


def make_task(spec: Mapping[str, Any] | TaskSpec | None = None,
              defaults: Mapping[str, Any] | None = None) -> TaskSpec:
    """Validates a task specification.

    Args:
      spec: a dict of terms, each mapping to a dict of options (or None / {} for the
        defaults): ``"reach"`` (``weight``), ``"avoid"`` (``shape`` "circle" | "box",
        ``weight``, ``margin``), ``"stay_in"`` (``weight``, ``margin``). None means
        ``{"reach": {}}``.
      defaults: ``constraint_weight`` and ``constraint_margin`` for terms that do not set
        their own (the ``agent.configurator`` config section).

    Returns:
      The ``TaskSpec``.

    Raises:
      ValueError: unknown terms or options, bad values (one line each).
    """
    if isinstance(spec, TaskSpec):
        return spec
    spec = {"reach": {}} if spec is None else dict(spec)
    unknown = sorted(set(spec) - set(TASK_TERMS))
    if unknown:
        raise ValueError(f"unknown task terms {unknown}; valid terms: {', '.join(TASK_TERMS)}")
    if not spec:
        raise ValueError(f"a task needs at least one term of {', '.join(TASK_TERMS)}")
    dflt = {"constraint_weight": 100.0, "constraint_margin": 1.5, **dict(defaults or {})}
    opts = {}
    for term, value in spec.items():
        value = dict(value or {})
        bad = sorted(set(value) - set(_TERM_KEYS[term]))
        if bad:
            raise ValueError(f"unknown options {bad} of task term {term!r}; valid: "
                             f"{', '.join(_TERM_KEYS[term])}")
        opts[term] = {**_TERM_KEYS[term], **value}
    out: dict[str, Any] = {"terms": tuple(t for t in TASK_TERMS if t in spec)}
    if "reach" in opts:
        out["reach_weight"] = _nonneg(opts["reach"]["weight"], "reach weight")
    else:
        out["reach_weight"] = 0.0
    if "avoid" in opts:
        o = opts["avoid"]
        if o["shape"] not in REGION_SHAPES:
            raise ValueError(f"unknown avoid shape {o['shape']!r}; valid: "
                             f"{', '.join(REGION_SHAPES)}")
        out["avoid_shape"] = o["shape"]
        out["avoid_weight"] = _nonneg(_default(o["weight"], dflt["constraint_weight"]),
                                      "avoid weight")
        out["avoid_margin"] = _nonneg(_default(o["margin"], dflt["constraint_margin"]),
                                      "avoid margin")
    if "stay_in" in opts:
        o = opts["stay_in"]
        out["stay_weight"] = _nonneg(_default(o["weight"], dflt["constraint_weight"]),
                                     "stay_in weight")
        out["stay_margin"] = _nonneg(_default(o["margin"], dflt["constraint_margin"]),
                                     "stay_in margin")
    return TaskSpec(**out)


def region_violation(task: TaskSpec, params: TaskParams, pos: jax.Array,
                     with_margin: bool = True) -> jax.Array:
    """Signed violation of the task's constraints at position ``pos`` (2,), in px: > 0 when a
    constraint is violated (inside the avoided region, or outside the box to stay in),
    the largest over the task's constraints; -inf when the task has none.

    ``with_margin`` adds each term's margin (so the planner keeps that far away).
    """
    out = jnp.asarray(-jnp.inf, pos.dtype)
    if task.avoid_shape == "circle":
        c = params.avoid[2] - jnp.linalg.norm(pos - params.avoid[:2])
        out = jnp.maximum(out, c + (task.avoid_margin if with_margin else 0.0))
    elif task.avoid_shape == "box":
        lo, hi = params.avoid[:2], params.avoid[2:]
        c = jnp.min(jnp.concatenate([pos - lo, hi - pos]))
        out = jnp.maximum(out, c + (task.avoid_margin if with_margin else 0.0))
    if "stay_in" in task.terms:
        lo, hi = params.stay[:2], params.stay[2:]
        c = jnp.max(jnp.concatenate([lo - pos, pos - hi]))
        out = jnp.maximum(out, c + (task.stay_margin if with_margin else 0.0))
    return out


# ------------------------------------------------------------------------------- configurator


CONFIGURATOR_DEFAULTS: dict[str, Any] = {
    "mode": "auto",  # "auto" (confidence-based), "mode1" or "mode2"
    "planner": "gradient",  # Mode-2 planner
    "horizon": 0,  # 0: the planner's configured horizon
    "replan_every": 4,
    "use_critic": False,  # add the critic's terminal value to Mode-2's cost
    "critic_weight": 1.0,
    "critic_goal_weight": 0.0,  # dense goal term kept beside the critic (0: reach + critic)
    "critic_action_weight": 0.0,  # action energy beside the critic (picks smooth plans)
    "warm_start": "auto",  # "auto": shifted plan while in Mode-2, policy rollout on entry
    "constraint_weight": 100.0,
    "constraint_margin": 1.5,  # px
    "surprise_threshold": 4.0,  # in units of the data's median one-step latent move^2
    "disagreement_threshold": 0.5,  # px, |pi(s, g) - plan[0]|
    "stuck_count": 8.0,  # soft count of memory entries near the current state
    "check_every": 10,  # steps of Mode-1 between Mode-2 checks
    "check_horizon": 6,  # steps of Mode-1's imagined rollout checked against constraints
    "memory_size": 256,
    "memory_write": "ring",
    "memory_temperature": 1.0,  # in units of the median one-step latent move^2
    "action_noise": 0.0,  # std (px) of exploration noise added to every action
    "rest_threshold": 0.05,  # intrinsic cost below which the agent is at the goal: no Mode-2,
    # zero action (0: never rest). 0.05 is |s - g|^2 < 0.05 reach_scale, well inside PLDM's
    # success radius; after success an episode then stops paying for plans.
}


@dataclasses.dataclass(frozen=True, eq=False)
class Configuration:
    """What the configurator decided for a task (static; hashes by identity).

    Attributes:
      task: the ``TaskSpec``.
      mode: "auto", "mode1" or "mode2".
      cost: ``make_cost`` weights of Mode-2's cost.
      planner: Mode-2 planner name.
      planner_config: its settings.
      use_critic: whether the cost has the critic term.
      settings: the remaining ``CONFIGURATOR_DEFAULTS`` values (thresholds, memory, ...).
    """

    task: TaskSpec
    mode: str
    cost: dict[str, Any]
    planner: str
    planner_config: dict[str, Any]
    use_critic: bool
    settings: dict[str, Any]

    @property
    def horizon(self) -> int:
        return int(self.planner_config["horizon"])

    def __getattr__(self, name: str) -> Any:  # settings as attributes
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)


def configure(task: Mapping[str, Any] | TaskSpec | None, cfg: Mapping[str, Any] | Any = None,
              *, planning: Mapping[str, Any] | Any = None, critic: Critic | None = None,
              policy: Policy | None = None, action_bound: float = 2.45) -> Configuration:
    """The configurator: a task and the agent config -> cost terms, planner and mode policy.

    Args:
      task: a task specification (see ``make_task``).
      cfg: the ``agent.configurator`` config section (keys of ``CONFIGURATOR_DEFAULTS``).
      planning: the ``planning`` config section: Mode-2's base cost (``planning.cost``) and
        planner settings (``planning.<planner>``); None: library defaults.
      critic: the trained critic, if any (needed by ``use_critic``).
      policy: the trained Mode-1 policy, if any ("auto" and "mode1" need one).
      action_bound: the environment's action bound.

    Returns:
      The ``Configuration``.

    Raises:
      ValueError: unknown keys, bad values, a mode or critic that needs a missing module.
    """
    values = _to_dict(cfg)
    unknown = sorted(set(values) - set(CONFIGURATOR_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown agent.configurator keys {unknown}; valid keys: "
                         f"{', '.join(CONFIGURATOR_DEFAULTS)}")
    s = {**CONFIGURATOR_DEFAULTS, **values}
    spec = make_task(task, {"constraint_weight": s["constraint_weight"],
                            "constraint_margin": s["constraint_margin"]})
    if s["mode"] not in MODES:
        raise ValueError(f"unknown agent mode {s['mode']!r}; valid modes: {', '.join(MODES)}")
    if s["mode"] in ("auto", "mode1") and policy is None:
        raise ValueError(f"agent mode {s['mode']!r} needs a trained Mode-1 policy")
    if s["planner"] not in PLANNER_NAMES:
        raise ValueError(f"unknown planner {s['planner']!r}; valid names: "
                         f"{', '.join(PLANNER_NAMES)}")
    if s["warm_start"] not in WARM_STARTS:
        raise ValueError(f"unknown warm_start {s['warm_start']!r}; valid: "
                         f"{', '.join(WARM_STARTS)}")
    if s["use_critic"] and critic is None:
        raise ValueError("agent.configurator.use_critic needs a trained critic")
    for key in ("replan_every", "check_every", "check_horizon", "memory_size"):
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
            raise ValueError(f"agent.configurator.{key} must be an integer >= 1, got "
                             f"{s[key]!r}")
    for key in ("surprise_threshold", "disagreement_threshold", "stuck_count",
                "memory_temperature"):
        if not s[key] > 0:
            raise ValueError(f"agent.configurator.{key} must be > 0, got {s[key]!r}")
    if not 0 <= s["rest_threshold"] < 1:
        raise ValueError(f"agent.configurator.rest_threshold must be in [0, 1), got "
                         f"{s['rest_threshold']!r}")
    if s["action_noise"] < 0:
        raise ValueError(f"agent.configurator.action_noise must be >= 0, got "
                         f"{s['action_noise']!r}")
    planning_d = _to_dict(planning)
    pcfg = dict(default_config(s["planner"]))
    pcfg.update(_to_dict(planning_d.get(s["planner"])))
    if s["horizon"]:
        pcfg["horizon"] = int(s["horizon"])
    if s["replan_every"] > pcfg["horizon"]:
        raise ValueError(f"agent.configurator.replan_every ({s['replan_every']}) exceeds the "
                         f"planner horizon ({pcfg['horizon']})")
    pcfg["action_bound"] = float(action_bound)
    pcfg["shift"] = 1  # the agent shifts its plan itself, one step per action
    # Cost terms: the goal (dense squared distance, or reach + critic), then constraints.
    if s["use_critic"]:
        cost = cost_config(critic, pcfg["horizon"], weight=s["critic_weight"],
                           goal_weight=s["critic_goal_weight"],
                           action_weight=s["critic_action_weight"])
    else:
        cost = dict(_to_dict(planning_d.get("cost")) or {"goal_weight": 1.0,
                                                          "goal_mode": "dense"})
    cost = {k: (v * spec.reach_weight if k in ("goal_weight", "reach_weight", "critic_weight")
                else v) for k, v in cost.items()}
    if spec.constrained:
        # One constraint function (the largest violation of the task's terms), weighted by
        # the largest of the terms' weights.
        cost["constraint_weight"] = max(spec.avoid_weight, spec.stay_weight)
        cost["constraint_kind"] = "relu2"
    mode = s["mode"]
    settings = {k: s[k] for k in CONFIGURATOR_DEFAULTS
                if k not in ("mode", "planner", "horizon", "use_critic", "critic_weight",
                             "critic_goal_weight", "critic_action_weight",
                             "constraint_weight", "constraint_margin")}
    make_planner(s["planner"], _LatentModel(None), lambda *a: 0.0, pcfg)  # validates
    return Configuration(task=spec, mode=mode, cost=cost, planner=s["planner"],
                         planner_config=pcfg, use_critic=bool(s["use_critic"]),
                         settings=settings)


# ------------------------------------------------------------------------------- agent


@struct.dataclass
class AgentState:
    """Everything the agent carries from one step to the next (one episode).

    Attributes:
      goal: (D,) goal latent (encoded once, at ``init_state``).
      task: ``TaskParams`` of the episode.
      memory: the short-term ``Memory``.
      plan: (H, A) the current plan, shifted so that row 0 is this step's action.
      plan_age: () int32 steps since the plan was made.
      in_mode2: () bool, following plans until one agrees with Mode-1.
      since_check: () int32 steps since the last plan.
      prev_state: (D,) last step's latent. prev_action: (A,) the action the actor chose
        there (before exploration noise; what memory records).
      pred_state: (D,) the world model's prediction of this step's latent, from the action
        executed (computed in "auto" mode only, where surprise is used).
      has_prev: () bool, False at the first step.
      t: () int32 step counter.
    """

    goal: jax.Array
    task: TaskParams
    memory: memory_lib.Memory
    plan: jax.Array
    plan_age: jax.Array
    in_mode2: jax.Array
    since_check: jax.Array
    prev_state: jax.Array
    prev_action: jax.Array
    pred_state: jax.Array
    has_prev: jax.Array
    t: jax.Array


class _LatentModel:
    """A world model whose "observations" are latents: planners then plan from latents the
    agent has already encoded (``encode`` is the identity)."""

    def __init__(self, wm):
        self.wm = wm

    def encode(self, params, x):
        return x

    def predict(self, params, s, a, z=None):
        return self.wm.predict(params, s, a, z)


@dataclasses.dataclass(frozen=True, eq=False)
class Agent:
    """A configured agent; build it with ``make_agent``. Hashes by identity (static arg).

    Attributes:
      wm: the ``WorldModel``.
      config: the configurator's ``Configuration``.
      critic: the ``Critic`` or None. policy: the Mode-1 ``Policy`` or None.
      step_scale: median one-step latent move^2 of the data (the unit of surprise and of
        memory temperature).
      reach_scale: the scale of the intrinsic reach cost written to memory.
    """

    wm: Any
    config: Configuration
    critic: Critic | None
    policy: Policy | None
    step_scale: float
    reach_scale: float
    action_dim: int = 2

    # ---- state

    def init_state(self, params: Any, goal_obs: jax.Array,
                   task: TaskParams | None = None) -> AgentState:
        """The state at the start of an episode toward ``goal_obs`` (one observation)."""
        d, a, h = self.wm.latent_dim, self.action_dim, self.config.horizon
        goal = self.wm.encode(params["world_model"], goal_obs)
        zeros_d = jnp.zeros((d,), jnp.float32)
        return AgentState(
            goal=goal, task=task if task is not None else empty_task_params(),
            memory=memory_lib.init_memory(self.config.memory_size, d, a,
                                          self.config.memory_write),
            plan=jnp.zeros((h, a), jnp.float32), plan_age=jnp.asarray(h, jnp.int32),
            in_mode2=jnp.asarray(self.config.mode == "mode2"),
            since_check=jnp.zeros((), jnp.int32), prev_state=zeros_d,
            prev_action=jnp.zeros((a,), jnp.float32), pred_state=zeros_d,
            has_prev=jnp.zeros((), bool), t=jnp.zeros((), jnp.int32))

    # ---- the pieces of a step

    def position(self, params: Any, s: jax.Array) -> jax.Array:
        """The linear probe's position (..., 2) of latents (..., D)."""
        return s @ params["probe"]["w"] + params["probe"]["b"]

    def cost_fn(self, params: Any, task: TaskParams):
        """Mode-2's cost for an episode's task: the configured terms, with the task's
        constraints read through the position probe."""
        cfg = self.config
        constraint_fn = None
        if cfg.task.constrained:
            def constraint_fn(s):
                return region_violation(cfg.task, task, self.position(params, s))
        critic_fn = self.critic.critic_fn(params["critic"]) if cfg.use_critic else None
        return make_cost(cfg.cost, critic_fn=critic_fn, constraint_fn=constraint_fn)

    def planner(self, params: Any, task: TaskParams):
        cfg = self.config
        return make_planner(cfg.planner, _LatentModel(self.wm), self.cost_fn(params, task),
                            cfg.planner_config)

    def perceive(self, params: Any, state: AgentState, obs: jax.Array
                 ) -> tuple[dict[str, Any], jax.Array]:
        """Encodes ``obs``, writes the last transition to memory, reads it, computes Mode-1's
        action and the confidence signals, and decides the mode.

        Returns:
          ``(ctx, need_plan)``: intermediate values for ``act`` and whether Mode-2 must plan
          at this step.
        """
        cfg = self.config
        wp = params["world_model"]
        s = self.wm.encode(wp, obs)
        g = state.goal
        cost = step_reach_cost(s, g, self.reach_scale)
        mem = memory_lib.write(state.memory, state.prev_state, state.prev_action, cost, s, g,
                               enabled=state.has_prev)
        readout, mem = memory_lib.read(mem, s, cfg.memory_temperature * self.step_scale)
        surprise = jnp.where(state.has_prev,
                             jnp.sum(jnp.square(s - state.pred_state)) / self.step_scale, 0.0)
        a1 = (self.policy.act(params["policy"], s, g) if self.policy is not None
              else jnp.zeros((self.action_dim,), jnp.float32))
        # Stuck: many visits near here (the memory's soft count), while not at the goal.
        stuck = (readout.log_count > math.log(cfg.stuck_count)) & (cost > 0.5)
        violation = jnp.zeros((), bool)
        if cfg.task.constrained and self.policy is not None and cfg.mode != "mode2":
            _, imagined = warm_start_actions(self.policy, params["policy"], self.wm.predict,
                                             wp, s, g, cfg.check_horizon)
            pos = self.position(params, jnp.concatenate([s[None], imagined], 0))
            viol = jax.vmap(lambda p: region_violation(cfg.task, state.task, p))(pos)
            violation = jnp.any(viol > 0)
        surprised = surprise > cfg.surprise_threshold
        rest = cost < cfg.rest_threshold  # at the goal: stay, plan nothing
        if cfg.mode == "mode2":
            mode2 = jnp.ones((), bool)
            need = (state.plan_age >= cfg.replan_every) & ~rest
        elif cfg.mode == "mode1":
            mode2 = jnp.zeros((), bool)
            need = jnp.zeros((), bool)
            rest = jnp.zeros((), bool)  # Mode-1 alone is the policy, unaided
        else:
            trigger = surprised | stuck | violation | (state.since_check >= cfg.check_every)
            mode2 = (state.in_mode2 | trigger) & ~rest
            need = mode2 & (~state.in_mode2 | (state.plan_age >= cfg.replan_every))
        ctx = {"s": s, "cost": cost, "memory": mem, "log_count": readout.log_count,
               "surprise": surprise, "a1": a1, "stuck": stuck, "violation": violation,
               "surprised": surprised, "mode2": mode2, "rest": rest}
        return ctx, need

    def make_plan(self, params: Any, inputs: dict[str, Any], key: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
        """Mode-2: plans from the current latent. ``inputs`` (``plan_inputs``) holds the
        latent ``s``, the ``goal``, the ``task``, the current ``plan``, its ``plan_age`` and
        ``in_mode2``. Returns ``(plan (H, A), its cost)``."""
        cfg = self.config
        h = cfg.horizon
        fresh = inputs["plan_age"] < h
        shifted = jnp.where(fresh, inputs["plan"], 0.0)
        if self.policy is not None and cfg.warm_start in ("auto", "policy"):
            rollout, _ = warm_start_actions(self.policy, params["policy"], self.wm.predict,
                                            params["world_model"], inputs["s"],
                                            inputs["goal"], h)
            if cfg.warm_start == "policy":
                init = rollout
            else:  # continuing in Mode-2: the shifted plan; entering it: the policy's rollout
                init = jnp.where(inputs["in_mode2"] & fresh, shifted, rollout)
        else:
            init = shifted
        planner = self.planner(params, inputs["task"])
        actions, info = planner.plan(params["world_model"], inputs["s"], inputs["goal"], key,
                                     PlannerState(actions=init))
        return actions, info["final_cost"]

    @staticmethod
    def plan_inputs(state: AgentState, ctx: dict[str, Any]) -> dict[str, Any]:
        """What ``make_plan`` reads of the state and of ``perceive``'s context."""
        return {"s": ctx["s"], "goal": state.goal, "task": state.task, "plan": state.plan,
                "plan_age": state.plan_age, "in_mode2": state.in_mode2}

    def act(self, params: Any, state: AgentState, ctx: dict[str, Any], plan: jax.Array,
            planned: jax.Array, plan_cost: jax.Array, key: jax.Array
            ) -> tuple[jax.Array, AgentState, dict[str, jax.Array]]:
        """Chooses the action (Mode-2's plan or Mode-1's), updates the state."""
        cfg = self.config
        plan = jnp.where(planned, plan, state.plan)
        plan_age = jnp.where(planned, 0, state.plan_age)
        mode2 = ctx["mode2"]
        intended = jnp.where(ctx["rest"], 0.0, jnp.where(mode2, plan[0], ctx["a1"]))
        action = intended
        if cfg.action_noise > 0:  # exploration: executed, not remembered as the choice
            action = action + cfg.action_noise * jax.random.normal(key, action.shape)
            action = two_rooms.clip_action(action, cfg.planner_config["action_bound"])
        disagreement = jnp.linalg.norm(ctx["a1"] - plan[0])
        if cfg.mode == "auto":
            confident = ((disagreement < cfg.disagreement_threshold) & ~ctx["stuck"]
                         & ~ctx["violation"] & ~ctx["surprised"])
            in_mode2 = jnp.where(planned, ~confident, state.in_mode2)
        else:
            in_mode2 = state.in_mode2
        s = ctx["s"]
        new_state = state.replace(
            memory=ctx["memory"], plan=shift_plan(plan, 1, "zero"), plan_age=plan_age + 1,
            in_mode2=in_mode2, since_check=jnp.where(planned, 0, state.since_check + 1),
            prev_state=s, prev_action=intended,
            pred_state=(self.wm.predict(params["world_model"], s, action)
                        if cfg.mode == "auto" else state.pred_state),
            has_prev=jnp.ones((), bool), t=state.t + 1)
        info = {"mode2": mode2, "planned": planned, "rest": ctx["rest"],
                "surprise": ctx["surprise"],
                "stuck": ctx["stuck"], "violation": ctx["violation"],
                "log_count": ctx["log_count"], "cost": ctx["cost"],
                "disagreement": jnp.where(planned, disagreement, jnp.nan),
                "plan_cost": jnp.where(planned, plan_cost, jnp.nan)}
        if self.critic is not None and params.get("critic") is not None:
            info["value"] = self.critic.value(params["critic"], s, state.goal)
        return action, new_state, info

    # ---- steps

    def step(self, params: Any, state: AgentState, obs: jax.Array, key: jax.Array
             ) -> tuple[jax.Array, AgentState, dict[str, jax.Array]]:
        """One perceive-configure-act step (unbatched; vmap it, or use ``step_batch``).

        Mode-2 runs under ``lax.cond``: unbatched, a Mode-1 step does not pay for planning.
        Under ``vmap`` the cond becomes a select and every step plans; ``step_batch`` gives
        the same results and plans only the episodes that need it.
        """
        k_plan, k_act = jax.random.split(key)
        ctx, need = self.perceive(params, state, obs)
        if self.config.mode == "mode1":
            plan, cost = state.plan, jnp.asarray(jnp.nan, jnp.float32)
        else:
            plan, cost = jax.lax.cond(
                need, lambda: self.make_plan(params, self.plan_inputs(state, ctx), k_plan),
                lambda: (state.plan, jnp.asarray(jnp.nan, jnp.float32)))
        return self.act(params, state, ctx, plan, need, cost, k_act)

    def step_batch(self, params: Any, states: AgentState, obs: jax.Array, keys: jax.Array,
                   chunk: int = 16) -> tuple[jax.Array, AgentState, dict[str, jax.Array]]:
        """``vmap(step)`` over a leading batch axis, planning only where needed: the episodes
        that need a plan are gathered into chunks of ``chunk`` and planned under a
        ``while_loop``, so a batch pays for the plans it makes, not for one per episode per
        step. Same results as ``jax.vmap(agent.step, (None, 0, 0, 0))``."""
        ks = jax.vmap(jax.random.split)(keys)
        k_plan, k_act = ks[:, 0], ks[:, 1]
        ctx, need = jax.vmap(self.perceive, (None, 0, 0))(params, states, obs)
        b = need.shape[0]
        nan = jnp.full((b,), jnp.nan, jnp.float32)
        if self.config.mode == "mode1":
            plans, costs = states.plan, nan
        else:
            inputs = jax.vmap(self.plan_inputs)(states, ctx)
            plans, costs = self._plan_where(params, inputs, k_plan, need, nan, min(chunk, b))
        return jax.vmap(self.act, (None, 0, 0, 0, 0, 0, 0))(params, states, ctx, plans, need,
                                                            costs, k_act)

    def _plan_where(self, params, inputs, keys, need, nan, chunk):
        order = jnp.argsort(~need, stable=True)  # episodes that need a plan first
        # Wrapped so the last chunk's slice stays in range; a wrapped index repeats an
        # episode already planned, with the same inputs and key, so the result is the same.
        padded = jnp.concatenate([order, order[:chunk]])
        num_chunks = (jnp.sum(need) + chunk - 1) // chunk

        def body(i, carry):
            plans, costs = carry
            idx = jax.lax.dynamic_slice(padded, (i * chunk,), (chunk,))
            sub, k = jax.tree.map(lambda x: x[idx], (inputs, keys))
            p, c = jax.vmap(lambda x, kk: self.make_plan(params, x, kk))(sub, k)
            m = need[idx]
            plans = plans.at[idx].set(jnp.where(m[:, None, None], p, plans[idx]))
            costs = costs.at[idx].set(jnp.where(m, c, costs[idx]))
            return plans, costs

        return jax.lax.fori_loop(0, num_chunks, body, (inputs["plan"], nan))


def make_agent(wm: Any, config: Configuration, *, step_scale: float, reach_scale: float,
               critic: Critic | None = None, policy: Policy | None = None,
               action_dim: int = 2) -> Agent:
    """Builds an ``Agent``; one-line ValueErrors for modules that do not fit ``wm``."""
    if critic is not None and critic.latent_dim != wm.latent_dim:
        raise ValueError(f"critic was built for latent dimension {critic.latent_dim}, the "
                         f"world model has {wm.latent_dim}")
    if policy is not None and policy.latent_dim != wm.latent_dim:
        raise ValueError(f"policy was built for latent dimension {policy.latent_dim}, the "
                         f"world model has {wm.latent_dim}")
    if config.use_critic and critic is None:
        raise ValueError("the configuration uses a critic, but none was given")
    if config.mode in ("auto", "mode1") and policy is None:
        raise ValueError(f"agent mode {config.mode!r} needs a Mode-1 policy")
    if not step_scale > 0 or not reach_scale > 0:
        raise ValueError(f"step_scale and reach_scale must be > 0, got {step_scale} and "
                         f"{reach_scale}")
    return Agent(wm=wm, config=config, critic=critic, policy=policy,
                 step_scale=float(step_scale), reach_scale=float(reach_scale),
                 action_dim=action_dim)


# ------------------------------------------------------------------------------- episodes


def _render(pos, layout, env):
    return two_rooms.render(two_rooms.make_state(pos, layout[0], layout[1]), env)


def make_episode_fn(agent: Agent, env: two_rooms.EnvParams, env_steps: int):
    """``run(params, start, goal, layout, task, key) -> (positions (T+1, 2), infos (T,),
    final AgentState)`` for one episode: ``agent.step`` under ``lax.scan``. Vmap it over
    episodes (every step then plans; ``run_episodes`` avoids that)."""
    def run(params, start, goal, layout, task, key):
        state = agent.init_state(params, _render(goal, layout, env), task)

        def body(carry, k):
            pos, st = carry
            action, st, info = agent.step(params, st, _render(pos, layout, env), k)
            pos = two_rooms.transition(pos, action, layout[0], layout[1], env)
            return (pos, st), (pos, info)

        (_, state), (traj, infos) = jax.lax.scan(body, (start, state),
                                                 jax.random.split(key, env_steps))
        return jnp.concatenate([start[None], traj], 0), infos, state

    return run


def make_batch_episode_fn(agent: Agent, env: two_rooms.EnvParams, env_steps: int,
                          chunk: int = 16):
    """Like ``vmap(make_episode_fn(...))``, with ``agent.step_batch`` (plans only where
    needed). ``run(params, start (B, 2), goal (B, 2), layout (B, 2), task (B, ...), keys
    (B,))``."""
    def run(params, start, goal, layout, task, keys):
        goal_obs = jax.vmap(lambda p, lay: _render(p, lay, env))(goal, layout)
        states = jax.vmap(agent.init_state, (None, 0, 0))(params, goal_obs, task)
        step_keys = jax.vmap(lambda k: jax.random.split(k, env_steps))(keys)  # (B, T)

        def body(carry, ks):
            pos, st = carry
            obs = jax.vmap(lambda p, lay: _render(p, lay, env))(pos, layout)
            action, st, info = agent.step_batch(params, st, obs, ks, chunk)
            pos = jax.vmap(lambda p, a, lay: two_rooms.transition(p, a, lay[0], lay[1], env))(
                pos, action, layout)
            return (pos, st), (pos, info)

        (_, states), (traj, infos) = jax.lax.scan(body, (start, states),
                                                  jnp.swapaxes(step_keys, 0, 1))
        traj = jnp.swapaxes(traj, 0, 1)
        infos = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), infos)
        return jnp.concatenate([start[:, None], traj], 1), infos, states

    return run


def run_episodes(agent: Agent, params: Any, env: two_rooms.EnvParams, env_steps: int,
                 start: jax.Array, goal: jax.Array, layout: jax.Array,
                 task: TaskParams | None, key: jax.Array, batch_size: int = 100,
                 keep_states: bool = False, progress=None):
    """Runs N episodes in jitted batches. Returns ``(positions (N, T+1, 2), infos (N, T),
    final states or None, seconds)`` as NumPy (states stay JAX arrays).
    ``progress(done, N, seconds)``, if given, is called after every batch."""
    n = start.shape[0]
    task = task if task is not None else empty_task_params((n,))
    fn = jax.jit(make_batch_episode_fn(agent, env, env_steps))
    keys = jax.random.split(key, n)
    pos_all, infos_all, states_all = [], [], []
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        pos, infos, states = fn(params, start[sl], goal[sl], layout[sl],
                                jax.tree.map(lambda x, sl=sl: x[sl], task), keys[sl])
        pos_all.append(np.asarray(pos))
        infos_all.append(jax.tree.map(np.asarray, infos))
        if keep_states:
            states_all.append(states)
        if progress is not None:
            progress(min(i + batch_size, n), n, time.perf_counter() - t0)
    secs = time.perf_counter() - t0
    infos = jax.tree.map(lambda *x: np.concatenate(x, 0), *infos_all)
    states = (jax.tree.map(lambda *x: jnp.concatenate(x, 0), *states_all) if keep_states
              else None)
    return np.concatenate(pos_all, 0), infos, states, secs


def time_per_action(agent: Agent, params: Any, env: two_rooms.EnvParams, env_steps: int,
                    start, goal, layout, task: TaskParams | None = None,
                    repeats: int = 3) -> dict[str, float]:
    """Milliseconds per action of one unbatched, compiled episode (``agent.step`` under
    ``lax.scan``, where ``lax.cond`` really skips Mode-2 on Mode-1 steps).

    ``ms_per_action`` is the agent's own compute: the episode's time
    (``ms_per_step_with_env``) minus that of the same scan with the environment alone
    (rendering and stepping, with a zero action: ``ms_per_env_step``), floored at 0 (for a
    tiny model the two are within timing noise). Medians over ``repeats``; compilation
    excluded.
    """
    task = task if task is not None else empty_task_params()
    fn = jax.jit(make_episode_fn(agent, env, env_steps))

    def env_only(start, layout, key):
        def body(pos, k):
            obs = _render(pos, layout, env)  # the whole image is used, so XLA renders it
            pos = two_rooms.transition(pos, jnp.zeros(2) * jnp.sum(obs), layout[0],
                                       layout[1], env)
            return pos, pos
        return jax.lax.scan(body, start, jax.random.split(key, env_steps))[1]

    env_fn = jax.jit(env_only)

    def timed(f, *args):
        out = f(*args, jax.random.key(0))
        jax.block_until_ready(out)
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            out = f(*args, jax.random.key(i + 1))
            jax.block_until_ready(out)
            times.append(time.perf_counter() - t)
        return float(np.median(times)), out

    total, out = timed(fn, params, start, goal, layout, task)
    env_t, _ = timed(env_fn, start, layout)
    infos = out[1]
    return {"ms_per_action": 1e3 * max(total - env_t, 0.0) / env_steps,
            "ms_per_step_with_env": 1e3 * total / env_steps,
            "ms_per_env_step": 1e3 * env_t / env_steps,
            "timed_mode2_share": float(np.mean(np.asarray(infos["mode2"]))),
            "timed_plans_per_episode": float(np.sum(np.asarray(infos["planned"])))}


# ------------------------------------------------------------------------------- helpers


def _nonneg(value: Any, name: str) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value)
            or value < 0):
        raise ValueError(f"task {name} must be a number >= 0, got {value!r}")
    return float(value)


def _default(value, default):
    return default if value is None else value


def _to_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if isinstance(config, Mapping):
        return dict(config)
    raise ValueError(f"config must be a ConfigDict, a mapping or None, got "
                     f"{type(config).__name__}")
