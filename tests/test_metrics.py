"""Tests for jepa_jax.training.metrics."""

import io
import json
import math
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.training.metrics import MetricsWriter, ProgressBar, read_metrics


def _accumulator(workdir):
    # Imported here: the writer itself must work (and be checked) without it.
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(workdir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    acc.Reload()
    return acc


def test_jsonl_and_tensorboard_round_trip(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": jnp.float32(0.5), "lr": np.array(1e-3)})
        writer.write_scalars(2, {"loss": 0.25, "bad": float("nan"), "big": math.inf})
        writer.write_image(2, "recon", np.linspace(0, 1, 4 * 5 * 3).reshape(4, 5, 3))
    assert "tensorflow" not in sys.modules

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines][1] == {
        "step": 2,
        "loss": 0.25,
        "bad": "nan",
        "big": "inf",
    }
    records = read_metrics(tmp_path)
    assert records[0] == {"step": 1, "loss": 0.5, "lr": pytest.approx(1e-3)}
    assert math.isnan(records[1]["bad"]) and records[1]["big"] == math.inf

    acc = _accumulator(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)
    (image,) = acc.Images("recon")
    assert (image.step, image.width, image.height) == (2, 5, 4)
    assert image.encoded_image_string.startswith(b"\x89PNG")


def test_rejects_non_scalar(tmp_path):
    with MetricsWriter(tmp_path) as writer, pytest.raises(ValueError, match="'v' must be a"):
        writer.write_scalars(0, {"v": np.zeros(3)})


def test_resume_drops_replayed_steps(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": float(step)})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "lo')  # crash mid-line
    with MetricsWriter(tmp_path, resume_step=3) as writer:
        for step in (4, 5):
            writer.write_scalars(step, {"loss": 10.0 * step})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
        (5, 50.0),
    ]
    assert not list(tmp_path.glob("metrics.jsonl.tmp*"))
    # TensorBoard purges the stale steps 4, 5 of the first event file.
    scalars = [(e.step, e.value) for e in _accumulator(tmp_path).Scalars("loss")]
    assert scalars == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_progress_bar(tmp_path):
    out = io.StringIO()  # not a TTY: long refresh interval
    bar = ProgressBar(total=10, initial=2, file=out, desc="train")
    assert bar._bar.mininterval >= 10
    for step in range(3, 11):
        bar.update(step, {"loss": jnp.float32(step), "acc": 0.5, "x": 1, "y": 2, "z": 3})
    bar.close()
    text = out.getvalue()
    assert "10/10" in text and "loss=10" in text  # close() shows the latest metrics
    assert "z=" not in text  # only max_metrics=4 shown
    assert text.count("\r") <= 3  # no per-step redraws

    quiet = ProgressBar(total=5, enabled=False, file=out)
    quiet.update(3, {"loss": 1.0})
    quiet.close()
