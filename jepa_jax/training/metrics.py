"""Metric logging without TensorFlow: TensorBoard event files + a JSON-lines file, and a tqdm bar.

`MetricsWriter` writes every logged step twice:

* `workdir/tensorboard/events.out.tfevents.*`: TensorBoard event records, built from
  tensorboard's protobufs and its `RecordWriter` on a plain Python file. (`flax.metrics`,
  CLU and even tensorboard's `EventFileWriter` go through `tensorboard.compat.tf`, which
  imports TensorFlow whenever it is installed.)
* `workdir/metrics.jsonl`: one `{"step": int, name: float, ...}` object per `write_scalars`
  call; non-finite values are written as the strings "nan", "inf", "-inf" (JSON has no such
  numbers) and turned back into floats by `read_metrics`.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from tqdm import tqdm

__all__ = ["MetricsWriter", "ProgressBar", "read_metrics"]

logger = logging.getLogger(__name__)

_JSONL = "metrics.jsonl"
_TB_DIR = "tensorboard"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# Orders event files created by one process within the same second.
_file_counter = itertools.count()


def _to_float(name: str, value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {name!r} must be a scalar, got shape {array.shape}")
    return float(array.reshape(()))


def _json_value(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _parse_line(line: str) -> dict | None:
    """One metrics.jsonl record, or None for a malformed (e.g. crash-truncated) line."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return {k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All records of `workdir/metrics.jsonl` in file order (malformed lines are skipped)."""
    path = Path(workdir) / _JSONL
    if not path.exists():
        return []
    with path.open() as f:
        return [r for r in map(_parse_line, f) if r is not None]


def _ends_with_newline(path: Path) -> bool:
    """True for an empty file or one whose last byte is a newline."""
    with path.open("rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _truncate_jsonl(path: Path, resume_step: int) -> None:
    """Keeps records with step <= resume_step; rewrites atomically (tmp + os.replace)."""
    if not path.exists():
        return
    kept, dropped = [], 0
    with path.open() as f:
        for line in f:
            record = _parse_line(line)
            if record is not None and record["step"] <= resume_step:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if not dropped:
        return
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
    logger.info("dropped %d metrics records after step %d from %s", dropped, resume_step, path)


def _encode_png(image: Any) -> tuple[bytes, int, int, int]:
    """PNG bytes, height, width, channels of an HW/HWC uint8 or [0, 1] float image."""
    from PIL import Image  # Imported lazily: only needed for image summaries.

    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be HW or HWC with C in (1, 3, 4), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    height, width, channels = array.shape
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode).save(buffer, "PNG")
    return buffer.getvalue(), height, width, channels


class MetricsWriter:
    """Writes scalars/images to TensorBoard event files and scalars to metrics.jsonl.

    Args:
        workdir: run directory; events go to `workdir/tensorboard/`, scalars also to
            `workdir/metrics.jsonl`.
        resume_step: step of the checkpoint the run resumes from. Records after it are
            dropped from metrics.jsonl (the steps are replayed), and TensorBoard is told to
            discard its points after it too (a `SessionLog.START` event, which TensorBoard
            honours by purging later steps of earlier event files).
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int | None = None):
        self.workdir = Path(workdir)
        tb_dir = self.workdir / _TB_DIR
        tb_dir.mkdir(parents=True, exist_ok=True)
        jsonl = self.workdir / _JSONL
        if resume_step is not None:
            _truncate_jsonl(jsonl, int(resume_step))
        self._jsonl = jsonl.open("a")
        if not _ends_with_newline(jsonl):
            self._jsonl.write("\n")  # a crash cut the last line: keep new records parseable

        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{next(_file_counter)}"
        )
        self._events = RecordWriter(open(tb_dir / name, "wb"))  # closed in close()
        self._write_event(event_pb2.Event(file_version="brain.Event:2"))
        if resume_step is not None:
            self._write_event(
                event_pb2.Event(
                    step=int(resume_step) + 1,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                )
            )
        self.flush()

    def _write_event(self, event: event_pb2.Event) -> None:
        if not event.wall_time:
            event.wall_time = time.time()
        self._events.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs `scalars` (floats, numpy or jax scalars) at `step`."""
        step = int(step)
        host = jax.device_get(dict(scalars))  # one transfer for all device values
        values = {name: _to_float(name, value) for name, value in host.items()}
        record = {"step": step, **{k: _json_value(v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()]
        )
        self._write_event(event_pb2.Event(step=step, summary=summary))

    def write_image(self, step: int, name: str, image: Any) -> None:
        """Logs an HW/HWC image (uint8, or float in [0, 1]; C in 1, 3, 4) as a PNG."""
        png, height, width, channels = _encode_png(jax.device_get(image))
        tb_image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, image=tb_image)])
        self._write_event(event_pb2.Event(step=int(step), summary=summary))

    def flush(self) -> None:
        """Pushes buffered records to the OS (readers see them afterwards)."""
        self._jsonl.flush()
        self._events.flush()

    def close(self) -> None:
        """Flushes and closes both files (idempotent)."""
        if self._jsonl.closed:
            return
        self.flush()
        self._jsonl.close()
        self._events.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NullWriter:
    """A ``MetricsWriter`` that writes nothing (processes other than 0 of a multi-process
    run: process 0 alone logs)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        del step, scalars

    def write_image(self, step: int, name: str, image: Any) -> None:
        del step, name, image

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressBar:
    """tqdm bar over training steps showing steps/s, ETA and a few metrics.

    When the output is not a terminal (logs redirected to a file) the bar refreshes at most
    every `non_tty_interval` seconds instead of ~10 times a second, so logs stay readable.

    Args:
        total: last step (the bar's 100%); None for an open-ended bar without ETA.
        initial: step the run starts (or resumes) from.
        enabled: False makes every method a no-op (e.g. on non-zero processes).
        desc: label in front of the bar.
        max_metrics: how many metrics (first in dict order) to show in the postfix.
        file: stream to write to (default: stderr, like tqdm).
    """

    def __init__(
        self,
        total: int | None,
        initial: int = 0,
        *,
        enabled: bool = True,
        desc: str | None = None,
        max_metrics: int = 4,
        file: Any = None,
        non_tty_interval: float = 10.0,
    ):
        file = sys.stderr if file is None else file
        # Jupyter's streams are no TTYs but redraw in place, so they count as interactive.
        in_notebook = "ipykernel" in sys.modules and file in (sys.stderr, sys.stdout)
        is_tty = in_notebook or bool(getattr(file, "isatty", lambda: False)())
        interval = 0.1 if is_tty else non_tty_interval
        self.enabled = enabled
        self._max_metrics = max_metrics
        self._last_postfix = -math.inf
        self._pending: Mapping[str, Any] | None = None
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="step",
            file=file,
            disable=not enabled,
            dynamic_ncols=is_tty,
            mininterval=interval,
            maxinterval=max(interval, 10.0),
            smoothing=0.05,
        )

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Moves the bar to `step`, showing `metrics` in the postfix.

        Metrics are converted (a device sync for jax arrays) only when the bar can actually
        redraw, i.e. at most once per refresh interval, so calling this every step is cheap.
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if metrics and now - self._last_postfix >= self._bar.mininterval:
            self._last_postfix = now
            self._set_postfix(metrics)
            self._pending = None
        elif metrics:
            self._pending = metrics  # shown by close() if no later redraw picks them up
        delta = int(step) - self._bar.n
        if delta:
            self._bar.update(delta)

    def _set_postfix(self, metrics: Mapping[str, Any]) -> None:
        shown = dict(list(metrics.items())[: self._max_metrics])
        postfix = {k: f"{_to_float(k, v):.4g}" for k, v in jax.device_get(shown).items()}
        # refresh=False: redraws happen in update() at tqdm's own pace, not on every call.
        self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        """Draws the final state (with the latest metrics) and releases the bar."""
        if self.enabled and self._pending:
            self._set_postfix(self._pending)
            self._pending = None
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
