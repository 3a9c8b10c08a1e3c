"""The import rules in pyproject.toml hold, and a break of each kind is caught.

``lint-imports`` runs in scripts/test; these runs show the contracts can fail: a copy
of the packages gets one forbidden import, and the matching contract must break.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anju", "cloud", "edge", "firmware_sim", "schemas")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_repository_keeps_every_contract() -> None:
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("edge/poller.py", "import cloud.errors", "edge and cloud never import each other"),
        ("schemas/wire.py", "import firmware_sim.scenario", "schemas imports nothing of ours"),
        ("firmware_sim/scenario.py", "import edge.errors", "firmware_sim imports only schemas"),
        ("cloud/queue/states.py", "import cloud.incidents", "cloud's packages form layers"),
        ("edge/drivers/modbus/bus.py", "import edge.spool", "drivers know no spool"),
        ("edge/actions.py", "import edge.drivers.modbus.bus", "only through edge.drivers.registry"),
        ("edge/streams.py", "import edge.drivers.osdp.bus", "only through edge.drivers.registry"),
        ("edge/cameras/site.py", "import edge.spool", "the camera section knows events"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / module
    path.write_text(f"{line}  # a deliberate violation\n{path.read_text()}")

    run = _lint(tmp_path)

    assert run.returncode == 1, run.stdout
    broken = [text for text in run.stdout.splitlines() if text.endswith(" BROKEN")]
    assert len(broken) == 1, run.stdout
    assert contract in broken[0]
