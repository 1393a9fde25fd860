"""PushBlockTeam: a group of agents pushes a block too heavy for one of them into the goal strip.

In the spirit of ML-Agents' Cooperative Push Block: three agents per area form a MultiAgentGroup,
the block moves only while at least two of them push it the same way, and the only reward is the
group's (block progress and success, minus a small time penalty), so no agent can tell from its
own reward whether it helped. Agents see themselves, the block and the goal, not each other.
"""
from __future__ import annotations

import numpy as np

from pipeline.sim.arena import AGENT_RADIUS
from pipeline.sim.world import SimSpec, StepOutcome, World

AGENTS = 3
PUSHERS_NEEDED = 2  # the block is too heavy for one agent
BLOCK_RADIUS = 0.15
GOAL_Y = 0.6  # the block scores once its centre is in the strip y >= GOAL_Y
SPEED = 0.06
BLOCK_FACTOR = 0.8  # block displacement per unit of the pushers' mean push
MAX_STEPS = 150
LIMIT = 1.0 - AGENT_RADIUS


class PushWorld(World):
    spec = SimSpec(
        behavior_name="PushBlockTeam",
        # position: the agent's own; block: block relative to the agent; goal: how far the block still has to go.
        observations=(("position", 2), ("block", 2), ("goal", 1)),
        action_size=2,
        max_episode_steps=MAX_STEPS,
        description="Push a heavy block into the goal together: it moves only when two agents push.",
        agents_per_area=AGENTS,
    )

    def __init__(self, n_areas: int, rng: np.random.Generator):
        super().__init__(n_areas, rng)
        self.agents = np.zeros((n_areas, AGENTS, 2))
        self.block = np.zeros((n_areas, 2))
        self.reset(np.ones(n_areas, dtype=bool))

    def reset(self, mask: np.ndarray) -> None:
        idx = np.nonzero(mask)[0]
        if not len(idx):
            return
        m, rng = len(idx), self.rng
        self.block[idx] = np.stack([rng.uniform(-0.5, 0.5, m), rng.uniform(-0.35, 0.05, m)], axis=1)
        self.agents[idx] = np.stack([rng.uniform(-0.9, 0.9, (m, AGENTS)), rng.uniform(-0.85, -0.55, (m, AGENTS))],
                                    axis=2)

    def observe(self) -> list[np.ndarray]:
        pos = self.agents.reshape(-1, 2)
        block = np.repeat(self.block, AGENTS, axis=0)
        goal = np.maximum(GOAL_Y - block[:, 1:], 0.0)
        return [pos.astype(np.float32), ((block - pos) / 2).astype(np.float32), goal.astype(np.float32)]

    def act(self, actions: np.ndarray) -> StepOutcome:
        step = np.clip(actions, -1, 1).reshape(self.n, AGENTS, 2) * SPEED
        contact = BLOCK_RADIUS + AGENT_RADIUS
        gap_before = np.maximum(np.linalg.norm(self.agents - self.block[:, None, :], axis=-1) - contact, 0.0)
        new = np.clip(self.agents + step, -LIMIT, LIMIT)
        # Agents cannot enter the block: one moving into it stays on its surface and pushes along the normal.
        delta = new - self.block[:, None, :]
        dist = np.linalg.norm(delta, axis=-1)
        inside = dist < contact
        normal = delta / np.maximum(dist, 1e-9)[..., None]  # block centre -> agent
        into = -np.sum(step * normal, axis=-1)  # how hard the agent pushes towards the centre
        new = np.where(inside[..., None], self.block[:, None, :] + normal * contact, new)
        pushing = inside & (into > 0)
        count = pushing.sum(axis=1)
        push = -(normal * (into * pushing)[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
        moves = count >= PUSHERS_NEEDED
        before = self.block.copy()
        block_lim = 1.0 - BLOCK_RADIUS
        self.block = np.where(moves[:, None], np.clip(before + BLOCK_FACTOR * push, -block_lim, block_lim), before)
        # The moved block carries its pushers along, so they stay in contact.
        shift = self.block - before
        self.agents = np.clip(np.where(pushing[..., None], new + shift[:, None, :], new), -LIMIT, LIMIT)
        # Approaching the block is rewarded to the group too: sum of every agent's progress, so an agent's
        # own part of it is drowned in its teammates' (what MA-POCA's per-agent baseline sorts out).
        gap_after = np.maximum(np.linalg.norm(self.agents - self.block[:, None, :], axis=-1) - contact, 0.0)
        approach = (gap_before - gap_after).sum(axis=1)
        success = self.block[:, 1] >= GOAL_Y
        progress = np.clip(self.block[:, 1], None, GOAL_Y) - np.clip(before[:, 1], None, GOAL_Y)
        group = 0.3 * approach + 1.0 * progress - 0.5 / MAX_STEPS + 1.0 * success
        return StepOutcome(reward=np.zeros(self.n * AGENTS), terminal=success, success=success, group_reward=group)

    def layout(self, area: int) -> dict:
        return {"obstacles": [], "radii": [], "goals": [[float(self.block[area, 0]), GOAL_Y]]}

    def positions(self) -> np.ndarray:
        return self.block

    @staticmethod
    def heuristic(obs: list[np.ndarray]) -> np.ndarray:
        """Go to the spot just below the block (around its side if above it), then push straight up."""
        _, rel, _ = obs
        rel = rel.astype(np.float64) * 2  # agent -> block centre
        to_spot = rel - np.array([0.0, BLOCK_RADIUS + AGENT_RADIUS + 0.01])
        go = to_spot / np.maximum(np.abs(to_spot).max(axis=1, keepdims=True), SPEED)
        # Higher than the block's bottom and in its way: step sideways and down first.
        blocked = (rel[:, 1] < BLOCK_RADIUS) & (np.abs(rel[:, 0]) < BLOCK_RADIUS + 2 * AGENT_RADIUS)
        side = np.where(rel[:, 0] > 0, -1.0, 1.0)
        go = np.where(blocked[:, None], np.stack([side, -np.ones(len(rel))], axis=1), go)
        in_place = np.linalg.norm(to_spot, axis=1) < 0.04
        go = np.where(in_place[:, None], np.array([0.0, 1.0]), go)
        return np.clip(go, -1.0, 1.0).astype(np.float32)
