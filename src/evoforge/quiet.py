"""Other libraries' progress bars and chatter off, so evoforge's own progress line and
messages are all a run shows.

transformers draws a "Loading weights" bar on every model load and one per GGUF
conversion, huggingface_hub and datasets draw theirs, and tokenizers warns when a
process forks after it ran. :func:`quiet_loading` turns these off around a load and
restores them after; :func:`quiet_environment` sets the environment variables the
libraries read when they are imported (the command line calls it at start; a
variable the user set is kept).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Any

# Read by the libraries at import; setdefault keeps a user's own choice.
ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}
# A module that draws with tqdm directly, not through transformers' switch.
_RAW_TQDM = ("transformers.modeling_gguf_pytorch_utils",)


def quiet_environment() -> None:
    """Set :data:`ENVIRONMENT`'s variables the user has not set."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def quiet_loading(*, gguf: bool = False) -> Iterator[None]:
    """transformers' and huggingface_hub's progress bars, and transformers' warnings and
    infos, off inside; the settings they had are restored after. ``gguf``: a GGUF file
    is converted inside, whose bar transformers draws with tqdm itself."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # nothing to quiet
        yield
        return
    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    raw = _silence_raw_tqdm(gguf)
    try:
        yield
    finally:
        for module, tqdm in raw:
            module.tqdm = tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _silence_raw_tqdm(gguf: bool) -> list[tuple[Any, Any]]:
    """Give the modules of :data:`_RAW_TQDM` a disabled ``tqdm``; what to restore."""
    if gguf:  # imported now, so that the conversion finds the disabled tqdm
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils  # noqa: F401
    saved = []
    for name in _RAW_TQDM:
        module = sys.modules.get(name)
        tqdm = getattr(module, "tqdm", None)
        if module is not None and tqdm is not None:
            saved.append((module, tqdm))
            module.tqdm = functools.partial(tqdm, disable=True)
    return saved
