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


def _odd_dataset(synth_root, base: Path) -> Path:
    "`<base>/vid\\xe9os/{train,val,test}/{joy,fear}/`: synthetic videos, names that are not UTF-8, symlink loops."
    import shutil
    src = sorted(Path(synth_root).rglob('*.mp4'))
    root = Path(os.fsdecode(os.fsencode(str(base)) + b'/vid\xe9os'))
    for split in ('train', 'val', 'test'):
        for cls, src_cls in (('joy', 'joy'), ('fear', 'fear')):
            d = root / split / cls; d.mkdir(parents=True)
            vs = [v for v in src if v.parent.name == src_cls and v.name.startswith(split)]
            for i, v in enumerate(vs): shutil.copy(v, d / f'v{i}.mp4')
            shutil.copy(vs[0], os.fsdecode(os.fsencode(str(d)) + b'/caf\xe9-\xff.mp4'))
    os.symlink('loop.mp4', root / 'train' / 'fear' / 'loop.mp4')          # a file link to itself
    os.symlink('..', root / 'train' / 'joy' / 'up')                         # a folder link back up
    os.symlink('.', root / 'train' / 'again')                               # a 'class' that is the split folder again
    return root


def test_names_that_are_not_utf8_and_symlink_loops(synth_root, tmp_path):
    """check-data writes its report, train finishes (dataset hash, params, test_predictions.csv) and predict writes its
    CSV on names that are not UTF-8; every symlink loop is reported once, on one line, and skipped."""
    from mlflow import MlflowClient
    from steanet.config import os_bytes
    root = _odd_dataset(synth_root, tmp_path)
    small = ['--set', f'data.root={root}', 'data.num_frames=4', 'data.num_workers=0', 'train.batch_size=4',
             'data.format=folder', 'data.annotations=', 'data.dataset=odd', 'data.num_classes=2']
    rc, out, err = _main(['check-data', '--config', 'demo', *small, '--json'])
    assert rc == 0, err[-2000:]
    loops = [l for l in err.splitlines() if 'symlink loop' in l]
    assert len(loops) == len(set(loops)) == 3 and all(l.endswith('skipped') for l in loops), err
    import json
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep['ok'] == rep['total'] == 14 and rep['classes'] == ['fear', 'joy'], rep    # (2 + 1 + 1) + 3 odd names, per class
    assert b'caf\xe9-\xff.mp4' in Path(rep['report']).read_bytes()                             # the exact bytes
    rc, out, err = _main(['train', '--config', 'demo', *small, 'train.max_steps=2', 'train.epochs=1', '--json'])
    assert rc == 0 and 'Traceback' not in err, err[-3000:]
    res = json.loads(out.strip().splitlines()[-1])
    run_dir = Path(res['run_dir'])
    assert b'caf\xe9-\xff.mp4' in (run_dir / 'test_predictions.csv').read_bytes()
    run = MlflowClient(f'sqlite:///{tmp_path}/mlruns/mlflow.db').get_run(res['run_id'])
    assert run.info.status == 'FINISHED' and run.data.params['data.root'].endswith('vid\\xe9os'), run.data.params['data.root']
    odd = os.fsdecode(os.fsencode(str(root)) + b'/test/joy/caf\xe9-\xff.mp4')
    csv = tmp_path / 'pred.csv'
    rc, out, err = _main(['predict', '--checkpoint', str(run_dir), odd, str(root / 'train' / 'fear' / 'loop.mp4'),
                          '--csv', str(csv), '--no-mlflow'])
    assert rc == 1 and 'Traceback' not in err, err[-2000:]                                     # one video failed: exit 1
    data = csv.read_bytes()
    assert os_bytes(odd) in data and b'loop.mp4,,,,' in data
