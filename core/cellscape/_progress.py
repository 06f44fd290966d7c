"""Progress display for steps and long loops.

Methods call ``self.progress(iterable)``; whether anything is shown is decided
by whoever runs them: the CLI installs a rich display, ``--quiet`` and plain
library use install nothing, so notebooks and scripts stay silent.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class ProgressSink(Protocol):
    def start(self, description: str, total: int | None) -> Any: ...
    def advance(self, task: Any, amount: int = 1) -> None: ...
    def finish(self, task: Any) -> None: ...


_SINK: contextvars.ContextVar[ProgressSink | None] = contextvars.ContextVar("cellscape_progress", default=None)


def progress(items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
    """Yield from ``items``, reporting each one to the active progress display, if any."""
    sink = _SINK.get()
    if sink is None:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    task = sink.start(description, total)
    try:
        for item in items:
            yield item
            sink.advance(task)
    finally:
        sink.finish(task)


@contextlib.contextmanager
def showing_progress(sink: ProgressSink | None) -> Iterator[None]:
    """Route ``progress`` calls made inside the block to ``sink``."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


class RichProgress:
    """A ProgressSink drawing rich progress bars on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None) -> Any:
        return self._progress.add_task(description, total=total)

    def advance(self, task: Any, amount: int = 1) -> None:
        self._progress.advance(task, amount)

    def finish(self, task: Any) -> None:
        self._progress.remove_task(task)
