r"""H-JEPA on procedurally generated mazes (issue 5): a two-level world model and planning.

Run:
  python -m jepa_jax.train --config experiments/mazes.py --workdir runs/mazes
  python -m jepa_jax.evaluate --workdir runs/mazes --planner hierarchical
  python -m jepa_jax.evaluate --workdir runs/mazes --planner gradient
Presets (``--config experiments/mazes.py:<preset>``):
  default  5x5-cell mazes, 20 training layouts; a few CPU-minutes of training
  tiny     seconds; for tests and smoke runs
Override any value, e.g. ``--config.env.num_train_layouts=40 --config.train.num_steps=600``.
Evaluation is always on held-out layouts (seeds >= env.heldout_offset), with start and
goal at least ``planning.min_cells`` cells apart along the corridors.
"""

import ml_collections


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    preset = preset or "default"
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0

    # jepa_jax/envs/mazes.py: 5x5 cells of 6 px (31x31 images), spanning-tree mazes.
    c.env = ml_collections.ConfigDict(dict(
        name="mazes", grid=5, cell_px=6, braid=0.0, action_bound=1.2, dot_std=1.0,
        num_train_layouts=20, heldout_offset=1_000_000, wall_clearance=0.5))

    # Random walks that re-draw their heading after a blocked move (jepa_jax/data/mazes.py).
    c.data = ml_collections.ConfigDict(dict(
        num_trajectories=4096, length=33, step_min=0.3, step_max=1.0, angle_noise=0.3,
        push_prob=0.5))

    # Level 1: the Core JEPA (see experiments/two_rooms.py for what each key does), plus an
    # egocentric 7x7 glimpse of the wall channel around the agent keypoint (local walls, the
    # same function of the pixels in every layout) and the wall channel every 3rd pixel (a
    # raw map of the maze; both parameter-free, see ConvEncoder). keypoint_log_eps: the
    # keypoint is the blob's sub-pixel centre (the grid level 2 reads the agent's square
    # from it; a keypoint snapped to the nearest pixel put agents beside a wall across it).
    c.model = ml_collections.ConfigDict(dict(
        encoder="conv", stem_factor=2, channels=(16,), num_keypoints=1, global_dim=24,
        keypoint_scale=6.0, keypoint_channels=(0,), keypoint_kernel=1,
        keypoint_init_temperature=1.0, keypoint_log_eps=1e-6, layout_keypoints=0,
        layout_channels=(),
        layout_kernel=5, glimpse_radius=3, glimpse_channels=(1,), map_stride=3, latent_dim=0,
        mlp_hidden=(128,), predictor_hidden=(128, 128),
        action_scale=1.0, z_dim=0, inverse_dynamics_hidden=(64,), compute_dtype="float32"))
    c.loss = ml_collections.ConfigDict(dict(
        name="jepa", sim_coeff=100.0, std_coeff=10.0, cov_coeff=1.0, regularizer="vicreg",
        sigreg_coeff=1.0, num_projections=64, idm_coeff=20.0, smoothness_coeff=10.0,
        straightness_coeff=0.0, temporal_std_coeff=1.0,
        pred_grad_scale_keypoints=0.05, pred_grad_scale_global=1.0))

    # Level 2: k level-1 steps per abstract step. kind="grid" (jepa_jax/hierarchy_grid.py):
    # the abstract state is the agent's occupancy on the level-1 wall map's grid, and a conv
    # net predicts where it goes k steps ahead (grid_hidden: its layers). kind="mlp"
    # (jepa_jax/hierarchy.py): an MLP abstract state and predictor (the other keys);
    # keep_all passes the whole level-1 embedding (position, glimpse, map) into it.
    c.level2 = ml_collections.ConfigDict(dict(
        kind="grid", grid_hidden=(32, 32, 32, 32, 32),
        span=8, latent_dim=16, action_dim=4, hidden=(128,), predictor_hidden=(256, 256),
        posterior_hidden=(128,), keep_keypoints=True, keep_all=True,
        sim_coeff=25.0, std_coeff=10.0, cov_coeff=1.0, kl_coeff=0.05,
        posterior_sees_outcome=True))

    # Stage 1 trains level 1 on windows of ``window`` frames; stage 2 trains level 2 on the
    # frozen level-1 embeddings of whole trajectories.
    c.train = ml_collections.ConfigDict(dict(
        batch_size=32, window=9, num_steps=1500, learning_rate=3e-3, grad_clip=1.0,
        level2_steps=3000, level2_batch_size=128, level2_learning_rate=1e-3, log_every=250))

    # Closed-loop evaluation (python -m jepa_jax.evaluate --planner gradient|hierarchical).
    c.planning = ml_collections.ConfigDict(dict(
        episodes=100, env_steps=160, replan_every=4, seed=2024, batch_size=100, min_cells=6,
        max_cells=0,
        success_radius=1.5, heldout_layouts=100, layouts="heldout", cost_raw_pixels=True))
    c.planning.cost = ml_collections.ConfigDict(dict(
        goal_weight=1.0, goal_mode="dense", goal_discount=0.9, action_weight=0.0))
    # Flat Mode-2 baseline: gradient MPC on level 1 alone.
    c.planning.gradient = ml_collections.ConfigDict(dict(
        horizon=32, num_iters=20, num_restarts=8, optimizer="adam", learning_rate=0.3,
        bound_mode="project", action_noise=0.0, restart_init="segments", restart_std=2.0))
    # Hierarchical: level 2 plans ``high_horizon`` abstract steps by gradient; level 1
    # reaches the first subgoal with gradient MPC over ``horizon`` steps.
    c.planning.hierarchical = ml_collections.ConfigDict(dict(
        high_horizon=6, high_iters=30, high_restarts=16, high_learning_rate=0.3,
        high_action_bound=3.0, high_discount=0.7, horizon=12, num_iters=20, num_restarts=8,
        learning_rate=0.3, restart_init="segments", goal_weight=0.2))
    # With level2.kind="grid" (jepa_jax/planning/hierarchical_grid.py): level 2 runs value
    # iteration over its predicted transitions for high_directions abstract actions at
    # high_step x the action bound, and its greedy rollout gives the subgoals; level 1
    # reaches the first one by gradient MPC over ``horizon`` steps.
    c.planning.hierarchical_grid = ml_collections.ConfigDict(dict(
        high_directions=8, high_steps=(0.4, 0.2, 0.1), vi_sweeps=60, high_horizon=6,
        near_goal=1.5,
        horizon=12, num_iters=20, num_restarts=8, learning_rate=0.3,
        restart_init="segments", goal_weight=0.0, low_discount=0.9))

    if preset == "tiny":
        c.env.update(grid=4, cell_px=6, action_bound=1.0, num_train_layouts=3)
        c.data.update(num_trajectories=64, length=17)
        c.model.update(channels=(4,), global_dim=8, predictor_hidden=(32,),
                       inverse_dynamics_hidden=(16,))
        c.level2.update(span=4, grid_hidden=(8, 8), latent_dim=4, action_dim=2, hidden=(16,),
                        predictor_hidden=(16,), posterior_hidden=(16,))
        c.train.update(batch_size=8, window=5, num_steps=4, level2_steps=4,
                       level2_batch_size=16, log_every=2)
        c.planning.update(episodes=2, env_steps=8, batch_size=2, min_cells=3,
                          heldout_layouts=2)
        c.planning.gradient.update(horizon=4, num_iters=2, num_restarts=2)
        c.planning.hierarchical.update(high_horizon=2, high_iters=2, high_restarts=2,
                                       horizon=4, num_iters=2, num_restarts=2)
        c.planning.hierarchical_grid.update(vi_sweeps=8, high_horizon=2, horizon=4,
                                            num_iters=2, num_restarts=2)
    elif preset != "default":
        raise ValueError(f"unknown preset {preset!r}; expected default or tiny")
    return c
