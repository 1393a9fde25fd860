"""Passwords out of anything printed or logged: URIs' userinfo passwords and credential query parameters.

Pure string work with no heavy imports, so entry points can redact their error lines without loading MLflow.
"""
from __future__ import annotations

import re

REDACTED = "***"
# A URI's userinfo password (scheme://user:PASSWORD@host), wherever it appears in a piece of text.
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):(?P<password>[^\s/?#'\"]*)@")
# Names of query parameters that carry a credential (?password=, ?access_token=, ?api_key=, ?sig=, ...).
CREDENTIAL_NAME = re.compile(r"^(sig|code|key|auth|pass)$|password|passwd|pwd|secret|token|api[_-]?key|"
                             r"access[_-]?key|signature|credential|authorization", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[A-Za-z0-9_\-]+)=)(?P<value>[^&;#\s'\"]+)")


def is_credential_name(name: str) -> bool:
    return bool(CREDENTIAL_NAME.search(name))


def redact_uri(text: str) -> str:
    """`text` with every URI password (userinfo `user:PASSWORD@`, or a credential query parameter's value)
    replaced by ***: `postgresql://mlflow:s3cret@db/mlflow` -> `postgresql://mlflow:***@db/mlflow`."""
    if not isinstance(text, str) or "://" not in text and "=" not in text:
        return text
    text = _USERINFO_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@" if m["password"] else m[0], text)
    return _QUERY_PARAM.sub(lambda m: f"{m['head']}{REDACTED}" if is_credential_name(m["name"]) else m[0], text)
