"""Schema of the `mode:` config group: online, offline (from a dataset only) or hybrid (dataset, then online).

See conf/mode/*.yaml for the defaults and why they were chosen; `pipeline.config.plan` checks the values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from pipeline.config.ranges import check_ranges

MODES = ("online", "offline", "hybrid")
METHODS = ("bc", "awr")


@dataclass
class ModeConfig:
    name: str = "online"
    # A .jsonl (data/demos/README.md) or a Unity .demo file; required for offline and hybrid.
    dataset_path: Optional[str] = None
    # bc: behavioural cloning; awr: advantage-weighted regression (needs rewards in the dataset).
    method: str = "bc"
    validation_fraction: float = 0.1  # share of episodes held out for the validation loss
    batch_size: int = 256
    learning_rate: Optional[float] = None  # None: the algorithm's hyperparameters.learning_rate
    awr_temperature: float = 1.0  # beta, in units of the advantages' standard deviation
    awr_max_weight: float = 20.0
    # Fit the algorithm's value network to the dataset's discounted returns (needs rewards).
    pretrain_critic: bool = True
    # hybrid only: demonstration samples of offline pre-training; max_steps is then the online budget.
    pretrain_steps: Optional[int] = None
    # hybrid only: keep ML-Agents' behavioral_cloning term on the demonstrations during fine-tuning.
    bc_strength: float = 0.0
    bc_steps: int = 0  # steps over which that term anneals to 0 (0: constant), as in ML-Agents

    def validate(self) -> None:
        """Its numbers against the range table, after `offline.validate.check_mode` (whose messages are more
        specific, and which reads the dataset against the asset)."""
        check_ranges({"mode": asdict(self)}, sections=("mode",))
