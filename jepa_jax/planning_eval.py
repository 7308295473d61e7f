"""Evaluate planners on a trained workdir: the library side of ``python -m jepa_jax.evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jepa_jax import cost as cost_lib
from jepa_jax import diagnostics, evaluation
from jepa_jax.critic import cost_config as critic_cost_config
from jepa_jax.planning import make_planner
from jepa_jax.planning.ensemble import planning_model
from jepa_jax.training.loop import Experiment, load_trained

MODEL_PLANNERS = ("gradient", "cem", "mppi")


def planning_cost_config(config: ml_collections.ConfigDict, name: str,
                         critic: tuple[Any, Any, float] | None = None) -> dict[str, Any]:
    """The cost weights planner ``name`` plans with: ``config.planning.cost``, or with a
    ``critic`` the critic's own cost (see ``build_planner``)."""
    if critic is None:
        return config.planning.cost.to_dict()
    critic_model, _, weight = critic
    return critic_cost_config(critic_model, int(config.planning[name].horizon), weight)


def build_planner(exp: Experiment, config: ml_collections.ConfigDict, name: str,
                  critic: tuple[Any, Any, float] | None = None, ensemble: bool = True):
    """The planner ``name`` with the cost and settings of ``config.planning``.

    ``critic``: optional ``(Critic, params, weight)``; the cost is then the critic's own
    (``jepa_jax.critic.cost_config``, as the agent plans): the discounted reach cost over
    the horizon plus the terminal value ``weight * gamma^H * V(s_H, g)``, whatever the
    planner. The goal-distance terms of ``config.planning.cost`` are not used then.
    ``ensemble``: with several predictors (``model.num_predictors``), plan through all of
    them (default) or through ``params["predictor"]`` alone.
    """
    if name not in MODEL_PLANNERS:
        raise ValueError(f"unknown planner {name!r}; expected one of {MODEL_PLANNERS} "
                         f"or 'straight'")
    critic_fn = None
    if critic is not None:
        critic_model, cparams, _ = critic
        critic_fn = critic_model.critic_fn(cparams)
    # Every predictor of an ensemble (see jepa_jax.planning.ensemble).
    model = planning_model(exp.wm) if ensemble else exp.wm
    if critic is not None and model is not exp.wm:
        raise ValueError("a critic cost is not supported with an ensemble of predictors "
                         f"(model.num_predictors={exp.wm.num_predictors})")
    cost_fn = cost_lib.make_cost(planning_cost_config(config, name, critic), critic_fn=critic_fn)
    pcfg = config.planning[name].to_dict()
    pcfg["action_bound"] = float(config.env.action_bound)
    pcfg["shift"] = int(config.planning.replan_every)  # warm start = plan minus executed part
    return make_planner(name, model, cost_fn, pcfg)


def evaluate_workdir(workdir: str | Path, planner_name: str, *, episodes: int | None = None,
                     seed: int | None = None, overrides=(), write: bool = True,
                     plot: bool = True, critic_weight: float = 0.0,
                     progress: bool = False) -> dict[str, Any]:
    """Runs the closed-loop evaluation; writes ``eval_<planner>.json`` (and ``.png``).

    ``critic_weight`` > 0 adds the critic trained in ``workdir/agent`` (``python -m
    jepa_jax.train_agent``) to the planner's cost as a terminal value; the file is then
    ``eval_<planner>_critic.json``. ``progress`` prints a line after every batch of
    ``planning.batch_size`` episodes. With ``write``, finished batches are kept in
    ``eval_<planner>.partial.npz`` until the JSON is written, so that a killed evaluation
    started again with the same settings resumes after its last finished batch."""
    workdir = Path(workdir)
    config, exp, params = load_trained(workdir, overrides)
    pc = config.planning
    n = episodes if episodes is not None else pc.episodes
    if n < 1:
        raise ValueError(f"--episodes must be >= 1, got {n}")
    env = exp.env
    episodes_ = evaluation.make_episodes(jax.random.key(pc.seed if seed is None else seed), n,
                                         env, margin=pc.start_goal_margin)
    budget: dict[str, Any] = {"env_steps": pc.env_steps, "episodes": n}
    if planner_name == "straight":
        fn = evaluation.make_straight_episode_fn(env, pc.env_steps)
        timing: dict[str, Any] = {}
    else:
        critic = None
        if critic_weight > 0:
            from jepa_jax.critic import load_critic

            model, cparams = load_critic(workdir / "agent", exp.wm.latent_dim)
            critic = (model, cparams, critic_weight)
        elif critic_weight < 0:
            raise ValueError(f"--critic-weight must be >= 0, got {critic_weight}")
        planner = build_planner(exp, config, planner_name, critic)
        fn = evaluation.make_episode_fn(planner, env, pc.env_steps, pc.replan_every)
        budget.update(planner=planner_name, replan_every=pc.replan_every,
                      plan_calls_per_episode=-(-pc.env_steps // pc.replan_every),
                      **dict(planner.config), critic_weight=critic_weight,
                      cost=planning_cost_config(config, planner_name, critic))
        timing = evaluation.time_plan_call(planner, params, env, episodes_)
    stem = f"eval_{planner_name}" + ("_critic" if critic_weight > 0 else "")
    partial = workdir / f"{stem}.partial.npz"
    # What else decides the outcome: the model's checkpoint, the critic, every setting.
    critic_mtime = evaluation.newest_mtime(workdir / "agent") if critic_weight > 0 else None
    fingerprint = json.dumps({"checkpoint": evaluation.newest_mtime(workdir / "checkpoints"),
                              "critic": critic_mtime, "budget": budget,
                              "planning": pc.to_dict(), "model": config.model.to_dict()},
                             sort_keys=True, default=str)
    # eval_seconds: wall time of the episodes run by this call, compilation included.
    positions, plans, secs = evaluation.run_evaluation(
        fn, params, episodes_, jax.random.key(1), batch_size=min(pc.batch_size, n),
        progress=evaluation.print_progress if progress else None,
        resume=partial if write else None, fingerprint=fingerprint)
    result = evaluation.score(positions, episodes_, env)
    success = result["success"]  # per episode, kept: paired comparisons of two planners
    result.update(timing)
    result.update(eval_seconds=secs, budget=budget, workdir=str(workdir),
                  uses_true_state="only to score the outcome after each episode")
    if write:
        (workdir / f"{stem}.json").write_text(json.dumps(result, indent=2))
        partial.unlink(missing_ok=True)
        if plot:
            _plot(workdir / f"{stem}.png", exp, params, episodes_, positions,
                  plans, success, planner_name, result, config)
    return result


def _plot(path, exp, params, episodes_, positions, plans, success, name, result, config):
    """A few episodes: executed path, and the first plan decoded by a linear probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jepa_jax.training.plots import draw_layout

    probe = None
    if name != "straight":
        probe = diagnostics.fit_position_probe(exp.wm, params, exp.env, exp.policy,
                                               jax.random.key(config.diagnostics.seed))
    num = min(6, positions.shape[0])
    fig, axes = plt.subplots(1, num, figsize=(3 * num, 3.2))
    axes = np.atleast_1d(axes)
    for i in range(num):
        ax = axes[i]
        lay = np.asarray(episodes_.layout[i])
        draw_layout(ax, lay[0], lay[1], exp.env)
        ax.plot(positions[i, :, 0], positions[i, :, 1], "b-", lw=1, label="executed")
        if probe is not None:
            from jepa_jax import evaluation as ev

            obs = ev._render(episodes_.start[i], episodes_.layout[i], exp.env)
            s0 = exp.wm.encode(params, obs)
            z = (np.zeros((plans.shape[2], exp.wm.z_dim), np.float32) if exp.wm.z_dim
                 else None)  # a latent-variable model: the future at the prior's mean
            pred = exp.wm.rollout(params, s0, plans[i, 0], z)
            pp = np.asarray(probe(pred))
            ax.plot(pp[:, 0], pp[:, 1], "r.--", ms=2, lw=0.8, label="first plan (probed)")
        ax.plot(*np.asarray(episodes_.start[i]), "go", ms=5)
        ax.plot(*np.asarray(episodes_.goal[i]), "r*", ms=9)
        ax.set_title("success" if success[i] else "failure", fontsize=8)
        ax.set_xlim(0, 64)
        ax.set_ylim(64, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{name}: success {result['success_rate']:.0%} over "
                 f"{result['num_episodes']} episodes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
