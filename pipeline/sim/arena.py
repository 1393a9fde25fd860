"""Shared 2-D arena geometry for the built-in simulations.

Every simulation is a batch of independent training areas (the analogue of the
copies of a training area in an ML-Agents example scene), stepped together with
NumPy. The arena is the square [-1, 1]^2 with walls and circular obstacles.
"""
from __future__ import annotations

import numpy as np

N_RAYS = 8
RAY_LENGTH = 2.0
AGENT_RADIUS = 0.05
# Rays are sphere casts, like Unity's RayPerceptionSensor "Sphere Cast Radius": thin rays 45 degrees
# apart would let a nearby obstacle hide between two of them.
CAST_RADIUS = 0.08
# Eight world-frame ray directions, like a RayPerceptionSensor with 8 rays over 360 degrees.
RAY_DIRECTIONS = np.stack(
    [np.cos(np.arange(N_RAYS) * 2 * np.pi / N_RAYS), np.sin(np.arange(N_RAYS) * 2 * np.pi / N_RAYS)],
    axis=1,
)


def raycast(pos: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised hit distance (0 = touching, 1 = nothing within RAY_LENGTH) of 8 rays per area.

    pos: (n, 2); centers: (n, k, 2); radii: (n, k). Returns (n, 8).
    """
    d = RAY_DIRECTIONS[None, :, :]  # (1, 8, 2)
    p = pos[:, None, :]  # (n, 1, 2)
    # Walls: distance along each ray to x=+-1 and y=+-1.
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(d[..., 0] > 1e-9, (1 - p[..., 0]) / d[..., 0],
                      np.where(d[..., 0] < -1e-9, (-1 - p[..., 0]) / d[..., 0], np.inf))
        ty = np.where(d[..., 1] > 1e-9, (1 - p[..., 1]) / d[..., 1],
                      np.where(d[..., 1] < -1e-9, (-1 - p[..., 1]) / d[..., 1], np.inf))
    t = np.minimum(tx, ty)  # (n, 8)
    if centers.shape[1]:
        oc = p[:, :, None, :] - centers[:, None, :, :]  # (n, 1, k, 2)
        b = np.sum(oc * d[:, :, None, :], axis=-1)  # (n, 8, k)
        c = np.sum(oc * oc, axis=-1) - (radii[:, None, :] + CAST_RADIUS) ** 2  # (n, 1, k)
        disc = b * b - c
        hit = disc >= 0
        t_hit = -b - np.sqrt(np.where(hit, disc, 0.0))
        t_hit = np.where(hit & (t_hit >= 0), t_hit, np.inf)
        t = np.minimum(t, t_hit.min(axis=-1))
    return np.clip((t - AGENT_RADIUS) / RAY_LENGTH, 0.0, 1.0)


def move(pos: np.ndarray, vel: np.ndarray, centers: np.ndarray, radii: np.ndarray, speed: float):
    """Integrate one step; agents slide along walls and obstacles instead of passing through.

    Returns new position, new velocity and a (n,) bool of which areas' agents touched something.
    """
    new = pos + vel * speed
    lim = 1.0 - AGENT_RADIUS
    hit_wall = np.any(np.abs(new) > lim, axis=1)
    vel = np.where(np.abs(new) > lim, 0.0, vel)
    new = np.clip(new, -lim, lim)
    hit_obstacle = np.zeros(len(pos), dtype=bool)
    if centers.shape[1]:
        delta = new[:, None, :] - centers  # (n, k, 2)
        dist = np.linalg.norm(delta, axis=-1)
        min_d = radii + AGENT_RADIUS
        inside = dist < min_d
        hit_obstacle = inside.any(axis=1)
        if hit_obstacle.any():
            safe = np.maximum(dist, 1e-9)[..., None]
            pushed = centers + delta / safe * min_d[..., None]
            # Push out of the (at most one, obstacles do not overlap) obstacle we entered.
            idx = np.argmax(inside, axis=1)
            rows = np.nonzero(hit_obstacle)[0]
            new[rows] = pushed[rows, idx[rows]]
            normal = delta[rows, idx[rows]] / safe[rows, idx[rows]]
            into = np.sum(vel[rows] * normal, axis=1, keepdims=True)
            vel[rows] = vel[rows] - np.minimum(into, 0.0) * normal
    return new, vel, hit_wall | hit_obstacle, hit_obstacle


def sample_free_points(rng: np.random.Generator, n: int, centers: np.ndarray, radii: np.ndarray,
                       clearance: float, avoid: np.ndarray | None = None, min_dist: float = 0.0,
                       margin: float = 0.1) -> np.ndarray:
    """Rejection-sample one point per area outside obstacles (and at least min_dist from `avoid`)."""
    out = np.zeros((n, 2))
    todo = np.arange(n)
    for _ in range(200):
        cand = rng.uniform(-1 + margin, 1 - margin, size=(len(todo), 2))
        ok = np.ones(len(todo), dtype=bool)
        if centers.shape[1]:
            d = np.linalg.norm(cand[:, None, :] - centers[todo], axis=-1)
            ok &= np.all(d > radii[todo] + clearance, axis=1)
        if avoid is not None:
            ok &= np.linalg.norm(cand - avoid[todo], axis=1) >= min_dist
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
        if not len(todo):
            return out
    out[todo] = rng.uniform(-1 + margin, 1 - margin, size=(len(todo), 2))
    return out


def steer_heuristic(to_goal: np.ndarray, rays: np.ndarray, vel: np.ndarray,
                    near: float = 0.15, repulsion: float = 1.0) -> np.ndarray:
    """Scripted controller (the analogue of an Agent's Heuristic()): seek the goal, veer from near hits.

    near: ray reading under which a hit counts as close; repulsion: how hard to push away from it.
    """
    desired = to_goal / np.maximum(np.linalg.norm(to_goal, axis=1, keepdims=True), 1e-6)
    closeness = np.clip(near - rays, 0.0, None) / near  # (n, 8): 1 when touching
    repulse = -repulsion * (closeness[:, :, None] * RAY_DIRECTIONS[None]).sum(axis=1)
    # Always pass what blocks the way on the same side, so the agent never dithers head-on.
    tangent = np.stack([-desired[:, 1], desired[:, 0]], axis=1)
    ahead = np.clip((RAY_DIRECTIONS[None] @ desired[:, :, None])[..., 0], 0.0, None)
    blocked = (closeness * ahead).max(axis=1, keepdims=True)
    return np.clip(desired + repulse + tangent * blocked - 0.3 * vel, -1.0, 1.0)
