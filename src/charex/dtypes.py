"""The compute dtype a device runs natively, and the platform a bit-identical re-run depends on."""

from __future__ import annotations

import platform

import torch


def platform_record(device: torch.device | None = None) -> dict[str, str]:
    """CPU model (or GPU name), torch version and OS: with the inputs and the dtype, what makes a re-run
    bit-identical (``charex audit``)."""
    cpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else cpu_info()[0]
    return {"device": cpu, "torch": torch.__version__, "system": platform.system()}


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name (from /proc/cpuinfo where there is one) and its feature flags."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, flags


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` where the device runs it natively, else ``float32``; others unchanged."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        try:
            return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
        except (AttributeError, RuntimeError):
            return "float32"
    return "float32"
