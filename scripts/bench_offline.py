"""Benchmark: offline BC vs the heuristic it learned from, and environment steps to a success threshold
for online vs hybrid training (same seeds, same budget, real ML-Agents training, tracked in MLflow).

    .venv/bin/python scripts/bench_offline.py --seeds 0 --max-steps 150000 --threshold 0.8 --out bench_offline.json
    make bench-offline                   # seeds 0 1 2

Steps-to-threshold is the first ML-Agents summary step at which the training `Environment/Success Rate`
reaches the threshold (None if it never does); both policies are then evaluated on the same seeded episodes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlflow

from pipeline.config.compose import compose_plan
from pipeline.stages import evaluate, train

SUCCESS = "Environment/Success Rate"


def steps_to(run_id: str, threshold: float) -> Optional[int]:
    history = sorted((m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, SUCCESS))
    return next((step for step, value in history if value >= threshold), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--max-steps", type=int, default=150_000)
    p.add_argument("--pretrain-steps", type=int, default=300_000)
    p.add_argument("--offline-steps", type=int, default=1_000_000)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--dataset", default="data/demos/navigation_demo.jsonl")
    p.add_argument("--overrides", nargs="*", default=[])
    p.add_argument("--out", type=Path, default=Path("bench_offline.json"))
    args = p.parse_args()

    rows = []
    common = [f"mode.dataset_path={args.dataset}", "tracking.experiment_name=offline-benchmark", *args.overrides]
    for seed in args.seeds:
        row: dict = {"seed": seed}
        plan = compose_plan(["mode=offline", f"max_steps={args.offline_steps}", f"seed={seed}", *common])
        res = train.train(plan)
        ev = evaluate.evaluate(plan, res.run_id).metrics
        row["offline_bc"] = {"run_id": res.run_id, "eval_success": ev["eval/success_rate"],
                             "heuristic_success": ev.get("baseline/heuristic/success_rate")}
        for mode in ("online", "hybrid"):
            extra = [f"mode.pretrain_steps={args.pretrain_steps}"] if mode == "hybrid" else []
            plan = compose_plan([f"mode={mode}", f"max_steps={args.max_steps}", f"seed={seed}", *common, *extra])
            res = train.train(plan)
            ev = evaluate.evaluate(plan, res.run_id).metrics
            row[mode] = {"run_id": res.run_id, "steps_to_threshold": steps_to(res.run_id, args.threshold),
                         "final_train_success": res.metrics.get(SUCCESS), "eval_success": ev["eval/success_rate"]}
        rows.append(row)
        print(json.dumps(row, indent=2), flush=True)
    args.out.write_text(json.dumps({"threshold": args.threshold, "max_steps": args.max_steps,
                                    "pretrain_steps": args.pretrain_steps, "runs": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
