"""Estimate the runtime image's size without a Docker engine: the installed size of every
package pinned in requirements.lock (from the files each installed distribution records),
plus the base image.

    python images/estimate_size.py [requirements.lock]

Run it in a venv installed from the lock (`make` builds .venv that way). The base image
figure is python:3.11-slim's uncompressed size as published, not measured here.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

BASE_IMAGE_MB = 125  # python:3.11-slim-bookworm, uncompressed (published figure)


def pinned(lock: Path) -> list[str]:
    names = []
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.split(r"[\[=<>!~ ]", line, maxsplit=1)[0])
    return names


def installed_bytes(name: str, seen: set[Path]) -> int:
    """Bytes of the distribution's files not already counted (mlflow and mlflow-skinny,
    for one, record the same files)."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file)).resolve()
        if path not in seen and path.is_file():
            seen.add(path)
            total += path.stat().st_size
    return total


def main() -> None:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock")
    sizes, missing, seen = {}, [], set()
    for name in pinned(lock):
        try:
            sizes[name] = installed_bytes(name, seen)
        except metadata.PackageNotFoundError:
            missing.append(name)
    total_mb = sum(sizes.values()) / 1e6
    print(f"{len(sizes)} packages from {lock}: {total_mb:,.0f} MB installed")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {name:28s} {size / 1e6:8,.0f} MB")
    print(f"estimated image: {total_mb + BASE_IMAGE_MB:,.0f} MB (+ base {BASE_IMAGE_MB} MB)")
    if missing:
        print(f"not installed here, not counted: {', '.join(missing)}")


if __name__ == "__main__":
    main()
