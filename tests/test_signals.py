"""Issue 26, signals in every phase: SIGINT / SIGTERM during setup, the epochs, the final test and the saving of
`train`, and during `eval`, `tune`, `explain` and `prepare-data`, exit 130 with one line; a training's MLflow run ends
KILLED and `--resume` finishes it. In process: the phase's function sends the signal to this process, as a user's
Ctrl-C or a scheduler's SIGTERM would, then runs (cheap: no subprocess, a tiny model)."""
import contextlib, io, json, os, signal
from pathlib import Path

import pytest
import torch

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
            'data.num_workers=0', 'train.batch_size=8', 'train.epochs=1', 'tracking.log_checkpoint=false']


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


@pytest.fixture(scope='module')
def tiny_run(synth_root, tmp_path_factory):
    "One tiny trained run folder (two steps) for eval and explain."
    from steanet.testing import project_home
    home = tmp_path_factory.mktemp('sig-run')
    with project_home(home):
        rc, out, err = _main(['train', '--config', 'demo', '--quiet', '--json', '--set', f'data.root={synth_root}',
                              'data.num_frames=4', 'data.num_workers=0', 'train.batch_size=8', 'train.max_steps=2'])
    assert rc == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])['run_dir']


@pytest.mark.parametrize('where, sig', [(('steanet.infer', 'evaluate'), signal.SIGTERM),
                                        (('steanet.tracking', 'write_predictions_csv'), signal.SIGINT)])
def test_eval_signal_is_130_and_its_run_killed(where, sig, tiny_run, tmp_path, monkeypatch):
    import importlib
    _signalled(monkeypatch, importlib.import_module(where[0]), where[1], sig)
    rc, _, err = _main(['eval', '--checkpoint', tiny_run, '--quiet'])
    assert rc == 130 and sig.name in _one_line(err, 'eval')
    _, runs = _runs(tmp_path)
    want = ['KILLED'] if where[0] == 'steanet.tracking' else []   # stopped while logging: its run; before: none yet
    assert [r.info.status for r in runs if r.data.tags.get('steanet.kind') == 'eval'] == want


def test_explain_signal_is_130(tiny_run, synth_root, tmp_path, monkeypatch):
    import steanet.explain as ex
    _signalled(monkeypatch, ex, 'evaluate_attributions', signal.SIGTERM)
    video = str(sorted(Path(synth_root).rglob('*.mp4'))[0])
    rc, _, err = _main(['explain', '--checkpoint', tiny_run, video, '--out', str(tmp_path / 'ex'), '--method', 'saliency', '--quiet'])
    assert rc == 130 and 'SIGTERM' in _one_line(err, 'explain')


@pytest.mark.parametrize('workers', [0, 2])
def test_prepare_data_signal_is_130_and_a_rerun_finishes(workers, synth_root, tmp_path, monkeypatch):
    import steanet.data.store as store
    args = ['prepare-data', '--config', 'demo', '--set', f'data.root={synth_root}', '--out', str(tmp_path / 'store'),
            '--workers', str(workers), '--quiet']
    with monkeypatch.context() as m:          # only these patches are reverted after (not the test's own STEANET_HOME)
        if not workers: _signalled(m, store, 'prepare_one', signal.SIGTERM)
        else:         # the workers are other processes: the signal comes while the main process waits for them
            import steanet.data.prepare as prep      # the preparation room (03h) runs the worker pool
            orig_run, calls = prep._run_prepare, [0]
            def run(jobs, w, timeout, done):
                def first(job, res):
                    if not calls[0]: calls[0] = 1; os.kill(os.getpid(), signal.SIGTERM)
                    done(job, res)
                return orig_run(jobs, w, timeout, first)
            m.setattr(prep, '_run_prepare', run)
        rc, _, err = _main(args)
    assert rc == 130 and 'SIGTERM' in _one_line(err, 'prepare-data')
    rc, out, err = _main(args + ['--json'])
    assert rc == 0, err[-3000:]
    s = json.loads(out.strip().splitlines()[-1])
    assert s['prepared'] > 0 and s['bad'] == 0, s           # the first run stopped early, and left nothing broken


def test_tune_signal_mid_trial_kills_its_run_and_requeues(synth_root, tmp_path, monkeypatch):
    "SIGTERM inside a trial: exit 130 with one line; the trial's MLflow run is KILLED, as the line says; a rerun finishes."
    import optuna, steanet.train as train
    args = ['tune', '--config', 'demo', '--quiet', '--no-plots', '--n-trials', '1', '--set', f'data.root={synth_root}',
            'data.num_frames=4', 'data.num_workers=0', 'train.batch_size=8', 'tune.epochs=1', 'tune.study=sig',
            'tracking.log_checkpoint=false']
    with monkeypatch.context() as m:          # only this patch is reverted after (not the test's own STEANET_HOME)
        _signalled(m, train, 'train_one_epoch', signal.SIGTERM)
        rc, _, err = _main(args)
    assert rc == 130 and 'SIGTERM' in _one_line(err, 'tune'), err[-3000:]
    assert 'its MLflow run KILLED' in err and 're-queued' in err
    c, runs = _runs(tmp_path)
    kinds = {r.data.tags.get('steanet.kind'): r.info.status for r in runs}
    assert kinds == {'study': 'KILLED', 'trial': 'KILLED'}, kinds
    rc, _, err = _main(args)
    assert rc == 0, err[-3000:]
    st = optuna.load_study(study_name='sig', storage=f'sqlite:///{tmp_path}/mlruns/optuna.db')
    assert [t.state.name for t in st.trials] == ['FAIL', 'COMPLETE'] and st.trials[1].params == st.trials[0].params


def test_tune_signal_while_saving_the_study(synth_root, tmp_path, monkeypatch):
    "Ctrl-C while the study's files are written: exit 130 with one line, the study's run KILLED, its trial's FINISHED."
    import steanet.tune as tune
    args = ['tune', '--config', 'demo', '--quiet', '--no-plots', '--n-trials', '1', '--set', f'data.root={synth_root}',
            'data.num_frames=4', 'data.num_workers=0', 'train.batch_size=8', 'tune.epochs=1', 'tune.study=save',
            'tracking.log_checkpoint=false']
    with monkeypatch.context() as m:
        _signalled(m, tune.StudyTracker, 'finish', signal.SIGINT)   # the study's results go to its run
        rc, _, err = _main(args)
    assert rc == 130 and 'SIGINT' in _one_line(err, 'tune'), err[-3000:]
    _, runs = _runs(tmp_path)
    assert {r.data.tags.get('steanet.kind'): r.info.status for r in runs} == {'study': 'KILLED', 'trial': 'FINISHED'}
    rc, _, err = _main(args)                                  # the same command again: the study's run finishes
    assert rc == 0, err[-3000:]
    _, runs = _runs(tmp_path)
    assert {r.data.tags.get('steanet.kind'): r.info.status for r in runs} == {'study': 'FINISHED', 'trial': 'FINISHED'}


class _Items(torch.utils.data.Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): return {'x': torch.full((2,), float(i))}

_KEEP = []

def _child_with_persistent_loader():
    from steanet.runtime import make_loader
    dl = make_loader(_Items(), batch_size=2, num_workers=1, persistent=True)
    assert sum(len(b['x']) for b in dl) == 4
    _KEEP.append(dl)                               # still referenced at exit, its worker alive


def test_a_multiprocessing_child_with_persistent_loader_workers_exits():
    """multiprocessing's exit in one of its children SIGTERMs the daemonic children and joins them; loader workers
    ignore SIGTERM, and atexit does not run in such a child, so `kill_loader_workers` must run as a multiprocessing
    finalizer first (nbdev_test's pool worker hung there on 04b's persistent loaders)."""
    import multiprocessing as mp
    p = mp.get_context('fork').Process(target=_child_with_persistent_loader); p.start(); p.join(60)
    hung = p.is_alive()
    if hung: p.kill()
    assert not hung and p.exitcode == 0, 'the child did not exit: its loader worker was joined forever'
