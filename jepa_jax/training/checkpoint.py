"""Train-state checkpointing over orbax, plus run-config bookkeeping for a workdir.

`Checkpointer` wraps `orbax.checkpoint.CheckpointManager` (one `StandardSave` item per step)
and adds what a resumable training loop needs on top of it:

* restore into the structure/shapes/dtypes of an abstract state (from `jax.eval_shape`), with a
  clean one-line `CheckpointError` when the stored tree does not match the model;
* fall back to the next older checkpoint when the latest one is corrupt or half-written (the
  bad newer steps are renamed to `<step>.corrupt-<ns>`, never deleted, so saving can go on);
* atomic saves: orbax writes each step into a `<step>.orbax-checkpoint-tmp-*` directory and
  renames it when complete, so a SIGKILL mid-save leaves the older checkpoints intact; stale
  tmp directories are removed on construction;
* any layout: restore places arrays as the abstract state's shardings say, whatever mesh
  saved them (saved on 4 devices, restored on 1, and back). In a multi-process run every
  process calls `save` and `restore` on a directory they all see; orbax coordinates them.

Typed PRNG keys (`jax.random.key`) need no special handling: orbax 0.12 stores their uint32
key data and rewraps them on restore when the abstract leaf has a key dtype.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "check_config_compatible",
    "load_config",
    "save_config",
]

logger = logging.getLogger(__name__)

# Written by orbax (0.12) inside a step directory just before the atomic rename.
_COMMIT_MARKER = "commit_success.txt"
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
_CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint (or a workdir's stored config) cannot be used; the message is one line."""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}")


def _key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / GetAttrKey / SequenceKey, FlattenedIndexKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flatten_with_paths(tree: Any) -> dict[str, Any]:
    """Maps 'a/b/0/c' leaf paths to leaves.

    Orbax's metadata tree turns dataclass fields and namedtuple fields into dict keys and
    sequences into lists, so stringifying every key kind the same way makes the abstract state
    and the stored metadata comparable path by path.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_str(k) for k in path): leaf for path, leaf in leaves}


def _is_key_dtype(dtype: Any) -> bool:
    try:
        return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    except TypeError:
        return False


def _stored_shape(leaf: Any) -> tuple[int, ...]:
    """Shape the leaf has on disk (typed keys are stored as their key data)."""
    if _is_key_dtype(leaf.dtype):
        return tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
    return tuple(leaf.shape)


def _as_abstract(tree: Any) -> Any:
    """ShapeDtypeStructs with a concrete sharding on the default device.

    Without a sharding orbax would reuse the one recorded at save time, which breaks restoring
    a GPU-saved checkpoint on a CPU-only machine.
    """
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def convert(leaf: Any) -> Any:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            return leaf
        sharding = getattr(leaf, "sharding", None) or device
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    return jax.tree.map(convert, tree)


class Checkpointer:
    """Saves/restores a train-state pytree under `directory/<step>/` with orbax.

    Args:
        directory: checkpoint root (created if missing).
        max_to_keep: number of most recent checkpoints kept; older ones are deleted only after
            a newer save has been committed.
        save_interval_steps: `save` is a no-op unless `step % save_interval_steps == 0` (or
            `force=True`).
        async_save: write in a background thread (call `wait()` before reading the files).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        max_to_keep: int = 3,
        save_interval_steps: int = 1,
        *,
        async_save: bool = True,
    ):
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_tmp_dirs()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
            create=True,
            enable_async_checkpointing=async_save,
        )
        # Registering the handler up front lets `item_metadata` work before any save/restore.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def _remove_tmp_dirs(self) -> None:
        """Deletes `<step>.orbax-checkpoint-tmp-*` dirs left behind by a save killed mid-way.

        Done synchronously here: orbax's own `cleanup_tmp_directories` runs in the background.
        Assumes no other run is saving into this directory at the same time; in a
        multi-process run process 0 alone removes them.
        """
        if jax.process_index() != 0:
            return
        for path in self.directory.glob(f"*{_TMP_SUFFIX}*"):
            logger.warning("removing incomplete checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)

    # ----------------------------------------------------------------------------- queries

    def _is_committed(self, step: int) -> bool:
        return (self.directory / str(step) / _COMMIT_MARKER).is_file()

    def all_steps(self) -> list[int]:
        """Committed steps on disk, ascending (an in-flight async save is not listed)."""
        return sorted(s for s in self._manager.all_steps() if self._is_committed(s))

    def latest_step(self) -> int | None:
        """Newest committed step, or None. Its files may still turn out corrupt on restore."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------------------ saving

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves `state` at `step`; returns whether a save was started.

        Skipped (False) when `step` is off the save interval (unless `force`), or not newer than
        the latest checkpoint (e.g. the final save right after a resume at that step).
        """
        step = int(step)
        if step in self._manager.all_steps():
            return False
        return bool(self._manager.save(step, args=ocp.args.StandardSave(state), force=force))

    def wait(self) -> None:
        """Blocks until any asynchronous save has been committed to disk."""
        self._manager.wait_until_finished()

    # ---------------------------------------------------------------------------- restoring

    def _check_matches(self, step: int, metadata: Any, abstract: Any) -> None:
        stored = _flatten_with_paths(metadata)
        expected = _flatten_with_paths(abstract)
        where = f"checkpoint in {self.directory} (step {step}) does not match the model"
        for path in expected:
            if path not in stored:
                raise CheckpointError(f"{where}: {path} is missing from the checkpoint")
        for path in stored:
            if path not in expected:
                raise CheckpointError(f"{where}: the checkpoint has {path}, the model does not")
        for path, leaf in expected.items():
            if not hasattr(leaf, "shape"):
                continue
            want = _stored_shape(leaf)
            have = tuple(getattr(stored[path], "shape", None) or ())
            if have != want:
                raise CheckpointError(
                    f"{where}: {path} has shape {have}, the config expects {want}"
                )

    def _restore_step(self, step: int, tree: Any, abstract: Any) -> Any:
        """Restores ``step`` into ``abstract``. A dataclass field that is None in ``abstract``
        and absent from the stored ``tree`` (a field added since, e.g. ``TrainState.online``)
        is left None: orbax would otherwise refuse the tree structure."""
        absent = []
        if dataclasses.is_dataclass(abstract) and isinstance(tree, dict):
            absent = [f.name for f in dataclasses.fields(abstract)
                      if getattr(abstract, f.name) is None and f.name not in tree]
        if not absent:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        target = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
                  if f.name not in absent}
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return abstract.replace(**restored)

    def _read_metadata(self, step: int) -> Any:
        """The stored tree of step metadata; raises on a missing/unreadable checkpoint."""
        if not self._is_committed(step):
            raise FileNotFoundError(f"no {_COMMIT_MARKER} (half-written save)")
        metadata = self._manager.item_metadata(step)
        tree = getattr(metadata, "tree", None)
        if tree is None:
            raise ValueError("no readable tree metadata")
        return tree

    def _quarantine(self, steps: Sequence[int]) -> None:
        """Renames corrupt step dirs aside (never deletes them).

        Orbax would otherwise keep treating them as the latest steps and refuse to save any
        step up to theirs after the resume.
        """
        for step in steps if jax.process_index() == 0 else ():
            src = self.directory / str(step)
            if src.exists():
                dst = self.directory / f"{step}.corrupt-{time.time_ns()}"
                os.replace(src, dst)
                logger.warning("moved corrupt checkpoint %s aside to %s", src, dst.name)
        if jax.process_count() > 1:  # the others wait for process 0's renames
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoint quarantine")
        self._manager.reload()

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
        """Restores the latest (or the given) step into the structure of `abstract_state`.

        `abstract_state` is typically `jax.eval_shape(init_fn, ...)`; arrays come back with its
        dtypes on the default device. When the latest checkpoint is unreadable, falls back to
        older ones (logging a warning per bad step); newer bad steps are then renamed to
        `<step>.corrupt-<ns>` so that later saves are not blocked. An explicit `step` is not
        substituted.

        Returns:
            `(step, state)` of the checkpoint actually restored.

        Raises:
            CheckpointError: no checkpoint, no readable checkpoint, or the stored tree does not
                match `abstract_state` (missing/extra leaf or shape mismatch).
        """
        self.wait()
        self._manager.reload()
        on_disk = sorted(self._manager.all_steps(), reverse=True)
        if step is not None:
            if int(step) not in on_disk:
                raise CheckpointError(
                    f"no checkpoint for step {step} in {self.directory} "
                    f"(available: {sorted(on_disk) or 'none'})"
                )
            candidates = [int(step)]
        else:
            candidates = on_disk
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")

        abstract = _as_abstract(abstract_state)
        failures: list[tuple[int, str]] = []
        for candidate in candidates:
            try:
                tree = self._read_metadata(candidate)
            except Exception as exc:  # any read failure means "corrupt"
                failures.append((candidate, _describe(exc)))
                logger.warning(
                    "checkpoint step %d in %s is unreadable (%s); trying an older one",
                    candidate,
                    self.directory,
                    failures[-1][1],
                )
                continue
            # A mismatch is a model/config problem, not corruption: older steps won't fit either.
            self._check_matches(candidate, tree, abstract)
            try:
                state = self._restore_step(candidate, tree, abstract)
            except Exception as exc:
                failures.append((candidate, _describe(exc)))
                logger.warning(
                    "checkpoint step %d in %s failed to restore (%s); trying an older one",
                    candidate,
                    self.directory,
                    failures[-1][1],
                )
                continue
            if failures:
                self._quarantine([s for s, _ in failures if s > candidate])
            return candidate, state

        first_step, reason = failures[0]
        more = len(failures) - 1
        tail = f"; {more} older checkpoint(s) also unreadable" if more else ""
        raise CheckpointError(
            f"no readable checkpoint in {self.directory}: step {first_step} is corrupt "
            f"({reason}){tail}"
        )

    # ---------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ run config


def _config_to_jsonable(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict:
    # Round-trip through JSON so tuples become lists etc. and both sides compare equal.
    if isinstance(config, ml_collections.ConfigDict):
        text = config.to_json_best_effort(sort_keys=True)
    else:
        text = json.dumps(config, sort_keys=True, default=str)
    return json.loads(text)


def save_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> Path:
    """Writes the resolved `config` to `workdir/config.json` (atomically); returns the path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / _CONFIG_FILE
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_config_to_jsonable(config), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _read_config_json(workdir: Path) -> dict | None:
    path = workdir / _CONFIG_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"workdir {workdir} has an unreadable {_CONFIG_FILE} ({_describe(exc)})"
        ) from None


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """Reads `workdir/config.json` back (JSON types: tuples come back as lists)."""
    workdir = Path(workdir)
    data = _read_config_json(workdir)
    if data is None:
        raise CheckpointError(f"no {_CONFIG_FILE} in workdir {workdir}")
    return ml_collections.ConfigDict(data)


_ABSENT = object()


def _first_difference(
    there: Any, here: Any, prefix: str, ignore: Sequence[str] = ()
) -> tuple[str, Any, Any] | None:
    if prefix in ignore:
        return None
    if isinstance(there, dict) and isinstance(here, dict):
        for key in sorted(set(there) | set(here)):
            diff = _first_difference(
                there.get(key, _ABSENT), here.get(key, _ABSENT), f"{prefix}.{key}", ignore
            )
            if diff:
                return diff
        return None
    return None if there == here else (prefix, there, here)


def _fmt(value: Any) -> str:
    return "absent" if value is _ABSENT else _one_line(json.dumps(value), 80)


def check_config_compatible(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    keys: Sequence[str] = ("model", "env"),
    ignore: Sequence[str] = (),
) -> None:
    """Raises `CheckpointError` if `workdir/config.json` differs from `config` in `keys`.

    Only the listed top-level sections are compared (e.g. training length or logging may
    change on resume, the model may not), less the dotted paths in `ignore` (settings that
    leave the parameters' meaning unchanged, e.g. `model.compute_dtype`; they may also be
    absent from older runs). A workdir without config.json passes.
    """
    workdir = Path(workdir)
    stored = _read_config_json(workdir)
    if stored is None:
        return
    current = _config_to_jsonable(config)
    for key in keys:
        diff = _first_difference(
            stored.get(key, _ABSENT), current.get(key, _ABSENT), key, tuple(ignore)
        )
        if diff:
            path, there, here = diff
            raise CheckpointError(
                f"workdir {workdir} holds a run with a different config: {path} is "
                f"{_fmt(there)} there, {_fmt(here)} here (use a new --workdir)"
            )
