"""Two-Rooms environment: collision rule against an independent NumPy reference, rendering,
jit/vmap of the functional API, parameter validation and long random rollouts.

Default geometry: interior (4, 60); a wall at ``wall_x`` spanning ``wall_x +- 1``; a door at
``door_y +- 4`` (closed interval: a move whose wall-crossing stays within it passes).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jepa_jax.envs import two_rooms

P = two_rooms.EnvParams()


# ---------------------------------------------------------------------------------------------
# Independent NumPy reference of PLDM's collision rule.
# ---------------------------------------------------------------------------------------------


def _np_clip(action, bound):
    n = math.hypot(action[0], action[1])
    return action if n <= bound else action * (bound / n)


def _segment_hits_rect(p, q, xmin, xmax, ymin, ymax):
    """Liang-Barsky: does the closed segment p->q meet the closed box [xmin,xmax]x[ymin,ymax]?"""
    d = q - p
    t0, t1 = 0.0, 1.0
    for pi, qi in ((-d[0], p[0] - xmin), (d[0], xmax - p[0]),
                   (-d[1], p[1] - ymin), (d[1], ymax - p[1])):
        if pi == 0.0:
            if qi < 0.0:
                return False
        else:
            r = qi / pi
            if pi < 0.0:
                t0 = max(t0, r)
            else:
                t1 = min(t1, r)
    return t0 <= t1


def np_transition(pos, action, wall_x, door_y, params=P, eps=0.0):
    """Reference next position. The solid middle wall is the slab [wall_x-hw, wall_x+hw] minus
    the door rows [door_y-dh, door_y+dh]; ``eps`` > 0 grows the obstacles (and < 0 shrinks
    them) so that callers can detect cases that lie on a decision boundary."""
    pos = np.asarray(pos, np.float64)
    q = pos + _np_clip(np.asarray(action, np.float64), params.action_bound)
    lo, hi = params.border, params.img_size - 1 - params.border
    if np.any(q <= lo + eps) or np.any(q >= hi - eps):
        return pos
    x0 = wall_x - params.wall_half_width - eps
    x1 = wall_x + params.wall_half_width + eps
    # The door's interval is closed (its edge rows pass), so the wall is y < d0 or y > d1.
    d0 = door_y - params.door_half_width + eps - 1e-9
    d1 = door_y + params.door_half_width - eps + 1e-9
    big = 1e6
    if _segment_hits_rect(pos, q, x0, x1, -big, d0) or _segment_hits_rect(pos, q, x0, x1, d1, big):
        return pos
    return q


def in_solid_wall(pos, wall_x, door_y, params=P):
    return (abs(pos[0] - wall_x) <= params.wall_half_width
            and abs(pos[1] - door_y) > params.door_half_width)


_transition_one = jax.jit(two_rooms.transition)
_transition_batch = jax.jit(jax.vmap(lambda p, a, w, d: two_rooms.transition(p, a, w, d, P)))


def _jax_transition(pos, action, wall_x=32.0, door_y=32.0, params=P):
    return np.asarray(_transition_one(jnp.asarray(pos, jnp.float32),
                                      jnp.asarray(action, jnp.float32),
                                      jnp.float32(wall_x), jnp.float32(door_y), params))


# ---------------------------------------------------------------------------------------------
# Collision rule.
# ---------------------------------------------------------------------------------------------

# (name, pos, action, expected next position) with the default layout wall 32, door 32:
# slab x in [31, 33], door y in [28, 36], interior (4, 60).
HAND_CASES = [
    ("into wall above door", (29.5, 20.0), (2.0, 0.0), (29.5, 20.0)),
    ("into wall below door", (34.5, 45.0), (-2.0, 0.0), (34.5, 45.0)),
    ("stop short of the wall", (28.0, 20.0), (2.0, 0.0), (30.0, 20.0)),
    ("jump over the wall slab", (30.9, 20.0), (2.45, 0.0), (30.9, 20.0)),
    ("through door centre", (30.0, 32.0), (2.4, 0.0), (32.4, 32.0)),
    ("out of the door", (32.4, 32.0), (2.4, 0.0), (34.8, 32.0)),
    ("door bottom edge row exactly", (30.0, 36.0), (2.0, 0.0), (32.0, 36.0)),
    ("door top edge row exactly", (30.0, 28.0), (2.0, 0.0), (32.0, 28.0)),
    ("diagonal clips door corner", (30.0, 27.0), (2.0, 1.0), (30.0, 27.0)),
    ("diagonal just inside edge", (30.0, 27.6), (2.0, 1.0), (32.0, 28.6)),
    ("diagonal leaves door upward", (31.5, 29.0), (1.0, -2.0), (31.5, 29.0)),
    ("vertical in slab leaves door", (32.0, 35.0), (0.0, 2.0), (32.0, 35.0)),
    ("vertical in slab stays in door", (32.0, 33.0), (0.0, 2.0), (32.0, 35.0)),
    ("vertical beside the slab", (30.0, 20.0), (0.0, 2.0), (30.0, 22.0)),
    ("left border", (5.0, 30.0), (-1.5, 0.0), (5.0, 30.0)),
    ("left border exactly", (5.0, 30.0), (-1.0, 0.0), (5.0, 30.0)),
    ("near left border", (5.0, 30.0), (-0.5, 0.0), (4.5, 30.0)),
    ("bottom-right corner", (59.0, 59.0), (1.2, 0.5), (59.0, 59.0)),
    ("top border", (20.0, 5.0), (0.0, -2.0), (20.0, 5.0)),
    ("clipped action", (10.0, 30.0), (10.0, 0.0), (12.45, 30.0)),
    ("clipped diagonal", (10.0, 30.0), (3.0, 4.0), (11.47, 31.96)),
]


@functools.cache
def _hand_case_results():
    pos = np.array([c[1] for c in HAND_CASES], np.float32)
    act = np.array([c[2] for c in HAND_CASES], np.float32)
    n = len(HAND_CASES)
    return np.asarray(_transition_batch(pos, act, np.full(n, 32.0, np.float32),
                                        np.full(n, 32.0, np.float32)))


@pytest.mark.parametrize("i", range(len(HAND_CASES)), ids=[c[0] for c in HAND_CASES])
def test_transition_hand_cases(i):
    _, pos, action, expected = HAND_CASES[i]
    np.testing.assert_allclose(_hand_case_results()[i], expected, atol=1e-5)
    np.testing.assert_allclose(_jax_transition(pos, action), expected, atol=1e-5)  # unbatched
    np.testing.assert_allclose(np_transition(pos, action, 32.0, 32.0), expected, atol=1e-5)


def test_multistep_crossing_through_door():
    pos = np.array([28.0, 30.0], np.float32)
    xs = [pos[0]]
    for _ in range(4):
        pos = _jax_transition(pos, (2.0, 0.0))
        xs.append(pos[0])
    np.testing.assert_allclose(xs, [28.0, 30.0, 32.0, 34.0, 36.0], atol=1e-5)


def test_large_action_bound_still_blocked_by_thin_wall():
    params = two_rooms.EnvParams(action_bound=20.0)
    # A 10 px jump across the wall away from the door is blocked; through the door it passes.
    np.testing.assert_allclose(_jax_transition((25.0, 20.0), (10.0, 0.0), params=params),
                               (25.0, 20.0))
    np.testing.assert_allclose(_jax_transition((25.0, 32.0), (10.0, 0.0), params=params),
                               (35.0, 32.0), atol=1e-5)
    # Diagonal jumps: what matters is the y range over the slab x in [31, 33].
    # y over the slab 23.2 .. 24.8, below the door: blocked.
    np.testing.assert_allclose(_jax_transition((27.0, 20.0), (10.0, 8.0), params=params),
                               (27.0, 20.0))
    # Both ends beyond the door's rows (y 24 and 40) but y over the slab 30.4 .. 33.6: passes.
    np.testing.assert_allclose(_jax_transition((27.0, 24.0), (10.0, 16.0), params=params),
                               (37.0, 40.0), atol=1e-5)
    # y over the slab 35.2 .. 36.8 leaves the door at its edge: blocked.
    np.testing.assert_allclose(_jax_transition((27.0, 32.0), (10.0, 8.0), params=params),
                               (27.0, 32.0))


def test_transition_matches_numpy_reference_on_random_cases():
    rng = np.random.default_rng(0)
    n = 6000
    wall_x = rng.integers(20, 45, n).astype(np.float64)
    door_y = rng.integers(10, 55, n).astype(np.float64)
    # Half uniform in the interior, half concentrated around the wall and the door's edges.
    pos = rng.uniform(4.2, 59.8, (n, 2))
    near = rng.random(n) < 0.6
    pos[near, 0] = wall_x[near] + rng.uniform(-4.0, 4.0, near.sum())
    edge = door_y + rng.choice([-4.0, 4.0, 0.0], n) + rng.uniform(-3.0, 3.0, n)
    pos[near, 1] = np.clip(edge[near], 4.2, 59.8)
    ang = rng.uniform(0, 2 * np.pi, n)
    mag = rng.uniform(0.0, 3.5, n)  # some beyond the bound, so clipping matters
    act = np.stack([np.cos(ang), np.sin(ang)], -1) * mag[:, None]
    # Work in float32 values so that both implementations see exactly the same numbers.
    pos, act = pos.astype(np.float32), act.astype(np.float32)

    got = np.asarray(_transition_batch(pos, act, wall_x.astype(np.float32),
                                       door_y.astype(np.float32)))
    checked = blocked = through_slab = 0
    for i in range(n):
        if in_solid_wall(pos[i], wall_x[i], door_y[i]):
            continue  # not a reachable state
        grown = np_transition(pos[i], act[i], wall_x[i], door_y[i], eps=1e-3)
        shrunk = np_transition(pos[i], act[i], wall_x[i], door_y[i], eps=-1e-3)
        if not np.array_equal(grown, shrunk):
            continue  # within 1e-3 px of a decision boundary
        np.testing.assert_allclose(got[i], grown, atol=1e-4, err_msg=f"case {i}")
        checked += 1
        blocked += np.array_equal(grown, pos[i])
        # Moves allowed although their segment meets the slab: they went through the door.
        lo_x, hi_x = sorted((pos[i][0], grown[0]))
        through_slab += (not np.array_equal(grown, pos[i])) and (
            hi_x >= wall_x[i] - 1.0 and lo_x <= wall_x[i] + 1.0)
    # The random cases exercise all branches.
    assert checked > 0.6 * n
    assert blocked > 300 and through_slab > 300


def test_clip_action():
    a = jnp.array([[3.0, 4.0], [0.3, -0.4], [0.0, 0.0]])
    out = np.asarray(two_rooms.clip_action(a, 2.5))
    np.testing.assert_allclose(out, [[1.5, 2.0], [0.3, -0.4], [0.0, 0.0]], atol=1e-6)


def test_transition_under_grad_is_finite():
    # Not needed by training, but the function must stay differentiable for planners that
    # might use a true-env oracle: d next / d action is the identity away from walls.
    def move(a):
        return two_rooms.transition(jnp.array([10.0, 10.0]), a, 32.0, 32.0, P)

    jac = jax.jit(jax.jacobian(move))(jnp.array([0.5, 0.5]))
    np.testing.assert_allclose(jac, np.eye(2), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------


def test_render_agent_channel():
    pos = (20.3, 40.7)
    state = two_rooms.make_state(pos, 32.0, 32.0)
    obs = np.asarray(two_rooms.render(state, P))
    assert obs.shape == (65, 65, 2) and obs.dtype == np.float32
    agent = obs[..., two_rooms.AGENT_CHANNEL]
    row, col = np.unravel_index(agent.argmax(), agent.shape)
    assert (row, col) == (41, 20)  # y rounds to 41, x to 20
    s2 = 2 * 1.3**2
    for r, c in [(41, 20), (40, 20), (41, 21), (45, 17), (40, 23)]:
        expected = math.exp(-((c - 20.3) ** 2 + (r - 40.7) ** 2) / s2)
        assert agent[r, c] == pytest.approx(expected, rel=1e-5)
    # Far from the agent the blob has vanished; at an integer position the peak is 1.
    assert agent[5, 60] < 1e-30
    peak = np.asarray(two_rooms.render_agent(jnp.array([12.0, 50.0]), P))
    assert peak[50, 12] == pytest.approx(1.0)
    assert peak[50, 13] == pytest.approx(math.exp(-1 / s2), rel=1e-6)


def test_render_wall_channel():
    wall_x, door_y = 26.0, 40.0
    walls = np.asarray(two_rooms.render_walls(jnp.float32(wall_x), jnp.float32(door_y), P))
    assert walls.shape == (65, 65)
    assert set(np.unique(walls)) <= {0.0, 1.0}
    # Border: the outer 5 pixel rows/columns on every side (coordinates <= 4 or >= 60).
    for k in range(5):
        for line in (walls[k], walls[64 - k], walls[:, k], walls[:, 64 - k]):
            assert np.all(line == 1.0)
    # Middle wall: columns 25, 26, 27 are solid except the 9 door rows 36..44.
    for c in (25, 26, 27):
        col = walls[5:60, c]
        rows = np.arange(5, 60)
        np.testing.assert_array_equal(col, (np.abs(rows - door_y) > 4).astype(np.float32))
    # Everything else in the interior is free.
    expected = np.zeros((65, 65), np.float32)
    expected[:5], expected[60:], expected[:, :5], expected[:, 60:] = 1, 1, 1, 1
    expected[:36, 25:28] = 1
    expected[45:, 25:28] = 1
    np.testing.assert_array_equal(walls, expected)
    # render() stacks it as channel 1.
    obs = two_rooms.render(two_rooms.make_state((10.0, 10.0), wall_x, door_y), P)
    np.testing.assert_array_equal(obs[..., two_rooms.WALL_CHANNEL], expected)


def test_render_positions_batches():
    pos = jnp.array([[[10.0, 11.0], [30.5, 40.0], [50.0, 20.0]],
                     [[12.0, 13.0], [14.0, 15.0], [16.0, 17.0]]])
    walls = jnp.array([[26.0], [40.0]])
    doors = jnp.array([[20.0], [50.0]])
    obs = np.asarray(two_rooms.render_positions(pos, walls, doors, P))
    assert obs.shape == (2, 3, 65, 65, 2)
    render_one = jax.jit(lambda p, w, d: two_rooms.render(two_rooms.make_state(p, w, d), P))
    for i in range(2):
        for t in range(3):
            one = render_one(pos[i, t], walls[i, 0], doors[i, 0])
            np.testing.assert_array_equal(obs[i, t], one)


# ---------------------------------------------------------------------------------------------
# reset / step under jit and vmap.
# ---------------------------------------------------------------------------------------------


def test_reset_and_step_jit_vmap():
    n = 64
    keys = jax.random.split(jax.random.key(0), n)
    reset = jax.jit(jax.vmap(lambda k: two_rooms.reset(k, P)))
    states = reset(keys)
    pos, wx, dy = map(np.asarray, (states.pos, states.wall_x, states.door_y))
    assert pos.shape == (n, 2) and wx.shape == (n,) and states.t.dtype == jnp.int32
    np.testing.assert_array_equal(wx, np.round(wx))
    assert wx.min() >= 20 and wx.max() <= 44 and dy.min() >= 10 and dy.max() <= 54
    assert len(np.unique(wx)) > 5 and len(np.unique(dy)) > 5
    assert np.all((pos > 4) & (pos < 60))
    # sample_free_position keeps a 1 px margin from every wall.
    assert np.all(np.abs(pos[:, 0] - wx) >= 2.0 - 1e-5)
    # reset is deterministic given the key.
    again = reset(keys)
    np.testing.assert_array_equal(again.pos, pos)

    actions = np.random.default_rng(1).uniform(-3.0, 3.0, (n, 2)).astype(np.float32)
    step = jax.jit(jax.vmap(lambda k, s, a: two_rooms.step(k, s, a, P)))
    nxt = step(keys, states, actions)
    np.testing.assert_array_equal(nxt.t, np.ones(n))
    nxt_pos = np.asarray(nxt.pos)
    for i in range(n):
        ref = np_transition(pos[i], actions[i], wx[i], dy[i])
        np.testing.assert_allclose(nxt_pos[i], ref, atol=1e-4)
    np.testing.assert_array_equal(nxt.wall_x, wx)
    obs = jax.jit(jax.vmap(lambda s: two_rooms.render(s, P)))(nxt)
    assert obs.shape == (n, 65, 65, 2)


def test_fixed_layout_and_bad_action_shape():
    params = two_rooms.EnvParams(random_layout=False, wall_x=30.0, door_y=22.0)
    state = two_rooms.reset(jax.random.key(3), params)
    assert float(state.wall_x) == 30.0 and float(state.door_y) == 22.0
    with pytest.raises(AssertionError):
        two_rooms.step(jax.random.key(0), state, jnp.zeros((3,)), params)


def test_sample_free_position_side():
    @jax.jit
    def sample(key):
        keys = jax.random.split(key, 32)
        left = jax.vmap(lambda k: two_rooms.sample_free_position(k, 30.0, P, side=0))(keys)
        right = jax.vmap(lambda k: two_rooms.sample_free_position(k, 30.0, P, side=1))(keys)
        return left, right, two_rooms.room_of(left, 30.0), two_rooms.room_of(right, 30.0)

    left, right, room_left, room_right = map(np.asarray, sample(jax.random.key(5)))
    assert np.all(left[:, 0] <= 28.0) and np.all(right[:, 0] >= 32.0)
    assert np.all((left > 5.0) & (left < 59.0)) and np.all((right > 5.0) & (right < 59.0))
    np.testing.assert_array_equal(room_left, 0)
    np.testing.assert_array_equal(room_right, 1)



@pytest.mark.parametrize("door_fraction", [0.0, 1.0, 0.25])
def test_sample_positions_or_door(door_fraction):
    pos = np.asarray(two_rooms.sample_positions_or_door(jax.random.key(3), 30.0, 20.0, P, 400,
                                                        door_fraction))
    hw, dh = float(P.wall_half_width), float(P.door_half_width)
    in_gap = (np.abs(pos[:, 0] - 30.0) <= hw) & (np.abs(pos[:, 1] - 20.0) <= dh)
    in_wall_band = np.abs(pos[:, 0] - 30.0) < hw  # only door states lie inside the band
    assert not np.any(in_wall_band & ~in_gap)
    assert abs(in_gap.mean() - door_fraction) < 0.06
    assert np.all((pos >= P.low) & (pos <= P.high))

# ---------------------------------------------------------------------------------------------
# validate_params.
# ---------------------------------------------------------------------------------------------


def test_validate_params_accepts_defaults():
    two_rooms.validate_params(P)


@pytest.mark.parametrize("kwargs,match", [
    (dict(img_size=8), "img_size"),
    (dict(border=28.0), "border"),
    (dict(wall_x_range=(2.0, 44.0)), "wall_x_range"),
    (dict(wall_x_range=(20.0, 60.0)), "wall_x_range"),
    (dict(door_y_range=(50.0, 20.0)), "door_y_range"),
    (dict(action_bound=0.0), "action_bound"),
    (dict(door_half_width=0.0), "door_half_width"),
    (dict(wall_half_width=-1.0), "wall_half_width"),
])
def test_validate_params_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        two_rooms.validate_params(two_rooms.EnvParams(**kwargs))


# ---------------------------------------------------------------------------------------------
# Long random rollouts.
# ---------------------------------------------------------------------------------------------


def test_long_random_rollout_respects_walls():
    n, steps = 48, 400
    actions = (np.random.default_rng(7).normal(size=(steps, n, 2)) * 1.5).astype(np.float32)

    @jax.jit
    def episodes(key, actions):
        states = jax.vmap(lambda k: two_rooms.reset(k, P))(jax.random.split(key, n))
        # Start half of the episodes next to the door so that crossings happen often.
        near = jnp.stack([states.wall_x - 3.0, states.door_y], -1)
        start = jnp.where((jnp.arange(n) % 2 == 0)[:, None], near, states.pos)
        states = states.replace(pos=start)

        def body(s, a):
            s = jax.vmap(lambda st, ac: two_rooms.step(key, st, ac, P))(s, a)
            return s, s.pos

        final, traj = jax.lax.scan(body, states, actions)
        return states, final, jnp.concatenate([start[None], traj], 0)  # (steps+1, n, 2)

    states, final, traj = episodes(jax.random.key(7), actions)
    traj = np.asarray(traj)
    wx, dy = np.asarray(states.wall_x), np.asarray(states.door_y)
    assert np.all(np.asarray(final.t) == steps)

    assert np.all((traj > 4.0) & (traj < 60.0))
    in_slab = np.abs(traj[..., 0] - wx) <= 1.0
    assert not np.any(in_slab & (np.abs(traj[..., 1] - dy) > 4.0)), "agent inside the wall"

    p, q = traj[:-1], traj[1:]
    x0, x1 = wx - 1.0, wx + 1.0
    for face in (x0, x1):
        # Every move that crosses a face of the slab does so at a y within the door.
        cross = (p[..., 0] - face) * (q[..., 0] - face) < 0
        t = (face - p[..., 0]) / np.where(cross, q[..., 0] - p[..., 0], 1.0)
        y_at = p[..., 1] + t * (q[..., 1] - p[..., 1])
        assert np.all(np.abs(y_at[cross] - np.broadcast_to(dy, y_at.shape)[cross]) <= 4.0 + 1e-4)
    room = (traj[..., 0] > wx).astype(int)
    changes = room[1:] != room[:-1]
    crossings = int(changes.sum())
    # Room changes only happen with the agent at the door's rows (crossing x = wall_x).
    t = (wx - p[..., 0]) / np.where(changes, q[..., 0] - p[..., 0], 1.0)
    y_mid = p[..., 1] + t * (q[..., 1] - p[..., 1])
    assert np.all(np.abs(y_mid[changes] - np.broadcast_to(dy, y_mid.shape)[changes]) <= 4.0)
    assert crossings > 20  # the test is not vacuous
    stuck = np.all(p == q, axis=-1).mean()
    assert 0.01 < stuck < 0.9  # blocked moves happen, but the agent mostly moves
