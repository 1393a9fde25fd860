"""Hydra launcher plugin: each sweep job runs as a Ray task on a cluster (conf/hydra/launcher/ray.yaml)."""
