"""What a distillation leaves for the user: ``committee/`` (K potentials), ``potential/`` (the
best member, a normal potential folder with a card saying how it was made and what it
measured), ``report/`` and ``summary.json``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..committee import Committee, save_committee
from ..potential import Potential, save_potential
from ..train.output import stamp
from .students import weights

WEAKNESSES = """A distilled student knows only what its teacher showed it: the seed structures, the sampled
temperatures (up to the highest shown above), the strains and the rattle-relax excursions. Far
from them (other phases, surfaces, defects or elements, higher temperatures) it can be arbitrarily
wrong, and never better than its teacher. Run MD with the committee (`FacetCalculator` on the
`committee/` folder) and an `UncertaintyMonitor` to be told when a structure leaves that ground."""


def _card(name: str, summary: dict[str, Any], report: dict[str, Any], member: int) -> str:
    plan = summary["plan"]
    curve = "\n".join(
        f"| {row['round']} | {row['n_train']} | {row.get('committee_energy_mae_meV_per_atom', float('nan')):.3g} | "
        f"{row.get('committee_forces_mae_meV_per_A', float('nan')):.3g} | "
        f"{', '.join(f'{v:.3g}' for v in row.get('member_forces_mae_meV_per_A', []))} |"
        for row in summary["learning_curve"]
    )
    held = report.get("held_out", {})
    held_rows = "\n".join(
        f"| {t} | {'yes' if v.get('inside_trained_range') else 'no'} | {v.get('frames', 0)} | "
        f"{v.get('student_energy_mae_meV_per_atom', float('nan')):.3g} | "
        f"{v.get('student_forces_mae_meV_per_A', float('nan')):.3g} |"
        for t, v in held.items()
    )
    speed = report.get("speed", {})
    speed_line = (
        f"- Speed at {speed['n_atoms']} atoms, one thread, same run: {speed['student_speedup_vs_teacher']:.1f}x the "
        f"teacher; a committee of {speed['committee_members']} costs {speed['committee_cost_vs_student']:.2f}x one "
        "student." if speed else "- Speed: not measured (report off)."
    )
    cal = report.get("calibration", {})
    cal_line = (f"- Uncertainty: Spearman rank correlation of the committee's forces_std with the force error on "
                f"held-out frames: {cal['spearman_forces_std_vs_error']:.2f}." if cal else "")  # fmt: skip
    sampling = summary["sampling"]
    return f"""# {name}

A Facet student distilled from **{summary['teacher']}** with `facet_calc.distill` (facet_calc
{stamp()['facet_calc_version']}, {stamp()['date']}); member {member} of the committee in `../committee/`
(the one with the lowest validation force error).

- Elements: {summary['elements']}; cutoff {summary['student_config']['cutoff']} A; features
  {summary['student_config']['hidden']}, {summary['student_config']['n_layers']} layers.
- Data: {sampling['kept']} teacher-labelled frames sampled ({sampling['by_origin']}; {sampling['duplicates_removed']}
  duplicates removed, {sampling['dropped']} of {sampling['attempted']} frames dropped where the teacher failed),
  MD at {plan['sampling']['temperatures']} K; {summary['active'].get('labelled', 0)} frames added by active
  learning; {summary['n_train']} for training, {summary['n_valid']} for validation. Every frame and its seed is
  in `../data/`.
- Per-element energy shifts: {summary['shifts']['how'] if summary['shifts'] else 'n/a'}.
- Loss: {summary['loss']}.
{speed_line}
{cal_line}

## Learning curve (validation, committee mean)

| round | training frames | E MAE (meV/atom) | F MAE (meV/A) | members' F MAE |
|---|---|---|---|---|
{curve}

## Errors against the teacher on held-out teacher MD (this student)

| temperature | inside trained range | frames | E MAE (meV/atom) | F MAE (meV/A) |
|---|---|---|---|---|
{held_rows}

More in `../report/report.json` (phonons, EOS, RDF) and the PNGs beside it.

## Known weaknesses

{WEAKNESSES}
"""


def write_outputs(out: Path, members, config, summary, teacher, seeds, sampled, temperatures, valid, report_options,
                  report_budget_s, seed, progress):  # fmt: skip
    from ..calculator import FacetCalculator
    from .pipeline import DistillResult, _write_json

    out = Path(out)
    for m in members:
        m.eval().requires_grad_(False).set_backend("auto")
    config = dict(config, description=f"Facet student distilled from {summary['teacher']}")
    committee_dir = out / "committee"
    save_committee(committee_dir, [(config, weights(m), f"# member {k}\n\nSee ../../potential/card.md\n")
                                   for k, m in enumerate(members)])  # fmt: skip
    last = summary["learning_curve"][-1]
    errors = last.get("member_forces_mae_meV_per_A") or [0.0]
    best = int(min(range(len(members)), key=lambda k: errors[k]))
    name = out.name or "distilled"
    pots = [Potential(f"member-{k}", config, m, committee_dir) for k, m in enumerate(members)]
    report: dict[str, Any] = {}
    if report_options:
        from .report import make_report

        student = FacetCalculator(pots[best], threads=1)
        committee = FacetCalculator(Committee("committee", pots), threads=1)
        # speed in float32, as the teacher runs (Teacher loads it so) and as users run MD
        pots32 = [Potential(p.name, p.config, copy.deepcopy(p.model).to(torch.float32), p.path) for p in pots]
        timed = (FacetCalculator(pots32[best], threads=1), FacetCalculator(Committee("committee", pots32), threads=1))
        options = report_options if isinstance(report_options, dict) else {}
        report = make_report(out / "report", student, committee, teacher, seeds, temperatures, sampled, seed,
                             options, progress, timed=timed)  # fmt: skip
    potential_dir = out / "potential"
    save_potential(potential_dir, dict(config, name=name), weights(members[best]), _card(name, summary, report, best))
    summary = {**summary, "best_member": best}
    _write_json(out / "summary.json", {**summary, "report": {k: v for k, v in report.items() if k != "options"}})
    return DistillResult(out, potential_dir, committee_dir, report, summary)
