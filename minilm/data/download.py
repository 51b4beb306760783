"""Downloads for the data recipes: a file is fetched once into a cache folder, through a temp file
renamed when complete, so a file with the final name is always whole and is reused by later runs."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm


def cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/minilm/<name> (default ~/.cache/minilm/<name>)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "minilm" / name


def download(url: str, path: Path) -> Path:
    """Stream url into path, 1 MiB at a time, with a progress bar; an existing path is reused."""
    path = Path(path)
    if path.is_file():
        print(f"using {path} (downloaded earlier)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {path}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if size is not None and received != size:
                raise OSError(f"connection closed after {received:,} of {size:,} bytes")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def fetch(url: str, path: Path, offline_hint: str) -> Path:
    """download(), or exit with one error that says what to pass instead when offline."""
    try:
        return download(url, path)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        raise SystemExit(f"error: could not download {url} ({e}).\nOffline? {offline_hint}") from None


def npm_integrity(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball: 'sha512-' + base64 of its SHA-512 digest
    (the `dist.integrity` the registry publishes for every version)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_pinned(url: str, expected: str) -> bytes:
    """The bytes at url, refused unless their npm integrity is `expected` (a pinned version)."""
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    if npm_integrity(data) != expected:
        raise ValueError(f"{url}: sha512 does not match the pinned {expected[:20]}...")
    return data
