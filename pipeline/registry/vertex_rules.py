"""Vertex AI's naming rules, checked locally so a bad name fails before anything is registered."""
from __future__ import annotations

import re

ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]$")  # MergeVersionAliasesRequest.version_aliases
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")  # resource labels: lowercase, digits, '_' and '-'
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
MODEL_ID = re.compile(r"^[a-z_][a-z0-9_-]{0,62}$")  # UploadModelRequest.model_id
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
MLFLOW_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)  # MLflow resolves these itself
MAX_LABELS = 64


def label_value(text: str) -> str:
    """Any text -> a valid label value (lowercase; other characters become '-'), e.g. for model names."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def model_id_for(registered_model: str) -> str:
    """The Vertex model ID mirroring an MLflow registered model.

    `nav-agent.NavigationAgent` -> `nav-agent-navigationagent`.
    """
    candidate = label_value(registered_model).strip("-")
    if not candidate or not re.match(r"^[a-z_]", candidate):
        candidate = f"m-{candidate}"
    return candidate[:63]


def alias_problem(alias: str) -> str | None:
    if not ALIAS.match(alias) or alias.isdigit():
        return ("must be 2-128 characters: a lowercase letter first, then letters, digits or '-', "
                "ending in a lowercase letter or digit (Vertex AI's version-alias rule)")
    if MLFLOW_RESERVED_ALIAS.match(alias):
        return "is reserved by MLflow (it resolves 'latest' and 'v<N>' itself)"
    if alias == "default":
        return "is Vertex AI's own alias for the default version (the registry moves it with the champion)"
    return None


def label_problem(key: str, value: str) -> str | None:
    if not LABEL_KEY.match(key):
        return (f"label key {key!r} must start with a lowercase letter and have at most 63 lowercase letters, "
                "digits, '_' or '-' (Vertex AI's label rule)")
    if not LABEL_VALUE.match(value):
        return (f"label value {value!r} (key {key!r}) may only have at most 63 lowercase letters, digits, "
                "'_' or '-' (Vertex AI's label rule)")
    return None
