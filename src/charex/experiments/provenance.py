"""Provenance saved beside every result: config, versions, seeds, git revision, machine."""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text


def git_revision() -> str | None:
    """The git commit of the charex source tree, with ``-dirty`` if it has local changes; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_description() -> str:
    """The CPU model name and the vector/matrix extensions that decide the fast dtype (e.g. AVX-512 BF16, AMX)."""
    from ..dtypes import cpu_info

    name, flags = cpu_info()
    ext = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512-BF16"),
                                     ("amx_bf16", "AMX-BF16")) if flag in flags]
    return f"{name} ({', '.join(ext) or 'no AVX2'}), {torch.get_num_threads()} threads"


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config plus versions, git revision, machine and time."""
    from .._version import __version__

    return {"config": config, "charex_version": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "threads": torch.get_num_threads(),
            "cpu": cpu_description(), "git": git_revision(),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
