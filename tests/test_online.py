"""Online data for the predictor: collection semantics (real world transitions of planned
actions), the buffer, and exact resume of a run with online rounds."""

from pathlib import Path

import jax
import numpy as np
import pytest

from jepa_jax import configs, evaluation
from jepa_jax.envs import two_rooms
from jepa_jax.planning_eval import build_planner
from jepa_jax.training import loop, online

CONFIG = str(Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py")
ONLINE = ("--config.planning.gradient.horizon=16", "--config.train.online_rounds=2",
          "--config.train.online_trajectories=8", "--config.train.checkpoint_every=10")


def tiny(*overrides):
    return configs.load_config(CONFIG + ":tiny", [*ONLINE, *overrides])


def test_round_steps_and_buffer_write():
    assert online.round_steps(20, 2) == [6, 13]
    assert online.round_steps(4000, 3) == [1000, 2000, 3000]
    buf = online.empty(6, 3)
    rows = jax.tree.map(lambda x: np.ones((2, *x.shape[1:]), np.float32), buf)
    out = online.write(buf, rows, 2)
    expected = np.zeros((6, 3, 2), np.float32)
    expected[2:4] = 1.0
    np.testing.assert_array_equal(np.asarray(out.pos), expected)
    assert out.actions.shape == (6, 2, 2) and np.asarray(out.layout)[[2, 3]].all()


def test_collected_trajectories_are_world_transitions_of_planned_actions():
    config = tiny()
    exp = loop.Experiment(config)
    # Perturbed: at init the predictor is the identity, so every plan costs the same.
    params = exp.init_state().params
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys, strict=True)])
    planner = build_planner(exp, config, "gradient")
    collect = online.make_collector(planner, exp.env, config.data.length)
    trajs = jax.device_get(collect(params, jax.random.key(3), 4))
    assert trajs.pos.shape == (4, 17, 2) and trajs.actions.shape == (4, 16, 2)
    norms = np.linalg.norm(trajs.actions, axis=-1)
    assert norms.max() <= config.env.action_bound + 1e-4 and norms.max() > 0
    for i in range(4):  # replay every step through the world, one at a time
        wall_x, door_y = trajs.layout[i]
        p = trajs.pos[i, 0]
        for t in range(16):
            p = np.asarray(two_rooms.transition(p, trajs.actions[i, t], wall_x, door_y,
                                                exp.env))
            np.testing.assert_allclose(trajs.pos[i, t + 1], p, atol=1e-5)
    # Starts follow the evaluation's distribution: the same key gives the same problems.
    eps = evaluation.make_episodes(jax.random.split(jax.random.key(3))[0], 4, exp.env,
                                   margin=2.6)
    np.testing.assert_allclose(trajs.pos[:, 0], np.asarray(eps.start))


def test_near_wall_starts_move_a_fraction_next_to_the_wall_on_their_side():
    env = two_rooms.EnvParams()
    eps = evaluation.make_episodes(jax.random.key(0), 400, env, margin=2.6)
    starts, layouts = np.asarray(eps.start), np.asarray(eps.layout)
    moved = np.asarray(online.near_wall_starts(jax.random.key(1), eps.start, eps.layout, env,
                                               0.5, (0.5, 6.0)))
    changed = np.any(moved != starts, -1)
    assert 0.4 < changed.mean() < 0.6
    np.testing.assert_array_equal(moved[:, 1], starts[:, 1])  # y kept
    gap = np.abs(moved[changed, 0] - layouts[changed, 0]) - env.wall_half_width
    assert gap.min() >= 0.5 - 1e-5 and gap.max() <= 6.0 + 1e-5
    # Same side of the wall as before, so the goal stays in the other room.
    same_side = (moved[:, 0] < layouts[:, 0]) == (starts[:, 0] < layouts[:, 0])
    assert same_side.all()
    # Free positions: the world does not move them when the action is zero.
    still = jax.vmap(lambda p, lay: two_rooms.transition(p, np.zeros(2, np.float32), lay[0],
                                                         lay[1], env))(moved, layouts)
    np.testing.assert_allclose(np.asarray(still), moved, atol=1e-5)
    none = online.near_wall_starts(jax.random.key(1), eps.start, eps.layout, env, 0.0,
                                   (0.5, 6.0))
    np.testing.assert_array_equal(np.asarray(none), starts)


def test_online_run_resumes_exactly(tmp_path):
    straight = loop.train_and_evaluate(tiny(), tmp_path / "a", progress=False)
    # Interrupt between the two rounds (predictor steps 6 and 13 = global 66 and 73): the
    # checkpoint at 70 carries the first round's buffer.
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(tiny(), tmp_path / "b", progress=False, stop_after=72)
    resumed = loop.train_and_evaluate(tiny(), tmp_path / "b", progress=False)
    assert resumed == pytest.approx(straight, rel=1e-5, abs=1e-6)


def test_online_config_errors():
    with pytest.raises(ValueError, match="planning.gradient.horizon"):
        loop.Experiment(tiny("--config.planning.gradient.horizon=8"))
    with pytest.raises(ValueError, match="online_fraction"):
        loop.Experiment(tiny("--config.train.online_fraction=1.5"))
    with pytest.raises(ValueError, match="online_near_wall_fraction"):
        loop.Experiment(tiny("--config.train.online_near_wall_fraction=2.0"))
    with pytest.raises(ValueError, match="make_collector|horizon"):
        exp = loop.Experiment(tiny())
        online.make_collector(build_planner(exp, exp.config, "gradient"), exp.env, 40)
