"""The peer: stable-baselines3 PPO on the same nav simulation and hyperparameters as our PPO.

    python scripts/bench_peer_sb3.py --steps 150000 --out result.json   # bench-only (requirements-bench.txt)

Same settings as conf/algorithm/ppo.yaml: 2x128 hidden layers with ML-Agents' activation (Swish = SiLU; SB3's
default would be tanh), buffer 8192 (16 areas x 512 steps), batch 512, 3 epochs,
lr 3e-4, clip 0.2 and entropy 0.005 with ML-Agents' linear decay of lr and clip, gamma 0.99, lambda 0.95,
observation normalisation (ML-Agents' `normalize: true` ~ VecNormalize without reward scaling),
separate policy and value networks. One process, 16 areas stepped as one vectorised batch.
Torch runs as many intra-op threads as ML-Agents gives itself (mlagents.torch_utils: half the cores, 1 here);
torch's own default (all cores) spins its threads against each other on a loaded 2-core box (SB3 measured
91 steps/s at load 19 with 2 threads, 1,836 with 1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_vec_env(asset: str, areas: int, seed: int):
    """A gymnasium-style SB3 VecEnv over one of our vectorised simulations (no ML-Agents in between)."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv

    from pipeline.sim import simulation

    world_cls = simulation(asset)
    spec = world_cls.spec
    obs_size = sum(size for _, size in spec.observations)

    class SimVecEnv(VecEnv):
        def __init__(self):
            super().__init__(areas, gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32),
                             gym.spaces.Box(-1.0, 1.0, (spec.action_size,), np.float32))
            self.world = world_cls(areas, np.random.default_rng(seed))
            self.length = np.zeros(areas, dtype=int)
            self.episode_reward = np.zeros(areas)
            self.successes: list[tuple[int, bool]] = []  # (global step at the end, success)
            self.steps = 0
            self._actions = None

        def _obs(self) -> np.ndarray:
            return np.concatenate(self.world.observe(), axis=1)

        def reset(self):
            self.world.reset(np.ones(areas, dtype=bool))
            self.length[:] = 0
            return self._obs()

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            out = self.world.act(np.clip(self._actions, -1, 1))
            self.steps += areas
            self.length += 1
            self.episode_reward += out.reward
            truncated = ~out.terminal & (self.length >= spec.max_episode_steps)
            done = out.terminal | truncated
            obs = self._obs()
            infos = [{} for _ in range(areas)]
            if done.any():
                for i in np.nonzero(done)[0]:
                    infos[i] = {"terminal_observation": obs[i].copy(), "TimeLimit.truncated": bool(truncated[i]),
                                "episode": {"r": float(self.episode_reward[i]), "l": int(self.length[i])}}
                    self.successes.append((self.steps, bool(out.success[i] and out.terminal[i])))
                self.world.reset(done)
                self.length[done] = 0
                self.episode_reward[done] = 0.0
                obs = self._obs()
            return obs, out.reward.astype(np.float32), done, infos

        def close(self):
            pass

        def get_attr(self, attr_name, indices=None):
            return [getattr(self, attr_name)] * areas

        def set_attr(self, attr_name, value, indices=None):
            setattr(self, attr_name, value)

        def env_method(self, method_name, *args, indices=None, **kwargs):
            return [None] * areas

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * areas

        def seed(self, seed=None):
            return [None] * areas

    return SimVecEnv()


def train(steps: int, seed: int = 0, asset: str = "nav", areas: int = 16, threads: int | None = None) -> dict:
    start = time.perf_counter()
    import torch
    from mlagents.torch_utils.cpu_utils import get_num_threads_to_use

    torch.set_num_threads(threads or get_num_threads_to_use() or torch.get_num_threads())
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(asset, areas, seed)
    vec = VecNormalize(env, norm_obs=True, norm_reward=False, gamma=0.99)
    model = PPO("MlpPolicy", vec, n_steps=8192 // areas, batch_size=512, n_epochs=3,
                learning_rate=lambda left: 3e-4 * left, clip_range=lambda left: 0.2 * left, ent_coef=0.005,
                gamma=0.99, gae_lambda=0.95, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": {"pi": [128, 128], "vf": [128, 128]}, "activation_fn": torch.nn.SiLU})
    learn_start = time.perf_counter()
    model.learn(total_timesteps=steps)
    learn_s = time.perf_counter() - learn_start
    recent = [ok for at, ok in env.successes if at > env.steps - 10_000] or [False]
    return {"steps": env.steps, "process_s": time.perf_counter() - start, "learn_s": learn_s,
            "steps_per_s": env.steps / learn_s, "success_last_10k": float(np.mean(recent)),
            "episodes_last_10k": len(recent), "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: as many as ML-Agents uses)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = train(args.steps, args.seed, threads=args.threads)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
