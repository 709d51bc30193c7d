# SPDX-License-Identifier: MIT
"""Writes the model examples/torch_asr_pool.py serves: torchaudio's
wav2vec2_base with a CTC head of 32 characters (378 MB of fp32 weights),
initialised from a fixed seed, its state dict as a safetensors file: the
header's length (8 bytes, little-endian), the JSON header (each tensor's
dtype, shape and data_offsets), then the bytes.  The header is padded with
spaces and each tensor starts on 64 bytes, as a torch allocation does, so
the tensors over the mapping are aligned like the ones a worker owns.
The same seed always gives the same bytes.

    python3 examples/torch_asr_build.py /tmp/asr.safetensors --seed 1
"""
import argparse
import json
import os
import struct

import torch

from torch_asr_model import asr_model

ALIGN = 64
_NAMES = {torch.float32: "F32", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int64: "I64"}


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def write_safetensors(path, tensors, metadata):
    """Writes tensors (name: tensor) and metadata (str: str) to path."""
    header, offset = {"__metadata__": metadata}, 0
    for name in sorted(tensors):
        t = tensors[name]
        offset = _aligned(offset)
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (_aligned(8 + len(text)) - 8 - len(text))
    start = 8 + len(text)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            f.seek(start + header[name]["data_offsets"][0])
            flat = tensors[name].contiguous().reshape(-1)
            f.write(flat.view(torch.uint8).numpy().data)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the safetensors file to write")
    p.add_argument("--seed", type=int, default=1)
    opts = p.parse_args()
    torch.manual_seed(opts.seed)
    model = asr_model()
    write_safetensors(opts.out, model.state_dict(),
                      {"format": "pt", "architecture": "wav2vec2_base",
                       "seed": str(opts.seed)})


if __name__ == "__main__":
    main()
