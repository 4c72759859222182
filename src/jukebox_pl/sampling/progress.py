"""A rich progress bar per level with tokens/s and the time left (silent when not on a terminal)."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TokenProgress:
    def __init__(self, models, enabled: bool = True):
        self.models, self.enabled = models, enabled
        self.tasks: dict[int, int] = {}
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tokens"),
            TextColumn("[progress.data.speed]{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip

    def __enter__(self) -> TokenProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()

    def set_totals(self, totals: dict[int, int]) -> None:
        """Tokens still to sample per level (top first), from the sampler's window plan."""
        if self.enabled:
            for level, total in totals.items():
                self.tasks[level] = self.progress.add_task(f"{self.models.name(level):>6}", total=total, rate="")

    def advance(self, level: int, n: int) -> None:
        """`n` tokens of `level` were sampled."""
        if not self.enabled:
            return
        if level not in self.tasks:
            self.tasks[level] = self.progress.add_task(f"{self.models.name(level):>6}", total=None, rate="")
        task = self.tasks[level]
        self.progress.advance(task, n)
        speed = self.progress.tasks[task].speed
        self.progress.update(task, rate=f"{speed:.1f} tok/s" if speed else "")
