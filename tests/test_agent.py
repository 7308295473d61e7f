"""The agent's modules: memory and TD targets against NumPy, distillation loss, configurator
errors, checkpoints, and a tiny end-to-end episode (random-init tiny world model)."""

import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax import agent as ag
from jepa_jax import configs, evaluation, head_checkpoint
from jepa_jax import critic as cr
from jepa_jax import memory as mem_lib
from jepa_jax import policy as po
from jepa_jax.cost import make_cost, reach_cost
from jepa_jax.training.loop import Experiment

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
D, A = 3, 2


# ----------------------------------------------------------------------------- memory


class NumpyMemory:
    """Reference: the same ring / LRU semantics written with Python lists."""

    def __init__(self, size, policy):
        self.size, self.policy = size, policy
        self.slots = [None] * size
        self.last_used = [-1] * size
        self.clock = 0
        self.writes = 0

    def write(self, s, a, c):
        if self.policy == "ring":
            slot = self.writes % self.size
        else:
            empty = [i for i, e in enumerate(self.slots) if e is None]
            slot = empty[0] if empty else int(np.argmin(self.last_used))
        self.slots[slot] = (s, a, c, self.writes)
        self.last_used[slot] = self.clock
        self.clock += 1
        self.writes += 1

    def read(self, q, temperature):
        idx = [i for i, e in enumerate(self.slots) if e is not None]
        logits = np.array([-np.sum((self.slots[i][0] - q) ** 2) / temperature for i in idx])
        w = np.exp(logits - logits.max())
        w /= w.sum()
        full = np.zeros(self.size)
        full[idx] = w
        top = idx[int(np.argmax(w))]
        self.last_used[top] = self.clock
        self.clock += 1
        act = sum(w[j] * self.slots[i][1] for j, i in enumerate(idx))
        cost = sum(w[j] * self.slots[i][2] for j, i in enumerate(idx))
        lse = logits.max() + np.log(np.exp(logits - logits.max()).sum())
        return full, act, cost, lse


def _entries(n):
    return (RNG.normal(size=(n, D)).astype(np.float32), RNG.normal(size=(n, A)).astype(
        np.float32), RNG.random(n).astype(np.float32))


class TestMemory:
    def test_size_zero_is_a_one_line_error(self):
        with pytest.raises(ValueError, match=r"^memory size must be an integer >= 1, got 0$"):
            mem_lib.init_memory(0, D, A)
        with pytest.raises(ValueError, match="unknown memory write policy"):
            mem_lib.init_memory(4, D, A, "fifo")

    @pytest.mark.parametrize("policy", ["ring", "lru"])
    def test_write_and_read_match_numpy(self, policy):
        s, a, c = _entries(9)
        mem = mem_lib.init_memory(4, D, A, policy)
        ref = NumpyMemory(4, policy)
        write = jax.jit(mem_lib.write)
        read = jax.jit(mem_lib.read, static_argnames=("kind", "refresh"))
        z = jnp.zeros(D)
        for i in range(9):
            mem = write(mem, s[i], a[i], c[i], z, z)
            ref.write(s[i], a[i], c[i])
            if i % 3 == 2:  # reads refresh entries, which matters for LRU
                q = RNG.normal(size=D).astype(np.float32)
                out, mem = read(mem, q, 0.7)
                w, act, cost, lse = ref.read(q, 0.7)
                np.testing.assert_allclose(out.weights, w, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(out.action, act, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(out.cost, cost, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(out.log_count, lse, rtol=1e-5, atol=1e-5)
        for i, e in enumerate(ref.slots):
            np.testing.assert_allclose(mem.state[i], e[0])
            np.testing.assert_allclose(mem.cost[i], e[2])
            assert int(mem.written[i]) == e[3]
        np.testing.assert_array_equal(mem.last_used, ref.last_used)

    def test_dot_similarity_and_empty_read(self):
        mem = mem_lib.init_memory(3, D, A)
        out, mem2 = mem_lib.read(mem, jnp.ones(D))
        assert float(out.weights.sum()) == 0.0 and out.log_count == -jnp.inf
        assert int(mem2.clock) == 0  # nothing to refresh
        s, a, c = _entries(2)
        for i in range(2):
            mem = mem_lib.write(mem, s[i], a[i], c[i], jnp.zeros(D), jnp.zeros(D))
        q = RNG.normal(size=D).astype(np.float32)
        out, _ = mem_lib.read(mem, q, 2.0, kind="dot")
        logits = s @ q / 2.0
        w = np.exp(logits - logits.max())
        np.testing.assert_allclose(out.weights[:2], w / w.sum(), rtol=1e-5)
        assert float(out.weights[2]) == 0.0

    def test_disabled_write_changes_nothing_and_vmap(self):
        mem = mem_lib.init_memory(4, D, A)
        s, a, c = _entries(1)
        same = mem_lib.write(mem, s[0], a[0], c[0], jnp.zeros(D), jnp.zeros(D), enabled=False)
        chex.assert_trees_all_equal(same, mem)
        batch = jax.vmap(lambda _: mem_lib.init_memory(4, D, A))(jnp.arange(5))
        s, a, c = _entries(5)
        z = jnp.zeros((5, D))
        batch = jax.jit(jax.vmap(mem_lib.write))(batch, s, a, c, z, z)
        np.testing.assert_allclose(batch.state[:, 0], s)
        assert batch.state.shape == (5, 4, D)

    def test_ordered_after_wrapping(self):
        mem = mem_lib.init_memory(3, D, A)
        s, a, c = _entries(5)
        for i in range(5):
            mem = mem_lib.write(mem, s[i], a[i], c[i], jnp.zeros(D), jnp.zeros(D))
        m, _ = mem_lib.ordered(mem)
        np.testing.assert_allclose(m.state, s[2:])
        np.testing.assert_array_equal(m.written, [2, 3, 4])


# ----------------------------------------------------------------------------- critic


def np_td_lambda(c, v, k, gamma, lam):
    g = np.zeros_like(c)
    nxt = v[-1]
    for t in range(len(c) - 1, -1, -1):
        cont = k[t] and t < len(c) - 1
        g[t] = c[t] + gamma * (v[t] if not cont else (1 - lam) * v[t] + lam * nxt)
        nxt = g[t]
    return g


def np_n_step(c, v, k, gamma, n):
    T = len(c)
    out = np.zeros_like(c)
    for t in range(T):
        total, disc, j = 0.0, 1.0, t
        for m in range(n):
            j = t + m
            total += disc * c[j]
            disc *= gamma
            if m == n - 1 or j == T - 1 or not k[j]:
                break
        out[t] = total + disc * v[j]
    return out


class TestTargets:
    C = RNG.random(7).astype(np.float32)
    V = (5 * RNG.random(7)).astype(np.float32)
    K = np.array([1, 1, 0, 1, 1, 1, 1], bool)

    @pytest.mark.parametrize("lam", [0.0, 0.6, 1.0])
    def test_td_lambda_matches_numpy(self, lam):
        got = jax.jit(cr.td_lambda_targets, static_argnums=(3, 4))(
            jnp.asarray(self.C), jnp.asarray(self.V), jnp.asarray(self.K), 0.9, lam)
        np.testing.assert_allclose(got, np_td_lambda(self.C, self.V, self.K, 0.9, lam),
                                   rtol=1e-5)

    @pytest.mark.parametrize("n", [1, 2, 3, 10])
    def test_n_step_matches_numpy(self, n):
        got = cr.n_step_targets(jnp.asarray(self.C), jnp.asarray(self.V), jnp.asarray(self.K),
                                0.9, n)
        np.testing.assert_allclose(got, np_n_step(self.C, self.V, self.K, 0.9, n), rtol=1e-5)

    def test_special_cases_agree(self):
        c, v, k = jnp.asarray(self.C), jnp.asarray(self.V), jnp.asarray(self.K)
        np.testing.assert_allclose(cr.td_lambda_targets(c, v, k, 0.9, 0.0),
                                   cr.n_step_targets(c, v, k, 0.9, 1), rtol=1e-6)
        np.testing.assert_allclose(cr.td_lambda_targets(c, v, k, 0.9, 1.0),
                                   cr.n_step_targets(c, v, k, 0.9, 100), rtol=1e-5)

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="one shape"):
            cr.td_lambda_targets(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3, bool), 0.9, 0.5)


class TestCritic:
    def test_learns_a_discounted_chain_from_memory(self):
        # A walk along a line toward the goal at 0; cost 1 per step until the goal.
        critic = cr.make_critic({"hidden": (32,), "gamma": 0.8}, 2, reach_scale=0.01)
        mem = mem_lib.init_memory(16, 2, 1)
        goal = jnp.zeros(2)
        for x in range(10, 0, -1):
            s, s1 = jnp.array([x / 10, 0.0]), jnp.array([(x - 1) / 10, 0.0])
            mem = mem_lib.write(mem, s, jnp.zeros(1), critic.step_cost(s1, goal), s1, goal)
        data = cr.transitions_from_memory(jax.tree.map(lambda x: x[None], mem))
        assert bool(data.continues[0, :9].all()) and not bool(data.continues[0, 9])
        params, m = cr.train_critic(critic, critic.init(jax.random.key(0)), data,
                                    {"num_steps": 600, "target_every": 150, "batch_size": 10,
                                     "learning_rate": 3e-3, "hidden": (32,)},
                                    jax.random.key(1))
        v = critic.value(params, data.state[0, :10], data.goal[0, :10])
        assert m["explained_variance"] > 0.9
        assert float(v[0]) > float(v[8])  # farther from the goal: more cost to come

    def test_checkpoint_latent_dim_mismatch_is_one_line(self, tmp_path):
        critic = cr.make_critic({"hidden": (8,)}, 5, 1.0)
        cr.save_critic(tmp_path, critic, critic.init(jax.random.key(0)))
        c2, p2 = cr.load_critic(tmp_path, 5)
        assert c2.latent_dim == 5 and c2.net.hidden == (8,)
        with pytest.raises(head_checkpoint.HeadCheckpointError) as e:
            cr.load_critic(tmp_path, 6)
        assert "\n" not in str(e.value) and "dimension 5" in str(e.value)
        with pytest.raises(head_checkpoint.HeadCheckpointError, match="no critic checkpoint"):
            cr.load_critic(tmp_path / "missing", 5)
        # Parameters of another encoder's head under a matching latent_dim record.
        policy = po.make_policy({"hidden": (8,)}, 4, A, 2.45)
        head_checkpoint.save_head(tmp_path, "policy", policy.init(jax.random.key(0)),
                                  {**policy.meta(), "latent_dim": 5})
        with pytest.raises(head_checkpoint.HeadCheckpointError,
                           match="has input width 12, expected 15 for latent dimension 5"):
            po.load_policy(tmp_path, 5)

    def test_cost_is_intrinsic_plus_critic(self):
        critic = cr.make_critic({"hidden": (8,), "gamma": 0.9}, D, 0.5)
        params = critic.init(jax.random.key(0))
        cfg = cr.cost_config(critic, horizon=4, weight=2.0)
        cost_fn = jax.jit(make_cost(cfg, critic_fn=critic.critic_fn(params)))
        states = jnp.asarray(RNG.normal(size=(4, D)), jnp.float32)
        goal = jnp.asarray(RNG.normal(size=D), jnp.float32)
        d2 = np.sum((np.asarray(states) - np.asarray(goal)) ** 2, -1)
        intrinsic = np.sum(0.9 ** np.arange(4) * (1 - np.exp(-d2 / 0.5)))
        expected = intrinsic + 2.0 * 0.9**4 * float(critic.value(params, states[-1], goal))
        np.testing.assert_allclose(cost_fn(states, jnp.zeros((4, A)), goal), expected,
                                   rtol=1e-5)
        np.testing.assert_allclose(reach_cost(states, goal, scale=0.5, discount=0.9),
                                   intrinsic, rtol=1e-5)


@pytest.mark.parametrize("name", ["gradient", "cem", "mppi"])
def test_every_planner_plans_with_the_critic(name):
    from jepa_jax.planning import make_planner

    critic = cr.make_critic({"hidden": (8,), "gamma": 0.9}, D, 0.5)
    cparams = critic.init(jax.random.key(0))
    cost_fn = make_cost(cr.cost_config(critic, horizon=4), critic_fn=critic.critic_fn(cparams))
    small = {"gradient": {"num_iters": 3, "num_restarts": 2},
             "cem": {"num_iters": 2, "num_samples": 8, "num_elites": 2},
             "mppi": {"num_iters": 2, "num_samples": 8}}[name]
    planner = make_planner(name, ag._LatentModel(_ToyModel()), cost_fn,
                           {"horizon": 4, **small})
    s0, g = jnp.zeros(D), jnp.ones(D)
    actions, info = jax.jit(planner.plan)(None, s0, g, jax.random.key(1),
                                          planner.init_state(A))
    assert actions.shape == (4, A)
    np.testing.assert_allclose(info["final_cost"],
                               cost_fn(info["states"], actions, g), rtol=1e-5)


class _ToyModel:
    """s' = s + [a, 0]: a latent world model for planner tests."""

    latent_dim = D

    def predict(self, params, s, a, z=None):
        return s + jnp.concatenate([a, jnp.zeros(D - A)])


# ----------------------------------------------------------------------------- policy


class TestPolicy:
    def test_bc_loss_matches_numpy(self):
        policy = po.make_policy({"hidden": (8,)}, D, A, 2.45)
        params = policy.init(jax.random.key(0))
        s, g = (jnp.asarray(RNG.normal(size=(6, D)), jnp.float32) for _ in range(2))
        target = jnp.asarray(RNG.normal(size=(6, A)), jnp.float32)
        w = jnp.asarray(RNG.random(6), jnp.float32)
        pred = np.asarray(policy.act(params, s, g))
        err = np.sum((pred - np.asarray(target)) ** 2, -1)
        loss = jax.jit(po.bc_loss, static_argnums=0)
        np.testing.assert_allclose(loss(policy, params, s, g, target), err.mean(), rtol=1e-5)
        np.testing.assert_allclose(loss(policy, params, s, g, target, w),
                                   np.sum(np.asarray(w) * err) / np.sum(np.asarray(w)),
                                   rtol=1e-5)
        with pytest.raises(ValueError, match="targets have shape"):
            po.bc_loss(policy, params, s, g, target[:, :1])

    def test_actions_in_bound_and_distillation_fits(self):
        policy = po.make_policy({"hidden": (32, 32)}, D, A, 1.0)
        s = jnp.asarray(RNG.normal(size=(256, D)), jnp.float32)
        g = jnp.zeros_like(s)
        target = po.Demonstrations(s, g, 0.5 * jnp.tanh(-s[:, :2]))  # a reachable teacher
        p0 = policy.init(jax.random.key(0))
        big = policy.act(p0, 100 * s, g)
        assert float(jnp.max(jnp.linalg.norm(big, axis=-1))) <= 1.0 + 1e-5
        params, m = po.train_policy(policy, p0, target, {"num_steps": 300, "batch_size": 64,
                                                         "hidden": (32, 32)},
                                    jax.random.key(1))
        assert m["loss_last"] < 0.1 * m["loss_first"]

    def test_warm_start_is_the_policy_rollout(self):
        policy = po.make_policy({"hidden": (8,)}, D, A, 2.45)
        pp = policy.init(jax.random.key(0))
        predict = lambda p, s, a: s + jnp.concatenate([a, jnp.zeros(D - A)])
        s0, g = jnp.ones(D), jnp.zeros(D)
        acts, states = po.warm_start_actions(policy, pp, predict, None, s0, g, 3)
        s = s0
        for t in range(3):
            a = policy.act(pp, s, g)
            np.testing.assert_allclose(acts[t], a, rtol=1e-6)
            s = predict(None, s, a)
            np.testing.assert_allclose(states[t], s, rtol=1e-6)


    def test_rollout_cost_loss_matches_a_hand_rollout(self):
        policy = po.make_policy({"hidden": (8,)}, D, A, 2.45)
        pp = policy.init(jax.random.key(2))
        predict = lambda p, s, a: 0.9 * s + jnp.concatenate([a, jnp.zeros(D - A)])
        cost_fn = lambda st, ac, g: jnp.sum((st - g) ** 2) + 0.1 * jnp.sum(ac ** 2)
        s, g = (jnp.asarray(RNG.normal(size=(3, D)), jnp.float32) for _ in range(2))
        want = []
        for i in range(3):  # NumPy rollout, the policy's actions read one by one
            si, gi, total = np.asarray(s[i]), np.asarray(g[i]), 0.0
            for _ in range(4):
                a = np.asarray(policy.act(pp, jnp.asarray(si), g[i]))
                si = 0.9 * si + np.concatenate([a, np.zeros(D - A)])
                total += np.sum((si - gi) ** 2) + 0.1 * np.sum(a ** 2)
            want.append(total)
        got = po.rollout_cost_loss(policy, pp, predict, None, cost_fn, s, g, 4)
        np.testing.assert_allclose(got, np.mean(want), rtol=1e-5)
        with pytest.raises(ValueError, match="s and g must both have shape"):
            po.rollout_cost_loss(policy, pp, predict, None, cost_fn, s, g[:, :2], 4)

    def test_cost_objective_learns_to_walk_to_the_goal(self):
        # s' = s + (a, 0); cost |s_1 - g|^2: the optimal action is g - s (inside the bound).
        policy = po.make_policy({"hidden": (64, 64)}, D, A, 2.45)
        latents = jnp.asarray(RNG.uniform(-1, 1, size=(4, 64, D)), jnp.float32)
        latents = latents.at[..., A:].set(0.0)
        predict = lambda p, s, a: s + jnp.concatenate([a, jnp.zeros(D - A)])
        cost_fn = lambda st, ac, g: jnp.sum((st[-1] - g) ** 2)
        cfg = {"num_steps": 400, "batch_size": 128, "learning_rate": 3e-3}
        params, m = po.train_policy_on_cost(policy, policy.init(jax.random.key(0)), latents,
                                            predict, None, cost_fn, 1, cfg, jax.random.key(1))
        assert m["loss_last"] < 0.05 * m["loss_first"]
        s, g = latents[0, :16], latents[0, 16:32]
        err = policy.act(params, s, g) - (g - s)[:, :A]
        assert float(jnp.sqrt(jnp.mean(err ** 2))) < 0.1
        with pytest.raises(ValueError, match="latents must have shape"):
            po.train_policy_on_cost(policy, params, latents[0], predict, None, cost_fn, 1, cfg,
                                    jax.random.key(1))
        with pytest.raises(ValueError, match="horizon must be >= 1"):
            po.train_policy_on_cost(policy, params, latents, predict, None, cost_fn, 0, cfg,
                                    jax.random.key(1))


# ----------------------------------------------------------------------------- configurator


class TestConfigurator:
    def test_unknown_terms_and_options_are_one_line_errors(self):
        with pytest.raises(ValueError, match=r"^unknown task terms \['fly'\]; valid terms"):
            ag.make_task({"reach": {}, "fly": {}})
        with pytest.raises(ValueError, match="unknown options \\['radius'\\] of task term"):
            ag.make_task({"avoid": {"radius": 3}})
        with pytest.raises(ValueError, match="unknown avoid shape"):
            ag.make_task({"avoid": {"shape": "triangle"}})
        with pytest.raises(ValueError, match="needs at least one term"):
            ag.make_task({})
        with pytest.raises(ValueError, match="must be a number >= 0"):
            ag.make_task({"reach": {"weight": -1}})

    def test_configuration_errors(self):
        policy = po.make_policy({"hidden": (8,)}, D, A, 2.45)
        with pytest.raises(ValueError, match="unknown agent.configurator keys"):
            ag.configure(None, {"mood": 1}, policy=policy)
        with pytest.raises(ValueError, match="needs a trained Mode-1 policy"):
            ag.configure(None, {"mode": "auto"})
        with pytest.raises(ValueError, match="needs a trained critic"):
            ag.configure(None, {"mode": "mode2", "use_critic": True})
        with pytest.raises(ValueError, match="unknown agent mode"):
            ag.configure(None, {"mode": "mode3"})
        with pytest.raises(ValueError, match="exceeds the planner horizon"):
            ag.configure(None, {"mode": "mode2", "horizon": 2, "replan_every": 4})

    def test_terms_set_costs_and_planner(self):
        critic = cr.make_critic({"hidden": (8,)}, D, 0.3)
        conf = ag.configure({"reach": {}, "avoid": {"shape": "box", "weight": 7.0}},
                            {"mode": "mode2", "horizon": 8, "use_critic": True},
                            critic=critic)
        assert conf.task.constrained and not conf.task.familiar
        assert conf.cost["constraint_weight"] == 7.0
        assert conf.cost["reach_weight"] == 1.0 and conf.cost["reach_scale"] == 0.3
        assert math.isclose(conf.cost["critic_weight"], critic.gamma**8)
        assert conf.planner_config["horizon"] == 8 and conf.horizon == 8
        plain = ag.configure(None, {"mode": "mode2"})
        assert "constraint_weight" not in plain.cost and plain.task.familiar

    def test_region_violation_matches_numpy(self):
        p = jnp.array([10.0, 12.0])
        circle = ag.TaskParams(avoid=jnp.array([11.0, 12.0, 3.0, 0.0]), stay=jnp.zeros(4))
        spec = ag.make_task({"avoid": {"shape": "circle", "margin": 0.5}})
        np.testing.assert_allclose(ag.region_violation(spec, circle, p), 3.0 - 1.0 + 0.5)
        spec = ag.make_task({"avoid": {"shape": "box", "margin": 0.0}})
        box = ag.TaskParams(avoid=jnp.array([8.0, 11.0, 20.0, 20.0]), stay=jnp.zeros(4))
        np.testing.assert_allclose(ag.region_violation(spec, box, p), 1.0)  # 1 px inside
        spec = ag.make_task({"stay_in": {"margin": 0.0}})
        room = ag.TaskParams(avoid=jnp.zeros(4), stay=jnp.array([0.0, 0.0, 9.0, 30.0]))
        np.testing.assert_allclose(ag.region_violation(spec, room, p), 1.0)  # 1 px outside
        assert ag.region_violation(ag.make_task(None), room, p) == -jnp.inf


# ----------------------------------------------------------------------------- agent


@pytest.fixture(scope="module")
def tiny():
    config = configs.load_config(str(ROOT / "experiments/two_rooms.py:tiny"))
    exp = Experiment(config)
    wm = exp.wm
    dim = wm.latent_dim
    critic = cr.make_critic({"hidden": (16,)}, dim, 1.0)
    policy = po.make_policy({"hidden": (16,)}, dim, 2, 2.45)
    key = jax.random.key(0)
    probe = {"w": jnp.zeros((dim, 2)).at[0, 0].set(8.0).at[1, 1].set(8.0), "b": jnp.zeros(2)}
    params = {"world_model": wm.init(key), "critic": critic.init(key),
              "policy": policy.init(key), "probe": probe}
    return config, exp, critic, policy, params


def test_step_batch_equals_vmapped_step_and_episode_runs(tiny):
    config, exp, critic, policy, params = tiny
    conf = ag.configure({"reach": {}, "avoid": {"shape": "circle"}},
                        {"mode": "auto", "replan_every": 2, "check_every": 3, "memory_size": 16,
                         "use_critic": True, "horizon": 4},
                        planning=config.planning, critic=critic, policy=policy)
    agent = ag.make_agent(exp.wm, conf, step_scale=0.1, reach_scale=0.3, critic=critic,
                          policy=policy)
    n, steps = 3, 10
    eps = evaluation.make_episodes(jax.random.key(1), n, exp.env)
    task = ag.TaskParams(avoid=jnp.tile(jnp.array([30.0, 30.0, 4.0, 0.0]), (n, 1)),
                         stay=jnp.zeros((n, 4)))
    keys = jax.random.split(jax.random.key(2), n)
    vmapped = jax.jit(jax.vmap(ag.make_episode_fn(agent, exp.env, steps),
                               (None, 0, 0, 0, 0, 0)))
    p1, i1, s1 = vmapped(params, eps.start, eps.goal, eps.layout, task, keys)
    p2, i2, s2 = jax.jit(ag.make_batch_episode_fn(agent, exp.env, steps, chunk=2))(
        params, eps.start, eps.goal, eps.layout, task, keys)
    np.testing.assert_allclose(p1, p2, atol=1e-4)
    np.testing.assert_array_equal(i1["planned"], i2["planned"])
    assert p1.shape == (n, steps + 1, 2) and i1["mode2"].shape == (n, steps)
    assert bool(i1["planned"].any()) and not bool(i1["planned"].all())  # mixes the modes
    assert bool(jnp.all(i1["planned"] <= i1["mode2"]))
    np.testing.assert_array_equal(s1.memory.valid.sum(1), [steps - 1] * n)  # one per step
    assert bool(jnp.all(jnp.isfinite(i1["value"])))
    # run_episodes batches and scores; the timing helper runs one unbatched episode
    pos, infos, _, _ = ag.run_episodes(agent, params, exp.env, steps, eps.start, eps.goal,
                                       eps.layout, task, jax.random.key(3), batch_size=2)
    assert pos.shape == (n, steps + 1, 2) and infos["planned"].shape == (n, steps)
    timing = ag.time_per_action(agent, params, exp.env, steps, eps.start[0], eps.goal[0],
                                eps.layout[0], jax.tree.map(lambda x: x[0], task), repeats=1)
    assert timing["ms_per_step_with_env"] > 0 and timing["ms_per_action"] >= 0


def test_mode1_agent_never_plans(tiny):
    config, exp, critic, policy, params = tiny
    conf = ag.configure(None, {"mode": "mode1", "memory_size": 8}, planning=config.planning,
                        policy=policy)
    agent = ag.make_agent(exp.wm, conf, step_scale=0.1, reach_scale=0.3, policy=policy)
    eps = evaluation.make_episodes(jax.random.key(1), 2, exp.env)
    pos, infos, _, _ = ag.run_episodes(agent, params, exp.env, 6, eps.start, eps.goal,
                                       eps.layout, None, jax.random.key(3))
    assert not infos["planned"].any() and not infos["mode2"].any()
    with pytest.raises(ValueError, match="latent dimension"):
        ag.make_agent(exp.wm, conf, step_scale=0.1, reach_scale=0.3,
                      policy=po.make_policy({"hidden": (8,)}, exp.wm.latent_dim + 1, 2, 2.45))
