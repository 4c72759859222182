"""The library's own user errors: bad input named by file, key or value. The CLI prints these as one line;
anything else (a bug, an out-of-memory error) keeps its traceback."""

from __future__ import annotations

import errno


class JukeboxError(Exception):
    """Base of every error that describes a user's mistake or bad input, never a bug."""

    exit_code = 2  # what the CLI exits with after printing the message


class UserValueError(JukeboxError, ValueError):
    """A value the user gave (config, flag, file content) is wrong; the message names it and what would fit."""


class MissingInputError(JukeboxError, FileNotFoundError):
    """A file or folder the user pointed at (or a stage that must run first) does not exist."""


class RefusedError(JukeboxError, RuntimeError):
    """The command would overwrite or mix with existing work; the message says how to proceed."""


class UserKeyError(JukeboxError, KeyError):
    """A name the user gave (a level, an artist, a genre) is not known; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnsafeFileError(UserValueError):
    """A file holds pickled Python objects beyond tensors and plain data; it is refused before anything runs."""


class DivergedError(JukeboxError, RuntimeError):
    """Training produced non-finite losses or gradients too many steps in a row, or a file holds non-finite
    weights; the message says where and what to change."""


class DataStarvedError(JukeboxError, RuntimeError):
    """Training received no usable sample for too long; the message names the shards and the reasons."""


class DiskFullError(JukeboxError, OSError):
    """The disk (or the user's quota) filled up while writing; the message says what was being written and what
    was kept, so that the user can free space and run the same command again."""


DISK_FULL = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def is_disk_full(err: BaseException) -> bool:
    """Whether an error is the operating system's "no space left" / "quota exceeded"."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


class StopRequested(BaseException):
    """SIGTERM or SIGINT stopped a run at a step boundary after saving `last.ckpt`; the process exits with the
    shell's code for that signal (128 + signal number: 143 for SIGTERM, 130 for SIGINT). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way (data pipelines skip what they cannot read)
    swallows it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
