"""Issue 26, hardening: `--run-dir` never writes over a user's own files; frame sizes a model cannot use are refused
at config time, before torch is imported."""
import contextlib, io, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _main(argv) -> tuple:
    from steanet.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_run_dir_of_a_users_own_files_is_refused_and_untouched(synth_root, tmp_path):
    mine = tmp_path / 'my-notes'; mine.mkdir()
    files = {'config.yaml': 'my own config\n', 'curves.png': 'not a png\n', 'test_predictions.csv': 'mine\n', 'notes.txt': 'x\n'}
    for k, v in files.items(): (mine / k).write_text(v)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in mine.iterdir()}
    for extra in ([], ['--overwrite']):
        rc, out, err = _main(['train', '--config', 'demo', '--set', f'data.root={synth_root}', '--run-dir', str(mine), *extra])
        assert rc == 1 and 'holds no steanet run' in err and len(err.strip().splitlines()) == 1, err
        assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in mine.iterdir()} == before
    f = tmp_path / 'a-file'; f.write_text('x')
    rc, _, err = _main(['train', '--config', 'demo', '--set', f'data.root={synth_root}', '--run-dir', str(f)])
    assert rc == 1 and 'is a file' in err and f.read_text() == 'x'


def test_claim_run_dir_rules(tmp_path):
    from steanet.config import ConfigError
    from steanet.train import RUN_MARKER, claim_run_dir
    assert claim_run_dir(tmp_path / 'new') == tmp_path / 'new'                      # missing: fine
    (tmp_path / 'empty').mkdir(); assert claim_run_dir(tmp_path / 'empty')          # empty: fine
    ours = tmp_path / 'ours'; ours.mkdir(); (ours / RUN_MARKER).touch(); (ours / 'config.yaml').write_text('a: 1\n')
    assert claim_run_dir(ours) == ours                                              # a run of ours that died before a checkpoint
    (ours / 'resume.pt').write_bytes(b'x')
    with pytest.raises(ConfigError, match='already holds a run'): claim_run_dir(ours)
    odd = tmp_path / bytes.fromhex('6f6464ff').decode('utf-8', 'surrogateescape'); odd.mkdir(); (odd / 'x').touch()
    with pytest.raises(ConfigError, match='holds no steanet run'): claim_run_dir(odd)   # a non-UTF-8 name: one line too


@pytest.mark.parametrize('sets, msg', [(['data.input_size=33', 'data.short_side=40'], 'does not tile the 4 px patch grid'),
                                       (['data.input_size=7', 'data.short_side=8'], 'does not tile'),
                                       (['data.short_side=1'], 'is below the crop')])
def test_sizes_a_model_cannot_use_are_refused_before_torch_loads(sets, msg, tmp_path):
    code = ('import sys; from steanet.config import make_config, ConfigError\n'
            'try: make_config("demo", sys.argv[1:])\nexcept ConfigError as e: print(e)\n'
            'print("torch loaded" if "torch" in sys.modules else "no torch")')
    r = subprocess.run([sys.executable, '-c', code, *sets], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert msg in r.stdout and r.stdout.strip().endswith('no torch'), r.stdout + r.stderr
