"""Prepare the domain-adaptation example data outside the repository (a temporary folder by default).

    python recipes/prepare_da_data.py                      # -> $TMPDIR/hftransfer_da (printed)
    python recipes/prepare_da_data.py --out /data/da --shared ../shared/data

Writes, from the read-only shared copies:
- ``digits/mnist.npz`` (x, y: MNIST t10k, the labelled source), ``digits/usps_unlabelled.npz`` (x only: USPS train,
  the unlabelled target), ``digits/usps_test.npz`` (x, y: USPS test, the labelled target evaluation split);
- ``pacs/<domain>/<class>/*.jpg`` extracted from ``pacs/<domain>.tar`` (image folders).
"""

from __future__ import annotations

import argparse
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "hftransfer_da"
PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")


def prepare_digits(out: Path, shared: Path = DEFAULT_SHARED) -> dict[str, Path]:
    """MNIST -> USPS as three .npz files in ``out`` (written once; atomic renames)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"source": out / "mnist.npz", "target": out / "usps_unlabelled.npz", "target_eval": out / "usps_test.npz"}
    if all(p.is_file() for p in paths.values()):
        return paths
    with np.load(shared / "digits_mnist_usps" / "mnist_test_usps.npz", allow_pickle=False) as npz:
        parts = {"source": {"x": npz["mnist_test_x"], "y": npz["mnist_test_y"]},
                 "target": {"x": npz["usps_train_x"]},
                 "target_eval": {"x": npz["usps_test_x"], "y": npz["usps_test_y"]}}
    for key, arrays in parts.items():
        tmp = paths[key].with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        tmp.replace(paths[key])
    return paths


def prepare_pacs(out: Path, shared: Path = DEFAULT_SHARED, domains=PACS_DOMAINS) -> dict[str, Path]:
    """Extract each PACS domain tar into ``out/<domain>`` (an image folder; skipped when already there)."""
    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for domain in domains:
        folder = out / domain
        if not folder.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{domain}-"))
            with tarfile.open(shared / "pacs" / f"{domain}.tar") as tar:
                tar.extractall(tmp, filter="data")
            (tmp / domain).rename(folder)
            tmp.rmdir()
        folders[domain] = folder
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--skip-pacs", action="store_true")
    args = parser.parse_args()
    for key, path in prepare_digits(args.out / "digits", args.shared).items():
        print(f"digits {key}: {path}")
    if not args.skip_pacs:
        for domain, path in prepare_pacs(args.out / "pacs", args.shared).items():
            print(f"pacs {domain}: {path}")


if __name__ == "__main__":
    main()
