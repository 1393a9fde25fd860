"""PatrolAgent: visit waypoints in order while avoiding collisions (the guide's `agent-1`)."""
from __future__ import annotations

import numpy as np

from pipeline.sim import arena
from pipeline.sim.world import SimSpec, StepOutcome, World

N_WAYPOINTS = 3
N_OBSTACLES = 2
OBSTACLE_RADIUS = 0.15
WAYPOINT_RADIUS = 0.12
SPEED = 0.08
NEAR_DISTANCE = 0.1  # clearance under which the agent is penalised for being close to an obstacle


class PatrolWorld(World):
    spec = SimSpec(
        behavior_name="PatrolAgent",
        # waypoint: the next waypoint relative to the agent; progress: fraction of the route done.
        observations=(("raycast", arena.N_RAYS), ("velocity", 2), ("waypoint", 2), ("progress", 1)),
        action_size=2,
        max_episode_steps=250,
        description="Patrol waypoints while avoiding collisions.",
    )

    def __init__(self, n_areas: int, rng: np.random.Generator):
        super().__init__(n_areas, rng)
        self.pos = np.zeros((n_areas, 2))
        self.vel = np.zeros((n_areas, 2))
        self.waypoints = np.zeros((n_areas, N_WAYPOINTS, 2))
        self.next = np.zeros(n_areas, dtype=int)
        self.centers = np.zeros((n_areas, N_OBSTACLES, 2))
        self.radii = np.full((n_areas, N_OBSTACLES), OBSTACLE_RADIUS)
        self.reset(np.ones(n_areas, dtype=bool))

    def reset(self, mask: np.ndarray) -> None:
        idx = np.nonzero(mask)[0]
        if not len(idx):
            return
        m, rng = len(idx), self.rng
        centers = np.zeros((m, N_OBSTACLES, 2))
        for k in range(N_OBSTACLES):
            centers[:, k] = arena.sample_free_points(rng, m, centers[:, :k], np.full((m, k), 2 * OBSTACLE_RADIUS),
                                                     clearance=0.0, margin=0.3)
        radii = np.full((m, N_OBSTACLES), OBSTACLE_RADIUS)
        pos = arena.sample_free_points(rng, m, centers, radii, clearance=0.15)
        wps = np.zeros((m, N_WAYPOINTS, 2))
        prev = pos
        for k in range(N_WAYPOINTS):
            wps[:, k] = arena.sample_free_points(rng, m, centers, radii, clearance=0.15, avoid=prev, min_dist=0.6)
            prev = wps[:, k]
        self.pos[idx], self.waypoints[idx], self.centers[idx] = pos, wps, centers
        self.vel[idx], self.next[idx] = 0.0, 0

    def _current(self) -> np.ndarray:
        return self.waypoints[np.arange(self.n), np.minimum(self.next, N_WAYPOINTS - 1)]

    def observe(self) -> list[np.ndarray]:
        rays = arena.raycast(self.pos, self.centers, self.radii)
        to_wp = (self._current() - self.pos) / 2
        progress = (self.next / N_WAYPOINTS)[:, None]
        return [a.astype(np.float32) for a in (rays, self.vel, to_wp, progress)]

    def act(self, actions: np.ndarray) -> StepOutcome:
        before = np.linalg.norm(self._current() - self.pos, axis=1)
        self.vel = np.clip(0.7 * self.vel + 0.3 * np.clip(actions, -1, 1), -1, 1)
        self.pos, self.vel, _, collided = arena.move(self.pos, self.vel, self.centers, self.radii, SPEED)
        after = np.linalg.norm(self._current() - self.pos, axis=1)
        reached = after < WAYPOINT_RADIUS
        # Brushing past an obstacle costs a little, so avoidance is learnt before the first crash.
        gaps = np.linalg.norm(self.pos[:, None] - self.centers, axis=-1) - self.radii
        clearance = np.min(gaps, axis=1) - arena.AGENT_RADIUS
        near = np.clip(1.0 - clearance / NEAR_DISTANCE, 0.0, 1.0)
        reward = 1.0 * (before - after) - 0.002 + 0.5 * reached - 1.0 * collided - 0.05 * near
        self.next = self.next + reached
        done_route = self.next >= N_WAYPOINTS
        # A collision ends the patrol as a failure: the point of the task is to never touch anything.
        terminal = done_route | collided
        return StepOutcome(reward=reward, terminal=terminal, success=done_route & ~collided)

    def layout(self, area: int) -> dict:
        return {"obstacles": self.centers[area].tolist(), "radii": self.radii[area].tolist(),
                "goals": self.waypoints[area].tolist()}

    def positions(self) -> np.ndarray:
        return self.pos

    @staticmethod
    def heuristic(obs: list[np.ndarray]) -> np.ndarray:
        rays, vel, to_wp, _ = obs
        return arena.steer_heuristic(to_wp * 2, rays, vel, near=0.06, repulsion=1.0)
