"""Learning from demonstrations: datasets (JSONL, Unity .demo), recorder, offline and hybrid training."""
