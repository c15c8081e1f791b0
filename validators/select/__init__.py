"""Data selection: LLM scores per record (DEITA, AlpaGasus), then whole-set selectors.

- :mod:`.scorers`: :class:`DeitaScorer` (DEITA, Liu et al., ICLR 2024, arXiv
  2312.15685) and :class:`AlpagasusRater` (AlpaGasus, Chen et al., 2023), engine tasks
  that write ``meta["deita"]`` / ``meta["alpagasus"]``;
- :mod:`.replies`: the JSON Schemas the judges are asked for and the parsers of their
  replies (DEITA's expected score from token logprobs included);
- :mod:`.texts`: the text of a record that is scored and embedded;
- :mod:`.selectors`: :func:`select_deita`, :func:`select_alpagasus`,
  :func:`select_kcenter`, :func:`select_random` and the dispatcher :func:`select`,
  each returning the selected records and a rejection with a reason code for every
  other one;
- model signals (issue 17; ``docs/methods/model-signals.md``): :mod:`.ifd`
  (:class:`IfdScorer`, :func:`select_ifd`), :mod:`.mining` (:class:`MiningScorer`,
  :func:`fit_rule`, :func:`select_mining`), :mod:`.memorisation`
  (:class:`MemorisationScorer`, :func:`select_memorisation`), scored through
  :mod:`.score_cache` and ranked by :mod:`.ranking`; LIMA's :func:`select_lima` and
  :func:`select_balanced` (:mod:`.balanced`); their set steps in :mod:`.signal_steps`;
- :mod:`.steps`: the selectors as set steps (:class:`SelectorStep`, :func:`selector_step`;
  :data:`DEITA`, :data:`ALPAGASUS`, :data:`KCENTER`, :data:`RANDOM` are the ``selector``
  registry's entries).
"""

from evoforge.validators.select.balanced import select_balanced, select_lima
from evoforge.validators.select.ifd import IfdScorer, select_ifd
from evoforge.validators.select.memorisation import MemorisationScorer, select_memorisation
from evoforge.validators.select.mining import (
    APPROXIMATE_RULE,
    MiningRule,
    MiningScorer,
    fit_rule,
    select_mining,
)
from evoforge.validators.select.replies import (
    ALPAGASUS_SCHEMA,
    DEITA_SCHEMA,
    DEITA_SCORE,
    SCORE_TOKENS,
    deita_chain_schema,
    expected_score,
    parse_alpagasus_score,
    parse_deita_chain,
    parse_deita_score,
)
from evoforge.validators.select.scorers import (
    ALPAGASUS_PARAMS,
    DEITA_PARAMS,
    MAX_CHAIN,
    AlpagasusRater,
    DeitaScorer,
)
from evoforge.validators.select.selectors import (
    SELECTORS,
    greedy_kcenter,
    kmeans,
    select,
    select_alpagasus,
    select_deita,
    select_kcenter,
    select_random,
)
from evoforge.validators.select.steps import (
    ALPAGASUS,
    DEITA,
    KCENTER,
    RANDOM,
    SelectorStep,
    selector_step,
)
from evoforge.validators.select.texts import RecordLike, text_of, turn_pairs

__all__ = [
    "select_mining",
    "select_memorisation",
    "select_lima",
    "select_ifd",
    "select_balanced",
    "fit_rule",
    "MiningScorer",
    "MiningRule",
    "MemorisationScorer",
    "IfdScorer",
    "APPROXIMATE_RULE",
    "ALPAGASUS",
    "ALPAGASUS_PARAMS",
    "ALPAGASUS_SCHEMA",
    "DEITA",
    "DEITA_PARAMS",
    "DEITA_SCHEMA",
    "DEITA_SCORE",
    "KCENTER",
    "MAX_CHAIN",
    "RANDOM",
    "SCORE_TOKENS",
    "SELECTORS",
    "AlpagasusRater",
    "DeitaScorer",
    "RecordLike",
    "SelectorStep",
    "deita_chain_schema",
    "expected_score",
    "greedy_kcenter",
    "kmeans",
    "parse_alpagasus_score",
    "parse_deita_chain",
    "parse_deita_score",
    "select",
    "select_alpagasus",
    "select_deita",
    "select_kcenter",
    "select_random",
    "selector_step",
    "text_of",
    "turn_pairs",
]
