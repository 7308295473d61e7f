"""Offline data: deterministic generation, consistency with the environment, policy bounds,
the cross-wall start option, resumable batch order and jitted batch rendering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.data import offline
from jepa_jax.envs import two_rooms

ENV = two_rooms.EnvParams()
POLICY = offline.PolicyParams()
N, T = 16, 9


@pytest.fixture(scope="module")
def trajs():
    return offline.generate(jax.random.key(0), N, T, ENV, POLICY)


def test_generate_shapes_and_determinism(trajs):
    assert trajs.pos.shape == (N, T, 2) and trajs.pos.dtype == jnp.float32
    assert trajs.layout.shape == (N, 2) and trajs.actions.shape == (N, T - 1, 2)
    assert trajs.num_trajectories == N and trajs.length == T
    again = offline.generate(jax.random.key(0), N, T, ENV, POLICY)
    other = offline.generate(jax.random.key(1), N, T, ENV, POLICY)
    for a, b, c in zip(jax.tree.leaves(trajs), jax.tree.leaves(again), jax.tree.leaves(other),
                       strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_positions_replay_the_environment(trajs):
    pos, layout, actions = map(np.asarray, (trajs.pos, trajs.layout, trajs.actions))
    step = jax.jit(jax.vmap(lambda p, a, w, d: two_rooms.transition(p, a, w, d, ENV)))
    replay = [pos[:, 0]]
    for t in range(T - 1):
        replay.append(np.asarray(step(replay[-1], actions[:, t], layout[:, 0], layout[:, 1])))
    np.testing.assert_allclose(np.stack(replay, 1), pos, atol=1e-5)
    # Valid states only: inside the interior, never inside the solid wall.
    assert np.all((pos > ENV.low) & (pos < ENV.high))
    wx, dy = layout[:, None, 0], layout[:, None, 1]
    solid = (np.abs(pos[..., 0] - wx) <= 1.0) & (np.abs(pos[..., 1] - dy) > 4.0)
    assert not solid.any()
    # Layouts on the integer grid within the configured ranges.
    np.testing.assert_array_equal(layout, np.round(layout))
    assert np.all((layout[:, 0] >= 20) & (layout[:, 0] <= 44))
    assert np.all((layout[:, 1] >= 10) & (layout[:, 1] <= 54))


def test_actions_within_policy_bounds(trajs):
    norms = np.linalg.norm(np.asarray(trajs.actions), axis=-1)
    assert norms.min() >= POLICY.step_min - 1e-5 and norms.max() <= POLICY.step_max + 1e-5
    assert norms.max() <= ENV.action_bound  # the env never needs to clip them
    # Headings drift smoothly: consecutive angle changes are Gaussian with std angle_noise.
    a = np.asarray(trajs.actions)
    ang = np.arctan2(a[..., 1], a[..., 0])
    dang = np.angle(np.exp(1j * np.diff(ang, axis=1)))
    assert 0.3 < dang.std() < 0.6


def _room_changes(tr):
    room = np.asarray(tr.pos[..., 0] > tr.layout[:, None, 0])
    return (room[:, 1:] != room[:, :-1]).any(1).sum()


def test_cross_wall_rate_controls_door_crossings():
    key = jax.random.key(3)
    n, t = 64, 17
    always = offline.generate(key, n, t, ENV, offline.PolicyParams(cross_wall_rate=1.0))
    never = offline.generate(key, n, t, ENV, offline.PolicyParams(cross_wall_rate=0.0))
    c1, c0 = _room_changes(always), _room_changes(never)
    assert c1 >= n // 3 and c1 >= 3 * c0 + 5, (c1, c0)
    # Cross-wall starts are 2-8 px from the wall face, level with the door.
    start = np.asarray(always.pos[:, 0])
    wx, dy = np.asarray(always.layout).T
    dist = np.abs(start[:, 0] - wx) - ENV.wall_half_width
    assert np.all((dist >= 2.0 - 1e-4) & (dist <= 8.0 + 1e-4))
    assert np.all(np.abs(start[:, 1] - dy) <= 0.7 * ENV.door_half_width + 1e-4)


def test_wall_slide_rate_starts_along_the_wall():
    key = jax.random.key(4)
    n, t = 64, 9
    slide = offline.generate(key, n, t, ENV, offline.PolicyParams(
        cross_wall_rate=0.0, wall_slide_rate=1.0, angle_noise=0.0))
    start = np.asarray(slide.pos[:, 0])
    wx = np.asarray(slide.layout[:, 0])
    dist = np.abs(start[:, 0] - wx) - ENV.wall_half_width
    assert np.all((dist >= -1e-4) & (dist <= 3.0 + 1e-4))
    # Headings along the wall, up or down, turned away from it by |N(0, 0.25)| rad.
    a = np.asarray(slide.actions[:, 0])
    angle_to_wall = np.arctan2(np.abs(a[:, 0]), np.abs(a[:, 1]))
    assert np.mean(angle_to_wall < 0.5) > 0.85 and np.all(angle_to_wall < 1.2)
    into_wall = np.sign(wx - start[:, 0])
    assert np.all(a[:, 0] * into_wall <= 1e-6)
    assert 0.25 < np.mean(a[:, 1] > 0) < 0.75  # both directions
    # Most of them move (a free run next to the wall), unlike wall-seeking starts.
    moved = np.linalg.norm(np.asarray(slide.pos[:, -1] - slide.pos[:, 0]), axis=-1)
    assert np.median(moved) > 4.0
    # The other kinds of start draw exactly as before.
    base = offline.generate(key, n, t, ENV, offline.PolicyParams(cross_wall_rate=0.0))
    none = offline.generate(key, n, t, ENV, offline.PolicyParams(cross_wall_rate=0.0,
                                                                 wall_slide_rate=0.0))
    np.testing.assert_array_equal(base.pos, none.pos)


def test_generate_errors():
    with pytest.raises(ValueError, match="num_trajectories"):
        offline.generate(jax.random.key(0), 0, 5)
    with pytest.raises(ValueError, match="length"):
        offline.generate(jax.random.key(0), 3, 1)
    with pytest.raises(ValueError, match="action_bound"):
        offline.generate(jax.random.key(0), 3, 5, two_rooms.EnvParams(action_bound=-1.0))


def test_batch_indices_cover_each_trajectory_once_per_epoch():
    key = jax.random.key(4)
    n, b = 12, 4
    for epoch in range(3):
        idx = np.concatenate([np.asarray(offline.batch_indices(key, n, b, epoch * 3 + i))
                              for i in range(3)])
        np.testing.assert_array_equal(np.sort(idx), np.arange(n))
    # Epoch orders differ.
    e0 = np.concatenate([offline.batch_indices(key, n, b, i) for i in range(3)])
    e1 = np.concatenate([offline.batch_indices(key, n, b, 3 + i) for i in range(3)])
    assert not np.array_equal(e0, e1)
    # Drop-last: with 10 trajectories and batches of 3, an epoch is 3 batches of distinct ones.
    idx = np.concatenate([offline.batch_indices(key, 10, 3, i) for i in range(3)])
    assert len(set(idx.tolist())) == 9 and idx.max() < 10
    np.testing.assert_array_equal(offline.batch_indices(key, 10, 3, 3)[:3],
                                  offline.epoch_permutation(key, 10, 1)[:3])


def test_batch_indices_is_a_pure_function_of_the_step():
    key = jax.random.key(5)
    run = [np.asarray(offline.batch_indices(key, 20, 6, s)) for s in range(10)]
    # A "resumed" run starting at step 7 sees the same batches.
    resumed = [np.asarray(offline.batch_indices(key, 20, 6, s)) for s in range(7, 10)]
    for a, b in zip(run[7:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    # Traced step under jit gives the same indices.
    jitted = jax.jit(lambda s: offline.batch_indices(key, 20, 6, s))
    for s in (0, 4, 9):
        np.testing.assert_array_equal(jitted(jnp.int32(s)), run[s])
    with pytest.raises(ValueError, match="batch_size"):
        offline.batch_indices(key, 5, 6, 0)


def test_get_batch_under_jit_matches_render(trajs):
    idx = jnp.array([3, 0])
    # The first 3 frames (2 actions) of each trajectory keep the rendering small.
    short = offline.Trajectories(pos=np.asarray(trajs.pos)[:, :3],
                                 layout=np.asarray(trajs.layout),
                                 actions=np.asarray(trajs.actions)[:, :2])
    batch = jax.jit(lambda tr, i: offline.get_batch(tr, i, ENV))(short, idx)
    assert batch.obs.shape == (2, 3, 65, 65, 2) and batch.obs.dtype == jnp.float32
    assert batch.actions.shape == (2, 2, 2) and batch.layout.shape == (2, 2)
    np.testing.assert_array_equal(batch.pos, np.asarray(short.pos)[[3, 0]])
    np.testing.assert_array_equal(batch.actions, np.asarray(short.actions)[[3, 0]])
    pos = np.asarray(short.pos)[[3, 0]]
    lay = np.asarray(short.layout)[[3, 0]]
    ref = two_rooms.render_positions(pos, lay[:, None, 0], lay[:, None, 1], ENV)
    np.testing.assert_allclose(batch.obs, ref, atol=1e-6)
    # The agent channel peaks at the rounded true position.
    agent = np.asarray(batch.obs[..., 0]).reshape(2, 3, -1)
    rows, cols = np.unravel_index(agent.argmax(-1), (65, 65))
    np.testing.assert_array_equal(cols, np.round(pos[..., 0]))
    np.testing.assert_array_equal(rows, np.round(pos[..., 1]))
