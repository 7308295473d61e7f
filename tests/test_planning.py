"""Planners on a toy linear world model with a quadratic cost, where the optimum is known.

Toy model: encode = identity on a (D,) "observation", predict s' = A s + B a. With the dense
goal cost and an action cost the planning problem is a least-squares problem in the stacked
actions, solved in closed form with NumPy.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.cost import make_cost
from jepa_jax.planning import (
    PlannerState,
    clip_by_norm,
    default_config,
    gradient,
    make_planner,
    rollout,
    shift_plan,
)

H, D, A = 4, 3, 2
A_MAT = np.array([[1.0, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 0.95]])
B_MAT = np.array([[0.5, 0.0], [0.1, 0.4], [0.2, -0.3]])
PARAMS = {"A": jnp.asarray(A_MAT, jnp.float32), "B": jnp.asarray(B_MAT, jnp.float32)}
S0 = np.array([0.5, -0.3, 0.2], np.float32)
GOAL = np.array([1.5, 0.5, -0.2], np.float32)
COST_CONFIG = {"goal_mode": "dense", "goal_discount": 0.5, "action_weight": 1.0}
COST_FN = make_cost(COST_CONFIG)

# Tiny settings for tests that check mechanics, not convergence.
TINY = {
    "gradient": {"horizon": 3, "num_iters": 3, "num_restarts": 2},
    "cem": {"horizon": 3, "num_iters": 3, "num_samples": 8, "num_elites": 2},
    "mppi": {"horizon": 3, "num_iters": 3, "num_samples": 8},
}
NAMES = sorted(TINY)


class LinearModel:
    def encode(self, params, obs):
        return obs

    def predict(self, params, s, a, z=None):
        return params["A"] @ s + params["B"] @ a


class CountingModel(LinearModel):
    """Counts executed ``encode`` calls at run time (not trace time) with a host callback."""

    def __init__(self):
        self.encodes = 0

    def encode(self, params, obs):
        jax.debug.callback(self._count)
        return obs

    def _count(self):
        self.encodes += 1


def lq_optimum(s0, goal, horizon=H, discount=0.5, action_weight=1.0):
    """Closed-form minimiser of sum_t w_t |s_t - g|^2 + action_weight * mean_t |a_t|^2."""
    m = np.zeros((horizon * D, horizon * A))
    c = np.zeros(horizon * D)
    for t in range(horizon):
        c[t * D : (t + 1) * D] = np.linalg.matrix_power(A_MAT, t + 1) @ s0
        for k in range(t + 1):
            m[t * D : (t + 1) * D, k * A : (k + 1) * A] = (
                np.linalg.matrix_power(A_MAT, t - k) @ B_MAT
            )
    w = discount ** np.arange(horizon - 1, -1, -1)
    big_w = np.kron(np.diag(w / w.sum()), np.eye(D))
    r = action_weight / horizon * np.eye(horizon * A)
    resid0 = c - np.tile(goal, horizon)
    a = np.linalg.solve(m.T @ big_w @ m + r, -m.T @ big_w @ resid0)
    resid = m @ a + resid0
    return a.reshape(horizon, A), resid @ big_w @ resid + a @ r @ a


def run(name, config, goal=GOAL, key=0, state=None, model=None):
    planner = make_planner(name, model or LinearModel(), COST_FN, config)
    state = planner.init_state(A) if state is None else state
    plan = jax.jit(planner.plan)
    return plan(PARAMS, jnp.asarray(S0), jnp.asarray(goal), jax.random.key(key), state)


@pytest.mark.parametrize(
    "name, config, atol",
    [
        ("gradient", {"optimizer": "sgd", "learning_rate": 0.5, "num_iters": 200}, 1e-4),
        ("gradient", {"optimizer": "adam", "learning_rate": 0.05, "num_iters": 200}, 1e-3),
        ("gradient", {"bound_mode": "tanh", "learning_rate": 0.05, "num_iters": 200}, 1e-3),
        ("cem", {"num_samples": 128, "num_elites": 16, "num_iters": 30}, 5e-3),
        (
            "mppi",
            {"num_samples": 128, "temperature": 1e-3, "noise_std": 0.5, "noise_decay": 0.85},
            2e-2,
        ),
    ],
)
def test_planner_reaches_lq_optimum(name, config, atol):
    a_star, c_star = lq_optimum(S0, GOAL)
    assert np.linalg.norm(a_star, axis=-1).max() < 0.9 * 2.45  # optimum inside the bound
    config = {"horizon": H, "num_iters": 40, **config}
    actions, info = run(name, config)
    np.testing.assert_allclose(actions, a_star, atol=atol)
    np.testing.assert_allclose(info["final_cost"], c_star, rtol=1e-3)
    assert info["cost_per_iter"].shape == (config["num_iters"],)
    assert float(info["final_cost"]) <= float(info["cost_per_iter"][0])
    expected_states = rollout(LinearModel(), PARAMS, jnp.asarray(S0), actions)
    np.testing.assert_allclose(info["states"], expected_states, rtol=1e-6)
    if name == "gradient":  # the best of the parallel restarts is returned
        assert info["restart_costs"].shape == (8,)
        np.testing.assert_allclose(info["final_cost"], info["restart_costs"].min(), rtol=1e-5)


def test_rollout_gradient_matches_finite_differences():
    class TanhModel:
        def encode(self, params, obs):
            return obs

        def predict(self, params, s, a, z=None):
            return jnp.tanh(params["A"] @ s + params["B"] @ a)

    with jax.enable_x64(True):
        params = {"A": jnp.asarray(A_MAT), "B": jnp.asarray(B_MAT)}
        s0, goal = jnp.asarray(S0, jnp.float64), jnp.asarray(GOAL, jnp.float64)

        @jax.jit
        def objective(actions):
            return COST_FN(rollout(TanhModel(), params, s0, actions), actions, goal)

        actions = jnp.asarray(np.random.default_rng(0).normal(size=(H, A)))
        grad = np.asarray(jax.grad(objective)(actions))
        eps = 1e-6
        fd = np.zeros((H, A))
        for i in np.ndindex(H, A):
            step = np.zeros((H, A))
            step[i] = eps
            fd[i] = (objective(actions + step) - objective(actions - step)) / (2 * eps)
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "name, extra",
    [("gradient", {}), ("gradient", {"bound_mode": "tanh"}), ("cem", {}), ("mppi", {})],
)
def test_actions_respect_norm_bound(name, extra):
    bound = 0.3
    far_goal = 100.0 * GOAL  # pulls every action onto the bound
    config = {**TINY[name], "action_bound": bound, **extra}
    warm = PlannerState(actions=jnp.full((3, A), 5.0))  # warm start far outside the bound
    actions, info = run(name, config, goal=far_goal, state=warm)
    norms = np.linalg.norm(np.asarray(actions), axis=-1)
    assert np.all(norms <= bound * (1 + 1e-5)), norms
    assert norms.max() > 0.5 * bound  # the bound is active, not trivially satisfied
    assert np.all(np.linalg.norm(info["state"].actions, axis=-1) <= bound * (1 + 1e-5))


def test_clip_by_norm():
    x = jnp.asarray([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_allclose(clip_by_norm(x, 1.0), [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])
    np.testing.assert_array_equal(clip_by_norm(x, float("inf")), x)
    assert np.all(np.isfinite(jax.grad(lambda v: clip_by_norm(v, 1.0).sum())(x)))


@pytest.mark.parametrize("name", NAMES)
def test_plan_jits_once_encodes_once_and_vmaps_like_a_loop(name):
    chex.clear_trace_counter()  # the counter is shared by the parametrised cases
    model = CountingModel()
    planner = make_planner(name, model, COST_FN, TINY[name])
    single = jax.jit(chex.assert_max_traces(planner.plan, n=1))
    n = 3
    obs = jnp.asarray(S0) + jnp.arange(n, dtype=jnp.float32)[:, None] * 0.1
    goals = jnp.asarray(GOAL) - jnp.arange(n, dtype=jnp.float32)[:, None] * 0.2
    keys = jax.random.split(jax.random.key(0), n)
    states = planner.init_state(A, batch_shape=(n,))
    looped = []
    for i in range(n):
        state_i = jax.tree.map(lambda x, i=i: x[i], states)
        looped.append(single(PARAMS, obs[i], goals[i], keys[i], state_i))
    _, info = single(PARAMS, obs[0], goals[0], keys[0], looped[0][1]["state"])  # warm start
    jax.effects_barrier()
    assert model.encodes == 2 * (n + 1)  # obs and goal_obs once per call, never per iteration

    batched_planner = make_planner(name, LinearModel(), COST_FN, TINY[name])
    batched = jax.jit(jax.vmap(batched_planner.plan, in_axes=(None, 0, 0, 0, 0)))
    actions, info = batched(PARAMS, obs, goals, keys, states)
    assert actions.shape == (n, 3, A) and info["state"].actions.shape == (n, 3, A)
    for i, (a_i, info_i) in enumerate(looped):
        np.testing.assert_allclose(actions[i], a_i, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(info["final_cost"][i], info_i["final_cost"], rtol=1e-4)


def test_warm_start_is_shifted():
    actions, info = run("gradient", {**TINY["gradient"], "horizon": 4, "shift": 2})
    expected = jnp.concatenate([actions[2:], actions[-1:], actions[-1:]])
    np.testing.assert_allclose(info["state"].actions, expected)
    np.testing.assert_array_equal(
        shift_plan(actions, 1, "zero"), jnp.concatenate([actions[1:], jnp.zeros((1, A))])
    )
    np.testing.assert_array_equal(shift_plan(actions, 0), actions)
    np.testing.assert_array_equal(shift_plan(actions, 9, "zero"), jnp.zeros_like(actions))


def test_optimizer_choice_and_noise_change_result():
    base = {"horizon": H, "num_iters": 5, "num_restarts": 1, "weight_decay": 0.5}
    results = {
        opt: np.asarray(run("gradient", {**base, "optimizer": opt})[0])
        for opt in ("adam", "adamw", "sgd")
    }
    assert not np.allclose(results["adam"], results["sgd"], atol=1e-4)
    assert not np.allclose(results["adam"], results["adamw"], atol=1e-4)
    assert not np.allclose(results["sgd"], results["adamw"], atol=1e-4)
    noisy, _ = run("gradient", {**base, "action_noise": 0.05})
    assert not np.allclose(results["adam"], noisy, atol=1e-4)


@pytest.mark.parametrize(
    "name, config, match",
    [
        ("rrt", {}, "unknown planner 'rrt'; valid names: cem, gradient, mppi"),
        ("gradient", {"horizon": 0}, "horizon must be an integer >= 1"),
        ("gradient", {"horizon": 2.5}, "horizon must be an integer"),
        ("gradient", {"num_iters": 0}, "num_iters must be"),
        ("gradient", {"num_restarts": 0}, "num_restarts must be"),
        ("gradient", {"optimizer": "lbfgs"}, "unknown optimizer"),
        ("gradient", {"bound_mode": "sigmoid"}, "unknown bound_mode"),
        ("gradient", {"learning_rate": 0.0}, "learning_rate must be"),
        ("gradient", {"num_samples": 8}, "unknown gradient planner config keys"),
        ("gradient", {"num_perturbations": -1}, "num_perturbations must be an integer >= 0"),
        ("gradient", {"select_samples": 2}, "select_samples=2 needs a world model with a "
                                           "latent variable"),
        ("gradient", {"select_risk": "median"}, "unknown select_risk 'median'"),
        ("cem", {"num_samples": 0}, "num_samples must be"),
        ("cem", {"num_samples": 4, "num_elites": 8}, "num_elites .* must be <= num_samples"),
        ("cem", {"momentum": 1.0}, "momentum must be"),
        ("mppi", {"temperature": 0.0}, "temperature must be"),
        ("mppi", {"action_bound": -1.0}, "action_bound must be"),
        ("mppi", {"shift_fill": "mean"}, "unknown shift_fill"),
        ("mppi", {"shift": -1}, "shift must be"),
    ],
)
def test_bad_config_raises(name, config, match):
    with pytest.raises(ValueError, match=match):
        make_planner(name, LinearModel(), COST_FN, config)


def test_shape_errors_at_trace_time():
    planner = make_planner("cem", LinearModel(), COST_FN, TINY["cem"])
    plan = jax.jit(planner.plan)
    with pytest.raises(ValueError, match=r"goal_obs shape \(2,\) differs from obs shape \(3,\)"):
        plan(
            PARAMS, jnp.asarray(S0), jnp.asarray(GOAL[:2]), jax.random.key(0), planner.init_state(A)
        )
    with pytest.raises(ValueError, match="state.actions must have shape"):
        plan(
            PARAMS,
            jnp.asarray(S0),
            jnp.asarray(GOAL),
            jax.random.key(0),
            PlannerState(jnp.zeros((5, A))),
        )


@pytest.mark.parametrize("name", NAMES)
def test_default_config_is_valid(name):
    config = default_config(name)
    planner = make_planner(name, LinearModel(), COST_FN, config)
    assert planner.config.horizon == config.horizon and planner.name == name


def test_detour_perturbations_move_a_stretch_sideways_and_back():
    # Zero bases and an unbounded norm: each row must be +v for n steps from t0, then -v
    # for n steps, zero elsewhere, with |v| <= scale and 1 <= n <= H // 4.
    horizon = 12
    pert = np.asarray(gradient.detour_perturbations(
        jax.random.key(0), jnp.zeros((64, horizon, 2)), math.inf, 1.5))
    assert pert.shape == (64, horizon, 2)
    for row in pert:
        moved = np.flatnonzero(np.linalg.norm(row, axis=-1) > 0)
        if moved.size == 0:  # a zero-length v
            continue
        v = row[moved[0]]
        assert 0 < np.linalg.norm(v) <= 1.5 + 1e-6
        plus = np.flatnonzero(np.all(np.isclose(row, v), -1))
        minus = np.flatnonzero(np.all(np.isclose(row, -v), -1))
        n = plus.size
        assert 1 <= n <= horizon // 4 and np.array_equal(plus, np.arange(moved[0], moved[0] + n))
        assert np.array_equal(minus, np.arange(plus[-1] + 1, min(plus[-1] + 1 + n, horizon)))
        assert np.array_equal(np.sort(np.concatenate([plus, minus])), moved)
    bounded = gradient.detour_perturbations(jax.random.key(1), jnp.ones((32, 8, 2)), 1.0, 1.0)
    assert float(jnp.max(jnp.linalg.norm(bounded, axis=-1))) <= 1.0 + 1e-5


def test_selection_escapes_a_trap_the_gradient_cannot_see():
    # The objective the gradient follows is smooth, with its minimum at a = 1 in every
    # step (cost 0); the selection cost adds a jump of 20 where the first action's mean
    # over the steps exceeds 0.6 (a trap the pathwise gradient cannot see). Every restart
    # lands in the trap (cost 20); the warm start a = 0 costs 12 and is out of it, so the
    # selection must return it or a detour variant that costs less and stays out.
    horizon = 6

    def smooth(a):
        return jnp.sum((a - 1.0) ** 2)

    def trapped(a):
        return smooth(a) + 20.0 * (jnp.mean(a[:, 0]) > 0.6)

    cfg = make_planner("gradient", LinearModel(), COST_FN,
                       {"horizon": horizon, "num_iters": 30, "num_restarts": 4,
                        "learning_rate": 0.2, "action_bound": 3.0,
                        "num_perturbations": 64}).config
    warm = jnp.zeros((horizon, 2))
    plain, _, _ = gradient.optimize(cfg, smooth, warm, jax.random.key(0))
    assert float(trapped(plain)) >= 20.0
    seen = {}

    def select(cands, key):
        seen["n"] = cands.shape[0]
        return jax.vmap(trapped)(cands)

    actions, _, extra = jax.jit(lambda k: gradient.optimize(cfg, smooth, warm, k,
                                                             select=select))(jax.random.key(0))
    assert seen["n"] == 4 + 1 + 64
    costs = np.asarray(extra["selection_costs"])
    assert costs.shape == (69,) and int(extra["selected"]) == int(np.argmin(costs))
    np.testing.assert_allclose(trapped(actions), costs.min(), rtol=1e-6)
    assert float(trapped(actions)) <= 12.0 and float(jnp.mean(actions[:, 0])) <= 0.6


def test_perturbations_on_a_deterministic_model_choose_by_the_objective():
    planner = make_planner("gradient", LinearModel(), COST_FN,
                           {**TINY["gradient"], "num_perturbations": 6})
    actions, info = jax.jit(planner.plan)(PARAMS, S0, GOAL, jax.random.key(0),
                                          planner.init_state(A))
    assert info["selection_costs"].shape == (2 + 1 + 6,)
    np.testing.assert_allclose(info["final_cost"], np.min(info["selection_costs"]), rtol=1e-5)
