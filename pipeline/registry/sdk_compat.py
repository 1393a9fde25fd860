"""Let google-cloud-aiplatform 2.x wait for Vertex operations over REST with this project's google-api-core.

mlagents pins protobuf 3.20, which holds google-api-core at 2.10.2 on Python 3.11. aiplatform's REST
transport builds its long-running-operations client as `OperationsRestTransport(..., path_prefix="v1")`,
a keyword 2.10.2 does not have (TypeError on every `Model.upload`), and 2.10.2 polls
`https://{host}` although aiplatform hands it a host that already carries its scheme
("https://https://…"). The subclass below accepts the keyword (aiplatform passes explicit v1 routes, so
it changes nothing) and polls on the host's own scheme. Newer api-cores are left untouched.
"""
from __future__ import annotations

import inspect

from google.api_core import operations_v1


def _needs_patch() -> bool:
    params = inspect.signature(operations_v1.OperationsRestTransport.__init__).parameters
    return "path_prefix" not in params and not getattr(operations_v1.OperationsRestTransport, "_pipeline_compat", False)


def apply() -> None:
    if not _needs_patch():
        return
    base = operations_v1.OperationsRestTransport

    class OperationsRestTransport(base):  # type: ignore[misc, valid-type]
        _pipeline_compat = True

        def __init__(self, *, host: str = "longrunning.googleapis.com", path_prefix: str = "v1", **kwargs):
            scheme, _, bare = host.rpartition("://")
            super().__init__(host=bare, **kwargs)
            if scheme == "http":  # a local emulator: 2.10.2 always formats https://{host}
                session = self._session
                plain = session.request

                def request(method, url, *args, **kw):
                    if url.startswith("https://" + bare):
                        url = "http://" + url[len("https://"):]
                    return plain(method, url, *args, **kw)

                session.request = request  # type: ignore[method-assign]

    operations_v1.OperationsRestTransport = OperationsRestTransport  # type: ignore[misc]
