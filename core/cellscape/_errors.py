"""Typed errors of cellscape.

Every error a user can provoke is a subclass of :class:`CellscapeError`, so a
script can catch them all, and each says what went wrong and what to do::

    CellscapeError
     ├── InputError        a file or an array that is not what a step expects
     ├── SpecError         a pipeline spec that does not validate (carries every issue)
     ├── PluginError       a plugin that cannot be loaded, registered or found
     ├── StepError         a method that raised while a pipeline step ran
     └── StoreError        a run directory or artefact store that is damaged
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs


class CellscapeError(Exception):
    """Base class of every error cellscape raises on purpose."""


class InputError(CellscapeError, ValueError):
    """Data that does not meet a method's or a file format's expectations."""


class PluginError(CellscapeError):
    """A plugin or method that cannot be loaded, registered or looked up."""


class StoreError(CellscapeError):
    """A damaged artefact store or run directory."""


class StepError(CellscapeError):
    """A pipeline step whose method raised; names the step and the method."""

    def __init__(self, step_id: str, method: str, cause: BaseException):
        self.step_id = step_id
        self.method = method
        self.cause = cause
        super().__init__(
            f"step '{step_id}' ({method}) failed: {type(cause).__name__}: {cause}"
        )


@attrs.frozen
class SpecIssue:
    """One problem found in a spec: where it is and what is wrong."""

    message: str
    file: str | None = None
    line: int | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" [{self.key}]" if self.key else ""
        return f"{where}:{key} {self.message}"


class SpecError(CellscapeError):
    """A spec with one or more problems; ``issues`` lists all of them."""

    def __init__(self, issues: Sequence[SpecIssue] | str):
        if isinstance(issues, str):
            issues = [SpecIssue(issues)]
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the pipeline spec:"
        super().__init__("\n".join([head, *("  " + str(i) for i in self.issues)]))
