"""Before open_clip tries to download a real CLIP: are its files cached, and if not, can they be fetched?

Without this check, asking for ``ViT-B-32:openai`` on a machine with no network waits for the Hugging Face
hub's retries (close to a minute) and ends in a long, clipped exception. Here the local caches are looked up
first (the Hugging Face hub cache and open_clip's ``~/.cache/clip``); only when something is missing is the
download host tried, once, for at most :data:`NETWORK_CHECK_TIMEOUT` seconds, so the answer comes in ~1.5 s.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

NETWORK_CHECK_TIMEOUT = 1.5  # seconds; the whole check, name lookup included
OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RemoteFile:
    """A file open_clip would download: what it is, from which host, and where the cache would keep it."""

    what: str
    host: str
    cache: str


def host_reachable(host: str, timeout: float = NETWORK_CHECK_TIMEOUT) -> bool:
    """Whether ``https://host/`` answers an HTTP request (any status) within ``timeout`` seconds.

    A real HTTPS exchange, not only a TCP connect, so that a network that accepts every connection and then
    drops it counts as offline; urllib honours the proxy settings in the environment. The name lookup is
    inside the time limit too: the request runs on a daemon thread that is abandoned when time runs out, so a
    resolver that hangs offline cannot make the caller wait.
    """
    answered: list[bool] = []

    def ask() -> None:
        request = urllib.request.Request(f"https://{host}/", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # an error status is still an answer from the host
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=ask, name=f"reach-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def hub_offline() -> bool:
    """Whether the user switched the Hugging Face hub off (``HF_HUB_OFFLINE``)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in OFFLINE_VALUES:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _hub_repo_cached(repo_id: str) -> bool:
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def _hub_file_cached(repo_id: str, filenames: list[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def _weights_file(name: str, tag: str) -> RemoteFile | None:
    """The weights download of ``name:tag`` if they are not cached yet, following open_clip's own choice
    (the Hugging Face hub when the tag has an ``hf_hub`` entry, else its URL into ``~/.cache/clip``)."""
    from open_clip import pretrained
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = pretrained.get_pretrained_cfg(name, tag)
    if not cfg or "file" in cfg:
        return None
    what = "its weights"
    if pretrained.has_hf_hub() and cfg.get("hf_hub"):
        from huggingface_hub import constants

        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        names = [filename, *([HF_SAFE_WEIGHTS_NAME] if filename == HF_WEIGHTS_NAME else [])]
        if filename.endswith((".bin", ".pth")) and filename != HF_WEIGHTS_NAME:
            names.append(filename[:-4] + ".safetensors")
        if _hub_file_cached(repo_id, names):
            return None
        return RemoteFile(what, _hub_host(), constants.HF_HUB_CACHE)
    url = cfg.get("url", "")
    cache = Path("~/.cache/clip").expanduser()
    if not url or (cache / os.path.basename(url)).is_file():
        return None
    return RemoteFile(what, urlparse(url).hostname or url, str(cache))


def missing_files(name: str, tag: str) -> list[RemoteFile]:
    """What loading ``name:tag`` would have to download: its weights and any Hugging Face text tower or
    tokenizer it names, each left out when already in the local cache."""
    from open_clip import get_model_config

    missing = [file for file in [_weights_file(name, tag)] if file is not None]
    text_cfg = (get_model_config(name) or {}).get("text_cfg", {})
    for key, what in (("hf_model_name", "text model"), ("hf_tokenizer_name", "tokenizer")):
        repo_id = text_cfg.get(key)
        if repo_id and not _hub_repo_cached(repo_id):
            from huggingface_hub import constants

            missing.append(RemoteFile(f"the {what} {repo_id}", _hub_host(), constants.HF_HUB_CACHE))
    return missing


def download_problem(name: str, tag: str, timeout: float = NETWORK_CHECK_TIMEOUT) -> str | None:
    """One whole sentence saying why ``name:tag`` cannot be loaded on this machine now, or None if it can
    (everything cached, or the download host answers). Takes at most about ``timeout`` seconds."""
    missing = missing_files(name, tag)
    if not missing:
        return None
    first = missing[0]
    if hub_offline():
        why, fix = "HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE on a machine with internet once"
    elif not host_reachable(first.host, timeout=timeout):
        why, fix = f"{first.host} cannot be reached (no network)", "connect this machine to the internet once"
    else:
        return None
    needed = " and ".join(file.what for file in missing)
    return (
        f"The CLIP {name}:{tag} cannot be loaded: it needs to download {needed} (not in the local cache "
        f"{first.cache}) and {why}; use the offline ConSE model or a ConceptLens bundle, or {fix}."
    )
