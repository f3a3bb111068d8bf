"""The CI gate itself: each of its first three steps must catch the problem it exists for."""
import ast, shutil, subprocess, sys, time
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
    "Run one gate of the copy against the project's .venv; `-o` the stamp: never reinstall (into the copy) from here."
    return subprocess.run(['make', '-s', '-C', str(repo), target, f'VENV={VENV}', '-o', f'{VENV}/.install-stamp'],
                          capture_output=True, text=True, timeout=300)


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
    """`import steanet` (and its config and CLI) stays light: heavy libraries are imported where used. What is checked is
    which modules get imported, not a time (a timed assert only measures the machine's load; `--help` times are a note)."""
    code = ('import sys; import steanet, steanet.config, steanet.cli; '
            'print([m for m in ("torch", "mlflow", "optuna", "captum", "open_clip", "scipy", "matplotlib") if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]', f'heavy modules imported by `import steanet`: {out}'


def test_console_script_help():
    exe = Path(sys.executable).parent / 'steanet'
    r = subprocess.run([str(exe), '--help'], capture_output=True, text=True)
    assert r.returncode == 0 and 'check-data' in r.stdout


# The rooms in reading order (../shared/DESIGN.md): a module may import only rooms above it. The data package's
# rooms come in their own order, then the package itself (`steanet.data`, which re-exports them).
ROOMS = ['steanet', 'steanet.redact', 'steanet.config', 'steanet.adapters', 'steanet.lean', 'steanet.model',
         'steanet.checkpoint', 'steanet.data.walk', 'steanet.data.records', 'steanet.data.video', 'steanet.data.clips', 'steanet.data.store',
         'steanet.data.prepare', 'steanet.data.datasets', 'steanet.data.check', 'steanet.data', 'steanet.synthetic',
         'steanet.serving', 'steanet.protocol', 'steanet.tracking', 'steanet.inputs', 'steanet.runtime', 'steanet.infer',
         'steanet.stats', 'steanet.report', 'steanet.report_out', 'steanet.train', 'steanet.demo', 'steanet.tune',
         'steanet.explain_methods', 'steanet.explain_relevance', 'steanet.explain_measures', 'steanet.explain_adapters',
         'steanet.explain_figures', 'steanet.explain', 'steanet.bench', 'steanet.experiments', 'steanet.cli_runner', 'steanet.cli',
         'steanet.testing']


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__': parts = parts[:-1]
    return '.'.join(parts)


def _steanet_imports(path: Path) -> set:
    "Every steanet module `path` imports, at the top or inside a function (relative imports resolved)."
    import ast
    me = _module_name(path); pkg = me if path.name == '__init__.py' else me.rpartition('.')[0]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.split('.')[0] == 'steanet'}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ''
            if n.level:
                up = pkg.split('.')[:len(pkg.split('.')) - (n.level - 1)]
                base = '.'.join(up + ([base] if base else []))
            if base.split('.')[0] != 'steanet': continue
            for a in n.names:    # `from steanet import tracking` imports the module steanet.tracking
                sub = f'{base}.{a.name}'
                out.add(sub if sub in ROOMS else base)
    return out - {me}


def test_rooms_import_only_downward():
    "No room imports a room below it (so there is no cycle either); every module is placed in ROOMS."
    mods = {_module_name(p): p for p in (ROOT / 'steanet').rglob('*.py') if p.name != '_modidx.py'}
    unplaced = sorted(set(mods) - set(ROOMS))
    assert not unplaced, f'modules missing from ROOMS (place them in reading order): {unplaced}'
    up = [f'{m} imports {i}' for m, p in mods.items() for i in sorted(_steanet_imports(p))
          if i in ROOMS and ROOMS.index(i) >= ROOMS.index(m)]
    assert not up, 'imports that go up the table of rooms:\n' + '\n'.join(up)


def test_functions_are_short():
    "House style: a function reads at a glance; none in steanet/ is longer than 80 lines (a long procedure is a composition)."
    long = []
    for p in (ROOT / 'steanet').rglob('*.py'):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f'{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)')
    assert not long, 'functions over 80 lines:\n' + '\n'.join(long)


def test_no_import_fallbacks_between_own_modules():
    "A room imports its siblings plainly: no `except ImportError` around an import of steanet's own modules."
    bad = []
    for p in (ROOT / 'steanet').rglob('*.py'):
        for n in ast.walk(ast.parse(p.read_text())):
            if not isinstance(n, ast.Try): continue
            if not any(isinstance(h.type, ast.Name) and h.type.id in ('ImportError', 'ModuleNotFoundError') for h in n.handlers):
                continue
            for s in n.body:
                for i in ast.walk(s):
                    if isinstance(i, ast.ImportFrom) and ((i.module or '').startswith('steanet') or i.level):
                        bad.append(f'{p.relative_to(ROOT)}:{i.lineno}')
                    if isinstance(i, ast.Import) and any(a.name.startswith('steanet') for a in i.names):
                        bad.append(f'{p.relative_to(ROOT)}:{i.lineno}')
    assert not bad, 'import fallbacks around own modules: ' + ', '.join(bad)
