"""``v2a serve``: a real ``tritonserver`` on a repository, in the foreground.

Where the server comes from (:func:`find_tritonserver`), first match wins:

1. an explicit binary (``--tritonserver PATH``), with the backends of its install
   (``PATH/../../backends``, the layout of NVIDIA's container: ``/opt/tritonserver``);
2. the ``nvidia-pytriton`` wheel (CPU serving anywhere, e.g. CI): its ``tritonserver``, its
   shared libraries and its Python backend, whose stub process must match this interpreter
   (the wheel ships one stub per Python 3.8-3.13);
3. ``tritonserver`` on ``PATH`` (NVIDIA's container).

The Python backend starts each model's stub through ``bash`` with an isolated interpreter
(``PYTHONPATH`` and ``PYTHONHOME`` are ignored) whose prefix comes from the ``python3`` found on
``PATH`` (a venv's ``pyvenv.cfg`` included). So the server runs with a private venv first on
``PATH``: its ``python3`` is this interpreter and its one ``.pth`` file adds this environment's
``site-packages`` (editable installs included), so the models import the same ``v2a_runtime``
as the command that started them; ``LD_LIBRARY_PATH`` points the stub at this interpreter's
``libpython``.

For the wheel, the server also gets a private backends folder holding the Python backend
library and the stub for this Python. Those stubs (Triton 2.51) are built with pybind11 2.10,
which reads NumPy 2's dtype struct at NumPy 1's offsets: every item size comes out as 0, so
numeric tensors arrive as zeros and BYTES tensors as their first byte repeated (fixed upstream
in triton-inference-server/python_backend#384, Triton 24.11). So when this environment has
NumPy 2, the ``.pth`` puts a folder with NumPy 1.x first on the stub's path (``stub_packages``;
default ``<venv>/triton-stub``, made by ``pip install --target .venv/triton-stub
"numpy>=1.25,<2"``); the runtime and its dependencies work with either.

The server binds to ``host`` (loopback by default), exits if any model fails to load (a
tampered repository, a missing package), and stops cleanly on SIGINT/SIGTERM: the signal is
passed on once as SIGTERM (Triton finishes in-flight requests, up to ``exit_timeout`` s); a
second one kills it. The child also dies with this process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .repository import BLS_MODEL, REPOSITORY_FILE, RepositoryError

STUB = "triton_python_backend_stub"
UTILS = "triton_python_backend_utils.py"
_INSTALL_HINT = (
    "install the server with `pip install --no-deps nvidia-pytriton==0.7.0` (CPU), or run in "
    "NVIDIA's Triton container, or pass --tritonserver PATH"
)


class ServerError(RuntimeError):
    """The server cannot be started (one line that says what to do)."""


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and what it needs."""

    binary: Path
    backends: Path  # backend directory (for the wheel: the source of the private copy)
    stub: Path | None  # the wheel's Python-backend stub for this interpreter
    libraries: tuple[Path, ...] = ()  # prepended to LD_LIBRARY_PATH

    @property
    def from_wheel(self) -> bool:
        return self.stub is not None


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"  # 0.0.0.0 to serve other machines
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout: int = 30  # seconds Triton waits for in-flight requests when stopping
    extra_args: tuple[str, ...] = ()  # passed to tritonserver as they are
    stub_packages: Path | None = None  # NumPy 1.x for the wheel's stubs (default: see above)


def find_tritonserver(binary: str | Path | None = None) -> TritonInstall:
    """The server to run (see the module docstring); ServerError when there is none."""
    if binary is not None:
        path = Path(binary)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerError(f"{path} is not an executable tritonserver")
        return TritonInstall(path, path.resolve().parent.parent / "backends", None)
    spec = importlib.util.find_spec("pytriton")  # locates the wheel without importing it
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        if (root / "bin" / "tritonserver").is_file():
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = root / "python_backend_stubs" / version / STUB
            if not stub.is_file():
                raise ServerError(
                    f"nvidia-pytriton has no Python backend stub for Python {version} "
                    f"({stub.parent.parent}); serve from a Python it supports (3.8-3.13)"
                )
            libs = root.parent.parent / "nvidia_pytriton.libs"
            return TritonInstall(root / "bin" / "tritonserver", root / "backends", stub, (libs,))
    found = shutil.which("tritonserver")
    if found is not None:
        return TritonInstall(Path(found), Path(found).resolve().parent.parent / "backends", None)
    raise ServerError(f"no tritonserver found; {_INSTALL_HINT}")


def check_repository(repository: str | Path) -> Path:
    """The repository must be one ``v2a-export triton`` wrote."""
    repo = Path(repository)
    if not repo.is_dir():
        raise RepositoryError(f"{repo} is not a directory; write one with v2a-export triton")
    if not (repo / BLS_MODEL / "config.pbtxt").is_file() or not (repo / REPOSITORY_FILE).is_file():
        raise RepositoryError(
            f"{repo} is not a v2a Triton repository (no {BLS_MODEL}/config.pbtxt or "
            f"{REPOSITORY_FILE}); write one with v2a-export triton BUNDLE --out {repo}"
        )
    return repo.resolve()


def server_command(
    install: TritonInstall, repository: Path, options: ServeOptions, backends: Path
) -> list[str]:
    o = options
    return [
        str(install.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--http-address={o.host}",
        f"--http-port={o.http_port}",
        f"--grpc-address={o.host}",
        f"--grpc-port={o.grpc_port}",
        f"--metrics-address={o.host}",
        f"--metrics-port={o.metrics_port}",
        "--exit-on-error=true",  # a model that refuses to load stops the server
        "--strict-readiness=true",
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={o.exit_timeout}",
        *o.extra_args,
    ]


def stub_packages(install: TritonInstall, given: Path | None = None) -> Path | None:
    """The NumPy 1.x folder the wheel's stubs need in a NumPy 2 environment (else None)."""
    import numpy

    if not install.from_wheel or int(numpy.__version__.split(".")[0]) < 2:
        return None
    folder = Path(given or os.environ.get("V2A_TRITON_STUB_PACKAGES") or _default_stub_folder())
    found = sorted(folder.glob("numpy-1.*.dist-info")) if folder.is_dir() else []
    if not found:
        raise ServerError(
            f"the Python backend stubs of nvidia-pytriton need NumPy < 2 and {folder} has none; "
            f'run: pip install --target {folder} "numpy>=1.25,<2"'
        )
    return folder


def _default_stub_folder() -> Path:
    return Path(sys.prefix) / "triton-stub"


@contextmanager
def prepared(
    install: TritonInstall, packages: Path | None = None
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The backend directory and environment to run ``install`` with (private files are
    removed on exit); ``packages`` go first on the stub's path."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="v2a-serve-") as tmp:
        venv = _private_venv(Path(tmp) / "venv", packages)
        env["PATH"] = os.pathsep.join(filter(None, [str(venv / "bin"), env.get("PATH")]))
        libs = [str(p) for p in install.libraries]
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):  # the stub runs this libpython
            libs.insert(0, sysconfig.get_config_var("LIBDIR"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libs, env.get("LD_LIBRARY_PATH")]))
        if not install.from_wheel:
            yield install.backends, env
            return
        python = Path(tmp) / "backends" / "python"
        python.mkdir(parents=True)
        source = install.backends / "python"
        # Copies, not links: the backend looks for the stub beside its own resolved path.
        shutil.copy2(source / "libtriton_python.so", python)
        shutil.copy2(source / UTILS, python)
        shutil.copy2(install.stub, python / STUB)
        yield python.parent, env


def _private_venv(root: Path, packages: Path | None) -> Path:
    """A venv whose interpreter is this one and whose one .pth file adds ``packages`` (first)
    and this environment's site-packages."""
    import platform
    import site

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (root / "bin").mkdir(parents=True)
    for name in ("python3", "python"):
        os.symlink(os.path.realpath(sys.executable), root / "bin" / name)
    home = Path(sys.base_prefix) / "bin"
    (root / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\n"
        f"version = {platform.python_version()}\n"
    )
    lines = [f"import sys; sys.path.insert(0, {str(packages)!r})"] if packages else []
    lines += [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
    site_packages = root / "lib" / f"python{version}" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "v2a_serve.pth").write_text("\n".join(lines) + "\n")
    return root


def run_server(
    repository: str | Path,
    options: ServeOptions = ServeOptions(),  # noqa: B008 (frozen)
    *,
    install: TritonInstall | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run tritonserver on ``repository`` until it exits or this process is signalled; the
    server's exit status (0 after a clean stop). ``on_ready(url)`` once the server is ready."""
    repo = check_repository(repository)
    install = install or find_tritonserver()
    for port in (options.http_port, options.grpc_port, options.metrics_port):
        _check_port(options.host, port)
    packages = stub_packages(install, options.stub_packages)
    with prepared(install, packages) as (backends, env):
        argv = server_command(install, repo, options, backends)
        proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        stopping = []

        def stop(signum, _frame) -> None:
            stopping.append(signum)
            if len(stopping) == 1:
                proc.send_signal(signal.SIGTERM)
            else:
                proc.kill()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if on_ready is not None:
                url = f"http://{_client_host(options.host)}:{options.http_port}"
                waiter = threading.Thread(target=_wait_ready, args=(proc, url, on_ready))
                waiter.daemon = True
                waiter.start()
            rc = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return 0 if stopping and rc in (0, -signal.SIGTERM) else rc


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ServerError(f"port {port} is not in 1-65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServerError(
                f"cannot listen on {host}:{port} ({e.strerror}); pick another port"
            ) from None


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _wait_ready(proc: subprocess.Popen, url: str, on_ready: Callable[[str], None]) -> None:
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    on_ready(url)
                    return
        except OSError:
            pass
        time.sleep(0.5)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), no orphan server."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
