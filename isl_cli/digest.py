"""The content digest every artifact carries in its metadata (`isl.digest`).

safetensors has no checksum, so one flipped byte in the tensor data would be
read as valid. The digest covers every tensor: its name, dtype, shape and raw
bytes, taken in name order, so it does not depend on how safetensors lays the
data out. BLAKE2b (hashlib, one thread) hashes about 1 GB/s: see the README
for what verifying costs.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch

DIGEST_KEY = "isl.digest"
ALGORITHM = "blake2b-256"


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """`blake2b-256:<hex>` over (name, dtype, shape, bytes) of CPU tensors, in name order."""
    digest = hashlib.blake2b(digest_size=32)
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{str(tensor.dtype).replace('torch.', '')}|{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)  # (bytes,)
            digest.update(memoryview(flat.numpy()))
    return f"{ALGORITHM}:{digest.hexdigest()}"
