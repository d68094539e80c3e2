"""Which implementation runs the QRNN recurrence: backend names, availability and dispatch rules.

Backends (one module each, one shared set of function signatures, see `_torch_loop.py`):
    "numba":     CPU kernels (`_numba_cpu.py`), parallel over channels, time loop inside.
                 Default on CPU; numba is a normal dependency of the package.
    "triton":    GPU kernels (`_triton_gpu.py`), one program per block of channels, time loop
                 inside. Default on CUDA; optional (`pip install "qrnn[gpu]"`). Runs on CPU
                 tensors only under the Triton interpreter (`TRITON_INTERPRET=1`, for tests).
    "python":    a time loop of PyTorch ops with a hand-written backward (`_torch_loop.py`);
                 any device, no extra dependency; the fallback.
    "reference": the `*_ref` functions under plain autograd (the specification; slow).

Choice: the `backend=` argument, else the environment variable `QRNN_BACKEND`, else the default
for the tensor's device. A default that is not installed falls back to "python" with one warning;
a backend asked for by name that cannot run raises an error that says how to get it.
Nothing here imports numba or triton at `import qrnn` time.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

BACKENDS = ("numba", "triton", "python", "reference")
ENV_VAR = "QRNN_BACKEND"
INSTALL = {
    "numba": 'pip install "numba>=0.59"',
    "triton": 'pip install "qrnn[gpu]"   (or: pip install triton)',
}


class BackendUnavailableError(RuntimeError):
    """A backend was requested by name but cannot run here."""


_installed: dict[str, bool] = {}


def is_installed(backend: str) -> bool:
    """Whether the optional package a backend needs can be imported (without importing it)."""
    if backend in ("python", "reference"):
        return True
    if backend not in _installed:
        _installed[backend] = importlib.util.find_spec(backend) is not None
    return _installed[backend]


def triton_interpreter() -> bool:
    """Whether Triton kernels run in the CPU interpreter (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def resolve(device_type: str, requested: str | None = None) -> str:
    """The backend to run on a tensor of `device_type` ("cpu", "cuda", ...).

    `requested` (or `$QRNN_BACKEND` when it is None) names a backend; None/"" means the default.
    """
    source = "backend="
    if requested is None:
        requested, source = os.environ.get(ENV_VAR) or None, f"${ENV_VAR}="
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"{source}{requested!r}: backend must be one of {BACKENDS}")
        _check_can_run(requested, device_type, source)
        return requested
    default = {"cpu": "numba", "cuda": "triton"}.get(device_type)
    if default is None:
        return "python"
    if is_installed(default):
        return default
    _warn_once(
        default,
        f"qrnn: the fast {device_type.upper()} path needs {default}, which is not installed; "
        f"falling back to the much slower 'python' backend. Fix: {INSTALL[default]}",
    )
    return "python"


def _check_can_run(backend: str, device_type: str, source: str) -> None:
    if backend in ("python", "reference"):
        return
    if not is_installed(backend):
        raise BackendUnavailableError(
            f"{source}{backend!r} was requested but {backend} is not installed. "
            f"Install it with: {INSTALL[backend]}"
        )
    if backend == "numba" and device_type != "cpu":
        raise BackendUnavailableError(
            f"{source}'numba' runs on CPU tensors only, got a {device_type} tensor; "
            "use 'triton' (or 'python') on GPU"
        )
    if backend == "triton" and device_type != "cuda" and not (
        device_type == "cpu" and triton_interpreter()
    ):
        raise BackendUnavailableError(
            f"{source}'triton' runs on CUDA tensors (or on CPU tensors under the Triton "
            f"interpreter, TRITON_INTERPRET=1), got a {device_type} tensor"
        )
