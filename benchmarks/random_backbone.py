"""The random-init baseline: write the backbone train-features would start from, as an exported backbone.

Usage: python benchmarks/random_backbone.py DATA_DIR --width 0.25 --out random.safetensors [--arch resnet18]
       isl eval-linear random.safetensors --data DATA_DIR

The weights are those round 0 of `isl train-features --seed S` starts from (the
same seed derivation, the same spec for this data set), with batch-norm running
statistics at their initial values, saved as a `backbone` artifact, so that
`isl eval-linear` (and `load_backbone`) can score features nobody trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from isl_cli.artifacts import write_artifact
from isl_cli.data.store import dataset_header
from isl_cli.models.spec import resolve_spec
from isl_cli.engine.state import derive_seed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--low-dim", type=int, default=128)
    parser.add_argument("--variant", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    header = dataset_header(args.data_dir, "train")
    spec = resolve_spec(args.arch, args.width, args.low_dim, args.variant, header.meta)
    torch.manual_seed(derive_seed(args.seed, "backbone-init"))  # as engine/features.py seeds round 0
    model = spec.build(torch.device("cpu"))
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    write_artifact(args.out, "backbone", tensors, fingerprint=header.fingerprint, config={"seed": args.seed},
                   meta={"backbone": spec.to_meta(), "source": f"random init (seed {args.seed})", "round": None})
    print(f"{args.out}: randomly initialised {spec.arch} ({spec.variant}, width {spec.width:g}) for {args.data_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
