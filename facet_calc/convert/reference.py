"""The source model as an ASE calculator, in float32 or float64, for fidelity checks.

sevenn's own ``SevenNetCalculator`` always feeds float32 data to the model. To compare a
converted potential in float64 we run the very same sevenn model (built from the checkpoint by
sevenn, including its backward-compatibility patches) with float64 parameters and inputs.
Needs the optional ``sevenn`` package.
"""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, all_changes

from .sevennet import _require_sevenn, built_model, load_sevenn_checkpoint


class SevenNetReference(Calculator):
    """sevenn's model for checkpoint ``model`` in ``dtype``: a sevenn keyword (e.g. ``"7net-0"``), a
    checkpoint path (read weights-only), or a loaded ``SevenNetCheckpoint``."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self, model: str = "7net-0", dtype: str = "float64", device: str = "cpu", modal: str | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        _require_sevenn()
        from sevenn.calculator import SevenNetCalculator

        cp = model if hasattr(model, "build_model") else load_sevenn_checkpoint(model)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        net = built_model(cp).to(device=device, dtype=self.dtype)
        onehot = net._modules["onehot_idx_to_onehot"]
        onehot_forward = onehot.forward
        cast = self.dtype

        def onehot_in_dtype(data):
            # sevenn's one-hot embedding is hard-wired to float32
            data = onehot_forward(data)
            for key in ("x", "node_attr"):
                if key in data:
                    data[key] = data[key].to(cast)
            return data

        onehot.forward = onehot_in_dtype
        self._inner = SevenNetCalculator(net, file_type="model_instance", device=device, modal=modal)
        #: the fidelity of a multi-fidelity model, in the checkpoint's spelling (e.g. "PBE")
        self.modal = self._inner.modal
        self.cutoff = self._inner.cutoff

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(self.atoms, self.cutoff))
        if self.modal:
            data["data_modality"] = self.modal  # as SevenNetCalculator.calculate does
        for key in list(data.keys()):
            value = data[key]
            if torch.is_tensor(value) and value.is_floating_point():
                data[key] = value.to(self.dtype)
        data.to(self._inner.device)
        output = self._inner.model(data)
        results = self._inner.output_to_results(output)
        self.results = {k: results[k] for k in self.implemented_properties}
