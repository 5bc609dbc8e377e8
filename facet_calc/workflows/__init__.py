"""Thin, typed helpers over ASE, phonopy and pymatgen for the jobs users run most.

Each accepts ASE ``Atoms`` or a pymatgen ``Structure``, leaves the input unmodified, shows a
tqdm progress bar (``progress=False`` hides it) and returns a plain result object whose field
names carry their units. An input that likely changes the answer (an unrelaxed crystal for
elastic, eos or phonons; a slab whose cell would relax; a polar crystal without NAC) gives a
:class:`WorkflowWarning`.

>>> from ase.build import bulk
>>> from facet_calc.workflows import eos
>>> result = eos(bulk("Al", "fcc", a=4.05), progress=False)  # doctest: +SKIP
>>> result.b0_gpa  # doctest: +SKIP
"""

from ._common import WorkflowWarning
from .elastic import ElasticResult, elastic_constants
from .eos import EOSResult, eos
from .md import MDResult, run_md
from .phonons import PhononResult, phonons
from .relax import RelaxResult, relax
from .uncertainty import UncertaintyExceeded, UncertaintyMonitor, UncertaintyWarning

__all__ = [
    "relax",
    "RelaxResult",
    "run_md",
    "MDResult",
    "phonons",
    "PhononResult",
    "eos",
    "EOSResult",
    "elastic_constants",
    "ElasticResult",
    "WorkflowWarning",
    "UncertaintyMonitor",
    "UncertaintyExceeded",
    "UncertaintyWarning",
]
