"""Schema of the `mode:` config group: online, offline (from a dataset only) or hybrid (dataset, then online).

The defaults and why they were chosen are here; conf/mode/*.yaml set only what differs per mode.
`pipeline.config.plan` checks the values.
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
    # A .jsonl (data/demos/README.md) or a Unity .demo file; required for offline and hybrid,
    # e.g. data/demos/navigation_demo.jsonl.
    dataset_path: Optional[str] = None
    # bc: behavioural cloning, right for scripted or expert demos; awr: advantage-weighted regression, when the
    # data mixes good and bad episodes (needs rewards in the dataset).
    method: str = "bc"
    # Whole episodes held out for the validation loss, so it measures generalisation.
    validation_fraction: float = 0.1
    batch_size: int = 256  # small MLP on CPU: 256 keeps updates cheap and gradients smooth
    # None: the algorithm's hyperparameters.learning_rate (conf/mode/offline.yaml and hybrid.yaml set their own).
    learning_rate: Optional[float] = None
    # beta, in units of the advantages' standard deviation: 1 prefers good actions without ignoring the rest.
    awr_temperature: float = 1.0
    awr_max_weight: float = 20.0  # caps exp(A/beta) so a few lucky samples cannot dominate a batch
    # Fit the algorithm's value network to the dataset's discounted returns (needs rewards): AWR uses it, and
    # a fitted critic keeps PPO's first fine-tuning updates from undoing the pre-trained actor.
    pretrain_critic: bool = True
    # hybrid only: demonstration samples of offline pre-training; max_steps is then the online budget.
    pretrain_steps: Optional[int] = None
    # hybrid only: >0 keeps ML-Agents' behavioral_cloning term on the demonstrations during fine-tuning.
    bc_strength: float = 0.0
    bc_steps: int = 0  # steps over which that term anneals to 0 (0: constant), as in ML-Agents

    def validate(self) -> None:
        """Its numbers against the range table, after `offline.validate.check_mode` (whose messages are more
        specific, and which reads the dataset against the asset)."""
        check_ranges({"mode": asdict(self)}, sections=("mode",))
