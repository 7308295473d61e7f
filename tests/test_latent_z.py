"""Latent variable z: Windy Two-Rooms, the KL regulariser, z sampling, the risk measures,
K-sample planning, bad inputs, and a tiny end-to-end train + plan run."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax import configs, envs, losses
from jepa_jax.cost import make_cost, risk_measure
from jepa_jax.data import offline
from jepa_jax.envs import two_rooms, windy_rooms
from jepa_jax.planning import make_planner, rollout
from jepa_jax.training import loop
from jepa_jax.world_model import make_world_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "stochastic_rooms.py")
P = windy_rooms.EnvParams()  # wall x=32, calm door y=48, windy door y=16, gust 6 px


def tiny(*overrides):
    return configs.load_config(CONFIG + ":tiny", list(overrides))


# ------------------------------------------------------------------------ Windy Two-Rooms


def _step_many(pos, action, n=4000, params=P, door_y=48.0):
    keys = jax.random.split(jax.random.key(0), n)
    f = jax.jit(jax.vmap(lambda k: windy_rooms.transition(
        jnp.asarray(pos, jnp.float32), jnp.asarray(action, jnp.float32), 32.0, door_y, params,
        k)))
    return np.asarray(f(keys))


class TestWindyRooms:
    def test_gusts_on_the_bridge_are_trimodal(self):
        # From the bridge's centre line, moving right by 1: y + {-6, 0, +6}, probs .1/.8/.1.
        nxt = _step_many([28.0, 16.0], [1.0, 0.0])
        np.testing.assert_allclose(nxt[:, 0], 29.0)
        dy = np.round(nxt[:, 1] - 16.0, 4)
        assert set(np.unique(dy)) == {-6.0, 0.0, 6.0}
        for v, p in ((-6.0, 0.1), (0.0, 0.8), (6.0, 0.1)):
            assert abs(np.mean(dy == v) - p) < 0.02, (v, np.mean(dy == v))
        # Both gusts land in a pit.
        fell = np.asarray(windy_rooms.in_pit(jnp.asarray(nxt), 32.0, P))
        np.testing.assert_array_equal(fell, dy != 0)

    def test_pit_is_absorbing_and_calm_door_deterministic(self):
        in_pit = [29.0, 10.0]
        assert bool(windy_rooms.in_pit(jnp.asarray(in_pit), 32.0, P))
        np.testing.assert_array_equal(_step_many(in_pit, [2.0, 1.0], n=50), [in_pit] * 50)
        # Crossing the calm door: no wind, the same next position for every key, and it is
        # Two-Rooms' own rule.
        nxt = _step_many([30.0, 48.0], [2.4, 0.0], n=50)
        np.testing.assert_allclose(nxt, [[32.4, 48.0]] * 50, rtol=1e-6)
        two = two_rooms.transition(jnp.array([30.0, 48.0]), jnp.array([2.4, 0.0]), 32.0, 48.0,
                                   two_rooms.EnvParams())
        np.testing.assert_allclose(nxt[0], two, rtol=1e-6)
        # The wall between the doors blocks.
        np.testing.assert_array_equal(_step_many([30.0, 34.0], [2.4, 0.0], n=5),
                                      [[30.0, 34.0]] * 5)
        # Without gusts the windy door is an ordinary door.
        calm = P.replace(gust_prob=0.0)
        np.testing.assert_allclose(_step_many([30.5, 16.0], [2.4, 0.0], n=5, params=calm),
                                   [[32.9, 16.0]] * 5, rtol=1e-6)

    def test_render_reset_step_jit_vmap(self):
        state = windy_rooms.make_state([10.0, 30.0], 32.0, 48.0)
        obs = jax.jit(windy_rooms.render)(state, P)
        assert obs.shape == (65, 65, 2) and obs.dtype == jnp.float32
        walls = np.asarray(obs[..., 1])
        assert walls[10, 30] == 0.5 and walls[10, 32] == 1.0  # pit, wall (row y, column x)
        assert walls[16, 32] == 0.0 and walls[48, 32] == 0.0  # both doors open
        assert walls[34, 32] == 1.0 and walls[30, 20] == 0.0
        keys = jax.random.split(jax.random.key(1), 256)
        states = jax.jit(jax.vmap(lambda k: windy_rooms.reset(k, P)))(keys)
        hazard = windy_rooms.near_hazard(states.pos, states.wall_x, P, 1.0)
        assert not bool(jnp.any(hazard))
        stepped = jax.jit(jax.vmap(lambda k, s: windy_rooms.step(k, s, jnp.ones(2), P)))(
            keys, states)
        assert stepped.pos.shape == (256, 2) and int(stepped.t[0]) == 1
        np.testing.assert_allclose(envs.render(state, P), obs, atol=1e-6)  # by params' type

    def test_single_windy_door_variant(self):
        env = loop.env_params_from_config(tiny().env)  # the experiment's world
        assert not env.calm_door and env.windy_half_width == 8.0
        np.testing.assert_array_equal(windy_rooms.door_centres(48.0, env), [32.0])
        walls = np.asarray(windy_rooms.render_walls(32.0, 48.0, env))
        assert walls[48, 32] == 1.0 and walls[32, 32] == 0.0 and walls[39, 32] == 0.0
        assert walls[42, 28] == 0.5 and walls[22, 36] == 0.5  # pits above and below
        # The former calm door is wall; the bridge's middle survives one gust, its corner not.
        np.testing.assert_array_equal(_step_many([30.0, 48.0], [2.4, 0.0], n=5, params=env),
                                      [[30.0, 48.0]] * 5)
        nxt = _step_many([27.0, 32.0], [1.0, 0.0], params=env)
        assert not np.any(np.asarray(windy_rooms.in_pit(jnp.asarray(nxt), 32.0, env)))
        nxt = _step_many([27.0, 38.0], [1.0, 0.0], params=env)
        fell = np.asarray(windy_rooms.in_pit(jnp.asarray(nxt), 32.0, env))
        assert abs(fell.mean() - env.gust_prob) < 0.02

    def test_two_doors_variant(self):
        # The two_doors presets: a calm door at y = 52 +- 4 beside the bridge (32 +- 8),
        # gusts of 6 px with probability 0.3 each; the z and deterministic presets share the
        # world and the data.
        z_cfg = configs.load_config(CONFIG + ":two_doors")
        det_cfg = configs.load_config(CONFIG + ":two_doors_deterministic")
        assert z_cfg.env.to_dict() == det_cfg.env.to_dict()
        assert z_cfg.data.to_dict() == det_cfg.data.to_dict()
        assert (z_cfg.model.z_dim, det_cfg.model.z_dim) == (2, 0)
        assert z_cfg.model.prior_sees_action
        env = loop.env_params_from_config(z_cfg.env)
        windy_rooms.validate_params(env)
        door_y = 52.0
        np.testing.assert_array_equal(windy_rooms.door_centres(door_y, env), [52.0, 32.0])
        walls = np.asarray(windy_rooms.render_walls(32.0, door_y, env))  # [y, x]
        assert walls[52, 32] == 0.0 and walls[32, 32] == 0.0  # both doors open
        assert walls[47, 32] == 1.0 and walls[57, 32] == 1.0  # wall around the calm door
        assert walls[42, 28] == 0.5 and walls[22, 36] == 0.5  # pits above and below the bridge
        # Through the calm door: no wind, one outcome.
        np.testing.assert_allclose(
            _step_many([30.0, 52.0], [2.4, 0.0], n=50, params=env, door_y=door_y),
            [[32.4, 52.0]] * 50, rtol=1e-6)
        # On the bridge: y + {-6, 0, +6} with probabilities .3/.4/.3.
        nxt = _step_many([28.0, 32.0], [1.0, 0.0], params=env, door_y=door_y)
        dy = np.round(nxt[:, 1] - 32.0, 4)
        for v, p in ((-6.0, 0.3), (0.0, 0.4), (6.0, 0.3)):
            assert abs(np.mean(dy == v) - p) < 0.03, (v, np.mean(dy == v))
        with pytest.raises(ValueError, match="unknown preset 'two_door'"):
            configs.load_config(CONFIG + ":two_door")

    def test_validation_and_env_by_name(self):
        with pytest.raises(ValueError, match="overlaps the windy door"):
            windy_rooms.validate_params(P.replace(door_y=20.0))
        with pytest.raises(ValueError, match="gust_prob"):
            windy_rooms.validate_params(P.replace(gust_prob=0.7))
        with pytest.raises(ValueError, match="windy_door_y"):
            windy_rooms.validate_params(P.replace(windy_door_y=8.0))
        with pytest.raises(ValueError, match="unknown env.name 'nope'"):
            envs.get_env("nope")
        config = tiny()
        assert isinstance(loop.env_params_from_config(config.env), windy_rooms.EnvParams)

    def test_offline_data_is_deterministic_and_random_on_the_bridge(self):
        pp = offline.PolicyParams(cross_wall_rate=0.5)
        a = offline.generate(jax.random.key(0), 64, 9, P, pp)
        b = offline.generate(jax.random.key(0), 64, 9, P, pp)
        np.testing.assert_array_equal(a.pos, b.pos)
        assert a.pos.shape == (64, 9, 2) and a.actions.shape == (64, 8, 2)
        # The recorded steps follow the rules: no move from a pit, and off the bridge every
        # step is Two-Rooms' deterministic move (except through the windy door's gap).
        pos, act = np.asarray(a.pos), np.asarray(a.actions)
        pit = np.asarray(windy_rooms.in_pit(jnp.asarray(pos), 32.0, P))
        np.testing.assert_array_equal(pos[:, 1:][pit[:, :-1]], pos[:, :-1][pit[:, :-1]])
        wind = np.asarray(windy_rooms.in_wind(jnp.asarray(pos), 32.0, P))
        calm = ~wind[:, :-1] & ~pit[:, :-1] & (np.abs(pos[:, :-1, 1] - 16.0) > 12)
        det = jax.vmap(jax.vmap(lambda p, u: two_rooms.transition(
            p, u, 32.0, 48.0, two_rooms.EnvParams())))(a.pos[:, :-1], a.actions)
        np.testing.assert_allclose(pos[:, 1:][calm], np.asarray(det)[calm], atol=1e-5)
        assert act.shape[1] == 8


# -------------------------------------------------------------------------- KL regulariser


def np_kl(mean, log_var):
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    return 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


class TestGaussianKL:
    def test_single_and_batched_vs_numpy(self):
        rng = np.random.default_rng(0)
        m, lv = rng.normal(size=(3,)), rng.normal(size=(3,))
        kl = jax.jit(losses.gaussian_kl)(m.astype(np.float32), lv.astype(np.float32))
        assert kl.shape == ()
        np.testing.assert_allclose(kl, np_kl(m, lv), rtol=1e-5)
        m, lv = rng.normal(size=(4, 5, 2)), rng.normal(size=(4, 5, 2))
        kl = jax.jit(losses.gaussian_kl)(m.astype(np.float32), lv.astype(np.float32))
        assert kl.shape == (4, 5)
        np.testing.assert_allclose(kl, np_kl(m, lv), rtol=1e-5)
        # By hand: mean 1, var 1 -> 0.5; mean 0, var e -> 0.5 (e - 2).
        assert float(losses.gaussian_kl(jnp.array([1.0]), jnp.array([0.0]))) == 0.5
        np.testing.assert_allclose(losses.gaussian_kl(jnp.array([0.0]), jnp.array([1.0])),
                                   0.5 * (math.e - 2), rtol=1e-6)

    def test_zero_at_prior_nonnegative_vmap_grad(self):
        assert float(losses.gaussian_kl(jnp.zeros(4), jnp.zeros(4))) == 0.0
        rng = np.random.default_rng(1)
        m = rng.normal(size=(100, 3)).astype(np.float32) * 3
        lv = rng.normal(size=(100, 3)).astype(np.float32) * 3
        assert np.all(np.asarray(losses.gaussian_kl(m, lv)) >= 0)
        np.testing.assert_allclose(jax.vmap(losses.gaussian_kl)(m, lv),
                                   losses.gaussian_kl(m, lv), rtol=1e-6)
        g_m, g_lv = jax.grad(lambda a, b: losses.gaussian_kl(a, b).sum(), (0, 1))(m, lv)
        np.testing.assert_allclose(g_m, m, rtol=1e-5)  # d/dm = m
        np.testing.assert_allclose(g_lv, 0.5 * (np.exp(lv) - 1), rtol=1e-4, atol=1e-6)

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="shapes differ"):
            losses.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 2)))
        with pytest.raises(ValueError, match=r"\(\.\.\., Z\)"):
            losses.gaussian_kl(jnp.zeros(()), jnp.zeros(()))
        with pytest.raises(ValueError, match="floating"):
            losses.gaussian_kl(jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32))


def np_mixture_nll(z, logits, means, log_stds):
    z, logits = np.asarray(z, np.float64), np.asarray(logits, np.float64)
    means, log_stds = np.asarray(means, np.float64), np.asarray(log_stds, np.float64)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    std = np.exp(log_stds)
    dens = np.prod(np.exp(-0.5 * ((z[..., None, :] - means) / std) ** 2)
                   / (np.sqrt(2 * np.pi) * std), axis=-1)
    return -np.log(np.sum(w * dens, axis=-1))


class TestMixtureNLL:
    def test_vs_numpy_single_batched_jit_vmap(self):
        rng = np.random.default_rng(3)
        z, lg = rng.normal(size=(2,)), rng.normal(size=(3,))
        mu, ls = rng.normal(size=(3, 2)), 0.3 * rng.normal(size=(3, 2))
        f = jax.jit(losses.mixture_nll)
        args = [x.astype(np.float32) for x in (z, lg, mu, ls)]
        np.testing.assert_allclose(f(*args), np_mixture_nll(z, lg, mu, ls), rtol=1e-5)
        z, lg = rng.normal(size=(5, 4, 2)), rng.normal(size=(5, 4, 3))
        mu, ls = rng.normal(size=(5, 4, 3, 2)), 0.3 * rng.normal(size=(5, 4, 3, 2))
        args = [x.astype(np.float32) for x in (z, lg, mu, ls)]
        np.testing.assert_allclose(f(*args), np_mixture_nll(z, lg, mu, ls), rtol=1e-5)
        np.testing.assert_allclose(jax.vmap(losses.mixture_nll)(*args), f(*args), rtol=1e-6)
        # One standard normal component: 0.5 (z^2 + log 2 pi) per dimension.
        np.testing.assert_allclose(
            losses.mixture_nll(jnp.array([1.0, 0.0]), jnp.zeros(1), jnp.zeros((1, 2)),
                               jnp.zeros((1, 2))), 0.5 + np.log(2 * np.pi), rtol=1e-6)

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="means and log_stds must have shape"):
            losses.mixture_nll(jnp.zeros(2), jnp.zeros(3), jnp.zeros((2, 2)), jnp.zeros((2, 2)))
        with pytest.raises(ValueError, match="shapes differ"):
            losses.mixture_nll(jnp.zeros(2), jnp.zeros(3), jnp.zeros((3, 2)), jnp.zeros((3, 1)))


# -------------------------------------------------------------------------- risk measures


def np_risk(costs, risk, alpha=0.25):
    costs = np.asarray(costs, np.float64)
    if risk == "mean":
        return costs.mean(-1)
    if risk == "worst":
        return costs.max(-1)
    m = max(1, math.ceil(alpha * costs.shape[-1] - 1e-9))
    if risk == "var":
        return np.sort(costs, -1)[..., -m]
    return np.sort(costs, -1)[..., -m:].mean(-1)


class TestRiskMeasures:
    @pytest.mark.parametrize("risk,alpha", [("mean", 0.25), ("worst", 0.25), ("cvar", 0.25),
                                            ("cvar", 0.1), ("cvar", 0.3), ("cvar", 1.0),
                                            ("cvar", 0.01), ("var", 0.25), ("var", 0.5)])
    def test_vs_numpy(self, risk, alpha):
        costs = np.random.default_rng(2).normal(size=(3, 10)).astype(np.float32)
        f = jax.jit(lambda c: risk_measure(c, risk, alpha))
        np.testing.assert_allclose(f(costs), np_risk(costs, risk, alpha), rtol=1e-5)
        np.testing.assert_allclose(f(costs[0]), np_risk(costs[0], risk, alpha), rtol=1e-5)

    def test_cvar_limits_and_gradient(self):
        c = jnp.array([1.0, 5.0, 2.0, 9.0])
        assert float(risk_measure(c, "cvar", 1.0)) == pytest.approx(4.25)  # the mean
        assert float(risk_measure(c, "cvar", 0.25)) == 9.0  # the worst
        assert float(risk_measure(c, "cvar", 0.5)) == 7.0  # mean of 9 and 5
        g = jax.grad(lambda x: risk_measure(x, "cvar", 0.5))(c)
        np.testing.assert_allclose(g, [0.0, 0.5, 0.0, 0.5])  # only the kept samples
        # Value at risk: the cost that a fraction alpha of the futures exceed.
        assert float(risk_measure(c, "var", 0.5)) == 5.0
        assert float(risk_measure(c, "var", 0.75)) == 2.0
        g = jax.grad(lambda x: risk_measure(x, "var", 0.5))(c)
        np.testing.assert_allclose(g, [0.0, 1.0, 0.0, 0.0])

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="unknown risk measure 'median'"):
            risk_measure(jnp.zeros(3), "median")
        with pytest.raises(ValueError, match="cvar_alpha"):
            risk_measure(jnp.zeros(3), "cvar", 0.0)


# ---------------------------------------------------------------- z model and K-sample plans


def _z_model(z_dim=2):
    config = tiny()
    cfg = config.model
    cfg.unlock()
    cfg.encoder, cfg.latent_dim, cfg.z_dim = "mlp", 3, z_dim
    return make_world_model(cfg, (3,), 2)


class TestZModel:
    def test_sampling_and_posterior_shapes(self):
        wm = _z_model(2)
        params = jax.jit(wm.init)(jax.random.key(0))
        assert set(params) == {"encoder", "predictor", "inverse", "posterior", "prior"}
        assert wm.sample_z(jax.random.key(1), (5, 7)).shape == (5, 7, 2)
        z = np.asarray(wm.sample_z(jax.random.key(1), (20000,)))
        np.testing.assert_allclose(z.mean(0), 0.0, atol=0.03)
        np.testing.assert_allclose(z.std(0), 1.0, atol=0.03)
        s, a = jnp.ones((4, 6, 3)), jnp.ones((4, 6, 2))
        mean, log_var = wm.posterior(params, s, a, s)
        assert mean.shape == log_var.shape == (4, 6, 2)
        np.testing.assert_allclose(mean, 0.0)  # q starts as the prior
        np.testing.assert_allclose(log_var, 0.0)
        zq, _, _ = wm.sample_posterior(params, jax.random.key(2), s, a, s)
        assert zq.shape == (4, 6, 2)
        futures = jax.vmap(lambda zk: wm.rollout(params, s[0, 0], a[0], zk))(
            wm.sample_z(jax.random.key(3), (5, 6)))
        assert futures.shape == (5, 6, 3)

    def test_learned_prior_sampling(self):
        wm = make_world_model(tiny().model, (65, 65, 2), 2)  # tiny: the mixture prior
        params = wm.init(jax.random.key(0))
        assert "prior" in params and wm.noise_dim == wm.z_dim + 1
        s, a = jnp.zeros((wm.latent_dim,)), jnp.zeros((2,))  # a: ignored by p(z | s)
        logits, means, log_stds = wm.prior(params, s, a)
        m = logits.shape[-1]
        # Make the components distinct: means at 10 * c, tiny stds, and known weights.
        params["prior"] = jax.tree.map(jnp.zeros_like, params["prior"])
        dense = sorted(params["prior"]["params"])[-1]
        bias = np.zeros(m + 2 * m * wm.z_dim, np.float32)
        bias[:m] = np.log(np.arange(1, m + 1))  # weights proportional to 1..M
        bias[m:m + m * wm.z_dim] = np.repeat(10.0 * np.arange(m), wm.z_dim)
        bias[m + m * wm.z_dim:] = -5.0
        params["prior"]["params"][dense]["bias"] = jnp.asarray(bias)
        noise = wm.sample_noise(jax.random.key(1), (20000,))
        z = np.asarray(jax.jit(jax.vmap(lambda n: wm.z_from_noise(params, s, n, a)))(noise))
        comp = np.round(z[:, 0] / 10.0).astype(int)
        np.testing.assert_allclose(np.bincount(comp, minlength=m) / len(z),
                                   np.arange(1, m + 1) / (m * (m + 1) / 2), atol=0.015)
        np.testing.assert_allclose(z - 10.0 * comp[:, None], 0.0, atol=0.05)
        with pytest.raises(ValueError, match="noise has last dimension"):
            wm.z_from_noise(params, s, jnp.zeros(wm.z_dim), a)
        fut = wm.rollout_noise(params, s, jnp.zeros((5, 2)), noise[:5])
        assert fut.shape == (5, wm.latent_dim)

    def test_prior_that_sees_the_action(self):
        # p(z | s, a): its first layer takes [s, a]; the action is required, changes the
        # mixture, and rollout_noise draws each z_t at (s_t, a_t), as a loop by hand does.
        cfg = tiny().model
        cfg.prior_sees_action = True
        wm = make_world_model(cfg, (65, 65, 2), 2)
        assert wm.prior_sees_action
        params = wm.init(jax.random.key(0))
        first = sorted(params["prior"]["params"])[0]
        assert params["prior"]["params"][first]["kernel"].shape[0] == wm.latent_dim + 2
        s = jax.random.normal(jax.random.key(1), (wm.latent_dim,))
        with pytest.raises(ValueError, match=r"p\(z \| s, a\).*pass the action"):
            wm.prior(params, s)
        la, _, _ = wm.prior(params, s, jnp.array([2.0, 0.0]))
        lb, _, _ = wm.prior(params, s, jnp.array([0.0, -2.0]))
        assert float(jnp.max(jnp.abs(la - lb))) > 1e-4
        batched, _, _ = wm.prior(params, jnp.stack([s, s]), jnp.array([2.0, 0.0]))
        np.testing.assert_allclose(batched[1], la, rtol=1e-5, atol=1e-6)
        actions = jax.random.normal(jax.random.key(2), (4, 2))
        noise = wm.sample_noise(jax.random.key(3), (4,))
        got = wm.rollout_noise(params, s, actions, noise)
        st, want = s, []
        for t in range(4):
            st = wm.predict(params, st, actions[t], wm.z_from_noise(params, st, noise[t],
                                                                    actions[t]))
            want.append(st)
        np.testing.assert_allclose(got, jnp.stack(want), rtol=1e-5, atol=1e-5)
        cfg = tiny().model
        cfg.z_prior, cfg.prior_sees_action = "normal", True
        with pytest.raises(ValueError, match="prior_sees_action needs a learned prior"):
            make_world_model(cfg, (65, 65, 2), 2)

    def test_z_free_model_has_no_posterior(self):
        wm = _z_model(0)
        params = wm.init(jax.random.key(0))
        assert "posterior" not in params
        with pytest.raises(ValueError, match="z_dim=0"):
            wm.sample_z(jax.random.key(0), (2,))
        with pytest.raises(ValueError, match="z_dim=0"):
            wm.posterior(params, jnp.ones(3), jnp.ones(2), jnp.ones(3))


class ToyZModel:
    """s' = s + a + z * [s_0 > 0] (noise only in the right half-plane); encode = identity."""

    z_dim = 2

    def encode(self, params, obs):
        return obs

    def predict(self, params, s, a, z=None):
        return s + a + z * (s[0] > 0)

    def sample_noise(self, key, shape=()):
        return jax.random.normal(key, (*shape, self.z_dim))

    def rollout_noise(self, params, s0, actions, noise):
        return rollout(self, params, s0, actions, noise)  # z is the noise: N(0, I)


class TestKSamplePlanning:
    def test_objective_is_the_risk_of_the_sample_costs(self):
        cost_fn = make_cost({"goal_mode": "dense", "goal_discount": 0.5})
        s0, goal = jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0])
        zs = jax.random.normal(jax.random.key(0), (6, 3, 2))
        for risk in ("mean", "cvar", "worst"):
            planner = make_planner("gradient", ToyZModel(), cost_fn,
                                   {"horizon": 3, "num_iters": 4, "num_restarts": 2,
                                    "z_samples": 6, "risk": risk, "cvar_alpha": 0.34})
            actions, info = jax.jit(planner.plan)(None, s0, goal, jax.random.key(1),
                                                  planner.init_state(2), zs)
            # Recompute every sampled future and its cost by hand in NumPy.
            costs = []
            for k in range(6):
                s, traj = np.asarray(s0), []
                for t in range(3):
                    s = s + np.asarray(actions[t]) + np.asarray(zs[k, t]) * (s[0] > 0)
                    traj.append(s)
                w = 0.5 ** np.arange(2, -1, -1)
                costs.append(np.sum(w / w.sum() * np.sum((np.array(traj) - goal) ** 2, -1)))
            np.testing.assert_allclose(info["sample_costs"], costs, rtol=1e-4)
            np.testing.assert_allclose(info["final_cost"], np_risk(costs, risk, 0.34),
                                       rtol=1e-4)
            assert info["sample_states"].shape == (6, 3, 2) and info["states"].shape == (3, 2)

    def test_sampled_futures_make_the_plan_cautious(self):
        # Noise of std 2 sigmoid(4x) per step: from x=-1 to a goal at x=2 with |a| <= 1.6,
        # planning against z = 0 heads straight for the goal (s_1 x >= 0.4), while the
        # expected cost over sampled futures keeps s_1 near x = -0.5 and accepts missing
        # the goal by 0.9 rather than a variance of about 8 sigmoid(4 x)^2.
        class Smooth(ToyZModel):
            def predict(self, params, s, a, z=None):
                return s + a + 2.0 * z * jax.nn.sigmoid(4.0 * s[0])

        planner = make_planner("gradient", Smooth(), make_cost({"goal_mode": "final"}),
                               {"horizon": 2, "num_iters": 100, "num_restarts": 4,
                                "learning_rate": 0.05, "action_bound": 1.6, "z_samples": 256})
        s0, goal = jnp.array([-1.0, 0.0]), jnp.array([2.0, 0.0])
        plan = jax.jit(planner.plan)
        a_mean, _ = plan(None, s0, goal, jax.random.key(0), planner.init_state(2))
        a_zero, _ = plan(None, s0, goal, jax.random.key(0), planner.init_state(2),
                         jnp.zeros((1, 2, 2)))
        x_mean, x_zero = float(s0[0] + a_mean[0, 0]), float(s0[0] + a_zero[0, 0])
        assert x_zero >= 0.35, x_zero
        assert -0.9 < x_mean < -0.1, x_mean

    def test_fresh_futures_per_step_are_scored_on_fixed_ones(self):
        # z_resample: steps follow fresh draws, yet the reported cost is the risk measure
        # of the plan's fixed sample set, and the plan is as good as with fixed draws.
        cost_fn = make_cost({"goal_mode": "final"})
        s0, goal = jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.5])
        out = {}
        for resample in (True, False):
            planner = make_planner("gradient", ToyZModel(), cost_fn,
                                   {"horizon": 2, "num_iters": 40, "num_restarts": 2,
                                    "z_samples": 16, "z_resample": resample,
                                    "learning_rate": 0.1})
            _, info = jax.jit(planner.plan)(None, s0, goal, jax.random.key(3),
                                            planner.init_state(2))
            np.testing.assert_allclose(info["final_cost"], np.mean(info["sample_costs"]),
                                       rtol=1e-5)
            out[resample] = float(info["final_cost"])
        assert out[True] < 1.5 * out[False] + 0.1

    def test_vmap_over_problems(self):
        planner = make_planner("gradient", ToyZModel(), make_cost(),
                               {"horizon": 3, "num_iters": 2, "num_restarts": 2,
                                "z_samples": 4, "risk": "cvar"})
        s0 = jnp.ones((5, 2))
        plan = jax.jit(jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0)))
        actions, info = plan(None, s0, -s0, jax.random.split(jax.random.key(0), 5),
                             planner.init_state(2, (5,)))
        assert actions.shape == (5, 3, 2) and info["sample_costs"].shape == (5, 4)

    def test_bad_inputs(self):
        cost_fn = make_cost()
        with pytest.raises(ValueError, match="z_samples must be an integer >= 1, got 0"):
            make_planner("gradient", ToyZModel(), cost_fn, {"z_samples": 0})
        with pytest.raises(ValueError, match="unknown risk 'median'"):
            make_planner("gradient", ToyZModel(), cost_fn, {"risk": "median"})
        with pytest.raises(ValueError, match="cvar_alpha"):
            make_planner("gradient", ToyZModel(), cost_fn, {"cvar_alpha": 1.5})
        with pytest.raises(ValueError, match="z_resample must be a bool"):
            make_planner("gradient", ToyZModel(), cost_fn, {"z_resample": 1})
        det = _z_model(0)
        with pytest.raises(ValueError, match="z_samples=4 needs a world model with a latent"):
            make_planner("gradient", det, cost_fn, {"z_samples": 4})
        planner = make_planner("gradient", ToyZModel(), cost_fn, {"horizon": 3})
        with pytest.raises(ValueError, match="z_dim=2"):
            planner.plan(None, jnp.ones(2), jnp.ones(2), jax.random.key(0),
                         planner.init_state(2), jnp.zeros((4, 3, 5)))


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_z_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny_z")
    final = loop.train_and_evaluate(tiny(), workdir, progress=False)
    return workdir, final


def test_end_to_end_train_and_plan(tiny_z_run):
    from jepa_jax.planning_eval import evaluate_workdir
    from jepa_jax.training.metrics import read_metrics

    workdir, final = tiny_z_run
    assert math.isfinite(final["rollout_px_h4"]) and final["probe_r2"] > 0.9
    rows = read_metrics(workdir)
    kl_joint = [r["train/z_kl"] for r in rows if "train/loss" in r]
    kl_pred = [r["train/z_kl"] for r in rows if "train/predictor_loss" in r]
    assert len(kl_joint) == 6 and len(kl_pred) == 2
    assert all(math.isfinite(v) and v >= 0 for v in kl_joint + kl_pred)
    result = evaluate_workdir(workdir, "gradient", episodes=2, plot=False,
                              overrides=["--config.planning.gradient.risk=cvar"])
    assert result["num_episodes"] == 2 and "pit_rate" in result
    assert result["budget"]["z_samples"] == 3 and result["budget"]["risk"] == "cvar"
    result = evaluate_workdir(workdir, "gradient", episodes=2, write=False,
                              overrides=["--config.planning.gradient.num_perturbations=3",
                                         "--config.planning.gradient.select_samples=5"])
    assert result["budget"]["num_perturbations"] == 3
    assert result["budget"]["select_samples"] == 5
    # A z dimension that does not match the checkpoint is refused in one line.
    with pytest.raises(ValueError, match=r"model.z_dim=3 does not match the checkpoint"):
        evaluate_workdir(workdir, "gradient", episodes=1, write=False,
                         overrides=["--config.model.z_dim=3"])
    with pytest.raises(ValueError, match="unknown risk 'median'"):
        evaluate_workdir(workdir, "gradient", episodes=1, write=False,
                         overrides=["--config.planning.gradient.risk=median"])
    with pytest.raises(ValueError, match="z_samples must be an integer >= 1"):
        evaluate_workdir(workdir, "gradient", episodes=1, write=False,
                         overrides=["--config.planning.gradient.z_samples=0"])


def test_workdir_without_a_newer_planner_setting_takes_it_as_an_override(tiny_z_run,
                                                                        tmp_path):
    # A workdir trained before a planner setting existed: its config.json lacks the key,
    # which load_trained adds at the planner's default, so the override still applies.
    import json
    import shutil

    from jepa_jax.training.loop import load_trained

    workdir = tmp_path / "old"
    shutil.copytree(tiny_z_run[0], workdir)
    stored = json.loads((workdir / "config.json").read_text())
    for key in ("num_perturbations", "select_samples", "z_resample"):
        stored["planning"]["gradient"].pop(key, None)
    (workdir / "config.json").write_text(json.dumps(stored))
    config, _, _ = load_trained(workdir)
    assert config.planning.gradient.num_perturbations == 0
    assert config.planning.gradient.z_resample is True
    config, _, _ = load_trained(workdir, ["--config.planning.gradient.select_samples=7"])
    assert config.planning.gradient.select_samples == 7
    with pytest.raises(Exception, match="unknown config key config.planning.gradient.nope"):
        load_trained(workdir, ["--config.planning.gradient.nope=1"])
    # Likewise the cost weights: a stored cost section without reach_* takes them.
    stored["planning"]["cost"] = {"goal_weight": 1.0, "goal_mode": "dense"}
    (workdir / "config.json").write_text(json.dumps(stored))
    config, _, _ = load_trained(workdir, ["--config.planning.cost.reach_weight=2.0"])
    assert config.planning.cost.reach_weight == 2.0
    assert config.planning.cost.reach_scale == 1.0 and config.planning.cost.goal_discount == 0.9
    with pytest.raises(Exception, match="unknown config key config.planning.cost.nope"):
        load_trained(workdir, ["--config.planning.cost.nope=1"])


def test_missing_kl_coeff_is_refused():
    config = configs.load_config(str(ROOT / "experiments" / "two_rooms.py:tiny"),
                                 ["--config.model.z_dim=2"])
    with pytest.raises(ValueError, match="loss.z_kl_coeff"):
        loop.Experiment(config)


def test_online_rounds_on_the_windy_world_are_refused():
    config = tiny()
    with config.unlocked():
        config.train.update(online_rounds=1, online_trajectories=4, online_fraction=0.25)
    config.planning.gradient.horizon = 16
    with pytest.raises(ValueError, match="online_rounds supports env.name='two_rooms' only"):
        loop.validate_config(config)
