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


def save_rollout_plot(path: Path, arrays: dict[str, Any], metrics: dict[str, float],
                      num: int = 4) -> None:
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
        _draw_walls(ax, layout[i, 0], layout[i, 1])
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
