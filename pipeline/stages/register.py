"""Register stage: put a trained policy in the MLflow Model Registry, gate its promotion, mirror it to Vertex AI.

Everything that can be checked offline (config, the training run, its ONNX, credentials) is checked
before the register run starts, so bad input leaves no run and no registry entry behind. After that
MLflow is the source of truth: the version and its aliases are settled first, then mirrored to Vertex
AI; if the mirror fails the run ends FAILED with the MLflow side consistent, and re-running the same
command completes the mirror without duplicating anything.
"""
from __future__ import annotations

import getpass
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import mlflow

from pipeline.config.plan import RunPlan
from pipeline.registry import lineage, mlflow_registry, policy_model, vertex_mirror, vertex_target
from pipeline.registry.gate import Evaluation, Verdict, judge
from pipeline.registry.settings import RegistryConfig
from pipeline.stages.common import experiment_for, plan_tags
from pipeline.tracking import runs
from pipeline.tracking.runs import stage_run


@dataclass(frozen=True)
class RegisterResult:
    run_id: str
    model_name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    decision: str = ""
    promoted: bool = False  # this run made the version champion
    forced: bool = False  # ... by registry.force=true rather than by the gate
    gate: str = ""  # first | better | tiebreak | not-better | protocol-mismatch | no-evaluation | ... | forced
    figures: dict[str, float] = field(default_factory=dict)  # what the gate compared
    vertex_status: str = ""  # registered | local-only
    vertex_uri: str = ""  # projects/<p>/locations/<r>/models/<id>@<version>
    created: bool = True  # False: the version existed from an earlier attempt


def registered_model_name(plan: RunPlan) -> str:
    return mlflow_registry.model_name(plan.asset_id, plan.behavior_name)


def register(plan: RunPlan, train_run_id: str, eval_metrics: Optional[dict] = None) -> RegisterResult:
    reg = plan.config.registry
    client = mlflow.MlflowClient()
    experiment = experiment_for(plan)
    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        source = lineage.collect(train_run_id, eval_metrics, Path(tmp))
        name = mlflow_registry.model_name(source.asset_id, source.behavior)
        target = vertex_target.resolve(reg, name)
        tags = {**plan_tags(plan), "asset": source.asset_id, "behavior": source.behavior,
                "algorithm": source.algorithm, "pipeline.train_run_id": train_run_id}
        with stage_run("register", experiment, f"register-{source.asset_id}", tags,
                       adopt_run_id=plan.adopted_run_id) as run:
            runs.log_params({"registry": {k: v for k, v in asdict(reg).items() if k != "credentials"}})
            version, created = mlflow_registry.ensure_version(client, name, source)
            v = str(version.version)  # MLflow 3 gives an int here, a str elsewhere
            verdict, promoted, forced = _decide(client, reg, name, v, source)
            decision = verdict.reason
            if int(v) == mlflow_registry.latest_version(client, name):
                client.set_registered_model_alias(name, reg.challenger_alias, v)
            if promoted:
                client.set_registered_model_alias(name, reg.champion_alias, v)
            if verdict.kind != "already-champion":
                mlflow_registry.set_tags(client, name, v, {
                    "promotion.decision": decision[:5000], "promotion.gate": verdict.kind,
                    "promotion.register_run_id": run.info.run_id, "promotion.forced": str(forced).lower()})
                client.update_model_version(name, v, description=f"From training run {train_run_id}. {decision} "
                                                                 f"{policy_model.served_as(source.model_dir)}"[:5000])
            aliases = sorted(client.get_model_version(name, v).aliases)
            runs.set_tags({"registry.model": name, "registry.version": v, "registry.decision": decision[:5000],
                           "registry.gate": verdict.kind, "registry.promoted": str(promoted).lower(),
                           "registry.forced": str(forced).lower(), "registry.aliases": ",".join(aliases)})
            if verdict.figures:
                mlflow.log_metrics({**verdict.figures, "gate/promoted": float(promoted)})
            mlflow.log_dict({"model": name, "version": v, "aliases": aliases, "gate": verdict.kind,
                             "promoted": promoted, "forced": forced, "decision": decision,
                             "figures": verdict.figures, "margin": reg.margin, "metric": reg.metric,
                             "tiebreak_metric": reg.tiebreak_metric,
                             "challenger_evaluation": asdict(source.evaluation) if source.evaluation else None},
                            "promotion.json")
            print(f"register: {name} v{v} ({', '.join(aliases)}): {decision}", flush=True)
            status, uri = _mirror(client, reg, target, source, name, v, aliases, decision, Path(tmp))
            result = RegisterResult(run.info.run_id, name, v, aliases, decision, promoted, forced, verdict.kind,
                                    verdict.figures, status, uri, created)
    return result


def _decide(client: mlflow.MlflowClient, reg: RegistryConfig, name: str, version: str,
            source: lineage.PolicySource) -> tuple[Verdict, bool, bool]:
    """(verdict, promote?, forced?) for this version against the current champion."""
    champion = mlflow_registry.version_by_alias(client, name, reg.champion_alias)
    if champion is not None and str(champion.version) == version:
        return Verdict(False, "already-champion", f"v{version} is already {reg.champion_alias} "
                       f"({champion.tags.get('promotion.decision', 'decided earlier')})"), False, False
    if champion is None:
        note = "" if source.evaluation else " (it has no evaluation on record)"
        return Verdict(True, "first", f"no {reg.champion_alias} yet for {name}: v{version} becomes "
                       f"{reg.champion_alias}{note}"), True, False
    verdict = judge(source.evaluation, Evaluation.from_tags(champion.tags), f"v{champion.version}",
                    reg.metric, reg.margin, reg.tiebreak_metric, reg.tiebreak_margin)
    if reg.force and not verdict.promote:
        who = _user()
        return Verdict(True, "forced", f"forced to {reg.champion_alias} by {who} (registry.force=true) over "
                       f"v{champion.version}; the gate said: {verdict.reason}", verdict.figures), True, True
    return verdict, verdict.promote, False


def _mirror(client: mlflow.MlflowClient, reg: RegistryConfig, target: vertex_target.Target,
            source: lineage.PolicySource, name: str, version: str, aliases: list[str], decision: str,
            tmp: Path) -> tuple[str, str]:
    """Mirror to Vertex AI, or write the local record; log vertex_registration.json either way."""
    mirrored = [a for a in aliases if a in (reg.challenger_alias, reg.champion_alias)]
    if reg.champion_alias in mirrored:
        mirrored.append("default")  # Vertex serves its `default` version when none is named: the champion
    if isinstance(target, vertex_target.LocalOnly):
        uri = f"{target.model_resource}@{version}"
        record = vertex_mirror.record(target, source, name, version, mirrored, "local-only", target.reason, None, uri)
        mlflow.log_dict(record, "vertex_registration.json")
        mlflow_registry.set_tags(client, name, version, {"vertex.status": "local-only"})
        runs.set_tags({"vertex.status": "local-only", "vertex.reason": target.reason[:5000]})
        print(f"warning: Vertex AI: not uploaded: {target.reason}. Wrote vertex_registration.json to the register "
              f"run instead (would be {uri}).", file=sys.stderr, flush=True)
        return "local-only", uri
    try:
        vv = vertex_mirror.mirror(target, source, name, version, mirrored, display_name=name,
                                  description=f"MLflow {name} v{version}, run {source.run_id}, ONNX sha256 "
                                              f"{source.onnx_sha256}. {decision}"[:2000])
    except (vertex_mirror.VertexError, vertex_mirror.VertexUnavailable) as exc:
        mlflow_registry.set_tags(client, name, version, {"vertex.status": f"failed: {exc}"[:5000]})
        raise type(exc)(  # bad input stays bad input, an unreachable service stays that
            f"{exc}. MLflow {name} v{version} is registered and its aliases are set; re-run "
            f"`python -m pipeline.cli register --run_id {source.run_id}` to complete the Vertex AI mirror") from None
    record = vertex_mirror.record(target, source, name, version, vv.aliases, "registered", None, vv, vv.resource_name)
    mlflow.log_dict(record, "vertex_registration.json")
    mlflow_registry.set_tags(client, name, version, {"vertex.resource_name": vv.resource_name,
                                                     "vertex.artifact_uri": vv.artifact_uri,
                                                     "vertex.status": "registered"})
    runs.set_tags({"vertex.resource_name": vv.resource_name, "vertex.status": "registered"})
    print(f"register: Vertex AI {vv.resource_name} ({', '.join(vv.aliases) or 'no aliases'})"
          + ("" if vv.uploaded else ", found from an earlier attempt"), flush=True)
    return "registered", vv.resource_name


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown user"
