"""One model call at a time in the dashboard's process, on every core it may use.

Streamlit runs each browser session's script in its own thread, and the models are shared by all of them
(``st.cache_resource``). Eight sessions labelling photos at once would start eight PyTorch forward passes,
each with its own pool of intra-op threads, on a machine with two cores: they fight for the cores and all
finish late. :func:`one_at_a_time` serialises the forward passes behind one process-wide lock, and
:func:`use_cores` gives each of them all the cores this process may run on (set once per process).
Nothing here imports Streamlit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

MODEL_LOCK = threading.Lock()
_configured: list[int] = []  # the thread count set, once


def usable_cores() -> int:
    """CPUs this process may run on (its affinity, which a container limits), at least one."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def use_cores() -> int:
    """Give PyTorch's intra-op pool every usable core, once per process; the thread count."""
    if not _configured:
        import torch

        torch.set_num_threads(usable_cores())
        _configured.append(torch.get_num_threads())
    return _configured[0]


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """Hold the process-wide model lock: one forward pass at a time, on all cores."""
    use_cores()
    with MODEL_LOCK:
        yield


def serialised(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, **kwargs)`` under :func:`one_at_a_time`."""
    with one_at_a_time():
        return run(*args, **kwargs)
