"""Whether bf16 autocast pays on a device, and whether torch.compile can run there.

On a GPU with bf16 support it does. On a CPU it does only with bf16 matrix units (AVX512-BF16 or
AMX): an AVX2-only CPU runs a bf16 matmul ~100x slower than fp32 (measured here: 0.8 against 90
GFLOP/s on 2 threads of an AVX2 EPYC), so `optim.bf16: auto` trains such a machine in fp32.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(f in cpu_flags() for f in BF16_CPU_FLAGS)
    return False


def use_bf16(setting: bool | str, device: torch.device | str) -> bool:
    """Resolve a `bf16` setting: true / false as given, "auto" by `bf16_is_fast`."""
    if setting == "auto":
        return bf16_is_fast(device)
    return bool(setting)


def compiler_available(device: torch.device | str) -> bool:
    """Whether torch.compile can build kernels here: on a CPU inductor needs a C++ compiler
    ($CXX, or g++ / c++ / clang++ on the PATH); on a GPU it uses Triton, which CUDA builds ship."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return any(shutil.which(n) for n in names)


def use_compile(setting: bool | str, device: torch.device | str) -> bool:
    """Resolve `optim.compile`: true / false as given, "auto" by `compiler_available`."""
    if setting == "auto":
        return compiler_available(device)
    return bool(setting)
