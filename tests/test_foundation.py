"""The CI gate itself: each of its first three steps must catch the problem it exists for."""
import shutil, subprocess, sys, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / '.venv'
pytestmark = pytest.mark.skipif(not (VENV / '.install-stamp').exists(), reason='needs the project .venv (make install)')


@pytest.fixture
def repo(tmp_path):
    "A copy of the project (mtimes kept, so the install stamp stays valid) to break on purpose."
    dst = tmp_path / 'repo'
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns('.venv', '.git', 'mlruns', '.cache', '__pycache__', 'runs'))
    return dst


def gate(repo, target):
    return subprocess.run(['make', '-s', '-C', str(repo), target, f'VENV={VENV}'], capture_output=True, text=True, timeout=300)


def test_gate_passes_on_the_project(repo):
    for t in ('check-sync', 'check-clean', 'check-readme'):
        r = gate(repo, t)
        assert r.returncode == 0, r.stdout + r.stderr


def test_hand_edited_package_fails_step_1(repo):
    p = repo / 'steanet' / 'config.py'
    p.write_text(p.read_text() + '\nHAND_EDIT = 1\n')
    r = gate(repo, 'check-sync')
    assert r.returncode != 0 and 'GATE 1 FAILED' in r.stdout and 'make export' in r.stdout


def test_uncleaned_notebook_fails_step_2(repo):
    import json
    p = repo / 'nbs' / '00_config.ipynb'
    nb = json.loads(p.read_text())
    code = next(c for c in nb['cells'] if c['cell_type'] == 'code')
    code['execution_count'] = 7
    code['outputs'] = [{'output_type': 'stream', 'name': 'stdout', 'text': ['left over\n']}]
    nb['metadata']['widgets'] = {'state': {}}
    p.write_text(json.dumps(nb, indent=1))
    r = gate(repo, 'check-clean')
    assert r.returncode != 0 and 'GATE 2 FAILED' in r.stdout


def test_stale_readme_fails_step_3(repo):
    p = repo / 'README.md'
    p.write_text(p.read_text() + '\nA line written by hand.\n')
    r = gate(repo, 'check-readme')
    assert r.returncode != 0 and 'GATE 3 FAILED' in r.stdout and 'nbs/index.ipynb' in r.stdout


def test_import_is_light():
    "`import steanet` (and its config and CLI) stays fast: heavy libraries are imported where used."
    code = ('import time, sys; t = time.perf_counter(); import steanet, steanet.config, steanet.cli; '
            'dt = time.perf_counter() - t; heavy = [m for m in ("torch", "mlflow", "optuna", "captum", "open_clip") if m in sys.modules]; '
            'print(dt, heavy)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split(' ', 1)
    assert float(out[0]) < 1.5, out
    assert out[1].strip() == '[]', f'heavy modules imported by `import steanet`: {out[1]}'


def test_console_script_help():
    exe = Path(sys.executable).parent / 'steanet'
    r = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'check-data' in r.stdout
