"""One file over HTTP(S) into `DEST.part`, resumed with `Range: bytes=N-`, renamed to DEST once its size is
right: multi-GB downloads survive a dropped connection, and a short or cut file never takes the final name.

urllib only (no extra dependency). A server that ignores Range (200 instead of 206) restarts the file from byte
0; a `.part` longer than the file restarts it too. Every failure is one line naming the URL and what to do.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from jukebox_pl.errors import JukeboxError, UserValueError, is_disk_full

CHUNK = 1 << 20
TIMEOUT_S = 60.0
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class DownloadError(JukeboxError, ConnectionError):
    """The network or the server failed; what was fetched is kept, and the same command resumes it."""


class ShortFileError(UserValueError):
    """A complete transfer whose size is not the file's (a truncated copy on a mirror, a wrong file)."""


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _total_from(resp, have: int) -> tuple[int | None, int]:
    """(the file's total size or None, the byte the body starts at) of a 200 or 206 answer."""
    if resp.status == 206:
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if match is None or match.group(1) is None:
            return None, -1  # a 206 we cannot place: restart from 0
        total = match.group(3)
        return (int(total) if total != "*" else None), int(match.group(1))
    length = resp.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), 0


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "jukebox-pl", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310


def _network_error(url: str, err: BaseException, part: Path, have: int) -> DownloadError:
    kept = f"; {have} bytes are kept in {part}" if have else ""
    reason = getattr(err, "reason", None) or err
    return DownloadError(f"downloading {url} failed ({type(err).__name__}: {reason}){kept}: check the connection "
                         "(or --base-url) and run the same command again to resume")  # fmt: skip


def _refuse_size(dest: Path, part: Path, got: int, want: int, why: str) -> ShortFileError:
    return ShortFileError(
        f"{dest}: got {got} bytes, expected {want} ({why}); the bytes are kept in {part}: run the same "
        "command again to resume, or delete it and check --base-url if the server's copy is short"
    )


OnBytes = Callable[[int, "int | None"], None]


def fetch(
    url: str, dest: Path, size: int | None = None, floor: int = 0, on_bytes: OnBytes | None = None,
    timeout: float = TIMEOUT_S,
) -> int:  # fmt: skip
    """Fetch `url` into `dest` (resuming `dest.part`); return the file's size. `size` is the known size (None:
    the server's total is the size), `floor` a size no complete file is below; `on_bytes(done, total)` is called
    as bytes arrive (for a progress bar)."""
    part = part_of(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # longer than the file: not a prefix of it
        part.unlink()
        have = 0
    total = size
    if size is None or have < size:
        total = _transfer(url, dest, part, have, size, on_bytes, timeout)
    got = part.stat().st_size if part.exists() else 0
    want = size if size is not None else total
    if size is not None and total is not None and total != size:
        raise ShortFileError(f"{url} has {total} bytes, the published {dest.name} {size}: it is not the released "
                             "file; check --base-url (or JUKEBOX_PL_DOWNLOAD_URL)")  # fmt: skip
    if want is not None and got != want:
        raise _refuse_size(dest, part, got, want, "the published size" if size is not None else "the server's size")
    if got < floor:
        raise _refuse_size(dest, part, got, floor, "at least the bytes of the released model's tensors")
    os.replace(part, dest)
    return got


def _transfer(
    url: str,
    dest: Path,
    part: Path,
    have: int,
    size: int | None,
    on_bytes: OnBytes | None,
    timeout: float,
    retried: bool = False,
) -> int | None:
    """Append the rest of the file to `part`; return the server's total (None when it gave none)."""
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing after byte `have`: the .part is complete, or longer than the file
            match = _CONTENT_RANGE.match(err.headers.get("Content-Range", "") if err.headers else "")
            total = int(match.group(3)) if match and match.group(3) != "*" else None
            if total == have:
                return total
            if not retried:
                part.unlink()
                return _transfer(url, dest, part, 0, size, on_bytes, timeout, retried=True)
        hint = " (no such file at this base URL)" if err.code == 404 else ""
        raise DownloadError(f"downloading {url} failed: HTTP {err.code} {err.reason}{hint}; check --base-url (or "
                            "JUKEBOX_PL_DOWNLOAD_URL) and run the same command again") from None  # fmt: skip
    except (OSError, http.client.HTTPException) as err:
        raise _network_error(url, err, part, have) from None
    with resp:
        if resp.status not in (200, 206):
            raise DownloadError(f"downloading {url} failed: HTTP {resp.status}; run the same command again")
        total, start = _total_from(resp, have)
        if start != have:  # the server ignored Range (200) or answered another range: start over from 0
            if resp.status == 206 and not retried:
                part.unlink(missing_ok=True)
                return _transfer(url, dest, part, 0, size, on_bytes, timeout, retried=True)
            have = 0
        if size is not None and total is not None and total != size:
            return total  # not the reference's file: refused by the caller, before any byte is written
        done = have
        if on_bytes is not None:
            on_bytes(done, total)
        try:
            with open(part, "ab" if have else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if on_bytes is not None:
                        on_bytes(done, total)
        except OSError as err:
            if is_disk_full(err):
                raise DownloadError(f"the disk filled up while writing {part} ({part.stat().st_size} bytes kept): "
                                    "free some space and run the same command again to resume") from None  # fmt: skip
            raise _network_error(url, err, part, part.stat().st_size) from None
        except http.client.HTTPException as err:  # IncompleteRead: the connection closed early
            raise _network_error(url, err, part, part.stat().st_size) from None
    if total is not None and done < total:  # urllib returns b"" when the server closes early
        raise DownloadError(f"downloading {url} stopped after {done} of {total} bytes (the connection closed); "
                            f"they are kept in {part}: run the same command again to resume")  # fmt: skip
    return total
