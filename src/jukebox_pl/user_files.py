"""Files the user names on a command line, checked before anything reads them: a regular, readable file of a
bounded size (a FIFO or device would block a reader for ever, `/dev/zero` never ends), and outputs of the
right kind (a file where a file goes, a folder where a folder goes). Each problem is one error line naming the
flag and the path."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from jukebox_pl.errors import MissingInputError, RefusedError, UserValueError

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def os_reason(err: OSError) -> str:
    """The operating system's words for an error ("Permission denied"), without the repeated path."""
    return err.strerror or type(err).__name__


def read_capped(path: Path, max_bytes: int) -> tuple[bytes | None, str]:
    """Read a regular file of at most `max_bytes` without ever holding more than that; None and why otherwise.

    The size is checked on the open file before reading, so a huge file is never read whole, and a FIFO or
    device is refused rather than blocking the run."""
    try:
        fd = os.open(path, _OPEN_FLAGS | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        return None, f"cannot be read ({os_reason(err)})"
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None, "is not a regular file"
        if info.st_size > max_bytes:
            return None, f"is {info.st_size} bytes, over the {max_bytes}-byte limit"
        try:
            data = fh.read(max_bytes + 1)
        except OSError as err:
            return None, f"cannot be read ({os_reason(err)})"
    if len(data) > max_bytes:  # it grew after the size check
        return None, f"is over the {max_bytes}-byte limit"
    return data, ""


def probe_readable(path: str) -> str:
    """Open and close a file to learn early (with a clear reason) that a decoder could not read it."""
    try:
        os.close(os.open(path, _OPEN_FLAGS))
    except OSError as err:
        return f"cannot be read ({os_reason(err)})"
    return ""


def input_problem(path: str | Path, max_bytes: int | None = None) -> str:
    """Why a file the user named cannot be read as an input ("" when it can): missing, a folder, a FIFO,
    socket or device (reading one blocks for ever or never ends), unreadable, or over `max_bytes`. Only
    `os.stat` and a non-blocking open are used, so the check itself never hangs."""
    try:
        info = os.stat(path)
    except OSError as err:
        return "does not exist" if err.errno in (errno.ENOENT, errno.ENOTDIR) else f"cannot be read ({os_reason(err)})"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a FIFO, socket or device); only regular files are read"
    if max_bytes is not None and info.st_size > max_bytes:
        return f"is {info.st_size} bytes, over the {max_bytes}-byte limit"
    return probe_readable(str(path))


def check_input_file(path: str | Path, what: str, max_bytes: int | None = None) -> Path:
    """`path` when it is a readable regular file (of at most `max_bytes`); else one error naming `what` and the
    file: MissingInputError when it does not exist, UserValueError otherwise. Every reader of a user-named file
    calls this first (lyrics, audio, codes, vocabularies, configs, metadata)."""
    reason = input_problem(path, max_bytes)
    if reason == "does not exist":
        raise MissingInputError(f"{what} {path} does not exist")
    if reason:
        raise UserValueError(f"{what} {path} {reason}")
    return Path(path)


def read_input_text(path: str | Path, what: str, max_bytes: int) -> str:
    """A user-named UTF-8 text file of at most `max_bytes`, read without ever holding more; one error line
    naming the file otherwise (missing, a FIFO or device, too big, not UTF-8)."""
    check_input_file(path, what, max_bytes)
    data, reason = read_capped(Path(os.path.realpath(path)), max_bytes)
    if data is None:
        raise UserValueError(f"{what} {path} {reason}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserValueError(
            f"{what} {path} is not UTF-8 text (byte {err.start}: {data[err.start : err.start + 1]!r}); save it as UTF-8"
        ) from None


def check_output_folder(path: str | Path, flag: str) -> Path:
    """An output folder the user named: refused in one line when it is an existing file (or a FIFO)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RefusedError(f"{flag} {path} is an existing file, not a folder; name a new or existing folder")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """An output file the user named: refused in one line when it is an existing folder or something other
    than a regular file (a FIFO, a device), or when the folder it goes in is a file."""
    path = Path(path)
    if path.is_dir():
        raise RefusedError(f"{flag} {path} is an existing folder; name a file to write (e.g. {path / 'out.pt'})")
    if path.exists() and not path.is_file():
        raise RefusedError(f"{flag} {path} is not a regular file (a FIFO or device); name a file to write")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise RefusedError(f"{flag} {path}: {parent} is a file, not a folder")
    return path
