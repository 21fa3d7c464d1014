"""The progress bar of `Rayborg.program` (rich, drawn only when asked or stderr is a terminal)."""

from __future__ import annotations

from rayborg.python_api.batch import ProgramResult


class ProgressBar:
    """Programmed of total, failed so far, time; a no-op when `show` is false."""

    def __init__(self, total: int, show):
        self._p = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(
                TextColumn("programming"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                transient=False,
                **({} if isinstance(show, bool) else {"console": show}),
            )
            self._task = self._p.add_task("program", total=total, failed=0)
            self._failed = 0
            self._p.start()

    def advance(self, result: ProgramResult) -> None:
        if self._p is not None:
            self._failed += 0 if result.ok else 1
            self._p.update(self._task, advance=1, failed=self._failed)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
