"""Run reports: what happened to every seed, as one self-contained HTML page.

:func:`write_report` reads a folder of outputs (or one output and the steps
beside it that share its records): each output ``X.jsonl`` with
``X.rejects.jsonl``, ``X.manifest.json`` and ``X.journal.db`` beside it (see
:func:`evoforge.engine.runner.output_paths`), and writes ``report.html`` and
``summary.md`` into that folder.

Outputs play one of five roles, told apart by their manifest:

- ``generate`` -- ``answer``, ``evolve``, ``rag``, ``in2``: seeds in, records out;
- ``score`` -- the DEITA / AlpaGasus scoring run of ``select`` (``X.scored.jsonl``);
- ``validate`` -- ``validate --out`` (rejects, no manifest): records that passed the checks;
- ``dedup`` -- rejects with reason ``duplicate`` and the id each lost to;
- ``select`` -- a ``select`` manifest (``method``, ``selected``).

Records keep their ids through validate, dedup, score and select, so a
generation output's records are followed through every later stage in the
folder: that is the funnel, and per seed, the trace. Plots are SVG drawn by
matplotlib (no pyplot state) and inlined; the page needs no network.

The package, one idea a module: :mod:`~evoforge.report.data` reads the folder,
:mod:`~evoforge.report.trace` follows records along their chains,
:mod:`~evoforge.report.sections` builds the page's parts,
:mod:`~evoforge.report.charts` draws the charts and :mod:`~evoforge.report.page`
writes the page and the summary.
"""

from evoforge.report.data import Chain, Drop, Item, Stage, discover_stages, operator_of
from evoforge.report.page import write_report
from evoforge.report.sections import Section

__all__ = [
    "Chain",
    "Drop",
    "Item",
    "Section",
    "Stage",
    "discover_stages",
    "operator_of",
    "write_report",
]
