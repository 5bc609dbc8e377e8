"""Write data.sio: a rattled 512-atom diamond-Si cell with every 7th atom O, for in.lmp."""

from ase.build import bulk

from facet_calc.lammps.inputs import write_data

atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)
atoms.rattle(0.05, seed=1)
atoms.symbols[::7] = "O"
write_data("data.sio", atoms, ["Si", "O"])  # type 1 = Si, type 2 = O
print(f"wrote data.sio: {len(atoms)} atoms")
