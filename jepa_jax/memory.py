"""Short-term memory: a fixed-size associative memory of transitions, as a pure pytree.

Each entry holds a transition ``(state, action, cost, next_state, goal)``: the latent
``state`` is the key, the rest are values, and ``cost`` is the intrinsic cost of the state
the action led to. The memory is a ``flax.struct`` dataclass of fixed-shape arrays, so it is
carried through an episode by ``lax.scan``, vmapped over episodes and jitted; every
function returns a new memory::

    mem = init_memory(size=256, state_dim=D, action_dim=2)
    mem = write(mem, s, a, c, s_next, g)                    # ring buffer or LRU slot
    out, mem = read(mem, query, temperature=1.0)            # softmax attention over keys
    out.weights, out.action, out.cost, out.log_count

Writing: ``"ring"`` overwrites the oldest entry; ``"lru"`` the least recently used one,
where a read counts as a use of the entry it attends to most. Reading: weights
``softmax(sim(query, key) / temperature)`` over the valid entries, with
``sim = -|q - k|^2`` (``"l2"``) or ``q . k`` (``"dot"``); values are averaged under those
weights. ``log_count`` is the log-sum-exp of the similarities: with ``"l2"`` it is the log
of a soft count of entries within about ``sqrt(temperature)`` of the query (how familiar the
state is). The agent uses the memory for its critic's training data and for that
familiarity signal (``jepa_jax.agent``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

WRITE_POLICIES = ("ring", "lru")
SIMILARITIES = ("l2", "dot")


@struct.dataclass
class Memory:
    """N slots of transitions.

    Attributes:
      state: (N, D) latent states (the keys).
      action: (N, A) actions chosen in them (the agent records its actor's choice, before
        any exploration noise).
      cost: (N,) intrinsic cost of the state each action led to.
      next_state: (N, D) the latent the action led to.
      goal: (N, D) the goal latent of the episode.
      valid: (N,) bool, whether the slot holds an entry.
      written: (N,) int32, the write number of the entry (-1 when empty): its age order.
      last_used: (N,) int32, the clock value of its last write or read (-1 when empty).
      clock: () int32, writes plus reads so far.
      num_writes: () int32, writes so far.
      write_policy: "ring" or "lru" (static).
    """

    state: jax.Array
    action: jax.Array
    cost: jax.Array
    next_state: jax.Array
    goal: jax.Array
    valid: jax.Array
    written: jax.Array
    last_used: jax.Array
    clock: jax.Array
    num_writes: jax.Array
    write_policy: str = struct.field(pytree_node=False, default="ring")

    @property
    def size(self) -> int:
        return self.valid.shape[-1]


@struct.dataclass
class Readout:
    """What ``read`` returns: attention ``weights`` (N,) and the weighted values.

    ``action`` (A,), ``cost`` (), ``next_state`` (D,) are zeros, and ``log_count`` is -inf,
    when the memory is empty.
    """

    weights: jax.Array
    action: jax.Array
    cost: jax.Array
    next_state: jax.Array
    log_count: jax.Array


def init_memory(size: int, state_dim: int, action_dim: int,
                write_policy: str = "ring") -> Memory:
    """An empty memory of ``size`` slots.

    Raises:
      ValueError: size < 1, non-positive dimensions or an unknown write policy (one line).
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"memory size must be an integer >= 1, got {size!r}")
    if state_dim < 1 or action_dim < 1:
        raise ValueError(f"memory needs state_dim and action_dim >= 1, got {state_dim} and "
                         f"{action_dim}")
    if write_policy not in WRITE_POLICIES:
        raise ValueError(f"unknown memory write policy {write_policy!r}; valid policies: "
                         f"{', '.join(WRITE_POLICIES)}")
    f32 = jnp.float32
    return Memory(
        state=jnp.zeros((size, state_dim), f32), action=jnp.zeros((size, action_dim), f32),
        cost=jnp.zeros((size,), f32), next_state=jnp.zeros((size, state_dim), f32),
        goal=jnp.zeros((size, state_dim), f32), valid=jnp.zeros((size,), bool),
        written=jnp.full((size,), -1, jnp.int32), last_used=jnp.full((size,), -1, jnp.int32),
        clock=jnp.zeros((), jnp.int32), num_writes=jnp.zeros((), jnp.int32),
        write_policy=write_policy)


def write_slot(mem: Memory) -> jax.Array:
    """The slot the next write goes to: () int32."""
    if mem.write_policy == "ring":
        return mem.num_writes % mem.size
    # LRU: empty slots first (last_used -1; argmin takes the lowest index), then the oldest use.
    return jnp.argmin(jnp.where(mem.valid, mem.last_used, -1)).astype(jnp.int32)


def write(mem: Memory, state: jax.Array, action: jax.Array, cost: jax.Array,
          next_state: jax.Array, goal: jax.Array, enabled: jax.Array | bool = True) -> Memory:
    """Stores one transition; with ``enabled`` False (a traced bool is fine) nothing changes.

    Args:
      mem: the memory.
      state: (D,), action: (A,), cost: (), next_state: (D,), goal: (D,).
      enabled: whether to write (lets a scan skip a write without ``lax.cond``).

    Returns:
      The new memory.
    """
    d, a = mem.state.shape[-1], mem.action.shape[-1]
    if state.shape != (d,) or next_state.shape != (d,) or goal.shape != (d,):
        raise ValueError(f"memory holds states of shape ({d},), got {state.shape}, "
                         f"{next_state.shape} and {goal.shape}")
    if action.shape != (a,) or jnp.shape(cost) != ():
        raise ValueError(f"memory holds actions ({a},) and scalar costs, got {action.shape} "
                         f"and {jnp.shape(cost)}")
    on = jnp.asarray(enabled, bool)
    slot = write_slot(mem)

    def put(arr, value):
        return arr.at[slot].set(jnp.where(on, jnp.asarray(value, arr.dtype), arr[slot]))

    return mem.replace(
        state=put(mem.state, state), action=put(mem.action, action), cost=put(mem.cost, cost),
        next_state=put(mem.next_state, next_state), goal=put(mem.goal, goal),
        valid=put(mem.valid, True), written=put(mem.written, mem.num_writes),
        last_used=put(mem.last_used, mem.clock),
        clock=mem.clock + on.astype(jnp.int32), num_writes=mem.num_writes + on.astype(jnp.int32))


def similarity(mem: Memory, query: jax.Array, kind: str = "l2") -> jax.Array:
    """(N,) similarity of ``query`` (D,) to every key: ``-|q - k|^2`` or ``q . k``."""
    if kind not in SIMILARITIES:
        raise ValueError(f"unknown similarity {kind!r}; valid: {', '.join(SIMILARITIES)}")
    if query.shape != mem.state.shape[-1:]:
        raise ValueError(f"query has shape {query.shape}, memory keys have "
                         f"{mem.state.shape[-1:]}")
    if kind == "l2":
        return -jnp.sum(jnp.square(mem.state - query), -1)
    return mem.state @ query


def read(mem: Memory, query: jax.Array, temperature: float | jax.Array = 1.0,
         kind: str = "l2", refresh: bool = True) -> tuple[Readout, Memory]:
    """Soft-attention read: values averaged under ``softmax(sim(query, keys) / temperature)``.

    Args:
      mem: the memory.
      query: (D,) latent.
      temperature: > 0, in the units of the similarity (squared latent distance for "l2").
      kind: "l2" or "dot".
      refresh: mark the most-attended entry as used (for the LRU policy; counts on the clock).

    Returns:
      ``(Readout, memory)``; the memory changes only through ``refresh``.
    """
    if isinstance(temperature, int | float) and not temperature > 0:
        raise ValueError(f"memory read temperature must be > 0, got {temperature}")
    logits = similarity(mem, query, kind) / temperature
    logits = jnp.where(mem.valid, logits, -jnp.inf)
    any_valid = jnp.any(mem.valid)
    safe = jnp.where(any_valid, logits, 0.0)
    lse = _masked_lse(safe, mem.valid)
    w = jnp.where(mem.valid, jnp.exp(safe - jnp.where(any_valid, lse, 0.0)), 0.0)
    out = Readout(weights=w, action=w @ mem.action, cost=w @ mem.cost,
                  next_state=w @ mem.next_state,
                  log_count=jnp.where(any_valid, lse, -jnp.inf))
    if refresh:
        top = jnp.argmax(w)
        mem = mem.replace(
            last_used=mem.last_used.at[top].set(jnp.where(any_valid, mem.clock,
                                                          mem.last_used[top])),
            clock=mem.clock + any_valid.astype(jnp.int32))
    return out, mem


def _masked_lse(logits: jax.Array, mask: jax.Array) -> jax.Array:
    m = jnp.max(jnp.where(mask, logits, -jnp.inf))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return m + jnp.log(jnp.sum(jnp.where(mask, jnp.exp(logits - m), 0.0)))


def ordered(mem: Memory) -> tuple[Memory, jax.Array]:
    """The entries oldest first (by write number), empty slots last.

    Returns:
      ``(memory with its slots permuted, order (N,))``. With the ring policy and at most
      ``size`` writes since the episode began, consecutive entries are consecutive steps.
    """
    key = jnp.where(mem.valid, mem.written, jnp.iinfo(jnp.int32).max)
    order = jnp.argsort(key)
    fields = ("state", "action", "cost", "next_state", "goal", "valid", "written",
              "last_used")
    return mem.replace(**{f: getattr(mem, f)[order] for f in fields}), order
