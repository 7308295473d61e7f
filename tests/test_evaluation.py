"""Closed-loop evaluation and the planning notebook, on the tiny preset."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax import configs, evaluation
from jepa_jax.envs import two_rooms, windy_rooms
from jepa_jax.planning_eval import evaluate_workdir
from jepa_jax.training import loop

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    loop.train_and_evaluate(configs.load_config(str(ROOT / "experiments/two_rooms.py:tiny")),
                            workdir, progress=False)
    return workdir


def test_episodes_start_and_goal_in_opposite_rooms():
    env = two_rooms.EnvParams()
    eps = evaluation.make_episodes(jax.random.key(0), 200, env, margin=2.6)
    wall = np.asarray(eps.layout[:, 0])
    start_side = np.asarray(eps.start[:, 0]) > wall
    goal_side = np.asarray(eps.goal[:, 0]) > wall
    assert np.all(start_side != goal_side)
    for p in (eps.start, eps.goal):
        p = np.asarray(p)
        assert np.all((p > env.low + 2.6 - 1e-4) & (p < env.high - 2.6 + 1e-4))
        assert np.all(np.abs(p[:, 0] - wall) >= env.wall_half_width + 2.6 - 1e-4)


def test_score_by_hand():
    eps = evaluation.Episodes(start=np.zeros((2, 2)), goal=np.array([[10.0, 10.0], [30, 30]]),
                              layout=np.array([[20.0, 30.0], [20.0, 30.0]]))
    pos = np.zeros((2, 3, 2))
    pos[0] = [[0, 0], [9.2, 9.2], [5, 5]]  # mean sq error 0.64 < 1 at step 1: success
    pos[1] = [[0, 0], [28.5, 30], [28.6, 30]]  # (1.4^2 + 0) / 2 = 0.98 < 1: success at 2
    result = evaluation.score(pos, eps)
    assert result["success_rate"] == 1.0
    assert result["mean_steps_to_success"] == 1.5
    pos[1, 2] = [28.5, 30]  # 1.125 >= 1: failure
    assert evaluation.score(pos, eps)["success_rate"] == 0.5


def test_score_classifies_windy_failures_by_hand():
    # The experiment's bridge: wall x 32, y 32 +- 8; pits 8 < |y - 32| <= 14 for |x - 32| <= 6.
    env = windy_rooms.EnvParams(windy_door_y=32.0, windy_half_width=8.0, calm_door=False)
    eps = evaluation.Episodes(start=np.array([[20.0, 30], [20, 43], [10, 10], [20, 50]]),
                              goal=np.array([[50.0, 30], [50, 43], [50, 10], [50, 50]]),
                              layout=np.full((4, 2), 32.0))
    pos = np.zeros((4, 4, 2))
    pos[0] = [[20, 30], [30, 38], [30, 43], [30, 43]]  # blown off the bridge
    pos[1] = [[20, 43], [24, 43], [27, 43], [27, 43]]  # walked into a pit from the room
    pos[2] = [[10, 10], [20, 10], [29, 10], [29, 10]]  # pressed against the wall
    pos[3] = [[20, 50], [35, 50], [50, 50], [50, 50]]  # at the goal (no pit on the way)
    result = evaluation.score(pos, eps, env)
    assert result["success"] == [False, False, False, True]
    assert result["pit_rate"] == 0.5
    assert result["pit_from_bridge_rate"] == 0.25 and result["pit_walked_in_rate"] == 0.25
    assert result["stalled_rate"] == 0.25
    assert result["bridge_rate"] == 0.25  # only the first stood on it: (30, 38)


def test_paired_comparison_by_hand():
    a = [True, True, True, False, True, False]
    b = [False, False, True, False, False, True]
    r = evaluation.paired_comparison(a, b)
    assert (r["only_first"], r["only_second"], r["both"]) == (3, 1, 1)
    # Sign test on 3 vs 1: 2 * (C(4,0) + C(4,1)) / 2^4 = 10 / 16.
    assert r["sign_test_p"] == 0.625
    assert evaluation.paired_comparison([True] * 8, [False] * 8)["sign_test_p"] == 2 / 2**8
    assert evaluation.paired_comparison([True], [True])["sign_test_p"] == 1.0
    with pytest.raises(ValueError, match="same episodes: 2 != 1"):
        evaluation.paired_comparison([True, False], [True])


def test_straight_baseline_walks_straight():
    env = two_rooms.EnvParams(random_layout=False, wall_x=32.0, door_y=32.0)
    eps = evaluation.Episodes(start=np.array([[10.0, 32.0], [10.0, 10.0]]),
                              goal=np.array([[50.0, 32.0], [50.0, 10.0]]),
                              layout=np.array([[32.0, 32.0], [32.0, 32.0]]))
    run = evaluation.make_straight_episode_fn(env, 40)
    pos, _, _ = evaluation.run_evaluation(run, None, eps, jax.random.key(0))
    result = evaluation.score(pos, eps)
    assert result["success"] == [True, False]  # through the door vs stuck at the wall
    assert abs(pos[1, -1, 0] - 30.0) < 2.5


def test_run_evaluation_resumes_after_a_kill(tmp_path):
    env = windy_rooms.EnvParams(random_layout=False, wall_x=32.0, door_y=48.0)
    eps = evaluation.make_episodes(jax.random.key(3), 5, env, margin=2.6)
    run = evaluation.make_straight_episode_fn(env, 30)  # windy: the result depends on the key
    key = jax.random.key(7)
    full, _, _ = evaluation.run_evaluation(run, None, eps, key, batch_size=2)
    other, _, _ = evaluation.run_evaluation(run, None, eps, jax.random.key(8), batch_size=2)
    assert np.any(full != other)  # gusts blew: a wrong key per episode would show
    # Episode i's key does not depend on the batching.
    one, _, _ = evaluation.run_evaluation(run, None, eps, key, batch_size=5)
    np.testing.assert_array_equal(full, one)

    class Killed(Exception):
        pass

    def kill_after_first(done, total, seconds):
        assert total == 5
        raise Killed

    partial = tmp_path / "eval.partial.npz"
    with pytest.raises(Killed):
        evaluation.run_evaluation(run, None, eps, key, batch_size=2, resume=partial,
                                  progress=kill_after_first, fingerprint="a")
    seen = []
    resumed, _, _ = evaluation.run_evaluation(
        run, None, eps, key, batch_size=2, resume=partial, fingerprint="a",
        progress=lambda done, total, s: seen.append((done, s)))
    # Resumed after 2 episodes (reported before any work), then only batches 2 and 3 ran.
    assert [d for d, _ in seen] == [2, 4, 5] and seen[0][1] == 0.0
    assert all(s > 0 for _, s in seen[1:])
    np.testing.assert_array_equal(resumed, full)

    # Finished batches are reused as stored: a different episode function under the same
    # fingerprint is not called for them (so callers must fingerprint what matters) ...
    def stand_still(params, start, goal, layout, k):
        return jnp.broadcast_to(start, (31, 2)), jnp.zeros((1, 1, 2))

    reused, _, _ = evaluation.run_evaluation(stand_still, None, eps, key, batch_size=2,
                                             resume=partial, fingerprint="a")
    np.testing.assert_array_equal(reused, full)
    # ... and another fingerprint, key or batch size, or a corrupt file, starts afresh.
    for kwargs in (dict(fingerprint="b"), dict(batch_size=3)):
        fresh, _, _ = evaluation.run_evaluation(stand_still, None, eps, key, resume=partial,
                                                **{"batch_size": 2, "fingerprint": "a",
                                                   **kwargs})
        np.testing.assert_array_equal(fresh[:, -1], np.asarray(eps.start))
    partial.write_bytes(b"not a zip file")
    fresh, _, _ = evaluation.run_evaluation(run, None, eps, key, batch_size=2, resume=partial,
                                            fingerprint="a")
    np.testing.assert_array_equal(fresh, full)
    with pytest.raises(ValueError, match="batch_size"):
        evaluation.run_evaluation(run, None, eps, key, batch_size=0)


def test_evaluate_workdir_writes_json_with_budget(tiny_workdir):
    result = evaluate_workdir(tiny_workdir, "gradient", episodes=3)
    saved = json.loads((tiny_workdir / "eval_gradient.json").read_text())
    assert saved["num_episodes"] == 3
    for key in ("success_rate", "goal_room_rate", "mean_final_distance_px", "ms_per_plan",
                "plan_temp_bytes"):
        assert key in saved, key
    budget = saved["budget"]
    for key in ("horizon", "num_restarts", "num_iters", "replan_every", "env_steps"):
        assert key in budget, key
    assert (tiny_workdir / "eval_gradient.png").exists()
    assert not (tiny_workdir / "eval_gradient.partial.npz").exists()  # removed when done
    assert 0.0 <= result["success_rate"] <= 1.0


def test_evaluate_cli_prints_progress_and_resumes_only_the_same_settings(
        tiny_workdir, capsys, monkeypatch):
    from jepa_jax import evaluate

    assert evaluate.main(["--workdir", str(tiny_workdir), "--planner", "straight",
                          "--episodes", "3", "--config.planning.batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "episodes 2/3" in out and "episodes 3/3" in out and "success_rate=" in out

    class Killed(Exception):
        pass

    def kill(done, total, seconds):
        raise Killed

    args = dict(episodes=2, plot=False)
    fast = ["--config.planning.batch_size=1", "--config.planning.gradient.num_iters=1"]
    monkeypatch.setattr(evaluation, "print_progress", kill)
    with pytest.raises(Killed):  # killed after its first episode
        evaluate_workdir(tiny_workdir, "gradient", overrides=fast, progress=True, **args)
    partial = tiny_workdir / "eval_gradient.partial.npz"
    assert partial.exists()
    # Other planner settings: the stored episode is not reused.
    other = fast[:1] + ["--config.planning.gradient.num_iters=2"]
    resumed = evaluate_workdir(tiny_workdir, "gradient", overrides=other, **args)
    fresh = evaluate_workdir(tiny_workdir, "gradient", overrides=other, write=False, **args)
    stale = evaluate_workdir(tiny_workdir, "gradient", overrides=fast, write=False, **args)
    assert stale["mean_final_distance_px"] != fresh["mean_final_distance_px"]  # can tell
    assert resumed["mean_final_distance_px"] == fresh["mean_final_distance_px"]
    assert not partial.exists()


@pytest.mark.parametrize("name", ["cem", "mppi", "straight"])
def test_other_planners_run(tiny_workdir, name):
    result = evaluate_workdir(tiny_workdir, name, episodes=2, plot=False)
    assert result["num_episodes"] == 2


def test_bad_inputs(tiny_workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained model"):
        evaluate_workdir(tmp_path, "gradient", episodes=1)
    with pytest.raises(ValueError, match="unknown planner"):
        evaluate_workdir(tiny_workdir, "astar", episodes=1)
    with pytest.raises(ValueError, match="horizon"):
        evaluate_workdir(tiny_workdir, "gradient", episodes=1,
                         overrides=["--config.planning.gradient.horizon=0"])
    with pytest.raises(ValueError, match="episodes"):
        evaluate_workdir(tiny_workdir, "gradient", episodes=0)


def test_planning_notebook_runs(tiny_workdir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "planning.ipynb", as_version=4)
    os.environ["JEPA_WORKDIR"] = str(tiny_workdir)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("JEPA_WORKDIR")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "planned actions (8, 2)" in outputs
    assert "success" in outputs
