"""timm's pretrained weights (`weights=hub`): from the local hub cache when they are there, else
downloaded by timm, but only after one short probe shows the hub answers (no minute of retries
offline). Whatever fails is one line that says how to use a local file instead."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

from clbench.errors import ClbenchError

PROBE_SECONDS = 3.0
"""How long the reachability probe waits for the hub before giving up."""

HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm looks for in a hub repository, in its order of preference."""


def pretrained_overlay(name: str) -> dict[str, str]:
    """The `pretrained_cfg_overlay` for `timm.create_model(name, pretrained=True)`: {"file": PATH}
    when the hub cache holds the weights (no network), {} when timm may download them (the hub
    answered a probe); else ClbenchError saying the hub cannot be reached."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ClbenchError(f"timm has no pretrained weights for '{name}'; give weights=PATH to a checkpoint, "
                           f"or weights= (empty) for random initialisation")
    cached = _cached_file(cfg.hf_hub_id, cfg.hf_hub_filename) if cfg.hf_hub_id else None
    if cached:
        return {"file": cached}
    source = _hub_endpoint() if cfg.hf_hub_id else cfg.url
    if not reachable(source):
        raise ClbenchError(
            f"the hub ({urlsplit(source).netloc}) cannot be reached to fetch the pretrained weights of '{name}'; "
            f"use a local file instead: --set weights=PATH, made on a machine with network by "
            f"torch.save(timm.create_model('{name}', pretrained=True).state_dict(), PATH)")
    return {}


def reachable(url: str) -> bool:
    """Whether `url`'s server answers one HEAD request within `PROBE_SECONDS` (any HTTP status
    counts; proxies from the environment are honoured); False at once in HF offline mode."""
    if _offline_mode():
        return False
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return True  # the server answered, if only with an error status
    except (OSError, ValueError):
        return False
    return True


def _cached_file(repo_id: str, filename: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    for file in (filename,) if filename else HUB_FILES:
        path = try_to_load_from_cache(repo, file, revision=revision or None)
        if isinstance(path, str):
            return path
    return None


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline_mode() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()
