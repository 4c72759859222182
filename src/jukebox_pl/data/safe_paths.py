"""Reading only inside the folders the user named, and never stopping on one bad path.

`walk_source` lists --src for `jukebox-pl prep`; `resolve_link`, `is_inside` and `read_capped` serve files
that metadata points at (lyrics). A path that cannot be used comes back with a one-line reason instead of raising.

Symlink policy of the walk (a music folder is often assembled from links, but a link must never pull in
files from elsewhere, loop forever, or make a track appear twice):

- a symlink, to a file or to a folder, is followed only when its target (every link resolved) lies inside
  --src; a link leading out is reported and not followed;
- every real folder is walked once and every real file is listed once: real paths come first, so a link to
  a folder or file that the walk reaches anyway is reported as already included; a link to a folder the walk
  would not otherwise reach (a hidden one) is walked once, under the link's name;
- broken links and link loops are reported; so are folders that cannot be listed, audio files that cannot
  be opened or are not regular files (a FIFO named `x.wav` would block a reader forever), and names that are
  not UTF-8 (they are shown with backslash escapes).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jukebox_pl.user_files import os_reason, probe_readable, read_capped

__all__ = ["is_inside", "os_reason", "read_capped", "resolve_link", "walk_source"]


def resolve_link(path: str | Path) -> tuple[Path | None, str]:
    """Where a path leads once every symlink is followed, or None and why it leads nowhere."""
    try:
        return Path(os.path.realpath(path, strict=True)), ""
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None, "symlink loop (its links lead back to each other); not followed"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, "broken symlink (its target does not exist); not followed"
        return None, f"cannot be resolved ({os_reason(err)})"


def is_inside(path: Path, roots: list[Path]) -> bool:
    """Whether a resolved path lies in (or is) one of the resolved roots."""
    return any(path == root or path.is_relative_to(root) for root in roots)


@dataclass
class WalkResult:
    """Files worth reading as (relative path, size) in walk order, and every path skipped with its reason
    (folders end in '/')."""

    files: list[tuple[str, int]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    other: int = 0
    root_error: str = ""  # why the source folder itself could not be listed


@dataclass
class _Candidate:
    rel: str
    identity: tuple[int, int]
    size: int
    via_link: bool


class _Walk:
    """One walk of a source folder under the policy in the module docstring."""

    def __init__(self, src: Path, wanted: Callable[[str], bool], probe: Callable[[str], bool], exclude: Path | None):
        self.src, self.wanted, self.probe = src, wanted, probe
        self.root = Path(os.path.realpath(src))
        self.exclude = _identity_or_none(exclude) if exclude is not None else None  # --out may not exist yet
        self.result = WalkResult()
        self.folders: dict[tuple[int, int], str] = {}  # identity -> relative path it was walked under
        self.linked: deque[tuple[str, Path, Path]] = deque()  # (rel, target, real folder holding the link)
        self.candidates: list[_Candidate] = []

    def run(self) -> WalkResult:
        self.tree(self.src, "")
        while self.linked:
            self.follow(*self.linked.popleft())
        self.deduplicate()
        return self.result

    def skip(self, rel: str, reason: str) -> None:
        self.result.skipped[rel] = reason

    def tree(self, top: Path, top_rel: str) -> None:
        """Walk one real folder tree depth first in sorted order (iterative: deep trees never overflow)."""
        stack = [(top, top_rel)]
        while stack:
            folder, rel = stack.pop()
            try:
                identity = _identity(folder)
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as err:
                if not rel:
                    self.result.root_error = os_reason(err)
                else:
                    self.skip(f"{rel}/", f"folder cannot be read ({os_reason(err)}); its files are skipped")
                continue
            if identity in self.folders:  # a bind mount of a folder above: walking it again would never end
                self.skip(f"{rel}/", f"the same folder as {self.folders[identity] or '--src itself'}; not walked twice")
                continue
            self.folders[identity] = rel
            subfolders = [sub for entry in entries if (sub := self.entry(entry, rel)) is not None]
            stack.extend(reversed(subfolders))

    def entry(self, entry: os.DirEntry, folder_rel: str) -> tuple[Path, str] | None:
        """Sort one folder entry; return (path, rel) when it is a real subfolder to walk."""
        rel = f"{folder_rel}/{entry.name}" if folder_rel else entry.name
        try:
            if not _is_utf8(entry.name):
                self.odd_name(entry, rel)
                return None
            if entry.is_symlink():
                self.link(entry, rel)
                return None
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith(".") or self.excluded(entry.path):
                    return None
                return Path(entry.path), rel
        except OSError as err:
            self.skip(rel, f"cannot be examined ({os_reason(err)})")
            return None
        self.file(entry.path, rel, via_link=False)
        return None

    def odd_name(self, entry: os.DirEntry, rel: str) -> None:
        """A name that is not UTF-8 cannot become a shard key or a label: report it (shown escaped), never read it."""
        if self.wanted(entry.name) or entry.is_dir():
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            self.skip(shown, "its name is not valid UTF-8 (track names must be text); rename it to include it")
        else:
            self.result.other += 1

    def link(self, entry: os.DirEntry, rel: str) -> None:
        """A symlink: follow it only when it resolves inside --src (see the module docstring)."""
        target, reason = resolve_link(entry.path)
        if target is None:
            self.skip(rel, reason)
            return
        is_folder = target.is_dir()
        if not is_inside(target, [self.root]):
            if is_folder or self.wanted(entry.name):
                self.skip(rel, f"symlink to {target}, outside --src; not followed")
            else:
                self.result.other += 1
            return
        if not is_folder:
            self.file(entry.path, rel, via_link=True)
        elif not entry.name.startswith(".") and not self.excluded(target):
            self.linked.append((rel, target, Path(os.path.realpath(os.path.dirname(entry.path)))))

    def follow(self, rel: str, target: Path, home: Path) -> None:
        """Walk a linked folder unless its real folder was walked already (a loop, or a second name)."""
        try:
            identity = _identity(target)
        except OSError as err:
            self.skip(rel, f"folder link cannot be followed ({os_reason(err)})")
            return
        if identity not in self.folders:
            self.tree(target, rel)
            return
        where = self.folders[identity] or "--src itself"
        if is_inside(home, [target]):
            self.skip(rel, f"symlink loop: links to {where}, a folder that contains it; not followed")
        else:
            self.skip(rel, f"folder link to {where}, which is already included; not followed (tracks are taken once)")

    def file(self, path: str, rel: str, via_link: bool) -> None:
        """A file, or a link to a file inside --src: list it when wanted, regular and readable."""
        if not self.wanted(Path(rel).name):
            self.result.other += 1
            return
        try:
            info = os.stat(path)
        except OSError as err:
            self.skip(rel, f"cannot be read ({os_reason(err)})")
            return
        if not stat.S_ISREG(info.st_mode):
            self.skip(rel, "not a regular file (a FIFO, socket or device); never opened")
            return
        reason = probe_readable(path) if self.probe(rel) else ""
        if reason:
            self.skip(rel, reason)
            return
        self.candidates.append(_Candidate(rel, (info.st_dev, info.st_ino), info.st_size, via_link))

    def excluded(self, path: str | Path) -> bool:
        return self.exclude is not None and _identity_or_none(path) == self.exclude

    def deduplicate(self) -> None:
        """Keep each real file once: its real path when listed, else its first link in walk order."""
        keep: dict[tuple[int, int], _Candidate] = {}
        for c in self.candidates:
            if c.identity not in keep or (keep[c.identity].via_link and not c.via_link):
                keep[c.identity] = c
        for c in self.candidates:
            chosen = keep[c.identity]
            if chosen is c:
                self.result.files.append((c.rel, c.size))
            else:
                how = "a symlink to" if c.via_link else "a hard link to"
                self.skip(c.rel, f"{how} {chosen.rel}, which is already included; not read twice")


def _is_utf8(name: str) -> bool:
    """File names that are not UTF-8 reach Python as lone surrogates, which cannot be encoded."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _identity(path: str | Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _identity_or_none(path: str | Path) -> tuple[int, int] | None:
    try:
        return _identity(path)
    except OSError:
        return None


def walk_source(
    src: str | Path,
    wanted: Callable[[str], bool],
    probe: Callable[[str], bool] = lambda rel: True,
    exclude: Path | None = None,
) -> WalkResult:
    """List `src` recursively in sorted order under the module's symlink policy.

    `wanted(name)` picks the files to list (others are only counted); `probe(rel)` says which of them to
    open once now, so that an unreadable file is reported by name instead of as a decoder failure later;
    `exclude` is a folder never walked (prep's --out when it lies inside --src)."""
    return _Walk(Path(src), wanted, probe, exclude).run()
