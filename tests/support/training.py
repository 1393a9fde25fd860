"""Hydra overrides that shrink a real ML-Agents training to seconds."""
from __future__ import annotations

# A real ML-Agents training in seconds: one worker, few areas, small buffers.
TINY = [
    "max_steps=3000",
    "algorithm.summary_freq=1000",
    "algorithm.checkpoint_interval=3000",
    "algorithm.hyperparameters.buffer_size=1024",
    "algorithm.hyperparameters.batch_size=256",
    "env.num_envs=1",
    "env.num_areas=8",
    "evaluation.episodes=12",
]
