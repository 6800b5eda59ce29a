"""Take the real MiniLM and SST-2 to a machine that has no `../shared`, under a size limit.

    python benchmarks/gpu/carry.py pack ../shared .gpu        # here: fp16 weights + SST-2
    python benchmarks/gpu/carry.py unpack .gpu/minilm-fp16 /tmp/minilm   # there: back to fp32

`pack` writes DEST/minilm-fp16/ (config, tokenizer files and model.safetensors with every
float tensor rounded to fp16: 45 MB instead of 88 MB) and DEST/SST-2/ (train.tsv, dev.tsv).
`unpack` upcasts the weights back to fp32, so that the model loads and trains as the fp32
checkpoint does; its values are the fp16-rounded ones (`pack` prints the relative L2 change,
about 2e-4 for MiniLM, and the largest absolute change). Anything measured on the unpacked
copy is measured on those weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
MODEL = Path("models") / "minilm-l6-h384-uncased"
DATA = Path("data") / "glue" / "SST-2"


def cast(src: Path, dest: Path, dtype: torch.dtype) -> dict[str, float]:
    """Copy the model folder `src` to `dest` with its float weights cast to `dtype`."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        if path.is_file() and path.name != WEIGHTS:
            shutil.copyfile(path, dest / path.name)
    tensors = load_file(src / WEIGHTS)
    cast = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()
    }
    save_file(cast, dest / WEIGHTS, metadata={"format": "pt"})
    floats = [k for k, v in tensors.items() if v.is_floating_point()]
    diff = sum(float((cast[k].double() - tensors[k].double()).pow(2).sum()) for k in floats)
    norm = sum(float(tensors[k].double().pow(2).sum()) for k in floats)
    largest = max(float((cast[k].double() - tensors[k].double()).abs().max()) for k in floats)
    return {
        "tensors": len(tensors),
        "relative_l2_change": (diff / norm) ** 0.5,
        "largest_abs_change": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="SHARED (../shared) -> DEST/minilm-fp16, DEST/SST-2")
    pack.add_argument("shared", type=Path)
    pack.add_argument("dest", type=Path)
    unpack = sub.add_parser("unpack", help="an fp16 model folder -> an fp32 model folder")
    unpack.add_argument("source", type=Path)
    unpack.add_argument("dest", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        info = cast(args.shared / MODEL, args.dest / "minilm-fp16", torch.float16)
        data = args.dest / "SST-2"
        data.mkdir(parents=True, exist_ok=True)
        for name in ("train.tsv", "dev.tsv"):
            shutil.copyfile(args.shared / DATA / name, data / name)
    else:
        info = cast(args.source, args.dest, torch.float32)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
