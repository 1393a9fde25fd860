"""ForagerAgent: collect the good items on a small grid, leave the bad ones, never walk into a wall.

Discrete actions in two branches, as a Unity agent with `Discrete Branches = [5, 2]`: a move
(stay, up, down, left, right) and whether to pick up what lies on the agent's cell. Moves into a
wall and picking up on an empty cell are masked (Agent.WriteDiscreteActionMask), so the policy never
wastes a step on them. Walking over a bad item is harmless; picking one up ends the episode.
"""
from __future__ import annotations

import numpy as np

from pipeline.sim.world import SimSpec, StepOutcome, World

SIZE = 7  # cells per side
N_WALLS = 4  # wall cells inside the grid, besides its border
N_GOOD = 3
N_BAD = 3
MAX_STEPS = 60
STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]])  # (dx, dy) of each move
EMPTY, WALL, GOOD, BAD = 0, 1, 2, 3


class ForageWorld(World):
    spec = SimSpec(
        behavior_name="ForagerAgent",
        # good/bad: offset to the nearest item of the kind (0 when none is left); here: what lies on the
        # agent's cell; walls: whether up, down, left, right is blocked (what the move mask says).
        observations=(("good", 2), ("bad", 2), ("here", 2), ("walls", 4)),
        action_size=0,
        max_episode_steps=MAX_STEPS,
        description="Collect the good items on a grid and leave the bad ones; moves into walls are masked.",
        action_branches=(5, 2),
    )

    def __init__(self, n_areas: int, rng: np.random.Generator):
        super().__init__(n_areas, rng)
        self.grid = np.zeros((n_areas, SIZE, SIZE), dtype=np.int8)  # [area, x, y]
        self.pos = np.zeros((n_areas, 2), dtype=int)
        self.reset(np.ones(n_areas, dtype=bool))

    def reset(self, mask: np.ndarray) -> None:
        for a in np.nonzero(mask)[0]:
            cells = self.rng.permutation(SIZE * SIZE)[: N_WALLS + N_GOOD + N_BAD + 1]
            grid = np.zeros(SIZE * SIZE, dtype=np.int8)
            grid[cells[:N_WALLS]] = WALL
            grid[cells[N_WALLS:N_WALLS + N_GOOD]] = GOOD
            grid[cells[N_WALLS + N_GOOD:-1]] = BAD
            self.grid[a] = grid.reshape(SIZE, SIZE)
            self.pos[a] = divmod(int(cells[-1]), SIZE)

    def _blocked(self) -> np.ndarray:
        """(n, 5): the move would leave the grid or enter a wall cell."""
        target = self.pos[:, None, :] + MOVES[None]
        outside = np.any((target < 0) | (target >= SIZE), axis=-1)
        t = np.clip(target, 0, SIZE - 1)
        wall = self.grid[np.arange(self.n)[:, None], t[..., 0], t[..., 1]] == WALL
        return outside | wall

    def _here(self) -> np.ndarray:
        return self.grid[np.arange(self.n), self.pos[:, 0], self.pos[:, 1]]

    def _nearest(self, kind: int) -> np.ndarray:
        """Offset (n, 2) to the nearest item of `kind` by steps on the grid (0, 0 when none is left)."""
        out = np.zeros((self.n, 2))
        for a in range(self.n):
            xs, ys = np.nonzero(self.grid[a] == kind)
            if len(xs):
                d = np.abs(xs - self.pos[a, 0]) + np.abs(ys - self.pos[a, 1])
                k = int(np.argmin(d))
                out[a] = (xs[k] - self.pos[a, 0], ys[k] - self.pos[a, 1])
        return out

    def observe(self) -> list[np.ndarray]:
        here = self._here()
        blocked = self._blocked()[:, 1:]
        return [(self._nearest(GOOD) / (SIZE - 1)).astype(np.float32),
                (self._nearest(BAD) / (SIZE - 1)).astype(np.float32),
                np.stack([here == GOOD, here == BAD], axis=1).astype(np.float32), blocked.astype(np.float32)]

    def action_masks(self) -> list[np.ndarray]:
        return [self._blocked(), np.stack([np.zeros(self.n, bool), self._here() == EMPTY], axis=1)]

    def act(self, actions: np.ndarray) -> StepOutcome:
        actions = np.asarray(actions, dtype=int).reshape(self.n, 2)
        rows = np.arange(self.n)
        here = self._here()
        pick = actions[:, 1] == 1
        good, bad = pick & (here == GOOD), pick & (here == BAD)
        self.grid[rows[pick], self.pos[pick, 0], self.pos[pick, 1]] = EMPTY
        # A masked move (Unity would still run it) is refused by the wall: the agent stays put.
        move = np.where(self._blocked()[rows, actions[:, 0]], STAY, actions[:, 0])
        self.pos = self.pos + MOVES[move]
        success = good & ~np.any(self.grid.reshape(self.n, -1) == GOOD, axis=1)
        reward = 1.0 * good - 1.0 * bad - 0.01
        return StepOutcome(reward=reward, terminal=success | bad, success=success)

    def layout(self, area: int) -> dict:
        def centre(cells):
            return [[(x + 0.5) / SIZE * 2 - 1, (y + 0.5) / SIZE * 2 - 1] for x, y in cells]

        walls = np.argwhere(self.grid[area] == WALL)
        return {"obstacles": centre(walls), "radii": [1.0 / SIZE] * len(walls),
                "goals": centre(np.argwhere(self.grid[area] == GOOD)) or [[0.0, 0.0]]}

    def positions(self) -> np.ndarray:
        return (self.pos + 0.5) / SIZE * 2 - 1

    @staticmethod
    def heuristic(obs: list[np.ndarray], masks: list[np.ndarray] | None = None) -> np.ndarray:
        """Pick up a good item underfoot; otherwise step towards the nearest good item along a free axis."""
        good, _, here, walls = obs
        n = len(good)
        blocked = np.concatenate([np.zeros((n, 1), bool), walls > 0.5], axis=1)  # (n, 5), stay never blocked
        if masks is not None:
            blocked = blocked | masks[0]
        dx, dy = good[:, 0], good[:, 1]
        # Preference order: the longer axis first, then the shorter, then any free move.
        first = np.where(np.abs(dx) >= np.abs(dy), np.where(dx > 0, RIGHT, LEFT), np.where(dy > 0, UP, DOWN))
        second = np.where(np.abs(dx) >= np.abs(dy), np.where(dy > 0, UP, DOWN), np.where(dx > 0, RIGHT, LEFT))
        useful_second = np.where(np.abs(dx) >= np.abs(dy), np.abs(dy) > 0, np.abs(dx) > 0)
        rows = np.arange(n)
        move = np.full(n, STAY)
        fallback = np.argmax(~blocked[:, 1:], axis=1) + 1  # the first free move
        move = np.where(~blocked[rows, first], first,
                        np.where(useful_second & ~blocked[rows, second], second, fallback))
        on_good = here[:, 0] > 0.5
        move = np.where(on_good, STAY, move)
        return np.stack([move, on_good.astype(int)], axis=1)
