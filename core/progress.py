"""Progress reporting shared by every long-running function.

Long work takes ``progress(done, total)``; the command line passes a tqdm adapter,
the dashboard an ``st.progress`` adapter.

Work made of several phases (CEIR training: embedding, projection, VAE, k-means, ...) names each before its
first ``progress`` call with :func:`announce_phase`: a callback with a ``phase(name)`` method hears it (the
tqdm adapter shows it in the bar's title); a plain function does not need one. :class:`PhaseClock` does
that, writes one log line per phase and times each, so a run can record where its time went.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    """The default callback: report nothing."""


def announce_phase(progress: Progress, name: str) -> None:
    """Tell ``progress`` that its next ``(done, total)`` calls count the phase ``name``, if it listens."""
    listen = getattr(progress, "phase", None)
    if callable(listen):
        listen(name)


class PhaseClock:
    """Names and times the phases of one long run.

    ``with clock.phase("vae", "Training the VAE ..."):`` announces the phase to the progress callback, logs
    the message, and adds the phase's wall time to ``clock.seconds[name]``; ``clock.elapsed()`` is the wall
    time since the clock was made.
    """

    def __init__(self, progress: Progress | None = None, log: Callable[[str], None] | None = None) -> None:
        self.progress = progress if progress is not None else no_progress
        self.log = log
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str, message: str | None = None) -> Iterator[Progress]:
        announce_phase(self.progress, name)
        if message and self.log is not None:
            self.log(message)
        started = time.perf_counter()
        try:
            yield self.progress
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def rounded(self) -> dict[str, float]:
        """Seconds per phase, rounded to 0.1 s, in the order the phases ran (for a bundle's config)."""
        return {name: round(seconds, 1) for name, seconds in self.seconds.items()}


class TqdmProgress:
    """Adapts ``progress(done, total)`` calls to a tqdm bar (created lazily); a phase name joins its title."""

    _open: weakref.WeakSet[TqdmProgress] = weakref.WeakSet()

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self._title = desc
        self._bar = None
        TqdmProgress._open.add(self)

    def phase(self, name: str) -> None:
        """Close the bar of the phase before; the next bar reads "DESC: NAME"."""
        self.close()
        self.desc = f"{self._title}: {name}"

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
