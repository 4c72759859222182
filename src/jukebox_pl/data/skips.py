"""What the training stream could not use, and when it has starved.

A dataset with a few bad files should train, say once in a while how many were skipped where and why, and
keep the full list in a file; a dataset with nothing usable must stop with the reasons instead of looping
forever (one warning per sample wrote 1.2 GB of log in six minutes). One `SkipLedger` lives in each data
worker (or in the main process when there are none).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

from jukebox_pl.errors import DataStarvedError

log = logging.getLogger(__name__)

REASONS_SHOWN = 8  # (shard, reason) pairs named in a summary or an error before "and N more"
FIRST_SHOWN = 20  # (shard, reason) pairs whose first skip is logged at once


def shard_of(where: str) -> str:
    """`shard.tar:key` -> `shard.tar` (the key is in the full list, the summaries count per shard)."""
    return where.rsplit(":", 1)[0] if ":" in where else where


class SkipLedger:
    """Counts skipped samples per (shard, reason), logs a summary every `report_seconds`, appends every skip to
    `log_file` (one tab-separated line: shard, key, reason, detail), and raises `DataStarvedError` when no
    usable example arrived for `max_in_a_row` skips or `starve_seconds` seconds, or, before any usable example,
    as soon as every shard of the stream (`expect_shards`) has been read and every track in them has failed
    (an all-corrupt dataset stops in seconds, not after `starve_seconds`).

    The count rides along in every batch as `skipped` (`count`), as before.
    """

    def __init__(
        self,
        log_file: str | Path | None = None,
        report_seconds: float = 60.0,
        max_in_a_row: int = 1000,
        starve_seconds: float = 600.0,
        clock=time.monotonic,
    ):
        self.log_file = Path(log_file) if log_file else None
        self.report_seconds, self.max_in_a_row, self.starve_seconds = report_seconds, max_in_a_row, starve_seconds
        self.clock = clock
        self.count = 0
        self.in_a_row = 0
        self.tracks = 0  # tracks parsed (usable or not later), to tell an empty shard from a busy one
        self.by_reason: Counter[tuple[str, str]] = Counter()
        self._unreported: Counter[tuple[str, str]] = Counter()
        self._last_report = clock()
        self._last_example = clock()
        # until the first usable example: which shards were read, which tracks seen, which of them failed
        self.examples = 0
        self._expected: set[str] = set()
        self._read: set[str] = set()
        self._seen: set[str] = set()
        self._failed: set[str] = set()

    # -- what the pipeline stages call ---------------------------------------------------------------------
    def skip(self, where: str, reason: str, detail: object = "") -> None:
        """One unusable sample (or shard) at `where` (`url:key` or `url`), for `reason` (a short category)."""
        shard = shard_of(where)
        self.count += 1
        self.in_a_row += 1
        self.by_reason[(shard, reason)] += 1
        self._unreported[(shard, reason)] += 1
        self._append(where, reason, detail)
        if self.by_reason[(shard, reason)] == 1 and len(self.by_reason) <= FIRST_SHOWN:
            # the first of its kind at once (for the first few kinds: 10,000 broken shards are not 10,000 lines),
            # the rest in the summaries
            log.warning("skipping %s: %s (%s)%s", where, reason, detail, self._file_hint())
        self.check()

    @property
    def events(self) -> int:
        """Anything a shard produced: a parsed track or a skip."""
        return self.tracks + self.count

    def track_seen(self, where: str | None = None) -> None:
        self.tracks += 1
        if where is not None and not self.examples and self._expected:
            self._seen.add(where)

    def track_failed(self, where: str) -> None:
        """A track (`url:key`) none of whose crops could be used so far (its skip is counted by `skip`)."""
        if not self.examples and self._expected:
            self._failed.add(where)

    def expect_shards(self, urls: list[str]) -> None:
        """The shards this stream reads: once each was read and all their tracks failed, it has starved."""
        self._expected = set(urls)

    def shard_read(self, url: str) -> None:
        """Every sample of `url` went down the pipeline (its tracks are seen, or it held none)."""
        if not self.examples and url in self._expected:
            self._read.add(url)

    @property
    def all_failed(self) -> bool:
        """No usable example yet, every expected shard read, and every track seen in them failed (shards without
        any track count one skip per visit and reach `max_in_a_row` in moments)."""
        return not self.examples and bool(self._seen) and self._read >= self._expected and self._failed >= self._seen

    def restart_clock(self) -> None:
        """A (re)started stream: the time without examples counts from now (workers start long after the
        pipeline is built, e.g. after the validation sanity check)."""
        self._last_example = self.clock()

    def example(self) -> None:
        """A usable example left the stream: the starvation clocks restart."""
        self.in_a_row = 0
        self._last_example = self.clock()
        if not self.examples:  # the all-failed rule is over: free its sets
            self._read, self._seen, self._failed = set(), set(), set()
        self.examples += 1
        self._maybe_report()

    def check(self) -> None:
        """Raise when the stream has starved (called on every skip and on every shard opened)."""
        waited = self.clock() - self._last_example
        all_failed = self.all_failed
        if self.in_a_row >= self.max_in_a_row or waited >= self.starve_seconds or all_failed:
            if all_failed:
                why = (
                    f"every one of the {len(self._seen)} tracks in the {len(self._expected)} shard(s) failed and no "
                    f"usable sample arrived ({self.count} skips)"
                )
            elif self.in_a_row >= self.max_in_a_row:
                why = f"{self.in_a_row} samples in a row were unusable (data.max_skips_in_a_row={self.max_in_a_row})"
            else:
                why = f"no usable sample for {waited:.0f} s (data.starve_seconds={self.starve_seconds:g})"
            raise DataStarvedError(
                f"training data starved: {why}; skipped so far: {self.describe(self.by_reason) or 'nothing'}"
                f"{self._file_hint()}. Check the shards and the data.* settings (`jukebox-pl inspect-data` reads a few "
                "batches the same way)"
            )
        self._maybe_report()

    # -- reporting -----------------------------------------------------------------------------------------
    @staticmethod
    def describe(counts: Counter) -> str:
        parts = [f"{shard}: {n} x {reason}" for (shard, reason), n in counts.most_common(REASONS_SHOWN)]
        more = len(counts) - REASONS_SHOWN
        return "; ".join(parts) + (f"; and {more} more shard/reason pairs" if more > 0 else "")

    def _maybe_report(self) -> None:
        now = self.clock()
        if self._unreported and now - self._last_report >= self.report_seconds:
            n = sum(self._unreported.values())
            log.warning(
                "skipped %d sample(s) in the last %.0f s (%d in all): %s%s",
                n, now - self._last_report, self.count, self.describe(self._unreported), self._file_hint(),
            )  # fmt: skip
            self._unreported.clear()
            self._last_report = now

    def _file_hint(self) -> str:
        return f" (every skip is listed in {self.log_file})" if self.log_file else ""

    def _append(self, where: str, reason: str, detail: object) -> None:
        if self.log_file is None:
            return
        shard, _, key = where.rpartition(":") if ":" in where else (where, "", "")
        text = " ".join(str(detail).split())[:500]
        line = f"{shard}\t{key}\t{reason}\t{text}\n".encode()
        try:  # one O_APPEND write per line: workers and ranks can share the file
            fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as err:
            log.warning("cannot append to the skip list %s: %s; it is no longer written", self.log_file, err)
            self.log_file = None
