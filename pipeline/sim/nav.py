"""NavigationAgent: reach a target around obstacles (the guide's `nav-001`)."""
from __future__ import annotations

import numpy as np

from pipeline.sim import arena
from pipeline.sim.world import SimSpec, StepOutcome, World

N_OBSTACLES = 3
OBSTACLE_RADIUS = 0.18
TARGET_RADIUS = 0.1
SPEED = 0.08


class NavWorld(World):
    spec = SimSpec(
        behavior_name="NavigationAgent",
        # raycast + velocity are the guide's observation space; target (relative position,
        # like a Unity agent's `target.localPosition - transform.localPosition`) makes it solvable.
        observations=(("raycast", arena.N_RAYS), ("velocity", 2), ("target", 2)),
        action_size=2,
        max_episode_steps=150,
        description="Navigate around obstacles to a target.",
    )

    def __init__(self, n_areas: int, rng: np.random.Generator):
        super().__init__(n_areas, rng)
        self.pos = np.zeros((n_areas, 2))
        self.vel = np.zeros((n_areas, 2))
        self.target = np.zeros((n_areas, 2))
        self.centers = np.zeros((n_areas, N_OBSTACLES, 2))
        self.radii = np.full((n_areas, N_OBSTACLES), OBSTACLE_RADIUS)
        self.reset(np.ones(n_areas, dtype=bool))

    def reset(self, mask: np.ndarray) -> None:
        idx = np.nonzero(mask)[0]
        if not len(idx):
            return
        m, rng = len(idx), self.rng
        none = np.zeros((m, 0, 2)), np.zeros((m, 0))
        start = arena.sample_free_points(rng, m, *none, clearance=0.0, margin=0.15)
        target = arena.sample_free_points(rng, m, *none, clearance=0.0, avoid=start, min_dist=1.0, margin=0.15)
        # One obstacle sits on the straight line so the agent has to go around it.
        centers = np.zeros((m, N_OBSTACLES, 2))
        centers[:, 0] = (start + target) / 2 + rng.normal(0, 0.05, size=(m, 2))
        for k in range(1, N_OBSTACLES):
            placed = arena.sample_free_points(rng, m, centers[:, :k], np.full((m, k), 2 * OBSTACLE_RADIUS),
                                              clearance=0.0)
            centers[:, k] = placed
        # Keep start and target clear of every obstacle by nudging obstacles away from them.
        for point in (start, target):
            d = centers - point[:, None, :]
            dist = np.linalg.norm(d, axis=-1, keepdims=True)
            need = OBSTACLE_RADIUS + 0.12
            centers = np.where(dist < need, point[:, None, :] + d / np.maximum(dist, 1e-6) * need, centers)
        self.pos[idx], self.target[idx], self.centers[idx] = start, target, centers
        self.vel[idx] = 0.0

    def observe(self) -> list[np.ndarray]:
        rays = arena.raycast(self.pos, self.centers, self.radii)
        return [rays.astype(np.float32), self.vel.astype(np.float32), ((self.target - self.pos) / 2).astype(np.float32)]

    def act(self, actions: np.ndarray) -> StepOutcome:
        before = np.linalg.norm(self.target - self.pos, axis=1)
        self.vel = np.clip(0.7 * self.vel + 0.3 * np.clip(actions, -1, 1), -1, 1)
        self.pos, self.vel, touched, _ = arena.move(self.pos, self.vel, self.centers, self.radii, SPEED)
        after = np.linalg.norm(self.target - self.pos, axis=1)
        success = after < TARGET_RADIUS
        reward = 1.0 * (before - after) - 0.002 - 0.01 * touched + 1.0 * success
        return StepOutcome(reward=reward, terminal=success, success=success)

    def layout(self, area: int) -> dict:
        return {"obstacles": self.centers[area].tolist(), "radii": self.radii[area].tolist(),
                "goals": self.target[area][None].tolist()}

    def positions(self) -> np.ndarray:
        return self.pos

    @staticmethod
    def heuristic(obs: list[np.ndarray]) -> np.ndarray:
        rays, vel, to_target = obs
        return arena.steer_heuristic(to_target * 2, rays, vel, near=0.15, repulsion=0.5)
