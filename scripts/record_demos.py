#!/usr/bin/env python
"""Record, convert and inspect demonstration datasets for offline / hybrid training.

    python scripts/record_demos.py record --asset nav --episodes 250 --out data/demos/navigation_demo.jsonl
    python scripts/record_demos.py record --asset nav --noise 0.8 --mixed --out data/demos/nav_mixed.jsonl
    python scripts/record_demos.py record --asset nav --policy results/<run>/NavigationAgent.onnx --out nav.demo
    python scripts/record_demos.py convert data/demos/navigation_demo.jsonl /tmp/navigation_demo.demo
    python scripts/record_demos.py inspect data/demos/navigation_demo.jsonl --asset nav
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.offline.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
