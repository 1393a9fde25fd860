"""Offline training of ML-Agents' own policy network from a demonstration dataset, with no environment.

The trainer, policy, actor, critic and model saver are the ones `mlagents-learn` builds for the plan's
algorithm (TrainerFactory -> trainer.create_policy / add_policy), so the result is exported by
ML-Agents' ModelSerializer and checkpointed by its TorchModelSaver: the ONNX is what Unity imports and
`checkpoint.pt` is what `init_path` initialises an online run from.

What is learned:
- the actor's deterministic action (exactly the `deterministic_continuous_actions` the ONNX exports,
  including ML-Agents' clip or tanh) regressed onto the demonstrated actions: behavioural cloning
  (`bc`), or weighted by exp(advantage / beta) (`awr`, advantage-weighted regression);
- when the data has rewards, the algorithm's value network (the critic ML-Agents fine-tunes online)
  regressed onto discounted returns; AWR's advantages are returns minus that critic's values.
The action noise (log sigma) is left as ML-Agents initialises it, so online fine-tuning still explores.

`max_steps` counts demonstration samples consumed by gradient updates (updates x batch size), the
offline counterpart of agent steps: metrics, checkpoints and the learning-rate schedule use it.

The session around it (RunOptions, results layout, trainer factory, seeding, SIGTERM, run files) is the online
trainer's: training/session.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from pipeline import mlagents_patches  # noqa: E402

mlagents_patches.apply()  # before the trainers: ONNX export on torch 2.13, hot paths
import numpy as np
import torch
from mlagents.trainers.behavior_id_utils import BehaviorIdentifiers
from mlagents.trainers.buffer import AgentBuffer
from mlagents.trainers.settings import ScheduleType
from mlagents.trainers.stats import StatsReporter, StatsWriter
from mlagents.trainers.torch_entities.networks import ValueNetwork
from mlagents.trainers.torch_entities.utils import ModelUtils
from mlagents.trainers.trajectory import ObsUtil
from mlagents_envs.base_env import ActionSpec, BehaviorSpec, DimensionProperty, ObservationSpec, ObservationType

from pipeline.config.plan import RunPlan
from pipeline.offline.dataset import Dataset, Layout
from pipeline.offline.settings import ModeConfig
from pipeline.training.session import StopRequest, TrainingOutcome, open_session, stats_writers

BC_LOSS = "Losses/BC Loss"
VAL_BC_LOSS = "Offline/Validation BC Loss"
VALUE_LOSS = "Losses/Value Loss"
VAL_VALUE_LOSS = "Offline/Validation Value Loss"
CURVE_METRICS = (BC_LOSS, VAL_BC_LOSS, VALUE_LOSS, VAL_VALUE_LOSS)


def behavior_spec(layout: Layout) -> BehaviorSpec:
    obs = [ObservationSpec(name=name, shape=(size,), dimension_property=(DimensionProperty.NONE,),
                           observation_type=ObservationType.DEFAULT) for name, size in layout.observations]
    if layout.discrete:
        return BehaviorSpec(obs, ActionSpec.create_discrete(layout.branches))
    return BehaviorSpec(obs, ActionSpec.create_continuous(layout.action_size))


@dataclass
class _Split:
    obs: list[torch.Tensor]
    actions: torch.Tensor
    returns: Optional[torch.Tensor]

    def __len__(self) -> int:
        return len(self.actions)

    def take(self, idx: np.ndarray) -> "_Split":
        t = torch.as_tensor(idx)
        return _Split([o[t] for o in self.obs], self.actions[t], None if self.returns is None else self.returns[t])


def _tensors(data: Dataset, rows: np.ndarray, returns: Optional[np.ndarray]) -> _Split:
    return _Split([torch.as_tensor(o[rows]) for o in data.obs], torch.as_tensor(data.actions[rows]),
                  None if returns is None else torch.as_tensor(returns[rows]))


def _obs_buffer(split: _Split) -> AgentBuffer:
    buf = AgentBuffer()
    for i, o in enumerate(split.obs):
        buf[ObsUtil.get_name_at(i)].extend(list(o.numpy()))
    return buf


def train(plan: RunPlan, data: Dataset, results_dir: Path, run_id: str,
          writers: Sequence[StatsWriter] = ()) -> TrainingOutcome:
    mode = plan.config.mode
    session = open_session(plan, results_dir, run_id)
    write_path = session.write_path
    session.seed_generators()
    rng = np.random.default_rng(plan.seed)

    behavior = plan.behavior_name
    settings = session.options.behaviors[behavior]
    if settings.network_settings.memory is not None:
        raise ValueError("offline training does not support recurrent policies (network_settings.memory)")
    trainer = session.trainer_factory(session.parameter_manager()).generate(behavior)
    parsed = BehaviorIdentifiers.from_name_behavior_id(behavior)
    policy = trainer.create_policy(parsed, behavior_spec(data.layout))
    trainer.add_policy(parsed, policy)  # optimizer, critic and model saver, exactly as online
    actor = policy.actor

    gamma, strength = _extrinsic(settings)
    returns = data.discounted_returns(gamma) * strength if data.has_rewards else None
    train_rows, val_rows = data.split(mode.validation_fraction, plan.seed)
    tr, va = _tensors(data, train_rows, returns), _tensors(data, val_rows, returns)

    awr = mode.method == "awr"
    critic = None
    if returns is not None and (awr or mode.pretrain_critic):
        critic = getattr(trainer.optimizer, "critic", None)
        if not isinstance(critic, ValueNetwork):  # POCA's critic is multi-agent; AWR gets its own
            critic = ValueNetwork(["extrinsic"], behavior_spec(data.layout).observation_specs,
                                  settings.network_settings)
    if settings.network_settings.normalize:
        buf = _obs_buffer(tr)
        actor.update_normalization(buf)
        if critic is not None:
            critic.update_normalization(buf)

    lr = mode.learning_rate or settings.hyperparameters.learning_rate
    schedule = getattr(settings.hyperparameters, "learning_rate_schedule", ScheduleType.CONSTANT)
    decay = ModelUtils.DecayedValue(schedule, lr, 1e-10, plan.max_steps)
    params = list(actor.parameters()) + (list(critic.parameters()) if critic is not None else [])
    optim = torch.optim.Adam(params, lr=lr)
    batch = min(mode.batch_size, len(tr))
    summary_freq = settings.summary_freq
    checkpoint_interval = settings.checkpoint_interval
    reporter = StatsReporter(behavior)

    step, next_summary, next_checkpoint = 0, summary_freq, checkpoint_interval
    order, cursor, epoch = rng.permutation(len(tr)), 0, 0
    stop = StopRequest()
    with stats_writers(writers), stop.on_sigterm():
        try:
            while step < plan.max_steps:
                if cursor + batch > len(tr):
                    order, cursor, epoch = rng.permutation(len(tr)), 0, epoch + 1
                mb = tr.take(order[cursor:cursor + batch])
                cursor += batch
                ModelUtils.update_learning_rate(optim, decay.get_value(step))
                losses = _update(actor, critic, mb, optim, awr, mode)
                step += batch
                for k, v in losses.items():
                    reporter.add_stat(k, v)
                if step >= next_summary or step >= plan.max_steps:
                    next_summary += summary_freq
                    for k, v in _validate(actor, critic, va).items():
                        reporter.add_stat(k, v)
                    reporter.add_stat("Policy/Learning Rate", decay.get_value(step))
                    reporter.add_stat("Offline/Epoch", step / len(tr))
                    reporter.write_stats(step)
                if step >= next_checkpoint and step < plan.max_steps:
                    next_checkpoint += checkpoint_interval
                    _save(trainer, policy, step, final=False)
        except KeyboardInterrupt:
            pass
        _save(trainer, policy, step, final=True)
        session.write_run_files()

    ckpt = write_path / behavior / "checkpoint.pt"
    return TrainingOutcome(results_dir=write_path, onnx_path=write_path / f"{behavior}.onnx",
                           checkpoint_path=ckpt if ckpt.exists() else None, steps=step,
                           interrupted=stop.requested or step < plan.max_steps)


def _extrinsic(settings) -> tuple[float, float]:
    for key, signal in settings.reward_signals.items():
        if getattr(key, "value", key) == "extrinsic":
            return signal.gamma, signal.strength
    return 0.99, 1.0


def deterministic_action(actor, obs: list[torch.Tensor]) -> torch.Tensor:
    """The action the exported ONNX's `deterministic_continuous_actions` gives for these observations."""
    encoding, _ = actor.network_body(obs)
    return actor.action_model.get_action_out(encoding, None)[3]


def imitation_error(actor, obs: list[torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """Per row: squared error of the deterministic continuous action, or for discrete branches the
    negative log-likelihood of the demonstrated indices (cross-entropy, what ML-Agents' BC module uses)."""
    branches = actor.action_spec.discrete_branches
    if not branches:
        return ((deterministic_action(actor, obs) - actions) ** 2).mean(dim=1)
    encoding, _ = actor.network_body(obs)
    masks = torch.ones(len(actions), sum(branches))  # demonstrated actions were allowed when taken
    dists = actor.action_model._get_dists(encoding, masks).discrete
    picked = [d.all_log_prob().gather(1, actions[:, b:b + 1].long()) for b, d in enumerate(dists)]
    return -torch.cat(picked, dim=1).sum(dim=1)


def _update(actor, critic, mb: _Split, optim, awr: bool, mode: ModeConfig) -> dict[str, float]:
    out: dict[str, float] = {}
    err = imitation_error(actor, mb.obs, mb.actions)
    loss_value = None
    if critic is not None:
        values = critic.critic_pass(mb.obs)[0]["extrinsic"]
        loss_value = ((values - mb.returns) ** 2).mean()
        out[VALUE_LOSS] = loss_value.item()
    if awr and critic is not None:
        adv = (mb.returns - values).detach()
        scale = adv.std().clamp_min(1e-6) * mode.awr_temperature
        weights = torch.exp(adv / scale).clamp(max=mode.awr_max_weight)
        bc_loss = (weights * err).sum() / weights.sum()
        out["Offline/AWR Mean Weight"] = weights.mean().item()
    else:
        bc_loss = err.mean()
    out[BC_LOSS] = err.mean().item()
    total = bc_loss + (0.5 * loss_value if loss_value is not None else 0.0)
    optim.zero_grad()
    total.backward()
    optim.step()
    return out


@torch.no_grad()
def _validate(actor, critic, va: _Split) -> dict[str, float]:
    if len(va) == 0:
        return {}
    out = {VAL_BC_LOSS: float(imitation_error(actor, va.obs, va.actions).mean())}
    if critic is not None and va.returns is not None:
        out[VAL_VALUE_LOSS] = float(((critic.critic_pass(va.obs)[0]["extrinsic"] - va.returns) ** 2).mean())
    return out


def _save(trainer, policy, step: int, final: bool) -> None:
    """ML-Agents' own checkpoint + ONNX export (TorchModelSaver / ModelSerializer), at `step` samples."""
    policy.set_step(step)
    trainer._step = step  # what RLTrainer names checkpoints by
    if final:
        trainer.save_model()
    else:
        trainer._checkpoint()


class OfflineProgressWriter(StatsWriter):
    """One console line per summary: samples / max_steps, training and validation loss, time left."""

    def __init__(self, max_steps: int, label: str = "offline", stream=None):
        import sys

        self.max_steps, self.label = max_steps, label
        self.stream = stream or sys.stdout
        self._start = time.monotonic()

    def write_stats(self, category: str, values, step: int) -> None:
        elapsed = time.monotonic() - self._start
        parts = [f"[{category} {self.label}] samples {step:,}/{self.max_steps:,} ({100 * step / self.max_steps:3.0f}%)"]
        for key, label in ((BC_LOSS, "bc loss"), (VAL_BC_LOSS, "val bc loss"), (VALUE_LOSS, "value loss"),
                           (VAL_VALUE_LOSS, "val value loss")):
            v = values.get(key)
            if v is not None and v.num:
                parts.append(f"{label} {v.mean:.4f}")
        if elapsed > 0 and step:
            rate = step / elapsed
            left = max(self.max_steps - step, 0) / rate
            parts.append(f"{rate:,.0f} samples/s, {int(left // 60)}m{int(left % 60):02d}s left")
        print(" | ".join(parts), file=self.stream, flush=True)
