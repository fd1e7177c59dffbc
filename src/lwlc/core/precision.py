"""The arithmetic of an evaluation pass: one context manager per precision, by name.

``fp32`` is exact: on CUDA it turns TF32 off for the pass (PyTorch lets cuDNN use TF32 by
default, which would be ~1e-3 off the exact result); ``tf32`` turns TF32 on for CUDA matmuls and
convolutions; ``bf16`` runs the pass under autocast. On a CPU fp32 and tf32 change nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch


@contextlib.contextmanager
def cuda_tf32(device: torch.device, allowed: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and cuDNN allowed or not inside, restored after (CPU: nothing)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fp32(device: torch.device) -> AbstractContextManager[None]:
    """Exact float32 (TF32 off on CUDA)."""
    return cuda_tf32(device, allowed=False)


def tf32(device: torch.device) -> AbstractContextManager[None]:
    """TF32 matmuls and convolutions on CUDA (float32 elsewhere)."""
    return cuda_tf32(device, allowed=True)


def bf16(device: torch.device) -> AbstractContextManager[None]:
    """bfloat16 autocast on ``device``."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


# The precisions (``MeasureSpec.precision``, its ``Precision`` Literal): fp32 is exact; tf32 and
# bf16 trade accuracy for speed.
PRECISIONS: dict[str, Callable[[torch.device], AbstractContextManager[None]]] = {
    "fp32": fp32,
    "tf32": tf32,
    "bf16": bf16,
}
