"""`DIR/SHA256SUMS` (`<hex>  <relative path>`, what `sha256sum -c` reads): the digest of each downloaded file is
written once, on its first download, and every later run compares the file with it, so a file changed on disk
(a bad copy, a bit flip, an edit) is refused by name instead of being imported."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from jukebox_pl.errors import UserValueError

NAME = "SHA256SUMS"
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    """{relative path: hex digest} of `folder/SHA256SUMS` ({} when there is none)."""
    path = folder / NAME
    if not path.is_file():
        return {}
    sums = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UserValueError(f"{path} line {n} is not '<sha256 hex>  <file>': {line[:80]!r}; fix or delete it")
        sums[name.removeprefix("*")] = digest
    return sums


def record_sum(folder: Path, name: str, digest: str) -> None:
    """Add or replace one line of `folder/SHA256SUMS`, written to a temporary file and renamed."""
    from jukebox_pl.training.checkpoints.read_write import current_umask  # torch: not needed to build the CLI

    sums = read_sums(folder)
    sums[name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    fd, tmp = tempfile.mkstemp(prefix=f".{NAME}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, folder / NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
