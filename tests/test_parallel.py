"""Scaling: meshes and shardings, 1 vs 4 devices, portable checkpoints, sharded planning,
two processes, and the one-line errors.

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX
starts, so those checks run in one subprocess (a module fixture: one JAX start-up and one
set of compilations for all of them) and report JSON that the tests below inspect.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from jepa_jax import configs, parallel

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "two_rooms.py")
CACHE = os.environ.get("JEPA_JAX_CACHE", str(Path.home() / ".cache" / "jepa_jax" / "xla-tests"))


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JEPA_JAX_CACHE=CACHE,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={devices}").strip()
    return env


_PRELUDE = """
import json, os, sys, traceback
import jax
jax.config.update("jax_compilation_cache_dir", os.environ["JEPA_JAX_CACHE"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
"""


# ---------------------------------------------------------------- in-process, one device


def _pcfg(**kw):
    return parallel.parallel_config(ml_collections.ConfigDict({"parallel": kw}))


class TestConfig:
    def test_experiment_section_matches_defaults(self):
        config = configs.load_config(CONFIG)
        assert parallel.parallel_config(config).to_dict() == _pcfg().to_dict()
        assert dict(config.parallel) == {k: v for k, v in parallel.DEFAULTS.items()}

    def test_older_configs_without_section_get_defaults(self):
        cfg = parallel.parallel_config(ml_collections.ConfigDict({"seed": 0}))
        assert cfg.mesh_shape == (-1,) and cfg.data_axis == "data" and not cfg.fsdp


class TestMesh:
    def test_resolve(self):
        assert parallel.resolve_mesh_shape((-1,), 4) == (4,)
        assert parallel.resolve_mesh_shape((2, -1), 8) == (2, 4)
        assert parallel.resolve_mesh_shape((1,), 1) == (1,)

    @pytest.mark.parametrize("shape, devices, match", [
        ((3,), 4, r"needs 3 devices, but 4 are in use"),
        ((3, -1), 4, r"4 is not a multiple of 3"),
        ((-1, -1), 4, "at most one -1"),
        ((0,), 4, "positive sizes"),
    ])
    def test_resolve_errors(self, shape, devices, match):
        with pytest.raises(ValueError, match=match) as err:
            parallel.resolve_mesh_shape(shape, devices)
        assert "\n" not in str(err.value)

    def test_one_device_mesh(self):
        mesh = parallel.make_mesh(_pcfg())
        assert mesh.shape == {"data": jax.device_count()}
        parallel.check_divisible(16, mesh, "data", "train.batch_size")

    def test_make_mesh_errors(self):
        with pytest.raises(ValueError, match="data_axis 'batch' is not one of"):
            parallel.make_mesh(_pcfg(data_axis="batch"))
        with pytest.raises(ValueError, match="must name each"):
            parallel.make_mesh(_pcfg(mesh_shape=(1, 1)))
        with pytest.raises(ValueError, match="num_devices=99"):
            parallel.make_mesh(_pcfg(num_devices=99))
        with pytest.raises(ValueError, match=r"needs 2 devices, but 1 are in use"):
            parallel.make_mesh(_pcfg(mesh_shape=(2,)), devices=jax.devices()[:1])


class TestFsdpSpec:
    def test_largest_divisible_dimension(self):
        P = jax.sharding.PartitionSpec
        assert parallel.fsdp_spec((64, 128), "data", 4, 1) == P(None, "data")
        assert parallel.fsdp_spec((128, 6), "data", 4, 1) == P("data", None)
        assert parallel.fsdp_spec((6, 10), "data", 4, 1) == P()  # nothing divides
        assert parallel.fsdp_spec((64, 128), "data", 4, 10**6) == P()  # small leaf
        assert parallel.fsdp_spec((), "data", 4, 0) == P()


class TestDistributedArgs:
    def test_single_process_by_default(self, monkeypatch):
        for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            monkeypatch.delenv(name, raising=False)
        assert parallel.initialize(_pcfg()) is False

    def test_incomplete_settings(self, monkeypatch):
        for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ValueError, match="needs parallel.process_id"):
            parallel.initialize(_pcfg(coordinator_address="127.0.0.1:1", num_processes=2))
        with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
            parallel.initialize(_pcfg(coordinator_address="127.0.0.1:1", num_processes=2,
                                      process_id=2))
        with pytest.raises(ValueError, match="HOST:PORT"):
            parallel.initialize(_pcfg(coordinator_address="nohost", num_processes=2,
                                      process_id=1))

    def test_environment_variables(self, monkeypatch):
        monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
        monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
        monkeypatch.setenv("JAX_PROCESS_ID", "3")
        assert parallel._distributed_args(_pcfg()) == ("10.0.0.1:1234", 4, 3)

    def test_unreachable_coordinator_is_one_line_error(self):
        port = _free_port()  # nothing listens there
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=f"cannot reach the coordinator at "
                                               f"127.0.0.1:{port} within 1 s") as err:
            parallel.initialize(_pcfg(coordinator_address=f"127.0.0.1:{port}",
                                      num_processes=2, process_id=1,
                                      initialization_timeout=1))
        assert time.monotonic() - t0 < 10
        assert "\n" not in str(err.value)


def test_gpu_preset_builds_and_steps():
    """The one-GPU preset at 128 px, shrunk in data and batch only, runs two steps."""
    from jepa_jax.training import loop

    config = configs.load_config(CONFIG + ":gpu", [
        "--config.data.num_trajectories=16", "--config.train.batch_size=4",
        "--config.train.predictor_batch_size=4"])
    exp = loop.Experiment(config)
    assert exp.env.img_size == 128 and exp.wm.obs_shape == (128, 128, 2)
    state = exp.init_state()
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {np.dtype("float32")}
    for _ in range(2):
        state, aux = exp.update(state, exp.data)
    assert int(state.step) == 2 and np.isfinite(float(aux["loss"]))


# ------------------------------------------------------------------ four fake CPU devices

_FOUR_DEVICES = _PRELUDE + textwrap.dedent('''
    import tempfile
    import time
    import ml_collections
    import numpy as np
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jepa_jax import configs, losses, parallel
    from jepa_jax.training import checkpoint as ckpt_lib, loop
    from jepa_jax.training.metrics import read_metrics

    CONFIG = sys.argv[1]
    assert jax.device_count() == 4, jax.devices()
    out = {}

    def section(fn):
        t0 = time.time()
        try:
            out[fn.__name__] = fn()
        except Exception as exc:
            out[fn.__name__] = {"error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()[-3000:]}
        print(f"{fn.__name__}: {time.time() - t0:.1f} s", file=sys.stderr)
        return fn

    def tiny(*overrides):
        return configs.load_config(CONFIG + ":tiny", [
            "--config.data.num_trajectories=64", "--config.train.num_steps=30",
            "--config.train.log_every=5", "--config.train.predictor_steps=10",
            "--config.train.checkpoint_every=10", *overrides])

    @section
    def losses_1_vs_4():
        rng = np.random.default_rng(0)
        pred = rng.normal(size=(16, 5, 8)).astype(np.float32)
        emb = rng.normal(size=(16, 6, 8)).astype(np.float32) * 0.7
        key = jax.random.key(1)

        def terms(p, e):
            vic, vic_aux = losses.jepa_multistep_loss(p, e, regularizer="vicreg")
            sig, _ = losses.jepa_multistep_loss(p, e, regularizer="sigreg", sigreg_key=key,
                                                num_projections=32)
            plain, _ = losses.vicreg(e[:, 0], e[:, 1])
            return [vic, vic_aux["variance"], vic_aux["covariance"], sig, plain]

        res = {}
        for n in (1, 4):
            mesh = parallel.make_mesh(parallel.parallel_config(ml_collections.ConfigDict(
                {"parallel": {"num_devices": n}})))
            split = NamedSharding(mesh, P("data"))
            p, e = jax.device_put((pred, emb), split)
            assert len(p.addressable_shards) == n
            res[n] = [float(v) for v in jax.jit(terms)(p, e)]
        return res

    def train(name, *overrides):
        workdir = tempfile.mkdtemp(prefix=name)
        final = loop.train_and_evaluate(tiny(*overrides), workdir, progress=False)
        rows = read_metrics(workdir)
        return {"workdir": workdir, "final": final,
                "loss": [r["train/loss"] for r in rows if "train/loss" in r],
                "predictor_loss": [r["train/predictor_loss"] for r in rows
                                   if "train/predictor_loss" in r]}

    @section
    def training():
        return {"4": train("four", "--config.parallel.num_devices=4"),
                "1": train("one", "--config.parallel.num_devices=1"),
                "4fsdp": train("fsdp", "--config.parallel.num_devices=4",
                               "--config.parallel.fsdp=True",
                               "--config.parallel.fsdp_min_size=1")}

    @section
    def checkpoints():
        res = {}
        exps = {n: loop.Experiment(tiny(f"--config.parallel.num_devices={n}",
                                        f"--config.parallel.fsdp={n == 4}",
                                        "--config.parallel.fsdp_min_size=1"))
                for n in (1, 4)}
        for src, dst in ((4, 1), (1, 4)):
            exp = exps[src]
            bump = jax.jit(lambda s, src=src: s.replace(
                params=jax.tree.map(lambda x: x * 1.5 + src, s.params)),
                out_shardings=exp.state_sharding)
            state = bump(exp.init_state())
            directory = tempfile.mkdtemp()
            with ckpt_lib.Checkpointer(directory, async_save=False) as ck:
                ck.save(3, state)
            with ckpt_lib.Checkpointer(directory) as ck:
                _, restored = ck.restore(exps[dst].abstract_state())
            saved, back = parallel.to_host(state.params), parallel.to_host(restored.params)
            kernel = restored.params["encoder"]["params"]["Dense_0"]["kernel"]
            res[f"{src}->{dst}"] = {
                "equal": all(np.array_equal(a, b) for a, b in
                             zip(jax.tree.leaves(saved), jax.tree.leaves(back))),
                "saved_devices": len(state.params["encoder"]["params"]["Dense_0"]
                                     ["kernel"].sharding.device_set),
                "restored_devices": len(kernel.sharding.device_set),
                "restored_spec": str(kernel.sharding.spec),
                "opt_equal": all(np.array_equal(a, b) for a, b in zip(
                    jax.tree.leaves(parallel.to_host(state.opt_state)),
                    jax.tree.leaves(parallel.to_host(restored.opt_state)))),
            }
        return res

    @section
    def planning():
        from jepa_jax.cost import make_cost
        from jepa_jax.planning import make_planner, make_sharded_plan
        from jepa_jax.envs import two_rooms
        exp = loop.Experiment(tiny())
        # Perturbed initial parameters: the zero-initialised predictor output would make
        # every plan cost the same, and the plans then depend on tie-breaking alone.
        params = jax.device_get(exp.init_state().params)
        leaves, treedef = jax.tree.flatten(params)
        rng = np.random.default_rng(0)
        params = treedef.unflatten([x + 0.05 * rng.normal(size=x.shape).astype(x.dtype)
                                    for x in leaves])
        # 8 problems: first and last frames of 8 trajectories.
        pos, layout = np.asarray(exp.data.pos[:8]), np.asarray(exp.data.layout[:8])
        start, goal = (two_rooms.render_positions(pos[:, t], layout[:, 0], layout[:, 1],
                                                  exp.env) for t in (0, -1))
        keys = jax.random.split(jax.random.key(3), 8)
        res = {}
        for name, cfg in (("gradient", {"horizon": 6, "num_iters": 3, "num_restarts": 2}),
                          ("cem", {"horizon": 6, "num_iters": 2, "num_samples": 16,
                                   "num_elites": 4})):
            planner = make_planner(name, exp.wm, make_cost({"goal_mode": "dense"}), cfg)
            state = planner.init_state(2, (8,))
            ref_a, ref_info = jax.jit(jax.vmap(planner.plan, in_axes=(None, 0, 0, 0, 0)))(
                jax.device_get(params), jax.device_get(start), jax.device_get(goal),
                keys, state)
            plan = make_sharded_plan(planner, exp.mesh)
            a, info = plan(params, start, goal, keys, state)
            res[name] = {"max_abs_diff": float(np.max(np.abs(np.asarray(a) - ref_a))),
                         "cost_diff": float(np.max(np.abs(np.asarray(info["final_cost"])
                                                          - ref_info["final_cost"]))),
                         "devices": len(a.sharding.device_set),
                         "spec": str(a.sharding.spec)}
            try:
                plan(params, start[:6], goal[:6], keys[:6], planner.init_state(2, (6,)))
                res[name]["odd_batch"] = "no error"
            except ValueError as exc:
                res[name]["odd_batch"] = str(exc)
        return res

    @section
    def errors():
        res = {}
        for name, overrides in (("batch", ["--config.train.batch_size=6"]),
                                ("predictor_batch", ["--config.train.predictor_batch_size=30"]),
                                ("mesh", ["--config.parallel.mesh_shape=3,"])):
            try:
                loop.Experiment(tiny(*overrides))
                res[name] = "no error"
            except ValueError as exc:
                res[name] = str(exc)
        return res

    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def four():
    proc = subprocess.run([sys.executable, "-c", _FOUR_DEVICES, CONFIG], env=_env(4),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _ok(four, name):
    res = four[name]
    assert "error" not in res, res.get("traceback", res)
    return res


def test_losses_are_global_on_four_devices(four):
    res = _ok(four, "losses_1_vs_4")
    np.testing.assert_allclose(res["4"], res["1"], rtol=1e-5, atol=1e-6)


def test_training_curve_four_devices_matches_one(four):
    res = _ok(four, "training")
    one = res["1"]
    assert len(one["loss"]) == 6 and len(one["predictor_loss"]) == 2
    for name in ("4", "4fsdp"):
        np.testing.assert_allclose(res[name]["loss"], one["loss"], rtol=1e-4)
        np.testing.assert_allclose(res[name]["predictor_loss"], one["predictor_loss"],
                                   rtol=1e-3)
        for key, value in one["final"].items():
            np.testing.assert_allclose(res[name]["final"][key], value, rtol=1e-3, atol=1e-4,
                                       err_msg=f"{name}: {key}")


def test_checkpoints_are_portable(four):
    res = _ok(four, "checkpoints")
    assert res["4->1"]["saved_devices"] == 4 and res["4->1"]["restored_devices"] == 1
    assert res["1->4"]["saved_devices"] == 1 and res["1->4"]["restored_devices"] == 4
    assert res["1->4"]["restored_spec"] != "PartitionSpec()"  # restored FSDP-split
    for case in res.values():
        assert case["equal"] and case["opt_equal"], case


def test_sharded_planning_matches_unsharded(four):
    res = _ok(four, "planning")
    for name, case in res.items():
        assert case["devices"] == 4 and "data" in case["spec"], (name, case)
        assert case["max_abs_diff"] < 1e-4 and case["cost_diff"] < 1e-4, (name, case)
        assert case["odd_batch"].startswith("the number of planning problems=6 is not "
                                            "divisible by the 4 devices"), case


def test_bad_layouts_are_one_line_errors(four):
    res = _ok(four, "errors")
    assert res["batch"].startswith("train.batch_size=6 is not divisible by the 4 devices")
    assert res["predictor_batch"].startswith("train.predictor_batch_size=30 is not divisible")
    assert res["mesh"].startswith("parallel.mesh_shape (3,) needs 3 devices, but 4 are in use")
    assert all("\n" not in v for v in res.values())


# -------------------------------------------------------------------------- two processes

_WORKER = _PRELUDE + textwrap.dedent('''
    from jepa_jax import configs
    from jepa_jax.training import loop

    config_file, pid, port, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def config(steps):
        return configs.load_config(config_file + ":tiny", [
            f"--config.train.num_steps={steps}", "--config.train.predictor_steps=0",
            "--config.data.num_trajectories=64", "--config.train.log_every=2",
            "--config.train.checkpoint_every=4", "--config.diagnostics.num_probe=32",
            "--config.diagnostics.num_heldout=16", "--config.diagnostics.num_wall=16",
            f"--config.parallel.coordinator_address=127.0.0.1:{port}",
            "--config.parallel.num_processes=2", f"--config.parallel.process_id={pid}",
            "--config.parallel.initialization_timeout=60"])

    try:  # an interrupted run, then its resumption (same processes, same coordinator)
        loop.train_and_evaluate(config(6), workdir, progress=False, stop_after=4)
    except KeyboardInterrupt:
        pass
    final = loop.train_and_evaluate(config(6), workdir, progress=False)
    print("RESULT " + json.dumps({"pid": pid, "process_count": jax.process_count(),
                                  "devices": jax.device_count(),
                                  "local": jax.local_device_count(), "final": final}),
          flush=True)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_resume(tmp_path):
    port, workdir = _free_port(), tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, CONFIG, str(pid), str(port),
                               str(workdir)], env=_env(2), cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for pid in (0, 1)]
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=400)
            assert proc.returncode == 0, stderr[-3000:]
            outs.append(json.loads([ln for ln in stdout.splitlines()
                                    if ln.startswith("RESULT ")][-1][len("RESULT "):]))
            if proc.args[3] == "0":
                assert "resuming from step 4" in stdout
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [o["process_count"] for o in outs] == [2, 2]
    assert [(o["devices"], o["local"]) for o in outs] == [(4, 2), (4, 2)]
    assert outs[0]["final"] == outs[1]["final"]  # every process computes the same numbers
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps[-1] == 6
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert [s for s, _ in losses] == [2, 4, 6]  # written once (process 0), replayed from 4
    assert all(np.isfinite(v) for _, v in losses)
    assert json.loads((workdir / "final_metrics.json").read_text()) == outs[0]["final"]


def test_coordinator_missing_peers_exits_with_one_line(tmp_path):
    """Process 0 of 2 alone: JAX would abort it with a stack trace; we exit with one line."""
    script = _PRELUDE + textwrap.dedent('''
        import ml_collections
        from jepa_jax import parallel
        parallel.initialize(parallel.parallel_config(ml_collections.ConfigDict({"parallel": {
            "coordinator_address": sys.argv[1], "num_processes": 2, "process_id": 0,
            "initialization_timeout": 2}})))
    ''')
    proc = subprocess.run([sys.executable, "-c", script, f"127.0.0.1:{_free_port()}"],
                          env=_env(1), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: process 0: not all 2 processes joined the "
                                "coordinator"), proc.stderr[-2000:]
