"""Serving on NVIDIA Triton Inference Server (docs/serving.md).

- :mod:`.repository`: ``write_repository(bundle, out, RepositoryOptions(...))`` writes a model
  repository: one Python-backend model per network (dynamic batching where the batch axis
  allows) and the BLS model ``v2a`` that runs one whole request; ``v2a-export triton`` calls it.
- :mod:`.network_model`, :mod:`.v2a_model`: the models themselves (run inside Triton's Python
  backend; :mod:`.triton` holds their Triton-facing helpers, :mod:`.loading` the load checks).
- :mod:`.server`: ``run_server(repo, ServeOptions(...))`` runs ``tritonserver`` (``v2a serve``).
- :mod:`.client`: ``ServerClient.connect(url).generate(video, options)`` (``v2a generate
  --server URL``), and the statistics that show steps batched across requests.

Nothing here imports torch or v2a_export; tritonclient is imported only by the client.
"""

from .client import ModelStats, ServerClient, ServerRequestError, ServerResult, ServerUnavailable
from .repository import RepositoryError, RepositoryOptions, write_repository
from .server import ServeOptions, ServerError, find_tritonserver, run_server

__all__ = [
    "ModelStats",
    "RepositoryError",
    "RepositoryOptions",
    "ServeOptions",
    "ServerClient",
    "ServerError",
    "ServerRequestError",
    "ServerResult",
    "ServerUnavailable",
    "find_tritonserver",
    "run_server",
    "write_repository",
]
