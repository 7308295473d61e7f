"""PNG figures of the diagnostics (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_probe_plot(path: Path, arrays: dict[str, Any], metrics: dict[str, float]) -> None:
    """True versus probed agent positions on held-out frames (x and y panels)."""
    pos = arrays["pos"].reshape(-1, 2)
    probed = arrays["probed"].reshape(-1, 2)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for i, name in enumerate("xy"):
        ax = axes[i]
        ax.scatter(pos[:, i], probed[:, i], s=1, alpha=0.3)
        lo, hi = pos[:, i].min(), pos[:, i].max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"true {name} (px)")
        ax.set_ylabel(f"probed {name} (px)")
    fig.suptitle(f"linear probe, held-out R^2 = {metrics['probe_r2']:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _draw_walls(ax, wall_x: float, door_y: float, size: int = 65, half_w: float = 1.0,
                door_half: float = 4.0, border: float = 4.0) -> None:
    hi = size - 1 - border
    ax.plot([border, hi, hi, border, border], [border, border, hi, hi, border], "k-", lw=1)
    ax.fill_between([wall_x - half_w, wall_x + half_w], border, door_y - door_half,
                    color="k")
    ax.fill_between([wall_x - half_w, wall_x + half_w], door_y + door_half, hi, color="k")


def draw_layout(ax, wall_x: float, door_y: float, env: Any = None) -> None:
    """Walls of Two-Rooms, or of Windy Two-Rooms (two doors, pits hatched) for its params."""
    from jepa_jax import envs

    if env is None or not envs.is_stochastic(env):
        _draw_walls(ax, wall_x, door_y)
        return
    hi = env.img_size - 1 - env.border
    lo = env.border
    ax.plot([lo, hi, hi, lo, lo], [lo, lo, hi, hi, lo], "k-", lw=1)
    edges = sorted([(door_y - env.door_half_width, door_y + env.door_half_width),
                    (env.windy_door_y - env.door_half_width,
                     env.windy_door_y + env.door_half_width)])
    y = lo
    hw = env.wall_half_width
    for d0, d1 in edges + [(hi, hi)]:
        ax.fill_between([wall_x - hw, wall_x + hw], y, d0, color="k")
        y = d1
    wl, dh, pw = env.wind_half_length, env.door_half_width, env.pit_width
    for y0 in (env.windy_door_y - dh - pw, env.windy_door_y + dh):
        ax.fill_between([wall_x - wl, wall_x + wl], y0, y0 + pw, color="0.6", alpha=0.6,
                        hatch="xx", lw=0)
    ax.fill_between([wall_x - wl, wall_x + wl], env.windy_door_y - dh, env.windy_door_y + dh,
                    color="c", alpha=0.15, lw=0)


def save_rollout_plot(path: Path, arrays: dict[str, Any], metrics: dict[str, float],
                      num: int = 4, env: Any = None) -> None:
    """Predicted (probed) versus true open-loop rollouts, and wall-push rollouts."""
    fig, axes = plt.subplots(2, num, figsize=(3 * num, 6))
    pos, pred = arrays["pos"], arrays["pred_pos"]
    for i in range(num):
        ax = axes[0, i]
        ax.plot(pos[i, :, 0], pos[i, :, 1], "g.-", label="true")
        ax.plot(pred[i, :, 0], pred[i, :, 1], "r.-", label="predicted")
        ax.plot(pos[i, 0, 0], pos[i, 0, 1], "ko")
        ax.set_xlim(0, 64)
        ax.set_ylim(64, 0)
        ax.set_aspect("equal")
        if i == 0:
            ax.legend(fontsize=7)
    axes[0, 0].set_title(f"rollouts, h16 error {metrics.get('rollout_px_h16', np.nan):.2f}px",
                         fontsize=8, loc="left")
    start, layout, wall = arrays["wall_start"], arrays["wall_layout"], arrays["wall_pos"]
    for i in range(num):
        ax = axes[1, i]
        draw_layout(ax, layout[i, 0], layout[i, 1], env)
        ax.plot(start[i, 0], start[i, 1], "ko")
        ax.plot(wall[i, :, 0], wall[i, :, 1], "r.-")
        ax.set_xlim(0, 64)
        ax.set_ylim(64, 0)
        ax.set_aspect("equal")
    axes[1, 0].set_title(
        f"pushed into the wall: violation {metrics.get('wall_violation_rate', np.nan):.1%}",
        fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
