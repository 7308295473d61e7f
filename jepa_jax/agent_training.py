"""Training the agent's modules on a trained world model: ``python -m jepa_jax.train_agent``.

Given a workdir with a trained world model (``python -m jepa_jax.train``), this fits, in
order, and saves under ``<workdir>/agent/``:

1. **scales and probe** (``agent.json``): the median one-step latent move^2 of the offline
   data (``step_scale``, the unit of surprise and of memory distances), the reach-cost
   scale ``reach_sigma^2 * step_scale``, and a linear probe latent -> position fitted on
   offline frames (as ``jepa_jax.diagnostics`` does), which the constraint costs use;
2. **the critic** (``critic.*``), by ``agent.critic.method``: "value_iteration" (default)
   regresses it on value iteration over states sampled in ``agent.critic.vi_layouts``
   layouts (``jepa_jax.value_iteration``); "td" runs ``agent.critic.rounds`` rounds of
   (collect ``agent.critic.episodes`` closed-loop episodes with the short-horizon Mode-2
   agent, with the critic from the second round on, writing every transition to its
   short-term memory; fit the critic by TD(lambda) on those memories);
3. **Mode-1** (``policy.*``), by ``agent.policy.method``: "cost" (default) trains the policy
   on Mode-2's own cost of its rollout through the world model (amortised Mode-2,
   ``policy.train_policy_on_cost``) over encoded states of ``agent.policy.pool_layouts``
   layouts; "bc" clones the transitions of ``agent.policy.teacher_episodes`` Mode-2
   episodes, then runs ``agent.policy.dagger_rounds`` rounds of DAgger (run Mode-1 alone,
   label ``agent.policy.dagger_labels`` of the states it visited with Mode-2's first action,
   refit on everything).

All episodes here are training tasks drawn from ``agent.seed``, never the evaluation's
``planning.seed``. The environment is used the way the agent lives in it: it acts and
observes images; true positions are used only to fit the probe on offline data, and to
draw the states that value iteration starts from (as the offline data's starts are drawn).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jepa_jax import agent as agent_lib
from jepa_jax import configs, diagnostics, evaluation, value_iteration
from jepa_jax import critic as critic_lib
from jepa_jax import policy as policy_lib
from jepa_jax.envs import two_rooms
from jepa_jax.training.loop import Experiment, load_trained

AGENT_DIR = "agent"
STAGES = ("critic", "policy")


# ------------------------------------------------------------------------------- config


def load_context(workdir: str | Path, overrides: Sequence[str] = ()
                 ) -> tuple[ml_collections.ConfigDict, Experiment, Any]:
    """``(config, experiment, world-model params)`` of ``workdir``, with an ``agent`` config
    section (the workdir's own, or, for a model trained before the agent existed, the one of
    ``experiments/two_rooms.py`` at the run's preset) and ``overrides`` applied."""
    config, exp, params = load_trained(workdir)
    config.unlock()
    if "agent" not in config:
        config.agent = _default_agent_section(config.get("preset", "default"))
    else:  # settings added since the run was trained take the preset's values
        _fill_missing(config.agent, _default_agent_section(config.get("preset", "default")))
    config.lock()
    configs.apply_overrides(config, overrides)
    return config, exp, params


def _fill_missing(section: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict
                  ) -> None:
    for key, value in defaults.items():
        if key not in section:
            section[key] = value
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(
                section[key], ml_collections.ConfigDict):
            _fill_missing(section[key], value)


def _default_agent_section(preset: str) -> ml_collections.ConfigDict:
    path = Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py"
    if not path.exists():
        raise FileNotFoundError("the workdir's config has no agent section and "
                                f"{path} is not there to supply one")
    return configs.load_config(f"{path}:{preset}").agent


# ------------------------------------------------------------------------------- modules


@dataclass
class AgentModules:
    """The trained modules of an agent (any of critic and policy may be None)."""

    step_scale: float
    reach_scale: float
    probe: dict[str, Any]
    critic: critic_lib.Critic | None = None
    critic_params: Any = None
    policy: policy_lib.Policy | None = None
    policy_params: Any = None

    def params(self, wm_params: Any) -> dict[str, Any]:
        return {"world_model": wm_params, "critic": self.critic_params,
                "policy": self.policy_params,
                "probe": {k: jnp.asarray(v) for k, v in self.probe.items()}}


def fit_scales_and_probe(exp: Experiment, wm_params: Any, cfg: ml_collections.ConfigDict
                         ) -> AgentModules:
    """Step scale, reach scale and position probe from the first offline trajectories."""
    n = min(cfg.agent.probe_trajectories, exp.data.num_trajectories)
    sub = jax.tree.map(lambda x: x[:n], exp.data)
    emb = diagnostics._encode_frames(exp.wm, wm_params, sub, exp.env)  # (n, T, D)
    moves = np.sum(np.square(np.diff(np.asarray(emb), axis=1)), -1)
    step_scale = float(np.median(moves))
    if not step_scale > 0:
        raise ValueError("the encoder maps consecutive frames to the same latent: no scale")
    probe = diagnostics.fit_linear_probe(emb.reshape(-1, emb.shape[-1]),
                                         sub.pos.reshape(-1, 2))
    return AgentModules(step_scale=step_scale,
                        reach_scale=float(cfg.agent.reach_sigma) ** 2 * step_scale,
                        probe={"w": np.asarray(probe.w), "b": np.asarray(probe.b)})


def save_modules(workdir: str | Path, mods: AgentModules, log: dict[str, Any] | None = None
                 ) -> Path:
    d = Path(workdir) / AGENT_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / "agent.json").write_text(json.dumps(
        {"step_scale": mods.step_scale, "reach_scale": mods.reach_scale,
         "probe": {k: np.asarray(v).tolist() for k, v in mods.probe.items()}}, indent=2))
    if mods.critic is not None:
        critic_lib.save_critic(d, mods.critic, mods.critic_params)
    if mods.policy is not None:
        policy_lib.save_policy(d, mods.policy, mods.policy_params)
    if log is not None:
        (d / "train_log.json").write_text(json.dumps(log, indent=2))
    return d


def load_modules(workdir: str | Path, latent_dim: int, *, need: Sequence[str] = ()
                 ) -> AgentModules:
    """The modules saved in ``<workdir>/agent``; ``need`` names those that must be there
    ("critic", "policy"). Raises one-line errors when missing or not matching."""
    d = Path(workdir) / AGENT_DIR
    if not (d / "agent.json").exists():
        raise FileNotFoundError(f"no trained agent in {d}: run python -m jepa_jax.train_agent "
                                f"--workdir {workdir} first")
    meta = json.loads((d / "agent.json").read_text())
    probe = {k: np.asarray(v, np.float32) for k, v in meta["probe"].items()}
    if probe["w"].shape != (latent_dim, 2):
        raise ValueError(f"agent probe in {d} maps latents of dimension {probe['w'].shape[0]}, "
                         f"this world model's encoder gives {latent_dim}")
    mods = AgentModules(step_scale=meta["step_scale"], reach_scale=meta["reach_scale"],
                        probe=probe)
    if (d / "critic.json").exists() or "critic" in need:
        mods.critic, mods.critic_params = critic_lib.load_critic(d, latent_dim)
    if (d / "policy.json").exists() or "policy" in need:
        mods.policy, mods.policy_params = policy_lib.load_policy(d, latent_dim)
    return mods


def build_agent(config: ml_collections.ConfigDict, exp: Experiment, mods: AgentModules,
                task: Any = None, **overrides: Any) -> agent_lib.Agent:
    """An agent for ``task`` with ``agent.configurator`` settings, updated by ``overrides``
    (e.g. ``mode="mode2"``, ``horizon=8``, ``use_critic=True``)."""
    ccfg = {**config.agent.configurator.to_dict(), **overrides}
    critic = mods.critic if ccfg.get("use_critic") else None
    policy = mods.policy if ccfg.get("mode") != "mode2" or ccfg.get("warm_start") == "policy" \
        else None
    if ccfg.get("mode") == "mode2" and ccfg.get("warm_start") == "policy" and policy is None:
        raise ValueError("warm_start='policy' needs a trained Mode-1 policy")
    conf = agent_lib.configure(task, ccfg, planning=config.planning, critic=critic,
                               policy=policy, action_bound=float(config.env.action_bound))
    return agent_lib.make_agent(exp.wm, conf, step_scale=mods.step_scale,
                                reach_scale=mods.reach_scale, critic=critic, policy=policy)


# ------------------------------------------------------------------------------- episodes


def training_episodes(config: ml_collections.ConfigDict, exp: Experiment, n: int,
                      stream: int) -> evaluation.Episodes:
    """``n`` opposite-room training problems from ``agent.seed`` (stream: which draw)."""
    key = jax.random.fold_in(jax.random.key(config.agent.seed), stream)
    return evaluation.make_episodes(key, n, exp.env, margin=config.planning.start_goal_margin)


def collect(agent: agent_lib.Agent, params: Any, config: ml_collections.ConfigDict,
            exp: Experiment, episodes: evaluation.Episodes, key: jax.Array,
            task: agent_lib.TaskParams | None = None):
    """Runs the agent on ``episodes``; returns ``(positions, infos, final states, seconds)``."""
    return agent_lib.run_episodes(agent, params, exp.env, config.planning.env_steps,
                                  episodes.start, episodes.goal, episodes.layout, task, key,
                                  batch_size=config.planning.batch_size, keep_states=True)


def _memory_size(config) -> int:
    return max(int(config.agent.configurator.memory_size), int(config.planning.env_steps))


@contextlib.contextmanager
def planning_override(config, planner: str, **values):
    """Temporarily sets ``config.planning.<planner>.<key>`` (keys it has; 0 or None: keep)."""
    section = config.planning[planner]
    values = {k: v for k, v in values.items() if v and k in section}
    old = {k: section[k] for k in values}
    section.update(values)
    try:
        yield
    finally:
        section.update(old)


# ------------------------------------------------------------------------------- stages


def train_critic_stage(config, exp, wm_params, mods: AgentModules, key: jax.Array,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fits the critic by ``agent.critic.method``; sets ``mods.critic``.

    "value_iteration": value iteration over sampled states of the world, then regression
    (``jepa_jax.value_iteration``); "td": rounds of closed-loop collection into memory and
    TD fitting."""
    c = config.agent.critic
    critic = critic_lib.make_critic(c, exp.wm.latent_dim, mods.reach_scale)
    if c.method == "value_iteration":
        return _critic_by_value_iteration(config, exp, wm_params, mods, critic, key, log)
    params = critic.init(jax.random.fold_in(key, 0))
    mods.critic, mods.critic_params = critic, params
    data_parts, rounds = [], []
    for r in range(c.rounds):
        t0 = time.perf_counter()
        # A cheaper planner than the agent's Mode-2 collects (the actions are noised anyway).
        with planning_override(config, c.planner, num_restarts=c.collect_restarts,
                               num_iters=c.collect_iters):
            agent = build_agent(config, exp, mods, None, mode="mode2", planner=c.planner,
                                horizon=c.horizon, replan_every=c.replan_every,
                                use_critic=r > 0, action_noise=c.action_noise,
                                memory_size=_memory_size(config), warm_start="shift")
        eps = training_episodes(config, exp, c.episodes, stream=100 + r)
        pos, _, states, secs = collect(agent, mods.params(wm_params), config, exp, eps,
                                       jax.random.fold_in(key, 1000 + r))
        success = float(evaluation.score(pos, eps)["success_rate"])
        data = critic_lib.transitions_from_memory(states.memory)
        data_parts = (data_parts if c.keep_old_data else []) + [data]
        params, m = critic_lib.train_critic(critic, params,
                                            critic_lib.concat_transitions(data_parts), c,
                                            jax.random.fold_in(key, 2000 + r))
        mods.critic_params = params
        info = {"round": r, "collect_success": success, "collect_seconds": secs,
                "uses_critic": r > 0, "num_transitions": m["num_transitions"],
                "explained_variance": m["explained_variance"], "final_loss": m["final_loss"],
                "seconds": time.perf_counter() - t0}
        rounds.append(info)
        log(f"critic round {r}: collected {c.episodes} episodes (success {success:.0%}, "
            f"{secs:.0f} s); TD fit on {m['num_transitions']} transitions, explained "
            f"variance {m['explained_variance']:.3f}")
    return {"rounds": rounds}


def _critic_by_value_iteration(config, exp, wm_params, mods: AgentModules, critic,
                               key: jax.Array, log: Callable[[str], None]) -> dict[str, Any]:
    c = config.agent.critic.to_dict()
    t0 = time.perf_counter()
    tables = value_iteration.value_tables(exp.wm, wm_params, exp.env, jax.random.fold_in(key, 0),
                                          c, mods.reach_scale, critic.gamma, log)
    vi_s = time.perf_counter() - t0
    t = time.perf_counter()
    params, m = value_iteration.fit_critic(critic, critic.init(jax.random.fold_in(key, 1)),
                                           tables, c, jax.random.fold_in(key, 2))
    mods.critic, mods.critic_params = critic, params
    info = {"method": "value_iteration", "value_iteration_seconds": vi_s,
            "fit_seconds": time.perf_counter() - t, **m}
    log(f"critic: value iteration on {c['vi_layouts']} layouts x {c['vi_states']} states "
        f"({vi_s:.0f} s; {m['snap_cross_rate']:.2%} of snaps cross the wall), regression "
        f"RMSE {m['train_rmse']:.2f} train / {m['heldout_rmse'] or float('nan'):.2f} held-out "
        f"layouts ({info['fit_seconds']:.0f} s)")
    return info


def _demos_from_states(states: agent_lib.AgentState, goal_fraction: float = 1.0,
                       seed: int = 0) -> policy_lib.Demonstrations:
    """The (state, goal, action) entries of a batch of memories. Entries whose next state is
    at the goal (intrinsic cost < 0.1: the agent waiting there after success) are kept with
    probability ``goal_fraction``, so that they do not swamp the states on the way."""
    mem = states.memory
    valid = np.asarray(mem.valid).reshape(-1)
    at_goal = np.asarray(mem.cost).reshape(-1) < 0.1
    keep = np.random.default_rng(seed).random(valid.shape) < goal_fraction
    idx = np.flatnonzero(valid & (~at_goal | keep))
    d = mem.state.shape[-1]
    return policy_lib.Demonstrations(
        state=jnp.asarray(np.asarray(mem.state).reshape(-1, d)[idx]),
        goal=jnp.asarray(np.asarray(mem.goal).reshape(-1, d)[idx]),
        action=jnp.asarray(np.asarray(mem.action).reshape(-1, mem.action.shape[-1])[idx]))


def label_states(agent: agent_lib.Agent, params: Any, s: jax.Array, g: jax.Array,
                 key: jax.Array, chunk: int = 256) -> jax.Array:
    """Mode-2's first action at each latent ``s`` (N, D) toward ``g`` (N, D), planning from
    scratch (a zero warm start, or the policy's rollout if ``agent`` warm-starts from its
    policy), vmapped in chunks. Returns (N, A)."""
    h = agent.config.horizon
    n = s.shape[0]

    @jax.jit
    def label(s, g, keys):
        def one(si, gi, k):
            inputs = {"s": si, "goal": gi, "task": agent_lib.empty_task_params(),
                      "plan": jnp.zeros((h, agent.action_dim)),
                      "plan_age": jnp.asarray(h, jnp.int32), "in_mode2": jnp.zeros((), bool)}
            return agent.make_plan(params, inputs, k)[0][0]
        return jax.vmap(one)(s, g, keys)

    keys = jax.random.split(key, n)
    out = []
    for i in range(0, n, chunk):
        sl = slice(i, min(i + chunk, n))
        pad = chunk - (sl.stop - sl.start)
        si, gi, ki = s[sl], g[sl], keys[sl]
        if pad:
            si, gi, ki = (jnp.concatenate([x, jnp.repeat(x[-1:], pad, 0)]) for x in (si, gi, ki))
        out.append(np.asarray(label(si, gi, ki))[: chunk - pad])
    return jnp.asarray(np.concatenate(out))


def layout_latents(exp: Experiment, wm_params: Any, key: jax.Array, num_layouts: int,
                   num_states: int, door_fraction: float) -> jax.Array:
    """Encoded states of random Two-Rooms layouts, (num_layouts, num_states, D): positions
    uniform in the rooms, ``door_fraction`` of them in the door's gap, rendered and encoded."""
    env = exp.env
    if not isinstance(env, two_rooms.EnvParams):
        raise ValueError(f"Mode-1's cost objective samples Two-Rooms layouts; got a "
                         f"{type(env).__name__} world (use agent.policy.method='bc')")

    @jax.jit
    def one(k):
        kl, kp = jax.random.split(k)
        wall_x, door_y = two_rooms.sample_layout(kl, env)
        pos = two_rooms.sample_positions_or_door(kp, wall_x, door_y, env, num_states,
                                                 door_fraction)
        return exp.wm.encode(wm_params, two_rooms.render_positions(pos, wall_x, door_y, env))

    return jnp.stack([one(jax.random.fold_in(key, i)) for i in range(num_layouts)])


def train_policy_stage(config, exp, wm_params, mods: AgentModules, key: jax.Array,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fits Mode-1 by ``agent.policy.method``: "cost" (amortised Mode-2) or "bc" (behaviour
    cloning on Mode-2's closed-loop transitions, then DAgger rounds)."""
    c = config.agent.policy
    # make_policy validates the whole section, the method and its settings included.
    policy = policy_lib.make_policy(c, exp.wm.latent_dim, 2, float(config.env.action_bound))
    if c.method == "cost":
        return _policy_by_cost(config, exp, wm_params, mods, policy, key, log)
    params = policy.init(jax.random.fold_in(key, 0))
    teacher = build_agent(config, exp, mods, None, mode="mode2",
                          memory_size=_memory_size(config), warm_start="shift")
    # DART: the teacher's executed actions are perturbed, so the demonstrations include
    # recoveries from off-course states; memory keeps the teacher's intended actions.
    noisy_teacher = build_agent(config, exp, mods, None, mode="mode2",
                                memory_size=_memory_size(config), warm_start="shift",
                                action_noise=c.teacher_noise)
    t0 = time.perf_counter()
    eps = training_episodes(config, exp, c.teacher_episodes, stream=200)
    pos, _, states, secs = collect(noisy_teacher, mods.params(wm_params), config, exp, eps,
                                   jax.random.fold_in(key, 1))
    demos = _demos_from_states(states, c.goal_fraction)
    teacher_success = float(evaluation.score(pos, eps)["success_rate"])
    log(f"Mode-1: {c.teacher_episodes} Mode-2 teacher episodes (success "
        f"{teacher_success:.0%}, {secs:.0f} s), {demos.size} demonstrations")
    params, m = policy_lib.train_policy(policy, params, demos, c, jax.random.fold_in(key, 2))
    rounds = [{"round": 0, "teacher_success": teacher_success, "teacher_seconds": secs,
               "num_demos": demos.size, **m}]
    # DAgger's iterates do not improve monotonically with few rounds: each is run alone on
    # training tasks anyway (to collect the states to relabel), and the best one is kept.
    best = (-1.0, params, 0)
    for r in range(c.dagger_rounds + 1):
        mods.policy, mods.policy_params = policy, params
        t1 = time.perf_counter()
        mode1 = build_agent(config, exp, mods, None, mode="mode1",
                            memory_size=_memory_size(config))
        eps = training_episodes(config, exp, c.dagger_episodes, stream=300 + r)
        pos, _, states, _ = collect(mode1, mods.params(wm_params), config, exp, eps,
                                    jax.random.fold_in(key, 10 + r))
        mode1_success = float(evaluation.score(pos, eps)["success_rate"])
        rounds[-1]["mode1_success_after"] = mode1_success
        if mode1_success > best[0]:
            best = (mode1_success, params, r)
        if r == c.dagger_rounds:
            break
        visited = _demos_from_states(states, c.goal_fraction, seed=r + 1)
        pick = jax.random.choice(jax.random.fold_in(key, 20 + r), visited.size,
                                 (min(c.dagger_labels, visited.size),), replace=False)
        s, g = visited.state[pick], visited.goal[pick]
        labeler = teacher
        if c.label_warm_start == "policy":  # the teacher refines the student's own rollout
            labeler = build_agent(config, exp, mods, None, mode="mode2", warm_start="policy",
                                  memory_size=_memory_size(config))
        labels = label_states(labeler, mods.params(wm_params), s, g,
                              jax.random.fold_in(key, 30 + r))
        demos = policy_lib.concat_demos([demos, policy_lib.Demonstrations(s, g, labels)])
        params, m = policy_lib.train_policy(policy, params, demos, c,
                                            jax.random.fold_in(key, 40 + r))
        rounds.append({"round": r + 1, "num_demos": demos.size,
                       "seconds": time.perf_counter() - t1, **m})
        log(f"Mode-1 after {r} DAgger rounds: {mode1_success:.0%} alone on training tasks; "
            f"relabelled {s.shape[0]} visited states; now {demos.size} demonstrations")
    mods.policy, mods.policy_params = policy, best[1]
    log(f"Mode-1: kept the policy of round {best[2]} ({best[0]:.0%} alone on training tasks)")
    return {"method": "bc", "rounds": rounds, "kept_round": best[2],
            "kept_training_success": best[0],
            "seconds": time.perf_counter() - t0}


def _policy_by_cost(config, exp, wm_params, mods: AgentModules, policy: policy_lib.Policy,
                    key: jax.Array, log: Callable[[str], None]) -> dict[str, Any]:
    """Mode-1 trained on the cost of Mode-2 (the agent's ``mode2`` configuration for the
    reach task: same cost terms, critic and horizon), then run alone on training tasks."""
    c = config.agent.policy
    mode2 = build_agent(config, exp, mods, None, mode="mode2",
                        memory_size=_memory_size(config), warm_start="shift")
    t0 = time.perf_counter()
    latents = layout_latents(exp, wm_params, jax.random.fold_in(key, 3), c.pool_layouts,
                             c.pool_states, c.door_fraction)
    cost_fn = mode2.cost_fn(mods.params(wm_params), agent_lib.empty_task_params())
    log(f"Mode-1: {c.num_steps} updates on Mode-2's cost (horizon {mode2.config.horizon}, "
        f"critic {'on' if mode2.config.use_critic else 'off'}) over "
        f"{c.pool_layouts}x{c.pool_states} encoded states")
    params, m = policy_lib.train_policy_on_cost(
        policy, policy.init(jax.random.fold_in(key, 0)), latents, exp.wm.predict, wm_params,
        cost_fn, mode2.config.horizon, c, jax.random.fold_in(key, 2))
    fit_seconds = time.perf_counter() - t0
    mods.policy, mods.policy_params = policy, params
    mode1 = build_agent(config, exp, mods, None, mode="mode1", memory_size=_memory_size(config))
    eps = training_episodes(config, exp, c.dagger_episodes, stream=300)
    pos, _, _, _ = collect(mode1, mods.params(wm_params), config, exp, eps,
                           jax.random.fold_in(key, 10))
    success = float(evaluation.score(pos, eps)["success_rate"])
    log(f"Mode-1: cost {m['loss_first']:.3f} -> {m['loss_last']:.3f} ({fit_seconds:.0f} s); "
        f"{success:.0%} alone on {c.dagger_episodes} training tasks")
    return {"method": "cost", "rounds": [{"round": 0, **m, "fit_seconds": fit_seconds,
                                          "mode1_success_after": success}],
            "kept_round": 0, "kept_training_success": success,
            "seconds": time.perf_counter() - t0}


def train_agent(workdir: str | Path, overrides: Sequence[str] = (),
                stages: Sequence[str] = STAGES, log: Callable[[str], None] = print
                ) -> dict[str, Any]:
    """Fits scales and probe, then the requested stages, saving after each; returns the log.

    Stages not requested are kept from an earlier run when present (e.g. ``stages=
    ("policy",)`` keeps the saved critic)."""
    bad = sorted(set(stages) - set(STAGES))
    if bad:
        raise ValueError(f"unknown agent training stages {bad}; valid: {', '.join(STAGES)}")
    config, exp, wm_params = load_context(workdir, overrides)
    key = jax.random.key(config.agent.seed)
    t0 = time.perf_counter()
    mods = fit_scales_and_probe(exp, wm_params, config)
    try:
        old = load_modules(workdir, exp.wm.latent_dim)
        if "critic" not in stages:
            mods.critic, mods.critic_params = old.critic, old.critic_params
        if "policy" not in stages:
            mods.policy, mods.policy_params = old.policy, old.policy_params
    except FileNotFoundError:
        pass
    train_log: dict[str, Any] = {"step_scale": mods.step_scale,
                                 "reach_scale": mods.reach_scale}
    old_log = Path(workdir) / AGENT_DIR / "train_log.json"
    if old_log.exists():  # the log of a kept module stays with it
        kept = json.loads(old_log.read_text())
        train_log.update({s: kept[s] for s in STAGES if s not in stages and s in kept})
    save_modules(workdir, mods)
    if "critic" in stages:
        t = time.perf_counter()
        train_log["critic"] = train_critic_stage(config, exp, wm_params, mods,
                                                 jax.random.fold_in(key, 1), log)
        train_log["critic"]["seconds"] = time.perf_counter() - t
        save_modules(workdir, mods)
    if "policy" in stages:
        t = time.perf_counter()
        train_log["policy"] = train_policy_stage(config, exp, wm_params, mods,
                                                 jax.random.fold_in(key, 2), log)
        train_log["policy"]["seconds"] = time.perf_counter() - t
    train_log["seconds"] = time.perf_counter() - t0
    save_modules(workdir, mods, train_log)
    return train_log
