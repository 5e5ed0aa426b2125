"""Connecting to Ray (an optional extra) for ``scan --ray`` and ``reproduce cifar10 --ray``."""

from __future__ import annotations

from typing import Any

from .errors import CharexError


def connect(address: str) -> Any:
    """The ``ray`` module, connected: ``local`` starts an instance here, ``auto`` finds a running cluster (or
    uses one this process already started), anything else is a cluster address (``ray://HOST:PORT``)."""
    try:
        import ray
    except ImportError:
        raise CharexError("--ray needs Ray: pip install 'charex[ray]' (or ray)") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False)
    return ray
