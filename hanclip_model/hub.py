"""Loading an encoder whose weights may come from the Hugging Face hub: quietly, and, when they
cannot be fetched, in one line that says what to do.

open_clip and sentence-transformers fetch through huggingface_hub, which retries a hub it
cannot reach with backoff (five tries for each file, and open_clip asks for two) and logs
every attempt on its own stderr handler; open_clip's module-level `logging.error` also gives
the root logger a stderr handler for the rest of the process. Around each load (`fetching`)
the root logger gets a NullHandler and huggingface_hub's logger shows errors only. Where the
hub cannot be reached at all (one TCP connection, not tried behind a proxy, whose rules only
huggingface_hub's client knows), the load runs in huggingface_hub's offline mode: a model in
the local cache loads as before, a missing one fails at once, with no retries. The online
path is unchanged.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from urllib.parse import urlsplit

from hanclip_model.errors import BundleError
from hanclip_model.onnx_runtime import root_logger_muted

OFFLINE_ADVICE = (
    "with no network, pass --model with a bundle on this machine (hanclip-demo DIR makes a "
    "tiny one), or set HF_HUB_OFFLINE=1 to use only models already downloaded; see "
    "'Trying it without network' in the README"
)
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_PROBE_SECONDS = 5.0


@contextmanager
def fetching(what: str, spec: str, *, remote: bool) -> Iterator[None]:
    """Around loading `what` (e.g. "image model") `spec`; `remote`: its weights may come from
    the hub. A `BundleError` raised inside while the hub is out of reach becomes one that
    names what could not be fetched and what to do (`OFFLINE_ADVICE`)."""
    if not remote:
        yield
        return
    from huggingface_hub import constants

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    offline_before = constants.HF_HUB_OFFLINE
    offline = offline_before or not hub_reachable()
    hub_logger.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = offline
    try:
        with root_logger_muted():
            yield
    except BundleError as exc:
        if not offline:
            raise
        where = "offline mode is on" if offline_before else "the hub cannot be reached"
        raise BundleError(
            f"cannot fetch {what} {spec!r} from the Hugging Face hub ({where}) and it is not "
            f"in the local cache: {OFFLINE_ADVICE}"
        ) from exc
    finally:
        constants.HF_HUB_OFFLINE = offline_before
        hub_logger.setLevel(level)


@cache
def hub_reachable() -> bool:
    """Whether a connection to the hub's host opens (asked once per process); True behind a
    proxy, which huggingface_hub's client goes through and this check would not."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), _PROBE_SECONDS):
            return True
    except OSError:
        return False
