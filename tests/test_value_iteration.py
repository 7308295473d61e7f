"""Value-iteration critic targets: snapping and sweeps against NumPy, the detour geometry
of Two-Rooms with an oracle encoder, and the regression that fits the critic."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax import agent_training
from jepa_jax import critic as cr
from jepa_jax import value_iteration as vi
from jepa_jax.envs import two_rooms

GAMMA = 0.9


def _numpy_values(lat, lat_next, goal_index, gamma, reach_scale, sweeps):
    """Reference: brute-force nearest neighbour and a plain loop of Bellman sweeps."""
    d = ((lat_next[:, :, None, :] - lat[None, None]) ** 2).sum(-1)
    j = d.argmin(-1)
    goals = lat[goal_index]
    c = 1.0 - np.exp(-((lat_next[:, :, None] - goals[None, None]) ** 2).sum(-1) / reach_scale)
    v = np.zeros((lat.shape[0], len(goal_index)))
    for _ in range(sweeps):
        v = np.min(c + gamma * v[j], axis=1)
    return v


def _chain(blocked_right_of: int | None = None):
    """Six states on a line (latent = position); actions left, right, stay; optionally the
    move right out of one state is blocked (it stays)."""
    x = np.arange(6, dtype=np.float32)[:, None]
    nxt = np.stack([np.maximum(x - 1, 0), np.minimum(x + 1, 5), x], 1)
    if blocked_right_of is not None:
        nxt[blocked_right_of, 1] = x[blocked_right_of]
    return x, nxt


def test_snap_matches_brute_force():
    rng = np.random.default_rng(0)
    lat = rng.normal(size=(20, 3)).astype(np.float32)
    nxt = rng.normal(size=(20, 4, 3)).astype(np.float32)
    ref = ((nxt[:, :, None] - lat[None, None]) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(vi.snap(jnp.asarray(lat), jnp.asarray(nxt))), ref)


def test_chain_values_by_hand():
    x, nxt = _chain()
    v = np.asarray(vi.tabular_values(jnp.asarray(x), jnp.asarray(nxt), jnp.array([0]),
                                     GAMMA, 1e-3, 20))[:, 0]
    # V counts the costs of the states after s: the step into the goal costs 0.
    expected = [0.0, 0.0, 1.0, 1 + GAMMA, 1 + GAMMA + GAMMA**2,
                1 + GAMMA + GAMMA**2 + GAMMA**3]
    np.testing.assert_allclose(v, expected, atol=1e-5)


def test_sweeps_truncate_the_horizon():
    x, nxt = _chain()
    v = np.asarray(vi.tabular_values(jnp.asarray(x), jnp.asarray(nxt), jnp.array([0]),
                                     GAMMA, 1e-3, 2))[:, 0]
    # After 2 sweeps a far state has seen only 2 steps of cost.
    np.testing.assert_allclose(v[3:], 1 + GAMMA, atol=1e-5)


@pytest.mark.parametrize("blocked", [None, 2])
def test_values_match_numpy(blocked):
    x, nxt = _chain(blocked)
    goals = np.array([5, 0, 3])
    ref = _numpy_values(x, nxt, goals, GAMMA, 0.5, 30)
    got = vi.tabular_values(jnp.asarray(x), jnp.asarray(nxt), jnp.asarray(goals), GAMMA, 0.5,
                            30)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
    if blocked is not None:  # the goal on the far side of the block is never reached
        assert np.asarray(got)[0, 0] > 5


@dataclasses.dataclass(frozen=True)
class _CentroidModel:
    """An oracle encoder: the latent is the agent blob's centroid in pixels."""

    def encode(self, params, obs):
        del params
        img = obs[..., 0]
        g = jnp.arange(img.shape[-1], dtype=jnp.float32)
        mass = img.sum((-1, -2))
        return jnp.stack([(img * g).sum((-1, -2)) / mass,
                          (img * g[:, None]).sum((-1, -2)) / mass], -1)


def _oracle_tables(num_layouts=1, **cfg):
    env = two_rooms.EnvParams(random_layout=False, wall_x=32.0, door_y=14.0)
    c = {**vi.DEFAULTS, "vi_layouts": num_layouts, "vi_states": 384, "vi_goals": 24,
         "vi_sweeps": 60, **cfg}
    # reach_scale 1 px^2: the cost is 1 per step until within about a pixel of the goal.
    return env, vi.value_tables(_CentroidModel(), None, env, jax.random.key(0), c, 1.0, 0.98,
                                log=lambda m: None)


def test_two_rooms_values_follow_the_door():
    env, t = _oracle_tables()
    lat, goals, v = t.latents[0], t.goal_index[0], t.values[0]
    assert v.shape == (384, 24) and np.all(np.isfinite(v))
    start, goal = lat[:, None, :], lat[goals][None]
    left = start[..., 0] < 31.0
    right = goal[..., 0] > 33.0
    pairs = left & right
    door = np.array([32.0, 14.0])
    geodesic = (np.linalg.norm(start - door, axis=-1) + np.linalg.norm(goal - door, axis=-1))
    euclid = np.linalg.norm(start - goal, axis=-1)
    rank = lambda a: np.argsort(np.argsort(a))
    vv, geo, euc = v[pairs], geodesic[pairs], euclid[pairs]
    assert np.corrcoef(rank(vv), rank(geo))[0, 1] > 0.9
    assert np.corrcoef(rank(vv), rank(geo))[0, 1] > np.corrcoef(rank(vv), rank(euc))[0, 1] + 0.1
    # A pair far from the door across the wall costs more steps than the straight line.
    far = pairs & (geodesic - euclid > 30)
    steps = lambda d: (1 - 0.98 ** (d / env.action_bound)) / (1 - 0.98)
    assert far.sum() > 10
    assert np.all(v[far] > steps(euclid[far]))
    assert t.snap_cross_rate < 0.01


def test_fit_critic_learns_the_values():
    _, t = _oracle_tables(num_layouts=3, vi_states=128, vi_goals=16, vi_sweeps=40)
    critic = cr.make_critic({"hidden": (64, 64), "gamma": 0.98}, 2, 1.0)
    p0 = critic.init(jax.random.key(0))
    cfg = {**vi.DEFAULTS, "vi_fit_steps": 400, "vi_batch_size": 256, "learning_rate": 3e-3}
    _, m0 = vi.fit_critic(critic, p0, t, {**cfg, "vi_fit_steps": 1}, jax.random.key(1))
    params, m = vi.fit_critic(critic, p0, t, cfg, jax.random.key(1))
    assert m["num_train_layouts"] == 2 and m["num_heldout_layouts"] == 1
    assert m["train_rmse"] < 0.5 * m0["train_rmse"]
    assert m["heldout_rmse"] < 0.5 * m0["heldout_rmse"]
    assert np.isfinite(m["final_loss"])


@pytest.mark.parametrize("bad, match", [
    ({"vi_goals": 2000}, "vi_goals"),
    ({"vi_sweeps": 0}, "vi_sweeps"),
    ({"vi_door_fraction": 1.5}, "vi_door_fraction"),
])
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        vi.validate({**vi.DEFAULTS, **bad})


def test_unknown_method_and_world():
    with pytest.raises(ValueError, match="unknown critic method"):
        cr.make_critic({"method": "oracle"}, 2, 1.0)
    with pytest.raises(ValueError, match="need a Two-Rooms world"):
        vi.value_tables(_CentroidModel(), None, object(), jax.random.key(0), vi.DEFAULTS, 1.0,
                        0.9)


def test_old_agent_sections_gain_new_settings():
    old = ml_collections.ConfigDict({"seed": 3, "critic": {"gamma": 0.5}})
    new = ml_collections.ConfigDict({"seed": 7, "extra": 1,
                                     "critic": {"gamma": 0.98, "method": "value_iteration"}})
    agent_training._fill_missing(old, new)
    assert old.seed == 3 and old.extra == 1
    assert old.critic.gamma == 0.5 and old.critic.method == "value_iteration"
