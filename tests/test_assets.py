"""The cooperative (push) and discrete-action (forage) assets, against ML-Agents' own expectations of a BaseEnv."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple, BaseEnv

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.evaluation import rollout
from pipeline.evaluation.onnx_contract import PolicyContractError, check_policy
from pipeline.sim import SIMULATIONS, ForageWorld, PushWorld
from pipeline.sim.forage import DOWN, LEFT, RIGHT, STAY, UP, WALL
from pipeline.sim.unity_env import SimulatedUnityEnv
from tests.support.training import TINY


def step_with(env: SimulatedUnityEnv, world, policy) -> None:
    decisions, _ = env.get_steps(env.behavior_name)
    env.set_actions(env.behavior_name, rollout.decide(world, policy, decisions))
    env.step()


# --- push: MultiAgentGroup semantics -----------------------------------------------------------
def test_push_agents_of_an_area_form_a_group_that_shares_its_reward():
    env = SimulatedUnityEnv(PushWorld, num_areas=4, seed=0)
    assert isinstance(env, BaseEnv) and env.num_agents == 12
    decisions, _ = env.get_steps("PushBlockTeam")
    assert decisions.group_id.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # 0 would mean "no group"
    step_with(env, PushWorld, PushWorld.heuristic)
    decisions, _ = env.get_steps("PushBlockTeam")
    assert np.all(decisions.reward == 0.0)  # no individual reward: only the group is rewarded
    per_area = decisions.group_reward.reshape(4, 3)
    assert np.all(per_area != 0.0) and np.all(per_area == per_area[:, :1])  # the same group reward for every member


def test_push_group_members_end_their_episode_together_with_the_group_reward():
    env = SimulatedUnityEnv(PushWorld, num_areas=6, seed=1)
    ended = []
    for _ in range(PushWorld.spec.max_episode_steps):
        step_with(env, PushWorld, PushWorld.heuristic)
        decisions, terminal = env.get_steps("PushBlockTeam")
        if len(terminal):
            groups, counts = np.unique(terminal.group_id, return_counts=True)
            assert np.all(counts == 3), "every member of a group gets its terminal step in the same step"
            assert set(terminal.agent_id.tolist()) == {i for g in groups for i in range(3 * (g - 1), 3 * g)}
            assert np.all(terminal.group_reward > 0.9) and not terminal.interrupted.any()  # success bonus, not cut
            assert set(groups) <= set(decisions.group_id.tolist())  # ...and they ask for the next decision at once
            ended.extend(groups.tolist())
    assert set(ended) == {1, 2, 3, 4, 5, 6} and all(r.success for r in env.episodes)


def test_push_group_interrupted_by_the_step_limit_is_interrupted_for_every_member():
    env = SimulatedUnityEnv(PushWorld, num_areas=2, seed=0, max_episode_steps=5)
    still = lambda obs: np.zeros((len(obs[0]), 2), np.float32)  # noqa: E731 - a policy that never moves
    for _ in range(5):
        step_with(env, PushWorld, still)
    _, terminal = env.get_steps("PushBlockTeam")
    assert terminal.agent_id.tolist() == list(range(6)) and terminal.interrupted.all()
    assert terminal.group_id.tolist() == [1, 1, 1, 2, 2, 2]
    assert [r.success for r in env.episodes] == [False, False]


def test_the_block_is_too_heavy_for_one_agent():
    world = PushWorld(1, np.random.default_rng(0))
    world.block[:] = [[0.0, 0.0]]
    world.agents[0] = [[0.0, -0.21], [0.8, -0.8], [-0.8, -0.8]]  # one agent right under the block
    up = np.array([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    for _ in range(5):
        world.act(up)
    assert world.block[0].tolist() == [0.0, 0.0]
    world.agents[0, 1] = [0.05, -0.21]  # a second pusher joins
    up[1] = [0.0, 1.0]
    world.act(up)
    world.act(up)
    assert world.block[0, 1] > 0.04


def test_ml_agents_agent_processor_sees_the_group_mates():
    """ML-Agents' AgentProcessor (what feeds POCA) builds trajectories carrying each agent's group mates."""
    from mlagents.trainers.action_info import ActionInfo
    from mlagents.trainers.agent_processor import AgentManagerQueue, AgentProcessor
    from mlagents.trainers.policy.torch_policy import TorchPolicy
    from mlagents.trainers.settings import NetworkSettings
    from mlagents.trainers.stats import StatsReporter
    from mlagents.trainers.torch_entities.networks import SimpleActor

    env = SimulatedUnityEnv(PushWorld, num_areas=2, seed=0, max_episode_steps=20)
    spec = env.behavior_specs["PushBlockTeam"]
    policy = TorchPolicy(0, spec, NetworkSettings(), SimpleActor, {"conditional_sigma": False, "tanh_squash": False})
    processor = AgentProcessor(policy, "PushBlockTeam", StatsReporter("test_push_group"), max_trajectory_length=64)
    trajectories = AgentManagerQueue("PushBlockTeam")
    processor.publish_trajectory_queue(trajectories)
    previous = ActionInfo.empty()
    for _ in range(21):
        decisions, terminal = env.get_steps("PushBlockTeam")
        processor.add_experiences(decisions, terminal, 0, previous)
        previous = policy.get_action(decisions, 0)
        env.set_actions("PushBlockTeam", previous.env_action)
        env.step()
    got = []
    while not trajectories.empty():
        got.append(trajectories.get_nowait())
    assert len(got) == 6  # 2 areas x 3 agents, each ended its 20-step episode
    for trajectory in got:
        assert len(trajectory.steps) == 20 and trajectory.done_reached and trajectory.interrupted
        assert all(len(step.group_status) == 2 for step in trajectory.steps)  # the two group mates
        assert len(trajectory.next_group_obs) == 2
        assert sum(step.group_reward for step in trajectory.steps) != 0.0


# --- forage: discrete branches and action masks -----------------------------------------------
def test_forage_behavior_spec_has_two_discrete_branches_and_masks_walls():
    env = SimulatedUnityEnv(ForageWorld, num_areas=8, seed=0)
    spec = env.behavior_specs["ForagerAgent"].action_spec
    assert spec.continuous_size == 0 and spec.discrete_branches == (5, 2)
    decisions, _ = env.get_steps("ForagerAgent")
    moves, pick = decisions.action_mask
    assert moves.shape == (8, 5) and pick.shape == (8, 2)
    world = env.world
    for a in range(8):
        x, y = world.pos[a]
        for move, (dx, dy) in zip((UP, DOWN, LEFT, RIGHT), ((0, 1), (0, -1), (-1, 0), (1, 0))):
            tx, ty = x + dx, y + dy
            wall = not (0 <= tx < 7 and 0 <= ty < 7) or world.grid[a, tx, ty] == WALL
            assert moves[a, move] == wall
        assert not moves[a, STAY]
        assert pick[a, 1] == (world.grid[a, x, y] == 0) and not pick[a, 0]  # nothing to pick up: masked


def test_ml_agents_policy_never_takes_a_masked_action():
    """ML-Agents' own TorchPolicy, fed our DecisionSteps, never picks a masked move (walls are hit often)."""
    from mlagents.trainers.policy.torch_policy import TorchPolicy
    from mlagents.trainers.settings import NetworkSettings
    from mlagents.trainers.torch_entities.networks import SimpleActor

    env = SimulatedUnityEnv(ForageWorld, num_areas=16, seed=0)
    policy = TorchPolicy(0, env.behavior_specs["ForagerAgent"], NetworkSettings(), SimpleActor,
                         {"conditional_sigma": False, "tanh_squash": False})
    masked_seen = 0
    for _ in range(100):
        decisions, _ = env.get_steps("ForagerAgent")
        masked_seen += int(decisions.action_mask[0].sum())
        env.set_actions("ForagerAgent", policy.get_action(decisions, 0).env_action)
        env.step()
    assert masked_seen > 100 and env.masked_actions_taken == 0
    # The count is real: an action into a wall is counted, and the wall refuses it.
    decisions, _ = env.get_steps("ForagerAgent")
    agent = int(np.argmax(decisions.action_mask[0][:, 1:].any(axis=1)))
    move = int(np.argmax(decisions.action_mask[0][agent]))
    before = env.world.pos[agent].copy()
    actions = np.zeros((16, 2), np.int32)
    actions[agent, 0] = move
    env.set_actions("ForagerAgent", ActionTuple(discrete=actions))
    env.step()
    assert env.masked_actions_taken == 1 and env.world.pos[agent].tolist() == before.tolist()


def test_discrete_actions_outside_a_branch_are_refused():
    env = SimulatedUnityEnv(ForageWorld, num_areas=2, seed=0)
    refused = r"discrete actions must lie in 0..branch size-1 \(branches \[5, 2\]\); got 0..5"
    with pytest.raises(ValueError, match=refused):
        env.set_actions("ForagerAgent", ActionTuple(discrete=np.array([[5, 0], [0, 0]], np.int32)))
    with pytest.raises(ValueError, match=r"expected discrete actions of shape \(2, 2\), got \(2, 1\)"):
        env.set_actions("ForagerAgent", ActionTuple(discrete=np.zeros((2, 1), np.int32)))


# --- ONNX: Unity's contract for discrete outputs and masks --------------------------------------
@pytest.fixture(scope="module")
def forage_onnx(tmp_path_factory) -> Path:
    """An (untrained) forage policy exported by ML-Agents' own ModelSerializer."""
    from pipeline import mlagents_patches

    mlagents_patches.apply()
    from mlagents.trainers.policy.torch_policy import TorchPolicy
    from mlagents.trainers.settings import NetworkSettings
    from mlagents.trainers.torch_entities.model_serialization import ModelSerializer
    from mlagents.trainers.torch_entities.networks import SimpleActor

    env = SimulatedUnityEnv(ForageWorld, num_areas=1)
    policy = TorchPolicy(0, env.behavior_specs["ForagerAgent"], NetworkSettings(), SimpleActor,
                         {"conditional_sigma": False, "tanh_squash": False})
    out = tmp_path_factory.mktemp("onnx") / "ForagerAgent"
    ModelSerializer(policy).export_policy_model(str(out))
    return out.with_suffix(".onnx")


def test_discrete_onnx_passes_unitys_contract(forage_onnx):
    contract = check_policy(forage_onnx, (2, 2, 2, 4), 0, (5, 2))
    assert contract.branches == (5, 2) and contract.inputs["action_masks"] == 7 and contract.has_deterministic
    outputs = set(contract.outputs)
    assert {"discrete_actions", "discrete_action_output_shape", "deterministic_discrete_actions"} <= outputs


def test_discrete_onnx_with_other_branches_or_checked_as_continuous_is_refused(forage_onnx):
    with pytest.raises(PolicyContractError) as err:
        check_policy(forage_onnx, (2, 2, 2, 4), 0, (5,))
    assert str(err.value) == (f"{forage_onnx}: discrete_action_output_shape says branches [5, 2], the asset's "
                              "action_space.branches are [5]")
    with pytest.raises(PolicyContractError) as err:
        check_policy(forage_onnx, (2, 2, 2, 4), 2, ())
    assert "missing output(s) ['continuous_actions', 'continuous_action_output_shape'] that Unity reads for " \
           "continuous actions" in str(err.value)


def test_rollout_feeds_the_masks_to_the_onnx_policy(forage_onnx):
    """Sampled (not deterministic) actions of an untrained policy: masked actions only when masks are withheld."""
    def masked_taken(feed_masks: bool) -> int:
        env = SimulatedUnityEnv(ForageWorld, num_areas=16, seed=3)
        policy = rollout.onnx_policy(forage_onnx, deterministic=False)
        for _ in range(60):
            decisions, _ = env.get_steps("ForagerAgent")
            masks = decisions.action_mask if feed_masks else None
            env.set_actions("ForagerAgent", ActionTuple(discrete=policy(decisions.obs, masks).astype(np.int32)))
            env.step()
        return env.masked_actions_taken

    assert masked_taken(True) == 0
    assert masked_taken(False) > 0  # the check can fail: without masks the same policy walks into walls


# --- config and the guide -----------------------------------------------------------------------
def test_asset_configs_declare_what_the_simulations_are():
    assert compose_plan(["asset=forage"]).behavior_name == "ForagerAgent"
    assert compose_plan(["asset=push", "algorithm=poca"]).simulation == "push"
    with pytest.raises(ConfigError) as err:
        compose_plan(["asset=forage", "asset.action_space.branches=[5]"])
    assert str(err.value) == ("asset.action_space {'type': 'discrete', 'branches': [5]} does not match simulation "
                              "'forage': discrete, branches [5, 2]")
    with pytest.raises(ConfigError) as err:
        compose_plan(["asset=nav", "asset.action_space.type=discrete", "asset.action_space.branches=[5]"])
    assert str(err.value) == ("asset.action_space {'type': 'discrete', 'size': 2, 'branches': [5]} does not match "
                              "simulation 'nav': continuous, size 2")


@pytest.mark.parametrize("overrides, algorithm, budget", [
    (["asset=push"], "poca", 300_000),                       # push's own default: PPO never learns it
    (["algorithm=ppo", "asset=push"], "ppo", 300_000),       # yours wins, in either order,
    (["asset=push", "algorithm=ppo"], "ppo", 300_000),
    (["asset=push", "algorithm=sac"], "sac", 300_000),       # with that pair's tuning (conf/tuning/push_sac.yaml)
    ([], "ppo", 150_000),                                    # the other assets keep the global default
    (["asset=nav"], "ppo", 150_000),
    (["asset=patrol"], "ppo", 1_200_000),
    (["asset=forage"], "ppo", 150_000),
    (["asset=nav", "algorithm=poca"], "poca", 150_000),
    (["+search=ppo", "asset=push"], "ppo", None),             # a search over one algorithm's settings wins too
])
def test_an_asset_chooses_its_default_algorithm_and_an_explicit_one_wins(overrides, algorithm, budget):
    plan = compose_plan(overrides)
    assert plan.algorithm == algorithm
    assert budget is None or plan.max_steps == budget  # the tuning file of the pair actually chosen


def test_the_asset_default_algorithm_reaches_every_launch_path():
    from mlops_unity_pipeline.jobs import UnityEnvironment, job_request
    from pipeline.cli import parser, request_from
    from pipeline.launch.inprocess import plan_for
    from pipeline.launch.job_specs import RLTrainingConfig, TrainingJob, UnityAssetSpec

    def cli(*argv):  # `mlflow run . -P asset=push` runs `python -m pipeline.cli main --asset push --algorithm ""`
        return plan_for(request_from(parser().parse_args(["main", *argv]))).algorithm

    assert cli("--asset", "push", "--algorithm", "") == "poca"
    assert cli("--asset", "push") == "poca"
    assert cli("--asset", "push", "--algorithm", "ppo") == "ppo"
    assert cli("--asset", "push", "--overrides", "algorithm=sac") == "sac"
    assert cli("--asset", "nav") == "ppo"

    def guide(**rl):
        spec = UnityAssetSpec(asset_id="push-001", name="PushBlockTeam")
        job = TrainingJob(job_id="j", asset_spec=spec, rl_config=RLTrainingConfig(**rl))
        return plan_for(job_request(job, UnityEnvironment(asset_group="push"))).algorithm

    assert guide() == "poca"
    assert guide(algorithm="PPO") == "ppo"


def test_a_schedule_without_an_algorithm_trains_each_asset_with_its_default(tmp_path):
    from pipeline.scheduling.settings import build_schedule, load_config

    (tmp_path / "team.yaml").write_text('cron: "0 2 * * *"\nassets: [push, nav]\n')
    jobs = {j.asset_spec.name: j.rl_config.algorithm for j in build_schedule(load_config("team", [], tmp_path)).jobs}
    assert jobs == {"PushBlockTeam": "poca", "NavigationAgent": "ppo"}
    jobs = build_schedule(load_config("team", ["algorithm=sac"], tmp_path)).jobs
    assert [j.rl_config.algorithm for j in jobs] == ["sac", "sac"]


def _summaries(**dists):
    from mlagents.trainers.stats import StatsAggregationMethod, StatsSummary

    names = {"own": "Environment/Cumulative Reward", "group": "Environment/Group Cumulative Reward",
             "extrinsic": "Policy/Extrinsic Reward", "success": "Environment/Success Rate"}
    return {names[k]: StatsSummary(v, StatsAggregationMethod.AVERAGE) for k, v in dists.items()}


def test_progress_line_shows_the_group_reward_and_group_success_of_a_group():
    import io

    from pipeline.tracking.stats_writer import ProgressWriter

    out = io.StringIO()  # POCA on push: own rewards are all 0, the group's return is what moves
    ProgressWriter(1000, out, group=True).write_stats(
        "PushBlockTeam", _summaries(own=[0.0, 0.0], group=[1.5, 2.5], success=[1.0, 0.0]), 100)
    line = out.getvalue()
    assert "group reward   2.000 ± 0.500" in line and "group success 50.0%" in line
    assert "own reward" not in line and "mean reward" not in line

    out = io.StringIO()  # a trainer that reports a group reward marks a group on its own (a Unity build)
    ProgressWriter(1000, out).write_stats("PushBlockTeam", _summaries(group=[1.0], success=[1.0]), 100)
    assert "group reward" in out.getvalue() and "group success 100.0%" in out.getvalue()

    out = io.StringIO()  # PPO on push: no group statistic; its extrinsic reward is own + group reward
    ProgressWriter(1000, out, group=True).write_stats(
        "PushBlockTeam", _summaries(own=[0.0, 0.0], extrinsic=[-0.5, -0.3], success=[0.0]), 100)
    line = out.getvalue()
    assert "own+group reward  -0.400 ± 0.100" in line and "group success  0.0%" in line
    assert "mean reward" not in line

    out = io.StringIO()  # single agents: as before
    ProgressWriter(1000, out).write_stats("NavigationAgent", _summaries(own=[1.0, 3.0], success=[1.0]), 100)
    assert "mean reward   2.000 ± 1.000" in out.getvalue() and "| success 100.0%" in out.getvalue()


# --- over gRPC, through the simulated Unity player ------------------------------------------------
@pytest.mark.parametrize("name", ["push", "forage"])
def test_groups_and_masks_survive_the_wire(name, tmp_path):
    """UnityEnvironment talking to the simulated player sees exactly what the in-process BaseEnv gives."""
    from mlagents_envs.environment import UnityEnvironment

    from pipeline.unity import ports
    from tests.test_unity_player import make_build

    world = SIMULATIONS[name]
    player = make_build(tmp_path / "build", f"{name.capitalize()}.x86_64")
    reservation = ports.reserve_port(5005)
    reservation.release()  # UnityEnvironment binds it right away
    remote = UnityEnvironment(str(player), base_port=reservation.port, seed=4, no_graphics=True, num_areas=3,
                              timeout_wait=60, log_folder=str(tmp_path))
    local = SimulatedUnityEnv(world, num_areas=3, seed=4)
    try:
        behavior = world.spec.behavior_name
        remote.reset()  # the player sends its brain parameters with the first agent infos
        local.reset()
        assert remote.behavior_specs[behavior] == local.behavior_specs[behavior]
        terminals = 0
        for _ in range(40 if name == "forage" else 35):
            (rd, rt), (ld, lt) = remote.get_steps(behavior), local.get_steps(behavior)
            for a, b in ((rd, ld), (rt, lt)):
                assert len(a) == len(b)  # (agent ids differ: a Unity agent gets a new id every episode)
                assert np.asarray(a.group_id).tolist() == np.asarray(b.group_id).tolist()
                np.testing.assert_allclose(a.group_reward, b.group_reward, rtol=1e-6)
                np.testing.assert_allclose(a.reward, b.reward, rtol=1e-6)
                for x, y in zip(a.obs, b.obs):
                    np.testing.assert_allclose(x, y, rtol=1e-6)
            if name == "forage":
                for x, y in zip(rd.action_mask, ld.action_mask):
                    assert x.tolist() == y.tolist()
            terminals += len(rt)
            actions = rollout.decide(world, world.heuristic, ld)
            remote.set_actions(behavior, actions)
            local.set_actions(behavior, actions)
            remote.step()
            local.step()
        assert terminals > 0
    finally:
        remote.close()


# --- demonstrations: discrete actions and group ids in .demo and JSONL --------------------------------
@pytest.mark.parametrize("name", ["push", "forage"])
def test_demonstrations_round_trip_with_discrete_actions_and_groups(name, tmp_path):
    from mlagents.trainers.buffer import BufferKey
    from mlagents.trainers.demo_loader import demo_to_buffer

    from pipeline.offline import jsonl, recorder, unity_demo

    world = SIMULATIONS[name]
    data = recorder.record(world, world.heuristic, 9, seed=0, num_areas=3, noise=0.2)
    layout = recorder.layout_of_world(world)
    for module, suffix in ((jsonl, "jsonl"), (unity_demo, "demo")):
        back = module.read(module.write(tmp_path / f"demo.{suffix}", data), layout)
        np.testing.assert_allclose(back.actions, data.actions, atol=1e-4)
        np.testing.assert_allclose(back.total_rewards(), data.total_rewards(), atol=1e-4)
        assert back.episode_returns().round(3).tolist() == data.episode_returns().round(3).tolist()
        if name == "push":
            assert back.group is not None and back.group.tolist() == data.group.tolist()
            assert set(data.group.tolist()) == {1, 2, 3}
        else:
            assert back.group is None and set(back.actions[:, 1].tolist()) == {0.0, 1.0}
    # ML-Agents' own loader (GAIL, behavioral_cloning) reads the .demo with its discrete actions.
    spec, buffer = demo_to_buffer(str(tmp_path / "demo.demo"), 1)
    if name == "forage":
        assert spec.action_spec.discrete_branches == (5, 2)
        assert np.asarray(buffer[BufferKey.DISCRETE_ACTION]).shape[1] == 2
    else:
        assert spec.action_spec.continuous_size == 2


def test_a_dataset_with_an_action_outside_a_branch_is_refused(tmp_path):
    from pipeline.offline import jsonl, recorder

    path = tmp_path / "bad.jsonl"
    obs = '{"good":[0,0],"bad":[0,0],"here":[0,0],"walls":[0,0,0,0]}'
    path.write_text(f'{{"obs":{obs},"action":[5,0],"done":true}}\n')
    with pytest.raises(ConfigError) as err:
        jsonl.read(path, recorder.layout_of_world(ForageWorld))
    assert str(err.value) == (f"{path}: line 1: action index 5 of branch 0 is outside 0..4 (asset ForagerAgent "
                              "(good=2, bad=2, here=2, walls=4; action_space.branches=[5, 2]))")


# --- short real trainings -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("asset, algorithm", [("push", "poca"), ("push", "ppo"), ("forage", "ppo"), ("forage", "sac")])
def test_short_real_training_of_each_applicable_algorithm(asset, algorithm, store, tmp_path):
    from pipeline.stages.pipeline import run_pipeline

    overrides = TINY + [f"asset={asset}", f"algorithm={algorithm}", f"results_dir={tmp_path / 'results'}"]
    if asset == "push":  # 2 areas x 3 agents: 3000 agent steps are 500 steps of each area, so episodes end
        overrides += ["env.num_areas=2"]
    if algorithm == "sac":
        overrides = [o for o in overrides if "buffer_size" not in o]
        overrides.append("algorithm.hyperparameters.buffer_init_steps=500")
    result = run_pipeline(compose_plan(overrides))
    assert result.status == "FINISHED", result
    client = mlflow.MlflowClient()
    metrics = client.get_run(result.train.run_id).data.metrics
    assert "Environment/Success Rate" in metrics
    if algorithm == "poca":  # POCA saw the group: it reports the group's return
        assert "Environment/Group Cumulative Reward" in metrics
    m = result.evaluate.metrics
    assert m["eval/episodes"] == 12 and "baseline/heuristic/success_rate" in m


@pytest.mark.slow
def test_forage_offline_behavioural_cloning_learns_the_heuristic(store, tmp_path):
    """Offline BC from discrete demonstrations (JSONL) exports an ONNX that passes the contract and forages."""
    from pipeline.offline import jsonl, recorder
    from pipeline.stages.pipeline import run_pipeline

    data = recorder.record(ForageWorld, ForageWorld.heuristic, 200, seed=0, num_areas=16)
    path = jsonl.write(tmp_path / "forage.jsonl", data)
    plan = compose_plan(TINY + ["asset=forage", "mode=offline", f"mode.dataset_path={path}", "max_steps=30000",
                                "evaluation.episodes=50", f"results_dir={tmp_path / 'results'}"])
    result = run_pipeline(plan)
    m = result.evaluate.metrics
    assert m["eval/success_rate"] >= 0.6 and m["baseline/random/success_rate"] <= 0.1
