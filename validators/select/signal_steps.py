"""The model-signal and LIMA selectors as set steps (the ``selector`` registry's
``ifd``, ``mining``, ``memorisation``, ``lima`` and ``balanced``).

Each reads what an earlier scoring pass wrote in ``meta`` (``evoforge select --method
ifd`` scores and selects in one streaming command; these steps select records that
are already scored, e.g. in a recipe or a notebook)."""

from __future__ import annotations

from evoforge.validators.select.balanced import select_balanced, select_lima
from evoforge.validators.select.ifd import select_ifd
from evoforge.validators.select.memorisation import select_memorisation
from evoforge.validators.select.mining import select_mining
from evoforge.validators.select.steps import SelectorStep

__all__ = ["BALANCED", "IFD", "LIMA", "MEMORISATION", "MINING"]

IFD = SelectorStep("ifd", select_ifd)
MINING = SelectorStep("mining", select_mining)
MEMORISATION = SelectorStep("memorisation", select_memorisation)
LIMA = SelectorStep("lima", select_lima)
BALANCED = SelectorStep("balanced", select_balanced)
