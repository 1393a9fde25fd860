"""The dependency set the lock promises: compiled protobuf under ML-Agents' messages, with the same wire format."""
from __future__ import annotations

import subprocess

import numpy as np

from tests.support.process import PYTHON, REPO, child_env


def test_protobuf_is_compiled_and_every_mlagents_message_module_is_rewritten_for_it():
    from google.protobuf.internal import api_implementation

    # upb: parsing a player's messages in C. A reinstall of mlagents-envs without `make` (which rewrites its
    # modules) would fail to import at all on protobuf 4, and this would say which modules are left.
    assert api_implementation.Type() == "upb"
    check = subprocess.run([PYTHON, "scripts/upgrade_mlagents_protos.py", "--check"], cwd=REPO, env=child_env(),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("0 module(s) still in protoc 3.x form")


def test_a_players_observations_survive_the_wire_bit_for_bit():
    """What a Unity player sends (agent infos with observations, rewards, terminal and interrupted agents)
    reads back through ML-Agents' own decoder as the exact arrays, enums and ids that went in."""
    from mlagents_envs.base_env import ActionSpec, BehaviorSpec, DimensionProperty, ObservationSpec, ObservationType
    from mlagents_envs.communicator_objects.command_pb2 import RESET, STEP
    from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
    from mlagents_envs.rpc_utils import steps_from_proto

    rng = np.random.default_rng(0)
    sizes = (8, 2, 2)
    obs = [rng.random((4, s), dtype=np.float32) for s in sizes]
    sent = UnityOutputProto()
    infos = sent.rl_output.agentInfos["NavigationAgent?team=0"].value
    for agent in range(4):
        info = infos.add(id=100 + agent, reward=0.5 * agent, done=agent >= 2, max_step_reached=agent == 3)
        for i, size in enumerate(sizes):
            o = info.observations.add(name=f"obs{i}")
            o.shape.extend([size])
            o.float_data.data.extend(obs[i][agent].tolist())
    received = UnityOutputProto.FromString(sent.SerializeToString())

    spec = BehaviorSpec([ObservationSpec((s,), (DimensionProperty.NONE,), ObservationType.DEFAULT, f"obs{i}")
                         for i, s in enumerate(sizes)], ActionSpec(2, ()))
    decisions, terminals = steps_from_proto(received.rl_output.agentInfos["NavigationAgent?team=0"].value, spec)
    assert list(decisions.agent_id) == [100, 101] and list(terminals.agent_id) == [102, 103]
    assert list(terminals.interrupted) == [False, True]
    assert np.array_equal(decisions.reward, [0.0, 0.5]) and np.array_equal(terminals.reward, [1.0, 1.5])
    for i in range(3):
        assert np.array_equal(decisions.obs[i], obs[i][:2]) and np.array_equal(terminals.obs[i], obs[i][2:])
    assert (STEP, RESET) == (0, 1)  # enum values keep their wire numbers
