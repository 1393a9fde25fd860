"""The Academy + RpcCommunicator loop of a Unity player (com.unity.ml-agents), over a built-in simulation.

Message order, as C#'s RpcCommunicator does it (the trainer is the gRPC server, the player the client):
  1. Exchange(header 200, rl_initialization_output: name, versions, capabilities)
     -> the trainer's rl_initialization_input (seed, versions, capabilities, num_areas)
  2. Exchange(header 200, no output) -> the first rl_input (a RESET, with the side channels' messages)
  3. Then, once per Academy step: Exchange(rl_output: AgentInfos of every agent that requested a
     decision or ended its episode, brain parameters with the first infos of a behavior, side-channel
     bytes) -> rl_input (STEP with one action per deciding agent in request order, RESET, or QUIT).
A reply whose header status is not 200 (the trainer closing) or a failed call (the trainer gone)
makes the player quit, as Unity's Application.Quit does.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from distutils.version import StrictVersion
from typing import List, Optional, TextIO

import grpc
import numpy as np
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.observation_pb2 import NONE as COMPRESSION_NONE
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import UnityRLInitializationOutputProto
from mlagents_envs.communicator_objects.unity_rl_input_pb2 import UnityRLInputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub
from mlagents_envs.side_channel.side_channel_manager import SideChannelManager

from pipeline.sim.unity_env import SUCCESS_STAT, SimulatedUnityEnv
from pipeline.sim.world import World
from pipeline.unity.simulated_player.side_channels import (
    EngineConfigurationReceiver,
    EnvironmentParametersReceiver,
    StatsSender,
    TrainingAnalyticsReceiver,
)

COMMUNICATION_VERSION = "1.5.0"  # Academy.k_ApiVersion of com.unity.ml-agents 2.x / 3.x
PACKAGE_VERSION = "3.0.0"  # the com.unity.ml-agents release this player stands in for
ACADEMY_NAME = "AcademySingleton"
DIMENSION_NONE = 1  # DimensionProperty.None: what a VectorSensor declares
OBSERVATION_DEFAULT = 0


class PlayerLog:
    """Unity's player log: -logFile <path>, `-logFile -` for stdout, stderr otherwise."""

    def __init__(self, path: Optional[str]) -> None:
        self._file: TextIO
        if path in (None, ""):
            self._file = sys.stderr
        elif path == "-":
            self._file = sys.stdout
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", buffering=1, encoding="utf-8")

    def __call__(self, line: str) -> None:
        self._file.write(f"{line}\n")
        self._file.flush()


@dataclass(frozen=True)
class Faults:
    """Test hooks that make the player fail the ways real builds do."""

    crash_after_steps: Optional[int] = None  # die of SIGSEGV, like a native crash
    hang_after_steps: Optional[int] = None  # stop answering, like a frozen player


def capabilities() -> UnityRLCapabilitiesProto:
    # Everything a com.unity.ml-agents 2.x/3.x Academy announces (UnityRLCapabilities.ToProto).
    return UnityRLCapabilitiesProto(baseRLCapabilities=True, concatenatedPngObservations=True,
                                    compressedChannelMapping=True, hybridActions=True, trainingAnalytics=True,
                                    variableLengthObservation=True, multiAgentGroups=True)


def versions_compatible(unity: str, python: str) -> bool:
    """C#'s RpcCommunicator.CheckCommunicationVersionsAreCompatible."""
    u, p = StrictVersion(unity).version, StrictVersion(python).version
    if u[0] == 0:
        return u[0] == p[0] and u[1] == p[1]
    return u[0] == p[0]


class SimulatedPlayer:
    def __init__(self, world_cls: type[World], port: int, log: PlayerLog, behavior_name: Optional[str] = None,
                 faults: Faults = Faults()) -> None:
        self.world_cls = world_cls
        self.port = port
        self.log = log
        self.behavior_name = behavior_name or world_cls.spec.behavior_name
        self.faults = faults
        self.engine = EngineConfigurationReceiver(log)
        self.parameters = EnvironmentParametersReceiver(log)
        self.stats = StatsSender()
        self.channels = SideChannelManager([self.engine, self.parameters, self.stats, TrainingAnalyticsReceiver()])
        self.env: Optional[SimulatedUnityEnv] = None
        self.steps = 0
        self._brain_sent = False
        self._episode_ids = np.zeros(0, dtype=np.int64)
        self._next_episode_id = 0

    # --- connection --------------------------------------------------------------------------
    def run(self) -> int:
        channel = grpc.insecure_channel(f"localhost:{self.port}", options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        stub = UnityToExternalProtoStub(channel)
        try:
            academy = UnityRLInitializationOutputProto(name=ACADEMY_NAME, package_version=PACKAGE_VERSION,
                                                       communication_version=COMMUNICATION_VERSION,
                                                       capabilities=capabilities())
            init_reply = stub.Exchange(_wrap(UnityOutputProto(rl_initialization_output=academy)))
            first = stub.Exchange(_wrap(None))
        except grpc.RpcError as exc:
            self.log(f"The Communicator was unable to connect. Please make sure the External process is ready to "
                     f"accept communication with Unity. ({exc.code().name})")
            self.log(f"Couldn't connect to trainer on port {self.port} using API version {COMMUNICATION_VERSION}. "
                     "Will perform inference instead.")
            return idle(self.log)
        init = init_reply.unity_input.rl_initialization_input
        if not versions_compatible(COMMUNICATION_VERSION, init.communication_version):
            self.log(f"Communication protocol between python ({init.communication_version}) and Unity "
                     f"({COMMUNICATION_VERSION}) have different versions which make them incompatible. "
                     f"Python library version: {init.package_version}.")
        num_areas = max(1, init.num_areas)
        self.log(f"Connected to trainer on port {self.port}: mlagents-envs {init.package_version}, communication "
                 f"API {init.communication_version}; seed {init.seed}, {num_areas} training areas, behavior "
                 f"{self.behavior_name}")
        self.env = SimulatedUnityEnv(self.world_cls, num_areas=num_areas, seed=init.seed)
        self._episode_ids = self._new_ids(self.env.num_agents)
        if first.header.status != 200:
            return self._quit(f"the trainer answered with status {first.header.status}")
        rl_input = first.unity_input.rl_input
        while True:
            if not self._apply(rl_input):
                return self._quit("QUIT command")
            try:
                reply = stub.Exchange(self._output())
            except grpc.RpcError as exc:
                return self._quit(f"the trainer disconnected ({exc.code().name})")
            if reply.header.status != 200:
                return self._quit(f"the trainer closed the connection (status {reply.header.status})")
            rl_input = reply.unity_input.rl_input

    def _quit(self, why: str) -> int:
        self.log(f"Quitting after {self.steps} steps: {why}")
        return 0

    # --- one Academy step -------------------------------------------------------------------
    def _apply(self, rl_input: UnityRLInputProto) -> bool:
        self.channels.process_side_channel_message(bytes(rl_input.side_channel))
        assert self.env is not None
        if rl_input.command == QUIT:
            return False
        if rl_input.command == RESET:
            self.env.reset()
            self._episode_ids = self._new_ids(self.env.num_agents)
            self.log("Environment reset")
            return True
        spec = self.world_cls.spec
        n = self.env.num_agents
        continuous = np.zeros((n, spec.action_size), np.float32)
        discrete = np.zeros((n, len(spec.action_branches)), np.int32)
        if self.behavior_name in rl_input.agent_actions:
            given = rl_input.agent_actions[self.behavior_name].value
            # One action per agent that requested a decision, in request order
            # (C#'s m_OrderedAgentsRequestingDecisions).
            for i, action in enumerate(given[:n]):
                continuous[i, :len(action.continuous_actions)] = action.continuous_actions[:spec.action_size]
                discrete[i, :len(action.discrete_actions)] = action.discrete_actions[:len(spec.action_branches)]
        self.env.set_actions(self.env.behavior_name, ActionTuple(continuous=continuous, discrete=discrete))
        self.env.step()
        self.steps += 1
        self._check_faults()
        return True

    def _output(self) -> UnityMessageProto:
        """The step's UnityOutput, built in place: pure-Python protobuf copies every sub-message it is handed."""
        assert self.env is not None
        decision, terminal = self.env.get_steps(self.env.behavior_name)
        message = _wrap(None)
        output = message.unity_output
        infos = output.rl_output.agentInfos[self.behavior_name].value
        # An agent that ends its episode reports done with its final observation, then (same step) asks
        # for its first decision of the next episode under a new episode id, as Agent.EndEpisode does.
        for j, agent in enumerate(terminal.agent_id):
            self._add_agent_info(infos, int(self._episode_ids[agent]), float(terminal.reward[j]), True,
                                 bool(terminal.interrupted[j]), [o[j] for o in terminal.obs],
                                 int(terminal.group_id[j]), float(terminal.group_reward[j]))
        if len(terminal):
            self._episode_ids[terminal.agent_id] = self._new_ids(len(terminal))
        # A decision request carries the agent's action mask (Agent.WriteDiscreteActionMask), branches side by side.
        masks = np.concatenate(decision.action_mask, axis=1) if decision.action_mask is not None else None
        for j, agent in enumerate(decision.agent_id):
            self._add_agent_info(infos, int(self._episode_ids[agent]), float(decision.reward[j]), False, False,
                                 [o[j] for o in decision.obs], int(decision.group_id[j]),
                                 float(decision.group_reward[j]), None if masks is None else masks[j])
        for record in self.env.episodes:
            self.stats.add(SUCCESS_STAT, float(record.success), StatsSender.AVERAGE)
        self.env.episodes.clear()
        output.rl_output.side_channel = bytes(self.channels.generate_side_channel_messages())
        if len(infos) and not self._brain_sent:
            # Brain parameters go out once, with the behavior's first agent infos (GetTempUnityRlInitializationOutput).
            brain = output.rl_initialization_output.brain_parameters.add()
            brain.brain_name = self.behavior_name
            brain.is_training = True
            spec = self.world_cls.spec
            brain.action_spec.num_continuous_actions = spec.action_size
            brain.action_spec.num_discrete_actions = len(spec.action_branches)
            brain.action_spec.discrete_branch_sizes.extend(spec.action_branches)
            self._brain_sent = True
        return message

    def _add_agent_info(self, infos, episode_id: int, reward: float, done: bool, max_step: bool,
                        obs: List[np.ndarray], group_id: int = 0, group_reward: float = 0.0,
                        mask: Optional[np.ndarray] = None) -> None:
        info = infos.add()
        info.reward, info.done, info.max_step_reached, info.id = reward, done, max_step, episode_id
        info.group_id, info.group_reward = group_id, group_reward
        if mask is not None:
            info.action_mask.extend(mask.tolist())  # True = the action is unavailable, as on the C# side
        for (name, _), values in zip(self.world_cls.spec.observations, obs):
            o = info.observations.add()
            o.shape.append(len(values))
            o.float_data.data.extend(values.tolist())
            o.compression_type = COMPRESSION_NONE
            o.dimension_properties.append(DIMENSION_NONE)
            o.observation_type = OBSERVATION_DEFAULT
            o.name = name

    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_episode_id, self._next_episode_id + n, dtype=np.int64)
        self._next_episode_id += n
        return ids

    def _check_faults(self) -> None:
        if self.faults.crash_after_steps is not None and self.steps >= self.faults.crash_after_steps:
            self.log("Caught fatal signal - signo:11 code:1 errno:0 addr:0x0 "
                     f"(simulated crash after {self.steps} steps)")
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.faults.hang_after_steps is not None and self.steps >= self.faults.hang_after_steps:
            self.log(f"Player stopped responding after {self.steps} steps (simulated hang)")
            idle(self.log)


def _wrap(output: Optional[UnityOutputProto], status: int = 200) -> UnityMessageProto:
    message = UnityMessageProto(header=HeaderProto(status=status))
    if output is not None:
        message.unity_output.CopyFrom(output)
    return message


def idle(log: PlayerLog) -> int:
    """A player with no trainer keeps running its scene until it is closed."""
    log("Running without a trainer until the player is closed")
    while True:
        time.sleep(3600)
