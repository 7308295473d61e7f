"""Tests for jepa_jax.training.checkpoint (tiny trees, synchronous saves unless noted)."""

import logging
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jepa_jax.training.checkpoint import (
    Checkpointer,
    CheckpointError,
    check_config_compatible,
    load_config,
    save_config,
)


def _state(w_shape=(4, 3), seed=0):
    return {
        "params": {"w": jnp.arange(np.prod(w_shape), dtype=jnp.float32).reshape(w_shape)},
        "step": 7,
        "rng": jax.random.key(seed),
    }


def _abstract(w_shape=(4, 3)):
    return jax.eval_shape(lambda: _state(w_shape))


def _filled(tmp_path, steps=(1, 2), **kwargs):
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False, **kwargs)
    for s in steps:
        assert ckpt.save(s, _state(seed=s))
    return ckpt


def test_round_trip_with_typed_key(tmp_path):
    ckpt = _filled(tmp_path, steps=(5,))
    assert ckpt.latest_step() == 5
    step, restored = ckpt.restore(_abstract())
    assert step == 5
    np.testing.assert_array_equal(restored["params"]["w"], _state()["params"]["w"])
    assert int(restored["step"]) == 7
    assert jax.dtypes.issubdtype(restored["rng"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(
        jax.random.key_data(restored["rng"]), jax.random.key_data(jax.random.key(5))
    )
    ckpt.close()


def test_async_save_and_reopen(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    assert ckpt.save(3, _state())
    ckpt.wait()
    ckpt.close()
    reopened = Checkpointer(tmp_path / "ckpt")
    assert reopened.all_steps() == [3]
    assert reopened.restore(_abstract(), step=3)[0] == 3
    reopened.close()


def test_keep_last_n_and_interval(tmp_path):
    ckpt = _filled(tmp_path, steps=(2, 4, 6, 8), max_to_keep=2, save_interval_steps=2)
    assert ckpt.all_steps() == [6, 8]
    assert not ckpt.save(9, _state())  # off the interval
    assert not ckpt.save(8, _state(), force=True)  # already saved
    ckpt.close()


def test_corrupt_latest_falls_back_with_warning(tmp_path, caplog):
    ckpt = _filled(tmp_path, steps=(1, 2))
    (ckpt.directory / "2" / "default" / "_METADATA").write_text('{"trunc')
    with caplog.at_level(logging.WARNING, logger="jepa_jax.training.checkpoint"):
        step, restored = ckpt.restore(_abstract())
    assert step == 1
    np.testing.assert_array_equal(
        jax.random.key_data(restored["rng"]), jax.random.key_data(jax.random.key(1))
    )
    assert any("step 2" in r.getMessage() for r in caplog.records)
    # The bad step is moved aside (not deleted) so that training can save step 2 again.
    assert ckpt.all_steps() == [1]
    assert list(ckpt.directory.glob("2.corrupt-*"))
    assert ckpt.save(2, _state())
    ckpt.close()


def test_half_written_and_tmp_dirs_are_ignored(tmp_path):
    ckpt = _filled(tmp_path, steps=(1,))
    ckpt.close()
    # A step dir without orbax's commit marker, and a tmp dir left by a killed save.
    shutil.copytree(ckpt.directory / "1", ckpt.directory / "2")
    (ckpt.directory / "2" / "commit_success.txt").unlink()
    shutil.copytree(ckpt.directory / "1", ckpt.directory / "3.orbax-checkpoint-tmp-123")
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False)
    assert not (ckpt.directory / "3.orbax-checkpoint-tmp-123").exists()
    assert ckpt.latest_step() == 1
    assert ckpt.restore(_abstract())[0] == 1
    ckpt.close()


# A failed tensorstore read can complete after orbax closed its event loop: harmless noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_all_corrupt_raises_one_line(tmp_path):
    ckpt = _filled(tmp_path, steps=(10, 20))
    (ckpt.directory / "10" / "default" / "_METADATA").write_text("")
    # Step 20's metadata reads fine but its array data is truncated: fails during restore.
    for f in (ckpt.directory / "20" / "default").rglob("d/*"):
        f.write_bytes(f.read_bytes()[:4])
    with pytest.raises(CheckpointError) as err:
        ckpt.restore(_abstract())
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"no readable checkpoint in {ckpt.directory}: step 20 is corrupt (")
    assert "1 older checkpoint(s) also unreadable" in msg
    assert (ckpt.directory / "10").exists() and (ckpt.directory / "20").exists()
    ckpt.close()


def test_empty_dir_raises(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False)
    assert ckpt.latest_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        ckpt.restore(_abstract())
    ckpt.close()


def test_shape_and_structure_mismatch(tmp_path):
    ckpt = _filled(tmp_path, steps=(1,))
    with pytest.raises(CheckpointError) as err:
        ckpt.restore(_abstract(w_shape=(4, 5)))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"checkpoint in {ckpt.directory} (step 1) does not match the model: "
        "params/w has shape (4, 3), the config expects (4, 5)"
    )
    extra = dict(_abstract(), other=jax.ShapeDtypeStruct((2,), jnp.float32))
    with pytest.raises(CheckpointError, match="other is missing from the checkpoint"):
        ckpt.restore(extra)
    fewer = {k: v for k, v in _abstract().items() if k != "rng"}
    with pytest.raises(CheckpointError, match="the checkpoint has rng, the model does not"):
        ckpt.restore(fewer)
    ckpt.close()


def _config(latent_dim=32):
    cfg = ml_collections.ConfigDict()
    cfg.model = ml_collections.ConfigDict({"latent_dim": latent_dim, "widths": (8, 8)})
    cfg.env = ml_collections.ConfigDict({"name": "pointmass"})
    cfg.train = ml_collections.ConfigDict({"steps": 10})
    return cfg


def test_config_save_load_and_compat(tmp_path):
    check_config_compatible(tmp_path, _config())  # nothing stored yet: passes
    save_config(tmp_path, _config())
    assert load_config(tmp_path).model.latent_dim == 32
    other_train = _config()
    other_train.train.steps = 99  # not a compared section
    check_config_compatible(tmp_path, other_train)
    with pytest.raises(CheckpointError) as err:
        check_config_compatible(tmp_path, _config(latent_dim=64))
    assert str(err.value) == (
        f"workdir {tmp_path} holds a run with a different config: "
        "model.latent_dim is 32 there, 64 here (use a new --workdir)"
    )


def test_restore_leaves_a_newer_none_field_none(tmp_path):
    # A checkpoint written before a dataclass field was added (e.g. TrainState.online, None
    # when unused) restores into the newer dataclass with that field left None.
    from flax import struct

    @struct.dataclass
    class Old:
        params: dict
        step: int

    @struct.dataclass
    class New:
        params: dict
        step: int
        online: object = None

    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False)
    w = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    assert ckpt.save(1, Old(params={"w": w}, step=jnp.int32(3)))
    step, restored = ckpt.restore(jax.eval_shape(lambda: New(params={"w": w},
                                                             step=jnp.int32(3))))
    assert step == 1 and isinstance(restored, New) and restored.online is None
    np.testing.assert_array_equal(restored.params["w"], w)
    assert int(restored.step) == 3
    ckpt.close()
