"""Check a built wheel and sdist before they are uploaded: each carries every file that
potentials/index.json lists (byte for byte: the sha256 digests the loader checks), the index
itself and the licence files (the project's and SevenNet's, for the converted weights); and the
wheel carries every module of the facet_calc source tree (a package missing from pyproject's
explicit list would otherwise only show as an ImportError after a regular install).

Usage: python .ci/check_dist.py DIST_DIR   (the folder `python -m build --outdir` wrote)
"""

import hashlib
import json
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LICENCES = ["LICENSE", "potentials/LICENSE-SevenNet"]


def expected_files() -> dict[str, str | None]:
    """Paths under potentials/ -> sha256 (None: present, digest not indexed)."""
    index = json.loads((ROOT / "potentials" / "index.json").read_text())
    files: dict[str, str | None] = {"index.json": None, "LICENSE-SevenNet": None}
    for name, entry in index.items():
        files.update({f"{name}/{file}": digest for file, digest in entry["sha256"].items()})
    return files


def check(archive: str, read, names: set[str], prefix: str, licences: list[str]) -> list[str]:
    """Problems with one archive: ``read(path)`` gives a member's bytes, ``prefix`` is where
    potentials/ sits inside it, ``licences`` the licence paths it must hold."""
    problems = [f"{archive} lacks {path}" for path in licences if path not in names]
    for rel, digest in expected_files().items():
        path = prefix + rel
        if path not in names:
            problems.append(f"{archive} lacks {path}")
        elif digest is not None and hashlib.sha256(read(path)).hexdigest() != digest:
            problems.append(f"{archive}: {path} differs from the sha256 in potentials/index.json")
    return problems


def source_files() -> list[str]:
    """Every file under facet_calc/ that the wheel must carry (modules and kernel sources)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "facet_calc").rglob("*")
                  if p.suffix in (".py", ".cpp") and "__pycache__" not in p.parts)  # fmt: skip


def main(dist: Path) -> int:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}, found {[p.name for p in dist.iterdir()]}")
        return 1
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        problems = check(wheels[0].name, whl.read, names, "facet_calc/potentials/",
                         [f"{info}/licenses/{path}" for path in LICENCES])  # fmt: skip
        problems += [f"{wheels[0].name} lacks {path}" for path in source_files() if path not in names]
    with tarfile.open(sdists[0]) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
        problems += check(sdists[0].name, lambda path: tar.extractfile(members[path]).read(), set(members),
                          "potentials/", LICENCES)  # fmt: skip
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{wheels[0].name} and {sdists[0].name}: all {len(expected_files())} potential files "
              f"(sha256 as indexed), the licence files and all {len(source_files())} source files are inside")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
