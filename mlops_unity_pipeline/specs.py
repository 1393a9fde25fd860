"""The guide's job descriptions, defined below both the guide API and the scheduler (pipeline/launch/job_specs.py)."""
from pipeline.launch.job_specs import *  # noqa: F401,F403
from pipeline.launch.job_specs import check_schedule, whole_number  # noqa: F401
