"""Progress reporting shared by every long-running function.

Long work takes ``progress(done, total)``; the command line passes a tqdm adapter,
the dashboard an ``st.progress`` adapter.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default callback: report nothing."""


class TqdmProgress:
    """Adapts ``progress(done, total)`` calls to a tqdm bar (created lazily)."""

    _open: weakref.WeakSet[TqdmProgress] = weakref.WeakSet()

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self._bar = None
        TqdmProgress._open.add(self)

    @classmethod
    def close_all(cls) -> None:
        """Clear every bar still drawn, e.g. before the one-line error of a run that stopped mid-way."""
        for progress in list(cls._open):
            progress.close()

    def __call__(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=total, desc=self.desc, leave=False)
        self._bar.n = done
        self._bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
