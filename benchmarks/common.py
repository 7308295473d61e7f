"""Shared plumbing of the JAX-vs-PyTorch benchmarks: XLA flags, config, timing, metadata.

Import this module before anything imports jax: ``setup_xla_flags`` must run first.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIG_FILE = ROOT / "experiments" / "two_rooms.py"
# Same value as jepa_jax.runtime.CPU_FLAGS (not imported: jepa_jax may import jax).
CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def fresh_torch_compile_cache() -> str:
    """Points TorchInductor at a new empty cache directory (call before importing torch), so
    that torch.compile times are cold, like the JAX ones (no persistent compilation cache)."""
    path = tempfile.mkdtemp(prefix="torchinductor_bench_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def setup_xla_flags() -> dict[str, Any]:
    """Sets XLA_FLAGS to the YNNPACK dot fusion unless the user set XLA_FLAGS; call before
    importing jax. Returns what was done, for the results file."""
    user_set = "XLA_FLAGS" in os.environ
    if not user_set:
        os.environ["XLA_FLAGS"] = CPU_FLAGS
    return {"XLA_FLAGS": os.environ["XLA_FLAGS"], "set_by_user": user_set}


def load_config(preset: str):
    from jepa_jax import configs

    return configs.load_config(f"{CONFIG_FILE}:{preset}")


def time_windows(run: Callable[[], Any], sync: Callable[[Any], Any], window_s: float,
                 num_windows: int) -> tuple[float, list[float]]:
    """Calls ``run`` (syncing each result) until each window of ``window_s`` seconds is full.

    Returns ``(median calls/s over the windows, [calls/s of each window])``.
    """
    rates = []
    for _ in range(num_windows):
        n, t0 = 0, time.perf_counter()
        while True:
            sync(run())
            n += 1
            dt = time.perf_counter() - t0
            if dt >= window_s:
                break
        rates.append(n / dt)
    return statistics.median(rates), rates


def interleaved_windows(runners: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]],
                        window_s: float, num_windows: int) -> dict[str, list[float]]:
    """Round-robin timing: window 1 of every runner, then window 2 of every runner, ...

    On a machine whose load changes over time, each variant then sees the same mix of
    quiet and busy moments. ``runners`` maps a name to ``(run, sync)``; returns the
    calls/s of each window per name (take the median).
    """
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(num_windows):
        for name, (run, sync) in runners.items():
            rates[name].append(time_windows(run, sync, window_s, 1)[0])
    return rates


def timed(fn: Callable[[], Any], sync: Callable[[Any], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` with the result synced."""
    t0 = time.perf_counter()
    out = fn()
    sync(out)
    return out, time.perf_counter() - t0


def error_string(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(preset: str, xla: dict[str, Any]) -> dict[str, Any]:
    """Versions, machine and flags for the results file."""
    import jax
    import jaxlib

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config_preset": preset,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_backend": jax.default_backend(),
        "xla_flags": xla,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_num_threads"] = torch.get_num_threads()
    except ImportError:
        meta["torch"] = None
    return meta


def run_without_xla_flags(script: Path, args: list[str], timeout: float) -> dict[str, Any]:
    """Re-runs ``script --jax-only ...`` with ``XLA_FLAGS=""`` and returns its JSON result
    (its last stdout line), or ``{"error": ...}``."""
    return run_json_subprocess(script, ["--jax-only", *args], "", timeout)


def run_json_subprocess(script: Path, args: list[str], xla_flags: str,
                        timeout: float) -> dict[str, Any]:
    """Runs ``script *args`` with ``XLA_FLAGS=xla_flags`` (process-level settings such as the
    number of CPU devices need a fresh process) and returns the JSON of its last stdout line,
    or ``{"error": ...}``."""
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    try:
        proc = subprocess.run([sys.executable, str(script), *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return {"error": error_string(exc)}
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_output(name: str, smoke: bool) -> Path:
    """``benchmarks/results/<name>.json``; smoke runs go to the temp dir instead, so that they
    never overwrite the committed measurements."""
    if smoke:
        return Path(tempfile.gettempdir()) / "jepa_jax_benchmarks" / f"{name}.smoke.json"
    return RESULTS / f"{name}.json"


def torch_thread_probe(calls: int = 20) -> dict[str, float]:
    """Median microseconds of a tiny matmul (16x64 @ 64x64) at the current torch thread count.

    A few microseconds on an idle machine; on a CPU shared with other busy processes each
    OpenMP parallel region can wait a scheduler time slice (measured: ~15 ms) for its second
    thread, which dominates eager PyTorch steps made of many small ops. Recorded so that the
    results say whether the torch numbers were taken under such contention.
    """
    import torch

    a, b = torch.randn(16, 64), torch.randn(64, 64)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return {"threads": torch.get_num_threads(), "tiny_matmul_us": 1e6 * statistics.median(times)}


def contention_warning(*probes: dict[str, float]) -> str | None:
    """A warning line when a thread probe saw OpenMP stalls (> 1 ms for a tiny matmul)."""
    slow = [p for p in probes if p["threads"] > 1 and p["tiny_matmul_us"] > 1000]
    if not slow:
        return None
    return (f"warning: the CPU is shared with busy processes (a tiny matmul took "
            f"{slow[0]['tiny_matmul_us'] / 1e3:.0f} ms at {slow[0]['threads']} torch threads); "
            f"the multi-threaded PyTorch numbers are dominated by OpenMP stalls. Rerun on a "
            f"quiet machine, or compare with --torch-threads 1.")


PARITY_TOLERANCE = 1e-3


def parity_warning(rel_diff: float, what: str) -> str | None:
    """A warning line when the twin and JAX disagree by more than float32 rounding explains."""
    if rel_diff <= PARITY_TOLERANCE:
        return None
    return (f"warning: the PyTorch twin differs from JAX ({what}: relative difference "
            f"{rel_diff:.1e} > {PARITY_TOLERANCE:.0e}); has the JAX model, loss or planner "
            f"changed? Update benchmarks/torch_twins.py.")


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*map(str, r)))


def print_report_tail(ratios: dict[str, float], results: dict[str, Any], parity_diff: float,
                      parity_what: str, path: Path) -> None:
    """The closing lines both benchmarks print: ratios, warnings, and where the JSON went."""
    print("ratios: " + ", ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    warnings = [contention_warning(results["torch_thread_probe"],
                                   results["torch_thread_probe_end"]),
                parity_warning(parity_diff, parity_what)]
    for warning in filter(None, warnings):
        print(warning)
    print(f"wrote {path}")
