"""Starting a pipeline run: one typed `LaunchRequest` (request.py) and the executors that carry it out, in this
process (inprocess.py), as a local child process (local.py) or as a Ray job (ray_jobs.py); plus the
`mlflow run --backend ray` plugin (mlflow_backend.py)."""
