"""The agent on a trained tiny workdir: train_agent and evaluate --planner agent (the CLI),
their one-line errors, and the agent notebook."""

import json
import os
from pathlib import Path

import pytest

from jepa_jax import configs, evaluate, train_agent
from jepa_jax.training import loop

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--config.agent.critic.rounds=1", "--config.agent.critic.num_steps=20",
        "--config.agent.critic.target_every=10", "--config.agent.policy.dagger_rounds=1",
        "--config.agent.policy.num_steps=20", "--config.agent.policy.dagger_labels=16"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("tiny_agent")
    config = configs.load_config(str(ROOT / "experiments/two_rooms.py:tiny"),
                                 ["--config.train.num_steps=20",
                                  "--config.train.predictor_steps=10"])
    loop.train_and_evaluate(config, wd, progress=False)
    assert train_agent.main(["--workdir", str(wd), *FAST]) == 0
    return wd


def test_train_agent_saves_modules(workdir):
    d = workdir / "agent"
    for name in ("agent.json", "critic.json", "critic.msgpack", "policy.json",
                 "policy.msgpack", "train_log.json"):
        assert (d / name).exists(), name
    log = json.loads((d / "train_log.json").read_text())
    assert log["critic"]["method"] == "value_iteration"
    assert log["critic"]["num_heldout_layouts"] == 1
    assert 0 <= log["critic"]["heldout_rmse"] < 1e3
    assert log["policy"]["method"] == "cost"  # Mode-1 trained on Mode-2's cost
    assert log["policy"]["rounds"][0]["num_pairs_seen"] > 0
    assert 0.0 <= log["policy"]["kept_training_success"] <= 1.0


def test_evaluate_agent_cli_writes_json(workdir, capsys):
    assert evaluate.main(["--workdir", str(workdir), "--planner", "agent",
                          "--episodes", "2"]) == 0
    saved = json.loads((workdir / "eval_agent.json").read_text())
    for key in ("success_rate", "mode2_share", "ms_per_action", "plans_per_episode",
                "configuration"):
        assert key in saved, key
    assert saved["num_episodes"] == 2
    out = capsys.readouterr().out
    assert "mode2_share=" in out and "episodes 2/2" in out  # progress after the batch
    assert evaluate.main(["--workdir", str(workdir), "--planner", "agent", "--episodes", "2",
                          "--task", "avoid", "--config.agent.configurator.mode=mode2"]) == 0
    saved = json.loads((workdir / "eval_agent_avoid.json").read_text())
    assert saved["mode2_share"] == 1.0 and "violation_rate" in saved


def test_planner_cli_uses_the_critic(workdir):
    assert evaluate.main(["--workdir", str(workdir), "--planner", "cem", "--episodes", "1",
                          "--critic-weight", "1.0"]) == 0
    saved = json.loads((workdir / "eval_cem_critic.json").read_text())
    assert saved["budget"]["critic_weight"] == 1.0
    # The critic's own cost: reach cost over the horizon + terminal value, no goal distance.
    assert saved["budget"]["cost"]["reach_weight"] == 1.0
    assert saved["budget"]["cost"]["goal_weight"] == 0.0


def test_one_line_errors(workdir, tmp_path, capsys):
    assert evaluate.main(["--workdir", str(workdir), "--planner", "agent",
                          "--task", "fly"]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'fly'" in err and err.count("\n") == 1
    (tmp_path / "config.json").write_text((workdir / "config.json").read_text())
    os.symlink(workdir / "checkpoints", tmp_path / "checkpoints")
    assert evaluate.main(["--workdir", str(tmp_path), "--planner", "agent"]) == 1
    err = capsys.readouterr().err
    assert "no trained agent" in err and err.count("\n") == 1


def test_agent_notebook_runs(workdir):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "agent.ipynb", as_version=4)
    os.environ["JEPA_WORKDIR"] = str(workdir)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("JEPA_WORKDIR")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "cost terms:" in outputs and "error: unknown task terms" in outputs
    assert "Mode-2 on" in outputs and "entries:" in outputs


def test_behaviour_cloning_policy_method(workdir, capsys):
    """Mode-1 by behaviour cloning and DAgger is still one setting away; a bad method name
    is a one-line error."""
    assert train_agent.main(["--workdir", str(workdir), "--stages", "policy",
                             "--config.agent.policy.method=dance"]) == 1
    err = capsys.readouterr().err
    assert "unknown agent.policy.method 'dance'" in err and err.count("\n") == 1
    assert train_agent.main(["--workdir", str(workdir), "--stages", "policy",
                             "--config.agent.policy.pool_states=1"]) == 1
    err = capsys.readouterr().err
    assert "agent.policy.pool_states must be an integer >= 2" in err and err.count("\n") == 1
    assert train_agent.main(["--workdir", str(workdir), "--stages", "policy", *FAST,
                             "--config.agent.policy.method=bc"]) == 0
    log = json.loads((workdir / "agent" / "train_log.json").read_text())
    assert log["policy"]["method"] == "bc" and log["policy"]["rounds"][0]["num_demos"] > 0


def test_td_critic_method(workdir):
    """The TD(lambda) critic on closed-loop memories is still one setting away (run last:
    it replaces the workdir's critic)."""
    assert train_agent.main(["--workdir", str(workdir), "--stages", "critic", *FAST,
                             "--config.agent.critic.method=td"]) == 0
    log = json.loads((workdir / "agent" / "train_log.json").read_text())
    assert log["critic"]["rounds"][0]["num_transitions"] > 0
    assert "kept_round" in log["policy"]  # the kept Mode-1's log stays
