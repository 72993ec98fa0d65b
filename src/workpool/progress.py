"""The live progress bar of ``progress=True``: done/total, rate, ETA and failures, on stderr."""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from rich.progress import Progress, Task

__all__ = ["ProgressBar"]


class ProgressBar:
    """A rich progress bar for one run; updated from the thread that drives the run.

    rich is imported only when a bar is asked for, so runs without one pay nothing.
    """

    def __init__(self, total: int | None, description: str, done: int = 0) -> None:
        """Start drawing; ``done`` tasks are counted as finished already (a resumed run)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                if speed is None:
                    return Text("-- items/s")
                if speed >= 1e6:  # short enough to leave room for the rest on 80 columns
                    return Text(f"{speed / 1e6:,.1f}M items/s")
                return Text(f"{speed:,.0f} items/s")

        class FailuresColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                failed = task.fields.get("failed", 0)
                return Text(f"{failed} failed", style="red" if failed else "dim")

        # The name and the bar give way on a narrow terminal; the numbers never wrap.
        def whole() -> Column:
            return Column(no_wrap=True)

        columns: list[Any] = [
            TextColumn(
                "[bold]{task.description}",
                table_column=Column(no_wrap=True, overflow="ellipsis", max_width=20),
            )
        ]
        if total is not None:
            columns += [
                BarColumn(bar_width=None, table_column=Column(max_width=40)),
                MofNCompleteColumn(table_column=whole()),
            ]
        else:
            columns += [TextColumn("{task.completed:,} done", table_column=whole())]
        columns += [RateColumn(table_column=whole()), TimeElapsedColumn(table_column=whole())]
        if total is not None:
            columns += [
                TextColumn("ETA", table_column=whole()),
                TimeRemainingColumn(table_column=whole()),
            ]
        columns.append(FailuresColumn(table_column=whole()))
        self._progress: Progress = Progress(
            *columns, console=Console(stderr=True), refresh_per_second=8
        )
        self._task = self._progress.add_task(description, total=total, completed=done, failed=0)
        self._failed = 0
        self._closed = False
        self._progress.start()

    def advance(self, done: int, failed: int = 0) -> None:
        """Count ``done`` more finished tasks, ``failed`` of which failed."""
        self._failed += failed
        self._progress.update(self._task, advance=done, failed=self._failed)

    def close(self) -> None:
        """Draw the bar a last time and stop it; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._progress.refresh()
        self._progress.stop()
