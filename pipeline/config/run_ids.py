"""MLflow run ids as users type them (`resume=`, `policy=`): a leaf, so checking a config never loads MLflow."""
from __future__ import annotations

import re
from typing import Optional

from pipeline.config.errors import ConfigError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def check_resume_value(value: Optional[str]) -> None:
    if value is not None and value != "latest" and not RUN_ID.match(value):
        raise ConfigError(f"resume={value!r} must be 'latest' or an MLflow run id (32 hex characters)")
