"""Training throughput, JAX vs PyTorch, on the Two-Rooms world model.

    python benchmarks/train_throughput.py [--preset default] [--seconds 20] [--smoke]

Frames/s (batch_size x data.length per step) of one full training step (loss, gradient,
clipping, AdamW) at a config preset for

* JAX: ``Experiment(config).update``, the jitted step the trainer runs, with the real data
  pipeline (batch gathered and rendered inside the step);
* PyTorch eager and ``torch.compile`` twins (``benchmarks/torch_twins.py``: same layers,
  sizes, FLOPs and loss), fed pre-rendered batches (rendering is not timed for them; the
  JAX render cost per batch is measured separately and reported);
* JAX again without the YNNPACK XLA flag (this script, re-run in a subprocess).

Each figure is the median of 5 timed windows (``--seconds`` split between them) after
compilation and two warm-up steps; the windows of the variants are interleaved
(round-robin), so that a load that changes over time affects them alike. Before timing,
the twin is loaded with the JAX initial parameters and its loss terms and gradient norm on
one batch are compared with the JAX ones ("parity"). PyTorch runs with
``--torch-threads`` (default 2) threads; ``torch_thread_probe`` in the results tells
whether OpenMP was stalled by other busy processes (see ``common.torch_thread_probe``).
Writes ``benchmarks/results/train_throughput.json`` and prints a table. ``--smoke``: the
tiny preset with 1 s windows, to check that the script works.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets no flags on import; setup_xla_flags is called in main)

NUM_WINDOWS = 5


def _jax_setup(config) -> tuple[dict, tuple, object, object, object]:
    """Builds and compiles ``Experiment.update``; returns (results so far, (run, sync),
    experiment, initial params, data)."""
    import jax

    from jepa_jax.training.loop import Experiment

    exp = Experiment(config)
    data, t_data = common.timed(lambda: exp.data, jax.block_until_ready)
    state = exp.init_state()
    init_params = jax.device_get(state.params)
    out = {"data_generation_s": t_data}
    compiled, out["compile_s"] = common.timed(lambda: exp.update.lower(state, data).compile(),
                                              lambda _: None)
    try:
        out["xla_flops_per_step"] = float(compiled.cost_analysis()["flops"])
    except Exception as exc:  # noqa: BLE001 - backend-dependent
        out["xla_flops_per_step"] = common.error_string(exc)
    holder = {"state": state}

    def step():
        holder["state"], aux = exp.update(holder["state"], data)
        return aux

    _, out["first_step_s"] = common.timed(step, jax.block_until_ready)
    _, out["second_step_s"] = common.timed(step, jax.block_until_ready)
    return out, (step, jax.block_until_ready), exp, init_params, data


def _render_cost(exp, data, window_s: float) -> float:
    """Milliseconds to gather and render one batch with the jitted JAX pipeline."""
    import jax

    from jepa_jax.data import offline

    cfg = exp.config
    get = jax.jit(lambda d, s: offline.get_batch(d, offline.batch_indices(
        exp.order_key, cfg.data.num_trajectories, cfg.train.batch_size, s), exp.env).obs)
    counter = {"s": 0}

    def run():
        counter["s"] += 1
        return get(data, counter["s"])

    jax.block_until_ready(run())
    rate, _ = common.time_windows(run, jax.block_until_ready, window_s, 3)
    return 1e3 / rate


def _torch_batches(exp, data, num: int = 4):
    """``num`` batches rendered by the JAX pipeline, as (obs, actions) torch tensors
    and the first one as a JAX ``Batch``."""
    import jax
    import numpy as np
    import torch

    from jepa_jax.data import offline

    cfg = exp.config
    out, first = [], None
    for s in range(num):
        idx = offline.batch_indices(exp.order_key, cfg.data.num_trajectories,
                                    cfg.train.batch_size, s)
        batch = jax.jit(lambda d, i: offline.get_batch(d, i, exp.env))(data, idx)
        if first is None:
            first = batch
        obs = torch.from_numpy(np.array(batch.obs))
        out.append((obs, torch.from_numpy(np.array(batch.actions))))
    return out, first


def _build_twin(config, init_params, **trainer_kwargs):
    import torch_twins as tt

    obs_shape = (config.env.img_size, config.env.img_size, 2)
    enc, pred, inv, _, kp_dims = tt.build_world_model(config.model, obs_shape, 2)
    tt.load_jax_params((enc, pred, inv), init_params)
    loss = tt.JEPALoss(enc, pred, inv, config.loss, kp_dims)
    return tt.Trainer(loss, config.train, **trainer_kwargs)


def _parity(exp, init_params, jax_batch, torch_batch) -> dict:
    """JAX and twin loss terms and gradient norm at the same parameters on the same batch."""
    import jax
    import optax

    trainer = _build_twin(exp.config, init_params)
    key = jax.random.key(0)  # only SIGReg draws from it (exp.rng_key was donated)

    def loss_fn(p):
        return exp.objective(exp.wm, p, jax_batch, key, exp.config.loss)

    (_, aux_j), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(init_params)
    aux_j = {k: float(v) for k, v in aux_j.items()}
    aux_j["grad_norm"] = float(optax.global_norm(grads))
    loss, aux_t = trainer.loss(*torch_batch)
    loss.backward()
    grads_t = [p.grad for p in trainer.params]
    import torch

    aux_t = {k: float(v.detach()) for k, v in aux_t.items()}
    aux_t["grad_norm"] = float(torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads_t])))
    rel = {k: abs(aux_t[k] - aux_j[k]) / max(abs(aux_j[k]), 1e-6) for k in aux_j if k in aux_t}
    # Headline: the loss and the gradient norm. Small terms (the covariance, ~1e-3) differ by
    # float32 cancellation at the 1e-4 relative level; they are in rel_diff.
    return {"jax": aux_j, "torch": aux_t, "max_rel_diff": max(rel["loss"], rel["grad_norm"]),
            "rel_diff": rel}


def _torch_flops(trainer, batch) -> float | str:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            loss, _ = trainer.loss(*batch)
            loss.backward()
        trainer.opt.zero_grad(set_to_none=True)
        return float(counter.get_total_flops())
    except Exception as exc:  # noqa: BLE001
        return common.error_string(exc)


def _trainer_runner(trainer, batches) -> tuple[dict, tuple]:
    """Runs the first two steps (compilation, if any); returns (results, (run, sync))."""
    it = {"i": 0}

    def step():
        it["i"] += 1
        return trainer.step(*batches[it["i"] % len(batches)])

    def sync(aux):
        return float(aux["loss"].detach())  # a host read; eager torch is synchronous anyway

    out = {}
    _, out["first_step_s"] = common.timed(step, sync)
    _, out["second_step_s"] = common.timed(step, sync)
    return out, (step, sync)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timed seconds per measurement (split into 5 windows)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny preset, 1 s windows; checks that the script works")
    parser.add_argument("--jax-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-subprocess", action="store_true",
                        help="skip the JAX run without XLA_FLAGS")
    parser.add_argument("--output", default=None,
                        help="results file (default benchmarks/results/train_throughput.json; "
                             "with --smoke a file in the temp dir)")
    args = parser.parse_args(argv)
    preset = "tiny" if args.smoke else args.preset
    window_s = 1.0 if args.smoke else args.seconds / NUM_WINDOWS
    num_windows = 3 if args.smoke else NUM_WINDOWS

    xla = common.setup_xla_flags()
    config = common.load_config(preset)
    frames = config.train.batch_size * config.data.length

    def finish(res: dict, rates: list[float]) -> dict:
        rate = statistics.median(rates)
        res.update(steps_per_s=rate, frames_per_s=rate * frames,
                   window_frames_per_s=[r * frames for r in rates])
        return res

    jax_res, jax_runner, exp, init_params, data = _jax_setup(config)
    if args.jax_only:
        rates = common.interleaved_windows({"jax": jax_runner}, window_s, num_windows)["jax"]
        print(json.dumps({**finish(jax_res, rates), "xla_flags": xla}))
        return 0

    common.fresh_torch_compile_cache()  # cold torch.compile times, like JAX's
    import torch

    torch.set_num_threads(args.torch_threads)
    results = {"benchmark": "train_throughput", **common.metadata(preset, xla),
               "batch_size": config.train.batch_size, "length": config.data.length,
               "frames_per_step": frames, "window_s": window_s, "num_windows": num_windows,
               "note": "JAX step includes gathering and rendering the batch; the torch steps "
                       "get pre-rendered batches (see jax_render_ms_per_batch). Windows are "
                       "interleaved across variants (round-robin)."}
    results["torch_thread_probe"] = common.torch_thread_probe()
    results["jax_render_ms_per_batch"] = _render_cost(exp, data, min(window_s, 2.0))
    batches, jax_batch = _torch_batches(exp, data)
    results["parity"] = _parity(exp, init_params, jax_batch, batches[0])

    runners = {"jax": jax_runner}
    setups = {"jax": jax_res}
    eager = _build_twin(config, init_params)
    results["torch_flops_per_step_fwd_bwd"] = _torch_flops(eager, batches[0])
    setups["torch_eager"], runners["torch_eager"] = _trainer_runner(eager, batches)
    if not args.no_compile:
        try:
            compiled = _build_twin(config, init_params, compile=True)
            setups["torch_compile"], runners["torch_compile"] = _trainer_runner(compiled,
                                                                                batches)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            results["torch_compile"] = {"error": common.error_string(exc)}
    rates = common.interleaved_windows(runners, window_s, num_windows)
    for name, res in setups.items():
        results[name] = finish(res, rates[name])
    if "torch_compile" in setups:
        tc = results["torch_compile"]  # the first two steps, less two steady-state steps
        tc["compile_s"] = tc["first_step_s"] + tc["second_step_s"] - 2 / tc["steps_per_s"]
    loss = float(jax_runner[0]()["loss"])
    results["jax"]["loss_finite_after_timing"] = math.isfinite(loss)
    results["torch_thread_probe_end"] = common.torch_thread_probe()
    del exp, data, runners

    if not args.no_subprocess and xla["XLA_FLAGS"]:
        sub_args = ["--preset", preset, "--seconds", str(args.seconds)]
        if args.smoke:
            sub_args.append("--smoke")
        results["jax_no_xla_flags"] = common.run_without_xla_flags(
            Path(__file__), sub_args, timeout=600)

    jax_fps = results["jax"]["frames_per_s"]
    ratios = {"jax_over_torch_eager": jax_fps / results["torch_eager"]["frames_per_s"]}
    if "frames_per_s" in results.get("torch_compile", {}):
        ratios["jax_over_torch_compile"] = jax_fps / results["torch_compile"]["frames_per_s"]
    results["ratios"] = ratios
    path = common.write_results(args.output or common.default_output("train_throughput",
                                                                     args.smoke), results)

    rows = [("jax (XLA_FLAGS=" + (xla["XLA_FLAGS"] or '""') + ")", f"{jax_fps:.0f}",
             f"{results['jax']['compile_s']:.1f}")]
    nf = results.get("jax_no_xla_flags", {})
    if "frames_per_s" in nf:
        rows.append(('jax (XLA_FLAGS="")', f"{nf['frames_per_s']:.0f}",
                     f"{nf['compile_s']:.1f}"))
    elif nf:
        rows.append(('jax (XLA_FLAGS="")', "error", nf["error"][:60]))
    rows.append(("torch eager", f"{results['torch_eager']['frames_per_s']:.0f}", "-"))
    tc = results.get("torch_compile")
    if tc and "error" in tc:
        rows.append(("torch.compile", "error", tc["error"][:60]))
    elif tc:
        rows.append(("torch.compile", f"{tc['frames_per_s']:.0f}", f"{tc['compile_s']:.1f}"))
    print(f"preset={preset} batch={config.train.batch_size}x{config.data.length} frames; "
          f"parity max rel diff {results['parity']['max_rel_diff']:.1e}")
    common.print_table(rows, ("variant", "frames/s", "compile s"))
    common.print_report_tail(ratios, results, results["parity"]["max_rel_diff"], "loss terms",
                             path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
