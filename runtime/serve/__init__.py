"""Serving on NVIDIA Triton Inference Server (docs/serving.md).

- :mod:`.repository`: ``write_repository(bundle, out, RepositoryOptions(...))`` writes a model
  repository: one Python-backend model per network (dynamic batching where the batch axis
  allows) and the BLS model ``v2a`` that runs one whole request; ``v2a-export triton`` calls it.
- :mod:`.network_model`, :mod:`.v2a_model`: the models themselves (run inside Triton's Python
  backend; :mod:`.triton` holds their Triton-facing helpers, :mod:`.loading` the load checks).
- :mod:`.server`: ``run_server(repo, ServeOptions(...))`` runs ``tritonserver`` (``v2a serve``).
- :mod:`.client`: ``ServerClient.connect(url).generate(video, options)`` (``v2a generate
  --server URL``), and the statistics that show steps batched across requests.

Nothing here imports torch or v2a_export; tritonclient is imported only by the client. The
names below are imported on first use, so that a network model's process (which imports
:mod:`.network_model` through this package) does not load the pipeline, PyAV or SciPy.
"""

from importlib import import_module

_HOMES = {
    "ModelStats": "client",
    "ServerClient": "client",
    "ServerRequestError": "client",
    "ServerResult": "client",
    "ServerUnavailable": "client",
    "RepositoryError": "repository",
    "RepositoryOptions": "repository",
    "write_repository": "repository",
    "ServeOptions": "server",
    "ServerError": "server",
    "find_tritonserver": "server",
    "run_server": "server",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
