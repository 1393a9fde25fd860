"""The Unity side of ML-Agents' side channels: what C#'s EngineConfigurationChannel, EnvironmentParametersChannel,
StatsSideChannel and TrainingAnalyticsSideChannel read and write.

Framing (channel GUID as .NET's Guid.ToByteArray, int32 length, payload) is the same in both directions,
so the Python package's SideChannelManager frames them; the payloads are parsed here as C# parses them.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from mlagents_envs.side_channel import IncomingMessage, OutgoingMessage, SideChannel

ENGINE_CONFIG_ID = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
ENV_PARAMETERS_ID = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
STATS_ID = uuid.UUID("a1d8f7b7-cec8-50f9-b78b-d3e165a78520")
TRAINING_ANALYTICS_ID = uuid.UUID("b664a4a9-d86f-5a5f-95cb-e8353a7e8356")

Log = Callable[[str], None]


@dataclass
class EngineSettings:
    """Unity's Screen / QualitySettings / Time values as the engine-configuration channel sets them."""

    width: Optional[int] = None
    height: Optional[int] = None
    quality_level: Optional[int] = None
    time_scale: float = 1.0
    target_frame_rate: int = -1
    capture_frame_rate: int = 0


class EngineConfigurationReceiver(SideChannel):
    SCREEN_RESOLUTION, QUALITY_LEVEL, TIME_SCALE, TARGET_FRAME_RATE, CAPTURE_FRAME_RATE = range(5)

    def __init__(self, log: Log) -> None:
        super().__init__(ENGINE_CONFIG_ID)
        self.settings = EngineSettings()
        self._log = log

    def on_message_received(self, msg: IncomingMessage) -> None:
        kind = msg.read_int32()
        s = self.settings
        if kind == self.SCREEN_RESOLUTION:
            s.width, s.height = msg.read_int32(), msg.read_int32()
            self._log(f"Engine configuration: screen resolution {s.width}x{s.height}")
        elif kind == self.QUALITY_LEVEL:
            s.quality_level = msg.read_int32()
            self._log(f"Engine configuration: quality_level={s.quality_level}")
        elif kind == self.TIME_SCALE:
            # Unity clamps Time.timeScale to [0, 100].
            s.time_scale = min(max(msg.read_float32(), 0.0), 100.0)
            self._log(f"Engine configuration: time_scale={s.time_scale:g}")
        elif kind == self.TARGET_FRAME_RATE:
            s.target_frame_rate = msg.read_int32()
            self._log(f"Engine configuration: target_frame_rate={s.target_frame_rate}")
        elif kind == self.CAPTURE_FRAME_RATE:
            s.capture_frame_rate = msg.read_int32()
            self._log(f"Engine configuration: capture_frame_rate={s.capture_frame_rate}")
        else:
            self._log(f"Warning: unknown engine configuration type {kind}")


class EnvironmentParametersReceiver(SideChannel):
    """What `Academy.Instance.EnvironmentParameters.GetWithDefault(key, default)` reads in a scene."""

    FLOAT, SAMPLER = 0, 1
    UNIFORM, GAUSSIAN, MULTIRANGEUNIFORM = 0, 1, 2

    def __init__(self, log: Log) -> None:
        super().__init__(ENV_PARAMETERS_ID)
        self.parameters: Dict[str, object] = {}
        self._log = log

    def on_message_received(self, msg: IncomingMessage) -> None:
        key = msg.read_string()
        kind = msg.read_int32()
        if kind == self.FLOAT:
            self.parameters[key] = msg.read_float32()
        elif kind == self.SAMPLER:
            seed, sampler = msg.read_int32(), msg.read_int32()
            if sampler == self.MULTIRANGEUNIFORM:
                args = tuple(msg.read_float32_list())
            else:
                args = (msg.read_float32(), msg.read_float32())
            name = {self.UNIFORM: "uniform", self.GAUSSIAN: "gaussian", self.MULTIRANGEUNIFORM: "multirange_uniform"}
            self.parameters[key] = (name.get(sampler, str(sampler)), seed, args)
        else:
            self._log(f"Warning: environment parameter {key!r} has unknown type {kind}")
            return
        self._log(f"Environment parameter {key} = {self.parameters[key]}")


class StatsSender(SideChannel):
    """`Academy.Instance.StatsRecorder.Add(key, value, aggregation)`."""

    AVERAGE, MOST_RECENT, SUM, HISTOGRAM = range(4)

    def __init__(self) -> None:
        super().__init__(STATS_ID)

    def add(self, key: str, value: float, aggregation: int = AVERAGE) -> None:
        msg = OutgoingMessage()
        msg.write_string(key)
        msg.write_float32(value)
        msg.write_int32(aggregation)
        self.queue_message_to_send(msg)

    def on_message_received(self, msg: IncomingMessage) -> None:
        pass  # the trainer never writes to it


class TrainingAnalyticsReceiver(SideChannel):
    """Unity only forwards these protos to its analytics; a player needs to accept them."""

    def __init__(self) -> None:
        super().__init__(TRAINING_ANALYTICS_ID)
        self.messages = 0

    def on_message_received(self, msg: IncomingMessage) -> None:
        self.messages += 1
