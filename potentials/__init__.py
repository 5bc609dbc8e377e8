"""Shipped potentials (data only). Installed as ``facet_calc.potentials``; see index.json."""
