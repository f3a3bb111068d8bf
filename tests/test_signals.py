"""Issue 26, signals in every phase: SIGINT / SIGTERM during setup, the epochs, the final test and the saving of
`train`, and during `eval`, `tune`, `explain` and `prepare-data`, exit 130 with one line; a training's MLflow run ends
KILLED and `--resume` finishes it. In process: the phase's function sends the signal to this process, as a user's
Ctrl-C or a scheduler's SIGTERM would, then runs (cheap: no subprocess, a tiny model)."""
import contextlib, io, json, os, signal
from pathlib import Path

import pytest

from steanet.cli import main


def _main(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _signalled(monkeypatch, module, name, sig, times=1):
    "Patch `module.name` so that its first `times` calls send `sig` to this process before doing their work."
    orig, left = getattr(module, name), [times]
    def wrapper(*a, **kw):
        if left[0] > 0:
            left[0] -= 1; os.kill(os.getpid(), sig)
        return orig(*a, **kw)
    monkeypatch.setattr(module, name, wrapper)


def _one_line(err: str, cmd: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith(f'steanet {cmd}:')]
    assert len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    return lines[0]


def _runs(tmp_path):
    from mlflow import MlflowClient
    c = MlflowClient(f'sqlite:///{tmp_path}/mlruns/mlflow.db')
    return c, c.search_runs([e.experiment_id for e in c.search_experiments()])


@pytest.fixture
def train_args(synth_root):
    return ['train', '--config', 'demo', '--quiet', '--set', f'data.root={synth_root}', 'data.num_frames=4',
            'data.num_workers=0', 'train.batch_size=8', 'train.epochs=2', 'tracking.log_checkpoint=false']


@pytest.mark.parametrize('phase, where, sig', [
    ('setup', ('steanet.train', 'setup_run'), signal.SIGTERM),
    ('epochs', ('steanet.train', 'train_one_epoch'), signal.SIGINT),
    ('final test', ('steanet.train', 'final_test'), signal.SIGTERM),
    ('saving', ('steanet.tracking', 'log_run_end'), signal.SIGINT)])
def test_train_signal_in_every_phase_is_killed_and_resumable(phase, where, sig, train_args, tmp_path, monkeypatch):
    import importlib
    _signalled(monkeypatch, importlib.import_module(where[0]), where[1], sig)
    rc, out, err = _main(train_args)
    line = _one_line(err, 'train')
    assert rc == 130 and sig.name in line and '--resume' in line, (phase, line)
    c, runs = _runs(tmp_path)
    assert [r.info.status for r in runs] == ['KILLED'], (phase, [(r.info.status, r.data.tags.get('steanet.error')) for r in runs])
    run_dir = line.split('--resume ')[-1].strip()
    rc, out, err = _main(['train', '--resume', run_dir, '--quiet', '--json'])
    assert rc == 0, (phase, err[-3000:])
    res = json.loads(out.strip().splitlines()[-1])
    run = c.get_run(runs[0].info.run_id)
    assert res['run_id'] == runs[0].info.run_id and run.info.status == 'FINISHED' and 'test/top1' in run.data.metrics, phase


def test_sigterm_before_any_setup_is_one_line_and_130(monkeypatch, train_args):
    "A SIGTERM in the first moments (config, imports) is Ctrl-C too: exit 130 with one line, never a silent 143."
    import steanet.config as config
    _signalled(monkeypatch, config, 'make_config', signal.SIGTERM)
    import steanet.cli as cli
    monkeypatch.setattr(cli, 'make_config', config.make_config)
    rc, _, err = _main(train_args)
    assert rc == 130 and 'SIGTERM' in _one_line(err, 'train')
