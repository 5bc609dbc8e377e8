"""Distillation: a fast Facet potential for one chemistry from any teacher, with a committee.

* :mod:`.teacher`: the teacher (a potential or an ASE calculator) and its labels
* :mod:`.checks`: seed structures refused before anything runs
* :mod:`.budget`: the time budget, the plan it buys, and the refusal of one too small
* :mod:`.sampling`: teacher MD, strains, rattle-relax-repeat; seeded, recorded, deduplicated
* :mod:`.students`: the student sizes, the teacher's shifts, training one member
* :mod:`.active`: committee MD and the frames of largest disagreement
* :mod:`.report`: the student measured against the teacher (JSON and PNGs)
* :mod:`.output`: the committee, the potential folder with its card, the summary
* :mod:`.pipeline`: ``distill(teacher, structures, out, ...)``, resumable
"""

from .pipeline import DistillResult, distill
from .teacher import DistillError

__all__ = ["DistillError", "DistillResult", "distill"]
