"""Critics for RAG evaluation samples, and a panel that repairs a failing sample once.

Ragas v0.1 test-set generation (``testset/prompts.py``, its "critic" prompts)
keeps a generated question only when an LLM critic finds its context good
enough, the question independent with a clear intent, and an evolved question
different from its seed. The critics here keep those checks and fix what the
METHODS notes list as Ragas' weaknesses:

- nothing is dropped silently: a failing sample becomes a ``Rejection`` with a
  reason code and the critic's own words;
- retries are bounded: ``CriticPanel`` asks for one rewrite, never more;
- the reference answer is checked against the contexts (``Grounded``), a check
  Ragas does not make.

Input: a ``rag`` record (``user_input``, ``reference``, ``reference_contexts``,
optionally ``synthesizer_name`` and ``meta.seed_question``) or a ``qa`` record
(``question``, ``answer``, ``contexts``). ``user_input`` is a string or a list
of ``{role, content}`` turns; for turns the last user turn is the question,
read in the light of the earlier turns.

Every LLM judge here goes through one code path, :class:`RubricCritic` (``rubric.py``): render
a template, ask, read a score (a number on the scale, or a verdict word such as
"yes"/"no" or "Equal"/"Not Equal" mapped onto it) and a reason, compare with
the pass threshold. On its own it scores any record against a rubric you write
(``prompts/critic_rubric.yaml``; ``evoforge validate --checks rubric``); the
checks below are binary rubrics with prompts of their own.

Critics, cheapest first, with their reason codes:

- ``SelfContained`` (no model call): ``not_self_contained``;
- ``Grounded``: a lexical overlap check (no model call), then an LLM judge
  (``prompts/critic_grounded.yaml``): ``ungrounded_reference``, or
  ``empty_answer`` for a reference of stop words only, or ``no_context``;
- ``Answerable`` (LLM judge, ``prompts/critic_answerable.yaml``):
  ``unanswerable``, or ``no_context`` when the record has no context text;
- ``InformationGain`` (the Evol-Instruct equality judge,
  ``prompts/evol_equal.yaml``): ``no_information_gain``;
- ``RubricCritic`` (a rubric, a scale and a pass threshold): ``low_rating``, or
  ``unparseable_rating`` when the reply holds no score.

``CriticPanel`` adds ``language_drift`` (a repair that left the question's
script); a failed model call keeps the engine's reason (``invalid_json``,
``schema_mismatch``, ``http_400``, ...).

Modules, one idea each: ``sample`` (what a critic reads from a record), ``base``
(the ``Critic`` contract), ``rating`` (a judge's reply as a score), ``rubric`` (the
rubric critic and the binary and equality judges built on it), ``screens``
(``SelfContained``, ``WellFormed``: no model call), ``grounding`` (``Answerable``,
``Grounded``, ``InformationGain``), ``panel`` (``CriticPanel``) and ``merged``
(``MergedJudge``: grounded, answerable and information gain in one call, issue 19).
"""

from __future__ import annotations

from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.grounding import (
    Answerable,
    Grounded,
    InformationGain,
    content_words,
)
from evoforge.validators.critics.merged import (
    CRITIC_CALLS,
    JudgedTogether,
    MergedJudge,
    critics_for,
    merged_critics,
    resolve_critic_calls,
)
from evoforge.validators.critics.panel import UNFIXABLE, CriticPanel, default_critics
from evoforge.validators.critics.rating import (
    BINARY_SCALE,
    EQUAL_VERDICTS,
    YES_NO,
    Rating,
    read_rating,
    verdict_score,
)
from evoforge.validators.critics.rubric import (
    DEFAULT_RUBRIC,
    EQUAL_JUDGE_PARAMS,
    VERDICT_PARAMS,
    RubricCritic,
    ask_equal_judge,
    binary_judge,
    load_rubric,
    sample_text,
)
from evoforge.validators.critics.sample import (
    Question,
    contexts_of,
    numbered_contexts,
    question_of,
    question_prompt_text,
    reference_of,
)
from evoforge.validators.critics.screens import SelfContained, WellFormed

__all__ = [
    "BINARY_SCALE",
    "CRITIC_CALLS",
    "DEFAULT_RUBRIC",
    "EQUAL_JUDGE_PARAMS",
    "EQUAL_VERDICTS",
    "UNFIXABLE",
    "VERDICT_PARAMS",
    "YES_NO",
    "Answerable",
    "Critic",
    "CriticPanel",
    "Grounded",
    "InformationGain",
    "JudgedTogether",
    "MergedJudge",
    "Question",
    "Rating",
    "RubricCritic",
    "SelfContained",
    "WellFormed",
    "ask_equal_judge",
    "binary_judge",
    "content_words",
    "contexts_of",
    "critics_for",
    "default_critics",
    "load_rubric",
    "merged_critics",
    "numbered_contexts",
    "question_of",
    "question_prompt_text",
    "read_rating",
    "reference_of",
    "resolve_critic_calls",
    "sample_text",
    "verdict_score",
]
