"""Cost terms against NumPy, their composition, and config validation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax.cost import (
    CostWeights,
    action_magnitude,
    constraint_penalty,
    goal_distance,
    horizon_weights,
    make_cost,
)

RNG = np.random.default_rng(0)
H, D, A = 5, 3, 2
STATES = RNG.normal(size=(H, D)).astype(np.float32)
ACTIONS = RNG.normal(size=(H, A)).astype(np.float32)
GOAL = RNG.normal(size=(D,)).astype(np.float32)


def np_weights(h, discount):
    w = discount ** np.arange(h - 1, -1, -1, dtype=np.float64)
    return w / w.sum()


def np_constraint(s):  # violated when the first coordinate exceeds 0.2
    return s[..., 0] - 0.2


@pytest.mark.parametrize("discount", [0.0, 0.5, 0.9, 1.0])
def test_horizon_weights(discount):
    w = np.asarray(horizon_weights(H, discount))
    np.testing.assert_allclose(w, np_weights(H, discount), rtol=1e-6)
    assert np.isclose(w.sum(), 1.0) and np.all(np.diff(w) >= 0)


@pytest.mark.parametrize("discount", [0.0, 0.5, 1.0])
def test_goal_distance_matches_numpy(discount):
    d2 = np.sum((STATES - GOAL) ** 2, axis=-1)
    dense = goal_distance(jnp.asarray(STATES), jnp.asarray(GOAL), discount=discount)
    np.testing.assert_allclose(dense, np.sum(np_weights(H, discount) * d2), rtol=1e-5)
    final = goal_distance(jnp.asarray(STATES), jnp.asarray(GOAL), mode="final")
    np.testing.assert_allclose(final, d2[-1], rtol=1e-5)
    if discount == 0.0:  # the dense ramp degenerates to the final step
        np.testing.assert_allclose(dense, final, rtol=1e-6)


def test_action_magnitude_matches_numpy():
    expected = np.mean(np.sum(ACTIONS**2, axis=-1))
    np.testing.assert_allclose(action_magnitude(jnp.asarray(ACTIONS)), expected, rtol=1e-6)


def test_constraint_penalty_matches_numpy():
    c = np_constraint(STATES)
    relu2 = constraint_penalty(jnp.asarray(STATES), np_constraint)
    np.testing.assert_allclose(relu2, np.sum(np.maximum(c, 0) ** 2), rtol=1e-6)
    k = 4.0
    soft = constraint_penalty(jnp.asarray(STATES), np_constraint, kind="softplus", sharpness=k)
    np.testing.assert_allclose(soft, np.sum(np.logaddexp(0, k * c)) / k, rtol=1e-5)
    # params form: constraint_fn(params, s), e.g. a learned probe.
    with_params = constraint_penalty(
        jnp.asarray(STATES), lambda p, s: s[0] - p["threshold"], {"threshold": 0.2}
    )
    np.testing.assert_allclose(with_params, relu2, rtol=1e-6)


def test_make_cost_composes_terms():
    config = ml_collections.ConfigDict(
        {
            "goal_weight": 2.0,
            "goal_mode": "dense",
            "goal_discount": 0.5,
            "action_weight": 0.3,
            "constraint_weight": 5.0,
            "critic_weight": 0.7,
        }
    )

    def critic(s, g):
        return jnp.sum(jnp.abs(s - g))

    cost_fn = jax.jit(make_cost(config, critic_fn=critic, constraint_fn=np_constraint))
    got = cost_fn(jnp.asarray(STATES), jnp.asarray(ACTIONS), jnp.asarray(GOAL))
    d2 = np.sum((STATES - GOAL) ** 2, axis=-1)
    expected = (
        2.0 * np.sum(np_weights(H, 0.5) * d2)
        + 0.3 * np.mean(np.sum(ACTIONS**2, axis=-1))
        + 5.0 * np.sum(np.maximum(np_constraint(STATES), 0) ** 2)
        + 0.7 * np.sum(np.abs(STATES[-1] - GOAL))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    grad = jax.grad(cost_fn)(jnp.asarray(STATES), jnp.asarray(ACTIONS), jnp.asarray(GOAL))
    assert grad.shape == (H, D) and np.all(np.isfinite(grad))


def test_make_cost_defaults_and_zero_weight_terms_not_called():
    def never(*args):
        raise AssertionError("zero-weight term was evaluated")

    cost_fn = make_cost(None, critic_fn=never, constraint_fn=never)
    got = cost_fn(jnp.asarray(STATES), jnp.asarray(ACTIONS), jnp.asarray(GOAL))
    d2 = np.sum((STATES - GOAL) ** 2, axis=-1)
    np.testing.assert_allclose(got, np.sum(np_weights(H, 0.9) * d2), rtol=1e-5)
    assert CostWeights.from_config({}) == CostWeights()


@pytest.mark.parametrize(
    "config, match",
    [
        ({"goal_wieght": 1.0}, "unknown cost config keys"),
        ({"action_weight": -0.1}, "action_weight must be"),
        ({"goal_weight": float("nan")}, "goal_weight must be"),
        ({"critic_weight": True}, "critic_weight must be"),
        ({"goal_mode": "sparse"}, "unknown goal_mode"),
        ({"goal_discount": 1.5}, "goal_discount must be"),
        ({"constraint_kind": "log"}, "unknown constraint_kind"),
        ({"constraint_sharpness": 0.0}, "constraint_sharpness must be"),
        ({"constraint_weight": 1.0}, "needs a constraint_fn"),
        ({"critic_weight": 1.0}, "needs a critic_fn"),
        ([("goal_weight", 1.0)], "config must be"),
    ],
)
def test_make_cost_rejects_bad_config(config, match):
    with pytest.raises(ValueError, match=match):
        make_cost(config)


def test_cost_terms_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown goal mode"):
        goal_distance(jnp.asarray(STATES), jnp.asarray(GOAL), mode="last")
    with pytest.raises(ValueError, match="discount must be"):
        goal_distance(jnp.asarray(STATES), jnp.asarray(GOAL), discount=-0.1)
    with pytest.raises(ValueError, match="expected states"):
        goal_distance(jnp.asarray(STATES), jnp.asarray(GOAL[:2]))
    with pytest.raises(ValueError, match="unknown constraint kind"):
        constraint_penalty(jnp.asarray(STATES), np_constraint, kind="barrier")


def test_mean_over_futures_of_a_bounded_cost_prefers_a_likely_success_to_a_near_miss():
    # Why the windy experiment adds the reach cost: averaged over sampled futures, the squared
    # distance (convex) prefers a plan that surely stops 1 unit short (behind a wall) to one
    # that reaches the goal in 70% of futures and ends 3 units away in the rest (a pit);
    # the bounded reach cost counts both failures alike and prefers the likely success.
    h, goal = 4, jnp.zeros((1,), jnp.float32)
    near_miss = jnp.ones((h, 1), jnp.float32)
    hit, fall = jnp.zeros((h, 1), jnp.float32), jnp.full((h, 1), 3.0, jnp.float32)
    actions = jnp.zeros((h, 1), jnp.float32)
    for weights, prefers_hit in (({"goal_discount": 1.0}, False),
                                 ({"goal_weight": 0.0, "reach_weight": 1.0,
                                   "reach_scale": 0.5}, True)):
        cost_fn = make_cost(weights)
        risky = 0.7 * cost_fn(hit, actions, goal) + 0.3 * cost_fn(fall, actions, goal)
        sure = cost_fn(near_miss, actions, goal)
        # By hand: squared 0.3 * 9 = 2.7 > 1; reach 0.3 * 4 (1 - e^-18) = 1.2 < 4 (1 - e^-2).
        expected = ((0.3 * 9.0, 1.0) if not prefers_hit
                    else (0.3 * h * (1 - np.exp(-18.0)), h * (1 - np.exp(-2.0))))
        np.testing.assert_allclose([risky, sure], expected, rtol=1e-5)
        assert bool(risky < sure) == prefers_hit
