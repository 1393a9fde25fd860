"""The promotion gate's rule and the registry config's validation: pure functions, no store needed."""
from __future__ import annotations

import pytest

from pipeline.config.compose import compose_plan
from pipeline.config.errors import ConfigError
from pipeline.registry.gate import Evaluation, judge
from pipeline.registry.vertex_rules import model_id_for

PROTOCOL = {"episodes": "100", "seed": "10000", "deterministic": "True"}


def ev(success, low, high, reward=0.5, rlow=0.4, rhigh=0.6, protocol=PROTOCOL):
    return Evaluation({"success_rate": success, "success_rate_ci_low": low, "success_rate_ci_high": high,
                       "mean_reward": reward, "mean_reward_ci_low": rlow, "mean_reward_ci_high": rhigh},
                      dict(protocol))


def gate(challenger, champion, margin=0.0, tiebreak="mean_reward"):
    return judge(challenger, champion, "v1", "success_rate", margin, tiebreak, 0.0)


def test_a_challenger_whose_lower_bound_beats_the_champion_is_promoted():
    verdict = gate(ev(0.92, 0.85, 0.96), ev(0.70, 0.60, 0.78))
    assert verdict.promote and verdict.kind == "better"
    assert verdict.reason == ("success_rate 0.920 [0.850, 0.960] vs champion 0.700 [0.600, 0.780]: "
                              "lower bound 0.850 > 0.700 + margin 0 -> promoted")
    assert verdict.figures["gate/challenger_success_rate_ci_low"] == 0.85
    assert verdict.figures["gate/champion_success_rate"] == 0.70


def test_a_better_mean_inside_the_noise_does_not_promote():
    verdict = gate(ev(0.75, 0.66, 0.83, reward=0.5), ev(0.70, 0.60, 0.78, reward=0.5))
    assert not verdict.promote and verdict.kind == "not-better"
    assert verdict.reason.endswith("-> v1 stays champion")


def test_the_margin_is_required_on_top_of_the_champion():
    assert gate(ev(0.92, 0.85, 0.96), ev(0.70, 0.60, 0.78), margin=0.1).promote
    verdict = gate(ev(0.92, 0.85, 0.96), ev(0.70, 0.60, 0.78), margin=0.2)
    assert not verdict.promote and "lower bound 0.850 <= 0.700 + margin 0.2" in verdict.reason


def test_equal_success_is_decided_by_reward_and_never_for_a_lower_success_rate():
    saturated = ev(1.0, 0.96, 1.0, reward=0.90, rlow=0.88, rhigh=0.92)
    verdict = gate(saturated, ev(1.0, 0.96, 1.0, reward=0.80, rlow=0.78, rhigh=0.82))
    assert verdict.promote and verdict.kind == "tiebreak"
    assert "tie-break: mean_reward 0.900 [0.880, 0.920] vs champion 0.800 [0.780, 0.820]" in verdict.reason
    lower_success = gate(ev(0.98, 0.93, 0.99, reward=0.9, rlow=0.88), ev(1.0, 0.96, 1.0, reward=0.8))
    assert not lower_success.promote
    assert not gate(saturated, ev(1.0, 0.96, 1.0, reward=0.80), tiebreak=None).promote


def test_different_evaluation_protocols_are_not_compared():
    verdict = gate(ev(0.92, 0.85, 0.96, protocol={**PROTOCOL, "episodes": "12"}), ev(0.70, 0.60, 0.78))
    assert not verdict.promote and verdict.kind == "protocol-mismatch"
    assert "episodes 12 vs 100" in verdict.reason


def test_missing_evaluations_skip_promotion_with_the_fix():
    assert gate(None, ev(0.7, 0.6, 0.78)).kind == "no-evaluation"
    assert "python -m pipeline.cli evaluate --policy" in gate(None, ev(0.7, 0.6, 0.78)).reason
    unevaluated = gate(ev(0.92, 0.85, 0.96), Evaluation({}, {}))
    assert unevaluated.kind == "champion-unevaluated" and "registry.force=true" in unevaluated.reason


def test_figures_round_trip_through_model_version_tags():
    original = ev(0.92, 0.85, 0.96)
    assert Evaluation.from_tags(original.as_tags()).figures == pytest.approx(original.figures)
    assert Evaluation.from_tags(original.as_tags()).protocol == PROTOCOL


@pytest.mark.parametrize("override, message", [
    ("registry.metric=accuracy", "registry.metric='accuracy' is not a gated evaluation figure; "
                                 "choose one of: success_rate, mean_reward"),
    ("registry.margin=-0.1", "registry.margin=-0.1 must be >= 0 (a negative margin would promote a worse policy); "
                             "use registry.force=true for a deliberate override"),
    ("registry.champion_alias=Champion", "registry.champion_alias='Champion' must be 2-128 characters: a lowercase "
                                         "letter first, then letters, digits or '-', ending in a lowercase letter or "
                                         "digit (Vertex AI's version-alias rule)"),
    ("registry.challenger_alias=v2", "registry.challenger_alias='v2' is reserved by MLflow (it resolves 'latest' "
                                     "and 'v<N>' itself)"),
    ("+registry.vertex_labels.team=Robotics", "registry.vertex_labels.team: label value 'Robotics' (key 'team') may "
                                              "only have at most 63 lowercase letters, digits, '_' or '-' "
                                              "(Vertex AI's label rule)"),
    ("registry.vertex_project=My_Project", "registry.vertex_project='My_Project' is not a Google Cloud project ID "
                                           "(6-30 lowercase letters, digits or '-', starting with a letter), "
                                           "e.g. my-unity-project"),
    ("registry.staging_bucket=my-bucket", "registry.staging_bucket='my-bucket' must be gs://<bucket>[/<prefix>] with "
                                          "a valid bucket name, e.g. gs://my-unity-policies/vertex"),
    ("registry.credentials=anonymous", "registry.credentials=anonymous only works against an emulator: set "
                                       "registry.api_endpoint (and registry.storage_endpoint) to it"),
    ("registry.credentials=/nope/key.json", "registry.credentials='/nope/key.json': no such key file; give the path "
                                            "of a service-account key JSON, or leave it unset to use Application "
                                            "Default Credentials"),
])
def test_bad_registry_settings_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError) as err:  # refused while planning: before any training starts
        compose_plan([override])
    assert str(err.value) == message


def test_vertex_model_ids_follow_vertex_rules():
    assert model_id_for("nav-agent-001.NavigationAgent") == "nav-agent-001-navigationagent"
    assert model_id_for("007.Bond") == "m-007-bond"
