"""`jukebox-pl download SET... --out DIR [--import RUN]`: OpenAI's released weights fetched by name.

Each set's files (`interop.released`: shared files once) are fetched into DIR under the reference's own paths
(DIR/5b/vqvae.pth.tar, ...), resumably (`interop.fetch`), size-checked, and their sha256 written to
DIR/SHA256SUMS on the first download and compared on every later run (`interop.sha256sums`). With `--import
RUN`, the files are then converted into a run folder by `stages.import_openai` with each file's `--hps` and
`--trust-pickle` (the reference pickled its hparams; only its own classes are admitted).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from jukebox_pl.errors import MissingInputError, RefusedError, UserValueError
from jukebox_pl.interop.fetch import fetch
from jukebox_pl.interop.released import FILES, REFERENCE_URL, SETS, URL_ENV, ReleasedFile, files_of, top_priors
from jukebox_pl.interop.sha256sums import NAME as SUMS
from jukebox_pl.interop.sha256sums import file_sha256, read_sums, record_sum
from jukebox_pl.user_files import check_output_folder

if TYPE_CHECKING:  # the import (torch) is loaded when --import runs, not to build the command line
    from jukebox_pl.stages.import_openai import ImportReport


@dataclass
class DownloadReport:
    out: Path
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    imported: ImportReport | None = None


def resolve_base_url(value: str | None = None) -> str:
    """`--base-url`, else $JUKEBOX_PL_DOWNLOAD_URL, else the reference's; http(s) only, ending in '/'."""
    url = value or os.environ.get(URL_ENV) or REFERENCE_URL
    where = "--base-url" if value else (URL_ENV if os.environ.get(URL_ENV) else "the reference URL")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserValueError(f"{where} {url!r} is not an http(s) URL; give the folder that holds 5b/vqvae.pth.tar")
    return url if url.endswith("/") else url + "/"


def _size_text(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


class _Progress:
    """A rich bar per file (bytes, speed, time left); nothing at all when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))  # fmt: skip

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def callback(self, name: str):
        if not self.enabled:
            return None
        task = self.bar.add_task(name, total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)


def _check_import_target(run: Path, files: list[ReleasedFile], ids: str | Path | None) -> None:
    """What `--import` would refuse after the download, refused before it (a 10 GB download is not wasted)."""
    tops = top_priors(files)
    if len(tops) > 1:
        raise UserValueError(f"--import puts one top prior in a run, but the sets name {len(tops)} "
                             f"({', '.join(f.path for f in tops)}): import each set into its own run")  # fmt: skip
    check_output_folder(run, "--import")
    taken = sorted(run.glob("*/export.pt")) if run.is_dir() else []
    if taken:
        raise RefusedError(f"--import {run} already holds imported or trained models ({taken[0]}); choose another")
    if ids is not None and not Path(ids).is_dir():
        raise MissingInputError(f"--ids {ids} is not a folder (expected the reference's jukebox/data/ids/)")


def _verify_kept(out: Path, f: ReleasedFile, dest: Path, sums: dict[str, str]) -> str:
    """A file already in DIR: compared with SHA256SUMS (or, on its first sight, checked and recorded)."""
    digest = file_sha256(dest)
    recorded = sums.get(f.path)
    if recorded is not None:
        if digest != recorded:
            raise UserValueError(
                f"{dest} changed since it was downloaded: its sha256 is {digest}, {out / SUMS} records {recorded}; "
                "delete it and run the same command again to fetch it afresh"
            )
        return f"{f.path}: already here, sha256 matches {SUMS}"
    size = dest.stat().st_size
    if f.size is not None and size != f.size:
        raise UserValueError(f"{dest} has {size} bytes, the published file {f.size}: delete it and run the same "
                             "command again to fetch it")  # fmt: skip
    _check_published(dest, f, digest)
    record_sum(out, f.path, digest)
    return f"{f.path}: already here (not downloaded by us), sha256 recorded in {SUMS}"


def _check_published(dest: Path, f: ReleasedFile, digest: str) -> None:
    if f.sha256 is not None and digest != f.sha256:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise UserValueError(f"{f.path}: sha256 {digest} is not the published {f.sha256}; moved to {bad}: delete "
                             "it and run the same command again (check --base-url if it repeats)")  # fmt: skip


def download(
    sets: list[str] | tuple[str, ...], out: str | Path, base_url: str | None = None, progress: bool = False,
    import_run: str | Path | None = None, ids: str | Path | None = None,
    table: dict[str, ReleasedFile] | None = None,
) -> DownloadReport:  # fmt: skip
    """Fetch the files of `sets` into `out` (see the module docstring); with `import_run`, import them there.
    `table` replaces the released file table (tests serve small files under the same paths)."""
    files = files_of(list(sets), FILES if table is None else table)
    url = resolve_base_url(base_url)
    out = check_output_folder(out, "--out")
    if import_run is not None:
        _check_import_target(Path(import_run), files, ids)
    out.mkdir(parents=True, exist_ok=True)
    sums = read_sums(out)
    report = DownloadReport(out)
    with _Progress(progress) as bar:
        for f in files:
            dest = out / f.path
            if dest.exists() and not dest.is_file():
                raise RefusedError(f"{dest} exists and is not a regular file; move it away and run again")
            if dest.is_file():
                report.lines.append(_verify_kept(out, f, dest, sums))
            else:
                size = fetch(url + f.path, dest, f.size, f.tensor_bytes, bar.callback(f.path))
                digest = file_sha256(dest)
                _check_published(dest, f, digest)
                record_sum(out, f.path, digest)
                report.lines.append(f"{f.path}: downloaded, {_size_text(size)}, sha256 {digest[:16]}... in {SUMS}")
            report.files.append(dest)
    if import_run is not None:
        from jukebox_pl.stages.import_openai import ImportItem, import_openai

        items = [ImportItem(f.kind, str(out / f.path), hps=f.hps) for f in files]
        report.imported = import_openai(import_run, items, ids=ids, trust_pickle=True)
    return report


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "download",
        help="fetch OpenAI's released Jukebox weights by name (resumable, size- and sha256-checked)",
        description="Sets: " + "; ".join(f"{name}: {', '.join(paths)}" for name, paths in SETS.items())
        + ". Files shared by sets are fetched once. An interrupted download resumes when run again.",
    )  # fmt: skip
    p.add_argument("sets", nargs="+", choices=list(SETS), metavar="SET", help=f"one or more of {', '.join(SETS)}")
    p.add_argument("--out", required=True, help="folder for the files (DIR/5b/vqvae.pth.tar, ..., DIR/SHA256SUMS)")
    p.add_argument("--base-url", help=f"where the files are (default ${URL_ENV}, else {REFERENCE_URL})")
    p.add_argument(
        "--import", dest="import_run", metavar="RUN",
        help="then import the files into the run folder RUN (import-openai with each file's --hps and "
        "--trust-pickle: these are OpenAI's own files from the reference's URLs; with --base-url, trust that mirror "
        "as you would OpenAI's)",
    )  # fmt: skip
    p.add_argument("--ids", help="with --import: the reference's jukebox/data/ids folder (artist and genre names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none is shown off a terminal)")
    return p


def run(args: argparse.Namespace) -> int:
    report = download(
        args.sets, args.out, base_url=args.base_url, progress=not args.no_progress and sys.stderr.isatty(),
        import_run=args.import_run, ids=args.ids,
    )  # fmt: skip
    for line in report.lines:
        print(line)
    print(f"{len(report.files)} files in {report.out} (sha256 in {report.out / SUMS})")
    if report.imported is not None:
        for line in report.imported.lines:
            print(line)
        run_dir = report.imported.run
        print(f"wrote {len(report.imported.written)} model files to {run_dir}; sample with: "
              f"jukebox-pl sample --run {run_dir}")  # fmt: skip
    return 0
