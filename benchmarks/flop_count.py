"""Matmul and convolution FLOPs of a JAX function, counted on its jaxpr with loop trip counts.

XLA's ``compiled.cost_analysis()["flops"]`` counts the body of a ``while`` loop once
(measured: a ``lax.scan`` of 1, 5 or 10 matmuls reports the same number), so it
undercounts anything built on ``lax.scan``: rollouts, planner iterations. This walks the
jaxpr instead, multiplies ``scan`` bodies by their length, and counts ``dot_general`` and
``conv_general_dilated`` (2 FLOPs per multiply-add); element-wise work is left out, so the
figure is a lower bound on the work done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax


def _dot_flops(eqn) -> int:
    lhs, rhs = (v.aval for v in eqn.invars)
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    rhs_free = [d for i, d in enumerate(rhs.shape) if i not in (*rhs_contract, *rhs_batch)]
    return 2 * math.prod(lhs.shape) * math.prod(rhs_free)


def _conv_flops(eqn) -> int:
    rhs = eqn.invars[1].aval
    out = eqn.outvars[0].aval
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
    window = math.prod(rhs.shape[d] for d in spec[2:])
    return 2 * math.prod(out.shape) * window * rhs.shape[spec[1]]


def jaxpr_flops(jaxpr) -> tuple[int, bool]:
    """(FLOPs of the matmuls and convolutions, whether a while loop of unknown trip count
    was counted once)."""
    total, approx = 0, False
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        subs = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
        branches = eqn.params.get("branches")
        if branches:  # cond/switch: the most expensive branch
            counts = [jaxpr_flops(b.jaxpr) for b in branches]
            total += max(c for c, _ in counts)
            approx |= any(a for _, a in counts)
            continue
        for sub in subs:
            inner = sub.jaxpr if hasattr(sub, "jaxpr") else sub
            flops, inner_approx = jaxpr_flops(inner)
            if name == "scan":
                flops *= eqn.params["length"]
            elif name == "while":
                approx = True
            total += flops
            approx |= inner_approx
    return total, approx


def count_flops(fn: Callable[..., Any], *args: Any) -> tuple[int, bool]:
    """``jaxpr_flops`` of ``fn(*args)`` (traced, not run)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def xla_flops(compiled: Any) -> float | None:
    """XLA's own count of a compiled function (loop bodies once), or None when the backend
    gives none."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return float(analysis["flops"]) if analysis and "flops" in analysis else None
