"""CPU thread count from $UNIAR_THREADS.

Two busy processes with two threads each on a 2-core machine run several times slower than with
one thread each (OpenMP workers spin waiting for a descheduled peer), so jobs that share a small
machine should pin their thread count.
"""

from __future__ import annotations

import os


def apply_env_threads() -> None:
    value = os.environ.get("UNIAR_THREADS")
    if value:
        import torch

        torch.set_num_threads(int(value))
