"""End-to-end training on the tiny preset: it learns, it resumes exactly, it fails clearly."""

import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from jepa_jax import configs
from jepa_jax.training import checkpoint as ckpt_lib
from jepa_jax.training import loop
from jepa_jax.training.metrics import read_metrics

CONFIG = str(Path(__file__).resolve().parents[1] / "experiments" / "two_rooms.py")


def tiny(*overrides):
    return configs.load_config(CONFIG + ":tiny", list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    final = loop.train_and_evaluate(tiny(), workdir, progress=False)
    return workdir, final


def test_it_learns(trained):
    workdir, final = trained
    rows = read_metrics(workdir)
    losses = [r["train/loss"] for r in rows if "train/loss" in r]  # joint JEPA phase
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.8 * losses[0]
    pred_losses = [r["train/predictor_loss"] for r in rows if "train/predictor_loss" in r]
    assert len(pred_losses) == 2 and all(math.isfinite(v) for v in pred_losses)
    # The trained predictor beats the identity predictor it starts as (zero-init residual).
    exp = loop.Experiment(tiny())
    init_metrics = loop.run_diagnostics(exp, exp.init_state().params, _diag(exp))
    assert final["rollout_px_h4"] < 0.8 * init_metrics["rollout_px_h4"]
    assert final["probe_r2"] > 0.9
    for key in ("probe_r2", "layout_probe_r2", "rollout_px_h1", "rollout_px_h16",
                "wall_violation_rate"):
        assert math.isfinite(final[key])


def _diag(exp):
    from jepa_jax import diagnostics

    d = exp.config.diagnostics
    return diagnostics.make_diagnostic_data(jax.random.key(d.seed), exp.env, exp.policy,
                                            d.num_probe, d.num_heldout, d.num_wall)


def test_workdir_contents(trained):
    workdir, final = trained
    for name in ("config.json", "metrics.jsonl", "final_metrics.json", "probe.png",
                 "rollouts.png"):
        assert (workdir / name).exists(), name
    assert list((workdir / "tensorboard").iterdir())
    assert json.loads((workdir / "final_metrics.json").read_text()) == pytest.approx(final)
    steps = [r["step"] for r in read_metrics(workdir)]
    assert steps == sorted(steps)


def test_resume_reproduces_uninterrupted_run(trained, tmp_path):
    workdir, final = trained
    with pytest.raises(KeyboardInterrupt):
        loop.train_and_evaluate(tiny(), tmp_path, progress=False, stop_after=30)
    assert ckpt_lib.Checkpointer(tmp_path / "checkpoints").latest_step() == 20
    resumed = loop.train_and_evaluate(tiny(), tmp_path, progress=False)
    assert resumed == pytest.approx(final, rel=1e-5, abs=1e-6)
    a = [r for r in read_metrics(workdir) if "train/loss" in r]
    b = [r for r in read_metrics(tmp_path) if "train/loss" in r]
    assert [r["step"] for r in a] == [r["step"] for r in b]
    np.testing.assert_allclose([r["train/loss"] for r in a], [r["train/loss"] for r in b],
                               rtol=1e-5)


def test_incompatible_workdir_is_refused(trained):
    workdir, _ = trained
    with pytest.raises(ckpt_lib.CheckpointError, match="model.num_keypoints"):
        loop.train_and_evaluate(tiny("--config.model.num_keypoints=5"), workdir,
                                progress=False)


def test_bad_config_values():
    with pytest.raises(configs.ConfigError, match="train.bacth_size"):
        tiny("--config.train.bacth_size=3")
    with pytest.raises(ValueError, match="batch_size"):
        loop.Experiment(tiny("--config.train.batch_size=1"))
    with pytest.raises(ValueError, match="loss.name"):
        loop.Experiment(tiny("--config.loss.name=nope"))
    with pytest.raises(ValueError, match="wall_slide_rate must be <= 1"):
        loop.Experiment(tiny("--config.data.wall_slide_rate=0.5"))
    with pytest.raises(ValueError, match="num_predictors must be an integer >= 1"):
        loop.Experiment(tiny("--config.model.num_predictors=0"))


def test_nan_guard_names_step_and_metric(tmp_path):
    with pytest.raises(loop.TrainingError, match=r"non-finite .* at step 10"):
        loop.train_and_evaluate(tiny("--config.train.learning_rate=1e30",
                                     "--config.train.grad_clip=1e30"), tmp_path,
                                progress=False)


def test_collapse_guard(tmp_path):
    with pytest.raises(loop.TrainingError, match="representation collapse at step 10"):
        loop.train_and_evaluate(tiny("--config.train.collapse_std_threshold=1e6"), tmp_path,
                                progress=False)
