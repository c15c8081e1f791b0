"""An evolution op: ``shorten`` rewrites an instruction into a terser one with the same task.

Evol-Instruct (Xu et al., 2023, arXiv 2304.12244) grows instructions in depth; a
mix with a shortening op keeps the set from drifting towards ever longer prompts.
The op is a prompt (``evol_shorten.yaml``, beside this file) run by ``EvolInstruct``
with all of its elimination rules and its equality judge. Register it, then name it::

    from evoforge.registry import register
    register("evolver", "shorten", SHORTEN)

    evoforge.evolve("seeds.jsonl", "out.jsonl",
                    evolve=EvolveOptions(ops="constraints=2,shorten=1"))
"""

from __future__ import annotations

from pathlib import Path

from evoforge.evolvers.evol_instruct import InstructionOp

SHORTEN = InstructionOp("shorten", template=Path(__file__).with_name("evol_shorten.yaml"))
