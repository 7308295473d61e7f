"""Ensembles of predictors: each member steps its own block, an ensemble of identical members
plans like one predictor, and the predictor phase trains every member like a lone predictor."""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax import configs
from jepa_jax.cost import make_cost
from jepa_jax.planning import EnsembleModel, make_planner, planning_model
from jepa_jax.training import loop
from jepa_jax.world_model import make_world_model

CONFIG = str(Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py")
OBS = (16, 16, 2)
K = 3


def model_config(**overrides):
    cfg = configs.load_config(CONFIG + ":tiny").model.to_dict()
    cfg.update(channels=(8,), global_dim=8, predictor_hidden=(32, 32),
               inverse_dynamics_hidden=(16,), num_predictors=K)
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


@pytest.fixture(scope="module")
def wm():
    return make_world_model(model_config(), OBS, 2)


@pytest.fixture(scope="module")
def params(wm):
    p = jax.jit(wm.init)(jax.random.key(0))
    # Non-zero last layers, so that every member is a different, non-identity map.
    rng = np.random.default_rng(1)
    noisy = jax.tree.map(lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32),
                         {k: p[k] for k in ("predictor", "predictor_ensemble")})
    return {**p, **noisy}


def test_members_are_stacked_and_distinct(wm, params):
    members = wm.predictor_members(params)
    kernel = members["params"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == K
    np.testing.assert_array_equal(kernel[0], params["predictor"]["params"]["Dense_0"]["kernel"])
    assert not np.allclose(kernel[1], kernel[2])
    back = wm.with_predictor_members(params, members)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ensemble_model_steps_each_member_on_its_block(wm, params):
    model = planning_model(wm)
    assert isinstance(model, EnsembleModel) and model.latent_dim == K * wm.latent_dim
    obs = jnp.asarray(np.random.default_rng(2).uniform(size=OBS), jnp.float32)
    s = model.encode(params, obs)
    np.testing.assert_allclose(model.members(s), np.tile(wm.encode(params, obs), (K, 1)))
    blocks = np.random.default_rng(3).normal(size=(K, wm.latent_dim)).astype(np.float32)
    a = jnp.array([0.5, -1.0])
    out = model.members(model.predict(params, jnp.asarray(blocks.reshape(-1)), a))
    members = wm.predictor_members(params)
    for k in range(K):
        p_k = jax.tree.map(lambda x, k=k: x[k], members)
        expected = wm.predictor.apply(p_k, jnp.asarray(blocks[k]), a)
        np.testing.assert_allclose(out[k], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0] - blocks[0], out[1] - blocks[1])  # members differ
    with pytest.raises(ValueError, match="ensemble latent has dimension"):
        model.predict(params, jnp.zeros(wm.latent_dim), a)


def test_identical_members_plan_like_one_predictor(wm, params):
    """K copies of one predictor: the summed cost is K times the single cost, which Adam's
    scale invariance turns into the same plan."""
    same = wm.with_predictor_members(
        params, jax.tree.map(lambda x: jnp.stack([x] * K), params["predictor"]))
    single_wm = make_world_model(model_config(num_predictors=1), OBS, 2)
    single = {k: v for k, v in params.items() if k != "predictor_ensemble"}
    cost = make_cost({"goal_mode": "dense", "goal_discount": 0.9})
    cfg = {"horizon": 4, "num_iters": 5, "num_restarts": 3, "learning_rate": 0.3,
           "action_bound": 2.45}
    rng = np.random.default_rng(4)
    obs, goal = (jnp.asarray(rng.uniform(size=OBS), jnp.float32) for _ in range(2))
    plans = []
    for model, p in ((planning_model(wm), same), (single_wm, single)):
        planner = make_planner("gradient", model, cost, cfg)
        actions, info = jax.jit(planner.plan)(p, obs, goal, jax.random.key(5),
                                              planner.init_state(action_dim=2))
        plans.append((np.asarray(actions), float(info["final_cost"])))
    np.testing.assert_allclose(plans[0][0], plans[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plans[0][1], K * plans[1][1], rtol=1e-4)


def test_predictor_phase_trains_members_like_lone_predictors():
    """Member 0 of an ensemble ends exactly where a lone predictor does (same rows, own
    optimizer state and clipping); the other members, on other rows, elsewhere."""
    rng = np.random.default_rng(6)
    results = []
    for k in (1, 2):
        config = configs.load_config(CONFIG + ":tiny", [f"--config.model.num_predictors={k}"])
        exp = loop.Experiment(config)
        state = exp.init_state()
        state = state.replace(step=jnp.int32(config.train.num_steps))
        n, t = config.data.num_trajectories, config.data.length
        lat = jnp.asarray(rng.normal(size=(n, t, exp.wm.latent_dim)).astype(np.float32)
                          if k == 1 else results[0][1])
        acts = jnp.asarray(rng.normal(size=(n, t - 1, 2)).astype(np.float32)
                           if k == 1 else results[0][2])
        for _ in range(3):
            state, aux = exp.predictor_update(state, lat, acts, jnp.int32(0))
        results.append((state.params, lat, acts, aux))
    lone, ens = results[0][0], results[1][0]
    for a, b in zip(jax.tree.leaves(lone["predictor"]), jax.tree.leaves(ens["predictor"]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "ensemble_loss" in results[1][3]
    moved = jax.tree.leaves(ens["predictor_ensemble"])[-2]  # last layer: zero at init
    assert np.abs(np.asarray(moved)).max() > 0
    assert not np.allclose(jax.tree.leaves(ens["predictor_ensemble"])[0][0],
                           jax.tree.leaves(ens["predictor"])[0])


@pytest.mark.parametrize("overrides, match", [
    ({"num_predictors": 0}, "num_predictors must be an integer >= 1"),
    ({"num_predictors": 2, "z_dim": 2}, "needs a deterministic model"),
])
def test_bad_ensemble_configs(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_world_model(model_config(**overrides), OBS, 2)


def test_predictor_reinit_draws_a_fresh_predictor_at_the_phase_boundary(tmp_path):
    config = configs.load_config(CONFIG + ":tiny", [
        "--config.train.predictor_reinit=true", "--config.train.num_steps=10",
        "--config.train.predictor_steps=4", "--config.train.checkpoint_every=10"])
    exp = loop.Experiment(config)
    state = exp.init_state()
    fresh = exp.reinit_predictor(state)
    again = exp.reinit_predictor(state)
    old_k = jax.tree.leaves(state.params["predictor"])
    new_k = jax.tree.leaves(fresh.params["predictor"])
    assert not all(np.allclose(a, b) for a, b in zip(old_k, new_k, strict=True))
    for a, b in zip(new_k, jax.tree.leaves(again.params["predictor"]), strict=True):
        np.testing.assert_array_equal(a, b)  # deterministic: resuming redraws the same
    for a, b in zip(jax.tree.leaves(fresh.params["encoder"]),
                    jax.tree.leaves(state.params["encoder"]), strict=True):
        np.testing.assert_array_equal(a, b)  # only the predictor is redrawn
    # End to end: a run killed at the boundary and resumed equals an uninterrupted one.
    full = loop.train_and_evaluate(config, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(config, tmp_path / "b", progress=False, stop_after=10)
    resumed = loop.train_and_evaluate(config, tmp_path / "b", progress=False)
    for key in ("rollout_px_h1", "rollout_px_h16"):
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-5)
